//! Wiring: binds the listeners, starts every stage, and runs the shutdown
//! sequence (one token, one tracker, one grace period).

use crate::book::Book;
use crate::config::Config;
use crate::core::Core;
use crate::hub::Hub;
use crate::ingest::{self, FeedStats, Ingest, IngestConfig};
use crate::ws::{self, Workers, WsStats};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A listener or socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The feed socket failed.
    #[error("feed socket {group}:{port} on {interface}: {source}")]
    Feed {
        /// Group.
        group: std::net::Ipv4Addr,
        /// Port.
        port: u16,
        /// Interface.
        interface: std::net::Ipv4Addr,
        /// Cause.
        source: std::io::Error,
    },
    /// The retransmission request socket failed.
    #[error("retransmission socket for --retrans-addr {addr}: {source}")]
    Retrans {
        /// The server address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// A loopback socket pair of the NATS bridge failed.
    #[error("--feed-nats loopback bridge socket: {0}")]
    FeedNats(std::io::Error),
    /// A TCP listener failed.
    #[error("{what} listener on {addr}: {source}")]
    Listen {
        /// Which listener.
        what: &'static str,
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

/// Sockets bound before anything starts, so a test can bind port 0 and a
/// bad address fails before any task runs.
#[derive(Debug)]
pub struct Bound {
    /// Joined feed socket.
    pub feed: UdpSocket,
    /// Receive buffer the kernel granted.
    pub feed_recv_buffer: usize,
    /// Joined socket of line B (`--group-b`), if configured.
    pub feed_b: Option<UdpSocket>,
    /// Joined socket of the snapshot channel (`--snapshot-group`).
    pub snapshot: Option<UdpSocket>,
    /// Socket connected to the retransmission server (`--retrans-addr`).
    pub retrans: Option<UdpSocket>,
    /// The NATS bridge's ends of the feed sockets (`--feed-nats`); the
    /// fields above are then ingest's ends.
    pub nats: Option<crate::feed_nats::Bridge>,
    /// WebSocket + health listener.
    pub ws: std::net::TcpListener,
    /// gRPC listener.
    pub grpc: std::net::TcpListener,
    /// Prometheus /metrics listener.
    pub metrics: std::net::TcpListener,
}

fn listen(what: &'static str, addr: SocketAddr) -> Result<std::net::TcpListener, BindError> {
    let l = std::net::TcpListener::bind(addr).map_err(|source| BindError::Listen { what, addr, source })?;
    l.set_nonblocking(true).map_err(|source| BindError::Listen { what, addr, source })?;
    Ok(l)
}

/// A UDP socket connected to the retransmission server: bound to loopback
/// for a loopback server, else to the feed interface, so requests leave by
/// the feed's own network.
fn retrans_socket(server: SocketAddr, interface: std::net::Ipv4Addr) -> std::io::Result<UdpSocket> {
    let local: std::net::IpAddr = match server {
        SocketAddr::V4(a) if a.ip().is_loopback() => std::net::Ipv4Addr::LOCALHOST.into(),
        SocketAddr::V4(_) => interface.into(),
        SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    };
    let s = UdpSocket::bind(SocketAddr::new(local, 0))?;
    s.connect(server)?;
    Ok(s)
}

impl Bound {
    /// Binds every socket the config names.
    ///
    /// # Errors
    /// [`BindError`] naming the socket and address.
    pub fn bind(cfg: &Config) -> Result<Bound, BindError> {
        let f = &cfg.feed;
        if cfg.feed_nats.enabled() {
            let (ends, bridge) =
                crate::feed_nats::bind(&cfg.feed_nats, f.recv_buffer_bytes).map_err(BindError::FeedNats)?;
            return Ok(Bound {
                feed: ends.line_a,
                feed_recv_buffer: ends.granted,
                feed_b: ends.line_b,
                snapshot: ends.snapshot,
                retrans: ends.retrans,
                nats: Some(bridge),
                ws: listen("WebSocket", cfg.ws.addr)?,
                grpc: listen("gRPC", cfg.serve.grpc_addr)?,
                metrics: listen("metrics", cfg.serve.metrics_addr)?,
            });
        }
        let (feed, granted) =
            ingest::socket::bind(f.group, f.port, f.interface, f.recv_buffer_bytes).map_err(|source| {
                BindError::Feed { group: f.group, port: f.port, interface: f.interface, source }
            })?;
        let feed_b = match f.line_b() {
            None => None,
            Some(b) => {
                let (sock, granted_b) =
                    ingest::socket::bind(b.group, b.port, b.interface, f.recv_buffer_bytes).map_err(
                        |source| BindError::Feed {
                            group: b.group,
                            port: b.port,
                            interface: b.interface,
                            source,
                        },
                    )?;
                if granted_b < f.recv_buffer_bytes {
                    tracing::warn!(
                        requested = f.recv_buffer_bytes,
                        granted = granted_b,
                        "line B receive buffer smaller than requested; raise net.core.rmem_max to absorb bursts"
                    );
                }
                Some(sock)
            }
        };
        let snapshot = match f.snapshot_channel() {
            None => None,
            Some(c) => Some(
                ingest::socket::bind(c.group, c.port, c.interface, f.recv_buffer_bytes)
                    .map_err(|source| BindError::Feed {
                        group: c.group,
                        port: c.port,
                        interface: c.interface,
                        source,
                    })?
                    .0,
            ),
        };
        let retrans = match f.retrans_addr {
            None => None,
            Some(addr) => Some(
                retrans_socket(addr, f.interface).map_err(|source| BindError::Retrans { addr, source })?,
            ),
        };
        Ok(Bound {
            feed,
            feed_recv_buffer: granted,
            feed_b,
            snapshot,
            retrans,
            nats: None,
            ws: listen("WebSocket", cfg.ws.addr)?,
            grpc: listen("gRPC", cfg.serve.grpc_addr)?,
            metrics: listen("metrics", cfg.serve.metrics_addr)?,
        })
    }
}

/// A started gateway: its addresses, shared state for inspection, and the
/// handle to wait for its shutdown.
pub struct Running {
    /// Where WebSocket clients connect.
    pub ws_addr: SocketAddr,
    /// Where gRPC clients connect.
    pub grpc_addr: SocketAddr,
    /// Where Prometheus scrapes.
    pub metrics_addr: SocketAddr,
    /// The shared state: book, hub, counters, config, shutdown token.
    pub core: Arc<Core>,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Drains this node out of its fleet, then shuts it down: not ready
    /// at once, clients closed with 1012 at their turns after
    /// `--drain-delay-ms` over `--drain-spread-ms`, then the usual
    /// shutdown. Returns when the shutdown has begun (wait with
    /// [`wait`](Self::wait)); a drain already under way is not restarted.
    pub async fn drain(&self) {
        let core = &self.core;
        if !core.drain.begin() {
            return;
        }
        let delay = Duration::from_millis(core.config.serve.drain_delay_ms);
        tracing::info!(?delay, spread = ?core.drain.spread(), "draining: not ready; clients close after the delay");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = core.shutdown.cancelled() => return,
        }
        core.drain.start_closing();
        tracing::info!(
            clients = core.ws.open.load(std::sync::atomic::Ordering::Relaxed),
            "draining: closing clients with 1012"
        );
        tokio::select! {
            () = tokio::time::sleep(core.drain.spread()) => {}
            () = core.shutdown.cancelled() => return,
        }
        core.shutdown.cancel();
    }

    /// Waits until the gateway has shut down (after the token is cancelled).
    ///
    /// # Errors
    /// If the lifecycle task panicked.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.done.await?;
        Ok(())
    }
}

