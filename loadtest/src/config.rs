//! Command-line configuration: one clap struct for the binary and for
//! library callers (tests fill it in with [`Config::for_tests`]), validated
//! before any socket is opened.

use clap::{Args, Parser, ValueEnum};
use feed_sim::config::parse_duration;
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;

/// Exit status for a bad flag (BSD `EX_USAGE`).
pub const EX_USAGE: u8 = 64;
/// Exit status for a failure while running (unreachable gateway, ...).
pub const EX_RUNTIME: u8 = 1;
/// Exit status when a client saw a correctness violation.
pub const EX_VIOLATION: u8 = 2;
/// Exit status when a `--max-p99` or `--min-rate` threshold was missed.
pub const EX_THRESHOLD: u8 = 3;

/// Most source addresses connections are spread over (127.0.0.1 ..).
pub const MAX_SOURCE_IPS: u8 = 254;

/// quotecast load generator: drives WebSocket or gRPC clients against a
/// gateway on this machine, measures throughput and per-hop latency, and
/// checks every update each client saw against the feed's ground truth.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "loadtest",
    version,
    about,
    long_about = None,
    after_help = "Exit status: 0 ok, 1 runtime failure, 2 correctness violation, 3 threshold missed, 64 bad arguments.\n\
                  With --feed sim (the default) loadtest sends the feed itself (feed-sim in-process, multicast on\n\
                  127.0.0.1, TTL 0) and compares every client's final values with the simulator's; do not run\n\
                  another feed-sim on the same group and port at the same time."
)]
pub struct Config {
    /// What to drive: `ws` (WebSocket clients, binary protocol), `snapshot`
    /// (gRPC GetSnapshot calls) or `stream` (gRPC StreamQuotes consumers).
    #[arg(long, value_enum, env = "LOADTEST_MODE", default_value_t = Mode::Ws)]
    pub mode: Mode,
    /// Where the gateway listens.
    #[command(flatten)]
    pub target: TargetArgs,
    /// How much load, and of which shape.
    #[command(flatten)]
    pub load: LoadArgs,
    /// The feed behind the gateway.
    #[command(flatten)]
    pub feed: FeedArgs,
    /// Output and pass/fail thresholds.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Which client kind drives the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// WebSocket clients (binary protobuf protocol).
    Ws,
    /// gRPC GetSnapshot calls.
    Snapshot,
    /// gRPC StreamQuotes consumers.
    Stream,
}

/// How each connection's symbols are chosen when `--symbols` is not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pick {
    /// A random draw from the feed's symbol universe, per connection.
    Random,
    /// The feed's most active symbols (the head of its Zipf ranking), the
    /// same for every connection.
    Hot,
}

/// What a slow client does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SlowMode {
    /// Stop reading after the first update (until the run ends).
    Stop,
    /// Sleep `--slow-delay` after every frame.
    Slow,
}

/// Where the gateway's feed comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedSource {
    /// loadtest runs feed-sim in-process and checks final values against it.
    Sim,
    /// A feed is already running; only sequence checks are possible.
    External,
}

/// Gateway addresses.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Target")]
pub struct TargetArgs {
    /// Gateway WebSocket address, `127.0.0.1:8080` or `ws://127.0.0.1:8080/`
    /// (only 127.0.0.0/8 is allowed; inside a network namespace also
    /// private addresses, e.g. a balancer of a namespaced test fleet).
    #[arg(long, env = "LOADTEST_WS_ADDR", default_value = "127.0.0.1:8080")]
    pub ws_addr: String,
    /// Gateway gRPC address, `127.0.0.1:50051` or `http://127.0.0.1:50051`
    /// (only 127.0.0.0/8 is allowed).
    #[arg(long, env = "LOADTEST_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: String,
    /// PID of the gateway process, to report its CPU and RSS next to ours.
    #[arg(long, env = "LOADTEST_GATEWAY_PID")]
    pub gateway_pid: Option<u32>,
    /// Connect with TLS (`wss://`), trusting the CA certificates of this
    /// PEM file (the gateway's certificate must name the target's IP).
    #[arg(long, env = "LOADTEST_TLS_CA_FILE")]
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// Credential (API key or JWT) each WebSocket client sends, as
    /// `?token=` in its upgrade request.
    #[arg(long, env = "LOADTEST_TOKEN")]
    pub token: Option<String>,
}

