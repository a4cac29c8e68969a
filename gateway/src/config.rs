//! Gateway configuration: every setting is a flag with an env var and a
//! default, shown in `--help`, and validated before anything binds.

use clap::{Args, Parser};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// quotecast gateway: joins a UDP multicast market feed, keeps a lock-free
/// quote book and streams per-symbol updates to WebSocket and gRPC clients.
#[derive(Debug, Clone, Parser)]
#[command(name = "gateway", version, about, long_about = None)]
pub struct Config {
    /// Feed (UDP multicast) settings.
    #[command(flatten)]
    pub feed: FeedConfig,
    /// The feed over NATS instead of multicast.
    #[command(flatten)]
    pub feed_nats: FeedNatsConfig,
    /// WebSocket server settings.
    #[command(flatten)]
    pub ws: WsConfig,
    /// gRPC limits.
    #[command(flatten)]
    pub grpc: crate::grpc::GrpcConfig,
    /// Side services.
    #[command(flatten)]
    pub serve: ServeConfig,
    /// Authentication, entitlements, origins.
    #[command(flatten)]
    pub auth: crate::auth::AuthConfig,
    /// TLS for the client ports.
    #[command(flatten)]
    pub tls: crate::tls::TlsConfig,
}

/// Where the feed comes from and how it is checked.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Feed")]
pub struct FeedConfig {
    /// Multicast group of the feed.
    #[arg(long = "group", env = "QUOTECAST_GROUP", default_value = "239.255.0.1")]
    pub group: Ipv4Addr,
    /// UDP port of the feed.
    #[arg(long = "feed-port", env = "QUOTECAST_FEED_PORT", default_value_t = 31001)]
    pub port: u16,
    /// Local interface address to join the group on.
    #[arg(long = "interface", env = "QUOTECAST_INTERFACE", default_value = "127.0.0.1")]
    pub interface: Ipv4Addr,
    /// Multicast group of line B, the second copy of the feed (A/B
    /// arbitration: the first copy of each sequence is applied, a loss on
    /// one line that the other covers is no gap). Default: no line B.
    #[arg(long = "group-b", env = "QUOTECAST_GROUP_B")]
    pub group_b: Option<Ipv4Addr>,
    /// UDP port of line B (default: --feed-port). Needs --group-b.
    #[arg(long = "feed-port-b", env = "QUOTECAST_FEED_PORT_B")]
    pub port_b: Option<u16>,
    /// Local interface address to join line B on (default: --interface).
    /// Needs --group-b.
    #[arg(long = "interface-b", env = "QUOTECAST_INTERFACE_B")]
    pub interface_b: Option<Ipv4Addr>,
    /// Socket receive buffer to request (bytes). Above net.core.rmem_max the
    /// gateway tries SO_RCVBUFFORCE (needs CAP_NET_ADMIN).
    #[arg(long, env = "QUOTECAST_RECV_BUFFER_BYTES", default_value_t = 16 << 20)]
    pub recv_buffer_bytes: usize,
    /// Mark every symbol stale when no trusted packet (not even a
    /// heartbeat) came for this long (ms).
    #[arg(long, env = "QUOTECAST_FEED_TIMEOUT_MS", default_value_t = 3000)]
    pub feed_timeout_ms: u64,
    /// Out-of-order packets held while waiting for a missing one (0 = a hole
    /// is a gap at once).
    #[arg(long, env = "QUOTECAST_REORDER_WINDOW", default_value_t = 32)]
    pub reorder_window: usize,
    /// Longest wait for a missing packet before it is declared lost (µs).
    #[arg(long, env = "QUOTECAST_REORDER_HOLD_US", default_value_t = 2000)]
    pub reorder_hold_us: u64,
    /// Most symbols the book holds.
    #[arg(long, env = "QUOTECAST_MAX_SYMBOLS", default_value_t = 16384)]
    pub max_symbols: usize,
    /// Recent updates kept per symbol so a client can resume from a
    /// sequence (Subscribe.from_seq) without a fresh snapshot.
    #[arg(long, env = "QUOTECAST_REPLAY_DEPTH", default_value_t = 256)]
    pub replay_depth: usize,
    /// Memory ceiling of all replay rings together (bytes). Uncapped they
    /// would hold --replay-depth x active symbols x ~130 B (0.5 GiB at the
    /// defaults with 16,384 active symbols); the default 128 MiB keeps 256
    /// updates for each of ~4,000 active symbols. At the ceiling a symbol
    /// recycles its own oldest entries instead of growing, and a resume too
    /// old for what is kept gets a fresh snapshot.
    #[arg(long, env = "QUOTECAST_REPLAY_MAX_BYTES", default_value_t = 128 << 20)]
    pub replay_max_bytes: usize,
    /// A client that resumes from a seq this node has not reached yet
    /// (it comes from another node a few packets ahead) waits this long
    /// for this node to get there, then the stream continues after it;
    /// only past this (or when this node's chain skips it) does it get a
    /// snapshot flagged resume_failed (ms; 0 = at once).
    #[arg(long, env = "QUOTECAST_RESUME_AHEAD_WAIT_MS", default_value_t = 1000)]
    pub resume_ahead_wait_ms: u64,
    /// Consecutive in-order packets another session (a restarted sender),
    /// or a sequence beyond --max-seq-jump, must show before it is
    /// followed. A single stray datagram never is.
    #[arg(long = "feed-confirm-packets", env = "QUOTECAST_FEED_CONFIRM_PACKETS", default_value_t = 3)]
    pub confirm_packets: u32,
    /// A proven new session (or confirmed sequence jump) takes over only
    /// after the followed one sent end of session or was silent this long
    /// (ms); keep it above the sender's heartbeat interval.
    #[arg(
        long = "feed-takeover-silence-ms",
        env = "QUOTECAST_FEED_TAKEOVER_SILENCE_MS",
        default_value_t = 2000
    )]
    pub takeover_silence_ms: u64,
    /// Largest distance (messages) from the expected sequence believed at
    /// once; a farther packet is suspect until confirmed (see
    /// --feed-confirm-packets).
    #[arg(long, env = "QUOTECAST_MAX_SEQ_JUMP", default_value_t = 100_000)]
    pub max_seq_jump: u64,
    /// Multicast group of the feed's snapshot channel (the full state of
    /// every symbol in a loop): a late start builds its book from it, and
    /// a symbol that provably lost an update in a gap nobody could fill is
    /// recovered from it within one cycle. Default: no snapshot channel.
    #[arg(long = "snapshot-group", env = "QUOTECAST_SNAPSHOT_GROUP")]
    pub snapshot_group: Option<Ipv4Addr>,
    /// UDP port of the snapshot channel. Needs --snapshot-group.
    #[arg(long = "snapshot-port", env = "QUOTECAST_SNAPSHOT_PORT")]
    pub snapshot_port: Option<u16>,
    /// Local interface address to join the snapshot channel on (default:
    /// --interface). Needs --snapshot-group.
    #[arg(long = "snapshot-interface", env = "QUOTECAST_SNAPSHOT_INTERFACE")]
    pub snapshot_interface: Option<Ipv4Addr>,
    /// Retransmission server to ask for what both lines lost (MoldUDP64
    /// re-request over unicast UDP, e.g. 127.0.0.1:31010). A hole waits
    /// for the answer instead of becoming a gap. Default: no gap fill.
    #[arg(long = "retrans-addr", env = "QUOTECAST_RETRANS_ADDR")]
    pub retrans_addr: Option<SocketAddr>,
    /// Wait for a retransmission answer before asking once more, then
    /// giving the hole up as a gap (ms).
    #[arg(long = "retrans-timeout-ms", env = "QUOTECAST_RETRANS_TIMEOUT_MS", default_value_t = 100)]
    pub retrans_timeout_ms: u64,
    /// Retransmission requests in flight at once.
    #[arg(long = "retrans-max-outstanding", env = "QUOTECAST_RETRANS_MAX_OUTSTANDING", default_value_t = 8)]
    pub retrans_max_outstanding: usize,
    /// Retransmission requests sent per second at most (keep it at or under
    /// the server's per-requester limit, 100 in feed-sim); holes beyond it
    /// are gaps.
    #[arg(
        long = "retrans-max-requests-per-sec",
        env = "QUOTECAST_RETRANS_MAX_REQUESTS_PER_SEC",
        default_value_t = 100
    )]
    pub retrans_max_per_sec: u32,
    /// Messages asked for per request (the server answers at most its own
    /// --retrans-max-messages, 2,000 in feed-sim; a longer hole takes
    /// several requests).
    #[arg(long = "retrans-max-messages", env = "QUOTECAST_RETRANS_MAX_MESSAGES", default_value_t = 2000,
          value_parser = clap::value_parser!(u16).range(1..=0xFFFE))]
    pub retrans_max_messages: u16,
    /// Packets held behind a hole while its retransmission is on the way
    /// (at 1,400 B each the default is ~22 MiB); more make it a gap.
    #[arg(
        long = "retrans-max-held-packets",
        env = "QUOTECAST_RETRANS_MAX_HELD_PACKETS",
        default_value_t = 16384
    )]
    pub retrans_max_held: usize,
    /// Accept feed datagrams only from these IPv4 source addresses
    /// (comma-separated, e.g. 10.0.0.5,10.0.0.6); default: any source.
    /// Others are counted as suspect and dropped unread.
    #[arg(long = "feed-source", env = "QUOTECAST_FEED_SOURCE", value_delimiter = ',')]
    pub sources: Vec<Ipv4Addr>,
}

