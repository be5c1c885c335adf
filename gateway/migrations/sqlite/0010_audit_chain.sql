-- A rowid table on purpose: records are ~1 KB, and WITHOUT ROWID tables
-- keep whole rows in the key B-tree, where rows that large spill into
-- overflow pages (measured: 4x the bytes per call, a third of the append
-- rate). The (chain, seq) key is then its own small unique index.
-- The audit trail: one hash chain per writer (`chain`), each record
-- committing to the one before it. Calls, their outcomes and
-- authentication failures are appended by the gateway's audit writer;
-- every other decision (tasks, credentials, keys, agent status, approvals,
-- admin actions, manifest loads) is captured by a trigger in the same
-- transaction as the change itself, into `audit_pending`, and folded into
-- the chain by the serving gateway (or by any `tollgate audit` command).
CREATE TABLE audit_log (
    chain        TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    id           TEXT NOT NULL,
    at           TEXT NOT NULL,
    kind         TEXT NOT NULL,
    agent_id     TEXT,
    task_id      TEXT,
    tool         TEXT,
    decision     TEXT,
    reason_code  TEXT,
    outcome      TEXT,
    ref          TEXT,
    body         TEXT NOT NULL,
    prev         BLOB NOT NULL,
    hash         BLOB NOT NULL,
    PRIMARY KEY (chain, seq)
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_agent ON audit_log (agent_id, at) WHERE agent_id IS NOT NULL;
CREATE INDEX audit_log_task ON audit_log (task_id) WHERE task_id IS NOT NULL;
CREATE INDEX audit_log_ref ON audit_log (ref) WHERE ref IS NOT NULL;

-- Allowed calls whose outcome is not written yet: start-up recovery closes
-- them as `interrupted` without scanning the trail.
CREATE TABLE audit_open (
    id        TEXT PRIMARY KEY,
    agent_id  TEXT NOT NULL,
    task_id   TEXT,
    tool      TEXT NOT NULL
) WITHOUT ROWID;

-- Signed checkpoints: the gateway's signing key over (chain, seq, hash).
CREATE TABLE audit_checkpoints (
    chain      TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    hash       BLOB NOT NULL,
    at         TEXT NOT NULL,
    signature  TEXT NOT NULL,
    PRIMARY KEY (chain, seq)
);

-- Where a pruned chain now begins: the last pruned record's seq and hash,
-- signed; verification starts from it.
CREATE TABLE audit_anchors (
    chain      TEXT PRIMARY KEY,
    seq        INTEGER NOT NULL,
    hash       BLOB NOT NULL,
    at         TEXT NOT NULL,
    archive    TEXT,
    signature  TEXT NOT NULL
);

CREATE TABLE audit_pending (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    at        TEXT NOT NULL,
    kind      TEXT NOT NULL,
    agent_id  TEXT,
    task_id   TEXT,
    body      TEXT NOT NULL
);

CREATE TRIGGER audit_agent_key_issued AFTER INSERT ON agent_keys
BEGIN
    INSERT INTO audit_pending (at, kind, agent_id, body) VALUES (NEW.created_at, 'agent.key_issued', NEW.agent_id,
        json_object('key_id', NEW.key_id, 'label', NEW.label));
END;
CREATE TRIGGER audit_agent_key_revoked AFTER UPDATE OF revoked_at ON agent_keys
WHEN OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL
BEGIN
    INSERT INTO audit_pending (at, kind, agent_id, body) VALUES (NEW.revoked_at, 'agent.key_revoked', NEW.agent_id,
        json_object('key_id', NEW.key_id, 'label', NEW.label));
END;
CREATE TRIGGER audit_agent_status AFTER INSERT ON agent_lifecycle_events
BEGIN
    INSERT INTO audit_pending (at, kind, agent_id, body) VALUES (NEW.changed_at, 'agent.status', NEW.agent_id,
        json_object('from', NEW.from_status, 'to', NEW.to_status, 'reason', NEW.reason, 'by', NEW.changed_by));
END;
CREATE TRIGGER audit_task_started AFTER INSERT ON tasks
BEGIN
    INSERT INTO audit_pending (at, kind, agent_id, task_id, body) VALUES (NEW.created_at, 'task.started', NEW.agent_id, NEW.id,
        json_object('purpose', NEW.purpose, 'tools', (CASE WHEN json_valid(NEW.tools) THEN json(NEW.tools) ELSE NEW.tools END), 'constraints', (CASE WHEN json_valid(NEW.constraints) THEN json(NEW.constraints) ELSE NEW.constraints END),
                    'started_by', NEW.started_by, 'origin', NEW.origin, 'started_with', NEW.started_with,
                    'expires_at', NEW.expires_at));
END;
CREATE TRIGGER audit_task_ended AFTER UPDATE OF status ON tasks
WHEN OLD.status = 'active' AND NEW.status <> 'active'
BEGIN
    INSERT INTO audit_pending (at, kind, agent_id, task_id, body) VALUES (COALESCE(NEW.ended_at, NEW.expires_at), 'task.ended', NEW.agent_id, NEW.id,
        json_object('status', NEW.status, 'ended_by', NEW.ended_by, 'reason', NEW.end_reason));
END;
CREATE TRIGGER audit_credential_issued AFTER INSERT ON credentials
BEGIN
    INSERT INTO audit_pending (at, kind, agent_id, task_id, body) VALUES (NEW.issued_at, 'credential.issued', NEW.agent_id, NEW.task_id,
        json_object('credential_id', NEW.id, 'connector', NEW.connector_id, 'kind', NEW.kind, 'scope', NEW.scope,
                    'audience', NEW.audience, 'expires_at', NEW.expires_at));
END;
CREATE TRIGGER audit_credential_revoked AFTER UPDATE OF revoked_at ON credentials
WHEN OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL
BEGIN
    INSERT INTO audit_pending (at, kind, agent_id, task_id, body) VALUES (NEW.revoked_at, 'credential.revoked', NEW.agent_id, NEW.task_id,
        json_object('credential_id', NEW.id, 'connector', NEW.connector_id, 'reason', NEW.revoke_reason));
END;
CREATE TRIGGER audit_admin_key_issued AFTER INSERT ON admin_keys
BEGIN
    INSERT INTO audit_pending (at, kind, body) VALUES (NEW.created_at, 'admin.key_issued',
        json_object('key_id', NEW.key_id, 'name', NEW.name, 'agents', NEW.agents));
END;
CREATE TRIGGER audit_admin_key_revoked AFTER UPDATE OF revoked_at ON admin_keys
WHEN OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL
BEGIN
    INSERT INTO audit_pending (at, kind, body) VALUES (NEW.revoked_at, 'admin.key_revoked',
        json_object('key_id', NEW.key_id, 'name', NEW.name));
END;
CREATE TRIGGER audit_admin_action AFTER INSERT ON admin_actions
BEGIN
    INSERT INTO audit_pending (at, kind, agent_id, body) VALUES (NEW.at, 'admin.' || NEW.action, NEW.agent_id,
        json_object('actor', NEW.actor, 'target', NEW.target, 'detail', NEW.detail));
END;
CREATE TRIGGER audit_manifest_change AFTER INSERT ON manifest_changes
BEGIN
    INSERT INTO audit_pending (at, kind, body) VALUES (NEW.at, 'manifest.' || NEW.outcome,
        json_object('files', (CASE WHEN json_valid(NEW.files) THEN json(NEW.files) ELSE NEW.files END), 'errors', (CASE WHEN json_valid(NEW.errors) THEN json(NEW.errors) ELSE NEW.errors END)));
END;
CREATE TRIGGER audit_approver_key_issued AFTER INSERT ON approver_keys
BEGIN
    INSERT INTO audit_pending (at, kind, body) VALUES (NEW.created_at, 'approver.key_issued',
        json_object('key_id', NEW.key_id, 'approver', NEW.approver_id, 'label', NEW.label));
END;
CREATE TRIGGER audit_approver_key_revoked AFTER UPDATE OF revoked_at ON approver_keys
WHEN OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL
BEGIN
    INSERT INTO audit_pending (at, kind, body) VALUES (NEW.revoked_at, 'approver.key_revoked',
        json_object('key_id', NEW.key_id, 'approver', NEW.approver_id));
END;
-- The request, without its arguments (a redacted copy lives in the
-- approvals table for reviewers; the trail keeps the digest).
CREATE TRIGGER audit_approval_requested AFTER INSERT ON approval_requests
BEGIN
    INSERT INTO audit_pending (at, kind, agent_id, task_id, body) VALUES (NEW.created_at, 'approval.requested', NEW.agent_id, NEW.task_id,
        json_object('request', NEW.id, 'tool', NEW.tool, 'connector', NEW.connector_id, 'risk', NEW.risk,
                    'args_digest', NEW.args_digest, 'route', NEW.route, 'approvers', NEW.approvers,
                    'required', NEW.required, 'four_eyes', NEW.four_eyes, 'deadline', NEW.deadline,
                    'purpose', NEW.purpose, 'credential_id', NEW.credential_id));
END;
CREATE TRIGGER audit_approval_vote AFTER INSERT ON approval_votes
BEGIN
    INSERT INTO audit_pending (at, kind, agent_id, task_id, body)
    SELECT NEW.at, 'approval.vote', r.agent_id, r.task_id,
        json_object('request', NEW.request_id, 'approver', NEW.approver_id, 'key_id', NEW.key_id,
                    'verdict', NEW.verdict, 'reason', NEW.reason, 'for_task', NEW.for_task,
                    'changed', NEW.patch IS NOT NULL)
    FROM approval_requests r WHERE r.id = NEW.request_id;
END;
CREATE TRIGGER audit_approval_event AFTER INSERT ON approval_events
WHEN NEW.event NOT IN ('requested', 'vote')
BEGIN
    INSERT INTO audit_pending (at, kind, agent_id, task_id, body)
    SELECT NEW.at, 'approval.' || NEW.event, r.agent_id, r.task_id,
        json_object('request', NEW.request_id, 'actor', NEW.actor, 'detail', (CASE WHEN json_valid(NEW.detail) THEN json(NEW.detail) ELSE NEW.detail END), 'tool', r.tool)
    FROM approval_requests r WHERE r.id = NEW.request_id;
END;

-- Earlier call records move into the trail (as pending `call` records with
-- their outcome), then the old table goes.
INSERT INTO audit_pending (at, kind, agent_id, task_id, body)
SELECT at, 'call', agent_id, task_id,
    json_object('id', id, 'at', at, 'agent_id', agent_id, 'credential_id', credential_id, 'transport', transport,
                'tool', tool, 'connector_id', connector_id, 'risk', risk, 'args_digest', args_digest,
                'decision', decision, 'reason_code', reason_code, 'reason', reason, 'outcome', outcome,
                'outcome_code', outcome_code, 'backend_status', backend_status, 'latency_us', latency_us,
                'owners', json(owners), 'task_id', task_id, 'policy', json(policy))
FROM decisions ORDER BY seq;
DROP TABLE decisions;
