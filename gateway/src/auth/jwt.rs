//! Signed JWTs: EdDSA (Ed25519) or RS256, verified with public keys from a
//! PEM file (any number of `PUBLIC KEY` blocks) or a JWKS file (matched by
//! `kid`). `alg: none`, HMAC and every other algorithm are refused: a
//! gateway that only holds public keys cannot be fooled into treating one
//! as an HMAC secret.
//!
//! Claims: `sub` and `exp` (required), `nbf`, `iss`/`aud` when the gateway
//! requires them, `symbols` (entitlement patterns, required),
//! `max_connections`, `max_symbols` and `max_requests_per_sec` (optional
//! limits).

use super::{AuthConfig, AuthError, Credential, Entitlements, LoadError, Principal};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::path::Path;

/// The algorithms accepted.
const ACCEPTED: [Algorithm; 2] = [Algorithm::EdDSA, Algorithm::RS256];

struct VerifyingKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// Verifies tokens with the configured public keys.
#[derive(Default)]
pub struct Verifier {
    keys: Vec<VerifyingKey>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    symbols: Option<Vec<String>>,
    #[serde(default)]
    max_connections: Option<u32>,
    #[serde(default)]
    max_symbols: Option<u32>,
    #[serde(default)]
    max_requests_per_sec: Option<u32>,
}

impl Verifier {
    /// Reads the keys of `path` (`--jwt-key-file`).
    pub fn load(path: &Path, cfg: &AuthConfig) -> Result<Self, LoadError> {
        let (text, invalid) = super::read_key_file("--jwt-key-file", path)?;
        let keys = if text.trim_start().starts_with('{') {
            from_jwks(&text).map_err(&invalid)?
        } else {
            from_pem(&text).map_err(&invalid)?
        };
        if keys.is_empty() {
            return Err(invalid("no public key in it".into()));
        }
        Ok(Verifier {
            keys,
            issuer: cfg.jwt_issuer.clone(),
            audience: cfg.jwt_audience.clone(),
            leeway: cfg.jwt_leeway_secs,
        })
    }

    /// Verifies `token` (jsonwebtoken checks `exp` and `nbf` against the
    /// system clock, with `--jwt-leeway-secs`).
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| match header_alg(token) {
            Some(alg) => AuthError::WrongAlgorithm(alg),
            None => AuthError::Malformed("not a JWT".into()),
        })?;
        if !ACCEPTED.contains(&header.alg) {
            return Err(AuthError::WrongAlgorithm(format!("{:?}", header.alg)));
        }
        if !self.keys.iter().any(|k| k.alg == header.alg) {
            return Err(AuthError::WrongAlgorithm(format!("{:?}", header.alg)));
        }
        let mut candidates = self
            .keys
            .iter()
            .filter(|k| k.alg == header.alg)
            .filter(|k| match (&header.kid, &k.kid) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            })
            .peekable();
        if candidates.peek().is_none() {
            // A `kid` no configured key has: nothing can verify it.
            return Err(AuthError::BadSignature);
        }
        let mut v = Validation::new(header.alg);
        v.leeway = self.leeway;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "sub"]);
        match &self.audience {
            Some(a) => v.set_audience(&[a]),
            None => v.validate_aud = false,
        }
        if let Some(i) = &self.issuer {
            v.set_issuer(&[i]);
        }
        let mut last = AuthError::BadSignature;
        for k in candidates {
            match jsonwebtoken::decode::<Claims>(token, &k.key, &v) {
                Ok(data) => return principal(data.claims),
                Err(e) => {
                    last = match e.kind() {
                        ErrorKind::InvalidSignature => AuthError::BadSignature,
                        ErrorKind::ExpiredSignature => return Err(AuthError::Expired),
                        ErrorKind::ImmatureSignature => return Err(AuthError::NotYetValid),
                        ErrorKind::InvalidIssuer => return Err(AuthError::Claims("wrong iss".into())),
                        ErrorKind::InvalidAudience => return Err(AuthError::Claims("wrong aud".into())),
                        ErrorKind::MissingRequiredClaim(c) => {
                            return Err(AuthError::Claims(format!("no {c}")))
                        }
                        ErrorKind::Json(e) => return Err(AuthError::Claims(e.to_string())),
                        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
                            return Err(AuthError::Malformed("not a JWT".into()))
                        }
                        _ => AuthError::BadSignature,
                    }
                }
            }
        }
        Err(last)
    }
}

