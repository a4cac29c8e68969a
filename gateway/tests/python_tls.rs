//! TLS from the clients' side: Python `websockets` over `ssl` and `grpcio`
//! with TLS credentials (client certificates on gRPC), with a throwaway CA
//! made in this test, and a certificate renewal while a client streams.
//! Requires python3 with those packages (installed by `scripts/test.sh`).

mod common;

use common::*;
use feed_sim::SimConfig;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_and_grpc_over_tls_with_a_renewal_as_python_clients_see_them() {
    require_python(&["websockets", "google.protobuf", "grpc_tools", "pytest", "cryptography"]);
    let sim = SimConfig { seed: 9, symbols: 8, rate: 2_000, ..SimConfig::default() };
    let symbols = feed_sim::Market::new(sim.seed, sim.symbols, sim.zipf, sim.trade_ratio).tickers();
    let dir = credentials("tls", &symbols);

    let gw = Gw::start_with(|c| {
        c.tls.tls_cert_file = Some(dir.join("server.pem"));
        c.tls.tls_key_file = Some(dir.join("server.key"));
        c.tls.tls_client_ca_file = Some(dir.join("ca.pem"));
        c.tls.tls_reload_ms = 200;
        c.auth.api_keys_file = Some(dir.join("api_keys.json"));
    })
    .await;
    let token = CancellationToken::new();
    let sim = SimConfig { group: gw.group, port: gw.port, ..sim };
    let sim_task = tokio::spawn(feed_sim::run(sim, token.clone()));
    gw.until("directory", |r| r.core.book.len() == symbols.len()).await;
    gw.until("ready", |r| r.core.ready()).await;
    // A probe that speaks no TLS asks the metrics port.
    let mut probe = std::net::TcpStream::connect(gw.running.metrics_addr).unwrap();
    use std::io::{Read, Write};
    probe.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    probe.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let env = vec![
        ("QUOTECAST_WS_HOSTPORT", gw.running.ws_addr.to_string()),
        ("QUOTECAST_GRPC_ADDR", gw.running.grpc_addr.to_string()),
        ("QUOTECAST_AUTH_DIR", dir.display().to_string()),
        ("QUOTECAST_SYMBOLS", symbols.join(",")),
    ];
    let (ok, text) = run_pytest("test_tls.py", env).await;
    token.cancel();
    sim_task.await.unwrap().unwrap();
    assert!(ok, "python clients failed:\n{text}");
    assert!(text.contains("5 passed"), "{text}");
    let ws = &gw.running.core.ws;
    assert!(
        ws.tls_failures.load(std::sync::atomic::Ordering::Relaxed) >= 2,
        "refused handshakes are counted"
    );
    gw.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
