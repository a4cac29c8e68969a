//! Gap fill: asking the feed's retransmission server for what both lines
//! lost (MoldUDP64 re-request, see FEED_FORMAT.md "Retransmission").
//!
//! When the sequencer would declare a hole lost (its reorder hold ran out
//! or its window filled), ingest asks this module first. It sends one
//! request per missing range (at most [`RetransConfig::max_messages`] each,
//! the server's own per-answer limit), keeps at most
//! [`RetransConfig::max_outstanding`] requests in flight and sends at most
//! [`RetransConfig::max_per_sec`] per second. While the request for the
//! front hole is in flight the sequencer holds the packets after it (up to
//! [`RetransConfig::max_held`]) instead of giving the hole up: the answer
//! is applied in order, and clients see every update, late but complete.
//! A request that is not answered within [`RetransConfig::timeout`] is sent
//! once more; then the hole is a gap like without a server. A "gone"
//! answer (the server's ring no longer has the range) gives up the part it
//! names at once.
//!
//! This module owns the plan (what was asked, when, what came of it);
//! the socket is read by ingest's loop, which hands every answer datagram
//! to [`Retrans::classify`].

use super::sequencer::Patience;
use quotecast_proto::feed::{RetransRequest, SessionId};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// The retransmission flags, resolved.
#[derive(Debug, Clone)]
pub struct RetransConfig {
    /// The server (`--retrans-addr`).
    pub server: SocketAddr,
    /// Wait for an answer before asking again, then giving up.
    pub timeout: Duration,
    /// Requests in flight at once.
    pub max_outstanding: usize,
    /// Requests sent per second at most.
    pub max_per_sec: u32,
    /// Messages asked for in one request (the server answers at most its
    /// `--retrans-max-messages`, 2,000 by default).
    pub max_messages: u16,
    /// Packets held while a hole waits for its answer.
    pub max_held: usize,
}

/// Attempts per range before it is given up.
const ATTEMPTS: u8 = 2;

/// One request in flight (or given up, until the stream passes it).
#[derive(Debug, Clone, Copy)]
struct Pending {
    start: u64,
    end: u64,
    /// First send (fill latency is measured from here).
    first_sent: Instant,
    sent: Instant,
    attempts: u8,
    /// Every attempt timed out: the range still counts as asked for (so
    /// it is not asked again) but buys no more patience.
    dead: bool,
}

/// What an answer datagram means (see FEED_FORMAT.md: a heartbeat on this
/// socket is an answer, never a sign of life).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Retransmitted data: offer it to the sequencer like a line packet.
    Data,
    /// The server no longer holds messages before `oldest`: give them up.
    Gone {
        /// Oldest message the server still holds.
        oldest: u64,
    },
    /// The server has not sent the range yet (or the answer is for nothing
    /// in flight): ignore; the timeout decides.
    Ignore,
}

/// Counters of the gap-fill side, kept here and copied to
/// [`super::FeedStats`] by ingest.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RetransCounts {
    /// Requests sent (retries included).
    pub requests: u64,
    /// Ranges filled completely by answers.
    pub filled: u64,
    /// Ranges given up because the server said they are gone.
    pub gone: u64,
    /// Ranges whose every attempt timed out (they became gaps).
    pub timed_out: u64,
    /// Times a missing range could not be asked for because the request
    /// rate was spent (if it stays so, the range becomes a gap).
    pub refused: u64,
}

/// The gap-fill planner and its socket.
#[derive(Debug)]
pub struct Retrans {
    cfg: RetransConfig,
    socket: UdpSocket,
    pending: Vec<Pending>,
    /// Session the requests are for.
    session: SessionId,
    /// Start of the current one-second rate window, and requests in it.
    window: Option<(Instant, u32)>,
    counts: RetransCounts,
    /// Fill latencies (first request to complete fill) not yet taken.
    latencies: Vec<Duration>,
}

impl Retrans {
    /// A planner asking `cfg.server` through `socket` (bound to a loopback
    /// or local address and connected to the server, nonblocking).
    pub fn new(cfg: RetransConfig, socket: UdpSocket) -> Self {
        Retrans {
            cfg,
            socket,
            pending: Vec::new(),
            session: SessionId::default(),
            window: None,
            counts: RetransCounts::default(),
            latencies: Vec::new(),
        }
    }

    /// The socket answers arrive on.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// Counters so far.
    pub fn counts(&self) -> RetransCounts {
        self.counts
    }

