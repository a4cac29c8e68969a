//! Command-line and environment configuration, validated before any socket
//! is opened.
//!
//! [`SimConfig`] is both the clap parser of the binary and the value library
//! callers (other crates' tests) fill in directly; `Default` matches the CLI
//! defaults so a test only spells out what it cares about.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use clap::Parser;
use quotecast_proto::feed::{BLOCK_PREFIX_LEN, HEADER_LEN, MAX_PACKET_LEN, QUOTE_LEN};
use thiserror::Error;

use crate::sender::Faults;

/// Exit status for a bad flag or environment value (BSD `EX_USAGE`), so
/// scripts can tell "you called me wrong" from "I failed while running".
pub const EX_USAGE: u8 = 64;

/// Default multicast group: administratively scoped (239.255/16), so even a
/// misconfigured TTL would not be routed beyond the site.
pub const DEFAULT_GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 0, 1);
/// Default UDP destination port.
pub const DEFAULT_PORT: u16 = 31001;
/// Default outgoing interface: loopback, so the feed never leaves the host.
pub const DEFAULT_INTERFACE: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// Smallest `--max-packet-bytes`: the codec's own floor (it clamps below
/// this), which also leaves room for at least one message of each type.
pub const MIN_PACKET_BYTES: usize = HEADER_LEN + 64;
/// Largest symbol count: locate codes are `u16` and start at 1.
pub const MAX_SYMBOLS: usize = u16::MAX as usize;

/// Seeded market simulator sending MoldUDP64-style packets over UDP multicast.
///
/// Every flag can also be set through the environment variable shown.
#[derive(Debug, Clone, PartialEq, Parser)]
#[command(name = "feed-sim", version, about, long_about = None)]
pub struct SimConfig {
    /// Multicast group to send to (must be 224.0.0.0/4).
    #[arg(long, env = "FEED_SIM_GROUP", default_value_t = DEFAULT_GROUP)]
    pub group: Ipv4Addr,

    /// UDP destination port.
    #[arg(long, env = "FEED_SIM_PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,

    /// Address of the interface multicast leaves through (IP_MULTICAST_IF).
    /// Keep 127.0.0.1 unless you really mean to reach other hosts.
    #[arg(long, env = "FEED_SIM_INTERFACE", default_value_t = DEFAULT_INTERFACE)]
    pub interface: Ipv4Addr,

    /// Multicast TTL; 0 keeps packets on this host.
    #[arg(long, env = "FEED_SIM_TTL", default_value_t = 0)]
    pub ttl: u32,

    /// Seed of the market model: the same seed gives the same message stream.
    #[arg(long, env = "FEED_SIM_SEED", default_value_t = 1)]
    pub seed: u64,

    /// Number of symbols (1..=65535); the first ~100 are real US tickers.
    #[arg(long, env = "FEED_SIM_SYMBOLS", default_value_t = 300)]
    pub symbols: usize,

    /// Zipf exponent of symbol activity: higher means a few symbols carry
    /// most ticks; 0 is uniform.
    #[arg(long, env = "FEED_SIM_ZIPF", allow_negative_numbers = true, default_value_t = 1.1)]
    pub zipf: f64,

    /// Probability that a tick is a trade rather than a quote (0..=1).
    #[arg(long, env = "FEED_SIM_TRADE_RATIO", allow_negative_numbers = true, default_value_t = 0.1)]
    pub trade_ratio: f64,

    /// Target ticks (quotes + trades) per second; 0 = as fast as possible.
    #[arg(long, env = "FEED_SIM_RATE", default_value_t = 10_000)]
    pub rate: u64,

    /// Period of rate bursts in milliseconds; 0 = no bursts.
    #[arg(long, env = "FEED_SIM_BURST_EVERY_MS", default_value_t = 0)]
    pub burst_every_ms: u64,

