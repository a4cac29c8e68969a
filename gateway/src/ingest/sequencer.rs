//! Feed sequence tracking, sans-I/O.
//!
//! Decides for each packet whether its messages are applied, dropped as
//! duplicates, or held back because an earlier packet is missing. Held
//! packets wait a short time (or a few packets) for the hole to fill: a
//! reordered packet is then applied in order and nothing is lost. When the
//! wait runs out the hole is a real gap: it is counted, the caller marks the
//! book stale, and the held packets are applied. Messages are never applied
//! out of order.
//!
//! # What is trusted
//!
//! A multicast group is shared media: a test sender, a replay tool or a
//! stale process may put packets on it. The sequencer follows one *track*:
//! the current session, within [`TrustConfig::max_seq_jump`] messages of the
//! expected sequence. Every other packet (another session id, or the
//! current one far ahead or far behind) is a *candidate*: kept aside
//! (bounded, [`CANDIDATE_BUFFER_BYTES`]), never applied, never counted as
//! life. A candidate track takes over only when both hold:
//!
//! - it has proven itself: [`TrustConfig::confirm_packets`] consecutive,
//!   in-order packets (heartbeats count), and
//! - the current track is finished: it sent end of session, or nothing
//!   trusted came for [`TrustConfig::takeover_silence`].
//!
//! Then its kept packets are handed back ([`Sequencer::take_replay`]) and
//! applied in order, so a restarted sender loses nothing (its directory
//! comes first). A candidate is discarded, and its packets counted as
//! suspect by reason, as soon as the current track shows life, when it
//! breaks its own sequence, or when it is itself silent for the takeover
//! bound. One stray datagram therefore never changes what is followed.
//!
//! The first packet ever is joined at once (a late join must work); if it
//! was a stray, the real feed takes over by the rule above once the stray
//! is silent.
//!
//! # A/B lines
//!
//! With two lines the caller offers every datagram of both lines here, in
//! arrival order: the first copy of a sequence is applied, the other is a
//! [`Decision::Duplicate`], and a hole one line left is filled by the other
//! line's copy while the packets after it are held. The trust rules apply
//! to the merged stream (a stray on either line is a candidate). A
//! heartbeat ahead waits the reorder hold too, since it may overtake the
//! other line's copy of a lost packet (or be a stray the flowing feed
//! overtakes without a gap).

use quotecast_proto::feed::{Packet, PacketKind, SessionId};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Most bytes of candidate packets kept for replay. A restarted sender's
/// first packets (its directory) fit many times over; packets beyond it
/// still count towards the proof, and are a gap if the candidate takes
/// over.
pub const CANDIDATE_BUFFER_BYTES: usize = 4 << 20;

/// What one kept packet costs besides its bytes (its `Vec` and the
/// allocator's header), counted against [`CANDIDATE_BUFFER_BYTES`].
const KEPT_OVERHEAD_BYTES: usize = 48;

/// How far (messages) a candidate's packet may be out of order and still
/// belong to its run (a restart's packets reordered on the way).
const CANDIDATE_REORDER: u64 = 4096;

/// When an untrusted track may replace the followed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustConfig {
    /// Consecutive in-order packets a candidate must show (at least 1).
    pub confirm_packets: u32,
    /// Silence of the followed track after which a proven candidate takes
    /// over (immediately after end of session); also how long an idle
    /// candidate is kept.
    pub takeover_silence: Duration,
    /// Largest sequence distance from the expected one that is believed at
    /// once; beyond it a packet starts a candidate.
    pub max_seq_jump: u64,
}

impl Default for TrustConfig {
    /// The flag defaults (`--feed-confirm-packets`,
    /// `--feed-takeover-silence-ms`, `--max-seq-jump`).
    fn default() -> Self {
        TrustConfig {
            confirm_packets: 3,
            takeover_silence: Duration::from_millis(2000),
            max_seq_jump: 100_000,
        }
    }
}

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
    EndOfSession {
        /// False for the copies that follow the first.
        first: bool,
    },
}

/// Counters of what the sequencer saw. Monotonic for the process lifetime.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SeqStats {
    /// Holes declared lost (each may span many messages), including
    /// sequence jumps that were confirmed.
    pub gaps: u64,
    /// Messages lost in those holes.
    pub missed_messages: u64,
    /// Packets dropped because all their messages were already applied.
    pub duplicate_packets: u64,
    /// Packets that arrived out of order and were put back in order.
    pub reordered_packets: u64,
    /// Sender restarts (another session took over).
    pub restarts: u64,
    /// Packets of another session that never took over.
    pub foreign_session: u64,
    /// Packets of the current session too far from the expected sequence
    /// that were never confirmed.
    pub seq_jump: u64,
}

/// Outcome of [`Sequencer::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// A packet of the followed track: [`Sequencer::offer`] it.
    Trusted,
    /// First packet ever: the gateway joined the feed; offer it.
    Joined,
    /// Not trusted (yet): kept aside as a candidate, nothing to apply.
    Untrusted,
    /// A candidate completed its proof and is now followed: handle the
    /// change, then offer every packet of [`Sequencer::take_replay`] in
    /// order (this one is among them).
    TookOver(Takeover),
}

/// How the followed track changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takeover {
    /// Another session: the sender restarted. Locates are void.
    Restart,
    /// Same session, a sequence jump confirmed: a gap (or a resync
    /// backwards); every book may be wrong.
    Resync,
}

