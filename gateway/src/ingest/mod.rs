//! Ingest: the one writer of the book.
//!
//! A dedicated OS thread owns the multicast socket. Per datagram it takes
//! one receive timestamp, validates the whole packet, asks the
//! [`sequencer`] whether and from where to apply it, applies each message to
//! its own copy of the symbol's state, publishes the new immutable quote to
//! the [`Book`] and its shared encoding to the [`Hub`], and finally wakes
//! every connection writer that got something, once per datagram.
//!
//! Feed trouble is turned into per-symbol staleness: a gap, a restart or an
//! end of session means any book may be wrong, so every symbol is stale
//! until its next full quote; a silent feed makes every symbol stale until
//! packets flow again.

pub mod sequencer;
pub mod socket;

use crate::book::{Book, Quote, SymbolId, UpdateKind};
use crate::hub::encode::{self, Flags};
use crate::hub::mailbox::Encoded;
use crate::hub::{Hub, Wakes};
use quotecast_proto::feed::{DecodeError, Message, Packet};
use quotecast_proto::v1::status::{Reason, State};
use sequencer::{Decision, Sequencer, SessionChange};
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// Feed counters and health, written by the ingest thread with relaxed
/// atomics and read by metrics, health checks, gRPC and tests.
#[derive(Debug, Default)]
pub struct FeedStats {
    /// Datagrams received.
    pub packets: AtomicU64,
    /// Bytes received (datagram payloads).
    pub bytes: AtomicU64,
    /// Market and directory messages applied.
    pub messages: AtomicU64,
    /// Heartbeat packets received.
    pub heartbeats: AtomicU64,
    /// Datagrams rejected by the codec, by reason (see [`decode_reason_index`]).
    pub decode_errors: [AtomicU64; DECODE_REASONS.len()],
    /// Holes declared lost.
    pub gaps: AtomicU64,
    /// Messages lost in those holes.
    pub missed_messages: AtomicU64,
    /// Packets dropped as duplicates.
    pub duplicate_packets: AtomicU64,
    /// Packets put back in order.
    pub reordered_packets: AtomicU64,
    /// Sender restarts (new session).
    pub restarts: AtomicU64,
    /// End-of-session packets seen (first per session).
    pub sessions_ended: AtomicU64,
    /// Messages for a locate code with no directory entry yet.
    pub unknown_locate: AtomicU64,
    /// Directory entries refused because the book is full.
    pub book_full: AtomicU64,
    /// True while packets arrive within the feed timeout.
    pub up: AtomicBool,
    /// Gateway wall clock of the last datagram (ns since epoch, 0 = none).
    pub last_packet_ns: AtomicI64,
    /// Next feed sequence number expected.
    pub next_seq: AtomicU64,
    /// Symbols currently stale.
    pub stale_symbols: AtomicU64,
}

/// Label values of [`FeedStats::decode_errors`], in index order.
pub const DECODE_REASONS: [&str; 8] = [
    "short_header",
    "truncated",
    "trailing_bytes",
    "unexpected_body",
    "unknown_type",
    "bad_length",
    "bad_symbol",
    "sequence_overflow",
];

/// Index of a decode error in [`FeedStats::decode_errors`].
pub fn decode_reason_index(e: &DecodeError) -> usize {
    DECODE_REASONS.iter().position(|r| *r == e.reason()).unwrap_or(0)
}

impl FeedStats {
    /// Sum of decode errors of every reason.
    pub fn decode_errors_total(&self) -> u64 {
        self.decode_errors.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// Wall clock in nanoseconds since the Unix epoch.
pub fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

/// Ingest settings taken from the config.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Silence after which every symbol is stale.
    pub feed_timeout: Duration,
    /// Out-of-order packets held at most.
    pub reorder_window: usize,
    /// Longest hold for a missing packet.
    pub reorder_hold: Duration,
}

/// One symbol as the writer knows it.
#[derive(Debug)]
struct SymState {
    quote: Quote,
    /// Set by a gap/restart/end of session; cleared by the next full quote.
    needs_refresh: bool,
}

/// The ingest stage. Build with [`Ingest::new`], then [`Ingest::run`] on a
/// dedicated thread.
pub struct Ingest {
    socket: UdpSocket,
    book: Arc<Book>,
    hub: Arc<Hub>,
    stats: Arc<FeedStats>,
    cfg: IngestConfig,
    seq: Sequencer,
    /// Feed locate code -> symbol id, for the current session.
    locates: Vec<Option<SymbolId>>,
    syms: Vec<SymState>,
    wakes: Wakes,
    feed_down: bool,
    session_ended: bool,
    last_packet: Option<Instant>,
}

impl Ingest {
    /// Wraps a bound, joined socket (see [`socket::bind`]).
    pub fn new(
        socket: UdpSocket,
        book: Arc<Book>,
        hub: Arc<Hub>,
        stats: Arc<FeedStats>,
        cfg: IngestConfig,
    ) -> Self {
        Ingest {
            socket,
            book,
            hub,
            stats,
            seq: Sequencer::new(cfg.reorder_window, cfg.reorder_hold),
            cfg,
            locates: vec![None; 1 << 16],
            syms: Vec::new(),
            wakes: Vec::with_capacity(1024),
            // Until the first packet nothing is known, but nothing is stale
            // either: there are no symbols.
            feed_down: false,
            session_ended: false,
            last_packet: None,
        }
    }

