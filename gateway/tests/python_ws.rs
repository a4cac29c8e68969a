//! Clients nobody here wrote: Python `websockets` + generated `protobuf`
//! classes subscribe over JSON and decode the binary frames. Requires
//! python3 with websockets, protobuf, grpcio-tools and pytest (installed by
//! `scripts/test.sh`); fails with the install command when they are missing.

mod common;

use common::*;
use feed_sim::SimConfig;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_client_subscribes_and_decodes() {
    require_python(&["websockets", "google.protobuf", "grpc_tools", "pytest"]);
    let gw = Gw::start().await;
    let token = CancellationToken::new();
    let sim = SimConfig {
        group: gw.group,
        port: gw.port,
        seed: 3,
        symbols: 20,
        rate: 5_000,
        // A few seeded halts, so the client sees TradingStatus messages.
        halt_every_ticks: 2_000,
        halt_ticks: 1_000,
        ..SimConfig::default()
    };
    let sim_task = tokio::spawn(feed_sim::run(sim, token.clone()));
    gw.until("directory", |r| r.core.book.len() == 20).await;
    let symbols: Vec<String> =
        gw.running.core.book.symbols().iter().take(5).map(|s| s.as_str().to_string()).collect();
    let all: Vec<String> = gw.running.core.book.symbols().iter().map(|s| s.as_str().to_string()).collect();
    let env = vec![
        ("QUOTECAST_WS_URL", gw.ws_url("")),
        ("QUOTECAST_SYMBOLS", symbols.join(",")),
        ("QUOTECAST_ALL_SYMBOLS", all.join(",")),
    ];
    let (ok, text) = run_pytest("test_ws.py", env).await;
    token.cancel();
    sim_task.await.unwrap().unwrap();
    assert!(ok, "python client failed:\n{text}");
    assert!(text.contains("4 passed"), "{text}");
    gw.stop().await;
}
