//! The seeded market model: symbols, prices and the stream of ticks. Pure:
//! no clock, no socket, so tests can generate the exact stream a sender
//! would send.
//!
//! Prices are fixed-point with [`PRICE_SCALE`] on a whole-cent grid. The
//! walk is drawn in `f64` (log-price Ornstein-Uhlenbeck around each
//! symbol's start price, so prices wander but never run off to zero), and
//! only rounded cents ever leave this module.

use std::collections::{BTreeMap, HashSet, VecDeque};

use quotecast_proto::feed::{Message, ReasonCode, Symbol, SymbolSnapshot, TradingState};
use quotecast_proto::PRICE_SCALE;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal, Zipf};

/// One cent in fixed point: every emitted price is a multiple of this.
pub const CENT: i64 = PRICE_SCALE / 100;

/// Pull of the log-price back to its anchor per tick of that symbol. With
/// per-tick volatilities of 1-4 bp the stationary spread is a few percent.
const MEAN_REVERSION: f64 = 5e-5;

/// Well-known US tickers, most heavily traded first, so the Zipf head lands
/// on names people recognise.
const REAL_TICKERS: &[&str] = &[
    "AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "BRK.B", "JPM", "V", "SPY", "QQQ", "AMD",
    "AVGO", "UNH", "XOM", "JNJ", "WMT", "MA", "PG", "LLY", "HD", "CVX", "MRK", "ABBV", "KO", "PEP", "COST",
    "ADBE", "CRM", "BAC", "MCD", "TMO", "CSCO", "ACN", "ABT", "NFLX", "WFC", "DIS", "LIN", "DHR", "TXN",
    "VZ", "CMCSA", "PM", "NEE", "INTC", "ORCL", "NKE", "UPS", "RTX", "HON", "QCOM", "IBM", "AMGN", "LOW",
    "SPGI", "UNP", "CAT", "INTU", "GS", "BA", "SBUX", "MS", "AMAT", "GE", "PLD", "BLK", "DE", "ISRG", "NOW",
    "MDT", "ELV", "GILD", "ADP", "BKNG", "LMT", "SYK", "TJX", "MDLZ", "CVS", "AXP", "C", "SCHW", "MMC",
    "ADI", "VRTX", "REGN", "CB", "PYPL", "T", "MO", "ZTS", "CI", "SO", "DUK", "PGR", "TGT", "FDX", "GM", "F",
    "UBER", "ABNB", "SNOW", "PLTR", "SHOP", "COIN", "MU", "LRCX", "KLAC", "PANW", "CRWD", "IWM", "DIA",
    "GOOG",
];

/// Fixed seed of the synthetic ticker generator: names depend only on the
/// symbol count, never on `--seed`, so "symbol 150" is the same ticker in
/// every run and a subscriber's list keeps working across seeds.
const TICKER_SEED: u64 = 0x7143_4b45_5253;

/// Final state of one symbol as the simulator generated it: the ground
/// truth a consumer's book is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SymbolTruth {
    /// Locate code bound to the symbol by the directory.
    pub locate: u16,
    /// Last quoted bid (fixed-point); 0 until the first quote.
    pub bid_px: i64,
    /// Last quoted bid size; 0 until the first quote.
    pub bid_sz: u32,
    /// Last quoted ask (fixed-point); 0 until the first quote.
    pub ask_px: i64,
    /// Last quoted ask size; 0 until the first quote.
    pub ask_sz: u32,
    /// Last trade price (fixed-point); 0 until the first trade.
    pub last_px: i64,
    /// Last trade size; 0 until the first trade.
    pub last_sz: u32,
    /// The symbol's last per-symbol sequence (`symbol_seq` of its last
    /// quote or trade; 0 = none yet). Its next update carries this + 1.
    pub symbol_seq: u32,
    /// Quotes and trades generated for the symbol, including those in
    /// packets the sender dropped on purpose.
    pub updates: u64,
    /// Quotes and trades that went out in a packet that was actually sent.
    pub updates_delivered: u64,
    /// Trading state after the symbol's last trading action (`Trading`
    /// when it never had one).
    pub trading_state: TradingState,
    /// Reason code of that last trading action (spaces when none).
    pub trading_reason: ReasonCode,
}

