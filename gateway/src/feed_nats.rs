//! The feed over NATS (`--feed-nats`): where the network routes no
//! multicast, `feed-relay` publishes every feed datagram unchanged on core
//! NATS subjects, and this module turns them back into datagrams.
//!
//! The ingest thread is not touched: it reads the same blocking-free
//! `UdpSocket`s as on multicast, so the sequencer, A/B arbitration, gap fill
//! and the snapshot channel run byte for byte the same code whichever
//! transport brought the packets. Per channel the gateway makes a loopback
//! socket pair: ingest's end is bound to 127.0.0.1:0 and `connect()`ed to
//! the bridge's end (so the kernel drops a datagram from any other socket:
//! nothing on the host can inject into the feed), and a tokio task writes
//! each NATS message of the channel's subject as one datagram into it.
//!
//! | channel   | subject             | ingest socket            |
//! |-----------|---------------------|--------------------------|
//! | line A    | `<prefix>.a`        | line A                   |
//! | line B    | `<prefix>.b`        | line B (`--feed-nats-line-b`) |
//! | snapshots | `<prefix>.snapshot` | snapshot channel (`--feed-nats-snapshot`) |
//! | gap fill  | `<prefix>.retrans`  | retransmission (`--feed-nats-retrans`) |
//!
//! Gap fill: ingest's retransmission socket is connected to a bridge
//! socket; each request datagram it sends becomes a NATS message on
//! `<prefix>.retrans` with this gateway's reply inbox, and every answer
//! datagram the relay publishes to that inbox is written back to ingest,
//! which matches answers to its requests by sequence exactly as with
//! `--retrans-addr` (one inbox serves every request).
//!
//! Bounds: each subscription buffers at most `--feed-nats-queue-messages`
//! messages (async-nats drops beyond that and reports a slow consumer,
//! counted as `dropped{reason="slow_consumer"}`); a message too large for
//! one datagram is counted (`oversize`) and skipped; the loopback socket's
//! receive buffer is `--recv-buffer-bytes`, as on multicast. What is lost
//! there becomes a sequence hole that the sequencer handles like any other.
//! Garbage payloads reach ingest and are counted by its decoder, as on
//! multicast.

use crate::config::FeedNatsConfig;
use crate::ingest::FeedStats;
use async_nats::{Client, Event, Subscriber};
use bytes::Bytes;
use futures_util::StreamExt;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Largest UDP payload over IPv4: a bigger NATS message cannot be one
/// datagram, so it cannot be a feed packet.
pub const MAX_DATAGRAM: usize = 65_507;

/// Longest wait between two reconnect attempts. async-nats backs off
/// exponentially (1, 2, 4 ms ...); capped at 1 s a restarted nats-server
/// costs at most about a second of feed beyond its own outage.
pub const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// The reconnect backoff: 0 for the first attempt, then doubling from
/// 1 ms up to [`MAX_RECONNECT_DELAY`].
pub fn reconnect_delay(attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let exp = u32::try_from(attempts - 1).unwrap_or(u32::MAX).min(20);
    Duration::from_millis(1u64 << exp).min(MAX_RECONNECT_DELAY)
}

/// `host:port` of a NATS URL, for logs: never its user or password.
pub fn shown(addr: &async_nats::ServerAddr) -> String {
    format!("{}://{}:{}", addr.scheme(), addr.host(), addr.port())
}

/// What comes over NATS, in the order of [`NatsStats::messages`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Line A.
    A,
    /// Line B.
    B,
    /// The snapshot channel.
    Snapshot,
    /// Retransmission answers (to this gateway's inbox).
    Retrans,
}

impl Channel {
    /// Every channel, in index order.
    pub const ALL: [Channel; 4] = [Channel::A, Channel::B, Channel::Snapshot, Channel::Retrans];

    /// Index into [`NatsStats::messages`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Metric label and subject suffix (`<prefix>.<label>`).
    pub fn label(self) -> &'static str {
        match self {
            Channel::A => "a",
            Channel::B => "b",
            Channel::Snapshot => "snapshot",
            Channel::Retrans => "retrans",
        }
    }

    /// The subject of this channel under `prefix`.
    pub fn subject(self, prefix: &str) -> String {
        format!("{prefix}.{}", self.label())
    }
}

