//! The correctness checker of one client: sans-I/O, fed every update and
//! status the client received, in order.
//!
//! Per subscribed symbol it checks that
//! - the first update is the subscribe snapshot (`QuoteUpdate.snapshot`);
//! - after it, `seq` grows by exactly 1, or by `skipped + 1` when the
//!   gateway conflated (`skipped > 0`); a jump beyond that is a gap, which
//!   only a `Status{STALE}` received since the previous update accounts for;
//! - no update repeats or goes back;
//! - once the feed has ended and the client drained, the last values equal
//!   the simulator's ground truth ([`ConnChecker::check_final`]).
//!
//! "Drained" is decided from the gateway's own timestamps: a symbol is
//! drained when its latest stale status (the session end) was detected at or
//! after the receive time of the latest update the client holds. That stays
//! right when conflation sends the status just before the final update, and
//! when a restart made symbols stale at the start of a session.

use feed_sim::SymbolTruth;
use quotecast_proto::v1::{status, QuoteUpdate, Status};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// Violations kept per connection for the listing (all are counted).
pub const KEEP_PER_CONN: usize = 8;

/// The value fields of a quote, compared with the simulator's truth.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Values {
    /// Bid price (fixed-point, 1e-4).
    pub bid_px: i64,
    /// Bid size.
    pub bid_sz: u64,
    /// Ask price (fixed-point, 1e-4).
    pub ask_px: i64,
    /// Ask size.
    pub ask_sz: u64,
    /// Last trade price (fixed-point, 1e-4).
    pub last_px: i64,
    /// Last trade size.
    pub last_sz: u64,
}

impl Values {
    /// The values an update carries.
    pub fn of(u: &QuoteUpdate) -> Values {
        Values {
            bid_px: u.bid_px,
            bid_sz: u.bid_sz,
            ask_px: u.ask_px,
            ask_sz: u.ask_sz,
            last_px: u.last_px,
            last_sz: u.last_sz,
        }
    }

    /// The simulator's final values of a symbol.
    pub fn of_truth(t: &SymbolTruth) -> Values {
        Values {
            bid_px: t.bid_px,
            bid_sz: u64::from(t.bid_sz),
            ask_px: t.ask_px,
            ask_sz: u64::from(t.ask_sz),
            last_px: t.last_px,
            last_sz: u64::from(t.last_sz),
        }
    }
}

impl fmt::Display for Values {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bid {}x{} ask {}x{} last {}x{}",
            self.bid_px, self.bid_sz, self.ask_px, self.ask_sz, self.last_px, self.last_sz
        )
    }
}

