//! Target `task_token`: `tollgate::tasks::verify_token` on a gateway over a
//! real SQLite store, holding one valid task token.
//!
//! Input: the first byte picks a mode:
//! - even: the rest is a token, as text;
//! - odd: the rest is a list of edits applied to the valid token (each
//!   three bytes: position, operation, byte: replace, insert, delete, or
//!   swap two segments), so the fuzzer explores near-misses of a token
//!   that verifies.
//!
//! Properties: nothing panics; the valid token verifies; any other string
//! fails, except one that differs only in how its segments encode the same
//! bytes (checked: the decoded header, claims and signature must be
//! identical to the valid token's).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use tollgate::Gateway;

struct State {
    // Kept alive for the store's connections, though verification itself
    // is synchronous.
    _rt: tokio::runtime::Runtime,
    gw: Arc<Gateway>,
    token: String,
    decoded: Vec<Vec<u8>>,
}

static STATE: OnceLock<State> = OnceLock::new();

fn state() -> &'static State {
    STATE.get_or_init(|| {
        let rt = crate::runtime();
        let data = crate::scratch_dir("task_token");
        let (gw, token) = rt.block_on(async {
            // No backend is called: the connector's address only has to parse.
            let (gw, _key) = crate::gateway(&data, "http://127.0.0.1:9").await;
            let started = tollgate::tasks::start(
                &gw,
                tollgate::tasks::StartTask {
                    agent_id: crate::AGENT.into(),
                    purpose: "fuzzing task tokens".into(),
                    tools: vec![crate::GRANTED[0].into()],
                    constraints: vec![],
                    ttl: Duration::from_secs(3600),
                    started_by: "tollgate-fuzz".into(),
                    origin: "cli",
                },
            )
            .await
            .expect("a task starts");
            (gw, started.token)
        });
        let decoded = decode(&token).expect("the valid token decodes");
        State {
            _rt: rt,
            gw,
            token,
            decoded,
        }
    })
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let s = state();
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let candidate = if mode % 2 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        mutate(&s.token, rest)
    };
    let verdict = tollgate::tasks::verify_token(&s.gw, &candidate);
    if std::env::var_os("TOLLGATE_FUZZ_DEBUG").is_some() {
        eprintln!(
            "task token {candidate} -> {:?}",
            verdict.as_ref().map(|c| &c.tid)
        );
    }
    if candidate == s.token {
        let claims = verdict.expect("the valid task token must verify");
        assert_eq!(claims.sub, crate::AGENT);
        return;
    }
    if let Ok(claims) = verdict {
        assert!(
            decode(&candidate).as_ref() == Some(&s.decoded),
            "a changed task token verified: {candidate} (claims {claims:?})"
        );
    }
}

/// The three segments' bytes.
fn decode(token: &str) -> Option<Vec<Vec<u8>>> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return None;
    }
    parts.iter().map(|p| B64.decode(p).ok()).collect()
}

/// Applies the edits in `ops` to `token`.
fn mutate(token: &str, ops: &[u8]) -> String {
    let mut bytes = token.as_bytes().to_vec();
    for op in ops.chunks(3) {
        let [pos, kind, b] = [op[0], *op.get(1).unwrap_or(&0), *op.get(2).unwrap_or(&0)];
        if bytes.is_empty() {
            bytes.push(b);
            continue;
        }
        // Spread the one-byte position over the whole token.
        let at = usize::from(pos) * bytes.len() / 256;
        match kind % 4 {
            0 => bytes[at] = b,
            1 => bytes.insert(at, b),
            2 => {
                bytes.remove(at);
            }
            _ => {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let mut segs: Vec<&str> = text.split('.').collect();
                let n = segs.len();
                segs.swap(at % n, usize::from(b) % n);
                bytes = segs.join(".").into_bytes();
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}