    /// Length of each burst in milliseconds (at most --burst-every-ms).
    #[arg(long, env = "FEED_SIM_BURST_LEN_MS", default_value_t = 0)]
    pub burst_len_ms: u64,

    /// Rate multiplier during a burst; 0 = no bursts.
    #[arg(long, env = "FEED_SIM_BURST_MULTIPLIER", allow_negative_numbers = true, default_value_t = 0.0)]
    pub burst_multiplier: f64,

    /// Largest datagram in bytes, header included (84..=65000).
    #[arg(long, env = "FEED_SIM_MAX_PACKET_BYTES", default_value_t = 1400)]
    pub max_packet_bytes: usize,

    /// Stop after this many ticks and end the session (default: unlimited).
    #[arg(long, env = "FEED_SIM_MAX_TICKS")]
    pub max_ticks: Option<u64>,

    /// Stop after this long and end the session, e.g. 30, 30s, 500ms, 2m, 1h.
    #[arg(long, env = "FEED_SIM_DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Keep the session open this long after the last tick (heartbeats,
    /// snapshot cycles and retransmissions go on, no ticks), then end it,
    /// so receivers can finish recovering; in milliseconds.
    #[arg(long, env = "FEED_SIM_QUIET_END_MS", default_value_t = 0)]
    pub quiet_end_ms: u64,

    /// Session id, 1-10 printable ASCII characters (default: "S" + UTC
    /// HHMMSSmmm of the start, so a restart is a new session).
    #[arg(long, env = "FEED_SIM_SESSION")]
    pub session: Option<String>,

    /// Send a heartbeat after this many milliseconds without a packet; 0 = never.
    #[arg(long, env = "FEED_SIM_HEARTBEAT_MS", default_value_t = 1000)]
    pub heartbeat_ms: u64,

    /// Longest time a partially filled packet waits for more messages, in
    /// microseconds: low rates stay prompt, high rates fill packets.
    #[arg(long, env = "FEED_SIM_FLUSH_US", default_value_t = 200)]
    pub flush_us: u64,

    /// Repeat the whole symbol directory this often so late joiners learn
    /// the symbols, in milliseconds; 0 = only at session start.
    #[arg(long, env = "FEED_SIM_DIRECTORY_INTERVAL_MS", default_value_t = 1000)]
    pub directory_interval_ms: u64,

    /// Line B: also send every packet, identically, to this multicast group
    /// (like an exchange's A/B feeds); default: line A only.
    #[arg(long, env = "FEED_SIM_LINE_B_GROUP")]
    pub line_b_group: Option<Ipv4Addr>,

    /// UDP port of line B (default: --port). Group and port must not both
    /// equal line A's.
    #[arg(long, env = "FEED_SIM_LINE_B_PORT")]
    pub line_b_port: Option<u16>,

    /// Fault injection on BOTH lines: skip every Nth data packet (its
    /// sequence numbers are still used, so receivers see a gap even when
    /// they take A and B); 0 = off. With one line, line A.
    #[arg(long, env = "FEED_SIM_DROP_EVERY", default_value_t = 0)]
    pub drop_every: u64,

    /// Fault injection on both lines: send every Nth data packet twice; 0 = off.
    #[arg(long, env = "FEED_SIM_DUP_EVERY", default_value_t = 0)]
    pub dup_every: u64,

    /// Fault injection on both lines: hold every Nth data packet and send it
    /// after the next one; 0 = off.
    #[arg(long, env = "FEED_SIM_REORDER_EVERY", default_value_t = 0)]
    pub reorder_every: u64,

    /// Fault injection on line A only: skip every Nth data packet (N counts
    /// data packets of the session, the same on both lines, so the packet
    /// is still on line B); 0 = off. Adds to --drop-every.
    #[arg(long, env = "FEED_SIM_A_DROP_EVERY", default_value_t = 0)]
    pub a_drop_every: u64,

