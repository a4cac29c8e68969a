//! The fan-out hub: per-symbol subscriber lists.
//!
//! The ingest thread publishes each update once, as shared pre-encoded
//! bytes: it records the topic's new state and numbers the event, then
//! hands it once to each fan-out [`lane`] (worker thread) that has
//! subscribers of the symbol; the lanes push it into their subscribers'
//! mailboxes. Ingest's work per tick is thus bounded by the number of
//! workers, never the number of subscribers or connections.
//!
//! Each topic keeps the last published quote and a short replay ring under
//! the same lock as its subscriber lists and its event count. Subscribing
//! takes that lock too and records the event count it saw, so the snapshot
//! it queues and the events a lane delivers afterwards are exactly
//! consecutive: nothing is lost or duplicated at the handoff.

pub mod encode;
pub mod frames;
pub mod lane;
pub mod mailbox;
pub mod notice;

use crate::book::{Quote, SymbolId};
use bytes::BytesMut;
use encode::Flags;
use lane::{Delivery, Event, Fanout, Item, Lane};
use mailbox::{Encoded, Mailbox};
use parking_lot::Mutex;
use quotecast_proto::feed::TradingState;
use quotecast_proto::v1::status::{Reason, State};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// One symbol's fan-out state.
#[derive(Debug, Default)]
struct Topic {
    /// The last published state; `None` until the symbol is known.
    last: Option<Arc<Quote>>,
    /// Recent states, oldest first, for resumes. Quotes, not encoded
    /// entries: they are allocated per update anyway (the book holds them)
    /// and a resume, rare, can afford to encode again.
    recent: VecDeque<Arc<Quote>>,
    /// Subscribers by fan-out lane, each with the event count it joined at.
    lanes: Vec<Vec<Sub>>,
    /// Subscribers without a lane (gRPC streams): pushed by the publisher.
    direct: Vec<Arc<Mailbox>>,
    /// Events published so far (updates, images, status and trading
    /// changes): the number a lane compares with a subscriber's `since`.
    events: u64,
    /// Subscribers that resumed from a seq this node has not reached yet
    /// (they came from a node a little ahead): they join `subs` once this
    /// node publishes that seq. Usually empty.
    waiting: Vec<Waiting>,
    /// Why the symbol last went stale (told to clients that resume).
    stale_reason: Option<Reason>,
}

/// A subscriber on a fan-out lane.
#[derive(Debug)]
struct Sub {
    m: Arc<Mailbox>,
    /// The topic's event count when it joined: it has every event up to
    /// this one in its snapshot or replay already.
    since: u64,
}

impl Topic {
    /// Adds `m` to the subscribers (once) as of the current event count:
    /// to lane `lane`'s, or with none to the publisher's own.
    fn add(&mut self, m: Arc<Mailbox>, lane: Option<usize>) {
        if self.has(&m, lane) {
            return;
        }
        match lane {
            Some(i) => {
                if self.lanes.len() <= i {
                    self.lanes.resize_with(i + 1, Vec::new);
                }
                self.lanes[i].push(Sub { m, since: self.events });
            }
            None => self.direct.push(m),
        }
    }

    fn has(&self, m: &Arc<Mailbox>, lane: Option<usize>) -> bool {
        match lane {
            Some(i) => self.lanes.get(i).is_some_and(|l| l.iter().any(|s| Arc::ptr_eq(&s.m, m))),
            None => self.direct.iter().any(|s| Arc::ptr_eq(s, m)),
        }
    }

    fn remove(&mut self, m: &Arc<Mailbox>, lane: Option<usize>) {
        match lane {
            Some(i) => {
                if let Some(l) = self.lanes.get_mut(i) {
                    l.retain(|s| !Arc::ptr_eq(&s.m, m));
                }
            }
            None => self.direct.retain(|s| !Arc::ptr_eq(s, m)),
        }
        self.waiting.retain(|w| !Arc::ptr_eq(&w.m, m));
    }

    /// Numbers a new event and queues it for every lane with subscribers.
    fn event(&mut self, id: SymbolId, what: Event, fan: &mut Fanout) -> u64 {
        self.events += 1;
        let ev = self.events;
        for (i, l) in self.lanes.iter().enumerate() {
            if !l.is_empty() {
                fan.push(i, Item { id, ev, what: what.clone() });
            }
        }
        ev
    }
}

/// A resume waiting for this node to catch up.
#[derive(Debug)]
struct Waiting {
    m: Arc<Mailbox>,
    /// The seq the client holds.
    seq: u64,
    /// Past this, the next update ends the wait with a flagged snapshot.
    until: std::time::Instant,
}

/// How [`Hub::publish_as`] publishes an update.
#[derive(Debug, Default, Clone, Copy)]
struct Published {
    /// A full state rebuilt from the feed's snapshot channel.
    image: bool,
    /// The symbol was stale and is vouched for again: its recovery is told
    /// first.
    recovered: bool,
}

/// What the publisher leaves for the end of a datagram (see
/// [`HubWriter::flush`]).
pub type Wakes = Fanout;

