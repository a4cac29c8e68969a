//! One connection's bounded outbox, filled by the hub (and the session's
//! reader) and emptied by the session's writer.
//!
//! The hot path never waits: [`Mailbox::push_update`] takes a short
//! uncontended lock, appends a shared `Bytes` and returns whether the writer
//! must be woken. When the queue is full the mailbox switches to
//! conflation (Lightstreamer's MERGE): every further update only replaces
//! its symbol's pending latest value and counts a skip. Memory is therefore
//! bounded by `capacity` queued entries plus one pending entry per
//! subscribed symbol, whatever the feed rate or the client's speed.

use super::encode::{self, Flags};
use crate::book::SymbolId;
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use quotecast_proto::feed::{ReasonCode, TradingState};
use quotecast_proto::v1::status::{Reason, State};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tokio::sync::Notify;

/// A shared, pre-encoded `UpdateBatch.updates` entry and when the gateway
/// received the tick behind it (for the tick-to-send latency).
#[derive(Debug, Clone)]
pub struct Encoded {
    /// The entry's bytes, shared by every subscriber.
    pub bytes: Bytes,
    /// Gateway receive time (ns since epoch; 0 for snapshots and replays).
    pub ts_recv: i64,
}

/// An item queued for a connection, in the order it must be sent.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A quote update.
    Update(Encoded),
    /// A feed status change for one symbol.
    Status {
        /// The symbol.
        symbol: SymbolId,
        /// Its new state.
        state: State,
        /// Why.
        reason: Reason,
    },
    /// The exchange changed the symbol's trading state (halt, resumption).
    Trading {
        /// The symbol.
        symbol: SymbolId,
        /// Its new state.
        state: TradingState,
        /// The exchange's reason code.
        reason: ReasonCode,
    },
    /// A reply to a client request, sent as is. Boxed: replies are rare and
    /// would double the size of every queued update.
    Control(Box<Control>),
}

/// An encoded reply, as the connection sends it: one binary (protobuf) or
/// text (JSON) message. The hub knows no transport: the session turns it
/// into a WebSocket message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// A protobuf `ServerMessage`.
    Binary(Bytes),
    /// A JSON reply.
    Text(String),
}

/// The latest pending value of a symbol while conflating.
#[derive(Debug, Clone, Default)]
pub struct Pending {
    /// Latest shared entry, if an update is pending.
    pub update: Option<Encoded>,
    /// Updates replaced before `update` (the client never sees them).
    pub skipped: u64,
    /// Latest status change, sent before the update.
    pub status: Option<(State, Reason)>,
    /// Latest trading state change, sent before the update (kept apart
    /// from `status` so neither hides the other).
    pub trading: Option<(TradingState, ReasonCode)>,
    /// The pending update is (or replaced) a subscribe snapshot.
    pub snapshot: bool,
}

impl Pending {
    /// The pending update as it is sent: flagged with what it replaced and
    /// whether it is (or replaced) a snapshot; the shared entry itself when
    /// there is nothing to flag.
    pub fn flagged_update(&self) -> Option<Encoded> {
        let u = self.update.as_ref()?;
        if self.skipped == 0 && !self.snapshot {
            return Some(u.clone());
        }
        let mut b = BytesMut::new();
        let flags = Flags { snapshot: self.snapshot, skipped: self.skipped, resume_failed: false };
        encode::with_flags(&u.bytes, flags, &mut b);
        Some(Encoded { bytes: b.freeze(), ts_recv: u.ts_recv })
    }
}

/// What the writer takes out in one go.
#[derive(Debug, Default)]
pub struct Drained {
    /// Queued entries in order.
    pub entries: VecDeque<Entry>,
    /// Conflated symbols (sent after `entries`).
    pub pending: Vec<(SymbolId, Pending)>,
    /// Since when the connection has been conflating without catching up.
    pub behind_since: Option<Instant>,
}

impl Drained {
    /// True when nothing was taken.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.pending.is_empty()
    }
}

#[derive(Debug, Default)]
struct Inner {
    queue: VecDeque<Entry>,
    /// Control replies queued beyond `capacity` (bounded separately).
    control: usize,
    conflating: bool,
    pending: HashMap<SymbolId, Pending>,
    behind_since: Option<Instant>,
    /// The writer is (about to be) waiting: the next push must wake it.
    armed: bool,
}

/// The control queue is full: the client sends requests faster than it
/// reads replies.
#[derive(Debug, thiserror::Error)]
#[error("more than {0} replies pending")]
pub struct ControlOverflow(pub usize);

/// A connection's outbox. Shared as `Arc<Mailbox>` between the hub's
/// subscriber lists, the session reader and the session writer.
#[derive(Debug)]
pub struct Mailbox {
    inner: Mutex<Inner>,
    notify: Notify,
    /// The fan-out lane (worker) whose thread runs the writer and pushes
    /// its updates; `None`: the publisher pushes and wakes it directly
    /// (gRPC streams, tests). See [`super::lane`].
    lane: Option<usize>,
    /// Signalled when the writer takes queued replies out, so a reader
    /// holding back a pipelined request can go on.
    control_room: Notify,
    closed: AtomicBool,
    /// Updates queued before conflation starts.
    capacity: usize,
    /// Control replies that may wait at once.
    control_capacity: usize,
}

