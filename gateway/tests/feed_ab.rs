//! A/B line arbitration end to end: the same packets (built once, the same
//! bytes) sent on two loopback multicast groups, line A and line B, with
//! faults on one line, on both, or a stray on one. A subscribed bystander
//! sees what the merged feed says; per-line counters equal what was put on
//! each line.

mod common;

use common::*;
use gateway::ingest::lines::Line;
use quotecast_proto::v1::server_message::Body;
use quotecast_proto::v1::status::{Reason, State};
use serde_json::json;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// A gateway with lines A and B, and one sender per line (same session).
struct Ab {
    gw: Gw,
    a: FeedSender,
    b: FeedSender,
}

impl Ab {
    async fn start(f: impl FnOnce(&mut gateway::Config)) -> Ab {
        let (group_b, port_b) = unique_feed();
        let gw = Gw::start_with(|cfg| {
            cfg.feed.group_b = Some(group_b);
            cfg.feed.port_b = Some(port_b);
            // Long enough that a copy on the other line sent after a whole
            // burst on this one still fills the hole.
            cfg.feed.reorder_hold_us = 300_000;
            cfg.feed.reorder_window = 64;
            f(cfg);
        })
        .await;
        let a = gw.sender("AB");
        let b = FeedSender::new(group_b, port_b, "AB");
        Ab { gw, a, b }
    }

    fn stats(&self) -> &gateway::ingest::FeedStats {
        &self.gw.running.core.feed
    }

    /// Per-line (packets, won, redundant, missed messages).
    fn line(&self, l: Line) -> (u64, u64, u64, u64) {
        let s = self.stats().line(l);
        (
            s.packets.load(Relaxed),
            s.won.load(Relaxed),
            s.redundant.load(Relaxed),
            s.missed_messages.load(Relaxed),
        )
    }

    /// Sends the directory and first quotes of AAPL (1) and MSFT (2) on A,
    /// then on B once A's copy is applied (A wins it, B's is redundant),
    /// and subscribes a bystander past its snapshots.
    async fn setup(&mut self) -> Client {
        let p = self.a.build(&[dir(1, "AAPL"), dir(2, "MSFT"), quote(1, 1_000_000), quote(2, 2_000_000)]);
        self.a.raw(&p);
        self.gw.until("directory applied", |r| r.core.feed.messages.load(Relaxed) == 4).await;
        self.b.raw(&p);
        self.gw.until("line B's copy seen", |r| r.core.feed.line(Line::B).packets.load(Relaxed) == 1).await;
        let mut c = Client::connect(&self.gw.ws_url("")).await;
        c.send_json(json!({"op":"subscribe","symbols":["AAPL","MSFT"]})).await;
        assert_eq!(c.json().await["accepted"], json!(["AAPL", "MSFT"]));
        let mut snaps = 0;
        while snaps < 2 {
            snaps += c.updates().await.len();
        }
        c
    }

    /// `n` one-quote packets alternating AAPL and MSFT, built once; the
    /// bid of packet `i` is `base + i`.
    fn build(&mut self, n: usize, base: i64) -> Vec<Vec<u8>> {
        (0..n).map(|i| self.a.build(&[quote(1 + (i % 2) as u16, base + i as i64)])).collect()
    }
}

/// Reads `n` updates; any status message (stale, recovered) fails.
async fn updates(c: &mut Client, n: usize) -> Vec<(String, u64, bool, i64)> {
    let mut got = Vec::new();
    while got.len() < n {
        match c.server().await {
            Body::Updates(b) => {
                got.extend(b.updates.into_iter().map(|u| (u.symbol, u.seq, u.stale, u.bid_px)))
            }
            other => panic!("bystander got {other:?} after {} updates", got.len()),
        }
    }
    got
}

/// The updates that `n` packets of [`Ab::build`] must produce, in order,
/// after the setup (each symbol's seq 1 was its snapshot).
fn expected(n: usize, base: i64) -> Vec<(String, u64, bool, i64)> {
    (0..n)
        .map(|i| {
            let sym = if i % 2 == 0 { "AAPL" } else { "MSFT" };
            (sym.to_string(), 2 + (i / 2) as u64, false, base + i as i64)
        })
        .collect()
}