fn principal(c: Claims) -> Result<Principal, AuthError> {
    let Some(symbols) = c.symbols else {
        return Err(AuthError::Claims("no symbols claim (the entitlements)".into()));
    };
    let entitlements = Entitlements::parse(&symbols).map_err(AuthError::Claims)?;
    Ok(Principal {
        subject: c.sub,
        credential: Credential::Jwt,
        expires_at: Some(c.exp),
        entitlements,
        max_connections: c.max_connections,
        max_symbols: c.max_symbols,
        max_requests_per_sec: c.max_requests_per_sec,
    })
}

/// The `alg` a header names, read without trusting it (to say "none is
/// not accepted" instead of "malformed").
fn header_alg(token: &str) -> Option<String> {
    let head = token.split('.').next()?;
    let raw = data_encoding::BASE64URL_NOPAD.decode(head.trim_end_matches('=').as_bytes()).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&raw).ok()?;
    Some(v.get("alg")?.as_str()?.to_string())
}

fn from_pem(text: &str) -> Result<Vec<VerifyingKey>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let block = &rest[start..];
        let Some(end_at) = block.find("-----END ") else { return Err("a PEM block has no END line".into()) };
        let after = &block[end_at + 9..];
        let Some(close) = after.find("-----") else { return Err("a PEM END line is cut short".into()) };
        let pem = &block[..end_at + 9 + close + 5];
        rest = &block[pem.len()..];
        if let Ok(key) = DecodingKey::from_ed_pem(pem.as_bytes()) {
            out.push(VerifyingKey { kid: None, alg: Algorithm::EdDSA, key });
        } else if let Ok(key) = DecodingKey::from_rsa_pem(pem.as_bytes()) {
            out.push(VerifyingKey { kid: None, alg: Algorithm::RS256, key });
        } else {
            return Err(format!("PEM block {} is neither an Ed25519 nor an RSA public key", out.len() + 1));
        }
    }
    Ok(out)
}

fn from_jwks(text: &str) -> Result<Vec<VerifyingKey>, String> {
    let set: JwkSet = serde_json::from_str(text).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut out = Vec::new();
    for jwk in &set.keys {
        let alg = match &jwk.algorithm {
            AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            // HMAC secrets and EC keys are not accepted (see the module docs).
            _ => continue,
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {:?}: {e}", jwk.common.key_id))?;
        out.push(VerifyingKey { kid: jwk.common.key_id.clone(), alg, key });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    /// A throwaway Ed25519 key of this test only, and its public half as a
    /// JWK `x`.
    const PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIPPjqI+DnM5RuHELb/1XpaisswXlUFsz0NkSVTpzqI7s
-----END PRIVATE KEY-----
";
    const X: &str = "H9EONuVL2NUvpTGtzUhf8FxA1hN7ZGLd6hRASNKbKNo";

    fn token(kid: &str, exp_in: i64) -> String {
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some(kid.into());
        let exp = super::super::now_secs() as i64 + exp_in;
        let claims = serde_json::json!({"sub": "desk", "exp": exp, "symbols": ["AAPL"], "max_symbols": 7});
        jsonwebtoken::encode(&h, &claims, &EncodingKey::from_ed_pem(PRIVATE.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn a_jwks_file_verifies_by_kid() {
        let path = std::env::temp_dir().join(format!("quotecast-jwks-{}.json", std::process::id()));
        let jwks =
            format!(r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{X}","kid":"k1","use":"sig"}}]}}"#);
        std::fs::write(&path, jwks).unwrap();
        let cfg = crate::auth::AuthConfig::parse_default();
        let v = Verifier::load(&path, &cfg).unwrap();
        let p = v.verify(&token("k1", 60)).unwrap();
        assert_eq!((p.subject.as_str(), p.max_symbols), ("desk", Some(7)));
        assert!(p.entitlements.allows("AAPL") && !p.entitlements.allows("MSFT"));
        assert_eq!(v.verify(&token("k2", 60)).unwrap_err(), AuthError::BadSignature, "no key with that kid");
        assert_eq!(v.verify(&token("k1", -60)).unwrap_err(), AuthError::Expired);
        let _ = std::fs::remove_file(&path);
    }
}
