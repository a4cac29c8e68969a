//! Clients nobody here wrote: Python `websockets` + generated `protobuf`
//! classes subscribe over JSON and decode the binary frames. Requires
//! python3 with websockets, protobuf, grpcio-tools and pytest (installed by
//! `scripts/test.sh`); fails with the install command when they are missing.

mod common;

use common::*;
use feed_sim::SimConfig;
use std::process::Command;
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
        ..SimConfig::default()
    };
    let sim_task = tokio::spawn(feed_sim::run(sim, token.clone()));
    gw.until("directory", |r| r.book.len() == 20).await;
    let symbols: Vec<String> =
        gw.running.book.symbols().iter().take(5).map(|s| s.as_str().to_string()).collect();
    let dir = env!("CARGO_MANIFEST_DIR");
    let out = tokio::task::spawn_blocking({
        let url = gw.ws_url("");
        let symbols = symbols.join(",");
        move || {
            Command::new("python3")
                .args([
                    "-m",
                    "pytest",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    &format!("{dir}/tests/python/test_ws.py"),
                ])
                .env("QUOTECAST_WS_URL", url)
                .env("QUOTECAST_SYMBOLS", symbols)
                .env("QUOTECAST_PROTO_DIR", format!("{dir}/../proto/proto"))
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    token.cancel();
    sim_task.await.unwrap().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "python client failed:\n{text}");
    assert!(text.contains("2 passed"), "{text}");
    gw.stop().await;
}