/// The feed over NATS (`--feed-nats`), published by `feed-relay` where the
/// network carries no multicast: the same datagrams, so the same
/// sequencing, arbitration and recovery (README, "Where there is no
/// multicast: the NATS relay"). With it, the multicast flags of line B,
/// the snapshot channel and gap fill are replaced by the switches below,
/// and `--group`/`--feed-port` are not joined.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Feed over NATS")]
pub struct FeedNatsConfig {
    /// Take the feed from this NATS server (e.g. nats://127.0.0.1:4222)
    /// instead of multicast: line A from `<prefix>.a`. Default: multicast.
    #[arg(long = "feed-nats", env = "QUOTECAST_FEED_NATS", value_name = "URL")]
    pub url: Option<async_nats::ServerAddr>,
    /// Subject prefix the relay publishes under (feed-relay --subject-prefix).
    #[arg(
        long = "feed-nats-subject-prefix",
        env = "QUOTECAST_FEED_NATS_SUBJECT_PREFIX",
        default_value = "quotecast.feed"
    )]
    pub subject_prefix: String,
    /// Also take line B from `<prefix>.b` (A/B arbitration as on multicast;
    /// the relay needs --line-b-group). Needs --feed-nats.
    #[arg(long = "feed-nats-line-b", env = "QUOTECAST_FEED_NATS_LINE_B")]
    pub line_b: bool,
    /// Take the snapshot channel from `<prefix>.snapshot` (late start and
    /// recovery of symbols after an unfilled gap; the relay needs
    /// --snapshot-group). Needs --feed-nats.
    #[arg(long = "feed-nats-snapshot", env = "QUOTECAST_FEED_NATS_SNAPSHOT")]
    pub snapshot: bool,
    /// Ask for lost packets through the relay: MoldUDP64 re-requests as
    /// NATS requests on `<prefix>.retrans`, answers to this gateway's inbox
    /// (the relay needs --retrans-addr). The --retrans-* limits apply as
    /// with --retrans-addr. Needs --feed-nats.
    #[arg(long = "feed-nats-retrans", env = "QUOTECAST_FEED_NATS_RETRANS")]
    pub retrans: bool,
    /// Messages buffered per subscription between the NATS connection and
    /// the bridge; beyond it messages are dropped (counted as slow
    /// consumer) and become a sequence hole.
    #[arg(
        long = "feed-nats-queue-messages",
        env = "QUOTECAST_FEED_NATS_QUEUE_MESSAGES",
        default_value_t = 8192
    )]
    pub queue_messages: usize,
}

