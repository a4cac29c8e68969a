//! Who may connect and what each may see: the flags.

use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

/// Authentication, entitlements and browser origins.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Access")]
pub struct AuthConfig {
    /// Static API keys: a JSON file `{"keys": [{"name", "sha256", "symbols",
    /// "max_connections", "max_symbols"}]}` holding each key's SHA-256 (hex),
    /// never the key. Reloaded when it changes; a key removed from it is
    /// closed within --auth-reload-ms. Setting it (or --jwt-key-file)
    /// turns authentication on.
    #[arg(long, env = "QUOTECAST_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// Public keys that verify JWTs: a PEM file of Ed25519 (EdDSA) and/or
    /// RSA (RS256) public keys, or a JWKS JSON file (`{"keys": [...]}`,
    /// matched by `kid`). Reloaded when it changes.
    #[arg(long, env = "QUOTECAST_JWT_KEY_FILE")]
    pub jwt_key_file: Option<PathBuf>,
    /// Required `iss` claim of JWTs (default: not checked).
    #[arg(long, env = "QUOTECAST_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim of JWTs (default: not checked).
    #[arg(long, env = "QUOTECAST_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf` (seconds).
    #[arg(long, env = "QUOTECAST_JWT_LEEWAY_SECS", default_value_t = 5)]
    pub jwt_leeway_secs: u64,
    /// A WebSocket client that brought no credential in the upgrade
    /// (`Authorization: Bearer`, `?token=`) must send `auth` within this
    /// long, or is closed with 4401 (ms).
    #[arg(long, env = "QUOTECAST_AUTH_TIMEOUT_MS", default_value_t = 5000)]
    pub auth_timeout_ms: u64,
    /// Tell a client its token expires this long before it does, so it can
    /// send a fresh one (ms).
    #[arg(long, env = "QUOTECAST_AUTH_EXPIRY_WARNING_MS", default_value_t = 30_000)]
    pub auth_expiry_warning_ms: u64,
    /// How often the key files are checked for changes (ms).
    #[arg(long, env = "QUOTECAST_AUTH_RELOAD_MS", default_value_t = 1000)]
    pub auth_reload_ms: u64,
    /// Failed authentications from one address per minute before its
    /// handshakes get 429 for the rest of the minute.
    #[arg(long, env = "QUOTECAST_MAX_AUTH_FAILURES_PER_MIN", default_value_t = 20)]
    pub max_auth_failures_per_min: u32,
    /// Browser origins allowed to open WebSockets (comma-separated; exact
    /// `https://app.example.com`, or `https://*.example.com`). A request
    /// whose `Origin` is not listed gets 403. Default: any origin (and
    /// requests without `Origin`, i.e. non-browser clients, always pass).
    #[arg(long, env = "QUOTECAST_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Serve without authentication (and, once TLS is configurable, without
    /// TLS) on a non-loopback address. Without it the gateway refuses to
    /// start that way: anyone on the network would get every symbol.
    #[arg(long, env = "QUOTECAST_INSECURE")]
    pub insecure: bool,
}

impl AuthConfig {
    /// The defaults: authentication off (tests).
    pub fn parse_default() -> Self {
        crate::Config::for_tests(std::net::Ipv4Addr::new(239, 0, 0, 1), 1).auth
    }

    /// Whether clients must authenticate.
    pub fn enabled(&self) -> bool {
        self.api_keys_file.is_some() || self.jwt_key_file.is_some()
    }

    /// See `--auth-timeout-ms`.
    pub fn auth_timeout(&self) -> Duration {
        Duration::from_millis(self.auth_timeout_ms)
    }

    /// See `--auth-expiry-warning-ms`.
    pub fn expiry_warning(&self) -> Duration {
        Duration::from_millis(self.auth_expiry_warning_ms)
    }
}