/// How a subscribe was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// A snapshot of the current state was queued.
    Snapshot,
    /// The requested resume point was current or in the replay ring: the
    /// updates after it were queued, no snapshot.
    Resumed,
    /// The resume point was too old, of another epoch, or too far ahead:
    /// a snapshot flagged `resume_failed` was queued.
    ResumeFailed,
    /// The resume point is ahead of this node (the client came from a node
    /// a little ahead): nothing is queued until this node publishes that
    /// seq, then the stream continues after it. If it has not within the
    /// hub's ahead wait, or the node's chain passes it without it, a
    /// snapshot flagged `resume_failed` follows instead.
    Waiting,
}

/// Where a client resumes a symbol: the last `seq` it holds, in `epoch`
/// (`QuoteUpdate.epoch`; empty = the symbol's current epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeFrom<'a> {
    /// Last per-symbol sequence the client holds.
    pub seq: u64,
    /// The epoch it belongs to.
    pub epoch: &'a str,
}

/// True when `recent` holds every update of `last`'s epoch after `seq`:
/// its entries after `seq` start at `seq + 1` and never skip a number (a
/// skip is an update the gateway itself missed; a repeat is a rebuild from
/// the snapshot channel, replayed too).
fn replay_complete(recent: &VecDeque<Arc<Quote>>, last: &Quote, seq: u64) -> bool {
    let mut want = seq + 1;
    let mut any = false;
    for q in recent.iter().filter(|q| q.epoch == last.epoch && q.seq > seq) {
        if q.seq > want {
            return false;
        }
        want = q.seq + 1;
        any = true;
    }
    any && want == last.seq + 1
}

/// Bytes one replay entry costs: the quote with its `Arc` header, and its
/// slot in the ring.
pub const REPLAY_ENTRY_BYTES: usize =
    std::mem::size_of::<Quote>() + 2 * std::mem::size_of::<usize>() + std::mem::size_of::<Arc<Quote>>();

/// Farthest a resume may be ahead of this node's seq and still wait: nodes
/// on one feed differ by a packet or two; a client claiming far more is
/// not one of them.
const AHEAD_MAX: u64 = 1_000;

/// The only handle that publishes into the hub (updates, images, status
/// and trading changes, new symbols): not `Clone`, made once with the hub
/// ([`Hub::into_writer`]) and held by the ingest thread. Everything else
/// (sessions, gRPC streams) only subscribes.
#[derive(Debug)]
pub struct HubWriter {
    hub: Arc<Hub>,
}

impl std::ops::Deref for HubWriter {
    type Target = Hub;

    fn deref(&self) -> &Hub {
        &self.hub
    }
}

impl HubWriter {
    /// Publishes an update of `id` to every subscriber (see [`Hub`]).
    /// With `recovered` (the symbol was stale and `q` is vouched for
    /// again) subscribers hear the recovery first, under the same lock: a
    /// client subscribing in between must not find `q` in its snapshot and
    /// then get it again as the next update.
    pub fn publish(&self, id: SymbolId, q: &Arc<Quote>, entry: &Encoded, recovered: bool, wakes: &mut Wakes) {
        self.hub.publish_as(id, q, entry, Published { image: false, recovered }, wakes);
    }

    /// Publishes a rebuilt full state of `id` (from the feed's snapshot
    /// channel; `entry` is encoded with the snapshot flag), its recovery
    /// first with `recovered`, as [`HubWriter::publish`] does.
    pub fn publish_image(
        &self,
        id: SymbolId,
        q: &Arc<Quote>,
        entry: &Encoded,
        recovered: bool,
        wakes: &mut Wakes,
    ) {
        self.hub.publish_as(id, q, entry, Published { image: true, recovered }, wakes);
    }

    /// Records a status change of `id` and tells the subscribers.
    pub fn status(&self, id: SymbolId, q: &Arc<Quote>, state: State, reason: Reason, wakes: &mut Wakes) {
        self.hub.status(id, q, state, reason, wakes);
    }

    /// Records a trading state change of `id` and tells the subscribers.
    pub fn trading(&self, id: SymbolId, q: &Arc<Quote>, wakes: &mut Wakes) {
        self.hub.trading(id, q, wakes);
    }

    /// Sets the initial state of a newly known symbol.
    pub fn init(&self, id: SymbolId, q: Arc<Quote>) {
        self.hub.init(id, q);
    }

    /// Ends a batch (a datagram): hands each lane its events, once, and
    /// wakes the lane-less subscribers pushed to.
    pub fn flush(&self, fan: &mut Wakes) {
        self.hub.flush(fan);
    }
}

/// Per-symbol subscriber lists. Shared as `Arc<Hub>`; written only through
/// its [`HubWriter`].
#[derive(Debug)]
pub struct Hub {
    topics: Box<[Mutex<Topic>]>,
    replay_depth: usize,
    /// Entries all replay rings may hold together.
    replay_budget: usize,
    /// Entries they hold now. Written by the ingest thread only.
    replay_used: AtomicUsize,
    /// Longest wait for a resume from a seq this node has not reached.
    ahead_wait: std::time::Duration,
    /// Farthest ahead of this node a resume may be and still wait.
    ahead_max: u64,
    /// Fan-out lanes, one per worker thread.
    lanes: Vec<Arc<Lane>>,
}

