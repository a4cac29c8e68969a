//! Feed sequence tracking, sans-I/O.
//!
//! Decides for each packet whether its messages are applied, dropped as
//! duplicates, or held back because an earlier packet is missing. Held
//! packets wait a short time (or a few packets) for the hole to fill: a
//! reordered packet is then applied in order and nothing is lost. When the
//! wait runs out the hole is a real gap: it is counted, the caller marks the
//! book stale, and the held packets are applied. Messages are never applied
//! out of order.

use quotecast_proto::feed::{Packet, PacketKind, SessionId};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What to do with an offered packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Apply the packet's messages from index `skip` on (earlier ones, if
    /// any, were already applied).
    Apply {
        /// Messages at the start of the packet that were already applied.
        skip: u16,
    },
    /// Every message was already applied; drop the packet.
    Duplicate,
    /// Ahead of sequence: the sequencer kept a copy and will hand it back
    /// through [`Sequencer::pop_ready`] once it is in order.
    Held,
    /// A heartbeat (nothing to apply).
    Heartbeat,
    /// The sender ended the session.
    EndOfSession,
}

/// Counters of what the sequencer saw. Monotonic for the process lifetime.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SeqStats {
    /// Holes declared lost (each may span many messages).
    pub gaps: u64,
    /// Messages lost in those holes.
    pub missed_messages: u64,
    /// Packets dropped because all their messages were already applied.
    pub duplicate_packets: u64,
    /// Packets that arrived out of order and were put back in order.
    pub reordered_packets: u64,
    /// Sender restarts (a new session id after the first one).
    pub restarts: u64,
}

/// Outcome of a session check, see [`Sequencer::offer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionChange {
    /// Same session as before.
    Same,
    /// First packet ever: the gateway joined the feed.
    Joined,
    /// A different session than the current one: the sender restarted.
    Restarted,
}

/// Tracks the expected sequence number of one feed session.
#[derive(Debug)]
pub struct Sequencer {
    session: Option<SessionId>,
    previous: Option<SessionId>,
    next: u64,
    held: BTreeMap<u64, Vec<u8>>,
    held_since: Option<Instant>,
    max_held: usize,
    max_hold: Duration,
    stats: SeqStats,
    /// A gap found at a heartbeat, reported by the next `expire` call.
    pending_gap: u64,
}