/// Load shape.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Load")]
pub struct LoadArgs {
    /// WebSocket connections (ws) or StreamQuotes consumers (stream).
    #[arg(short = 'c', long, env = "LOADTEST_CONNECTIONS", default_value_t = 100)]
    pub connections: usize,
    /// New connections per second during ramp-up; 0 = all at once.
    #[arg(long, env = "LOADTEST_CONNECT_RATE", allow_negative_numbers = true, default_value_t = 2000.0)]
    pub connect_rate: f64,
    /// Symbols each connection subscribes to.
    #[arg(short = 's', long, env = "LOADTEST_SYMBOLS_PER_CONN", default_value_t = 10)]
    pub symbols_per_conn: usize,
    /// How symbols are chosen when --symbols is not given.
    #[arg(long, value_enum, env = "LOADTEST_PICK", default_value_t = Pick::Random)]
    pub pick: Pick,
    /// A fixed symbol list for every connection (comma separated); overrides
    /// --pick and --symbols-per-conn.
    #[arg(long, env = "LOADTEST_SYMBOLS", value_delimiter = ',')]
    pub symbols: Vec<String>,
    /// Measurement time after ramp-up, e.g. 10s, 500ms, 2m.
    #[arg(short = 'd', long, env = "LOADTEST_DURATION", value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Stop once this many updates (ws, stream) or calls (snapshot) were
    /// measured in total, if that comes before --duration.
    #[arg(long, env = "LOADTEST_UPDATES")]
    pub updates: Option<u64>,
    /// Client threads, each a single-threaded runtime; 0 = one per core.
    #[arg(long, env = "LOADTEST_THREADS", default_value_t = 0)]
    pub threads: usize,
    /// Spread connections over this many source addresses 127.0.0.1,
    /// 127.0.0.2, ... so ephemeral ports never run out.
    #[arg(long, env = "LOADTEST_SOURCE_IPS", default_value_t = 16)]
    pub source_ips: u8,
    /// Time for one connection (TCP + WebSocket handshake, or gRPC channel).
    #[arg(long, env = "LOADTEST_CONNECT_TIMEOUT", value_parser = parse_duration, default_value = "5s")]
    pub connect_timeout: Duration,
    /// WebSocket read buffer per connection (bytes).
    #[arg(long, env = "LOADTEST_READ_BUFFER_BYTES", default_value_t = 16 * 1024)]
    pub read_buffer_bytes: usize,
    /// Share of connections that read slowly or stop reading on purpose
    /// (0..1); measured separately from the others.
    #[arg(long, env = "LOADTEST_SLOW_SHARE", allow_negative_numbers = true, default_value_t = 0.0)]
    pub slow_share: f64,
    /// What slow clients do.
    #[arg(long, value_enum, env = "LOADTEST_SLOW_MODE", default_value_t = SlowMode::Stop)]
    pub slow_mode: SlowMode,
    /// Pause after every frame for `--slow-mode slow`.
    #[arg(long, env = "LOADTEST_SLOW_DELAY", value_parser = parse_duration, default_value = "100ms")]
    pub slow_delay: Duration,
    /// Concurrent GetSnapshot callers (snapshot mode).
    #[arg(long, env = "LOADTEST_CONCURRENCY", default_value_t = 8)]
    pub concurrency: usize,
    /// Target GetSnapshot calls per second in total; 0 = as fast as the
    /// callers go (snapshot mode).
    #[arg(long, env = "LOADTEST_CALL_RATE", allow_negative_numbers = true, default_value_t = 0.0)]
    pub call_rate: f64,
    /// Symbols per GetSnapshot call (snapshot mode).
    #[arg(long, env = "LOADTEST_SYMBOLS_PER_CALL", default_value_t = 1)]
    pub symbols_per_call: usize,
    /// After the feed ends, how long to wait for every client to receive
    /// its last updates before checking final values.
    #[arg(long, env = "LOADTEST_DRAIN_TIMEOUT", value_parser = parse_duration, default_value = "5s")]
    pub drain_timeout: Duration,
    /// Seed of the symbol draws (and of which connections are slow).
    #[arg(long, env = "LOADTEST_SEED", default_value_t = 7)]
    pub seed: u64,
    /// When the server ends a connection (1012 drain, 1001 shutdown, 1013,
    /// 4008, a node killed), reconnect to the same address (a balancer
    /// picks another node) and resume every symbol with from_seq and
    /// from_epoch; the checker then expects each stream to continue at
    /// seq + 1, or a snapshot flagged resume_failed (ws mode).
    #[arg(long, env = "LOADTEST_RECONNECT")]
    pub reconnect: bool,
    /// Longest pause before a reconnect attempt (uniformly jittered from 0;
    /// doubles after each failed attempt, up to 2 s).
    #[arg(long, env = "LOADTEST_RECONNECT_BACKOFF", value_parser = parse_duration, default_value = "100ms")]
    pub reconnect_backoff: Duration,
}