/// An untrusted track being watched.
#[derive(Debug)]
struct Candidate {
    session: SessionId,
    /// Same session as the followed one (a far jump), or another.
    same_session: bool,
    first_seq: u64,
    /// Next sequence the candidate must show to stay consecutive.
    next: u64,
    /// Consecutive in-order packets so far.
    run: u32,
    /// Packets attributed to the candidate (kept or not).
    received: u64,
    kept: Vec<Vec<u8>>,
    kept_bytes: usize,
    last_seen: Instant,
}

impl Candidate {
    /// Keeps a copy for the replay, within [`CANDIDATE_BUFFER_BYTES`]
    /// (counting a per-packet overhead, so tiny heartbeats cannot make it
    /// a million allocations). Once one packet did not fit, none after it
    /// is kept either: the replay is a prefix, never one with holes.
    fn keep(&mut self, raw: &[u8]) {
        let cost = raw.len() + KEPT_OVERHEAD_BYTES;
        if self.kept_bytes + cost <= CANDIDATE_BUFFER_BYTES {
            self.kept_bytes += cost;
            self.kept.push(raw.to_vec());
        } else {
            self.kept_bytes = CANDIDATE_BUFFER_BYTES;
        }
    }
}

/// Tracks the expected sequence number of one feed session.
#[derive(Debug)]
pub struct Sequencer {
    session: Option<SessionId>,
    next: u64,
    /// The followed session sent end of session (and nothing since).
    ended: bool,
    /// Last packet that showed the followed track is alive.
    last_trusted: Option<Instant>,
    candidate: Option<Candidate>,
    replay: Vec<Vec<u8>>,
    trust: TrustConfig,
    held: BTreeMap<u64, Vec<u8>>,
    held_since: Option<Instant>,
    max_held: usize,
    max_hold: Duration,
    stats: SeqStats,
    /// A gap found at a heartbeat, reported by the next `expire` call.
    pending_gap: u64,
    /// Highest sequence declared lost in the current session (0 = none).
    lost_through: u64,
    /// Sequence a heartbeat ahead announced, while the hole before it may
    /// still fill within the reorder hold, as before a data packet ahead
    /// (0 = none). An end of session ahead stays a gap at once: the session
    /// is over, and what follows it must not refresh a symbol.
    tail: u64,
}

/// How long a hole may wait while its retransmission is on the way (see
/// [`Sequencer::expire_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Patience {
    /// The hole is lost at this instant if still open.
    pub until: Instant,
    /// Most packets held meanwhile.
    pub max_held: usize,
}

/// Messages a held (validated) datagram covers, from its header.
fn held_span(raw: &[u8]) -> u64 {
    match raw.get(18..20) {
        Some(&[a, b]) => match u16::from_be_bytes([a, b]) {
            0 | 0xFFFF => 0,
            n => u64::from(n),
        },
        _ => 0,
    }
}

/// Sequence numbers a packet covers: `count` for data, none otherwise.
pub(crate) fn span(p: &Packet<'_>) -> u64 {
    match p.kind {
        PacketKind::Data(n) => u64::from(n),
        PacketKind::Heartbeat | PacketKind::EndOfSession => 0,
    }
}

impl Sequencer {
    /// A sequencer that holds at most `max_held` out-of-order packets for at
    /// most `max_hold` before declaring a gap. `max_held = 0` disables
    /// reordering (every hole is a gap at once). Trust rules: the defaults.
    pub fn new(max_held: usize, max_hold: Duration) -> Self {
        Self::with_trust(max_held, max_hold, TrustConfig::default())
    }

