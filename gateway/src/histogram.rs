//! A fixed-bucket, lock-free histogram for hot paths.
//!
//! Recording is a binary search over at most a few dozen bounds and two
//! relaxed atomic adds: no lock, no allocation, no clock read, whatever the
//! rate. Memory is fixed at creation (one `u64` per bucket), so a gateway
//! that is never scraped does not accumulate samples. The exporter's own
//! histograms queue every sample until the next scrape or upkeep, which at
//! one sample per socket write grows by megabytes between scrapes.
//!
//! Rendered in the Prometheus text format by [`write_histogram`], next to
//! what the exporter renders.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Tick-to-send latency bounds, seconds: 5 µs to 5 s, so both a healthy
/// loopback write (tens of µs) and a stalled client (seconds) land in a
/// bucket of their own size.
pub const LATENCY_BUCKETS: [f64; 19] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Gap-fill latency bounds, seconds: 10 µs (a loopback round trip) to
/// 5 s, in 1-2-5 steps, so p50 and p99 of a loopback server are read
/// within a factor of 2.5.
pub const FILL_BUCKETS: [f64; 19] = [
    0.000_01, 0.000_02, 0.000_05, 0.000_1, 0.000_2, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2,
    0.5, 1.0, 2.0, 5.0, 10.0,
];

/// gRPC handling time bounds, seconds: 100 µs for a snapshot read to five
/// minutes for a long stream.
pub const GRPC_BUCKETS: [f64; 19] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0, 60.0, 300.0,
];

/// Samples are summed in nanoseconds (integer, wait-free). A `u64` holds
/// 584 years of summed latency: at a million 100 µs samples a second it
/// wraps after about six years, which Prometheus reads as a counter reset.
const SUM_SCALE: f64 = 1e9;

/// A histogram with fixed upper bounds (Prometheus `le` semantics: a
/// sample lands in the first bucket whose bound is >= the sample).
#[derive(Debug)]
pub struct AtomicHistogram {
    bounds: &'static [f64],
    /// Non-cumulative counts; the last slot counts samples above every bound.
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

/// A consistent-enough copy of a histogram for rendering.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Cumulative counts per bound, in bound order.
    pub cumulative: Vec<u64>,
    /// All samples (the `+Inf` bucket).
    pub count: u64,
    /// Sum of samples.
    pub sum: f64,
}

impl AtomicHistogram {
    /// An empty histogram with these bounds.
    ///
    /// # Panics
    /// If `bounds` is empty or not strictly increasing (a programming error
    /// in a constant).
    pub fn new(bounds: &'static [f64]) -> Self {
        assert!(!bounds.is_empty(), "histogram needs at least one bound");
        assert!(bounds.windows(2).all(|w| w[0] < w[1]), "histogram bounds must increase");
        AtomicHistogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Records one sample. Negative samples count as 0; NaN is ignored.
    pub fn observe(&self, value: f64) {
        if value.is_nan() {
            return;
        }
        let value = value.max(0.0);
        let i = self.bounds.partition_point(|b| *b < value);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        // `as` saturates: an absurd sample cannot wrap the sum by itself.
        self.sum_nanos.fetch_add((value * SUM_SCALE) as u64, Ordering::Relaxed);
    }

    /// The bucket bounds.
    pub fn bounds(&self) -> &'static [f64] {
        self.bounds
    }

    /// Copies the counts. Buckets are read one by one while writers may
    /// record, so the copy is not a single instant, but it is always
    /// monotonic per bucket and `count` always equals the `+Inf` bucket.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = Vec::with_capacity(self.bounds.len());
        let mut running = 0u64;
        for c in self.counts.iter().take(self.bounds.len()) {
            running += c.load(Ordering::Relaxed);
            cumulative.push(running);
        }
        let count = running + self.counts[self.bounds.len()].load(Ordering::Relaxed);
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / SUM_SCALE;
        HistogramSnapshot { cumulative, count, sum }
    }

    /// Samples recorded so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

impl metrics::HistogramFn for AtomicHistogram {
    fn record(&self, value: f64) {
        self.observe(value);
    }
}

