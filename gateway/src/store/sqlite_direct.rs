//! The audit trail's bulk paths on SQLite, on connections of their own
//! (rusqlite, the same bundled SQLite as sqlx): the group commit and the
//! chain scan behind `verify`. sqlx hands every statement and every row
//! across a channel to a worker thread; at thousands of rows per commit
//! and a million rows per verify that hop, not SQLite, was the cost.
//!
//! Owns: one writer connection (only the process's audit writer appends,
//! so it is never contended in-process) and a few read-only connections.
//! Every function here blocks: callers run it on the blocking pool.
//!
//! Beside the sqlx writer this is a second writing connection; both begin
//! with `BEGIN IMMEDIATE` and wait out the other with the busy timeout, the
//! same way a CLI process beside `serve` always has.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use super::StoreError;
use super::audit::{AuditBatch, AuditRow, ChainTail, Linker};

/// Same as the sqlx pools (`sqlite.rs`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Read-only connections kept for reuse.
const READERS: usize = 2;

const INSERT: &str = "INSERT INTO audit_log (chain, seq, id, at, kind, agent_id, task_id, tool, \
    decision, reason_code, outcome, ref, body, prev, hash) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)";

const RANGE: &str = "SELECT chain, seq, id, at, kind, agent_id, task_id, tool, decision, \
    reason_code, outcome, ref, body, prev, hash FROM audit_log \
    WHERE chain = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3";

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Direct(e.to_string())
    }
}

/// The audit trail's own connections to the store's file.
pub(super) struct AuditDb {
    file: PathBuf,
    writer: Mutex<Option<Connection>>,
    readers: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for AuditDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditDb").field("file", &self.file).finish()
    }
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
    )
}

impl AuditDb {
    /// Connections are opened on first use (the schema is migrated by then).
    pub fn new(file: &Path) -> Self {
        Self {
            file: file.to_path_buf(),
            writer: Mutex::new(None),
            readers: Mutex::new(Vec::new()),
        }
    }

    fn open(&self, write: bool) -> Result<Connection, StoreError> {
        let mode = if write {
            OpenFlags::SQLITE_OPEN_READ_WRITE
        } else {
            OpenFlags::SQLITE_OPEN_READ_ONLY
        };
        let conn = Connection::open_with_flags(
            &self.file,
            mode | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        if write {
            // As the sqlx writer: WAL is a property of the file; these two
            // are per connection.
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.pragma_update(None, "wal_autocheckpoint", 10_000)?;
        }
        conn.set_prepared_statement_cache_capacity(16);
        Ok(conn)
    }

    /// Runs `f` on the writer connection, opening it if needed. A
    /// connection that failed is dropped, so the next use reconnects.
    fn with_writer<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut slot = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut conn = match slot.take() {
            Some(c) => c,
            None => self.open(true)?,
        };
        let out = f(&mut conn);
        if !matches!(out, Err(StoreError::Direct(_))) {
            *slot = Some(conn);
        }
        out
    }