/// What went wrong with one symbol on one connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// The first update after subscribing was not a snapshot.
    FirstNotSnapshot {
        /// Its seq.
        seq: u64,
    },
    /// A snapshot arrived for an already started symbol.
    SecondSnapshot {
        /// Its seq.
        seq: u64,
    },
    /// The same seq again.
    Duplicate {
        /// The repeated seq.
        seq: u64,
    },
    /// A seq lower than one already seen.
    Backwards {
        /// The previous seq.
        last: u64,
        /// The update's seq.
        seq: u64,
    },
    /// seq jumped further than `skipped + 1` with no stale status before.
    Gap {
        /// The previous seq.
        last: u64,
        /// The update's seq.
        seq: u64,
        /// Its skip count.
        skipped: u64,
    },
    /// The skip count claims more skipped updates than the seq jump allows.
    SkipTooLarge {
        /// The previous seq.
        last: u64,
        /// The update's seq.
        seq: u64,
        /// Its skip count.
        skipped: u64,
    },
    /// An update or status for a symbol the connection did not subscribe to.
    NotSubscribed,
    /// No snapshot (so no data at all) by the end of the run.
    NoData,
    /// The feed ended but the client never received the end (its last
    /// updates may be missing) within the drain timeout.
    NotDrained {
        /// Last seq the client holds.
        seq: u64,
    },
    /// The last value differs from the simulator's.
    FinalMismatch {
        /// What the client holds.
        got: Values,
        /// What the simulator sent last.
        want: Values,
    },
    /// Drained connections disagree on a symbol's final seq.
    FinalSeqDiffers {
        /// This connection's final seq.
        seq: u64,
        /// The final seq most connections hold.
        majority: u64,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::FirstNotSnapshot { seq } => write!(f, "first update (seq {seq}) is not a snapshot"),
            Problem::SecondSnapshot { seq } => write!(f, "unexpected second snapshot (seq {seq})"),
            Problem::Duplicate { seq } => write!(f, "duplicate seq {seq}"),
            Problem::Backwards { last, seq } => write!(f, "seq went back from {last} to {seq}"),
            Problem::Gap { last, seq, skipped } => {
                write!(f, "gap: seq {seq} after {last} with skipped={skipped} and no stale status")
            }
            Problem::SkipTooLarge { last, seq, skipped } => {
                write!(f, "skipped={skipped} but seq only moved from {last} to {seq}")
            }
            Problem::NotSubscribed => write!(f, "data for a symbol not subscribed"),
            Problem::NoData => write!(f, "no snapshot received"),
            Problem::NotDrained { seq } => {
                write!(f, "feed ended but no end-of-feed status arrived after seq {seq} (not drained)")
            }
            Problem::FinalMismatch { got, want } => write!(f, "final value {got}, simulator sent {want}"),
            Problem::FinalSeqDiffers { seq, majority } => {
                write!(f, "final seq {seq}, other connections ended at {majority}")
            }
        }
    }
}

/// One violation: which connection, which symbol, what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Connection number (0-based, in connect order).
    pub conn: u64,
    /// The symbol.
    pub symbol: String,
    /// What went wrong.
    pub problem: Problem,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn {} {}: {}", self.conn, self.symbol, self.problem)
    }
}

/// Per-symbol state.
#[derive(Debug, Clone)]
struct Sym {
    name: String,
    started: bool,
    first_seq: u64,
    last_seq: u64,
    received: u64,
    skipped: u64,
    stale: bool,
    /// Gateway time the latest stale status was detected.
    stale_ts: i64,
    /// A stale status came since the previous update: it excuses a gap.
    stale_since_update: bool,
    /// A FEED_GAP was reported: the final value may legitimately differ.
    feed_gap: bool,
    /// Gateway receive time of the latest update held.
    last_ts_recv: i64,
    values: Values,
    /// Reconnected and resubscribed with `from_seq = last_seq`: the next
    /// update continues the chain, or is a snapshot flagged
    /// `resume_failed`.
    resuming: bool,
    /// Seq spans of earlier chains, closed by a `resume_failed` snapshot.
    prior_span: u64,
}

impl Sym {
    fn new(name: String) -> Sym {
        Sym {
            name,
            started: false,
            first_seq: 0,
            last_seq: 0,
            received: 0,
            skipped: 0,
            stale: false,
            stale_ts: 0,
            stale_since_update: false,
            feed_gap: false,
            last_ts_recv: 0,
            values: Values::default(),
            resuming: false,
            prior_span: 0,
        }
    }

    fn drained(&self) -> bool {
        self.started && self.stale && self.stale_ts >= self.last_ts_recv
    }
}

/// Counts of what one connection received, for "every update accounted".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Snapshots received.
    pub snapshots: u64,
    /// Non-snapshot updates received.
    pub received: u64,
    /// Updates the gateway reported as skipped (conflated).
    pub skipped: u64,
    /// Sum over symbols of `final seq - snapshot seq`: with no gap this
    /// equals `received + skipped`.
    pub seq_span: u64,
    /// Gaps a stale status accounted for.
    pub excused_gaps: u64,
    /// `Status{STALE, FEED_GAP}` notices received (per symbol): the gateway
    /// lost feed data and said so.
    pub feed_gap_notices: u64,
    /// Symbols resumed after a reconnect that continued at seq + 1 (or
    /// later, with `skipped`): nothing lost.
    pub resumed: u64,
    /// Symbols whose resume got a fresh snapshot flagged `resume_failed`
    /// instead (the new node no longer held the updates): the loss is
    /// reported, not silent.
    pub resume_failed: u64,
    /// Snapshots rebuilt from the feed's snapshot channel after a stale
    /// notice (they replace the state; the seq may repeat).
    pub rebuilds: u64,
}