impl Hub {
    /// A hub for `capacity` symbols keeping the last `replay_depth` updates
    /// of each symbol for resumes, with no ceiling on their total (see
    /// [`Hub::with_replay_budget`]).
    pub fn new(capacity: usize, replay_depth: usize) -> Self {
        Hub {
            topics: (0..capacity).map(|_| Mutex::default()).collect(),
            replay_depth,
            replay_budget: usize::MAX,
            replay_used: AtomicUsize::new(0),
            ahead_wait: std::time::Duration::from_secs(1),
            ahead_max: AHEAD_MAX,
            lanes: Vec::new(),
        }
    }

    /// Gives the hub `n` fan-out lanes, each queueing at most `capacity`
    /// events before it conflates (see [`lane`]). Each must be run on its
    /// worker ([`Lane::run`]); mailboxes [`on_lane`](Mailbox::on_lane) an
    /// index below `n` are fed by that lane.
    #[must_use]
    pub fn with_lanes(mut self, n: usize, capacity: usize) -> Self {
        self.lanes = (0..n).map(|i| Lane::new(i, capacity)).collect();
        self
    }

    /// The fan-out lanes.
    pub fn lanes(&self) -> &[Arc<Lane>] {
        &self.lanes
    }

    /// The lane that feeds `m`: its own if this hub has it; otherwise none,
    /// and the publisher pushes to it directly (never a lane nobody runs).
    fn lane_of(&self, m: &Mailbox) -> Option<usize> {
        m.lane().filter(|&i| i < self.lanes.len())
    }

    /// The hub, shared, and its one writer.
    pub fn into_writer(self) -> (Arc<Hub>, HubWriter) {
        let hub = Arc::new(self);
        (hub.clone(), HubWriter { hub })
    }

    /// Sets how long a resume from a seq this node has not reached yet
    /// waits for it (0: never, a flagged snapshot at once).
    #[must_use]
    pub fn with_ahead_wait(mut self, wait: std::time::Duration) -> Self {
        self.ahead_wait = wait;
        self
    }

    /// Caps the replay rings at `max_bytes` together: at the ceiling a
    /// symbol recycles its own oldest entry instead of growing its ring, so
    /// hot symbols cannot grow the total with the number of symbols.
    pub fn with_replay_budget(mut self, max_bytes: usize) -> Self {
        self.replay_budget = max_bytes / REPLAY_ENTRY_BYTES;
        self
    }

    /// Bytes the replay rings hold now (entries x [`REPLAY_ENTRY_BYTES`]).
    pub fn replay_bytes(&self) -> usize {
        self.replay_used.load(Ordering::Relaxed) * REPLAY_ENTRY_BYTES
    }

    /// Ingest only: see [`HubWriter::flush`].
    fn flush(&self, fan: &mut Wakes) {
        // Events are queued only for lanes this hub has (`lane_of`).
        for (lane, items) in self.lanes.iter().zip(fan.items.iter_mut()) {
            lane.hand_over(items);
        }
        for m in fan.wakes.drain(..) {
            m.wake();
        }
    }

    /// Ingest only: publishes an update of `id` to its subscribers, queueing
    /// the mailboxes to wake in `wakes`.
    #[cfg(test)]
    fn publish(&self, id: SymbolId, q: &Arc<Quote>, entry: &Encoded, wakes: &mut Wakes) {
        self.publish_as(id, q, entry, Published::default(), wakes);
    }

    /// Ingest only: publishes `q` (a rebuilt image, whose `entry` is encoded
    /// with the snapshot flag and whose flag a conflated subscriber keeps;
    /// or a plain update), after its recovery if `how.recovered`. One lock
    /// for both, so a subscriber joins before or after the pair.
    fn publish_as(&self, id: SymbolId, q: &Arc<Quote>, entry: &Encoded, how: Published, wakes: &mut Wakes) {
        let image = how.image;
        let mut t = self.topics[id as usize].lock();
        if how.recovered {
            Self::tell_status(&mut t, id, State::Ok, Reason::Recovered, wakes);
        }
        t.last = Some(q.clone());
        if self.replay_depth > 0 {
            let recycled = if t.recent.len() == self.replay_depth {
                t.recent.pop_front().is_some()
            } else if self.replay_used.load(Ordering::Relaxed) >= self.replay_budget {
                // At the ceiling: shift this symbol's own ring, if it has one.
                t.recent.pop_front().is_some()
            } else {
                self.replay_used.fetch_add(1, Ordering::Relaxed);
                true
            };
            if recycled {
                t.recent.push_back(q.clone());
            }
        }
        let joined = if t.waiting.is_empty() { Vec::new() } else { Self::catch_up(&mut t, id, q, wakes) };
        for m in &t.direct {
            if m.push_update(id, entry, image) {
                wakes.wakes.push(m.clone());
            }
        }
        t.event(id, Event::Update { entry: entry.clone(), image }, wakes);
        // After the event: each of them has `q` already.
        for m in joined {
            let lane = self.lane_of(&m);
            t.add(m, lane);
        }
    }

