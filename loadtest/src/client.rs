//! The clients: a few worker threads, each a single-threaded runtime with a
//! `LocalSet`, running many cheap connection tasks.
//!
//! Per-connection state is a [`ConnChecker`] and a socket; histograms and
//! counters live once per worker thread (`Rc<RefCell<..>>`, no locks, no
//! atomics contention), and are merged when the run ends. The controller
//! sees progress through per-worker atomics written by one thread each.

use crate::checker::ConnChecker;
use crate::config::SlowMode;
use crate::stats::{self, Group, Stamps};
use crate::symbols::Picker;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use prost::Message as _;
use quotecast_proto::v1::{
    self, quote_service_client::QuoteServiceClient, server_message::Body, stream_quotes_response, UpdateBatch,
};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The gateway's clock (wall-clock ns since the Unix epoch).
pub use quotecast_proto::clock::now_ns;

/// Progress counters of one worker thread. Only that thread writes them;
/// the alignment keeps two workers' counters off one cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Counters {
    /// Quote updates received (all clients, whether measuring or not).
    pub updates: AtomicU64,
    /// Frames received.
    pub frames: AtomicU64,
    /// Bytes received.
    pub bytes: AtomicU64,
    /// Connections open now.
    pub open: AtomicI64,
    /// Connections established.
    pub connected: AtomicU64,
    /// Connection attempts that failed.
    pub failed: AtomicU64,
    /// GetSnapshot calls completed.
    pub calls: AtomicU64,
}

/// Settings and shared signals every worker reads.
#[derive(Debug)]
pub struct Shared {
    /// WebSocket target.
    pub ws_target: SocketAddr,
    /// How clients connect (URL with token, TLS).
    pub dial: Dialer,
    /// gRPC target.
    pub grpc_target: SocketAddr,
    /// Time to connect one client.
    pub connect_timeout: Duration,
    /// tungstenite read buffer per connection.
    pub read_buffer: usize,
    /// What slow clients do.
    pub slow_mode: SlowMode,
    /// Pause per frame of `slow` clients.
    pub slow_delay: Duration,
    /// Reconnect and resume when the server ends a connection.
    pub reconnect: bool,
    /// Longest first pause before a reconnect.
    pub reconnect_backoff: Duration,
    /// True while the measurement window is open: only then are latency
    /// and throughput recorded (ramp-up and drain are excluded).
    pub measuring: AtomicBool,
    /// Cancelled when the run ends: every client closes.
    pub stop: CancellationToken,
    /// Normal clients still waiting for the end of the feed (or for their
    /// snapshots): the controller waits for 0 before the final check.
    pub undrained: AtomicI64,
    /// Per-worker progress counters.
    pub counters: Vec<Counters>,
    /// Per-worker copy of the normal clients' end-to-end histogram (or the
    /// call latency), refreshed every second for the progress line.
    pub progress: Vec<Mutex<Histogram<u64>>>,
    /// Kernel thread ids of the workers, for their CPU time.
    pub tids: Mutex<Vec<i32>>,
}

impl Shared {
    /// Shared state for `workers` threads.
    pub fn new(
        workers: usize,
        ws_target: SocketAddr,
        grpc_target: SocketAddr,
        dial: Dialer,
        cfg: &crate::Config,
    ) -> Shared {
        Shared {
            ws_target,
            dial,
            grpc_target,
            connect_timeout: cfg.load.connect_timeout,
            read_buffer: cfg.load.read_buffer_bytes,
            slow_mode: cfg.load.slow_mode,
            slow_delay: cfg.load.slow_delay,
            reconnect: cfg.load.reconnect,
            reconnect_backoff: cfg.load.reconnect_backoff,
            measuring: AtomicBool::new(false),
            stop: CancellationToken::new(),
            undrained: AtomicI64::new(0),
            counters: (0..workers).map(|_| Counters::default()).collect(),
            progress: (0..workers).map(|_| Mutex::new(stats::histogram())).collect(),
            tids: Mutex::new(Vec::new()),
        }
    }

    /// Sum of one counter over the workers.
    pub fn total(&self, f: impl Fn(&Counters) -> &AtomicU64) -> u64 {
        self.counters.iter().map(|c| f(c).load(Ordering::Relaxed)).sum()
    }

    /// Connections open now.
    pub fn open(&self) -> i64 {
        self.counters.iter().map(|c| c.open.load(Ordering::Relaxed)).sum()
    }

    /// Merged progress histogram.
    pub fn progress_histogram(&self) -> Histogram<u64> {
        let mut h = stats::histogram();
        for p in &self.progress {
            if let Ok(p) = p.lock() {
                let _ = h.add(&*p);
            }
        }
        h
    }
}

/// One streaming client to start (WebSocket or gRPC StreamQuotes).
#[derive(Debug, Clone)]
pub struct ConnSpec {
    /// Connection number.
    pub id: u64,
    /// Symbols to subscribe to.
    pub symbols: Vec<String>,
    /// A slow reader on purpose.
    pub slow: bool,
    /// Source address to bind before connecting.
    pub source: Ipv4Addr,
}

