//! Two gateways, one feed: gateway A runs from the session's start,
//! gateway B starts 10 s into it and builds its book from the snapshot
//! channel. B is not ready until every symbol is rebuilt; from then on its
//! clients see exactly what A's see, update by update: the same
//! `(epoch, seq)` and the same values. A client that reads from A, then
//! moves to B and resumes with `from_seq`/`from_epoch`, loses nothing.

mod common;

use common::*;
use feed_sim::SimConfig;
use quotecast_proto::v1::{self, client_message::Op, QuoteUpdate};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// What two gateways must agree on for one update.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    epoch: String,
    seq: u64,
    bid: (i64, u64),
    ask: (i64, u64),
    last: (i64, u64),
    ts_event: i64,
    stale: bool,
    trading_state: i32,
}

impl Seen {
    fn of(u: &QuoteUpdate) -> Seen {
        Seen {
            epoch: u.epoch.clone(),
            seq: u.seq,
            bid: (u.bid_px, u.bid_sz),
            ask: (u.ask_px, u.ask_sz),
            last: (u.last_px, u.last_sz),
            ts_event: u.ts_event,
            stale: u.stale,
            trading_state: u.trading_state,
        }
    }
}

async fn subscribe(c: &mut Client, symbols: &[String], from: BTreeMap<String, u64>, epoch: &str) {
    c.send_pb(v1::ClientMessage {
        id: "s".into(),
        op: Some(Op::Subscribe(v1::Subscribe {
            symbols: symbols.to_vec(),
            from_seq: from.into_iter().collect(),
            from_epoch: epoch.to_string(),
        })),
    })
    .await;
}

/// Each symbol's final seq, once the simulator is done.
type Finals = tokio::sync::watch::Receiver<Option<HashMap<String, u64>>>;

