//! A seeded market simulator that sends MoldUDP64-style packets over UDP
//! multicast: the stand-in for an exchange feed in quotecast's tests,
//! demos and load tests.
//!
//! # Layout
//! - [`config`]: [`SimConfig`], the clap flags (`FEED_SIM_*` env) and their
//!   validation; one struct for the CLI and for library callers.
//! - [`market`]: [`Market`], the pure seeded model: tickers, a cent-grid
//!   random walk, Zipf-skewed activity, per-symbol sequences, seeded
//!   halts; produces [`Message`]s and snapshots, no I/O.
//! - [`sender`]: the multicast sockets (line A, optional line B), the
//!   pacer, packetizing with `PacketBuilder`, heartbeats, per-line fault
//!   injection, end of session.
//! - [`snapshot`]: the snapshot channel: every symbol's full state in a
//!   loop on its own group, paced in symbols per second.
//! - [`report`]: [`Report`], what a session sent plus per-symbol ground truth.
//! - [`retrans`]: the retransmission server (MoldUDP64 re-requests over
//!   unicast UDP) and the ring of recent packets it answers from.
//! - [`telemetry`]: Prometheus metric names and the exporter.
//!
//! ```text
//! SimConfig ─► run ─► spawn_blocking(send_loop)
//!                       S(open) R… S(market open)
//!                       Market::next_tick (+ H halts) ─► PacketBuilder ─► Wire ─► line A (multicast)
//!                       (directory every interval;          │  per-line faults └─► line B (multicast)
//!                        heartbeats when idle;              └─► retrans::Ring ◄── retrans::serve (own
//!                        S(close) S(end), 3 × end of             thread, unicast 127.0.0.1)
//!                        session on stop)
//!                       SnapshotLoop::emit(market) ─► snapshot group (B X… E cycles)
//!              ◄─ Report (+ per line, retransmission, snapshot counts)
//! ```
//!
//! The wire format is specified in `proto/FEED_FORMAT.md`.
//!
//! [`Message`]: quotecast_proto::feed::Message

pub mod config;
pub mod market;
pub mod report;
pub mod retrans;
pub mod sender;
pub mod snapshot;
pub mod telemetry;

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use quotecast_proto::feed::SessionId;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use config::{ConfigError, SimConfig};
pub use market::{Market, SymbolTruth};
pub use report::{LineReport, Report, RetransReport, SnapshotReport};

/// Runs one feed session: validates `cfg`, opens the socket, sends until
/// `max_ticks`, `duration` or `shutdown`, ends the session and returns what
/// was sent.
///
/// The sending happens on a blocking thread. Cancel `shutdown` to stop it
/// cleanly (the partial packet is flushed and the end of session sent);
/// dropping the returned future also stops the thread, without waiting.
///
/// # Errors
/// An invalid `cfg` (a [`ConfigError`] inside the `anyhow::Error`), a
/// metrics address that cannot be served, a socket that cannot be opened,
/// or a failed send.
pub async fn run(cfg: SimConfig, shutdown: CancellationToken) -> anyhow::Result<Report> {
    cfg.validate()?;
    if let Some(addr) = cfg.metrics_addr {
        telemetry::install(addr)?;
    }
    let session = cfg
        .session
        .as_deref()
        .map_or_else(|| sender::default_session(SystemTime::now()), SessionId::from_text);
    let socks = sender::Sockets::open(&cfg).with_context(|| {
        format!(
            "opening multicast sender to {}:{} (line B {:?}) via {}",
            cfg.group,
            cfg.port,
            cfg.line_b(),
            cfg.interface
        )
    })?;
    info!(
        %session, group = %cfg.group, port = cfg.port, interface = %cfg.interface, ttl = cfg.ttl,
        symbols = cfg.symbols, rate = cfg.rate, seed = cfg.seed, "feed session starting"
    );
    // A child token, so dropping this future stops the thread without
    // cancelling anything else the caller hangs off `shutdown`.
    let stop = shutdown.child_token();
    let guard = stop.clone().drop_guard();
    let retrans = match cfg.retrans_addr {
        Some(addr) => Some(Retrans::start(&cfg, addr, session, &stop)?),
        None => None,
    };
    let ring = retrans.as_ref().map(|r| r.ring.clone());
    let linger = Duration::from_millis(cfg.retrans_linger_ms);
    let thread_stop = stop.clone();
    let mut report =
        tokio::task::spawn_blocking(move || sender::send_loop(&cfg, session, socks, ring, &thread_stop))
            .await
            .context("send thread panicked")?
            .context("sending the feed")?;
    if let Some(r) = retrans {
        report.retrans = Some(r.finish(linger).await?);
    }
    guard.disarm();
    info!(
        %session, ticks = report.ticks(), packets = report.packets, next_seq = report.next_seq,
        elapsed_ms = report.elapsed.as_millis() as u64, "feed session ended"
    );
    Ok(report)
}

/// The retransmission server of a run: its thread, ring and counters.
struct Retrans {
    ring: retrans::SharedRing,
    stats: Arc<retrans::Stats>,
    stop: CancellationToken,
    thread: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Retrans {
    /// Binds `addr` and starts answering on a blocking thread until
    /// [`finish`](Retrans::finish) (or `parent` is cancelled).
    fn start(
        cfg: &SimConfig,
        addr: SocketAddr,
        session: SessionId,
        parent: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let sock =
            UdpSocket::bind(addr).with_context(|| format!("binding the retransmission server to {addr}"))?;
        let ring = Arc::new(Mutex::new(retrans::Ring::new(cfg.retrans_ring_packets)));
        let stats = Arc::new(retrans::Stats::default());
        let limits = retrans::Limits {
            max_messages: cfg.retrans_max_messages,
            max_requests_per_sec: cfg.retrans_max_requests_per_sec,
        };
        let stop = parent.child_token();
        let (r, s, st) = (ring.clone(), stats.clone(), stop.clone());
        let thread = tokio::task::spawn_blocking(move || retrans::serve(&sock, &r, session, limits, &s, &st));
        info!(%addr, ring_packets = cfg.retrans_ring_packets, "retransmission server listening");
        Ok(Retrans { ring, stats, stop, thread })
    }

    /// Keeps answering for `linger` after the session ended, then stops
    /// the server and returns its counts.
    async fn finish(self, linger: Duration) -> anyhow::Result<RetransReport> {
        tokio::time::sleep(linger).await;
        self.stop.cancel();
        self.thread.await.context("retransmission thread panicked")?.context("retransmission server")?;
        Ok(RetransReport::from(&*self.stats))
    }
}
