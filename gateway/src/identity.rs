//! Workload identities: verifying JWTs from the issuers that `Issuer`
//! manifests declare (OIDC providers, SPIFFE JWT-SVID issuers, Kubernetes
//! service-account tokens), with their keys from a JWKS URL (cached,
//! refreshed) or file.
//!
//! What is refused, each with its own reason: a token that does not parse,
//! `alg: none` or any algorithm the issuer does not allow, an unknown
//! issuer, a key id the issuer does not publish, a bad signature, a wrong or
//! missing audience, an expired or not-yet-valid token, a token without
//! `exp` or `sub`. The identity is (issuer id, `sub`) and nothing else.
//!
//! Keys from a URL are cached per issuer: fresh for `refresh_seconds`,
//! then refreshed in the background while the last good keys keep
//! answering, up to `max_stale_seconds` if the issuer keeps failing. Failed
//! fetches back off exponentially (1 s doubling to 60 s); concurrent
//! callers share one fetch; a caller that has no usable key waits for a
//! fetch for a bounded time only; a forced refresh for an unknown `kid`
//! (throttled to one per 5 s) never drops the keys in hand.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::manifest::types::{IssuerManifest, JwtAlgorithm};

/// Smallest gap between two forced JWKS refreshes (unknown `kid`), so a
/// stream of junk tokens cannot make the gateway hammer the issuer.
const MIN_FORCED_REFRESH: Duration = Duration::from_secs(5);

/// Longest a caller waits for a key fetch it needs (no usable keys, or an
/// unknown `kid`); the fetch itself goes on in the background.
const DEFAULT_FETCH_WAIT: Duration = Duration::from_secs(2);

/// First back-off after a failed fetch; doubles per failure up to
/// [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_secs(1);

/// Longest back-off between fetch attempts while the issuer keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT, or its header or claims do not parse.
    #[error("the token is not a well-formed JWT")]
    Malformed,
    /// No declared issuer has this `iss`.
    #[error("the token's issuer is not trusted")]
    UnknownIssuer,
    /// The algorithm is not allowed for this issuer (includes `none`).
    #[error("the token's signing algorithm is not allowed")]
    AlgorithmNotAllowed,
    /// The issuer does not publish the key that signed the token.
    #[error("the token's signing key is not published by its issuer")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// `aud` missing or not naming this gateway.
    #[error("the token's audience does not name this gateway")]
    WrongAudience,
    /// Past `exp`.
    #[error("the token has expired")]
    Expired,
    /// Before `nbf`.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// A required claim (`exp`, `sub`) is missing.
    #[error("the token lacks a required claim")]
    MissingClaim,
    /// The issuer's keys could not be fetched: refused, not guessed.
    #[error("the issuer's keys cannot be fetched right now")]
    KeysUnavailable,
}

impl TokenError {
    /// Stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Malformed => "token_malformed",
            TokenError::UnknownIssuer => "token_issuer_unknown",
            TokenError::AlgorithmNotAllowed => "token_algorithm_not_allowed",
            TokenError::UnknownKey => "token_key_unknown",
            TokenError::BadSignature => "token_signature_invalid",
            TokenError::WrongAudience => "token_audience_invalid",
            TokenError::Expired => "token_expired",
            TokenError::NotYetValid => "token_not_yet_valid",
            TokenError::MissingClaim => "token_claim_missing",
            TokenError::KeysUnavailable => "issuer_keys_unavailable",
        }
    }
}

/// A verified token's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The issuer's manifest id.
    pub issuer_id: String,
    /// The `sub` claim.
    pub subject: String,
    /// The `exp` claim (seconds since the epoch): anything obtained with
    /// this token (an in-band task) must not outlive it.
    pub expires_at: i64,
}

#[derive(Debug)]
enum KeySource {
    Url {
        url: String,
        client: reqwest::Client,
    },
    File(PathBuf),
}