/// Per-symbol model state. `quote` fields are what was last *published*,
/// so a trade never references a quote the feed has not shown.
#[derive(Debug, Clone)]
struct SymState {
    symbol: Symbol,
    /// `ts` of the last quote and of the last trade (0 = none), for
    /// snapshots; kept out of [`SymbolTruth`] because they are wall clock.
    quote_ts: u64,
    trade_ts: u64,
    /// Anchor of the walk, in cents.
    anchor_cents: f64,
    /// Log deviation of the mid from the anchor.
    x: f64,
    /// Per-tick log-price volatility.
    sigma: f64,
    /// Narrowest spread in cents; wider for expensive names, as on a real
    /// tape.
    min_spread: i64,
    truth: SymbolTruth,
}

/// The seeded market: call [`directory`](Market::directory) once, then
/// [`next_tick`](Market::next_tick) for every tick. The same arguments
/// always produce the same stream.
#[derive(Debug, Clone)]
pub struct Market {
    rng: SmallRng,
    activity: Zipf<f64>,
    trade_ratio: f64,
    syms: Vec<SymState>,
    /// Ticks generated so far (the clock halts are scheduled on).
    ticks: u64,
    /// Seeded halts, when enabled with [`with_halts`](Market::with_halts).
    halts: Option<Halts>,
}

/// Seeded trading halts, scheduled in ticks so the whole message stream is
/// a function of the seed (a wall-clock schedule would depend on pacing).
#[derive(Debug, Clone)]
struct Halts {
    /// A halt starts after every `every`-th tick.
    every: u64,
    /// Ticks (of the whole market) a halt lasts.
    len: u64,
    /// Its own generator, so enabling halts leaves which symbol each tick
    /// goes to unchanged except where a halted symbol is redrawn.
    rng: SmallRng,
    /// Halted symbols: (index, tick count at which it resumes).
    active: Vec<(usize, u64)>,
    /// Trading actions generated and not yet taken by the sender.
    pending: VecDeque<Message>,
}

/// Mixed into `--seed` for the halt generator.
const HALT_SEED_SALT: u64 = 0x4841_4c54;

impl Market {
    /// A market of `symbols` tickers whose activity follows Zipf(`zipf`)
    /// and where a tick is a trade with probability `trade_ratio`.
    ///
    /// # Panics
    /// If `symbols` is not `1..=65535`, `zipf` is negative or NaN, or
    /// `trade_ratio` is outside `0..=1`; [`SimConfig::validate`](crate::SimConfig::validate)
    /// rejects those before a market is built.
    pub fn new(seed: u64, symbols: usize, zipf: f64, trade_ratio: f64) -> Market {
        assert!((1..=crate::config::MAX_SYMBOLS).contains(&symbols), "symbols must be 1..=65535");
        assert!((0.0..=1.0).contains(&trade_ratio), "trade_ratio must be 0..=1");
        let activity = Zipf::new(symbols as f64, zipf).expect("zipf exponent must be >= 0");
        let mut rng = SmallRng::seed_from_u64(seed);
        let syms = tickers(symbols)
            .into_iter()
            .enumerate()
            .map(|(i, symbol)| {
                // Log-uniform $5..$900: as many $5-$50 names as $90-$900 ones.
                let dollars = (5f64.ln() + rng.random::<f64>() * (900f64 / 5.0).ln()).exp();
                let anchor_cents = (dollars * 100.0).round();
                SymState {
                    symbol,
                    quote_ts: 0,
                    trade_ts: 0,
                    anchor_cents,
                    x: 0.0,
                    sigma: rng.random_range(1e-4..4e-4),
                    min_spread: 1 + (dollars / 250.0) as i64,
                    truth: SymbolTruth { locate: (i + 1) as u16, ..SymbolTruth::default() },
                }
            })
            .collect();
        Market { rng, activity, trade_ratio, syms, ticks: 0, halts: None }
    }