    /// Fault injection on line A only: send every Nth data packet twice.
    #[arg(long, env = "FEED_SIM_A_DUP_EVERY", default_value_t = 0)]
    pub a_dup_every: u64,

    /// Fault injection on line A only: send every Nth data packet after the
    /// next one.
    #[arg(long, env = "FEED_SIM_A_REORDER_EVERY", default_value_t = 0)]
    pub a_reorder_every: u64,

    /// Fault injection on line B only (needs --line-b-group): skip every
    /// Nth data packet.
    #[arg(long, env = "FEED_SIM_B_DROP_EVERY", default_value_t = 0)]
    pub b_drop_every: u64,

    /// Fault injection on line B only: send every Nth data packet twice.
    #[arg(long, env = "FEED_SIM_B_DUP_EVERY", default_value_t = 0)]
    pub b_dup_every: u64,

    /// Fault injection on line B only: send every Nth data packet after the
    /// next one.
    #[arg(long, env = "FEED_SIM_B_REORDER_EVERY", default_value_t = 0)]
    pub b_reorder_every: u64,

    /// Serve MoldUDP64-style retransmission requests (unicast UDP) on this
    /// address, e.g. 127.0.0.1:31010; default: no retransmission server.
    /// Keep it on 127.0.0.1 unless other hosts must reach it.
    #[arg(long, env = "FEED_SIM_RETRANS_ADDR")]
    pub retrans_addr: Option<SocketAddr>,

    /// Data packets the retransmission server keeps (the newest ones); a
    /// request for anything older is answered "gone". Memory: up to this
    /// many × --max-packet-bytes (about 90 MB at the defaults).
    #[arg(long, env = "FEED_SIM_RETRANS_RING_PACKETS", default_value_t = 65_536)]
    pub retrans_ring_packets: usize,

    /// Most messages one retransmission request gets; the answer covers the
    /// first ones of the range (ask again for the rest).
    #[arg(long, env = "FEED_SIM_RETRANS_MAX_MESSAGES", default_value_t = 2_000)]
    pub retrans_max_messages: u16,

    /// Most retransmission requests per second from one requester
    /// (ip:port); more are dropped unanswered and counted.
    #[arg(long, env = "FEED_SIM_RETRANS_MAX_REQUESTS_PER_SEC", default_value_t = 100)]
    pub retrans_max_requests_per_sec: u32,

    /// Keep answering retransmission requests this long after the end of
    /// session, in milliseconds, so the last packets can still be filled.
    #[arg(long, env = "FEED_SIM_RETRANS_LINGER_MS", default_value_t = 1_000)]
    pub retrans_linger_ms: u64,

    /// Snapshot channel: loop the full state of every symbol on this
    /// multicast group (MDP3-style snapshot loop for late joiners and
    /// recovery); default: off.
    #[arg(long, env = "FEED_SIM_SNAPSHOT_GROUP")]
    pub snapshot_group: Option<Ipv4Addr>,

    /// UDP port of the snapshot channel (default: --port). Group and port
    /// must differ from both lines'.
    #[arg(long, env = "FEED_SIM_SNAPSHOT_PORT")]
    pub snapshot_port: Option<u16>,

    /// Snapshot channel pace, in symbol snapshots per second: a cycle of N
    /// symbols takes N / rate seconds.
    #[arg(long, env = "FEED_SIM_SNAPSHOT_RATE", default_value_t = 5_000)]
    pub snapshot_rate: u64,

    /// Seeded trading halts: after every Nth tick one trading symbol is
    /// halted (ITCH 'H' state H, reason T1) or paused (state P, reason LUDP),
    /// chosen from --seed; no quotes or trades for it until it resumes.
    /// Counted in ticks, not time, so the stream depends only on the seed;
    /// 0 = no halts.
    #[arg(long, env = "FEED_SIM_HALT_EVERY_TICKS", default_value_t = 0)]
    pub halt_every_ticks: u64,