impl Totals {
    /// Adds `o` into `self`.
    pub fn add(&mut self, o: &Totals) {
        self.snapshots += o.snapshots;
        self.received += o.received;
        self.skipped += o.skipped;
        self.seq_span += o.seq_span;
        self.excused_gaps += o.excused_gaps;
        self.feed_gap_notices += o.feed_gap_notices;
        self.resumed += o.resumed;
        self.resume_failed += o.resume_failed;
        self.rebuilds += o.rebuilds;
    }
}

/// Outcome of the final-value check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FinalCounts {
    /// Symbols whose final value matched the simulator.
    pub verified: u64,
    /// Mismatches after a reported feed gap (the gateway said it could not
    /// vouch for the value).
    pub unverifiable: u64,
    /// Symbols the feed never updated in this session (nothing to compare).
    pub untouched: u64,
}

impl FinalCounts {
    /// Adds `o` into `self`.
    pub fn add(&mut self, o: &FinalCounts) {
        self.verified += o.verified;
        self.unverifiable += o.unverifiable;
        self.untouched += o.untouched;
    }
}

/// The checker of one connection.
#[derive(Debug, Clone)]
pub struct ConnChecker {
    conn: u64,
    syms: Vec<Sym>,
    /// Name -> index for connections with many symbols; a linear scan is
    /// faster for a handful.
    index: Option<HashMap<String, usize>>,
    kept: Vec<Violation>,
    violations: u64,
    drained: usize,
    excused_gaps: u64,
    feed_gap_notices: u64,
    snapshots: u64,
    resumed: u64,
    resume_failed: u64,
    rebuilds: u64,
    /// The feed session of the latest update (for `from_epoch`).
    epoch: String,
}

impl ConnChecker {
    /// A checker for connection `conn` subscribed to `symbols`.
    pub fn new(conn: u64, symbols: &[String]) -> ConnChecker {
        let syms: Vec<Sym> = symbols.iter().cloned().map(Sym::new).collect();
        let index =
            (syms.len() > 16).then(|| syms.iter().enumerate().map(|(i, s)| (s.name.clone(), i)).collect());
        ConnChecker {
            conn,
            syms,
            index,
            kept: Vec::new(),
            violations: 0,
            drained: 0,
            excused_gaps: 0,
            feed_gap_notices: 0,
            snapshots: 0,
            resumed: 0,
            resume_failed: 0,
            rebuilds: 0,
            epoch: String::new(),
        }
    }

    /// Where to resume after a reconnect: `from_seq` for every symbol
    /// that has data, and the epoch they are in. Marks those symbols as
    /// resuming (see [`on_update`](Self::on_update)).
    pub fn resume(&mut self) -> (HashMap<String, u64>, String) {
        let mut from = HashMap::new();
        for s in self.syms.iter_mut().filter(|s| s.started) {
            s.resuming = true;
            from.insert(s.name.clone(), s.last_seq);
        }
        (from, self.epoch.clone())
    }

    fn find(&self, name: &str) -> Option<usize> {
        match &self.index {
            Some(m) => m.get(name).copied(),
            None => self.syms.iter().position(|s| s.name == name),
        }
    }

    fn violate(&mut self, symbol: &str, problem: Problem) {
        self.violations += 1;
        if self.kept.len() < KEEP_PER_CONN {
            self.kept.push(Violation { conn: self.conn, symbol: symbol.to_string(), problem });
        }
    }

    /// Runs `f` on symbol `i` and keeps the drained count in step.
    fn update_sym(&mut self, i: usize, f: impl FnOnce(&mut Sym) -> Option<Problem>) -> Option<Problem> {
        let before = self.syms[i].drained();
        let p = f(&mut self.syms[i]);
        match (before, self.syms[i].drained()) {
            (false, true) => self.drained += 1,
            (true, false) => self.drained -= 1,
            _ => {}
        }
        p
    }