impl Mailbox {
    /// An empty mailbox holding at most `capacity` queued updates before it
    /// conflates, and `control_capacity` unsent replies.
    pub fn new(capacity: usize, control_capacity: usize) -> Self {
        Mailbox {
            inner: Mutex::new(Inner::default()),
            notify: Notify::new(),
            lane: None,
            control_room: Notify::new(),
            closed: AtomicBool::new(false),
            capacity: capacity.max(1),
            control_capacity,
        }
    }

    /// The mailbox of a writer on fan-out lane `lane`'s worker thread.
    #[must_use]
    pub fn on_lane(mut self, lane: usize) -> Self {
        self.lane = Some(lane);
        self
    }

    /// The fan-out lane of the writer, if any.
    pub fn lane(&self) -> Option<usize> {
        self.lane
    }

    /// Queues a shared update of `symbol`; conflates when full. Returns true
    /// when the caller must [`wake`](Self::wake) the writer (after it is done
    /// pushing, so one wake-up covers a whole datagram).
    pub fn push_update(&self, symbol: SymbolId, entry: &Encoded, snapshot: bool) -> bool {
        self.push_latest(symbol, entry, entry, 0, snapshot)
    }

    /// Queues the latest value of `symbol` standing for `skipped` updates
    /// that were conflated before it reached this mailbox (by a fan-out
    /// lane): `flagged` is `raw` already carrying that count, queued as is;
    /// while conflating, `raw` becomes the pending value and the count adds
    /// to the symbol's skips, so the client's skip count still covers every
    /// update it never saw.
    pub fn push_latest(
        &self,
        symbol: SymbolId,
        raw: &Encoded,
        flagged: &Encoded,
        skipped: u64,
        snapshot: bool,
    ) -> bool {
        if self.closed.load(Ordering::Relaxed) {
            return false;
        }
        let mut g = self.inner.lock();
        if !g.conflating && g.queue.len() - g.control < self.capacity {
            g.queue.push_back(Entry::Update(flagged.clone()));
        } else {
            if !g.conflating {
                g.conflating = true;
                g.behind_since.get_or_insert_with(Instant::now);
            }
            let p = g.pending.entry(symbol).or_default();
            if p.update.replace(raw.clone()).is_some() {
                p.skipped += 1;
            }
            p.skipped += skipped;
            p.snapshot |= snapshot;
        }
        std::mem::take(&mut g.armed)
    }

    /// Queues a status change of `symbol` (conflated like updates).
    pub fn push_status(&self, symbol: SymbolId, state: State, reason: Reason) -> bool {
        self.push_change(symbol, Entry::Status { symbol, state, reason }, |p| {
            p.status = Some((state, reason))
        })
    }

    /// Queues a trading state change of `symbol` (conflated like updates).
    pub fn push_trading(&self, symbol: SymbolId, state: TradingState, reason: ReasonCode) -> bool {
        self.push_change(symbol, Entry::Trading { symbol, state, reason }, |p| {
            p.trading = Some((state, reason))
        })
    }

    /// Queues `entry`, a change of `symbol` that is not an update; while
    /// conflating, `conflate` records it in the symbol's pending slot
    /// instead (latest wins).
    fn push_change(&self, symbol: SymbolId, entry: Entry, conflate: impl FnOnce(&mut Pending)) -> bool {
        if self.closed.load(Ordering::Relaxed) {
            return false;
        }
        let mut g = self.inner.lock();
        if !g.conflating && g.queue.len() - g.control < self.capacity {
            g.queue.push_back(entry);
        } else {
            g.conflating = true;
            g.behind_since.get_or_insert_with(Instant::now);
            conflate(g.pending.entry(symbol).or_default());
        }
        std::mem::take(&mut g.armed)
    }

    /// Queues a reply and wakes the writer.
    ///
    /// # Errors
    /// [`ControlOverflow`] when `control_capacity` replies are unsent.
    pub fn push_control(&self, msg: Control) -> Result<(), ControlOverflow> {
        let wake = {
            let mut g = self.inner.lock();
            if g.control >= self.control_capacity {
                return Err(ControlOverflow(self.control_capacity));
            }
            g.control += 1;
            g.queue.push_back(Entry::Control(Box::new(msg)));
            std::mem::take(&mut g.armed)
        };
        if wake {
            self.wake();
        }
        Ok(())
    }

