//! The run's result: aggregation of every worker's measurements, the final
//! correctness verdict, the summary table and the JSON document.

use crate::checker::{FinalCounts, Totals, Violation};
use crate::client::{ConnOutcome, End, NodeStats, SnapshotStats, WorkerResult};
use crate::config::{Config, Mode, SlowMode};
use crate::stats::{self, Group, GroupSummary, Percentiles};
use crate::sys::CpuUse;
use feed_sim::SymbolTruth;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// Connection statistics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConnReport {
    /// Clients asked for (connections, consumers or callers).
    pub requested: usize,
    /// Of which slow on purpose.
    pub slow: usize,
    /// Established.
    pub connected: u64,
    /// Failed attempts.
    pub failed: u64,
    /// Failed attempts by reason.
    pub failures: BTreeMap<String, u64>,
    /// Connect time (TCP + handshake), µs.
    pub connect_time: Percentiles,
    /// How normal clients ended, by reason.
    pub ends: BTreeMap<String, u64>,
    /// How slow clients ended, by reason.
    pub slow_ends: BTreeMap<String, u64>,
    /// Symbols the gateway rejected.
    pub rejected_symbols: u64,
    /// Error replies.
    pub error_replies: u64,
    /// First error reply text, if any.
    pub first_error: Option<String>,
    /// Frames that did not decode.
    pub decode_errors: u64,
    /// Reconnects (`--reconnect`), by how the server ended the connection.
    pub reconnects: BTreeMap<String, u64>,
    /// Connection ended by the server to resubscribed (ack) on the next
    /// one, µs.
    pub failover_time: Percentiles,
    /// Per gateway node (`X-Quotecast-Node`), for a fleet behind a
    /// balancer.
    pub nodes: BTreeMap<String, NodeStats>,
}

/// GetSnapshot results.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SnapshotReport {
    /// Successful calls in the window.
    pub calls: u64,
    /// Calls per second.
    pub calls_per_sec: f64,
    /// Quotes returned.
    pub quotes: u64,
    /// Symbols rejected.
    pub rejected: u64,
    /// Failed calls by gRPC code.
    pub errors: BTreeMap<String, u64>,
    /// Call latency, µs.
    pub latency: Percentiles,
}

/// What the in-process feed sent.
#[derive(Debug, Clone, Serialize)]
pub struct FeedReport {
    /// Ticks sent.
    pub ticks: u64,
    /// Seconds the feed ran.
    pub secs: f64,
    /// Ticks per second.
    pub ticks_per_sec: f64,
    /// Packets sent.
    pub packets: u64,
}

/// The correctness verdict.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Correctness {
    /// Connections whose streams were checked.
    pub connections_checked: u64,
    /// Total violations.
    pub violations: u64,
    /// The first violations, for the listing.
    pub listed: Vec<Violation>,
    /// Snapshot-call violations (snapshot mode), as text.
    pub snapshot_violations: Vec<String>,
    /// Everything received: `received + skipped == seq_span` when no gap.
    pub totals: Totals,
    /// Final-value check against the simulator (with `--feed sim`).
    pub final_values: Option<FinalCounts>,
    /// Every normal client received the end of the feed in time.
    pub drained: Option<bool>,
    /// Seconds from the feed's end until every client drained.
    pub drain_secs: f64,
}

/// The whole result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Mode.
    pub mode: Mode,
    /// Target address.
    pub target: String,
    /// Seconds of ramp-up.
    pub ramp_secs: f64,
    /// Seconds of the measurement window.
    pub window_secs: f64,
    /// Client threads.
    pub threads: usize,
    /// Connection statistics.
    pub connections: ConnReport,
    /// Normal clients.
    pub fast: GroupSummary,
    /// Slow clients (when any).
    pub slow: Option<GroupSummary>,
    /// What slow clients did.
    pub slow_mode: Option<SlowMode>,
    /// GetSnapshot (snapshot mode).
    pub snapshot: Option<SnapshotReport>,
    /// Correctness.
    pub correctness: Correctness,
    /// The in-process feed.
    pub feed: Option<FeedReport>,
    /// CPU over the window.
    pub cpu: CpuUse,
    /// Gateway RSS at the end of the window (with `--gateway-pid`).
    pub gateway_rss_bytes: Option<u64>,
    /// Thresholds missed, as text.
    pub thresholds_failed: Vec<String>,
}