/// One GetSnapshot caller to start.
#[derive(Debug)]
pub struct CallerSpec {
    /// Caller number.
    pub id: u64,
    /// Draws the symbols of each call.
    pub picker: Picker,
    /// Symbols per call.
    pub per_call: usize,
    /// Pause between calls of this caller (`None` = back to back).
    pub interval: Option<Duration>,
    /// Source address to bind.
    pub source: Ipv4Addr,
}

/// Work the controller hands to a worker.
#[derive(Debug)]
pub enum Job {
    /// A WebSocket client.
    Ws(ConnSpec),
    /// A gRPC StreamQuotes consumer.
    Stream(ConnSpec),
    /// A gRPC GetSnapshot caller.
    Snapshot(CallerSpec),
}

/// How a client's connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// loadtest closed it at the end of the run.
    Stopped,
    /// The server sent a close frame.
    Closed {
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// The connection dropped without a close frame.
    Lost(String),
    /// A gRPC stream ended with this status code.
    Grpc(String),
    /// A gRPC stream ended cleanly (server finished it).
    StreamEnded,
}

impl End {
    /// A low-cardinality label, e.g. "4008 slow consumer".
    pub fn label(&self) -> String {
        match self {
            End::Stopped => "closed by loadtest".into(),
            End::Closed { code, .. } => format!("{code} {}", close_name(*code)),
            End::Lost(why) => format!("lost: {why}"),
            End::Grpc(code) => format!("grpc {code}"),
            End::StreamEnded => "stream ended by server".into(),
        }
    }

    /// Whether the server ended the connection (anything but our close).
    pub fn by_server(&self) -> bool {
        !matches!(self, End::Stopped)
    }
}

/// Names of the close codes the gateway sends.
pub fn close_name(code: u16) -> &'static str {
    match code {
        1000 => "normal",
        1001 => "shutdown",
        1002 => "protocol error",
        1006 => "abnormal",
        1007 => "invalid utf-8",
        1008 => "policy",
        1009 => "message too big",
        1011 => "server error",
        1012 => "service restart",
        1013 => "connection limit",
        4008 => "slow consumer",
        4012 => "idle",
        _ => "other",
    }
}

/// What one client leaves behind.
#[derive(Debug, Clone)]
pub struct ConnOutcome {
    /// Connection number.
    pub id: u64,
    /// Slow on purpose.
    pub slow: bool,
    /// Its checker (sequence checks done; final check pending).
    pub checker: ConnChecker,
    /// How it ended.
    pub end: End,
    /// Symbols the gateway rejected.
    pub rejected: Vec<String>,
    /// Error replies received (first message kept).
    pub errors: u64,
    /// First error message.
    pub first_error: Option<String>,
    /// Frames that did not decode as `ServerMessage`.
    pub decode_errors: u64,
    /// Reconnects (with `--reconnect`).
    pub reconnects: u64,
}

/// GetSnapshot results of one worker.
#[derive(Debug, Clone, Default)]
pub struct SnapshotStats {
    /// Successful calls in the window.
    pub calls: u64,
    /// Quotes returned in the window.
    pub quotes: u64,
    /// Symbols rejected by the server.
    pub rejected: u64,
    /// Failed calls by gRPC code.
    pub errors: BTreeMap<String, u64>,
    /// Sequence regressions: a symbol's seq lower than an earlier call saw,
    /// or a quote for a symbol not asked for.
    pub violations: Vec<String>,
    /// Total regressions (the list is capped).
    pub violation_count: u64,
}

impl SnapshotStats {
    /// Adds `o` into `self`.
    pub fn merge(&mut self, o: SnapshotStats) {
        self.calls += o.calls;
        self.quotes += o.quotes;
        self.rejected += o.rejected;
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.violation_count += o.violation_count;
        self.violations.extend(o.violations);
    }
}

/// Everything one worker measured.
#[derive(Debug)]
pub struct WorkerResult {
    /// Normal clients.
    pub fast: Group,
    /// Slow-on-purpose clients.
    pub slow: Group,
    /// Connect times (TCP + handshake), ns.
    pub connect: Histogram<u64>,
    /// GetSnapshot call latency, ns.
    pub calls: Histogram<u64>,
    /// One entry per connection that was established.
    pub outcomes: Vec<ConnOutcome>,
    /// Failed connection attempts by reason.
    pub failures: BTreeMap<String, u64>,
    /// GetSnapshot results.
    pub snapshot: SnapshotStats,
    /// Per gateway node (its `X-Quotecast-Node` header).
    pub nodes: BTreeMap<String, NodeStats>,
    /// Reconnects: connection ended by the server to resubscribed on the
    /// next one (ack received), ns.
    pub failover: Histogram<u64>,
    /// Why connections were reconnected (how the server ended them).
    pub reconnect_causes: BTreeMap<String, u64>,
}

