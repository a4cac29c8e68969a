//! Feed faults on loopback: a lost packet, a duplicate, a reorder, a sender
//! restart (with and without end of session), a malformed packet and a
//! silent feed are each detected, counted and shown to subscribed clients
//! as the protocol says.

mod common;

use common::*;
use quotecast_proto::v1::status::{Reason, State};
use quotecast_proto::v1::{self, server_message::Body};
use std::sync::atomic::Ordering::Relaxed;

/// A gateway with AAPL (locate 1) and MSFT (locate 2) quoted once, and a
/// client subscribed to both that has consumed its ack and snapshots.
async fn setup(f: impl FnOnce(&mut gateway::Config)) -> (Gw, FeedSender, Client) {
    two_quoted_symbols("S1", f).await
}

/// Reads until Status messages of one state and reason have named `want`
/// symbols, returning (state, reason, symbols); updates seen before are
/// returned too. A change that hits every symbol may come as one message or
/// several: the writer can take the first symbol's status out before the
/// ingest thread has queued the next one.
async fn next_status(
    c: &mut Client,
    want: usize,
) -> ((State, Reason, Vec<String>), Vec<(String, u64, bool)>) {
    let mut seen = Vec::new();
    let mut got: Option<(State, Reason, Vec<String>)> = None;
    loop {
        match c.server().await {
            Body::Status(s) => {
                let g = got.get_or_insert_with(|| (s.state(), s.reason(), Vec::new()));
                assert_eq!((g.0, g.1), (s.state(), s.reason()), "another status before all {want} symbols");
                g.2.extend(s.symbols);
                if g.2.len() >= want {
                    return (got.unwrap(), seen);
                }
            }
            Body::Updates(b) => seen.extend(b.updates.into_iter().map(|u| (u.symbol, u.seq, u.stale))),
            Body::Trading(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_packet_is_a_gap_that_marks_symbols_stale_until_a_fresh_quote() {
    let (gw, mut feed, mut c) = setup(|_| {}).await;
    let _lost = feed.build(&[quote(1, 1_000_100), quote(2, 2_000_100)]);
    feed.send(&[trade(1, 1_000_050)]);
    let ((state, reason, mut symbols), before) = next_status(&mut c, 2).await;
    symbols.sort();
    assert_eq!((state, reason), (State::Stale, Reason::FeedGap));
    assert_eq!(symbols, vec!["AAPL", "MSFT"]);
    assert!(before.is_empty(), "nothing from after the hole is applied before the gap is declared");
    assert_eq!(gw.running.core.feed.gaps.load(Relaxed), 1);
    assert_eq!(gw.running.core.feed.missed_messages.load(Relaxed), 2);
    // The trade after the hole is applied but stays stale (a trade does not
    // refresh the top of book). Its seq is the feed's: AAPL's quote 2 was
    // lost, so the client sees 3 after 1.
    let u = c.updates().await;
    assert_eq!((u[0].symbol.as_str(), u[0].seq, u[0].stale), ("AAPL", 3, true));
    // A fresh quote recovers AAPL only.
    feed.send(&[quote(1, 1_000_200)]);
    let ((state, reason, symbols), _) = next_status(&mut c, 1).await;
    assert_eq!((state, reason, symbols), (State::Ok, Reason::Recovered, vec!["AAPL".to_string()]));
    let u = c.updates().await;
    assert_eq!((u[0].seq, u[0].stale, u[0].bid_px), (4, false, 1_000_200));
    assert_eq!(gw.running.core.feed.stale_symbols.load(Relaxed), 1, "MSFT still stale");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_packet_is_dropped_and_counted() {
    let (gw, mut feed, mut c) = setup(|_| {}).await;
    let p = feed.send(&[quote(1, 1_000_100)]);
    feed.raw(&p);
    feed.send(&[quote(1, 1_000_200)]);
    let mut seqs = Vec::new();
    while seqs.len() < 2 {
        seqs.extend(c.updates().await.into_iter().map(|u| u.seq));
    }
    assert_eq!(seqs, vec![2, 3], "the duplicate produced no update");
    gw.until("duplicate counted", |r| r.core.feed.duplicate_packets.load(Relaxed) == 1).await;
    assert_eq!(gw.running.core.feed.gaps.load(Relaxed), 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reordered_packets_are_put_back_in_order_without_a_gap() {
    let (gw, mut feed, mut c) = setup(|_| {}).await;
    let a = feed.build(&[quote(1, 1_000_100)]);
    let b = feed.build(&[quote(1, 1_000_200)]);
    let d = feed.build(&[quote(1, 1_000_300)]);
    feed.raw(&b);
    feed.raw(&a);
    feed.raw(&d);
    let mut got = Vec::new();
    while got.len() < 3 {
        got.extend(c.updates().await.into_iter().map(|u| (u.seq, u.bid_px)));
    }
    assert_eq!(got, vec![(2, 1_000_100), (3, 1_000_200), (4, 1_000_300)]);
    assert_eq!(gw.running.core.feed.reordered_packets.load(Relaxed), 1);
    assert_eq!(gw.running.core.feed.gaps.load(Relaxed), 0);
    gw.stop().await;
}

/// The new session's packets: its directory (AAPL and MSFT on other
/// locates), a quote, and heartbeats; three packets prove it.
fn restart_packets(restarted: &mut FeedSender) {
    restarted.send(&[dir(5, "MSFT"), dir(6, "AAPL")]);
    restarted.send(&[quote(6, 1_100_000)]);
    restarted.heartbeat();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_restart_after_end_of_session_is_followed_and_symbols_recover_on_fresh_quotes() {
    let (gw, feed, mut c) = setup(|_| {}).await;
    feed.end_of_session();
    let ((state, reason, symbols), _) = next_status(&mut c, 2).await;
    assert_eq!((state, reason, symbols.len()), (State::Stale, Reason::SessionEnd, 2));
    let mut restarted = gw.sender("S2");
    restart_packets(&mut restarted);
    let ((state, reason, symbols), _) = next_status(&mut c, 1).await;
    assert_eq!((state, reason, symbols), (State::Ok, Reason::Recovered, vec!["AAPL".to_string()]));
    // The new session's locate codes are used; seq is the new session's
    // (from 1), and the epoch says so.
    let u = c.updates().await;
    assert_eq!((u[0].symbol.as_str(), u[0].seq, u[0].bid_px), ("AAPL", 1, 1_100_000));
    assert_eq!(u[0].epoch, "S2");
    // A client that held AAPL at seq 1 of the old session cannot resume in
    // the new one, whatever the number: a fresh snapshot, flagged.
    let mut back = Client::connect(&gw.ws_url("")).await;
    back.send_pb(v1::ClientMessage {
        id: "r".into(),
        op: Some(v1::client_message::Op::Subscribe(v1::Subscribe {
            symbols: vec!["AAPL".into()],
            from_seq: [("AAPL".to_string(), 1)].into_iter().collect(),
            from_epoch: "S1".into(),
        })),
    })
    .await;
    let u = back.updates().await;
    assert_eq!((u[0].seq, u[0].snapshot, u[0].resume_failed, u[0].epoch.as_str()), (1, true, true, "S2"));
    let f = &gw.running.core.feed;
    assert_eq!(f.restarts.load(Relaxed), 1);
    assert_eq!(f.suspect("foreign_session"), 0, "the new session's packets were all applied");
    assert_eq!(gw.running.core.book.locate(0), Some(6), "AAPL's locate in the new session");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_restart_without_end_of_session_is_followed_once_the_old_one_is_silent() {
    let (gw, _feed, mut c) = setup(|cfg| cfg.feed.takeover_silence_ms = 300).await;
    // A crashed sender sends no end of session; its successor comes at once.
    let t0 = std::time::Instant::now();
    let mut restarted = gw.sender("S2");
    restart_packets(&mut restarted);
    let ((state, reason, symbols), _) = next_status(&mut c, 2).await;
    assert_eq!((state, reason, symbols.len()), (State::Stale, Reason::SessionEnd, 2));
    let ((state, reason, symbols), _) = next_status(&mut c, 1).await;
    assert_eq!((state, reason, symbols), (State::Ok, Reason::Recovered, vec!["AAPL".to_string()]));
    assert!(t0.elapsed() < std::time::Duration::from_secs(3), "taken over promptly");
    let u = c.updates().await;
    assert_eq!(
        (u[0].symbol.as_str(), u[0].seq, u[0].bid_px, u[0].epoch.as_str()),
        ("AAPL", 1, 1_100_000, "S2")
    );
    assert_eq!(gw.running.core.feed.restarts.load(Relaxed), 1);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packets_are_counted_and_skipped() {
    let (gw, mut feed, mut c) = setup(|_| {}).await;
    let good = feed.build(&[quote(1, 1_000_100)]);
    feed.raw(&good[..good.len() - 3]);
    feed.raw(b"short");
    feed.raw(&good);
    let u = c.updates().await;
    assert_eq!((u[0].seq, u[0].bid_px), (2, 1_000_100));
    gw.until("errors counted", |r| r.core.feed.decode_errors_total() == 2).await;
    assert_eq!(gw.running.core.feed.gaps.load(Relaxed), 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_feed_goes_stale_and_recovers_when_packets_flow() {
    let (gw, feed, mut c) = setup(|cfg| cfg.feed.feed_timeout_ms = 300).await;
    let ((state, reason, symbols), _) = next_status(&mut c, 2).await;
    assert_eq!((state, reason, symbols.len()), (State::Stale, Reason::FeedDown, 2));
    assert!(!gw.running.core.feed.up.load(Relaxed));
    feed.heartbeat();
    let ((state, reason, symbols), _) = next_status(&mut c, 2).await;
    assert_eq!((state, reason, symbols.len()), (State::Ok, Reason::Recovered, 2));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_of_session_marks_stale() {
    let (gw, feed, mut c) = setup(|_| {}).await;
    feed.end_of_session();
    feed.end_of_session();
    let ((state, reason, symbols), _) = next_status(&mut c, 2).await;
    assert_eq!((state, reason, symbols.len()), (State::Stale, Reason::SessionEnd, 2));
    gw.until("end counted", |r| r.core.feed.sessions_ended.load(Relaxed) == 1).await;
    gw.stop().await;
}