    /// Checks one update. Returns true when it is a fresh update whose
    /// timestamps measure latency (not a snapshot or a replay).
    pub fn on_update(&mut self, u: &QuoteUpdate) -> bool {
        let Some(i) = self.find(&u.symbol) else {
            self.violate(&u.symbol, Problem::NotSubscribed);
            return false;
        };
        let mut excused = false;
        let mut rebuilt = false;
        let mut resume = None;
        if u.snapshot && !self.syms[i].started {
            self.snapshots += 1;
        }
        if !u.epoch.is_empty() && u.epoch != self.epoch {
            self.epoch.clone_from(&u.epoch);
        }
        let problem = self.update_sym(i, |s| {
            if s.resuming && !(u.snapshot && u.resume_failed) {
                resume = Some(true);
            }
            let problem = if !s.started {
                s.started = true;
                s.first_seq = u.seq;
                if u.snapshot {
                    // The snapshot's flag is the symbol's state at subscribe time.
                    s.stale = u.stale;
                    s.stale_ts = u.ts_recv;
                    None
                } else {
                    Some(Problem::FirstNotSnapshot { seq: u.seq })
                }
            } else if u.snapshot && s.resuming && u.resume_failed {
                // The resume could not be served: a fresh chain starts here.
                s.prior_span += s.last_seq - s.first_seq;
                s.first_seq = u.seq;
                s.last_seq = u.seq;
                resume = Some(false);
                None
            } else if u.snapshot && s.stale_since_update && u.seq >= s.last_seq {
                // A rebuild from the feed's snapshot channel after a stale
                // notice: it replaces the state, and may repeat the seq.
                rebuilt = true;
                s.prior_span += s.last_seq - s.first_seq;
                s.first_seq = u.seq;
                None
            } else if u.snapshot {
                Some(Problem::SecondSnapshot { seq: u.seq })
            } else if u.seq == s.last_seq {
                Some(Problem::Duplicate { seq: u.seq })
            } else if u.seq < s.last_seq {
                Some(Problem::Backwards { last: s.last_seq, seq: u.seq })
            } else {
                let expected = s.last_seq.saturating_add(1).saturating_add(u.skipped);
                if u.seq == expected {
                    None
                } else if u.seq < expected {
                    Some(Problem::SkipTooLarge { last: s.last_seq, seq: u.seq, skipped: u.skipped })
                } else if s.stale_since_update {
                    excused = true;
                    None
                } else {
                    Some(Problem::Gap { last: s.last_seq, seq: u.seq, skipped: u.skipped })
                }
            };
            if !u.snapshot {
                s.received += 1;
                s.skipped += u.skipped;
            }
            // Keep the highest seq so one bad update does not cascade.
            if u.seq >= s.last_seq || !s.started {
                s.last_seq = s.last_seq.max(u.seq);
                s.values = Values::of(u);
                s.last_ts_recv = u.ts_recv;
            }
            s.stale_since_update = false;
            s.resuming = false;
            problem
        });
        if excused {
            self.excused_gaps += 1;
        }
        if rebuilt {
            self.rebuilds += 1;
        }
        match resume {
            Some(true) if problem.is_none() => self.resumed += 1,
            Some(false) => self.resume_failed += 1,
            _ => {}
        }
        let fresh = problem.is_none() && !u.snapshot && u.ts_recv != 0;
        if let Some(p) = problem {
            let name = self.syms[i].name.clone();
            self.violate(&name, p);
        }
        fresh
    }

    /// Takes a feed status change.
    pub fn on_status(&mut self, st: &Status) {
        let state = st.state();
        let reason = st.reason();
        for name in &st.symbols {
            let Some(i) = self.find(name) else {
                self.violate(name, Problem::NotSubscribed);
                continue;
            };
            if state == status::State::Stale && reason == status::Reason::FeedGap {
                self.feed_gap_notices += 1;
            }
            self.update_sym(i, |s| {
                match state {
                    status::State::Stale => {
                        s.stale = true;
                        s.stale_ts = st.ts;
                        s.stale_since_update = true;
                        s.feed_gap |= reason == status::Reason::FeedGap;
                    }
                    status::State::Ok => s.stale = false,
                    status::State::Unspecified => {}
                }
                None
            });
        }
    }