impl FeedNatsConfig {
    /// True with `--feed-nats`.
    pub fn enabled(&self) -> bool {
        self.url.is_some()
    }

    fn validate(&self, feed: &FeedConfig) -> Result<(), ConfigError> {
        let conflict = |m: String| Err(ConfigError::Conflict(m));
        if !self.enabled() {
            for (on, flag) in [
                (self.line_b, "--feed-nats-line-b"),
                (self.snapshot, "--feed-nats-snapshot"),
                (self.retrans, "--feed-nats-retrans"),
            ] {
                if on {
                    return conflict(format!("{flag} needs --feed-nats"));
                }
            }
            return Ok(());
        }
        if !valid_subject_prefix(&self.subject_prefix) {
            return conflict(format!(
                "--feed-nats-subject-prefix {:?} is not a NATS subject (dot-separated tokens, no spaces or wildcards)",
                self.subject_prefix
            ));
        }
        for (set, flag, instead) in [
            (feed.group_b.is_some(), "--group-b", "--feed-nats-line-b"),
            (feed.snapshot_group.is_some(), "--snapshot-group", "--feed-nats-snapshot"),
            (feed.retrans_addr.is_some(), "--retrans-addr", "--feed-nats-retrans"),
        ] {
            if set {
                return conflict(format!("{flag} is multicast/UDP; with --feed-nats use {instead}"));
            }
        }
        if !feed.sources.is_empty() {
            return conflict(
                "--feed-source filters multicast senders; with --feed-nats datagrams come from the local bridge (restrict publishers on the NATS server instead)"
                    .into(),
            );
        }
        if self.line_b && feed.reorder_window == 0 {
            return conflict(
                "--feed-nats-line-b needs --reorder-window above 0: a loss on one line waits there for the other line's copy"
                    .into(),
            );
        }
        if self.queue_messages == 0 {
            return Err(ConfigError::Zero("--feed-nats-queue-messages"));
        }
        Ok(())
    }
}

/// A NATS subject without wildcards: dot-separated non-empty tokens of
/// printable characters other than `*` and `>`.
pub fn valid_subject_prefix(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_graphic() && c != '*' && c != '>'))
}

