//! End to end over loopback: feed packets -> gateway -> WebSocket clients.

mod common;

use common::*;
use quotecast_proto::v1::server_message::Body;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_subscribe_gets_ack_snapshot_then_updates_in_order() {
    let gw = Gw::start().await;
    let mut feed = gw.sender("S1");
    feed.send(&[dir(1, "AAPL"), dir(2, "MSFT"), quote(1, 1_000_000)]);
    gw.until("directory", |r| {
        r.core.book.len() == 2 && r.core.feed.messages.load(std::sync::atomic::Ordering::Relaxed) == 3
    })
    .await;

    let mut c = Client::connect(&gw.ws_url("")).await;
    c.send_json(json!({"op":"subscribe","id":"a1","symbols":["AAPL","NOPE","bad sym"]})).await;
    let ack = c.json().await;
    assert_eq!(ack["type"], "ack");
    assert_eq!(ack["id"], "a1");
    assert_eq!(ack["accepted"], json!(["AAPL"]));
    assert_eq!(ack["rejected"][0]["code"], "UNKNOWN_SYMBOL");
    assert_eq!(ack["rejected"][1]["code"], "INVALID_SYMBOL");

    let snap = c.updates().await;
    assert_eq!(snap.len(), 1);
    assert!(snap[0].snapshot);
    assert_eq!((snap[0].symbol.as_str(), snap[0].seq, snap[0].bid_px), ("AAPL", 1, 1_000_000));

    for i in 0..50 {
        feed.send(&[quote(1, 1_000_000 + i * 100), quote(2, 5), trade(1, 1_000_050)]);
    }
    let mut want = 2;
    while want <= 101 {
        for u in c.updates().await {
            assert_eq!(u.symbol, "AAPL", "only subscribed symbols arrive");
            assert_eq!(u.seq, want, "every update in order");
            assert!(!u.snapshot && u.skipped == 0);
            assert!(u.ts_recv >= u.ts_event && u.ts_recv > 0);
            want += 1;
        }
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_symbols_subscribe_in_binary_and_shutdown_closes_with_1001() {
    let gw = Gw::start().await;
    let mut feed = gw.sender("S1");
    feed.send(&[dir(1, "IBM"), quote(1, 1_234_500)]);
    gw.until("directory", |r| r.core.book.len() == 1).await;
    let mut c = Client::connect(&gw.ws_url("?symbols=IBM")).await;
    match c.server().await {
        Body::Ack(a) => assert_eq!(a.accepted, vec!["IBM".to_string()]),
        other => panic!("ack expected, got {other:?}"),
    }
    let u = c.updates().await;
    assert!(u[0].snapshot && u[0].bid_px == 1_234_500);
    gw.shutdown.cancel();
    assert_eq!(c.closed().await.map(|c| c.0), Some(1001));
    gw.running.wait().await.unwrap();
}