/// Why a NATS message did not become a datagram, in the order of
/// [`NatsStats::dropped`].
pub const DROP_REASONS: [&str; 3] = ["oversize", "slow_consumer", "send_failed"];
const OVERSIZE: usize = 0;
const SLOW_CONSUMER: usize = 1;
const SEND_FAILED: usize = 2;

/// Counters of the NATS transport, written by the bridge tasks and the
/// connection's event callback, read by `/metrics` and tests. All stay 0
/// without `--feed-nats`.
#[derive(Debug, Default)]
pub struct NatsStats {
    /// True with `--feed-nats`.
    pub enabled: AtomicBool,
    /// True while connected to a NATS server.
    pub connected: AtomicBool,
    /// Connections lost (each followed by reconnect attempts).
    pub disconnects: AtomicU64,
    /// Messages received and written to ingest, by [`Channel::index`].
    pub messages: [AtomicU64; 4],
    /// Messages not written, by [`DROP_REASONS`] index (`slow_consumer`
    /// counts async-nats' reports, each at least one message).
    pub dropped: [AtomicU64; DROP_REASONS.len()],
    /// Retransmission requests published.
    pub retrans_requests: AtomicU64,
}

/// Ingest's ends of the socket pairs, handed to `Ingest` like multicast
/// sockets.
#[derive(Debug)]
pub struct IngestEnds {
    /// Line A.
    pub line_a: UdpSocket,
    /// Receive buffer the kernel granted line A's socket.
    pub granted: usize,
    /// Line B, with `--feed-nats-line-b`.
    pub line_b: Option<UdpSocket>,
    /// The snapshot channel, with `--feed-nats-snapshot`.
    pub snapshot: Option<UdpSocket>,
    /// Ingest's retransmission socket, connected to the bridge (see
    /// [`Bridge::retrans_server`]), with `--feed-nats-retrans`.
    pub retrans: Option<UdpSocket>,
}

/// The bridge's ends, bound before anything starts; [`run`] drives them.
#[derive(Debug)]
pub struct Bridge {
    cfg: FeedNatsConfig,
    lines: Vec<(Channel, UdpSocket)>,
    retrans: Option<UdpSocket>,
}

impl Bridge {
    /// The bridge address ingest's retransmission socket is connected to
    /// (its "server"), with `--feed-nats-retrans`.
    pub fn retrans_server(&self) -> Option<SocketAddr> {
        self.retrans.as_ref().and_then(|s| s.local_addr().ok())
    }
}

/// A connected loopback pair: (ingest's end with a `recv_buffer` byte
/// receive buffer, the bridge's end), each connected to the other.
fn pair(recv_buffer: usize) -> io::Result<(UdpSocket, usize, UdpSocket)> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    let _ = s.set_recv_buffer_size(recv_buffer);
    let granted = s.recv_buffer_size().unwrap_or(0);
    s.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())?;
    let ingest: UdpSocket = s.into();
    let bridge = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    ingest.connect(bridge.local_addr()?)?;
    bridge.connect(ingest.local_addr()?)?;
    Ok((ingest, granted, bridge))
}

/// Binds the socket pairs `cfg` asks for.
///
/// # Errors
/// A failing socket call.
pub fn bind(cfg: &FeedNatsConfig, recv_buffer: usize) -> io::Result<(IngestEnds, Bridge)> {
    let (line_a, granted, a) = pair(recv_buffer)?;
    let mut lines = vec![(Channel::A, a)];
    let mut optional = |on: bool, ch: Channel| -> io::Result<Option<UdpSocket>> {
        if !on {
            return Ok(None);
        }
        let (ingest, _, bridge) = pair(recv_buffer)?;
        lines.push((ch, bridge));
        Ok(Some(ingest))
    };
    let line_b = optional(cfg.line_b, Channel::B)?;
    let snapshot = optional(cfg.snapshot, Channel::Snapshot)?;
    let (retrans, retrans_bridge) = if cfg.retrans {
        let (ingest, _, bridge) = pair(recv_buffer)?;
        (Some(ingest), Some(bridge))
    } else {
        (None, None)
    };
    Ok((
        IngestEnds { line_a, granted, line_b, snapshot, retrans },
        Bridge { cfg: cfg.clone(), lines, retrans: retrans_bridge },
    ))
}