    /// Stops checking symbols the gateway rejected (they get no data; the
    /// rejection is reported separately).
    pub fn forget(&mut self, rejected: &[String]) {
        for r in rejected {
            if let Some(i) = self.find(r) {
                if self.syms[i].drained() {
                    self.drained -= 1;
                }
                self.syms.remove(i);
                if let Some(m) = &mut self.index {
                    *m = self.syms.iter().enumerate().map(|(i, s)| (s.name.clone(), i)).collect();
                }
            }
        }
    }

    /// True when every symbol has received the end of the feed after its
    /// latest update.
    pub fn is_drained(&self) -> bool {
        self.drained == self.syms.len()
    }

    /// Compares the final values with the simulator's truth and reports
    /// symbols that never drained. Call once, after the drain.
    pub fn check_final(&mut self, truth: &BTreeMap<String, SymbolTruth>) -> FinalCounts {
        let mut c = FinalCounts::default();
        let mut found = Vec::new();
        for s in &self.syms {
            let Some(t) = truth.get(&s.name) else { continue };
            if !s.started {
                found.push((s.name.clone(), Problem::NoData));
                continue;
            }
            if t.updates_delivered == 0 {
                c.untouched += 1;
                continue;
            }
            if !s.drained() {
                found.push((s.name.clone(), Problem::NotDrained { seq: s.last_seq }));
                continue;
            }
            let want = Values::of_truth(t);
            let mut got = s.values;
            if t.last_px == 0 && t.last_sz == 0 {
                // No trade in this session: a long-running gateway still
                // shows an earlier session's last trade, which is right.
                got.last_px = 0;
                got.last_sz = 0;
            }
            if got == want {
                c.verified += 1;
            } else if s.feed_gap {
                c.unverifiable += 1;
            } else {
                found.push((s.name.clone(), Problem::FinalMismatch { got, want }));
            }
        }
        for (name, p) in found {
            self.violate(&name, p);
        }
        c
    }

    /// Flags a symbol whose final seq differs from what most connections
    /// hold (see [`crate::report`]).
    pub fn seq_differs(&mut self, symbol: &str, seq: u64, majority: u64) {
        self.violate(symbol, Problem::FinalSeqDiffers { seq, majority });
    }

    /// `(symbol, final seq)` of every started symbol that drained.
    pub fn final_seqs(&self) -> impl Iterator<Item = (&str, u64)> {
        self.syms.iter().filter(|s| s.drained()).map(|s| (s.name.as_str(), s.last_seq))
    }

    /// What this connection received.
    pub fn totals(&self) -> Totals {
        let mut t = Totals {
            snapshots: self.snapshots,
            excused_gaps: self.excused_gaps,
            feed_gap_notices: self.feed_gap_notices,
            resumed: self.resumed,
            resume_failed: self.resume_failed,
            rebuilds: self.rebuilds,
            ..Totals::default()
        };
        for s in self.syms.iter().filter(|s| s.started) {
            t.received += s.received;
            t.skipped += s.skipped;
            t.seq_span += s.prior_span + s.last_seq - s.first_seq;
        }
        t
    }

    /// The kept violations and the total count.
    pub fn violations(&self) -> (&[Violation], u64) {
        (&self.kept, self.violations)
    }

