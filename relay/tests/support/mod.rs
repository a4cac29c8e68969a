//! Helpers of the NATS relay tests: a real `nats-server` on a free
//! loopback port (killed and restarted on the same port at will), an
//! in-process feed-relay, a probe NATS client, and the comparison of
//! client streams.

#![allow(dead_code, missing_docs)]

use clap::Parser;
use quotecast_proto::v1::QuoteUpdate;
use std::collections::HashMap;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The `nats-server` binary: $NATS_SERVER, else on PATH or in /usr/sbin.
/// Fails (never skips) with what to run when it is missing.
fn nats_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        return p.into();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("nats-server not found: run scripts/test.sh (it installs the Debian package nats-server), or apt-get install nats-server")
    })
}

/// A nats-server on 127.0.0.1 only, on a port of its own.
pub struct NatsServer {
    pub port: u16,
    child: Option<Child>,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut s = NatsServer { port, child: None };
        s.restart();
        s
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: no goodbye to its clients).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server (again) on its port and waits until it accepts.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let t0 = Instant::now();
        let child = Command::new(nats_server_bin())
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nats-server");
        self.child = Some(child);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "nats-server did not start on port {}",
                self.port
            );
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("nats-server exited at start: {status}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A subject prefix no other test in this process or on the host uses.
pub fn unique_prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    format!("test.p{}.t{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A feed-relay started in this process.
pub struct Relay {
    pub running: relay::Running,
    pub shutdown: CancellationToken,
}

impl Relay {
    /// Relays line A of `group:port` (and what `f` adds) to `nats`.
    pub async fn start(
        nats: &str,
        prefix: &str,
        group: std::net::Ipv4Addr,
        port: u16,
        f: impl FnOnce(&mut relay::Config),
    ) -> Relay {
        let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let mut cfg = relay::Config::parse_from([
            "feed-relay",
            "--nats",
            nats,
            "--subject-prefix",
            prefix,
            "--group",
            &group.to_string(),
            "--port",
            &port.to_string(),
            "--metrics-addr",
            &metrics.to_string(),
        ]);
        // Debug builds stream a long answer slowly (the gateways in these
        // tests wait 2 s for one).
        cfg.retrans_max_answer_ms = 2_000;
        f(&mut cfg);
        cfg.validate().unwrap();
        let shutdown = CancellationToken::new();
        let running = relay::start(cfg, shutdown.clone()).await.unwrap();
        Relay { running, shutdown }
    }

    /// A series' value in the relay's exposition (0 when absent).
    pub fn metric(&self, series: &str) -> f64 {
        metric(&self.running.metrics.render(), series)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.running.wait()).await.unwrap();
    }
}

/// The value of `series` (name with labels, exactly as exposed) in a
/// Prometheus text exposition; 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Waits until `cond` holds, failing after `secs` seconds.
pub async fn until(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(secs), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What two gateways must agree on for one update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub epoch: String,
    pub seq: u64,
    pub bid: (i64, u64),
    pub ask: (i64, u64),
    pub last: (i64, u64),
    pub ts_event: i64,
    pub stale: bool,
    pub trading_state: i32,
}

impl Seen {
    pub fn of(u: &QuoteUpdate) -> Seen {
        Seen {
            epoch: u.epoch.clone(),
            seq: u.seq,
            bid: (u.bid_px, u.bid_sz),
            ask: (u.ask_px, u.ask_sz),
            last: (u.last_px, u.last_sz),
            ts_event: u.ts_event,
            stale: u.stale,
            trading_state: u.trading_state,
        }
    }
}

/// Each symbol's final seq, known once the simulator has finished.
pub type Finals = tokio::sync::watch::Receiver<Option<HashMap<String, u64>>>;

/// A complete stream: per symbol a snapshot, then every update once and
/// in order. Returns (symbol, seq) -> what was shown.
///
/// A reader that goes on past the feed's end also sees the end of session
/// (every symbol stale, told by a status) and then each symbol vouched for
/// again by its snapshot from the snapshot channel: the same seq with the
/// same values, flagged `snapshot`. That repeat is checked and skipped.
pub fn complete_view(name: &str, updates: &[QuoteUpdate]) -> HashMap<(String, u64), Seen> {
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut view: HashMap<(String, u64), Seen> = HashMap::new();
    for u in updates {
        match last.insert(u.symbol.clone(), u.seq) {
            None => assert!(u.snapshot, "{name} {}: starts with a snapshot", u.symbol),
            Some(p) if u.seq == p && u.snapshot && !u.stale => {
                let before = &view[&(u.symbol.clone(), p)];
                let values = |s: &Seen| (s.epoch.clone(), s.bid, s.ask, s.last, s.ts_event, s.trading_state);
                assert_eq!(
                    values(&Seen::of(u)),
                    values(before),
                    "{name} {} seq {p}: a repeat changed values",
                    u.symbol
                );
                continue;
            }
            Some(p) => {
                assert!(
                    !u.snapshot && !u.stale,
                    "{name} {} seq {} after {p}: a plain, vouched update (snapshot {} stale {} skipped {})",
                    u.symbol,
                    u.seq,
                    u.snapshot,
                    u.stale,
                    u.skipped,
                );
                assert_eq!(u.seq, p + 1, "{name} {}: every update, in order", u.symbol);
            }
        }
        view.insert((u.symbol.clone(), u.seq), Seen::of(u));
    }
    view
}

/// Every update of `a` whose (symbol, seq) `b` also showed is the same in
/// both; returns how many were compared.
pub fn same_updates(
    names: (&str, &str),
    a: &HashMap<(String, u64), Seen>,
    b: &HashMap<(String, u64), Seen>,
) -> usize {
    let mut compared = 0;
    for (k, seen) in a {
        if k.1 == 0 {
            continue;
        }
        if let Some(other) = b.get(k) {
            assert_eq!(seen, other, "{} seq {}: {} and {} differ", k.0, k.1, names.0, names.1);
            compared += 1;
        }
    }
    compared
}