/// Reads updates until every symbol named in `want` (once it is known)
/// reached its final seq, or `stop` is cancelled.
async fn read_until(c: &mut Client, out: &mut Vec<QuoteUpdate>, mut want: Finals, stop: CancellationToken) {
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut want_open = true;
    loop {
        if let Some(w) = &*want.borrow() {
            if w.iter().all(|(s, n)| last.get(s) == Some(n)) {
                return;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = want.changed(), if want_open => want_open = changed.is_ok(),
            b = c.updates() => {
                for u in &b {
                    last.insert(u.symbol.clone(), u.seq);
                }
                out.extend(b);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_started_mid_session_serves_the_same_stream_as_one_that_saw_it_all() {
    let (snap_group, snap_port) = unique_feed();
    let with_snapshots = |c: &mut gateway::Config| {
        c.feed.snapshot_group = Some(snap_group);
        c.feed.snapshot_port = Some(snap_port);
        c.ws.queue_capacity = 1 << 16;
    };
    let a = Gw::start_with(with_snapshots).await;
    let (group, port) = (a.group, a.port);
    let sim = SimConfig {
        group,
        port,
        seed: 7,
        symbols: 200,
        rate: 4_000,
        duration: Some(Duration::from_secs(14)),
        quiet_end_ms: 500,
        snapshot_group: Some(snap_group),
        snapshot_port: Some(snap_port),
        // 200 symbols at 5,000/s: a cycle every 40 ms.
        snapshot_rate: 5_000,
        record: true,
        ..SimConfig::default()
    };
    let symbols = feed_sim::Market::new(sim.seed, sim.symbols, sim.zipf, sim.trade_ratio).tickers();
    let sim_task = tokio::spawn(feed_sim::run(sim, CancellationToken::new()));
    a.until("A has the directory", |r| r.core.book.len() == 200).await;

    // On A from the start: one client that stays, one that will move to B.
    let mut stays = Client::connect(&a.ws_url("")).await;
    subscribe(&mut stays, &symbols, BTreeMap::new(), "").await;
    let mut mover = Client::connect(&a.ws_url("")).await;
    subscribe(&mut mover, &symbols, BTreeMap::new(), "").await;
    let (finals_tx, finals) = tokio::sync::watch::channel(None);
    let stays_task = {
        let finals = finals.clone();
        tokio::spawn(async move {
            let mut out = Vec::new();
            read_until(&mut stays, &mut out, finals, CancellationToken::new()).await;
            out
        })
    };
    let mover_stop = CancellationToken::new();
    let mover_task = {
        let stop = mover_stop.clone();
        let (_never_tx, never) = tokio::sync::watch::channel(None);
        tokio::spawn(async move {
            let mut out = Vec::new();
            read_until(&mut mover, &mut out, never, stop).await;
            drop(_never_tx);
            (mover, out)
        })
    };

    tokio::time::sleep(Duration::from_secs(10)).await;
    let t_start = Instant::now();
    let b = Gw::start_with(|c| {
        c.feed.group = group;
        c.feed.port = port;
        with_snapshots(c);
    })
    .await;
    let t_ready = {
        let t0 = Instant::now();
        while !b.running.core.feed.ready() {
            assert!(t0.elapsed() < Duration::from_secs(10), "B never became ready");
            assert!(
                !b.running.core.feed.ready() || !b.running.core.feed.joining.load(Relaxed),
                "ready while joining"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        t_start.elapsed()
    };
    let fb = &b.running.core.feed;
    assert!(fb.next_seq.load(Relaxed) > 10_000, "B joined mid-session");
    assert_eq!(fb.stale_symbols.load(Relaxed), 0, "ready means every symbol rebuilt");
    assert!(fb.snapshot.recovered.load(Relaxed) >= 200);
    eprintln!(
        "late join: ready {t_ready:?} after start ({} ns by the gateway's count)",
        fb.snapshot.late_join_ns.load(Relaxed)
    );

    // A client of B from here on.
    let mut fresh = Client::connect(&b.ws_url("")).await;
    subscribe(&mut fresh, &symbols, BTreeMap::new(), "").await;

    // The mover leaves A and resumes on B from what it holds.
    mover_stop.cancel();
    let (mover, mut moved) = mover_task.await.unwrap();
    drop(mover);
    let mut held: BTreeMap<String, u64> = BTreeMap::new();
    for u in &moved {
        held.insert(u.symbol.clone(), u.seq);
    }
    let epoch = moved.last().expect("the mover read updates").epoch.clone();
    let mut resumed = Client::connect(&b.ws_url("")).await;
    subscribe(&mut resumed, &symbols, held.clone(), &epoch).await;

    let report = sim_task.await.unwrap().unwrap();
    let last_seqs: HashMap<String, u64> =
        report.last.iter().map(|(s, t)| (s.clone(), u64::from(t.symbol_seq))).collect();
    finals_tx.send_replace(Some(last_seqs.clone()));
    let finals = &last_seqs;
    let mut from_b = Vec::new();
    read_until(&mut fresh, &mut from_b, finals_tx.subscribe(), CancellationToken::new()).await;
    let mut after_move = Vec::new();
    read_until(&mut resumed, &mut after_move, finals_tx.subscribe(), CancellationToken::new()).await;
    let from_a = stays_task.await.unwrap();
    assert_eq!(
        b.running.core.ws.resume_failed.load(Relaxed),
        0,
        "every resume on B was served from its ring"
    );

    // A's view: (symbol, seq) -> what it showed (its first snapshot too).
    let mut a_view: HashMap<(String, u64), Seen> = HashMap::new();
    for u in &from_a {
        a_view.insert((u.symbol.clone(), u.seq), Seen::of(u));
    }
    // B's fresh client: a snapshot per symbol, then every update, each the
    // same as A's for the same (epoch, seq).
    let mut last_b: HashMap<String, u64> = HashMap::new();
    let mut compared = 0;
    for u in &from_b {
        let prev = last_b.insert(u.symbol.clone(), u.seq);
        match prev {
            None => assert!(u.snapshot && !u.stale, "{}: B starts with a vouched snapshot", u.symbol),
            Some(p) => assert_eq!(u.seq, p + 1, "{}: every update on B, in order", u.symbol),
        }
        assert_eq!(u.epoch, report.session.to_string());
        if u.seq == 0 {
            continue;
        }
        let want = a_view
            .get(&(u.symbol.clone(), u.seq))
            .unwrap_or_else(|| panic!("A never showed {} {}", u.symbol, u.seq));
        assert_eq!(&Seen::of(u), want, "{} seq {}: B differs from A", u.symbol, u.seq);
        compared += 1;
    }
    assert!(compared > 10_000, "compared {compared} updates");
    // The mover: what it read on A, then on B, is every update once.
    moved.extend(after_move);
    let mut last_m: HashMap<String, u64> = HashMap::new();
    for u in &moved {
        if let Some(p) = last_m.insert(u.symbol.clone(), u.seq) {
            assert_eq!(
                u.seq,
                p + 1,
                "{}: the move lost or repeated an update ({p} then {})",
                u.symbol,
                u.seq
            );
        }
        if u.seq > 0 {
            assert_eq!(
                Some(&Seen::of(u)),
                a_view.get(&(u.symbol.clone(), u.seq)),
                "{} seq {}",
                u.symbol,
                u.seq
            );
        }
    }
    for s in &symbols {
        assert_eq!(last_m.get(s), finals.get(s), "{s}: the mover reached the end");
    }
    a.stop().await;
    b.stop().await;
}