    /// Wakes the writer (stores a permit if it is not waiting yet).
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Writer: takes everything pending into `out` (whose buffers are
    /// reused). If nothing is pending, arms the mailbox so the next push
    /// asks for a wake-up, and returns false.
    pub fn drain(&self, out: &mut Drained) -> bool {
        out.entries.clear();
        out.pending.clear();
        let mut g = self.inner.lock();
        if g.queue.is_empty() && g.pending.is_empty() {
            g.armed = true;
            g.behind_since = None;
            out.behind_since = None;
            return false;
        }
        std::mem::swap(&mut g.queue, &mut out.entries);
        if std::mem::take(&mut g.control) > 0 {
            self.control_room.notify_waiters();
        }
        out.pending.extend(g.pending.drain());
        if out.pending.is_empty() {
            // Caught up: whatever lag there was is over.
            g.behind_since = None;
        }
        g.conflating = false;
        out.behind_since = g.behind_since;
        true
    }

    /// Writer: waits for a wake-up. Cancel-safe.
    pub async fn notified(&self) {
        self.notify.notified().await;
    }

    /// True while another reply can be queued without overflowing.
    pub fn has_control_room(&self) -> bool {
        self.inner.lock().control < self.control_capacity
    }

    /// Reader: waits until another reply can be queued. A client that
    /// pipelines requests is thus read no faster than it reads its
    /// replies (TCP pushes back), instead of being closed. Cancel-safe.
    pub async fn control_room(&self) {
        loop {
            let room = self.control_room.notified();
            tokio::pin!(room);
            // Registered before the check, so a drain in between is seen.
            room.as_mut().enable();
            if self.has_control_room() {
                return;
            }
            room.await;
        }
    }

    /// Marks the mailbox closed and drops whatever is queued: later pushes
    /// are dropped too. The session calls this before unsubscribing so the
    /// hub stops queueing at once and a closing connection holds no data.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let mut g = self.inner.lock();
        g.queue = VecDeque::new();
        g.pending = HashMap::new();
        g.control = 0;
        g.conflating = false;
    }

    /// Entries currently queued (for tests and metrics).
    pub fn queued(&self) -> usize {
        self.inner.lock().queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn b(x: u8) -> Encoded {
        Encoded { bytes: Bytes::from(vec![x]), ts_recv: 0 }
    }

    fn updates(d: &Drained) -> Vec<u8> {
        d.entries
            .iter()
            .filter_map(|e| match e {
                Entry::Update(b) => Some(b.bytes[0]),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn first_push_after_arming_asks_for_one_wake() {
        let m = Mailbox::new(4, 4);
        let mut d = Drained::default();
        assert!(!m.drain(&mut d), "empty");
        assert!(m.push_update(0, &b(1), false));
        assert!(!m.push_update(0, &b(2), false), "already woken");
        assert!(m.drain(&mut d));
        assert_eq!(updates(&d), vec![1, 2]);
    }

    #[test]
    fn overflow_conflates_to_latest_per_symbol_with_skip_count() {
        let m = Mailbox::new(2, 4);
        for i in 1..=6 {
            m.push_update(u32::from(i % 2), &b(i), false);
        }
        let mut d = Drained::default();
        assert!(m.drain(&mut d));
        assert_eq!(updates(&d), vec![1, 2], "queue holds the first two in order");
        let mut p: Vec<_> =
            d.pending.iter().map(|(s, p)| (*s, p.update.as_ref().unwrap().bytes[0], p.skipped)).collect();
        p.sort();
        // symbol 1 got 1,3,5 (1 queued; 3 replaced by 5), symbol 0 got 2,4,6.
        assert_eq!(p, vec![(0, 6, 1), (1, 5, 1)]);
        assert!(d.behind_since.is_some());
        // Caught up: the next drain with no conflation clears the lag.
        m.push_update(0, &b(7), false);
        assert!(m.drain(&mut d));
        assert!(d.behind_since.is_none());
        assert_eq!(updates(&d), vec![7]);
    }

    #[test]
    fn control_is_bounded_separately() {
        let m = Mailbox::new(1, 2);
        m.push_update(0, &b(1), false);
        m.push_control(Control::Text("a".into())).unwrap();
        m.push_control(Control::Text("b".into())).unwrap();
        assert!(m.push_control(Control::Text("c".into())).is_err());
        // Updates still have their own room.
        let mut d = Drained::default();
        m.drain(&mut d);
        assert_eq!(d.entries.len(), 3);
        assert!(d.pending.is_empty());
    }

    #[tokio::test]
    async fn reader_waits_for_control_room_until_the_writer_drains() {
        let m = Arc::new(Mailbox::new(4, 1));
        m.push_control(Control::Text("a".into())).unwrap();
        assert!(!m.has_control_room());
        let waiter = tokio::spawn({
            let m = m.clone();
            async move { m.control_room().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        let mut d = Drained::default();
        assert!(m.drain(&mut d));
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.unwrap().unwrap();
        assert!(m.has_control_room());
    }

    #[test]
    fn closing_drops_what_is_queued() {
        let m = Mailbox::new(1, 4);
        for i in 0..4 {
            m.push_update(0, &b(i), false);
        }
        m.push_control(Control::Text("a".into())).unwrap();
        m.close();
        let mut d = Drained::default();
        assert!(!m.drain(&mut d));
    }

    #[test]
    fn queued_entries_stay_small() {
        // Memory per connection under load is capacity x this size.
        assert!(std::mem::size_of::<Entry>() <= 48, "{}", std::mem::size_of::<Entry>());
    }

    #[test]
    fn closed_mailbox_drops_pushes() {
        let m = Mailbox::new(4, 4);
        m.close();
        assert!(!m.push_update(0, &b(1), false));
        assert_eq!(m.queued(), 0);
    }
}