/// What the clients saw of one gateway node.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct NodeStats {
    /// Connections established to it (first ones and reconnects).
    pub connections: u64,
    /// Reconnects that landed on it.
    pub reconnects_in: u64,
    /// Connections it ended (drain, shutdown, killed, ...).
    pub ended_by_server: u64,
    /// Updates received from it.
    pub updates: u64,
}

impl NodeStats {
    /// Adds `o` into `self`.
    pub fn add(&mut self, o: &NodeStats) {
        self.connections += o.connections;
        self.reconnects_in += o.reconnects_in;
        self.ended_by_server += o.ended_by_server;
        self.updates += o.updates;
    }
}

impl WorkerResult {
    fn empty() -> WorkerResult {
        WorkerResult {
            fast: Group::default(),
            slow: Group::default(),
            connect: stats::histogram(),
            calls: stats::histogram(),
            outcomes: Vec::new(),
            failures: BTreeMap::new(),
            snapshot: SnapshotStats::default(),
            nodes: BTreeMap::new(),
            failover: stats::histogram(),
            reconnect_causes: BTreeMap::new(),
        }
    }
}

/// Per-worker state shared by its tasks (single thread: `RefCell`).
struct Local {
    id: usize,
    shared: Arc<Shared>,
    fast: RefCell<Group>,
    slow: RefCell<Group>,
    connect: RefCell<Histogram<u64>>,
    calls: RefCell<Histogram<u64>>,
    outcomes: RefCell<Vec<ConnOutcome>>,
    failures: RefCell<BTreeMap<String, u64>>,
    snapshot: RefCell<SnapshotStats>,
    nodes: RefCell<BTreeMap<String, NodeStats>>,
    failover: RefCell<Histogram<u64>>,
    reconnect_causes: RefCell<BTreeMap<String, u64>>,
}

impl Local {
    fn counters(&self) -> &Counters {
        &self.shared.counters[self.id]
    }

    fn fail(&self, reason: String) {
        self.counters().failed.fetch_add(1, Ordering::Relaxed);
        *self.failures.borrow_mut().entry(reason).or_default() += 1;
    }

    fn connected(&self, since: Instant) {
        stats::record(&mut self.connect.borrow_mut(), since.elapsed().as_nanos() as i64);
        self.counters().connected.fetch_add(1, Ordering::Relaxed);
        self.counters().open.fetch_add(1, Ordering::Relaxed);
    }

    /// The checker state of a connection that just connected; a normal
    /// (not slow) one is counted among those the run waits to drain.
    fn start_conn(&self, spec: &ConnSpec) -> ConnState {
        let mut conn = ConnState::new(spec);
        if !spec.slow {
            conn.counted = true;
            self.shared.undrained.fetch_add(1, Ordering::Relaxed);
        }
        conn
    }

    /// Checks and measures one batch of updates received at `now`.
    fn on_batch(&self, conn: &mut ConnState, batch: &UpdateBatch, now: i64, len: usize) {
        let measuring = self.shared.measuring.load(Ordering::Relaxed);
        let mut g = if conn.slow { self.slow.borrow_mut() } else { self.fast.borrow_mut() };
        for u in &batch.updates {
            let fresh = conn.checker.on_update(u);
            if measuring && fresh {
                let s = Stamps { ts_event: u.ts_event, ts_recv: u.ts_recv, ts_send: batch.ts_send, now };
                g.negative += u64::from(g.hops.record(s));
            }
        }
        let n = batch.updates.len() as u64;
        if measuring {
            g.updates += n;
            g.frames += 1;
            g.bytes += len as u64;
        }
        let c = self.counters();
        c.updates.fetch_add(n, Ordering::Relaxed);
        c.frames.fetch_add(1, Ordering::Relaxed);
        c.bytes.fetch_add(len as u64, Ordering::Relaxed);
        conn.got_data |= n > 0;
        conn.updates_here += n;
    }

    fn on_status(&self, conn: &mut ConnState, st: &v1::Status, len: usize) {
        conn.checker.on_status(st);
        self.count_frame(len);
    }

    /// Counts a received frame that carries no update.
    fn count_frame(&self, len: usize) {
        let c = self.counters();
        c.frames.fetch_add(1, Ordering::Relaxed);
        c.bytes.fetch_add(len as u64, Ordering::Relaxed);
    }

    /// Handles one WebSocket binary frame.
    fn on_ws_frame(&self, conn: &mut ConnState, frame: &[u8]) {
        let now = now_ns();
        let Ok(msg) = v1::ServerMessage::decode(frame) else {
            conn.decode_errors += 1;
            return;
        };
        match msg.body {
            Some(Body::Updates(b)) => self.on_batch(conn, &b, now, frame.len()),
            Some(Body::Status(s)) => self.on_status(conn, &s, frame.len()),
            Some(Body::Ack(a)) => {
                conn.acked = true;
                conn.reject(a.rejected);
            }
            Some(Body::Error(e)) => {
                conn.errors += 1;
                conn.first_error.get_or_insert(e.message);
            }
            // A trading state change moves no seq: nothing to check.
            Some(Body::Trading(_)) => self.count_frame(frame.len()),
            Some(Body::Pong(_) | Body::Subscriptions(_) | Body::Authenticated(_)) | None => {}
        }
        self.track_drain(conn);
    }

