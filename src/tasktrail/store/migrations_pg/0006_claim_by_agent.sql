-- tasktrail PostgreSQL schema 6: the start queue of one agent, in start order (as SQLite's
-- migration 6); `ord` is the creation order SQLite's rowid gives.
CREATE INDEX tasks_queue_by_agent ON tasks (agent, priority DESC, created_at, ord)
    WHERE state = 'pending';
