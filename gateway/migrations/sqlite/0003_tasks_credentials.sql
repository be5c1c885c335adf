-- Gateway secrets moved to a file in the data directory (secrets.rs):
-- whoever reads the database must not be able to recompute digests.
DROP TABLE gateway_secrets;

-- Tasks: a declared purpose, the tools it needs, a time limit.
CREATE TABLE tasks (
    id           TEXT PRIMARY KEY,
    agent_id     TEXT NOT NULL,
    purpose      TEXT NOT NULL,
    tools        TEXT NOT NULL,
    constraints  TEXT NOT NULL,
    started_by   TEXT NOT NULL,
    origin       TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    status       TEXT NOT NULL,
    ended_at     TEXT,
    ended_by     TEXT,
    end_reason   TEXT
);
CREATE INDEX tasks_agent ON tasks(agent_id, status);
CREATE INDEX tasks_expiry ON tasks(status, expires_at);

-- Every credential issued for a task (or a single call outside a task):
-- an HMAC of the secret, never the secret, its scope and lifetime, and when
-- and why it was revoked.
CREATE TABLE credentials (
    id                TEXT PRIMARY KEY,
    task_id           TEXT,
    agent_id          TEXT NOT NULL,
    connector_id      TEXT NOT NULL,
    kind              TEXT NOT NULL,
    digest            TEXT NOT NULL,
    scope             TEXT,
    audience          TEXT,
    issued_at         TEXT NOT NULL,
    expires_at        TEXT,
    revoked_at        TEXT,
    revoke_reason     TEXT,
    upstream_pending  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX credentials_task ON credentials(task_id);

ALTER TABLE decisions ADD COLUMN task_id TEXT;
