//! Prometheus metrics, served at `/metrics` on a listener of their own.
//!
//! The hot paths never call into this module per tick: ingest and the
//! WebSocket writers count with relaxed atomics in [`FeedStats`] and
//! [`WsStats`], and a scrape copies those atomics into metric handles
//! ([`Telemetry::render`]) right before rendering. The only metric
//! recorded on a hot path, the tick-to-send latency, goes into a fixed
//! bucket [`AtomicHistogram`] (no lock, no allocation).
//!
//! Each gateway owns its recorder ([`Telemetry`]), not the process-global
//! one, so several gateways in one process (the tests) never mix counts.
//!
//! # Layout
//! - this file: metric names, [`Telemetry`] (handles, scrape-time sync).
//! - [`histogram`]: the lock-free fixed-bucket histogram and its rendering.
//! - [`grpc`]: the tower layer that counts and times gRPC calls.
//! - [`process`]: CPU, memory and file descriptors from `/proc/self`.
//! - `http`: the minimal HTTP/1 server behind [`serve`].
//!
//! Every metric is listed, with its type, unit and meaning, in
//! `dashboards/README.md`.
//!
//! [`FeedStats`]: crate::ingest::FeedStats
//! [`WsStats`]: crate::ws::WsStats

pub mod grpc;
pub use crate::histogram;
mod http;

pub use grpc::{GrpcCall, GrpcMetrics, GrpcMetricsLayer};
pub use histogram::AtomicHistogram;
pub use http::serve;

