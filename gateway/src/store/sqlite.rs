//! The embedded default store: one SQLite file in the data directory, in WAL
//! mode so readers never block the writer, with a busy timeout so concurrent
//! calls queue instead of failing.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use super::{DecisionFilter, DecisionRecord, KeyRecord, OutcomeUpdate, Store, StoreError};
use crate::util::now_rfc3339;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// SQLite-backed [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
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
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
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
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO agent_keys (key_id, agent_id, key_hash, label, created_at) VALUES (?, ?, ?, ?, ?)")
            .bind(key_id)
            .bind(agent_id)
            .bind(key_hash)
            .bind(label)
            .bind(now_rfc3339())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn find_key(&self, key_hash: &[u8]) -> Result<Option<KeyRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT key_id, agent_id, label, created_at, revoked_at FROM agent_keys WHERE key_hash = ? AND revoked_at IS NULL",
        )
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(key_row).transpose()?)
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = sqlx::query("SELECT key_id, agent_id, label, created_at, revoked_at FROM agent_keys ORDER BY agent_id, created_at")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(key_row).collect::<Result<_, _>>()?)
    }

    async fn record_decision(&self, r: &DecisionRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO decisions (id, seq, at, agent_id, credential_id, transport, tool, connector_id, risk, args_digest, \
             decision, reason_code, reason, outcome, outcome_code, backend_status, latency_us, owners) \
             VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM decisions), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&r.id)
        .bind(&r.at)
        .bind(&r.agent_id)
        .bind(&r.credential_id)
        .bind(&r.transport)
        .bind(&r.tool)
        .bind(&r.connector_id)
        .bind(&r.risk)
        .bind(&r.args_digest)
        .bind(&r.decision)
        .bind(&r.reason_code)
        .bind(&r.reason)
        .bind(&r.outcome)
        .bind(&r.outcome_code)
        .bind(r.backend_status)
        .bind(r.latency_us)
        .bind(r.owners.as_ref().map(|o| o.to_string()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn record_outcome(&self, id: &str, o: &OutcomeUpdate) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE decisions SET outcome = ?, outcome_code = ?, backend_status = ?, latency_us = ? WHERE id = ? AND outcome IS NULL",
        )
        .bind(o.outcome)
        .bind(o.outcome_code)
        .bind(o.backend_status.map(i64::from))
        .bind(o.latency_us)
        .bind(id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Database(sqlx::Error::RowNotFound));
        }
        Ok(())
    }

    async fn decisions(&self, f: &DecisionFilter) -> Result<Vec<DecisionRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM decisions WHERE (?1 IS NULL OR agent_id = ?1) ORDER BY seq DESC LIMIT ?2",
        )
        .bind(&f.agent_id)
        .bind(i64::from(f.limit.unwrap_or(u32::MAX)))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let owners: Option<String> = r.try_get("owners")?;
                Ok(DecisionRecord {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    agent_id: r.try_get("agent_id")?,
                    credential_id: r.try_get("credential_id")?,
                    transport: r.try_get("transport")?,
                    tool: r.try_get("tool")?,
                    connector_id: r.try_get("connector_id")?,
                    risk: r.try_get("risk")?,
                    args_digest: r.try_get("args_digest")?,
                    decision: r.try_get("decision")?,
                    reason_code: r.try_get("reason_code")?,
                    reason: r.try_get("reason")?,
                    outcome: r.try_get("outcome")?,
                    outcome_code: r.try_get("outcome_code")?,
                    backend_status: r.try_get("backend_status")?,
                    latency_us: r.try_get("latency_us")?,
                    owners: owners.and_then(|o| serde_json::from_str(&o).ok()),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    async fn secret(&self, name: &str, init: &[u8]) -> Result<Vec<u8>, StoreError> {
        // INSERT OR IGNORE then SELECT: two replicas starting together agree
        // on whichever value landed first.
        sqlx::query("INSERT OR IGNORE INTO gateway_secrets (name, value) VALUES (?, ?)")
            .bind(name)
            .bind(init)
            .execute(&self.pool)
            .await?;
        let row = sqlx::query("SELECT value FROM gateway_secrets WHERE name = ?")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("value")?)
    }
}
