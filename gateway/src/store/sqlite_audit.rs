//! The SQLite side of the audit trail (see `audit.rs` for the rows): the
//! readers behind query, report and export, checkpoints, anchors and
//! pruning. The group commit and the chain scan run on the trail's own
//! connections (`sqlite_direct.rs`).

use std::sync::Arc;

use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};

use super::audit::{
    AnchorRow, AuditBatch, AuditFilter, AuditRow, ChainTail, CheckpointRow, Linker, OpenCall,
    PendingRecord,
};
use super::{DecisionFilter, DecisionRecord, SqliteStore, StoreError};

const COLUMNS: &str = "chain, seq, id, at, kind, agent_id, task_id, tool, decision, reason_code, \
    outcome, ref, body, prev, hash";

fn audit_row(r: &SqliteRow) -> Result<AuditRow, sqlx::Error> {
    Ok(AuditRow {
        chain: r.try_get("chain")?,
        seq: r.try_get("seq")?,
        id: r.try_get("id")?,
        at: r.try_get("at")?,
        kind: r.try_get("kind")?,
        agent_id: r.try_get("agent_id")?,
        task_id: r.try_get("task_id")?,
        tool: r.try_get("tool")?,
        decision: r.try_get("decision")?,
        reason_code: r.try_get("reason_code")?,
        outcome: r.try_get("outcome")?,
        ref_id: r.try_get("ref")?,
        body: r.try_get("body")?,
        prev: r.try_get("prev")?,
        hash: r.try_get("hash")?,
    })
}

/// Runs a blocking store function on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Direct(format!("the audit store's thread failed: {e}")))?
}

impl SqliteStore {
    pub(super) async fn au_tail(&self, chain: &str) -> Result<Option<ChainTail>, StoreError> {
        let db = self.audit_db.clone();
        let chain = chain.to_string();
        blocking(move || db.tail(&chain)).await
    }

    pub(super) async fn au_append(
        &self,
        batch: Arc<AuditBatch>,
        link: Linker,
    ) -> Result<ChainTail, StoreError> {
        let db = self.audit_db.clone();
        blocking(move || db.append(&batch, link)).await
    }

