-- Approver credentials: hashes only, like agent keys.
CREATE TABLE approver_keys (
    key_id      TEXT PRIMARY KEY,
    approver_id TEXT NOT NULL,
    key_hash    BLOB NOT NULL UNIQUE,
    label       TEXT,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);

-- One request for a human decision on one exact call. `arguments` is the
-- redacted copy shown to approvers (fields a manifest marks sensitive are
-- `<redacted>`); `args_digest` the keyed digest of the real arguments the
-- approval binds to. `patch` holds the fields an approver changed, applied
-- over the agent's arguments (the digest and the patch together fix the
-- changed call exactly).
CREATE TABLE approval_requests (
    id              TEXT PRIMARY KEY,
    created_at      TEXT NOT NULL,
    deadline        TEXT NOT NULL,
    agent_id        TEXT NOT NULL,
    credential_id   TEXT NOT NULL,
    task_id         TEXT,
    purpose         TEXT,
    tool            TEXT NOT NULL,
    connector_id    TEXT NOT NULL,
    risk            TEXT NOT NULL,
    args_digest     TEXT NOT NULL,
    arguments       TEXT NOT NULL,
    route           TEXT NOT NULL,
    approvers       TEXT NOT NULL,
    required        INTEGER NOT NULL,
    four_eyes       INTEGER NOT NULL,
    policy          TEXT NOT NULL,
    owners          TEXT NOT NULL,
    status          TEXT NOT NULL,
    scope           TEXT,
    patch           TEXT,
    changed_arguments TEXT,
    decided_at      TEXT,
    reason          TEXT,
    use_by          TEXT,
    uses            INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX approval_requests_status ON approval_requests (status, created_at);
CREATE INDEX approval_requests_binding ON approval_requests (agent_id, tool, args_digest);

-- Each person's vote, once per request (a quorum counts people, not clicks).
CREATE TABLE approval_votes (
    request_id  TEXT NOT NULL REFERENCES approval_requests (id),
    approver_id TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    verdict     TEXT NOT NULL,
    reason      TEXT NOT NULL,
    for_task    INTEGER NOT NULL,
    patch       TEXT,
    at          TEXT NOT NULL,
    PRIMARY KEY (request_id, approver_id)
);

-- Everything that happened to a request: requested, approved, denied,
-- expired, withdrawn, used.
CREATE TABLE approval_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id  TEXT NOT NULL,
    at          TEXT NOT NULL,
    event       TEXT NOT NULL,
    actor       TEXT NOT NULL,
    detail      TEXT
);
CREATE INDEX approval_events_request ON approval_events (request_id, seq);
