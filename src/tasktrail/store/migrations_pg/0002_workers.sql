-- tasktrail PostgreSQL schema 2: the workers that claim tasks, with their heartbeats, and
-- the notifications subscribers delivered. Not part of the log: a worker's liveness is
-- operational state, and recovery records every decision it takes from it as events.

CREATE TABLE workers (
    worker_id    TEXT PRIMARY KEY,
    host         TEXT NOT NULL,              -- a pid is only checked on its own host
    pid          INTEGER NOT NULL,
    started_at   DOUBLE PRECISION NOT NULL,
    heartbeat_at DOUBLE PRECISION NOT NULL,  -- the lease runs from here
    stopped_at   DOUBLE PRECISION            -- set by a clean shutdown
);

-- The start queue, in the order tasks start: highest priority, then first in.
CREATE INDEX tasks_queue ON tasks (priority DESC, created_at, ord) WHERE state = 'pending';

CREATE TABLE deliveries (
    subscriber   TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    delivered_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (subscriber, event_id)
);
