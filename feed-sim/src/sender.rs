//! The send side: the multicast socket, the pacer, packetizing with
//! [`PacketBuilder`], heartbeats, fault injection and end of session.
//!
//! Runs on one dedicated blocking thread. A blocking `send` on a connected
//! UDP socket costs one syscall per datagram and nothing else, and the pacer
//! needs sub-millisecond sleeps that a timer wheel would only round up.
//!
//! ```text
//! Pace::due(elapsed) ─► Market::next_tick ─► Packetizer (PacketBuilder)
//!                                              │ full / flush_us / end
//!                                              ▼
//!                                  Wire: per line (A, optional B):
//!                                    drop? hold? send, dup?, release held
//! ```

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use quotecast_proto::feed::{
    header, Message, PacketBuilder, SessionId, SystemEventCode, FORMAT_VERSION, HEADER_LEN,
};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::SimConfig;
use crate::market::Market;
use crate::report::{LineReport, Report};
use crate::retrans::SharedRing;
use crate::snapshot::SnapshotLoop;
use crate::telemetry::{Handles, LineHandles};

/// Ticks generated between two looks at the clock and the shutdown token.
/// About one 1400-byte packet's worth: the clock read is amortised, and
/// a batch shares one timestamp that is at most a few microseconds stale.
const BATCH: u64 = 64;

/// Longest single sleep, so a cancelled token is noticed promptly even
/// when nothing else is due.
const MAX_SLEEP: Duration = Duration::from_millis(5);

/// Largest backlog the pacer catches up on, in seconds of ticks. A short
/// stall is made up so the long-run rate stays exact; a long one (a
/// suspended VM) is skipped rather than flooding receivers afterwards.
const MAX_BACKLOG_SECS: f64 = 1.0;

/// Copies of the end-of-session packet: a lost end would leave receivers
/// waiting for a heartbeat timeout, and duplicates of it are harmless.
const END_OF_SESSION_COPIES: usize = 3;

/// Send buffer asked for: large enough to absorb a directory burst. The
/// kernel caps it at `net.core.wmem_max`.
const SEND_BUFFER: usize = 4 << 20;

/// Opens the multicast sender socket for `cfg`: bound to the interface
/// address, `IP_MULTICAST_IF` = `cfg.interface`, TTL = `cfg.ttl`, loopback
/// on (receivers on this host must hear it), connected to group:port.
///
/// Binding to the interface address as well as setting `IP_MULTICAST_IF`
/// means a loopback feed cannot leave through another interface even if
/// the kernel's routing would otherwise prefer it.
///
/// # Errors
/// Any socket call failing, e.g. an `--interface` address this host does
/// not have.
pub fn open_socket(cfg: &SimConfig) -> io::Result<UdpSocket> {
    open_multicast(cfg, cfg.group, cfg.port)
}

/// The sockets a session sends on: line A always, line B when configured.
#[derive(Debug)]
pub struct Sockets {
    /// Line A: `--group`/`--port`.
    pub a: UdpSocket,
    /// Line B: `--line-b-group`/`--line-b-port`, if set.
    pub b: Option<UdpSocket>,
    /// The snapshot channel: `--snapshot-group`/`--snapshot-port`, if set.
    pub snapshot: Option<UdpSocket>,
}

impl Sockets {
    /// Opens every line `cfg` asks for, each like [`open_socket`].
    ///
    /// # Errors
    /// Any socket call failing.
    pub fn open(cfg: &SimConfig) -> io::Result<Sockets> {
        let b = cfg.line_b().map(|(g, p)| open_multicast(cfg, g, p)).transpose()?;
        let snapshot = cfg.snapshot().map(|(g, p)| open_multicast(cfg, g, p)).transpose()?;
        Ok(Sockets { a: open_socket(cfg)?, b, snapshot })
    }
}

