//! The HTTP side of the WebSocket port, byte for byte as a raw client sees
//! it (RFC 6455 §4.2, RFC 7231): what each malformed or unusual request gets,
//! and that readiness follows the feed.

mod common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `head` and reads the whole answer (the gateway closes after it).
async fn ask(addr: std::net::SocketAddr, head: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn upgrade(version: &str, key: &str, extra: &str) -> String {
    format!(
        "GET / {version}\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

#[tokio::test]
async fn handshake_answers_follow_the_rfcs() {
    let gw = Gw::start().await;
    let addr = gw.running.ws_addr;

    let r = ask(addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 426") && r.contains("\r\nUpgrade: websocket\r\n"), "{r}");

    let v8 = upgrade("HTTP/1.1", KEY, "").replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8");
    let r = ask(addr, &v8).await;
    assert!(r.starts_with("HTTP/1.1 400") && r.contains("\r\nSec-WebSocket-Version: 13\r\n"), "{r}");

    for bad_key in ["abc", "dGhlIHNhbXBsZSBub25jZXg=", "not base64 at all!!!!!=="] {
        let r = ask(addr, &upgrade("HTTP/1.1", bad_key, "")).await;
        assert!(r.starts_with("HTTP/1.1 400") && r.contains("Sec-WebSocket-Key"), "{bad_key}: {r}");
    }

    let r = ask(addr, &upgrade("HTTP/1.0", KEY, "")).await;
    assert!(r.starts_with("HTTP/1.1 400") && r.contains("HTTP/1.1"), "{r}");

    // A browser behind a few proxies sends 40 header lines: served.
    let forty: String = (0..34).map(|i| format!("X-Extra-{i}: y\r\n")).collect();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(upgrade("HTTP/1.1", KEY, &forty).as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
    drop(s);

    let seventy: String = (0..70).map(|i| format!("X-Extra-{i}: y\r\n")).collect();
    let r = ask(addr, &upgrade("HTTP/1.1", KEY, &seventy)).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");

    let r = ask(addr, "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 200") && r.contains("Content-Length: 3\r\n"), "{r}");
    assert!(r.ends_with("\r\n\r\n"), "HEAD has no body: {r:?}");

    let r = ask(addr, "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 405") && r.contains("Allow: GET, HEAD"), "{r}");

    let r = ask(addr, "GARBAGE\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    gw.stop().await;
}

#[tokio::test]
async fn readyz_follows_the_feed_and_is_not_ready_while_every_symbol_is_stale() {
    let gw = Gw::start().await;
    let addr = gw.running.ws_addr;
    let readyz = || ask(addr, "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(readyz().await.starts_with("HTTP/1.1 503"), "no feed yet");
    let mut feed = gw.sender("R1");
    feed.send(&[dir(1, "AAPL"), dir(2, "MSFT"), quote(1, 100), quote(2, 200)]);
    gw.until("symbols quoted", |r| r.core.book.len() == 2 && r.core.feed.ready()).await;
    let r = readyz().await;
    assert!(r.starts_with("HTTP/1.1 200") && r.contains("stale=0"), "{r}");
    // A lost packet: every symbol may be wrong until it quotes again.
    let _lost = feed.build(&[trade(1, 101)]);
    feed.send(&[trade(1, 102)]);
    gw.until("gap seen", |r| !r.core.feed.ready()).await;
    let r = readyz().await;
    assert!(r.starts_with("HTTP/1.1 503") && r.contains("stale=2"), "{r}");
    feed.send(&[quote(1, 103)]);
    gw.until("one symbol fresh", |r| r.core.feed.ready()).await;
    assert!(readyz().await.starts_with("HTTP/1.1 200"));
    gw.stop().await;
}