/// The key cache of a JWKS URL. Guarded by a plain mutex that is never
/// held across an await: fetches run in their own task, outside any lock
/// a caller holds, and callers wait for them only when they have no usable
/// keys, for at most the issuer's fetch wait.
#[derive(Debug, Default)]
struct KeyState {
    /// The last good key set.
    keys: Option<Arc<JwkSet>>,
    /// When the fetch that produced `keys` started.
    fetched: Option<Instant>,
    /// Failed fetches in a row.
    failures: u32,
    /// No fetch starts before this (back-off after failures).
    retry_at: Option<Instant>,
    /// When the last forced refresh (unknown `kid`) started.
    forced: Option<Instant>,
    /// The fetch in flight: becomes `true` when it is over. Concurrent
    /// callers share it.
    inflight: Option<tokio::sync::watch::Receiver<bool>>,
}

/// One trusted issuer with its key cache.
#[derive(Debug)]
pub struct Issuer {
    /// Manifest id.
    pub id: String,
    /// Exact `iss`.
    pub issuer: String,
    /// Audience naming this gateway.
    pub audience: String,
    /// Advertised authorization server.
    pub authorization_server: String,
    algorithms: Vec<Algorithm>,
    leeway: u64,
    refresh: Duration,
    max_stale: Duration,
    fetch_wait: Duration,
    source: KeySource,
    state: Arc<std::sync::Mutex<KeyState>>,
}

fn algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::RS384 => Algorithm::RS384,
        JwtAlgorithm::RS512 => Algorithm::RS512,
        JwtAlgorithm::PS256 => Algorithm::PS256,
        JwtAlgorithm::PS384 => Algorithm::PS384,
        JwtAlgorithm::PS512 => Algorithm::PS512,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::ES384 => Algorithm::ES384,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

#[derive(Deserialize)]
struct Unverified {
    iss: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    /// A number; some issuers write it with a fraction.
    exp: Option<f64>,
}

impl Issuer {
    /// Builds an issuer from its manifest; `base_dir` resolves a relative
    /// JWKS file. A JWKS file is read now so a bad one fails the load.
    pub fn from_manifest(m: &IssuerManifest, base_dir: &std::path::Path) -> Result<Self, String> {
        if m.algorithms.is_empty() {
            return Err("`algorithms` must list at least one algorithm".into());
        }
        if m.audience.trim().is_empty() {
            return Err("`audience` must name this gateway".into());
        }
        let source = match (&m.jwks.url, &m.jwks.file) {
            (Some(url), None) => {
                let parsed = reqwest::Url::parse(url)
                    .map_err(|e| format!("jwks.url `{url}` is not a valid URL: {e}"))?;
                if parsed.scheme() != "https" && !parsed.host_str().is_some_and(is_loopback_host) {
                    return Err(format!(
                        "jwks.url `{url}` must use https (plain http is accepted for loopback only)"
                    ));
                }
                let client = reqwest::Client::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .timeout(Duration::from_secs(5))
                    .tcp_nodelay(true)
                    .build()
                    .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
                KeySource::Url {
                    url: url.clone(),
                    client,
                }
            }
            (None, Some(file)) => KeySource::File(base_dir.join(file)),
            _ => return Err("`jwks` needs exactly one of `url` or `file`".into()),
        };
        let keys = match &source {
            KeySource::File(path) => Some(Arc::new(read_jwks_file(path)?)),
            KeySource::Url { .. } => None,
        };
        let refresh = Duration::from_secs(m.jwks.refresh_seconds.max(1));
        Ok(Self {
            id: m.id.clone(),
            issuer: m.issuer.clone(),
            audience: m.audience.clone(),
            authorization_server: m
                .authorization_server
                .clone()
                .unwrap_or_else(|| m.issuer.clone()),
            algorithms: m.algorithms.iter().copied().map(algorithm).collect(),
            leeway: m.leeway_seconds,
            refresh,
            // Stale keys are never kept for less than their refresh time.
            max_stale: Duration::from_secs(m.jwks.max_stale_seconds).max(refresh),
            fetch_wait: DEFAULT_FETCH_WAIT,
            source,
            state: Arc::new(std::sync::Mutex::new(KeyState {
                keys,
                ..KeyState::default()
            })),
        })
    }

