//! The snapshot channel: loops the full state of every symbol on its own
//! multicast group, paced in symbols per second (MDP3 snapshot-loop
//! style), so a late or damaged receiver can rebuild its book.
//!
//! Runs inside the send loop, on the sender thread, between ticks: the
//! market's state then is exactly the state after every message sequenced
//! so far, so each snapshot's `feed_seq` is exact without any locking.
//!
//! ```text
//! send_loop ─► SnapshotLoop::emit(market, last feed seq, t)
//!                B(cycle, N) X(locate 1) ... X(locate N) E(cycle, N) B(cycle+1) ...
//!                ─► PacketBuilder (own sequence from 1) ─► UDP multicast
//! ```

use std::io;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use metrics::{counter, Counter};
use quotecast_proto::feed::{
    Message, PacketBuilder, SessionId, BLOCK_PREFIX_LEN, HEADER_LEN, SYMBOL_SNAPSHOT_LEN,
};

use crate::market::Market;
use crate::report::SnapshotReport;
use crate::telemetry::{SNAPSHOT_CYCLES, SNAPSHOT_PACKETS, SNAPSHOT_SYMBOLS};

/// The snapshot channel's sender state.
pub(crate) struct SnapshotLoop {
    sock: UdpSocket,
    /// Numbers the channel's own messages from 1.
    builder: PacketBuilder,
    /// Symbol snapshots per second.
    rate: f64,
    /// Symbol snapshots owed-and-sent or skipped so far (pacing).
    paced: u64,
    /// Snapshots sent together: what fills a datagram (or every symbol, if
    /// fewer), so the channel sends full packets rather than one per symbol.
    batch: u64,
    /// Index of the next symbol of the current cycle; 0 = a cycle begins.
    next: usize,
    /// Number of the current (or next) cycle, from 1.
    cycle: u32,
    report: SnapshotReport,
    m: Handles,
}

struct Handles {
    cycles: Counter,
    symbols: Counter,
    packets: Counter,
}

impl SnapshotLoop {
    /// A loop sending on `sock` (connected to the snapshot group) at `rate`
    /// symbols per second, in datagrams of at most `max_len` bytes.
    pub fn new(sock: UdpSocket, session: SessionId, rate: u64, max_len: usize, symbols: usize) -> Self {
        let per_packet =
            (max_len.saturating_sub(HEADER_LEN) / (BLOCK_PREFIX_LEN + SYMBOL_SNAPSHOT_LEN)).max(1);
        SnapshotLoop {
            batch: per_packet.min(symbols.max(1)) as u64,
            sock,
            builder: PacketBuilder::new(session, 1, max_len),
            rate: rate.max(1) as f64,
            paced: 0,
            next: 0,
            cycle: 1,
            report: SnapshotReport::default(),
            m: Handles {
                cycles: counter!(SNAPSHOT_CYCLES),
                symbols: counter!(SNAPSHOT_SYMBOLS),
                packets: counter!(SNAPSHOT_PACKETS),
            },
        }
    }

    /// When the next batch of symbol snapshots is due, `start` being the
    /// session start.
    pub fn next_due(&self, start: Instant) -> Instant {
        start + Duration::from_secs_f64((self.paced + self.batch) as f64 / self.rate)
    }

    /// Sends the symbol snapshots due by `t` seconds into the session (once
    /// a datagram's worth is due), each reflecting the live feed up to
    /// `feed_seq`. A backlog of more than
    /// one cycle (a stalled sender) is skipped, not sent in a burst.
    ///
    /// # Errors
    /// A failed send.
    pub fn emit(&mut self, market: &Market, feed_seq: u64, t: f64) -> io::Result<()> {
        let due = (self.rate * t) as u64;
        let mut owed = due.saturating_sub(self.paced);
        let n = market.len();
        if owed > n as u64 {
            self.paced += owed - n as u64;
            owed = n as u64;
        }
        if owed < self.batch {
            return Ok(());
        }
        let symbols = n as u16;
        for _ in 0..owed {
            if self.next == 0 {
                self.push(&Message::SnapshotBegin { cycle: self.cycle, symbols, feed_seq })?;
            }
            self.push(&Message::SymbolSnapshot(market.snapshot(self.next, feed_seq)))?;
            self.report.snapshots += 1;
            self.m.symbols.increment(1);
            self.next += 1;
            if self.next == n {
                self.push(&Message::SnapshotEnd { cycle: self.cycle, symbols, feed_seq })?;
                self.report.cycles += 1;
                self.m.cycles.increment(1);
                self.cycle = self.cycle.wrapping_add(1).max(1);
                self.next = 0;
            }
        }
        self.paced += owed;
        self.flush()
    }

    fn push(&mut self, m: &Message) -> io::Result<()> {
        if !self.builder.push(m) {
            self.flush()?;
            let pushed = self.builder.push(m);
            debug_assert!(pushed, "an empty packet holds any message");
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.builder.is_empty() {
            return Ok(());
        }
        let bytes = self.builder.finish();
        crate::sender::send_whole(&self.sock, bytes)?;
        self.report.packets += 1;
        self.report.bytes += bytes.len() as u64;
        self.m.packets.increment(1);
        Ok(())
    }

    /// What the loop sent.
    pub fn report(&self) -> SnapshotReport {
        self.report.clone()
    }
}