    /// Fill latencies measured since the last call.
    pub fn take_latencies(&mut self) -> std::vec::Drain<'_, Duration> {
        self.latencies.drain(..)
    }

    /// Requests in flight at most (also the most holes worth listing).
    pub fn max_outstanding(&self) -> usize {
        self.cfg.max_outstanding
    }

    /// True while a request is in flight.
    pub fn busy(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Brings the plan up to date with the sequencer: ranges the stream has
    /// passed are settled (filled, or given up by the caller), timed-out
    /// requests are retried or dropped, and every missing range not asked
    /// for yet is asked for. `holes` are the sequencer's, front first;
    /// `overdue` says whether the front hole would be declared lost now
    /// without a request. Returns how long the front hole may still wait.
    pub fn plan(
        &mut self,
        session: SessionId,
        holes: &[(u64, u64)],
        overdue: bool,
        now: Instant,
    ) -> Option<Patience> {
        self.settle(holes, now);
        // A hole is asked for once it would be lost without an answer;
        // while one is being recovered, every later hole is asked for at
        // once (the packets after it are held anyway).
        if overdue || self.busy() {
            for &(start, end) in holes {
                let mut at = start;
                while at < end {
                    if let Some(asked) =
                        self.pending.iter().filter(|p| p.start <= at && at < p.end).map(|p| p.end).max()
                    {
                        at = asked;
                        continue;
                    }
                    let stop = end.min(at + u64::from(self.cfg.max_messages));
                    if self.pending.len() >= self.cfg.max_outstanding {
                        // Asked for once a slot frees up.
                        break;
                    }
                    if !self.send(session, at, stop, now) {
                        self.counts.refused += 1;
                        break;
                    }
                    at = stop;
                }
            }
        }
        let front = holes.first()?;
        let p = self.pending.iter().find(|p| !p.dead && p.start <= front.0 && front.0 < p.end)?;
        Some(Patience { until: p.sent + self.cfg.timeout, max_held: self.cfg.max_held })
    }

    /// Drops requests the stream has passed and retries or abandons
    /// timed-out ones.
    fn settle(&mut self, holes: &[(u64, u64)], now: Instant) {
        let still_missing = |p: &Pending| holes.iter().any(|&(s, e)| s < p.end && p.start < e);
        let mut i = 0;
        while i < self.pending.len() {
            let p = self.pending[i];
            if !still_missing(&p) {
                // Every message of the range arrived, from the server or a
                // late line copy (a range given up was taken by `abandon`).
                if !p.dead {
                    self.counts.filled += 1;
                    self.latencies.push(now.duration_since(p.first_sent));
                }
                self.pending.swap_remove(i);
                continue;
            }
            if !p.dead && now.duration_since(p.sent) >= self.cfg.timeout {
                if p.attempts < ATTEMPTS && self.rate_allows(now) {
                    self.pending[i].sent = now;
                    self.pending[i].attempts += 1;
                    self.resend(i);
                } else {
                    self.counts.timed_out += 1;
                    self.pending[i].dead = true;
                }
            }
            i += 1;
        }
    }

    /// The sequencer gave up every message before `next` (a timeout, too
    /// much held, or a "gone" answer): requests for them are over.
    pub fn abandon(&mut self, next: u64) {
        self.pending.retain(|p| p.end > next);
    }

    /// Classifies an answer datagram of the followed `session`, given its
    /// header (`seq`, `count`; heartbeat: count 0).
    pub fn classify(&mut self, session_matches: bool, seq: u64, count: u16) -> Answer {
        if !session_matches {
            return Answer::Ignore;
        }
        if count != 0 {
            return Answer::Data;
        }
        // A heartbeat: "gone" if it names a message after a range asked
        // for; the caller gives up what is before it and asks again for
        // the rest.
        if !self.pending.iter().any(|p| !p.dead && p.start < seq) {
            return Answer::Ignore;
        }
        self.counts.gone += 1;
        self.pending.retain(|p| p.start >= seq);
        Answer::Gone { oldest: seq }
    }

    /// Forgets every request (a new session, a resync).
    pub fn reset(&mut self) {
        self.pending.clear();
    }

    fn rate_allows(&mut self, now: Instant) -> bool {
        let (start, n) = self.window.get_or_insert((now, 0));
        if now.duration_since(*start) >= Duration::from_secs(1) {
            *start = now;
            *n = 0;
        }
        if *n >= self.cfg.max_per_sec {
            return false;
        }
        *n += 1;
        true
    }

    /// Sends a request for `[start, end)`; false if the rate refused it.
    fn send(&mut self, session: SessionId, start: u64, end: u64, now: Instant) -> bool {
        if !self.rate_allows(now) {
            return false;
        }
        if session != self.session {
            self.pending.clear();
            self.session = session;
        }
        self.pending.push(Pending { start, end, first_sent: now, sent: now, attempts: 1, dead: false });
        self.resend(self.pending.len() - 1);
        true
    }

    /// Puts request `i` on the wire. A failed send (the server's port
    /// closed: ECONNREFUSED from an earlier answer) is left to the timeout.
    fn resend(&mut self, i: usize) {
        let p = self.pending[i];
        let count = (p.end - p.start).min(u64::from(self.cfg.max_messages)) as u16;
        let r = RetransRequest { session: self.session, seq: p.start, count };
        self.counts.requests += 1;
        let _ = self.socket.send(&r.encode());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planner(max_outstanding: usize, max_per_sec: u32) -> (Retrans, UdpSocket) {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.connect(server.local_addr().unwrap()).unwrap();
        let cfg = RetransConfig {
            server: server.local_addr().unwrap(),
            timeout: Duration::from_millis(100),
            max_outstanding,
            max_per_sec,
            max_messages: 10,
            max_held: 99,
        };
        (Retrans::new(cfg, client), server)
    }

    fn received(server: &UdpSocket) -> RetransRequest {
        let mut b = [0u8; 64];
        let n = server.recv(&mut b).unwrap();
        RetransRequest::decode(&b[..n]).unwrap()
    }

    #[test]
    fn a_hole_is_asked_for_once_retried_once_then_given_up() {
        let (mut r, server) = planner(4, 100);
        let s = SessionId::from_text("R");
        let t0 = Instant::now();
        assert_eq!(r.plan(s, &[(5, 8)], false, t0), None, "not overdue yet: the lines may still fill it");
        let p = r.plan(s, &[(5, 8)], true, t0).expect("waits for the answer");
        assert_eq!((p.until, p.max_held), (t0 + Duration::from_millis(100), 99));
        assert_eq!(received(&server), RetransRequest { session: s, seq: 5, count: 3 });
        r.plan(s, &[(5, 8)], true, t0 + Duration::from_millis(50));
        let retry = t0 + Duration::from_millis(100);
        assert!(r.plan(s, &[(5, 8)], true, retry).is_some(), "second attempt");
        assert_eq!(received(&server).seq, 5);
        assert_eq!(r.plan(s, &[(5, 8)], true, retry + Duration::from_millis(100)), None, "given up");
        assert_eq!(r.plan(s, &[(5, 8)], true, retry + Duration::from_millis(300)), None, "never asked again");
        let c = r.counts();
        assert_eq!((c.requests, c.timed_out, c.filled), (2, 1, 0));
        r.abandon(8);
        assert!(!r.busy());
    }

    #[test]
    fn long_holes_are_split_and_bounded_and_fills_are_timed() {
        let (mut r, server) = planner(2, 100);
        let s = SessionId::from_text("R");
        let t0 = Instant::now();
        // 25 messages missing, 10 per request, 2 in flight at most.
        assert!(r.plan(s, &[(1, 26)], true, t0).is_some());
        assert_eq!((received(&server).seq, received(&server).seq), (1, 11));
        assert_eq!(r.counts().refused, 0, "the third part waits for a slot");
        // The first part arrives: its slot asks for the last part.
        r.plan(s, &[(11, 26)], true, t0 + Duration::from_millis(3));
        assert_eq!(received(&server), RetransRequest { session: s, seq: 21, count: 5 });
        assert_eq!(r.counts().filled, 1);
        assert_eq!(r.take_latencies().collect::<Vec<_>>(), vec![Duration::from_millis(3)]);
        assert_eq!(r.plan(s, &[], false, t0 + Duration::from_millis(4)), None);
        assert_eq!((r.counts().filled, r.busy()), (3, false));
    }

    #[test]
    fn gone_gives_up_what_it_names_and_rate_bounds_requests() {
        let (mut r, _server) = planner(8, 2);
        let s = SessionId::from_text("R");
        let t0 = Instant::now();
        r.plan(s, &[(1, 5), (7, 9), (12, 13)], true, t0);
        assert_eq!((r.counts().requests, r.counts().refused), (2, 1), "2 per second");
        r.plan(s, &[(1, 5), (7, 9), (12, 13)], true, t0 + Duration::from_millis(1));
        assert_eq!((r.counts().requests, r.counts().refused), (2, 2), "still refused within the second");
        assert_eq!(r.classify(false, 100, 0), Answer::Ignore, "another session");
        assert_eq!(r.classify(true, 1, 0), Answer::Ignore, "not yet");
        assert_eq!(r.classify(true, 1, 3), Answer::Data);
        assert_eq!(r.classify(true, 8, 0), Answer::Gone { oldest: 8 });
        assert!(!r.busy(), "both ranges start before 8: given up (the caller asks again for the rest)");
    }
}
