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
