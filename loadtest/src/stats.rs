//! Latency histograms (HDR, nanoseconds) and throughput counters, kept per
//! client thread and merged at the end.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency recorded (1 hour, in ns); larger values are clamped.
pub const MAX_NS: u64 = 3_600_000_000_000;

/// A latency histogram in nanoseconds, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_NS, 3).expect("static bounds are valid")
}

/// Records `ns` into `h`, clamped to the histogram's range. Returns false
/// when the value was negative (clocks disagree), which is counted apart.
pub fn record(h: &mut Histogram<u64>, ns: i64) -> bool {
    if ns < 0 {
        return false;
    }
    h.saturating_record((ns as u64).clamp(1, MAX_NS));
    true
}

/// Percentiles of one histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest sample.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
}

impl Percentiles {
    /// The summary of `h` (all zero when empty).
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            mean_us: h.mean() / 1000.0,
        }
    }
}

/// The four hops of an update's journey, from its timestamps.
#[derive(Debug, Clone)]
pub struct Hops {
    /// Exchange → gateway receive: `ts_recv - ts_event`.
    pub feed: Histogram<u64>,
    /// Gateway receive → frame handed to the socket: `ts_send - ts_recv`.
    pub gateway: Histogram<u64>,
    /// Gateway send → client receive: `now - ts_send`.
    pub wire: Histogram<u64>,
    /// End to end: `now - ts_event`.
    pub e2e: Histogram<u64>,
}

impl Default for Hops {
    fn default() -> Self {
        Hops { feed: histogram(), gateway: histogram(), wire: histogram(), e2e: histogram() }
    }
}

/// The timestamps that place one update, nanoseconds since the epoch.
#[derive(Debug, Clone, Copy)]
pub struct Stamps {
    /// Feed (exchange) time.
    pub ts_event: i64,
    /// Gateway receive time.
    pub ts_recv: i64,
    /// Gateway send time of the frame.
    pub ts_send: i64,
    /// Client receive time of the frame.
    pub now: i64,
}

impl Hops {
    /// Records one update; returns how many hops were negative (a clock
    /// disagreement, not recorded). A zero `ts_send` (gRPC streams may not
    /// stamp one) skips the two hops that need it.
    pub fn record(&mut self, s: Stamps) -> u32 {
        let mut neg = 0;
        neg += u32::from(!record(&mut self.feed, s.ts_recv - s.ts_event));
        neg += u32::from(!record(&mut self.e2e, s.now - s.ts_event));
        if s.ts_send != 0 {
            neg += u32::from(!record(&mut self.gateway, s.ts_send - s.ts_recv));
            neg += u32::from(!record(&mut self.wire, s.now - s.ts_send));
        }
        neg
    }

    /// Adds every sample of `o`.
    pub fn merge(&mut self, o: &Hops) {
        // Same bounds everywhere, so `add` cannot fail.
        let _ = self.feed.add(&o.feed);
        let _ = self.gateway.add(&o.gateway);
        let _ = self.wire.add(&o.wire);
        let _ = self.e2e.add(&o.e2e);
    }

    /// Percentiles of each hop.
    pub fn summary(&self) -> HopSummary {
        HopSummary {
            feed_to_gateway: Percentiles::of(&self.feed),
            gateway_to_send: Percentiles::of(&self.gateway),
            send_to_client: Percentiles::of(&self.wire),
            end_to_end: Percentiles::of(&self.e2e),
        }
    }
}

/// Percentiles of every hop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct HopSummary {
    /// Exchange → gateway receive.
    pub feed_to_gateway: Percentiles,
    /// Gateway receive → send.
    pub gateway_to_send: Percentiles,
    /// Send → client.
    pub send_to_client: Percentiles,
    /// End to end.
    pub end_to_end: Percentiles,
}

/// What one group of clients (normal or slow) received, measured while the
/// measurement window was open.
#[derive(Debug, Clone, Default)]
pub struct Group {
    /// Latency per hop.
    pub hops: Hops,
    /// Quote updates (snapshots included).
    pub updates: u64,
    /// WebSocket frames / gRPC messages.
    pub frames: u64,
    /// Payload bytes.
    pub bytes: u64,
    /// Hops with a negative difference (clock disagreement).
    pub negative: u64,
}