/// The feed.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Feed")]
pub struct FeedArgs {
    /// `sim`: run feed-sim in-process (ground truth for final values);
    /// `external`: a feed is already running.
    #[arg(long, value_enum, env = "LOADTEST_FEED", default_value_t = FeedSource::Sim)]
    pub feed: FeedSource,
    /// Multicast group the gateway listens on.
    #[arg(long, env = "LOADTEST_FEED_GROUP", default_value_t = feed_sim::config::DEFAULT_GROUP)]
    pub feed_group: Ipv4Addr,
    /// UDP port the gateway listens on.
    #[arg(long, env = "LOADTEST_FEED_PORT", default_value_t = feed_sim::config::DEFAULT_PORT)]
    pub feed_port: u16,
    /// Ticks per second of the in-process feed; 0 = as fast as possible.
    #[arg(long, env = "LOADTEST_FEED_RATE", default_value_t = 10_000)]
    pub feed_rate: u64,
    /// Symbols of the feed (must match the running feed-sim's --symbols with
    /// --feed external, so hot and random picks name real symbols).
    #[arg(long, env = "LOADTEST_FEED_SYMBOLS", default_value_t = 300)]
    pub feed_symbols: usize,
    /// Seed of the in-process feed's market model.
    #[arg(long, env = "LOADTEST_FEED_SEED", default_value_t = 1)]
    pub feed_seed: u64,
    /// Zipf exponent of the in-process feed's symbol activity.
    #[arg(long, env = "LOADTEST_FEED_ZIPF", allow_negative_numbers = true, default_value_t = 1.1)]
    pub feed_zipf: f64,
    /// End the in-process feed after this many ticks (the run ends with it,
    /// or at --duration, whichever comes first).
    #[arg(long, env = "LOADTEST_FEED_MAX_TICKS")]
    pub feed_max_ticks: Option<u64>,
    /// With --feed external: the ground truth a separate feed-sim writes
    /// when its session ends (`feed-sim --truth-out`). The run ends when
    /// the file appears (or at --duration), waits for every client to
    /// receive the end of the feed, and checks final values against it,
    /// as with the in-process feed. Delete a stale file before the run.
    #[arg(long, env = "LOADTEST_TRUTH_FILE")]
    pub truth_file: Option<std::path::PathBuf>,
}

/// Output and thresholds.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Output")]
pub struct OutputArgs {
    /// Write the full result as JSON to this file.
    #[arg(long, env = "LOADTEST_JSON")]
    pub json: Option<PathBuf>,
    /// Fail (exit 3) if the end-to-end p99 of the normal clients (or the
    /// call p99 in snapshot mode) exceeds this, e.g. 5ms.
    #[arg(long, env = "LOADTEST_MAX_P99", value_parser = parse_duration)]
    pub max_p99: Option<Duration>,
    /// Fail (exit 3) if fewer updates/s reach the normal clients (calls/s in
    /// snapshot mode) than this.
    #[arg(long, env = "LOADTEST_MIN_RATE")]
    pub min_rate: Option<f64>,
    /// No live progress line.
    #[arg(long, env = "LOADTEST_NO_PROGRESS")]
    pub no_progress: bool,
    /// Violations listed in the summary (all are counted).
    #[arg(long, env = "LOADTEST_LIST_VIOLATIONS", default_value_t = 20)]
    pub list_violations: usize,
}

