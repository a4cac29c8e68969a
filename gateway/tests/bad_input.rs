//! Bad input gets its documented answer and nothing else breaks: a
//! bystander client keeps receiving every update throughout.

mod common;

use common::*;
use futures_util::SinkExt;
use quotecast_proto::v1::{self, client_message::Op, server_message::Body, ErrorCode};
use serde_json::json;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

async fn with_symbols(f: impl FnOnce(&mut gateway::Config)) -> (Gw, FeedSender) {
    let gw = Gw::start_with(f).await;
    let mut feed = gw.sender("S1");
    feed.send(&[dir(1, "AAPL"), dir(2, "MSFT"), dir(3, "IBM"), quote(1, 1_000_000)]);
    gw.until("directory", |r| r.core.book.len() == 3).await;
    (gw, feed)
}

/// A client subscribed to AAPL whose ack and snapshot are consumed.
async fn bystander(gw: &Gw) -> Client {
    let mut c = Client::connect(&gw.ws_url("")).await;
    c.send_json(json!({"op":"subscribe","symbols":["AAPL"]})).await;
    c.json().await;
    c.updates().await;
    c
}

/// Sends `n` AAPL quotes and checks the bystander got all of them in order.
async fn bystander_keeps_pace(feed: &mut FeedSender, c: &mut Client, first_seq: u64, n: u64) {
    for i in 0..n {
        feed.send(&[quote(1, 1_000_000 + i as i64)]);
    }
    let mut want = first_seq;
    while want < first_seq + n {
        for u in c.updates().await {
            assert_eq!(u.seq, want);
            want += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_error_replies_and_the_connection_stays() {
    let (gw, mut feed) = with_symbols(|_| {}).await;
    let mut by = bystander(&gw).await;
    let mut c = Client::connect(&gw.ws_url("")).await;

    c.ws.send(Message::text("{not json")).await.unwrap();
    let e = c.json().await;
    assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("error"), Some("BAD_REQUEST")));
    assert!(e["message"].as_str().unwrap().contains("invalid JSON"));

    c.send_json(json!({"op":"teleport","id":"t1"})).await;
    let e = c.json().await;
    assert_eq!((e["id"].as_str(), e["code"].as_str()), (Some("t1"), Some("BAD_REQUEST")));

    c.ws.send(Message::Binary(vec![0xFF, 0x01, 0x02].into())).await.unwrap();
    match c.server().await {
        Body::Error(e) => assert_eq!(e.code(), ErrorCode::BadRequest),
        other => panic!("error expected, got {other:?}"),
    }

    // Still usable: binary ping, then list.
    c.send_pb(v1::ClientMessage { id: "p".into(), op: Some(Op::Ping(v1::Ping { ts: 42 })) }).await;
    match c.server().await {
        Body::Pong(p) => assert_eq!((p.id.as_str(), p.ts), ("p", 42)),
        other => panic!("pong expected, got {other:?}"),
    }
    c.send_json(json!({"op":"subscribe","symbols":["MSFT"],"id":"s"})).await;
    assert_eq!(c.json().await["accepted"], json!(["MSFT"]));
    c.send_json(json!({"op":"list","id":"l"})).await;
    let mut l = c.json().await;
    while l["type"] != "subscriptions" {
        l = c.json().await;
    }
    assert_eq!(l["symbols"], json!(["MSFT"]));
    c.send_json(json!({"op":"unsubscribe","symbols":["MSFT","IBM"],"id":"u"})).await;
    let a = c.json().await;
    assert_eq!(a["accepted"], json!(["MSFT"]));
    assert_eq!(a["rejected"][0]["code"], "NOT_SUBSCRIBED");

    bystander_keeps_pace(&mut feed, &mut by, 2, 20).await;
    assert!(gw.running.core.ws.bad_requests.load(Relaxed) >= 3);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_is_closed_with_1009() {
    let (gw, mut feed) = with_symbols(|c| c.ws.max_request_bytes = 1024).await;
    let mut by = bystander(&gw).await;
    let mut c = Client::connect(&gw.ws_url("")).await;
    c.ws.send(Message::text("x".repeat(4096))).await.unwrap();
    let (code, reason) = c.closed().await.expect("close frame");
    assert_eq!(code, 1009);
    assert!(reason.contains("1024"), "{reason}");
    bystander_keeps_pace(&mut feed, &mut by, 2, 10).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symbol_limit_rejects_the_request_and_leaves_the_set_unchanged() {
    let (gw, _feed) = with_symbols(|c| c.ws.max_symbols_per_connection = 2).await;
    let mut c = Client::connect(&gw.ws_url("")).await;
    c.send_json(json!({"op":"subscribe","symbols":["AAPL"]})).await;
    assert_eq!(c.json().await["accepted"], json!(["AAPL"]));
    c.send_json(json!({"op":"subscribe","symbols":["MSFT","IBM"],"id":"x"})).await;
    let mut a = c.json().await;
    while a["type"] != "ack" {
        a = c.json().await;
    }
    assert_eq!(a["accepted"], json!([]));
    assert_eq!(a["rejected"][0]["code"], "SYMBOL_LIMIT");
    assert_eq!(a["rejected"][1]["code"], "SYMBOL_LIMIT");
    c.send_json(json!({"op":"list"})).await;
    loop {
        match c.next().await {
            Got::Json(v) if v["type"] == "subscriptions" => {
                assert_eq!(v["symbols"], json!(["AAPL"]));
                break;
            }
            _ => {}
        }
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_rate_limit_answers_with_a_retry_hint() {
    let (gw, _feed) = with_symbols(|c| c.ws.max_requests_per_sec = 2).await;
    let mut c = Client::connect(&gw.ws_url("")).await;
    for i in 0..8 {
        c.send_json(json!({"op":"ping","id":i.to_string()})).await;
    }
    let mut pongs = 0;
    let mut limited = 0;
    for _ in 0..8 {
        let v = c.json().await;
        match v["type"].as_str() {
            Some("pong") => pongs += 1,
            Some("error") => {
                assert_eq!(v["code"], "RATE_LIMITED");
                assert!(v["retry_after_ms"].as_u64().unwrap() > 0);
                limited += 1;
            }
            _ => panic!("{v}"),
        }
    }
    assert_eq!(pongs, 4, "burst is twice the per-second rate");
    assert_eq!(limited, 4);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_closes_with_1013_and_a_retry_hint() {
    let (gw, _feed) = with_symbols(|c| c.ws.max_connections = 1).await;
    let _first = Client::connect(&gw.ws_url("")).await;
    let mut second = Client::connect(&gw.ws_url("")).await;
    let (code, reason) = second.closed().await.expect("close frame");
    assert_eq!(code, 1013);
    assert!(reason.contains("retry"), "{reason}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_is_closed_after_the_idle_timeout() {
    let (gw, _feed) = with_symbols(|c| {
        c.ws.ping_interval_ms = 100;
        c.ws.idle_timeout_ms = 400;
    })
    .await;
    let mut c = Client::connect(&gw.ws_url("")).await;
    // Not polling the socket means tungstenite never answers the pings.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (code, _) = c.closed().await.expect("close frame");
    assert_eq!(code, 4012);
    // A client that reads (and so answers pings) stays connected.
    let mut alive = Client::connect(&gw.ws_url("")).await;
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_millis(900) {
        alive.send_json(json!({"op":"ping"})).await;
        assert_eq!(alive.json().await["type"], "pong");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_health_and_errors() {
    let (gw, _feed) = with_symbols(|_| {}).await;
    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }
    let addr = gw.running.ws_addr;
    assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
    let ready = get(addr, "/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 200") && ready.contains("feed_up=true"), "{ready}");
    assert!(get(addr, "/").await.starts_with("HTTP/1.1 426"));
    assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
    gw.stop().await;
}
