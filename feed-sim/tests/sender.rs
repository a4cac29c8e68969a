//! End-to-end: the simulator sends over real loopback multicast and a real
//! socket in the test receives, decodes and checks every datagram. Each
//! test uses its own group and port, so they run in parallel.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{book, data, decode_all, receive, receive_on, test_config, unique_group_port, Got};
use feed_sim::{ConfigError, Market, Report, SimConfig};
use quotecast_proto::feed::{Message, PacketKind, SessionId, SystemEventCode, TradingState, FORMAT_VERSION};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

async fn run_and_capture(cfg: SimConfig) -> (Report, Vec<Got>) {
    let rx = receive(&cfg, WAIT);
    let report = feed_sim::run(cfg, CancellationToken::new()).await.expect("run");
    let got = decode_all(&rx.join().expect("receiver thread"));
    (report, got)
}

/// The capture ends with exactly three end-of-session packets carrying
/// the next sequence, and nothing else claims to end the session.
fn assert_clean_end(report: &Report, got: &[Got]) {
    let ends: Vec<_> = got.iter().filter(|g| g.kind == PacketKind::EndOfSession).collect();
    assert_eq!(ends.len(), 3, "end-of-session copies");
    assert!(got[got.len() - 3..].iter().all(|g| g.kind == PacketKind::EndOfSession), "EOS is last");
    assert!(ends.iter().all(|g| g.seq == report.next_seq));
}

fn ticks_only(ms: impl IntoIterator<Item = Message>) -> Vec<Message> {
    ms.into_iter()
        .filter(|m| matches!(m, Message::Quote { .. } | Message::Trade { .. }))
        .map(|m| match m {
            Message::Quote { locate, symbol_seq, bid_px, bid_sz, ask_px, ask_sz, .. } => {
                Message::Quote { locate, symbol_seq, ts: 0, bid_px, bid_sz, ask_px, ask_sz }
            }
            Message::Trade { locate, symbol_seq, px, sz, .. } => {
                Message::Trade { locate, symbol_seq, ts: 0, px, sz }
            }
            d => d,
        })
        .collect()
}