impl Sequencer {
    /// A sequencer that holds at most `max_held` out-of-order packets for at
    /// most `max_hold` before declaring a gap. `max_held = 0` disables
    /// reordering (every hole is a gap at once).
    pub fn new(max_held: usize, max_hold: Duration) -> Self {
        Sequencer {
            session: None,
            previous: None,
            next: 0,
            held: BTreeMap::new(),
            held_since: None,
            max_held,
            max_hold,
            stats: SeqStats::default(),
            pending_gap: 0,
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> SeqStats {
        self.stats
    }

    /// The next feed sequence number expected.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// The current session, once joined.
    pub fn session(&self) -> Option<SessionId> {
        self.session
    }

    /// True while packets are held waiting for a hole to fill.
    pub fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Checks the packet's session. Call before [`Sequencer::offer`]; a
    /// restart resets the expected sequence to the packet's own.
    pub fn check_session(&mut self, p: &Packet<'_>) -> SessionChange {
        match self.session {
            Some(s) if s == p.session => SessionChange::Same,
            // A straggler of the session before a restart: ignored by offer.
            Some(_) if self.previous == Some(p.session) => SessionChange::Same,
            Some(s) => {
                self.previous = Some(s);
                self.session = Some(p.session);
                self.stats.restarts += 1;
                self.held.clear();
                self.held_since = None;
                self.pending_gap = 0;
                self.next = 1;
                SessionChange::Restarted
            }
            None => {
                self.session = Some(p.session);
                self.next = p.seq.max(1);
                SessionChange::Joined
            }
        }
    }

    /// Classifies a packet of the current session. `raw` is the datagram,
    /// copied only when the packet must be held.
    pub fn offer(&mut self, p: &Packet<'_>, raw: &[u8], now: Instant) -> Decision {
        if Some(p.session) != self.session {
            // Late packet of the previous session.
            self.stats.duplicate_packets += 1;
            return Decision::Duplicate;
        }
        match p.kind {
            PacketKind::Heartbeat | PacketKind::EndOfSession => {
                if p.seq > self.next && self.held.is_empty() {
                    // Messages at the tail were lost: nothing will fill them.
                    self.pending_gap += p.seq - self.next;
                    self.next = p.seq;
                }
                if p.kind == PacketKind::EndOfSession {
                    Decision::EndOfSession
                } else {
                    Decision::Heartbeat
                }
            }
            PacketKind::Data(n) => {
                let end = p.seq + u64::from(n);
                if end <= self.next || self.held.contains_key(&p.seq) {
                    self.stats.duplicate_packets += 1;
                    Decision::Duplicate
                } else if p.seq <= self.next {
                    let skip = (self.next - p.seq) as u16;
                    self.next = end;
                    if !self.held.is_empty() {
                        self.stats.reordered_packets += 1;
                    }
                    Decision::Apply { skip }
                } else if self.max_held == 0 {
                    self.record_gap(p.seq - self.next);
                    self.next = end;
                    Decision::Apply { skip: 0 }
                } else {
                    self.held.insert(p.seq, raw.to_vec());
                    self.held_since.get_or_insert(now);
                    Decision::Held
                }
            }
        }
    }

    /// Hands back the first held packet if it is now in order (or
    /// overlaps). Offer it again; repeat until `None`.
    pub fn pop_ready(&mut self) -> Option<Vec<u8>> {
        let (&seq, _) = self.held.first_key_value()?;
        if seq > self.next {
            return None;
        }
        let raw = self.held.remove(&seq);
        if self.held.is_empty() {
            self.held_since = None;
        }
        raw
    }

    /// Declares the hole before the held packets lost if they waited too
    /// long or too many are held; returns the number of messages lost (0 if
    /// none). Afterwards [`Sequencer::pop_ready`] releases the held packets.
    pub fn expire(&mut self, now: Instant) -> u64 {
        let mut lost = std::mem::take(&mut self.pending_gap);
        if lost > 0 {
            self.record_gap(lost);
        }
        let overdue = self.held_since.is_some_and(|t| now.duration_since(t) >= self.max_hold);
        if self.held.len() > self.max_held || (overdue && !self.held.is_empty()) {
            if let Some((&first, _)) = self.held.first_key_value() {
                if first > self.next {
                    let hole = first - self.next;
                    self.record_gap(hole);
                    lost += hole;
                    self.next = first;
                }
            }
            self.held_since = Some(now);
        }
        lost
    }

    fn record_gap(&mut self, missed: u64) {
        self.stats.gaps += 1;
        self.stats.missed_messages += missed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quotecast_proto::feed::{header, Message, PacketBuilder};

    /// Builds `n` one-message packets of session `s` starting at seq 1.
    fn packets(s: &str, n: usize) -> Vec<Vec<u8>> {
        let mut b = PacketBuilder::new(SessionId::from_text(s), 1, 1400);
        (0..n)
            .map(|i| {
                b.push(&Message::Trade { locate: 1, ts: i as u64, px: 1, sz: 1 });
                b.finish().to_vec()
            })
            .collect()
    }

    /// Feeds raw packets through a sequencer like the ingest loop does and
    /// returns the sequence numbers of applied messages.
    fn run(seq: &mut Sequencer, raws: &[Vec<u8>], now: Instant) -> Vec<u64> {
        let mut applied = Vec::new();
        let mut queue: Vec<Vec<u8>> = raws.to_vec();
        queue.reverse();
        while let Some(raw) = queue.pop() {
            let p = Packet::decode(&raw).unwrap();
            seq.check_session(&p);
            if let Decision::Apply { skip } = seq.offer(&p, &raw, now) {
                applied.extend(p.messages().skip(skip.into()).map(|(s, _)| s));
                while let Some(r) = seq.pop_ready() {
                    queue.push(r);
                }
            }
        }
        applied
    }

    #[test]
    fn in_order_applies_everything() {
        let mut s = Sequencer::new(4, Duration::from_millis(5));
        let now = Instant::now();
        assert_eq!(run(&mut s, &packets("A", 5), now), vec![1, 2, 3, 4, 5]);
        assert_eq!(s.stats(), SeqStats::default());
        assert_eq!(s.next_seq(), 6);
    }

    #[test]
    fn duplicate_is_dropped_and_counted() {
        let mut s = Sequencer::new(4, Duration::from_millis(5));
        let p = packets("A", 3);
        let raws = vec![p[0].clone(), p[1].clone(), p[1].clone(), p[2].clone()];
        assert_eq!(run(&mut s, &raws, Instant::now()), vec![1, 2, 3]);
        assert_eq!(s.stats().duplicate_packets, 1);
        assert_eq!(s.stats().gaps, 0);
    }

    #[test]
    fn reorder_within_window_is_healed() {
        let mut s = Sequencer::new(4, Duration::from_millis(5));
        let p = packets("A", 4);
        let raws = vec![p[0].clone(), p[2].clone(), p[1].clone(), p[3].clone()];
        assert_eq!(run(&mut s, &raws, Instant::now()), vec![1, 2, 3, 4]);
        assert_eq!(s.stats().reordered_packets, 1);
        assert_eq!(s.stats().gaps, 0);
    }

    #[test]
    fn loss_becomes_a_gap_after_the_hold_time() {
        let mut s = Sequencer::new(4, Duration::from_millis(5));
        let p = packets("A", 4);
        let t0 = Instant::now();
        let raws = vec![p[0].clone(), p[2].clone(), p[3].clone()];
        assert_eq!(run(&mut s, &raws, t0), vec![1]);
        assert_eq!(s.expire(t0 + Duration::from_millis(1)), 0, "still waiting");
        assert_eq!(s.expire(t0 + Duration::from_millis(6)), 1);
        let mut rest = Vec::new();
        while let Some(r) = s.pop_ready() {
            rest.extend(run(&mut s, &[r], t0));
        }
        assert_eq!(rest, vec![3, 4]);
        assert_eq!((s.stats().gaps, s.stats().missed_messages), (1, 1));
        // The lost packet arriving late is a duplicate, never applied.
        assert_eq!(run(&mut s, &[p[1].clone()], t0), Vec::<u64>::new());
    }

    #[test]
    fn too_many_held_packets_force_the_gap() {
        let mut s = Sequencer::new(2, Duration::from_secs(60));
        let p = packets("A", 6);
        let t0 = Instant::now();
        let raws = vec![p[0].clone(), p[2].clone(), p[3].clone(), p[4].clone()];
        run(&mut s, &raws, t0);
        assert_eq!(s.expire(t0), 1);
    }

    #[test]
    fn no_window_means_immediate_gap() {
        let mut s = Sequencer::new(0, Duration::ZERO);
        let p = packets("A", 3);
        assert_eq!(run(&mut s, &[p[0].clone(), p[2].clone()], Instant::now()), vec![1, 3]);
        assert_eq!(s.stats().missed_messages, 1);
    }

    #[test]
    fn restart_is_detected_and_resets_sequence() {
        let mut s = Sequencer::new(4, Duration::from_millis(5));
        let now = Instant::now();
        run(&mut s, &packets("A", 3), now);
        let b = packets("B", 2);
        let p = Packet::decode(&b[0]).unwrap();
        assert_eq!(s.check_session(&p), SessionChange::Restarted);
        assert_eq!(s.offer(&p, &b[0], now), Decision::Apply { skip: 0 });
        assert_eq!(s.stats().restarts, 1);
        // A straggler from session A is dropped.
        let a = packets("A", 4);
        assert_eq!(run(&mut s, &[a[3].clone()], now), Vec::<u64>::new());
    }

    #[test]
    fn heartbeat_ahead_reports_tail_loss() {
        let mut s = Sequencer::new(4, Duration::from_millis(5));
        let now = Instant::now();
        run(&mut s, &packets("A", 2), now);
        let hb = header(SessionId::from_text("A"), 6, 0);
        let p = Packet::decode(&hb).unwrap();
        s.check_session(&p);
        assert_eq!(s.offer(&p, &hb, now), Decision::Heartbeat);
        assert_eq!(s.expire(now), 3);
        assert_eq!(s.next_seq(), 6);
    }

    #[test]
    fn partial_overlap_skips_applied_messages() {
        let mut s = Sequencer::new(4, Duration::from_millis(5));
        let mut b = PacketBuilder::new(SessionId::from_text("A"), 1, 1400);
        for i in 0..3 {
            b.push(&Message::Trade { locate: 1, ts: i, px: 1, sz: 1 });
        }
        let first = b.finish().to_vec();
        let mut b2 = PacketBuilder::new(SessionId::from_text("A"), 2, 1400);
        for i in 0..4 {
            b2.push(&Message::Trade { locate: 1, ts: i, px: 1, sz: 1 });
        }
        let overlap = b2.finish().to_vec();
        assert_eq!(run(&mut s, &[first, overlap], Instant::now()), vec![1, 2, 3, 4, 5]);
    }
}
