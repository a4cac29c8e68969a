//! StreamQuotes: one subscribed [`Mailbox`] per call, drained by a pump task
//! into a bounded channel that the transport reads.
//!
//! ```text
//! hub --push (never waits)--> Mailbox --drain--> pump --bounded mpsc--> QuoteStream --> tonic
//!                              (conflates when full)          \--terminal status (oneshot)--/
//! ```
//!
//! The contract is the WebSocket one: the ack, a snapshot per symbol, then
//! every update in order; when the caller reads slowly the mailbox conflates
//! (latest value per symbol with a skip count), and a caller that stays
//! behind longer than the slow-client timeout is ended with
//! RESOURCE_EXHAUSTED. Whatever ends the stream (the caller leaving,
//! shutdown, the deadline) unsubscribes every symbol: [`Subscription`]
//! does it on drop.

use super::error::StreamEnd;
use crate::book::{Book, SymbolId};
use crate::hub::frames;
use crate::hub::mailbox::{Control, Drained, Mailbox};
use crate::hub::notice::Grouped;
use crate::hub::Hub;
use bytes::{Bytes, BytesMut};
use prost::Message as _;
use quotecast_proto::clock::now_ns;
use quotecast_proto::v1::{self, stream_quotes_response::Body, StreamQuotesResponse};
use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;

/// A mailbox's symbols in the hub; unsubscribes them all when dropped, so
/// no path out of a stream (return, cancel, panic) leaves it subscribed.
pub struct Subscription {
    hub: Arc<Hub>,
    mailbox: Arc<Mailbox>,
    ids: Vec<SymbolId>,
}

impl Subscription {
    /// An empty subscription of `mailbox`.
    pub fn new(hub: Arc<Hub>, mailbox: Arc<Mailbox>) -> Self {
        Subscription { hub, mailbox, ids: Vec::new() }
    }

    /// Subscribes `id` (snapshot first). False if the hub does not know it.
    pub fn add(&mut self, id: SymbolId) -> bool {
        if self.hub.subscribe(id, &self.mailbox, None).is_none() {
            return false;
        }
        self.ids.push(id);
        true
    }

    /// The mailbox the hub fills.
    pub fn mailbox(&self) -> &Arc<Mailbox> {
        &self.mailbox
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Closed first so the hub stops queueing at once.
        self.mailbox.close();
        for id in self.ids.drain(..) {
            self.hub.unsubscribe(id, &self.mailbox);
        }
    }
}

/// The response stream tonic sends: what the pump queued, except that a
/// terminal status goes out as soon as the pump sets it, ahead of anything
/// still queued (the stream is over; the caller should learn why now).
pub struct QuoteStream {
    rx: mpsc::Receiver<StreamQuotesResponse>,
    end: Option<oneshot::Receiver<tonic::Status>>,
}

impl QuoteStream {
    fn poll_end(&mut self, cx: &mut Context<'_>) -> Option<tonic::Status> {
        let end = self.end.as_mut()?;
        match Pin::new(end).poll(cx) {
            Poll::Ready(r) => {
                self.end = None;
                r.ok()
            }
            Poll::Pending => None,
        }
    }
}

impl Stream for QuoteStream {
    type Item = Result<StreamQuotesResponse, tonic::Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(s) = self.poll_end(cx) {
            self.rx.close();
            return Poll::Ready(Some(Err(s)));
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(m)) => Poll::Ready(Some(Ok(m))),
            // The pump sets the status before it drops its sender, so it is
            // there by now if there is one.
            Poll::Ready(None) => Poll::Ready(self.poll_end(cx).map(Err)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Settings of one stream's pump.
#[derive(Debug, Clone)]
pub struct PumpConfig {
    /// Largest batch of update bytes per response.
    pub max_batch_bytes: usize,
    /// Behind (conflating or blocked) longer than this ends the stream.
    pub slow_client_timeout: Duration,
    /// The caller's deadline.
    pub deadline: Option<Instant>,
    /// When the caller's token expires.
    pub expires: Option<Instant>,
}

/// Everything a pump owns; dropping it unsubscribes and frees the slot.
pub struct Pump {
    /// The subscribed mailbox.
    pub sub: Subscription,
    /// The book, for symbol names in status messages.
    pub book: Arc<Book>,
    /// Gateway shutdown.
    pub shutdown: CancellationToken,
    /// The gateway, for its drain turns.
    pub core: Arc<crate::core::Core>,
    /// This stream's drain turn key.
    pub drain_key: u64,
    /// Settings.
    pub cfg: PumpConfig,
    /// The stream slot, released when the pump ends.
    pub permit: OwnedSemaphorePermit,
}

/// A started stream: the pump's half and the transport's half.
pub fn channel(
    capacity: usize,
) -> (mpsc::Sender<StreamQuotesResponse>, oneshot::Sender<tonic::Status>, QuoteStream) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let (end_tx, end_rx) = oneshot::channel();
    (tx, end_tx, QuoteStream { rx, end: Some(end_rx) })
}

impl Pump {
    /// Drains the mailbox into `tx` until the stream must end, then sends
    /// the terminal status (if anyone listens) and unsubscribes.
    pub async fn run(self, tx: mpsc::Sender<StreamQuotesResponse>, end: oneshot::Sender<tonic::Status>) {
        let why = tokio::select! {
            why = self.pump(&tx) => why,
            () = self.core.drain.turn(self.drain_key) => StreamEnd::Drained,
        };
        tracing::debug!(reason = why.label(), "quote stream ended");
        if let Some(s) = why.status() {
            let _ = end.send(s);
        }
        drop(tx);
        // `self` drops here: unsubscribed, slot released.
    }