    /// Sets how long a caller waits for a key fetch it needs (default 2 s).
    pub fn with_fetch_wait(mut self, wait: Duration) -> Self {
        self.fetch_wait = wait;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeyState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The keys to verify with at `now`. `force`: the token names a key id
    /// the keys in hand lack, so a refetch is wanted (throttled).
    async fn keys(&self, force: bool, now: Instant) -> Result<Arc<JwkSet>, TokenError> {
        let KeySource::Url { url, client } = &self.source else {
            return self.lock().keys.clone().ok_or(TokenError::KeysUnavailable);
        };
        let done = {
            let mut st = self.lock();
            let age = st.fetched.map(|f| now.saturating_duration_since(f));
            let usable = st
                .keys
                .clone()
                .filter(|_| age.is_some_and(|a| a < self.max_stale));
            let fresh = age.is_some_and(|a| a < self.refresh);
            let throttled = st
                .forced
                .is_some_and(|f| now.saturating_duration_since(f) < MIN_FORCED_REFRESH);
            match &usable {
                Some(keys) if fresh && (!force || throttled) => return Ok(keys.clone()),
                Some(keys) if force && throttled => return Ok(keys.clone()),
                _ => {}
            }
            let backing_off = st.retry_at.is_some_and(|t| now < t);
            if st.inflight.is_none() && !backing_off {
                st.inflight = Some(self.spawn_fetch(url.clone(), client.clone(), now));
            }
            if force {
                st.forced = Some(now);
            }
            match (usable, st.inflight.clone()) {
                // Due for a refresh but still good: answer now, the fetch
                // runs in the background.
                (Some(keys), _) if !force => return Ok(keys),
                // Backing off: whatever is still good, or nothing.
                (usable, None) => return usable.ok_or(TokenError::KeysUnavailable),
                (_, Some(done)) => done,
            }
        };
        let mut done = done;
        // Bounded: a hanging issuer delays a caller by the fetch wait at most.
        let _ = tokio::time::timeout(self.fetch_wait, done.wait_for(|over| *over)).await;
        let st = self.lock();
        let age = st.fetched.map(|f| now.saturating_duration_since(f));
        st.keys
            .clone()
            .filter(|_| age.is_some_and(|a| a < self.max_stale))
            .ok_or(TokenError::KeysUnavailable)
    }

    /// Starts one fetch in its own task; its result lands in the state
    /// whether or not anyone still waits for it.
    fn spawn_fetch(
        &self,
        url: String,
        client: reqwest::Client,
        started: Instant,
    ) -> tokio::sync::watch::Receiver<bool> {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let state = self.state.clone();
        let issuer = self.id.clone();
        tokio::spawn(async move {
            let fetched = async {
                let r = client
                    .get(&url)
                    .send()
                    .await
                    .ok()?
                    .error_for_status()
                    .ok()?;
                r.json::<JwkSet>().await.ok()
            }
            .await;
            {
                let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                st.inflight = None;
                match fetched {
                    Some(set) => {
                        st.keys = Some(Arc::new(set));
                        st.fetched = Some(started);
                        st.failures = 0;
                        st.retry_at = None;
                    }
                    None => {
                        // The last good keys stay (up to their maximum
                        // age); the next attempt waits, longer each time.
                        st.failures = st.failures.saturating_add(1);
                        let backoff = BASE_BACKOFF
                            .saturating_mul(1 << st.failures.saturating_sub(1).min(16))
                            .min(MAX_BACKOFF);
                        st.retry_at = Some(started + backoff);
                        tracing::warn!(%issuer, %url, failures = st.failures, retry_in = ?backoff, "cannot fetch the issuer's JWKS; keeping the last good keys");
                    }
                }
            }
            let _ = tx.send(true);
        });
        rx
    }

    /// Verifies `token` against this issuer.
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        self.verify_at(token, Instant::now()).await
    }

