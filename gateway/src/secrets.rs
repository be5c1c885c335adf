//! The gateway's own secrets: the HMAC key for argument and credential
//! digests, and the ES256 keys that sign task tokens and backend JWTs. They
//! live in one file in the data directory (`gateway-secrets.json`, mode
//! 0600), never in the store: whoever can read the database must not be
//! able to recompute digests or forge tokens. Replicas share the file the
//! way they would share any mounted secret.
//!
//! Keys rotate (`tollgate keys rotate`): the newest key signs, older keys
//! stay published in the JWKS until pruned, so tokens already issued keep
//! verifying until they expire.

use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// File name inside the data directory.
pub const FILE_NAME: &str = "gateway-secrets.json";

/// A secrets-file problem.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not what Tollgate wrote.
    #[error(
        "{path} is damaged ({reason}); restore it from backup (tokens and digests depend on it)"
    )]
    Damaged {
        /// File.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Key generation or signing failed.
    #[error("signing key error: {0}")]
    Crypto(String),
}

#[derive(Clone, Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    created_at: String,
    /// PKCS#8 DER, base64.
    pkcs8: String,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .field("pkcs8", &REDACTED)
            .finish()
    }
}

#[derive(Clone, Serialize, Deserialize)]
struct File {
    /// Random id of this gateway (installation), part of its issuer name.
    gateway_id: String,
    /// base64 HMAC key.
    digest_key: String,
    /// Oldest first; the last one signs.
    signing_keys: Vec<StoredKey>,
}

impl std::fmt::Debug for File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("File")
            .field("gateway_id", &self.gateway_id)
            .field("digest_key", &REDACTED)
            .field("signing_keys", &self.signing_keys)
            .finish()
    }
}

/// What `Debug` shows in place of a secret.
pub const REDACTED: Redacted = Redacted;

/// Shown by `Debug` where a secret would be.
#[derive(Clone, Copy)]
pub struct Redacted;

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A secret value held in memory (a client secret, a static credential, a
/// token). `Debug` never shows it; only [`SecretString::expose`] does, at
/// the one place that must send it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself: only for the request that must carry it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self)
    }
}

/// One usable signing key.
#[derive(Clone)]
struct SigningKey {
    kid: String,
    created_at: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: Jwk,
}

