//! How connections end, as Python `websockets` (a client nobody here wrote)
//! and raw sockets see it: Close echoes, 1002/1009/1013/4008 that arrive as
//! Close frames, pipelined requests answered, a handshake flood that keeps
//! no real client out. The gateway's own counters must agree.

mod common;

use common::*;
use feed_sim::SimConfig;
use gateway::Config;
use tokio_util::sync::CancellationToken;

/// A gateway set up by `f`, fed by feed-sim at `rate` ticks/s over
/// `symbols` symbols; runs `case` of test_closing.py against it and
/// returns the gateway (still running) for the counters.
async fn run_case(case: &str, symbols: usize, rate: u64, f: impl FnOnce(&mut Config)) -> (Gw, String) {
    require_python(&["websockets", "pytest"]);
    let gw = Gw::start_with(f).await;
    let token = CancellationToken::new();
    let sim = SimConfig { group: gw.group, port: gw.port, seed: 8, symbols, rate, ..SimConfig::default() };
    let sim_task = tokio::spawn(feed_sim::run(sim, token.clone()));
    gw.until("directory", |r| r.core.book.len() == symbols).await;
    let names: Vec<String> =
        gw.running.core.book.symbols().iter().take(50).map(|s| s.as_str().to_string()).collect();
    let per_ip = gw.running.core.config.ws.max_pending_handshakes_per_ip.to_string();
    let env = vec![
        ("QUOTECAST_WS_URL", gw.ws_url("")),
        ("QUOTECAST_SYMBOLS", names.join(",")),
        ("QUOTECAST_PER_IP", per_ip),
    ];
    let (ok, text) = run_pytest(&format!("test_closing.py::{case}"), env).await;
    token.cancel();
    let _ = sim_task.await;
    assert!(ok, "{case} failed:\n{text}");
    (gw, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_closes_are_echoed_and_invalid_ones_answered_1002() {
    for case in ["test_client_close_is_echoed", "test_empty_close_is_echoed_empty"] {
        let (gw, _) = run_case(case, 20, 2_000, |_| {}).await;
        let want = if case.ends_with("empty") { 1 } else { 2 };
        gw.until("close counted", |r| r.core.ws.closed_with("normal") == want).await;
        assert_eq!(gw.running.core.ws.closed_with("client_gone"), 0);
        gw.stop().await;
    }
    let (gw, _) = run_case("test_invalid_close_is_answered_1002", 20, 2_000, |_| {}).await;
    gw.until("protocol errors counted", |r| r.core.ws.closed_with("protocol_error") == 5).await;
    assert_eq!(gw.running.core.ws.closed_with("normal"), 0);
    gw.stop().await;
    let (gw, _) = run_case("test_frame_length_with_top_bit_is_a_protocol_error", 20, 2_000, |_| {}).await;
    gw.until("protocol error counted", |r| r.core.ws.closed_with("protocol_error") == 1).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_get_1009_every_time() {
    let (gw, _) = run_case("test_oversized_message_gets_1009_every_time", 20, 2_000, |_| {}).await;
    gw.until("20 closes counted", |r| r.core.ws.closed_with("message_too_big") == 20).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_without_a_close() {
    let (gw, _) = run_case("test_pipelined_requests_are_answered_without_a_close", 20, 2_000, |_| {}).await;
    let (gw2, _) = {
        gw.stop().await;
        run_case("test_one_hundred_requests_in_one_tcp_write", 20, 2_000, |_| {}).await
    };
    assert_eq!(gw2.running.core.ws.closed_with("policy"), 0);
    gw2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_gets_4008_with_its_reason() {
    let (gw, text) = run_case("test_slow_reader_gets_4008_with_its_reason", 50, 20_000, |c| {
        c.ws.slow_client_timeout_ms = 1000;
    })
    .await;
    println!("{text}");
    gw.until("slow closes counted", |r| r.core.ws.closed_with("slow_consumer") == 2).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_flood_keeps_no_real_client_out() {
    let (gw, _) = run_case("test_silent_sockets_do_not_keep_real_clients_out", 20, 2_000, |c| {
        c.ws.max_connections = 2;
        c.ws.max_pending_handshakes = 32;
        c.ws.max_pending_handshakes_per_ip = 8;
    })
    .await;
    let ws = &gw.running.core.ws;
    assert!(ws.handshakes_refused.load(std::sync::atomic::Ordering::Relaxed) >= 32);
    gw.until("1013 counted", |r| r.core.ws.closed_with("connection_limit") == 1).await;
    gw.stop().await;
}