/// A sender socket to `group:port` with `cfg`'s interface and TTL (see
/// [`open_socket`]).
///
/// # Errors
/// Any socket call failing.
pub fn open_multicast(cfg: &SimConfig, group: Ipv4Addr, port: u16) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_multicast_if_v4(&cfg.interface)?;
    s.set_multicast_ttl_v4(cfg.ttl)?;
    s.set_multicast_loop_v4(true)?;
    // Best effort: a smaller buffer only means more blocking in send.
    let _ = s.set_send_buffer_size(SEND_BUFFER);
    s.bind(&SockAddr::from(SocketAddrV4::new(cfg.interface, 0)))?;
    s.connect(&SockAddr::from(SocketAddrV4::new(group, port)))?;
    Ok(s.into())
}

/// A session id derived from the start time: "S" + UTC HHMMSSmmm. A
/// restart gets a new id (and so restarts sequences at 1 legitimately),
/// and the id tells a human when the session began.
pub fn default_session(now: SystemTime) -> SessionId {
    let ms = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() % 86_400_000;
    let (h, m, s, milli) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    SessionId::from_text(&format!("S{h:02}{m:02}{s:02}{milli:03}"))
}

/// Ticks due over time: a token bucket driven by the monotonic clock, in
/// closed form so rounding never accumulates. Bursts occupy
/// `[k·every, k·every + len)` for k ≥ 1: a session starts calm.
#[derive(Debug, Clone, Copy)]
struct Pace {
    /// Base ticks per second; `None` = as fast as possible.
    rate: Option<f64>,
    /// (period s, length s, multiplier).
    burst: Option<(f64, f64, f64)>,
}

impl Pace {
    fn new(cfg: &SimConfig) -> Self {
        Pace {
            rate: (cfg.rate > 0).then_some(cfg.rate as f64),
            burst: cfg.burst().map(|(e, l, m)| (e.as_secs_f64(), l.as_secs_f64(), m)),
        }
    }

    /// Seconds spent inside bursts during `[0, t]`.
    fn burst_time(&self, t: f64) -> f64 {
        let Some((every, len, _)) = self.burst else { return 0.0 };
        let k = (t / every).floor();
        if k < 1.0 {
            return 0.0;
        }
        (k - 1.0) * len + (t - k * every).min(len)
    }

    fn in_burst(&self, t: f64) -> bool {
        let Some((every, len, _)) = self.burst else { return false };
        let k = (t / every).floor();
        k >= 1.0 && t - k * every < len
    }

    /// Ticks per second at time `t` (0 = unlimited).
    fn rate_at(&self, t: f64) -> f64 {
        let Some(r) = self.rate else { return 0.0 };
        match self.burst {
            Some((_, _, mult)) if self.in_burst(t) => r * mult,
            _ => r,
        }
    }

    /// Ticks due by `t` seconds after the start (fractional).
    fn due(&self, t: f64) -> f64 {
        let Some(r) = self.rate else { return f64::INFINITY };
        let mult = self.burst.map_or(1.0, |b| b.2);
        r * (t + (mult - 1.0) * self.burst_time(t))
    }
}

/// Fault periods of one line: every Nth data packet (N counted over all
/// data packets of the session, so both lines agree on which packet is
/// "the Nth"); 0 = off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Faults {
    pub drop_every: u64,
    pub dup_every: u64,
    pub reorder_every: u64,
}

/// One multicast line (A or B): its socket, its fault injection, its
/// counts. Every line gets every packet; only faults differ.
struct Line {
    sock: UdpSocket,
    /// Faults of this line, and the "both lines" ones from the old flags.
    own: Faults,
    both: Faults,
    /// A data packet held back by reorder; reused buffer.
    held: Vec<u8>,
    /// `Some(dup)` while `held` holds a packet; `dup` = send it twice.
    holding: Option<bool>,
    report: LineReport,
    m: LineHandles,
}

fn nth(every: u64, n: u64) -> bool {
    every > 0 && n % every == 0
}

impl Line {
    fn hits(&self, n: u64, f: impl Fn(&Faults) -> u64) -> bool {
        nth(f(&self.own), n) || nth(f(&self.both), n)
    }