    /// Enables seeded halts: after every `every`-th tick one symbol that is
    /// trading is halted (`H`, reason `T1`) or paused (`P`, reason `LUDP`),
    /// and after `len` more ticks it resumes (`T`). No quote or trade of a
    /// halted symbol is generated. `every == 0` disables halts. The
    /// trading actions are queued: take them with
    /// [`take_status`](Market::take_status) after each `next_tick`, and send
    /// them before that tick.
    pub fn with_halts(mut self, seed: u64, every: u64, len: u64) -> Market {
        self.halts = (every > 0).then(|| Halts {
            every,
            len: len.max(1),
            rng: SmallRng::seed_from_u64(seed ^ HALT_SEED_SALT),
            active: Vec::new(),
            pending: VecDeque::new(),
        });
        self
    }

    /// The next trading action generated by the last
    /// [`next_tick`](Market::next_tick), in order; it goes on the wire before
    /// that tick.
    pub fn take_status(&mut self) -> Option<Message> {
        self.halts.as_mut()?.pending.pop_front()
    }

    /// Runs the halt schedule for the tick about to be generated.
    fn schedule_halts(&mut self, ts: u64) {
        let Some(h) = self.halts.as_mut() else { return };
        let now = self.ticks;
        let syms = &mut self.syms;
        h.active.retain(|&(i, resume)| {
            if resume > now {
                return true;
            }
            let t = &mut syms[i].truth;
            (t.trading_state, t.trading_reason) = (TradingState::Trading, ReasonCode::NONE);
            h.pending.push_back(Message::TradingAction {
                locate: t.locate,
                ts,
                state: TradingState::Trading,
                reason: ReasonCode::NONE,
            });
            false
        });
        // Keep at least one symbol trading, so a tick always has a home.
        if now % h.every == 0 && h.active.len() + 1 < syms.len() {
            // Skewed to the active head like real news halts are not: any
            // symbol, uniformly; retry a few times if it is already halted.
            for _ in 0..8 {
                let i = h.rng.random_range(0..syms.len());
                if h.active.iter().any(|&(a, _)| a == i) {
                    continue;
                }
                let (state, reason) = if h.rng.random::<bool>() {
                    (TradingState::Halted, ReasonCode::from_text("T1"))
                } else {
                    (TradingState::Paused, ReasonCode::from_text("LUDP"))
                };
                let t = &mut syms[i].truth;
                (t.trading_state, t.trading_reason) = (state, reason);
                h.pending.push_back(Message::TradingAction { locate: t.locate, ts, state, reason });
                h.active.push((i, now + h.len));
                break;
            }
        }
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.syms.len()
    }

    /// Always false: a market has at least one symbol.
    pub fn is_empty(&self) -> bool {
        self.syms.is_empty()
    }

    /// The tickers, in locate order (what the directory announces). They
    /// depend only on the number of symbols, not on the seed.
    pub fn tickers(&self) -> Vec<String> {
        self.syms.iter().map(|s| s.symbol.as_str().to_string()).collect()
    }

    /// One `SymbolDirectory` per symbol, locates 1..=N in order.
    pub fn directory(&self) -> Vec<Message> {
        self.syms
            .iter()
            .map(|s| Message::SymbolDirectory { locate: s.truth.locate, symbol: s.symbol })
            .collect()
    }

    /// The full state of the symbol at `index` (locate `index + 1`), as a
    /// snapshot-channel message body reflecting every message sequenced up
    /// to `feed_seq` (the caller's claim: the market has generated exactly
    /// the messages sequenced so far).
    ///
    /// # Panics
    /// If `index >= len()`.
    pub fn snapshot(&self, index: usize, feed_seq: u64) -> SymbolSnapshot {
        let s = &self.syms[index];
        let t = &s.truth;
        SymbolSnapshot {
            locate: t.locate,
            symbol: s.symbol,
            feed_seq,
            symbol_seq: t.symbol_seq,
            state: t.trading_state,
            reason: t.trading_reason,
            quote_ts: s.quote_ts,
            bid_px: t.bid_px,
            bid_sz: t.bid_sz,
            ask_px: t.ask_px,
            ask_sz: t.ask_sz,
            trade_ts: s.trade_ts,
            last_px: t.last_px,
            last_sz: t.last_sz,
        }
    }

