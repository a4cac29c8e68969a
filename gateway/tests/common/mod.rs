//! Shared helpers for the gateway's end-to-end tests: a started gateway on
//! ephemeral ports, a raw feed sender on loopback multicast, and a
//! WebSocket client that decodes server frames.

#![allow(dead_code, missing_docs)]

use futures_util::{SinkExt, StreamExt};
use gateway::{Bound, Config, Running};
use prost::Message as _;
use quotecast_proto::feed::{header, Message as FeedMsg, PacketBuilder, SessionId, Symbol, END_OF_SESSION};
use quotecast_proto::v1::{self, server_message::Body};
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// A multicast group and free UDP port no other test in this process uses.
pub fn unique_feed() -> (Ipv4Addr, u16) {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let group = Ipv4Addr::new(239, 77, (pid % 250) as u8, (n % 250) as u8 + 1);
    let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    (group, port)
}

pub struct Gw {
    pub running: Running,
    pub shutdown: CancellationToken,
    pub group: Ipv4Addr,
    pub port: u16,
}

impl Gw {
    pub async fn start_with(f: impl FnOnce(&mut Config)) -> Gw {
        let (group, port) = unique_feed();
        let mut cfg = Config::for_tests(group, port);
        f(&mut cfg);
        cfg.validate().unwrap();
        let bound = Bound::bind(&cfg).unwrap();
        let shutdown = CancellationToken::new();
        let running = gateway::start(cfg, bound, shutdown.clone()).await.unwrap();
        Gw { running, shutdown, group, port }
    }

    pub async fn start() -> Gw {
        Self::start_with(|_| {}).await
    }

    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/{query}", self.running.ws_addr)
    }

    pub fn sender(&self, session: &str) -> FeedSender {
        FeedSender::new(self.group, self.port, session)
    }

    /// Waits until `cond` holds (polling), failing after 10 s.
    pub async fn until(&self, what: &str, mut cond: impl FnMut(&Running) -> bool) {
        let t0 = std::time::Instant::now();
        while !cond(&self.running) {
            assert!(t0.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.running.wait()).await.unwrap().unwrap();
    }
}

/// Sends hand-built feed packets on loopback multicast (TTL 0, IF 127.0.0.1).
pub struct FeedSender {
    sock: UdpSocket,
    dest: SocketAddrV4,
    pub builder: PacketBuilder,
    /// Last per-symbol sequence given to each locate in this session (the
    /// `symbol_seq` of format v2), so hand-built packets number like a
    /// real sender.
    symbol_seqs: HashMap<u16, u32>,
}

pub fn multicast_sender() -> UdpSocket {
    loopback_multicast_socket().into()
}

/// A multicast sender whose datagrams come from `source` (a loopback
/// address other than the live sender's 127.0.0.1).
pub fn multicast_sender_from(source: Ipv4Addr) -> UdpSocket {
    let s = loopback_multicast_socket();
    s.bind(&SocketAddrV4::new(source, 0).into()).unwrap();
    s.into()
}

/// Sends multicast on 127.0.0.1 only, with TTL 0.
fn loopback_multicast_socket() -> Socket {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    s.set_multicast_if_v4(&Ipv4Addr::LOCALHOST).unwrap();
    s.set_multicast_ttl_v4(0).unwrap();
    s.set_multicast_loop_v4(true).unwrap();
    s
}

impl FeedSender {
    pub fn new(group: Ipv4Addr, port: u16, session: &str) -> Self {
        FeedSender {
            sock: multicast_sender(),
            dest: SocketAddrV4::new(group, port),
            builder: PacketBuilder::new(SessionId::from_text(session), 1, 1400),
            symbol_seqs: HashMap::new(),
        }
    }

    pub fn raw(&self, bytes: &[u8]) {
        self.sock.send_to(bytes, self.dest).unwrap();
    }

    /// Builds one packet of `msgs` (without sending it). A quote or trade
    /// with `symbol_seq` 0 (what [`quote`] and [`trade`] make) gets its
    /// locate's next per-symbol sequence; any other value is sent as given
    /// and becomes that locate's last one.
    pub fn build(&mut self, msgs: &[FeedMsg]) -> Vec<u8> {
        for m in msgs {
            let mut m = *m;
            if let FeedMsg::Quote { locate, symbol_seq, .. } | FeedMsg::Trade { locate, symbol_seq, .. } =
                &mut m
            {
                let last = self.symbol_seqs.entry(*locate).or_default();
                if *symbol_seq == 0 {
                    *symbol_seq = *last + 1;
                }
                *last = *symbol_seq;
            }
            assert!(self.builder.push(&m));
        }
        self.builder.finish().to_vec()
    }

    /// Builds and sends one packet.
    pub fn send(&mut self, msgs: &[FeedMsg]) -> Vec<u8> {
        let p = self.build(msgs);
        self.raw(&p);
        p
    }

    pub fn heartbeat(&self) {
        self.raw(&header(self.builder.session(), self.builder.next_seq(), 0));
    }

    pub fn end_of_session(&self) {
        self.raw(&header(self.builder.session(), self.builder.next_seq(), END_OF_SESSION));
    }
}