    pub(super) async fn au_pending(&self, limit: u32) -> Result<Vec<PendingRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at, kind, agent_id, task_id, body FROM audit_pending ORDER BY seq LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.write)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PendingRecord {
                    seq: r.try_get("seq")?,
                    at: r.try_get("at")?,
                    kind: r.try_get("kind")?,
                    agent_id: r.try_get("agent_id")?,
                    task_id: r.try_get("task_id")?,
                    body: r.try_get("body")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    pub(super) async fn au_pending_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM audit_pending")
            .fetch_one(&self.read)
            .await?)
    }

    pub(super) async fn au_records(&self, f: &AuditFilter) -> Result<Vec<AuditRow>, StoreError> {
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new(format!("SELECT {COLUMNS} FROM audit_log WHERE 1 = 1"));
        let eq = |q: &mut QueryBuilder<Sqlite>, col: &str, v: &Option<String>| {
            if let Some(v) = v {
                q.push(format!(" AND {col} = "));
                q.push_bind(v.clone());
            }
        };
        eq(&mut q, "agent_id", &f.agent_id);
        eq(&mut q, "task_id", &f.task_id);
        eq(&mut q, "tool", &f.tool);
        eq(&mut q, "decision", &f.decision);
        eq(&mut q, "reason_code", &f.reason_code);
        eq(&mut q, "outcome", &f.outcome);
        if let Some(kind) = &f.kind {
            if let Some(prefix) = kind.strip_suffix('.') {
                q.push(" AND (kind = ");
                q.push_bind(prefix.to_string());
                q.push(" OR substr(kind, 1, ");
                q.push_bind(kind.len() as i64);
                q.push(") = ");
                q.push_bind(kind.clone());
                q.push(")");
            } else {
                q.push(" AND kind = ");
                q.push_bind(kind.clone());
            }
        }
        if let Some(since) = &f.since {
            q.push(" AND at >= ");
            q.push_bind(since.clone());
        }
        if let Some(until) = &f.until {
            q.push(" AND at < ");
            q.push_bind(until.clone());
        }
        q.push(if f.newest_first {
            " ORDER BY at DESC, chain, seq DESC"
        } else {
            " ORDER BY at, chain, seq"
        });
        q.push(" LIMIT ");
        q.push_bind(i64::from(f.limit.unwrap_or(u32::MAX)));
        let rows = q.build().fetch_all(&self.read).await?;
        rows.iter()
            .map(audit_row)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    pub(super) async fn au_range(
        &self,
        chain: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let db = self.audit_db.clone();
        let chain = chain.to_string();
        blocking(move || db.range(&chain, after, limit)).await
    }

    pub(super) async fn au_chains(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT chain FROM audit_log \
             UNION SELECT chain FROM audit_checkpoints \
             UNION SELECT chain FROM audit_anchors ORDER BY 1",
        )
        .fetch_all(&self.read)
        .await?)
    }

    pub(super) async fn au_open_calls(&self) -> Result<Vec<OpenCall>, StoreError> {
        let rows = sqlx::query("SELECT id, agent_id, task_id, tool FROM audit_open ORDER BY id")
            .fetch_all(&self.write)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(OpenCall {
                    id: r.try_get("id")?,
                    agent_id: r.try_get("agent_id")?,
                    task_id: r.try_get("task_id")?,
                    tool: r.try_get("tool")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    pub(super) async fn au_add_checkpoint(&self, c: &CheckpointRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT OR IGNORE INTO audit_checkpoints (chain, seq, hash, at, signature) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&c.chain)
        .bind(c.seq)
        .bind(&c.hash)
        .bind(&c.at)
        .bind(&c.signature)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    pub(super) async fn au_checkpoints(
        &self,
        chain: &str,
    ) -> Result<Vec<CheckpointRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT chain, seq, hash, at, signature FROM audit_checkpoints WHERE chain = ? ORDER BY seq",
        )
        .bind(chain)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(CheckpointRow {
                    chain: r.try_get("chain")?,
                    seq: r.try_get("seq")?,
                    hash: r.try_get("hash")?,
                    at: r.try_get("at")?,
                    signature: r.try_get("signature")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    pub(super) async fn au_anchor(&self, chain: &str) -> Result<Option<AnchorRow>, StoreError> {
        let row = sqlx::query(
            "SELECT chain, seq, hash, at, archive, signature FROM audit_anchors WHERE chain = ?",
        )
        .bind(chain)
        .fetch_optional(&self.write)
        .await?;
        row.map(|r| {
            Ok(AnchorRow {
                chain: r.try_get("chain")?,
                seq: r.try_get("seq")?,
                hash: r.try_get("hash")?,
                at: r.try_get("at")?,
                archive: r.try_get("archive")?,
                signature: r.try_get("signature")?,
            })
        })
        .transpose()
        .map_err(|e: sqlx::Error| StoreError::from(e))
    }

    pub(super) async fn au_set_anchor(&self, a: &AnchorRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_anchors (chain, seq, hash, at, archive, signature) VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (chain) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, at = excluded.at, \
             archive = excluded.archive, signature = excluded.signature WHERE excluded.seq > audit_anchors.seq",
        )
        .bind(&a.chain)
        .bind(a.seq)
        .bind(&a.hash)
        .bind(&a.at)
        .bind(&a.archive)
        .bind(&a.signature)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    pub(super) async fn au_prune(
        &self,
        chain: &str,
        upto: i64,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM audit_log WHERE chain = ?1 AND seq IN \
             (SELECT seq FROM audit_log WHERE chain = ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3)",
        )
        .bind(chain)
        .bind(upto)
        .bind(i64::from(limit))
        .execute(&self.write)
        .await?;
        if done.rows_affected() == 0 {
            sqlx::query("DELETE FROM audit_checkpoints WHERE chain = ? AND seq < ?")
                .bind(chain)
                .bind(upto)
                .execute(&self.write)
                .await?;
        }
        Ok(done.rows_affected())
    }

    /// Call records with their outcome folded in, newest first.
    pub(super) async fn au_decisions(
        &self,
        f: &DecisionFilter,
    ) -> Result<Vec<DecisionRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT c.body AS body, o.body AS outcome FROM audit_log c \
             LEFT JOIN audit_log o ON o.ref = c.id AND o.kind = 'call.outcome' \
             WHERE c.kind = 'call' AND (?1 IS NULL OR c.agent_id = ?1) \
             ORDER BY c.at DESC, c.seq DESC LIMIT ?2",
        )
        .bind(&f.agent_id)
        .bind(i64::from(f.limit.unwrap_or(u32::MAX)))
        .fetch_all(&self.read)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let body: String = r.try_get("body")?;
            let mut d: DecisionRecord = serde_json::from_str(&body).map_err(|e| {
                StoreError::Conflict(format!("a call record in the trail is not readable: {e}"))
            })?;
            let outcome: Option<String> = r.try_get("outcome")?;
            if let Some(o) =
                outcome.and_then(|o| serde_json::from_str::<serde_json::Value>(&o).ok())
            {
                d.outcome = o["outcome"].as_str().map(str::to_string);
                d.outcome_code = o["outcome_code"].as_str().map(str::to_string);
                d.backend_status = o["backend_status"].as_i64();
                d.latency_us = o["latency_us"].as_i64();
            }
            out.push(d);
        }
        Ok(out)
    }
}