    fn send_raw(&mut self, b: &[u8]) -> io::Result<()> {
        send_whole(&self.sock, b)?;
        self.report.packets += 1;
        self.report.bytes += b.len() as u64;
        self.m.packets.increment(1);
        self.m.bytes.increment(b.len() as u64);
        self.m.all_packets.increment(1);
        self.m.all_bytes.increment(b.len() as u64);
        Ok(())
    }

    /// Sends data packet number `n` through this line's fault injectors;
    /// returns false when it was dropped on purpose.
    fn send_data(&mut self, bytes: &[u8], count: u16, n: u64) -> io::Result<bool> {
        if self.hits(n, |f| f.drop_every) {
            self.report.dropped_packets += 1;
            self.report.dropped_messages += u64::from(count);
            self.m.drops.increment(1);
            return Ok(false);
        }
        let dup = self.hits(n, |f| f.dup_every);
        if self.hits(n, |f| f.reorder_every) && self.holding.is_none() {
            self.held.clear();
            self.held.extend_from_slice(bytes);
            self.holding = Some(dup);
            return Ok(true);
        }
        self.send_counted(bytes, dup)?;
        if self.holding.is_some() {
            self.report.reordered_packets += 1;
            self.m.reorders.increment(1);
            self.release_held()?;
        }
        Ok(true)
    }

    fn send_counted(&mut self, bytes: &[u8], dup: bool) -> io::Result<()> {
        self.send_raw(bytes)?;
        if dup {
            self.send_raw(bytes)?;
            self.report.duplicated_packets += 1;
            self.m.dups.increment(1);
        }
        Ok(())
    }

    /// Sends the held packet, if any. Called after its successor (a real
    /// reorder) or before a heartbeat / end of session (no successor came,
    /// so it goes out in order rather than never).
    fn release_held(&mut self) -> io::Result<()> {
        if let Some(dup) = self.holding.take() {
            let held = std::mem::take(&mut self.held);
            let r = self.send_counted(&held, dup);
            self.held = held;
            r?;
        }
        Ok(())
    }
}

/// The socket end: every line, counting, and the one place bytes are
/// written.
struct Wire {
    lines: Vec<Line>,
    m: Handles,
    /// Data packets handed to the wire so far (the N in "every Nth").
    data_packets: u64,
    /// Last time a packet left, from the sender's point of view (a packet
    /// dropped on purpose counts: the sender believes it sent it).
    last_packet: Instant,
    heartbeats: u64,
    /// Data packets dropped on every line (a real gap for any receiver).
    lost_packets: u64,
    lost_messages: u64,
    /// Per locate, quotes and trades lost on every line.
    dropped_updates: Vec<u64>,
    /// Every data packet as sequenced (before faults), for retransmission.
    ring: Option<SharedRing>,
}

impl Wire {
    /// Sends a header-only packet (heartbeat, end of session) on every
    /// line, after any held packet.
    fn send_all(&mut self, b: &[u8]) -> io::Result<()> {
        for l in &mut self.lines {
            l.release_held()?;
            l.send_raw(b)?;
        }
        Ok(())
    }

    fn release_held(&mut self) -> io::Result<()> {
        self.lines.iter_mut().try_for_each(Line::release_held)
    }

    /// Sends one finished data packet on every line through its fault
    /// injectors. `locates` lists the symbols of its quotes and trades, for
    /// the delivered-updates ground truth.
    fn send_data(&mut self, bytes: &[u8], count: u16, locates: &[u16], now: Instant) -> io::Result<()> {
        self.data_packets += 1;
        self.last_packet = now;
        if let Some(r) = &self.ring {
            r.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(bytes);
        }
        let n = self.data_packets;
        let mut delivered = false;
        for l in &mut self.lines {
            delivered |= l.send_data(bytes, count, n)?;
        }
        if !delivered {
            self.lost_packets += 1;
            self.lost_messages += u64::from(count);
            for &l in locates {
                self.dropped_updates[usize::from(l)] += 1;
            }
        }
        Ok(())
    }

