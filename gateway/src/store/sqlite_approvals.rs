//! The SQLite side of approvals (see `approvals.rs` for what is kept).
//! Every change that must not be split (a vote and the quorum it completes,
//! a use of an "approve once") is one transaction on the one writer.

use serde_json::Value;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::approvals::{
    ApprovalEvent, ApprovalFilter, ApprovalRequest, ApprovalStatus, ApprovalVote,
    ApproverKeyRecord, Created, VoteInput, Voted,
};
use super::sqlite::finish;
use super::{SqliteStore, StoreError};

type Conn = sqlx::pool::PoolConnection<sqlx::Sqlite>;

const COLUMNS: &str = "id, created_at, deadline, agent_id, credential_id, task_id, purpose, tool, \
    connector_id, risk, args_digest, arguments, route, approvers, required, four_eyes, policy, \
    owners, status, scope, patch, changed_arguments, decided_at, reason, use_by, uses";

fn json_col(row: &SqliteRow, name: &str) -> Result<Option<Value>, sqlx::Error> {
    let text: Option<String> = row.try_get(name)?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
}

fn request_row(row: &SqliteRow) -> Result<ApprovalRequest, sqlx::Error> {
    let status: String = row.try_get("status")?;
    Ok(ApprovalRequest {
        id: row.try_get("id")?,
        created_at: row.try_get("created_at")?,
        deadline: row.try_get("deadline")?,
        agent_id: row.try_get("agent_id")?,
        credential_id: row.try_get("credential_id")?,
        task_id: row.try_get("task_id")?,
        purpose: row.try_get("purpose")?,
        tool: row.try_get("tool")?,
        connector_id: row.try_get("connector_id")?,
        risk: row.try_get("risk")?,
        args_digest: row.try_get("args_digest")?,
        arguments: json_col(row, "arguments")?.unwrap_or(Value::Null),
        route: row.try_get("route")?,
        approvers: row.try_get("approvers")?,
        required: u32::try_from(row.try_get::<i64, _>("required")?).unwrap_or(u32::MAX),
        four_eyes: row.try_get::<i64, _>("four_eyes")? != 0,
        policy: json_col(row, "policy")?.unwrap_or(Value::Null),
        owners: json_col(row, "owners")?.unwrap_or(Value::Null),
        status: ApprovalStatus::parse(&status),
        scope: row.try_get("scope")?,
        patch: json_col(row, "patch")?,
        changed_arguments: json_col(row, "changed_arguments")?,
        decided_at: row.try_get("decided_at")?,
        reason: row.try_get("reason")?,
        use_by: row.try_get("use_by")?,
        uses: row.try_get("uses")?,
    })
}

fn vote_row(row: &SqliteRow) -> Result<ApprovalVote, sqlx::Error> {
    Ok(ApprovalVote {
        request_id: row.try_get("request_id")?,
        approver_id: row.try_get("approver_id")?,
        key_id: row.try_get("key_id")?,
        verdict: row.try_get("verdict")?,
        reason: row.try_get("reason")?,
        for_task: row.try_get::<i64, _>("for_task")? != 0,
        patch: json_col(row, "patch")?,
        at: row.try_get("at")?,
    })
}

fn key_row(row: &SqliteRow) -> Result<ApproverKeyRecord, sqlx::Error> {
    Ok(ApproverKeyRecord {
        key_id: row.try_get("key_id")?,
        approver_id: row.try_get("approver_id")?,
        label: row.try_get("label")?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

async fn event_in(conn: &mut Conn, e: &ApprovalEvent) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO approval_events (request_id, at, event, actor, detail) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(&e.request_id)
    .bind(&e.at)
    .bind(&e.event)
    .bind(&e.actor)
    .bind(e.detail.as_ref().map(Value::to_string))
    .execute(&mut **conn)
    .await?;
    Ok(())
}

async fn request_in(conn: &mut Conn, id: &str) -> Result<Option<ApprovalRequest>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM approval_requests WHERE id = ?"
    )))
    .bind(id)
    .fetch_optional(&mut **conn)
    .await?;
    Ok(row.map(|r| request_row(&r)).transpose()?)
}

fn event(
    request_id: &str,
    at: &str,
    event: &str,
    actor: &str,
    detail: Option<Value>,
) -> ApprovalEvent {
    ApprovalEvent {
        request_id: request_id.to_string(),
        at: at.to_string(),
        event: event.to_string(),
        actor: actor.to_string(),
        detail,
    }
}

