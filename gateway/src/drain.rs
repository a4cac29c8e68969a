//! Draining a node out of a fleet (SIGTERM): first stop looking ready, so
//! the balancer sends new clients elsewhere; then, once it has noticed,
//! close the clients with 1012 (Service Restart), spread out so they do
//! not all reconnect to the other nodes in the same instant.
//!
//! ```text
//! signal ──> not ready (/readyz 503 "draining", gRPC health NOT_SERVING)
//!   │ --drain-delay-ms (longer than the balancer's check interval x fall)
//!   v
//! closing ──> each connection closed at its own turn within --drain-spread-ms
//!   │         (WebSocket 1012 + reconnect hint; StreamQuotes UNAVAILABLE)
//!   v
//! shutdown ──> the usual shutdown (what is left closes; --shutdown-grace-ms)
//! ```
//!
//! This module only holds the state and the turns; `server::Running::drain`
//! drives the timeline, the sessions and streams wait for their turn.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Why a drained client is closed; the hint the WebSocket close reason and
/// the gRPC status carry (a close reason has at most 123 bytes).
pub const HINT: &str = "service restart: reconnect (another node) and resume with from_seq/from_epoch";

/// The drain state of one gateway, shared by every session.
#[derive(Debug)]
pub struct Drain {
    draining: AtomicBool,
    began: CancellationToken,
    closing: CancellationToken,
    closing_since: OnceLock<Instant>,
    spread: Duration,
}

impl Drain {
    /// Not draining; closes will be spread over `spread`.
    pub fn new(spread: Duration) -> Drain {
        Drain {
            draining: AtomicBool::new(false),
            began: CancellationToken::new(),
            closing: CancellationToken::new(),
            closing_since: OnceLock::new(),
            spread,
        }
    }

    /// Stops looking ready. Returns false if the drain had already begun.
    pub fn begin(&self) -> bool {
        let first = !self.draining.swap(true, Ordering::AcqRel);
        self.began.cancel();
        first
    }

    /// Resolves once the drain has begun, so health reporters can say so
    /// at once instead of at their next poll.
    pub async fn began(&self) {
        self.began.cancelled().await;
    }

    /// Whether the node is draining (it answers not ready from then on).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Starts closing clients, each at its turn from now.
    pub fn start_closing(&self) {
        self.begin();
        let _ = self.closing_since.set(Instant::now());
        self.closing.cancel();
    }

    /// The time over which closes are spread.
    pub fn spread(&self) -> Duration {
        self.spread
    }

    /// Resolves when the client keyed `key` is to be closed: never before
    /// [`start_closing`](Self::start_closing), then at a point of the spread
    /// that depends only on `key` (uniform over many keys). A client that
    /// connects after its turn passed gets it at once.
    pub async fn turn(&self, key: u64) {
        self.closing.cancelled().await;
        let since = *self.closing_since.get().unwrap_or(&Instant::now());
        tokio::time::sleep_until(since + self.spread.mul_f64(share(key))).await;
    }
}

/// A key's place in [0, 1): Fibonacci hashing, so that consecutive keys
/// (ports, counters) land far apart.
fn share(key: u64) -> f64 {
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_spread_consecutive_keys_evenly() {
        let mut buckets = [0u32; 10];
        for k in 40_000..50_000u64 {
            let s = share(k);
            assert!((0.0..1.0).contains(&s));
            buckets[(s * 10.0) as usize] += 1;
        }
        for b in buckets {
            assert!((900..=1100).contains(&b), "{buckets:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn turns_come_only_after_closing_starts_and_within_the_spread() {
        let d = std::sync::Arc::new(Drain::new(Duration::from_secs(10)));
        assert!(d.begin());
        assert!(!d.begin());
        let waiting = tokio::spawn({
            let d = d.clone();
            async move { d.turn(7).await }
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!waiting.is_finished(), "a turn came before closing started");
        let t0 = Instant::now();
        d.start_closing();
        waiting.await.unwrap();
        let took = t0.elapsed();
        let due = Duration::from_secs(10).mul_f64(share(7));
        // The timer rounds up to its millisecond tick.
        assert!(took >= due && took <= due + Duration::from_millis(2), "{took:?} vs {due:?}");
    }
}
