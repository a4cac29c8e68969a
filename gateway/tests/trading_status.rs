//! Trading status from the exchange (feed 'H' messages) reaches clients: as
//! a TradingStatus when it changes, in every update and snapshot, after a
//! subscribe to a symbol that is not trading, and over gRPC; a halted
//! symbol is never mistaken for a stale feed (no Status, no stale flag).

mod common;

use common::*;
use quotecast_proto::feed::{Message as FeedMsg, ReasonCode, TradingState as FeedState};
use quotecast_proto::v1::{
    self, quote_service_client::QuoteServiceClient, server_message::Body, TradingState,
};
use serde_json::json;

fn halt(locate: u16, state: FeedState, reason: &str) -> FeedMsg {
    FeedMsg::TradingAction { locate, ts: 1, state, reason: ReasonCode::from_text(reason) }
}

/// The next TradingStatus the client gets; updates on the way are returned
/// too. A feed Status on the way fails the test.
async fn next_trading(c: &mut Client) -> (v1::TradingStatus, Vec<v1::QuoteUpdate>) {
    let mut updates = Vec::new();
    loop {
        match c.next().await {
            Got::Server(m) => match m.body {
                Some(Body::Trading(t)) => return (t, updates),
                Some(Body::Updates(b)) => updates.extend(b.updates),
                Some(Body::Status(s)) => panic!("a halt is not a feed status: {s:?}"),
                _ => {}
            },
            Got::Json(_) => {}
            Got::Closed(c) => panic!("closed: {c:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halts_and_resumptions_reach_clients_in_updates_snapshots_and_grpc() {
    let (gw, mut feed, mut a) = two_quoted_symbols("TS1", |_| {}).await;

    feed.send(&[halt(1, FeedState::Halted, "T1")]);
    let (t, _) = next_trading(&mut a).await;
    assert_eq!(
        (t.state(), t.reason.as_str(), t.symbols.clone()),
        (TradingState::Halted, "T1", vec!["AAPL".into()])
    );

    // A client that subscribes now: the snapshot says HALTED, and a
    // TradingStatus follows it.
    let mut b = Client::connect(&gw.ws_url("")).await;
    b.send_json(json!({"op":"subscribe","symbols":["AAPL"]})).await;
    b.json().await;
    let (t, snaps) = next_trading(&mut b).await;
    assert_eq!(snaps.len(), 1);
    assert!(snaps[0].snapshot);
    assert_eq!(snaps[0].trading_state(), TradingState::Halted);
    assert!(!snaps[0].stale, "halted is not stale");
    assert_eq!((t.state(), t.symbols.clone()), (TradingState::Halted, vec!["AAPL".into()]));

    // gRPC snapshots carry it too.
    let mut g = QuoteServiceClient::connect(format!("http://{}", gw.running.grpc_addr)).await.unwrap();
    let snap = g
        .get_snapshot(v1::GetSnapshotRequest {
            symbols: vec!["AAPL".into(), "MSFT".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let states: Vec<_> = snap.quotes.iter().map(|q| (q.symbol.clone(), q.trading_state())).collect();
    assert_eq!(states, vec![("AAPL".into(), TradingState::Halted), ("MSFT".into(), TradingState::Trading)]);

    // Resumption: told, and the next update carries the state.
    feed.send(&[halt(1, FeedState::Trading, ""), quote(1, 1_000_100)]);
    for c in [&mut a, &mut b] {
        let (t, _) = next_trading(c).await;
        assert_eq!((t.state(), t.reason.as_str()), (TradingState::Trading, ""));
        let u = c.updates().await;
        assert_eq!((u[0].symbol.as_str(), u[0].trading_state()), ("AAPL", TradingState::Trading));
    }
    // The same state again changes nothing (no message), and a halt moves
    // no seq: the update after it is the next seq.
    feed.send(&[halt(1, FeedState::Trading, ""), halt(2, FeedState::Paused, "LUDP"), quote(1, 1_000_200)]);
    let (t, before) = next_trading(&mut a).await;
    assert!(before.is_empty(), "no message for an unchanged state");
    assert_eq!(
        (t.state(), t.reason.as_str(), t.symbols),
        (TradingState::Paused, "LUDP", vec!["MSFT".into()])
    );
    let u = a.updates().await;
    assert_eq!((u[0].symbol.as_str(), u[0].seq), ("AAPL", 3));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_feed_session_starts_with_every_symbol_trading() {
    let (gw, mut feed, mut a) = two_quoted_symbols("TS3", |_| {}).await;
    feed.send(&[halt(2, FeedState::Halted, "H10")]);
    assert_eq!(next_trading(&mut a).await.0.state(), TradingState::Halted);
    feed.end_of_session();
    let mut next = gw.sender("TS4");
    next.send(&[dir(1, "AAPL"), dir(2, "MSFT")]);
    next.heartbeat();
    next.send(&[quote(1, 1_000_300)]);
    // Restart: the feed statuses say SESSION_END; the halt is over with the
    // old session.
    let t = loop {
        match a.next().await {
            Got::Server(v1::ServerMessage { body: Some(Body::Trading(t)) }) => break t,
            Got::Closed(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    };
    assert_eq!((t.state(), t.symbols), (TradingState::Trading, vec!["MSFT".to_string()]));
    gw.stop().await;
}
