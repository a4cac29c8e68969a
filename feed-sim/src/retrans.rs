//! The retransmission server: answers MoldUDP64-style re-requests over
//! unicast UDP from a bounded ring of the session's recent data packets.
//!
//! The sender thread pushes every data packet into the [`Ring`] as it is
//! sequenced (before fault injection, so a packet dropped on purpose can
//! be recovered); the server thread answers requests from it. The lock is
//! held for one push or one answer; answers are built under it and sent
//! after it is released.
//!
//! ```text
//! send_loop ──push──► Ring (last N packets) ◄──answer── serve (own thread)
//!                                                        ▲ request (20 B)
//!                                                        │ unicast UDP
//!                                                     receiver
//! ```
//!
//! Request ([`RetransRequest`], exactly 20 bytes, the MoldUDP64 request
//! layout): session (10), sequence (u64), count (u16). Answers (see `FEED_FORMAT.md`,
//! "Retransmission"):
//! - the requested messages, at most `max_messages`, in datagrams with the
//!   session's framing: one per original packet, trimmed to the range (an
//!   original packet inside the range is sent byte for byte);
//! - "gone": a heartbeat (count 0) whose sequence is the oldest one still
//!   held, when the first requested sequence was evicted;
//! - "not yet": a heartbeat whose sequence is the next one the ring will
//!   hold, when the first requested sequence was not sent yet.
//!
//! Requests of another session, malformed ones, and those over
//! `max_requests_per_sec` from one requester (ip:port) are dropped and
//! counted.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use metrics::{counter, Counter};
use quotecast_proto::feed::{header, RetransRequest, SessionId, BLOCK_PREFIX_LEN, HEADER_LEN};
use tokio_util::sync::CancellationToken;

use crate::telemetry::{RETRANS_MESSAGES, RETRANS_PACKETS, RETRANS_REQUESTS};

/// Requesters remembered for rate limiting; beyond this, those whose
/// window has passed are forgotten first (a flood of fresh source ports
/// cannot grow the map without bound).
const MAX_REQUESTERS: usize = 4096;

/// How often the server looks at its stop token while idle.
const POLL: Duration = Duration::from_millis(20);

/// The last `capacity` data packets of the session, oldest first.
#[derive(Debug)]
pub struct Ring {
    capacity: usize,
    packets: VecDeque<Held>,
    /// Sequence of the oldest message held (or that the next push will
    /// start at, when empty).
    start: u64,
    /// One past the newest message held.
    end: u64,
}

#[derive(Debug)]
struct Held {
    seq: u64,
    count: u16,
    bytes: Vec<u8>,
}

/// What a request gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The requested messages (the first `messages` of the range), in
    /// these datagrams.
    Data {
        /// Datagrams to send, in sequence order.
        packets: Vec<Vec<u8>>,
        /// Messages in them.
        messages: u64,
    },
    /// The first requested sequence was evicted: a heartbeat carrying the
    /// oldest sequence still held.
    Gone(u64),
    /// The first requested sequence was not sent yet: a heartbeat carrying
    /// the next sequence the ring will hold.
    NotYet(u64),
}

impl Ring {
    /// An empty ring of at most `capacity` packets (at least 1), whose first
    /// message will be sequence 1.
    pub fn new(capacity: usize) -> Ring {
        Ring { capacity: capacity.max(1), packets: VecDeque::new(), start: 1, end: 1 }
    }

    /// Adds a finished data packet (as built by `PacketBuilder`), evicting
    /// the oldest when full. Packets arrive in sequence order.
    pub fn push(&mut self, bytes: &[u8]) {
        if bytes.len() < HEADER_LEN {
            return;
        }
        let seq = u64::from_be_bytes(bytes[10..18].try_into().unwrap_or_default());
        let count = u16::from_be_bytes([bytes[18], bytes[19]]);
        // Reuse the evicted packet's buffer: no allocation per packet once
        // the ring is full.
        let mut buf = if self.packets.len() == self.capacity {
            self.packets.pop_front().map(|h| h.bytes).unwrap_or_default()
        } else {
            Vec::with_capacity(bytes.len())
        };
        buf.clear();
        buf.extend_from_slice(bytes);
        self.packets.push_back(Held { seq, count, bytes: buf });
        self.start = self.packets.front().map_or(seq, |p| p.seq);
        self.end = seq + u64::from(count);
    }

    /// Oldest sequence held and one past the newest.
    pub fn range(&self) -> (u64, u64) {
        (self.start, self.end)
    }

