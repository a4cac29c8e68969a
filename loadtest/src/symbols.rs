//! Which symbols each client asks for.
//!
//! feed-sim ranks its symbols by activity: tick `k` goes to Zipf rank `r`
//! and rank `r` is locate `r`, the `r`-th ticker of its (seed-independent)
//! ticker list. So the feed's hot set is simply the first tickers of that
//! list, which [`universe`] reproduces with feed-sim's own model.

use crate::config::{Config, Pick};
use rand::rngs::SmallRng;
use rand::SeedableRng;

/// The feed's tickers in activity order (most active first), for a feed of
/// `symbols` symbols.
pub fn universe(symbols: usize) -> Vec<String> {
    // The ticker list does not depend on the seed, zipf or trade ratio.
    feed_sim::Market::new(1, symbols, 0.0, 0.0).tickers()
}

/// Chooses symbol sets: a fixed list, the hot set, or random draws.
#[derive(Debug)]
pub struct Picker {
    universe: Vec<String>,
    fixed: Option<Vec<String>>,
    pick: Pick,
    rng: SmallRng,
}

impl Picker {
    /// A picker for `cfg`'s `--symbols`, `--pick` and feed universe.
    pub fn new(cfg: &Config) -> Picker {
        let fixed = (!cfg.load.symbols.is_empty()).then(|| cfg.load.symbols.clone());
        Picker::with(universe(cfg.feed.feed_symbols), fixed, cfg.load.pick, cfg.load.seed)
    }

    /// A picker over an explicit universe (tests).
    pub fn with(universe: Vec<String>, fixed: Option<Vec<String>>, pick: Pick, seed: u64) -> Picker {
        Picker { universe, fixed, pick, rng: SmallRng::seed_from_u64(seed) }
    }

    /// `n` distinct symbols (the fixed list as is, whatever `n`).
    pub fn pick(&mut self, n: usize) -> Vec<String> {
        if let Some(f) = &self.fixed {
            return f.clone();
        }
        let n = n.min(self.universe.len());
        match self.pick {
            Pick::Hot => self.universe[..n].to_vec(),
            Pick::Random => rand::seq::index::sample(&mut self.rng, self.universe.len(), n)
                .into_iter()
                .map(|i| self.universe[i].clone())
                .collect(),
        }
    }

    /// Symbols that show the gateway knows the whole directory: the first
    /// and last of the universe (the directory is sent in locate order), or
    /// the fixed list.
    pub fn probe(&self) -> Vec<String> {
        if let Some(f) = &self.fixed {
            return f.iter().take(1024).cloned().collect();
        }
        let mut v = vec![self.universe[0].clone()];
        if self.universe.len() > 1 {
            v.push(self.universe[self.universe.len() - 1].clone());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashSet};

    #[test]
    fn hot_set_is_the_feeds_most_active_symbols() {
        // Count which tickers feed-sim's market actually ticks most.
        let mut m = feed_sim::Market::new(42, 200, 1.1, 0.1);
        let mut counts: BTreeMap<u16, u64> = BTreeMap::new();
        for i in 0..50_000u64 {
            if let quotecast_proto::feed::Message::Quote { locate, .. }
            | quotecast_proto::feed::Message::Trade { locate, .. } = m.next_tick(i)
            {
                *counts.entry(locate).or_default() += 1;
            }
        }
        let mut ranked: Vec<(u16, u64)> = counts.into_iter().collect();
        ranked.sort_by_key(|r| std::cmp::Reverse(r.1));
        let top3: HashSet<String> =
            ranked[..3].iter().map(|(l, _)| m.symbol(*l).unwrap().as_str().to_string()).collect();
        let mut p = Picker::with(universe(200), None, Pick::Hot, 1);
        let hot: HashSet<String> = p.pick(3).into_iter().collect();
        assert_eq!(hot, top3);
        assert_eq!(universe(3), ["AAPL", "MSFT", "NVDA"]);
    }

    #[test]
    fn random_draws_are_distinct_seeded_and_vary() {
        let mut a = Picker::with(universe(300), None, Pick::Random, 9);
        let mut b = Picker::with(universe(300), None, Pick::Random, 9);
        let x = a.pick(10);
        assert_eq!(x, b.pick(10));
        assert_eq!(x.iter().collect::<HashSet<_>>().len(), 10);
        assert_ne!(x, a.pick(10));
        assert_eq!(a.pick(1000).len(), 300, "capped at the universe");
    }

    #[test]
    fn fixed_list_wins_and_probe_spans_the_directory() {
        let mut p = Picker::with(universe(50), Some(vec!["IBM".into()]), Pick::Hot, 1);
        assert_eq!(p.pick(5), ["IBM"]);
        assert_eq!(p.probe(), ["IBM"]);
        let u = universe(50);
        let p = Picker::with(u.clone(), None, Pick::Random, 1);
        assert_eq!(p.probe(), [u[0].clone(), u[49].clone()]);
    }
}
