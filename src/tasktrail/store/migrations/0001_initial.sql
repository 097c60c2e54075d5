-- tasktrail schema 1: the event log, the task projection, subscriber checkpoints.

CREATE TABLE events (
    seq            INTEGER PRIMARY KEY,          -- global sequence, 1, 2, 3 ...
    event_id       TEXT    NOT NULL UNIQUE,      -- idempotency key
    stream_id      TEXT    NOT NULL,             -- the task id
    version        INTEGER NOT NULL,             -- 1, 2, 3 ... per task, no gaps
    type           TEXT    NOT NULL,             -- e.g. 'task.created'
    schema_version INTEGER NOT NULL,
    recorded_at    REAL    NOT NULL,             -- unix seconds
    actor          TEXT    NOT NULL,
    reason         TEXT,
    correlation_id TEXT,
    data           TEXT    NOT NULL,             -- the payload as JSON
    hash           TEXT    NOT NULL,             -- hex sha256 chained to the previous event
    UNIQUE (stream_id, version)
);

CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'tasktrail: the event log is append-only (UPDATE refused)');
END;

CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'tasktrail: the event log is append-only (DELETE refused)');
END;

CREATE TABLE tasks (
    id              TEXT    PRIMARY KEY,
    state           TEXT    NOT NULL,
    agent           TEXT    NOT NULL,
    parent_id       TEXT,
    concurrency_key TEXT,
    priority        INTEGER NOT NULL,
    version         INTEGER NOT NULL,
    last_seq        INTEGER NOT NULL,
    created_at      REAL    NOT NULL,
    updated_at      REAL    NOT NULL,
    record          TEXT    NOT NULL             -- the whole Task as JSON
);

CREATE INDEX tasks_by_state ON tasks (state, created_at);
CREATE INDEX tasks_by_parent ON tasks (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX tasks_by_agent ON tasks (agent, state);

CREATE TABLE checkpoints (
    name     TEXT    PRIMARY KEY,
    position INTEGER NOT NULL,
    updated_at REAL  NOT NULL
);