    /// Answers a request for `count` messages from `seq`, covering at most
    /// `max_messages` of them.
    pub fn answer(&self, session: SessionId, seq: u64, count: u16, max_messages: u16) -> Answer {
        if seq < self.start {
            return Answer::Gone(self.start);
        }
        if seq >= self.end {
            return Answer::NotYet(self.end);
        }
        let want = u64::from(count.min(max_messages));
        let last = seq.saturating_add(want).min(self.end); // one past
                                                           // Packets are in sequence order: skip those entirely before `seq`.
        let first = self.packets.partition_point(|p| p.seq + u64::from(p.count) <= seq);
        let mut packets = Vec::new();
        let mut messages = 0;
        for p in self.packets.iter().skip(first) {
            if p.seq >= last {
                break;
            }
            let (from, to) = (seq.max(p.seq), last.min(p.seq + u64::from(p.count)));
            if (from, to) == (p.seq, p.seq + u64::from(p.count)) {
                packets.push(p.bytes.clone());
            } else {
                packets.push(trim(session, p, from, to));
            }
            messages += to - from;
        }
        Answer::Data { packets, messages }
    }
}

/// The messages `from..to` of a held packet, with their own header.
fn trim(session: SessionId, p: &Held, from: u64, to: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(p.bytes.len());
    out.extend_from_slice(&header(session, from, (to - from) as u16));
    let mut rest = &p.bytes[HEADER_LEN..];
    let mut s = p.seq;
    while s < to && rest.len() >= BLOCK_PREFIX_LEN {
        let len = BLOCK_PREFIX_LEN + usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let (block, tail) = rest.split_at(len.min(rest.len()));
        if s >= from {
            out.extend_from_slice(block);
        }
        rest = tail;
        s += 1;
    }
    out
}

/// Limits of the server (`--retrans-max-messages`,
/// `--retrans-max-requests-per-sec`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Messages one request can get; the answer covers the first ones.
    pub max_messages: u16,
    /// Requests per second per requester (ip:port); more are dropped.
    pub max_requests_per_sec: u32,
}

/// Counters of the server, shared with the report.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests received, of every kind.
    pub requests: AtomicU64,
    /// Requests answered with data.
    pub answered: AtomicU64,
    /// Requests answered "gone" (evicted range).
    pub gone: AtomicU64,
    /// Requests answered "not yet" (beyond what was sent).
    pub not_yet: AtomicU64,
    /// Requests dropped: over the per-requester rate.
    pub rate_limited: AtomicU64,
    /// Requests dropped: not 20 bytes, or count 0 or 0xFFFF.
    pub malformed: AtomicU64,
    /// Requests dropped: another session id.
    pub foreign_session: AtomicU64,
    /// Datagrams sent in answers (data and heartbeats).
    pub packets: AtomicU64,
    /// Messages retransmitted.
    pub messages: AtomicU64,
}

struct Handles {
    answered: Counter,
    gone: Counter,
    not_yet: Counter,
    rate_limited: Counter,
    malformed: Counter,
    foreign: Counter,
    packets: Counter,
    messages: Counter,
}

impl Handles {
    fn new() -> Self {
        let r = |result: &'static str| counter!(RETRANS_REQUESTS, "result" => result);
        Handles {
            answered: r("answered"),
            gone: r("gone"),
            not_yet: r("not_yet"),
            rate_limited: r("rate_limited"),
            malformed: r("malformed"),
            foreign: r("foreign_session"),
            packets: counter!(RETRANS_PACKETS),
            messages: counter!(RETRANS_MESSAGES),
        }
    }
}

/// Per-requester one-second windows.
#[derive(Debug, Default)]
struct RateLimit {
    windows: HashMap<SocketAddr, (Instant, u32)>,
}

impl RateLimit {
    /// Whether `from` may make another request at `now`.
    fn allow(&mut self, from: SocketAddr, now: Instant, max: u32) -> bool {
        if self.windows.len() >= MAX_REQUESTERS && !self.windows.contains_key(&from) {
            self.windows.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(1));
            if self.windows.len() >= MAX_REQUESTERS {
                return false;
            }
        }
        let w = self.windows.entry(from).or_insert((now, 0));
        if now.duration_since(w.0) >= Duration::from_secs(1) {
            *w = (now, 0);
        }
        if w.1 >= max {
            return false;
        }
        w.1 += 1;
        true
    }
}