    fn heartbeat(&mut self, session: SessionId, next_seq: u64, now: Instant) -> io::Result<()> {
        self.send_all(&header(session, next_seq, 0))?;
        self.heartbeats += 1;
        self.m.heartbeats.increment(1);
        self.last_packet = now;
        Ok(())
    }
}

/// Message counts of the packet being built, flushed to metrics per packet.
#[derive(Debug, Default, Clone, Copy)]
struct TypeCounts {
    directory: u64,
    system: u64,
    actions: u64,
    quotes: u64,
    trades: u64,
}

/// Packs messages into datagrams and decides when a datagram is done:
/// when the next message might not fit, or when its first message has
/// waited `flush` — the latency/batching trade-off.
struct Packetizer {
    builder: PacketBuilder,
    max_len: usize,
    /// Bytes in the datagram being built (the builder does not expose it).
    len: usize,
    flush: Duration,
    /// When the first message of the current datagram was pushed.
    opened: Option<Instant>,
    /// Locates of the current datagram's quotes and trades.
    locates: Vec<u16>,
    pkt: TypeCounts,
    total: TypeCounts,
    recorded: Option<Vec<(u64, Message)>>,
    wire: Wire,
}

impl Packetizer {
    fn push(&mut self, msg: Message, now: Instant) -> io::Result<()> {
        let need = 2 + msg.wire_len();
        if self.len + need > self.max_len {
            self.flush(now)?;
        }
        let pushed = self.builder.push(&msg);
        debug_assert!(pushed, "a flushed builder holds any message");
        if !pushed {
            return Err(io::Error::other("message does not fit an empty packet"));
        }
        self.len += need;
        if self.opened.is_none() {
            self.opened = Some(now);
        }
        match msg {
            Message::SymbolDirectory { .. } => self.pkt.directory += 1,
            Message::SystemEvent { .. } => self.pkt.system += 1,
            Message::TradingAction { .. } => self.pkt.actions += 1,
            Message::SnapshotBegin { .. } | Message::SymbolSnapshot(_) | Message::SnapshotEnd { .. } => {
                debug_assert!(false, "snapshot messages go on the snapshot channel only");
            }
            Message::Quote { locate, .. } => {
                self.pkt.quotes += 1;
                self.locates.push(locate);
            }
            Message::Trade { locate, .. } => {
                self.pkt.trades += 1;
                self.locates.push(locate);
            }
        }
        if let Some(r) = &mut self.recorded {
            r.push((self.builder.next_seq() + u64::from(self.builder.len()) - 1, msg));
        }
        // Send as soon as no message of any type could fit, rather than
        // making a full packet wait for its flush deadline.
        if self.len + SimConfig::largest_message_block() > self.max_len {
            self.flush(now)?;
        }
        Ok(())
    }

    fn flush(&mut self, now: Instant) -> io::Result<()> {
        if self.builder.is_empty() {
            return Ok(());
        }
        let count = self.builder.len();
        let bytes = self.builder.finish();
        self.wire.send_data(bytes, count, &self.locates, now)?;
        let (p, m) = (self.pkt, &self.wire.m);
        m.directory.increment(p.directory);
        m.system.increment(p.system);
        m.actions.increment(p.actions);
        self.total.system += p.system;
        self.total.actions += p.actions;
        m.quotes.increment(p.quotes);
        m.trades.increment(p.trades);
        self.total.directory += p.directory;
        self.total.quotes += p.quotes;
        self.total.trades += p.trades;
        self.pkt = TypeCounts::default();
        self.locates.clear();
        self.len = HEADER_LEN;
        self.opened = None;
        Ok(())
    }

    /// Sequence of the last message sequenced (pushed, sent or not); 0
    /// before the first.
    fn last_seq(&self) -> u64 {
        self.builder.next_seq() + u64::from(self.builder.len()) - 1
    }

    /// When the current datagram must go out, if one is open.
    fn flush_deadline(&self) -> Option<Instant> {
        self.opened.map(|t| t + self.flush)
    }
}

