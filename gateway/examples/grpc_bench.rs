//! GetSnapshot throughput while the feed runs at a steady rate, and whether
//! ingest kept its pace meanwhile.
//!
//! One process: the gateway (control runtime with one worker, as in
//! `main.rs`, plus its ingest thread), feed-sim on loopback multicast, and
//! the callers on their own one-worker runtime. Each scenario runs N
//! concurrent callers, each asking for K random symbols per call over a few
//! shared HTTP/2 connections.
//!
//! ```text
//! cargo run --release -p quotecast-gateway --example grpc_bench
//! GRPC_BENCH_SECS=5 GRPC_BENCH_RATE=20000 cargo run --release -p quotecast-gateway --example grpc_bench
//! ```

use gateway::{Bound, Config};
use quotecast_proto::v1::quote_service_client::QuoteServiceClient;
use quotecast_proto::v1::GetSnapshotRequest;
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// HTTP/2 connections the callers share.
const CONNECTIONS: usize = 4;
/// Symbols in the simulated universe.
const SYMBOLS: usize = 500;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Outcome {
    calls: u64,
    secs: f64,
    p50_us: u32,
    p99_us: u32,
    applied: u64,
    gaps: u64,
    missed: u64,
}

/// xorshift64*: cheap, seedable, good enough to pick symbols.
fn next(x: &mut u64) -> u64 {
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

async fn scenario(
    channels: &[Channel],
    names: &Arc<Vec<String>>,
    feed: &Arc<gateway::ingest::FeedStats>,
    callers: usize,
    per_call: usize,
    warmup: Duration,
    measure: Duration,
) -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    let counting = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..callers {
        let mut c = QuoteServiceClient::new(channels[i % channels.len()].clone());
        let (stop, counting, names) = (stop.clone(), counting.clone(), names.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (i as u64 + 1);
            let mut lat: Vec<u32> = Vec::with_capacity(1 << 16);
            while !stop.load(Ordering::Relaxed) {
                let symbols: Vec<String> = (0..per_call)
                    .map(|_| names[(next(&mut rng) % names.len() as u64) as usize].clone())
                    .collect();
                let t0 = Instant::now();
                let r = c.get_snapshot(GetSnapshotRequest { symbols, ..Default::default() }).await;
                let us = t0.elapsed().as_micros() as u32;
                let resp = r.expect("GetSnapshot failed").into_inner();
                // Every name is known (duplicates are answered once).
                assert!(resp.rejected.is_empty() && !resp.quotes.is_empty());
                if counting.load(Ordering::Relaxed) {
                    lat.push(us);
                }
            }
            lat
        }));
    }
    tokio::time::sleep(warmup).await;
    let (m0, g0, x0) = feed_counts(feed);
    counting.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(measure).await;
    counting.store(false, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let (m1, g1, x1) = feed_counts(feed);
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("caller panicked"));
    }
    lat.sort_unstable();
    let pct = |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).copied();
    Outcome {
        calls: lat.len() as u64,
        secs,
        p50_us: pct(0.50).unwrap_or(0),
        p99_us: pct(0.99).unwrap_or(0),
        applied: m1 - m0,
        gaps: g1 - g0,
        missed: x1 - x0,
    }
}

fn feed_counts(f: &gateway::ingest::FeedStats) -> (u64, u64, u64) {
    (
        f.messages.load(Ordering::Relaxed),
        f.gaps.load(Ordering::Relaxed),
        f.missed_messages.load(Ordering::Relaxed),
    )
}

fn main() -> anyhow::Result<()> {
    let secs = env_u64("GRPC_BENCH_SECS", 5);
    let rate = env_u64("GRPC_BENCH_RATE", 20_000);
    let measure = Duration::from_secs(secs);
    let warmup = Duration::from_secs(1);

    // A private group and a free port: never the default feed.
    let port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    let group = Ipv4Addr::new(239, 78, (std::process::id() % 250) as u8, 1);
    let mut cfg = Config::for_tests(group, port);
    cfg.ws.threads = 1;
    cfg.serve.log = "warn".into();

    // The gateway's control runtime, as main.rs builds it.
    let server_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let shutdown = CancellationToken::new();
    let gw = server_rt.block_on(gateway::start(cfg.clone(), Bound::bind(&cfg)?, shutdown.clone()))?;
    let grpc = gw.grpc_addr;
    let feed = gw.core.feed.clone();
    let book = gw.core.book.clone();

    let client_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    client_rt.block_on(async move {
        let sim_stop = CancellationToken::new();
        let sim = feed_sim::SimConfig {
            group,
            port,
            seed: 1,
            symbols: SYMBOLS,
            rate,
            session: Some("BENCH".into()),
            ..feed_sim::SimConfig::default()
        };
        let sim_task = tokio::spawn(feed_sim::run(sim, sim_stop.clone()));
        let t0 = Instant::now();
        while book.len() < SYMBOLS {
            anyhow::ensure!(t0.elapsed() < Duration::from_secs(10), "feed directory never arrived");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let names: Arc<Vec<String>> = Arc::new(book.symbols().iter().map(|s| s.as_str().to_string()).collect());
        let mut channels = Vec::new();
        for _ in 0..CONNECTIONS {
            channels.push(Channel::from_shared(format!("http://{grpc}"))?.connect().await?);
        }

        // Ingest alone first, for comparison.
        let (m0, _, _) = feed_counts(&feed);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle_rate = (feed_counts(&feed).0 - m0) as f64;
        println!("feed-sim target {rate} ticks/s over {SYMBOLS} symbols; ingest alone applied {idle_rate:.0} msg/s");
        println!(
            "{:>8} {:>8} {:>10} {:>9} {:>9} {:>14} {:>6} {:>7}",
            "symbols", "callers", "calls/s", "p50 us", "p99 us", "ingest msg/s", "gaps", "missed"
        );
        for (per_call, callers) in [(1, 8), (1, 64), (100, 8), (100, 64)] {
            let o = scenario(&channels, &names, &feed, callers, per_call, warmup, measure).await;
            println!(
                "{:>8} {:>8} {:>10.0} {:>9} {:>9} {:>14.0} {:>6} {:>7}",
                per_call,
                callers,
                o.calls as f64 / o.secs,
                o.p50_us,
                o.p99_us,
                o.applied as f64 / o.secs,
                o.gaps,
                o.missed
            );
        }
        sim_stop.cancel();
        let report = sim_task.await??;
        // The end-of-session packets may still be in flight.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let applied = feed.messages.load(Ordering::Relaxed);
        println!(
            "feed-sim sent {} messages ({:.0} ticks/s achieved, {} ticks skipped by its pacer); \
             gateway applied {} (gaps {}, missed {}): ingest {}",
            report.messages,
            report.ticks_per_sec(),
            report.skipped_ticks,
            applied,
            feed.gaps.load(Ordering::Relaxed),
            feed.missed_messages.load(Ordering::Relaxed),
            if applied == report.messages { "kept pace, nothing lost" } else { "DID NOT keep pace" }
        );
        anyhow::Ok(())
    })?;
    shutdown.cancel();
    server_rt.block_on(gw.wait())?;
    Ok(())
}