    /// Ends the waits `q` settles and returns who joins the subscribers
    /// (after `q`, which each of them has): at the client's seq the client
    /// holds `q` already; past it (this node's chain jumped over it) or too
    /// late, it gets `q` now as a snapshot flagged `resume_failed`.
    fn catch_up(t: &mut Topic, id: SymbolId, q: &Arc<Quote>, wakes: &mut Wakes) -> Vec<Arc<Mailbox>> {
        let now = std::time::Instant::now();
        let mut joined = Vec::new();
        let mut i = 0;
        while i < t.waiting.len() {
            let w = &t.waiting[i];
            if q.seq < w.seq && now < w.until {
                i += 1;
                continue;
            }
            let w = t.waiting.swap_remove(i);
            if q.seq != w.seq {
                let mut buf = BytesMut::new();
                encode::entry(q, Flags { snapshot: true, skipped: 0, resume_failed: true }, &mut buf);
                if w.m.push_update(id, &Encoded { bytes: buf.freeze(), ts_recv: 0 }, true) {
                    wakes.wakes.push(w.m.clone());
                }
            }
            joined.push(w.m);
        }
        joined
    }

    /// Ingest only: records a status change (the quote's `stale` flag
    /// changed, its sequence did not) and tells the subscribers.
    fn status(&self, id: SymbolId, q: &Arc<Quote>, state: State, reason: Reason, wakes: &mut Wakes) {
        let mut t = self.topics[id as usize].lock();
        t.last = Some(q.clone());
        Self::tell_status(&mut t, id, state, reason, wakes);
    }

    /// Tells `t`'s subscribers of a status change.
    fn tell_status(t: &mut Topic, id: SymbolId, state: State, reason: Reason, wakes: &mut Wakes) {
        t.stale_reason = (state == State::Stale).then_some(reason);
        for m in t.direct.iter().chain(t.waiting.iter().map(|w| &w.m)) {
            if m.push_status(id, state, reason) {
                wakes.wakes.push(m.clone());
            }
        }
        t.event(id, Event::Status(state, reason), wakes);
    }

    /// Ingest only: records a trading state change (the quote's
    /// `trading_state` changed, its sequence did not) and tells the
    /// subscribers.
    fn trading(&self, id: SymbolId, q: &Arc<Quote>, wakes: &mut Wakes) {
        let mut t = self.topics[id as usize].lock();
        t.last = Some(q.clone());
        for m in t.direct.iter().chain(t.waiting.iter().map(|w| &w.m)) {
            if m.push_trading(id, q.trading_state, q.trading_reason) {
                wakes.wakes.push(m.clone());
            }
        }
        t.event(id, Event::Trading(q.trading_state, q.trading_reason), wakes);
    }

    /// A lane's half of publishing: pushes `d` into lane `lane`'s
    /// subscribers of the symbol that joined before the event, queueing
    /// the writers to wake in `wakes`.
    fn deliver(&self, lane: usize, d: Delivery<'_>, wakes: &mut Vec<Arc<Mailbox>>) {
        let (id, ev) = match d {
            Delivery::Item(i) => (i.id, i.ev),
            Delivery::Conflated { id, ev, .. } => (id, ev),
        };
        // A conflated value is flagged once, not per subscriber.
        let flagged = match &d {
            Delivery::Conflated { pending, .. } => pending.flagged_update(),
            Delivery::Item(_) => None,
        };
        let t = self.topics[id as usize].lock();
        let Some(subs) = t.lanes.get(lane) else { return };
        for s in subs.iter().filter(|s| s.since < ev) {
            let wake = match &d {
                Delivery::Item(Item { what: Event::Update { entry, image }, .. }) => {
                    s.m.push_update(id, entry, *image)
                }
                Delivery::Item(Item { what: Event::Status(state, reason), .. }) => {
                    s.m.push_status(id, *state, *reason)
                }
                Delivery::Item(Item { what: Event::Trading(state, reason), .. }) => {
                    s.m.push_trading(id, *state, *reason)
                }
                Delivery::Conflated { pending: p, .. } => {
                    // In the order a mailbox sends a conflated symbol:
                    // status, the latest value with its skip count, then
                    // the trading state.
                    let mut wake = false;
                    if let Some((state, reason)) = p.status {
                        wake |= s.m.push_status(id, state, reason);
                    }
                    if let (Some(raw), Some(flagged)) = (&p.update, &flagged) {
                        wake |= s.m.push_latest(id, raw, flagged, p.skipped, p.snapshot);
                    }
                    if let Some((state, reason)) = p.trading {
                        wake |= s.m.push_trading(id, state, reason);
                    }
                    wake
                }
            };
            if wake {
                wakes.push(s.m.clone());
            }
        }
    }

    /// Ingest only: sets the initial state of a newly known symbol.
    fn init(&self, id: SymbolId, q: Arc<Quote>) {
        let mut t = self.topics[id as usize].lock();
        if t.last.is_none() {
            t.last = Some(q);
        }
    }

