//! A test token issuer: ES256 keys it generates, a JWKS endpoint on port 0
//! whose keys can be rotated, and tokens minted with any claims.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// One signing key and its public JWK.
#[derive(Clone)]
pub struct SigningKey {
    /// Key id.
    pub kid: String,
    encoding: EncodingKey,
    /// Public JWK (with `kid`).
    pub jwk: Jwk,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh P-256 key.
    pub fn generate(kid: &str) -> Self {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let encoding = EncodingKey::from_ec_der(pkcs8.as_ref());
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some(kid.to_string());
        Self {
            kid: kid.to_string(),
            encoding,
            jwk,
        }
    }

    /// Signs `claims` with this key (ES256, with `kid`).
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }

    /// Signs with this key but claims another key id in the header.
    pub fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.to_string());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// How a [`JwksServer`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwksMode {
    /// 200 with the published keys.
    Serve,
    /// 500.
    Fail,
    /// Holds the request open until the mode changes (then answers by the
    /// new mode).
    Hang,
}

/// A JWKS endpoint on port 0 whose keys can be rotated and which can be
/// made to fail or hang; it counts the requests it receives.
#[derive(Debug, Clone)]
pub struct JwksServer {
    /// `http://127.0.0.1:PORT/jwks.json`.
    pub url: String,
    state: Arc<JwksState>,
}

#[derive(Debug)]
struct JwksState {
    keys: RwLock<Vec<Jwk>>,
    mode: tokio::sync::watch::Sender<JwksMode>,
    hits: AtomicUsize,
}

async fn serve_jwks(State(s): State<Arc<JwksState>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    s.hits.fetch_add(1, Ordering::SeqCst);
    let mut mode = s.mode.subscribe();
    let now = *mode
        .wait_for(|m| *m != JwksMode::Hang)
        .await
        .expect("the server state outlives its handlers");
    match now {
        JwksMode::Fail => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        _ => Json(JwkSet {
            keys: s.keys.read().unwrap().clone(),
        })
        .into_response(),
    }
}

impl JwksServer {
    /// Serves the given keys.
    pub async fn start(keys: &[&SigningKey]) -> Self {
        let state = Arc::new(JwksState {
            keys: RwLock::new(keys.iter().map(|k| k.jwk.clone()).collect()),
            mode: tokio::sync::watch::Sender::new(JwksMode::Serve),
            hits: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/jwks.json", get(serve_jwks))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("http://{addr}/jwks.json"),
            state,
        }
    }

    /// Replaces the published keys (a rotation).
    pub fn publish(&self, keys: &[&SigningKey]) {
        *self.state.keys.write().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    /// Changes how requests (including those held open) are answered.
    pub fn set_mode(&self, mode: JwksMode) {
        self.state.mode.send_replace(mode);
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims valid for five minutes.
pub fn claims(iss: &str, aud: &str, sub: &str) -> Value {
    json!({ "iss": iss, "aud": aud, "sub": sub, "iat": now(), "exp": now() + 300 })
}
