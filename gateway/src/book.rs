//! The quote book: the current state of every symbol.
//!
//! One writer (the ingest thread) and many lock-free readers (gRPC, the
//! hub's subscribe path, metrics). Each symbol's state is an immutable
//! [`Quote`] behind an `ArcSwap`; the writer builds the next value from its
//! own copy and swaps it in, so a reader never sees a half-written quote and
//! never blocks the writer.
//!
//! Symbols are learned from the feed's directory messages. The slot array is
//! allocated once (`--max-symbols`) so a [`SymbolId`] indexes it without a
//! lock; the name -> id table is copy-on-write and changes only when a new
//! symbol appears.

use arc_swap::{ArcSwap, ArcSwapOption};
use quotecast_proto::feed::{ReasonCode, SessionId, Symbol, TradingState};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// Dense index of a symbol in the book (and the hub), assigned in order of
/// first appearance and never reused.
pub type SymbolId = u32;

/// What changed a symbol's state last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateKind {
    /// No update yet (the symbol is only known from the directory).
    None,
    /// Top of book changed.
    Quote,
    /// A trade printed.
    Trade,
}

/// One symbol's full state after its `seq`-th update. Immutable once
/// published; prices are fixed-point with [`quotecast_proto::PRICE_SCALE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// The ticker.
    pub symbol: Symbol,
    /// Per-symbol sequence number: the feed's own `symbol_seq` of the
    /// last quote or trade within the feed session [`Quote::epoch`]
    /// (0 before the first), so every gateway on the same feed gives the
    /// same update the same `(epoch, seq)`.
    pub seq: u64,
    /// The feed session `seq` belongs to (default: none yet).
    pub epoch: SessionId,
    /// What the last update was.
    pub kind: UpdateKind,
    /// Best bid price.
    pub bid_px: i64,
    /// Best bid size.
    pub bid_sz: u64,
    /// Best ask price.
    pub ask_px: i64,
    /// Best ask size.
    pub ask_sz: u64,
    /// Last trade price (0 before any trade).
    pub last_px: i64,
    /// Last trade size.
    pub last_sz: u64,
    /// Exchange timestamp of the last update (ns since epoch).
    pub ts_event: i64,
    /// Gateway receive timestamp of the last update (ns since epoch).
    pub ts_recv: i64,
    /// Feed sequence number of the message that made the last update.
    pub feed_seq: u64,
    /// The feed's per-symbol sequence (`symbol_seq`, format v2) of the
    /// message that made the last update; 0 until the first. `seq` is this
    /// once published.
    pub feed_symbol_seq: u32,
    /// Trading state from the feed's last `H` for this symbol (`Trading`
    /// until one arrives, and again after a new feed session starts).
    /// Clients get it in every update and snapshot, and as
    /// `TradingStatus` when it changes.
    pub trading_state: TradingState,
    /// The exchange's reason code of that `H` (blank when none).
    pub trading_reason: ReasonCode,
    /// The gateway cannot vouch for this value (gap, feed down, restart).
    pub stale: bool,
}

impl Quote {
    /// The state of a symbol known from the directory but not yet quoted.
    pub fn empty(symbol: Symbol) -> Self {
        Quote {
            symbol,
            seq: 0,
            epoch: SessionId::default(),
            kind: UpdateKind::None,
            bid_px: 0,
            bid_sz: 0,
            ask_px: 0,
            ask_sz: 0,
            last_px: 0,
            last_sz: 0,
            ts_event: 0,
            ts_recv: 0,
            feed_seq: 0,
            feed_symbol_seq: 0,
            trading_state: TradingState::Trading,
            trading_reason: ReasonCode::NONE,
            stale: false,
        }
    }
}

/// One symbol's slot: its current quote plus counters readers may want.
#[derive(Debug, Default)]
struct Slot {
    quote: ArcSwapOption<Quote>,
    /// Updates applied since the gateway started (for ListSymbols).
    updates: AtomicU64,
    /// The symbol's locate code in the current feed session, plus one
    /// (0 = not in the current session's directory yet). Locates belong to
    /// one session: a restart clears them until the new directory arrives.
    locate: AtomicU32,
}

