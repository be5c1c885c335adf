//! Bearer keys the gateway issues (agent keys, admin keys): generation,
//! the hash the store keeps, and reading a bearer from an `Authorization`
//! header. One place, so every kind of key is made and parsed the same way.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Prefix of every gateway-issued agent key, so leaked keys are easy to
/// grep for.
pub const KEY_PREFIX: &str = "tgk_";

/// The SHA-256 under which a key is stored. Keys carry 256 random bits, so
/// a plain hash is enough: there is nothing to brute-force.
pub fn key_hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A freshly issued key: the secret (shown once), its public id and hash.
pub struct IssuedKey {
    /// The bearer key. Print once, then drop.
    pub key: String,
    /// Public id, safe to log.
    pub key_id: String,
    /// What the store keeps.
    pub hash: [u8; 32],
}

impl std::fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedKey")
            .field("key", &"<redacted>")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Generates a new random key: `prefix` + 256 random bits; its id is
/// `id_prefix` + the first 6 bytes of its hash in hex.
pub fn generate(prefix: &str, id_prefix: &str) -> IssuedKey {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let key = format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hash = key_hash(&key);
    let key_id = format!("{id_prefix}{}", hex::encode(&hash[..6]));
    IssuedKey { key, key_id, hash }
}

/// Generates a new agent key (`tgk_…`, id `key_…`).
pub fn new_key() -> IssuedKey {
    generate(KEY_PREFIX, "key_")
}

/// The bearer token of an `Authorization` header value (`Bearer x`, any
/// case of the scheme), if that is what it holds.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_prefixed_and_their_debug_hides_them() {
        let a = new_key();
        let b = new_key();
        assert!(a.key.starts_with(KEY_PREFIX));
        assert_ne!(a.key, b.key);
        assert_eq!(a.hash, key_hash(&a.key));
        assert!(a.key_id.starts_with("key_"));
        assert!(!format!("{a:?}").contains(&a.key));
    }

    #[test]
    fn bearer_reads_only_bearer_headers() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("BEARER abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearerabc"), None);
    }
}