    /// Receives and applies datagrams until `shutdown` is cancelled.
    /// Blocking: run it on its own thread.
    pub fn run(mut self, shutdown: CancellationToken) {
        let mut buf = vec![0u8; 65_536];
        let idle_timeout = Duration::from_millis(20);
        let hold_timeout = Duration::from_micros(200);
        let mut timeout = idle_timeout;
        let _ = self.socket.set_read_timeout(Some(timeout));
        tracing::info!(addr = ?self.socket.local_addr().ok(), "ingest started");
        while !shutdown.is_cancelled() {
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let now = Instant::now();
                    let raw = &buf[..n];
                    self.on_datagram(raw, now, now_ns());
                }
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "feed socket receive failed");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            self.on_tick(Instant::now());
            let want = if self.seq.holding() { hold_timeout } else { idle_timeout };
            if want != timeout {
                timeout = want;
                let _ = self.socket.set_read_timeout(Some(timeout));
            }
        }
        tracing::info!("ingest stopped");
    }

    /// Timers: held packets that waited too long, feed silence.
    fn on_tick(&mut self, now: Instant) {
        if self.seq.holding() {
            let lost = self.seq.expire(now);
            if lost > 0 {
                self.on_gap();
            }
            self.release_held(now_ns());
            self.sync_seq_stats();
        }
        if !self.feed_down && self.last_packet.is_some_and(|t| now.duration_since(t) > self.cfg.feed_timeout)
        {
            tracing::warn!(timeout = ?self.cfg.feed_timeout, "feed down: no packet within the timeout");
            self.feed_down = true;
            self.stats.up.store(false, Ordering::Relaxed);
            self.mark_all_stale(Reason::FeedDown);
        }
        self.flush_wakes();
    }

    /// Handles one datagram; public so benchmarks and tests can drive the
    /// stage without a socket.
    pub fn on_datagram(&mut self, raw: &[u8], now: Instant, ts_recv: i64) {
        self.stats.packets.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes.fetch_add(raw.len() as u64, Ordering::Relaxed);
        self.stats.last_packet_ns.store(ts_recv, Ordering::Relaxed);
        self.last_packet = Some(now);
        let p = match Packet::decode(raw) {
            Ok(p) => p,
            Err(e) => {
                self.stats.decode_errors[decode_reason_index(&e)].fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, len = raw.len(), "malformed feed packet skipped");
                return;
            }
        };
        match self.seq.check_session(&p) {
            SessionChange::Same => {}
            SessionChange::Joined => {
                tracing::info!(session = %p.session, seq = p.seq, "joined feed session");
            }
            SessionChange::Restarted => {
                tracing::warn!(session = %p.session, seq = p.seq, "feed sender restarted (new session)");
                self.stats.restarts.fetch_add(1, Ordering::Relaxed);
                self.locates.fill(None);
                self.session_ended = false;
                self.mark_all_stale(Reason::SessionEnd);
            }
        }
        if self.feed_down {
            self.feed_down = false;
            self.stats.up.store(true, Ordering::Relaxed);
            tracing::info!("feed up again");
            self.recover_after_silence();
        } else {
            self.stats.up.store(true, Ordering::Relaxed);
        }
        let decision = self.seq.offer(&p, raw, now);
        match decision {
            Decision::Apply { skip } => {
                self.apply_packet(&p, skip, ts_recv);
                self.release_held(ts_recv);
            }
            Decision::Duplicate | Decision::Held => {}
            Decision::Heartbeat => {
                self.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
            }
            Decision::EndOfSession => {
                if !self.session_ended {
                    tracing::info!(session = %p.session, "feed session ended");
                    self.session_ended = true;
                    self.stats.sessions_ended.fetch_add(1, Ordering::Relaxed);
                    self.mark_all_stale(Reason::SessionEnd);
                }
            }
        }
        // A heartbeat ahead of sequence is a tail loss, reported by expire.
        if self.seq.expire(now) > 0 {
            self.on_gap();
            self.release_held(ts_recv);
        }
        self.sync_seq_stats();
        self.flush_wakes();
    }

    /// Applies held packets that are now in order.
    fn release_held(&mut self, ts_recv: i64) {
        while let Some(raw) = self.seq.pop_ready() {
            // Held packets were validated before they were held.
            let Ok(p) = Packet::decode(&raw) else { continue };
            if let Decision::Apply { skip } = self.seq.offer(&p, &raw, Instant::now()) {
                self.apply_packet(&p, skip, ts_recv);
            }
        }
    }

    fn sync_seq_stats(&self) {
        let s = self.seq.stats();
        let st = &self.stats;
        st.gaps.store(s.gaps, Ordering::Relaxed);
        st.missed_messages.store(s.missed_messages, Ordering::Relaxed);
        st.duplicate_packets.store(s.duplicate_packets, Ordering::Relaxed);
        st.reordered_packets.store(s.reordered_packets, Ordering::Relaxed);
        st.next_seq.store(self.seq.next_seq(), Ordering::Relaxed);
    }

    fn apply_packet(&mut self, p: &Packet<'_>, skip: u16, ts_recv: i64) {
        let mut applied = 0;
        for (feed_seq, m) in p.messages().skip(usize::from(skip)) {
            self.apply(feed_seq, &m, ts_recv);
            applied += 1;
        }
        self.stats.messages.fetch_add(applied, Ordering::Relaxed);
    }

    fn apply(&mut self, feed_seq: u64, m: &Message, ts_recv: i64) {
        match *m {
            Message::SymbolDirectory { locate, symbol } => match self.book.insert_symbol(symbol) {
                Ok(id) => {
                    self.locates[usize::from(locate)] = Some(id);
                    if id as usize == self.syms.len() {
                        let q = Quote::empty(symbol);
                        self.hub.init(id, Arc::new(q.clone()));
                        self.syms.push(SymState { quote: q, needs_refresh: false });
                    }
                }
                Err(e) => {
                    self.stats.book_full.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%symbol, error = %e, "symbol not added");
                }
            },
            Message::Quote { locate, ts, bid_px, bid_sz, ask_px, ask_sz } => {
                let Some(id) = self.locate(locate) else { return };
                let s = &mut self.syms[id as usize];
                s.needs_refresh = false;
                let q = &mut s.quote;
                q.kind = UpdateKind::Quote;
                q.bid_px = bid_px;
                q.bid_sz = u64::from(bid_sz);
                q.ask_px = ask_px;
                q.ask_sz = u64::from(ask_sz);
                self.commit(id, ts as i64, ts_recv, feed_seq);
            }
            Message::Trade { locate, ts, px, sz } => {
                let Some(id) = self.locate(locate) else { return };
                let q = &mut self.syms[id as usize].quote;
                q.kind = UpdateKind::Trade;
                q.last_px = px;
                q.last_sz = u64::from(sz);
                self.commit(id, ts as i64, ts_recv, feed_seq);
            }
        }
    }

    fn locate(&self, locate: u16) -> Option<SymbolId> {
        let id = self.locates[usize::from(locate)];
        if id.is_none() {
            self.stats.unknown_locate.fetch_add(1, Ordering::Relaxed);
        }
        id
    }

    /// Publishes the writer's copy of `id` as its next update.
    fn commit(&mut self, id: SymbolId, ts_event: i64, ts_recv: i64, feed_seq: u64) {
        let s = &mut self.syms[id as usize];
        let was_stale = s.quote.stale;
        let q = &mut s.quote;
        q.seq += 1;
        q.ts_event = ts_event;
        q.ts_recv = ts_recv;
        q.feed_seq = feed_seq;
        q.stale = s.needs_refresh;
        let q = Arc::new(q.clone());
        if was_stale && !q.stale {
            self.stats.stale_symbols.fetch_sub(1, Ordering::Relaxed);
            self.hub.status(id, &q, State::Ok, Reason::Recovered, &mut self.wakes);
        }
        let entry = Encoded { bytes: encode::shared_entry(&q, Flags::default()), ts_recv };
        self.hub.publish(id, &q, &entry, &mut self.wakes);
        self.book.publish(id, q, true);
    }

    fn on_gap(&mut self) {
        tracing::warn!(missed = self.seq.stats().missed_messages, "feed gap: marking every symbol stale");
        self.mark_all_stale(Reason::FeedGap);
    }

    /// Every symbol becomes stale; gaps and restarts also require a fresh
    /// quote before it recovers.
    fn mark_all_stale(&mut self, reason: Reason) {
        let refresh = reason != Reason::FeedDown;
        for id in 0..self.syms.len() {
            let s = &mut self.syms[id];
            s.needs_refresh |= refresh;
            if s.quote.stale {
                continue;
            }
            s.quote.stale = true;
            let q = Arc::new(s.quote.clone());
            self.stats.stale_symbols.fetch_add(1, Ordering::Relaxed);
            self.hub.status(id as SymbolId, &q, State::Stale, reason, &mut self.wakes);
            self.book.publish(id as SymbolId, q, false);
        }
    }

    /// Packets flow again after silence: symbols that only went stale
    /// because of the silence recover now.
    fn recover_after_silence(&mut self) {
        for id in 0..self.syms.len() {
            let s = &mut self.syms[id];
            if !s.quote.stale || s.needs_refresh {
                continue;
            }
            s.quote.stale = false;
            let q = Arc::new(s.quote.clone());
            self.stats.stale_symbols.fetch_sub(1, Ordering::Relaxed);
            self.hub.status(id as SymbolId, &q, State::Ok, Reason::Recovered, &mut self.wakes);
            self.book.publish(id as SymbolId, q, false);
        }
    }

    fn flush_wakes(&mut self) {
        for m in self.wakes.drain(..) {
            m.wake();
        }
    }
}
