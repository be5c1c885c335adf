//! Target `jwt`: workload-identity tokens, `tollgate::identity::unverified_issuer`
//! and `Issuer::verify` against a JWKS file.
//!
//! The issuer trusts one P-256 key (`fixtures/jwt-issuer-key.p8.der`, a
//! fuzzing-only key, public on purpose) and allows ES256 and RS256, so a
//! token naming the wrong algorithm for its key is also exercised.
//!
//! Input: the first byte picks a mode, the rest is split at NUL bytes:
//! - mode 0: the rest is the token, as text (seeds hold tokens signed
//!   with the fixture key, so mutations of a valid token are explored);
//! - mode 1: header JSON, NUL, claims JSON, encoded and signed with the
//!   trusted key, so the claims checks behind the signature are reached;
//! - mode 2: header, claims and signature bytes, encoded as given: a
//!   signature the fuzzer made up.
//!
//! Properties: nothing panics; `unverified_issuer` returns the payload's
//! `iss` exactly when the payload is strict JSON; a token that verifies carries a signature over its first
//! two segments that the trusted key really made (checked with aws-lc
//! directly), uses ES256, names the issuer and the audience, is not
//! expired nor early (within the leeway) and its subject is its non-empty
//! `sub`; a made-up signature never verifies.

use std::sync::OnceLock;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};
use tollgate::identity::{Issuer, TokenError, VerifiedToken, unverified_issuer};

/// `iss` of the trusted issuer.
pub const ISS: &str = "https://issuer.fuzz.example";
/// Audience naming the gateway.
pub const AUD: &str = "tollgate-fuzz";
/// Key id in the JWKS.
pub const KID: &str = "fuzz-key";
const LEEWAY: i64 = 30;

const KEY_PKCS8: &[u8] = include_bytes!("../fixtures/jwt-issuer-key.p8.der");

struct State {
    rt: tokio::runtime::Runtime,
    issuer: Issuer,
    key: EcdsaKeyPair,
}

static STATE: OnceLock<State> = OnceLock::new();

/// The fuzzing-only signing key.
pub fn signing_key() -> EcdsaKeyPair {
    EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, KEY_PKCS8)
        .expect("the fixture key is a P-256 PKCS#8 key")
}

/// `header.claims` signed with `key`, every segment base64url.
pub fn sign(key: &EcdsaKeyPair, header: &[u8], claims: &[u8]) -> String {
    let input = format!("{}.{}", B64.encode(header), B64.encode(claims));
    let sig = key
        .sign(&SystemRandom::new(), input.as_bytes())
        .expect("ECDSA signing does not fail");
    format!("{input}.{}", B64.encode(sig.as_ref()))
}

fn state() -> &'static State {
    STATE.get_or_init(|| {
        let key = signing_key();
        let point = key.public_key().as_ref();
        // Uncompressed SEC1 point: 0x04 || x || y.
        let jwks = json!({ "keys": [{
            "kty": "EC", "crv": "P-256", "kid": KID, "alg": "ES256", "use": "sig",
            "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65]),
        }]});
        let dir = crate::scratch_dir("jwt");
        std::fs::write(dir.join("jwks.json"), jwks.to_string()).expect("cannot write the JWKS");
        let manifest = serde_json::from_value(json!({
            "kind": "Issuer", "id": "fuzz-idp", "description": "fuzzing issuer",
            "issuer": ISS, "audience": AUD, "algorithms": ["ES256", "RS256"],
            "jwks": { "file": "jwks.json" }, "leeway_seconds": LEEWAY,
        }))
        .expect("the issuer manifest is valid");
        let issuer = Issuer::from_manifest(&manifest, &dir).expect("the issuer loads");
        State {
            rt: crate::runtime(),
            issuer,
            key,
        }
    })
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let s = state();
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let (token, forged) = match mode % 3 {
        0 => (String::from_utf8_lossy(rest).into_owned(), false),
        1 => {
            let f = crate::fields(rest, 2);
            (
                sign(&s.key, f[0], f.get(1).copied().unwrap_or_default()),
                false,
            )
        }
        _ => {
            let f = crate::fields(rest, 3);
            let seg = |i: usize| B64.encode(f.get(i).copied().unwrap_or_default());
            (format!("{}.{}.{}", seg(0), seg(1), seg(2)), true)
        }
    };

    let payload = segment_json(&token, 1);
    match unverified_issuer(&token) {
        // A payload that is not strict JSON (invalid UTF-8 inside a claim
        // the issuer lookup skips) still yields its `iss`: harmless, the
        // lookup only picks the keys that then verify the whole token.
        Ok(_) if payload.is_none() => {}
        Ok(iss) => assert_eq!(
            payload
                .as_ref()
                .and_then(|p| p.get("iss"))
                .and_then(Value::as_str),
            Some(iss.as_str()),
            "unverified_issuer returned something other than the payload's iss"
        ),
        Err(TokenError::MissingClaim) if payload.is_none() => {}
        Err(TokenError::MissingClaim) => assert!(
            payload
                .as_ref()
                .is_some_and(|p| !p.get("iss").is_some_and(Value::is_string)),
            "MissingClaim for a payload with a string iss"
        ),
        Err(_) => {}
    }

    let verdict = s.rt.block_on(s.issuer.verify(&token));
    if std::env::var_os("TOLLGATE_FUZZ_DEBUG").is_some() {
        eprintln!("jwt mode {} -> {verdict:?}", mode % 3);
    }
    if let Ok(verified) = verdict {
        assert!(!forged, "a made-up signature verified: {token}");
        check_accepted(&token, &verified);
    }
}

