//! Slow clients never hurt fast ones: a client that reads slowly sees
//! conflation (latest value per symbol with skip counts) and is closed with
//! 4008; a client that stops reading is dropped; a fast client receives every
//! update in order throughout, and gateway memory stays bounded: a
//! connection that stops reading holds at most `--queue-capacity` queued
//! updates plus one pending entry per subscribed symbol, whatever the feed
//! sends meanwhile.

mod common;

use common::*;
use futures_util::StreamExt;
use prost::Message as _;
use quotecast_proto::v1::server_message::Body;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

const SYMBOLS: u16 = 20;

/// Resident memory of this process (the gateway runs in it), bytes.
fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    s.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4096
}

/// One round of the feed: 200 quotes over the symbols, 10 per packet.
fn send_round(feed: &mut FeedSender, round: i64) {
    for p in 0..20i64 {
        let msgs: Vec<_> = (0..10i64)
            .map(|k| {
                let loc = ((p * 10 + k) % i64::from(SYMBOLS)) as u16 + 1;
                quote(loc, 1_000_000 + round * 100 + k)
            })
            .collect();
        feed.send(&msgs);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_reader_is_conflated_then_closed_while_fast_reader_keeps_pace() {
    let gw = Gw::start_with(|c| {
        c.ws.queue_capacity = 1024;
        c.ws.slow_client_timeout_ms = 2500;
        c.ws.send_buffer_bytes = 16 * 1024;
        c.ws.max_batch_bytes = 2048;
    })
    .await;
    let mut feed = gw.sender("S1");
    let names: Vec<String> = (1..=SYMBOLS).map(|i| format!("S{i}")).collect();
    let dirs: Vec<_> = (1..=SYMBOLS).map(|i| dir(i, &names[i as usize - 1])).collect();
    feed.send(&dirs);
    gw.until("directory", |r| r.core.book.len() == SYMBOLS as usize).await;

    let subscribe = json!({"op":"subscribe","symbols":names});
    let mut fast = Client::connect(&gw.ws_url("")).await;
    fast.send_json(subscribe.clone()).await;
    fast.json().await;
    let mut slow = Client::connect_small_buffer(&gw.ws_url(""), gw.running.ws_addr).await;
    slow.send_json(subscribe.clone()).await;
    slow.json().await;
    let mut stopped = Client::connect_small_buffer(&gw.ws_url(""), gw.running.ws_addr).await;
    stopped.send_json(subscribe).await;

    // The slow client reads one message every 5 ms (about a third of the
    // feed rate), in its own task.
    let slow_task = tokio::spawn(async move {
        let mut last: HashMap<String, u64> = HashMap::new();
        let mut skipped_seen = 0u64;
        loop {
            tokio::time::sleep(Duration::from_millis(5)).await;
            match slow.next().await {
                Got::Server(m) => {
                    if let Some(Body::Updates(b)) = m.body {
                        for u in b.updates {
                            if let Some(prev) = last.get(&u.symbol) {
                                if !u.snapshot {
                                    assert_eq!(
                                        u.seq,
                                        prev + 1 + u.skipped,
                                        "gap not explained by skip count"
                                    );
                                }
                            }
                            skipped_seen += u.skipped;
                            last.insert(u.symbol.clone(), u.seq);
                        }
                    }
                }
                Got::Closed(c) => return (c, skipped_seen),
                Got::Json(_) => {}
            }
        }
    });

    // Fast client: read everything, in order, while the feed runs hard.
    let fast_task = tokio::spawn(async move {
        let mut next: HashMap<String, u64> = HashMap::new();
        let mut count = 0u64;
        while count < 120_000 {
            for u in fast.updates().await {
                let want = next.entry(u.symbol.clone()).or_insert(u.seq);
                assert_eq!(u.skipped, 0, "fast client must never be conflated");
                assert_eq!(u.seq, *want, "fast client missed or repeated an update");
                *want += 1;
                if !u.snapshot {
                    count += 1;
                }
            }
        }
        count
    });

    let rss_before = rss_bytes();
    let mut max_rss = rss_before;
    for round in 0..600i64 {
        // 200 updates per round, 10 per packet: 120,000 updates in ~6 s.
        send_round(&mut feed, round);
        tokio::time::sleep(Duration::from_millis(10)).await;
        max_rss = max_rss.max(rss_bytes());
    }
    let delivered = tokio::time::timeout(Duration::from_secs(20), fast_task).await.unwrap().unwrap();
    assert_eq!(delivered, 120_000);
    // Per-connection queues are bounded: memory grew by far less than the
    // 120,000 updates x 3 clients it would take to queue everything (about
    // 25 MiB here). The bound follows the configuration: each connection
    // holds at most 2 x (capacity + symbols) entries (its mailbox and the
    // batch its writer is blocked on), each well under ENTRY_BYTES (a
    // 48-byte queue slot, its shared encoding, its copy in a frame), plus
    // slack for the allocator and runtime (1-4 MiB measured here).
    const ENTRY_BYTES: u64 = 512;
    const SLACK: u64 = 8 << 20;
    let capacity = gw.running.core.config.ws.queue_capacity as u64;
    let held = 3 * 2 * (capacity + u64::from(SYMBOLS));
    let rss_bound = held * ENTRY_BYTES + SLACK;
    let grown = max_rss.saturating_sub(rss_before);
    assert!(
        grown < rss_bound,
        "RSS grew by {} KiB, more than {} KiB for 3 connections x 2 x (queue capacity {capacity} + {SYMBOLS} symbols)",
        grown >> 10,
        rss_bound >> 10
    );
    eprintln!("RSS grew by {} KiB (bound {} KiB)", grown >> 10, rss_bound >> 10);

    let (close, skipped) = tokio::time::timeout(Duration::from_secs(20), slow_task).await.unwrap().unwrap();
    assert!(skipped > 0, "the slow client must see conflation counts (closed with {close:?})");
    let (code, reason) = close.expect("slow client gets a close frame");
    assert_eq!(code, 4008);
    assert!(reason.contains("slow consumer"), "{reason}");

    // The stopped client never read: the gateway dropped it as slow.
    gw.until("stopped client dropped", |r| r.core.ws.slow_closes.load(Relaxed) >= 2).await;
    assert!(gw.running.core.ws.conflated.load(Relaxed) > 0);
    drop(stopped.ws.next());
    gw.stop().await;
}

/// The mailbox's promise, counted exactly: a client stops reading while the
/// feed sends far more than `--queue-capacity` updates, then reads again.
/// Everything it receives after the stall was held for it at the moment the
/// feed stopped: in the kernel's and tungstenite's buffers (a few KiB), in
/// the one drained batch the writer was blocked on, and in the mailbox. The
/// rest must have been conflated away, each skip counted. So the updates
/// received are at most 2 x (capacity + symbols) plus what the byte
/// buffers can carry (counted in the smallest entry received); an unbounded (or much larger) queue delivers every
/// one of the updates instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connection_holds_at_most_capacity_plus_one_entry_per_symbol() {
    const CAPACITY: usize = 256;
    const SEND_BUFFER: usize = 4096;
    const RECV_BUFFER: usize = 4096; // Client::connect_small_buffer
    const MAX_BATCH: usize = 1024;
    const MAX_WRITE_BUFFER: usize = 2 * MAX_BATCH;
    const ROUNDS: i64 = 100; // x 200 updates
    let gw = Gw::start_with(|c| {
        c.ws.queue_capacity = CAPACITY;
        // The stall must not end in a 4008: this test is about what is held.
        c.ws.slow_client_timeout_ms = 30_000;
        c.ws.send_buffer_bytes = SEND_BUFFER;
        c.ws.max_batch_bytes = MAX_BATCH;
        c.ws.max_write_buffer_bytes = MAX_WRITE_BUFFER;
    })
    .await;
    let mut feed = gw.sender("S2");
    let names: Vec<String> = (1..=SYMBOLS).map(|i| format!("S{i}")).collect();
    let dirs: Vec<_> = (1..=SYMBOLS).map(|i| dir(i, &names[i as usize - 1])).collect();
    feed.send(&dirs);
    gw.until("directory", |r| r.core.book.len() == SYMBOLS as usize).await;

    let mut c = Client::connect_small_buffer(&gw.ws_url(""), gw.running.ws_addr).await;
    c.send_json(json!({"op":"subscribe","symbols":names})).await;
    // Ack, then one snapshot per symbol: the starting point of each count.
    c.json().await;
    let mut last: HashMap<String, u64> = HashMap::new();
    while last.len() < SYMBOLS as usize {
        for u in c.updates().await {
            assert!(u.snapshot, "no feed yet: only snapshots");
            last.insert(u.symbol.clone(), u.seq);
        }
    }
    let start = last.clone();

    // The client stops reading; the feed sends 20,000 updates, 1,000 per
    // symbol (paced so the gateway's UDP buffer never overflows).
    for round in 0..ROUNDS {
        send_round(&mut feed, round);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sent = (ROUNDS * 200) as u64;
    let per_symbol = sent / u64::from(SYMBOLS);
    let ids: Vec<_> = names.iter().map(|n| gw.running.core.book.id(&n.parse().unwrap()).unwrap()).collect();
    let final_seq: HashMap<String, u64> = names.iter().map(|n| (n.clone(), start[n] + per_symbol)).collect();
    gw.until("every update published to the hub", |r| {
        ids.iter().zip(&names).all(|(id, n)| r.core.hub.last(*id).is_some_and(|q| q.seq == final_seq[n]))
    })
    .await;

    // Read again until every symbol's latest value arrived.
    let (mut received, mut skipped, mut conflated) = (0u64, 0u64, 0u64);
    let mut min_entry = usize::MAX;
    while names.iter().any(|n| last[n] < final_seq[n]) {
        for u in c.updates().await {
            assert!(!u.snapshot, "{}: a second snapshot", u.symbol);
            let prev = last[&u.symbol];
            assert_eq!(u.seq, prev + 1 + u.skipped, "{}: gap not explained by skip count", u.symbol);
            received += 1;
            // Its size inside the batch: field tag, length, body.
            min_entry = min_entry.min(2 + u.encoded_len());
            skipped += u.skipped;
            conflated += u64::from(u.skipped > 0);
            last.insert(u.symbol.clone(), u.seq);
        }
    }
    assert_eq!(received + skipped, sent, "every update delivered or counted as skipped");
    // One pending entry per symbol in the mailbox, one in the batch the
    // writer was blocked on.
    assert!(conflated <= 2 * u64::from(SYMBOLS), "{conflated} conflated entries: more than two per symbol");

    // Kernel buffers: Linux doubles SO_SNDBUF/SO_RCVBUF for its bookkeeping.
    let buffered_bytes = 2 * SEND_BUFFER + 2 * RECV_BUFFER + MAX_WRITE_BUFFER + MAX_BATCH;
    let held = 2 * (CAPACITY + SYMBOLS as usize);
    let bound = (held + buffered_bytes / min_entry) as u64;
    assert!(
        received <= bound,
        "a stalled connection was delivered {received} of {sent} updates after its stall; \
         the gateway may hold at most {held} entries (2 x (queue capacity {CAPACITY} + {SYMBOLS} \
         symbols)) plus {buffered_bytes} bytes in buffers ({min_entry}-byte entries), {bound} updates: its queue is not bounded"
    );
    let stats = &gw.running.core.ws;
    assert_eq!(stats.slow_closes.load(Relaxed), 0, "the stall stayed within the slow-client timeout");
    assert_eq!(stats.conflated.load(Relaxed), skipped);
    eprintln!("stalled client: {received} updates received, {skipped} skipped, bound {bound} ({min_entry} B entries)");
    gw.stop().await;
}
