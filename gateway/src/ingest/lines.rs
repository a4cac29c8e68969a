//! A/B line accounting, sans-I/O.
//!
//! Exchanges send every packet twice, on line A and line B (two groups or
//! ports). The [`super::sequencer`] arbitrates: it sees one merged stream
//! and applies the first copy of each sequence number; the later copy is
//! redundant. This module does not decide anything; it tells, per line,
//! what that line contributed:
//!
//! - whether a trusted packet was new *on its own line* ([`Seen::New`]),
//!   a late packet of that line filling one of its own holes
//!   ([`Seen::FillsHole`], a reorder on the line), or a repeat of what the
//!   line had already sent ([`Seen::Repeat`], a real duplicate);
//! - the messages a line missed: a hole on the line (its next packet or
//!   heartbeat starts past what it sent so far) that the line itself did
//!   not fill within the reorder hold. Whether the other line covered it
//!   is the sequencer's business (no gap) — this is the line's loss.
//!
//! Each line keeps at most [`MAX_HOLES`] open holes, in a fixed array (no
//! allocation per packet); a new hole beyond that closes the oldest one as
//! missed at once.

use std::time::{Duration, Instant};

/// Open holes tracked per line; more close the oldest as missed.
pub const MAX_HOLES: usize = 16;

/// One of the two feed lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// Line A (`--group`, `--feed-port`).
    A = 0,
    /// Line B (`--group-b`, `--feed-port-b`).
    B = 1,
}

impl Line {
    /// Both lines, in index order.
    pub const ALL: [Line; 2] = [Line::A, Line::B];

    /// Index into per-line arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The metric label value: "a" or "b".
    pub fn label(self) -> &'static str {
        match self {
            Line::A => "a",
            Line::B => "b",
        }
    }
}

/// What a trusted packet was for its own line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Beyond everything the line sent so far (possibly after a hole).
    New,
    /// Behind the line's head, inside one of its open holes: the line
    /// reordered it.
    FillsHole,
    /// The line had already sent all of it: a duplicate on the line.
    Repeat,
}

#[derive(Debug, Clone, Copy)]
struct Hole {
    from: u64,
    to: u64,
    since: Instant,
}

/// The sequence as one line sent it.
#[derive(Debug)]
pub struct LineSeq {
    /// One past the last sequence the line sent (0 = nothing yet).
    next: u64,
    holes: [Option<Hole>; MAX_HOLES],
    open: usize,
    hold: Duration,
    missed: u64,
}

impl LineSeq {
    /// A line whose holes may be filled by the line itself within `hold`.
    pub fn new(hold: Duration) -> Self {
        LineSeq { next: 0, holes: [None; MAX_HOLES], open: 0, hold, missed: 0 }
    }

    /// Messages the line missed so far (holes it never filled itself).
    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// True while a hole may still be filled by a late packet of the line.
    pub fn has_open_holes(&self) -> bool {
        self.open > 0
    }

    /// Forgets the line's position (a new session or a resync): its open
    /// holes are not counted, the next packet starts over.
    pub fn reset(&mut self) {
        self.next = 0;
        self.holes = [None; MAX_HOLES];
        self.open = 0;
    }

    /// A trusted data packet `[seq, end)` (or a heartbeat / end of session
    /// at `seq`, with `end == seq`) arrived on the line.
    pub fn see(&mut self, seq: u64, end: u64, now: Instant) -> Seen {
        if self.next == 0 {
            self.next = end.max(seq);
            return Seen::New;
        }
        if seq > self.next {
            self.open_hole(self.next, seq, now);
            self.next = end.max(seq);
            return Seen::New;
        }
        if end > self.next {
            self.next = end;
            return Seen::New;
        }
        if self.open > 0 && end > seq && self.fill(seq, end) {
            Seen::FillsHole
        } else {
            Seen::Repeat
        }
    }

    /// Counts the holes older than the hold as missed; returns how many
    /// messages that added.
    pub fn expire(&mut self, now: Instant) -> u64 {
        if self.open == 0 {
            return 0;
        }
        let mut added = 0;
        for slot in &mut self.holes {
            if let Some(h) = *slot {
                if now.saturating_duration_since(h.since) >= self.hold {
                    added += h.to - h.from;
                    *slot = None;
                    self.open -= 1;
                }
            }
        }
        self.missed += added;
        added
    }

