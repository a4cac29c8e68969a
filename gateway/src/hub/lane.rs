//! Fan-out lanes: the per-subscriber half of publishing, done on the
//! worker threads that run the subscribers' writers, not on the ingest
//! thread.
//!
//! Publishing used to push every update into every subscriber's mailbox
//! on the ingest thread: its work per tick grew with the subscribers, so
//! under heavy client load ingest fell behind the feed and lost packets
//! (1000 connections x 10 symbols at 300k ticks/s: about half the feed
//! messages never applied). Now ingest records each event once per lane
//! that has subscribers of the symbol (work per tick: the number of
//! worker threads) and hands the batch over once per datagram; each lane's
//! task, on its worker thread, pushes into its own subscribers' mailboxes
//! and wakes their writers locally (a run-queue push, no cross-thread
//! wake-up syscall per connection).
//!
//! A lane's queue is bounded. When its worker cannot keep up, further
//! events are conflated per symbol in the lane (the latest update with a
//! skip count, the latest status and trading state), exactly as a
//! mailbox conflates for one slow client: clients see the latest value,
//! marked, and the ingest thread never waits and never drops feed data.

use super::mailbox::{Encoded, Mailbox, Pending};
use crate::book::SymbolId;
use parking_lot::Mutex;
use quotecast_proto::feed::{ReasonCode, TradingState};
use quotecast_proto::v1::status::{Reason, State};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

/// What happened to a symbol, to be told to its subscribers.
#[derive(Debug, Clone)]
pub enum Event {
    /// An update (or, with `image`, a full state rebuilt from the feed's
    /// snapshot channel).
    Update {
        /// The shared encoded entry.
        entry: Encoded,
        /// A rebuilt image (a conflated subscriber keeps the flag).
        image: bool,
    },
    /// The symbol's feed status changed.
    Status(State, Reason),
    /// The exchange changed the symbol's trading state.
    Trading(TradingState, ReasonCode),
}

/// One event of one symbol, numbered: a lane delivers it only to the
/// subscribers that joined before event `ev` of that symbol (a later one
/// has it in its snapshot already).
#[derive(Debug, Clone)]
pub struct Item {
    /// The symbol.
    pub id: SymbolId,
    /// The symbol's event number ([`super::Hub`] counts them per topic).
    pub ev: u64,
    /// What happened.
    pub what: Event,
}

/// A symbol's conflated events while the lane's queue is full.
#[derive(Debug, Default)]
struct Conflated {
    pending: Pending,
    /// The latest conflated event number.
    ev: u64,
}

#[derive(Debug, Default)]
struct Queue {
    items: Vec<Item>,
    conflated: HashMap<SymbolId, Conflated>,
}

/// One worker thread's fan-out queue (see the module docs).
#[derive(Debug)]
pub struct Lane {
    index: usize,
    capacity: usize,
    queue: Mutex<Queue>,
    notify: Notify,
    /// Events conflated because the queue was full.
    conflated: AtomicU64,
}

