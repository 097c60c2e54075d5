-- tasktrail PostgreSQL schema 4: indexes for the dashboard (`tasktrail ui`), as SQLite's
-- migration 4; `ord` is the creation order SQLite's rowid gives.

-- One agent's tasks, newest first, a page at a time.
CREATE INDEX tasks_by_agent_created ON tasks (agent, created_at, ord);

-- Finished tasks by the time they finished (a finished task's updated_at).
CREATE INDEX tasks_finished ON tasks (updated_at)
    WHERE state IN ('completed', 'failed', 'cancelled');