/// What must be true of a token `Issuer::verify` accepted.
fn check_accepted(token: &str, verified: &VerifiedToken) {
    let (input, sig) = token
        .rsplit_once('.')
        .expect("an accepted token has segments");
    let sig = B64
        .decode(sig)
        .expect("an accepted token's signature is base64url");
    let point = signing_key().public_key().as_ref().to_vec();
    signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
        .verify(input.as_bytes(), &sig)
        .unwrap_or_else(|_| panic!("accepted a token the trusted key did not sign: {token}"));
    // Typed, like the verifier reads them: a claim the checks do not
    // use may hold a number serde_json's `Value` refuses (`1.5e9176…`).
    let header: AcceptedHeader = segment(token, 0).expect("an accepted token's header parses");
    assert_eq!(header.alg, "ES256");
    let claims: AcceptedClaims = segment(token, 1).expect("an accepted token's claims parse");
    assert_eq!(claims.iss.as_deref(), Some(ISS));
    let aud_ok = match &claims.aud {
        Some(Value::String(a)) => a == AUD,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(AUD)),
        _ => false,
    };
    assert!(
        aud_ok,
        "accepted a token whose aud does not name the gateway"
    );
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let exp = claims.exp;
    assert!(
        exp.is_some_and(|e| e + (LEEWAY + 5) as f64 >= now as f64),
        "accepted an expired token (exp {exp:?}, now {now})"
    );
    if let Some(nbf) = claims.nbf {
        assert!(
            nbf <= (now + LEEWAY + 5) as f64,
            "accepted a token before nbf"
        );
    }
    assert_eq!(claims.sub.as_deref(), Some(verified.subject.as_str()));
    assert!(!verified.subject.is_empty(), "accepted an empty sub");
    assert_eq!(verified.issuer_id, "fuzz-idp");
}

#[derive(serde::Deserialize)]
struct AcceptedHeader {
    alg: String,
}

#[derive(serde::Deserialize)]
struct AcceptedClaims {
    iss: Option<String>,
    aud: Option<Value>,
    exp: Option<f64>,
    nbf: Option<f64>,
    sub: Option<String>,
}

/// Segment `i` of a compact JWT deserialized as `T`.
fn segment<T: serde::de::DeserializeOwned>(token: &str, i: usize) -> Option<T> {
    serde_json::from_slice(&B64.decode(token.split('.').nth(i)?).ok()?).ok()
}

/// Segment `i` of a compact JWT decoded as a JSON object, if it is one.
fn segment_json(token: &str, i: usize) -> Option<serde_json::Map<String, Value>> {
    let raw = B64.decode(token.split('.').nth(i)?).ok()?;
    match serde_json::from_slice(&raw).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}
