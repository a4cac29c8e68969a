//! feed-sim -> multicast -> feed-relay -> nats-server -> gateways on
//! `--feed-nats`: the same sequencer, arbitration and recovery as on
//! multicast, so the same stream update by update.
//!
//! Every test starts its own nats-server on a free loopback port, its own
//! multicast groups and a subject prefix of its own, so they run in
//! parallel.

#[path = "../../gateway/tests/common/mod.rs"]
mod common;
mod support;

use bytes::Bytes;
use common::*;
use feed_sim::SimConfig;
use quotecast_proto::v1::{self, client_message::Op};
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use support::*;
use tokio_util::sync::CancellationToken;

fn symbols_of(sim: &SimConfig) -> Vec<String> {
    feed_sim::Market::new(sim.seed, sim.symbols, sim.zipf, sim.trade_ratio).tickers()
}

async fn subscribe_all(gw: &Gw, symbols: &[String]) -> Client {
    let mut c = Client::connect(&gw.ws_url("")).await;
    c.send_pb(v1::ClientMessage {
        id: "s".into(),
        op: Some(Op::Subscribe(v1::Subscribe {
            symbols: symbols.to_vec(),
            from_seq: Default::default(),
            from_epoch: String::new(),
        })),
    })
    .await;
    c
}

/// A gateway on `--feed-nats` with the recovery paths the relay serves.
async fn nats_gateway(url: &str, prefix: &str, line_b: bool, retrans: bool) -> Gw {
    Gw::start_with(|c| {
        c.feed_nats.url = Some(url.parse().unwrap());
        c.feed_nats.subject_prefix = prefix.to_string();
        c.feed_nats.line_b = line_b;
        c.feed_nats.retrans = retrans;
        deep(c);
    })
    .await
}

/// Deep queues and patient recovery: these tests are about values, and a
/// debug build on a busy machine must turn neither a burst into
/// conflation nor a slow answer into a gap.
fn deep(c: &mut gateway::Config) {
    c.ws.queue_capacity = 1 << 16;
    c.feed.retrans_timeout_ms = 2_000;
    c.feed.reorder_hold_us = 200_000;
    c.feed.reorder_window = 1024;
}

