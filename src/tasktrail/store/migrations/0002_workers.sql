-- tasktrail schema 2: the workers that claim tasks, with their heartbeats.
-- Not part of the log: a worker's liveness is operational state, and recovery records
-- every decision it takes from it as events in the log.

CREATE TABLE workers (
    worker_id    TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    started_at   REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    stopped_at   REAL                        -- set by a clean shutdown
);

CREATE INDEX tasks_live_by_key ON tasks (state, concurrency_key, agent)
    WHERE state IN ('pending', 'starting', 'running');