/// Answers requests on `sock` until `stop` is cancelled. Runs on its own
/// thread.
///
/// # Errors
/// A receive or send error other than a timeout or an ICMP-reported
/// unreachable requester (those are normal for UDP and ignored).
pub fn serve(
    sock: &UdpSocket,
    ring: &Mutex<Ring>,
    session: SessionId,
    limits: Limits,
    stats: &Stats,
    stop: &CancellationToken,
) -> io::Result<()> {
    sock.set_read_timeout(Some(POLL))?;
    let m = Handles::new();
    let mut rate = RateLimit::default();
    let mut buf = [0u8; 64];
    let add = |c: &AtomicU64, h: &Counter, n: u64| {
        c.fetch_add(n, Ordering::Relaxed);
        h.increment(n);
    };
    while !stop.is_cancelled() {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) if is_benign(&e) => continue,
            Err(e) => return Err(e),
        };
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let Ok(RetransRequest { session: req_session, seq, count }) = RetransRequest::decode(&buf[..n])
        else {
            add(&stats.malformed, &m.malformed, 1);
            continue;
        };
        if req_session != session {
            add(&stats.foreign_session, &m.foreign, 1);
            continue;
        }
        if !rate.allow(from, Instant::now(), limits.max_requests_per_sec) {
            add(&stats.rate_limited, &m.rate_limited, 1);
            continue;
        }
        let answer = ring.lock().unwrap_or_else(PoisonError::into_inner).answer(
            session,
            seq,
            count,
            limits.max_messages,
        );
        let packets = match answer {
            Answer::Data { packets, messages } => {
                add(&stats.answered, &m.answered, 1);
                add(&stats.messages, &m.messages, messages);
                packets
            }
            Answer::Gone(oldest) => {
                add(&stats.gone, &m.gone, 1);
                vec![header(session, oldest, 0).to_vec()]
            }
            Answer::NotYet(next) => {
                add(&stats.not_yet, &m.not_yet, 1);
                vec![header(session, next, 0).to_vec()]
            }
        };
        for p in &packets {
            match sock.send_to(p, from) {
                Ok(_) => add(&stats.packets, &m.packets, 1),
                Err(e) if is_benign(&e) => break,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

fn is_benign(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
            | io::ErrorKind::Interrupted
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
    )
}

/// A shared ring, for the sender and the server.
pub type SharedRing = Arc<Mutex<Ring>>;

#[cfg(test)]
mod tests {
    use super::*;
    use quotecast_proto::feed::{Message, Packet, PacketBuilder};

    fn trade(i: u64) -> Message {
        Message::Trade { locate: 1, symbol_seq: i as u32, ts: i, px: 100, sz: 1 }
    }

    /// A ring of `cap` packets fed packets of 3 messages, sequences 1..=3*n.
    fn ring(cap: usize, n: u64) -> (Ring, SessionId, Vec<Vec<u8>>) {
        let s = SessionId::from_text("R1");
        let mut b = PacketBuilder::new(s, 1, 1400);
        let mut r = Ring::new(cap);
        let mut all = Vec::new();
        for p in 0..n {
            for i in 0..3 {
                b.push(&trade(3 * p + i + 1));
            }
            let bytes = b.finish().to_vec();
            r.push(&bytes);
            all.push(bytes);
        }
        (r, s, all)
    }

    fn msgs(packets: &[Vec<u8>]) -> Vec<(u64, Message)> {
        packets.iter().flat_map(|p| Packet::decode(p).unwrap().messages().collect::<Vec<_>>()).collect()
    }

    #[test]
    fn answers_exactly_the_range_trimming_partial_packets() {
        let (r, s, all) = ring(10, 10);
        assert_eq!(r.range(), (1, 31));
        // Whole packets come back byte for byte.
        let Answer::Data { packets, messages } = r.answer(s, 4, 6, 100) else { panic!() };
        assert_eq!((packets.as_slice(), messages), (&all[1..3], 6));
        // A range starting and ending inside packets.
        let Answer::Data { packets, messages } = r.answer(s, 5, 6, 100) else { panic!() };
        assert_eq!(messages, 6);
        assert_eq!(msgs(&packets), (5..11).map(|i| (i, trade(i))).collect::<Vec<_>>());
        assert_eq!(packets.len(), 3);
        // Past the end: only what exists.
        let Answer::Data { messages, .. } = r.answer(s, 29, 50, 100) else { panic!() };
        assert_eq!(messages, 2);
        // At most max_messages.
        let Answer::Data { packets, messages } = r.answer(s, 2, 500, 4) else { panic!() };
        assert_eq!(msgs(&packets).iter().map(|m| m.0).collect::<Vec<_>>(), [2, 3, 4, 5]);
        assert_eq!(messages, 4);
    }

    #[test]
    fn evicted_and_future_ranges_get_heartbeat_answers() {
        let (r, s, _) = ring(4, 10);
        assert_eq!(r.range(), (19, 31));
        assert_eq!(r.answer(s, 1, 5, 100), Answer::Gone(19));
        assert_eq!(r.answer(s, 18, 5, 100), Answer::Gone(19));
        assert_eq!(r.answer(s, 31, 1, 100), Answer::NotYet(31));
        assert!(matches!(r.answer(s, 19, 1, 100), Answer::Data { messages: 1, .. }));
        assert_eq!(Ring::new(8).answer(s, 1, 1, 10), Answer::NotYet(1));
    }

    #[test]
    fn rate_limit_is_per_requester_and_per_second() {
        let mut rl = RateLimit::default();
        let (a, b): (SocketAddr, SocketAddr) =
            ("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap());
        let t = Instant::now();
        assert_eq!((0..5).filter(|_| rl.allow(a, t, 3)).count(), 3);
        assert!(rl.allow(b, t, 3), "another requester has its own budget");
        assert!(rl.allow(a, t + Duration::from_millis(1001), 3), "a new second, a new budget");
    }
}
