//! Rate-limited warnings: one log line per interval for a repeating fault,
//! with the number of lines it stands for.
//!
//! A fault that repeats per packet or per accept (a lossy feed, a full file
//! table) must not flood the log: the metrics carry the exact counts, the
//! log only has to say that it is happening. The caller keeps one
//! [`RateLog`] per kind of event, next to the loop that sees it:
//!
//! ```
//! # use gateway::ratelog::RateLog;
//! # use std::time::{Duration, Instant};
//! let mut gaps = RateLog::new(Duration::from_secs(1));
//! if let Some(suppressed) = gaps.hit(Instant::now()) {
//!     tracing::warn!(suppressed, "feed gap");
//! }
//! ```
//!
//! Hand-written on purpose: the workspace has no rate-limiting crate, and
//! the ones that exist (`governor`, tracing filters) are either built for
//! shared, thread-safe quotas or are global filters keyed by call site.
//! What is needed here is twenty lines of plain state owned by one loop:
//! no globals, no locks, no clock of its own (the caller passes `now`, so
//! tests need no sleeps), usable from a thread or a task, `Send` if moved.

use std::time::{Duration, Instant};

/// Lets one event through per `interval` and counts the ones it holds back.
#[derive(Debug, Clone)]
pub struct RateLog {
    interval: Duration,
    /// When the last line was let through (`None` before the first).
    last: Option<Instant>,
    /// Events held back since then.
    suppressed: u64,
}

impl RateLog {
    /// At most one line per `interval`.
    pub const fn new(interval: Duration) -> Self {
        RateLog { interval, last: None, suppressed: 0 }
    }

    /// Records one event at `now`. Returns `Some(n)` when the caller should
    /// write its line now, `n` being the events held back since the last
    /// line (say "n similar events suppressed" when `n > 0`); `None` when
    /// the event is only counted.
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// Events held back since the last line let through (e.g. to flush a
    /// final count at shutdown).
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_of_the_rest() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut r = RateLog::new(ms(1000));
        // (offset, expected) in order.
        let cases = [
            (0, Some(0)),    // first event: written
            (1, None),       // within the interval: counted
            (500, None),     // still within
            (999, None),     // still within
            (1000, Some(3)), // interval over: written, with the 3 held back
            (1001, None),
            (5000, Some(1)),
            (9000, Some(0)), // a lone event after quiet: nothing suppressed
        ];
        for (at, want) in cases {
            assert_eq!(r.hit(t0 + ms(at)), want, "at {at} ms");
        }
        assert_eq!(r.suppressed(), 0);
    }

    #[test]
    fn a_clock_that_goes_backwards_only_suppresses() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut r = RateLog::new(Duration::from_secs(1));
        assert_eq!(r.hit(t0), Some(0));
        assert_eq!(r.hit(t0 - Duration::from_secs(5)), None);
        assert_eq!(r.suppressed(), 1);
    }

    #[test]
    fn zero_interval_lets_everything_through() {
        let t0 = Instant::now();
        let mut r = RateLog::new(Duration::ZERO);
        assert_eq!((r.hit(t0), r.hit(t0)), (Some(0), Some(0)));
    }
}