/// WebSocket listener, per-connection limits and timeouts.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "WebSocket")]
pub struct WsConfig {
    /// Address for WebSocket and plain HTTP health (/healthz, /readyz).
    #[arg(long = "ws-addr", env = "QUOTECAST_WS_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Threads serving connections, each a single-threaded runtime
    /// (0 = one per core).
    #[arg(long = "ws-threads", env = "QUOTECAST_WS_THREADS", default_value_t = 0)]
    pub threads: usize,
    /// How much lower than the feed's (ingest) thread the connection
    /// threads run (nice increment, 0..=19; 0 = the same). Client load must
    /// never cost feed data: when clients keep every core busy, the
    /// scheduler still gives ingest the CPU it needs (at 1000 connections x
    /// 10 symbols and 300k ticks/s on one core, 1.2% of the feed was lost
    /// at 0, none at 10), and the clients are conflated instead. Raising a
    /// thread's nice value needs no privilege.
    #[arg(long = "ws-threads-nice", env = "QUOTECAST_WS_THREADS_NICE", default_value_t = 10,
          value_parser = clap::value_parser!(i32).range(0..=19))]
    pub threads_nice: i32,
    /// Most concurrent connections (a slot is taken at upgrade); more are
    /// closed with 1013 and a retry hint.
    #[arg(long, env = "QUOTECAST_MAX_CONNECTIONS", default_value_t = 16384)]
    pub max_connections: usize,
    /// Most TCP connections still in their HTTP handshake, bounded apart
    /// from --max-connections so that sockets that never finish cannot keep
    /// real clients out; more get HTTP 503 with Retry-After.
    #[arg(long, env = "QUOTECAST_MAX_PENDING_HANDSHAKES", default_value_t = 1024)]
    pub max_pending_handshakes: usize,
    /// Most handshakes in progress from one source address; more get HTTP
    /// 503 with Retry-After.
    #[arg(long, env = "QUOTECAST_MAX_PENDING_HANDSHAKES_PER_IP", default_value_t = 64)]
    pub max_pending_handshakes_per_ip: usize,
    /// Most connections (handshaking or open) from one source address
    /// (an IPv4 address, an IPv6 /64); more get HTTP 429 with Retry-After
    /// (0 = no limit: many clients may share one address behind NAT).
    #[arg(long, env = "QUOTECAST_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    pub max_connections_per_ip: usize,
    /// New connections per second from one source address; more get HTTP
    /// 429 with Retry-After (0 = no limit).
    #[arg(long, env = "QUOTECAST_MAX_HANDSHAKES_PER_SEC_PER_IP", default_value_t = 0)]
    pub max_handshakes_per_sec_per_ip: u32,
    /// Balancers in front of the WebSocket and gRPC ports (addresses or
    /// CIDRs, comma-separated) whose connections start with a PROXY
    /// protocol header (v1 or v2, HAProxy's `send-proxy`/`send-proxy-v2`):
    /// the client address it names is the one per-address limits and logs
    /// use. A WebSocket connection from one of them without the header gets
    /// 400 (a gRPC one is closed). Default: none (headers are not read).
    #[arg(long, env = "QUOTECAST_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,
    /// Most symbols one connection may subscribe to.
    #[arg(long, env = "QUOTECAST_MAX_SYMBOLS_PER_CONNECTION", default_value_t = 1024)]
    pub max_symbols_per_connection: usize,
    /// Requests per second one connection may send (burst: twice as many).
    #[arg(long, env = "QUOTECAST_MAX_REQUESTS_PER_SEC", default_value_t = 20)]
    pub max_requests_per_sec: u32,
    /// Updates queued per connection before it is conflated (latest value
    /// per symbol, with a skip count).
    #[arg(long, env = "QUOTECAST_QUEUE_CAPACITY", default_value_t = 1024)]
    pub queue_capacity: usize,
    /// Events (updates, status changes) queued per WebSocket worker thread
    /// for fan-out before that worker's fan-out conflates them per symbol
    /// (latest value, with a skip count): the ingest thread hands updates
    /// over and never waits for the workers, however many clients there are.
    #[arg(long, env = "QUOTECAST_FANOUT_QUEUE_CAPACITY", default_value_t = 16384)]
    pub fanout_queue_capacity: usize,
    /// A connection that stays behind (conflating, or unable to take a frame)
    /// this long is closed with code 4008 (ms).
    #[arg(long, env = "QUOTECAST_SLOW_CLIENT_TIMEOUT_MS", default_value_t = 5000)]
    pub slow_client_timeout_ms: u64,
    /// Least time between two frames to a client that is behind
    /// (conflating, or whose socket made the writer wait), so that each
    /// frame carries everything pending instead of many tiny ones (ms).
    #[arg(long, env = "QUOTECAST_SLOW_CLIENT_PACE_MS", default_value_t = 100)]
    pub slow_client_pace_ms: u64,
    /// Interval of server pings (ms).
    #[arg(long, env = "QUOTECAST_PING_INTERVAL_MS", default_value_t = 15000)]
    pub ping_interval_ms: u64,
    /// A connection that sends nothing (not even a pong) this long is closed
    /// with code 4012 (ms).
    #[arg(long, env = "QUOTECAST_IDLE_TIMEOUT_MS", default_value_t = 45000)]
    pub idle_timeout_ms: u64,
    /// Largest client message; larger ones are closed with 1009 (bytes).
    #[arg(long, env = "QUOTECAST_MAX_REQUEST_BYTES", default_value_t = 16384)]
    pub max_request_bytes: usize,
    /// Largest update batch frame the server sends (bytes).
    #[arg(long, env = "QUOTECAST_MAX_BATCH_BYTES", default_value_t = 65536)]
    pub max_batch_bytes: usize,
    /// tungstenite read buffer per connection (bytes), allocated for every
    /// connection and kept while it is idle: small keeps idle connections
    /// cheap. Client requests are small; a larger one (up to
    /// --max-request-bytes) grows the buffer for that message only.
    #[arg(long = "ws-read-buffer-bytes", env = "QUOTECAST_WS_READ_BUFFER_BYTES", default_value_t = 256)]
    pub read_buffer_bytes: usize,
    /// Cap of unsent bytes buffered per connection by the WebSocket layer;
    /// at least twice --max-batch-bytes.
    #[arg(long = "ws-max-write-buffer-bytes", env = "QUOTECAST_WS_MAX_WRITE_BUFFER_BYTES", default_value_t = 1 << 20)]
    pub max_write_buffer_bytes: usize,
    /// Kernel send buffer per connection (SO_SNDBUF, bytes; 0 = kernel
    /// autotuning). Smaller bounds kernel memory per slow client and
    /// detects it sooner, and a closing slow client reads its close frame
    /// sooner; larger absorbs bursts to distant clients.
    #[arg(long = "ws-send-buffer-bytes", env = "QUOTECAST_WS_SEND_BUFFER_BYTES", default_value_t = 256 * 1024)]
    pub send_buffer_bytes: usize,
    /// Unsent bytes the kernel may hold per connection before the socket
    /// stops taking writes (TCP_NOTSENT_LOWAT; 0 = no limit). Keeps a slow
    /// client's backlog in the gateway, where it is conflated, instead of
    /// in the kernel, where it is stale and delays a close frame.
    #[arg(
        long = "ws-notsent-lowat-bytes",
        env = "QUOTECAST_WS_NOTSENT_LOWAT_BYTES",
        default_value_t = 16384
    )]
    pub notsent_lowat_bytes: u32,
    /// Time a client has to finish the WebSocket handshake (ms).
    #[arg(long, env = "QUOTECAST_HANDSHAKE_TIMEOUT_MS", default_value_t = 10000)]
    pub handshake_timeout_ms: u64,
    /// Longest time a closing connection is kept to deliver its Close frame
    /// and read the client's reply before the socket is dropped (ms). A
    /// client that answers ends it at once; a slow one reads its Close
    /// frame only after the frames its own buffers already hold, which can
    /// take many seconds. A lingering socket holds its connection slot but
    /// no queue or subscription.
    #[arg(long, env = "QUOTECAST_CLOSE_LINGER_MS", default_value_t = 30000)]
    pub close_linger_ms: u64,
}

