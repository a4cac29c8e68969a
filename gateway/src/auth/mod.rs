//! Who is connected and what each may see.
//!
//! A client proves who it is with a credential: a signed JWT (EdDSA or
//! RS256, verified with the public keys of `--jwt-key-file`) or a static
//! API key (looked up by its SHA-256 in `--api-keys-file`). Either yields a
//! [`Principal`]: a subject, an optional expiry, the symbols it is entitled
//! to and its limits. Every transport asks the same [`Authenticator`], and
//! checks entitlements with the same [`Entitlements::allows`].
//!
//! The key files are reloaded when they change ([`Authenticator::reload`]);
//! each reload bumps a generation that open sessions watch, so a key
//! removed from the file is noticed by every connection holding it.
//! This module is a leaf: it knows nothing of WebSocket or gRPC.

pub mod config;
mod jwt;
mod keys;
pub mod limits;

pub use config::AuthConfig;

use crate::reload::mtime;
use arc_swap::ArcSwap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Symbol patterns a principal may see: `*` (everything), an exact symbol
/// (`AAPL`), or a prefix ending in `*` (`MS*`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entitlements {
    all: bool,
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl Entitlements {
    /// Everything (authentication off).
    pub fn everything() -> Self {
        Entitlements { all: true, ..Entitlements::default() }
    }

    /// From patterns as written in a key file or a token.
    ///
    /// # Errors
    /// The first pattern that is not `*`, a symbol, or a prefix and `*`.
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<Self, String> {
        let mut e = Entitlements::default();
        for p in patterns {
            let p = p.as_ref().trim();
            let valid = |s: &str| {
                s.len() <= 8 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            };
            if p == "*" {
                e.all = true;
            } else if let Some(prefix) = p.strip_suffix('*') {
                if prefix.is_empty() || !valid(prefix) {
                    return Err(format!("entitlement {p:?}: expected *, a symbol, or a prefix then *"));
                }
                e.prefixes.push(prefix.to_ascii_uppercase());
            } else if !p.is_empty() && valid(p) {
                e.exact.push(p.to_ascii_uppercase());
            } else {
                return Err(format!("entitlement {p:?}: expected *, a symbol, or a prefix then *"));
            }
        }
        Ok(e)
    }

    /// Whether `symbol` may be seen.
    pub fn allows(&self, symbol: &str) -> bool {
        self.all
            || self.exact.iter().any(|s| s == symbol)
            || self.prefixes.iter().any(|p| symbol.starts_with(p.as_str()))
    }
}

/// How a principal proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// Nobody: authentication is off.
    Open,
    /// A static API key, by its name in the key file and its hash.
    ApiKey {
        /// The key's `name`.
        name: String,
        /// SHA-256 of the key (what the file holds).
        hash: [u8; 32],
    },
    /// A signed JWT.
    Jwt,
}

/// Who is connected, and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The key's name or the token's `sub`.
    pub subject: String,
    /// How it was proven.
    pub credential: Credential,
    /// When the credential stops being valid (seconds since the epoch).
    pub expires_at: Option<u64>,
    /// What it may see.
    pub entitlements: Entitlements,
    /// Connections it may hold at once, over all transports (None: only
    /// the server's own limits).
    pub max_connections: Option<u32>,
    /// Symbols it may subscribe per connection (None: the server's limit).
    pub max_symbols: Option<u32>,
    /// Requests per second over all its connections (burst: twice that;
    /// None: only the per-connection `--max-requests-per-sec`).
    pub max_requests_per_sec: Option<u32>,
}

impl Principal {
    /// The principal of a gateway without authentication.
    pub fn open() -> Self {
        Principal {
            subject: String::new(),
            credential: Credential::Open,
            expires_at: None,
            entitlements: Entitlements::everything(),
            max_connections: None,
            max_symbols: None,
            max_requests_per_sec: None,
        }
    }

    /// Time left until expiry from `now` (None: never expires).
    pub fn remaining(&self, now: SystemTime) -> Option<Duration> {
        let exp = UNIX_EPOCH + Duration::from_secs(self.expires_at?);
        Some(exp.duration_since(now).unwrap_or_default())
    }
}

/// Why a credential was refused. Each has its own metric label and
/// message; none says more than the client needs to fix its side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Authentication is on and no credential came.
    #[error("authentication required: send a token (Authorization: Bearer, ?token=, or an auth request)")]
    Missing,
    /// Not a JWT and not a key in the key file.
    #[error("unknown API key")]
    UnknownKey,
    /// A JWT that does not parse (or says `alg: none`, or an algorithm
    /// other than EdDSA and RS256).
    #[error("malformed token: {0}")]
    Malformed(String),
    /// A JWT signed with an algorithm no configured key verifies.
    #[error("token algorithm {0} is not accepted (EdDSA or RS256 with a configured key)")]
    WrongAlgorithm(String),
    /// The signature does not verify with any configured key.
    #[error("token signature does not verify")]
    BadSignature,
    /// Past `exp`.
    #[error("token expired")]
    Expired,
    /// Before `nbf`.
    #[error("token not valid yet")]
    NotYetValid,
    /// `iss` or `aud` differ from what the gateway requires, or a claim
    /// the gateway needs is missing or invalid.
    #[error("token claims refused: {0}")]
    Claims(String),
    /// A refresh for another subject than the connection's.
    #[error("a refresh must be for the same subject ({0})")]
    OtherSubject(String),
    /// The key was removed from the key file.
    #[error("API key revoked")]
    Revoked,
}

