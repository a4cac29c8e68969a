//! Draining a node out of a fleet: the `gateway` binary on SIGTERM stops
//! looking ready first, keeps serving for `--drain-delay-ms`, then closes
//! WebSocket clients with 1012 and a reconnect hint spread over
//! `--drain-spread-ms` and ends StreamQuotes with UNAVAILABLE, then exits 0.
//! Checked by Python `websockets`, `grpcio` and urllib (test_drain.py).

mod common;

use common::*;
use feed_sim::{Market, SimConfig};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The addresses the gateway prints on its first line of stdout.
struct Printed {
    ws: String,
    grpc: String,
}

fn parse_first_line(line: &str) -> Printed {
    let word_after = |marker: &str| {
        let rest =
            &line[line.find(marker).unwrap_or_else(|| panic!("no {marker:?} in {line:?}")) + marker.len()..];
        rest.split_whitespace().next().unwrap().trim_end_matches('/').to_string()
    };
    Printed { ws: word_after("ws://"), grpc: word_after("gRPC ") }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_readiness_first_then_1012_spread_out_then_exits() {
    require_python(&["websockets", "grpc", "pytest"]);
    let (group, port) = unique_feed();
    let (delay_ms, spread_ms) = (1200u64, 1500u64);
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--group", &group.to_string(), "--feed-port", &port.to_string()])
        .args(["--ws-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
        .args(["--drain-delay-ms", &delay_ms.to_string(), "--drain-spread-ms", &spread_ms.to_string()])
        .args(["--log", "warn"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let at = parse_first_line(&line);

    let symbols = 40;
    let token = CancellationToken::new();
    let sim = SimConfig { group, port, seed: 21, symbols, rate: 2_000, ..SimConfig::default() };
    let mut names = Market::new(sim.seed, sim.symbols, sim.zipf, sim.trade_ratio).tickers();
    names.truncate(10);
    let sim_task = tokio::spawn(feed_sim::run(sim, token.clone()));
    let t0 = Instant::now();
    let ws: std::net::SocketAddr = at.ws.parse().expect("the printed WebSocket address");
    while http_get(ws, "/readyz").map(|r| r.0) != Some(200) {
        assert!(t0.elapsed() < Duration::from_secs(10), "gateway not ready within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let env = vec![
        ("QUOTECAST_WS_URL", format!("ws://{}/", at.ws)),
        ("QUOTECAST_HTTP", at.ws.clone()),
        ("QUOTECAST_GRPC_ADDR", at.grpc.clone()),
        ("QUOTECAST_GATEWAY_PID", child.id().to_string()),
        ("QUOTECAST_SYMBOLS", names.join(",")),
        ("QUOTECAST_DRAIN_DELAY_MS", delay_ms.to_string()),
        ("QUOTECAST_DRAIN_SPREAD_MS", spread_ms.to_string()),
    ];
    let (ok, text) = run_pytest("test_drain.py", env).await;
    // The script sent SIGTERM: the drain ends in a clean exit.
    let status = exited(&mut child, Duration::from_secs(15)).await;
    token.cancel();
    let _ = sim_task.await;
    assert!(ok, "test_drain.py failed:\n{text}");
    let status = status.expect("gateway still running 15 s after the drain");
    assert!(status.success(), "gateway exited with {status}");
}
