-- Agent keys: only a SHA-256 of each key is kept; the key itself is shown
-- once by `tollgate agents issue-key` and never stored.
CREATE TABLE agent_keys (
    key_id      TEXT PRIMARY KEY,
    agent_id    TEXT NOT NULL,
    key_hash    BLOB NOT NULL UNIQUE,
    label       TEXT,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);
CREATE INDEX agent_keys_agent ON agent_keys(agent_id);

-- One row per tools/call decision; the outcome columns are filled in after
-- dispatch. A row with decision 'allow' and no outcome is a call whose
-- result was never recorded (crash or audit failure after dispatch).
CREATE TABLE decisions (
    id             TEXT PRIMARY KEY,
    seq            INTEGER NOT NULL UNIQUE,
    at             TEXT NOT NULL,
    agent_id       TEXT NOT NULL,
    credential_id  TEXT NOT NULL,
    transport      TEXT NOT NULL,
    tool           TEXT NOT NULL,
    connector_id   TEXT,
    risk           TEXT,
    args_digest    TEXT,
    decision       TEXT NOT NULL,
    reason_code    TEXT NOT NULL,
    reason         TEXT NOT NULL,
    outcome        TEXT,
    outcome_code   TEXT,
    backend_status INTEGER,
    latency_us     INTEGER,
    owners         TEXT
);
CREATE INDEX decisions_agent ON decisions(agent_id, seq);

-- Gateway-wide secrets generated on first run (the HMAC key for argument
-- digests). Shared by every replica that uses this store.
CREATE TABLE gateway_secrets (
    name   TEXT PRIMARY KEY,
    value  BLOB NOT NULL
);
