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

/// True if `b` (server-to-client bytes from a frame boundary) holds a
/// complete Close frame.
fn has_close_frame(mut b: &[u8]) -> bool {
    while b.len() >= 2 {
        let (opcode, masked) = (b[0] & 0x0F, b[1] & 0x80 != 0);
        let (len, header) = match b[1] & 0x7F {
            126 if b.len() >= 4 => (u64::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().unwrap()), 10),
            126 | 127 => return false,
            n => (u64::from(n), 2),
        };
        let end = header + if masked { 4 } else { 0 } + len as usize;
        if end > b.len() {
            return false;
        }
        if opcode == 0x8 {
            return true;
        }
        b = &b[end..];
    }
    false
}

/// Waits until a Close frame has arrived in `c`'s socket without reading
/// it: reading would answer the gateway's pings. Fails after 10 s.
async fn until_close_frame_arrives(c: &Client) {
    let tokio_tungstenite::MaybeTlsStream::Plain(s) = c.ws.get_ref() else {
        panic!("a plain TCP client expected")
    };
    let mut buf = vec![0u8; 256 * 1024];
    let t0 = std::time::Instant::now();
    loop {
        let left = Duration::from_secs(10).saturating_sub(t0.elapsed());
        let n =
            tokio::time::timeout(left, s.peek(&mut buf)).await.expect("no close frame within 10 s").unwrap();
        // EOF: let the caller's read report what (if anything) came.
        if n == 0 || has_close_frame(&buf[..n]) {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no close frame within 10 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn close_frame_scan_walks_frames() {
    assert!(!has_close_frame(&[0x89, 0x00, 0x89, 0x00]), "two pings");
    assert!(has_close_frame(&[0x89, 0x00, 0x88, 0x02, 0x0F, 0xAC]), "ping then close 4012");
    assert!(!has_close_frame(&[0x88, 0x02, 0x0F]), "incomplete close");
    let mut big = vec![0x82, 126, 0x01, 0x00];
    big.extend([0u8; 256]);
    assert!(!has_close_frame(&big));
    big.extend([0x88, 0x00]);
    assert!(has_close_frame(&big), "close after a 256-byte binary frame");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_is_closed_after_the_idle_timeout() {
    let (gw, _feed) = with_symbols(|c| {
        c.ws.ping_interval_ms = 100;
        c.ws.idle_timeout_ms = 400;
    })
    .await;
    let idle = Duration::from_millis(gw.running.core.config.ws.idle_timeout_ms);
    // A client that reads (and so answers pings) and sends requests,
    // connected first: it must outlive the silent one.
    let mut alive = Client::connect(&gw.ws_url("")).await;
    let alive_since = std::time::Instant::now();
    let mut c = Client::connect(&gw.ws_url("")).await;
    {
        // Not polling `c`'s WebSocket means tungstenite never answers the
        // pings: wait for the gateway's close frame to arrive in its socket.
        let closed = until_close_frame_arrives(&c);
        tokio::pin!(closed);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                () = &mut closed => break,
                _ = tick.tick() => {
                    alive.send_json(json!({"op":"ping"})).await;
                    assert_eq!(alive.json().await["type"], "pong");
                }
            }
        }
    }
    let (code, _) = c.closed().await.expect("close frame");
    assert_eq!(code, 4012);
    // The silent client was closed after an idle timeout; the one that kept
    // talking has been connected longer than that and still answers.
    assert!(alive_since.elapsed() > idle, "the silent client closed before its idle timeout");
    alive.send_json(json!({"op":"ping"})).await;
    assert_eq!(alive.json().await["type"], "pong");
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