    /// Keeps the shared count of undrained normal clients in step.
    fn track_drain(&self, conn: &mut ConnState) {
        if !conn.counted {
            return;
        }
        let d = conn.checker.is_drained();
        if d != conn.drained {
            conn.drained = d;
            self.shared.undrained.fetch_add(if d { -1 } else { 1 }, Ordering::Relaxed);
        }
    }

    fn finish(&self, mut conn: ConnState, end: End) {
        if conn.counted && !conn.drained {
            self.shared.undrained.fetch_sub(1, Ordering::Relaxed);
            conn.counted = false;
        }
        self.counters().open.fetch_sub(1, Ordering::Relaxed);
        self.outcomes.borrow_mut().push(ConnOutcome {
            id: conn.id,
            slow: conn.slow,
            checker: conn.checker,
            end,
            rejected: conn.rejected,
            errors: conn.errors,
            first_error: conn.first_error,
            decode_errors: conn.decode_errors,
            reconnects: conn.reconnects,
        });
    }
}

/// A streaming client's state.
struct ConnState {
    id: u64,
    slow: bool,
    checker: ConnChecker,
    rejected: Vec<String>,
    errors: u64,
    first_error: Option<String>,
    decode_errors: u64,
    /// Counted in `Shared::undrained`.
    counted: bool,
    drained: bool,
    got_data: bool,
    /// An ack arrived on the current connection.
    acked: bool,
    /// Updates received on the current connection.
    updates_here: u64,
    /// Connections after the first.
    reconnects: u64,
}

impl ConnState {
    /// Symbols the gateway refused: they get no data, so stop checking them.
    fn reject(&mut self, rejected: Vec<v1::Rejection>) {
        if !rejected.is_empty() {
            let names: Vec<String> = rejected.into_iter().map(|r| r.symbol).collect();
            self.checker.forget(&names);
            self.rejected.extend(names);
        }
    }

    fn new(spec: &ConnSpec) -> ConnState {
        ConnState {
            id: spec.id,
            slow: spec.slow,
            checker: ConnChecker::new(spec.id, &spec.symbols),
            rejected: Vec::new(),
            errors: 0,
            first_error: None,
            decode_errors: 0,
            counted: false,
            drained: false,
            got_data: false,
            acked: false,
            updates_here: 0,
            reconnects: 0,
        }
    }
}

/// Jobs a worker may have queued but not yet started.
const JOB_QUEUE: usize = 1024;

/// A running worker thread.
pub struct Worker {
    /// Where to send jobs; dropping it lets the worker finish. Bounded: the
    /// controller waits when a worker is this far behind on starting clients.
    pub jobs: mpsc::Sender<Job>,
    result: oneshot::Receiver<WorkerResult>,
    thread: std::thread::JoinHandle<()>,
}

impl Worker {
    /// Starts worker `id` on its own thread.
    ///
    /// # Errors
    /// When the thread or its runtime cannot be started.
    pub fn start(id: usize, shared: Arc<Shared>) -> std::io::Result<Worker> {
        let (jobs, rx) = mpsc::channel(JOB_QUEUE);
        let (tx, result) = oneshot::channel();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let thread = std::thread::Builder::new().name(format!("loadtest-{id}")).spawn(move || {
            if let Ok(mut t) = shared.tids.lock() {
                t.push(crate::sys::thread_id());
            }
            let local = tokio::task::LocalSet::new();
            let r = local.block_on(&rt, worker_main(id, shared, rx));
            let _ = tx.send(r);
        })?;
        Ok(Worker { jobs, result, thread })
    }

    /// Waits for the worker to finish its connections (after the jobs
    /// sender is dropped and `stop` cancelled) and returns its results.
    pub async fn finish(self) -> Option<WorkerResult> {
        drop(self.jobs);
        let r = self.result.await.ok();
        let _ = tokio::task::spawn_blocking(move || self.thread.join()).await;
        r
    }
}