impl Group {
    /// Adds `o` into `self`.
    pub fn merge(&mut self, o: &Group) {
        self.hops.merge(&o.hops);
        self.updates += o.updates;
        self.frames += o.frames;
        self.bytes += o.bytes;
        self.negative += o.negative;
    }

    /// Summary over a window of `secs` seconds.
    pub fn summary(&self, secs: f64) -> GroupSummary {
        let per = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        GroupSummary {
            updates: self.updates,
            frames: self.frames,
            bytes: self.bytes,
            updates_per_sec: per(self.updates),
            frames_per_sec: per(self.frames),
            bytes_per_sec: per(self.bytes),
            negative_hops: self.negative,
            latency: self.hops.summary(),
        }
    }
}

/// Throughput and latency of one client group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct GroupSummary {
    /// Updates received in the window.
    pub updates: u64,
    /// Frames received in the window.
    pub frames: u64,
    /// Bytes received in the window.
    pub bytes: u64,
    /// Updates per second.
    pub updates_per_sec: f64,
    /// Frames per second.
    pub frames_per_sec: f64,
    /// Bytes per second.
    pub bytes_per_sec: f64,
    /// Negative hop differences seen (clock disagreement, not recorded).
    pub negative_hops: u64,
    /// Latency per hop.
    pub latency: HopSummary,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = histogram();
        // 1..=1000 µs, one sample each.
        for us in 1..=1000i64 {
            record(&mut h, us * 1000);
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 1000);
        // 3 significant digits: within 0.1 %.
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 0.001;
        assert!(close(p.p50_us, 500.0), "{p:?}");
        assert!(close(p.p90_us, 900.0), "{p:?}");
        assert!(close(p.p99_us, 990.0), "{p:?}");
        assert!(close(p.p999_us, 999.0), "{p:?}");
        assert!(close(p.max_us, 1000.0), "{p:?}");
        assert!(close(p.mean_us, 500.5), "{p:?}");
        assert_eq!(Percentiles::of(&histogram()), Percentiles::default());
    }

    #[test]
    fn merge_combines_groups() {
        let mut a = Group::default();
        let mut b = Group::default();
        // a: 99 fast updates at 10 µs; b: one slow one at 50 ms.
        for _ in 0..99 {
            a.hops.record(Stamps { ts_event: 0, ts_recv: 1_000, ts_send: 5_000, now: 10_000 });
        }
        b.hops.record(Stamps { ts_event: 0, ts_recv: 1_000, ts_send: 40_000_000, now: 50_000_000 });
        (a.updates, b.updates, a.bytes, b.bytes) = (99, 1, 990, 10);
        a.merge(&b);
        let s = a.summary(2.0);
        assert_eq!(s.updates, 100);
        assert_eq!(s.updates_per_sec, 50.0);
        assert_eq!(s.bytes_per_sec, 500.0);
        let e2e = s.latency.end_to_end;
        assert_eq!(e2e.count, 100);
        assert!((e2e.p50_us - 10.0).abs() < 0.05, "{e2e:?}");
        // The single slow sample is the max and above p99.
        assert!((e2e.max_us - 50_000.0).abs() < 50.0, "{e2e:?}");
        assert!(e2e.p99_us < 11.0, "{e2e:?}");
        let gw = s.latency.gateway_to_send;
        assert!((gw.p50_us - 4.0).abs() < 0.01, "{gw:?}");
        assert_eq!(s.latency.feed_to_gateway.count, 100);
    }

    #[test]
    fn negative_and_missing_stamps() {
        let mut h = Hops::default();
        // Client clock behind the gateway's send time: one negative hop.
        assert_eq!(h.record(Stamps { ts_event: 0, ts_recv: 10, ts_send: 100, now: 50 }), 1);
        assert_eq!(h.wire.len(), 0);
        assert_eq!(h.e2e.len(), 1);
        // No send stamp: the hops needing it are skipped, not wrong.
        assert_eq!(h.record(Stamps { ts_event: 0, ts_recv: 10, ts_send: 0, now: 50 }), 0);
        assert_eq!((h.gateway.len(), h.e2e.len()), (1, 2));
        // Huge values are clamped, not lost.
        let mut x = histogram();
        assert!(record(&mut x, i64::MAX));
        assert_eq!(x.len(), 1);
    }
}
