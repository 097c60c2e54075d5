-- tasktrail PostgreSQL schema 5: pauses, as SQLite's migration 5. `controls` is
-- append-only (triggers refuse UPDATE, DELETE and TRUNCATE); `pauses` holds the pauses in
-- force. Both are written under the log's advisory lock, which a claim holds too.

CREATE TABLE controls (
    seq         BIGSERIAL PRIMARY KEY,
    action      TEXT    NOT NULL,             -- 'pause' or 'resume'
    kind        TEXT    NOT NULL,             -- 'agent' or 'key' (a concurrency key)
    target      TEXT    NOT NULL,
    recorded_at DOUBLE PRECISION NOT NULL,    -- unix seconds
    actor       TEXT    NOT NULL,
    reason      TEXT
);

CREATE FUNCTION tasktrail_controls_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'tasktrail: the control log is append-only (% refused)', TG_OP
        USING ERRCODE = 'P0001';
END;
$$;

CREATE TRIGGER controls_append_only_update BEFORE UPDATE ON controls
    FOR EACH ROW EXECUTE FUNCTION tasktrail_controls_append_only();
CREATE TRIGGER controls_append_only_delete BEFORE DELETE ON controls
    FOR EACH ROW EXECUTE FUNCTION tasktrail_controls_append_only();
CREATE TRIGGER controls_append_only_truncate BEFORE TRUNCATE ON controls
    FOR EACH STATEMENT EXECUTE FUNCTION tasktrail_controls_append_only();

CREATE TABLE pauses (
    kind    TEXT   NOT NULL,
    target  TEXT   NOT NULL,
    control BIGINT NOT NULL,
    PRIMARY KEY (kind, target)
);
