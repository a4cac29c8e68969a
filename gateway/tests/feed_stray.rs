//! Stray datagrams on the feed group cannot stop the feed: a forged
//! heartbeat or data packet of another session, a heartbeat, data packet or
//! end of session of the live session far ahead, a burst from a replay
//! tool, and (with `--feed-source`) an in-order packet from another host.
//! A subscribed bystander keeps getting every update in order, never a
//! stale status, and each stray is counted once by reason.

mod common;

use common::*;
use quotecast_proto::feed::{header, PacketBuilder, SessionId, Symbol, END_OF_SESSION};
use quotecast_proto::v1::server_message::Body;
use quotecast_proto::v1::{quote_service_client::QuoteServiceClient, ListSymbolsRequest};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::Ordering::Relaxed;

/// A gateway with AAPL (locate 1) and MSFT (locate 2) quoted by session
/// LIVE, and a bystander subscribed to both past its ack and snapshots.
async fn setup(f: impl FnOnce(&mut gateway::Config)) -> (Gw, FeedSender, Client) {
    two_quoted_symbols("LIVE", f).await
}

/// The bystander's next update: must be `symbol`'s `seq`-th, fresh, with
/// bid `bid`. A status (stale) message in between fails the test.
async fn expect_update(c: &mut Client, symbol: &str, seq: u64, bid: i64) {
    match c.server().await {
        Body::Updates(b) => {
            let got: Vec<_> =
                b.updates.iter().map(|u| (u.symbol.as_str(), u.seq, u.stale, u.bid_px)).collect();
            assert_eq!(got, vec![(symbol, seq, false, bid)]);
        }
        other => panic!("bystander got {other:?} instead of {symbol} #{seq}"),
    }
}

/// A data packet of `session` starting at `seq` with one quote.
fn data_at(session: &str, seq: u64, locate: u16, bid: i64) -> Vec<u8> {
    let mut b = PacketBuilder::new(SessionId::from_text(session), seq, 1400);
    assert!(b.push(&quote(locate, bid)));
    b.finish().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_datagrams_are_counted_and_the_live_feed_keeps_flowing() {
    let (gw, live, c) = setup(|_| {}).await;
    strays_change_nothing(gw, live, c).await;
}

/// The same strays with a retransmission server and a snapshot channel
/// configured; in addition, strays on the snapshot channel (another
/// session's snapshots) and datagrams sent to the gateway's
/// retransmission socket from another port (the socket is connected to
/// the server: the kernel drops them) change nothing either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strays_change_nothing_with_gap_fill_and_a_snapshot_channel() {
    use quotecast_proto::feed::{Message, SymbolSnapshot, TradingState};
    let (snap_group, snap_port) = unique_feed();
    let retrans: std::net::SocketAddr =
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (gw, live, c) = setup(|cfg| {
        cfg.feed.retrans_addr = Some(retrans);
        cfg.feed.snapshot_group = Some(snap_group);
        cfg.feed.snapshot_port = Some(snap_port);
    })
    .await;
    let mut b = PacketBuilder::new(SessionId::from_text("EVIL"), 1, 1400);
    assert!(b.push(&Message::SymbolSnapshot(SymbolSnapshot {
        locate: 1,
        symbol: Symbol::new("AAPL").unwrap(),
        feed_seq: 1_000,
        symbol_seq: 1_000,
        state: TradingState::Halted,
        reason: quotecast_proto::feed::ReasonCode::NONE,
        quote_ts: 1,
        bid_px: 1,
        bid_sz: 1,
        ask_px: 2,
        ask_sz: 1,
        trade_ts: 1,
        last_px: 1,
        last_sz: 1,
    })));
    let forged = b.finish().to_vec();
    let snap = multicast_sender();
    snap.send_to(&forged, SocketAddrV4::new(snap_group, snap_port)).unwrap();
    // Whatever port the gateway's retransmission socket has, a sender that
    // is not the server cannot reach it.
    let other = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for port in [retrans.port(), retrans.port().wrapping_add(1)] {
        let _ = other.send_to(&forged, ("127.0.0.1", port));
    }
    let f = &gw.running.core.feed;
    gw.until("snapshot stray counted", |_| f.snapshot.foreign_packets.load(Relaxed) == 1).await;
    assert_eq!(f.retrans.packets.load(Relaxed), 0);
    assert_eq!(f.snapshot.recovered.load(Relaxed), 0);
    strays_change_nothing(gw, live, c).await;
}