/// Loaded secrets. Cloning is cheap enough (a few keys).
#[derive(Clone)]
pub struct Secrets {
    path: PathBuf,
    gateway_id: String,
    digest_key: Vec<u8>,
    keys: Vec<SigningKey>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material.
        f.debug_struct("Secrets")
            .field("path", &self.path)
            .field("gateway_id", &self.gateway_id)
            .field("digest_key", &REDACTED)
            .field(
                "signing_keys",
                &self.keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn new_key() -> Result<StoredKey, SecretsError> {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .map_err(|e| SecretsError::Crypto(e.to_string()))?;
    let mut id = [0u8; 8];
    rand::rng().fill_bytes(&mut id);
    Ok(StoredKey {
        kid: format!("tg-{}", hex::encode(id)),
        created_at: crate::util::now_rfc3339(),
        pkcs8: b64().encode(pkcs8.as_ref()),
    })
}

impl Secrets {
    /// Loads `DIR/gateway-secrets.json`, creating it on first run.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, SecretsError> {
        let path = data_dir.join(FILE_NAME);
        let io = |source| SecretsError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(data_dir).map_err(io)?;
                let mut digest = [0u8; 32];
                rand::rng().fill_bytes(&mut digest);
                let mut gid = [0u8; 12];
                rand::rng().fill_bytes(&mut gid);
                let file = File {
                    gateway_id: hex::encode(gid),
                    digest_key: b64().encode(digest),
                    signing_keys: vec![new_key()?],
                };
                write_private(&path, &file)?;
                Self::from_file(&path, file)
            }
            Err(e) => Err(io(e)),
        }
    }

    fn parse(path: &Path, text: &str) -> Result<Self, SecretsError> {
        let file: File = serde_json::from_str(text).map_err(|e| SecretsError::Damaged {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_file(path, file)
    }

    fn from_file(path: &Path, file: File) -> Result<Self, SecretsError> {
        let damaged = |reason: String| SecretsError::Damaged {
            path: path.display().to_string(),
            reason,
        };
        let digest_key = b64()
            .decode(&file.digest_key)
            .map_err(|e| damaged(format!("digest_key: {e}")))?;
        if digest_key.len() < 32 {
            return Err(damaged("digest_key is shorter than 32 bytes".into()));
        }
        let mut keys = Vec::new();
        for k in &file.signing_keys {
            let der = b64()
                .decode(&k.pkcs8)
                .map_err(|e| damaged(format!("key {}: {e}", k.kid)))?;
            let encoding = EncodingKey::from_ec_der(&der);
            let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256)
                .map_err(|e| damaged(format!("key {}: {e}", k.kid)))?;
            jwk.common.key_id = Some(k.kid.clone());
            jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
            let decoding =
                DecodingKey::from_jwk(&jwk).map_err(|e| damaged(format!("key {}: {e}", k.kid)))?;
            keys.push(SigningKey {
                kid: k.kid.clone(),
                created_at: k.created_at.clone(),
                encoding,
                decoding,
                jwk,
            });
        }
        if keys.is_empty() {
            return Err(damaged("no signing key".into()));
        }
        Ok(Self {
            path: path.to_path_buf(),
            gateway_id: file.gateway_id,
            digest_key,
            keys,
        })
    }

    /// Adds a new signing key (which signs from now on), keeping at most
    /// `keep` keys in all (the oldest are dropped from the JWKS).
    pub fn rotate(data_dir: &Path, keep: usize) -> Result<Self, SecretsError> {
        let path = data_dir.join(FILE_NAME);
        let text = std::fs::read_to_string(&path).map_err(|source| SecretsError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut file: File = serde_json::from_str(&text).map_err(|e| SecretsError::Damaged {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        file.signing_keys.push(new_key()?);
        let excess = file.signing_keys.len().saturating_sub(keep.max(2));
        file.signing_keys.drain(..excess);
        write_private(&path, &file)?;
        Self::from_file(&path, file)
    }

    /// Rereads the file (after a rotation by another process).
    pub fn reload(&self) -> Result<Self, SecretsError> {
        let text = std::fs::read_to_string(&self.path).map_err(|source| SecretsError::Io {
            path: self.path.display().to_string(),
            source,
        })?;
        Self::parse(&self.path, &text)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The HMAC key for digests.
    pub fn digest_key(&self) -> &[u8] {
        &self.digest_key
    }

    /// This gateway's issuer name in the tokens it signs.
    pub fn issuer(&self) -> String {
        format!("urn:tollgate:{}", self.gateway_id)
    }

    /// The public keys, newest last.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: self.keys.iter().map(|k| k.jwk.clone()).collect(),
        }
    }

    /// (kid, created_at) of every key, newest last.
    pub fn key_ids(&self) -> Vec<(String, String)> {
        self.keys
            .iter()
            .map(|k| (k.kid.clone(), k.created_at.clone()))
            .collect()
    }

    /// Signs claims with the newest key.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, SecretsError> {
        let key = self
            .keys
            .last()
            .ok_or_else(|| SecretsError::Crypto("no signing key".into()))?;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key.kid.clone());
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, claims, &key.encoding)
            .map_err(|e| SecretsError::Crypto(e.to_string()))
    }

    /// The decoding key for `kid`, if this gateway published it.
    pub fn decoding_key(&self, kid: &str) -> Option<&DecodingKey> {
        self.keys.iter().find(|k| k.kid == kid).map(|k| &k.decoding)
    }
}

fn write_private(path: &Path, file: &File) -> Result<(), SecretsError> {
    let io = |source| SecretsError::Io {
        path: path.display().to_string(),
        source,
    };
    let text =
        serde_json::to_string_pretty(file).map_err(|e| SecretsError::Crypto(e.to_string()))?;
    // Write beside, then rename: a crash never leaves half a key file.
    let tmp = path.with_extension("json.tmp");
    {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut f = options.open(&tmp).map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}