/// Side services and lifecycle.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Service")]
pub struct ServeConfig {
    /// gRPC listen address (snapshots and streams).
    #[arg(long = "grpc-addr", env = "QUOTECAST_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
    /// Prometheus /metrics listen address.
    #[arg(long = "metrics-addr", env = "QUOTECAST_METRICS_ADDR", default_value = "127.0.0.1:8084")]
    pub metrics_addr: SocketAddr,
    /// Time given to clients to close after SIGINT/SIGTERM (ms).
    #[arg(long, env = "QUOTECAST_SHUTDOWN_GRACE_MS", default_value_t = 5000)]
    pub shutdown_grace_ms: u64,
    /// On SIGTERM/SIGINT, answer not ready (/readyz 503, gRPC health
    /// NOT_SERVING) this long before closing anyone, so a load balancer
    /// stops sending new clients first; keep it above the balancer's check
    /// interval x fall count (ms; 0 = close at once). A second signal skips
    /// the drain.
    #[arg(long, env = "QUOTECAST_DRAIN_DELAY_MS", default_value_t = 2000)]
    pub drain_delay_ms: u64,
    /// After --drain-delay-ms, close the clients (WebSocket 1012 Service
    /// Restart with a reconnect hint, StreamQuotes UNAVAILABLE) spread over
    /// this long, so they do not all reconnect to the other nodes at once
    /// (ms; 0 = all at once). --shutdown-grace-ms follows it.
    #[arg(long, env = "QUOTECAST_DRAIN_SPREAD_MS", default_value_t = 2000)]
    pub drain_spread_ms: u64,
    /// This node's name in a fleet: sent as the `X-Quotecast-Node` header
    /// of every WebSocket upgrade and health answer, and as the `node`
    /// label of `quotecast_node_info`. Letters, digits, `.`, `_`, `-`; at
    /// most 64. Default: the host name.
    #[arg(long = "node-name", env = "QUOTECAST_NODE_NAME")]
    pub node_name: Option<String>,
    /// Log filter (tracing EnvFilter syntax), e.g. "info,gateway=debug".
    #[arg(long, env = "QUOTECAST_LOG", default_value = "info")]
    pub log: String,
}

/// A setting that parses but makes no sense.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The feed group is not an IPv4 multicast address.
    #[error("--group {0} is not a multicast address (224.0.0.0/4)")]
    NotMulticast(Ipv4Addr),
    /// A limit that must be positive is zero.
    #[error("{0} must be greater than 0")]
    Zero(&'static str),
    /// Two settings contradict each other.
    #[error("{0}")]
    Conflict(String),
}

/// A multicast group to join (line B, the snapshot channel), resolved
/// from the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupJoin {
    /// Multicast group.
    pub group: Ipv4Addr,
    /// UDP port.
    pub port: u16,
    /// Interface joined on.
    pub interface: Ipv4Addr,
}

impl FeedConfig {
    /// Line B, when `--group-b` is set (port and interface default to
    /// line A's).
    pub fn line_b(&self) -> Option<GroupJoin> {
        self.group_b.map(|group| GroupJoin {
            group,
            port: self.port_b.unwrap_or(self.port),
            interface: self.interface_b.unwrap_or(self.interface),
        })
    }

    /// The snapshot channel, if configured.
    pub fn snapshot_channel(&self) -> Option<GroupJoin> {
        let (group, port) = (self.snapshot_group?, self.snapshot_port?);
        Some(GroupJoin { group, port, interface: self.snapshot_interface.unwrap_or(self.interface) })
    }