    async fn pump(&self, tx: &mpsc::Sender<StreamQuotesResponse>) -> StreamEnd {
        let mailbox = self.sub.mailbox().clone();
        let mut drained = Drained::default();
        let mut out = Vec::new();
        let slow = self.cfg.slow_client_timeout;
        // Whichever comes first ends the stream: the caller's deadline, or
        // its token's expiry.
        let (at, end) = match (self.cfg.deadline, self.cfg.expires) {
            (Some(d), Some(e)) if e < d => (Some(e), StreamEnd::Expired),
            (None, Some(e)) => (Some(e), StreamEnd::Expired),
            (d, _) => (d, StreamEnd::Deadline),
        };
        loop {
            if self.shutdown.is_cancelled() {
                return StreamEnd::Shutdown;
            }
            if at.is_some_and(|d| d <= Instant::now()) {
                return end;
            }
            if !mailbox.drain(&mut drained) {
                tokio::select! {
                    _ = mailbox.notified() => {}
                    _ = tx.closed() => return StreamEnd::ClientGone,
                    _ = self.shutdown.cancelled() => return StreamEnd::Shutdown,
                    _ = until(at) => return end,
                }
                continue;
            }
            if drained.behind_since.is_some_and(|since| since.elapsed() > slow) {
                return StreamEnd::SlowConsumer { limit_ms: slow.as_millis() as u64 };
            }
            if let Err(e) = responses(&self.book, &mut drained, self.cfg.max_batch_bytes, &mut out) {
                tracing::error!(error = %e, "could not decode a shared update entry");
                return StreamEnd::Internal(format!("gateway encoding error: {e}"));
            }
            for r in out.drain(..) {
                tokio::select! {
                    sent = tokio::time::timeout(slow, tx.send(r)) => match sent {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return StreamEnd::ClientGone,
                        Err(_) => return StreamEnd::SlowConsumer { limit_ms: slow.as_millis() as u64 },
                    },
                    _ = self.shutdown.cancelled() => return StreamEnd::Shutdown,
                    _ = until(at) => return end,
                }
            }
        }
    }
}

/// Sleeps until `deadline`, forever without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Turns what was drained into responses by the WebSocket rules (see
/// [`frames`]): updates batched into `UpdateBatch`es of at most `max_batch`
/// bytes of entries, equal status changes grouped, conflated symbols last.
///
/// # Errors
/// When a shared entry does not decode (a bug in the hub's encoding).
pub fn responses(
    book: &Book,
    d: &mut Drained,
    max_batch: usize,
    out: &mut Vec<StreamQuotesResponse>,
) -> Result<(), prost::DecodeError> {
    let mut g = GrpcFrames { out, buf: BytesMut::new(), error: None };
    frames::build(d, book, max_batch, &mut g);
    g.error.map_or(Ok(()), Err)
}

/// Responses for the [`frames`] builder.
struct GrpcFrames<'a> {
    out: &'a mut Vec<StreamQuotesResponse>,
    buf: BytesMut,
    error: Option<prost::DecodeError>,
}

