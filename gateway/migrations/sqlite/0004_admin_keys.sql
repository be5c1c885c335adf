-- Keys for the admin HTTP API (operators and orchestrators that start and
-- end tasks). Only a SHA-256 of each key is kept.
CREATE TABLE admin_keys (
    key_id      TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    key_hash    BLOB NOT NULL UNIQUE,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);