    fn with_reader<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match conn {
            Some(c) => c,
            None => self.open(false)?,
        };
        let out = f(&conn);
        if out.is_ok() {
            let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
            if readers.len() < READERS {
                readers.push(conn);
            }
        }
        out
    }

    /// The last record of `chain` as committed.
    pub fn tail(&self, chain: &str) -> Result<Option<ChainTail>, StoreError> {
        self.with_writer(|conn| tail_on(conn, chain))
    }

    /// One group commit: the batch lands whole or not at all, linked
    /// after the tail read under the write lock; synced before returning
    /// when `batch.durable`.
    pub fn append(&self, batch: &AuditBatch, link: Linker) -> Result<ChainTail, StoreError> {
        self.with_writer(|conn| {
            if batch.durable {
                // WAL + NORMAL does not sync at commit; a record that must
                // be durable before its call runs gets FULL for its batch.
                conn.pragma_update(None, "synchronous", "FULL")?;
            }
            let result = write_batch(conn, batch, link);
            if batch.durable {
                let reset = conn.pragma_update(None, "synchronous", "NORMAL");
                if result.is_ok() {
                    reset?;
                }
            }
            result
        })
    }

    /// Up to `limit` records of `chain` after `after`, in order.
    pub fn range(&self, chain: &str, after: i64, limit: u32) -> Result<Vec<AuditRow>, StoreError> {
        self.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(RANGE)?;
            let rows = stmt.query_map(params![chain, after, i64::from(limit)], |r| {
                Ok(AuditRow {
                    chain: r.get(0)?,
                    seq: r.get(1)?,
                    id: r.get(2)?,
                    at: r.get(3)?,
                    kind: r.get(4)?,
                    agent_id: r.get(5)?,
                    task_id: r.get(6)?,
                    tool: r.get(7)?,
                    decision: r.get(8)?,
                    reason_code: r.get(9)?,
                    outcome: r.get(10)?,
                    ref_id: r.get(11)?,
                    body: r.get(12)?,
                    prev: r.get(13)?,
                    hash: r.get(14)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}

fn tail_on(conn: &Connection, chain: &str) -> Result<Option<ChainTail>, StoreError> {
    let read = |sql: &str| -> Result<Option<ChainTail>, StoreError> {
        Ok(conn
            .prepare_cached(sql)?
            .query_row([chain], |r| {
                Ok(ChainTail {
                    seq: r.get(0)?,
                    hash: r.get(1)?,
                })
            })
            .optional()?)
    };
    match read("SELECT seq, hash FROM audit_log WHERE chain = ?1 ORDER BY seq DESC LIMIT 1")? {
        Some(t) => Ok(Some(t)),
        // A pruned chain continues after its anchor.
        None => read("SELECT seq, hash FROM audit_anchors WHERE chain = ?1"),
    }
}

fn write_batch(
    conn: &mut Connection,
    batch: &AuditBatch,
    link: Linker,
) -> Result<ChainTail, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Read under the write lock: no other writer can append between this
    // read and the commit, so the rows follow the true tail.
    let mut tail = tail_on(&tx, &batch.chain)?.unwrap_or(ChainTail {
        seq: 0,
        hash: link.genesis.to_vec(),
    });
    {
        let mut insert = tx.prepare_cached(INSERT)?;
        for r in &batch.rows {
            let seq = tail.seq + 1;
            let hash = (link.hash)(r, seq, &tail.hash);
            insert
                .execute(params![
                    batch.chain,
                    seq,
                    r.id,
                    r.at,
                    r.kind,
                    r.agent_id,
                    r.task_id,
                    r.tool,
                    r.decision,
                    r.reason_code,
                    r.outcome,
                    r.ref_id,
                    r.body,
                    tail.hash,
                    &hash[..]
                ])
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        StoreError::AuditRace { chain_moved: true }
                    } else {
                        StoreError::from(e)
                    }
                })?;
            tail = ChainTail {
                seq,
                hash: hash.to_vec(),
            };
        }
        let mut open = tx.prepare_cached(
            "INSERT OR IGNORE INTO audit_open (id, agent_id, task_id, tool) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for o in &batch.opened {
            open.execute(params![o.id, o.agent_id, o.task_id, o.tool])?;
        }
        let mut close = tx.prepare_cached("DELETE FROM audit_open WHERE id = ?1")?;
        for id in &batch.closed {
            close.execute([id])?;
        }
        let mut fold = tx.prepare_cached("DELETE FROM audit_pending WHERE seq = ?1")?;
        for seq in &batch.folded {
            if fold.execute([seq])? != 1 {
                // Another process folded it first: this batch would chain
                // it twice.
                return Err(StoreError::AuditRace { chain_moved: false });
            }
        }
    }
    // Dropping `tx` on an early return above rolls the whole batch back.
    tx.commit()?;
    Ok(tail)
}
