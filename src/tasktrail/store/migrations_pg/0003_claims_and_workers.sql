-- tasktrail PostgreSQL schema 3: the query columns that claims inside the write
-- transaction need, reruns, and what a worker serves and where its pid means something.

ALTER TABLE tasks ADD COLUMN not_before DOUBLE PRECISION;  -- NULL: may start now
ALTER TABLE tasks ADD COLUMN rerun_of TEXT;
ALTER TABLE tasks ADD COLUMN expires_at DOUBLE PRECISION;  -- a pending task's deadline
UPDATE tasks SET not_before = (record::jsonb ->> 'not_before')::double precision,
                 rerun_of = record::jsonb ->> 'rerun_of';

CREATE INDEX tasks_scheduled ON tasks (not_before) WHERE state = 'pending' AND not_before IS NOT NULL;
CREATE INDEX tasks_expiring ON tasks (expires_at) WHERE state = 'pending' AND expires_at IS NOT NULL;
CREATE INDEX tasks_by_rerun ON tasks (rerun_of) WHERE rerun_of IS NOT NULL;
CREATE INDEX tasks_by_created ON tasks (created_at, ord);

ALTER TABLE workers ADD COLUMN agents TEXT;          -- a JSON list; NULL: not recorded
ALTER TABLE workers ADD COLUMN pid_namespace TEXT;   -- a pid is only checked in its own
ALTER TABLE workers ADD COLUMN boot_id TEXT;         -- namespace, boot and host