    fn open_hole(&mut self, from: u64, to: u64, now: Instant) {
        if self.open == MAX_HOLES {
            // Full: the oldest hole is given up on.
            let oldest = self
                .holes
                .iter()
                .enumerate()
                .filter_map(|(i, h)| h.map(|h| (i, h)))
                .min_by_key(|(_, h)| h.since)
                .map(|(i, _)| i);
            if let Some(i) = oldest {
                if let Some(h) = self.holes[i].take() {
                    self.missed += h.to - h.from;
                    self.open -= 1;
                }
            }
        }
        if let Some(slot) = self.holes.iter_mut().find(|h| h.is_none()) {
            *slot = Some(Hole { from, to, since: now });
            self.open += 1;
        }
    }

    /// Removes `[seq, end)` from the open holes; true if it overlapped one.
    fn fill(&mut self, seq: u64, end: u64) -> bool {
        let mut hit = false;
        let mut split: Option<Hole> = None;
        for slot in &mut self.holes {
            let Some(h) = slot else { continue };
            if end <= h.from || seq >= h.to {
                continue;
            }
            hit = true;
            match (seq <= h.from, end >= h.to) {
                (true, true) => {
                    *slot = None;
                    self.open -= 1;
                }
                (true, false) => h.from = end,
                (false, true) => h.to = seq,
                (false, false) => {
                    split = Some(Hole { from: end, to: h.to, since: h.since });
                    h.to = seq;
                }
            }
        }
        if let Some(rest) = split {
            if self.open == MAX_HOLES {
                // No room for the right part: it is given up on.
                self.missed += rest.to - rest.from;
            } else if let Some(slot) = self.holes.iter_mut().find(|h| h.is_none()) {
                *slot = Some(rest);
                self.open += 1;
            }
        }
        hit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD: Duration = Duration::from_millis(5);

    #[test]
    fn in_order_is_new_and_repeats_are_repeats() {
        let t = Instant::now();
        let mut l = LineSeq::new(HOLD);
        assert_eq!(l.see(1, 2, t), Seen::New);
        assert_eq!(l.see(2, 4, t), Seen::New);
        assert_eq!(l.see(2, 4, t), Seen::Repeat);
        assert_eq!(l.see(3, 5, t), Seen::New, "overlap");
        assert_eq!(l.expire(t + HOLD), 0);
    }

    #[test]
    fn a_hole_the_line_fills_is_a_reorder_not_a_loss() {
        let t = Instant::now();
        let mut l = LineSeq::new(HOLD);
        l.see(1, 2, t);
        assert_eq!(l.see(3, 4, t), Seen::New);
        assert!(l.has_open_holes());
        assert_eq!(l.see(2, 3, t), Seen::FillsHole);
        assert!(!l.has_open_holes());
        assert_eq!(l.see(2, 3, t), Seen::Repeat);
        assert_eq!(l.expire(t + HOLD), 0);
        assert_eq!(l.missed(), 0);
    }

    #[test]
    fn an_unfilled_hole_is_missed_after_the_hold() {
        let t = Instant::now();
        let mut l = LineSeq::new(HOLD);
        l.see(1, 2, t);
        l.see(5, 6, t);
        assert_eq!(l.expire(t + Duration::from_millis(1)), 0);
        // Part of it comes late (split in the middle).
        assert_eq!(l.see(3, 4, t), Seen::FillsHole);
        assert_eq!(l.expire(t + HOLD), 2, "2 and 4");
        assert_eq!(l.missed(), 2);
        // A heartbeat ahead is a tail hole too.
        l.see(9, 9, t + HOLD);
        assert_eq!(l.expire(t + HOLD * 2), 3);
        assert_eq!(l.missed(), 5);
    }

    #[test]
    fn too_many_holes_give_up_on_the_oldest() {
        let t = Instant::now();
        let mut l = LineSeq::new(HOLD);
        l.see(1, 2, t);
        for i in 0..=MAX_HOLES as u64 {
            l.see(3 + 2 * i, 4 + 2 * i, t + Duration::from_micros(i));
        }
        assert_eq!(l.missed(), 1, "the first hole (2) closed");
        assert_eq!(l.see(2, 3, t), Seen::Repeat);
        assert_eq!(l.see(4, 5, t), Seen::FillsHole);
        assert_eq!(l.expire(t + HOLD * 2), MAX_HOLES as u64 - 1);
    }
}