use crate::core::Core;
use crate::ingest::lines::Line;
use crate::ingest::{DECODE_REASONS, SUSPECT_REASONS};
use crate::ws::close_code;
use histogram::{write_header, write_histogram, write_sample, LATENCY_BUCKETS};
use metrics::{counter, describe_counter, describe_gauge, gauge, Counter, Gauge, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use quotecast_proto::clock::now_ns;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Metric names, in one place (Prometheus conventions: one `quotecast_`
/// prefix, base units in the name, `_total` on counters).
pub mod names {
    /// Feed datagrams received (valid or not).
    pub const FEED_PACKETS: &str = "quotecast_feed_received_packets_total";
    /// Feed datagram payload bytes received.
    pub const FEED_BYTES: &str = "quotecast_feed_received_bytes_total";
    /// Sequenced feed messages applied.
    pub const FEED_MESSAGES: &str = "quotecast_feed_received_messages_total";
    /// Feed heartbeats received.
    pub const FEED_HEARTBEATS: &str = "quotecast_feed_heartbeats_total";
    /// Datagrams rejected by the decoder, by `reason`.
    pub const FEED_DECODE_ERRORS: &str = "quotecast_feed_decode_errors_total";
    /// Sequence holes declared lost.
    pub const FEED_GAPS: &str = "quotecast_feed_gaps_total";
    /// Messages lost in those holes.
    pub const FEED_MISSED: &str = "quotecast_feed_missed_messages_total";
    /// Packets dropped as duplicates.
    pub const FEED_DUPLICATES: &str = "quotecast_feed_duplicate_packets_total";
    /// Packets that arrived out of order and were put back in order.
    pub const FEED_REORDERED: &str = "quotecast_feed_reordered_packets_total";
    /// Feed sender restarts (new session id).
    pub const FEED_RESTARTS: &str = "quotecast_feed_restarts_total";
    /// Feed datagrams not trusted and never applied, by `reason`.
    pub const FEED_SUSPECT: &str = "quotecast_feed_suspect_packets_total";
    /// Feed sessions that ended (end-of-session packet).
    pub const FEED_SESSIONS_ENDED: &str = "quotecast_feed_sessions_ended_total";
    /// Messages for a locate code not in the directory yet.
    pub const FEED_UNKNOWN_LOCATE: &str = "quotecast_feed_unknown_locate_messages_total";
    /// Trading actions (halts, resumptions) received.
    pub const FEED_TRADING_ACTIONS: &str = "quotecast_feed_trading_actions_total";
    /// System events (start/end of messages, market open/close) received.
    pub const FEED_SYSTEM_EVENTS: &str = "quotecast_feed_system_events_total";
    /// 1 while packets arrive within the feed timeout.
    pub const FEED_UP: &str = "quotecast_feed_up";
    /// Constant 1 labelled with the node's name and version.
    pub const NODE_INFO: &str = "quotecast_node_info";
    /// 1 while the node says ready (/readyz 200, gRPC SERVING).
    pub const READY: &str = "quotecast_ready";
    /// 1 from SIGTERM until the node stops (draining out of its fleet).
    pub const DRAINING: &str = "quotecast_draining";
    /// Seconds since the last datagram (since start if none yet).
    pub const FEED_LAST_PACKET_AGE: &str = "quotecast_feed_last_packet_age_seconds";
    /// Next feed sequence number expected.
    pub const FEED_NEXT_SEQ: &str = "quotecast_feed_next_sequence";
    /// Datagrams received per feed line, by `line` ("a", "b").
    pub const FEED_LINE_PACKETS: &str = "quotecast_feed_line_received_packets_total";
    /// Data packets applied from a line's copy first, by `line`.
    pub const FEED_LINE_WON: &str = "quotecast_feed_line_won_packets_total";
    /// Data packets a line delivered after the other line's copy, by `line`.
    pub const FEED_LINE_REDUNDANT: &str = "quotecast_feed_line_redundant_packets_total";
    /// Messages missing on a line (covered by the other or not), by `line`.
    pub const FEED_LINE_MISSED: &str = "quotecast_feed_line_missed_messages_total";
    /// 1 while a line brings trusted packets within the feed timeout, by `line`.
    pub const FEED_LINE_UP: &str = "quotecast_feed_line_up";
    /// 1 when a line is configured (A always; B with --group-b), by `line`.
    pub const FEED_LINE_ENABLED: &str = "quotecast_feed_line_enabled";
    /// 1 with `--retrans-addr`.
    pub const RETRANS_ENABLED: &str = "quotecast_feed_retrans_enabled";
    /// Retransmission requests sent.
    pub const RETRANS_REQUESTS: &str = "quotecast_feed_retrans_requests_total";
    /// Missing ranges asked for, by how they ended.
    pub const RETRANS_RANGES: &str = "quotecast_feed_retrans_ranges_total";
    /// Requests not sent because the request rate was spent.
    pub const RETRANS_REFUSED: &str = "quotecast_feed_retrans_rate_limited_total";
    /// Answer datagrams received.
    pub const RETRANS_PACKETS: &str = "quotecast_feed_retrans_received_packets_total";
    /// Messages applied from answers.
    pub const RETRANS_MESSAGES: &str = "quotecast_feed_retrans_applied_messages_total";
    /// Answers that came after the lines had filled the hole.
    pub const RETRANS_LATE: &str = "quotecast_feed_retrans_late_packets_total";
    /// First request to complete fill, seconds.
    pub const RETRANS_FILL: &str = "quotecast_feed_retrans_fill_seconds";
    /// 1 while connected to the feed's NATS server (`--feed-nats`).
    pub const NATS_CONNECTED: &str = "quotecast_feed_nats_connected";
    /// Feed NATS connections lost.
    pub const NATS_DISCONNECTS: &str = "quotecast_feed_nats_disconnects_total";
    /// Feed NATS messages written to ingest, by `line` (a, b, snapshot, retrans).
    pub const NATS_MESSAGES: &str = "quotecast_feed_nats_messages_total";
    /// Feed NATS messages not written to ingest, by `reason`.
    pub const NATS_DROPPED: &str = "quotecast_feed_nats_dropped_messages_total";
    /// Retransmission requests published over NATS.
    pub const NATS_RETRANS_REQUESTS: &str = "quotecast_feed_nats_retrans_requests_total";
    /// 1 with `--snapshot-group`.
    pub const SNAPSHOT_ENABLED: &str = "quotecast_feed_snapshot_enabled";
    /// Snapshot-channel datagrams received.
    pub const SNAPSHOT_PACKETS: &str = "quotecast_feed_snapshot_received_packets_total";
    /// Snapshot-channel messages of the followed session.
    pub const SNAPSHOT_MESSAGES: &str = "quotecast_feed_snapshot_received_messages_total";
    /// Snapshot-channel messages lost.
    pub const SNAPSHOT_LOST: &str = "quotecast_feed_snapshot_lost_messages_total";
    /// Snapshot-channel datagrams of another session.
    pub const SNAPSHOT_FOREIGN: &str = "quotecast_feed_snapshot_foreign_packets_total";
    /// Complete snapshot cycles.
    pub const SNAPSHOT_CYCLES: &str = "quotecast_feed_snapshot_cycles_total";
    /// Duration of the last complete cycle.
    pub const SNAPSHOT_CYCLE_SECONDS: &str = "quotecast_feed_snapshot_cycle_seconds";
    /// Symbols rebuilt from a symbol snapshot.
    pub const SNAPSHOT_RECOVERED: &str = "quotecast_feed_snapshot_recovered_symbols_total";
    /// Symbol snapshots too old to use.
    pub const SNAPSHOT_TOO_OLD: &str = "quotecast_feed_snapshot_too_old_total";
    /// 1 during a late start (not ready until every symbol is rebuilt).
    pub const FEED_JOINING: &str = "quotecast_feed_joining";
    /// Time the last late start took to rebuild every symbol.
    pub const LATE_JOIN_SECONDS: &str = "quotecast_feed_late_join_seconds";
    /// Symbols in the book.
    pub const BOOK_SYMBOLS: &str = "quotecast_book_symbols";
    /// Most symbols the book can hold.
    pub const BOOK_CAPACITY: &str = "quotecast_book_capacity_symbols";
    /// Symbols currently stale.
    pub const BOOK_STALE: &str = "quotecast_book_stale_symbols";
    /// Bytes held by the replay rings.
    pub const HUB_REPLAY_BYTES: &str = "quotecast_hub_replay_bytes";
    /// Ceiling of the replay rings.
    pub const HUB_REPLAY_MAX_BYTES: &str = "quotecast_hub_replay_max_bytes";
    /// Directory entries refused because the book was full.
    pub const BOOK_FULL: &str = "quotecast_book_rejected_symbols_total";
    /// WebSocket connections open now.
    pub const WS_CONNECTIONS: &str = "quotecast_ws_connections";
    /// Connection limit (`--max-connections`).
    pub const WS_MAX_CONNECTIONS: &str = "quotecast_ws_max_connections";
    /// WebSocket connections upgraded.
    pub const WS_OPENED: &str = "quotecast_ws_connections_opened_total";
    /// WebSocket connections closed, by `reason`.
    pub const WS_CLOSED: &str = "quotecast_ws_connections_closed_total";
    /// TLS handshakes that failed.
    pub const TLS_FAILURES: &str = "quotecast_tls_handshake_failures_total";
    /// Connections from a trusted proxy without a usable PROXY header.
    pub const PROXY_ERRORS: &str = "quotecast_ws_proxy_header_errors_total";
    /// Credentials refused, by `reason`.
    pub const AUTH_FAILURES: &str = "quotecast_auth_failures_total";
    /// Upgrades refused for their Origin.
    pub const AUTH_ORIGIN_REFUSED: &str = "quotecast_auth_origin_refused_total";
    /// Upgrades refused: the address failed authentication too often.
    pub const AUTH_BLOCKED: &str = "quotecast_auth_blocked_total";
    /// Connections refused by their key's connection limit.
    pub const AUTH_CONNECTION_LIMITED: &str = "quotecast_auth_connection_limited_total";
    /// Symbols refused as not entitled.
    pub const AUTH_NOT_ENTITLED: &str = "quotecast_auth_not_entitled_total";
    /// Credentials refreshed on open connections.
    pub const AUTH_REFRESHED: &str = "quotecast_auth_refreshed_total";
    /// Connections closed at their token's expiry.
    pub const AUTH_EXPIRED_CLOSES: &str = "quotecast_auth_expired_closes_total";
    /// Connections closed because their key was revoked.
    pub const AUTH_REVOKED_CLOSES: &str = "quotecast_auth_revoked_closes_total";
    /// Symbol subscriptions over all connections.
    pub const WS_SUBSCRIPTIONS: &str = "quotecast_ws_subscriptions";
    /// Client requests received.
    pub const WS_REQUESTS: &str = "quotecast_ws_requests_total";
    /// Client requests that could not be parsed.
    pub const WS_BAD_REQUESTS: &str = "quotecast_ws_bad_requests_total";
    /// Client requests refused by the rate limit.
    pub const WS_RATE_LIMITED: &str = "quotecast_ws_rate_limited_requests_total";
    /// Resumes that fell back to a snapshot.
    pub const WS_RESUME_FAILED: &str = "quotecast_ws_resume_failed_total";
    /// WebSocket messages written.
    pub const WS_FRAMES: &str = "quotecast_ws_sent_frames_total";
    /// Quote updates written.
    pub const WS_UPDATES: &str = "quotecast_ws_sent_updates_total";
    /// Bytes of update frames written.
    pub const WS_BYTES: &str = "quotecast_ws_sent_bytes_total";
    /// Updates skipped by conflation.
    pub const WS_CONFLATED: &str = "quotecast_ws_conflated_updates_total";
    /// Fan-out events a worker's lane conflated because the worker fell behind.
    pub const FANOUT_CONFLATED: &str = "quotecast_fanout_conflated_events_total";
    /// Connections closed as slow consumers.
    pub const WS_SLOW_CLOSES: &str = "quotecast_ws_slow_consumer_closes_total";
    /// Plain HTTP requests (health checks) answered on the WebSocket port.
    pub const WS_HTTP_REQUESTS: &str = "quotecast_ws_http_requests_total";
    /// Connections refused before their handshake (pending bounds).
    pub const WS_HANDSHAKES_REFUSED: &str = "quotecast_ws_handshakes_refused_total";
    /// Handshakes not finished within the handshake timeout.
    pub const WS_HANDSHAKE_TIMEOUTS: &str = "quotecast_ws_handshake_timeouts_total";
    /// Tick-to-send latency histogram.
    pub const WS_SEND_LATENCY: &str = "quotecast_ws_tick_to_send_seconds";
    /// gRPC requests finished, by service, method, code.
    pub const GRPC_REQUESTS: &str = "quotecast_grpc_requests_total";
    /// gRPC requests in progress, by service, method.
    pub const GRPC_IN_FLIGHT: &str = "quotecast_grpc_requests_in_flight";
    /// gRPC handling time histogram, by service, method, code.
    pub const GRPC_DURATION: &str = "quotecast_grpc_request_duration_seconds";
    /// CPU time of the process.
    pub const PROCESS_CPU: &str = "quotecast_process_cpu_seconds_total";
    /// Resident memory.
    pub const PROCESS_RSS: &str = "quotecast_process_resident_memory_bytes";
    /// Virtual memory.
    pub const PROCESS_VSIZE: &str = "quotecast_process_virtual_memory_bytes";
    /// Open file descriptors.
    pub const PROCESS_FDS: &str = "quotecast_process_open_fds";
    /// File descriptor limit.
    pub const PROCESS_MAX_FDS: &str = "quotecast_process_max_fds";
    /// OS threads.
    pub const PROCESS_THREADS: &str = "quotecast_process_threads";
    /// Process start time.
    pub const PROCESS_START: &str = "quotecast_process_start_time_seconds";
    /// Always 1, labelled with the version.
    pub const BUILD_INFO: &str = "quotecast_build_info";
}

/// Handles mirroring [`crate::ingest::FeedStats`].
struct FeedHandles {
    packets: Counter,
    bytes: Counter,
    messages: Counter,
    heartbeats: Counter,
    decode_errors: [Counter; DECODE_REASONS.len()],
    gaps: Counter,
    missed: Counter,
    duplicates: Counter,
    reordered: Counter,
    restarts: Counter,
    suspect: [Counter; SUSPECT_REASONS.len()],
    sessions_ended: Counter,
    unknown_locate: Counter,
    trading_actions: Counter,
    system_events: Counter,
    book_full: Counter,
    up: Gauge,
    ready: Gauge,
    draining: Gauge,
    last_packet_age: Gauge,
    next_seq: Gauge,
    symbols: Gauge,
    capacity: Gauge,
    stale: Gauge,
    replay_bytes: Gauge,
    replay_max_bytes: Gauge,
    lines: [LineHandles; 2],
    retrans: RetransHandles,
    snapshot: SnapshotHandles,
    nats: NatsHandles,
}

/// Handles mirroring [`crate::feed_nats::NatsStats`]; every series exists
/// (at 0) without `--feed-nats`.
struct NatsHandles {
    connected: Gauge,
    disconnects: Counter,
    messages: [Counter; 4],
    dropped: [Counter; crate::feed_nats::DROP_REASONS.len()],
    retrans_requests: Counter,
}

impl NatsHandles {
    fn new() -> Self {
        use crate::feed_nats::{Channel, DROP_REASONS};
        use names::*;
        NatsHandles {
            connected: gauge!(NATS_CONNECTED),
            disconnects: counter!(NATS_DISCONNECTS),
            messages: Channel::ALL.map(|c| counter!(NATS_MESSAGES, "line" => c.label())),
            dropped: DROP_REASONS.map(|r| counter!(NATS_DROPPED, "reason" => r)),
            retrans_requests: counter!(NATS_RETRANS_REQUESTS),
        }
    }

    fn sync(&self, s: &crate::feed_nats::NatsStats) {
        let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        self.connected.set(if s.connected.load(Ordering::Relaxed) { 1.0 } else { 0.0 });
        self.disconnects.absolute(l(&s.disconnects));
        for (c, v) in self.messages.iter().zip(&s.messages) {
            c.absolute(l(v));
        }
        for (c, v) in self.dropped.iter().zip(&s.dropped) {
            c.absolute(l(v));
        }
        self.retrans_requests.absolute(l(&s.retrans_requests));
    }
}

/// Handles mirroring [`crate::ingest::SnapshotStats`] and the late start.
struct SnapshotHandles {
    enabled: Gauge,
    packets: Counter,
    messages: Counter,
    lost: Counter,
    foreign: Counter,
    cycles: Counter,
    cycle_seconds: Gauge,
    recovered: Counter,
    too_old: Counter,
    joining: Gauge,
    late_join_seconds: Gauge,
}

impl SnapshotHandles {
    fn new() -> Self {
        use names::*;
        SnapshotHandles {
            enabled: gauge!(SNAPSHOT_ENABLED),
            packets: counter!(SNAPSHOT_PACKETS),
            messages: counter!(SNAPSHOT_MESSAGES),
            lost: counter!(SNAPSHOT_LOST),
            foreign: counter!(SNAPSHOT_FOREIGN),
            cycles: counter!(SNAPSHOT_CYCLES),
            cycle_seconds: gauge!(SNAPSHOT_CYCLE_SECONDS),
            recovered: counter!(SNAPSHOT_RECOVERED),
            too_old: counter!(SNAPSHOT_TOO_OLD),
            joining: gauge!(FEED_JOINING),
            late_join_seconds: gauge!(LATE_JOIN_SECONDS),
        }
    }

    fn sync(&self, f: &crate::ingest::FeedStats) {
        let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let flag = |b: &std::sync::atomic::AtomicBool| if b.load(Ordering::Relaxed) { 1.0 } else { 0.0 };
        let s = &f.snapshot;
        self.enabled.set(flag(&s.enabled));
        self.packets.absolute(l(&s.packets));
        self.messages.absolute(l(&s.messages));
        self.lost.absolute(l(&s.lost_messages));
        self.foreign.absolute(l(&s.foreign_packets));
        self.cycles.absolute(l(&s.cycles));
        self.cycle_seconds.set(l(&s.last_cycle_ns) as f64 * 1e-9);
        self.recovered.absolute(l(&s.recovered));
        self.too_old.absolute(l(&s.too_old));
        self.joining.set(flag(&f.joining));
        self.late_join_seconds.set(l(&s.late_join_ns) as f64 * 1e-9);
    }
}

/// Handles mirroring [`crate::ingest::RetransStats`] (the fill latency
/// histogram is rendered from the stats directly).
struct RetransHandles {
    enabled: Gauge,
    requests: Counter,
    filled: Counter,
    gone: Counter,
    timed_out: Counter,
    refused: Counter,
    packets: Counter,
    messages: Counter,
    late: Counter,
}

impl RetransHandles {
    fn new() -> Self {
        use names::*;
        RetransHandles {
            enabled: gauge!(RETRANS_ENABLED),
            requests: counter!(RETRANS_REQUESTS),
            filled: counter!(RETRANS_RANGES, "result" => "filled"),
            gone: counter!(RETRANS_RANGES, "result" => "gone"),
            timed_out: counter!(RETRANS_RANGES, "result" => "timed_out"),
            refused: counter!(RETRANS_REFUSED),
            packets: counter!(RETRANS_PACKETS),
            messages: counter!(RETRANS_MESSAGES),
            late: counter!(RETRANS_LATE),
        }
    }

    fn sync(&self, s: &crate::ingest::RetransStats) {
        let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        self.enabled.set(if s.enabled.load(Ordering::Relaxed) { 1.0 } else { 0.0 });
        self.requests.absolute(l(&s.requests));
        self.filled.absolute(l(&s.filled));
        self.gone.absolute(l(&s.gone));
        self.timed_out.absolute(l(&s.timed_out));
        self.refused.absolute(l(&s.refused));
        self.packets.absolute(l(&s.packets));
        self.messages.absolute(l(&s.messages));
        self.late.absolute(l(&s.late_packets));
    }
}

/// Handles of one feed line, labelled `line="a"|"b"`; line B's series
/// exist (at 0) without line B, so queries and panels work either way.
struct LineHandles {
    packets: Counter,
    won: Counter,
    redundant: Counter,
    missed: Counter,
    up: Gauge,
    enabled: Gauge,
}

impl LineHandles {
    fn new(line: Line) -> Self {
        use names::*;
        let l = line.label();
        LineHandles {
            packets: counter!(FEED_LINE_PACKETS, "line" => l),
            won: counter!(FEED_LINE_WON, "line" => l),
            redundant: counter!(FEED_LINE_REDUNDANT, "line" => l),
            missed: counter!(FEED_LINE_MISSED, "line" => l),
            up: gauge!(FEED_LINE_UP, "line" => l),
            enabled: gauge!(FEED_LINE_ENABLED, "line" => l),
        }
    }
}

/// Handles mirroring [`crate::ws::WsStats`].
struct WsHandles {
    open: Gauge,
    max: Gauge,
    opened: Counter,
    closed: [Counter; close_code::LABELS.len()],
    subscriptions: Gauge,
    requests: Counter,
    bad_requests: Counter,
    rate_limited: Counter,
    resume_failed: Counter,
    frames: Counter,
    updates: Counter,
    bytes: Counter,
    conflated: Counter,
    fanout_conflated: Counter,
    slow_closes: Counter,
    http_requests: Counter,
    handshakes_refused: Counter,
    handshake_timeouts: Counter,
    tls_failures: Counter,
    proxy_errors: Counter,
}

/// Handles mirroring [`crate::auth::AuthStats`].
struct AuthHandles {
    failures: [Counter; crate::auth::AuthError::LABELS.len()],
    origin_refused: Counter,
    blocked: Counter,
    connection_limited: Counter,
    not_entitled: Counter,
    refreshed: Counter,
    expired_closes: Counter,
    revoked_closes: Counter,
}

impl AuthHandles {
    fn new() -> Self {
        use names::*;
        AuthHandles {
            failures: crate::auth::AuthError::LABELS.map(|r| counter!(AUTH_FAILURES, "reason" => r)),
            origin_refused: counter!(AUTH_ORIGIN_REFUSED),
            blocked: counter!(AUTH_BLOCKED),
            connection_limited: counter!(AUTH_CONNECTION_LIMITED),
            not_entitled: counter!(AUTH_NOT_ENTITLED),
            refreshed: counter!(AUTH_REFRESHED),
            expired_closes: counter!(AUTH_EXPIRED_CLOSES),
            revoked_closes: counter!(AUTH_REVOKED_CLOSES),
        }
    }

    fn sync(&self, s: &crate::auth::AuthStats) {
        let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        for (c, v) in self.failures.iter().zip(&s.failures) {
            c.absolute(l(v));
        }
        self.origin_refused.absolute(l(&s.origin_refused));
        self.blocked.absolute(l(&s.blocked));
        self.connection_limited.absolute(l(&s.connection_limited));
        self.not_entitled.absolute(l(&s.not_entitled));
        self.refreshed.absolute(l(&s.refreshed));
        self.expired_closes.absolute(l(&s.expired_closes));
        self.revoked_closes.absolute(l(&s.revoked_closes));
    }
}

/// One gateway's metrics: its own Prometheus recorder, the handles a
/// scrape fills from the stage counters, and the histograms the hot paths
/// record into. Shared as `Arc<Telemetry>` through [`Core`].
pub struct Telemetry {
    handle: PrometheusHandle,
    feed: FeedHandles,
    ws: WsHandles,
    auth: AuthHandles,
    send_latency: Arc<AtomicHistogram>,
    grpc: Arc<GrpcMetrics>,
    /// Wall clock at creation (ns), the feed age reference before any packet.
    created_ns: i64,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new()
    }
}

fn describe() {
    use names::*;
    describe_counter!(FEED_PACKETS, Unit::Count, "Feed datagrams received, valid or not.");
    describe_counter!(FEED_BYTES, Unit::Bytes, "Feed datagram payload bytes received.");
    describe_counter!(FEED_MESSAGES, Unit::Count, "Sequenced feed messages applied to the book.");
    describe_counter!(FEED_HEARTBEATS, Unit::Count, "Feed heartbeat packets received.");
    describe_counter!(FEED_DECODE_ERRORS, Unit::Count, "Feed datagrams rejected by the decoder, by reason.");
    describe_counter!(FEED_GAPS, Unit::Count, "Feed sequence holes declared lost.");
    describe_counter!(FEED_MISSED, Unit::Count, "Feed messages lost in sequence holes.");
    describe_counter!(FEED_DUPLICATES, Unit::Count, "Feed packets dropped as duplicates.");
    describe_counter!(
        FEED_REORDERED,
        Unit::Count,
        "Feed packets received out of order and put back in order."
    );
    describe_counter!(FEED_RESTARTS, Unit::Count, "Feed sender restarts (new session id).");
    describe_counter!(
        FEED_SUSPECT,
        Unit::Count,
        "Feed datagrams not trusted and never applied (another session, a far sequence, a refused source), by reason."
    );
    describe_counter!(FEED_SESSIONS_ENDED, Unit::Count, "Feed sessions ended by an end-of-session packet.");
    describe_counter!(
        FEED_UNKNOWN_LOCATE,
        Unit::Count,
        "Feed messages for a locate code not in the directory."
    );
    describe_counter!(
        FEED_TRADING_ACTIONS,
        Unit::Count,
        "Trading action ('H') messages received: halts, pauses, resumptions."
    );
    describe_counter!(
        FEED_SYSTEM_EVENTS,
        Unit::Count,
        "System event ('S') messages received: start/end of messages, market open/close."
    );
    describe_gauge!(FEED_UP, "1 while feed packets arrive within the feed timeout, else 0.");
    describe_gauge!(
        READY,
        "1 while the node says ready (/readyz 200, gRPC health SERVING): feed complete and not draining."
    );
    describe_gauge!(
        DRAINING,
        "1 from SIGTERM until the node stops: not ready, clients closed with 1012 at their turns."
    );
    describe_gauge!(
        FEED_LAST_PACKET_AGE,
        Unit::Seconds,
        "Seconds since the last trusted feed datagram (since gateway start if none yet)."
    );
    describe_gauge!(FEED_NEXT_SEQ, "Next feed sequence number expected.");
    describe_counter!(
        FEED_LINE_PACKETS,
        Unit::Count,
        "Feed datagrams received on a line (valid or not), by line."
    );
    describe_counter!(
        FEED_LINE_WON,
        Unit::Count,
        "Feed data packets whose messages were applied from this line's copy first (A/B arbitration), by line."
    );
    describe_counter!(
        FEED_LINE_REDUNDANT,
        Unit::Count,
        "Feed data packets new on this line whose messages the other line had already delivered, by line."
    );
    describe_counter!(
        FEED_LINE_MISSED,
        Unit::Count,
        "Feed messages missing on a line (not filled by the line itself within the reorder hold), whether or not the other line covered them, by line."
    );
    describe_gauge!(
        FEED_LINE_UP,
        "1 while a feed line brings trusted packets within the feed timeout, by line."
    );
    describe_gauge!(
        FEED_LINE_ENABLED,
        "1 when a feed line is configured (A always, B with --group-b), by line."
    );
    describe_gauge!(
        RETRANS_ENABLED,
        "1 when gap fill from a retransmission server is configured (--retrans-addr)."
    );
    describe_counter!(RETRANS_REQUESTS, Unit::Count, "Retransmission requests sent, retries included.");
    describe_counter!(
        RETRANS_RANGES,
        Unit::Count,
        "Missing ranges asked for, by result: filled, gone (the server no longer had them), timed_out."
    );
    describe_counter!(
        RETRANS_REFUSED,
        Unit::Count,
        "Times a missing range could not be asked for: --retrans-max-requests-per-sec was spent."
    );
    describe_counter!(RETRANS_PACKETS, Unit::Count, "Datagrams received from the retransmission server.");
    describe_counter!(RETRANS_MESSAGES, Unit::Count, "Feed messages applied from retransmission answers.");
    describe_counter!(
        RETRANS_LATE,
        Unit::Count,
        "Retransmission answers whose messages had all arrived on the lines meanwhile."
    );
    describe_gauge!(NATS_CONNECTED, "1 while connected to the feed's NATS server (--feed-nats), else 0.");
    describe_counter!(NATS_DISCONNECTS, Unit::Count, "Feed NATS connections lost (each a hole in the feed).");
    describe_counter!(
        NATS_MESSAGES,
        Unit::Count,
        "Feed NATS messages written to ingest as datagrams, by line."
    );
    describe_counter!(NATS_DROPPED, Unit::Count, "Feed NATS messages not written to ingest, by reason.");
    describe_counter!(NATS_RETRANS_REQUESTS, Unit::Count, "Retransmission requests published over NATS.");
    describe_gauge!(BOOK_SYMBOLS, "Symbols in the quote book.");
    describe_gauge!(BOOK_CAPACITY, "Most symbols the quote book can hold.");
    describe_gauge!(BOOK_STALE, "Symbols whose quote may be wrong (gap, restart, silent feed).");
    describe_gauge!(HUB_REPLAY_BYTES, Unit::Bytes, "Bytes the per-symbol replay rings (resume) hold.");
    describe_gauge!(HUB_REPLAY_MAX_BYTES, Unit::Bytes, "Ceiling of the replay rings (--replay-max-bytes).");
    describe_counter!(BOOK_FULL, Unit::Count, "Directory entries refused because the book was full.");
    describe_gauge!(WS_CONNECTIONS, "WebSocket connections open.");
    describe_gauge!(WS_MAX_CONNECTIONS, "WebSocket connection limit (--max-connections).");
    describe_counter!(WS_OPENED, Unit::Count, "WebSocket connections upgraded.");
    describe_counter!(WS_CLOSED, Unit::Count, "WebSocket connections closed, by reason.");
    describe_counter!(AUTH_FAILURES, Unit::Count, "Credentials refused, by reason.");
    describe_counter!(TLS_FAILURES, Unit::Count, "TLS handshakes that failed (WebSocket and gRPC ports).");
    describe_counter!(
        PROXY_ERRORS,
        Unit::Count,
        "Connections from a --trusted-proxies address without a usable PROXY header (400)."
    );
    describe_counter!(AUTH_ORIGIN_REFUSED, Unit::Count, "WebSocket upgrades refused for their Origin (403).");
    describe_counter!(
        AUTH_BLOCKED,
        Unit::Count,
        "Upgrades refused: the address failed authentication too often (429)."
    );
    describe_counter!(
        AUTH_CONNECTION_LIMITED,
        Unit::Count,
        "Connections refused by their key's max_connections."
    );
    describe_counter!(AUTH_NOT_ENTITLED, Unit::Count, "Symbols refused as not entitled.");
    describe_counter!(AUTH_REFRESHED, Unit::Count, "Credentials refreshed on open connections.");
    describe_counter!(AUTH_EXPIRED_CLOSES, Unit::Count, "Connections closed at their token's expiry (4401).");
    describe_counter!(
        AUTH_REVOKED_CLOSES,
        Unit::Count,
        "Connections closed because their key was revoked (4401)."
    );
    describe_gauge!(WS_SUBSCRIPTIONS, "Symbol subscriptions over all WebSocket connections.");
    describe_counter!(WS_REQUESTS, Unit::Count, "WebSocket client requests received.");
    describe_counter!(WS_BAD_REQUESTS, Unit::Count, "WebSocket client requests that could not be parsed.");
    describe_counter!(WS_RATE_LIMITED, Unit::Count, "WebSocket client requests refused by the rate limit.");
    describe_counter!(WS_RESUME_FAILED, Unit::Count, "Resume requests answered with a snapshot instead.");
    describe_counter!(WS_FRAMES, Unit::Count, "WebSocket messages written (data and control).");
    describe_counter!(WS_UPDATES, Unit::Count, "Quote updates written to WebSocket clients.");
    describe_counter!(WS_BYTES, Unit::Bytes, "Bytes of update frames written to WebSocket clients.");
    describe_counter!(
        WS_CONFLATED,
        Unit::Count,
        "Updates skipped by conflation (slow clients got the latest value)."
    );
    describe_counter!(
        FANOUT_CONFLATED,
        Unit::Count,
        "Fan-out events conflated per symbol because a connection thread fell behind the feed."
    );
    describe_counter!(WS_SLOW_CLOSES, Unit::Count, "WebSocket connections closed as slow consumers (4008).");
    describe_counter!(
        WS_HTTP_REQUESTS,
        Unit::Count,
        "Plain HTTP requests (health checks) on the WebSocket port."
    );
    describe_counter!(
        WS_HANDSHAKES_REFUSED,
        Unit::Count,
        "TCP connections answered 503 because --max-pending-handshakes(-per-ip) was reached."
    );
    describe_counter!(
        WS_HANDSHAKE_TIMEOUTS,
        Unit::Count,
        "Connections dropped for not finishing the HTTP handshake within --handshake-timeout-ms."
    );
    describe_gauge!(BUILD_INFO, "Always 1; labels carry the build version.");
}

impl Telemetry {
    /// A fresh recorder with every series registered (at zero), so the
    /// first scrape already shows them all.
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let (feed, ws, auth) = metrics::with_local_recorder(&recorder, || {
            use names::*;
            describe();
            gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "profile" => PROFILE).set(1.0);
            let feed = FeedHandles {
                packets: counter!(FEED_PACKETS),
                bytes: counter!(FEED_BYTES),
                messages: counter!(FEED_MESSAGES),
                heartbeats: counter!(FEED_HEARTBEATS),
                decode_errors: DECODE_REASONS.map(|r| counter!(FEED_DECODE_ERRORS, "reason" => r)),
                gaps: counter!(FEED_GAPS),
                missed: counter!(FEED_MISSED),
                duplicates: counter!(FEED_DUPLICATES),
                reordered: counter!(FEED_REORDERED),
                restarts: counter!(FEED_RESTARTS),
                suspect: SUSPECT_REASONS.map(|r| counter!(FEED_SUSPECT, "reason" => r)),
                sessions_ended: counter!(FEED_SESSIONS_ENDED),
                unknown_locate: counter!(FEED_UNKNOWN_LOCATE),
                trading_actions: counter!(FEED_TRADING_ACTIONS),
                system_events: counter!(FEED_SYSTEM_EVENTS),
                book_full: counter!(BOOK_FULL),
                up: gauge!(FEED_UP),
                ready: gauge!(READY),
                draining: gauge!(DRAINING),
                last_packet_age: gauge!(FEED_LAST_PACKET_AGE),
                next_seq: gauge!(FEED_NEXT_SEQ),
                symbols: gauge!(BOOK_SYMBOLS),
                capacity: gauge!(BOOK_CAPACITY),
                stale: gauge!(BOOK_STALE),
                replay_bytes: gauge!(HUB_REPLAY_BYTES),
                replay_max_bytes: gauge!(HUB_REPLAY_MAX_BYTES),
                lines: Line::ALL.map(LineHandles::new),
                retrans: RetransHandles::new(),
                snapshot: SnapshotHandles::new(),
                nats: NatsHandles::new(),
            };
            let ws = WsHandles {
                open: gauge!(WS_CONNECTIONS),
                max: gauge!(WS_MAX_CONNECTIONS),
                opened: counter!(WS_OPENED),
                closed: close_code::LABELS.map(|r| counter!(WS_CLOSED, "reason" => r)),
                subscriptions: gauge!(WS_SUBSCRIPTIONS),
                requests: counter!(WS_REQUESTS),
                bad_requests: counter!(WS_BAD_REQUESTS),
                rate_limited: counter!(WS_RATE_LIMITED),
                resume_failed: counter!(WS_RESUME_FAILED),
                frames: counter!(WS_FRAMES),
                updates: counter!(WS_UPDATES),
                bytes: counter!(WS_BYTES),
                conflated: counter!(WS_CONFLATED),
                fanout_conflated: counter!(FANOUT_CONFLATED),
                slow_closes: counter!(WS_SLOW_CLOSES),
                http_requests: counter!(WS_HTTP_REQUESTS),
                handshakes_refused: counter!(WS_HANDSHAKES_REFUSED),
                handshake_timeouts: counter!(WS_HANDSHAKE_TIMEOUTS),
                tls_failures: counter!(TLS_FAILURES),
                proxy_errors: counter!(PROXY_ERRORS),
            };
            (feed, ws, AuthHandles::new())
        });
        Telemetry {
            handle,
            feed,
            ws,
            auth,
            send_latency: Arc::new(AtomicHistogram::new(&LATENCY_BUCKETS)),
            grpc: Arc::new(GrpcMetrics::new()),
            created_ns: now_ns(),
        }
    }

    /// The tick-to-send latency handle for [`crate::ws::WsStats::new`].
    pub fn send_latency(&self) -> metrics::Histogram {
        metrics::Histogram::from_arc(self.send_latency.clone())
    }

    /// The tick-to-send histogram itself (tests, benchmarks).
    pub fn send_latency_histogram(&self) -> &AtomicHistogram {
        &self.send_latency
    }

    /// gRPC call metrics, for code that cannot use [`Self::grpc_layer`].
    pub fn grpc(&self) -> &Arc<GrpcMetrics> {
        &self.grpc
    }

    /// A tower layer for the tonic server that counts and times every call:
    /// `Server::builder().layer(core.metrics.grpc_layer())`.
    pub fn grpc_layer(&self) -> GrpcMetricsLayer {
        GrpcMetricsLayer::new(self.grpc.clone())
    }

    /// Copies the stage counters of `core` into the metric handles.
    fn sync(&self, core: &Core) {
        let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let (f, s) = (&self.feed, &*core.feed);
        f.packets.absolute(l(&s.packets));
        f.bytes.absolute(l(&s.bytes));
        f.messages.absolute(l(&s.messages));
        f.heartbeats.absolute(l(&s.heartbeats));
        for (c, v) in f.decode_errors.iter().zip(&s.decode_errors) {
            c.absolute(l(v));
        }
        f.gaps.absolute(l(&s.gaps));
        f.missed.absolute(l(&s.missed_messages));
        f.duplicates.absolute(l(&s.duplicate_packets));
        f.reordered.absolute(l(&s.reordered_packets));
        f.restarts.absolute(l(&s.restarts));
        for (c, v) in f.suspect.iter().zip(&s.suspect_packets) {
            c.absolute(l(v));
        }
        f.sessions_ended.absolute(l(&s.sessions_ended));
        f.unknown_locate.absolute(l(&s.unknown_locate));
        f.trading_actions.absolute(l(&s.trading_actions));
        f.system_events.absolute(l(&s.system_events));
        f.book_full.absolute(l(&s.book_full));
        f.up.set(if s.up.load(Ordering::Relaxed) { 1.0 } else { 0.0 });
        f.ready.set(if core.ready() { 1.0 } else { 0.0 });
        f.draining.set(if core.drain.is_draining() { 1.0 } else { 0.0 });
        let last = s.last_packet_ns.load(Ordering::Relaxed);
        let since = if last > 0 { last } else { self.created_ns };
        f.last_packet_age.set((now_ns() - since).max(0) as f64 * 1e-9);
        f.next_seq.set(l(&s.next_seq) as f64);
        f.symbols.set(core.book.len() as f64);
        f.capacity.set(core.book.capacity() as f64);
        f.stale.set(l(&s.stale_symbols) as f64);
        f.replay_bytes.set(core.hub.replay_bytes() as f64);
        f.replay_max_bytes.set(core.config.feed.replay_max_bytes as f64);
        let flag = |b: &std::sync::atomic::AtomicBool| if b.load(Ordering::Relaxed) { 1.0 } else { 0.0 };
        for (h, ls) in f.lines.iter().zip(&s.lines) {
            h.packets.absolute(l(&ls.packets));
            h.won.absolute(l(&ls.won));
            h.redundant.absolute(l(&ls.redundant));
            h.missed.absolute(l(&ls.missed_messages));
            h.up.set(flag(&ls.up));
            h.enabled.set(flag(&ls.enabled));
        }
        f.retrans.sync(&s.retrans);
        f.snapshot.sync(s);
        f.nats.sync(&s.nats);

        let (w, s) = (&self.ws, &*core.ws);
        w.open.set(s.open.load(Ordering::Relaxed) as f64);
        w.max.set(core.config.ws.max_connections as f64);
        w.opened.absolute(l(&s.opened));
        for (c, v) in w.closed.iter().zip(&s.closed) {
            c.absolute(l(v));
        }
        w.subscriptions.set(s.subscriptions.load(Ordering::Relaxed) as f64);
        w.requests.absolute(l(&s.requests));
        w.bad_requests.absolute(l(&s.bad_requests));
        w.rate_limited.absolute(l(&s.rate_limited));
        w.resume_failed.absolute(l(&s.resume_failed));
        w.frames.absolute(l(&s.frames));
        w.updates.absolute(l(&s.updates));
        w.bytes.absolute(l(&s.bytes));
        w.conflated.absolute(l(&s.conflated));
        w.fanout_conflated.absolute(core.hub.lanes().iter().map(|lane| lane.conflated()).sum());
        w.slow_closes.absolute(l(&s.slow_closes));
        w.http_requests.absolute(l(&s.http_requests));
        w.handshakes_refused.absolute(l(&s.handshakes_refused));
        w.handshake_timeouts.absolute(l(&s.handshake_timeouts));
        w.tls_failures.absolute(l(&s.tls_failures));
        w.proxy_errors.absolute(l(&s.proxy_errors));
        self.auth.sync(&core.auth.stats);
    }

    /// The Prometheus text exposition of `core`'s gateway, counters read
    /// now.
    pub fn render(&self, core: &Core) -> String {
        self.sync(core);
        let mut out = self.handle.render();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        write_header(
            &mut out,
            names::WS_SEND_LATENCY,
            "histogram",
            "Feed receive to WebSocket write completed, seconds; one sample per write (its oldest update).",
        );
        write_histogram(&mut out, names::WS_SEND_LATENCY, &[], &self.send_latency);
        write_header(
            &mut out,
            names::RETRANS_FILL,
            "histogram",
            "Feed gap fill: first retransmission request to the range's complete fill, seconds.",
        );
        write_histogram(&mut out, names::RETRANS_FILL, &[], &core.feed.retrans.fill_latency);
        self.grpc.write(&mut out);
        write_process(&mut out);
        // Constant 1: joins a node's name (what clients see in
        // X-Quotecast-Node) to its scrape target in fleet dashboards.
        write_header(
            &mut out,
            names::NODE_INFO,
            "gauge",
            "This node: its --node-name and version; always 1.",
        );
        out.push_str(&format!(
            "{}{{node=\"{}\",version=\"{}\"}} 1\n",
            names::NODE_INFO,
            core.node,
            env!("CARGO_PKG_VERSION")
        ));
        out
    }
}