/// Name -> id table; replaced whole (copy-on-write) when a symbol appears.
#[derive(Debug, Default, Clone)]
struct SymbolTable {
    by_name: HashMap<Symbol, SymbolId>,
    names: Vec<Symbol>,
}

/// The quote book. Shared as `Arc<Book>` by every reader; the one
/// [`BookWriter`] (held by the ingest thread) is the only way to write it.
#[derive(Debug)]
pub struct Book {
    slots: Box<[Slot]>,
    table: ArcSwap<SymbolTable>,
}

/// The book is full: `--max-symbols` symbols are already known.
#[derive(Debug, thiserror::Error)]
#[error("symbol table is full ({0} symbols); raise --max-symbols")]
pub struct BookFull(pub usize);

/// The only handle that writes the book: not `Clone`, made once with the
/// book ([`Book::with_writer`]). Reads go through it too (`Deref`).
#[derive(Debug)]
pub struct BookWriter {
    book: Arc<Book>,
}

impl std::ops::Deref for BookWriter {
    type Target = Book;

    fn deref(&self) -> &Book {
        &self.book
    }
}

impl BookWriter {
    /// Registers a symbol (idempotent) and returns its id.
    ///
    /// # Errors
    /// [`BookFull`] when the capacity is reached.
    pub fn insert_symbol(&self, symbol: Symbol) -> Result<SymbolId, BookFull> {
        self.book.insert_symbol(symbol)
    }

    /// Makes `q` the current state of `id`. `counted` says whether it is an
    /// update (vs. a stale-flag change).
    pub fn publish(&self, id: SymbolId, q: Arc<Quote>, counted: bool) {
        self.book.publish(id, q, counted);
    }

    /// Records the locate code `id` has in the current feed session
    /// (`None`: it has none).
    pub fn set_locate(&self, id: SymbolId, locate: Option<u16>) {
        self.book.set_locate(id, locate);
    }

    /// A new feed session voids every locate code.
    pub fn clear_locates(&self) {
        self.book.clear_locates();
    }

    /// The book, for readers.
    pub fn book(&self) -> &Arc<Book> {
        &self.book
    }
}

impl Book {
    /// A book with room for `capacity` symbols, and its one writer.
    pub fn with_writer(capacity: usize) -> (Arc<Book>, BookWriter) {
        let book = Arc::new(Book::new(capacity));
        (book.clone(), BookWriter { book })
    }

    /// A book with room for `capacity` symbols that nobody can write (a
    /// reader's view in tests; [`Book::with_writer`] for a real one).
    pub fn new(capacity: usize) -> Self {
        Book {
            slots: (0..capacity).map(|_| Slot::default()).collect(),
            table: ArcSwap::from_pointee(SymbolTable::default()),
        }
    }

    /// Most symbols the book can hold.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Number of symbols known.
    pub fn len(&self) -> usize {
        self.table.load().names.len()
    }

    /// True before the first directory message.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Looks a symbol up by name.
    pub fn id(&self, symbol: &Symbol) -> Option<SymbolId> {
        self.table.load().by_name.get(symbol).copied()
    }

    /// Every known symbol, in id order.
    pub fn symbols(&self) -> Vec<Symbol> {
        self.table.load().names.clone()
    }

    /// Name of a symbol id.
    pub fn name(&self, id: SymbolId) -> Option<Symbol> {
        self.table.load().names.get(id as usize).copied()
    }

