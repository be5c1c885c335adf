-- Runtime lifecycle of agents (the manifest declares them; operators
-- suspend, resume and retire them). No row means `active`.
CREATE TABLE agent_lifecycle (
    agent_id    TEXT PRIMARY KEY,
    status      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    changed_by  TEXT NOT NULL,
    changed_at  TEXT NOT NULL
);

-- Every lifecycle change, with who made it and why.
CREATE TABLE agent_lifecycle_events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id     TEXT NOT NULL,
    from_status  TEXT NOT NULL,
    to_status    TEXT NOT NULL,
    reason       TEXT NOT NULL,
    changed_by   TEXT NOT NULL,
    changed_at   TEXT NOT NULL
);
CREATE INDEX agent_lifecycle_events_agent ON agent_lifecycle_events(agent_id, seq);

-- Every manifest load and reload attempt: which files, their hashes, and
-- whether it was applied or rejected (with the errors).
CREATE TABLE manifest_changes (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    at       TEXT NOT NULL,
    outcome  TEXT NOT NULL,
    files    TEXT NOT NULL,
    errors   TEXT
);
