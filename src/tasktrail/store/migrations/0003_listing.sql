-- tasktrail schema 3: indexes for listing tasks newest first, a page at a time, and for
-- counting recently finished tasks (the dashboard, `tasktrail ui`).
-- The projection's upsert never changes created_at or agent, so the first two are written
-- once per task, when it is created. The third holds finished tasks only: a task enters it
-- once, when it finishes (nothing changes a finished task afterwards).

-- Newest first, keyset paging on (created_at, rowid): the rowid is part of every index.
CREATE INDEX tasks_by_created ON tasks (created_at);
CREATE INDEX tasks_by_agent_created ON tasks (agent, created_at);

-- Finished tasks by the time they finished (a finished task's updated_at).
CREATE INDEX tasks_finished ON tasks (updated_at)
    WHERE state IN ('completed', 'failed', 'cancelled');
