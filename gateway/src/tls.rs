//! TLS for the client ports: `wss://` on the WebSocket port and gRPC over
//! TLS (optionally requiring client certificates), from PEM files that are
//! reloaded when they change. A renewal never drops anyone: the
//! certificate is picked per handshake ([`Certs`] resolves it from what
//! was last loaded), so open connections keep theirs and new ones get the
//! new one. rustls with the `ring` provider, TLS 1.2 and 1.3 only.

use crate::reload::mtime;
use arc_swap::ArcSwap;
use clap::Args;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use tokio_rustls::TlsAcceptor;

/// TLS settings.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "TLS")]
pub struct TlsConfig {
    /// Certificate chain (PEM, leaf first) for `wss://` and gRPC over TLS.
    /// With --tls-key-file, both ports speak only TLS. Reloaded when it
    /// changes: new connections get the new certificate, open ones stay.
    #[arg(long, env = "QUOTECAST_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) of --tls-cert-file.
    #[arg(long, env = "QUOTECAST_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// CA certificates (PEM) whose client certificates gRPC callers must
    /// present (mutual TLS). Default: no client certificate asked.
    #[arg(long, env = "QUOTECAST_TLS_CLIENT_CA_FILE", requires = "tls_cert_file")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// How often the certificate files are checked for changes (ms).
    #[arg(long, env = "QUOTECAST_TLS_RELOAD_MS", default_value_t = 1000)]
    pub tls_reload_ms: u64,
}

impl TlsConfig {
    /// Whether the client ports speak TLS.
    pub fn enabled(&self) -> bool {
        self.tls_cert_file.is_some()
    }
}

/// A certificate or key file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Unreadable or not PEM.
    #[error("{flag} {path}: {why}")]
    File {
        /// The flag naming it.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The certificate and key do not make a usable pair.
    #[error("--tls-cert-file and --tls-key-file: {0}")]
    Pair(String),
}

/// The certificate handshakes get: the one last loaded.
#[derive(Debug)]
pub struct Certs {
    current: ArcSwap<CertifiedKey>,
    cert_file: PathBuf,
    key_file: PathBuf,
    stamps: parking_lot::Mutex<[Option<SystemTime>; 2]>,
    provider: Arc<CryptoProvider>,
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl Certs {
    fn load(cert_file: &Path, key_file: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
        let certs = read_certs("--tls-cert-file", cert_file)?;
        let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| TlsError::File {
            flag: "--tls-key-file",
            path: key_file.into(),
            why: e.to_string(),
        })?;
        CertifiedKey::from_der(certs, key, provider).map_err(|e| TlsError::Pair(e.to_string()))
    }

    /// Re-reads the files if either changed. A pair that no longer loads
    /// (a renewal half-written) keeps the previous certificate.
    ///
    /// # Errors
    /// The changed pair that failed to load.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let now = [mtime(&self.cert_file), mtime(&self.key_file)];
        if now == *self.stamps.lock() {
            return Ok(false);
        }
        let key = Self::load(&self.cert_file, &self.key_file, &self.provider)?;
        self.current.store(Arc::new(key));
        *self.stamps.lock() = now;
        Ok(true)
    }
}

/// What the servers accept TLS with.
#[derive(Clone)]
pub struct Tls {
    /// For `wss://` (ALPN http/1.1).
    pub ws: TlsAcceptor,
    /// For gRPC (ALPN h2; client certificates with --tls-client-ca-file).
    pub grpc: TlsAcceptor,
    /// The certificate in use, reloadable.
    pub certs: Arc<Certs>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("certs", &self.certs.cert_file).finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads `cfg`'s files; `None` when TLS is off.
    ///
    /// # Errors
    /// A file that cannot be read or used, naming its flag.
    pub fn new(cfg: &TlsConfig) -> Result<Option<Tls>, TlsError> {
        let (Some(cert_file), Some(key_file)) = (&cfg.tls_cert_file, &cfg.tls_key_file) else {
            return Ok(None);
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let stamps = [mtime(cert_file), mtime(key_file)];
        let key = Certs::load(cert_file, key_file, &provider)?;
        let certs = Arc::new(Certs {
            current: ArcSwap::from_pointee(key),
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
            stamps: parking_lot::Mutex::new(stamps),
            provider: provider.clone(),
        });
        let builder = || {
            rustls::ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsError::Pair(e.to_string()))
        };
        let mut ws = builder()?.with_no_client_auth().with_cert_resolver(certs.clone());
        ws.alpn_protocols = vec![b"http/1.1".to_vec()];
        let grpc_builder = match &cfg.tls_client_ca_file {
            None => builder()?.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in read_certs("--tls-client-ca-file", ca)? {
                    roots.add(c).map_err(|e| TlsError::File {
                        flag: "--tls-client-ca-file",
                        path: ca.clone(),
                        why: e.to_string(),
                    })?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| TlsError::File {
                        flag: "--tls-client-ca-file",
                        path: ca.clone(),
                        why: e.to_string(),
                    })?;
                builder()?.with_client_cert_verifier(verifier)
            }
        };
        let mut grpc = grpc_builder.with_cert_resolver(certs.clone());
        grpc.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Some(Tls { ws: TlsAcceptor::from(Arc::new(ws)), grpc: TlsAcceptor::from(Arc::new(grpc)), certs }))
    }
}

fn read_certs(flag: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |why: String| TlsError::File { flag, path: path.into(), why };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE in it".into()));
    }
    Ok(certs)
}