/// Connects to NATS (retrying in the background until `stop`: a gateway
/// started before its NATS server waits for it, not ready meanwhile) and
/// runs one task per subscribed channel until `stop` is cancelled.
///
/// Connection events are logged (not per message) and counted in
/// `stats.nats`.
pub async fn run(bridge: Bridge, stats: Arc<FeedStats>, stop: CancellationToken) {
    let Some(url) = bridge.cfg.url.clone() else { return };
    stats.nats.enabled.store(true, Ordering::Relaxed);
    let events = stats.clone();
    let shown = shown(&url);
    let connect = async_nats::ConnectOptions::new()
        .name("quotecast-gateway")
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(reconnect_delay)
        .subscription_capacity(bridge.cfg.queue_messages.max(1))
        .event_callback(move |ev| {
            let s = events.clone();
            let url = shown.clone();
            async move { on_event(&s.nats, &url, ev) }
        })
        .connect(url.clone());
    let client = tokio::select! {
        _ = stop.cancelled() => return,
        c = connect => match c {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(url = %self::shown(&url), error = %e, "--feed-nats: cannot connect; no feed");
                return;
            }
        },
    };
    let prefix = bridge.cfg.subject_prefix.clone();
    let tasks = tokio_util::task::TaskTracker::new();
    for (ch, sock) in bridge.lines {
        let subject = ch.subject(&prefix);
        match subscribe(&client, &subject, sock).await {
            Ok((sub, sock)) => {
                tasks.spawn(forward(sub, sock, ch, stats.clone(), stop.clone()));
            }
            Err(e) => tracing::error!(%subject, error = %e, "--feed-nats: cannot subscribe"),
        }
    }
    if let Some(sock) = bridge.retrans {
        let subject = Channel::Retrans.subject(&prefix);
        let inbox = client.new_inbox();
        match subscribe(&client, &inbox, sock).await {
            Ok((answers, sock)) => {
                tasks.spawn(retrans(
                    client.clone(),
                    subject,
                    inbox,
                    answers,
                    sock,
                    stats.clone(),
                    stop.clone(),
                ));
            }
            Err(e) => {
                tracing::error!(%subject, error = %e, "--feed-nats-retrans: cannot subscribe the reply inbox")
            }
        }
    }
    tasks.close();
    tracing::info!(
        url = %self::shown(&url),
        %prefix,
        line_b = bridge.cfg.line_b,
        snapshot = bridge.cfg.snapshot,
        retrans = bridge.cfg.retrans,
        "feed over NATS (multicast groups not joined)"
    );
    tasks.wait().await;
    stats.nats.connected.store(false, Ordering::Relaxed);
}

async fn subscribe(
    client: &Client,
    subject: &str,
    sock: UdpSocket,
) -> Result<(Subscriber, tokio::net::UdpSocket), Box<dyn std::error::Error + Send + Sync>> {
    let sub = client.subscribe(subject.to_string()).await?;
    sock.set_nonblocking(true)?;
    Ok((sub, tokio::net::UdpSocket::from_std(sock)?))
}

fn on_event(s: &NatsStats, url: &str, ev: Event) {
    match ev {
        Event::Connected => {
            s.connected.store(true, Ordering::Relaxed);
            tracing::info!(url, "feed NATS connected");
        }
        Event::Disconnected => {
            s.connected.store(false, Ordering::Relaxed);
            s.disconnects.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(url, "feed NATS disconnected; reconnecting (the feed has a hole until then)");
        }
        // Once per dropped message at worst: counted, not logged.
        Event::SlowConsumer(_) => {
            s.dropped[SLOW_CONSUMER].fetch_add(1, Ordering::Relaxed);
        }
        Event::LameDuckMode => tracing::info!(url, "feed NATS server entering lame duck mode"),
        Event::Closed => tracing::info!(url, "feed NATS connection closed"),
        Event::Draining => {}
        Event::ServerError(e) => tracing::warn!(url, error = %e, "feed NATS server error"),
        Event::ClientError(e) => tracing::warn!(url, error = %e, "feed NATS client error"),
    }
}

