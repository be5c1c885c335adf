-- The credential that started a task in band (issue #7 §2): a gateway key
-- id (`key_…`) or a workload identity (`jwt:ISSUER/SUBJECT`) and that JWT's
-- expiry. NULL for tasks an operator started (CLI, admin API). Revoking the
-- key ends the tasks it started, in the same transaction.
ALTER TABLE tasks ADD COLUMN started_with TEXT;
ALTER TABLE tasks ADD COLUMN started_with_expires_at TEXT;
CREATE INDEX tasks_started_with ON tasks(started_with, status);
