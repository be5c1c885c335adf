-- The revocation feed: one row for every committed change that takes
-- something away from an agent (a status change, a key revocation, a task
-- end). Triggers write it in the same transaction as the change itself, so
-- no code path (CLI, admin API, sweeper, another replica) can commit a
-- revocation without it. Every gateway process polls this table and applies
-- what is new to calls in flight (revocation.rs); the feed is ordered by
-- `seq`, which SQLite's single writer hands out in commit order.
CREATE TABLE revocation_feed (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    kind      TEXT NOT NULL,
    agent_id  TEXT NOT NULL,
    subject   TEXT NOT NULL
);

CREATE TRIGGER revocation_feed_status_insert AFTER INSERT ON agent_lifecycle
BEGIN
    INSERT INTO revocation_feed (kind, agent_id, subject)
    VALUES ('agent_status', NEW.agent_id, NEW.status);
END;

CREATE TRIGGER revocation_feed_status_update AFTER UPDATE OF status ON agent_lifecycle
BEGIN
    INSERT INTO revocation_feed (kind, agent_id, subject)
    VALUES ('agent_status', NEW.agent_id, NEW.status);
END;

CREATE TRIGGER revocation_feed_key_revoked AFTER UPDATE OF revoked_at ON agent_keys
WHEN OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL
BEGIN
    INSERT INTO revocation_feed (kind, agent_id, subject)
    VALUES ('key_revoked', NEW.agent_id, NEW.key_id);
END;

CREATE TRIGGER revocation_feed_task_ended AFTER UPDATE OF status ON tasks
WHEN OLD.status = 'active' AND NEW.status <> 'active'
BEGIN
    INSERT INTO revocation_feed (kind, agent_id, subject)
    VALUES ('task_ended', NEW.agent_id, NEW.id);
END;