    /// Like [`Sequencer::new`] with explicit trust rules.
    pub fn with_trust(max_held: usize, max_hold: Duration, trust: TrustConfig) -> Self {
        Sequencer {
            session: None,
            next: 0,
            ended: false,
            last_trusted: None,
            candidate: None,
            replay: Vec::new(),
            trust: TrustConfig { confirm_packets: trust.confirm_packets.max(1), ..trust },
            held: BTreeMap::new(),
            held_since: None,
            max_held,
            max_hold,
            stats: SeqStats::default(),
            pending_gap: 0,
            lost_through: 0,
            tail: 0,
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

    /// Highest sequence declared lost so far in the current session (0 =
    /// none): a symbol snapshot older than it may miss a lost message.
    pub fn lost_through(&self) -> u64 {
        self.lost_through
    }

    /// The current session, once joined.
    pub fn session(&self) -> Option<SessionId> {
        self.session
    }

    /// True while packets (or a heartbeat's tail) are held waiting for a
    /// hole to fill.
    pub fn holding(&self) -> bool {
        !self.held.is_empty() || self.tail > self.next
    }

    /// True while an untrusted track is watched (the caller should call
    /// [`Sequencer::poll`] on its timer).
    pub fn watching(&self) -> bool {
        self.candidate.is_some()
    }

    /// Decides whether `p` belongs to the followed track. Call before
    /// [`Sequencer::offer`], which only takes trusted packets. `raw` is the
    /// datagram, copied only when the packet is kept as a candidate.
    pub fn admit(&mut self, p: &Packet<'_>, raw: &[u8], now: Instant) -> Admit {
        let Some(current) = self.session else {
            self.session = Some(p.session);
            self.next = p.seq.max(1);
            self.last_trusted = Some(now);
            return Admit::Joined;
        };
        if p.session == current && self.in_reach(p) {
            if self.shows_life(p) {
                self.last_trusted = Some(now);
                if p.kind != PacketKind::EndOfSession {
                    // Data or a heartbeat after an end of session: that end
                    // was not the sender's (or it changed its mind).
                    self.ended = false;
                }
                self.discard_candidate();
            }
            return Admit::Trusted;
        }
        self.watch(p, raw, now, p.session == current);
        match self.ready(now) {
            Some(t) => Admit::TookOver(t),
            None => Admit::Untrusted,
        }
    }

    /// Timer: a proven candidate takes over once the followed track has
    /// been silent long enough; an idle candidate is discarded. After
    /// `Some`, do what [`Admit::TookOver`] says.
    pub fn poll(&mut self, now: Instant) -> Option<Takeover> {
        let idle = self.candidate.as_ref()?.last_seen;
        if let Some(t) = self.ready(now) {
            return Some(t);
        }
        if now.saturating_duration_since(idle) >= self.trust.takeover_silence {
            self.discard_candidate();
        }
        None
    }

    /// The packets of the candidate that just took over, oldest first.
    pub fn take_replay(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.replay)
    }

    /// Within `max_seq_jump` of the expected sequence, either way.
    fn in_reach(&self, p: &Packet<'_>) -> bool {
        let jump = self.trust.max_seq_jump;
        p.seq <= self.next.saturating_add(jump) && (p.seq + span(p)).saturating_add(jump) >= self.next
    }

    /// Whether a trusted packet proves the sender is still there: it
    /// advances (or holds) the sequence. Duplicates and the copies of an
    /// end of session do not.
    fn shows_life(&self, p: &Packet<'_>) -> bool {
        match p.kind {
            PacketKind::Data(n) => p.seq + u64::from(n) > self.next,
            PacketKind::Heartbeat => p.seq >= self.next,
            PacketKind::EndOfSession => !self.ended,
        }
    }

    /// Adds an untrusted packet to the candidate it continues, or starts a
    /// new candidate with it.
    fn watch(&mut self, p: &Packet<'_>, raw: &[u8], now: Instant, same_session: bool) {
        let end = p.seq + span(p);
        if let Some(c) = &mut self.candidate {
            if c.session == p.session && c.same_session == same_session {
                let continues = match p.kind {
                    PacketKind::Data(_) => p.seq <= c.next && end > c.next,
                    PacketKind::Heartbeat | PacketKind::EndOfSession => p.seq == c.next,
                };
                let repeat = match p.kind {
                    PacketKind::Data(_) => end <= c.next,
                    PacketKind::Heartbeat | PacketKind::EndOfSession => p.seq < c.next,
                } && p.seq >= c.first_seq;
                // A restarted sender's packets may arrive slightly out of
                // order (or a line's copy late): close to the run they
                // still belong to it, kept for the replay (which puts them
                // in order) but not counted as proof.
                let near = matches!(p.kind, PacketKind::Data(_))
                    && p.seq.saturating_add(CANDIDATE_REORDER) >= c.first_seq
                    && p.seq <= c.next.saturating_add(CANDIDATE_REORDER);
                if continues || repeat || near {
                    c.received += 1;
                    c.last_seen = now;
                    if continues || (near && !repeat) {
                        // New to the run (in order, or near it: the replay
                        // puts it in order and a hole is a gap there).
                        c.run += 1;
                        c.next = end.max(c.next);
                        c.first_seq = c.first_seq.min(p.seq);
                        c.keep(raw);
                    }
                    return;
                }
            }
        }
        self.discard_candidate();
        let mut c = Candidate {
            session: p.session,
            same_session,
            first_seq: p.seq,
            next: end,
            run: 1,
            received: 1,
            kept_bytes: 0,
            kept: Vec::new(),
            last_seen: now,
        };
        c.keep(raw);
        self.candidate = Some(c);
    }

    /// Counts the candidate's packets as suspect and forgets it.
    fn discard_candidate(&mut self) {
        if let Some(c) = self.candidate.take() {
            if c.same_session {
                self.stats.seq_jump += c.received;
            } else {
                self.stats.foreign_session += c.received;
            }
        }
    }

    /// Switches to the candidate if it has proven itself and the followed
    /// track is finished.
    fn ready(&mut self, now: Instant) -> Option<Takeover> {
        let c = self.candidate.as_ref()?;
        let silent = self.ended
            || self
                .last_trusted
                .is_none_or(|t| now.saturating_duration_since(t) >= self.trust.takeover_silence);
        if c.run < self.trust.confirm_packets || !silent {
            return None;
        }
        let c = self.candidate.take()?;
        self.held.clear();
        self.held_since = None;
        self.pending_gap = 0;
        self.tail = 0;
        self.ended = false;
        self.last_trusted = Some(now);
        self.replay = c.kept;
        let kind = if c.same_session {
            if c.first_seq > self.next {
                self.record_gap(c.first_seq - self.next);
            } else {
                // Behind: what was followed ran ahead of the sender.
                self.record_gap(0);
            }
            // Whatever came before the jump may be lost (or replaced).
            self.lost_through =
                self.lost_through.max(c.first_seq.saturating_sub(1)).max(self.next.saturating_sub(1));
            Takeover::Resync
        } else {
            self.session = Some(c.session);
            self.stats.restarts += 1;
            self.lost_through = 0;
            if c.first_seq > 1 {
                // The start of the new session was lost.
                self.record_gap(c.first_seq - 1);
                self.lost_through = c.first_seq - 1;
            }
            Takeover::Restart
        };
        self.next = c.first_seq.max(1);
        Some(kind)
    }

    /// Classifies a trusted packet (see [`Sequencer::admit`]). `raw` is the
    /// datagram, copied only when the packet must be held.
    pub fn offer(&mut self, p: &Packet<'_>, raw: &[u8], now: Instant) -> Decision {
        if Some(p.session) != self.session {
            // Not for this track; admit keeps these away.
            self.stats.duplicate_packets += 1;
            return Decision::Duplicate;
        }
        match p.kind {
            PacketKind::EndOfSession if p.seq > self.next && self.max_held > 0 => {
                // The end, with messages still missing before it: held
                // like a data packet ahead (its key is one past the last
                // message), so they can still come from the other line or
                // a retransmission; it is handed back once they did or the
                // hole is given up, and only then ends the session.
                if self.held.contains_key(&p.seq) {
                    self.stats.duplicate_packets += 1;
                    return Decision::Duplicate;
                }
                self.held.insert(p.seq, raw.to_vec());
                self.held_since.get_or_insert(now);
                Decision::Held
            }
            PacketKind::Heartbeat | PacketKind::EndOfSession => {
                if p.seq > self.next && p.kind == PacketKind::Heartbeat && self.max_held > 0 {
                    // The other line may still bring them: wait like for
                    // a packet ahead.
                    self.tail = self.tail.max(p.seq);
                    self.held_since.get_or_insert(now);
                } else if p.seq > self.next && self.held.is_empty() {
                    // Messages at the tail were lost: nothing will fill them.
                    self.pending_gap += p.seq - self.next;
                    self.lost_through = self.lost_through.max(p.seq - 1);
                    self.next = p.seq;
                }
                if p.kind == PacketKind::EndOfSession {
                    let first = !self.ended;
                    self.ended = true;
                    Decision::EndOfSession { first }
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
                    if !self.held.is_empty() || self.tail > p.seq {
                        self.stats.reordered_packets += 1;
                    }
                    self.settle_tail();
                    if self.holding() {
                        // The stream moves at the front: what is held ahead
                        // is not waiting for a lost packet (yet). The hold
                        // counts time without progress, so a stray packet
                        // far ahead never turns a flowing feed into a gap.
                        self.held_since = Some(now);
                    }
                    Decision::Apply { skip }
                } else if self.max_held == 0 {
                    // A gap at once: the caller takes it (and marks the
                    // book stale) before applying this packet.
                    self.pending_gap += p.seq - self.next;
                    self.lost_through = self.lost_through.max(p.seq - 1);
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
        if self.held.is_empty() && self.tail <= self.next {
            self.held_since = None;
        }
        raw
    }

    /// Forgets a tail the stream has reached.
    fn settle_tail(&mut self) {
        if self.tail != 0 && self.tail <= self.next {
            self.tail = 0;
            if self.held.is_empty() {
                self.held_since = None;
            }
        }
    }

    /// Declares the hole before the held packets lost if they waited too
    /// long or too many are held; returns the number of messages lost (0 if
    /// none). Afterwards [`Sequencer::pop_ready`] releases the held packets.
    pub fn expire(&mut self, now: Instant) -> u64 {
        self.expire_with(now, None)
    }

    /// True when [`Sequencer::expire`] would declare the front hole lost
    /// now: the reorder hold ran out or the reorder window is full. The
    /// moment to ask for a retransmission instead.
    pub fn hole_overdue(&self, now: Instant) -> bool {
        let overdue = self.held_since.is_some_and(|t| now.duration_since(t) >= self.max_hold);
        self.holding() && (self.held.len() > self.max_held || overdue)
    }

    /// The missing ranges `[start, end)` ahead of `next`, front first: the
    /// holes between held packets and before a heartbeat's tail. At most
    /// `max` of them.
    pub fn holes(&self, max: usize) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut at = self.next;
        for (&seq, raw) in &self.held {
            if out.len() == max {
                return out;
            }
            if seq > at {
                out.push((at, seq));
            }
            at = at.max(seq + held_span(raw));
        }
        if self.tail > at && out.len() < max {
            out.push((at, self.tail));
        }
        out
    }

    /// Like [`Sequencer::expire`], but while a retransmission of the front
    /// hole is on its way the hole waits until `patience.until` and up to
    /// `patience.max_held` packets instead of the reorder hold and window.
    pub fn expire_with(&mut self, now: Instant, patience: Option<Patience>) -> u64 {
        let mut lost = self.take_pending_gap();
        let (overdue, too_many) = match patience {
            Some(p) => (now >= p.until, self.held.len() > p.max_held),
            None => (
                self.held_since.is_some_and(|t| now.duration_since(t) >= self.max_hold),
                self.held.len() > self.max_held,
            ),
        };
        if too_many || (overdue && self.holding()) {
            if let Some((&first, _)) = self.held.first_key_value() {
                if first > self.next {
                    let hole = first - self.next;
                    self.record_gap(hole);
                    self.lost_through = self.lost_through.max(first - 1);
                    lost += hole;
                    self.next = first;
                }
            } else if self.tail > self.next {
                let hole = self.tail - self.next;
                self.record_gap(hole);
                self.lost_through = self.lost_through.max(self.tail - 1);
                lost += hole;
                self.next = self.tail;
            }
            self.settle_tail();
            self.held_since = if self.holding() { Some(now) } else { None };
        }
        lost
    }

    /// Gives up the messages before `seq` that are still missing (the
    /// retransmission server no longer has them): they are a gap now, up
    /// to `seq` or the first held packet, whichever is first. Returns the
    /// messages lost; then [`Sequencer::pop_ready`] releases what follows.
    pub fn give_up_before(&mut self, seq: u64, now: Instant) -> u64 {
        let first_held = self.held.first_key_value().map_or(u64::MAX, |(&s, _)| s);
        let end = seq.min(first_held).min(if self.tail > self.next { self.tail } else { u64::MAX });
        if end <= self.next || !self.holding() {
            return 0;
        }
        let hole = end - self.next;
        self.record_gap(hole);
        self.lost_through = self.lost_through.max(end - 1);
        self.next = end;
        self.settle_tail();
        self.held_since = if self.holding() { Some(now) } else { None };
        hole
    }

    /// A gap found by [`Sequencer::offer`] itself (a heartbeat ahead, or
    /// any hole without a reorder window), counted now; returns the
    /// messages lost (0 if none). Take it before applying the packet that
    /// revealed it, so the book is marked stale before, not after, it.
    pub fn take_pending_gap(&mut self) -> u64 {
        let lost = std::mem::take(&mut self.pending_gap);
        if lost > 0 {
            self.record_gap(lost);
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
    use quotecast_proto::feed::{header, Message, PacketBuilder, END_OF_SESSION};

    /// Builds `n` one-message packets of session `s` starting at seq 1.
    fn packets(s: &str, n: usize) -> Vec<Vec<u8>> {
        packets_from(s, 1, n)
    }

    /// Builds `n` one-message packets of session `s` starting at `seq`.
    fn packets_from(s: &str, seq: u64, n: usize) -> Vec<Vec<u8>> {
        let mut b = PacketBuilder::new(SessionId::from_text(s), seq, 1400);
        (0..n)
            .map(|i| {
                b.push(&Message::Trade { locate: 1, symbol_seq: i as u32 + 1, ts: i as u64, px: 1, sz: 1 });
                b.finish().to_vec()
            })
            .collect()
    }

    fn heartbeat(s: &str, seq: u64) -> Vec<u8> {
        header(SessionId::from_text(s), seq, 0).to_vec()
    }

    fn end_of_session(s: &str, seq: u64) -> Vec<u8> {
        header(SessionId::from_text(s), seq, END_OF_SESSION).to_vec()
    }

    /// Feeds raw packets through a sequencer like the ingest loop does and
    /// returns the sequence numbers of applied messages.
    fn run(seq: &mut Sequencer, raws: &[Vec<u8>], now: Instant) -> Vec<u64> {
        let mut applied = Vec::new();
        for raw in raws {
            let p = Packet::decode(raw).unwrap();
            match seq.admit(&p, raw, now) {
                Admit::Trusted | Admit::Joined => offer(seq, vec![raw.clone()], now, &mut applied),
                Admit::TookOver(_) => {
                    let replay = seq.take_replay();
                    offer(seq, replay, now, &mut applied);
                }
                Admit::Untrusted => {}
            }
        }
        applied
    }

    fn offer(seq: &mut Sequencer, raws: Vec<Vec<u8>>, now: Instant, applied: &mut Vec<u64>) {
        let mut queue = raws;
        queue.reverse();
        while let Some(raw) = queue.pop() {
            let p = Packet::decode(&raw).unwrap();
            if let Decision::Apply { skip } = seq.offer(&p, &raw, now) {
                applied.extend(p.messages().skip(skip.into()).map(|(s, _)| s));
                while let Some(r) = seq.pop_ready() {
                    queue.push(r);
                }
            }
        }
    }

    fn seqs(r: std::ops::RangeInclusive<u64>) -> Vec<u64> {
        r.collect()
    }

    #[test]
    fn holes_are_listed_front_first_and_patience_outlasts_the_reorder_hold() {
        let t0 = Instant::now();
        let mut seq = Sequencer::new(2, Duration::from_millis(2));
        let p = packets("H", 9);
        // 1 arrives; 2-3 and 5 are lost on the way; 4, 6 and a heartbeat
        // announcing 12 (7-9 never sent here) are held.
        let applied = run(&mut seq, &[p[0].clone(), p[3].clone(), p[5].clone(), heartbeat("H", 10)], t0);
        assert_eq!(applied, vec![1]);
        assert_eq!(seq.holes(8), vec![(2, 4), (5, 6), (7, 10)]);
        assert_eq!(seq.holes(1), vec![(2, 4)]);
        let later = t0 + Duration::from_millis(5);
        assert!(seq.hole_overdue(later));
        let patience = Patience { until: t0 + Duration::from_millis(50), max_held: 100 };
        assert_eq!(seq.expire_with(later, Some(patience)), 0, "waits for the retransmission");
        // The answer brings 2-3; 5 is gone at the server (oldest held: 6).
        let mut applied = Vec::new();
        offer(&mut seq, vec![p[1].clone(), p[2].clone()], later, &mut applied);
        assert_eq!(applied, vec![2, 3, 4]);
        assert_eq!(seq.give_up_before(6, later), 1);
        let ready: Vec<_> = seq.pop_ready().into_iter().collect();
        offer(&mut seq, ready, later, &mut applied);
        assert_eq!(applied, vec![2, 3, 4, 6]);
        assert_eq!(seq.holes(8), vec![(7, 10)]);
        assert_eq!((seq.stats().gaps, seq.stats().missed_messages), (1, 1));
        assert_eq!(seq.expire_with(t0 + Duration::from_millis(50), Some(patience)), 3, "out of patience");
        assert!(!seq.holding());
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
        assert_eq!(s.take_pending_gap(), 1, "reported before the caller applies 3");
        assert_eq!((s.stats().gaps, s.stats().missed_messages), (1, 1));
        assert_eq!(s.take_pending_gap(), 0);
    }

    #[test]
    fn heartbeat_ahead_reports_tail_loss() {
        let mut s = Sequencer::new(4, Duration::from_millis(5));
        let now = Instant::now();
        run(&mut s, &packets("A", 2), now);
        let hb = heartbeat("A", 6);
        let p = Packet::decode(&hb).unwrap();
        assert_eq!(s.admit(&p, &hb, now), Admit::Trusted);
        assert_eq!(s.offer(&p, &hb, now), Decision::Heartbeat);
        assert_eq!(s.expire(now), 0, "waits the hold: a stray heartbeat must not make a gap");
        assert_eq!(s.expire(now + Duration::from_millis(5)), 3);
        assert_eq!(s.next_seq(), 6);
    }

    #[test]
    fn with_tail_hold_a_heartbeat_ahead_waits_for_the_other_line() {
        let mut s = Sequencer::new(4, Duration::from_millis(5));
        let t0 = Instant::now();
        let p = packets("A", 3);
        run(&mut s, &p[..1], t0);
        // Line A lost 2 and 3, then its heartbeat: line B's copies follow.
        run(&mut s, &[heartbeat("A", 4)], t0);
        assert!(s.holding());
        assert_eq!(s.expire(t0 + Duration::from_millis(1)), 0);
        assert_eq!(run(&mut s, &p[1..], t0), vec![2, 3]);
        assert!(!s.holding());
        assert_eq!(s.expire(t0 + Duration::from_millis(10)), 0);
        // Lost on both lines: a gap once the hold is over.
        run(&mut s, &[heartbeat("A", 6)], t0 + Duration::from_millis(10));
        assert_eq!(s.expire(t0 + Duration::from_millis(11)), 0);
        assert_eq!(s.expire(t0 + Duration::from_millis(15)), 2);
        assert!(!s.holding());
        assert_eq!((s.stats().gaps, s.stats().missed_messages, s.next_seq()), (1, 2, 6));
        // An end of session ahead waits like a packet ahead (the missing
        // messages may still come), then ends the session once the hole
        // is given up: nothing after the end may refresh a symbol.
        let eos = end_of_session("A", 8);
        let p = Packet::decode(&eos).unwrap();
        assert_eq!(s.offer(&p, &eos, t0), Decision::Held);
        assert_eq!(s.offer(&p, &eos, t0), Decision::Duplicate, "its copies");
        assert!(s.holding());
        assert_eq!(s.expire(t0 + Duration::from_millis(6)), 2);
        let back = s.pop_ready().expect("the end is handed back");
        let p = Packet::decode(&back).unwrap();
        assert_eq!(s.offer(&p, &back, t0), Decision::EndOfSession { first: true });
        assert!(!s.holding());
        assert_eq!(s.next_seq(), 8);
    }

    #[test]
    fn partial_overlap_skips_applied_messages() {
        let mut s = Sequencer::new(4, Duration::from_millis(5));
        let mut b = PacketBuilder::new(SessionId::from_text("A"), 1, 1400);
        for i in 0..3 {
            b.push(&Message::Trade { locate: 1, symbol_seq: i as u32 + 1, ts: i, px: 1, sz: 1 });
        }
        let first = b.finish().to_vec();
        let mut b2 = PacketBuilder::new(SessionId::from_text("A"), 2, 1400);
        for i in 0..4 {
            b2.push(&Message::Trade { locate: 1, symbol_seq: i as u32 + 1, ts: i, px: 1, sz: 1 });
        }
        let overlap = b2.finish().to_vec();
        assert_eq!(run(&mut s, &[first, overlap], Instant::now()), vec![1, 2, 3, 4, 5]);
    }

    // --- What is trusted: one stray datagram never changes the track. ---

    /// A sequencer following session A, messages 1..=3 applied at `t0`.
    fn following_a(t0: Instant) -> (Sequencer, Vec<Vec<u8>>) {
        let mut s = Sequencer::new(4, Duration::from_millis(5));
        let a = packets("A", 10);
        assert_eq!(run(&mut s, &a[..3], t0), vec![1, 2, 3]);
        (s, a)
    }

    #[test]
    fn forged_heartbeat_of_another_session_is_ignored_and_counted() {
        let t0 = Instant::now();
        let (mut s, a) = following_a(t0);
        assert_eq!(run(&mut s, &[heartbeat("EVIL", 1)], t0), Vec::<u64>::new());
        assert_eq!(s.session(), Some(SessionId::from_text("A")));
        // The real session goes on; the stray is counted once, when the
        // real feed shows it is alive.
        assert_eq!(run(&mut s, &a[3..6], t0), vec![4, 5, 6]);
        let st = s.stats();
        assert_eq!((st.foreign_session, st.restarts, st.duplicate_packets, st.gaps), (1, 0, 0, 0));
        assert!(!s.watching());
    }

    #[test]
    fn forged_data_of_another_session_is_ignored_even_if_it_keeps_coming() {
        let t0 = Instant::now();
        let (mut s, a) = following_a(t0);
        let evil = packets("EVIL", 5);
        // Interleaved with the live feed, a stray sender never proves itself:
        // each live packet discards what it had.
        let mut applied = Vec::new();
        for i in 0..5 {
            applied.extend(run(&mut s, &[evil[i].clone()], t0));
            applied.extend(run(&mut s, &[a[3 + i].clone()], t0 + Duration::from_millis(i as u64)));
        }
        assert_eq!(applied, vec![4, 5, 6, 7, 8]);
        assert_eq!((s.stats().foreign_session, s.stats().restarts), (5, 0));
        // Even a proven run of a stray does not take over while the live
        // feed is not silent.
        assert_eq!(run(&mut s, &packets("EVIL", 4), t0 + Duration::from_millis(10)), Vec::<u64>::new());
        assert_eq!(s.poll(t0 + Duration::from_millis(100)), None);
        assert_eq!(run(&mut s, &a[8..9], t0 + Duration::from_millis(200)), vec![9]);
        assert_eq!((s.stats().foreign_session, s.stats().restarts), (9, 0));
    }

    #[test]
    fn far_ahead_heartbeat_of_the_live_session_is_not_believed() {
        let t0 = Instant::now();
        let (mut s, a) = following_a(t0);
        assert_eq!(run(&mut s, &[heartbeat("A", 1_000_000_000_000)], t0), Vec::<u64>::new());
        assert_eq!(s.expire(t0), 0, "no gap from a suspect heartbeat");
        assert_eq!(s.next_seq(), 4);
        assert_eq!(run(&mut s, &a[3..5], t0), vec![4, 5]);
        let st = s.stats();
        assert_eq!((st.seq_jump, st.gaps, st.missed_messages, st.duplicate_packets), (1, 0, 0, 0));
    }

    #[test]
    fn far_ahead_data_of_the_live_session_is_not_believed() {
        let t0 = Instant::now();
        let (mut s, a) = following_a(t0);
        let far = packets_from("A", 4 + 200_000, 1);
        assert_eq!(run(&mut s, &far, t0), Vec::<u64>::new());
        assert!(!s.holding(), "not held as a reorder either");
        assert_eq!(run(&mut s, &a[3..5], t0), vec![4, 5]);
        let st = s.stats();
        assert_eq!((st.seq_jump, st.gaps, st.duplicate_packets), (1, 0, 0));
    }

    #[test]
    fn far_jump_confirmed_by_a_run_after_silence_is_a_gap() {
        let t0 = Instant::now();
        let (mut s, _) = following_a(t0);
        // The gateway was cut off for 3 s while the sender went on.
        let later = t0 + Duration::from_secs(3);
        let far = packets_from("A", 500_004, 3);
        assert_eq!(run(&mut s, &far[..2], later), Vec::<u64>::new(), "not yet proven");
        assert_eq!(run(&mut s, &far[2..], later), vec![500_004, 500_005, 500_006]);
        let st = s.stats();
        assert_eq!((st.gaps, st.missed_messages, st.seq_jump, st.restarts), (1, 500_000, 0, 0));
    }

    #[test]
    fn plausible_gap_is_still_detected_at_once() {
        let t0 = Instant::now();
        let (mut s, _) = following_a(t0);
        let ahead = packets_from("A", 4 + 1_000, 2);
        assert_eq!(run(&mut s, &ahead, t0), Vec::<u64>::new(), "held as a reorder");
        assert_eq!(s.expire(t0 + Duration::from_millis(6)), 1_000);
        let mut rest = Vec::new();
        while let Some(r) = s.pop_ready() {
            rest.extend(run(&mut s, &[r], t0));
        }
        assert_eq!(rest, vec![1_004, 1_005]);
        assert_eq!((s.stats().gaps, s.stats().seq_jump), (1, 0));
        // A heartbeat a plausible distance ahead is a tail loss.
        run(&mut s, &[heartbeat("A", 1_010)], t0);
        assert_eq!(s.expire(t0 + Duration::from_millis(12)), 4);
    }

    #[test]
    fn a_stray_ahead_within_the_jump_bound_makes_no_gap_while_the_feed_flows() {
        // Live session id, 50,000 ahead (inside --max-seq-jump): held, but
        // the real feed keeps moving at the front, so the hold never runs
        // out and nothing the real feed sends is dropped.
        let t0 = Instant::now();
        let (mut s, _) = following_a(t0);
        let stray = packets_from("A", 50_000, 1);
        assert!(run(&mut s, &stray, t0).is_empty());
        let hb = heartbeat("A", 60_000);
        run(&mut s, &[hb], t0);
        let real = packets_from("A", 4, 40);
        let mut applied = Vec::new();
        for (i, raw) in real.iter().enumerate() {
            let now = t0 + Duration::from_millis(i as u64);
            applied.extend(run(&mut s, std::slice::from_ref(raw), now));
            assert_eq!(s.expire(now), 0, "no gap at packet {i}");
        }
        assert_eq!(applied, seqs(4..=43));
        assert_eq!(s.stats().gaps, 0);
        // A real loss afterwards is still a gap once the front stalls.
        let after_hole = packets_from("A", 45, 2);
        let late = t0 + Duration::from_millis(100);
        run(&mut s, &after_hole, late);
        assert_eq!(s.expire(late + Duration::from_millis(6)), 1);
    }

    #[test]
    fn restart_after_end_of_session_takes_over_without_losing_the_first_packets() {
        let t0 = Instant::now();
        let (mut s, _) = following_a(t0);
        let eos = end_of_session("A", 4);
        assert_eq!(run(&mut s, &[eos.clone(), eos.clone()], t0), Vec::<u64>::new());
        let b = packets("B", 4);
        assert_eq!(run(&mut s, &b[..2], t0), Vec::<u64>::new(), "proving itself");
        // A late copy of the end does not count as life.
        assert_eq!(run(&mut s, &[eos], t0), Vec::<u64>::new());
        assert_eq!(run(&mut s, &b[2..3], t0), vec![1, 2, 3], "proven: kept packets applied");
        assert_eq!(s.session(), Some(SessionId::from_text("B")));
        assert_eq!(run(&mut s, &b[3..], t0), vec![4]);
        // A straggler of A is now the stray.
        assert_eq!(run(&mut s, &packets_from("A", 3, 1), t0), Vec::<u64>::new());
        let st = s.stats();
        assert_eq!((st.restarts, st.foreign_session, st.gaps), (1, 0, 0));
    }

    #[test]
    fn restart_after_silence_takes_over_once_the_old_session_is_silent() {
        let t0 = Instant::now();
        let (mut s, _) = following_a(t0);
        let b = packets("B", 4);
        // A sender that crashed and restarted: no end of session.
        let soon = t0 + Duration::from_millis(500);
        assert_eq!(run(&mut s, &b[..3], soon), Vec::<u64>::new(), "A might still be there");
        assert_eq!(s.poll(soon + Duration::from_millis(1000)), None);
        assert_eq!(s.poll(t0 + Duration::from_millis(2000)), Some(Takeover::Restart));
        let mut applied = Vec::new();
        let replay = s.take_replay();
        offer(&mut s, replay, t0, &mut applied);
        assert_eq!(applied, vec![1, 2, 3]);
        assert_eq!(run(&mut s, &b[3..], t0 + Duration::from_millis(2001)), vec![4]);
        assert_eq!((s.stats().restarts, s.stats().foreign_session), (1, 0));
    }

    #[test]
    fn silent_stray_is_forgotten_and_counted() {
        let t0 = Instant::now();
        let (mut s, _) = following_a(t0);
        run(&mut s, &[heartbeat("EVIL", 1)], t0);
        assert!(s.watching());
        assert_eq!(s.poll(t0 + Duration::from_millis(2000)), None, "one packet proves nothing");
        assert!(!s.watching());
        assert_eq!(s.stats().foreign_session, 1);
    }

    #[test]
    fn a_stray_joined_first_is_replaced_by_the_real_feed_once_silent() {
        let t0 = Instant::now();
        let mut s = Sequencer::new(4, Duration::from_millis(5));
        assert_eq!(run(&mut s, &[heartbeat("A", 1_000_000_000_000)], t0), Vec::<u64>::new());
        let a = packets("A", 3);
        let later = t0 + Duration::from_secs(2);
        assert_eq!(run(&mut s, &a, later), seqs(1..=3));
        assert_eq!((s.stats().gaps, s.stats().missed_messages, s.stats().seq_jump), (1, 0, 0));
    }

    #[test]
    fn a_restart_with_reordered_first_packets_still_takes_over_without_loss() {
        let t0 = Instant::now();
        let (mut s, _) = following_a(t0);
        run(&mut s, &[end_of_session("A", 4)], t0);
        let b = packets("B", 5);
        // B's packets 2 and 1 swapped on the way, then 3, 4, 5.
        let order = [b[1].clone(), b[0].clone(), b[2].clone(), b[3].clone(), b[4].clone()];
        let mut applied = Vec::new();
        for raw in &order {
            applied.extend(run(&mut s, std::slice::from_ref(raw), t0));
        }
        assert_eq!(s.session(), Some(SessionId::from_text("B")));
        while let Some(r) = s.pop_ready() {
            applied.extend(run(&mut s, &[r], t0));
        }
        assert_eq!(applied, seqs(1..=5), "every packet of the restart, in order");
        assert_eq!(s.stats().gaps, 0);
    }

    #[test]
    fn a_candidate_run_with_a_loss_takes_over_and_the_hole_is_the_gap() {
        let t0 = Instant::now();
        let (mut s, _) = following_a(t0);
        let b = packets("B", 6);
        let later = t0 + Duration::from_secs(3);
        // 1, 2, then 4 (3 lost): still one run; it takes over (A is silent),
        // and only message 3 is missing.
        let mut applied = run(&mut s, &[b[0].clone(), b[1].clone(), b[3].clone()], later);
        assert_eq!(s.session(), Some(SessionId::from_text("B")));
        assert_eq!(s.expire(later + Duration::from_millis(6)), 1);
        while let Some(r) = s.pop_ready() {
            applied.extend(run(&mut s, &[r], later));
        }
        applied.extend(run(&mut s, &b[4..], later));
        assert_eq!(applied, vec![1, 2, 4, 5, 6]);
        let st = s.stats();
        assert_eq!((st.restarts, st.gaps, st.missed_messages, st.foreign_session), (1, 1, 1, 0));
    }

    #[test]
    fn a_far_packet_breaks_the_candidate_run() {
        let t0 = Instant::now();
        let (mut s, _) = following_a(t0);
        let b = packets("B", 2);
        run(&mut s, &b, t0);
        let far = packets_from("B", 1_000_000, 1);
        run(&mut s, &far, t0);
        assert_eq!(s.stats().foreign_session, 2, "the first run was discarded");
        assert_eq!(s.session(), Some(SessionId::from_text("A")));
    }
}