impl frames::Frames for GrpcFrames<'_> {
    fn batch(&mut self, entries: &[Bytes], len: usize) {
        // Concatenated entries are a valid encoding of an `UpdateBatch`
        // holding them. tonic's codec wants the message, so it is decoded
        // here and encoded again by the transport.
        self.buf.clear();
        self.buf.reserve(len);
        for e in entries {
            self.buf.extend_from_slice(e);
        }
        match v1::UpdateBatch::decode(&self.buf[..]) {
            Ok(mut batch) => {
                batch.ts_send = now_ns();
                self.out.push(StreamQuotesResponse { body: Some(Body::Updates(batch)) });
            }
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
    }

    fn notice(&mut self, g: Grouped) {
        let body = match g {
            Grouped::Status(s) => Body::Status(s),
            Grouped::Trading(t) => Body::Trading(t),
        };
        self.out.push(StreamQuotesResponse { body: Some(body) });
    }

    /// Streams queue no replies; the hub never queues control.
    fn control(&mut self, _: Control) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::{Quote, UpdateKind};
    use crate::hub::encode::{self, Flags};
    use crate::hub::mailbox::{Encoded, Entry};
    use quotecast_proto::feed::Symbol;
    use quotecast_proto::v1::status::{Reason, State};

    fn book() -> Arc<Book> {
        let (book, w) = Book::with_writer(4);
        w.insert_symbol(Symbol::new("AAPL").unwrap()).unwrap();
        w.insert_symbol(Symbol::new("MSFT").unwrap()).unwrap();
        book
    }

    fn entry(sym: &str, seq: u64) -> Encoded {
        let mut q = Quote::empty(Symbol::new(sym).unwrap());
        q.seq = seq;
        q.kind = UpdateKind::Quote;
        q.bid_px = 1_000 + seq as i64;
        let mut e = BytesMut::new();
        encode::entry(&q, Flags::default(), &mut e);
        Encoded { bytes: e.freeze(), ts_recv: 0 }
    }

    /// A compact picture of responses: "U:AAPL1,AAPL2" or "S:STALE:AAPL,MSFT".
    fn show(out: &[StreamQuotesResponse]) -> Vec<String> {
        out.iter()
            .map(|r| match r.body.as_ref().unwrap() {
                Body::Updates(b) => {
                    assert!(b.ts_send > 0);
                    let u: Vec<String> = b
                        .updates
                        .iter()
                        .map(|u| {
                            let mut s = format!("{}{}", u.symbol, u.seq);
                            if u.skipped > 0 {
                                s += &format!("+{}", u.skipped);
                            }
                            if u.snapshot {
                                s += "*";
                            }
                            s
                        })
                        .collect();
                    format!("U:{}", u.join(","))
                }
                Body::Status(s) => format!("S:{}:{}", s.state, s.symbols.join(",")),
                Body::Trading(t) => format!("T:{}:{}", t.state, t.symbols.join(",")),
                Body::Ack(_) => "A".into(),
            })
            .collect()
    }

    #[test]
    fn queued_entries_keep_their_order_and_batch() {
        let b = book();
        let mut d = Drained::default();
        d.entries.push_back(Entry::Update(entry("AAPL", 1)));
        d.entries.push_back(Entry::Update(entry("MSFT", 1)));
        d.entries.push_back(Entry::Status { symbol: 0, state: State::Stale, reason: Reason::FeedGap });
        d.entries.push_back(Entry::Status { symbol: 1, state: State::Stale, reason: Reason::FeedGap });
        d.entries.push_back(Entry::Update(entry("AAPL", 2)));
        let mut out = Vec::new();
        responses(&b, &mut d, 1 << 16, &mut out).unwrap();
        let stale = State::Stale as i32;
        assert_eq!(
            show(&out),
            vec!["U:AAPL1,MSFT1".to_string(), format!("S:{stale}:AAPL,MSFT"), "U:AAPL2".into()]
        );
        assert!(d.entries.is_empty());
    }

    #[test]
    fn batches_respect_the_byte_limit() {
        let b = book();
        let mut d = Drained::default();
        let one = entry("AAPL", 1).bytes.len();
        for s in 1..=5 {
            d.entries.push_back(Entry::Update(entry("AAPL", s)));
        }
        let mut out = Vec::new();
        responses(&b, &mut d, 2 * one + 1, &mut out).unwrap();
        assert_eq!(show(&out), vec!["U:AAPL1,AAPL2", "U:AAPL3,AAPL4", "U:AAPL5"]);
    }

    #[test]
    fn conflated_symbols_carry_skip_count_and_status_first() {
        let b = book();
        let mut d = Drained::default();
        d.pending.push((
            0,
            crate::hub::mailbox::Pending {
                update: Some(entry("AAPL", 9)),
                skipped: 3,
                status: Some((State::Ok, Reason::Recovered)),
                trading: None,
                snapshot: false,
            },
        ));
        d.pending.push((
            1,
            crate::hub::mailbox::Pending {
                update: Some(entry("MSFT", 4)),
                skipped: 0,
                status: None,
                trading: None,
                snapshot: true,
            },
        ));
        let mut out = Vec::new();
        responses(&b, &mut d, 1 << 16, &mut out).unwrap();
        let ok = State::Ok as i32;
        assert_eq!(show(&out), vec![format!("S:{ok}:AAPL"), "U:AAPL9+3,MSFT4*".into()]);
    }

    #[tokio::test]
    async fn terminal_status_overtakes_queued_responses() {
        let (tx, end, mut s) = channel(4);
        tx.send(StreamQuotesResponse::default()).await.unwrap();
        end.send(tonic::Status::unavailable("bye")).unwrap();
        use tokio_stream::StreamExt;
        let first = s.next().await.unwrap();
        assert_eq!(first.unwrap_err().code(), tonic::Code::Unavailable);
        assert!(tx.is_closed(), "the transport half stops taking responses");
    }

    #[tokio::test]
    async fn stream_ends_after_queued_responses_without_a_status() {
        let (tx, end, mut s) = channel(4);
        tx.send(StreamQuotesResponse::default()).await.unwrap();
        drop((tx, end));
        use tokio_stream::StreamExt;
        assert!(s.next().await.unwrap().is_ok());
        assert!(s.next().await.is_none());
    }
}