async fn worker_main(id: usize, shared: Arc<Shared>, mut rx: mpsc::Receiver<Job>) -> WorkerResult {
    let l = Rc::new(Local {
        id,
        shared: shared.clone(),
        fast: RefCell::new(Group::default()),
        slow: RefCell::new(Group::default()),
        connect: RefCell::new(stats::histogram()),
        calls: RefCell::new(stats::histogram()),
        outcomes: RefCell::new(Vec::new()),
        failures: RefCell::new(BTreeMap::new()),
        snapshot: RefCell::new(SnapshotStats::default()),
        nodes: RefCell::new(BTreeMap::new()),
        failover: RefCell::new(stats::histogram()),
        reconnect_causes: RefCell::new(BTreeMap::new()),
    });
    let tracker = TaskTracker::new();
    // Progress copy of this worker's latency, once a second.
    let pl = l.clone();
    let progress = tokio::task::spawn_local(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let h = {
                let calls = pl.calls.borrow();
                if calls.is_empty() {
                    pl.fast.borrow().hops.e2e.clone()
                } else {
                    calls.clone()
                }
            };
            if let Ok(mut p) = pl.shared.progress[pl.id].lock() {
                *p = h;
            }
        }
    });
    while let Some(job) = rx.recv().await {
        let l = l.clone();
        match job {
            Job::Ws(spec) => tokio::task::spawn_local(tracker.track_future(ws_client(l, spec))),
            Job::Stream(spec) => tokio::task::spawn_local(tracker.track_future(stream_client(l, spec))),
            Job::Snapshot(spec) => tokio::task::spawn_local(tracker.track_future(snapshot_caller(l, spec))),
        };
    }
    tracker.close();
    tracker.wait().await;
    progress.abort();
    // Awaiting the aborted task drops its clone of `l`.
    let _ = progress.await;
    let l = match Rc::try_unwrap(l) {
        Ok(l) => l,
        // Unreachable: every task holding a clone has finished. Report
        // nothing rather than panic on a client thread.
        Err(_) => return WorkerResult::empty(),
    };
    WorkerResult {
        fast: l.fast.into_inner(),
        slow: l.slow.into_inner(),
        connect: l.connect.into_inner(),
        calls: l.calls.into_inner(),
        outcomes: l.outcomes.into_inner(),
        failures: l.failures.into_inner(),
        snapshot: l.snapshot.into_inner(),
        nodes: l.nodes.into_inner(),
        failover: l.failover.into_inner(),
        reconnect_causes: l.reconnect_causes.into_inner(),
    }
}

/// A short, low-cardinality reason for a failed connection.
pub fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match (e.kind(), e.raw_os_error()) {
        (_, Some(24)) => "too many open files".into(),
        (K::ConnectionRefused, _) => "connection refused".into(),
        (K::TimedOut, _) => "timed out".into(),
        (K::AddrInUse | K::AddrNotAvailable, _) => "no free source address/port".into(),
        (K::ConnectionReset, _) => "connection reset".into(),
        _ => e.to_string(),
    }
}

fn ws_reason(e: &tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Io(io) => io_reason(io),
        tungstenite::Error::Http(resp) => format!("HTTP {}", resp.status()),
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => "closed".into(),
        tungstenite::Error::Protocol(p) => format!("protocol: {p}"),
        other => other.to_string(),
    }
}

type Ws = WebSocketStream<Either<TcpStream, TlsStream<TcpStream>>>;

/// How every client reaches the gateway: the upgrade URL (with the token)
/// and, for `wss://`, the TLS connector.
#[derive(Clone)]
pub struct Dialer {
    /// The upgrade URL, `ws://target/` or `ws://target/?token=...`.
    pub url: String,
    tls: Option<TlsConnector>,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer").field("tls", &self.tls.is_some()).finish_non_exhaustive()
    }
}

impl Dialer {
    /// For `target`, with `--tls-ca-file` and `--token` of `cfg`.
    ///
    /// # Errors
    /// A CA file that cannot be read.
    pub fn new(target: SocketAddr, cfg: &crate::config::TargetArgs) -> Result<Dialer, String> {
        let mut url = format!("ws://{target}/");
        if let Some(t) = &cfg.token {
            url.push_str("?token=");
            url.extend(form_urlencoded::byte_serialize(t.as_bytes()));
        }
        let tls = match &cfg.tls_ca_file {
            None => None,
            Some(path) => {
                use rustls::pki_types::pem::PemObject;
                let mut roots = rustls::RootCertStore::empty();
                let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("--tls-ca-file {}: {e}", path.display()))?;
                for c in certs {
                    let c = c.map_err(|e| format!("--tls-ca-file {}: {e}", path.display()))?;
                    roots.add(c).map_err(|e| format!("--tls-ca-file {}: {e}", path.display()))?;
                }
                let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Some(TlsConnector::from(std::sync::Arc::new(config)))
            }
        };
        Ok(Dialer { url, tls })
    }
}

/// The source address of client `i`: spread over `spread` loopback
/// addresses 127.0.0.1.. for a loopback target (so ephemeral ports never
/// run out), the kernel's choice for a target in a namespace network.
pub fn source_for(target: SocketAddr, i: usize, spread: u8) -> Ipv4Addr {
    if target.ip().is_loopback() {
        Ipv4Addr::new(127, 0, 0, 1 + (i % usize::from(spread.max(1))) as u8)
    } else {
        Ipv4Addr::UNSPECIFIED
    }
}

