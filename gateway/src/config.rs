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
    /// WebSocket server settings.
    #[command(flatten)]
    pub ws: WsConfig,
    /// gRPC limits.
    #[command(flatten)]
    pub grpc: crate::grpc::GrpcConfig,
    /// Side services.
    #[command(flatten)]
    pub serve: ServeConfig,
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
    /// Socket receive buffer to request (bytes). Above net.core.rmem_max the
    /// gateway tries SO_RCVBUFFORCE (needs CAP_NET_ADMIN).
    #[arg(long, env = "QUOTECAST_RECV_BUFFER_BYTES", default_value_t = 16 << 20)]
    pub recv_buffer_bytes: usize,
    /// Mark every symbol stale when no packet (not even a heartbeat) came
    /// for this long (ms).
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
    /// Most concurrent connections; more are closed with 1013 and a retry hint.
    #[arg(long, env = "QUOTECAST_MAX_CONNECTIONS", default_value_t = 16384)]
    pub max_connections: usize,
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
    /// A connection that stays behind (conflating, or unable to take a frame)
    /// this long is closed with code 4008 (ms).
    #[arg(long, env = "QUOTECAST_SLOW_CLIENT_TIMEOUT_MS", default_value_t = 5000)]
    pub slow_client_timeout_ms: u64,
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
    /// tungstenite read buffer per connection (bytes); small keeps idle
    /// connections cheap.
    #[arg(long, env = "QUOTECAST_WS_READ_BUFFER_BYTES", default_value_t = 1024)]
    pub read_buffer_bytes: usize,
    /// Cap of unsent bytes buffered per connection by the WebSocket layer.
    #[arg(long, env = "QUOTECAST_WS_MAX_WRITE_BUFFER_BYTES", default_value_t = 1 << 20)]
    pub max_write_buffer_bytes: usize,
    /// Kernel send buffer per connection (SO_SNDBUF, bytes; 0 = kernel
    /// autotuning). Smaller bounds kernel memory per slow client and
    /// detects it sooner; larger absorbs bursts to distant clients.
    #[arg(long, env = "QUOTECAST_WS_SEND_BUFFER_BYTES", default_value_t = 256 * 1024)]
    pub send_buffer_bytes: usize,
    /// Time a client has to finish the WebSocket handshake (ms).
    #[arg(long, env = "QUOTECAST_HANDSHAKE_TIMEOUT_MS", default_value_t = 10000)]
    pub handshake_timeout_ms: u64,
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
            ("--max-request-bytes", self.ws.max_request_bytes),
            ("--ws-read-buffer-bytes", self.ws.read_buffer_bytes),
            ("--ping-interval-ms", self.ws.ping_interval_ms as usize),
            ("--slow-client-timeout-ms", self.ws.slow_client_timeout_ms as usize),
            ("--feed-timeout-ms", self.feed.feed_timeout_ms as usize),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Zero(name));
        }
        if self.feed.max_symbols > 65_535 {
            return Err(ConfigError::Conflict(format!(
                "--max-symbols {} exceeds the feed's 65535 locate codes",
                self.feed.max_symbols
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
        self.grpc.validate().map_err(|e| ConfigError::Conflict(e.to_string()))?;
        if self.ws.max_write_buffer_bytes < 2 * self.ws.max_batch_bytes {
            return Err(ConfigError::Conflict(
                "--ws-max-write-buffer-bytes must be at least twice --max-batch-bytes".into(),
            ));
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
        c
    }
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
    }

    #[test]
    fn bad_values_are_named() {
        for (args, want) in [
            (&["--group", "10.0.0.1"][..], "not a multicast"),
            (&["--max-connections", "0"][..], "--max-connections must be greater than 0"),
            (&["--feed-port", "x"][..], "--feed-port"),
            (&["--idle-timeout-ms", "10", "--ping-interval-ms", "20"][..], "must exceed"),
            (&["--max-symbols", "70000"][..], "65535"),
        ] {
            let err = parse(args).unwrap_err();
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }
}
