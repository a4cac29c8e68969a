//! Slow clients never hurt fast ones: a client that reads slowly sees
//! conflation (latest value per symbol with skip counts) and is closed with
//! 4008; a client that stops reading is dropped; a fast client receives every
//! update in order throughout, and gateway memory stays bounded.

mod common;

use common::*;
use futures_util::StreamExt;
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
        for p in 0..20i64 {
            let msgs: Vec<_> = (0..10i64)
                .map(|k| {
                    let loc = ((p * 10 + k) % i64::from(SYMBOLS)) as u16 + 1;
                    quote(loc, 1_000_000 + round * 100 + k)
                })
                .collect();
            feed.send(&msgs);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        max_rss = max_rss.max(rss_bytes());
    }
    let delivered = tokio::time::timeout(Duration::from_secs(20), fast_task).await.unwrap().unwrap();
    assert_eq!(delivered, 120_000);

    let (close, skipped) = tokio::time::timeout(Duration::from_secs(20), slow_task).await.unwrap().unwrap();
    assert!(skipped > 0, "the slow client must see conflation counts");
    let (code, reason) = close.expect("slow client gets a close frame");
    assert_eq!(code, 4008);
    assert!(reason.contains("slow consumer"), "{reason}");

    // The stopped client never read: the gateway dropped it as slow.
    gw.until("stopped client dropped", |r| r.core.ws.slow_closes.load(Relaxed) >= 2).await;
    assert!(gw.running.core.ws.conflated.load(Relaxed) > 0);
    drop(stopped.ws.next());
    // Per-connection queues are bounded: memory grew by far less than the
    // 120,000 updates x 3 clients it would take to queue everything.
    assert!(max_rss - rss_before < 64 << 20, "RSS grew by {} MiB", (max_rss - rss_before) >> 20);
    gw.stop().await;
}