fn assert_truth_matches(report: &Report, received: &[Message]) {
    let b = book(received.iter().copied());
    for (name, t) in &report.last {
        let s = b.get(&t.locate).copied().unwrap_or_default();
        assert_eq!(
            (s.0, s.1, s.2, s.3, s.4, s.5, s.6),
            (t.bid_px, t.bid_sz, t.ask_px, t.ask_sz, t.last_px, t.last_sz, t.updates_delivered),
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_session_delivers_exactly_the_recorded_stream() {
    let cfg = SimConfig { seed: 42, max_ticks: Some(20_000), rate: 200_000, ..test_config("CLEAN1") };
    let (report, got) = run_and_capture(cfg).await;

    assert!(got.iter().all(|g| g.session == SessionId::from_text("CLEAN1")));
    assert!(got.iter().all(|g| g.len <= 1400), "datagram over --max-packet-bytes");
    assert_clean_end(&report, &got);
    assert_eq!(report.packets, got.len() as u64, "loopback lost datagrams");
    assert_eq!(report.bytes, got.iter().map(|g| g.len as u64).sum::<u64>());

    // Sequences are contiguous from 1; heartbeats (if any) carry the next one.
    let mut expected = 1;
    for g in &got {
        match g.kind {
            PacketKind::Data(n) => {
                assert_eq!(g.seq, expected, "gap or overlap");
                expected += u64::from(n);
            }
            PacketKind::Heartbeat => assert_eq!(g.seq, expected),
            PacketKind::EndOfSession => {}
        }
    }
    assert_eq!(expected, report.next_seq);
    assert_eq!(report.first_seq, 1);

    let received: Vec<(u64, Message)> = data(&got).iter().flat_map(|g| g.msgs.iter().copied()).collect();
    assert_eq!(received, report.recorded, "received stream differs from the recorded one");
    // Start of messages, then the directory (locates 1..=300 in order),
    // then the market opens; it closes and messages end just before the
    // end of session.
    let event = |m: &Message| match *m {
        Message::SystemEvent { event, version, .. } => Some((event, version)),
        _ => None,
    };
    assert_eq!(event(&received[0].1), Some((SystemEventCode::StartOfMessages, FORMAT_VERSION)));
    assert_eq!(event(&received[301].1), Some((SystemEventCode::StartOfMarketHours, FORMAT_VERSION)));
    let n = received.len();
    assert_eq!(event(&received[n - 2].1), Some((SystemEventCode::EndOfMarketHours, FORMAT_VERSION)));
    assert_eq!(event(&received[n - 1].1), Some((SystemEventCode::EndOfMessages, FORMAT_VERSION)));
    assert_eq!(received.iter().filter(|(_, m)| event(m).is_some()).count(), 4);
    assert_eq!((report.system_events, report.trading_actions), (4, 0));
    for (i, (_, m)) in received[1..301].iter().enumerate() {
        assert!(
            matches!(m, Message::SymbolDirectory { locate, .. } if usize::from(*locate) == i + 1),
            "{m:?}"
        );
    }

    assert_eq!(report.ticks(), 20_000);
    assert_eq!(report.messages, report.next_seq - 1);
    assert_eq!(report.messages, report.quotes + report.trades + report.directory + 4);
    assert!(report.directory >= 300 && report.directory % 300 == 0);
    assert_eq!(report.last.len(), 300);
    assert!(report.last.values().all(|t| t.updates == t.updates_delivered));
    let msgs: Vec<Message> = received.iter().map(|(_, m)| *m).collect();
    assert_truth_matches(&report, &msgs);

    // Per symbol, the wire numbers quotes and trades 1, 2, 3, ... and the
    // report's ground truth ends at the last one sent.
    let mut per_symbol: std::collections::BTreeMap<u16, u32> = Default::default();
    for m in &msgs {
        if let Message::Quote { locate, symbol_seq, .. } | Message::Trade { locate, symbol_seq, .. } = *m {
            let last = per_symbol.entry(locate).or_default();
            assert_eq!(symbol_seq, *last + 1, "locate {locate}: per-symbol sequence not contiguous");
            *last = symbol_seq;
        }
    }
    for t in report.last.values() {
        assert_eq!(per_symbol.get(&t.locate).copied().unwrap_or(0), t.symbol_seq, "locate {}", t.locate);
    }

    // The wire carries exactly the pure model's stream (timestamps aside).
    let mut m = Market::new(42, 300, 1.1, 0.1);
    let model: Vec<Message> = (0..20_000).map(|_| m.next_tick(0)).collect();
    assert_eq!(ticks_only(msgs), model);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_every_leaves_exactly_the_injected_gaps() {
    let cfg =
        SimConfig { seed: 3, max_ticks: Some(20_000), rate: 200_000, drop_every: 5, ..test_config("DROP1") };
    let (report, got) = run_and_capture(cfg).await;
    assert_clean_end(&report, &got);

    // Walk the data packets; each gap must be one whole dropped packet at
    // a position that is a multiple of 5.
    let (mut expected, mut position) = (1u64, 0u64);
    let (mut gaps, mut missing) = (0u64, HashSet::new());
    for g in data(&got) {
        assert!(g.seq >= expected, "no reordering or duplication expected");
        if g.seq > expected {
            gaps += 1;
            position += 1;
            assert_eq!(position % 5, 0, "gap at data packet {position}");
            missing.extend(expected..g.seq);
        }
        position += 1;
        assert_ne!(position % 5, 0, "packet {position} should have been dropped");
        expected = g.seq + u64::from(g.count());
    }
    if expected < report.next_seq {
        gaps += 1; // the very last packet was dropped; the EOS reveals it
        missing.extend(expected..report.next_seq);
    }
    assert!(gaps > 50, "too few packets to mean anything: {gaps}");
    assert_eq!(gaps, report.dropped_packets);
    assert_eq!(missing.len() as u64, report.dropped_messages);

    let received: Vec<(u64, Message)> = data(&got).iter().flat_map(|g| g.msgs.iter().copied()).collect();
    let want: Vec<(u64, Message)> =
        report.recorded.iter().filter(|(s, _)| !missing.contains(s)).copied().collect();
    assert_eq!(received, want);
    // Ground truth separates generated from delivered updates.
    let lost: u64 = report.last.values().map(|t| t.updates - t.updates_delivered).sum();
    let lost_ticks = report
        .recorded
        .iter()
        .filter(|(s, m)| missing.contains(s) && !matches!(m, Message::SymbolDirectory { .. }))
        .count();
    assert_eq!(lost, lost_ticks as u64);
    assert!(lost > 0);
    let b = book(received.iter().map(|(_, m)| *m));
    for t in report.last.values() {
        assert_eq!(b.get(&t.locate).map_or(0, |s| s.6), t.updates_delivered);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dup_every_duplicates_exactly_every_nth_packet() {
    let cfg =
        SimConfig { seed: 4, max_ticks: Some(20_000), rate: 200_000, dup_every: 4, ..test_config("DUP1") };
    let (report, got) = run_and_capture(cfg).await;
    assert_clean_end(&report, &got);

    let pkts = data(&got);
    let mut seen = HashSet::new();
    let (mut dups, mut distinct) = (0u64, Vec::new());
    for (i, g) in pkts.iter().enumerate() {
        if seen.insert(g.seq) {
            distinct.push(*g);
        } else {
            dups += 1;
            assert_eq!(pkts[i - 1].msgs, g.msgs, "a duplicate follows its original");
            assert_eq!(distinct.len() % 4, 0, "duplicated packet {} is not a 4th", distinct.len());
        }
    }
    assert_eq!(dups, report.duplicated_packets);
    assert_eq!(dups, distinct.len() as u64 / 4);
    let deduped: Vec<(u64, Message)> = distinct.iter().flat_map(|g| g.msgs.iter().copied()).collect();
    assert_eq!(deduped, report.recorded);
    assert_eq!(report.packets, got.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reorder_every_swaps_exactly_every_nth_packet_with_its_successor() {
    let cfg = SimConfig {
        seed: 5,
        max_ticks: Some(20_000),
        rate: 200_000,
        reorder_every: 6,
        ..test_config("REORD1")
    };
    let (report, got) = run_and_capture(cfg).await;
    assert_clean_end(&report, &got);

    let pkts = data(&got);
    let mut high = 1u64; // one past the highest sequence seen
    let mut late = 0u64;
    for (i, g) in pkts.iter().enumerate() {
        if g.seq < high {
            late += 1;
            // It arrives right after the packet that should have followed it.
            assert_eq!(pkts[i - 1].seq, g.seq + u64::from(g.count()));
        }
        high = high.max(g.seq + u64::from(g.count()));
    }
    assert_eq!(late, report.reordered_packets);
    let n = pkts.len() as u64;
    // The last held packet may have had no successor and gone out in order.
    assert!(report.reordered_packets == n / 6 || report.reordered_packets + 1 == n / 6, "{late} of {n}");

    let mut sorted = pkts.clone();
    sorted.sort_by_key(|g| g.seq);
    let mut expected = 1;
    for g in &sorted {
        assert_eq!(g.seq, expected, "reordering must not lose anything");
        expected += u64::from(g.count());
    }
    let msgs: Vec<(u64, Message)> = sorted.iter().flat_map(|g| g.msgs.iter().copied()).collect();
    assert_eq!(msgs, report.recorded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_feed_sends_heartbeats_with_the_next_sequence() {
    let cfg = SimConfig {
        symbols: 10,
        rate: 20,
        max_ticks: Some(6),
        heartbeat_ms: 20,
        directory_interval_ms: 0,
        ..test_config("HB1")
    };
    let (report, got) = run_and_capture(cfg).await;
    assert_clean_end(&report, &got);

    let mut expected = 1;
    let mut heartbeats = 0;
    for g in &got {
        match g.kind {
            PacketKind::Data(n) => {
                assert_eq!(g.seq, expected);
                expected += u64::from(n);
            }
            PacketKind::Heartbeat => {
                heartbeats += 1;
                assert_eq!(g.seq, expected, "heartbeat must carry the next expected sequence");
            }
            PacketKind::EndOfSession => {}
        }
    }
    assert_eq!(heartbeats, report.heartbeats);
    // Ticks 50 ms apart, heartbeats after 20 ms of silence: ~2 per gap.
    assert!(heartbeats >= 5, "{heartbeats} heartbeats");
    // At 20 ticks/s with a 200 us flush, every tick goes out on its own.
    let tick_packets: Vec<_> = data(&got).into_iter().skip(1).collect();
    // (The last one also carries the closing system events, pushed right
    // after the last tick.)
    assert_eq!(tick_packets.len(), 6, "{tick_packets:?}");
    let is_tick = |m: &Message| matches!(m, Message::Quote { .. } | Message::Trade { .. });
    assert!(tick_packets.iter().all(|g| g.msgs.iter().filter(|(_, m)| is_tick(m)).count() == 1));
    assert!(tick_packets[..5].iter().all(|g| g.count() == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_token_ends_the_session() {
    let cfg = SimConfig { rate: 5_000, ..test_config("STOP1") };
    let rx = receive(&cfg, WAIT);
    let token = CancellationToken::new();
    let stopper = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stopper.cancel();
    });
    let report = feed_sim::run(cfg, token).await.unwrap();
    let got = decode_all(&rx.join().unwrap());
    assert_clean_end(&report, &got);
    assert!((500..=2_000).contains(&report.ticks()), "{} ticks in ~200ms at 5000/s", report.ticks());
    assert!(report.elapsed < Duration::from_secs(2));
    let received: Vec<_> = data(&got).iter().flat_map(|g| g.msgs.iter().copied()).collect();
    assert_eq!(received, report.recorded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pacing_hits_the_target_rate_and_bursts() {
    let steady =
        SimConfig { rate: 20_000, duration: Some(Duration::from_millis(500)), ..test_config("RATE1") };
    // Bursts at [100,150), [200,250), [300,350), [400,450) ms at 3x:
    // 10_000 * (0.5 + 2 * 0.2) = 9_000 ticks.
    let bursty = SimConfig {
        rate: 10_000,
        duration: Some(Duration::from_millis(500)),
        burst_every_ms: 100,
        burst_len_ms: 50,
        burst_multiplier: 3.0,
        ..test_config("RATE2")
    };
    let (a, b) = tokio::join!(
        feed_sim::run(steady, CancellationToken::new()),
        feed_sim::run(bursty, CancellationToken::new())
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!((9_700..=10_000).contains(&a.ticks()), "steady: {} ticks, want ~10000", a.ticks());
    assert!((8_700..=9_000).contains(&b.ticks()), "bursty: {} ticks, want ~9000", b.ticks());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_repeats_whole_for_late_joiners() {
    let cfg = SimConfig {
        symbols: 20,
        rate: 2_000,
        duration: Some(Duration::from_millis(320)),
        directory_interval_ms: 50,
        ..test_config("DIR1")
    };
    let (report, got) = run_and_capture(cfg).await;
    assert_clean_end(&report, &got);
    let msgs: Vec<(u64, Message)> = data(&got).iter().flat_map(|g| g.msgs.iter().copied()).collect();
    let dir: Vec<(u64, u16)> = msgs
        .iter()
        .filter_map(|(s, m)| match m {
            Message::SymbolDirectory { locate, .. } => Some((*s, *locate)),
            _ => None,
        })
        .collect();
    assert_eq!(dir.len() as u64, report.directory);
    assert!((6..=7).contains(&(dir.len() / 20)) && dir.len() % 20 == 0, "{} directory messages", dir.len());
    for block in dir.chunks(20) {
        for (i, (s, l)) in block.iter().enumerate() {
            assert_eq!(
                (*s - block[0].0, *l),
                (i as u64, i as u16 + 1),
                "directory repeat is one contiguous run"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_packets_respect_the_limit_and_fill_up() {
    let cfg = SimConfig { rate: 0, max_ticks: Some(3_000), max_packet_bytes: 200, ..test_config("SMALL1") };
    let (report, got) = run_and_capture(cfg).await;
    assert_clean_end(&report, &got);
    assert!(got.iter().all(|g| g.len <= 200));
    let pkts = data(&got);
    // (200 - 20) / (2 + 39) = 4 quotes; with trades (29 bytes) up to 6.
    let full = pkts.iter().filter(|g| g.count() >= 4).count();
    assert!(full * 10 >= pkts.len() * 9, "{full} of {} packets full at rate 0", pkts.len());
    let received: Vec<_> = pkts.iter().flat_map(|g| g.msgs.iter().copied()).collect();
    assert_eq!(received, report.recorded);
}

#[tokio::test]
async fn run_rejects_a_bad_config_before_sending() {
    let err = feed_sim::run(SimConfig { ttl: 300, ..SimConfig::default() }, CancellationToken::new())
        .await
        .expect_err("ttl 300");
    assert_eq!(err.downcast_ref::<ConfigError>(), Some(&ConfigError::BadTtl(300)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_halts_silence_their_symbols_until_resumed() {
    let cfg = SimConfig {
        seed: 8,
        symbols: 50,
        max_ticks: Some(20_000),
        rate: 200_000,
        halt_every_ticks: 2_000,
        halt_ticks: 1_500,
        ..test_config("HALT1")
    };
    let (report, got) = run_and_capture(cfg).await;
    assert_clean_end(&report, &got);
    let received: Vec<(u64, Message)> = data(&got).iter().flat_map(|g| g.msgs.iter().copied()).collect();
    assert_eq!(received, report.recorded);
    let mut state = std::collections::BTreeMap::<u16, TradingState>::new();
    let mut actions = 0;
    for (_, m) in &received {
        match *m {
            Message::TradingAction { locate, state: s, .. } => {
                actions += 1;
                state.insert(locate, s);
            }
            Message::Quote { locate, .. } | Message::Trade { locate, .. } => {
                assert_eq!(state.get(&locate).copied().unwrap_or_default(), TradingState::Trading, "{m:?}");
            }
            _ => {}
        }
    }
    // 10 halts (ticks 2000, 4000, ..., 20000), 9 of them lifted in time.
    assert_eq!(actions, 19);
    assert_eq!(report.trading_actions, 19);
    assert_eq!(report.messages, report.ticks() + report.directory + 4 + 19);
    for t in report.last.values() {
        assert_eq!(t.trading_state, state.get(&t.locate).copied().unwrap_or_default());
    }
    assert_eq!(report.last.values().filter(|t| t.trading_state != TradingState::Trading).count(), 1);
}

/// Runs `cfg` (which must have line B) capturing both lines.
async fn run_and_capture_ab(cfg: SimConfig) -> (Report, Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (bg, bp) = cfg.line_b().expect("line B configured");
    let (ra, rb) = (receive(&cfg, WAIT), receive_on(bg, bp, WAIT));
    let report = feed_sim::run(cfg, CancellationToken::new()).await.expect("run");
    (report, ra.join().unwrap(), rb.join().unwrap())
}

fn line_b(cfg: SimConfig) -> SimConfig {
    let (g, p) = unique_group_port();
    SimConfig { line_b_group: Some(g), line_b_port: Some(p), ..cfg }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_b_carries_every_packet_identically() {
    let cfg = line_b(SimConfig { seed: 6, max_ticks: Some(10_000), rate: 200_000, ..test_config("AB1") });
    let (report, a, b) = run_and_capture_ab(cfg).await;
    assert_eq!(a, b, "line B differs from line A");
    assert_eq!(report.lines.len(), 2);
    assert_eq!(report.lines[0].packets, a.len() as u64);
    assert_eq!(report.lines[1].packets, b.len() as u64);
    assert_eq!(report.packets, 2 * a.len() as u64);
    let got = decode_all(&a);
    assert_clean_end(&report, &got);
    let received: Vec<_> = data(&got).iter().flat_map(|g| g.msgs.iter().copied()).collect();
    assert_eq!(received, report.recorded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_on_line_a_only_is_present_on_line_b() {
    let cfg = line_b(SimConfig {
        seed: 7,
        max_ticks: Some(10_000),
        rate: 200_000,
        a_drop_every: 5,
        b_dup_every: 3,
        ..test_config("AB2")
    });
    let (report, a, b) = run_and_capture_ab(cfg).await;
    let (ga, gb) = (decode_all(&a), decode_all(&b));
    let seqs = |g: &[Got]| data(g).iter().map(|p| p.seq).collect::<HashSet<u64>>();
    let (sa, sb) = (seqs(&ga), seqs(&gb));
    let only_b: Vec<u64> = sb.difference(&sa).copied().collect();
    assert!(sa.is_subset(&sb), "line A has a packet line B lacks");
    assert_eq!(only_b.len() as u64, report.lines[0].dropped_packets);
    assert!(only_b.len() > 20, "{} drops", only_b.len());
    assert_eq!((report.lines[1].dropped_packets, report.dropped_packets, report.dropped_messages), (0, 0, 0));
    assert!(report.last.values().all(|t| t.updates == t.updates_delivered), "B delivered everything");
    // Line B alone, duplicates dropped, is the whole session.
    let mut seen = HashSet::new();
    let from_b: Vec<(u64, Message)> =
        data(&gb).into_iter().filter(|g| seen.insert(g.seq)).flat_map(|g| g.msgs.iter().copied()).collect();
    assert_eq!(from_b, report.recorded);
    assert_eq!(
        report.lines[1].duplicated_packets,
        (gb.len() - seen.len() - 3 - report.heartbeats as usize) as u64
    );
    assert_eq!(report.lines[0].duplicated_packets, 0);
}