/// Sends every kind of stray, each followed by a live quote the bystander
/// must get in order and fresh; then checks nothing else moved.
async fn strays_change_nothing(gw: Gw, mut live: FeedSender, mut c: Client) {
    let ahead = |live: &FeedSender, by: u64| live.builder.next_seq() + by;
    let evil = SessionId::from_text("EVIL");
    let live_id = live.builder.session();
    // (reason, datagrams sent back to back): each would have stopped or
    // corrupted the feed before.
    let mut replay_tool = gw.sender("EVIL");
    let strays: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("foreign_session", vec![header(evil, 1, 0).to_vec()]),
        ("foreign_session", vec![replay_tool.build(&[dir(1, "MSFT"), quote(1, 9_999_900)])]),
        ("seq_jump", vec![header(live_id, ahead(&live, 1_000_000_000_000), 0).to_vec()]),
        ("seq_jump", vec![data_at("LIVE", ahead(&live, 1_000_000), 1, 9_999_900)]),
        ("seq_jump", vec![header(live_id, ahead(&live, 1_000_000_000_000), END_OF_SESSION).to_vec()]),
        // A replay tool's burst: consecutive packets of its own session,
        // proven but never followed while the live feed is not silent.
        ("foreign_session", (0..5).map(|i| replay_tool.build(&[quote(1, 9_000_000 + i)])).collect()),
    ];

    let mut want = [0u64; 2];
    let mut seq = 1;
    for (i, (reason, datagrams)) in strays.iter().enumerate() {
        for d in datagrams {
            live.raw(d);
        }
        want[usize::from(*reason == "seq_jump")] += datagrams.len() as u64;
        // The live feed goes on right after it: every update arrives, in
        // order and fresh.
        let bid = 1_000_000 + 100 * (i as i64 + 1);
        live.send(&[quote(1, bid)]);
        seq += 1;
        expect_update(&mut c, "AAPL", seq, bid).await;
    }
    let f = &gw.running.core.feed;
    gw.until("every stray counted", |_| {
        (f.suspect("foreign_session"), f.suspect("seq_jump")) == (want[0], want[1])
    })
    .await;
    assert_eq!(want, [7, 3]);
    // Nothing else moved: no gap, restart, duplicate or stale symbol.
    live.send(&[quote(2, 2_000_100)]);
    expect_update(&mut c, "MSFT", 2, 2_000_100).await;
    let counts = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed);
    assert_eq!(
        (counts(&f.gaps), counts(&f.missed_messages), counts(&f.restarts), counts(&f.duplicate_packets)),
        (0, 0, 0, 0)
    );
    assert_eq!((counts(&f.stale_symbols), f.suspect("source_not_allowed")), (0, 0));
    assert_eq!(counts(&f.next_seq), live.builder.next_seq());
    assert!(f.ready(), "{}", f.readiness().1);
    let book = &gw.running.core.book;
    let aapl = book.get(book.id(&Symbol::new("AAPL").unwrap()).unwrap()).unwrap();
    assert_eq!((aapl.bid_px, aapl.stale), (1_000_000 + 100 * strays.len() as i64, false));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_source_refuses_an_in_order_packet_from_another_host() {
    let (gw, mut live, mut c) = setup(|cfg| cfg.feed.sources = vec!["127.0.0.1".parse().unwrap()]).await;
    // The one stray nothing else can tell apart: the live session's next
    // sequence, a wrong price.
    let forged = data_at("LIVE", live.builder.next_seq(), 1, 9_999_900);
    let other_host = multicast_sender_from(Ipv4Addr::new(127, 0, 0, 2));
    other_host.send_to(&forged, SocketAddrV4::new(gw.group, gw.port)).unwrap();
    let f = &gw.running.core.feed;
    gw.until("refused by source", |_| f.suspect("source_not_allowed") == 1).await;
    live.send(&[quote(1, 1_000_100)]);
    expect_update(&mut c, "AAPL", 2, 1_000_100).await;
    assert_eq!((f.duplicate_packets.load(Relaxed), f.decode_errors_total()), (0, 0));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_symbols_reports_the_current_sessions_locate_codes() {
    let (gw, live, mut c) = setup(|_| {}).await;
    let mut grpc = QuoteServiceClient::connect(format!("http://{}", gw.running.grpc_addr)).await.unwrap();
    let locates = |r: quotecast_proto::v1::ListSymbolsResponse| {
        r.symbols.into_iter().map(|s| (s.symbol, s.locate)).collect::<Vec<_>>()
    };
    let list = locates(grpc.list_symbols(ListSymbolsRequest {}).await.unwrap().into_inner());
    assert_eq!(list, vec![("AAPL".to_string(), 1), ("MSFT".to_string(), 2)]);
    // A restart renumbers: until its directory arrives a symbol has no
    // locate (0), then the new one.
    live.end_of_session();
    let mut next = gw.sender("LIVE2");
    next.send(&[dir(7, "MSFT")]);
    next.heartbeat();
    next.heartbeat();
    gw.until("restart followed", |r| r.core.feed.restarts.load(Relaxed) == 1).await;
    let list = locates(grpc.list_symbols(ListSymbolsRequest {}).await.unwrap().into_inner());
    assert_eq!(list, vec![("AAPL".to_string(), 0), ("MSFT".to_string(), 7)]);
    assert!(!gw.running.core.feed.ready(), "every symbol stale after the restart");
    next.send(&[quote(7, 2_000_500)]);
    loop {
        let u = c.updates().await;
        if u.iter().any(|u| u.symbol == "MSFT" && !u.stale) {
            break;
        }
    }
    assert!(gw.running.core.feed.ready(), "one fresh symbol again");
    gw.stop().await;
}