/// Everything the controller measured, before aggregation.
pub struct Measured {
    /// Per-worker results.
    pub workers: Vec<WorkerResult>,
    /// Ramp-up seconds.
    pub ramp_secs: f64,
    /// Window seconds.
    pub window_secs: f64,
    /// Client threads.
    pub threads: usize,
    /// Clients requested and slow ones.
    pub requested: usize,
    /// Slow ones among them.
    pub slow: usize,
    /// The feed's report, with `--feed sim`.
    pub feed: Option<feed_sim::Report>,
    /// Ground truth read from `--truth-file` (external feed).
    pub truth: Option<BTreeMap<String, SymbolTruth>>,
    /// Whether every normal client drained in time.
    pub drained: Option<bool>,
    /// Seconds from the feed's end until every client drained (or gave up).
    pub drain_secs: f64,
    /// CPU use over the window.
    pub cpu: CpuUse,
    /// Gateway RSS.
    pub gateway_rss_bytes: Option<u64>,
}

impl RunReport {
    /// Aggregates `m`, runs the final-value and cross-connection checks and
    /// applies the thresholds of `cfg`.
    pub fn build(cfg: &Config, m: Measured) -> RunReport {
        let mut fast = Group::default();
        let mut slow = Group::default();
        let mut connect = stats::histogram();
        let mut calls = stats::histogram();
        let mut snap = SnapshotStats::default();
        let mut conns = ConnReport { requested: m.requested, slow: m.slow, ..ConnReport::default() };
        let mut outcomes: Vec<ConnOutcome> = Vec::new();
        let mut failover = stats::histogram();
        for w in m.workers {
            let _ = failover.add(&w.failover);
            for (k, v) in w.reconnect_causes {
                *conns.reconnects.entry(k).or_default() += v;
            }
            for (k, v) in &w.nodes {
                conns.nodes.entry(k.clone()).or_default().add(v);
            }
            fast.merge(&w.fast);
            slow.merge(&w.slow);
            let _ = connect.add(&w.connect);
            let _ = calls.add(&w.calls);
            snap.merge(w.snapshot);
            for (k, v) in w.failures {
                conns.failed += v;
                *conns.failures.entry(k).or_default() += v;
            }
            outcomes.extend(w.outcomes);
        }
        conns.connected = connect.len();
        conns.connect_time = Percentiles::of(&connect);
        conns.failover_time = Percentiles::of(&failover);
        outcomes.sort_by_key(|o| o.id);

        let truth = m.feed.as_ref().map(|r| &r.last).or(m.truth.as_ref());
        let mut correctness = check(&mut outcomes, truth, m.drained, cfg.output.list_violations, &snap);
        correctness.drain_secs = m.drain_secs;
        for o in &outcomes {
            let ends = if o.slow { &mut conns.slow_ends } else { &mut conns.ends };
            *ends.entry(o.end.label()).or_default() += 1;
            conns.rejected_symbols += o.rejected.len() as u64;
            conns.error_replies += o.errors;
            conns.decode_errors += o.decode_errors;
            if conns.first_error.is_none() {
                conns.first_error.clone_from(&o.first_error);
            }
        }

        let secs = m.window_secs;
        let snapshot = (cfg.mode == Mode::Snapshot).then(|| SnapshotReport {
            calls: snap.calls,
            calls_per_sec: if secs > 0.0 { snap.calls as f64 / secs } else { 0.0 },
            quotes: snap.quotes,
            rejected: snap.rejected,
            errors: snap.errors.clone(),
            latency: Percentiles::of(&calls),
        });
        let feed = m.feed.as_ref().map(|r| FeedReport {
            ticks: r.ticks(),
            secs: r.elapsed.as_secs_f64(),
            ticks_per_sec: r.ticks_per_sec(),
            packets: r.packets,
        });
        let mut r = RunReport {
            mode: cfg.mode,
            target: match cfg.mode {
                Mode::Ws => {
                    format!("ws://{}/", cfg.target.ws_addr.trim_start_matches("ws://").trim_end_matches('/'))
                }
                _ => format!("grpc {}", cfg.target.grpc_addr),
            },
            ramp_secs: m.ramp_secs,
            window_secs: secs,
            threads: m.threads,
            connections: conns,
            fast: fast.summary(secs),
            slow: (m.slow > 0).then(|| slow.summary(secs)),
            slow_mode: (m.slow > 0).then_some(cfg.load.slow_mode),
            snapshot,
            correctness,
            feed,
            cpu: m.cpu,
            gateway_rss_bytes: m.gateway_rss_bytes,
            thresholds_failed: Vec::new(),
        };
        r.thresholds_failed = r.thresholds(cfg);
        r
    }

