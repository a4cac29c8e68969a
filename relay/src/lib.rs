//! feed-relay: the quotecast multicast feed carried over core NATS, for
//! gateways in networks that route no multicast (`gateway --feed-nats`).
//!
//! Near the exchange the relay joins the feed's groups with the gateway's
//! own join code (`gateway::ingest::socket::bind`) and publishes every
//! datagram unchanged, one NATS message per datagram, so a gateway on NATS
//! decodes, sequences and recovers exactly what a gateway on multicast
//! does. Recovery goes the same way as on multicast: the snapshot channel
//! is one more subject, and retransmission requests are proxied to the
//! feed's own server.
//!
//! # Layout
//! - [`config`] — flags (`FEED_RELAY_*`), validated.
//! - [`lines`] — one task per joined group: datagram -> publish.
//! - [`retrans`] — `<prefix>.retrans` requests -> UDP to the server ->
//!   answers to the reply subject.
//! - [`metrics`] — counters on `--metrics-addr`.
//!
//! ```text
//! multicast A / B / snapshot -> lines -> NATS <prefix>.a / .b / .snapshot -> gateways
//! gateway request -> NATS <prefix>.retrans -> retrans -> UDP server -> answers -> reply inbox
//! ```

pub mod config;
pub mod lines;
pub mod metrics;
pub mod retrans;

pub use config::Config;

use anyhow::Context;
use async_nats::Event;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the relay carries, with its subject suffix and metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// Line A.
    A,
    /// Line B.
    B,
    /// The snapshot channel.
    Snapshot,
}

impl Line {
    /// Every line, in index order.
    pub const ALL: [Line; 3] = [Line::A, Line::B, Line::Snapshot];

    /// Index into [`metrics::Metrics::lines`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Subject suffix and `line` label, the gateway's
    /// (`gateway::feed_nats::Channel`).
    pub fn label(self) -> &'static str {
        match self {
            Line::A => "a",
            Line::B => "b",
            Line::Snapshot => "snapshot",
        }
    }
}

/// A started relay.
#[derive(Debug)]
pub struct Running {
    /// Where `/metrics` is served.
    pub metrics_addr: SocketAddr,
    /// The relay's counters.
    pub metrics: metrics::Metrics,
    tasks: TaskTracker,
}

impl Running {
    /// Waits until every task has stopped (after the shutdown token).
    pub async fn wait(self) {
        self.tasks.wait().await;
    }
}

/// Joins the groups, binds `/metrics`, connects to NATS (retrying in the
/// background: a relay started before its server publishes nothing until
/// it is up, counting what it drops) and starts relaying.
///
/// # Errors
/// A group cannot be joined, the metrics listener cannot be bound, or the
/// retransmission subject cannot be subscribed.
pub async fn start(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let mut socks = Vec::new();
    for (line, join) in
        [(Line::A, Some(cfg.line_a())), (Line::B, cfg.line_b()), (Line::Snapshot, cfg.snapshot())]
    {
        let Some(j) = join else { continue };
        let (sock, granted) =
            gateway::ingest::socket::bind(j.group, j.port, cfg.interface, cfg.recv_buffer_bytes)
                .with_context(|| {
                    format!("joining {} {}:{} on {}", line.label(), j.group, j.port, cfg.interface)
                })?;
        if granted < cfg.recv_buffer_bytes {
            tracing::warn!(
                line = line.label(),
                requested = cfg.recv_buffer_bytes,
                granted,
                "receive buffer smaller than requested; raise net.core.rmem_max"
            );
        }
        sock.set_nonblocking(true)?;
        socks.push((line, tokio::net::UdpSocket::from_std(sock)?));
    }
    let (m, exporter) = metrics::Metrics::new(cfg.metrics_addr)
        .with_context(|| format!("--metrics-addr {}", cfg.metrics_addr))?;
    let tasks = TaskTracker::new();
    {
        let stop = shutdown.clone();
        tasks.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = exporter => {}
            }
        });
    }

    let events = m.clone();
    let ever = Arc::new(AtomicBool::new(false));
    let url = gateway::feed_nats::shown(&cfg.nats);
    let client = async_nats::ConnectOptions::new()
        .name("feed-relay")
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(gateway::feed_nats::reconnect_delay)
        .event_callback(move |ev| {
            let (m, ever, url) = (events.clone(), ever.clone(), url.clone());
            async move { on_event(&m, &ever, &url, ev) }
        })
        .connect(cfg.nats.clone())
        .await
        .with_context(|| format!("--nats {}", gateway::feed_nats::shown(&cfg.nats)))?;

    for (line, sock) in socks {
        let subject = format!("{}.{}", cfg.subject_prefix, line.label());
        tasks.spawn(lines::relay(
            sock,
            client.clone(),
            subject,
            m.lines[line.index()].clone(),
            shutdown.clone(),
        ));
    }
    if let Some(server) = cfg.retrans_addr {
        let subject = format!("{}.retrans", cfg.subject_prefix);
        let sub =
            client.subscribe(subject.clone()).await.with_context(|| format!("subscribing {subject}"))?;
        let proxy = retrans::Proxy::new(
            server,
            cfg.interface,
            cfg.retrans_wait(),
            cfg.retrans_max_answer(),
            cfg.retrans_max_in_flight,
            cfg.retrans_recv_buffer_bytes,
        );
        tasks.spawn(proxy.serve(sub, client.clone(), m.clone(), shutdown.clone()));
    }
    tasks.close();
    tracing::info!(nats = %gateway::feed_nats::shown(&cfg.nats), prefix = %cfg.subject_prefix, line_b = cfg.line_b().is_some(),
        snapshot = cfg.snapshot().is_some(), retrans = ?cfg.retrans_addr, metrics = %cfg.metrics_addr, "feed-relay started");
    Ok(Running { metrics_addr: cfg.metrics_addr, metrics: m, tasks })
}

fn on_event(m: &metrics::Metrics, ever: &AtomicBool, url: &str, ev: Event) {
    match ev {
        Event::Connected => {
            m.connected.set(1.0);
            if ever.swap(true, Ordering::Relaxed) {
                m.reconnects.increment(1);
                tracing::info!(url, "NATS reconnected");
            } else {
                tracing::info!(url, "NATS connected");
            }
        }
        Event::Disconnected => {
            m.connected.set(0.0);
            m.disconnects.increment(1);
            tracing::warn!(url, "NATS disconnected; dropping feed datagrams until reconnected");
        }
        Event::SlowConsumer(_) => {}
        Event::LameDuckMode => tracing::info!(url, "NATS server entering lame duck mode"),
        Event::Closed => tracing::info!(url, "NATS connection closed"),
        Event::Draining => {}
        Event::ServerError(e) => tracing::warn!(url, error = %e, "NATS server error"),
        Event::ClientError(e) => tracing::warn!(url, error = %e, "NATS client error"),
    }
}
