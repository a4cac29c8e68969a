//! End to end: a real gateway in-process, feed-sim in-process (started by
//! loadtest itself), 50 WebSocket clients for ~3 s, and the report checked.

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A multicast group and UDP port no other test uses.
fn unique_feed(n: u8) -> (Ipv4Addr, u16) {
    let pid = std::process::id();
    let group = Ipv4Addr::new(239, 78, (pid % 250) as u8, n);
    let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    (group, port)
}

async fn start_gateway(group: Ipv4Addr, port: u16) -> (gateway::Running, CancellationToken) {
    start_gateway_with(group, port, |_| {}).await
}

async fn start_gateway_with(
    group: Ipv4Addr,
    port: u16,
    f: impl FnOnce(&mut gateway::Config),
) -> (gateway::Running, CancellationToken) {
    let mut cfg = gateway::Config::for_tests(group, port);
    f(&mut cfg);
    cfg.validate().unwrap();
    let bound = gateway::Bound::bind(&cfg).unwrap();
    let shutdown = CancellationToken::new();
    let running = gateway::start(cfg, bound, shutdown.clone()).await.unwrap();
    (running, shutdown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_see_every_update_in_order_and_the_final_values() {
    let (group, port) = unique_feed(1);
    let (gw, stop) = start_gateway(group, port).await;
    let mut cfg = loadtest::Config::for_tests(gw.ws_addr, gw.grpc_addr, group, port);
    cfg.load.connections = 50;
    cfg.load.symbols_per_conn = 10;
    cfg.load.duration = Duration::from_secs(3);
    cfg.feed.feed_rate = 4000;
    cfg.feed.feed_symbols = 100;

    let report = loadtest::run(cfg, CancellationToken::new()).await.unwrap();
    let text = report.to_string();
    println!("{text}");

    let c = &report.connections;
    assert_eq!((c.connected, c.failed), (50, 0), "{text}");
    assert_eq!(c.ends.get("closed by loadtest"), Some(&50), "every client lived to the end: {text}");
    assert_eq!(c.rejected_symbols + c.error_replies + c.decode_errors, 0, "{text}");

    let k = &report.correctness;
    assert_eq!(k.violations, 0, "{text}");
    assert_eq!(k.drained, Some(true), "{text}");
    // Every update accounted: what arrived plus what the gateway said it
    // conflated covers each symbol's whole seq span, and every one of the
    // 500 subscriptions started with a snapshot.
    let t = k.totals;
    assert_eq!(t.snapshots, 500, "{text}");
    assert_eq!(t.received + t.skipped, t.seq_span, "{text}");
    assert!(t.received > 5_000, "{text}");
    // Each client's final value per symbol was compared with feed-sim's.
    let fv = k.final_values.unwrap();
    assert_eq!(fv.verified + fv.untouched + fv.unverifiable, 500, "{text}");
    assert!(fv.verified > 300, "{text}");
    assert_eq!(fv.unverifiable, 0, "{text}");

    // Latency histograms for every hop, from the window only.
    let l = &report.fast.latency;
    for (name, p) in [
        ("feed", &l.feed_to_gateway),
        ("gateway", &l.gateway_to_send),
        ("wire", &l.send_to_client),
        ("e2e", &l.end_to_end),
    ] {
        assert!(p.count > 1000, "{name}: {text}");
        assert!(p.p50_us > 0.0 && p.p50_us <= p.p99_us && p.p99_us <= p.max_us, "{name}: {text}");
    }
    assert!(report.fast.updates_per_sec > 0.0 && report.fast.bytes > 0, "{text}");
    assert!(report.window_secs >= 2.9, "{text}");
    let feed = report.feed.as_ref().unwrap();
    assert!(feed.ticks > 8_000, "{text}");
    // The gateway wrote at least what the clients counted.
    let written = gw.core.ws.updates.load(std::sync::atomic::Ordering::Relaxed);
    assert!(written >= t.received + t.snapshots, "gateway wrote {written}: {text}");
    assert_eq!(report.exit_code(), 0, "{text}");

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), gw.wait()).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_measured_apart_and_still_checked() {
    let (group, port) = unique_feed(2);
    let (gw, stop) = start_gateway(group, port).await;
    let mut cfg = loadtest::Config::for_tests(gw.ws_addr, gw.grpc_addr, group, port);
    cfg.load.connections = 20;
    cfg.load.symbols_per_conn = 5;
    cfg.load.duration = Duration::from_secs(2);
    cfg.load.slow_share = 0.25;
    cfg.load.slow_mode = loadtest::config::SlowMode::Slow;
    cfg.load.slow_delay = Duration::from_millis(50);
    cfg.load.pick = loadtest::config::Pick::Hot;
    cfg.feed.feed_rate = 5000;
    cfg.feed.feed_symbols = 50;

    let report = loadtest::run(cfg, CancellationToken::new()).await.unwrap();
    let text = report.to_string();
    assert_eq!(report.connections.slow, 5, "{text}");
    assert_eq!(report.correctness.violations, 0, "{text}");
    let slow = report.slow.unwrap();
    assert!(slow.updates > 0, "{text}");
    // A slow reader takes at most one frame per pause.
    assert!(slow.frames_per_sec < 5.0 * 25.0, "{text}");
    assert!(report.fast.frames_per_sec > slow.frames_per_sec, "{text}");
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), gw.wait()).await.unwrap().unwrap();
}

