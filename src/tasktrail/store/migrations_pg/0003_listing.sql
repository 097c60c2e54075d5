-- tasktrail PostgreSQL schema 3: indexes for listing tasks newest first, a page at a time,
-- and for counting recently finished tasks (the dashboard, `tasktrail ui`). The same
-- indexes as SQLite's migration 3; `ord` is the creation order SQLite's rowid gives.

CREATE INDEX tasks_by_created ON tasks (created_at, ord);
CREATE INDEX tasks_by_agent_created ON tasks (agent, created_at, ord);

-- Finished tasks by the time they finished (a finished task's updated_at).
CREATE INDEX tasks_finished ON tasks (updated_at)
    WHERE state IN ('completed', 'failed', 'cancelled');
