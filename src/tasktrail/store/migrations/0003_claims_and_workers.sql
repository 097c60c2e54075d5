-- tasktrail schema 3: the query columns that claims inside the write transaction need,
-- reruns, and what a worker serves and where its pid means something.

-- When a pending task may start (a scheduled start or a retry's backoff; NULL: now).
ALTER TABLE tasks ADD COLUMN not_before REAL;
-- The task a rerun copies.
ALTER TABLE tasks ADD COLUMN rerun_of TEXT;
-- When a pending task expires (its TTL, or its queue timeout before its first start).
ALTER TABLE tasks ADD COLUMN expires_at REAL;
UPDATE tasks SET not_before = json_extract(record, '$.not_before'),
                 rerun_of = json_extract(record, '$.rerun_of');

CREATE INDEX tasks_scheduled ON tasks (not_before) WHERE state = 'pending' AND not_before IS NOT NULL;
CREATE INDEX tasks_expiring ON tasks (expires_at) WHERE state = 'pending' AND expires_at IS NOT NULL;
CREATE INDEX tasks_by_rerun ON tasks (rerun_of) WHERE rerun_of IS NOT NULL;
-- Listings, newest first, and time filters.
CREATE INDEX tasks_by_created ON tasks (created_at);

-- The agents a worker runs (a JSON list; NULL: not recorded), so that a task no live
-- worker serves can be named as such.
ALTER TABLE workers ADD COLUMN agents TEXT;
-- Where the pid means something: the pid namespace and the boot. A pid is checked only
-- by an observer in the same namespace of the same boot of the same host.
ALTER TABLE workers ADD COLUMN pid_namespace TEXT;
ALTER TABLE workers ADD COLUMN boot_id TEXT;