/// Writes one NATS payload as one datagram to ingest, counting it.
async fn deliver(sock: &tokio::net::UdpSocket, payload: &Bytes, ch: Channel, s: &NatsStats) {
    if payload.len() > MAX_DATAGRAM {
        s.dropped[OVERSIZE].fetch_add(1, Ordering::Relaxed);
        return;
    }
    s.messages[ch.index()].fetch_add(1, Ordering::Relaxed);
    if sock.send(payload).await.is_err() {
        s.dropped[SEND_FAILED].fetch_add(1, Ordering::Relaxed);
    }
}

/// One line (or the snapshot channel): NATS message -> datagram.
async fn forward(
    mut sub: Subscriber,
    sock: tokio::net::UdpSocket,
    ch: Channel,
    stats: Arc<FeedStats>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            m = sub.next() => match m {
                Some(m) => deliver(&sock, &m.payload, ch, &stats.nats).await,
                None => return,
            },
        }
    }
}

/// Gap fill: request datagrams from ingest -> NATS requests with the
/// inbox as reply subject; answers on the inbox -> datagrams to ingest.
async fn retrans(
    client: Client,
    subject: String,
    inbox: String,
    mut answers: Subscriber,
    sock: tokio::net::UdpSocket,
    stats: Arc<FeedStats>,
    stop: CancellationToken,
) {
    // A request is 20 bytes; anything longer is not one and is cut, which
    // the relay (and the server) refuse as malformed.
    let mut buf = [0u8; 64];
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            r = sock.recv(&mut buf) => {
                // An error here is an ICMP report for an earlier answer
                // (ingest's socket closing): nothing to do.
                let Ok(n) = r else { continue };
                let payload = Bytes::copy_from_slice(&buf[..n]);
                match client.publish_with_reply(subject.clone(), inbox.clone(), payload).await {
                    Ok(()) => {
                        stats.nats.retrans_requests.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        stats.nats.dropped[SEND_FAILED].fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            m = answers.next() => match m {
                Some(m) => deliver(&sock, &m.payload, Channel::Retrans, &stats.nats).await,
                None => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_backoff_is_capped() {
        assert_eq!(reconnect_delay(0), Duration::ZERO);
        assert_eq!(reconnect_delay(1), Duration::ZERO);
        assert_eq!(reconnect_delay(2), Duration::from_millis(2));
        assert_eq!(reconnect_delay(5), Duration::from_millis(16));
        assert_eq!(reconnect_delay(100), MAX_RECONNECT_DELAY);
        assert_eq!(reconnect_delay(usize::MAX), MAX_RECONNECT_DELAY);
    }

    #[test]
    fn subjects_follow_the_prefix() {
        let subjects: Vec<String> = Channel::ALL.iter().map(|c| c.subject("q.f")).collect();
        assert_eq!(subjects, ["q.f.a", "q.f.b", "q.f.snapshot", "q.f.retrans"]);
    }

    #[test]
    fn a_pair_takes_datagrams_only_from_its_bridge() {
        let (ingest, _, bridge) = pair(1 << 16).unwrap();
        ingest.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let stranger = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        stranger.send_to(b"injected", ingest.local_addr().unwrap()).unwrap();
        bridge.send(b"feed").unwrap();
        let mut b = [0u8; 16];
        let (n, from) = ingest.recv_from(&mut b).unwrap();
        assert_eq!((&b[..n], from), (&b"feed"[..], bridge.local_addr().unwrap()));
        assert!(ingest.recv_from(&mut b).is_err(), "the stranger's datagram never arrives");
    }
}
