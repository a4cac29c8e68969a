//! WebSocket serving: accept on the control runtime, run each connection on
//! one of several single-threaded worker runtimes.
//!
//! A multi-threaded runtime starves writers when the ingest thread wakes
//! a thousand of them at once; per-core current-thread runtimes with
//! connections spread round-robin keep each wake-up cheap and local.

pub mod admission;
pub mod close;
pub mod handshake;
pub mod protocol;
pub mod session;

use crate::config::WsConfig;
use crate::conn::Conn;
use crate::core::Core;
use crate::hub::Hub;
use crate::ratelog::RateLog;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Close codes the gateway sends (RFC 6455 and private 4000-4999).
pub mod close_code {
    /// Normal closure (client asked).
    pub const NORMAL: u16 = 1000;
    /// Server shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// Connection lost without a close frame (never sent, used as a label).
    pub const ABNORMAL: u16 = 1006;
    /// Malformed framing or an invalid close code from the client.
    pub const PROTOCOL: u16 = 1002;
    /// A text message that is not UTF-8.
    pub const INVALID_UTF8: u16 = 1007;
    /// Policy violation (e.g. requests sent faster than replies are read).
    pub const POLICY: u16 = 1008;
    /// A client message exceeded `--max-request-bytes`.
    pub const TOO_BIG: u16 = 1009;
    /// The node is draining for a restart: reconnect (through the
    /// balancer, to another node) and resume.
    pub const SERVICE_RESTART: u16 = 1012;
    /// Connection limit reached; retry later.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The client stayed behind longer than `--slow-client-timeout-ms`.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// Nothing (not even a pong) received for `--idle-timeout-ms`.
    pub const IDLE: u16 = 4012;
    /// Not (or no longer) authenticated: no credential within
    /// `--auth-timeout-ms`, a refused one, the token expired, or the key
    /// was revoked. The reason says which.
    pub const UNAUTHORIZED: u16 = 4401;

    /// Low-cardinality label of a close reason, for metrics and logs.
    pub fn label(code: u16) -> &'static str {
        match code {
            NORMAL => "normal",
            GOING_AWAY => "shutdown",
            ABNORMAL => "client_gone",
            POLICY => "policy",
            TOO_BIG => "message_too_big",
            SERVICE_RESTART => "service_restart",
            TRY_AGAIN_LATER => "connection_limit",
            SLOW_CONSUMER => "slow_consumer",
            IDLE => "idle_timeout",
            UNAUTHORIZED => "unauthorized",
            PROTOCOL => "protocol_error",
            INVALID_UTF8 => "invalid_utf8",
            _ => "other",
        }
    }

    /// Every label [`label`] can return.
    pub const LABELS: [&str; 13] = [
        "normal",
        "shutdown",
        "service_restart",
        "client_gone",
        "policy",
        "message_too_big",
        "connection_limit",
        "slow_consumer",
        "idle_timeout",
        "unauthorized",
        "protocol_error",
        "invalid_utf8",
        "other",
    ];
}

/// WebSocket counters, relaxed atomics read by metrics and tests.
#[derive(Debug)]
pub struct WsStats {
    /// Tick-to-send latency (feed receive to socket write done), seconds:
    /// one sample per write, the oldest update in it. A no-op handle unless
    /// the metrics module supplies one.
    pub send_latency: metrics::Histogram,
    /// Connections currently open (upgraded).
    pub open: AtomicI64,
    /// Connections upgraded since start.
    pub opened: AtomicU64,
    /// Closed connections by [`close_code::LABELS`] index.
    pub closed: [AtomicU64; close_code::LABELS.len()],
    /// Current symbol subscriptions over all connections.
    pub subscriptions: AtomicI64,
    /// Client requests received.
    pub requests: AtomicU64,
    /// Requests that could not be parsed.
    pub bad_requests: AtomicU64,
    /// Requests refused by the rate limit.
    pub rate_limited: AtomicU64,
    /// Resumes that fell back to a snapshot.
    pub resume_failed: AtomicU64,
    /// WebSocket messages written (data and control).
    pub frames: AtomicU64,
    /// Quote updates written.
    pub updates: AtomicU64,
    /// Bytes of update frames written.
    pub bytes: AtomicU64,
    /// Updates skipped by conflation.
    pub conflated: AtomicU64,
    /// Connections closed as slow consumers.
    pub slow_closes: AtomicU64,
    /// Plain HTTP requests answered.
    pub http_requests: AtomicU64,
    /// Connections refused before their handshake (pending bounds reached).
    pub handshakes_refused: AtomicU64,
    /// Handshakes that did not finish within `--handshake-timeout-ms`.
    pub handshake_timeouts: AtomicU64,
    /// TLS handshakes that failed (not TLS, no common version or cipher,
    /// certificate refused by the client).
    pub tls_failures: AtomicU64,
    /// Connections from a trusted proxy without a usable PROXY header.
    pub proxy_errors: AtomicU64,
}