    /// Adds `m` to `id`'s subscribers and queues its start: a snapshot, or
    /// with `resume` the updates after that point when every one of them
    /// is still known. Returns `None` if the symbol has no state yet
    /// (unknown to the hub).
    pub fn subscribe(&self, id: SymbolId, m: &Arc<Mailbox>, resume: Option<ResumeFrom<'_>>) -> Option<Start> {
        let mut t = self.topics[id as usize].lock();
        let last = t.last.clone()?;
        let start = match resume {
            None => Start::Snapshot,
            Some(r) if !r.epoch.is_empty() && r.epoch != encode::epoch_text(&last) => Start::ResumeFailed,
            Some(r) if r.seq == last.seq => Start::Resumed,
            Some(r) if r.seq < last.seq && replay_complete(&t.recent, &last, r.seq) => Start::Resumed,
            Some(r)
                if r.seq > last.seq
                    && r.seq - last.seq <= self.ahead_max
                    && !self.ahead_wait.is_zero()
                    && !last.stale =>
            {
                Start::Waiting
            }
            Some(_) => Start::ResumeFailed,
        };
        if start == Start::Waiting {
            t.remove(m, self.lane_of(m));
            let seq = resume.map_or(0, |r| r.seq);
            t.waiting.push(Waiting { m: m.clone(), seq, until: std::time::Instant::now() + self.ahead_wait });
            return Some(start);
        }
        let mut wake = false;
        if start == Start::Resumed {
            // A stale flag change does not move seq: a resuming client must
            // still hear that the value it holds cannot be vouched for.
            if last.stale {
                wake |= m.push_status(id, State::Stale, t.stale_reason.unwrap_or(Reason::Unspecified));
            }
            let from = resume.map_or(0, |r| r.seq);
            for q in t.recent.iter().filter(|q| q.epoch == last.epoch && q.seq > from) {
                let mut buf = BytesMut::new();
                encode::entry(q, Flags::default(), &mut buf);
                // A replay is not a fresh tick: no latency sample (ts_recv 0).
                wake |= m.push_update(id, &Encoded { bytes: buf.freeze(), ts_recv: 0 }, false);
            }
        } else {
            let mut buf = BytesMut::new();
            let flags = Flags { snapshot: true, skipped: 0, resume_failed: start == Start::ResumeFailed };
            encode::entry(&last, flags, &mut buf);
            wake |= m.push_update(id, &Encoded { bytes: buf.freeze(), ts_recv: 0 }, true);
        }
        if last.trading_state != TradingState::Trading || start == Start::Resumed {
            // Said after the snapshot or replay, so a client always learns
            // that a symbol it starts on is not trading; a resume hears the
            // current state either way (a resumption while it was away
            // moves no seq, so no replay carries it).
            wake |= m.push_trading(id, last.trading_state, last.trading_reason);
        }
        t.add(m.clone(), self.lane_of(m));
        drop(t);
        if wake {
            m.wake();
        }
        Some(start)
    }

    /// Removes `m` from `id`'s subscribers.
    pub fn unsubscribe(&self, id: SymbolId, m: &Arc<Mailbox>) {
        self.topics[id as usize].lock().remove(m, self.lane_of(m));
    }

    /// Symbols the hub has room for.
    pub fn capacity(&self) -> usize {
        self.topics.len()
    }

    /// Subscribers of `id` (for metrics and tests).
    pub fn subscribers(&self, id: SymbolId) -> usize {
        let t = self.topics[id as usize].lock();
        t.lanes.iter().map(Vec::len).sum::<usize>() + t.direct.len() + t.waiting.len()
    }

    /// The last published state of `id`.
    pub fn last(&self, id: SymbolId) -> Option<Arc<Quote>> {
        self.topics.get(id as usize)?.lock().last.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::mailbox::{Drained, Entry};
    use super::*;
    use crate::book::UpdateKind;
    use prost::Message;
    use quotecast_proto::feed::Symbol;
    use quotecast_proto::v1;

    fn quote(seq: u64) -> Arc<Quote> {
        let mut q = Quote::empty(Symbol::new("AAPL").unwrap());
        q.seq = seq;
        q.kind = UpdateKind::Quote;
        q.bid_px = seq as i64;
        Arc::new(q)
    }

    fn publish(h: &Hub, seq: u64) {
        let q = quote(seq);
        let mut e = BytesMut::new();
        encode::entry(&q, Flags::default(), &mut e);
        h.publish(0, &q, &Encoded { bytes: e.freeze(), ts_recv: 0 }, &mut Wakes::default());
    }

    /// Every update queued in `m` (drained), decoded.
    fn updates_in(m: &Mailbox) -> Vec<v1::QuoteUpdate> {
        let mut d = Drained::default();
        m.drain(&mut d);
        d.entries
            .iter()
            .filter_map(|e| match e {
                Entry::Update(Encoded { bytes: b, .. }) => {
                    let mut frame = BytesMut::new();
                    encode::frame_header(b.len(), 0, &mut frame);
                    frame.extend_from_slice(b);
                    match v1::ServerMessage::decode(frame.freeze()).unwrap().body {
                        Some(v1::server_message::Body::Updates(mut u)) => u.updates.pop(),
                        _ => None,
                    }
                }
                _ => None,
            })
            .collect()
    }

    /// (seq, snapshot, resume_failed) of every queued update.
    fn seen(m: &Mailbox) -> Vec<(u64, bool, bool)> {
        updates_in(m).iter().map(|u| (u.seq, u.snapshot, u.resume_failed)).collect()
    }

    #[test]
    fn snapshot_then_every_update_in_order() {
        let h = Hub::new(1, 8);
        h.init(0, quote(0));
        publish(&h, 1);
        let m = Arc::new(Mailbox::new(64, 4));
        assert_eq!(h.subscribe(0, &m, None), Some(Start::Snapshot));
        publish(&h, 2);
        publish(&h, 3);
        assert_eq!(seen(&m), vec![(1, true, false), (2, false, false), (3, false, false)]);
        h.unsubscribe(0, &m);
        publish(&h, 4);
        assert_eq!(seen(&m), vec![]);
    }

    fn at(seq: u64) -> ResumeFrom<'static> {
        ResumeFrom { seq, epoch: "" }
    }