/// Connects one WebSocket client from `source`.
///
/// # Errors
/// A short reason (see [`io_reason`]).
pub async fn ws_connect(
    target: SocketAddr,
    dial: &Dialer,
    source: Ipv4Addr,
    read_buffer: usize,
) -> Result<(Ws, String), String> {
    let sock = TcpSocket::new_v4().map_err(|e| io_reason(&e))?;
    sock.bind(SocketAddr::new(IpAddr::V4(source), 0)).map_err(|e| io_reason(&e))?;
    let tcp = sock.connect(target).await.map_err(|e| io_reason(&e))?;
    let _ = tcp.set_nodelay(true);
    let stream = match &dial.tls {
        None => Either::Left(tcp),
        Some(tls) => {
            let name = rustls::pki_types::ServerName::IpAddress(target.ip().into());
            Either::Right(tls.connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?)
        }
    };
    let url = dial.url.as_str();
    let cfg = WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(0)
        .max_write_buffer_size(1 << 20)
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(16 << 20));
    let (ws, resp) = tokio_tungstenite::client_async_with_config(url, stream, Some(cfg))
        .await
        .map_err(|e| ws_reason(&e))?;
    let node =
        resp.headers().get("x-quotecast-node").and_then(|v| v.to_str().ok()).unwrap_or("unnamed").to_string();
    Ok((ws, node))
}

/// The binary subscribe request.
pub fn subscribe_message(symbols: &[String]) -> Message {
    resume_message(symbols, HashMap::default(), String::new())
}

/// The binary subscribe request resuming after `from_seq` in `from_epoch`.
pub fn resume_message(symbols: &[String], from_seq: HashMap<String, u64>, from_epoch: String) -> Message {
    let m = v1::ClientMessage {
        id: "1".into(),
        op: Some(v1::client_message::Op::Subscribe(v1::Subscribe {
            symbols: symbols.to_vec(),
            from_seq,
            from_epoch,
        })),
    };
    Message::Binary(m.encode_to_vec().into())
}

/// Whether a client reconnects after the server ended it this way: not
/// after answers that say the client itself is at fault.
fn reconnects_after(end: &End) -> bool {
    match end {
        End::Stopped => false,
        End::Closed { code, .. } => !matches!(code, 1002 | 1007 | 1008 | 1009),
        _ => true,
    }
}

/// What the read loop does after a frame, for slow clients.
async fn slow_pause(l: &Local, conn: &ConnState) -> bool {
    if !conn.slow {
        return false;
    }
    let stop = &l.shared.stop;
    match l.shared.slow_mode {
        SlowMode::Slow => {
            tokio::select! {
                _ = tokio::time::sleep(l.shared.slow_delay) => false,
                _ = stop.cancelled() => true,
            }
        }
        SlowMode::Stop if conn.got_data => {
            stop.cancelled().await;
            true
        }
        SlowMode::Stop => false,
    }
}

