-- tasktrail schema 5: pauses. An agent or a concurrency key may be paused: no worker
-- claims a task of it until it is resumed (running tasks go on). Every pause and resume
-- is a row of `controls`, append-only like the event log (triggers refuse UPDATE and
-- DELETE): what, who, when and why. `pauses` holds those in force; both are written in
-- one transaction under the write lock, and a claim reads `pauses` in its own.

CREATE TABLE controls (
    seq         INTEGER PRIMARY KEY,          -- 1, 2, 3 ... in the order they were made
    action      TEXT    NOT NULL,             -- 'pause' or 'resume'
    kind        TEXT    NOT NULL,             -- 'agent' or 'key' (a concurrency key)
    target      TEXT    NOT NULL,             -- the agent's name or the key
    recorded_at REAL    NOT NULL,             -- unix seconds
    actor       TEXT    NOT NULL,
    reason      TEXT
);

CREATE TRIGGER controls_append_only_update BEFORE UPDATE ON controls
BEGIN
    SELECT RAISE(ABORT, 'tasktrail: the control log is append-only (UPDATE refused)');
END;

CREATE TRIGGER controls_append_only_delete BEFORE DELETE ON controls
BEGIN
    SELECT RAISE(ABORT, 'tasktrail: the control log is append-only (DELETE refused)');
END;

CREATE TABLE pauses (
    kind    TEXT    NOT NULL,
    target  TEXT    NOT NULL,
    control INTEGER NOT NULL,                 -- the `controls` row that paused it
    PRIMARY KEY (kind, target)
) WITHOUT ROWID;