    #[test]
    fn resume_needs_the_same_epoch_and_every_update_after_the_point() {
        use quotecast_proto::feed::SessionId;
        let h = Hub::new(1, 8);
        h.init(0, quote(0));
        let publish_in = |epoch: &str, seq: u64| {
            let mut q = (*quote(seq)).clone();
            q.epoch = SessionId::from_text(epoch);
            let q = Arc::new(q);
            let e = Encoded { bytes: encode::shared_entry(&q, Flags::default()), ts_recv: 1 };
            h.publish(0, &q, &e, &mut Wakes::default());
        };
        for seq in [1, 2, 5, 6] {
            // 3 and 4 never reached this gateway.
            publish_in("S1", seq);
        }
        let m = || Arc::new(Mailbox::new(64, 4));
        let from = |seq, epoch| Some(ResumeFrom { seq, epoch });
        assert_eq!(h.subscribe(0, &m(), from(5, "S1")), Some(Start::Resumed));
        assert_eq!(h.subscribe(0, &m(), from(6, "S1")), Some(Start::Resumed));
        assert_eq!(
            h.subscribe(0, &m(), from(2, "S1")),
            Some(Start::ResumeFailed),
            "3 and 4 are missing here"
        );
        assert_eq!(h.subscribe(0, &m(), from(6, "S0")), Some(Start::ResumeFailed), "another epoch");
        assert_eq!(h.subscribe(0, &m(), from(6, "")), Some(Start::Resumed), "no epoch: the current one");
        publish_in("S2", 1);
        let mm = m();
        assert_eq!(h.subscribe(0, &mm, from(6, "S1")), Some(Start::ResumeFailed), "the session changed");
        assert_eq!(seen(&mm), vec![(1, true, true)]);
        let mm = m();
        assert_eq!(h.subscribe(0, &mm, from(0, "S2")), Some(Start::Resumed), "the new epoch from its start");
        assert_eq!(seen(&mm), vec![(1, false, false)]);
    }

    #[test]
    fn resume_from_ring_or_fail_with_snapshot() {
        let h = Hub::new(1, 3);
        h.init(0, quote(0));
        for s in 1..=5 {
            publish(&h, s);
        }
        let m = Arc::new(Mailbox::new(64, 4));
        assert_eq!(h.subscribe(0, &m, Some(at(3))), Some(Start::Resumed));
        assert_eq!(seen(&m), vec![(4, false, false), (5, false, false)]);
        let m2 = Arc::new(Mailbox::new(64, 4));
        assert_eq!(h.subscribe(0, &m2, Some(at(5))), Some(Start::Resumed));
        assert_eq!(seen(&m2), vec![]);
        let m3 = Arc::new(Mailbox::new(64, 4));
        assert_eq!(h.subscribe(0, &m3, Some(at(1))), Some(Start::ResumeFailed), "ring holds 3..=5 only");
        assert_eq!(seen(&m3), vec![(5, true, true)]);
        let m4 = Arc::new(Mailbox::new(64, 4));
        let h0 = Hub::new(1, 3).with_ahead_wait(std::time::Duration::ZERO);
        h0.init(0, quote(0));
        publish(&h0, 5);
        assert_eq!(h0.subscribe(0, &m4, Some(at(9))), Some(Start::ResumeFailed), "ahead, no wait allowed");
        assert_eq!(seen(&m4), vec![(5, true, true)]);
    }

    #[test]
    fn a_resume_ahead_of_this_node_waits_for_it_then_continues() {
        let h = Hub::new(1, 8);
        h.init(0, quote(0));
        publish(&h, 5);
        // The client holds 7 (from a node two updates ahead).
        let m = Arc::new(Mailbox::new(64, 4));
        assert_eq!(h.subscribe(0, &m, Some(at(7))), Some(Start::Waiting));
        assert_eq!(h.subscribers(0), 1);
        publish(&h, 6);
        assert_eq!(seen(&m), vec![], "6 is behind what the client holds");
        publish(&h, 7);
        assert_eq!(seen(&m), vec![], "7 it has: no duplicate");
        publish(&h, 8);
        publish(&h, 9);
        assert_eq!(seen(&m), vec![(8, false, false), (9, false, false)], "then the stream continues");
        // This node's chain jumps past the client's seq: a flagged snapshot.
        let m2 = Arc::new(Mailbox::new(64, 4));
        assert_eq!(h.subscribe(0, &m2, Some(at(10))), Some(Start::Waiting));
        let q = quote(12);
        let e = Encoded { bytes: encode::shared_entry(&q, Flags::default()), ts_recv: 1 };
        h.publish(0, &q, &e, &mut Wakes::default());
        assert_eq!(seen(&m2), vec![(12, true, true)], "12 only once, as the flagged snapshot");
        publish(&h, 13);
        assert_eq!(seen(&m2), vec![(13, false, false)]);
        // Too far ahead to be another node of this feed: no wait.
        let m3 = Arc::new(Mailbox::new(64, 4));
        assert_eq!(h.subscribe(0, &m3, Some(at(13 + AHEAD_MAX + 1))), Some(Start::ResumeFailed));
        // Past the wait, the next update ends it with a flagged snapshot.
        let h = Hub::new(1, 8).with_ahead_wait(std::time::Duration::from_millis(1));
        h.init(0, quote(0));
        publish(&h, 1);
        let m4 = Arc::new(Mailbox::new(64, 4));
        assert_eq!(h.subscribe(0, &m4, Some(at(3))), Some(Start::Waiting));
        std::thread::sleep(std::time::Duration::from_millis(5));
        publish(&h, 2);
        assert_eq!(seen(&m4), vec![(2, true, true)]);
        // Unsubscribing ends a wait.
        let m5 = Arc::new(Mailbox::new(64, 4));
        assert_eq!(h.subscribe(0, &m5, Some(at(9))), Some(Start::Waiting));
        h.unsubscribe(0, &m5);
        assert_eq!(h.subscribers(0), 1);
    }