    /// Registers a symbol (idempotent) and returns its id.
    ///
    /// # Errors
    /// [`BookFull`] when the capacity is reached.
    fn insert_symbol(&self, symbol: Symbol) -> Result<SymbolId, BookFull> {
        if let Some(id) = self.id(&symbol) {
            return Ok(id);
        }
        let mut t = SymbolTable::clone(&self.table.load());
        let id = t.names.len();
        if id >= self.slots.len() {
            return Err(BookFull(self.slots.len()));
        }
        t.names.push(symbol);
        t.by_name.insert(symbol, id as SymbolId);
        // Publish the empty quote before the name so a reader that finds the
        // id always finds a quote.
        self.slots[id].quote.store(Some(Arc::new(Quote::empty(symbol))));
        self.table.store(Arc::new(t));
        Ok(id as SymbolId)
    }

    /// Makes `q` the current state of `id`. `counted` says
    /// whether it is an update (vs. a stale-flag change).
    fn publish(&self, id: SymbolId, q: Arc<Quote>, counted: bool) {
        let slot = &self.slots[id as usize];
        slot.quote.store(Some(q));
        if counted {
            slot.updates.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records the locate code `id` has in the current feed
    /// session (`None`: it has none).
    fn set_locate(&self, id: SymbolId, locate: Option<u16>) {
        if let Some(slot) = self.slots.get(id as usize) {
            slot.locate.store(locate.map_or(0, |l| u32::from(l) + 1), Ordering::Relaxed);
        }
    }

    /// A new feed session voids every locate code.
    fn clear_locates(&self) {
        for slot in &self.slots[..self.len()] {
            slot.locate.store(0, Ordering::Relaxed);
        }
    }

    /// The locate code of `id` in the current feed session, if its
    /// directory entry has been seen.
    pub fn locate(&self, id: SymbolId) -> Option<u16> {
        let v = self.slots.get(id as usize)?.locate.load(Ordering::Relaxed);
        v.checked_sub(1).map(|l| l as u16)
    }

    /// Lock-free read of a symbol's current state.
    pub fn get(&self, id: SymbolId) -> Option<Arc<Quote>> {
        self.slots.get(id as usize)?.quote.load_full()
    }

    /// Updates applied to `id` since start.
    pub fn update_count(&self, id: SymbolId) -> u64 {
        self.slots.get(id as usize).map_or(0, |s| s.updates.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_get_dense_ids_and_capacity_is_enforced() {
        let b = Book::new(2);
        let a = b.insert_symbol(Symbol::new("A").unwrap()).unwrap();
        let a2 = b.insert_symbol(Symbol::new("A").unwrap()).unwrap();
        let c = b.insert_symbol(Symbol::new("C").unwrap()).unwrap();
        assert_eq!((a, a2, c), (0, 0, 1));
        assert!(b.insert_symbol(Symbol::new("D").unwrap()).is_err());
        assert_eq!(b.get(c).unwrap().seq, 0);
        assert_eq!(b.id(&Symbol::new("C").unwrap()), Some(1));
    }

    #[test]
    fn readers_see_published_values() {
        let b = Book::new(4);
        let id = b.insert_symbol(Symbol::new("X").unwrap()).unwrap();
        let mut q = Quote::empty(Symbol::new("X").unwrap());
        q.seq = 7;
        b.publish(id, Arc::new(q), true);
        assert_eq!(b.get(id).unwrap().seq, 7);
        assert_eq!(b.update_count(id), 1);
    }

    #[test]
    fn locates_follow_the_current_session() {
        let b = Book::new(4);
        let x = b.insert_symbol(Symbol::new("X").unwrap()).unwrap();
        let y = b.insert_symbol(Symbol::new("Y").unwrap()).unwrap();
        assert_eq!(b.locate(x), None, "no directory entry yet");
        b.set_locate(x, Some(0));
        b.set_locate(y, Some(u16::MAX));
        assert_eq!((b.locate(x), b.locate(y)), (Some(0), Some(u16::MAX)));
        b.clear_locates();
        assert_eq!((b.locate(x), b.locate(y)), (None, None));
        b.set_locate(y, Some(7));
        assert_eq!(b.locate(y), Some(7));
        assert_eq!(b.locate(99), None);
    }
}