    fn validate_snapshot(&self) -> Result<(), ConfigError> {
        match (self.snapshot_group, self.snapshot_port) {
            (None, None) if self.snapshot_interface.is_some() => {
                Err(ConfigError::Conflict("--snapshot-interface needs --snapshot-group".into()))
            }
            (None, None) => Ok(()),
            (Some(_), None) => Err(ConfigError::Conflict("--snapshot-group needs --snapshot-port".into())),
            (None, Some(_)) => Err(ConfigError::Conflict("--snapshot-port needs --snapshot-group".into())),
            (Some(g), Some(_)) if !g.is_multicast() => Err(ConfigError::Conflict(format!(
                "--snapshot-group {g} is not a multicast address (224.0.0.0/4)"
            ))),
            (Some(g), Some(p)) if g == self.group && p == self.port => Err(ConfigError::Conflict(
                "--snapshot-group/--snapshot-port must differ from --group/--feed-port".into(),
            )),
            _ => Ok(()),
        }
    }

    fn validate_line_b(&self) -> Result<(), ConfigError> {
        let Some(b) = self.line_b() else {
            if self.port_b.is_some() || self.interface_b.is_some() {
                let flag = if self.port_b.is_some() { "--feed-port-b" } else { "--interface-b" };
                return Err(ConfigError::Conflict(format!("{flag} needs --group-b (line B is off)")));
            }
            return Ok(());
        };
        if !b.group.is_multicast() {
            return Err(ConfigError::Conflict(format!(
                "--group-b {} is not a multicast address (224.0.0.0/4)",
                b.group
            )));
        }
        if b.group == self.group && b.port == self.port {
            return Err(ConfigError::Conflict(format!(
                "--group-b {}:{} is line A's --group and --feed-port: line B needs its own group or --feed-port-b",
                b.group, b.port
            )));
        }
        if self.reorder_window == 0 {
            return Err(ConfigError::Conflict(
                "--group-b needs --reorder-window above 0: a loss on one line waits there for the other line's copy"
                    .into(),
            ));
        }
        Ok(())
    }
}