    /// The thresholds of `cfg` this run missed.
    pub fn thresholds(&self, cfg: &Config) -> Vec<String> {
        let mut failed = Vec::new();
        let (p99, count, rate, unit) = match &self.snapshot {
            Some(s) => (s.latency.p99_us, s.latency.count, s.calls_per_sec, "calls/s"),
            None => {
                let e = &self.fast.latency.end_to_end;
                (e.p99_us, e.count, self.fast.updates_per_sec, "updates/s")
            }
        };
        if let Some(max) = cfg.output.max_p99 {
            let max_us = max.as_secs_f64() * 1e6;
            if count == 0 {
                failed.push(format!("--max-p99 {max:?}: no latency samples"));
            } else if p99 > max_us {
                failed.push(format!("--max-p99 {max:?}: p99 was {}", fmt_us(p99)));
            }
        }
        if let Some(min) = cfg.output.min_rate {
            if rate < min {
                failed.push(format!("--min-rate {min}: {rate:.0} {unit}"));
            }
        }
        failed
    }

    /// True when a client saw a correctness violation.
    pub fn has_violations(&self) -> bool {
        self.correctness.violations > 0
    }

    /// The process exit status this result calls for.
    pub fn exit_code(&self) -> u8 {
        if self.has_violations() {
            crate::config::EX_VIOLATION
        } else if !self.thresholds_failed.is_empty() {
            crate::config::EX_THRESHOLD
        } else {
            0
        }
    }
}

/// Final-value check, cross-connection final seqs, and the violation list.
fn check(
    outcomes: &mut [ConnOutcome],
    truth: Option<&BTreeMap<String, SymbolTruth>>,
    drained: Option<bool>,
    list: usize,
    snap: &SnapshotStats,
) -> Correctness {
    let mut c = Correctness { drained, ..Correctness::default() };
    // Only normal clients that lived to the end can be held to the truth.
    let eligible = |o: &ConnOutcome| !o.slow && o.end == End::Stopped;
    if let Some(truth) = truth {
        let mut fc = FinalCounts::default();
        for o in outcomes.iter_mut().filter(|o| eligible(o)) {
            fc.add(&o.checker.check_final(truth));
        }
        c.final_values = Some(fc);
        // Every drained client must end on the same seq per symbol.
        let mut seqs: HashMap<String, HashMap<u64, u64>> = HashMap::new();
        for o in outcomes.iter().filter(|o| eligible(o)) {
            for (s, q) in o.checker.final_seqs() {
                *seqs.entry(s.to_string()).or_default().entry(q).or_default() += 1;
            }
        }
        let majority: HashMap<String, u64> = seqs
            .into_iter()
            .filter_map(|(s, m)| m.into_iter().max_by_key(|(q, n)| (*n, *q)).map(|(q, _)| (s, q)))
            .collect();
        for o in outcomes.iter_mut().filter(|o| eligible(o)) {
            let differing: Vec<(String, u64, u64)> = o
                .checker
                .final_seqs()
                .filter_map(|(s, q)| majority.get(s).filter(|m| **m != q).map(|m| (s.to_string(), q, *m)))
                .collect();
            for (s, q, m) in differing {
                o.checker.seq_differs(&s, q, m);
            }
        }
    }
    for o in outcomes.iter() {
        c.connections_checked += 1;
        c.totals.add(&o.checker.totals());
        let (kept, n) = o.checker.violations();
        c.violations += n;
        for v in kept {
            if c.listed.len() < list {
                c.listed.push(v.clone());
            }
        }
    }
    c.violations += snap.violation_count;
    c.snapshot_violations = snap.violations.iter().take(list).cloned().collect();
    c
}

/// Microseconds, human-sized.
pub fn fmt_us(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{us:.0} µs")
    }
}

