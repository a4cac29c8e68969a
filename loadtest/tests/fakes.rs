//! loadtest against fake servers that misbehave on purpose (the checker
//! must catch it end to end and the exit status must say so), and against
//! a fake gRPC QuoteService (snapshot and stream modes).

use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use quotecast_proto::v1::{
    self, quote_service_server::QuoteService, quote_service_server::QuoteServiceServer, server_message::Body,
};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

fn now_ns() -> i64 {
    loadtest::client::now_ns()
}

fn quote(sym: &str, seq: u64, snapshot: bool) -> v1::QuoteUpdate {
    let t = now_ns();
    v1::QuoteUpdate {
        symbol: sym.into(),
        seq,
        snapshot,
        bid_px: 1_000_000 + seq as i64,
        bid_sz: 100,
        ask_px: 1_000_100 + seq as i64,
        ask_sz: 100,
        ts_event: t - 2_000,
        ts_recv: t - 1_000,
        ..v1::QuoteUpdate::default()
    }
}

fn frame(body: Body) -> Message {
    Message::Binary(v1::ServerMessage { body: Some(body) }.encode_to_vec().into())
}

/// A WebSocket "gateway" that acks every subscribe, sends each symbol's
/// snapshot (seq 1), then seqs 2, 3, 3 (duplicate) and 6 (gap) for the
/// first symbol, and keeps the connection open.
async fn bad_ws_gateway() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else { return };
                while let Some(Ok(m)) = ws.next().await {
                    let Message::Binary(b) = m else { continue };
                    let Ok(v1::ClientMessage { op: Some(v1::client_message::Op::Subscribe(sub)), .. }) =
                        v1::ClientMessage::decode(&b[..])
                    else {
                        continue;
                    };
                    let ack = v1::Ack { id: "1".into(), accepted: sub.symbols.clone(), rejected: vec![] };
                    ws.send(frame(Body::Ack(ack))).await.unwrap();
                    let first = &sub.symbols[0];
                    let mut updates: Vec<v1::QuoteUpdate> =
                        sub.symbols.iter().map(|s| quote(s, 1, true)).collect();
                    updates.extend([2, 3, 3, 6].map(|seq| quote(first, seq, false)));
                    let batch = v1::UpdateBatch { updates, ts_send: now_ns() };
                    let _ = ws.send(frame(Body::Updates(batch))).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_and_gaps_from_the_server_fail_the_run() {
    let addr = bad_ws_gateway().await;
    let mut cfg = loadtest::Config::for_tests(addr, addr, Ipv4Addr::new(239, 78, 0, 251), 9);
    cfg.feed.feed = loadtest::config::FeedSource::External;
    cfg.load.connections = 3;
    cfg.load.symbols = vec!["AAPL".into(), "MSFT".into()];
    cfg.load.duration = Duration::from_millis(300);
    let report = loadtest::run(cfg, CancellationToken::new()).await.unwrap();
    let text = report.to_string();
    let k = &report.correctness;
    // Per connection: one duplicate, one gap.
    assert_eq!(k.violations, 6, "{text}");
    let kinds: Vec<String> = k.listed.iter().map(|v| v.to_string()).collect();
    assert!(kinds.iter().any(|v| v.contains("AAPL: duplicate seq 3")), "{kinds:?}");
    assert!(kinds.iter().any(|v| v.contains("AAPL: gap: seq 6 after 3")), "{kinds:?}");
    assert_eq!(report.exit_code(), loadtest::config::EX_VIOLATION);
    assert!(text.contains("FAILED"), "{text}");
    // The latency of the fake's timestamps is measured too.
    assert!(report.fast.latency.end_to_end.count > 0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thresholds_fail_the_run() {
    let addr = bad_ws_gateway().await;
    let mut cfg = loadtest::Config::for_tests(addr, addr, Ipv4Addr::new(239, 78, 0, 252), 9);
    cfg.feed.feed = loadtest::config::FeedSource::External;
    cfg.load.connections = 1;
    cfg.load.symbols = vec!["AAPL".into()];
    cfg.load.duration = Duration::from_millis(200);
    cfg.output.min_rate = Some(1e9);
    let report = loadtest::run(cfg, CancellationToken::new()).await.unwrap();
    assert_eq!(report.thresholds_failed.len(), 1, "{report}");
    assert!(report.thresholds_failed[0].contains("--min-rate"), "{report}");
}

/// A gRPC QuoteService: snapshots with a growing seq, and streams of an
/// ack, snapshots, then 50 in-order updates per symbol.
#[derive(Default)]
struct FakeQuotes {
    seq: AtomicU64,
    calls: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl QuoteService for FakeQuotes {
    async fn get_snapshot(
        &self,
        req: tonic::Request<v1::GetSnapshotRequest>,
    ) -> Result<tonic::Response<v1::GetSnapshotResponse>, tonic::Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let quotes = req.into_inner().symbols.iter().map(|s| quote(s, seq, true)).collect();
        Ok(tonic::Response::new(v1::GetSnapshotResponse { quotes, ..Default::default() }))
    }

    async fn list_symbols(
        &self,
        _: tonic::Request<v1::ListSymbolsRequest>,
    ) -> Result<tonic::Response<v1::ListSymbolsResponse>, tonic::Status> {
        Ok(tonic::Response::new(v1::ListSymbolsResponse::default()))
    }

    type StreamQuotesStream =
        tokio_stream::wrappers::ReceiverStream<Result<v1::StreamQuotesResponse, tonic::Status>>;

    async fn stream_quotes(
        &self,
        req: tonic::Request<v1::StreamQuotesRequest>,
    ) -> Result<tonic::Response<Self::StreamQuotesStream>, tonic::Status> {
        use v1::stream_quotes_response::Body as B;
        let symbols = req.into_inner().symbols;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let ack = v1::Ack { id: String::new(), accepted: symbols.clone(), rejected: vec![] };
            let _ = tx.send(Ok(v1::StreamQuotesResponse { body: Some(B::Ack(ack)) })).await;
            for seq in 1..=50u64 {
                let updates = symbols.iter().map(|s| quote(s, seq, seq == 1)).collect();
                let batch = v1::UpdateBatch { updates, ts_send: now_ns() };
                if tx.send(Ok(v1::StreamQuotesResponse { body: Some(B::Updates(batch)) })).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            // Stay open until the client goes.
            tx.closed().await;
        });
        Ok(tonic::Response::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}

async fn fake_grpc() -> (SocketAddr, Arc<AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let fake = FakeQuotes::default();
    let calls = fake.calls.clone();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(QuoteServiceServer::new(fake))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );
    (addr, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_mode_counts_calls_and_latency() {
    let (addr, calls) = fake_grpc().await;
    let mut cfg = loadtest::Config::for_tests(addr, addr, Ipv4Addr::new(239, 78, 0, 253), 9);
    cfg.mode = loadtest::config::Mode::Snapshot;
    cfg.feed.feed = loadtest::config::FeedSource::External;
    cfg.load.concurrency = 4;
    cfg.load.symbols_per_call = 3;
    cfg.load.duration = Duration::from_millis(500);
    let report = loadtest::run(cfg, CancellationToken::new()).await.unwrap();
    let text = report.to_string();
    let s = report.snapshot.as_ref().unwrap();
    assert!(s.calls > 10, "{text}");
    assert_eq!(s.quotes, 3 * s.calls, "{text}");
    assert!(s.errors.is_empty(), "{text}");
    assert_eq!(s.latency.count, s.calls, "{text}");
    assert!(calls.load(Ordering::Relaxed) >= s.calls);
    assert_eq!(report.correctness.violations, 0, "{text}");
    assert_eq!(report.connections.connected, 4, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_mode_checks_every_consumer() {
    let (addr, _) = fake_grpc().await;
    let mut cfg = loadtest::Config::for_tests(addr, addr, Ipv4Addr::new(239, 78, 0, 254), 9);
    cfg.mode = loadtest::config::Mode::Stream;
    cfg.feed.feed = loadtest::config::FeedSource::External;
    cfg.load.connections = 5;
    cfg.load.symbols_per_conn = 4;
    cfg.load.duration = Duration::from_millis(500);
    let report = loadtest::run(cfg, CancellationToken::new()).await.unwrap();
    let text = report.to_string();
    let t = report.correctness.totals;
    assert_eq!(report.correctness.violations, 0, "{text}");
    assert_eq!(t.snapshots, 20, "{text}");
    assert_eq!(t.received, 20 * 49, "{text}");
    assert_eq!(t.received + t.skipped, t.seq_span, "{text}");
    assert!(
        report.fast.latency.end_to_end.count > 0 && report.fast.latency.send_to_client.count > 0,
        "{text}"
    );
    assert_eq!(report.connections.ends.get("closed by loadtest"), Some(&5), "{text}");
}
