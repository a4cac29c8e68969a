//! One frame builder for every transport: what a drained mailbox becomes,
//! in order. WebSocket sessions and gRPC streams send the same messages by
//! the same rules; each only says how a piece goes on its wire
//! ([`Frames`]).
//!
//! The rules: consecutive updates become one `UpdateBatch` of at most
//! `max_batch` bytes of entries; runs of equal status (or trading) changes
//! become one `Status` (`TradingStatus`) naming all their symbols; a reply
//! goes out where it was queued. Conflated symbols come after the queue,
//! each as its status change, its latest value (flagged with what it
//! replaced), then its trading state, so a client always ends in the
//! state the feed has now.

use super::mailbox::{Control, Drained, Encoded, Entry};
use super::notice::{self, Grouped, Notice};
use crate::book::{Book, SymbolId};
use bytes::Bytes;

/// How a transport puts each piece on its wire, called in send order.
pub trait Frames {
    /// An update batch: `entries` are encoded `UpdateBatch.updates`
    /// entries, `len` bytes together.
    fn batch(&mut self, entries: &[Bytes], len: usize);
    /// Equal status or trading changes of several symbols.
    fn notice(&mut self, grouped: Grouped);
    /// A reply, where it was queued.
    fn control(&mut self, reply: Control);
}

/// What one build carried.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Built {
    /// Oldest receive time of a fresh tick in it (0: none was fresh).
    pub oldest: i64,
    /// Updates in it.
    pub updates: u64,
    /// Updates its conflated values replaced (the client never sees them).
    pub skipped: u64,
}

/// Turns everything in `d` (emptied) into pieces for `out`, by the rules
/// above; `book` names the symbols of status messages.
pub fn build(d: &mut Drained, book: &Book, max_batch: usize, out: &mut impl Frames) -> Built {
    let mut b = Builder {
        out,
        book,
        max_batch,
        batch: Vec::new(),
        len: 0,
        notices: Vec::new(),
        built: Built::default(),
    };
    for e in d.entries.drain(..) {
        match e {
            Entry::Update(u) => b.update(u.bytes, u.ts_recv),
            Entry::Status { symbol, state, reason } => b.notice(Notice::Status(state, reason), symbol),
            Entry::Trading { symbol, state, reason } => b.notice(Notice::Trading(state, reason), symbol),
            Entry::Control(reply) => {
                b.flush_batch();
                b.flush_notices();
                b.out.control(*reply);
            }
        }
    }
    for (symbol, p) in d.pending.drain(..) {
        if let Some((state, reason)) = p.status {
            b.notice(Notice::Status(state, reason), symbol);
        }
        if let Some(Encoded { bytes, ts_recv }) = p.flagged_update() {
            b.built.skipped += p.skipped;
            b.update(bytes, ts_recv);
        }
        if let Some((state, reason)) = p.trading {
            b.notice(Notice::Trading(state, reason), symbol);
        }
    }
    b.flush_batch();
    b.flush_notices();
    b.built
}

struct Builder<'a, F> {
    out: &'a mut F,
    book: &'a Book,
    max_batch: usize,
    batch: Vec<Bytes>,
    len: usize,
    notices: Vec<(Notice, SymbolId)>,
    built: Built,
}

impl<F: Frames> Builder<'_, F> {
    fn update(&mut self, entry: Bytes, ts_recv: i64) {
        self.flush_notices();
        if !self.batch.is_empty() && self.len + entry.len() > self.max_batch {
            self.flush_batch();
        }
        self.len += entry.len();
        self.batch.push(entry);
        self.built.updates += 1;
        self.built.oldest = match (self.built.oldest, ts_recv) {
            (0, x) | (x, 0) => x,
            (a, b) => a.min(b),
        };
    }

    fn notice(&mut self, n: Notice, symbol: SymbolId) {
        self.flush_batch();
        self.notices.push((n, symbol));
    }

    fn flush_batch(&mut self) {
        if !self.batch.is_empty() {
            self.out.batch(&self.batch, self.len);
            self.batch.clear();
            self.len = 0;
        }
    }

    fn flush_notices(&mut self) {
        let out = &mut *self.out;
        notice::flush(&mut self.notices, self.book, |g| out.notice(g));
    }
}