/// What the lane hands to the hub to push into its subscribers' mailboxes.
pub(super) enum Delivery<'a> {
    /// A queued event.
    Item(&'a Item),
    /// A symbol's conflated events, in the order a mailbox sends them.
    Conflated { id: SymbolId, ev: u64, pending: &'a Pending },
}

impl Lane {
    /// Lane `index` holding at most `capacity` queued events before it
    /// conflates.
    pub fn new(index: usize, capacity: usize) -> Arc<Lane> {
        Arc::new(Lane {
            index,
            capacity: capacity.max(1),
            queue: Mutex::new(Queue::default()),
            notify: Notify::new(),
            conflated: AtomicU64::new(0),
        })
    }

    /// The lane's index (its worker's).
    pub fn index(&self) -> usize {
        self.index
    }

    /// Events conflated so far because the worker fell behind.
    pub fn conflated(&self) -> u64 {
        self.conflated.load(Ordering::Relaxed)
    }

    /// Publisher: appends `items` (emptied) and notifies the lane if it
    /// had nothing queued. Never waits for the worker.
    pub(super) fn hand_over(&self, items: &mut Vec<Item>) {
        if items.is_empty() {
            return;
        }
        let was_empty = {
            let mut q = self.queue.lock();
            let was_empty = q.items.is_empty() && q.conflated.is_empty();
            let room = self.capacity.saturating_sub(q.items.len());
            if items.len() <= room && q.conflated.is_empty() {
                q.items.append(items);
            } else {
                let mut n = 0;
                for item in items.drain(..) {
                    if q.items.len() < self.capacity && q.conflated.is_empty() {
                        q.items.push(item);
                        continue;
                    }
                    n += 1;
                    let c = q.conflated.entry(item.id).or_default();
                    c.ev = item.ev;
                    match item.what {
                        Event::Update { entry, image } => {
                            if c.pending.update.replace(entry).is_some() {
                                c.pending.skipped += 1;
                            }
                            c.pending.snapshot |= image;
                        }
                        Event::Status(s, r) => c.pending.status = Some((s, r)),
                        Event::Trading(s, r) => c.pending.trading = Some((s, r)),
                    }
                }
                self.conflated.fetch_add(n, Ordering::Relaxed);
            }
            was_empty
        };
        if was_empty {
            self.notify.notify_one();
        }
    }

    /// Runs on the lane's worker thread for as long as the worker: pushes
    /// what is handed over into `hub`'s subscriber mailboxes of this lane
    /// and wakes their writers.
    pub async fn run(self: Arc<Self>, hub: Arc<super::Hub>) {
        let mut scratch = Scratch::default();
        loop {
            self.notify.notified().await;
            // Writers already woken run first, so this pass takes
            // everything that arrived meanwhile in one go and each writer's
            // next frame carries all of it.
            tokio::task::yield_now().await;
            self.pass(&hub, &mut scratch);
        }
    }

    /// One pass: delivers everything handed over so far and wakes the
    /// writers (from the calling thread: the worker's, in [`Lane::run`]).
    pub(super) fn pass(&self, hub: &super::Hub, s: &mut Scratch) {
        {
            let mut q = self.queue.lock();
            std::mem::swap(&mut q.items, &mut s.items);
            std::mem::swap(&mut q.conflated, &mut s.conflated);
        }
        for item in &s.items {
            hub.deliver(self.index, Delivery::Item(item), &mut s.wakes);
        }
        s.items.clear();
        for (id, c) in s.conflated.drain() {
            hub.deliver(self.index, Delivery::Conflated { id, ev: c.ev, pending: &c.pending }, &mut s.wakes);
        }
        for m in s.wakes.drain(..) {
            m.wake();
        }
        if s.items.capacity() > 4 * self.capacity.min(4096) {
            s.items.shrink_to(1024);
        }
    }
}

/// Buffers a lane reuses from pass to pass.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    items: Vec<Item>,
    conflated: HashMap<SymbolId, Conflated>,
    wakes: Vec<Arc<Mailbox>>,
}

/// What one publisher batch (a datagram) leaves to do: events per lane
/// and the lane-less mailboxes (gRPC streams) to wake.
#[derive(Debug, Default)]
pub struct Fanout {
    pub(super) items: Vec<Vec<Item>>,
    pub(super) wakes: Vec<Arc<Mailbox>>,
}

impl Fanout {
    /// Queues `item` for lane `lane`.
    pub(super) fn push(&mut self, lane: usize, item: Item) {
        if self.items.len() <= lane {
            self.items.resize_with(lane + 1, Vec::new);
        }
        self.items[lane].push(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn update(id: SymbolId, ev: u64, x: u8) -> Item {
        Item {
            id,
            ev,
            what: Event::Update { entry: Encoded { bytes: Bytes::from(vec![x]), ts_recv: 0 }, image: false },
        }
    }

    #[test]
    fn a_full_lane_conflates_per_symbol_and_never_refuses_the_publisher() {
        let lane = Lane::new(0, 2);
        let mut batch =
            vec![update(1, 1, 1), update(1, 2, 2), update(1, 3, 3), update(2, 1, 9), update(1, 4, 4)];
        lane.hand_over(&mut batch);
        assert!(batch.is_empty());
        let q = lane.queue.lock();
        assert_eq!(
            q.items.iter().map(|i| i.ev).collect::<Vec<_>>(),
            vec![1, 2],
            "queued in order up to the bound"
        );
        let c1 = &q.conflated[&1];
        assert_eq!((c1.ev, c1.pending.skipped), (4, 1), "3 replaced by 4");
        assert_eq!(q.conflated[&2].pending.skipped, 0);
        drop(q);
        assert_eq!(lane.conflated(), 3);
    }
}