    /// How long a halt lasts, in ticks of the whole market; then the symbol
    /// resumes (state T).
    #[arg(long, env = "FEED_SIM_HALT_TICKS", default_value_t = 5_000)]
    pub halt_ticks: u64,

    /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9101
    /// (default: no metrics endpoint).
    #[arg(long, env = "FEED_SIM_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// When the session ends, write its ground truth (every symbol's final
    /// quote, last trade and symbol_seq) as JSON to this file, so a
    /// load test in another process or network namespace can check what
    /// its clients saw (`loadtest --feed external --truth-file`). Written
    /// to a temporary name and renamed: it appears complete or not at all.
    #[arg(long, env = "FEED_SIM_TRUTH_OUT")]
    pub truth_out: Option<std::path::PathBuf>,

    /// Print the feed's tickers, one per line in locate order (what the
    /// directory announces for --symbols), and exit without sending: the
    /// list a client or a benchmark subscribes from.
    #[arg(long, env = "FEED_SIM_LIST_SYMBOLS")]
    pub list_symbols: bool,

    /// Keep every sequenced message in the report (tests only: grows
    /// without bound).
    #[arg(long, env = "FEED_SIM_RECORD", hide = true)]
    pub record: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            group: DEFAULT_GROUP,
            port: DEFAULT_PORT,
            interface: DEFAULT_INTERFACE,
            ttl: 0,
            seed: 1,
            symbols: 300,
            zipf: 1.1,
            trade_ratio: 0.1,
            rate: 10_000,
            burst_every_ms: 0,
            burst_len_ms: 0,
            burst_multiplier: 0.0,
            max_packet_bytes: 1400,
            max_ticks: None,
            duration: None,
            session: None,
            heartbeat_ms: 1000,
            flush_us: 200,
            directory_interval_ms: 1000,
            drop_every: 0,
            dup_every: 0,
            reorder_every: 0,
            line_b_group: None,
            line_b_port: None,
            a_drop_every: 0,
            a_dup_every: 0,
            a_reorder_every: 0,
            b_drop_every: 0,
            b_dup_every: 0,
            b_reorder_every: 0,
            snapshot_group: None,
            snapshot_port: None,
            snapshot_rate: 5_000,
            retrans_addr: None,
            retrans_ring_packets: 65_536,
            retrans_max_messages: 2_000,
            retrans_max_requests_per_sec: 100,
            retrans_linger_ms: 1_000,
            quiet_end_ms: 0,
            halt_every_ticks: 0,
            halt_ticks: 5_000,
            metrics_addr: None,
            truth_out: None,
            list_symbols: false,
            record: false,
        }
    }
}

