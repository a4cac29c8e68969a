//! End-to-end: the snapshot channel, received over loopback multicast,
//! equals the simulator's state at each snapshot's feed sequence.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{decode_all, join, test_config, unique_group_port};
use feed_sim::SimConfig;
use quotecast_proto::feed::{Message, PacketKind, ReasonCode, Symbol, SymbolSnapshot, TradingState};
use tokio_util::sync::CancellationToken;

/// Replays the recorded live stream up to `feed_seq`: the state a
/// snapshot of `locate` reflecting it must have.
fn state_at(recorded: &[(u64, Message)], locate: u16, feed_seq: u64) -> SymbolSnapshot {
    let mut s = SymbolSnapshot {
        locate,
        symbol: Symbol::new("X").unwrap(),
        feed_seq,
        symbol_seq: 0,
        state: TradingState::Trading,
        reason: ReasonCode::NONE,
        quote_ts: 0,
        bid_px: 0,
        bid_sz: 0,
        ask_px: 0,
        ask_sz: 0,
        trade_ts: 0,
        last_px: 0,
        last_sz: 0,
    };
    for (_, m) in recorded.iter().take_while(|(q, _)| *q <= feed_seq) {
        match *m {
            Message::SymbolDirectory { locate: l, symbol } if l == locate => s.symbol = symbol,
            Message::Quote { locate: l, symbol_seq, ts, bid_px, bid_sz, ask_px, ask_sz } if l == locate => {
                (s.symbol_seq, s.quote_ts, s.bid_px, s.bid_sz, s.ask_px, s.ask_sz) =
                    (symbol_seq, ts, bid_px, bid_sz, ask_px, ask_sz);
            }
            Message::Trade { locate: l, symbol_seq, ts, px, sz } if l == locate => {
                (s.symbol_seq, s.trade_ts, s.last_px, s.last_sz) = (symbol_seq, ts, px, sz);
            }
            Message::TradingAction { locate: l, state, reason, .. } if l == locate => {
                (s.state, s.reason) = (state, reason);
            }
            _ => {}
        }
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_cycle_equals_the_simulators_state_at_its_feed_sequence() {
    let (group, port) = unique_group_port();
    let cfg = SimConfig {
        seed: 9,
        symbols: 30,
        rate: 5_000,
        duration: Some(Duration::from_millis(700)),
        halt_every_ticks: 300,
        halt_ticks: 400,
        snapshot_group: Some(group),
        snapshot_port: Some(port),
        snapshot_rate: 1_000, // a 30-symbol cycle every 30 ms
        ..test_config("SNAP1")
    };
    let sock = join(group, port);
    let done = Arc::new(AtomicBool::new(false));
    let stop = done.clone();
    let rx = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65_536];
        while !stop.load(Ordering::Relaxed) {
            if let Ok(n) = sock.recv(&mut buf) {
                out.push(buf[..n].to_vec());
            }
        }
        out
    });
    let report = feed_sim::run(cfg, CancellationToken::new()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    done.store(true, Ordering::Relaxed);
    let got = decode_all(&rx.join().unwrap());
    let snap = report.snapshot.clone().expect("snapshot channel ran");
    assert_eq!(snap.packets, got.len() as u64, "loopback lost snapshot datagrams");

    // The channel's own sequence is contiguous from 1; data packets only.
    let mut expected = 1;
    for g in &got {
        assert!(matches!(g.kind, PacketKind::Data(_)));
        assert_eq!(g.seq, expected);
        expected += u64::from(g.count());
    }
    let msgs: Vec<Message> = got.iter().flat_map(|g| g.msgs.iter().map(|(_, m)| *m)).collect();
    // Split into cycles: B(c, 30), 30 × X with locates 1..=30, E(c, 30).
    let mut cycles: BTreeMap<u32, Vec<SymbolSnapshot>> = BTreeMap::new();
    let mut open: Option<u32> = None;
    for m in &msgs {
        match *m {
            Message::SnapshotBegin { cycle, symbols, .. } => {
                assert_eq!((open, symbols), (None, 30));
                open = Some(cycle);
                cycles.insert(cycle, Vec::new());
            }
            Message::SymbolSnapshot(s) => cycles.get_mut(&open.expect("X inside a cycle")).unwrap().push(s),
            Message::SnapshotEnd { cycle, symbols, .. } => {
                assert_eq!((open, symbols), (Some(cycle), 30));
                open = None;
            }
            other => panic!("{other:?} on the snapshot channel"),
        }
    }
    let complete: Vec<_> = cycles.values().filter(|c| c.len() == 30).collect();
    assert_eq!(complete.len() as u64, snap.cycles);
    assert!(snap.cycles >= 15, "{} cycles in 700 ms at 30 ms each", snap.cycles);
    assert_eq!(cycles.keys().next(), Some(&1));

    let mut halted_seen = false;
    for cycle in &complete {
        assert_eq!(cycle.iter().map(|s| s.locate).collect::<Vec<_>>(), (1..=30).collect::<Vec<u16>>());
        assert!(cycle.windows(2).all(|w| w[0].feed_seq <= w[1].feed_seq));
        for s in cycle.iter() {
            assert_eq!(*s, state_at(&report.recorded, s.locate, s.feed_seq), "cycle snapshot differs");
            halted_seen |= s.state != TradingState::Trading;
        }
    }
    assert!(halted_seen, "no halted symbol in any snapshot: the test would not check trading state");
    // The last complete cycle's per-symbol sequences never exceed the final ones.
    for s in complete.last().unwrap().iter() {
        let name = s.symbol.as_str();
        assert!(s.symbol_seq <= report.last[name].symbol_seq);
    }
}
