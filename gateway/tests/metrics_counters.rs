//! Counters tell the truth: hand-built feed packets with known faults and
//! WebSocket clients that count what they receive, then the scraped
//! `/metrics` must show exactly those numbers.

mod common;
mod metrics_util;

use common::*;
use futures_util::{SinkExt, StreamExt};
use metrics_util::{http_get, scrape};
use prost::Message as _;
use quotecast_proto::feed::header;
use quotecast_proto::v1::{self, server_message::Body};
use serde_json::json;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// What one client saw.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Seen {
    /// Every WebSocket message (data and control).
    messages: u64,
    /// Quote updates inside update batches (snapshots included).
    updates: u64,
    /// Bytes of the binary messages that carried update batches.
    update_bytes: u64,
}

impl Seen {
    fn count(&mut self, m: &Message) {
        self.messages += 1;
        if let Message::Binary(b) = m {
            if let Some(Body::Updates(batch)) = v1::ServerMessage::decode(b.clone()).unwrap().body {
                self.updates += batch.updates.len() as u64;
                self.update_bytes += b.len() as u64;
            }
        }
    }
}

/// Reads both clients until `a` has `want_a` updates, `b` has `want_b`,
/// and the gateway's own counters say every message it wrote has arrived
/// (frames and updates written equal what the two received). The server
/// writes nothing unprompted here (no feed, pings far off), so then both
/// are done. Fails after 10 s with both sides' numbers.
async fn read_all(gw: &Gw, a: &mut Client, want_a: u64, b: &mut Client, want_b: u64) -> (Seen, Seen) {
    let (mut seen_a, mut seen_b) = (Seen::default(), Seen::default());
    let t0 = std::time::Instant::now();
    loop {
        let ws = &gw.running.core.ws;
        let (frames, updates) = (ws.frames.load(Relaxed), ws.updates.load(Relaxed));
        if seen_a.updates >= want_a
            && seen_b.updates >= want_b
            && frames == seen_a.messages + seen_b.messages
            && updates == seen_a.updates + seen_b.updates
        {
            return (seen_a, seen_b);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "wanted {want_a} + {want_b} updates; received {seen_a:?} and {seen_b:?}; \
             the gateway counted {frames} frames with {updates} updates"
        );
        let gone = |c: &str, s: &Seen| panic!("connection {c} ended early after {s:?}");
        tokio::select! {
            m = a.ws.next() => match m {
                Some(Ok(m)) => seen_a.count(&m),
                _ => gone("a", &seen_a),
            },
            m = b.ws.next() => match m {
                Some(Ok(m)) => seen_b.count(&m),
                _ => gone("b", &seen_b),
            },
            // Re-check the counters: they move after the write completes.
            () = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_counters_equal_what_was_sent_and_received() {
    let gw = Gw::start_with(|c| {
        // Wide enough that the held packets after the hole wait for it.
        c.feed.reorder_hold_us = 5_000;
    })
    .await;
    let metrics = gw.running.metrics_addr;
    // Packets are built with `feed` (its sequence state) and put on the wire
    // through `wire`, so a packet can be sent twice or not at all.
    let mut feed = gw.sender("TRUTH");
    let wire = gw.sender("UNUSED");
    let (mut packets, mut bytes, mut messages) = (0u64, 0u64, 0u64);
    let mut send = |raw: &[u8], msgs: u64| {
        wire.raw(raw);
        packets += 1;
        bytes += raw.len() as u64;
        messages += msgs;
    };

    // Directory: 3 messages.
    let p = feed.build(&[dir(1, "AAPL"), dir(2, "MSFT"), dir(3, "IBM")]);
    send(&p, 3);
    gw.until("directory", |r| r.core.book.len() == 3).await;

    // Two clients: JSON subscribe to AAPL+MSFT (plus one bad request), and
    // URL subscribe to AAPL (binary protocol).
    let mut a = Client::connect(&gw.ws_url("")).await;
    a.send_json(json!({"op":"subscribe","id":"s","symbols":["AAPL","MSFT"]})).await;
    a.ws.send(Message::text("{oops")).await.unwrap();
    let mut b = Client::connect(&gw.ws_url("?symbols=AAPL")).await;
    gw.until("subscriptions", |r| r.core.ws.subscriptions.load(Relaxed) == 3).await;

    // 20 data packets of [quote AAPL, quote MSFT, trade IBM]: #5 is sent
    // twice, #10 never (a hole of 3 messages).
    let mut data = Vec::new();
    for i in 0..20i64 {
        data.push(feed.build(&[quote(1, 1_000_000 + i), quote(2, 2_000_000 + i), trade(3, 300_000 + i)]));
    }
    for (i, p) in data.iter().enumerate() {
        match i {
            10 => {}
            5 => {
                send(p, 3);
                send(p, 0);
            }
            _ => send(p, 3),
        }
    }
    // A message for a locate never announced: applied (counted), unknown.
    let p = feed.build(&[quote(9, 5)]);
    send(&p, 1);
    // One malformed datagram (shorter than a header) and one heartbeat.
    send(b"\x00\x01\x02", 0);
    let hb = header(feed.builder.session(), feed.builder.next_seq(), 0);
    send(&hb, 0);
    let next_seq = feed.builder.next_seq();
    gw.until("every datagram ingested", |r| r.core.feed.packets.load(Relaxed) == packets).await;
    gw.until("the hole declared lost", |r| r.core.feed.gaps.load(Relaxed) == 1).await;

    // After the gap every symbol went stale; the packets held behind the
    // hole then refreshed AAPL and MSFT with quotes, IBM only traded.
    // Snapshots: A 2, B 1; updates after them: 19 per subscribed symbol.
    let (seen_a, seen_b) = read_all(&gw, &mut a, 2 + 19 * 2, &mut b, 1 + 19).await;
    let (status, body) = http_get(gw.running.ws_addr, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    // A counter moves right after the bytes it counts are written: the
    // client can have them a moment before (the connection threads run
    // below the ingest thread's priority).
    let frames = seen_a.messages + seen_b.messages;
    gw.until("the answer and the frames counted", |r| {
        r.core.ws.http_requests.load(std::sync::atomic::Ordering::Relaxed) == 1
            && r.core.ws.frames.load(std::sync::atomic::Ordering::Relaxed) == frames
    })
    .await;

    let s = scrape(metrics).await;
    // Feed: exactly what was put on the wire.
    assert_eq!(packets, 1 + 19 + 1 + 1 + 1 + 1, "test bookkeeping");
    assert_eq!(s.count("quotecast_feed_received_packets_total"), packets);
    assert_eq!(s.count("quotecast_feed_received_bytes_total"), bytes);
    assert_eq!(messages, 3 + 19 * 3 + 1, "test bookkeeping");
    assert_eq!(s.count("quotecast_feed_received_messages_total"), messages);
    assert_eq!(s.count("quotecast_feed_gaps_total"), 1);
    assert_eq!(s.count("quotecast_feed_missed_messages_total"), 3);
    assert_eq!(s.count("quotecast_feed_duplicate_packets_total"), 1);
    assert_eq!(s.count("quotecast_feed_heartbeats_total"), 1);
    assert_eq!(s.count("quotecast_feed_unknown_locate_messages_total"), 1);
    assert_eq!(s.count("quotecast_feed_decode_errors_total{reason=\"short_header\"}"), 1);
    for reason in gateway::ingest::DECODE_REASONS.iter().filter(|r| **r != "short_header") {
        assert_eq!(s.count(&format!("quotecast_feed_decode_errors_total{{reason=\"{reason}\"}}")), 0);
    }
    assert_eq!(s.count("quotecast_feed_restarts_total"), 0);
    assert_eq!(s.count("quotecast_feed_sessions_ended_total"), 0);
    assert_eq!(s.count("quotecast_feed_next_sequence"), next_seq);
    assert_eq!(next_seq, 1 + 3 + 20 * 3 + 1, "the hole still used its sequence numbers");
    assert_eq!(s.count("quotecast_feed_up"), 1);
    assert!(s.get("quotecast_feed_last_packet_age_seconds") < 60.0);
    assert_eq!(s.count("quotecast_book_symbols"), 3);
    assert_eq!(s.count("quotecast_book_stale_symbols"), 1, "IBM waits for a quote");
    assert_eq!(s.count("quotecast_book_rejected_symbols_total"), 0);

    // WebSocket: exactly what the clients received.
    assert_eq!(s.count("quotecast_ws_connections"), 2);
    assert_eq!(s.count("quotecast_ws_connections_opened_total"), 2);
    assert_eq!(s.count("quotecast_ws_subscriptions"), 3);
    assert_eq!(
        s.count("quotecast_ws_requests_total"),
        2,
        "subscribe + the bad one (URL symbols are not requests)"
    );
    assert_eq!(s.count("quotecast_ws_bad_requests_total"), 1);
    assert_eq!(s.count("quotecast_ws_rate_limited_requests_total"), 0);
    assert_eq!(s.count("quotecast_ws_sent_updates_total"), seen_a.updates + seen_b.updates);
    assert_eq!(seen_a.updates + seen_b.updates, 2 + 38 + 1 + 19);
    assert_eq!(s.count("quotecast_ws_sent_bytes_total"), seen_a.update_bytes + seen_b.update_bytes);
    assert_eq!(s.count("quotecast_ws_sent_frames_total"), seen_a.messages + seen_b.messages);
    assert_eq!(s.count("quotecast_ws_conflated_updates_total"), 0);
    assert_eq!(s.count("quotecast_fanout_conflated_events_total"), 0, "the connection thread kept up");
    assert_eq!(s.count("quotecast_ws_slow_consumer_closes_total"), 0);
    assert_eq!(s.count("quotecast_ws_http_requests_total"), 1);
    let writes = s.count("quotecast_ws_tick_to_send_seconds_count");
    assert!(writes >= 1 && writes <= seen_a.messages + seen_b.messages, "one sample per write with ticks");
    assert_eq!(s.count("quotecast_ws_tick_to_send_seconds_bucket{le=\"+Inf\"}"), writes);

    // A normal close is counted under its reason; the gauges follow.
    a.ws.close(None).await.unwrap();
    assert!(matches!(a.closed().await, Some((1000, _)) | None));
    gw.until("close counted", |r| r.core.ws.closed_with("normal") == 1).await;
    let s = scrape(metrics).await;
    assert_eq!(s.count("quotecast_ws_connections_closed_total{reason=\"normal\"}"), 1);
    assert_eq!(s.count("quotecast_ws_connections_closed_total{reason=\"slow_consumer\"}"), 0);
    assert_eq!(s.count("quotecast_ws_connections"), 1);
    assert_eq!(s.count("quotecast_ws_subscriptions"), 1);
    assert_eq!(s.count("quotecast_ws_connections_opened_total"), 2);
    drop(b);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_answers_only_metrics_and_stops_on_shutdown() {
    let gw = Gw::start().await;
    let addr = gw.running.metrics_addr;
    assert!(addr.ip().is_loopback());
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("# TYPE quotecast_feed_received_packets_total counter"), "{body}");
    assert!(body.contains("quotecast_build_info{"), "{body}");
    // Every family the gateway exports is in the operators' catalogue.
    let catalogue = std::fs::read_to_string(metrics_util::dashboards_dir().join("README.md")).unwrap();
    let missing: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| !catalogue.contains(&format!("`{name}`")))
        .collect();
    assert!(missing.is_empty(), "metrics missing from dashboards/README.md: {missing:?}");
    assert_eq!(http_get(addr, "/nope").await.0, 404);
    gw.stop().await;
    let refused = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr)).await;
    assert!(matches!(refused, Ok(Err(_))), "metrics port still accepting after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_are_counted_by_method_and_code() {
    use quotecast_proto::v1::{
        quote_service_client::QuoteServiceClient, GetSnapshotRequest, ListSymbolsRequest, StreamQuotesRequest,
    };
    let gw = Gw::start().await;
    let mut feed = gw.sender("GRPC");
    feed.send(&[dir(1, "AAPL"), quote(1, 1_000_000)]);
    gw.until("directory", |r| r.core.book.len() == 1).await;
    let mut c = QuoteServiceClient::connect(format!("http://{}", gw.running.grpc_addr)).await.unwrap();
    for _ in 0..3 {
        c.get_snapshot(GetSnapshotRequest { symbols: vec!["AAPL".into()], ..Default::default() })
            .await
            .unwrap();
    }
    let bad =
        c.get_snapshot(GetSnapshotRequest { symbols: vec!["bad sym!".into()], ..Default::default() }).await;
    assert_eq!(bad.unwrap_err().code(), tonic::Code::InvalidArgument);
    c.list_symbols(ListSymbolsRequest {}).await.unwrap();
    let mut stream =
        c.stream_quotes(StreamQuotesRequest { symbols: vec!["AAPL".into()] }).await.unwrap().into_inner();
    stream.message().await.unwrap().expect("the stream's first message");

    let series = |method: &str, code: &str| {
        format!("quotecast_grpc_requests_total{{service=\"quotecast.v1.QuoteService\",method=\"{method}\",code=\"{code}\"}}")
    };
    let in_flight =
        "quotecast_grpc_requests_in_flight{service=\"quotecast.v1.QuoteService\",method=\"StreamQuotes\"}";
    let s = scrape(gw.running.metrics_addr).await;
    assert_eq!(s.count(&series("GetSnapshot", "OK")), 3);
    assert_eq!(s.count(&series("GetSnapshot", "INVALID_ARGUMENT")), 1);
    assert_eq!(s.count(&series("ListSymbols", "OK")), 1);
    assert_eq!(s.count(&series("StreamQuotes", "OK")), 0, "the stream is still open");
    assert_eq!(s.count(in_flight), 1);
    let h = "quotecast_grpc_request_duration_seconds_count{service=\"quotecast.v1.QuoteService\",method=\"GetSnapshot\",code=\"OK\"}";
    assert_eq!(s.count(h), 3, "one latency sample per call");

    // The client goes away mid-stream: CANCELLED, no longer in flight.
    drop(stream);
    drop(c);
    let t0 = std::time::Instant::now();
    loop {
        let s = scrape(gw.running.metrics_addr).await;
        if s.count(in_flight) == 0 {
            assert_eq!(s.count(&series("StreamQuotes", "CANCELLED")), 1);
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "stream still in flight:\n{}", s.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.stop().await;
}
