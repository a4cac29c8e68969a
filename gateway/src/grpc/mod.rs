//! gRPC on its own port: snapshots and streams read from the side, plus
//! standard health and reflection.
//!
//! # Layout
//! - [`config`]: [`GrpcConfig`], every limit as a flag.
//! - [`service`]: `quotecast.v1.QuoteService` (GetSnapshot, ListSymbols,
//!   StreamQuotes).
//! - [`stream`]: one StreamQuotes call: a subscribed mailbox, its pump and
//!   the bounded response stream.
//! - [`request`]: parsing symbols, page tokens and `grpc-timeout`.
//! - [`error`]: refusals and stream ends, and their status codes.
//!
//! ```text
//! book (ArcSwap loads) ----------------------------> GetSnapshot, ListSymbols
//! hub --> Mailbox --> pump --> bounded channel ----> StreamQuotes
//! FeedStats::ready --(polled)--> grpc.health.v1 (SERVING / NOT_SERVING)
//! FILE_DESCRIPTOR_SET -----> grpc.reflection.v1 and v1alpha
//! ```
//!
//! Status codes: INVALID_ARGUMENT for a syntactically invalid symbol or a
//! bad page token (the whole call fails), RESOURCE_EXHAUSTED for
//! over-limit requests (too many symbols, a request message over
//! `--grpc-max-request-bytes`, too many streams, a stream that stays
//! behind), UNAVAILABLE while shutting down, DEADLINE_EXCEEDED when the
//! caller's deadline ends a stream, NOT_FOUND for a stream of only unknown
//! symbols. A well-formed but unknown symbol is a per-symbol rejection in
//! the answer, not a failure of the call.
//!
//! Shutdown: when the token is cancelled, new calls get UNAVAILABLE, open
//! streams end with UNAVAILABLE, health turns NOT_SERVING and its watches
//! end, connections get a GOAWAY, and [`serve`] returns once they are
//! closed (or after the grace period, whichever comes first).

pub mod config;
pub mod error;
pub mod request;
pub mod service;
pub mod stream;

pub use config::GrpcConfig;

use crate::conn::Conn;
use crate::core::Core;
use quotecast_proto::v1::quote_service_server::QuoteServiceServer;
use service::QuoteSvc;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::task::TaskTracker;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// How often health follows `FeedStats::up` (it has no change signal).
pub const HEALTH_POLL: Duration = Duration::from_millis(200);

/// Largest request header block accepted (bytes).
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// Health service names: the whole server and the quote service.
const HEALTH_SERVICES: [&str; 2] = ["", <QuoteServiceServer<QuoteSvc> as NamedService>::NAME];