    #[test]
    fn resuming_a_stale_symbol_is_told_it_is_stale() {
        let h = Hub::new(1, 8);
        h.init(0, quote(0));
        publish(&h, 1);
        let mut q = (*quote(1)).clone();
        q.stale = true;
        h.status(0, &Arc::new(q), State::Stale, Reason::FeedGap, &mut Wakes::default());
        let m = Arc::new(Mailbox::new(64, 4));
        assert_eq!(h.subscribe(0, &m, Some(at(1))), Some(Start::Resumed));
        let mut d = Drained::default();
        m.drain(&mut d);
        assert!(matches!(
            d.entries.front(),
            Some(Entry::Status { state: State::Stale, reason: Reason::FeedGap, .. })
        ));
    }

    #[test]
    fn replay_entry_size_is_what_the_help_says() {
        // --replay-max-bytes help: "~130 B" per entry.
        assert!((100..=160).contains(&REPLAY_ENTRY_BYTES), "{REPLAY_ENTRY_BYTES}");
    }

    #[test]
    fn replay_rings_stay_under_their_byte_ceiling() {
        // Room for 5 entries in all, depth 4 per symbol, 3 symbols.
        let h = Hub::new(3, 4).with_replay_budget(5 * REPLAY_ENTRY_BYTES);
        let publish_to = |id: SymbolId, seq: u64| {
            let q = quote(seq);
            let mut e = BytesMut::new();
            encode::entry(&q, Flags::default(), &mut e);
            h.publish(id, &q, &Encoded { bytes: e.freeze(), ts_recv: 0 }, &mut Wakes::default());
        };
        for seq in 1..=10 {
            publish_to(0, seq);
        }
        assert_eq!(h.replay_bytes(), 4 * REPLAY_ENTRY_BYTES, "symbol 0 at its depth");
        for seq in 1..=10 {
            publish_to(1, seq);
            publish_to(2, seq);
        }
        assert_eq!(h.replay_bytes(), 5 * REPLAY_ENTRY_BYTES, "total at the ceiling");
        // Symbol 1 got the last free entry and recycles it: it can still
        // resume from its latest seq; symbol 2 has no ring and cannot.
        let m = Arc::new(Mailbox::new(64, 4));
        assert_eq!(h.subscribe(1, &m, Some(at(9))), Some(Start::Resumed));
        assert_eq!(h.subscribe(2, &m, Some(at(9))), Some(Start::ResumeFailed));
        assert_eq!(h.subscribe(0, &m, Some(at(7))), Some(Start::Resumed), "symbol 0 keeps its depth");
    }

    /// Publishes `seq` on a hub with lanes, through the lanes' queue.
    fn publish_via(h: &Hub, seq: u64, fan: &mut Wakes) {
        let q = quote(seq);
        let e = Encoded { bytes: encode::shared_entry(&q, Flags::default()), ts_recv: 1 };
        h.publish(0, &q, &e, fan);
    }

    fn lane_pass(h: &Hub) {
        h.lanes()[0].pass(h, &mut lane::Scratch::default());
    }

    #[test]
    fn lane_subscribers_get_the_snapshot_then_exactly_the_events_after_it() {
        let h = Hub::new(1, 8).with_lanes(1, 64);
        h.init(0, quote(0));
        let mut fan = Wakes::default();
        publish_via(&h, 1, &mut fan);
        h.flush(&mut fan);
        let a = Arc::new(Mailbox::new(64, 4).on_lane(0));
        assert_eq!(h.subscribe(0, &a, None), Some(Start::Snapshot));
        // Published and handed to the lane, not yet delivered...
        publish_via(&h, 2, &mut fan);
        publish_via(&h, 3, &mut fan);
        assert_eq!(fan.items[0].len(), 2, "one lane item per event, whatever the subscribers");
        h.flush(&mut fan);
        // ...when b subscribes: its snapshot has 3 already.
        let b = Arc::new(Mailbox::new(64, 4).on_lane(0));
        assert_eq!(h.subscribe(0, &b, None), Some(Start::Snapshot));
        assert_eq!(seen(&a), vec![(1, true, false)], "nothing delivered before the lane's pass");
        lane_pass(&h);
        assert_eq!(seen(&a), vec![(2, false, false), (3, false, false)]);
        assert_eq!(seen(&b), vec![(3, true, false)], "no duplicate of 2 or 3 after the snapshot");
        publish_via(&h, 4, &mut fan);
        h.flush(&mut fan);
        lane_pass(&h);
        assert_eq!(seen(&a), vec![(4, false, false)]);
        assert_eq!(seen(&b), vec![(4, false, false)]);
        h.unsubscribe(0, &b);
        publish_via(&h, 5, &mut fan);
        h.flush(&mut fan);
        lane_pass(&h);
        assert_eq!(seen(&b), vec![]);
        assert_eq!(seen(&a), vec![(5, false, false)]);
    }