/// Starts every stage on the current runtime (plus the ingest thread and
/// the WebSocket worker threads). Cancelling `shutdown` stops accepting,
/// closes clients with 1001 within the grace period, then stops the rest.
///
/// # Errors
/// When a thread or runtime cannot be started.
pub async fn start(cfg: Config, bound: Bound, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let (book, book_writer) = Book::with_writer(cfg.feed.max_symbols);
    let (hub, hub_writer) = Hub::new(cfg.feed.max_symbols, cfg.feed.replay_depth)
        .with_replay_budget(cfg.feed.replay_max_bytes)
        .with_ahead_wait(Duration::from_millis(cfg.feed.resume_ahead_wait_ms))
        .with_lanes(cfg.ws.thread_count(), cfg.ws.fanout_queue_capacity)
        .into_writer();
    let feed = Arc::new(FeedStats::default());
    let auth = Arc::new(crate::auth::Authenticator::new(&cfg.auth)?);
    let tls = crate::tls::Tls::new(&cfg.tls)?;
    let trusted = crate::proxy::Trusted::parse(&cfg.ws.trusted_proxies).map_err(anyhow::Error::msg)?;
    if auth.enabled() {
        tracing::info!(api_keys = ?cfg.auth.api_keys_file, jwt_keys = ?cfg.auth.jwt_key_file, "clients must authenticate");
    } else if cfg.auth.insecure {
        tracing::warn!(
            "--insecure: no authentication; anyone who can reach the client ports reads every symbol"
        );
    }
    // One recorder per gateway: several gateways in one process (tests)
    // never mix their counts.
    let telemetry = Arc::new(crate::metrics::Telemetry::new());
    let ws_stats = Arc::new(WsStats::new(telemetry.send_latency()));

    if bound.feed_recv_buffer < cfg.feed.recv_buffer_bytes {
        tracing::warn!(
            requested = cfg.feed.recv_buffer_bytes,
            granted = bound.feed_recv_buffer,
            "feed receive buffer smaller than requested; raise net.core.rmem_max to absorb bursts"
        );
    }
    let ingest = Ingest::new(
        bound.feed,
        book_writer,
        hub_writer,
        feed.clone(),
        IngestConfig {
            feed_timeout: Duration::from_millis(cfg.feed.feed_timeout_ms),
            reorder_window: cfg.feed.reorder_window,
            reorder_hold: Duration::from_micros(cfg.feed.reorder_hold_us),
        },
    )
    .with_trust(ingest::FeedTrust::from_config(&cfg.feed));
    let ingest = match bound.feed_b {
        Some(b) => ingest.with_line_b(b),
        None => ingest,
    };
    let ingest = match bound.snapshot {
        Some(s) => ingest.with_snapshot_channel(s),
        None => ingest,
    };
    // With --feed-nats-retrans the "server" is the NATS bridge's socket.
    let retrans_server =
        cfg.feed.retrans_addr.or_else(|| bound.nats.as_ref().and_then(|b| b.retrans_server()));
    let ingest = match (bound.retrans, retrans_server) {
        (Some(sock), Some(server)) => ingest.with_retrans(
            ingest::retrans::RetransConfig {
                server,
                timeout: Duration::from_millis(cfg.feed.retrans_timeout_ms),
                max_outstanding: cfg.feed.retrans_max_outstanding.max(1),
                max_per_sec: cfg.feed.retrans_max_per_sec,
                max_messages: cfg.feed.retrans_max_messages,
                max_held: cfg.feed.retrans_max_held,
            },
            sock,
        ),
        _ => ingest,
    };
    let ingest_stop = CancellationToken::new();
    let ingest_thread = {
        let stop = ingest_stop.clone();
        std::thread::Builder::new().name("ingest".into()).spawn(move || ingest.run(stop))?
    };
    // The feed over NATS: the bridge feeds ingest's sockets until ingest stops.
    if let Some(bridge) = bound.nats {
        tokio::spawn(crate::feed_nats::run(bridge, feed.clone(), ingest_stop.clone()));
    }

    let workers = Workers::start(&hub, cfg.ws.threads_nice)?;
    let tracker = TaskTracker::new();
    let ws_listener = tokio::net::TcpListener::from_std(bound.ws)?;
    let ws_addr = ws_listener.local_addr()?;
    let grpc_listener = tokio::net::TcpListener::from_std(bound.grpc)?;
    let grpc_addr = grpc_listener.local_addr()?;
    let metrics_listener = tokio::net::TcpListener::from_std(bound.metrics)?;
    let metrics_addr = metrics_listener.local_addr()?;
    let core = Arc::new(Core {
        book: book.clone(),
        hub: hub.clone(),
        feed: feed.clone(),
        ws: ws_stats.clone(),
        config: cfg.clone(),
        auth: auth.clone(),
        tls: tls.clone(),
        trusted,
        node: cfg.serve.node_name(),
        shutdown: shutdown.clone(),
        drain: crate::drain::Drain::new(Duration::from_millis(cfg.serve.drain_spread_ms)),
        metrics: telemetry,
    });
    let side = TaskTracker::new();
    side.spawn({
        let core = core.clone();
        async move {
            if let Err(e) = crate::grpc::serve(grpc_listener, core).await {
                tracing::error!(error = %e, "gRPC server failed");
            }
        }
    });
    side.spawn({
        let core = core.clone();
        async move {
            if let Err(e) = crate::metrics::serve(metrics_listener, core).await {
                tracing::error!(error = %e, "metrics server failed");
            }
        }
    });
    if let Some(t) = &tls {
        let every = Duration::from_millis(cfg.tls.tls_reload_ms);
        let certs = t.certs.clone();
        side.spawn(crate::reload::watch("TLS certificate", every, shutdown.clone(), move || certs.reload()));
    }
    if auth.enabled() {
        let every = Duration::from_millis(cfg.auth.auth_reload_ms);
        side.spawn(crate::reload::watch("key files", every, shutdown.clone(), move || auth.reload()));
    }
    side.close();
    let line_b = cfg.feed.line_b().map(|b| format!("{}:{}", b.group, b.port));
    tracing::info!(%ws_addr, %grpc_addr, %metrics_addr, group = %cfg.feed.group, port = cfg.feed.port, ?line_b, "gateway started");

    let grace = Duration::from_millis(cfg.serve.shutdown_grace_ms);
    let ws_core = core.clone();
    let done = tokio::spawn(async move {
        ws::serve(ws_listener, ws_core, &workers, tracker.clone()).await;
        // serve returns once shutdown is cancelled; sessions are closing.
        tracker.close();
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(?grace, left = tracker.len(), "grace period over; dropping remaining connections");
        }
        if tokio::time::timeout(grace, side.wait()).await.is_err() {
            tracing::warn!("gRPC or metrics server did not stop within the grace period");
        }
        ingest_stop.cancel();
        let _ = tokio::task::spawn_blocking(move || {
            workers.stop();
            let _ = ingest_thread.join();
        })
        .await;
        tracing::info!("gateway stopped");
    });
    Ok(Running { ws_addr, grpc_addr, metrics_addr, core, done })
}