/// A configuration value that cannot work. The message names the flag, so
/// the binary prints it as the whole diagnostic.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ConfigError {
    /// `--group` outside 224.0.0.0/4.
    #[error("--group {0}: not a multicast address (224.0.0.0/4)")]
    NotMulticast(Ipv4Addr),
    /// `--port 0` cannot be sent to.
    #[error("--port 0: a destination port must be 1..=65535")]
    ZeroPort,
    /// `--interface` that cannot name an interface.
    #[error("--interface {0}: must be the unicast address of a local interface, e.g. 127.0.0.1")]
    BadInterface(Ipv4Addr),
    /// `--ttl` above what IP can carry.
    #[error("--ttl {0}: must be 0..=255")]
    BadTtl(u32),
    /// `--symbols` outside what a u16 locate can number.
    #[error("--symbols {0}: must be 1..={MAX_SYMBOLS}")]
    BadSymbols(usize),
    /// `--zipf` negative or not a number.
    #[error("--zipf {0}: must be a finite number >= 0")]
    BadZipf(f64),
    /// `--trade-ratio` is not a probability.
    #[error("--trade-ratio {0}: must be between 0 and 1")]
    BadTradeRatio(f64),
    /// `--max-packet-bytes` outside the codec's range.
    #[error("--max-packet-bytes {0}: must be {MIN_PACKET_BYTES}..={MAX_PACKET_LEN}")]
    BadPacketBytes(usize),
    /// Burst flags that are partly set or inconsistent.
    #[error("burst: {0}")]
    BadBurst(&'static str),
    /// `--drop-every 1` or `--reorder-every 1`.
    #[error("--{0} 1: would affect every packet; use 0 (off) or >= 2")]
    BadFaultPeriod(&'static str),
    /// Line B flags that cannot work.
    #[error("line B: {0}")]
    BadLineB(String),
    /// Snapshot flags that cannot work.
    #[error("snapshot channel: {0}")]
    BadSnapshot(String),
    /// Retransmission flags that cannot work.
    #[error("retransmission: {0}")]
    BadRetrans(String),
    /// Halt flags that cannot work.
    #[error("halts: {0}")]
    BadHalts(&'static str),
    /// `--session` that does not fit the 10-byte field.
    #[error("--session {0:?}: must be 1-10 printable ASCII characters without spaces")]
    BadSession(String),
}

impl SimConfig {
    /// Checks every value before anything is bound, so a typo fails fast
    /// with one line instead of half-starting a feed.
    ///
    /// # Errors
    /// The first [`ConfigError`] found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.group.is_multicast() {
            return Err(ConfigError::NotMulticast(self.group));
        }
        if self.port == 0 {
            return Err(ConfigError::ZeroPort);
        }
        // 0.0.0.0 would let the kernel pick the default route's interface,
        // which is exactly the accident IP_MULTICAST_IF is set to prevent.
        let i = self.interface;
        if i.is_unspecified() || i.is_multicast() || i.is_broadcast() {
            return Err(ConfigError::BadInterface(i));
        }
        if self.ttl > 255 {
            return Err(ConfigError::BadTtl(self.ttl));
        }
        if self.symbols == 0 || self.symbols > MAX_SYMBOLS {
            return Err(ConfigError::BadSymbols(self.symbols));
        }
        if !(self.zipf.is_finite() && self.zipf >= 0.0) {
            return Err(ConfigError::BadZipf(self.zipf));
        }
        if !(0.0..=1.0).contains(&self.trade_ratio) {
            return Err(ConfigError::BadTradeRatio(self.trade_ratio));
        }
        if !(MIN_PACKET_BYTES..=MAX_PACKET_LEN).contains(&self.max_packet_bytes) {
            return Err(ConfigError::BadPacketBytes(self.max_packet_bytes));
        }
        self.validate_burst()?;
        for (flag, v) in [
            ("drop-every", self.drop_every),
            ("reorder-every", self.reorder_every),
            ("a-drop-every", self.a_drop_every),
            ("a-reorder-every", self.a_reorder_every),
            ("b-drop-every", self.b_drop_every),
            ("b-reorder-every", self.b_reorder_every),
        ] {
            if v == 1 {
                return Err(ConfigError::BadFaultPeriod(flag));
            }
        }
        self.validate_line_b()?;
        self.validate_snapshot()?;
        if let Some(a) = self.retrans_addr {
            if a.ip().is_unspecified() || a.ip().is_multicast() {
                return Err(ConfigError::BadRetrans(format!(
                    "--retrans-addr {a}: must be a unicast address of this host, e.g. 127.0.0.1:31010"
                )));
            }
        }
        if self.retrans_ring_packets == 0 || self.retrans_ring_packets > 1 << 24 {
            return Err(ConfigError::BadRetrans(format!(
                "--retrans-ring-packets {}: must be 1..=16777216",
                self.retrans_ring_packets
            )));
        }
        if self.retrans_max_messages == 0 || self.retrans_max_requests_per_sec == 0 {
            return Err(ConfigError::BadRetrans(
                "--retrans-max-messages and --retrans-max-requests-per-sec must be >= 1".into(),
            ));
        }
        if self.halt_every_ticks > 0 {
            if self.halt_ticks == 0 {
                return Err(ConfigError::BadHalts("--halt-ticks must be >= 1"));
            }
            if self.symbols < 2 {
                return Err(ConfigError::BadHalts("--halt-every-ticks needs --symbols >= 2"));
            }
        }
        if let Some(s) = &self.session {
            if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ConfigError::BadSession(s.clone()));
            }
        }
        Ok(())
    }

    fn validate_line_b(&self) -> Result<(), ConfigError> {
        let Some((group, port)) = self.line_b() else {
            if self.line_b_port.is_some() {
                return Err(ConfigError::BadLineB("--line-b-port needs --line-b-group".into()));
            }
            if self.line_faults(true) != Faults::default() {
                return Err(ConfigError::BadLineB("--b-*-every needs --line-b-group".into()));
            }
            return Ok(());
        };
        if !group.is_multicast() {
            return Err(ConfigError::BadLineB(format!("--line-b-group {group}: not a multicast address")));
        }
        if port == 0 {
            return Err(ConfigError::BadLineB("--line-b-port 0: must be 1..=65535".into()));
        }
        if (group, port) == (self.group, self.port) {
            return Err(ConfigError::BadLineB(format!(
                "{group}:{port} is line A's group and port; give line B its own"
            )));
        }
        Ok(())
    }

    fn validate_snapshot(&self) -> Result<(), ConfigError> {
        if self.snapshot_rate == 0 {
            return Err(ConfigError::BadSnapshot("--snapshot-rate 0: must be >= 1 symbol per second".into()));
        }
        let Some((group, port)) = self.snapshot() else {
            if self.snapshot_port.is_some() {
                return Err(ConfigError::BadSnapshot("--snapshot-port needs --snapshot-group".into()));
            }
            return Ok(());
        };
        if !group.is_multicast() {
            return Err(ConfigError::BadSnapshot(format!(
                "--snapshot-group {group}: not a multicast address"
            )));
        }
        if port == 0 {
            return Err(ConfigError::BadSnapshot("--snapshot-port 0: must be 1..=65535".into()));
        }
        if (group, port) == (self.group, self.port) || Some((group, port)) == self.line_b() {
            return Err(ConfigError::BadSnapshot(format!("{group}:{port} is a live line's group and port")));
        }
        Ok(())
    }

    /// The snapshot channel's group and port, when enabled.
    pub fn snapshot(&self) -> Option<(Ipv4Addr, u16)> {
        self.snapshot_group.map(|g| (g, self.snapshot_port.unwrap_or(self.port)))
    }

    /// Line B's group and port, when enabled.
    pub fn line_b(&self) -> Option<(Ipv4Addr, u16)> {
        self.line_b_group.map(|g| (g, self.line_b_port.unwrap_or(self.port)))
    }

    /// Faults of the old flags, which apply to every line.
    pub(crate) fn both_faults(&self) -> Faults {
        Faults { drop_every: self.drop_every, dup_every: self.dup_every, reorder_every: self.reorder_every }
    }

    /// Faults of line A only (`b` false) or line B only (`b` true).
    pub(crate) fn line_faults(&self, b: bool) -> Faults {
        if b {
            Faults {
                drop_every: self.b_drop_every,
                dup_every: self.b_dup_every,
                reorder_every: self.b_reorder_every,
            }
        } else {
            Faults {
                drop_every: self.a_drop_every,
                dup_every: self.a_dup_every,
                reorder_every: self.a_reorder_every,
            }
        }
    }

    fn validate_burst(&self) -> Result<(), ConfigError> {
        let m = self.burst_multiplier;
        let any = self.burst_every_ms != 0 || self.burst_len_ms != 0 || m != 0.0;
        if !any {
            return Ok(());
        }
        if !(m.is_finite() && m > 0.0) {
            return Err(ConfigError::BadBurst("--burst-multiplier must be a finite number > 0"));
        }
        if self.burst_every_ms == 0 || self.burst_len_ms == 0 {
            return Err(ConfigError::BadBurst(
                "--burst-every-ms, --burst-len-ms and --burst-multiplier must all be set",
            ));
        }
        if self.burst_len_ms > self.burst_every_ms {
            return Err(ConfigError::BadBurst("--burst-len-ms must not exceed --burst-every-ms"));
        }
        if self.rate == 0 {
            return Err(ConfigError::BadBurst("bursts need a finite --rate"));
        }
        Ok(())
    }

    /// Bursts as (period, length, multiplier), when enabled.
    pub(crate) fn burst(&self) -> Option<(Duration, Duration, f64)> {
        (self.burst_multiplier > 0.0 && self.burst_every_ms > 0 && self.burst_len_ms > 0).then(|| {
            (
                Duration::from_millis(self.burst_every_ms),
                Duration::from_millis(self.burst_len_ms),
                self.burst_multiplier,
            )
        })
    }

    /// Smallest `--max-packet-bytes` that still carries a quote; kept next
    /// to the config so the relation to the codec's sizes is visible.
    pub(crate) const fn largest_message_block() -> usize {
        BLOCK_PREFIX_LEN + QUOTE_LEN
    }
}

