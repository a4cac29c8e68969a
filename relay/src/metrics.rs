//! The relay's Prometheus metrics: names in one place, handles built once
//! on the relay's own recorder (not the process-global one, so relays in
//! one process keep apart), served on `--metrics-addr`.

use metrics::{counter, describe_counter, describe_gauge, gauge, Counter, Gauge, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;

/// Metric names (prefix `feedrelay_`, like feed-sim's `feedsim_`).
pub mod names {
    /// Datagrams published, by `line` (a, b, snapshot).
    pub const PACKETS: &str = "feedrelay_relayed_packets_total";
    /// Datagram bytes published, by `line`.
    pub const BYTES: &str = "feedrelay_relayed_bytes_total";
    /// Datagrams not published because the client was disconnected, by `line`.
    pub const DROPPED: &str = "feedrelay_dropped_packets_total";
    /// Publishes that failed, by `line`.
    pub const PUBLISH_ERRORS: &str = "feedrelay_publish_errors_total";
    /// 1 while connected to NATS.
    pub const CONNECTED: &str = "feedrelay_nats_connected";
    /// NATS connections lost.
    pub const DISCONNECTS: &str = "feedrelay_nats_disconnects_total";
    /// NATS connections re-established after a loss.
    pub const RECONNECTS: &str = "feedrelay_nats_reconnects_total";
    /// Retransmission requests received, by `result`.
    pub const RETRANS_REQUESTS: &str = "feedrelay_retrans_requests_total";
    /// Answer datagrams published to requesters.
    pub const RETRANS_ANSWERS: &str = "feedrelay_retrans_answer_packets_total";
}

/// How a retransmission request ended, the `result` label.
pub const RETRANS_RESULTS: [&str; 5] = ["answered", "unanswered", "busy", "malformed", "failed"];

/// Counters of one feed line (`line` label).
#[derive(Clone)]
pub struct LineMetrics {
    /// Datagrams published.
    pub packets: Counter,
    /// Bytes published.
    pub bytes: Counter,
    /// Not published: disconnected.
    pub dropped: Counter,
    /// Publish failed.
    pub publish_errors: Counter,
}

/// Every handle of the relay.
#[derive(Clone)]
pub struct Metrics {
    /// Per line, by [`crate::Line::index`].
    pub lines: [LineMetrics; 3],
    /// Connection up.
    pub connected: Gauge,
    /// Connections lost.
    pub disconnects: Counter,
    /// Connections re-established.
    pub reconnects: Counter,
    /// Requests, by [`RETRANS_RESULTS`] index.
    pub retrans: [Counter; RETRANS_RESULTS.len()],
    /// Answer datagrams published.
    pub retrans_answers: Counter,
    handle: PrometheusHandle,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Builds the recorder and its `/metrics` listener on `addr`, and
    /// registers every series at 0. Must run inside a tokio runtime (the
    /// exporter spawns its upkeep task); returns the exporter future to
    /// spawn.
    ///
    /// # Errors
    /// The listener cannot be bound.
    pub fn new(
        addr: SocketAddr,
    ) -> Result<(Metrics, metrics_exporter_prometheus::ExporterFuture), metrics_exporter_prometheus::BuildError>
    {
        let (recorder, exporter) = PrometheusBuilder::new().with_http_listener(addr).build()?;
        let handle = recorder.handle();
        let m = metrics::with_local_recorder(&recorder, || {
            use names::*;
            describe_counter!(PACKETS, Unit::Count, "Feed datagrams published to NATS, by line.");
            describe_counter!(BYTES, Unit::Bytes, "Feed datagram bytes published to NATS, by line.");
            describe_counter!(
                DROPPED,
                Unit::Count,
                "Feed datagrams not published: NATS disconnected, by line."
            );
            describe_counter!(PUBLISH_ERRORS, Unit::Count, "Feed datagrams whose publish failed, by line.");
            describe_gauge!(CONNECTED, "1 while connected to the NATS server, else 0.");
            describe_counter!(DISCONNECTS, Unit::Count, "NATS connections lost.");
            describe_counter!(RECONNECTS, Unit::Count, "NATS connections re-established after a loss.");
            describe_counter!(RETRANS_REQUESTS, Unit::Count, "Retransmission requests received, by result.");
            describe_counter!(RETRANS_ANSWERS, Unit::Count, "Retransmission answer datagrams published.");
            let line = |l: &'static str| LineMetrics {
                packets: counter!(PACKETS, "line" => l),
                bytes: counter!(BYTES, "line" => l),
                dropped: counter!(DROPPED, "line" => l),
                publish_errors: counter!(PUBLISH_ERRORS, "line" => l),
            };
            Metrics {
                lines: crate::Line::ALL.map(|l| line(l.label())),
                connected: gauge!(CONNECTED),
                disconnects: counter!(DISCONNECTS),
                reconnects: counter!(RECONNECTS),
                retrans: RETRANS_RESULTS.map(|r| counter!(RETRANS_REQUESTS, "result" => r)),
                retrans_answers: counter!(RETRANS_ANSWERS),
                handle: handle.clone(),
            }
        });
        Ok((m, exporter))
    }

    /// The text exposition, as `/metrics` serves it (tests).
    pub fn render(&self) -> String {
        self.handle.render()
    }
}
