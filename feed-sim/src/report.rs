//! What a run did: counts for humans (the binary prints it) and ground
//! truth for tests (the library returns it).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use quotecast_proto::feed::{Message, SessionId};

use crate::market::SymbolTruth;

/// Summary of one simulator session.
///
/// Counting rules: `messages`, `quotes`, `trades` and `directory` count
/// sequenced messages *generated*, including those in packets dropped on
/// purpose; `packets` and `bytes` count datagrams actually written to the
/// sockets of every line, of every kind (data, duplicates, heartbeats, the
/// three end-of-session copies); `lines` has the same per line. With one
/// line, the totals are line A's.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Session id every packet carried.
    pub session: SessionId,
    /// Datagrams written to the socket, of every kind.
    pub packets: u64,
    /// Sequenced messages (directory + quotes + trades + system events +
    /// trading actions); equals
    /// `next_seq - first_seq`.
    pub messages: u64,
    /// Quote messages.
    pub quotes: u64,
    /// Trade messages.
    pub trades: u64,
    /// Symbol directory messages (the initial one and every repeat).
    pub directory: u64,
    /// System events (`S`): start of messages and of market hours at the
    /// start, end of market hours and of messages at the end (4 per
    /// session).
    pub system_events: u64,
    /// Trading actions (`H`): halts, pauses and resumptions.
    pub trading_actions: u64,
    /// Heartbeat datagrams.
    pub heartbeats: u64,
    /// UDP payload bytes written.
    pub bytes: u64,
    /// Data packets dropped on purpose on *every* line (their sequences are
    /// gaps even for a receiver that takes A and B); per line in `lines`.
    pub dropped_packets: u64,
    /// Messages inside those packets.
    pub dropped_messages: u64,
    /// Data packets sent a second time, summed over lines.
    pub duplicated_packets: u64,
    /// Data packets sent after their successor, summed over lines. A held
    /// packet that had to go out with nothing after it (a heartbeat or the
    /// end of session came first) is not counted: it arrived in order.
    pub reordered_packets: u64,
    /// Ticks the pacer gave up on because the sender fell more than a
    /// second behind its schedule (0 unless the machine is overloaded).
    pub skipped_ticks: u64,
    /// Sequence number of the first message (always 1: a session starts
    /// at 1).
    pub first_seq: u64,
    /// Sequence number the next message would have had; the
    /// end-of-session packet carries it.
    pub next_seq: u64,
    /// From session start to the last end-of-session packet.
    pub elapsed: Duration,
    /// Final state per symbol, as the simulator generated it (ground truth).
    pub last: BTreeMap<String, SymbolTruth>,
    /// Every sequenced message (directory messages included) in order with
    /// its feed sequence, dropped ones too; only when `SimConfig::record` is
    /// true, empty otherwise.
    pub recorded: Vec<(u64, Message)>,
    /// Per line (A first, then B if configured): what went out on it.
    pub lines: Vec<LineReport>,
    /// What the retransmission server did, when it ran.
    pub retrans: Option<RetransReport>,
    /// What the snapshot channel sent, when enabled.
    pub snapshot: Option<SnapshotReport>,
}

/// What the snapshot channel sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotReport {
    /// Cycles completed (begin, every symbol, end).
    pub cycles: u64,
    /// Symbol snapshots sent.
    pub snapshots: u64,
    /// Datagrams sent.
    pub packets: u64,
    /// UDP payload bytes sent.
    pub bytes: u64,
}

/// Counts of the retransmission server over the session (and its linger).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetransReport {
    /// Requests received, of every kind.
    pub requests: u64,
    /// Answered with data.
    pub answered: u64,
    /// Answered "gone" (the range was evicted from the ring).
    pub gone: u64,
    /// Answered "not yet" (the range was not sent yet).
    pub not_yet: u64,
    /// Dropped: over the per-requester rate.
    pub rate_limited: u64,
    /// Dropped: not a 20-byte request, or count 0 or 0xFFFF.
    pub malformed: u64,
    /// Dropped: another session.
    pub foreign_session: u64,
    /// Datagrams sent in answers.
    pub packets: u64,
    /// Messages retransmitted.
    pub messages: u64,
}

impl From<&crate::retrans::Stats> for RetransReport {
    fn from(s: &crate::retrans::Stats) -> Self {
        let l = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        RetransReport {
            requests: l(&s.requests),
            answered: l(&s.answered),
            gone: l(&s.gone),
            not_yet: l(&s.not_yet),
            rate_limited: l(&s.rate_limited),
            malformed: l(&s.malformed),
            foreign_session: l(&s.foreign_session),
            packets: l(&s.packets),
            messages: l(&s.messages),
        }
    }
}

/// What one line (A or B) carried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineReport {
    /// `a` or `b`.
    pub name: String,
    /// Datagrams written on this line, of every kind.
    pub packets: u64,
    /// UDP payload bytes written on this line.
    pub bytes: u64,
    /// Data packets dropped on purpose on this line.
    pub dropped_packets: u64,
    /// Messages inside them.
    pub dropped_messages: u64,
    /// Data packets sent twice on this line.
    pub duplicated_packets: u64,
    /// Data packets sent after their successor on this line.
    pub reordered_packets: u64,
}

impl Report {
    /// Quotes plus trades.
    pub fn ticks(&self) -> u64 {
        self.quotes + self.trades
    }

    /// Achieved ticks per second over the whole session.
    pub fn ticks_per_sec(&self) -> f64 {
        per_sec(self.ticks(), self.elapsed)
    }

    /// Achieved datagrams per second over the whole session.
    pub fn packets_per_sec(&self) -> f64 {
        per_sec(self.packets, self.elapsed)
    }
}