/// Wall-clock nanoseconds from the monotonic clock: wall time sampled
/// once, then advanced by `Instant`, so timestamps never go backwards when
/// NTP steps the system clock.
struct Clock {
    start: Instant,
    wall_ns: u64,
}

impl Clock {
    fn new() -> Self {
        Clock { start: Instant::now(), wall_ns: quotecast_proto::clock::now_ns().max(0) as u64 }
    }

    fn ts(&self, now: Instant) -> u64 {
        self.wall_ns + now.duration_since(self.start).as_nanos() as u64
    }
}

/// Runs one session on the calling (blocking) thread until `max_ticks`,
/// `duration` or `shutdown`, then ends the session and reports.
///
/// # Errors
/// A failed `send` (the session is abandoned without an end-of-session
/// packet: receivers will see it go silent).
pub(crate) fn send_loop(
    cfg: &SimConfig,
    session: SessionId,
    socks: Sockets,
    ring: Option<SharedRing>,
    shutdown: &CancellationToken,
) -> io::Result<Report> {
    let clock = Clock::new();
    let start = clock.start;
    let mut market = Market::new(cfg.seed, cfg.symbols, cfg.zipf, cfg.trade_ratio).with_halts(
        cfg.seed,
        cfg.halt_every_ticks,
        cfg.halt_ticks,
    );
    let directory = market.directory();
    let pace = Pace::new(cfg);
    let m = Handles::new();
    m.target.set(pace.rate_at(0.0));
    let line = |name: &'static str, sock: UdpSocket, own: Faults| Line {
        sock,
        own,
        both: cfg.both_faults(),
        held: Vec::with_capacity(cfg.max_packet_bytes),
        holding: None,
        report: LineReport { name: name.to_owned(), ..LineReport::default() },
        m: LineHandles::new(name),
    };
    let mut snapshots = socks
        .snapshot
        .map(|s| SnapshotLoop::new(s, session, cfg.snapshot_rate, cfg.max_packet_bytes, cfg.symbols));
    let mut lines = vec![line("a", socks.a, cfg.line_faults(false))];
    if let Some(b) = socks.b {
        lines.push(line("b", b, cfg.line_faults(true)));
    }
    let wire = Wire {
        lines,
        m,
        data_packets: 0,
        last_packet: start,
        heartbeats: 0,
        lost_packets: 0,
        lost_messages: 0,
        dropped_updates: vec![0; cfg.symbols + 1],
        ring,
    };
    let mut out = Packetizer {
        builder: PacketBuilder::new(session, 1, cfg.max_packet_bytes),
        max_len: cfg.max_packet_bytes,
        len: HEADER_LEN,
        flush: Duration::from_micros(cfg.flush_us),
        opened: None,
        locates: Vec::with_capacity(cfg.max_packet_bytes / 25),
        pkt: TypeCounts::default(),
        total: TypeCounts::default(),
        recorded: cfg.record.then(Vec::new),
        wire,
    };
    let heartbeat = (cfg.heartbeat_ms > 0).then(|| Duration::from_millis(cfg.heartbeat_ms));
    let dir_every = (cfg.directory_interval_ms > 0).then(|| Duration::from_millis(cfg.directory_interval_ms));
    let deadline = cfg.duration.map(|d| start + d);
    let max_ticks = cfg.max_ticks.unwrap_or(u64::MAX);

    let event = |ts, event| Message::SystemEvent { ts, event, version: FORMAT_VERSION };
    out.push(event(clock.ts(start), SystemEventCode::StartOfMessages), start)?;
    for d in &directory {
        out.push(*d, start)?;
    }
    out.push(event(clock.ts(start), SystemEventCode::StartOfMarketHours), start)?;
    let mut next_dir = dir_every.map(|i| start + i);
    let mut ticks = 0u64;
    let mut skipped = 0u64;
    let mut bursting = false;
    let mut last_lag_warning: Option<Instant> = None;

    // After the last tick the session may stay open a while (heartbeats,
    // snapshot cycles, retransmissions), then it ends.
    let quiet_end = Duration::from_millis(cfg.quiet_end_ms);
    let mut quiet_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let done_ticking = deadline.is_some_and(|d| now >= d) || ticks >= max_ticks;
        if done_ticking && quiet_until.is_none() {
            quiet_until = Some(now + quiet_end);
            if !quiet_end.is_zero() {
                // The last ticks go out now, not at their flush deadline
                // (without a quiet end they share the closing packet).
                out.flush(now)?;
            }
        }
        if shutdown.is_cancelled() || quiet_until.is_some_and(|q| now >= q) {
            break;
        }
        let t = now.duration_since(start).as_secs_f64();
        if pace.in_burst(t) != bursting {
            bursting = !bursting;
            out.wire.m.target.set(pace.rate_at(t));
            debug!(bursting, rate = pace.rate_at(t), "burst state changed");
        }
        if let (Some(nd), Some(every)) = (next_dir, dir_every) {
            if now >= nd {
                for d in &directory {
                    out.push(*d, now)?;
                }
                // Skip missed repeats instead of sending several in a row.
                next_dir = Some((nd + every).max(now));
            }
        }

        // How many ticks are owed, catching up on at most a bounded backlog.
        let due = pace.due(t);
        let mut owed = if done_ticking {
            0
        } else if due.is_finite() {
            (due as u64).saturating_sub(ticks + skipped)
        } else {
            u64::MAX
        };
        let cap = (pace.rate_at(t) * MAX_BACKLOG_SECS) as u64;
        if due.is_finite() && owed > cap.max(BATCH) {
            let skip = owed - cap.max(BATCH);
            skipped += skip;
            owed -= skip;
            if last_lag_warning.is_none_or(|w| now.duration_since(w) >= Duration::from_secs(1)) {
                warn!(skipped_total = skipped, "sender fell behind its schedule; skipping ticks");
                last_lag_warning = Some(now);
            }
        }
        let batch = owed.min(BATCH).min(max_ticks - ticks);
        if batch > 0 {
            let ts = clock.ts(now);
            for _ in 0..batch {
                let tick = market.next_tick(ts);
                while let Some(action) = market.take_status() {
                    out.push(action, now)?;
                }
                out.push(tick, now)?;
            }
            ticks += batch;
        }

        if let Some(s) = &mut snapshots {
            s.emit(&market, out.last_seq(), t)?;
        }
        if out.flush_deadline().is_some_and(|d| now >= d) {
            out.flush(now)?;
        }
        if let Some(hb) = heartbeat {
            if now.duration_since(out.wire.last_packet) >= hb {
                // A pending datagram proves liveness as well as a heartbeat
                // would (only matters when --flush-us exceeds the interval).
                if out.builder.is_empty() {
                    out.wire.heartbeat(session, out.builder.next_seq(), now)?;
                } else {
                    out.flush(now)?;
                }
            }
        }
        if owed > batch {
            continue; // more is due right now: no sleep
        }

        // Sleep until the earliest thing that needs doing.
        let mut wake = now + MAX_SLEEP;
        let rate = pace.rate_at(t);
        if rate > 0.0 && !done_ticking {
            let short = (ticks + skipped + 1) as f64 - due;
            wake = wake.min(now + Duration::from_secs_f64((short / rate).clamp(0.0, 1.0)));
        }
        let next_snapshot = snapshots.as_ref().map(|s| s.next_due(start));
        for d in [
            out.flush_deadline(),
            heartbeat.map(|h| out.wire.last_packet + h),
            next_dir,
            deadline.filter(|_| !done_ticking),
            quiet_until,
            next_snapshot,
        ]
        .into_iter()
        .flatten()
        {
            wake = wake.min(d);
        }
        if let Some(sleep) = wake.checked_duration_since(Instant::now()) {
            if !sleep.is_zero() {
                std::thread::sleep(sleep);
            }
        }
    }

    let now = Instant::now();
    out.push(event(clock.ts(now), SystemEventCode::EndOfMarketHours), now)?;
    out.push(event(clock.ts(now), SystemEventCode::EndOfMessages), now)?;
    out.flush(now)?;
    out.wire.release_held()?;
    let eos = out.builder.end_of_session();
    for _ in 0..END_OF_SESSION_COPIES {
        out.wire.send_all(&eos)?;
    }
    let elapsed = start.elapsed();

    let mut last = market.truth();
    for t in last.values_mut() {
        t.updates_delivered = t.updates - out.wire.dropped_updates[usize::from(t.locate)];
    }
    let w = &out.wire;
    let total = out.total;
    let lines: Vec<LineReport> = w.lines.iter().map(|l| l.report.clone()).collect();
    let sum = |f: fn(&LineReport) -> u64| lines.iter().map(f).sum::<u64>();
    Ok(Report {
        session,
        packets: sum(|l| l.packets),
        messages: out.builder.next_seq() - 1,
        quotes: total.quotes,
        trades: total.trades,
        directory: total.directory,
        system_events: total.system,
        trading_actions: total.actions,
        heartbeats: w.heartbeats,
        bytes: sum(|l| l.bytes),
        dropped_packets: w.lost_packets,
        dropped_messages: w.lost_messages,
        duplicated_packets: sum(|l| l.duplicated_packets),
        reordered_packets: sum(|l| l.reordered_packets),
        skipped_ticks: skipped,
        first_seq: 1,
        next_seq: out.builder.next_seq(),
        elapsed,
        last,
        recorded: out.recorded.take().unwrap_or_default(),
        lines,
        retrans: None,
        snapshot: snapshots.as_ref().map(SnapshotLoop::report),
    })
}