impl SqliteStore {
    pub(super) async fn ap_insert_key(
        &self,
        key: &ApproverKeyRecord,
        hash: &[u8],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO approver_keys (key_id, approver_id, key_hash, label, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&key.key_id)
        .bind(&key.approver_id)
        .bind(hash)
        .bind(&key.label)
        .bind(&key.created_at)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    pub(super) async fn ap_find_key(
        &self,
        hash: &[u8],
    ) -> Result<Option<ApproverKeyRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT key_id, approver_id, label, created_at, revoked_at FROM approver_keys \
             WHERE key_hash = ? AND revoked_at IS NULL",
        )
        .bind(hash)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(|r| key_row(&r)).transpose()?)
    }

    pub(super) async fn ap_live_key(
        &self,
        key_id: &str,
    ) -> Result<Option<ApproverKeyRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT key_id, approver_id, label, created_at, revoked_at FROM approver_keys \
             WHERE key_id = ? AND revoked_at IS NULL",
        )
        .bind(key_id)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(|r| key_row(&r)).transpose()?)
    }

    pub(super) async fn ap_keys(&self) -> Result<Vec<ApproverKeyRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT key_id, approver_id, label, created_at, revoked_at FROM approver_keys ORDER BY created_at, key_id",
        )
        .fetch_all(&self.read)
        .await?;
        Ok(rows.iter().map(key_row).collect::<Result<_, _>>()?)
    }

    pub(super) async fn ap_revoke_key(&self, key_id: &str, at: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE approver_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(key_id)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) async fn ap_create(
        &self,
        r: &ApprovalRequest,
        max_pending: u32,
    ) -> Result<Created, StoreError> {
        let mut conn = self.write.acquire().await?;
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        let result = async {
            let same = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM approval_requests WHERE agent_id = ? AND tool = ? \
                 AND args_digest = ? AND task_id IS ? AND status = 'pending' LIMIT 1"
            )))
            .bind(&r.agent_id)
            .bind(&r.tool)
            .bind(&r.args_digest)
            .bind(&r.task_id)
            .fetch_optional(&mut *conn)
            .await?;
            if let Some(row) = same {
                return Ok(Created::Existing(Box::new(request_row(&row)?)));
            }
            let pending: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM approval_requests WHERE agent_id = ? AND status = 'pending'",
            )
            .bind(&r.agent_id)
            .fetch_one(&mut *conn)
            .await?;
            if pending >= i64::from(max_pending) {
                return Ok(Created::Full(u32::try_from(pending).unwrap_or(u32::MAX)));
            }
            sqlx::query(
                "INSERT INTO approval_requests (id, created_at, deadline, agent_id, credential_id, task_id, \
                 purpose, tool, connector_id, risk, args_digest, arguments, route, approvers, required, \
                 four_eyes, policy, owners, status) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending')",
            )
            .bind(&r.id)
            .bind(&r.created_at)
            .bind(&r.deadline)
            .bind(&r.agent_id)
            .bind(&r.credential_id)
            .bind(&r.task_id)
            .bind(&r.purpose)
            .bind(&r.tool)
            .bind(&r.connector_id)
            .bind(&r.risk)
            .bind(&r.args_digest)
            .bind(r.arguments.to_string())
            .bind(&r.route)
            .bind(&r.approvers)
            .bind(i64::from(r.required))
            .bind(i64::from(r.four_eyes))
            .bind(r.policy.to_string())
            .bind(r.owners.to_string())
            .execute(&mut *conn)
            .await?;
            event_in(
                &mut conn,
                &event(
                    &r.id,
                    &r.created_at,
                    "requested",
                    &r.agent_id,
                    Some(serde_json::json!({
                        "tool": r.tool, "task": r.task_id, "route": r.route,
                        "required": r.required, "deadline": r.deadline,
                    })),
                ),
            )
            .await?;
            let mut created = r.clone();
            created.status = ApprovalStatus::Pending;
            Ok(Created::New(Box::new(created)))
        }
        .await;
        finish(&mut conn, result).await
    }

    pub(super) async fn ap_get(&self, id: &str) -> Result<Option<ApprovalRequest>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM approval_requests WHERE id = ?"
        )))
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(|r| request_row(&r)).transpose()?)
    }

    pub(super) async fn ap_list(
        &self,
        f: &ApprovalFilter,
    ) -> Result<Vec<ApprovalRequest>, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM approval_requests WHERE 1 = 1");
        if !f.statuses.is_empty() {
            let names: Vec<String> = f
                .statuses
                .iter()
                .map(|s| format!("'{}'", s.as_str()))
                .collect();
            sql.push_str(&format!(" AND status IN ({})", names.join(", ")));
        }
        if f.agent_id.is_some() {
            sql.push_str(" AND agent_id = ?1");
        }
        if f.tool.is_some() {
            sql.push_str(" AND tool = ?2");
        }
        sql.push_str(" ORDER BY created_at DESC, id DESC LIMIT ?3");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&f.agent_id)
            .bind(&f.tool)
            .bind(i64::from(f.limit.unwrap_or(500)))
            .fetch_all(&self.read)
            .await?;
        Ok(rows.iter().map(request_row).collect::<Result<_, _>>()?)
    }

    pub(super) async fn ap_votes(&self, id: &str) -> Result<Vec<ApprovalVote>, StoreError> {
        let rows = sqlx::query(
            "SELECT request_id, approver_id, key_id, verdict, reason, for_task, patch, at \
             FROM approval_votes WHERE request_id = ? ORDER BY at, rowid",
        )
        .bind(id)
        .fetch_all(&self.read)
        .await?;
        Ok(rows.iter().map(vote_row).collect::<Result<_, _>>()?)
    }

    pub(super) async fn ap_events(&self, id: &str) -> Result<Vec<ApprovalEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT request_id, at, event, actor, detail FROM approval_events WHERE request_id = ? ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ApprovalEvent {
                    request_id: r.try_get("request_id")?,
                    at: r.try_get("at")?,
                    event: r.try_get("event")?,
                    actor: r.try_get("actor")?,
                    detail: json_col(r, "detail")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    pub(super) async fn ap_vote(&self, input: &VoteInput) -> Result<Voted, StoreError> {
        let v = &input.vote;
        let mut conn = self.write.acquire().await?;
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        let result = async {
            let Some(request) = request_in(&mut conn, &v.request_id).await? else {
                return Ok(Voted::NotFound);
            };
            if request.status != ApprovalStatus::Pending {
                return Ok(Voted::NotPending(request.status));
            }
            let voted: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM approval_votes WHERE request_id = ? AND approver_id = ?",
            )
            .bind(&v.request_id)
            .bind(&v.approver_id)
            .fetch_one(&mut *conn)
            .await?;
            if voted > 0 {
                return Ok(Voted::AlreadyVoted);
            }
            let approving = v.verdict == "approve";
            let approvals_before: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM approval_votes WHERE request_id = ? AND verdict = 'approve'",
            )
            .bind(&v.request_id)
            .fetch_one(&mut *conn)
            .await?;
            // Every approval of one request approves the same call: a
            // second approver cannot quietly approve other changes.
            if approving && approvals_before > 0 && request.patch != v.patch {
                return Ok(Voted::ConflictingChanges);
            }
            sqlx::query(
                "INSERT INTO approval_votes (request_id, approver_id, key_id, verdict, reason, for_task, patch, at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&v.request_id)
            .bind(&v.approver_id)
            .bind(&v.key_id)
            .bind(&v.verdict)
            .bind(&v.reason)
            .bind(i64::from(v.for_task))
            .bind(v.patch.as_ref().map(Value::to_string))
            .bind(&v.at)
            .execute(&mut *conn)
            .await?;
            event_in(
                &mut conn,
                &event(
                    &v.request_id,
                    &v.at,
                    "vote",
                    &v.approver_id,
                    Some(serde_json::json!({
                        "verdict": v.verdict, "reason": v.reason, "for_task": v.for_task,
                        "changed": v.patch,
                    })),
                ),
            )
            .await?;
            if !approving {
                sqlx::query(
                    "UPDATE approval_requests SET status = 'denied', decided_at = ?, reason = ? WHERE id = ?",
                )
                .bind(&v.at)
                .bind(&v.reason)
                .bind(&v.request_id)
                .execute(&mut *conn)
                .await?;
                event_in(
                    &mut conn,
                    &event(&v.request_id, &v.at, "denied", &v.approver_id, None),
                )
                .await?;
            } else {
                if let (Some(patch), Some(changed)) = (&v.patch, &input.changed) {
                    sqlx::query(
                        "UPDATE approval_requests SET patch = ?, changed_arguments = ? WHERE id = ?",
                    )
                    .bind(patch.to_string())
                    .bind(changed.to_string())
                    .bind(&v.request_id)
                    .execute(&mut *conn)
                    .await?;
                }
                if approvals_before + 1 >= i64::from(request.required) {
                    let any_for_task: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM approval_votes WHERE request_id = ? AND verdict = 'approve' AND for_task = 1",
                    )
                    .bind(&v.request_id)
                    .fetch_one(&mut *conn)
                    .await?;
                    // "For this task" only when every approver chose it.
                    let scope = if any_for_task == approvals_before + 1 {
                        "task"
                    } else {
                        "once"
                    };
                    sqlx::query(
                        "UPDATE approval_requests SET status = 'approved', decided_at = ?, scope = ?, use_by = ? WHERE id = ?",
                    )
                    .bind(&v.at)
                    .bind(scope)
                    .bind(&input.use_by)
                    .bind(&v.request_id)
                    .execute(&mut *conn)
                    .await?;
                    event_in(
                        &mut conn,
                        &event(
                            &v.request_id,
                            &v.at,
                            "approved",
                            &v.approver_id,
                            Some(serde_json::json!({ "scope": scope })),
                        ),
                    )
                    .await?;
                }
            }
            let now = request_in(&mut conn, &v.request_id)
                .await?
                .ok_or_else(|| StoreError::Conflict("request vanished".into()))?;
            Ok(Voted::Recorded(Box::new(now)))
        }
        .await;
        finish(&mut conn, result).await
    }

    pub(super) async fn ap_approved_for(
        &self,
        agent_id: &str,
        task_id: Option<&str>,
        tool: &str,
        digest: &str,
        now: &str,
    ) -> Result<Option<ApprovalRequest>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM approval_requests WHERE agent_id = ? AND tool = ? AND args_digest = ? \
             AND task_id IS ? AND status = 'approved' AND use_by > ? \
             AND (scope = 'task' OR uses = 0) ORDER BY decided_at LIMIT 1"
        )))
        .bind(agent_id)
        .bind(tool)
        .bind(digest)
        .bind(task_id)
        .bind(now)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(|r| request_row(&r)).transpose()?)
    }

    pub(super) async fn ap_use(&self, id: &str, actor: &str, at: &str) -> Result<bool, StoreError> {
        let mut conn = self.write.acquire().await?;
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        let result = async {
            // One statement decides who wins a race for an "approve once".
            let done = sqlx::query(
                "UPDATE approval_requests SET uses = uses + 1, \
                 status = CASE WHEN scope = 'task' THEN 'approved' ELSE 'used' END \
                 WHERE id = ? AND status = 'approved' AND use_by > ?",
            )
            .bind(id)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            if done.rows_affected() != 1 {
                return Ok(false);
            }
            event_in(&mut conn, &event(id, at, "used", actor, None)).await?;
            Ok(true)
        }
        .await;
        finish(&mut conn, result).await
    }

    pub(super) async fn ap_close(
        &self,
        id: &str,
        from: &[ApprovalStatus],
        to: ApprovalStatus,
        actor: &str,
        reason: &str,
        at: &str,
    ) -> Result<bool, StoreError> {
        let mut conn = self.write.acquire().await?;
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        let result = async {
            let names: Vec<String> = from.iter().map(|s| format!("'{}'", s.as_str())).collect();
            let done = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE approval_requests SET status = ?, decided_at = COALESCE(decided_at, ?), reason = ? \
                 WHERE id = ? AND status IN ({})",
                names.join(", ")
            )))
            .bind(to.as_str())
            .bind(at)
            .bind(reason)
            .bind(id)
            .execute(&mut *conn)
            .await?;
            if done.rows_affected() != 1 {
                return Ok(false);
            }
            event_in(
                &mut conn,
                &event(
                    id,
                    at,
                    to.as_str(),
                    actor,
                    Some(serde_json::json!({ "reason": reason })),
                ),
            )
            .await?;
            Ok(true)
        }
        .await;
        finish(&mut conn, result).await
    }

    pub(super) async fn ap_sweep(&self, now: &str) -> Result<Vec<ApprovalRequest>, StoreError> {
        let ended_task =
            "task_id IS NOT NULL AND task_id NOT IN (SELECT id FROM tasks WHERE status = 'active')";
        let candidates = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM approval_requests WHERE \
             (status = 'pending' AND deadline <= ?1) OR (status = 'approved' AND use_by <= ?1) \
             OR (status IN ('pending', 'approved') AND {ended_task})"
        )))
        .bind(now)
        .fetch_all(&self.read)
        .await?;
        let mut changed = Vec::new();
        for row in &candidates {
            let r = request_row(row)?;
            let task_over = match &r.task_id {
                Some(t) => {
                    let status: Option<String> =
                        sqlx::query_scalar("SELECT status FROM tasks WHERE id = ?")
                            .bind(t)
                            .fetch_optional(&self.read)
                            .await?;
                    status.as_deref() != Some("active")
                }
                None => false,
            };
            let (to, reason) = if task_over {
                (ApprovalStatus::Withdrawn, "the task ended")
            } else if r.status == ApprovalStatus::Pending {
                (ApprovalStatus::Expired, "no decision by the deadline")
            } else {
                (ApprovalStatus::Expired, "the approval was not used in time")
            };
            if self
                .ap_close(
                    &r.id,
                    &[ApprovalStatus::Pending, ApprovalStatus::Approved],
                    to,
                    "tollgate",
                    reason,
                    now,
                )
                .await?
                && let Some(now_r) = self.ap_get(&r.id).await?
            {
                changed.push(now_r);
            }
        }
        Ok(changed)
    }

    pub(super) async fn ap_event(&self, e: &ApprovalEvent) -> Result<(), StoreError> {
        let mut conn = self.write.acquire().await?;
        event_in(&mut conn, e).await
    }
}