/// The gRPC server could not start or failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A setting cannot work.
    #[error("gRPC config: {0}")]
    Config(#[from] config::GrpcConfigError),
    /// The reflection descriptors did not load.
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves gRPC on `listener` with the default limits until shutdown.
///
/// # Errors
/// Accepted connections, as tonic takes them.
type Incoming = std::pin::Pin<Box<dyn futures_util::Stream<Item = std::io::Result<Conn>> + Send>>;

/// The connections of `listener`: plain, or with `--tls-cert-file` TLS
/// (ALPN h2, client certificates with `--tls-client-ca-file`); from a
/// `--trusted-proxies` balancer, after its PROXY header, with the client's
/// address it names. Each such connection is prepared in its own task,
/// within `--handshake-timeout-ms`, so a slow or silent one never holds up
/// the others.
fn incoming(listener: tokio::net::TcpListener, core: &Arc<Core>, tasks: &TaskTracker) -> Incoming {
    use futures_util::StreamExt;
    let plain = TcpIncoming::from(listener).with_nodelay(Some(true));
    if core.tls.is_none() && core.trusted.is_empty() {
        return Box::pin(plain.map(|r| r.map(Conn::Plain)));
    }
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let timeout = Duration::from_millis(core.config.ws.handshake_timeout_ms);
    let (core, accepting) = (core.clone(), tasks.clone());
    tasks.spawn(async move {
        let mut plain = std::pin::pin!(plain);
        loop {
            let tcp = tokio::select! {
                () = core.shutdown.cancelled() => return,
                next = plain.next() => match next {
                    Some(Ok(tcp)) => tcp,
                    Some(Err(_)) => continue,
                    None => return,
                },
            };
            let (tx, core) = (tx.clone(), core.clone());
            accepting.spawn(async move {
                let deadline = tokio::time::Instant::now() + timeout;
                if let Some(conn) = prepare(tcp, &core, deadline).await {
                    let _ = tx.send(Ok(conn)).await;
                }
            });
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// A gRPC connection made ready: its PROXY header read (from a trusted
/// balancer), then TLS. `None` when it fails (counted).
async fn prepare(
    mut tcp: tokio::net::TcpStream,
    core: &Core,
    deadline: tokio::time::Instant,
) -> Option<Conn> {
    use std::sync::atomic::Ordering::Relaxed;
    let peer = tcp.peer_addr().ok()?;
    let client = if core.trusted.contains(peer.ip()) {
        match crate::proxy::read_header(&mut tcp, peer, deadline).await {
            Ok(c) => Some(c),
            Err(e) => {
                core.ws.proxy_errors.fetch_add(1, Relaxed);
                tracing::debug!(%peer, error = %e, "gRPC connection from a trusted proxy without a PROXY header");
                return None;
            }
        }
    } else {
        None
    };
    let conn = match &core.tls {
        None => Conn::Plain(tcp),
        Some(tls) => match tokio::time::timeout_at(deadline, tls.grpc.accept(tcp)).await {
            Ok(Ok(s)) => Conn::Tls(Box::new(s)),
            Ok(Err(e)) => {
                core.ws.tls_failures.fetch_add(1, Relaxed);
                tracing::debug!(%peer, error = %e, "gRPC TLS handshake failed");
                return None;
            }
            Err(_) => {
                core.ws.tls_failures.fetch_add(1, Relaxed);
                return None;
            }
        },
    };
    Some(match client {
        Some(c) => Conn::Proxied(Box::new(conn), c),
        None => conn,
    })
}

/// When the server fails (see [`serve_with`]).
pub async fn serve(listener: tokio::net::TcpListener, core: Arc<Core>) -> anyhow::Result<()> {
    let cfg = core.config.grpc.clone();
    serve_with(listener, core, cfg).await?;
    Ok(())
}

/// Serves gRPC on `listener` with `cfg` until `core.shutdown` is cancelled
/// and the open calls have ended (at most the shutdown grace period).
///
/// # Errors
/// [`ServeError`] for an invalid `cfg`, broken descriptors or a transport
/// failure.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    core: Arc<Core>,
    cfg: GrpcConfig,
) -> Result<(), ServeError> {
    cfg.validate()?;
    let symbols_answer = core.config.feed.max_symbols.saturating_mul(64);
    if symbols_answer > cfg.max_response_bytes {
        tracing::warn!(
            max_symbols = core.config.feed.max_symbols,
            max_response_bytes = cfg.max_response_bytes,
            "a full ListSymbols answer may exceed --grpc-max-response-bytes"
        );
    }
    let shutdown = core.shutdown.clone();
    let grace = Duration::from_millis(core.config.serve.shutdown_grace_ms);
    let tasks = TaskTracker::new();

    let quotes = QuoteServiceServer::new(QuoteSvc::new(core.clone(), cfg.clone(), tasks.clone()))
        .max_decoding_message_size(cfg.max_request_bytes)
        .max_encoding_message_size(cfg.max_response_bytes);
    let (reporter, health) = tonic_health::server::health_reporter();
    let up = core.ready();
    set_health(&reporter, up).await;
    tasks.spawn(follow_feed(core.clone(), reporter, up));
    // v1 for current clients (grpcurl, grpcio), v1alpha for older ones.
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(quotecast_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(quotecast_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let addr = listener.local_addr().ok();
    let incoming = incoming(listener, &core, &tasks);
    let server = Server::builder()
        .timeout(cfg.request_timeout())
        .max_concurrent_streams(cfg.max_concurrent_streams)
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .http2_keepalive_interval(cfg.keepalive())
        .http2_keepalive_timeout(cfg.keepalive().map(|k| k / 3))
        // Outermost first: the metrics layer sees the final status codes.
        .layer(core.metrics.grpc_layer())
        .layer(tower::util::MapResponseLayer::new(oversize_is_resource_exhausted as fn(_) -> _))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(quotes)
        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());
    tracing::info!(?addr, "gRPC serving");
    // A caller that keeps a call open past the grace period must not hold
    // up the gateway's shutdown: stop waiting for it then.
    let give_up = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        r = server => r?,
        () = give_up => tracing::warn!(?grace, "gRPC connections still open after the grace period; dropped"),
    }
    tasks.close();
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        tracing::warn!(left = tasks.len(), "gRPC stream pumps did not stop within the grace period");
    }
    tracing::info!("gRPC stopped");
    Ok(())
}

/// tonic fails an over-limit request message with OUT_OF_RANGE before the
/// handler runs; gRPC's own status-code table says RESOURCE_EXHAUSTED, and
/// so does this service's contract. Such a failure is a trailers-only
/// response (status in the headers); our handlers never answer
/// OUT_OF_RANGE, so any such response is the decoder's.
fn oversize_is_resource_exhausted(
    mut resp: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    if let Some(s) = tonic::Status::from_header_map(resp.headers()) {
        if s.code() == tonic::Code::OutOfRange {
            let fixed = tonic::Status::resource_exhausted(format!(
                "request message too large (--grpc-max-request-bytes): {}",
                s.message()
            ));
            let _ = fixed.add_header(resp.headers_mut());
        }
    }
    resp
}

async fn set_health(reporter: &HealthReporter, up: bool) {
    let status = if up { ServingStatus::Serving } else { ServingStatus::NotServing };
    for name in HEALTH_SERVICES {
        reporter.set_service_status(name, status).await;
    }
}

/// Keeps health in step with the feed until shutdown; then reports
/// NOT_SERVING and removes the statuses, which ends every Watch stream
/// (they would otherwise hold their connections open forever).
/// `last` is what was reported before the task started (the feed may have
/// come up since, before this task first ran).
async fn follow_feed(core: Arc<Core>, mut reporter: HealthReporter, mut last: bool) {
    let mut tick = tokio::time::interval(HEALTH_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            // Draining: NOT_SERVING now, not at the next poll.
            () = core.drain.began(), if last => {}
            () = core.shutdown.cancelled() => break,
        }
        let up = core.ready();
        if up != last {
            tracing::info!(serving = up, "gRPC health follows the feed and the drain");
            set_health(&reporter, up).await;
            last = up;
        }
    }
    set_health(&reporter, false).await;
    for name in HEALTH_SERVICES {
        reporter.clear_service_status(name).await;
    }
}