pub fn dir(locate: u16, s: &str) -> FeedMsg {
    FeedMsg::SymbolDirectory { locate, symbol: Symbol::new(s).unwrap() }
}

pub fn quote(locate: u16, bid: i64) -> FeedMsg {
    FeedMsg::Quote {
        locate,
        symbol_seq: 0,
        ts: 1_000,
        bid_px: bid,
        bid_sz: 100,
        ask_px: bid + 100,
        ask_sz: 200,
    }
}

pub fn trade(locate: u16, px: i64) -> FeedMsg {
    FeedMsg::Trade { locate, symbol_seq: 0, ts: 2_000, px, sz: 50 }
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a client received, decoded.
#[derive(Debug)]
pub enum Got {
    Server(v1::ServerMessage),
    Json(serde_json::Value),
    Closed(Option<(u16, String)>),
}

pub struct Client {
    pub ws: Ws,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Client { ws }
    }

    /// Connects with a tiny kernel receive buffer, so that not reading
    /// pushes back on the server quickly.
    pub async fn connect_small_buffer(url: &str, addr: std::net::SocketAddr) -> Client {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let stream = sock.connect(addr).await.unwrap();
        let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream)).await.unwrap();
        Client { ws }
    }

    pub async fn send_json(&mut self, v: serde_json::Value) {
        self.ws.send(Message::text(v.to_string())).await.unwrap();
    }

    pub async fn send_pb(&mut self, m: v1::ClientMessage) {
        self.ws.send(Message::Binary(m.encode_to_vec().into())).await.unwrap();
    }

    /// Next data/control message (pings skipped), failing after 10 s.
    pub async fn next(&mut self) -> Got {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("no message in 10 s");
            match m {
                None => return Got::Closed(None),
                Some(Err(_)) => return Got::Closed(None),
                Some(Ok(Message::Binary(b))) => return Got::Server(v1::ServerMessage::decode(b).unwrap()),
                Some(Ok(Message::Text(t))) => return Got::Json(serde_json::from_str(&t).unwrap()),
                Some(Ok(Message::Close(f))) => {
                    return Got::Closed(f.map(|f| (u16::from(f.code), f.reason.to_string())))
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Next JSON reply; binary frames (snapshots, updates) in between are
    /// skipped.
    pub async fn json(&mut self) -> serde_json::Value {
        loop {
            match self.next().await {
                Got::Json(v) => return v,
                Got::Server(_) => continue,
                other => panic!("expected JSON, got {other:?}"),
            }
        }
    }

    pub async fn server(&mut self) -> Body {
        match self.next().await {
            Got::Server(m) => m.body.expect("body"),
            other => panic!("expected a binary ServerMessage, got {other:?}"),
        }
    }

    /// Next quote updates (skipping status messages).
    pub async fn updates(&mut self) -> Vec<v1::QuoteUpdate> {
        loop {
            if let Body::Updates(b) = self.server().await {
                return b.updates;
            }
        }
    }

    pub async fn closed(&mut self) -> Option<(u16, String)> {
        loop {
            if let Got::Closed(c) = self.next().await {
                return c;
            }
        }
    }
}

/// Each symbol's final seq, known once the simulator has finished.
pub type Finals = tokio::sync::watch::Receiver<Option<HashMap<String, u64>>>;

/// Awaits the simulator and publishes each symbol's final seq to the
/// readers of [`read_until_final`].
pub async fn finish(
    sim: tokio::task::JoinHandle<anyhow::Result<feed_sim::Report>>,
    finals: tokio::sync::watch::Sender<Option<HashMap<String, u64>>>,
) -> feed_sim::Report {
    let report = sim.await.unwrap().unwrap();
    let f = report.last.iter().map(|(s, t)| (s.clone(), u64::from(t.symbol_seq))).collect();
    finals.send_replace(Some(f));
    report
}

/// Reads `c`'s updates until each of `symbols` was seen at its final seq
/// and not stale. It reads from the start, while the simulator still
/// runs: a client that stopped reading for longer than
/// `--slow-client-timeout-ms` would (rightly) be closed as a slow
/// consumer. After 8 s without an update it fails naming each symbol
/// still awaited, what the client last saw and what `gw`'s book holds.
pub async fn read_until_final(
    c: &mut Client,
    gw: &Gw,
    symbols: &[String],
    finals: &Finals,
) -> Vec<v1::QuoteUpdate> {
    let mut finals = finals.clone();
    let mut out = Vec::new();
    let mut last: HashMap<String, (u64, bool)> = HashMap::new();
    loop {
        let known = finals.borrow().clone();
        let waiting: Vec<&String> = match &known {
            None => symbols.iter().collect(),
            Some(f) => symbols
                .iter()
                .filter(|s| last.get(*s) != Some(&(f.get(*s).copied().unwrap_or(0), false)))
                .collect(),
        };
        if waiting.is_empty() {
            return out;
        }
        tokio::select! {
            b = tokio::time::timeout(Duration::from_secs(8), c.updates()) => {
                let Ok(b) = b else { panic!("{}", stuck(gw, &waiting, &last, known.as_ref())) };
                for u in &b {
                    last.insert(u.symbol.clone(), (u.seq, u.stale));
                }
                out.extend(b);
            }
            r = finals.changed(), if known.is_none() => r.expect("finals sender kept until sent"),
        }
    }
}

fn stuck(
    gw: &Gw,
    waiting: &[&String],
    last: &HashMap<String, (u64, bool)>,
    finals: Option<&HashMap<String, u64>>,
) -> String {
    let book = &gw.running.core.book;
    let lines: Vec<String> = waiting
        .iter()
        .map(|s| {
            let q = book.id(&Symbol::new(s).unwrap()).and_then(|id| book.get(id)).map(|q| (q.seq, q.stale));
            format!(
                "{s}: client saw (seq, stale) {:?}, final seq {:?}, book has {q:?}",
                last.get(*s),
                finals.and_then(|f| f.get(*s))
            )
        })
        .collect();
    let f = &gw.running.core.feed;
    let r = &f.retrans;
    let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    format!(
        "no update in 8 s; {} symbols awaited:\n{}\nfeed: {} messages, {} gaps; retransmission: {} requests, {} filled, \
         {} gone, {} timed out, {} refused",
        lines.len(),
        lines.join("\n"),
        ld(&f.messages),
        ld(&f.gaps),
        ld(&r.requests),
        ld(&r.filled),
        ld(&r.gone),
        ld(&r.timed_out),
        ld(&r.refused)
    )
}

/// A fresh directory of throwaway credentials made by
/// `tests/python/auth_setup.py` (API keys entitling `symbols`' first two to
/// "desk", JWT keys, a CA with server and client certificates); `what`
/// names it.
pub fn credentials(what: &str, symbols: &[String]) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("quotecast-{what}-{}-{}", std::process::id(), unique_feed().1));
    std::fs::create_dir_all(&dir).unwrap();
    let setup = format!("{}/tests/python/auth_setup.py", env!("CARGO_MANIFEST_DIR"));
    let made = std::process::Command::new("python3").arg(&setup).arg(&dir).arg(symbols.join(",")).status();
    assert!(made.expect("running auth_setup.py").success(), "auth_setup.py failed");
    dir
}

