//! The hash chain: how a record's hash is computed, and how a run of
//! stored records is checked against it.
//!
//! A record's hash commits to every stored column (so no column can be
//! edited without the hash changing) and to the previous record's hash (so
//! no record can be removed, inserted or moved without breaking the link
//! that follows it). Fields are length-prefixed, so no two different
//! records encode to the same bytes.

use sha2::{Digest, Sha256};

use crate::store::{AuditRow, Linker};

/// The `prev` of a chain's first record.
pub const GENESIS: [u8; 32] = [0; 32];

/// Domain separation: a hash of something else cannot pass as a record's.
const TAG: &[u8] = b"tollgate.audit.v1\0";

fn field(h: &mut Sha256, v: Option<&str>) {
    match v {
        None => h.update([0u8]),
        Some(s) => {
            h.update([1u8]);
            h.update((s.len() as u64).to_be_bytes());
            h.update(s.as_bytes());
        }
    }
}

/// The hash of `row` as stored (its own `hash` column is not an input).
pub fn hash(row: &AuditRow) -> [u8; 32] {
    hash_at(row, row.seq, &row.prev)
}

/// The hash `row` gets as record `seq` after a record hashed `prev` (its
/// own `seq`, `prev` and `hash` columns are not inputs).
pub fn hash_at(row: &AuditRow, seq: i64, prev: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(TAG);
    field(&mut h, Some(&row.chain));
    h.update(seq.to_be_bytes());
    h.update((prev.len() as u64).to_be_bytes());
    h.update(prev);
    field(&mut h, Some(&row.id));
    field(&mut h, Some(&row.at));
    field(&mut h, Some(&row.kind));
    field(&mut h, row.agent_id.as_deref());
    field(&mut h, row.task_id.as_deref());
    field(&mut h, row.tool.as_deref());
    field(&mut h, row.decision.as_deref());
    field(&mut h, row.reason_code.as_deref());
    field(&mut h, row.outcome.as_deref());
    field(&mut h, row.ref_id.as_deref());
    field(&mut h, Some(&row.body));
    h.finalize().into()
}

/// How the store links appended rows into a chain.
pub const LINKER: Linker = Linker {
    genesis: GENESIS,
    hash: hash_at,
};

/// What is wrong with a record, as found by [`Walker`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Break {
    /// Its content does not match its hash: the record was edited.
    Altered {
        /// The record.
        seq: i64,
    },
    /// The seq after `after` is missing: records were removed.
    Missing {
        /// Last good seq.
        after: i64,
        /// The seq found next.
        found: i64,
    },
    /// The record does not link to the one before it: it was moved,
    /// replaced, or a record before it was removed and the seqs rewritten.
    Unlinked {
        /// The record.
        seq: i64,
    },
}

impl Break {
    /// The seq where the trail stops being trustworthy.
    pub fn seq(&self) -> i64 {
        match self {
            Break::Altered { seq } | Break::Unlinked { seq } => *seq,
            Break::Missing { after, .. } => after + 1,
        }
    }

    /// The stable code `verify` reports for this break.
    pub fn code(&self) -> &'static str {
        match self {
            Break::Altered { .. } => "altered",
            Break::Missing { .. } => "removed",
            Break::Unlinked { .. } => "unlinked",
        }
    }
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Break::Altered { seq } => write!(
                f,
                "record {seq} was altered or moved: its content no longer matches its hash"
            ),
            Break::Missing { after, found } => write!(
                f,
                "records {}..{} were removed (or moved): record {after} is followed by record {found}",
                after + 1,
                found - 1
            ),
            Break::Unlinked { seq } => write!(
                f,
                "record {seq} does not follow the record before it: records were reordered, replaced or removed"
            ),
        }
    }
}

/// Checks consecutive records of one chain, fed in seq order.
#[derive(Debug, Clone)]
pub struct Walker {
    /// Seq of the last record checked (or the anchor).
    pub seq: i64,
    /// Its hash.
    pub hash: Vec<u8>,
    /// How many records were checked.
    pub checked: u64,
}

impl Walker {
    /// Starts after `seq` whose hash is `hash` (0 and [`GENESIS`] for a
    /// chain's beginning).
    pub fn after(seq: i64, hash: Vec<u8>) -> Self {
        Self {
            seq,
            hash,
            checked: 0,
        }
    }

