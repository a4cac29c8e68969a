//! nats-server killed under load and restarted on the same port: the
//! relay and the gateways reconnect by themselves, the hole the outage
//! left is repaired the way a multicast loss is (gap fill over NATS, else
//! symbols rebuilt from the snapshot channel over NATS), every client ends
//! at the simulator's final values, and the gateways' metrics say what
//! was lost.

#[path = "../../gateway/tests/common/mod.rs"]
mod common;
mod support;

use common::*;
use feed_sim::SimConfig;
use quotecast_proto::feed::Message;
use quotecast_proto::v1::{self, client_message::Op, QuoteUpdate};
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use support::*;
use tokio_util::sync::CancellationToken;

/// A symbol's values after one of its updates, as the simulator made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Truth {
    bid: (i64, u64),
    ask: (i64, u64),
    last: (i64, u64),
}

impl Truth {
    fn of(u: &QuoteUpdate) -> Truth {
        Truth { bid: (u.bid_px, u.bid_sz), ask: (u.ask_px, u.ask_sz), last: (u.last_px, u.last_sz) }
    }
}

/// symbol -> values after its 1st, 2nd, ... update (index seq - 1).
fn history(recorded: &[(u64, Message)]) -> HashMap<String, Vec<Truth>> {
    let mut names: HashMap<u16, String> = HashMap::new();
    let mut cur: HashMap<u16, Truth> = HashMap::new();
    let mut out: HashMap<String, Vec<Truth>> = HashMap::new();
    for (_, m) in recorded {
        match *m {
            Message::SymbolDirectory { locate, symbol } => {
                names.insert(locate, symbol.as_str().to_string());
            }
            Message::Quote { locate, bid_px, bid_sz, ask_px, ask_sz, .. } => {
                let t = cur.entry(locate).or_default();
                (t.bid, t.ask) = ((bid_px, u64::from(bid_sz)), (ask_px, u64::from(ask_sz)));
                out.entry(names[&locate].clone()).or_default().push(*t);
            }
            Message::Trade { locate, px, sz, .. } => {
                let t = cur.entry(locate).or_default();
                t.last = (px, u64::from(sz));
                out.entry(names[&locate].clone()).or_default().push(*t);
            }
            _ => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateways_on_nats_recover_from_a_nats_server_restart_under_load() {
    let mut nats = NatsServer::start();
    let prefix = unique_prefix();
    let (group, port) = unique_feed();
    let (snap_group, snap_port) = unique_feed();
    let retrans: std::net::SocketAddr =
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let relay = Relay::start(&nats.url(), &prefix, group, port, |c| {
        c.snapshot_group = Some(snap_group);
        c.snapshot_port = Some(snap_port);
        c.retrans_addr = Some(retrans);
        // A debug build streams a 2,000-datagram answer slowly.
        c.retrans_max_answer_ms = 2_000;
    })
    .await;
    until("relay connected", 10, || relay.metric("feedrelay_nats_connected") == 1.0).await;
    let mut gws = Vec::new();
    for _ in 0..2 {
        gws.push(
            Gw::start_with(|c| {
                c.feed_nats.url = Some(nats.url().parse().unwrap());
                c.feed_nats.subject_prefix = prefix.clone();
                c.feed_nats.snapshot = true;
                c.feed_nats.retrans = true;
                c.ws.queue_capacity = 1 << 16;
                // A debug build on a busy machine answers slowly; the
                // hole should wait for its answer.
                c.feed.retrans_timeout_ms = 2_000;
            })
            .await,
        );
    }
    for g in &gws {
        let f = g.running.core.feed.clone();
        until("gateway connected", 10, || f.nats.connected.load(Relaxed)).await;
    }

    let sim = SimConfig {
        group,
        port,
        seed: 23,
        symbols: 60,
        rate: 5_000,
        duration: Some(Duration::from_secs(7)),
        quiet_end_ms: 1_000,
        snapshot_group: Some(snap_group),
        snapshot_port: Some(snap_port),
        // 60 symbols at 3,000/s: a cycle every 20 ms.
        snapshot_rate: 3_000,
        retrans_addr: Some(retrans),
        record: true,
        ..SimConfig::default()
    };
    let symbols = feed_sim::Market::new(sim.seed, sim.symbols, sim.zipf, sim.trade_ratio).tickers();
    let sim_task = tokio::spawn(feed_sim::run(sim, CancellationToken::new()));
    let mut clients = Vec::new();
    for g in &gws {
        g.until("directory", |r| r.core.book.len() == symbols.len()).await;
        let mut c = Client::connect(&g.ws_url("")).await;
        c.send_pb(v1::ClientMessage {
            id: "s".into(),
            op: Some(Op::Subscribe(v1::Subscribe {
                symbols: symbols.clone(),
                from_seq: Default::default(),
                from_epoch: String::new(),
            })),
        })
        .await;
        clients.push(c);
    }
    // Clients read all along, so the outage reaches them as it happens,
    // until every symbol is at its final seq and vouched for (the finals
    // are known once the simulator is done).
    let (finals_tx, finals_rx) = tokio::sync::watch::channel(None::<HashMap<String, u64>>);
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let mut finals = finals_rx.clone();
            tokio::spawn(async move {
                let mut out: Vec<QuoteUpdate> = Vec::new();
                let mut last: HashMap<String, (u64, bool)> = HashMap::new();
                let t0 = std::time::Instant::now();
                loop {
                    if let Some(f) = &*finals.borrow() {
                        if f.iter().all(|(s, n)| last.get(s) == Some(&(*n, false))) {
                            return out;
                        }
                    }
                    assert!(t0.elapsed() < Duration::from_secs(60), "clients never reached the final values");
                    tokio::select! {
                        _ = finals.changed() => {}
                        b = c.updates() => {
                            for u in &b {
                                last.insert(u.symbol.clone(), (u.seq, u.stale));
                            }
                            out.extend(b);
                        }
                    }
                }
            })
        })
        .collect();

    // Under load: kill the server once both gateways applied a good part.
    for g in &gws {
        g.until("load", |r| r.core.feed.messages.load(Relaxed) > 8_000).await;
    }
    nats.kill();
    for g in &gws {
        let f = g.running.core.feed.clone();
        until("gateway saw the disconnect", 10, || !f.nats.connected.load(Relaxed)).await;
    }
    until("relay saw the disconnect", 10, || relay.metric("feedrelay_nats_connected") == 0.0).await;
    let lost_at: Vec<u64> = gws.iter().map(|g| g.running.core.feed.messages.load(Relaxed)).collect();
    // Some feed goes by with no server.
    tokio::time::sleep(Duration::from_millis(300)).await;
    nats.restart();
    for g in &gws {
        let f = g.running.core.feed.clone();
        until("gateway reconnected", 15, || f.nats.connected.load(Relaxed)).await;
    }
    until("relay reconnected", 15, || relay.metric("feedrelay_nats_reconnects_total") >= 1.0).await;

    let report = sim_task.await.unwrap().unwrap();
    finals_tx
        .send_replace(Some(report.last.iter().map(|(s, t)| (s.clone(), u64::from(t.symbol_seq))).collect()));
    let hist = history(&report.recorded);
    for (i, (g, reader)) in gws.iter().zip(readers).enumerate() {
        let got = reader.await.unwrap();
        // seq never goes back; a jump is marked stale or is a rebuilt
        // snapshot; every value vouched for is the simulator's at that seq.
        let mut last: HashMap<String, (u64, bool, Truth)> = HashMap::new();
        for u in &got {
            if let Some(&(p, _, _)) = last.get(&u.symbol) {
                assert!(u.seq >= p, "gateway {i} {}: seq went back {p} -> {}", u.symbol, u.seq);
                if u.seq > p + 1 {
                    assert!(
                        u.stale || u.snapshot,
                        "gateway {i} {}: jump {p} -> {} not marked",
                        u.symbol,
                        u.seq
                    );
                }
            }
            if u.seq > 0 && !u.stale {
                let want = hist[&u.symbol][u.seq as usize - 1];
                assert_eq!(Truth::of(u), want, "gateway {i} {} seq {}: not the simulator's", u.symbol, u.seq);
            }
            assert_eq!(u.epoch, report.session.to_string());
            last.insert(u.symbol.clone(), (u.seq, u.stale, Truth::of(u)));
        }
        for s in &symbols {
            let t = &report.last[s];
            let (seq, stale, seen) = last[s];
            assert_eq!(seq, u64::from(t.symbol_seq), "gateway {i} {s}: ends at the last seq");
            assert!(!stale, "gateway {i} {s}: ends vouched for");
            assert_eq!(
                seen,
                Truth {
                    bid: (t.bid_px, u64::from(t.bid_sz)),
                    ask: (t.ask_px, u64::from(t.ask_sz)),
                    last: (t.last_px, u64::from(t.last_sz))
                },
                "gateway {i} {s}: final value equals the simulator's"
            );
        }

        // What the metrics say it lost, and how it came back.
        let f = &g.running.core.feed;
        let text = g.running.core.metrics.render(&g.running.core);
        let disconnects = metric(&text, "quotecast_feed_nats_disconnects_total");
        let line_missed = metric(&text, "quotecast_feed_line_missed_messages_total{line=\"a\"}");
        let gaps = metric(&text, "quotecast_feed_gaps_total");
        let filled = metric(&text, "quotecast_feed_retrans_ranges_total{result=\"filled\"}");
        let rebuilt = metric(&text, "quotecast_feed_snapshot_recovered_symbols_total");
        eprintln!(
            "gateway {i}: disconnects {disconnects}, line A missed {line_missed} messages, gaps {gaps}, \
             ranges filled {filled} gone {} timed out {}, symbols rebuilt {rebuilt}, retrans over NATS {} \
             (applied at the kill: {})",
            f.retrans.gone.load(Relaxed),
            f.retrans.timed_out.load(Relaxed),
            f.nats.retrans_requests.load(Relaxed),
            lost_at[i]
        );
        assert!(disconnects >= 1.0, "gateway {i}: the disconnect is counted");
        assert_eq!(metric(&text, "quotecast_feed_nats_connected"), 1.0);
        assert!(line_missed > 0.0, "gateway {i}: the outage is a hole on line A");
        assert!(
            filled > 0.0 || (gaps > 0.0 && rebuilt > 0.0),
            "gateway {i}: the hole was filled or recovered"
        );
    }
    let r = |result: &str| relay.metric(&format!("feedrelay_retrans_requests_total{{result=\"{result}\"}}"));
    eprintln!(
        "relay: retrans answered {} unanswered {} busy {} failed {}, answer datagrams {}, dropped while disconnected {}",
        r("answered"),
        r("unanswered"),
        r("busy"),
        r("failed"),
        relay.metric("feedrelay_retrans_answer_packets_total"),
        relay.metric("feedrelay_dropped_packets_total{line=\"a\"}"),
    );
    assert!(relay.metric("feedrelay_nats_disconnects_total") >= 1.0);
    for g in gws {
        g.stop().await;
    }
    relay.stop().await;
}