impl AuthError {
    /// Metric label.
    pub fn label(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::UnknownKey => "unknown_key",
            AuthError::Malformed(_) => "malformed",
            AuthError::WrongAlgorithm(_) => "wrong_algorithm",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::Claims(_) => "claims",
            AuthError::OtherSubject(_) => "other_subject",
            AuthError::Revoked => "revoked",
        }
    }

    /// Every label, for metrics that must exist from the start.
    pub const LABELS: [&'static str; 10] = [
        "missing",
        "unknown_key",
        "malformed",
        "wrong_algorithm",
        "bad_signature",
        "expired",
        "not_yet_valid",
        "claims",
        "other_subject",
        "revoked",
    ];
}

/// A key file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not readable.
    #[error("{flag} {path}: {source}")]
    Read {
        /// The flag naming the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Readable but wrong.
    #[error("{flag} {path}: {why}")]
    Invalid {
        /// The flag naming the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// What the key files say, swapped whole on reload.
#[derive(Default)]
struct Keys {
    api: keys::ApiKeys,
    jwt: jwt::Verifier,
    /// Modification times the files had when read.
    stamps: [Option<SystemTime>; 2],
}

/// Counters of access decisions, relaxed atomics read by metrics and tests.
#[derive(Debug, Default)]
pub struct AuthStats {
    /// Refused credentials, by [`AuthError::label`] (indexed as
    /// [`AuthError::LABELS`]).
    pub failures: [AtomicU64; AuthError::LABELS.len()],
    /// Upgrades refused for their `Origin` (403).
    pub origin_refused: AtomicU64,
    /// Upgrades refused because their address failed too often (429).
    pub blocked: AtomicU64,
    /// Connections refused by their key's `max_connections`.
    pub connection_limited: AtomicU64,
    /// Symbols refused as not entitled.
    pub not_entitled: AtomicU64,
    /// Credentials refreshed on an open connection.
    pub refreshed: AtomicU64,
    /// Connections closed at their token's expiry.
    pub expired_closes: AtomicU64,
    /// Connections closed because their key was revoked.
    pub revoked_closes: AtomicU64,
}

impl AuthStats {
    /// Refusals with reason `label`.
    pub fn failures_of(&self, label: &str) -> u64 {
        AuthError::LABELS
            .iter()
            .position(|l| *l == label)
            .map_or(0, |i| self.failures[i].load(Ordering::Relaxed))
    }
}

/// Verifies credentials against the key files; shared by every transport.
pub struct Authenticator {
    cfg: AuthConfig,
    keys: ArcSwap<Keys>,
    generation: watch::Sender<u64>,
    /// Failed attempts per source address.
    pub failures: limits::Failures,
    /// Open connections per subject.
    pub connections: Arc<limits::Connections>,
    /// Requests per second per subject.
    pub rates: limits::KeyRates,
    /// What was decided.
    pub stats: AuthStats,
    /// The principal of every client while authentication is off.
    open: Arc<Principal>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("enabled", &self.cfg.enabled()).finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Reads the key files of `cfg`.
    ///
    /// # Errors
    /// A file that cannot be read or parsed, naming its flag.
    pub fn new(cfg: &AuthConfig) -> Result<Self, LoadError> {
        let keys = Self::load(cfg)?;
        Ok(Authenticator {
            failures: limits::Failures::new(cfg.max_auth_failures_per_min),
            connections: Arc::default(),
            rates: limits::KeyRates::default(),
            stats: AuthStats::default(),
            open: Arc::new(Principal::open()),
            cfg: cfg.clone(),
            keys: ArcSwap::from_pointee(keys),
            generation: watch::channel(0).0,
        })
    }

    fn load(cfg: &AuthConfig) -> Result<Keys, LoadError> {
        let mut k = Keys::default();
        if let Some(p) = &cfg.api_keys_file {
            k.stamps[0] = mtime(p);
            k.api = keys::ApiKeys::load(p)?;
        }
        if let Some(p) = &cfg.jwt_key_file {
            k.stamps[1] = mtime(p);
            k.jwt = jwt::Verifier::load(p, cfg)?;
        }
        Ok(k)
    }

    /// Whether clients must authenticate.
    pub fn enabled(&self) -> bool {
        self.cfg.enabled()
    }

    /// The principal of a client while authentication is off (shared: it
    /// costs an idle connection one pointer).
    pub fn open(&self) -> Arc<Principal> {
        self.open.clone()
    }

    /// The settings.
    pub fn config(&self) -> &AuthConfig {
        &self.cfg
    }

    /// Verifies `token`: a JWT (three dot-separated parts) or an API key.
    ///
    /// # Errors
    /// Why it is refused.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if !self.enabled() {
            return Ok(Principal::open());
        }
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let keys = self.keys.load();
        if token.bytes().filter(|&b| b == b'.').count() == 2 {
            return keys.jwt.verify(token);
        }
        keys.api.verify(token)
    }

    /// Counts a refused credential from `ip` (towards its
    /// `--max-auth-failures-per-min`).
    pub fn failed(&self, ip: IpAddr, e: &AuthError) {
        self.failures.record(ip, Instant::now());
        if let Some(i) = AuthError::LABELS.iter().position(|l| *l == e.label()) {
            self.stats.failures[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether a browser page from `origin` may connect (`--allowed-origins`;
    /// none listed: any).
    pub fn origin_allowed(&self, origin: &str) -> bool {
        let list = &self.cfg.allowed_origins;
        list.is_empty() || list.iter().any(|pattern| origin_matches(pattern, origin))
    }

    /// Whether `p` still holds: not expired, and its API key still in the
    /// file.
    ///
    /// # Errors
    /// [`AuthError::Expired`] or [`AuthError::Revoked`].
    pub fn still_valid(&self, p: &Principal) -> Result<(), AuthError> {
        if p.expires_at.is_some_and(|exp| now_secs() >= exp) {
            return Err(AuthError::Expired);
        }
        if let Credential::ApiKey { hash, .. } = &p.credential {
            if !self.keys.load().api.contains(hash) {
                return Err(AuthError::Revoked);
            }
        }
        Ok(())
    }

    /// Re-reads the key files that changed since they were read; bumps the
    /// generation when anything did. A file that no longer parses keeps
    /// its previous keys (and the error is returned to be logged).
    ///
    /// # Errors
    /// The changed file that failed to load.
    pub fn reload(&self) -> Result<bool, LoadError> {
        let old = self.keys.load();
        let now = [
            self.cfg.api_keys_file.as_deref().and_then(mtime),
            self.cfg.jwt_key_file.as_deref().and_then(mtime),
        ];
        if now == old.stamps {
            return Ok(false);
        }
        let keys = Self::load(&self.cfg)?;
        self.keys.store(Arc::new(keys));
        self.generation.send_modify(|g| *g += 1);
        Ok(true)
    }

    /// A receiver that changes on every reload (sessions re-check their
    /// principal then).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

/// `https://app.example.com` matches itself; `https://*.example.com`
/// matches any subdomain of example.com over https (not example.com
/// itself). Case-insensitive, as origins are.
fn origin_matches(pattern: &str, origin: &str) -> bool {
    let (pattern, origin) = (pattern.trim().to_ascii_lowercase(), origin.trim().to_ascii_lowercase());
    match pattern.split_once("://*.") {
        Some((scheme, domain)) => origin
            .strip_prefix(&format!("{scheme}://"))
            .and_then(|host| host.strip_suffix(domain))
            .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.') && !sub[..sub.len() - 1].contains('/')),
        None => pattern == origin,
    }
}

/// Reads the key file `path` of `flag`; also returns how to say what is
/// wrong with its contents.
fn read_key_file<'a>(
    flag: &'static str,
    path: &'a std::path::Path,
) -> Result<(String, impl Fn(String) -> LoadError + 'a), LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        flag,
        path: path.into(),
        source,
    })?;
    Ok((text, move |why| LoadError::Invalid { flag, path: path.into(), why }))
}

/// The token of an `Authorization: Bearer <token>` value (any case of
/// the scheme); `None` for another scheme. WebSocket upgrades and gRPC
/// metadata read it the same way.
pub fn bearer(v: &str) -> Option<&str> {
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Seconds since the epoch, now.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entitlements_match_exact_prefix_and_everything() {
        let e = Entitlements::parse(&["AAPL", "ms*"]).unwrap();
        assert!(e.allows("AAPL") && e.allows("MSFT") && e.allows("MS"));
        assert!(!e.allows("AAPLX") && !e.allows("GOOG"));
        assert!(Entitlements::parse(&["*"]).unwrap().allows("ANY"));
        assert!(!Entitlements::parse::<&str>(&[]).unwrap().allows("AAPL"), "no pattern: nothing");
        for bad in ["", "*X", "TOO-LONG-SYMBOL", "A B"] {
            assert!(Entitlements::parse(&[bad]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn origins_match_exactly_or_by_subdomain_wildcard() {
        assert!(origin_matches("https://app.example.com", "https://APP.example.com"));
        assert!(!origin_matches("https://app.example.com", "http://app.example.com"));
        assert!(origin_matches("https://*.example.com", "https://a.b.example.com"));
        assert!(!origin_matches("https://*.example.com", "https://example.com"));
        assert!(!origin_matches("https://*.example.com", "https://evilexample.com"));
        assert!(!origin_matches("https://*.example.com", "null"));
    }
}