    /// The ticker bound to `locate`, if any.
    pub fn symbol(&self, locate: u16) -> Option<Symbol> {
        self.syms.get(usize::from(locate).checked_sub(1)?).map(|s| s.symbol)
    }

    /// Generates the next quote or trade, stamped with `ts` (ns since the
    /// Unix epoch; the model never reads a clock).
    ///
    /// With halts enabled, first call [`take_status`](Market::take_status)
    /// until it returns `None` and send those before the returned tick.
    pub fn next_tick(&mut self, ts: u64) -> Message {
        self.ticks += 1;
        self.schedule_halts(ts);
        let n = self.syms.len();
        // Zipf yields 1..=n as f64; clamp guards the float edge. A halted
        // symbol is redrawn (at least one symbol is always trading).
        let mut rank = (self.activity.sample(&mut self.rng) as usize).clamp(1, n);
        while !self.syms[rank - 1].truth.trading_state.quotes_allowed() {
            rank = (self.activity.sample(&mut self.rng) as usize).clamp(1, n);
        }
        let s = &mut self.syms[rank - 1];
        let rng = &mut self.rng;
        s.truth.updates += 1;
        // u32 holds ~4e9 updates of one symbol: far beyond any session the
        // simulator runs; saturate rather than wrap if it ever got there.
        s.truth.symbol_seq = s.truth.symbol_seq.saturating_add(1);
        // The first tick of a symbol is always a quote, so every trade has
        // a published quote around it.
        let quoted = s.truth.bid_px > 0;
        if quoted && rng.random::<f64>() < self.trade_ratio {
            trade(s, rng, ts)
        } else {
            quote(s, rng, ts)
        }
    }

    /// Final state of every symbol, keyed by ticker. `updates_delivered`
    /// equals `updates` here: only the sender knows what it dropped.
    pub fn truth(&self) -> BTreeMap<String, SymbolTruth> {
        self.syms
            .iter()
            .map(|s| {
                (s.symbol.as_str().to_owned(), SymbolTruth { updates_delivered: s.truth.updates, ..s.truth })
            })
            .collect()
    }
}

fn quote(s: &mut SymState, rng: &mut SmallRng, ts: u64) -> Message {
    let z: f64 = StandardNormal.sample(rng);
    s.x = s.x * (1.0 - MEAN_REVERSION) + s.sigma * z;
    let mid_cents = ((s.anchor_cents * s.x.exp()).round() as i64).max(1);
    // Mostly the narrowest spread, sometimes a few cents wider.
    let mut spread = s.min_spread;
    while spread < s.min_spread + 4 && rng.random::<f64>() < 0.3 {
        spread += 1;
    }
    let bid_cents = (mid_cents - spread / 2).max(1);
    s.quote_ts = ts;
    let t = &mut s.truth;
    t.bid_px = bid_cents * CENT;
    t.ask_px = (bid_cents + spread) * CENT;
    t.bid_sz = quote_size(rng);
    t.ask_sz = quote_size(rng);
    Message::Quote {
        locate: t.locate,
        symbol_seq: t.symbol_seq,
        ts,
        bid_px: t.bid_px,
        bid_sz: t.bid_sz,
        ask_px: t.ask_px,
        ask_sz: t.ask_sz,
    }
}