/// pip packages of the Python client tests (installed by scripts/test.sh).
pub const PYTHON_PACKAGES: &str =
    "websockets protobuf grpcio grpcio-tools grpcio-health-checking grpcio-reflection pytest pyjwt cryptography";

/// Fails (never skips) with the install command when python3 or one of
/// `modules` is missing.
pub fn require_python(modules: &[&str]) {
    let probe = format!("import {}", modules.join(", "));
    let out = std::process::Command::new("python3").args(["-c", &probe]).output();
    match out {
        Err(e) => panic!("python3 is required ({e}); install it, then pip install {PYTHON_PACKAGES}"),
        Ok(o) => assert!(
            o.status.success(),
            "python3 lacks test packages ({}); run scripts/test.sh or pip install {PYTHON_PACKAGES}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
    }
}

/// Runs `gateway/tests/python/<script>` under pytest with `env` set (plus
/// the proto directory) on a blocking thread; returns whether it passed and
/// everything it printed.
pub async fn run_pytest(script: &str, env: Vec<(&'static str, String)>) -> (bool, String) {
    let dir = env!("CARGO_MANIFEST_DIR");
    let path = format!("{dir}/tests/python/{script}");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", &path])
            .envs(env)
            .env("QUOTECAST_PROTO_DIR", format!("{dir}/../proto/proto"))
            .output()
            .expect("running python3 -m pytest")
    })
    .await
    .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A gateway with AAPL (locate 1) and MSFT (locate 2) quoted once by
/// `session`, and a client subscribed to both that has consumed its ack
/// and snapshots.
pub async fn two_quoted_symbols(session: &str, f: impl FnOnce(&mut Config)) -> (Gw, FeedSender, Client) {
    let gw = Gw::start_with(f).await;
    let mut feed = gw.sender(session);
    feed.send(&[dir(1, "AAPL"), dir(2, "MSFT"), quote(1, 1_000_000), quote(2, 2_000_000)]);
    gw.until("first packet applied", |r| r.core.feed.messages.load(Ordering::Relaxed) == 4).await;
    let mut c = Client::connect(&gw.ws_url("")).await;
    c.send_json(serde_json::json!({"op":"subscribe","symbols":["AAPL","MSFT"]})).await;
    assert_eq!(c.json().await["accepted"], serde_json::json!(["AAPL", "MSFT"]));
    let mut snaps = 0;
    while snaps < 2 {
        snaps += c.updates().await.len();
    }
    (gw, feed, c)
}

/// GET `path` from `addr` over plain HTTP/1.1 (a health check, a scrape):
/// (status, body), `None` if the server cannot be reached or answers
/// nothing readable.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
    Some((status, body))
}

/// Waits up to `within` for `child` to exit: its status, or `None` (and
/// the child killed) if it is still running then.
pub async fn exited(child: &mut std::process::Child, within: Duration) -> Option<std::process::ExitStatus> {
    let t0 = std::time::Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("waiting for a child process") {
            return Some(s);
        }
        if t0.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