/// `profile` label of the build info.
const PROFILE: &str = if cfg!(debug_assertions) { "debug" } else { "release" };

/// Process CPU, memory, descriptors and threads, read at scrape time by
/// `metrics-process` (procfs on Linux; a field the platform cannot give is
/// left out) and written in our own exposition, under our names.
fn write_process(out: &mut String) {
    let p = metrics_process::collector::collect();
    let mut one = |name: &str, kind: &str, help: &str, v: Option<f64>| {
        if let Some(v) = v {
            write_header(out, name, kind, help);
            write_sample(out, name, &[], v);
        }
    };
    let f = |v: Option<u64>| v.map(|v| v as f64);
    one(names::PROCESS_CPU, "counter", "User and system CPU time, seconds.", p.cpu_seconds_total);
    one(names::PROCESS_RSS, "gauge", "Resident memory, bytes.", f(p.resident_memory_bytes));
    one(names::PROCESS_VSIZE, "gauge", "Virtual memory, bytes.", f(p.virtual_memory_bytes));
    one(names::PROCESS_FDS, "gauge", "Open file descriptors (sockets included).", f(p.open_fds));
    one(names::PROCESS_THREADS, "gauge", "OS threads.", f(p.threads));
    // 0 means unlimited there; an unlimited limit is no sample here.
    one(
        names::PROCESS_MAX_FDS,
        "gauge",
        "Soft limit on open file descriptors.",
        f(p.max_fds.filter(|m| *m > 0)),
    );
    one(
        names::PROCESS_START,
        "gauge",
        "Process start, seconds since the Unix epoch.",
        f(p.start_time_seconds),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::Book;
    use crate::config::Config;
    use crate::hub::Hub;
    use crate::ingest::FeedStats;
    use crate::ws::WsStats;
    use tokio_util::sync::CancellationToken;

    fn core() -> Core {
        let metrics = Arc::new(Telemetry::new());
        Core {
            book: Arc::new(Book::new(64)),
            hub: Arc::new(Hub::new(64, 4)),
            feed: Arc::new(FeedStats::default()),
            ws: Arc::new(WsStats::new(metrics.send_latency())),
            config: Config::for_tests(std::net::Ipv4Addr::new(239, 1, 2, 3), 5000),
            tls: None,
            trusted: Default::default(),
            auth: Arc::new(
                crate::auth::Authenticator::new(&crate::auth::AuthConfig::parse_default()).unwrap(),
            ),
            node: "test".into(),
            shutdown: CancellationToken::new(),
            drain: crate::drain::Drain::new(std::time::Duration::ZERO),
            metrics,
        }
    }

    /// The value of the series `series` (name plus labels, as rendered).
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn a_scrape_copies_the_stage_counters() {
        let c = core();
        c.feed.packets.store(10, Ordering::Relaxed);
        c.feed.decode_errors[1].store(2, Ordering::Relaxed);
        c.feed.suspect_packets[1].store(3, Ordering::Relaxed);
        c.feed.up.store(true, Ordering::Relaxed);
        c.feed.last_packet_ns.store(now_ns() - 3_000_000_000, Ordering::Relaxed);
        c.ws.open.store(4, Ordering::Relaxed);
        c.ws.record_close("slow_consumer");
        c.ws.send_latency.record(0.000_04);
        let text = c.metrics.render(&c);
        assert_eq!(value(&text, "quotecast_feed_received_packets_total"), Some(10.0));
        assert_eq!(
            value(&text, &format!("quotecast_feed_decode_errors_total{{reason=\"{}\"}}", DECODE_REASONS[1])),
            Some(2.0)
        );
        assert_eq!(value(&text, "quotecast_feed_decode_errors_total{reason=\"short_header\"}"), Some(0.0));
        assert_eq!(value(&text, "quotecast_feed_suspect_packets_total{reason=\"seq_jump\"}"), Some(3.0));
        assert_eq!(
            value(&text, "quotecast_feed_suspect_packets_total{reason=\"foreign_session\"}"),
            Some(0.0)
        );
        assert_eq!(value(&text, "quotecast_feed_up"), Some(1.0));
        c.feed.lines[0].won.store(4, Ordering::Relaxed);
        let text = c.metrics.render(&c);
        assert_eq!(value(&text, "quotecast_feed_line_won_packets_total{line=\"a\"}"), Some(4.0));
        for name in
            ["line_received_packets_total", "line_redundant_packets_total", "line_missed_messages_total"]
        {
            assert_eq!(value(&text, &format!("quotecast_feed_{name}{{line=\"b\"}}")), Some(0.0), "{name}");
        }
        assert_eq!(value(&text, "quotecast_feed_line_up{line=\"b\"}"), Some(0.0), "line B exported when off");
        assert_eq!(value(&text, "quotecast_feed_line_enabled{line=\"b\"}"), Some(0.0));
        let age = value(&text, "quotecast_feed_last_packet_age_seconds").unwrap();
        assert!((3.0..60.0).contains(&age), "age {age}");
        assert_eq!(value(&text, "quotecast_ws_connections"), Some(4.0));
        assert_eq!(
            value(&text, "quotecast_ws_connections_closed_total{reason=\"slow_consumer\"}"),
            Some(1.0)
        );
        assert_eq!(value(&text, "quotecast_ws_connections_closed_total{reason=\"normal\"}"), Some(0.0));
        assert_eq!(value(&text, "quotecast_ws_max_connections"), Some(c.config.ws.max_connections as f64));
        assert_eq!(value(&text, "quotecast_ws_tick_to_send_seconds_bucket{le=\"0.00005\"}"), Some(1.0));
        assert_eq!(value(&text, "quotecast_ws_tick_to_send_seconds_bucket{le=\"0.000025\"}"), Some(0.0));
        assert_eq!(value(&text, "quotecast_ws_tick_to_send_seconds_count"), Some(1.0));
        let build = format!(
            "quotecast_build_info{{version=\"{}\",profile=\"{PROFILE}\"}}",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(value(&text, &build), Some(1.0));
        assert!(value(&text, "quotecast_process_resident_memory_bytes").unwrap() > 0.0);
        // Only what other tests in this process cannot change.
        let fds = value(&text, "quotecast_process_open_fds").unwrap();
        assert!(fds >= 3.0 && value(&text, "quotecast_process_max_fds").unwrap() >= fds);
        assert!(value(&text, "quotecast_process_threads").unwrap() >= 1.0);
        let start = value(&text, "quotecast_process_start_time_seconds").unwrap();
        assert!(start > 1.0e9 && start <= (now_ns() / 1_000_000_000 + 1) as f64, "{start}");
        assert!(value(&text, "quotecast_process_cpu_seconds_total").is_some());
        assert!(text.contains("# TYPE quotecast_feed_received_packets_total counter"));
        assert!(text.contains("# TYPE quotecast_ws_tick_to_send_seconds histogram"));

        c.feed.packets.store(11, Ordering::Relaxed);
        assert_eq!(value(&c.metrics.render(&c), "quotecast_feed_received_packets_total"), Some(11.0));
    }

    #[test]
    fn gateways_in_one_process_do_not_share_counts() {
        let (a, b) = (core(), core());
        a.feed.messages.store(7, Ordering::Relaxed);
        a.ws.send_latency.record(0.001);
        let (ta, tb) = (a.metrics.render(&a), b.metrics.render(&b));
        assert_eq!(value(&ta, "quotecast_feed_received_messages_total"), Some(7.0));
        assert_eq!(value(&tb, "quotecast_feed_received_messages_total"), Some(0.0));
        assert_eq!(value(&tb, "quotecast_ws_tick_to_send_seconds_count"), Some(0.0));
    }

    #[test]
    fn every_line_is_valid_exposition_and_every_name_is_prefixed() {
        let c = core();
        let text = c.metrics.render(&c);
        for line in text.lines().filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# ") {
                let mut parts = rest.splitn(3, ' ');
                let (kind, name) = (parts.next().unwrap(), parts.next().unwrap());
                assert!(kind == "HELP" || kind == "TYPE", "{line}");
                assert!(name.starts_with("quotecast_"), "{line}");
                continue;
            }
            let (series, v) = line.rsplit_once(' ').unwrap();
            assert!(series.starts_with("quotecast_"), "{line}");
            assert!(v == "+Inf" || v.parse::<f64>().is_ok(), "{line}");
            if series.ends_with("_total") || series.contains("_total{") {
                assert!(v.parse::<f64>().unwrap() >= 0.0, "{line}");
            }
        }
    }
}
