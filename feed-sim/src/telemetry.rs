//! Prometheus metrics: names in one place, handles built once per run.
//!
//! The send loop holds a `Handles` and adds per packet, never per tick,
//! so metrics cost nothing measurable at millions of ticks per second.
//! Without `--metrics-addr` no recorder is installed and every handle is a
//! no-op.

use std::net::SocketAddr;

use metrics::{counter, describe_counter, describe_gauge, gauge, Counter, Gauge, Unit};
use metrics_exporter_prometheus::PrometheusBuilder;

/// Datagrams written to the socket, of every kind (data, duplicates,
/// heartbeats, end of session).
pub const PACKETS_SENT: &str = "feedsim_packets_sent_total";
/// Sequenced messages generated, by `type` =
/// directory|quote|trade|system_event|trading_action
/// (including those in packets dropped on purpose).
pub const MESSAGES_SENT: &str = "feedsim_messages_sent_total";
/// Bytes written to the socket (UDP payload).
pub const BYTES_SENT: &str = "feedsim_bytes_sent_total";
/// Heartbeat datagrams sent.
pub const HEARTBEATS_SENT: &str = "feedsim_heartbeats_sent_total";
/// Faults injected, by `kind` = drop|dup|reorder and `line` = a|b.
pub const FAULTS_INJECTED: &str = "feedsim_faults_injected_total";
/// Datagrams written on one line, by `line` = a|b.
pub const LINE_PACKETS_SENT: &str = "feedsim_line_packets_sent_total";
/// Bytes written on one line, by `line` = a|b.
pub const LINE_BYTES_SENT: &str = "feedsim_line_bytes_sent_total";
/// Retransmission requests, by `result` =
/// answered|gone|not_yet|rate_limited|malformed|foreign_session.
pub const RETRANS_REQUESTS: &str = "feedsim_retrans_requests_total";
/// Datagrams sent by the retransmission server (data and heartbeats).
pub const RETRANS_PACKETS: &str = "feedsim_retrans_packets_sent_total";
/// Messages retransmitted.
pub const RETRANS_MESSAGES: &str = "feedsim_retrans_messages_sent_total";
/// Snapshot-channel cycles completed.
pub const SNAPSHOT_CYCLES: &str = "feedsim_snapshot_cycles_total";
/// Symbol snapshots sent on the snapshot channel.
pub const SNAPSHOT_SYMBOLS: &str = "feedsim_snapshot_symbols_sent_total";
/// Datagrams sent on the snapshot channel.
pub const SNAPSHOT_PACKETS: &str = "feedsim_snapshot_packets_sent_total";
/// Ticks per second the pacer aims at right now (0 = unlimited).
pub const TICKS_TARGET: &str = "feedsim_ticks_per_second_target";

/// Installs the global Prometheus recorder with its HTTP listener on
/// `addr`. Must run inside a tokio runtime, which then serves `/metrics`.
///
/// # Errors
/// If the address cannot be bound or a recorder is already installed in
/// this process (only one per process: run a second simulator without
/// `metrics_addr`).
pub fn install(addr: SocketAddr) -> anyhow::Result<()> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| anyhow::anyhow!("serving metrics on {addr}: {e}"))?;
    describe();
    Ok(())
}

fn describe() {
    describe_counter!(
        PACKETS_SENT,
        Unit::Count,
        "Datagrams sent (data, duplicates, heartbeats, end of session)"
    );
    describe_counter!(MESSAGES_SENT, Unit::Count, "Sequenced messages generated, by type");
    describe_counter!(BYTES_SENT, Unit::Bytes, "UDP payload bytes sent");
    describe_counter!(HEARTBEATS_SENT, Unit::Count, "Heartbeat datagrams sent");
    describe_counter!(FAULTS_INJECTED, Unit::Count, "Faults injected on purpose, by kind and line");
    describe_counter!(LINE_PACKETS_SENT, Unit::Count, "Datagrams sent on one line (A or B)");
    describe_counter!(LINE_BYTES_SENT, Unit::Bytes, "UDP payload bytes sent on one line (A or B)");
    describe_counter!(RETRANS_REQUESTS, Unit::Count, "Retransmission requests, by result");
    describe_counter!(RETRANS_PACKETS, Unit::Count, "Datagrams sent by the retransmission server");
    describe_counter!(RETRANS_MESSAGES, Unit::Count, "Messages retransmitted");
    describe_counter!(SNAPSHOT_CYCLES, Unit::Count, "Snapshot-channel cycles completed");
    describe_counter!(SNAPSHOT_SYMBOLS, Unit::Count, "Symbol snapshots sent on the snapshot channel");
    describe_counter!(SNAPSHOT_PACKETS, Unit::Count, "Datagrams sent on the snapshot channel");
    describe_gauge!(TICKS_TARGET, "Ticks per second the pacer aims at (0 = unlimited)");
}

/// Pre-registered handles for the send loop.
#[derive(Debug, Clone)]
pub(crate) struct Handles {
    pub heartbeats: Counter,
    pub directory: Counter,
    pub quotes: Counter,
    pub trades: Counter,
    pub system: Counter,
    pub actions: Counter,
    pub target: Gauge,
}

/// Pre-registered handles of one line.
#[derive(Debug, Clone)]
pub(crate) struct LineHandles {
    pub packets: Counter,
    pub bytes: Counter,
    /// The unlabelled totals over every line.
    pub all_packets: Counter,
    pub all_bytes: Counter,
    pub drops: Counter,
    pub dups: Counter,
    pub reorders: Counter,
}

impl LineHandles {
    /// Registers the series of line `line` (`a` or `b`).
    pub fn new(line: &'static str) -> Self {
        LineHandles {
            packets: counter!(LINE_PACKETS_SENT, "line" => line),
            bytes: counter!(LINE_BYTES_SENT, "line" => line),
            all_packets: counter!(PACKETS_SENT),
            all_bytes: counter!(BYTES_SENT),
            drops: counter!(FAULTS_INJECTED, "kind" => "drop", "line" => line),
            dups: counter!(FAULTS_INJECTED, "kind" => "dup", "line" => line),
            reorders: counter!(FAULTS_INJECTED, "kind" => "reorder", "line" => line),
        }
    }
}

impl Handles {
    /// Registers every series up front, so all of them appear at 0 on the
    /// first scrape instead of popping into existence mid-run.
    pub fn new() -> Self {
        Handles {
            heartbeats: counter!(HEARTBEATS_SENT),
            directory: counter!(MESSAGES_SENT, "type" => "directory"),
            quotes: counter!(MESSAGES_SENT, "type" => "quote"),
            trades: counter!(MESSAGES_SENT, "type" => "trade"),
            system: counter!(MESSAGES_SENT, "type" => "system_event"),
            actions: counter!(MESSAGES_SENT, "type" => "trading_action"),
            target: gauge!(TICKS_TARGET),
        }
    }
}