    /// Checks the next record.
    pub fn next(&mut self, row: &AuditRow) -> Result<(), Break> {
        self.check(row, &hash(row))
    }

    /// Checks the next record given its recomputed hash (so hashing can run
    /// in parallel ahead of the walk).
    pub fn check(&mut self, row: &AuditRow, recomputed: &[u8; 32]) -> Result<(), Break> {
        if row.seq != self.seq + 1 {
            if row.seq > self.seq + 1 {
                return Err(Break::Missing {
                    after: self.seq,
                    found: row.seq,
                });
            }
            return Err(Break::Unlinked { seq: row.seq });
        }
        if recomputed[..] != row.hash[..] {
            return Err(Break::Altered { seq: row.seq });
        }
        if row.prev != self.hash {
            return Err(Break::Unlinked { seq: row.seq });
        }
        self.seq = row.seq;
        self.hash = row.hash.clone();
        self.checked += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<AuditRow> {
        let mut prev = GENESIS.to_vec();
        (1..=n)
            .map(|seq| {
                let mut r = AuditRow {
                    chain: "main".into(),
                    seq,
                    id: format!("id-{seq}"),
                    at: format!("2026-01-01T00:00:{seq:02}Z"),
                    kind: "call".into(),
                    agent_id: Some("a".into()),
                    task_id: None,
                    tool: Some("t".into()),
                    decision: Some("allow".into()),
                    reason_code: Some("allowed".into()),
                    outcome: None,
                    ref_id: None,
                    body: format!("{{\"n\":{seq}}}"),
                    prev: prev.clone(),
                    hash: Vec::new(),
                };
                r.hash = hash(&r).to_vec();
                prev = r.hash.clone();
                r
            })
            .collect()
    }

    fn walk(rows: &[AuditRow]) -> Result<u64, Break> {
        let mut w = Walker::after(0, GENESIS.to_vec());
        for r in rows {
            w.next(r)?;
        }
        Ok(w.checked)
    }

    #[test]
    fn an_intact_chain_verifies() {
        assert_eq!(walk(&chain(5)), Ok(5));
    }

    type Edit = Box<dyn Fn(&mut AuditRow)>;

    #[test]
    fn each_column_is_covered() {
        let edits: Vec<Edit> = vec![
            Box::new(|r| r.at.push('x')),
            Box::new(|r| r.kind = "call.outcome".into()),
            Box::new(|r| r.agent_id = Some("b".into())),
            Box::new(|r| r.task_id = Some("t".into())),
            Box::new(|r| r.tool = None),
            Box::new(|r| r.decision = Some("deny".into())),
            Box::new(|r| r.reason_code = None),
            Box::new(|r| r.outcome = Some("ok".into())),
            Box::new(|r| r.ref_id = Some("x".into())),
            Box::new(|r| r.body.push(' ')),
            Box::new(|r| r.id.push('x')),
        ];
        for edit in edits {
            let mut rows = chain(3);
            edit(&mut rows[1]);
            assert_eq!(walk(&rows), Err(Break::Altered { seq: 2 }));
        }
    }

    #[test]
    fn removal_and_reordering_are_placed() {
        let mut rows = chain(5);
        rows.remove(2);
        assert_eq!(walk(&rows), Err(Break::Missing { after: 2, found: 4 }));

        // Read in seq order, a record moved away shows as a gap.
        let mut rows = chain(5);
        rows.swap(1, 2);
        assert_eq!(walk(&rows), Err(Break::Missing { after: 1, found: 3 }));

        // Swapping two records' seqs to hide the move breaks their hashes.
        let mut rows = chain(5);
        rows.swap(1, 2);
        rows[1].seq = 2;
        rows[2].seq = 3;
        assert_eq!(walk(&rows), Err(Break::Altered { seq: 2 }));
    }

    #[test]
    fn a_rehashed_edit_breaks_the_next_link() {
        let mut rows = chain(4);
        rows[1].body = "{\"n\":99}".into();
        rows[1].hash = hash(&rows[1]).to_vec();
        assert_eq!(walk(&rows), Err(Break::Unlinked { seq: 3 }));
    }

    #[test]
    fn absent_and_empty_fields_differ() {
        let mut a = chain(1).remove(0);
        let mut b = a.clone();
        a.task_id = None;
        b.task_id = Some(String::new());
        assert_ne!(hash(&a), hash(&b));
    }
}