fn per_sec(n: u64, d: Duration) -> f64 {
    let s = d.as_secs_f64();
    if s > 0.0 {
        n as f64 / s
    } else {
        0.0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "session      {}", self.session)?;
        writeln!(f, "sequences    {}..{} ({} messages)", self.first_seq, self.next_seq, self.messages)?;
        writeln!(
            f,
            "messages     {} quotes, {} trades, {} directory, {} system events, {} trading actions",
            self.quotes, self.trades, self.directory, self.system_events, self.trading_actions
        )?;
        writeln!(f, "packets      {} ({} bytes), {} heartbeats", self.packets, self.bytes, self.heartbeats)?;
        writeln!(
            f,
            "faults       {} dropped packets ({} messages), {} duplicated, {} reordered",
            self.dropped_packets, self.dropped_messages, self.duplicated_packets, self.reordered_packets
        )?;
        if self.lines.len() > 1 {
            for l in &self.lines {
                writeln!(
                    f,
                    "line {}       {} packets, {} dropped ({} messages), {} duplicated, {} reordered",
                    l.name,
                    l.packets,
                    l.dropped_packets,
                    l.dropped_messages,
                    l.duplicated_packets,
                    l.reordered_packets
                )?;
            }
        }
        if let Some(r) = &self.retrans {
            writeln!(
                f,
                "retrans      {} requests: {} answered ({} messages), {} gone, {} not yet, {} rate-limited, {} malformed, {} other session",
                r.requests, r.answered, r.messages, r.gone, r.not_yet, r.rate_limited, r.malformed, r.foreign_session
            )?;
        }
        if let Some(s) = &self.snapshot {
            writeln!(
                f,
                "snapshots    {} cycles, {} symbol snapshots in {} packets ({} bytes)",
                s.cycles, s.snapshots, s.packets, s.bytes
            )?;
        }
        if self.skipped_ticks > 0 {
            writeln!(f, "skipped      {} ticks (sender fell behind its schedule)", self.skipped_ticks)?;
        }
        writeln!(f, "elapsed      {:.3}s", self.elapsed.as_secs_f64())?;
        write!(f, "achieved     {:.0} ticks/s, {:.0} packets/s", self.ticks_per_sec(), self.packets_per_sec())
    }
}

impl Report {
    /// The ground truth as JSON: `{"session", "symbols": {name: {...}}}`
    /// with the fields of [`SymbolTruth`] that a consumer's book shows.
    pub fn truth_json(&self) -> serde_json::Value {
        let symbols: serde_json::Map<String, serde_json::Value> = self
            .last
            .iter()
            .map(|(name, t)| {
                let v = serde_json::json!({
                    "locate": t.locate,
                    "bid_px": t.bid_px, "bid_sz": t.bid_sz,
                    "ask_px": t.ask_px, "ask_sz": t.ask_sz,
                    "last_px": t.last_px, "last_sz": t.last_sz,
                    "symbol_seq": t.symbol_seq,
                    "updates": t.updates,
                    "updates_delivered": t.updates_delivered,
                });
                (name.clone(), v)
            })
            .collect();
        serde_json::json!({ "session": self.session.to_string(), "symbols": symbols })
    }

    /// Parses what [`truth_json`](Self::truth_json) wrote back into
    /// [`SymbolTruth`]s (trading state left at its default).
    ///
    /// # Errors
    /// When the text is not such a document.
    pub fn parse_truth(text: &str) -> Result<BTreeMap<String, SymbolTruth>, String> {
        let doc: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let syms = doc.get("symbols").and_then(|s| s.as_object()).ok_or("no \"symbols\" object")?;
        let mut out = BTreeMap::new();
        for (name, v) in syms {
            let int = |k: &str| v.get(k).and_then(serde_json::Value::as_i64).ok_or(format!("{name}: no {k}"));
            let small =
                |k: &str| int(k).and_then(|x| u32::try_from(x).map_err(|_| format!("{name}: bad {k}")));
            let t = SymbolTruth {
                locate: u16::try_from(int("locate")?).map_err(|_| format!("{name}: bad locate"))?,
                bid_px: int("bid_px")?,
                bid_sz: small("bid_sz")?,
                ask_px: int("ask_px")?,
                ask_sz: small("ask_sz")?,
                last_px: int("last_px")?,
                last_sz: small("last_sz")?,
                symbol_seq: small("symbol_seq")?,
                updates: int("updates")? as u64,
                updates_delivered: int("updates_delivered")? as u64,
                ..SymbolTruth::default()
            };
            out.insert(name.clone(), t);
        }
        Ok(out)
    }

    /// Writes [`truth_json`](Self::truth_json) to `path` atomically (a
    /// temporary file beside it, then a rename).
    ///
    /// # Errors
    /// I/O errors.
    pub fn write_truth(&self, path: &std::path::Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, self.truth_json().to_string())?;
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod truth_tests {
    use super::*;

    #[test]
    fn truth_round_trips_through_json() {
        let t = SymbolTruth {
            locate: 7,
            bid_px: 1_234_500,
            bid_sz: 300,
            ask_px: 1_235_000,
            ask_sz: 100,
            last_px: 1_234_700,
            last_sz: 50,
            symbol_seq: 42,
            updates: 42,
            updates_delivered: 40,
            ..SymbolTruth::default()
        };
        let r = Report { last: [("AAPL".to_string(), t)].into_iter().collect(), ..Report::default() };
        let back = Report::parse_truth(&r.truth_json().to_string()).unwrap();
        assert_eq!(back.get("AAPL"), Some(&t));
        assert!(Report::parse_truth("{\"symbols\": {\"X\": {}}}").unwrap_err().contains("X: no locate"));
    }
}