/// A flag value that cannot work; the message names the flag.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ConfigError {
    /// An address that does not parse.
    #[error("{flag} {value:?}: expected IPv4:PORT such as 127.0.0.1:8080")]
    BadAddr {
        /// The flag.
        flag: &'static str,
        /// What was given.
        value: String,
    },
    /// A target outside 127.0.0.0/8: loadtest never sends off this machine.
    #[error("{flag} {addr}: only targets in 127.0.0.0/8 are allowed, or private addresses from inside a network namespace (loadtest never sends traffic off this machine)")]
    NotLoopback {
        /// The flag.
        flag: &'static str,
        /// The refused address.
        addr: SocketAddr,
    },
    /// A count that must be positive is zero.
    #[error("{0} must be greater than 0")]
    Zero(&'static str),
    /// `--truth-file` without `--feed external` (the in-process feed is
    /// its own truth).
    #[error("--truth-file needs --feed external (with --feed sim loadtest has the truth itself)")]
    TruthWithSim,
    /// A share outside 0..1.
    #[error("--slow-share {0}: must be between 0 and 1")]
    BadShare(f64),
    /// A rate that is negative or not a number.
    #[error("{flag} {value}: must be a finite number >= 0")]
    BadRate {
        /// The flag.
        flag: &'static str,
        /// What was given.
        value: f64,
    },
    /// More symbols requested than the universe has.
    #[error("{flag} {want}: the feed has only {have} symbols (--feed-symbols)")]
    TooManySymbols {
        /// The flag.
        flag: &'static str,
        /// Requested.
        want: usize,
        /// Available.
        have: usize,
    },
    /// The feed settings are invalid.
    #[error("feed: {0}")]
    Feed(#[from] feed_sim::ConfigError),
    /// More connections than the open-file limit allows.
    #[error("--connections {want}: the open-file limit allows about {max} (ulimit -n is {limit})")]
    TooManyConnections {
        /// Requested.
        want: usize,
        /// Usable.
        max: usize,
        /// The soft limit after raising it.
        limit: u64,
    },
    /// A bad symbol in --symbols.
    #[error("--symbols {0:?}: not a valid symbol (1-8 characters of A-Z 0-9 . -)")]
    BadSymbol(String),
}

/// Whether this thread (so this process, unless a thread moved) runs in a
/// network namespace other than the machine's own, e.g. under `ip netns
/// exec`: its namespace differs from PID 1's, or, where PID 1's is not
/// readable (in a container), it has no default route, as a namespace
/// built for a test network has not.
pub fn in_separate_netns() -> bool {
    let Ok(me) = std::fs::read_link("/proc/thread-self/ns/net") else { return false };
    if let Ok(init) = std::fs::read_link("/proc/1/ns/net") {
        return me != init;
    }
    match std::fs::read_to_string("/proc/thread-self/net/route") {
        // Columns: Iface Destination Gateway ...; destination 0 = default.
        Ok(t) => !t.lines().skip(1).any(|l| l.split_whitespace().nth(1) == Some("00000000")),
        Err(_) => false,
    }
}

/// Parses `ws://host:port/`, `http://host:port` or `host:port` into a
/// socket address, allowing only 127.0.0.0/8 (`localhost` means 127.0.0.1),
/// or private addresses (10/8, 172.16/12, 192.168/16) when loadtest runs in
/// a network namespace of its own.
///
/// # Errors
/// [`ConfigError::BadAddr`] or [`ConfigError::NotLoopback`].
pub fn parse_target(flag: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    let bad = || ConfigError::BadAddr { flag, value: value.to_string() };
    let mut s = value.trim();
    for scheme in ["ws://", "http://"] {
        if let Some(rest) = s.strip_prefix(scheme) {
            s = rest;
        }
    }
    let s = s.trim_end_matches('/');
    let addr: SocketAddr = match s.strip_prefix("localhost:") {
        Some(port) => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port.parse().map_err(|_| bad())?),
        None => s.parse().map_err(|_| bad())?,
    };
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => {}
        // A test network built of namespaces (a fleet behind a balancer):
        // its private addresses exist only inside namespaces, never on the
        // machine's own network.
        IpAddr::V4(ip) if ip.is_private() && in_separate_netns() => {}
        _ => return Err(ConfigError::NotLoopback { flag, addr }),
    }
    if addr.port() == 0 {
        return Err(bad());
    }
    Ok(addr)
}

