//! A gRPC client nobody here wrote: Python `grpcio` with stubs generated
//! from proto/ calls GetSnapshot and StreamQuotes, and the standard health
//! and reflection clients ask their questions (gateway/tests/python/test_grpc.py).
//! Requires python3 with grpcio, grpcio-tools, grpcio-health-checking,
//! grpcio-reflection, protobuf and pytest; fails (never skips) with the
//! install command when they are missing.

mod common;

use common::*;
use feed_sim::SimConfig;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Waits (a health Watch: the server pushes each change) until `service`
/// reports SERVING, failing after 10 s with the last status seen.
async fn until_serving(addr: std::net::SocketAddr, service: &str) {
    use tonic_health::pb::{
        health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    };
    let watch = async {
        let ch = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap();
        let mut h = HealthClient::new(ch.connect().await.unwrap());
        let req = HealthCheckRequest { service: service.into() };
        let mut changes = h.watch(req).await.unwrap().into_inner();
        let mut last = None;
        while let Some(r) = changes.message().await.unwrap() {
            last = ServingStatus::try_from(r.status).ok();
            if last == Some(ServingStatus::Serving) {
                return;
            }
        }
        panic!("health Watch of {service:?} ended before SERVING (last {last:?})");
    };
    tokio::time::timeout(Duration::from_secs(10), watch)
        .await
        .unwrap_or_else(|_| panic!("health of {service:?} not SERVING within 10 s"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_snapshot_stream_health_reflection() {
    require_python(&[
        "grpc",
        "grpc_tools",
        "grpc_health.v1.health_pb2",
        "grpc_reflection.v1alpha.reflection_pb2",
        "google.protobuf",
        "pytest",
    ]);
    let gw = Gw::start().await;
    let stop = CancellationToken::new();
    let sim = SimConfig {
        group: gw.group,
        port: gw.port,
        seed: 9,
        symbols: 30,
        rate: 5_000,
        ..SimConfig::default()
    };
    let feed = tokio::spawn(feed_sim::run(sim, stop.clone()));
    gw.until("directory", |r| r.core.book.len() == 30).await;
    gw.until("quotes for every symbol", |r| (0..30).all(|id| r.core.book.get(id).is_some_and(|q| q.seq > 0)))
        .await;
    // Health follows the feed by polling it: wait until it says SERVING.
    for service in ["", "quotecast.v1.QuoteService"] {
        until_serving(gw.running.grpc_addr, service).await;
    }
    let symbols: Vec<String> =
        gw.running.core.book.symbols()[..4].iter().map(|s| s.as_str().to_string()).collect();
    let env = vec![
        ("QUOTECAST_GRPC_ADDR", gw.running.grpc_addr.to_string()),
        ("QUOTECAST_SYMBOLS", symbols.join(",")),
    ];
    let (ok, text) = run_pytest("test_grpc.py", env).await;
    stop.cancel();
    feed.await.unwrap().unwrap();
    assert!(ok, "the Python gRPC client failed:\n{text}");
    assert!(text.contains("8 passed"), "every Python test must run:\n{text}");
    gw.stop().await;
}