    /// The connection number.
    pub fn conn(&self) -> u64 {
        self.conn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One event a client receives.
    #[derive(Clone)]
    enum Ev {
        /// (symbol, seq, skipped, snapshot)
        U(&'static str, u64, u64, bool),
        /// A stale status for a symbol with reason and gateway time.
        Stale(&'static str, status::Reason, i64),
    }
    use Ev::*;

    fn upd(sym: &str, seq: u64, skipped: u64, snapshot: bool) -> QuoteUpdate {
        QuoteUpdate {
            symbol: sym.into(),
            seq,
            skipped,
            snapshot,
            bid_px: 100 + seq as i64,
            bid_sz: 1,
            ask_px: 200 + seq as i64,
            ask_sz: 2,
            // Receive times grow with seq: seq s received at time 10 s.
            ts_recv: 10 * seq as i64,
            ts_event: 10 * seq as i64 - 1,
            ..QuoteUpdate::default()
        }
    }

    /// A Stale status of `sym` for `reason`, sent at `ts`.
    fn stale(sym: &str, reason: status::Reason, ts: i64) -> Status {
        Status { state: status::State::Stale as i32, reason: reason as i32, symbols: vec![sym.into()], ts }
    }

    fn run(events: &[Ev]) -> ConnChecker {
        let mut c = ConnChecker::new(3, &["AAPL".to_string(), "MSFT".to_string()]);
        for e in events {
            match e.clone() {
                U(s, seq, skipped, snap) => {
                    c.on_update(&upd(s, seq, skipped, snap));
                }
                Stale(s, reason, ts) => c.on_status(&stale(s, reason, ts)),
            }
        }
        c
    }

    fn kinds(c: &ConnChecker) -> Vec<Problem> {
        c.violations().0.iter().map(|v| v.problem.clone()).collect()
    }

    #[test]
    fn sequence_rules_table() {
        use status::Reason::{FeedGap, SessionEnd};
        let cases: Vec<(&str, Vec<Ev>, Vec<Problem>)> = vec![
            ("in order", vec![U("AAPL", 5, 0, true), U("AAPL", 6, 0, false), U("AAPL", 7, 0, false)], vec![]),
            (
                "two symbols interleaved",
                vec![
                    U("AAPL", 5, 0, true),
                    U("MSFT", 1, 0, true),
                    U("MSFT", 2, 0, false),
                    U("AAPL", 6, 0, false),
                ],
                vec![],
            ),
            (
                "gap without status",
                vec![U("AAPL", 5, 0, true), U("AAPL", 6, 0, false), U("AAPL", 9, 0, false)],
                vec![Problem::Gap { last: 6, seq: 9, skipped: 0 }],
            ),
            ("conflation with skip count", vec![U("AAPL", 5, 0, true), U("AAPL", 9, 3, false)], vec![]),
            (
                "skip count too small is still a gap",
                vec![U("AAPL", 5, 0, true), U("AAPL", 10, 3, false)],
                vec![Problem::Gap { last: 5, seq: 10, skipped: 3 }],
            ),
            (
                "skip count too large",
                vec![U("AAPL", 5, 0, true), U("AAPL", 7, 3, false)],
                vec![Problem::SkipTooLarge { last: 5, seq: 7, skipped: 3 }],
            ),
            (
                "gap after a stale status is accounted",
                vec![U("AAPL", 5, 0, true), Stale("AAPL", FeedGap, 55), U("AAPL", 8, 0, false)],
                vec![],
            ),
            (
                "a stale status excuses one gap only",
                vec![
                    U("AAPL", 5, 0, true),
                    Stale("AAPL", FeedGap, 55),
                    U("AAPL", 8, 0, false),
                    U("AAPL", 10, 0, false),
                ],
                vec![Problem::Gap { last: 8, seq: 10, skipped: 0 }],
            ),
            (
                "stale status of another symbol does not excuse",
                vec![U("AAPL", 5, 0, true), Stale("MSFT", SessionEnd, 55), U("AAPL", 8, 0, false)],
                vec![Problem::Gap { last: 5, seq: 8, skipped: 0 }],
            ),
            (
                "duplicate",
                vec![U("AAPL", 5, 0, true), U("AAPL", 6, 0, false), U("AAPL", 6, 0, false)],
                vec![Problem::Duplicate { seq: 6 }],
            ),
            (
                "backwards",
                vec![U("AAPL", 5, 0, true), U("AAPL", 6, 0, false), U("AAPL", 4, 0, false)],
                vec![Problem::Backwards { last: 6, seq: 4 }],
            ),
            (
                "first update not a snapshot",
                vec![U("AAPL", 5, 0, false)],
                vec![Problem::FirstNotSnapshot { seq: 5 }],
            ),
            (
                "second snapshot",
                vec![U("AAPL", 5, 0, true), U("AAPL", 6, 0, true)],
                vec![Problem::SecondSnapshot { seq: 6 }],
            ),
            (
                "conflated snapshot carries skips",
                vec![U("AAPL", 9, 4, true), U("AAPL", 10, 0, false)],
                vec![],
            ),
            ("unsubscribed symbol", vec![U("IBM", 1, 0, true)], vec![Problem::NotSubscribed]),
        ];
        for (name, events, want) in cases {
            assert_eq!(kinds(&run(&events)), want, "{name}");
        }
    }

    #[test]
    fn a_resume_continues_the_chain_or_says_it_failed() {
        let mut c = ConnChecker::new(1, &["AAPL".to_string(), "MSFT".to_string()]);
        let epoch = |mut u: QuoteUpdate| {
            u.epoch = "S1".into();
            u
        };
        c.on_update(&epoch(upd("AAPL", 5, 0, true)));
        c.on_update(&epoch(upd("AAPL", 6, 0, false)));
        let (from, ep) = c.resume();
        assert_eq!((from.get("AAPL"), from.get("MSFT"), ep.as_str()), (Some(&6), None, "S1"));
        // AAPL continues at 7: resumed, nothing lost. MSFT had no data: a
        // plain first snapshot.
        c.on_update(&upd("AAPL", 7, 0, false));
        c.on_update(&upd("MSFT", 3, 0, true));
        let (from, _) = c.resume();
        assert_eq!(from.get("MSFT"), Some(&3));
        // MSFT's resume fails: a flagged snapshot starts a new chain.
        let mut failed = upd("MSFT", 10, 0, true);
        failed.resume_failed = true;
        c.on_update(&failed);
        c.on_update(&upd("MSFT", 11, 0, false));
        // AAPL's replay repeats an update it already had: a duplicate.
        c.on_update(&upd("AAPL", 7, 0, false));
        let t = c.totals();
        assert_eq!((t.resumed, t.resume_failed), (1, 1));
        assert_eq!(kinds(&c), vec![Problem::Duplicate { seq: 7 }]);
        // Spans: AAPL 5..7, MSFT 3..3 then 10..11.
        assert_eq!(t.seq_span, 2 + 1);
        // A rebuild after a stale notice replaces the state (same seq or
        // later); without one, a snapshot is a second snapshot.
        let mut c = ConnChecker::new(1, &["AAPL".to_string()]);
        c.on_update(&upd("AAPL", 5, 0, true));
        c.on_update(&upd("AAPL", 6, 0, false));
        c.on_status(&stale("AAPL", status::Reason::FeedGap, 70));
        c.on_update(&upd("AAPL", 6, 0, true));
        c.on_update(&upd("AAPL", 7, 0, false));
        c.on_update(&upd("AAPL", 7, 0, true));
        assert_eq!(kinds(&c), vec![Problem::SecondSnapshot { seq: 7 }]);
        assert_eq!(c.totals().rebuilds, 1);
        // A flagged snapshot without a resume is still a second snapshot.
        let mut c = ConnChecker::new(1, &["AAPL".to_string()]);
        c.on_update(&upd("AAPL", 5, 0, true));
        let mut again = upd("AAPL", 9, 0, true);
        again.resume_failed = true;
        c.on_update(&again);
        assert_eq!(kinds(&c), vec![Problem::SecondSnapshot { seq: 9 }]);
    }

    #[test]
    fn one_bad_update_does_not_cascade() {
        let c = run(&[
            U("AAPL", 5, 0, true),
            U("AAPL", 8, 0, false),
            U("AAPL", 9, 0, false),
            U("AAPL", 10, 0, false),
        ]);
        assert_eq!(c.violations().1, 1);
    }

    #[test]
    fn totals_account_for_every_update() {
        let c = run(&[
            U("AAPL", 5, 0, true),
            U("AAPL", 6, 0, false),
            U("AAPL", 10, 3, false),
            U("MSFT", 2, 0, true),
            U("MSFT", 3, 0, false),
        ]);
        let t = c.totals();
        assert_eq!((t.snapshots, t.received, t.skipped, t.seq_span), (2, 3, 3, 6));
        assert_eq!(t.received + t.skipped, t.seq_span);
    }

    fn truth(bid_px: i64, last_px: i64, updates: u64) -> SymbolTruth {
        SymbolTruth {
            bid_px,
            bid_sz: 1,
            ask_px: bid_px + 100,
            ask_sz: 2,
            last_px,
            last_sz: if last_px == 0 { 0 } else { 5 },
            updates,
            updates_delivered: updates,
            ..SymbolTruth::default()
        }
    }

    #[test]
    fn drain_follows_the_gateways_timestamps() {
        use status::Reason::SessionEnd;
        // A restart made AAPL stale before its updates: not drained.
        let c = run(&[U("AAPL", 5, 0, true), Stale("AAPL", SessionEnd, 1), U("AAPL", 6, 0, false)]);
        assert!(!c.is_drained());
        // Conflation sends the end status before the final update it follows.
        let c = run(&[
            U("AAPL", 5, 0, true),
            U("MSFT", 1, 0, true),
            Stale("AAPL", SessionEnd, 65),
            U("AAPL", 6, 0, false),
            Stale("MSFT", SessionEnd, 65),
        ]);
        assert!(c.is_drained());
    }

    #[test]
    fn final_values_are_compared_with_the_truth() {
        use status::Reason::{FeedGap, SessionEnd};
        let ended = |extra: Vec<Ev>| {
            let mut ev = vec![U("AAPL", 5, 0, true), U("AAPL", 6, 0, false), U("MSFT", 1, 0, true)];
            ev.extend(extra);
            ev.push(Stale("AAPL", SessionEnd, 1000));
            ev.push(Stale("MSFT", SessionEnd, 1000));
            run(&ev)
        };
        // AAPL ends at seq 6: bid 106, ask 206. MSFT never ticked this session.
        let mut t = BTreeMap::new();
        t.insert("AAPL".to_string(), truth(106, 0, 4));
        t.insert("MSFT".to_string(), truth(0, 0, 0));
        let mut c = ended(vec![]);
        assert_eq!(c.check_final(&t), FinalCounts { verified: 1, unverifiable: 0, untouched: 1 });
        assert_eq!(c.violations().1, 0);

        t.insert("AAPL".to_string(), truth(107, 0, 4));
        let mut c = ended(vec![]);
        c.check_final(&t);
        assert!(matches!(kinds(&c)[..], [Problem::FinalMismatch { .. }]), "{:?}", kinds(&c));

        // After a reported feed gap a mismatch is unverifiable, not wrong.
        t.insert("AAPL".to_string(), truth(999, 0, 4));
        let mut c = ended(vec![Stale("AAPL", FeedGap, 61), U("AAPL", 7, 0, false)]);
        assert_eq!(c.totals().feed_gap_notices, 1);
        assert_eq!(c.check_final(&t).unverifiable, 1);
        assert_eq!(c.violations().1, 0);

        // Not drained: the end status predates the last update.
        let mut c = run(&[U("AAPL", 5, 0, true), Stale("AAPL", SessionEnd, 10), U("AAPL", 6, 0, false)]);
        c.check_final(&t);
        assert_eq!(kinds(&c), vec![Problem::NotDrained { seq: 6 }, Problem::NoData]);
    }

    #[test]
    fn rejected_symbols_are_forgotten() {
        let mut c = ConnChecker::new(0, &["AAPL".to_string(), "ZZZZ".to_string()]);
        c.forget(&["ZZZZ".to_string()]);
        c.on_update(&upd("AAPL", 1, 0, true));
        c.on_status(&stale("AAPL", status::Reason::SessionEnd, 100));
        assert!(c.is_drained());
    }
}
