//! A seeded market simulator that sends MoldUDP64-style packets over UDP
//! multicast: the stand-in for an exchange feed in quotecast's tests,
//! demos and load tests.
//!
//! # Layout
//! - [`config`]: [`SimConfig`], the clap flags (`FEED_SIM_*` env) and their
//!   validation; one struct for the CLI and for library callers.
//! - [`market`]: [`Market`], the pure seeded model: tickers, a cent-grid
//!   random walk, Zipf-skewed activity; produces [`Message`]s, no I/O.
//! - [`sender`]: the multicast sockets (line A, optional line B), the
//!   pacer, packetizing with `PacketBuilder`, heartbeats, per-line fault
//!   injection, end of session.
//! - [`report`]: [`Report`], what a session sent plus per-symbol ground truth.
//! - [`telemetry`]: Prometheus metric names and the exporter.
//!
//! ```text
//! SimConfig ─► run ─► spawn_blocking(send_loop)
//!                       Market::next_tick ─► PacketBuilder ─► UDP multicast
//!                       (directory at start and every interval; heartbeats
//!                        when idle; 3 × end-of-session on stop)
//!              ◄─ Report
//! ```
//!
//! The wire format is specified in `proto/FEED_FORMAT.md`.
//!
//! [`Message`]: quotecast_proto::feed::Message

pub mod config;
pub mod market;
pub mod report;
pub mod sender;
pub mod telemetry;

use std::time::SystemTime;

use anyhow::Context;
use quotecast_proto::feed::SessionId;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use config::{ConfigError, SimConfig};
pub use market::{Market, SymbolTruth};
pub use report::{LineReport, Report};

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
    let thread_stop = stop.clone();
    let report = tokio::task::spawn_blocking(move || sender::send_loop(&cfg, session, socks, &thread_stop))
        .await
        .context("send thread panicked")?
        .context("sending the feed")?;
    guard.disarm();
    info!(
        %session, ticks = report.ticks(), packets = report.packets, next_seq = report.next_seq,
        elapsed_ms = report.elapsed.as_millis() as u64, "feed session ended"
    );
    Ok(report)
}