/// Parses `30`, `30s`, `1.5s`, `500ms`, `250us`, `2m` or `1h`; a bare number
/// is seconds, like `sleep(1)`.
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let secs_per_unit = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" | "min" | "mins" => 60.0,
        "h" | "hr" | "hrs" => 3600.0,
        _ => return Err(format!("{s:?}: expected a duration like 30, 30s, 500ms, 2m or 1h")),
    };
    let n: f64 =
        num.parse().map_err(|_| format!("{s:?}: expected a duration like 30, 30s, 500ms, 2m or 1h"))?;
    Duration::try_from_secs_f64(n * secs_per_unit).map_err(|e| format!("{s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<SimConfig, String> {
        let argv = std::iter::once("feed-sim").chain(args.iter().copied());
        SimConfig::try_parse_from(argv).map_err(|e| e.to_string())
    }

    #[test]
    fn default_matches_cli_defaults() {
        // Guards against a default changed in one place only.
        assert_eq!(parse(&[]).unwrap(), SimConfig::default());
        SimConfig::default().validate().unwrap();
    }

    #[test]
    fn rejects_bad_values_with_the_flag_named() {
        let cases: &[(&[&str], &str)] = &[
            (&["--group", "10.0.0.1"], "--group 10.0.0.1: not a multicast"),
            (&["--port", "0"], "--port 0"),
            (&["--interface", "0.0.0.0"], "--interface 0.0.0.0"),
            (&["--interface", "239.1.1.1"], "--interface 239.1.1.1"),
            (&["--ttl", "256"], "--ttl 256: must be 0..=255"),
            (&["--symbols", "0"], "--symbols 0"),
            (&["--symbols", "65536"], "--symbols 65536"),
            (&["--zipf", "-1"], "--zipf -1"),
            (&["--zipf", "NaN"], "--zipf NaN"),
            (&["--trade-ratio", "1.5"], "--trade-ratio 1.5"),
            (&["--max-packet-bytes", "60"], "--max-packet-bytes 60: must be 84..=65000"),
            (&["--max-packet-bytes", "65001"], "--max-packet-bytes 65001"),
            (&["--burst-multiplier", "3"], "must all be set"),
            (
                &["--burst-every-ms", "10", "--burst-len-ms", "20", "--burst-multiplier", "2"],
                "must not exceed",
            ),
            (&["--burst-every-ms", "10", "--burst-len-ms", "5", "--burst-multiplier", "-2"], "> 0"),
            (
                &["--rate", "0", "--burst-every-ms", "10", "--burst-len-ms", "5", "--burst-multiplier", "2"],
                "finite --rate",
            ),
            (&["--drop-every", "1"], "--drop-every 1"),
            (&["--reorder-every", "1"], "--reorder-every 1"),
            (&["--session", "ELEVENCHARS"], "--session \"ELEVENCHARS\""),
            (&["--halt-every-ticks", "10", "--halt-ticks", "0"], "--halt-ticks must be >= 1"),
            (&["--b-drop-every", "1"], "--b-drop-every 1"),
            (&["--retrans-addr", "0.0.0.0:5000"], "--retrans-addr 0.0.0.0:5000"),
            (&["--snapshot-group", "239.255.0.1"], "is a live line's group and port"),
            (&["--snapshot-group", "10.1.1.1"], "--snapshot-group 10.1.1.1: not a multicast"),
            (&["--snapshot-port", "9"], "--snapshot-port needs --snapshot-group"),
            (&["--snapshot-rate", "0"], "--snapshot-rate 0"),
            (&["--retrans-ring-packets", "0"], "--retrans-ring-packets 0"),
            (&["--retrans-max-messages", "0"], "must be >= 1"),
            (&["--b-drop-every", "3"], "--b-*-every needs --line-b-group"),
            (&["--line-b-port", "3"], "--line-b-port needs --line-b-group"),
            (&["--line-b-group", "10.0.0.1"], "--line-b-group 10.0.0.1: not a multicast"),
            (&["--line-b-group", "239.255.0.1"], "line A's group and port"),
            (&["--halt-every-ticks", "10", "--symbols", "1"], "--symbols >= 2"),
            (&["--session", "A B"], "--session \"A B\""),
        ];
        for (args, want) in cases {
            let cfg = parse(args).unwrap_or_else(|e| panic!("{args:?} should parse: {e}"));
            let err = cfg.validate().expect_err(&format!("{args:?} should be rejected")).to_string();
            assert!(err.contains(want), "{args:?}: {err:?} lacks {want:?}");
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
    }

    #[test]
    fn accepts_edge_values() {
        let ok: &[&[&str]] = &[
            &["--ttl", "255", "--symbols", "65535", "--zipf", "0", "--trade-ratio", "1"],
            &["--max-packet-bytes", "84"],
            &["--max-packet-bytes", "65000", "--dup-every", "1", "--drop-every", "2"],
            &["--burst-every-ms", "100", "--burst-len-ms", "100", "--burst-multiplier", "0.5"],
            &["--session", "ABCDEFGHIJ", "--rate", "0", "--duration", "1.5s"],
            &["--line-b-group", "239.255.0.2", "--b-drop-every", "2", "--a-dup-every", "1"],
            &["--line-b-group", "239.255.0.1", "--line-b-port", "31002"],
        ];
        for args in ok {
            let cfg = parse(args).unwrap();
            cfg.validate().unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
    }

    #[test]
    fn unparsable_values_fail_in_clap() {
        assert!(parse(&["--port", "70000"]).unwrap_err().contains("--port"));
        assert!(parse(&["--group", "nope"]).unwrap_err().contains("--group"));
        assert!(parse(&["--duration", "5 parsecs"]).unwrap_err().contains("--duration"));
    }

    #[test]
    fn durations() {
        let cases = [
            ("30", Duration::from_secs(30)),
            ("30s", Duration::from_secs(30)),
            ("1.5s", Duration::from_millis(1500)),
            ("500ms", Duration::from_millis(500)),
            ("250us", Duration::from_micros(250)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
        ];
        for (s, want) in cases {
            assert_eq!(parse_duration(s), Ok(want), "{s}");
        }
        for bad in ["", "s", "-1s", "1x", "1.2.3"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn smallest_packet_holds_a_quote() {
        assert!(MIN_PACKET_BYTES >= HEADER_LEN + SimConfig::largest_message_block());
    }
}