/// Writes `# HELP` and `# TYPE` lines of a metric family.
pub fn write_header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes one sample line; `labels` are (name, value) pairs whose values
/// need no escaping (they come from fixed sets).
pub fn write_sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    write_labels(out, labels, None);
    let _ = writeln!(out, " {}", fmt_value(value));
}

fn write_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (k, v) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
        if !first {
            out.push(',');
        }
        first = false;
        let _ = write!(out, "{k}=\"{v}\"");
    }
    out.push('}');
}

fn fmt_value(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if v.is_nan() {
        "NaN".to_string()
    } else {
        // Display never uses exponents, which Prometheus accepts anyway.
        format!("{v}")
    }
}

/// Writes the `_bucket`, `_sum` and `_count` lines of one labelled series
/// of histogram family `name` (the header is written separately, once per
/// family).
pub fn write_histogram(out: &mut String, name: &str, labels: &[(&str, &str)], h: &AtomicHistogram) {
    let s = h.snapshot();
    let bucket = format!("{name}_bucket");
    for (bound, c) in h.bounds().iter().zip(&s.cumulative) {
        out.push_str(&bucket);
        write_labels(out, labels, Some(&fmt_value(*bound)));
        let _ = writeln!(out, " {c}");
    }
    out.push_str(&bucket);
    write_labels(out, labels, Some("+Inf"));
    let _ = writeln!(out, " {}", s.count);
    write_sample(out, &format!("{name}_sum"), labels, s.sum);
    write_sample(out, &format!("{name}_count"), labels, s.count as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_land_in_the_first_bucket_at_or_above_them() {
        static B: [f64; 3] = [0.001, 0.01, 0.1];
        let h = AtomicHistogram::new(&B);
        for v in [0.0, 0.001, 0.0011, 0.01, 0.05, 0.1, 0.2, 7.0, -1.0, f64::NAN] {
            h.observe(v);
        }
        let s = h.snapshot();
        // <=0.001: 0, 0.001, -1 (as 0); <=0.01: +0.0011, 0.01; <=0.1: +0.05, 0.1.
        assert_eq!(s.cumulative, vec![3, 5, 7]);
        assert_eq!(s.count, 9, "NaN ignored, everything else counted");
        assert_eq!(h.count(), 9);
        let want = 0.001 + 0.0011 + 0.01 + 0.05 + 0.1 + 0.2 + 7.0;
        assert!((s.sum - want).abs() < 1e-6, "sum {} want {want}", s.sum);
    }

    #[test]
    fn latency_buckets_resolve_microseconds_to_seconds() {
        let h = AtomicHistogram::new(&LATENCY_BUCKETS);
        h.observe(3e-6);
        h.observe(40e-6);
        h.observe(3.0);
        let s = h.snapshot();
        assert_eq!(s.cumulative[0], 1, "3 µs under the 5 µs bound");
        assert_eq!(s.cumulative[3] - s.cumulative[2], 1, "40 µs in (25 µs, 50 µs]");
        assert_eq!(*s.cumulative.last().unwrap(), 3, "3 s under the 5 s bound");
    }

    #[test]
    fn renders_prometheus_histogram_lines() {
        static B: [f64; 2] = [0.5, 1.0];
        let h = AtomicHistogram::new(&B);
        h.observe(0.25);
        h.observe(2.0);
        let mut out = String::new();
        write_header(&mut out, "x_seconds", "histogram", "Test.");
        write_histogram(&mut out, "x_seconds", &[("method", "Get")], &h);
        let want = "# HELP x_seconds Test.\n# TYPE x_seconds histogram\n\
            x_seconds_bucket{method=\"Get\",le=\"0.5\"} 1\n\
            x_seconds_bucket{method=\"Get\",le=\"1\"} 1\n\
            x_seconds_bucket{method=\"Get\",le=\"+Inf\"} 2\n\
            x_seconds_sum{method=\"Get\"} 2.25\n\
            x_seconds_count{method=\"Get\"} 2\n";
        assert_eq!(out, want);
    }

    #[test]
    fn recorded_through_a_metrics_handle() {
        let h = std::sync::Arc::new(AtomicHistogram::new(&LATENCY_BUCKETS));
        let handle = metrics::Histogram::from_arc(h.clone());
        handle.record(0.002);
        assert_eq!(h.count(), 1);
    }
}