/// Waits until `gw`'s NATS subscriptions are live: a garbage message on
/// line A's subject reached ingest (and was counted as a decode error, as
/// a garbage datagram on multicast is), and a message too large for a
/// datagram was counted and skipped.
async fn probe(gw: &Gw, nats: &async_nats::Client, prefix: &str) {
    let f = gw.running.core.feed.clone();
    let t0 = std::time::Instant::now();
    while f.nats.messages[0].load(Relaxed) == 0 {
        assert!(t0.elapsed() < std::time::Duration::from_secs(10), "the gateway never got line A's subject");
        nats.publish(format!("{prefix}.a"), Bytes::from_static(b"junk")).await.unwrap();
        nats.flush().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let junk = f.nats.messages[0].load(Relaxed);
    until("garbage counted by the decoder", 10, || {
        f.decode_errors.iter().map(|e| e.load(Relaxed)).sum::<u64>() >= junk
    })
    .await;
    nats.publish(format!("{prefix}.a"), Bytes::from(vec![0u8; 70_000])).await.unwrap();
    nats.flush().await.unwrap();
    until("oversize message counted", 10, || f.nats.dropped[0].load(Relaxed) == 1).await;
    assert_eq!(f.nats.messages[0].load(Relaxed), junk, "the oversize message never reached ingest");
}

/// Waits until the relay's retransmission subscription is live: a request
/// that is not a re-request is counted as malformed.
async fn probe_relay(r: &Relay, nats: &async_nats::Client, prefix: &str) {
    let t0 = std::time::Instant::now();
    let series = "feedrelay_retrans_requests_total{result=\"malformed\"}";
    while r.metric(series) == 0.0 {
        assert!(t0.elapsed() < std::time::Duration::from_secs(10), "the relay never served {prefix}.retrans");
        nats.publish_with_reply(format!("{prefix}.retrans"), "nowhere", Bytes::from_static(b"not a request"))
            .await
            .unwrap();
        nats.flush().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Both lines lose every 97th packet; a gateway on multicast fills the
/// holes from feed-sim's retransmission server over UDP, a gateway on
/// NATS through the relay. Each client sees every update once and in
/// order, and for every (symbol, seq) both show the same (epoch, values).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_on_nats_serves_the_same_stream_as_one_on_multicast() {
    let nats = NatsServer::start();
    let prefix = unique_prefix();
    let (group_b, port_b) = unique_feed();
    let retrans: std::net::SocketAddr =
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let m = Gw::start_with(|c| {
        c.feed.group_b = Some(group_b);
        c.feed.port_b = Some(port_b);
        c.feed.retrans_addr = Some(retrans);
        deep(c);
    })
    .await;
    let relay = Relay::start(&nats.url(), &prefix, m.group, m.port, |c| {
        c.line_b_group = Some(group_b);
        c.line_b_port = Some(port_b);
        c.retrans_addr = Some(retrans);
    })
    .await;
    let n = nats_gateway(&nats.url(), &prefix, true, true).await;
    let probe_client = async_nats::connect(nats.url()).await.unwrap();
    until("relay connected", 10, || relay.metric("feedrelay_nats_connected") == 1.0).await;
    probe(&n, &probe_client, &prefix).await;
    probe_relay(&relay, &probe_client, &prefix).await;

    let sim = SimConfig {
        group: m.group,
        port: m.port,
        seed: 11,
        symbols: 80,
        rate: 10_000,
        max_ticks: Some(30_000),
        line_b_group: Some(group_b),
        line_b_port: Some(port_b),
        drop_every: 97,
        retrans_addr: Some(retrans),
        // Still answering when a loaded machine's gateways find the last
        // holes, well after the last packet was sent.
        retrans_linger_ms: 5_000,
        ..SimConfig::default()
    };
    let symbols = symbols_of(&sim);
    let sim_task = tokio::spawn(feed_sim::run(sim, CancellationToken::new()));
    for g in [&m, &n] {
        g.until("directory", |r| r.core.book.len() == symbols.len()).await;
    }
    let mut cm = subscribe_all(&m, &symbols).await;
    let mut cn = subscribe_all(&n, &symbols).await;
    let (tx, finals) = tokio::sync::watch::channel(None);
    let (report, from_m, from_n) = tokio::join!(
        finish(sim_task, tx),
        read_until_final(&mut cm, &m, &symbols, &finals),
        read_until_final(&mut cn, &n, &symbols, &finals)
    );
    assert!(report.dropped_packets > 20, "lost on both lines: {}", report.dropped_packets);

    for (name, g) in [("multicast", &m), ("nats", &n)] {
        let f = &g.running.core.feed;
        let r = &f.retrans;
        eprintln!(
            "{name}: retrans requests {} filled {} packets {} messages {}",
            r.requests.load(Relaxed),
            r.filled.load(Relaxed),
            r.packets.load(Relaxed),
            r.messages.load(Relaxed),
        );
        g.until("every message applied", |r| r.core.feed.messages.load(Relaxed) >= report.messages).await;
        assert_eq!(f.messages.load(Relaxed), report.messages, "{name}: every message applied once");
        assert_eq!(f.gaps.load(Relaxed), 0, "{name}: every hole filled ({})", losses(g));
        // (`retrans.messages` counts only answers applied on arrival, not
        // those held behind an earlier hole, so it is no total here.)
        assert!(r.filled.load(Relaxed) > 0, "{name}: holes filled by retransmission");
        assert_eq!((r.gone.load(Relaxed), r.timed_out.load(Relaxed)), (0, 0), "{name}: every hole filled");
    }
    let nf = &n.running.core.feed;
    assert!(
        nf.nats.retrans_requests.load(Relaxed) > 0 && nf.nats.messages[3].load(Relaxed) > 0,
        "gap fill over NATS"
    );
    assert!(nf.line(gateway::ingest::Line::B).won.load(Relaxed) > 0, "line B over NATS is arbitrated");
    assert!(relay.metric("feedrelay_retrans_requests_total{result=\"answered\"}") > 0.0);
    assert!(relay.metric("feedrelay_relayed_packets_total{line=\"b\"}") > 0.0);

    let vm = complete_view("multicast", &from_m);
    let vn = complete_view("nats", &from_n);
    for u in from_m.iter().chain(&from_n) {
        assert_eq!(u.epoch, report.session.to_string());
    }
    let compared = same_updates(("multicast", "nats"), &vm, &vn);
    assert!(compared > 15_000, "compared {compared} of 30,000 updates");
    eprintln!("multicast vs NATS: {compared} updates compared, all equal");
    n.stop().await;
    m.stop().await;
    relay.stop().await;
}

/// Three gateways on the NATS path, one relay: every client sees every
/// update in order, and the three agree on each one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_gateways_on_nats_serve_the_same_stream() {
    let nats = NatsServer::start();
    let prefix = unique_prefix();
    let (group, port) = unique_feed();
    let retrans: std::net::SocketAddr =
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let relay = Relay::start(&nats.url(), &prefix, group, port, |c| c.retrans_addr = Some(retrans)).await;
    let probe_client = async_nats::connect(nats.url()).await.unwrap();
    until("relay connected", 10, || relay.metric("feedrelay_nats_connected") == 1.0).await;
    let mut gws = Vec::new();
    for _ in 0..3 {
        let g = nats_gateway(&nats.url(), &prefix, false, true).await;
        probe(&g, &probe_client, &prefix).await;
        gws.push(g);
    }
    let sim = SimConfig {
        group,
        port,
        seed: 5,
        symbols: 60,
        rate: 10_000,
        max_ticks: Some(20_000),
        ..SimConfig::default()
    };
    let symbols = symbols_of(&sim);
    let sim_task = tokio::spawn(feed_sim::run(sim, CancellationToken::new()));
    let mut clients = Vec::new();
    for g in &gws {
        g.until("directory", |r| r.core.book.len() == symbols.len()).await;
        clients.push(subscribe_all(g, &symbols).await);
    }
    let (tx, finals) = tokio::sync::watch::channel(None);
    let (report, all) = tokio::join!(
        finish(sim_task, tx),
        futures_util::future::join_all(
            clients.iter_mut().zip(&gws).map(|(c, g)| read_until_final(c, g, &symbols, &finals))
        )
    );
    let mut views = Vec::new();
    for (i, got) in all.into_iter().enumerate() {
        let f = &gws[i].running.core.feed;
        assert_eq!(f.gaps.load(Relaxed), 0, "gateway {i}: no gap on a clean feed ({})", losses(&gws[i]));
        views.push(complete_view(&format!("gateway {i}"), &got));
    }
    for (i, j) in [(0, 1), (1, 2), (0, 2)] {
        let compared = same_updates((&format!("gateway {i}"), &format!("gateway {j}")), &views[i], &views[j]);
        assert!(compared > 10_000, "gateways {i} and {j}: compared {compared}");
    }
    // Every family the relay exports is in the operators' catalogue.
    let catalogue =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../dashboards/README.md")).unwrap();
    let text = relay.running.metrics.render();
    let families: Vec<&str> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()).collect();
    assert!(families.len() >= 9, "{families:?}");
    for name in families {
        assert!(catalogue.contains(&format!("`{name}`")), "{name} missing from dashboards/README.md");
    }
    let relayed = relay.metric("feedrelay_relayed_packets_total{line=\"a\"}");
    assert!(relayed >= report.packets as f64, "relayed {relayed} of {} datagrams", report.packets);
    for g in gws {
        g.stop().await;
    }
    relay.stop().await;
}