fn thousands(n: f64) -> String {
    let s = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn write_latency(f: &mut fmt::Formatter<'_>, g: &GroupSummary) -> fmt::Result {
    writeln!(
        f,
        "  {:<16}{:>10}{:>10}{:>10}{:>10}{:>10}{:>12}",
        "latency", "p50", "p90", "p99", "p99.9", "max", "samples"
    )?;
    let l = &g.latency;
    for (name, p) in [
        ("feed→gateway", &l.feed_to_gateway),
        ("gateway→send", &l.gateway_to_send),
        ("send→client", &l.send_to_client),
        ("end to end", &l.end_to_end),
    ] {
        writeln!(
            f,
            "  {:<16}{:>10}{:>10}{:>10}{:>10}{:>10}{:>12}",
            name,
            fmt_us(p.p50_us),
            fmt_us(p.p90_us),
            fmt_us(p.p99_us),
            fmt_us(p.p999_us),
            fmt_us(p.max_us),
            thousands(p.count as f64)
        )?;
    }
    Ok(())
}

fn write_group(f: &mut fmt::Formatter<'_>, title: &str, g: &GroupSummary) -> fmt::Result {
    writeln!(
        f,
        "{title:<14}{} updates/s, {} frames/s, {:.1} MB/s ({} updates, {:.1} per frame)",
        thousands(g.updates_per_sec),
        thousands(g.frames_per_sec),
        g.bytes_per_sec / 1e6,
        thousands(g.updates as f64),
        if g.frames > 0 { g.updates as f64 / g.frames as f64 } else { 0.0 }
    )?;
    write_latency(f, g)?;
    if g.negative_hops > 0 {
        writeln!(f, "  ({} hop differences were negative: clocks disagree)", g.negative_hops)?;
    }
    Ok(())
}

fn join_counts(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.connections;
        writeln!(
            f,
            "loadtest {:?} -> {}  window {:.2} s (ramp-up {:.2} s), {} client threads",
            self.mode, self.target, self.window_secs, self.ramp_secs, self.threads
        )?;
        writeln!(
            f,
            "{:<14}{} requested ({} slow), {} connected, {} failed; connect p50 {} p99 {} max {}",
            "connections",
            c.requested,
            c.slow,
            c.connected,
            c.failed,
            fmt_us(c.connect_time.p50_us),
            fmt_us(c.connect_time.p99_us),
            fmt_us(c.connect_time.max_us)
        )?;
        if !c.failures.is_empty() {
            writeln!(f, "{:<14}failures: {}", "", join_counts(&c.failures))?;
        }
        if !c.reconnects.is_empty() {
            let n: u64 = c.reconnects.values().sum();
            writeln!(
                f,
                "{:<14}{n} reconnects ({}); ended-to-resubscribed p50 {} p99 {} max {}",
                "",
                join_counts(&c.reconnects),
                fmt_us(c.failover_time.p50_us),
                fmt_us(c.failover_time.p99_us),
                fmt_us(c.failover_time.max_us)
            )?;
        }
        if c.nodes.len() > 1 || c.nodes.keys().any(|n| n != "unnamed") {
            for (name, n) in &c.nodes {
                writeln!(
                    f,
                    "{:<14}node {name}: {} connections ({} reconnects in), {} ended by it, {} updates",
                    "",
                    n.connections,
                    n.reconnects_in,
                    n.ended_by_server,
                    thousands(n.updates as f64)
                )?;
            }
        }
        if self.mode != Mode::Snapshot {
            writeln!(f, "{:<14}normal clients ended: {}", "", join_counts(&c.ends))?;
            if c.slow > 0 {
                writeln!(f, "{:<14}slow clients ended: {}", "", join_counts(&c.slow_ends))?;
            }
        }
        if c.rejected_symbols + c.error_replies + c.decode_errors > 0 {
            writeln!(
                f,
                "{:<14}{} symbols rejected, {} error replies{}, {} undecodable frames",
                "",
                c.rejected_symbols,
                c.error_replies,
                c.first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default(),
                c.decode_errors
            )?;
        }
        match &self.snapshot {
            Some(s) => {
                writeln!(
                    f,
                    "{:<14}{} calls/s ({} calls, {} quotes, {} rejected), errors: {}",
                    "GetSnapshot",
                    thousands(s.calls_per_sec),
                    s.calls,
                    s.quotes,
                    s.rejected,
                    join_counts(&s.errors)
                )?;
                let p = &s.latency;
                writeln!(
                    f,
                    "  call latency  p50 {} p90 {} p99 {} p99.9 {} max {}",
                    fmt_us(p.p50_us),
                    fmt_us(p.p90_us),
                    fmt_us(p.p99_us),
                    fmt_us(p.p999_us),
                    fmt_us(p.max_us)
                )?;
            }
            None => {
                write_group(f, &format!("normal ({})", c.requested - c.slow), &self.fast)?;
                if let Some(s) = &self.slow {
                    let mode = self.slow_mode.map(|m| format!("{m:?}").to_lowercase()).unwrap_or_default();
                    write_group(f, &format!("slow ({}, {mode})", c.slow), s)?;
                }
            }
        }
        let k = &self.correctness;
        let t = &k.totals;
        let verdict = if k.violations == 0 { "OK" } else { "FAILED" };
        writeln!(
            f,
            "{:<14}{verdict}: {} violations in {} connections",
            "correctness", k.violations, k.connections_checked
        )?;
        if self.mode != Mode::Snapshot {
            let accounted =
                if t.received + t.skipped == t.seq_span { "all accounted" } else { "NOT all accounted" };
            writeln!(
                f,
                "{:<14}{} snapshots, {} updates + {} conflated = seq span {} ({accounted}; {} gaps excused by stale status)",
                "",
                thousands(t.snapshots as f64),
                thousands(t.received as f64),
                thousands(t.skipped as f64),
                thousands(t.seq_span as f64),
                t.excused_gaps
            )?;
            if t.resumed + t.resume_failed > 0 {
                writeln!(
                    f,
                    "{:<14}resumes after reconnect: {} symbols continued at seq+1, {} got a resume_failed snapshot",
                    "", t.resumed, t.resume_failed
                )?;
            }
            if t.feed_gap_notices > 0 {
                writeln!(
                    f,
                    "{:<14}the gateway reported feed gaps ({} stale notices): it lost feed data",
                    "", t.feed_gap_notices
                )?;
            }
        }
        if let Some(fv) = &k.final_values {
            writeln!(
                f,
                "{:<14}final values vs feed-sim: {} match, {} unverifiable (feed gap), {} untouched by the feed; {}",
                "",
                fv.verified,
                fv.unverifiable,
                fv.untouched,
                match k.drained {
                    Some(false) => format!("NOT every client drained (gave up after {:.1} s)", k.drain_secs),
                    _ => format!("drained {:.2} s after the feed ended", k.drain_secs),
                }
            )?;
        }
        for v in &k.listed {
            writeln!(f, "  violation: {v}")?;
        }
        for v in &k.snapshot_violations {
            writeln!(f, "  violation: {v}")?;
        }
        if k.violations > (k.listed.len() + k.snapshot_violations.len()) as u64 {
            writeln!(
                f,
                "  ... and {} more",
                k.violations - (k.listed.len() + k.snapshot_violations.len()) as u64
            )?;
        }
        if let Some(fd) = &self.feed {
            writeln!(
                f,
                "{:<14}in-process feed-sim: {} ticks in {:.2} s ({}/s), {} packets",
                "feed",
                thousands(fd.ticks as f64),
                fd.secs,
                thousands(fd.ticks_per_sec),
                fd.packets
            )?;
        }
        let cpu = &self.cpu;
        write!(
            f,
            "{:<14}loadtest clients {:.2} cores, whole process {:.2} of {} cores ({:.0}%)",
            "cpu",
            cpu.clients_cores,
            cpu.process_cores,
            cpu.machine_cores,
            cpu.process_share * 100.0
        )?;
        if let Some(g) = cpu.gateway_cores {
            write!(f, "; gateway {g:.2} cores")?;
        }
        if let Some(rss) = self.gateway_rss_bytes {
            write!(f, ", gateway RSS {:.1} MiB", rss as f64 / (1 << 20) as f64)?;
        }
        writeln!(f)?;
        writeln!(f, "{:<14}machine CPU busy {:.0}% (all processes)", "", cpu.machine_busy * 100.0)?;
        if cpu.clients_cores > 0.8 * self.threads as f64 || cpu.process_share > 0.8 {
            writeln!(
                f,
                "{:<14}WARNING: loadtest itself was near its CPU limit; it may be the bottleneck",
                ""
            )?;
        } else if cpu.machine_busy > 0.9 {
            writeln!(
                f,
                "{:<14}WARNING: the machine's CPU was saturated; client-side latency (send→client) includes waiting for a core",
                ""
            )?;
        }
        for t in &self.thresholds_failed {
            writeln!(f, "{:<14}FAILED {t}", "threshold")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_readable() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(0.0), "0");
        assert_eq!(fmt_us(12.4), "12 µs");
        assert_eq!(fmt_us(1500.0), "1.50 ms");
        assert_eq!(fmt_us(2_500_000.0), "2.50 s");
    }
}