impl Config {
    /// Checks what clap cannot.
    ///
    /// # Errors
    /// The first [`ConfigError`] found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.feed.group.is_multicast() {
            return Err(ConfigError::NotMulticast(self.feed.group));
        }
        let positive = [
            ("--max-symbols", self.feed.max_symbols),
            ("--max-connections", self.ws.max_connections),
            ("--max-symbols-per-connection", self.ws.max_symbols_per_connection),
            ("--max-requests-per-sec", self.ws.max_requests_per_sec as usize),
            ("--queue-capacity", self.ws.queue_capacity),
            ("--fanout-queue-capacity", self.ws.fanout_queue_capacity),
            ("--max-request-bytes", self.ws.max_request_bytes),
            ("--ws-read-buffer-bytes", self.ws.read_buffer_bytes),
            ("--ping-interval-ms", self.ws.ping_interval_ms as usize),
            ("--slow-client-timeout-ms", self.ws.slow_client_timeout_ms as usize),
            ("--handshake-timeout-ms", self.ws.handshake_timeout_ms as usize),
            ("--close-linger-ms", self.ws.close_linger_ms as usize),
            ("--max-pending-handshakes", self.ws.max_pending_handshakes),
            ("--max-pending-handshakes-per-ip", self.ws.max_pending_handshakes_per_ip),
            ("--ws-max-write-buffer-bytes", self.ws.max_write_buffer_bytes),
            ("--max-batch-bytes", self.ws.max_batch_bytes),
            ("--feed-timeout-ms", self.feed.feed_timeout_ms as usize),
            ("--reorder-hold-us", self.feed.reorder_hold_us as usize),
            ("--recv-buffer-bytes", self.feed.recv_buffer_bytes),
            ("--shutdown-grace-ms", self.serve.shutdown_grace_ms as usize),
            ("--feed-confirm-packets", self.feed.confirm_packets as usize),
            ("--feed-takeover-silence-ms", self.feed.takeover_silence_ms as usize),
            ("--max-seq-jump", self.feed.max_seq_jump as usize),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Zero(name));
        }
        if let Some(n) = &self.serve.node_name {
            if n.is_empty() || n.len() > 64 || !n.chars().all(node_char) {
                return Err(ConfigError::Conflict(format!(
                    "--node-name {n:?}: use 1 to 64 letters, digits, '.', '_' or '-'"
                )));
            }
        }
        if self.feed.max_symbols > 65_535 {
            return Err(ConfigError::Conflict(format!(
                "--max-symbols {} exceeds the feed's 65535 locate codes",
                self.feed.max_symbols
            )));
        }
        if self.ws.max_pending_handshakes_per_ip > self.ws.max_pending_handshakes {
            return Err(ConfigError::Conflict(format!(
                "--max-pending-handshakes-per-ip ({}) exceeds --max-pending-handshakes ({})",
                self.ws.max_pending_handshakes_per_ip, self.ws.max_pending_handshakes
            )));
        }
        if self.ws.max_request_bytes > 16 << 20 {
            return Err(ConfigError::Conflict(format!(
                "--max-request-bytes {} is over 16 MiB; a subscribe needs a few KiB",
                self.ws.max_request_bytes
            )));
        }
        if self.feed.confirm_packets > 1000 {
            return Err(ConfigError::Conflict(format!(
                "--feed-confirm-packets {} is above 1000: a restarted sender would wait that many packets",
                self.feed.confirm_packets
            )));
        }
        if self.feed.replay_depth > 0 && self.feed.replay_max_bytes < crate::hub::REPLAY_ENTRY_BYTES {
            return Err(ConfigError::Conflict(format!(
                "--replay-max-bytes {} holds no update ({} B each); set --replay-depth 0 to turn resumes from the ring off",
                self.feed.replay_max_bytes,
                crate::hub::REPLAY_ENTRY_BYTES
            )));
        }
        if self.ws.max_batch_bytes < 1024 {
            return Err(ConfigError::Conflict("--max-batch-bytes must be at least 1024".into()));
        }
        if self.ws.idle_timeout_ms <= self.ws.ping_interval_ms {
            return Err(ConfigError::Conflict(format!(
                "--idle-timeout-ms ({}) must exceed --ping-interval-ms ({}) or every client times out",
                self.ws.idle_timeout_ms, self.ws.ping_interval_ms
            )));
        }
        self.feed.validate_line_b()?;
        self.feed.validate_snapshot()?;
        self.feed_nats.validate(&self.feed)?;
        self.grpc.validate().map_err(|e| ConfigError::Conflict(e.to_string()))?;
        self.check_exposure()?;
        crate::proxy::Trusted::parse(&self.ws.trusted_proxies).map_err(ConfigError::Conflict)?;
        if self.ws.max_write_buffer_bytes < 2 * self.ws.max_batch_bytes {
            return Err(ConfigError::Conflict(format!(
                "--ws-max-write-buffer-bytes ({}) must be at least twice --max-batch-bytes ({})",
                self.ws.max_write_buffer_bytes, self.ws.max_batch_bytes
            )));
        }
        Ok(())
    }

    /// Safe by default: client ports on a non-loopback address need TLS
    /// and authentication, or `--insecure` saying that anyone who can
    /// reach them may read every symbol (and see it in plain text).
    fn check_exposure(&self) -> Result<(), ConfigError> {
        if (self.auth.enabled() && self.tls.enabled()) || self.auth.insecure {
            return Ok(());
        }
        let exposed = [("--ws-addr", self.ws.addr), ("--grpc-addr", self.serve.grpc_addr)]
            .into_iter()
            .find(|(_, a)| !a.ip().is_loopback());
        if let Some((flag, addr)) = exposed {
            let missing = match (self.auth.enabled(), self.tls.enabled()) {
                (false, false) => "authentication and TLS",
                (false, true) => "authentication",
                _ => "TLS",
            };
            return Err(ConfigError::Conflict(format!(
                "{flag} {addr} is reachable from the network without {missing}: set --api-keys-file or \
                 --jwt-key-file, and --tls-cert-file with --tls-key-file; or --insecure to serve every \
                 symbol to anyone who can connect"
            )));
        }
        Ok(())
    }

    /// A configuration for tests: every listener on 127.0.0.1:0, the given
    /// feed group and port, short timeouts.
    pub fn for_tests(group: Ipv4Addr, port: u16) -> Self {
        let mut c = Config::parse_from(["gateway"]);
        c.feed.group = group;
        c.feed.port = port;
        c.ws.addr = "127.0.0.1:0".parse().expect("literal address");
        c.ws.threads = 2;
        c.serve.grpc_addr = "127.0.0.1:0".parse().expect("literal address");
        c.serve.metrics_addr = "127.0.0.1:0".parse().expect("literal address");
        c.serve.shutdown_grace_ms = 2000;
        c.serve.drain_delay_ms = 0;
        c.serve.drain_spread_ms = 0;
        c
    }
}

impl ServeConfig {
    /// `--node-name`, else the host name (else "gateway").
    pub fn node_name(&self) -> String {
        if let Some(n) = &self.node_name {
            return n.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().chars().filter(|c| node_char(*c)).take(64).collect::<String>())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "gateway".into())
    }
}

/// Characters allowed in a node name (a header value and a label value).
fn node_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