/// Sends one datagram on a connected socket, retrying when a signal
/// interrupts the call.
pub(crate) fn send_whole(sock: &UdpSocket, b: &[u8]) -> io::Result<()> {
    loop {
        match sock.send(b) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_is_exact_and_bursts_add_up() {
        let p = Pace { rate: Some(1000.0), burst: None };
        assert_eq!(p.due(2.5), 2500.0);
        // Bursts at [1,1.2), [2,2.2), ... with 3x the rate.
        let b = Pace { rate: Some(1000.0), burst: Some((1.0, 0.2, 3.0)) };
        assert_eq!(b.burst_time(0.9), 0.0);
        assert!((b.burst_time(1.1) - 0.1).abs() < 1e-9);
        assert!((b.burst_time(1.5) - 0.2).abs() < 1e-9);
        assert!((b.burst_time(3.05) - 0.45).abs() < 1e-9);
        assert!((b.due(3.05) - 1000.0 * (3.05 + 2.0 * 0.45)).abs() < 1e-6);
        assert!(!b.in_burst(0.5) && b.in_burst(1.1) && !b.in_burst(1.3) && b.in_burst(2.0));
        assert_eq!((b.rate_at(0.5), b.rate_at(2.1)), (1000.0, 3000.0));
        assert!(Pace { rate: None, burst: None }.due(1.0).is_infinite());
    }

    #[test]
    fn default_session_is_utc_time_of_day() {
        let t = UNIX_EPOCH + Duration::from_millis(86_400_000 * 20_000 + 13 * 3_600_000 + 4 * 60_000 + 5_678);
        assert_eq!(default_session(t).to_string(), "S130405678");
        assert_eq!(default_session(t).0.len(), 10);
    }

    #[test]
    fn socket_keeps_multicast_on_loopback() {
        let cfg = SimConfig { ttl: 0, ..SimConfig::default() };
        let s = open_socket(&cfg).unwrap();
        let r = socket2::SockRef::from(&s);
        assert_eq!(r.multicast_if_v4().unwrap(), std::net::Ipv4Addr::LOCALHOST);
        assert_eq!(r.multicast_ttl_v4().unwrap(), 0);
        assert!(r.multicast_loop_v4().unwrap());
        assert_eq!(s.local_addr().unwrap().ip(), std::net::Ipv4Addr::LOCALHOST);
    }
}