async fn ws_client(l: Rc<Local>, spec: ConnSpec) {
    let sh = l.shared.clone();
    let mut conn: Option<ConnState> = None;
    // When the previous connection ended (for the failover time).
    let mut lost_at: Option<Instant> = None;
    let mut backoff = sh.reconnect_backoff;
    // A pause is due before the next attempt (a reconnect or a retry).
    let mut retrying = false;
    let (mut ws, mut end, mut conn) = loop {
        if retrying || lost_at.is_some() {
            // Jittered, so clients of a dead node do not all come back in
            // the same instant.
            let pause = backoff.mul_f64(rand::random::<f64>());
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = sh.stop.cancelled() => {
                    if let Some(c) = conn.take() {
                        l.finish(c, End::Stopped);
                    }
                    return;
                }
            }
        }
        let t0 = Instant::now();
        let connect = ws_connect(sh.ws_target, &sh.dial, spec.source, sh.read_buffer);
        let failed = match tokio::time::timeout(sh.connect_timeout, connect).await {
            Ok(Ok(x)) => Ok(x),
            Ok(Err(reason)) => Err(reason),
            Err(_) => Err("timed out".to_string()),
        };
        let (mut ws, node) = match failed {
            Ok(x) => x,
            Err(reason) => {
                if sh.reconnect && !sh.stop.is_cancelled() {
                    // The balancer may not have noticed a dead node yet, or
                    // a node is busy: retry, as a real client does.
                    let what = if lost_at.is_some() { "reconnect" } else { "connect (retried)" };
                    l.fail(format!("{what}: {reason}"));
                    retrying = true;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
                if let Some(c) = conn.take() {
                    l.finish(c, End::Lost(reason));
                } else {
                    l.fail(reason);
                }
                return;
            }
        };
        l.connected(t0);
        retrying = false;
        let mut c = match conn.take() {
            Some(c) => c,
            None => l.start_conn(&spec),
        };
        c.acked = false;
        c.updates_here = 0;
        let request = if lost_at.is_some() {
            c.reconnects += 1;
            let (from, epoch) = c.checker.resume();
            resume_message(&spec.symbols, from, epoch)
        } else {
            subscribe_message(&spec.symbols)
        };
        {
            let mut nodes = l.nodes.borrow_mut();
            let n = nodes.entry(node.clone()).or_default();
            n.connections += 1;
            n.reconnects_in += u64::from(lost_at.is_some());
        }
        if let Err(e) = ws.send(request).await {
            let end = End::Lost(ws_reason(&e));
            if sh.reconnect && !sh.stop.is_cancelled() {
                lost_at = Some(Instant::now());
                conn = Some(c);
                continue;
            }
            return l.finish(c, end);
        }
        let end = loop {
            let msg = tokio::select! {
                biased;
                _ = sh.stop.cancelled() => break End::Stopped,
                m = ws.next() => m,
            };
            match msg {
                None => break End::Lost("connection closed".into()),
                Some(Err(e)) => break End::Lost(ws_reason(&e)),
                Some(Ok(Message::Binary(b))) => {
                    let was_acked = c.acked;
                    l.on_ws_frame(&mut c, &b);
                    if !was_acked && c.acked {
                        if let Some(at) = lost_at.take() {
                            stats::record(&mut l.failover.borrow_mut(), at.elapsed().as_nanos() as i64);
                            backoff = sh.reconnect_backoff;
                        }
                    }
                }
                Some(Ok(Message::Close(f))) => {
                    break f.map_or(End::Closed { code: 1005, reason: String::new() }, |f| End::Closed {
                        code: u16::from(f.code),
                        reason: f.reason.to_string(),
                    })
                }
                Some(Ok(Message::Text(t))) => {
                    c.errors += 1;
                    c.first_error.get_or_insert_with(|| format!("unexpected text frame: {t}"));
                }
                Some(Ok(_)) => {}
            }
            if slow_pause(&l, &c).await {
                break End::Stopped;
            }
        };
        {
            let mut nodes = l.nodes.borrow_mut();
            let n = nodes.entry(node).or_default();
            n.updates += c.updates_here;
            n.ended_by_server += u64::from(end.by_server());
        }
        if sh.reconnect && reconnects_after(&end) && !sh.stop.is_cancelled() {
            l.counters().open.fetch_sub(1, Ordering::Relaxed);
            *l.reconnect_causes.borrow_mut().entry(end.label()).or_default() += 1;
            // Keep the first time of loss if the previous reconnect never
            // got its ack.
            lost_at = Some(lost_at.unwrap_or_else(Instant::now));
            conn = Some(c);
            let _ = tokio::time::timeout(Duration::from_millis(50), ws.close(None)).await;
            continue;
        }
        break (ws, end, c);
    };
    if end == End::Stopped && conn.slow && sh.slow_mode == SlowMode::Stop {
        // A stopped reader learns now whether the gateway gave up on it:
        // read what is buffered (it still counts for the checks) until the
        // close frame or a short deadline.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        loop {
            match tokio::time::timeout_at(deadline, ws.next()).await {
                Ok(Some(Ok(Message::Binary(b)))) => l.on_ws_frame(&mut conn, &b),
                Ok(Some(Ok(Message::Close(f)))) => {
                    end = End::Closed {
                        code: f.as_ref().map_or(1005, |f| u16::from(f.code)),
                        reason: f.map(|f| f.reason.to_string()).unwrap_or_default(),
                    };
                    break;
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => {
                    end = End::Lost(ws_reason(&e));
                    break;
                }
                Ok(None) => {
                    end = End::Lost("connection closed".into());
                    break;
                }
                Err(_) => break,
            }
        }
    }
    if end == End::Stopped {
        // Best effort: tell the gateway this is a normal close.
        let _ = tokio::time::timeout(Duration::from_millis(200), ws.close(None)).await;
    }
    l.finish(conn, end);
}

