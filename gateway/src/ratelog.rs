//! At most one log line per interval for a repeated event.
//!
//! Hand-written: a dozen lines, no crate in the tree does it, and the
//! counts live in the metrics anyway; this only keeps a repeated fault
//! (accept failing on EMFILE, a lossy feed) from flooding the log.

use std::time::{Duration, Instant};

/// Tracks one kind of repeated event.
#[derive(Debug)]
pub struct RateLog {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLog {
    /// At most one line per `every`.
    pub fn new(every: Duration) -> Self {
        RateLog { every, last: None, suppressed: 0 }
    }

    /// Records an event at `now`. `Some(n)` means: log it now, saying that
    /// `n` similar events since the last line were not logged.
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.duration_since(t) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_in_between() {
        let t0 = Instant::now();
        let mut r = RateLog::new(Duration::from_secs(1));
        assert_eq!(r.hit(t0), Some(0));
        for i in 1..=47 {
            assert_eq!(r.hit(t0 + Duration::from_millis(i * 20)), None);
        }
        assert_eq!(r.hit(t0 + Duration::from_secs(1)), Some(47));
        assert_eq!(r.hit(t0 + Duration::from_millis(1500)), None);
    }
}
