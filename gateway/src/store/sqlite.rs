//! The embedded default store: one SQLite file in the data directory, in WAL
//! mode so readers never block the writer, with a busy timeout so concurrent
//! calls queue instead of failing.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use super::{
    AdminAction, AdminKeyRecord, AgentStatus, AnchorRow, AuditBatch, AuditFilter, AuditRow,
    ChainTail, CheckpointRow, CredentialRecord, DecisionFilter, DecisionRecord, KeyMatch,
    KeyRecord, Lifecycle, LifecycleEvent, ManifestChange, OpenCall, PendingRecord, RevocationEvent,
    RevocationKind, Store, StoreError, TaskEnd, TaskFilter, TaskRecord, TaskStatus,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// SQLite-backed [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Readers: WAL lets them run beside the writer.
    pub(super) read: SqlitePool,
    /// The one writer. SQLite admits one writer at a time anyway; queueing
    /// writes here (async, in order) avoids the busy-wait sleeps that
    /// several writing connections cost under load.
    pub(super) write: SqlitePool,
    /// The audit trail's bulk paths, off sqlx (`sqlite_direct.rs`).
    pub(super) audit_db: std::sync::Arc<super::sqlite_direct::AuditDb>,
}

impl SqliteStore {
    /// Opens (creating if needed) `tollgate.db` in `data_dir` and brings its
    /// schema up to date.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        restrict_permissions(data_dir);
        let file = data_dir.join("tollgate.db");
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(&file)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL: a commit survives a process crash; only an OS
            // crash can lose the last transactions. FULL costs an fsync per
            // call; operators who need it can run on PostgreSQL.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            // Checkpoints run from `maintenance` (every second, on a reader,
            // beside the writer) rather than inside a call; the automatic
            // one stays as a backstop for a WAL that grows anyway.
            .pragma("wal_autocheckpoint", "10000")
            .foreign_keys(true);
        // No ping before each use: a broken SQLite connection shows as an
        // error on the query itself, and the ping would double every round
        // trip on the call path.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        Ok(Self {
            read,
            write,
            audit_db: std::sync::Arc::new(super::sqlite_direct::AuditDb::new(&file)),
        })
    }
}

#[cfg(unix)]
fn restrict_permissions(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    // The store holds key hashes and the audit HMAC key: owner only.
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
}
#[cfg(not(unix))]
fn restrict_permissions(_: &Path) {}