impl Default for WsStats {
    fn default() -> Self {
        WsStats::new(metrics::Histogram::noop())
    }
}

impl WsStats {
    /// Zeroed counters recording latency into `send_latency`.
    pub fn new(send_latency: metrics::Histogram) -> Self {
        WsStats {
            send_latency,
            open: AtomicI64::new(0),
            opened: AtomicU64::new(0),
            closed: Default::default(),
            subscriptions: AtomicI64::new(0),
            requests: AtomicU64::new(0),
            bad_requests: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            resume_failed: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            updates: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            conflated: AtomicU64::new(0),
            slow_closes: AtomicU64::new(0),
            http_requests: AtomicU64::new(0),
            handshakes_refused: AtomicU64::new(0),
            handshake_timeouts: AtomicU64::new(0),
            tls_failures: AtomicU64::new(0),
            proxy_errors: AtomicU64::new(0),
        }
    }

    /// Counts a closed connection under its reason label.
    pub fn record_close(&self, label: &str) {
        let i = close_code::LABELS.iter().position(|l| *l == label).unwrap_or(close_code::LABELS.len() - 1);
        self.closed[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Closed connections with this label.
    pub fn closed_with(&self, label: &str) -> u64 {
        close_code::LABELS
            .iter()
            .position(|l| *l == label)
            .map_or(0, |i| self.closed[i].load(Ordering::Relaxed))
    }
}

/// `/readyz`: ready while the feed is up, symbols are known and not every
/// one of them is stale (see [`crate::ingest::FeedStats::readiness`]), and
/// not draining.
impl handshake::Health for Core {
    fn ready(&self) -> (bool, String) {
        self.readiness()
    }

    fn node(&self) -> &str {
        &self.node
    }

    fn admit(
        &self,
        peer: std::net::IpAddr,
        origin: Option<&str>,
        token: Option<&str>,
    ) -> Result<Option<Arc<crate::auth::Principal>>, handshake::Denied> {
        let auth = &self.auth;
        if let Some(o) = origin {
            if !auth.origin_allowed(o) {
                auth.stats.origin_refused.fetch_add(1, Ordering::Relaxed);
                return Err(handshake::Denied {
                    status: "403 Forbidden",
                    headers: Vec::new(),
                    body: format!("origin {o:?} is not allowed (--allowed-origins)\n"),
                });
            }
        }
        if !auth.enabled() {
            return Ok(Some(auth.open()));
        }
        if let Some(wait) = auth.failures.blocked(peer, std::time::Instant::now()) {
            auth.stats.blocked.fetch_add(1, Ordering::Relaxed);
            let secs = wait.as_secs().max(1);
            return Err(handshake::Denied {
                status: "429 Too Many Requests",
                headers: vec![("Retry-After", secs.to_string())],
                body: format!("too many failed authentications from this address; retry after {secs} s\n"),
            });
        }
        let Some(token) = token else { return Ok(None) };
        auth.verify(token).map(|p| Some(Arc::new(p))).map_err(|e| {
            auth.failed(peer, &e);
            handshake::Denied {
                status: "401 Unauthorized",
                headers: vec![("WWW-Authenticate", "Bearer error=\"invalid_token\"".into())],
                body: format!("{e}\n"),
            }
        })
    }
}

/// Single-threaded runtimes that run the sessions.
pub struct Workers {
    handles: Vec<Handle>,
    threads: Vec<std::thread::JoinHandle<()>>,
    stop: CancellationToken,
}

impl Workers {
    /// Starts a worker thread per fan-out lane of `hub` (at least one),
    /// each with its own current-thread runtime running that lane: worker
    /// `i` serves the connections whose mailboxes are on lane `i`.
    ///
    /// # Errors
    /// When a runtime cannot be built or a thread cannot be spawned.
    pub fn start(hub: &Arc<Hub>, nice: i32) -> std::io::Result<Workers> {
        let n = hub.lanes().len();
        let stop = CancellationToken::new();
        let mut handles = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for i in 0..n.max(1) {
            // The lane is woken from the ingest thread (the runtime's
            // global queue), its writers locally. Polling the global queue
            // only every 1024 tasks (tokio's default: 31) lets a round of
            // writers finish before the lane delivers the next batch, so
            // each writer's frame carries everything since its last one
            // instead of a lane pass every 31 writers trickling updates in.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .global_queue_interval(1024)
                .build()?;
            handles.push(rt.handle().clone());
            if let Some(lane) = hub.lanes().get(i) {
                rt.spawn(lane.clone().run(hub.clone()));
            }
            let stop = stop.clone();
            threads.push(std::thread::Builder::new().name(format!("ws-worker-{i}")).spawn(move || {
                if let Err(e) = lower_priority(nice) {
                    tracing::warn!(error = %e, nice, "could not lower the priority of a connection thread (--ws-threads-nice)");
                }
                rt.block_on(stop.cancelled());
            })?);
        }
        Ok(Workers { handles, threads, stop })
    }

    /// Stops the runtimes (dropping whatever still runs on them) and joins
    /// their threads.
    pub fn stop(self) {
        self.stop.cancel();
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Raises the calling thread's nice value by `by`. On Linux the nice value
/// is per thread: the id given is this thread's, so only it is affected.
fn lower_priority(by: i32) -> std::io::Result<()> {
    if by == 0 {
        return Ok(());
    }
    let me = Some(rustix::thread::gettid());
    let now = rustix::process::getpriority_process(me)?;
    rustix::process::setpriority_process(me, (now + by).min(19))?;
    Ok(())
}

/// Accepts connections until `shutdown` is cancelled, spreading them over
/// `workers`; each connection task is tracked by `tracker`.
pub async fn serve(listener: TcpListener, shared: Arc<Core>, workers: &Workers, tracker: TaskTracker) {
    let cfg = &shared.config.ws;
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    let pending =
        Arc::new(admission::Pending::new(cfg.max_pending_handshakes, cfg.max_pending_handshakes_per_ip));
    let sources =
        Arc::new(admission::Sources::new(cfg.max_connections_per_ip, cfg.max_handshakes_per_sec_per_ip));
    // Refused sockets linger briefly so the 503 is not destroyed by a reset;
    // beyond this many at once they are just dropped.
    let refusing = Arc::new(Semaphore::new(256));
    let mut accept_errors = RateLog::new(Duration::from_secs(10));
    let mut next = 0usize;
    loop {
        let (stream, peer) = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning, and
                    // say so once per interval, not per attempt.
                    if let Some(suppressed) = accept_errors.hit(std::time::Instant::now()) {
                        tracing::warn!(error = %e, suppressed, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        // Refused at once, in plain HTTP (on a TLS port the client sees a
        // failed handshake: answering in TLS would cost the work the
        // refusal is there to save).
        let refuse = |stream: TcpStream, response: String| {
            shared.ws.handshakes_refused.fetch_add(1, Ordering::Relaxed);
            let _ = stream.try_write(response.as_bytes());
            if let Ok(permit) = refusing.clone().try_acquire_owned() {
                tracker.spawn(async move {
                    drain_and_drop(Conn::Plain(stream), Duration::from_secs(1)).await;
                    drop(permit);
                });
            }
        };
        // Behind a trusted balancer the client's address comes with the
        // PROXY header, read on the worker: its admission waits till then.
        let admitted = if shared.trusted.contains(peer.ip()) {
            None
        } else {
            match admission::admit(&pending, &sources, peer.ip()) {
                Ok(a) => Some(a),
                Err(response) => {
                    refuse(stream, response);
                    continue;
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let sock = socket2::SockRef::from(&stream);
        if cfg.send_buffer_bytes > 0 {
            let _ = sock.set_send_buffer_size(cfg.send_buffer_bytes);
        }
        if cfg.notsent_lowat_bytes > 0 {
            let _ = sock.set_tcp_notsent_lowat(cfg.notsent_lowat_bytes);
        }
        let std = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "could not detach accepted socket");
                continue;
            }
        };
        let w = next % workers.handles.len();
        next = next.wrapping_add(1);
        let shared = shared.clone();
        let slots = slots.clone();
        let (pending, sources) = (pending.clone(), sources.clone());
        workers.handles[w].spawn(tracker.track_future(async move {
            let mut s = match TcpStream::from_std(std) {
                Ok(s) => s,
                Err(e) => return tracing::debug!(error = %e, "could not register socket"),
            };
            let (peer, (slot, _source)) = match admitted {
                Some(a) => (peer, a),
                None => match Box::pin(behind_proxy(&mut s, peer, &shared, &pending, &sources)).await {
                    Some(x) => x,
                    None => return drain_and_drop(Conn::Plain(s), Duration::from_secs(1)).await,
                },
            };
            // `_source` is held for the whole connection.
            connection(s, peer, shared, slot, slots, w).await;
        }));
    }
    tracing::info!("stopped accepting WebSocket connections");
}

/// A connection from a trusted balancer: reads its PROXY header and admits
/// the client it names. `None` when refused (the answer is written; the
/// caller drains the socket).
async fn behind_proxy(
    s: &mut TcpStream,
    proxy: SocketAddr,
    shared: &Core,
    pending: &Arc<admission::Pending>,
    sources: &Arc<admission::Sources>,
) -> Option<(SocketAddr, admission::Admitted)> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(shared.config.ws.handshake_timeout_ms);
    let client = match crate::proxy::read_header(s, proxy, deadline).await {
        Ok(c) => c,
        Err(e) => {
            shared.ws.proxy_errors.fetch_add(1, Ordering::Relaxed);
            let answer = handshake::plain_answer("400 Bad Request", &[], &format!("{e}\n"), false);
            let _ = s.try_write(answer.as_bytes());
            return None;
        }
    };
    match admission::admit(pending, sources, client.ip()) {
        Ok(a) => Some((client, a)),
        Err(response) => {
            shared.ws.handshakes_refused.fetch_add(1, Ordering::Relaxed);
            let _ = s.try_write(response.as_bytes());
            None
        }
    }
}

/// Closes a socket that was answered in plain HTTP without resetting it.
async fn drain_and_drop(mut stream: Conn, linger: Duration) {
    close::shut_and_drain(&mut stream, tokio::time::Instant::now() + linger).await;
}

/// The tungstenite limits derived from the config.
pub fn ws_config(cfg: &WsConfig) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(cfg.read_buffer_bytes)
        .write_buffer_size(0)
        .max_write_buffer_size(cfg.max_write_buffer_bytes)
        .max_message_size(Some(cfg.max_request_bytes))
        .max_frame_size(Some(cfg.max_request_bytes))
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Core>,
    handshaking: admission::Slot,
    slots: Arc<Semaphore>,
    lane: usize,
) {
    let timeout = Duration::from_millis(shared.config.ws.handshake_timeout_ms);
    let deadline = tokio::time::Instant::now() + timeout;
    // TLS first, within the same handshake timeout.
    let mut stream = match &shared.tls {
        None => Conn::Plain(tcp),
        Some(tls) => match tokio::time::timeout_at(deadline, Box::pin(tls.ws.accept(tcp))).await {
            Ok(Ok(s)) => Conn::Tls(Box::new(s)),
            Ok(Err(e)) => {
                shared.ws.tls_failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                shared.ws.handshake_timeouts.fetch_add(1, Ordering::Relaxed);
                return;
            }
        },
    };
    // The handshake and the refusal below are boxed: their futures are
    // large and short-lived, and an unboxed one would size the task every
    // open connection keeps (see the idle-memory figures in BENCHMARKS.md).
    let handshake = Box::pin(handshake::accept(&mut stream, shared.as_ref(), peer.ip()));
    let outcome = match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "handshake timed out");
            shared.ws.handshake_timeouts.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let (symbols, principal, leftover) = match outcome {
        handshake::Outcome::Upgraded { symbols, principal, leftover } => (symbols, principal, leftover),
        handshake::Outcome::Answered => {
            shared.ws.http_requests.fetch_add(1, Ordering::Relaxed);
            drain_and_drop(stream, Duration::from_secs(1)).await;
            return;
        }
        handshake::Outcome::Closed => return,
    };
    let cfg = &shared.config.ws;
    // The connection slot is taken at upgrade, not at accept. A refused
    // upgrade keeps its handshake place while its 1013 is delivered (at
    // most 1 s), so refusals stay bounded like handshakes.
    let Ok(_slot) = slots.try_acquire_owned() else {
        let ws =
            WebSocketStream::from_partially_read(stream, leftover, Role::Server, Some(ws_config(cfg))).await;
        let reason = format!("connection limit {} reached; retry after 5 s", cfg.max_connections);
        let end = close::End::Close(close_code::TRY_AGAIN_LATER, reason);
        let label = Box::pin(close::finish(ws, end, cfg.close_linger().min(Duration::from_secs(1)))).await;
        shared.ws.record_close(label);
        return;
    };
    drop(handshaking);
    let ws = WebSocketStream::from_partially_read(stream, leftover, Role::Server, Some(ws_config(cfg))).await;
    shared.ws.open.fetch_add(1, Ordering::Relaxed);
    shared.ws.opened.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(%peer, "connection opened");
    session::Session::new(shared.clone(), peer, lane, principal).run(ws, symbols).await;
    shared.ws.open.fetch_sub(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_threads_run_below_the_feed_thread() {
        let hub = Arc::new(Hub::new(1, 1).with_lanes(1, 4));
        let workers = Workers::start(&hub, 5).unwrap();
        let mine = rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        workers.handles[0].spawn(async move {
            let _ = tx.send(rustix::process::getpriority_process(Some(rustix::thread::gettid())));
        });
        let theirs = rx.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
        workers.stop();
        assert_eq!(theirs, (mine + 5).min(19), "the worker is 5 nicer than the thread that started it");
    }

    /// Every open connection keeps its task (this future) for its whole
    /// life, idle or not: the handshake and closing phases are boxed so
    /// they do not size it (5.2 KB before they were).
    #[tokio::test]
    async fn a_connection_task_stays_small() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, peer) = l.accept().await.unwrap();
        let core = Arc::new(Core {
            book: Arc::new(crate::book::Book::new(4)),
            hub: Arc::new(Hub::new(4, 4)),
            feed: Arc::new(crate::ingest::FeedStats::default()),
            ws: Arc::new(WsStats::default()),
            config: crate::Config::for_tests(std::net::Ipv4Addr::new(239, 1, 2, 3), 5000),
            tls: None,
            trusted: Default::default(),
            auth: Arc::new(
                crate::auth::Authenticator::new(&crate::auth::AuthConfig::parse_default()).unwrap(),
            ),
            node: "test".into(),
            shutdown: CancellationToken::new(),
            drain: crate::drain::Drain::new(Duration::ZERO),
            metrics: Arc::new(crate::metrics::Telemetry::new()),
        });
        let pending = Arc::new(admission::Pending::new(1, 1));
        let slot = pending.enter(peer.ip()).unwrap();
        let f = connection(s, peer, core, slot, Arc::new(Semaphore::new(1)), 0);
        assert!(std::mem::size_of_val(&f) <= 3 * 1024, "{} bytes", std::mem::size_of_val(&f));
    }
}