    /// A recovery and the update that brings it are published together: a
    /// subscriber hears both, in that order, or neither (its snapshot has
    /// the update already), never the update twice.
    #[test]
    fn a_recovery_and_its_update_reach_a_subscriber_together_or_not_at_all() {
        let h = Hub::new(1, 8).with_lanes(1, 64);
        h.init(0, quote(0));
        let mut fan = Wakes::default();
        let a = Arc::new(Mailbox::new(64, 4).on_lane(0));
        h.subscribe(0, &a, None);
        let mut stale = (*quote(1)).clone();
        stale.stale = true;
        h.status(0, &Arc::new(stale), State::Stale, Reason::FeedGap, &mut fan);
        let q = quote(2);
        let e = Encoded { bytes: encode::shared_entry(&q, Flags::default()), ts_recv: 1 };
        h.publish_as(0, &q, &e, Published { image: false, recovered: true }, &mut fan);
        let b = Arc::new(Mailbox::new(64, 4).on_lane(0));
        h.subscribe(0, &b, None);
        h.flush(&mut fan);
        lane_pass(&h);
        let told = |m: &Mailbox| {
            let mut d = Drained::default();
            m.drain(&mut d);
            d.entries
                .iter()
                .map(|e| match e {
                    Entry::Status { state, .. } => format!("{state:?}"),
                    Entry::Update(_) => "update".to_string(),
                    other => format!("{other:?}"),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(told(&a), ["update", "Stale", "Ok", "update"], "snapshot, stale, recovered, the update");
        assert_eq!(told(&b), ["update"], "only its snapshot, which has the update");
        assert_eq!(b.queued(), 0);
    }

    /// A lane holding 2 events, fed seq 1..=6 before its pass, with one
    /// subscriber whose mailbox holds `capacity` updates (its snapshot
    /// already read).
    fn behind_lane(capacity: usize) -> (Hub, Arc<Mailbox>) {
        let h = Hub::new(1, 8).with_lanes(1, 2);
        h.init(0, quote(0));
        let a = Arc::new(Mailbox::new(capacity, 4).on_lane(0));
        h.subscribe(0, &a, None);
        seen(&a);
        let mut fan = Wakes::default();
        for seq in 1..=6 {
            publish_via(&h, seq, &mut fan);
            h.flush(&mut fan);
        }
        lane_pass(&h);
        (h, a)
    }

    #[test]
    fn a_lane_that_falls_behind_conflates_with_the_skip_count() {
        let (h, a) = behind_lane(64);
        assert_eq!(h.lanes()[0].conflated(), 4);
        let got: Vec<(u64, u64)> = updates_in(&a).iter().map(|u| (u.seq, u.skipped)).collect();
        assert_eq!(got, vec![(1, 0), (2, 0), (6, 3)], "in order, then the latest with 3, 4, 5 skipped");
    }

    #[test]
    fn a_conflated_lane_value_in_a_conflating_mailbox_keeps_every_skip() {
        // The client's mailbox holds 1 update: lane and mailbox conflate.
        let (_h, a) = behind_lane(1);
        let mut d = Drained::default();
        a.drain(&mut d);
        assert_eq!(d.entries.len(), 1, "1 queued, then the mailbox conflates");
        let (_, p) = &d.pending[0];
        let latest = p.update.as_ref().map(|u| u.bytes.clone()).unwrap();
        let mut frame = BytesMut::new();
        encode::frame_header(latest.len(), 0, &mut frame);
        frame.extend_from_slice(&latest);
        let Some(v1::server_message::Body::Updates(u)) =
            v1::ServerMessage::decode(frame.freeze()).unwrap().body
        else {
            panic!("an update batch")
        };
        assert_eq!(u.updates[0].seq, 6);
        assert_eq!(p.skipped, 4, "2 replaced in the mailbox, 3, 4 and 5 in the lane");
    }

    #[test]
    fn a_mailbox_on_a_lane_the_hub_lacks_is_fed_directly() {
        let h = Hub::new(1, 8);
        h.init(0, quote(0));
        let m = Arc::new(Mailbox::new(64, 4).on_lane(3));
        h.subscribe(0, &m, None);
        let mut fan = Wakes::default();
        publish_via(&h, 1, &mut fan);
        assert!(fan.items.is_empty(), "no lane item for a lane nobody runs");
        assert_eq!(seen(&m), vec![(0, true, false), (1, false, false)]);
    }

    #[test]
    fn unknown_topic_is_refused() {
        let h = Hub::new(2, 0);
        let m = Arc::new(Mailbox::new(4, 4));
        assert_eq!(h.subscribe(1, &m, None), None);
    }
}