fn key_row(r: &sqlx::sqlite::SqliteRow) -> Result<KeyRecord, sqlx::Error> {
    Ok(KeyRecord {
        key_id: r.try_get("key_id")?,
        agent_id: r.try_get("agent_id")?,
        label: r.try_get("label")?,
        created_at: r.try_get("created_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert_key(
        &self,
        key_id: &str,
        agent_id: &str,
        key_hash: &[u8],
        label: Option<&str>,
        at: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO agent_keys (key_id, agent_id, key_hash, label, created_at) VALUES (?, ?, ?, ?, ?)")
            .bind(key_id)
            .bind(agent_id)
            .bind(key_hash)
            .bind(label)
            .bind(at)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn find_key(&self, key_hash: &[u8]) -> Result<Option<KeyMatch>, StoreError> {
        // The agent's status comes along in the same round trip: the admit
        // stage uses it for this request instead of reading it again.
        let row = sqlx::query(
            "SELECT k.key_id, k.agent_id, k.label, k.created_at, k.revoked_at, \
             l.status, l.reason, l.changed_by, l.changed_at \
             FROM agent_keys k LEFT JOIN agent_lifecycle l ON l.agent_id = k.agent_id \
             WHERE k.key_hash = ? AND k.revoked_at IS NULL",
        )
        .bind(key_hash)
        .fetch_optional(&self.read)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let status: Option<String> = r.try_get("status")?;
        let lifecycle = match status {
            Some(status) => Some(Lifecycle {
                status: AgentStatus::parse(&status),
                reason: r.try_get("reason")?,
                changed_by: r.try_get("changed_by")?,
                changed_at: r.try_get("changed_at")?,
            }),
            None => None,
        };
        Ok(Some(KeyMatch {
            key: key_row(&r)?,
            lifecycle,
        }))
    }

    async fn revoke_key(&self, key_id: &str, at: &str) -> Result<bool, StoreError> {
        Ok(self.revoke_key_ending_tasks(key_id, at).await?.is_some())
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = sqlx::query("SELECT key_id, agent_id, label, created_at, revoked_at FROM agent_keys ORDER BY agent_id, created_at")
            .fetch_all(&self.read)
            .await?;
        Ok(rows.iter().map(key_row).collect::<Result<_, _>>()?)
    }

    async fn reserve_budget(
        &self,
        task_id: &str,
        budget: &str,
        amount: i64,
        max: i64,
    ) -> Result<Option<i64>, StoreError> {
        if amount > max {
            return Ok(None);
        }
        // One statement: the check and the add cannot be split by another
        // writer (SQLite serialises writers; PostgreSQL locks the row).
        let used: Option<i64> = sqlx::query_scalar(
            "INSERT INTO task_budgets (task_id, budget, used) VALUES (?1, ?2, ?3) \
             ON CONFLICT (task_id, budget) DO UPDATE SET used = used + excluded.used \
             WHERE task_budgets.used + excluded.used <= ?4 \
             RETURNING used",
        )
        .bind(task_id)
        .bind(budget)
        .bind(amount)
        .bind(max)
        .fetch_optional(&self.write)
        .await?;
        Ok(used)
    }

    async fn release_budget(
        &self,
        task_id: &str,
        budget: &str,
        amount: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE task_budgets SET used = MAX(used - ?3, 0) WHERE task_id = ?1 AND budget = ?2",
        )
        .bind(task_id)
        .bind(budget)
        .bind(amount)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn budget_used(&self, task_id: &str, budget: &str) -> Result<i64, StoreError> {
        let used: Option<i64> =
            sqlx::query_scalar("SELECT used FROM task_budgets WHERE task_id = ? AND budget = ?")
                .bind(task_id)
                .bind(budget)
                .fetch_optional(&self.read)
                .await?;
        Ok(used.unwrap_or(0))
    }

    async fn decisions(&self, f: &DecisionFilter) -> Result<Vec<DecisionRecord>, StoreError> {
        self.au_decisions(f).await
    }

    async fn audit_tail(&self, chain: &str) -> Result<Option<ChainTail>, StoreError> {
        self.au_tail(chain).await
    }
    async fn audit_append(
        &self,
        batch: std::sync::Arc<AuditBatch>,
        link: super::Linker,
    ) -> Result<ChainTail, StoreError> {
        self.au_append(batch, link).await
    }
    async fn audit_pending(&self, limit: u32) -> Result<Vec<PendingRecord>, StoreError> {
        self.au_pending(limit).await
    }
    async fn audit_pending_count(&self) -> Result<i64, StoreError> {
        self.au_pending_count().await
    }
    async fn audit_records(&self, f: &AuditFilter) -> Result<Vec<AuditRow>, StoreError> {
        self.au_records(f).await
    }
    async fn audit_range(
        &self,
        chain: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<AuditRow>, StoreError> {
        self.au_range(chain, after, limit).await
    }
    async fn audit_chains(&self) -> Result<Vec<String>, StoreError> {
        self.au_chains().await
    }
    async fn open_calls(&self) -> Result<Vec<OpenCall>, StoreError> {
        self.au_open_calls().await
    }
    async fn add_checkpoint(&self, c: &CheckpointRow) -> Result<(), StoreError> {
        self.au_add_checkpoint(c).await
    }
    async fn checkpoints(&self, chain: &str) -> Result<Vec<CheckpointRow>, StoreError> {
        self.au_checkpoints(chain).await
    }
    async fn anchor(&self, chain: &str) -> Result<Option<AnchorRow>, StoreError> {
        self.au_anchor(chain).await
    }
    async fn set_anchor(&self, a: &AnchorRow) -> Result<(), StoreError> {
        self.au_set_anchor(a).await
    }
    async fn prune_audit(&self, chain: &str, upto: i64, limit: u32) -> Result<u64, StoreError> {
        self.au_prune(chain, upto, limit).await
    }

    async fn maintenance(&self) -> Result<(), StoreError> {
        sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&self.read)
            .await?;
        Ok(())
    }

    async fn insert_admin_key(
        &self,
        key_id: &str,
        name: &str,
        key_hash: &[u8],
        at: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO admin_keys (key_id, name, key_hash, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(key_id)
        .bind(name)
        .bind(key_hash)
        .bind(at)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn agent_lifecycle(&self, agent_id: &str) -> Result<Option<Lifecycle>, StoreError> {
        let row = sqlx::query(
            "SELECT status, reason, changed_by, changed_at FROM agent_lifecycle WHERE agent_id = ?",
        )
        .bind(agent_id)
        .fetch_optional(&self.read)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let status: String = r.try_get("status")?;
        Ok(Some(Lifecycle {
            status: AgentStatus::parse(&status),
            reason: r.try_get("reason")?,
            changed_by: r.try_get("changed_by")?,
            changed_at: r.try_get("changed_at")?,
        }))
    }

    async fn set_agent_status(
        &self,
        agent_id: &str,
        to: AgentStatus,
        reason: &str,
        changed_by: &str,
        at: &str,
    ) -> Result<LifecycleEvent, StoreError> {
        // BEGIN IMMEDIATE takes the write lock up front, so two operators
        // changing the same agent cannot both read the old status.
        let mut conn = self.write.acquire().await?;
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        let result = async {
            let current: Option<String> = sqlx::query_scalar("SELECT status FROM agent_lifecycle WHERE agent_id = ?")
                .bind(agent_id)
                .fetch_optional(&mut *conn)
                .await?;
            let from = current.as_deref().map(AgentStatus::parse).unwrap_or(AgentStatus::Active);
            if from == AgentStatus::Retired {
                return Err(StoreError::Conflict(format!("agent `{agent_id}` is retired; retirement is permanent")));
            }
            if from == to {
                return Err(StoreError::Conflict(format!("agent `{agent_id}` is already {}", to.as_str())));
            }
            sqlx::query(
                "INSERT INTO agent_lifecycle (agent_id, status, reason, changed_by, changed_at) VALUES (?, ?, ?, ?, ?) \
                 ON CONFLICT(agent_id) DO UPDATE SET status = excluded.status, reason = excluded.reason, \
                 changed_by = excluded.changed_by, changed_at = excluded.changed_at",
            )
            .bind(agent_id)
            .bind(to.as_str())
            .bind(reason)
            .bind(changed_by)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "INSERT INTO agent_lifecycle_events (agent_id, from_status, to_status, reason, changed_by, changed_at) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(agent_id)
            .bind(from.as_str())
            .bind(to.as_str())
            .bind(reason)
            .bind(changed_by)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            if to != AgentStatus::Active {
                // A suspended or retired agent's tasks end now, and with them
                // every credential issued for them.
                let why = format!("agent {}: {reason}", to.as_str());
                let ids: Vec<String> =
                    sqlx::query_scalar("SELECT id FROM tasks WHERE agent_id = ? AND status = 'active'")
                        .bind(agent_id)
                        .fetch_all(&mut *conn)
                        .await?;
                for id in ids {
                    end_task_in(&mut conn, &id, &TaskEnd {
                        status: TaskStatus::Revoked,
                        by: changed_by.to_string(),
                        reason: why.clone(),
                        at: at.to_string(),
                    })
                    .await?;
                }
            }
            if to == AgentStatus::Retired {
                sqlx::query("UPDATE agent_keys SET revoked_at = ? WHERE agent_id = ? AND revoked_at IS NULL")
                    .bind(at)
                    .bind(agent_id)
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(LifecycleEvent {
                agent_id: agent_id.to_string(),
                from: from.as_str().to_string(),
                to: to.as_str().to_string(),
                reason: reason.to_string(),
                changed_by: changed_by.to_string(),
                changed_at: at.to_string(),
            })
        }
        .await;
        finish(&mut conn, result).await
    }

    async fn lifecycle_events(&self, agent_id: &str) -> Result<Vec<LifecycleEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT agent_id, from_status, to_status, reason, changed_by, changed_at FROM agent_lifecycle_events \
             WHERE agent_id = ? ORDER BY seq",
        )
        .bind(agent_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LifecycleEvent {
                    agent_id: r.try_get("agent_id")?,
                    from: r.try_get("from_status")?,
                    to: r.try_get("to_status")?,
                    reason: r.try_get("reason")?,
                    changed_by: r.try_get("changed_by")?,
                    changed_at: r.try_get("changed_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    async fn record_manifest_change(&self, c: &ManifestChange) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO manifest_changes (at, outcome, files, errors) VALUES (?, ?, ?, ?)",
        )
        .bind(&c.at)
        .bind(&c.outcome)
        .bind(c.files.to_string())
        .bind(
            c.errors
                .as_ref()
                .map(|e| serde_json::Value::from(e.clone()).to_string()),
        )
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn manifest_changes(&self, limit: u32) -> Result<Vec<ManifestChange>, StoreError> {
        let rows = sqlx::query(
            "SELECT at, outcome, files, errors FROM manifest_changes ORDER BY seq DESC LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                let files: String = r.try_get("files")?;
                let errors: Option<String> = r.try_get("errors")?;
                Ok(ManifestChange {
                    at: r.try_get("at")?,
                    outcome: r.try_get("outcome")?,
                    files: serde_json::from_str(&files).unwrap_or(serde_json::Value::Null),
                    errors: errors.and_then(|e| serde_json::from_str(&e).ok()),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    async fn create_task(&self, t: &TaskRecord) -> Result<(), StoreError> {
        // One statement on the one writer: either the key is live when the
        // row goes in, or the row does not go in. A revocation committed
        // just before is seen; one committed just after ends this task.
        let by_key = t.started_with.as_deref().filter(|s| s.starts_with("key_"));
        let done = sqlx::query(
            "INSERT INTO tasks (id, agent_id, purpose, tools, constraints, started_by, origin, created_at, expires_at, status, \
             started_with, started_with_expires_at) \
             SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? \
             WHERE ?13 IS NULL OR EXISTS (SELECT 1 FROM agent_keys WHERE key_id = ?13 AND revoked_at IS NULL)",
        )
        .bind(&t.id)
        .bind(&t.agent_id)
        .bind(&t.purpose)
        .bind(serde_json::Value::from(t.tools.clone()).to_string())
        .bind(serde_json::Value::from(t.constraints.clone()).to_string())
        .bind(&t.started_by)
        .bind(&t.origin)
        .bind(&t.created_at)
        .bind(&t.expires_at)
        .bind(t.status.as_str())
        .bind(&t.started_with)
        .bind(&t.started_with_expires_at)
        .bind(by_key)
        .execute(&self.write)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Conflict(
                "the key that started this task has been revoked".into(),
            ));
        }
        Ok(())
    }

    async fn task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM tasks WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.as_ref().map(task_row).transpose()?)
    }

    async fn tasks(&self, f: &TaskFilter) -> Result<Vec<TaskRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM tasks WHERE (?1 IS NULL OR agent_id = ?1) AND (?2 = 0 OR status = 'active') \
             ORDER BY created_at DESC LIMIT ?3",
        )
        .bind(&f.agent_id)
        .bind(f.active_only)
        .bind(i64::from(f.limit.unwrap_or(u32::MAX)))
        .fetch_all(&self.read)
        .await?;
        Ok(rows.iter().map(task_row).collect::<Result<_, _>>()?)
    }

    async fn end_task(&self, id: &str, end: &TaskEnd) -> Result<Option<TaskRecord>, StoreError> {
        let mut conn = self.write.acquire().await?;
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        let result = end_task_in(&mut conn, id, end).await;
        finish(&mut conn, result).await
    }

    async fn expire_tasks(&self, now: &str) -> Result<Vec<TaskRecord>, StoreError> {
        let due: Vec<String> =
            sqlx::query_scalar("SELECT id FROM tasks WHERE status = 'active' AND expires_at <= ?")
                .bind(now)
                .fetch_all(&self.read)
                .await?;
        let mut ended = Vec::new();
        for id in due {
            let end = TaskEnd {
                status: TaskStatus::Expired,
                by: "tollgate".into(),
                reason: "the task's time limit passed".into(),
                at: now.to_string(),
            };
            if let Some(t) = self.end_task(&id, &end).await? {
                ended.push(t);
            }
        }
        Ok(ended)
    }

    async fn record_credential(&self, c: &CredentialRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO credentials (id, task_id, agent_id, connector_id, kind, digest, scope, audience, issued_at, \
             expires_at, revoked_at, revoke_reason, upstream_pending) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&c.id)
        .bind(&c.task_id)
        .bind(&c.agent_id)
        .bind(&c.connector_id)
        .bind(&c.kind)
        .bind(&c.digest)
        .bind(&c.scope)
        .bind(&c.audience)
        .bind(&c.issued_at)
        .bind(&c.expires_at)
        .bind(&c.revoked_at)
        .bind(&c.revoke_reason)
        .bind(c.upstream_pending)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn credential(&self, id: &str) -> Result<Option<CredentialRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM credentials WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.as_ref().map(credential_row).transpose()?)
    }

    async fn task_credentials(&self, task_id: &str) -> Result<Vec<CredentialRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM credentials WHERE task_id = ? ORDER BY issued_at")
            .bind(task_id)
            .fetch_all(&self.read)
            .await?;
        Ok(rows.iter().map(credential_row).collect::<Result<_, _>>()?)
    }

    async fn pending_upstream_revocations(&self) -> Result<Vec<CredentialRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM credentials WHERE revoked_at IS NOT NULL AND upstream_pending = 1",
        )
        .fetch_all(&self.read)
        .await?;
        Ok(rows.iter().map(credential_row).collect::<Result<_, _>>()?)
    }

    async fn upstream_revoked(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE credentials SET upstream_pending = 0 WHERE id = ?")
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn latest_revocation(&self) -> Result<i64, StoreError> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM revocation_feed")
            .fetch_one(&self.read)
            .await?;
        Ok(seq.unwrap_or(0))
    }

    async fn revocations_since(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<RevocationEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, kind, agent_id, subject FROM revocation_feed WHERE seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get("kind")?;
                Ok(RevocationEvent {
                    seq: r.try_get("seq")?,
                    kind: RevocationKind::parse(&kind),
                    agent_id: r.try_get("agent_id")?,
                    subject: r.try_get("subject")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    async fn key_live(&self, key_id: &str) -> Result<bool, StoreError> {
        let live: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM agent_keys WHERE key_id = ? AND revoked_at IS NULL")
                .bind(key_id)
                .fetch_optional(&self.read)
                .await?;
        Ok(live.is_some())
    }

    async fn revoke_key_ending_tasks(
        &self,
        key_id: &str,
        at: &str,
    ) -> Result<Option<Vec<TaskRecord>>, StoreError> {
        let mut conn = self.write.acquire().await?;
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        let result = async {
            let done = sqlx::query(
                "UPDATE agent_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
            )
            .bind(at)
            .bind(key_id)
            .execute(&mut *conn)
            .await?;
            if done.rows_affected() != 1 {
                return Ok(None);
            }
            // Whatever the key started ends with it: a leaked key cannot
            // leave a task (and its token) behind.
            let ids: Vec<String> = sqlx::query_scalar(
                "SELECT id FROM tasks WHERE started_with = ? AND status = 'active'",
            )
            .bind(key_id)
            .fetch_all(&mut *conn)
            .await?;
            let mut ended = Vec::new();
            for id in ids {
                let end = TaskEnd {
                    status: TaskStatus::Revoked,
                    by: "tollgate".into(),
                    reason: super::STARTING_KEY_REVOKED.into(),
                    at: at.to_string(),
                };
                if let Some(t) = end_task_in(&mut conn, &id, &end).await? {
                    ended.push(t);
                }
            }
            Ok(Some(ended))
        }
        .await;
        finish(&mut conn, result).await
    }

    async fn task_with_starting_key(
        &self,
        id: &str,
    ) -> Result<Option<(TaskRecord, Option<bool>)>, StoreError> {
        let row = sqlx::query(
            "SELECT t.*, k.key_id AS starting_key, k.revoked_at AS starting_key_revoked_at \
             FROM tasks t LEFT JOIN agent_keys k ON k.key_id = t.started_with WHERE t.id = ?",
        )
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let task = task_row(&r)?;
        let starting_key: Option<String> = r.try_get("starting_key")?;
        let revoked_at: Option<String> = r.try_get("starting_key_revoked_at")?;
        let live = match (&task.started_with, starting_key) {
            (Some(_), Some(_)) => Some(revoked_at.is_none()),
            // Started with a key the store no longer knows: not live.
            (Some(w), None) if w.starts_with("key_") => Some(false),
            _ => None,
        };
        Ok(Some((task, live)))
    }

    async fn revoke_credential(
        &self,
        id: &str,
        at: &str,
        reason: &str,
        upstream_pending: bool,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE credentials SET revoked_at = ?, revoke_reason = ?, upstream_pending = ? \
             WHERE id = ? AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(reason)
        .bind(upstream_pending)
        .bind(id)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn issue_admin_key(
        &self,
        key: &AdminKeyRecord,
        key_hash: &[u8],
        action: &AdminAction,
    ) -> Result<(), StoreError> {
        let mut conn = self.write.acquire().await?;
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        let result = async {
            sqlx::query(
                "INSERT INTO admin_keys (key_id, name, key_hash, created_at, agents) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(&key.key_id)
            .bind(&key.name)
            .bind(key_hash)
            .bind(&key.created_at)
            .bind(key.agents.as_ref().map(|a| serde_json::Value::from(a.clone()).to_string()))
            .execute(&mut *conn)
            .await?;
            insert_admin_action(&mut conn, action).await
        }
        .await;
        finish(&mut conn, result).await
    }

    async fn find_admin(&self, key_hash: &[u8]) -> Result<Option<AdminKeyRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT key_id, name, agents, created_at, revoked_at FROM admin_keys \
             WHERE key_hash = ? AND revoked_at IS NULL",
        )
        .bind(key_hash)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.as_ref().map(admin_key_row).transpose()?)
    }

    async fn admin_keys(&self) -> Result<Vec<AdminKeyRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT key_id, name, agents, created_at, revoked_at FROM admin_keys ORDER BY created_at, key_id",
        )
        .fetch_all(&self.read)
        .await?;
        Ok(rows.iter().map(admin_key_row).collect::<Result<_, _>>()?)
    }

    async fn revoke_admin_key(
        &self,
        key_id: &str,
        action: &AdminAction,
    ) -> Result<bool, StoreError> {
        let mut conn = self.write.acquire().await?;
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        let result = async {
            let done = sqlx::query(
                "UPDATE admin_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
            )
            .bind(&action.at)
            .bind(key_id)
            .execute(&mut *conn)
            .await?;
            if done.rows_affected() != 1 {
                return Ok(false);
            }
            insert_admin_action(&mut conn, action).await?;
            Ok(true)
        }
        .await;
        finish(&mut conn, result).await
    }

    async fn record_admin_action(&self, action: &AdminAction) -> Result<(), StoreError> {
        let mut conn = self.write.acquire().await?;
        insert_admin_action(&mut conn, action).await
    }

    async fn admin_actions(&self, limit: u32) -> Result<Vec<AdminAction>, StoreError> {
        let rows = sqlx::query(
            "SELECT at, actor, action, target, agent_id, detail FROM admin_actions ORDER BY seq DESC LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AdminAction {
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    agent_id: r.try_get("agent_id")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }
    async fn insert_approver_key(
        &self,
        key: &super::ApproverKeyRecord,
        key_hash: &[u8],
    ) -> Result<(), StoreError> {
        self.ap_insert_key(key, key_hash).await
    }
    async fn find_approver_key(
        &self,
        key_hash: &[u8],
    ) -> Result<Option<super::ApproverKeyRecord>, StoreError> {
        self.ap_find_key(key_hash).await
    }
    async fn approver_key_live(
        &self,
        key_id: &str,
    ) -> Result<Option<super::ApproverKeyRecord>, StoreError> {
        self.ap_live_key(key_id).await
    }
    async fn approver_keys(&self) -> Result<Vec<super::ApproverKeyRecord>, StoreError> {
        self.ap_keys().await
    }
    async fn revoke_approver_key(&self, key_id: &str, at: &str) -> Result<bool, StoreError> {
        self.ap_revoke_key(key_id, at).await
    }
    async fn create_approval(
        &self,
        request: &super::ApprovalRequest,
        max_pending: u32,
    ) -> Result<super::Created, StoreError> {
        self.ap_create(request, max_pending).await
    }
    async fn approval(&self, id: &str) -> Result<Option<super::ApprovalRequest>, StoreError> {
        self.ap_get(id).await
    }
    async fn approvals(
        &self,
        filter: &super::ApprovalFilter,
    ) -> Result<Vec<super::ApprovalRequest>, StoreError> {
        self.ap_list(filter).await
    }
    async fn approval_votes(&self, id: &str) -> Result<Vec<super::ApprovalVote>, StoreError> {
        self.ap_votes(id).await
    }
    async fn approval_events(&self, id: &str) -> Result<Vec<super::ApprovalEvent>, StoreError> {
        self.ap_events(id).await
    }
    async fn vote_approval(&self, input: &super::VoteInput) -> Result<super::Voted, StoreError> {
        self.ap_vote(input).await
    }
    async fn approved_for(
        &self,
        agent_id: &str,
        task_id: Option<&str>,
        tool: &str,
        args_digest: &str,
        now: &str,
    ) -> Result<Option<super::ApprovalRequest>, StoreError> {
        self.ap_approved_for(agent_id, task_id, tool, args_digest, now)
            .await
    }
    async fn use_approval(&self, id: &str, actor: &str, at: &str) -> Result<bool, StoreError> {
        self.ap_use(id, actor, at).await
    }
    async fn close_approval(
        &self,
        id: &str,
        from: &[super::ApprovalStatus],
        to: super::ApprovalStatus,
        actor: &str,
        reason: &str,
        at: &str,
    ) -> Result<bool, StoreError> {
        self.ap_close(id, from, to, actor, reason, at).await
    }
    async fn sweep_approvals(&self, now: &str) -> Result<Vec<super::ApprovalRequest>, StoreError> {
        self.ap_sweep(now).await
    }
    async fn record_approval_event(&self, event: &super::ApprovalEvent) -> Result<(), StoreError> {
        self.ap_event(event).await
    }
}

/// Commits the open transaction if `result` is a success, rolls it back
/// otherwise.
pub(super) async fn finish<T>(
    conn: &mut sqlx::pool::PoolConnection<sqlx::Sqlite>,
    result: Result<T, StoreError>,
) -> Result<T, StoreError> {
    match result {
        Ok(v) => {
            sqlx::query("COMMIT").execute(&mut **conn).await?;
            Ok(v)
        }
        Err(e) => {
            let _ = sqlx::query("ROLLBACK").execute(&mut **conn).await;
            Err(e)
        }
    }
}

/// Ends one task inside an open transaction: the task row and every
/// credential issued for it. Credentials that an external issuer handed out
/// are flagged for upstream revocation (RFC 7009) by the gateway.
async fn end_task_in(
    conn: &mut sqlx::pool::PoolConnection<sqlx::Sqlite>,
    id: &str,
    end: &TaskEnd,
) -> Result<Option<TaskRecord>, StoreError> {
    let done = sqlx::query(
        "UPDATE tasks SET status = ?, ended_at = ?, ended_by = ?, end_reason = ? WHERE id = ? AND status = 'active'",
    )
    .bind(end.status.as_str())
    .bind(&end.at)
    .bind(&end.by)
    .bind(&end.reason)
    .bind(id)
    .execute(&mut **conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    sqlx::query(
        "UPDATE credentials SET revoked_at = ?, revoke_reason = ?, \
         upstream_pending = CASE WHEN kind IN ('oauth2_client_credentials', 'token_exchange') THEN 1 ELSE 0 END \
         WHERE task_id = ? AND revoked_at IS NULL",
    )
    .bind(&end.at)
    .bind(format!("task {}: {}", end.status.as_str(), end.reason))
    .bind(id)
    .execute(&mut **conn)
    .await?;
    let row = sqlx::query("SELECT * FROM tasks WHERE id = ?")
        .bind(id)
        .fetch_one(&mut **conn)
        .await?;
    Ok(Some(task_row(&row)?))
}

fn task_row(r: &sqlx::sqlite::SqliteRow) -> Result<TaskRecord, sqlx::Error> {
    let tools: String = r.try_get("tools")?;
    let constraints: String = r.try_get("constraints")?;
    let status: String = r.try_get("status")?;
    Ok(TaskRecord {
        id: r.try_get("id")?,
        agent_id: r.try_get("agent_id")?,
        purpose: r.try_get("purpose")?,
        tools: serde_json::from_str(&tools).unwrap_or_default(),
        constraints: serde_json::from_str(&constraints).unwrap_or_default(),
        started_by: r.try_get("started_by")?,
        origin: r.try_get("origin")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        status: TaskStatus::parse(&status),
        ended_at: r.try_get("ended_at")?,
        ended_by: r.try_get("ended_by")?,
        end_reason: r.try_get("end_reason")?,
        started_with: r.try_get("started_with")?,
        started_with_expires_at: r.try_get("started_with_expires_at")?,
    })
}

fn credential_row(r: &sqlx::sqlite::SqliteRow) -> Result<CredentialRecord, sqlx::Error> {
    Ok(CredentialRecord {
        id: r.try_get("id")?,
        task_id: r.try_get("task_id")?,
        agent_id: r.try_get("agent_id")?,
        connector_id: r.try_get("connector_id")?,
        kind: r.try_get("kind")?,
        digest: r.try_get("digest")?,
        scope: r.try_get("scope")?,
        audience: r.try_get("audience")?,
        issued_at: r.try_get("issued_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
        revoke_reason: r.try_get("revoke_reason")?,
        upstream_pending: r.try_get("upstream_pending")?,
    })
}

async fn insert_admin_action(
    conn: &mut sqlx::pool::PoolConnection<sqlx::Sqlite>,
    a: &AdminAction,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO admin_actions (at, actor, action, target, agent_id, detail) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&a.at)
    .bind(&a.actor)
    .bind(&a.action)
    .bind(&a.target)
    .bind(&a.agent_id)
    .bind(&a.detail)
    .execute(&mut **conn)
    .await?;
    Ok(())
}

fn admin_key_row(r: &sqlx::sqlite::SqliteRow) -> Result<AdminKeyRecord, sqlx::Error> {
    let agents: Option<String> = r.try_get("agents")?;
    Ok(AdminKeyRecord {
        key_id: r.try_get("key_id")?,
        name: r.try_get("name")?,
        // An unreadable scope reads as "no agent" (closed), never "every agent".
        agents: agents.map(|a| serde_json::from_str(&a).unwrap_or_default()),
        created_at: r.try_get("created_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}
