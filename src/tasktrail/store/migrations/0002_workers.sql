-- tasktrail schema 2: the workers that claim tasks, with their heartbeats, and the
-- notifications subscribers delivered.
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

-- The start queue, in the order tasks start: highest priority, then first in (rowid, the
-- order in which tasks were created, breaks ties between tasks created in one commit).
CREATE INDEX tasks_queue ON tasks (priority DESC, created_at) WHERE state = 'pending';

-- Events a named subscriber has handed to its callback: a redelivery after a crash
-- between the callback and the checkpoint is recognised here and skipped.
CREATE TABLE deliveries (
    subscriber   TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    delivered_at REAL NOT NULL,
    PRIMARY KEY (subscriber, event_id)
) WITHOUT ROWID;
