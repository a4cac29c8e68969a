//! Access control from the clients' side: Python `websockets` and
//! `grpcio` with API keys and JWTs (PyJWT, keys made by `cryptography` in
//! this test), against a gateway that requires them. Requires python3
//! with those packages (installed by `scripts/test.sh`); fails with the
//! install command when they are missing.

mod common;

use common::*;
use feed_sim::SimConfig;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_tokens_entitlements_and_limits_as_python_clients_see_them() {
    require_python(&["websockets", "google.protobuf", "grpc_tools", "pytest", "jwt", "cryptography"]);
    let sim = SimConfig { seed: 7, symbols: 12, rate: 2_000, ..SimConfig::default() };
    let symbols = feed_sim::Market::new(sim.seed, sim.symbols, sim.zipf, sim.trade_ratio).tickers();
    let dir = credentials("auth", &symbols);

    let gw = Gw::start_with(|c| {
        c.auth.api_keys_file = Some(dir.join("api_keys.json"));
        c.auth.jwt_key_file = Some(dir.join("jwt_keys.pem"));
        c.auth.auth_timeout_ms = 1500;
        c.auth.auth_expiry_warning_ms = 2000;
        c.auth.auth_reload_ms = 200;
        c.auth.jwt_leeway_secs = 0;
        c.auth.max_auth_failures_per_min = 20;
        c.auth.allowed_origins = vec!["https://app.example.com".into()];
        c.ws.max_connections_per_ip = 8;
        c.ws.trusted_proxies = vec!["127.0.0.8".into()];
    })
    .await;
    let token = CancellationToken::new();
    let sim = SimConfig { group: gw.group, port: gw.port, ..sim };
    let sim_task = tokio::spawn(feed_sim::run(sim, token.clone()));
    gw.until("directory", |r| r.core.book.len() == symbols.len()).await;

    let env = vec![
        ("QUOTECAST_WS_URL", gw.ws_url("")),
        ("QUOTECAST_GRPC_ADDR", gw.running.grpc_addr.to_string()),
        ("QUOTECAST_AUTH_DIR", dir.display().to_string()),
        ("QUOTECAST_SYMBOLS", symbols.join(",")),
    ];
    let (ok, text) = run_pytest("test_auth.py", env).await;
    token.cancel();
    sim_task.await.unwrap().unwrap();
    assert!(ok, "python clients failed:\n{text}");
    assert!(text.contains("17 passed"), "{text}");

    // What the clients saw is what the operators count.
    let stats = &gw.running.core.auth.stats;
    for reason in [
        "expired",
        "not_yet_valid",
        "bad_signature",
        "wrong_algorithm",
        "malformed",
        "unknown_key",
        "missing",
    ] {
        assert!(stats.failures_of(reason) > 0, "{reason} counted");
    }
    let proxy_errors = gw.running.core.ws.proxy_errors.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(proxy_errors, 1, "the balancer's one headerless connection");
    let text = gw.running.core.metrics.render(&gw.running.core);
    assert!(text.contains("quotecast_auth_failures_total{reason=\"expired\"}"), "exported");
    gw.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