impl WsConfig {
    /// Slow-client timeout as a duration.
    pub fn slow_client_timeout(&self) -> Duration {
        Duration::from_millis(self.slow_client_timeout_ms)
    }
    /// Ping interval as a duration.
    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms)
    }
    /// Idle timeout as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
    /// Slow-client pacing interval as a duration.
    pub fn slow_client_pace(&self) -> Duration {
        Duration::from_millis(self.slow_client_pace_ms)
    }
    /// Close linger as a duration.
    pub fn close_linger(&self) -> Duration {
        Duration::from_millis(self.close_linger_ms)
    }
    /// Number of connection threads, resolving 0 to the core count.
    pub fn thread_count(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let c = Config::try_parse_from(std::iter::once("gateway").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn defaults_are_valid_and_loopback() {
        let c = parse(&[]).unwrap();
        assert!(c.ws.addr.ip().is_loopback());
        assert!(c.serve.grpc_addr.ip().is_loopback());
        assert!(c.serve.metrics_addr.ip().is_loopback());
        assert!(c.feed.interface.is_loopback());
        assert_eq!(
            (c.feed.confirm_packets, c.feed.takeover_silence_ms, c.feed.max_seq_jump),
            (3, 2000, 100_000)
        );
        assert!(c.feed.sources.is_empty(), "any source by default");
        assert_eq!(c.feed.line_b(), None, "line B off by default");
    }

    #[test]
    fn line_b_defaults_to_line_a_port_and_interface() {
        let c = parse(&["--group-b", "239.255.0.2"]).unwrap();
        let b = c.feed.line_b().unwrap();
        assert_eq!((b.group, b.port, b.interface), ("239.255.0.2".parse().unwrap(), 31001, c.feed.interface));
        let c = parse(&["--group-b", "239.255.0.1", "--feed-port-b", "31002", "--interface-b", "127.0.0.2"])
            .unwrap();
        let b = c.feed.line_b().unwrap();
        assert_eq!((b.port, b.interface), (31002, "127.0.0.2".parse().unwrap()));
    }

    #[test]
    fn feed_over_nats_parses() {
        let c = parse(&["--feed-nats", "nats://127.0.0.1:4222", "--feed-nats-line-b", "--feed-nats-retrans"])
            .unwrap();
        let n = &c.feed_nats;
        assert!(n.enabled() && n.line_b && n.retrans && !n.snapshot);
        assert_eq!(n.subject_prefix, "quotecast.feed");
        assert!(!parse(&[]).unwrap().feed_nats.enabled(), "multicast by default");
    }

    #[test]
    fn feed_sources_are_a_list() {
        let c = parse(&["--feed-source", "127.0.0.1,10.1.2.3", "--feed-source", "10.9.9.9"]).unwrap();
        let want: Vec<Ipv4Addr> =
            ["127.0.0.1", "10.1.2.3", "10.9.9.9"].iter().map(|a| a.parse().unwrap()).collect();
        assert_eq!(c.feed.sources, want);
    }

    #[test]
    fn bad_values_are_named() {
        for (args, want) in [
            (&["--group", "10.0.0.1"][..], "not a multicast"),
            (&["--max-connections", "0"][..], "--max-connections must be greater than 0"),
            (&["--feed-port", "x"][..], "--feed-port"),
            (&["--idle-timeout-ms", "10", "--ping-interval-ms", "20"][..], "must exceed"),
            (&["--max-symbols", "70000"][..], "65535"),
            (&["--handshake-timeout-ms", "0"][..], "--handshake-timeout-ms must be greater than 0"),
            (&["--close-linger-ms", "0"][..], "--close-linger-ms"),
            (&["--max-pending-handshakes", "10"][..], "--max-pending-handshakes-per-ip (64) exceeds"),
            (
                &["--ws-max-write-buffer-bytes", "4096"][..],
                "--ws-max-write-buffer-bytes (4096) must be at least twice",
            ),
            (&["--ws-read-buffer-bytes", "0"][..], "--ws-read-buffer-bytes must be"),
            (&["--replay-max-bytes", "64"][..], "--replay-max-bytes 64 holds no update"),
            (&["--feed-confirm-packets", "0"][..], "--feed-confirm-packets must be greater than 0"),
            (&["--feed-confirm-packets", "5000"][..], "above 1000"),
            (&["--feed-takeover-silence-ms", "0"][..], "--feed-takeover-silence-ms must be"),
            (&["--max-seq-jump", "0"][..], "--max-seq-jump must be greater than 0"),
            (&["--feed-source", "nope"][..], "--feed-source"),
            (&["--feed-source", "::1"][..], "--feed-source"),
            (&["--group-b", "10.0.0.1"][..], "--group-b 10.0.0.1 is not a multicast"),
            (&["--group-b", "239.255.0.1"][..], "line B needs its own group or --feed-port-b"),
            (&["--feed-port-b", "31002"][..], "--feed-port-b needs --group-b"),
            (&["--interface-b", "127.0.0.1"][..], "--interface-b needs --group-b"),
            (&["--group-b", "239.255.0.2", "--reorder-window", "0"][..], "--group-b needs --reorder-window"),
            (&["--group-b", "x"][..], "--group-b"),
            (&["--feed-nats", "nats://127.0.0.1:4222 x"][..], "--feed-nats"),
            (&["--feed-nats-retrans"][..], "--feed-nats-retrans needs --feed-nats"),
            (&["--feed-nats-line-b"][..], "--feed-nats-line-b needs --feed-nats"),
            (
                &["--feed-nats", "nats://127.0.0.1:4222", "--feed-nats-subject-prefix", "a.*"][..],
                "is not a NATS subject",
            ),
            (
                &["--feed-nats", "nats://127.0.0.1:4222", "--feed-nats-subject-prefix", "a..b"][..],
                "is not a NATS subject",
            ),
            (
                &["--feed-nats", "nats://127.0.0.1:4222", "--group-b", "239.255.0.2"][..],
                "use --feed-nats-line-b",
            ),
            (
                &["--feed-nats", "nats://127.0.0.1:4222", "--retrans-addr", "127.0.0.1:9"][..],
                "use --feed-nats-retrans",
            ),
            (&["--feed-nats", "nats://127.0.0.1:4222", "--feed-source", "127.0.0.1"][..], "--feed-source"),
            (
                &["--feed-nats", "nats://127.0.0.1:4222", "--feed-nats-queue-messages", "0"][..],
                "--feed-nats-queue-messages",
            ),
        ] {
            let err = parse(args).unwrap_err();
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }
}