impl Config {
    /// Checks what clap cannot (everything but the open-file limit, which
    /// [`crate::run()`] checks after raising it).
    ///
    /// # Errors
    /// The first [`ConfigError`] found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.feed.truth_file.is_some() && self.feed.feed == FeedSource::Sim {
            return Err(ConfigError::TruthWithSim);
        }
        match self.mode {
            Mode::Ws => {
                parse_target("--ws-addr", &self.target.ws_addr)?;
            }
            Mode::Snapshot | Mode::Stream => {
                parse_target("--grpc-addr", &self.target.grpc_addr)?;
            }
        }
        // The feed-sim probe connects over WebSocket in every mode.
        if self.feed.feed == FeedSource::Sim || self.mode == Mode::Ws {
            parse_target("--ws-addr", &self.target.ws_addr)?;
        }
        let l = &self.load;
        let positive = [
            ("--connections", l.connections),
            ("--symbols-per-conn", l.symbols_per_conn),
            ("--concurrency", l.concurrency),
            ("--symbols-per-call", l.symbols_per_call),
            ("--source-ips", usize::from(l.source_ips)),
            ("--read-buffer-bytes", l.read_buffer_bytes),
            ("--feed-symbols", self.feed.feed_symbols),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Zero(name));
        }
        if l.duration.is_zero() {
            return Err(ConfigError::Zero("--duration"));
        }
        if l.source_ips > MAX_SOURCE_IPS {
            return Err(ConfigError::BadRate { flag: "--source-ips", value: f64::from(l.source_ips) });
        }
        if !(0.0..=1.0).contains(&l.slow_share) {
            return Err(ConfigError::BadShare(l.slow_share));
        }
        for (flag, value) in [("--connect-rate", l.connect_rate), ("--call-rate", l.call_rate)] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(ConfigError::BadRate { flag, value });
            }
        }
        let have = self.feed.feed_symbols;
        if l.symbols.is_empty() {
            for (flag, want) in
                [("--symbols-per-conn", l.symbols_per_conn), ("--symbols-per-call", l.symbols_per_call)]
            {
                if want > have {
                    return Err(ConfigError::TooManySymbols { flag, want, have });
                }
            }
        }
        for s in &l.symbols {
            if quotecast_proto::feed::Symbol::new(s).is_err() {
                return Err(ConfigError::BadSymbol(s.clone()));
            }
        }
        if self.feed.feed == FeedSource::Sim {
            self.sim_config(0).validate()?;
        }
        Ok(())
    }

    /// The WebSocket target (validated).
    ///
    /// # Errors
    /// As [`parse_target`].
    pub fn ws_target(&self) -> Result<SocketAddr, ConfigError> {
        parse_target("--ws-addr", &self.target.ws_addr)
    }

    /// The gRPC target (validated).
    ///
    /// # Errors
    /// As [`parse_target`].
    pub fn grpc_target(&self) -> Result<SocketAddr, ConfigError> {
        parse_target("--grpc-addr", &self.target.grpc_addr)
    }

    /// The in-process feed's configuration: loopback interface, TTL 0.
    pub fn sim_config(&self, max_ticks_override: u64) -> feed_sim::SimConfig {
        let f = &self.feed;
        feed_sim::SimConfig {
            group: f.feed_group,
            port: f.feed_port,
            interface: Ipv4Addr::LOCALHOST,
            ttl: 0,
            seed: f.feed_seed,
            symbols: f.feed_symbols,
            zipf: f.feed_zipf,
            rate: f.feed_rate,
            max_ticks: if max_ticks_override > 0 { Some(max_ticks_override) } else { f.feed_max_ticks },
            // A short repeat so a gateway that joins late learns symbols fast.
            directory_interval_ms: 500,
            ..feed_sim::SimConfig::default()
        }
    }

    /// Defaults for tests: no progress line, the given gateway and feed.
    pub fn for_tests(ws: SocketAddr, grpc: SocketAddr, group: Ipv4Addr, port: u16) -> Config {
        let mut c = Config::parse_from(["loadtest", "--no-progress"]);
        c.target.ws_addr = ws.to_string();
        c.target.grpc_addr = grpc.to_string();
        c.feed.feed_group = group;
        c.feed.feed_port = port;
        c.load.threads = 2;
        c.load.source_ips = 4;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let c = Config::try_parse_from(std::iter::once("loadtest").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn defaults_are_valid_and_loopback() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.mode, Mode::Ws);
        assert!(c.ws_target().unwrap().ip().is_loopback());
        assert!(c.grpc_target().unwrap().ip().is_loopback());
        let sim = c.sim_config(0);
        assert_eq!((sim.interface, sim.ttl), (Ipv4Addr::LOCALHOST, 0));
    }

    #[test]
    fn targets_accept_urls_and_refuse_other_hosts() {
        for (v, want) in [
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("ws://127.0.0.1:9000/", "127.0.0.1:9000"),
            ("http://127.0.0.9:50051", "127.0.0.9:50051"),
            ("localhost:81", "127.0.0.1:81"),
        ] {
            assert_eq!(parse_target("--ws-addr", v).unwrap().to_string(), want, "{v}");
        }
        for v in ["10.0.0.1:8080", "0.0.0.0:8080", "[::1]:8080", "8.8.8.8:443"] {
            let e = parse_target("--ws-addr", v).unwrap_err();
            assert!(matches!(e, ConfigError::NotLoopback { .. }), "{v}: {e}");
            assert!(e.to_string().contains("127.0.0.0/8"));
        }
        for v in ["", "127.0.0.1", "example.com:80", "127.0.0.1:0", "ws://127.0.0.1:x/"] {
            assert!(matches!(parse_target("--ws-addr", v), Err(ConfigError::BadAddr { .. })), "{v}");
        }
    }

    #[test]
    fn bad_values_are_named() {
        for (args, want) in [
            (&["--ws-addr", "192.168.1.5:8080"][..], "only targets in 127.0.0.0/8"),
            (
                &["--mode", "snapshot", "--grpc-addr", "10.1.1.1:50051", "--feed", "external"][..],
                "--grpc-addr",
            ),
            (&["--connections", "0"][..], "--connections must be greater than 0"),
            (&["--slow-share", "1.5"][..], "--slow-share 1.5"),
            (&["--connect-rate", "-1"][..], "--connect-rate"),
            (&["--symbols-per-conn", "301"][..], "only 300 symbols"),
            (&["--symbols", "AAPL,bad symbol"][..], "not a valid symbol"),
            (&["--duration", "soon"][..], "--duration"),
            (&["--duration", "0s"][..], "--duration must be greater than 0"),
            (&["--feed-group", "10.0.0.1"][..], "not a multicast"),
            (&["--mode", "bogus"][..], "bogus"),
            (&["--source-ips", "255"][..], "--source-ips"),
        ] {
            let err = parse(args).unwrap_err();
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }

    #[test]
    fn symbol_list_and_durations_parse() {
        let c = parse(&["--symbols", "AAPL,MSFT", "-d", "500ms", "--max-p99", "2ms"]).unwrap();
        assert_eq!(c.load.symbols, ["AAPL", "MSFT"]);
        assert_eq!(c.load.duration, Duration::from_millis(500));
        assert_eq!(c.output.max_p99, Some(Duration::from_millis(2)));
        // A fixed list is not limited by --symbols-per-conn.
        assert!(parse(&["--symbols", "AAPL", "--symbols-per-conn", "1000"]).is_ok());
    }
}
