-- tasktrail PostgreSQL schema 1: the event log, the task projection, subscriber checkpoints.
-- The same tables as the SQLite schema, column for column, so the hash chain and exports
-- agree between the backends. Timestamps are unix seconds (double precision), payloads are
-- the exact JSON text that the hash covers (text, not jsonb: jsonb would reformat it).

CREATE TABLE events (
    seq            BIGINT  PRIMARY KEY,          -- global sequence, 1, 2, 3 ... no holes
    event_id       TEXT    NOT NULL UNIQUE,      -- idempotency key
    stream_id      TEXT    NOT NULL,             -- the task id
    version        INTEGER NOT NULL,             -- 1, 2, 3 ... per task, no gaps
    type           TEXT    NOT NULL,             -- e.g. 'task.created'
    schema_version INTEGER NOT NULL,
    recorded_at    DOUBLE PRECISION NOT NULL,    -- unix seconds
    actor          TEXT    NOT NULL,
    reason         TEXT,
    correlation_id TEXT,
    data           TEXT    NOT NULL,             -- the payload as JSON (query it as data::jsonb)
    hash           TEXT    NOT NULL,             -- hex sha256 chained to the previous event
    UNIQUE (stream_id, version)
);

CREATE FUNCTION tasktrail_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'tasktrail: the event log is append-only (% refused)', TG_OP
        USING ERRCODE = 'P0001';
END;
$$;

CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION tasktrail_events_append_only();
CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION tasktrail_events_append_only();
CREATE TRIGGER events_append_only_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION tasktrail_events_append_only();

CREATE TABLE tasks (
    id              TEXT    PRIMARY KEY,
    state           TEXT    NOT NULL,
    agent           TEXT    NOT NULL,
    parent_id       TEXT,
    concurrency_key TEXT,
    priority        INTEGER NOT NULL,
    version         INTEGER NOT NULL,
    last_seq        BIGINT  NOT NULL,
    created_at      DOUBLE PRECISION NOT NULL,
    updated_at      DOUBLE PRECISION NOT NULL,
    record          TEXT    NOT NULL,            -- the whole Task as JSON
    ord             BIGINT  GENERATED ALWAYS AS IDENTITY  -- creation order (SQLite's rowid)
);

CREATE INDEX tasks_by_state ON tasks (state, created_at);
CREATE INDEX tasks_by_parent ON tasks (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX tasks_by_agent ON tasks (agent, state);

CREATE TABLE checkpoints (
    name       TEXT    PRIMARY KEY,
    position   BIGINT  NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