    /// [`Issuer::verify`] with the key cache's clock set to `now` (tests
    /// age the cache without waiting). Token times (`exp`, `nbf`) are
    /// always checked against the system clock.
    pub async fn verify_at(&self, token: &str, now: Instant) -> Result<VerifiedToken, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if !self.algorithms.contains(&header.alg) {
            return Err(TokenError::AlgorithmNotAllowed);
        }
        let set = self.keys(false, now).await?;
        let mut jwk = find_key(&set, header.kid.as_deref(), header.alg);
        if jwk.is_none() {
            // A failed forced refresh leaves the good keys in place; the
            // token is then refused for its unknown key, nothing else.
            if let Ok(set) = self.keys(true, now).await {
                jwk = find_key(&set, header.kid.as_deref(), header.alg);
            }
        }
        let jwk = jwk.ok_or(TokenError::UnknownKey)?;
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| TokenError::UnknownKey)?;
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_audience(&[&self.audience]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::InvalidSignature => TokenError::BadSignature,
                K::ExpiredSignature => TokenError::Expired,
                K::ImmatureSignature => TokenError::NotYetValid,
                K::InvalidAudience => TokenError::WrongAudience,
                K::InvalidIssuer => TokenError::UnknownIssuer,
                K::InvalidAlgorithm => TokenError::AlgorithmNotAllowed,
                K::MissingRequiredClaim(c) if c == "aud" => TokenError::WrongAudience,
                K::MissingRequiredClaim(_) => TokenError::MissingClaim,
                _ => TokenError::Malformed,
            }
        })?;
        let subject = data
            .claims
            .sub
            .filter(|s| !s.is_empty())
            .ok_or(TokenError::MissingClaim)?;
        let expires_at = data
            .claims
            .exp
            .filter(|e| e.is_finite())
            // Whole seconds, rounded down: never later than the token.
            .map(|e| e.floor() as i64)
            .ok_or(TokenError::MissingClaim)?;
        Ok(VerifiedToken {
            issuer_id: self.id.clone(),
            subject,
            expires_at,
        })
    }
}

fn find_key(set: &JwkSet, kid: Option<&str>, alg: Algorithm) -> Option<jsonwebtoken::jwk::Jwk> {
    match kid {
        Some(kid) => set.find(kid).cloned(),
        // Without a kid, only an unambiguous key set is usable.
        None => {
            let usable: Vec<_> = set
                .keys
                .iter()
                .filter(|k| {
                    k.common
                        .key_algorithm
                        .is_none_or(|ka| ka.to_string() == format!("{alg:?}"))
                })
                .collect();
            (usable.len() == 1).then(|| usable[0].clone())
        }
    }
}

fn read_jwks_file(path: &std::path::Path) -> Result<JwkSet, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read jwks.file {}: {e}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| format!("jwks.file {} is not a JWK set: {e}", path.display()))
}

fn is_loopback_host(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "[::1]" | "::1")
}

/// The unverified issuer and subject of a token, capped, for the record
/// of a failed authentication (never trusted for anything else).
pub fn unverified_subject(token: &str) -> (Option<String>, Option<String>) {
    use base64::Engine;
    #[derive(serde::Deserialize)]
    struct Claims {
        iss: Option<serde_json::Value>,
        sub: Option<serde_json::Value>,
    }
    let claims = token
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<Claims>(&b).ok());
    let cap = |v: Option<serde_json::Value>| {
        v.map(|v| {
            let s = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            s.chars().take(200).collect::<String>()
        })
    };
    match claims {
        Some(c) => (cap(c.iss), cap(c.sub)),
        None => (None, None),
    }
}

/// Reads the `iss` claim without verifying anything, only to pick the
/// issuer whose keys will verify the token.
pub fn unverified_issuer(token: &str) -> Result<String, TokenError> {
    use base64::Engine;
    let payload = token.split('.').nth(1).ok_or(TokenError::Malformed)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::Malformed)?;
    let claims: Unverified = serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    claims.iss.ok_or(TokenError::MissingClaim)
}