fn load(a: &std::sync::atomic::AtomicU64) -> u64 {
    a.load(Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_on_line_a_only_is_covered_by_line_b_without_a_gap() {
    let mut ab = Ab::start(|_| {}).await;
    let mut c = ab.setup().await;
    let n = 20;
    let pkts = ab.build(n, 3_000_000);
    let dropped_on_a = [3usize, 7, 8, 15];
    // All of line A first (with its losses), then all of line B: which
    // line wins each packet is then known exactly.
    for (i, p) in pkts.iter().enumerate() {
        if !dropped_on_a.contains(&i) {
            ab.a.raw(p);
        }
    }
    let sent_a = 1 + (n - dropped_on_a.len()) as u64;
    ab.gw.until("line A received", |r| r.core.feed.line(Line::A).packets.load(Relaxed) == sent_a).await;
    for p in &pkts {
        ab.b.raw(p);
    }
    assert_eq!(updates(&mut c, n).await, expected(n, 3_000_000), "every update, in order, fresh");
    // Line A's holes count as its losses once the reorder hold is over.
    ab.gw.until("line A's losses counted", |_| ab.line(Line::A).3 == 4).await;
    ab.gw.until("line B's copies counted", |_| ab.line(Line::B).0 == 1 + n as u64).await;
    assert_eq!(ab.line(Line::A), (sent_a, sent_a, 0, 4), "A: received, won, redundant, missed");
    assert_eq!(
        ab.line(Line::B),
        (1 + n as u64, 4, 1 + n as u64 - 4, 0),
        "B: received, won, redundant, missed"
    );
    let f = ab.stats();
    assert_eq!((load(&f.gaps), load(&f.missed_messages), load(&f.duplicate_packets)), (0, 0, 0));
    // Every packet applied while a later one waited: line B's 4 fills and
    // 12 of line A's 13 held packets (the last released finds none held).
    assert_eq!(load(&f.reordered_packets), 16);
    assert_eq!(load(&f.stale_symbols), 0);
    assert_eq!(load(&f.packets), sent_a + 1 + n as u64);
    assert!(f.line(Line::A).up.load(Relaxed) && f.line(Line::B).up.load(Relaxed));
    assert!(f.ready(), "{}", f.readiness().1);
    // The same numbers on /metrics.
    let text = ab.gw.running.core.metrics.render(&ab.gw.running.core);
    for (line, want) in [("a", [sent_a, sent_a, 0, 4]), ("b", [21, 4, 17, 0])] {
        for (name, v) in
            ["received_packets", "won_packets", "redundant_packets", "missed_messages"].iter().zip(want)
        {
            let series = format!("quotecast_feed_line_{name}_total{{line=\"{line}\"}} {v}\n");
            assert!(text.contains(&series), "{series} not in\n{text}");
        }
    }
    assert!(text.contains("quotecast_feed_line_up{line=\"b\"} 1\n"));
    ab.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_of_the_same_packet_on_both_lines_is_a_gap() {
    let mut ab = Ab::start(|cfg| cfg.feed.reorder_hold_us = 20_000).await;
    let mut c = ab.setup().await;
    let pkts = ab.build(6, 4_000_000);
    for (i, p) in pkts.iter().enumerate() {
        if i != 2 {
            ab.a.raw(p);
            ab.b.raw(p);
        }
    }
    // Packets 0 and 1, then the gap (stale), then 3..5 (stale until each
    // symbol's next quote: 3 is MSFT's, 4 AAPL's... all quotes refresh).
    let mut seen = Vec::new();
    let status = loop {
        match c.server().await {
            Body::Updates(b) => seen.extend(b.updates.into_iter().map(|u| (u.symbol, u.seq, u.stale))),
            Body::Status(s) => break (s.state(), s.reason()),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(status, (State::Stale, Reason::FeedGap));
    assert_eq!(seen, vec![("AAPL".to_string(), 2, false), ("MSFT".to_string(), 2, false)]);
    let f = ab.stats();
    ab.gw.until("both lines' losses counted", |_| ab.line(Line::A).3 == 1 && ab.line(Line::B).3 == 1).await;
    assert_eq!((load(&f.gaps), load(&f.missed_messages), load(&f.duplicate_packets)), (1, 1, 0));
    ab.gw.until("every copy seen", |r| r.core.feed.packets.load(Relaxed) == 2 * 6).await;
    let (a, b) = (ab.line(Line::A), ab.line(Line::B));
    assert_eq!((a.1 + b.1, a.2 + b.2), (1 + 5, 1 + 5), "each packet won once, its other copy redundant");
    ab.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_line_b_is_reported_down_while_the_feed_stays_up() {
    let mut ab = Ab::start(|cfg| cfg.feed.feed_timeout_ms = 400).await;
    let mut c = ab.setup().await;
    let f = ab.gw.running.core.feed.clone();
    assert!(f.line(Line::B).up.load(Relaxed), "line B brought the setup packet");
    // Line B goes silent; line A keeps quoting, then heartbeating (every
    // 50 ms, well inside the timeout) until line B is reported down.
    for i in 0..6 {
        // Built as sent, so each heartbeat carries the next sequence.
        ab.a.send(&[quote(1 + (i % 2) as u16, 5_000_000 + i as i64)]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t0 = std::time::Instant::now();
    while f.line(Line::B).up.load(Relaxed) {
        assert!(t0.elapsed() < Duration::from_secs(10), "line B never reported down");
        ab.a.heartbeat();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(updates(&mut c, 6).await, expected(6, 5_000_000), "no stale status");
    assert!(f.up.load(Relaxed) && f.line(Line::A).up.load(Relaxed), "line A keeps the feed up");
    assert_eq!((load(&f.stale_symbols), load(&f.gaps)), (0, 0));
    assert!(f.ready(), "{}", f.readiness().1);
    let text = ab.gw.running.core.metrics.render(&ab.gw.running.core);
    assert!(text.contains("quotecast_feed_line_up{line=\"b\"} 0\n"), "{text}");
    assert!(text.contains("quotecast_feed_line_up{line=\"a\"} 1\n"));
    assert!(text.contains("quotecast_feed_line_enabled{line=\"b\"} 1\n"));
    assert!(text.contains("quotecast_feed_up 1\n"));
    // Line B comes back: up again, its copies redundant.
    ab.b.heartbeat();
    ab.gw.until("line B up", |r| r.core.feed.line(Line::B).up.load(Relaxed)).await;
    ab.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_on_line_a_ahead_of_line_b_copy_is_no_gap() {
    let mut ab = Ab::start(|_| {}).await;
    let mut c = ab.setup().await;
    let pkts = ab.build(4, 8_000_000);
    // Line A loses its last packet before a heartbeat; line B's copy comes
    // after that heartbeat (one line alone would have had a gap at once).
    for p in &pkts[..3] {
        ab.a.raw(p);
    }
    ab.a.heartbeat();
    ab.gw.until("line A's heartbeat seen", |r| r.core.feed.heartbeats.load(Relaxed) == 1).await;
    for p in &pkts {
        ab.b.raw(p);
    }
    assert_eq!(updates(&mut c, 4).await, expected(4, 8_000_000));
    ab.gw.until("line A's loss counted", |_| ab.line(Line::A).3 == 1).await;
    let f = ab.stats();
    assert_eq!((load(&f.gaps), load(&f.missed_messages), load(&f.stale_symbols)), (0, 0, 0));
    assert_eq!((ab.line(Line::A).1, ab.line(Line::B).1), (1 + 3, 1), "B won only the packet A lost");
    ab.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_on_line_b_is_suspect_and_changes_nothing() {
    let mut ab = Ab::start(|cfg| cfg.feed.sources = vec![Ipv4Addr::LOCALHOST]).await;
    let mut c = ab.setup().await;
    let live = ab.a.builder.session();
    let next = ab.a.builder.next_seq();
    let mut evil = FeedSender::new(Ipv4Addr::UNSPECIFIED, 0, "EVIL");
    let strays: Vec<Vec<u8>> = vec![
        // Another session, data and a heartbeat.
        evil.build(&[dir(1, "MSFT"), quote(1, 9_999_900)]),
        quotecast_proto::feed::header(evil.builder.session(), 1, 0).to_vec(),
        // The live session far ahead.
        quotecast_proto::feed::header(live, next + 1_000_000_000, 0).to_vec(),
    ];
    // A replay tool's burst on line B: a proven run of its own session,
    // never followed while line A is live.
    let strays: Vec<Vec<u8>> =
        strays.into_iter().chain((0..5).map(|i| evil.build(&[quote(1, 9_000_000 + i)]))).collect();
    for s in &strays {
        ab.b.raw(s);
    }
    // The live session's next packet from another host, on line B only.
    let forged = {
        let mut b = quotecast_proto::feed::PacketBuilder::new(live, next, 1400);
        assert!(b.push(&quote(1, 9_999_900)));
        b.finish().to_vec()
    };
    let b = ab.gw.running.core.config.feed.line_b().unwrap();
    let line_b_dest = SocketAddrV4::new(b.group, b.port);
    multicast_sender_from(Ipv4Addr::new(127, 0, 0, 2)).send_to(&forged, line_b_dest).unwrap();
    // Read before the live feed goes on (else line A's next packets could
    // be read first, and the burst, proven, would take over once the test
    // stops sending: the rule for a sender that went silent).
    ab.gw.until("strays read", |r| r.core.feed.line(Line::B).packets.load(Relaxed) == 1 + 8 + 1).await;
    // The live feed goes on, on both lines.
    let pkts = ab.build(4, 6_000_000);
    for p in &pkts {
        ab.a.raw(p);
        ab.b.raw(p);
    }
    assert_eq!(updates(&mut c, 4).await, expected(4, 6_000_000));
    let f = ab.stats();
    ab.gw
        .until("every stray counted", |_| {
            (f.suspect("foreign_session"), f.suspect("seq_jump"), f.suspect("source_not_allowed"))
                == (7, 1, 1)
        })
        .await;
    ab.gw
        .until("every copy seen", |r| r.core.feed.line(Line::B).packets.load(Relaxed) == 1 + 8 + 1 + 4)
        .await;
    assert_eq!(
        (load(&f.gaps), load(&f.restarts), load(&f.duplicate_packets), load(&f.stale_symbols)),
        (0, 0, 0, 0)
    );
    assert_eq!(load(&f.next_seq), ab.a.builder.next_seq());
    assert_eq!(ab.line(Line::A).0, 1 + 4, "strays were on line B only");
    assert_eq!(ab.line(Line::B).3, 0, "a stray opens no hole on line B");
    let (a, b) = (ab.line(Line::A), ab.line(Line::B));
    assert_eq!((a.1 + b.1, a.2 + b.2), (5, 5), "strays neither win nor lose");
    let book = &ab.gw.running.core.book;
    let aapl = book.get(book.id(&quotecast_proto::feed::Symbol::new("AAPL").unwrap()).unwrap()).unwrap();
    assert_eq!((aapl.bid_px, aapl.stale), (6_000_002, false));
    ab.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_lines_reordered_differently_is_no_gap() {
    let mut ab = Ab::start(|cfg| cfg.feed.reorder_hold_us = 50_000).await;
    let mut c = ab.setup().await;
    let n = 12;
    let pkts = ab.build(n, 7_000_000);
    let order_a = [0usize, 2, 1, 3, 4, 5, 7, 6, 8, 9, 10, 11];
    let order_b = [0usize, 1, 2, 4, 3, 5, 6, 8, 7, 9, 11, 10];
    for (ia, ib) in order_a.iter().zip(order_b) {
        ab.a.raw(&pkts[*ia]);
        ab.b.raw(&pkts[ib]);
    }
    assert_eq!(updates(&mut c, n).await, expected(n, 7_000_000));
    let f = ab.stats();
    ab.gw.until("every copy seen", |r| r.core.feed.packets.load(Relaxed) == 2 * (1 + n as u64)).await;
    // Give the lines' holes time to be filled or expire.
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!((load(&f.gaps), load(&f.missed_messages), load(&f.duplicate_packets)), (0, 0, 0));
    assert_eq!(load(&f.stale_symbols), 0);
    let (a, b) = (ab.line(Line::A), ab.line(Line::B));
    assert_eq!((a.3, b.3), (0, 0), "a line's own reorder is not a loss");
    assert_eq!((a.1 + b.1, a.2 + b.2), (1 + n as u64, 1 + n as u64), "each won once, its copy redundant");
    ab.gw.stop().await;
}
