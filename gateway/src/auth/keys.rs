//! Static API keys, held as SHA-256 hashes (the file never holds a key).
//!
//! ```json
//! {"keys": [{"name": "desk-1", "sha256": "<64 hex>", "symbols": ["*"],
//!            "max_connections": 10, "max_symbols": 500, "max_requests_per_sec": 50}]}
//! ```
//! A key's hash: `printf %s "$KEY" | sha256sum`.

use super::{AuthError, Credential, Entitlements, LoadError, Principal};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    keys: Vec<Key>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Key {
    name: String,
    sha256: String,
    symbols: Vec<String>,
    #[serde(default)]
    max_connections: Option<u32>,
    #[serde(default)]
    max_symbols: Option<u32>,
    #[serde(default)]
    max_requests_per_sec: Option<u32>,
}

/// The keys of one read of the file, by hash.
#[derive(Debug, Default)]
pub struct ApiKeys {
    by_hash: HashMap<[u8; 32], Principal>,
}

impl ApiKeys {
    /// Reads `path`.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let (text, invalid) = super::read_key_file("--api-keys-file", path)?;
        let file: File = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let mut by_hash = HashMap::new();
        for k in file.keys {
            let hash: [u8; 32] = data_encoding::HEXLOWER_PERMISSIVE
                .decode(k.sha256.as_bytes())
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| invalid(format!("key {:?}: sha256 must be 64 hex digits", k.name)))?;
            let entitlements =
                Entitlements::parse(&k.symbols).map_err(|e| invalid(format!("key {:?}: {e}", k.name)))?;
            let p = Principal {
                subject: k.name.clone(),
                credential: Credential::ApiKey { name: k.name.clone(), hash },
                expires_at: None,
                entitlements,
                max_connections: k.max_connections,
                max_symbols: k.max_symbols,
                max_requests_per_sec: k.max_requests_per_sec,
            };
            if by_hash.insert(hash, p).is_some() {
                return Err(invalid(format!("key {:?}: the same sha256 twice", k.name)));
            }
        }
        Ok(ApiKeys { by_hash })
    }

    /// The principal of `key`.
    pub fn verify(&self, key: &str) -> Result<Principal, AuthError> {
        self.by_hash.get(&hash(key)).cloned().ok_or(AuthError::UnknownKey)
    }

    /// Whether a key with this hash is (still) in the file.
    pub fn contains(&self, h: &[u8; 32]) -> bool {
        self.by_hash.contains_key(h)
    }
}

/// SHA-256 of a key, as the file holds it.
pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_by_hash_and_limits_carried() {
        let path = std::env::temp_dir().join(format!("quotecast-keys-{}.json", std::process::id()));
        let h = data_encoding::HEXLOWER.encode(&hash("s3cret"));
        std::fs::write(
            &path,
            format!(r#"{{"keys":[{{"name":"desk","sha256":"{h}","symbols":["AAPL"],"max_symbols":3}}]}}"#),
        )
        .unwrap();
        let k = ApiKeys::load(&path).unwrap();
        let p = k.verify("s3cret").unwrap();
        assert_eq!((p.subject.as_str(), p.max_symbols, p.max_connections), ("desk", Some(3), None));
        assert!(p.entitlements.allows("AAPL") && !p.entitlements.allows("MSFT"));
        assert_eq!(k.verify("s3cre"), Err(AuthError::UnknownKey));
        std::fs::write(&path, r#"{"keys":[{"name":"x","sha256":"abc","symbols":[]}]}"#).unwrap();
        let e = ApiKeys::load(&path).unwrap_err().to_string();
        assert!(e.contains("--api-keys-file") && e.contains("64 hex"), "{e}");
        let _ = std::fs::remove_file(&path);
    }
}