#[tokio::test]
async fn unreachable_gateway_and_foreign_targets_are_one_line_errors() {
    // Nothing listens on a port just released.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let cfg = loadtest::Config::for_tests(addr, addr, Ipv4Addr::new(239, 78, 0, 250), 9);
    let e = loadtest::run(cfg.clone(), CancellationToken::new()).await.unwrap_err();
    assert_eq!(e.exit_code(), 1);
    let msg = e.to_string();
    assert!(
        msg.contains("unreachable") && msg.contains("connection refused") && !msg.contains('\n'),
        "{msg}"
    );

    let mut foreign = cfg;
    foreign.target.ws_addr = "192.0.2.1:8080".into();
    let e = loadtest::run(foreign, CancellationToken::new()).await.unwrap_err();
    assert_eq!(e.exit_code(), 64);
    assert!(e.to_string().contains("127.0.0.0/8"), "{e}");
}

/// `--tls-ca-file` and `--token`: clients over `wss://` with an API key,
/// against a gateway that requires both (credentials made by the access
/// tests' setup script: a throwaway CA and keys).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_over_tls_with_a_key_see_every_update() {
    let dir = std::env::temp_dir().join(format!("loadtest-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let setup = concat!(env!("CARGO_MANIFEST_DIR"), "/../gateway/tests/python/auth_setup.py");
    let made = std::process::Command::new("python3").arg(setup).arg(&dir).arg("AAPL,MSFT").status();
    assert!(made.expect("python3 (scripts/test.sh installs its packages)").success());
    let keys: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("api_keys_plain.json")).unwrap()).unwrap();

    let (group, port) = unique_feed(3);
    let (gw, stop) = start_gateway_with(group, port, |c| {
        c.tls.tls_cert_file = Some(dir.join("server.pem"));
        c.tls.tls_key_file = Some(dir.join("server.key"));
        c.auth.api_keys_file = Some(dir.join("api_keys.json"));
    })
    .await;

    let mut cfg = loadtest::Config::for_tests(gw.ws_addr, gw.grpc_addr, group, port);
    cfg.target.tls_ca_file = Some(dir.join("ca.pem"));
    cfg.target.token = Some(keys["all"].as_str().unwrap().to_string());
    cfg.load.connections = 20;
    cfg.load.symbols_per_conn = 5;
    cfg.load.duration = Duration::from_secs(2);
    cfg.feed.feed_rate = 2000;
    cfg.feed.feed_symbols = 50;
    let report = loadtest::run(cfg, CancellationToken::new()).await.unwrap();
    let text = report.to_string();
    assert_eq!((report.connections.connected, report.connections.failed), (20, 0), "{text}");
    assert_eq!(report.correctness.violations, 0, "{text}");
    assert!(report.correctness.totals.received > 1_000, "{text}");
    assert_eq!(gw.core.auth.stats.failures_of("unknown_key"), 0);
    stop.cancel();
    gw.wait().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