/// Opens a gRPC channel from `source` to `target`.
///
/// # Errors
/// The transport error, as text.
pub async fn grpc_channel(
    target: SocketAddr,
    source: Ipv4Addr,
    timeout: Duration,
) -> Result<tonic::transport::Channel, String> {
    let ep = tonic::transport::Endpoint::from_shared(format!("http://{target}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(timeout)
        .tcp_nodelay(true)
        .local_address(Some(IpAddr::V4(source)));
    ep.connect().await.map_err(|e| {
        // tonic's Display is "transport error"; the cause says why.
        let mut s = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(c) = src {
            s = c.to_string();
            src = c.source();
        }
        s
    })
}

fn code_name(s: &tonic::Status) -> String {
    format!("{:?}", s.code())
}

async fn stream_client(l: Rc<Local>, spec: ConnSpec) {
    let sh = l.shared.clone();
    let t0 = Instant::now();
    let open = async {
        let ch = grpc_channel(sh.grpc_target, spec.source, sh.connect_timeout).await?;
        let mut client = QuoteServiceClient::new(ch).max_decoding_message_size(64 << 20);
        client
            .stream_quotes(v1::StreamQuotesRequest { symbols: spec.symbols.clone() })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| format!("grpc {}", code_name(&s)))
    };
    let mut stream = match tokio::time::timeout(sh.connect_timeout, open).await {
        Ok(Ok(s)) => s,
        Ok(Err(reason)) => return l.fail(reason),
        Err(_) => return l.fail("timed out".into()),
    };
    l.connected(t0);
    let mut conn = l.start_conn(&spec);
    let end = loop {
        let msg = tokio::select! {
            biased;
            _ = sh.stop.cancelled() => break End::Stopped,
            m = stream.message() => m,
        };
        match msg {
            Ok(Some(r)) => {
                let now = now_ns();
                let len = r.encoded_len();
                match r.body {
                    Some(stream_quotes_response::Body::Updates(b)) => l.on_batch(&mut conn, &b, now, len),
                    Some(stream_quotes_response::Body::Status(s)) => l.on_status(&mut conn, &s, len),
                    // Which symbols the stream carries: the rest get no data.
                    Some(stream_quotes_response::Body::Ack(a)) => conn.reject(a.rejected),
                    Some(stream_quotes_response::Body::Trading(_)) => l.count_frame(len),
                    None => {}
                }
                l.track_drain(&mut conn);
            }
            Ok(None) => break End::StreamEnded,
            Err(s) => break End::Grpc(code_name(&s)),
        }
        if slow_pause(&l, &conn).await {
            break End::Stopped;
        }
    };
    l.finish(conn, end);
}

async fn snapshot_caller(l: Rc<Local>, mut spec: CallerSpec) {
    let sh = l.shared.clone();
    let t0 = Instant::now();
    let ch = match tokio::time::timeout(
        sh.connect_timeout,
        grpc_channel(sh.grpc_target, spec.source, sh.connect_timeout),
    )
    .await
    {
        Ok(Ok(ch)) => ch,
        Ok(Err(reason)) => return l.fail(reason),
        Err(_) => return l.fail("timed out".into()),
    };
    l.connected(t0);
    let mut client = QuoteServiceClient::new(ch).max_decoding_message_size(64 << 20);
    // Highest seq this caller has seen per symbol: a later call must not
    // return an older state.
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut pace = spec.interval.map(|i| {
        let mut t = tokio::time::interval(i);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    loop {
        if let Some(p) = &mut pace {
            tokio::select! {
                _ = p.tick() => {}
                _ = sh.stop.cancelled() => break,
            }
        }
        if sh.stop.is_cancelled() {
            break;
        }
        let symbols = spec.picker.pick(spec.per_call);
        let started = Instant::now();
        let r = tokio::select! {
            r = client.get_snapshot(v1::GetSnapshotRequest { symbols: symbols.clone(), ..Default::default() }) => r,
            _ = sh.stop.cancelled() => break,
        };
        let took = started.elapsed().as_nanos() as i64;
        let unavailable = matches!(&r, Err(s) if s.code() == tonic::Code::Unavailable);
        l.snapshot_result(&spec, &symbols, &mut seen, r, took);
        if unavailable {
            // Do not spin on a dead server.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    l.counters().open.fetch_sub(1, Ordering::Relaxed);
}

impl Local {
    /// Checks and records one GetSnapshot result.
    fn snapshot_result(
        &self,
        spec: &CallerSpec,
        symbols: &[String],
        seen: &mut HashMap<String, u64>,
        r: Result<tonic::Response<v1::GetSnapshotResponse>, tonic::Status>,
        took: i64,
    ) {
        let l = self;
        let measuring = l.shared.measuring.load(Ordering::Relaxed);
        let mut st = l.snapshot.borrow_mut();
        match r {
            Ok(resp) => {
                let resp = resp.into_inner();
                l.counters().calls.fetch_add(1, Ordering::Relaxed);
                for q in &resp.quotes {
                    if !symbols.contains(&q.symbol) {
                        st.violation_count += 1;
                        if st.violations.len() < 20 {
                            st.violations.push(format!(
                                "caller {}: quote for {} which was not asked for",
                                spec.id, q.symbol
                            ));
                        }
                        continue;
                    }
                    let prev = seen.entry(q.symbol.clone()).or_insert(q.seq);
                    if q.seq < *prev {
                        st.violation_count += 1;
                        if st.violations.len() < 20 {
                            st.violations.push(format!(
                                "caller {}: {} seq went back from {} to {} between calls",
                                spec.id, q.symbol, prev, q.seq
                            ));
                        }
                    }
                    *prev = (*prev).max(q.seq);
                }
                if measuring {
                    st.calls += 1;
                    st.quotes += resp.quotes.len() as u64;
                    st.rejected += resp.rejected.len() as u64;
                    stats::record(&mut l.calls.borrow_mut(), took);
                }
            }
            Err(s) => {
                *st.errors.entry(code_name(&s)).or_default() += 1;
            }
        }
    }
}