fn trade(s: &mut SymState, rng: &mut SmallRng, ts: u64) -> Message {
    s.trade_ts = ts;
    let t = &mut s.truth;
    let ticks_inside = (t.ask_px - t.bid_px) / CENT - 1;
    let u: f64 = rng.random();
    t.last_px = if ticks_inside > 0 && u < 0.2 {
        t.bid_px + rng.random_range(1..=ticks_inside) * CENT
    } else if u < 0.6 {
        t.bid_px
    } else {
        t.ask_px
    };
    t.last_sz =
        if rng.random::<f64>() < 0.85 { 100 * rng.random_range(1..=10) } else { rng.random_range(1..100) };
    Message::Trade { locate: t.locate, symbol_seq: t.symbol_seq, ts, px: t.last_px, sz: t.last_sz }
}

/// Displayed size: round lots, usually a few, occasionally a large one,
/// rarely an odd lot.
fn quote_size(rng: &mut SmallRng) -> u32 {
    let u: f64 = rng.random();
    if u < 0.80 {
        100 * rng.random_range(1..=10)
    } else if u < 0.95 {
        100 * rng.random_range(10..=50)
    } else {
        rng.random_range(1..100)
    }
}

/// The first `n` tickers: the real list, then generated pronounceable 3-4
/// letter names that collide with nothing before them.
fn tickers(n: usize) -> Vec<Symbol> {
    const CONS: &[u8] = b"BCDFGHJKLMNPRSTVWXZ";
    const VOWELS: &[u8] = b"AEIOU";
    let mut out: Vec<Symbol> =
        REAL_TICKERS.iter().take(n).map(|t| Symbol::new(t).expect("real tickers are valid")).collect();
    let mut seen: HashSet<Symbol> = out.iter().copied().collect();
    let mut rng = SmallRng::seed_from_u64(TICKER_SEED);
    let mut misses = 0u32;
    while out.len() < n {
        let mut name = [0u8; 4];
        let len = if misses > 64 {
            // The pronounceable patterns hold ~99k names; near that many,
            // fall back to any four letters (457k) rather than spin.
            for c in &mut name {
                *c = b'A' + rng.random_range(0..26u8);
            }
            4
        } else {
            let pattern: &[u8] = match rng.random_range(0..10) {
                0 => b"CVC",
                1 => b"VCC",
                2 | 3 => b"CVCC",
                4 | 5 => b"CCVC",
                6 => b"CVCV",
                7 => b"VCCV",
                _ => b"CVVC",
            };
            for (c, kind) in name.iter_mut().zip(pattern) {
                let set = if *kind == b'C' { CONS } else { VOWELS };
                *c = set[rng.random_range(0..set.len())];
            }
            pattern.len()
        };
        let text = std::str::from_utf8(&name[..len]).expect("ASCII letters");
        let sym = Symbol::new(text).expect("generated tickers are valid");
        if seen.insert(sym) {
            out.push(sym);
            misses = 0;
        } else {
            misses += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticks(m: &mut Market, n: usize) -> Vec<Message> {
        (0..n).map(|i| m.next_tick(i as u64)).collect()
    }

    #[test]
    fn same_seed_same_stream_other_seed_other_stream() {
        let a = ticks(&mut Market::new(7, 300, 1.1, 0.1), 5_000);
        let b = ticks(&mut Market::new(7, 300, 1.1, 0.1), 5_000);
        let c = ticks(&mut Market::new(8, 300, 1.1, 0.1), 5_000);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(Market::new(7, 300, 1.1, 0.1).directory(), Market::new(8, 300, 1.1, 0.1).directory());
    }

    #[test]
    fn prices_positive_on_cent_grid_and_uncrossed() {
        // A low exponent spreads ticks so every symbol walks a while; many
        // symbols start near $5 where positivity is at stake.
        for seed in 0..4 {
            let mut m = Market::new(seed, 500, 0.5, 0.2);
            let mut book: BTreeMap<u16, (i64, i64)> = BTreeMap::new();
            for (i, msg) in ticks(&mut m, 100_000).into_iter().enumerate() {
                match msg {
                    Message::Quote { locate, ts, bid_px, bid_sz, ask_px, ask_sz, .. } => {
                        assert_eq!(ts, i as u64);
                        assert!(bid_px > 0 && bid_px < ask_px, "{msg:?}");
                        assert_eq!((bid_px % CENT, ask_px % CENT), (0, 0), "{msg:?}");
                        assert!(ask_px - bid_px <= 10 * CENT, "{msg:?}");
                        assert!(bid_sz > 0 && ask_sz > 0);
                        book.insert(locate, (bid_px, ask_px));
                    }
                    Message::Trade { locate, px, sz, .. } => {
                        let (bid, ask) = book[&locate]; // a quote always came first
                        assert!(bid <= px && px <= ask, "{msg:?} outside {bid}..{ask}");
                        assert_eq!(px % CENT, 0);
                        assert!(sz > 0);
                    }
                    _ => panic!("ticks are only quotes and trades"),
                }
            }
        }
    }

    #[test]
    fn start_prices_plausible() {
        let mut m = Market::new(3, 1000, 0.0, 0.0);
        let mids: Vec<i64> = ticks(&mut m, 20_000)
            .into_iter()
            .map(|q| match q {
                Message::Quote { bid_px, ask_px, .. } => (bid_px + ask_px) / 2,
                _ => unreachable!("trade ratio 0"),
            })
            .collect();
        let (lo, hi) = (mids.iter().min().unwrap(), mids.iter().max().unwrap());
        assert!(*lo >= 4 * PRICE_SCALE && *hi <= 1000 * PRICE_SCALE, "{lo}..{hi}");
        // Log-uniform: both cheap and expensive names occur.
        assert!(mids.iter().any(|&p| p < 20 * PRICE_SCALE) && mids.iter().any(|&p| p > 300 * PRICE_SCALE));
    }

    #[test]
    fn zipf_skews_activity_to_the_head() {
        let mut m = Market::new(1, 300, 1.1, 0.1);
        let mut counts = vec![0u64; 301];
        for msg in ticks(&mut m, 100_000) {
            let l = match msg {
                Message::Quote { locate, .. } | Message::Trade { locate, .. } => locate,
                _ => unreachable!(),
            };
            counts[usize::from(l)] += 1;
        }
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let top10: u64 = counts[..10].iter().sum();
        // Uniform would give 10/300 = 3.3%; Zipf(1.1) over 300 gives ~50%.
        assert!(top10 > 40_000, "top 10 symbols carried only {top10} of 100000 ticks");
        // And uniform really is uniform, so the test can tell the difference.
        let mut u = Market::new(1, 300, 0.0, 0.1);
        let mut counts = vec![0u64; 301];
        for msg in ticks(&mut u, 100_000) {
            if let Message::Quote { locate, .. } | Message::Trade { locate, .. } = msg {
                counts[usize::from(locate)] += 1;
            }
        }
        counts.sort_unstable_by(|a, b| b.cmp(a));
        assert!(counts[..10].iter().sum::<u64>() < 6_000);
    }

    #[test]
    fn trade_ratio_is_respected() {
        let mut m = Market::new(5, 50, 1.1, 0.25);
        let trades = ticks(&mut m, 40_000).iter().filter(|m| matches!(m, Message::Trade { .. })).count();
        assert!((9_000..11_000).contains(&trades), "{trades} trades of 40000 at ratio 0.25");
    }

    #[test]
    fn truth_tracks_the_last_message_per_symbol() {
        let mut m = Market::new(9, 40, 1.1, 0.3);
        let mut want: BTreeMap<u16, SymbolTruth> = BTreeMap::new();
        for msg in ticks(&mut m, 10_000) {
            match msg {
                Message::Quote { locate, symbol_seq, bid_px, bid_sz, ask_px, ask_sz, .. } => {
                    let t = want.entry(locate).or_default();
                    (t.bid_px, t.bid_sz, t.ask_px, t.ask_sz) = (bid_px, bid_sz, ask_px, ask_sz);
                    t.updates += 1;
                    assert_eq!(symbol_seq, t.symbol_seq + 1, "per-symbol sequence is gapless");
                    t.symbol_seq = symbol_seq;
                }
                Message::Trade { locate, symbol_seq, px, sz, .. } => {
                    let t = want.entry(locate).or_default();
                    (t.last_px, t.last_sz) = (px, sz);
                    t.updates += 1;
                    assert_eq!(symbol_seq, t.symbol_seq + 1, "per-symbol sequence is gapless");
                    t.symbol_seq = symbol_seq;
                }
                _ => unreachable!(),
            }
        }
        let truth = m.truth();
        assert_eq!(truth.len(), 40);
        for (name, t) in &truth {
            assert_eq!(m.symbol(t.locate).unwrap().as_str(), name);
            let w = want.get(&t.locate).copied().unwrap_or_default();
            assert_eq!((t.bid_px, t.bid_sz, t.ask_px, t.ask_sz), (w.bid_px, w.bid_sz, w.ask_px, w.ask_sz));
            assert_eq!((t.last_px, t.last_sz, t.updates), (w.last_px, w.last_sz, w.updates));
            assert_eq!((t.symbol_seq, u64::from(t.symbol_seq)), (w.symbol_seq, t.updates));
            assert_eq!(t.updates_delivered, t.updates);
        }
    }

    #[test]
    fn halts_are_seeded_silence_their_symbol_and_resume() {
        let run = |seed| {
            let mut m = Market::new(seed, 20, 0.5, 0.2).with_halts(seed, 500, 300);
            let mut out = Vec::new();
            for i in 0..20_000u64 {
                let tick = m.next_tick(i);
                while let Some(h) = m.take_status() {
                    out.push(h);
                }
                out.push(tick);
            }
            (out, m.truth())
        };
        let (a, truth) = run(11);
        assert_eq!(a, run(11).0, "same seed, same stream");
        assert_ne!(a, run(12).0);
        let mut state: BTreeMap<u16, TradingState> = BTreeMap::new();
        let (mut halts, mut resumes) = (0, 0);
        for m in &a {
            match *m {
                Message::TradingAction { locate, state: s, reason, .. } => {
                    let was = state.insert(locate, s).unwrap_or_default();
                    if s == TradingState::Trading {
                        assert_ne!(was, TradingState::Trading, "a resume follows a halt");
                        assert_eq!(reason, ReasonCode::NONE);
                        resumes += 1;
                    } else {
                        assert_eq!(was, TradingState::Trading, "no halt of a halted symbol");
                        assert_eq!(reason.as_str(), if s == TradingState::Halted { "T1" } else { "LUDP" });
                        halts += 1;
                    }
                }
                Message::Quote { locate, .. } | Message::Trade { locate, .. } => {
                    assert_eq!(state.get(&locate).copied().unwrap_or_default(), TradingState::Trading);
                }
                _ => unreachable!(),
            }
        }
        // One halt every 500 ticks, each lasting 300: 40 halts, 39-40 resumed.
        assert_eq!(halts, 40);
        assert!((39..=40).contains(&resumes), "{resumes}");
        for t in truth.values() {
            assert_eq!(t.trading_state, state.get(&t.locate).copied().unwrap_or_default());
        }
        // Without halts the stream never has a trading action.
        let mut m = Market::new(11, 20, 0.5, 0.2);
        m.next_tick(0);
        assert!(m.take_status().is_none());
    }

    #[test]
    fn tickers_real_first_then_unique_generated() {
        let all = tickers(crate::config::MAX_SYMBOLS);
        assert_eq!(all.len(), 65_535);
        assert_eq!(all[0].as_str(), "AAPL");
        assert_eq!(all[7].as_str(), "BRK.B");
        let unique: HashSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len(), "duplicate tickers");
        for s in &all[REAL_TICKERS.len()..] {
            let t = s.as_str();
            assert!((3..=4).contains(&t.len()) && t.bytes().all(|c| c.is_ascii_uppercase()), "{t}");
        }
        // A prefix of a longer list is the shorter list.
        assert_eq!(tickers(500)[..], all[..500]);
        let d = Market::new(1, 3, 1.0, 0.0).directory();
        assert_eq!(d[2], Message::SymbolDirectory { locate: 3, symbol: Symbol::new("NVDA").unwrap() });
    }
}