/// What a gateway lost on the way, for failure messages.
fn losses(g: &Gw) -> String {
    let f = &g.running.core.feed;
    let n = &f.nats;
    format!(
        "line A missed {}, NATS dropped {:?}, retrans filled {} gone {} timed out {}",
        f.line(gateway::ingest::Line::A).missed_messages.load(Relaxed),
        n.dropped.iter().map(|d| d.load(Relaxed)).collect::<Vec<_>>(),
        f.retrans.filled.load(Relaxed),
        f.retrans.gone.load(Relaxed),
        f.retrans.timed_out.load(Relaxed),
    )
}

/// Every update a client gets until none came for 3 s (the feed is over).
async fn read_until_quiet(mut c: Client) -> Vec<v1::QuoteUpdate> {
    let mut out = Vec::new();
    while let Ok(b) = tokio::time::timeout(std::time::Duration::from_secs(3), c.updates()).await {
        out.extend(b);
    }
    out
}

/// A gateway on NATS started mid-session builds its book from the
/// snapshot channel carried over NATS, is not ready until it has, and from
/// then on serves what a gateway on multicast that saw the whole session
/// serves, update by update.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_start_over_nats_rebuilds_from_the_snapshot_subject() {
    let nats = NatsServer::start();
    let prefix = unique_prefix();
    let (snap_group, snap_port) = unique_feed();
    let retrans_addr = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let m = Gw::start_with(|c| {
        c.feed.snapshot_group = Some(snap_group);
        c.feed.snapshot_port = Some(snap_port);
        c.feed.retrans_addr = Some(retrans_addr);
        deep(c);
    })
    .await;
    // Gap fill on both paths: a datagram lost on a loaded machine is
    // filled, not a gap that would make a stream incomplete.
    let retrans = retrans_addr;
    let relay = Relay::start(&nats.url(), &prefix, m.group, m.port, |c| {
        c.snapshot_group = Some(snap_group);
        c.snapshot_port = Some(snap_port);
        c.retrans_addr = Some(retrans);
    })
    .await;
    until("relay connected", 10, || relay.metric("feedrelay_nats_connected") == 1.0).await;
    let sim = SimConfig {
        group: m.group,
        port: m.port,
        seed: 3,
        symbols: 100,
        rate: 4_000,
        duration: Some(std::time::Duration::from_secs(6)),
        quiet_end_ms: 500,
        snapshot_group: Some(snap_group),
        snapshot_port: Some(snap_port),
        // 100 symbols at 5,000/s: a cycle every 20 ms.
        snapshot_rate: 5_000,
        retrans_addr: Some(retrans),
        ..SimConfig::default()
    };
    let symbols = symbols_of(&sim);
    let sim_task = tokio::spawn(feed_sim::run(sim, CancellationToken::new()));
    m.until("directory", |r| r.core.book.len() == symbols.len()).await;
    let cm = tokio::spawn(read_until_quiet(subscribe_all(&m, &symbols).await));
    m.until("mid-session", |r| r.core.feed.next_seq.load(Relaxed) > 5_000).await;

    let n = Gw::start_with(|c| {
        c.feed_nats.url = Some(nats.url().parse().unwrap());
        c.feed_nats.subject_prefix = prefix.clone();
        c.feed_nats.snapshot = true;
        c.feed_nats.retrans = true;
        deep(c);
    })
    .await;
    let f = n.running.core.feed.clone();
    until("the NATS gateway is ready", 15, || f.ready()).await;
    assert!(
        f.snapshot.recovered.load(Relaxed) >= symbols.len() as u64,
        "every symbol rebuilt from the snapshot subject"
    );
    assert!(f.nats.messages[2].load(Relaxed) > 0, "snapshots came over NATS");
    assert_eq!(f.stale_symbols.load(Relaxed), 0);
    let cn = tokio::spawn(read_until_quiet(subscribe_all(&n, &symbols).await));

    let report = sim_task.await.unwrap().unwrap();
    let (from_m, from_n) = (cm.await.unwrap(), cn.await.unwrap());
    for (name, g) in [("multicast", &m), ("late NATS", &n)] {
        let f = &g.running.core.feed;
        assert_eq!(f.gaps.load(Relaxed), 0, "{name}: no gap ({})", losses(g));
    }
    for (name, got) in [("multicast", &from_m), ("late NATS", &from_n)] {
        let mut last = HashMap::new();
        for u in got {
            last.insert(u.symbol.clone(), (u.seq, u.stale));
        }
        for (s, t) in &report.last {
            assert_eq!(last.get(s), Some(&(u64::from(t.symbol_seq), false)), "{name} {s}: reached the end");
        }
    }
    let vm = complete_view("multicast", &from_m);
    let vn = complete_view("late NATS", &from_n);
    let compared = same_updates(("multicast", "late NATS"), &vn, &vm);
    assert!(compared > 3_000, "compared {compared}");
    n.stop().await;
    m.stop().await;
    relay.stop().await;
}
