//! `quotecast.v1.QuoteService`: snapshots read from the book, streams fed
//! by the hub. Nothing here writes to the book or waits on the ingest
//! thread: reads are lock-free `ArcSwap` loads.

use super::config::GrpcConfig;
use super::error::CallError;
use super::request::{self, PageToken};
use super::stream::{self, Pump, PumpConfig, QuoteStream, Subscription};
use crate::auth::Principal;
use crate::book::SymbolId;
use crate::core::Core;
use crate::hub::encode::{to_proto, Flags};
use crate::hub::mailbox::Mailbox;
use quotecast_proto::clock::now_ns;
use quotecast_proto::v1::{
    self, quote_service_server::QuoteService, stream_quotes_response::Body, ErrorCode, GetSnapshotRequest,
    GetSnapshotResponse, ListSymbolsRequest, ListSymbolsResponse, StreamQuotesRequest, StreamQuotesResponse,
    SymbolInfo,
};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};

/// Flags of a quote read for a snapshot: the current state, not an update.
const SNAPSHOT: Flags = Flags { snapshot: true, skipped: 0, resume_failed: false };

/// The service. Cheap to clone into tonic; state is shared.
#[derive(Clone)]
pub struct QuoteSvc {
    core: Arc<Core>,
    cfg: Arc<GrpcConfig>,
    /// One permit per open StreamQuotes call (`--grpc-max-streams`).
    streams: Arc<Semaphore>,
    /// Stream pumps, so shutdown can wait for them to unsubscribe.
    tasks: TaskTracker,
    /// Binds page tokens to this instance (see [`PageToken`]).
    instance: u64,
}

impl QuoteSvc {
    /// A service over `core`'s book and hub; pumps are spawned on `tasks`.
    pub fn new(core: Arc<Core>, cfg: GrpcConfig, tasks: TaskTracker) -> Self {
        QuoteSvc {
            core,
            streams: Arc::new(Semaphore::new(cfg.max_streams)),
            cfg: Arc::new(cfg),
            tasks,
            instance: now_ns() as u64,
        }
    }

    fn serving(&self) -> Result<(), CallError> {
        if self.core.shutdown.is_cancelled() {
            Err(CallError::ShuttingDown)
        } else {
            Ok(())
        }
    }

    /// Who the caller is, from its `authorization` metadata (`Bearer
    /// <token>`, or the bare token).
    fn principal<T>(&self, req: &Request<T>) -> Result<Principal, CallError> {
        let auth = &self.core.auth;
        if !auth.enabled() {
            return Ok(Principal::open());
        }
        let ip = req.remote_addr().map(|a| a.ip());
        if let Some(wait) = ip.and_then(|ip| auth.failures.blocked(ip, std::time::Instant::now())) {
            auth.stats.blocked.fetch_add(1, Ordering::Relaxed);
            return Err(CallError::Blocked(wait.as_secs().max(1)));
        }
        let token = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(|v| crate::auth::bearer(v).unwrap_or(v.trim()));
        let p = auth.verify(token.unwrap_or_default()).map_err(|e| {
            if let Some(ip) = ip {
                auth.failed(ip, &e);
            }
            CallError::Unauthenticated(e.to_string())
        })?;
        if let Some(rate) = p.max_requests_per_sec {
            auth.rates.take(&p.subject, rate).map_err(|wait| CallError::KeyRateLimited {
                subject: p.subject.clone(),
                rate,
                retry_ms: wait.as_millis().max(1) as u64,
            })?;
        }
        Ok(p)
    }

    /// Named symbols: each known one's quote, the others rejected.
    fn named(
        &self,
        texts: &[String],
        who: &Principal,
        out: &mut GetSnapshotResponse,
    ) -> Result<(), CallError> {
        let book = &self.core.book;
        for sym in request::symbols(texts, self.cfg.max_symbols_per_call)? {
            if !who.entitlements.allows(sym.as_str()) {
                self.core.auth.stats.not_entitled.fetch_add(1, Ordering::Relaxed);
                out.rejected.push(not_entitled(sym.as_str()));
                continue;
            }
            match book.id(&sym).and_then(|id| book.get(id)) {
                Some(q) => out.quotes.push(to_proto(&q, SNAPSHOT)),
                None => out.rejected.push(unknown(sym.as_str())),
            }
        }
        Ok(())
    }

    /// One page of every symbol, in id order; only those `who` is entitled
    /// to are in it (a page may hold fewer than its size, even none, and
    /// still name a next page).
    fn page(
        &self,
        page_size: u32,
        token: &str,
        who: &Principal,
        out: &mut GetSnapshotResponse,
    ) -> Result<(), CallError> {
        let start = if token.is_empty() { 0 } else { PageToken::decode(token, self.instance)?.next };
        let size = match page_size {
            0 => self.cfg.default_page_size,
            n => n.min(self.cfg.max_page_size),
        };
        let book = &self.core.book;
        let len = book.len() as u32;
        if start > len {
            // Ids never go away, so this token was not made by us.
            return Err(CallError::BadPageToken(token.to_string()));
        }
        let end = start.saturating_add(size).min(len);
        out.quotes.reserve((end - start) as usize);
        out.quotes.extend(
            (start..end)
                .filter_map(|id| book.get(id))
                .filter(|q| who.entitlements.allows(q.symbol.as_str()))
                .map(|q| to_proto(&q, SNAPSHOT)),
        );
        if end < len {
            out.next_page_token = PageToken { instance: self.instance, next: end }.encode();
        }
        Ok(())
    }
}

fn not_entitled(symbol: &str) -> v1::Rejection {
    v1::Rejection {
        symbol: symbol.to_string(),
        code: ErrorCode::NotEntitled as i32,
        reason: "not entitled to this symbol".into(),
    }
}

fn unknown(symbol: &str) -> v1::Rejection {
    v1::Rejection {
        symbol: symbol.to_string(),
        code: ErrorCode::UnknownSymbol as i32,
        reason: "not in the feed's symbol directory".into(),
    }
}

#[tonic::async_trait]
impl QuoteService for QuoteSvc {
    async fn get_snapshot(
        &self,
        req: Request<GetSnapshotRequest>,
    ) -> Result<Response<GetSnapshotResponse>, Status> {
        self.serving()?;
        let who = self.principal(&req)?;
        let r = req.into_inner();
        // Read before the quotes: every quote reflects at least the feed up
        // to here (each quote's own feed_seq is exact).
        let mut out = GetSnapshotResponse {
            feed_seq: self.core.feed.next_seq.load(Ordering::Relaxed),
            ts: now_ns(),
            ..Default::default()
        };
        if r.symbols.is_empty() {
            self.page(r.page_size, &r.page_token, &who, &mut out)?;
        } else if !r.page_token.is_empty() {
            return Err(CallError::PageTokenWithSymbols.into());
        } else {
            self.named(&r.symbols, &who, &mut out)?;
        }
        Ok(Response::new(out))
    }

    async fn list_symbols(
        &self,
        req: Request<ListSymbolsRequest>,
    ) -> Result<Response<ListSymbolsResponse>, Status> {
        self.serving()?;
        let who = self.principal(&req)?;
        let book = &self.core.book;
        let symbols = (0..book.len() as SymbolId)
            .filter_map(|id| {
                let q = book.get(id).filter(|q| who.entitlements.allows(q.symbol.as_str()))?;
                Some(SymbolInfo {
                    symbol: q.symbol.as_str().to_string(),
                    // The current session's code; 0 until its directory
                    // entry arrives (e.g. right after a sender restart).
                    locate: book.locate(id).map_or(0, u32::from),
                    seq: q.seq,
                    last_update_ts: q.ts_recv,
                    update_count: book.update_count(id),
                    stale: q.stale,
                    epoch: crate::hub::encode::epoch_text(&q).into_owned(),
                })
            })
            .collect();
        Ok(Response::new(ListSymbolsResponse { symbols }))
    }

    type StreamQuotesStream = QuoteStream;

    async fn stream_quotes(
        &self,
        req: Request<StreamQuotesRequest>,
    ) -> Result<Response<QuoteStream>, Status> {
        self.serving()?;
        let who = self.principal(&req)?;
        // tonic's deadline layer only covers the call until the response
        // starts; the stream itself ends at the caller's deadline here.
        let timeout = request::grpc_timeout(req.metadata().get("grpc-timeout").and_then(|v| v.to_str().ok()));
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        // Drain turns spread by caller address; several streams of one
        // connection differ by the time they started.
        let drain_key = req.remote_addr().map_or(0, |a| a.port() as u64) ^ (now_ns() as u64 >> 10);
        let r = req.into_inner();
        if r.symbols.is_empty() {
            return Err(CallError::NoSymbols.into());
        }
        let mut max = self.cfg.max_symbols_per_call;
        if let Some(m) = who.max_symbols {
            max = max.min(m as usize);
        }
        let syms = request::symbols(&r.symbols, max)?;
        let permit = self
            .streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| CallError::TooManyStreams { max: self.cfg.max_streams })?;

        let core = &self.core;
        let mailbox = Arc::new(Mailbox::new(self.cfg.stream_queue_capacity, 1));
        let mut sub = Subscription::new(core.hub.clone(), mailbox);
        let mut ack = v1::Ack::default();
        for sym in syms {
            if !who.entitlements.allows(sym.as_str()) {
                core.auth.stats.not_entitled.fetch_add(1, Ordering::Relaxed);
                ack.rejected.push(not_entitled(sym.as_str()));
                continue;
            }
            match core.book.id(&sym) {
                Some(id) if sub.add(id) => ack.accepted.push(sym.as_str().to_string()),
                _ => ack.rejected.push(unknown(sym.as_str())),
            }
        }
        if ack.accepted.is_empty() {
            let names: Vec<&str> = ack.rejected.iter().map(|r| r.symbol.as_str()).collect();
            if ack.rejected.iter().all(|r| r.code == ErrorCode::NotEntitled as i32) {
                return Err(CallError::NotEntitled(names.join(", ")).into());
            }
            return Err(CallError::NoKnownSymbols(names.join(", ")).into());
        }
        let (tx, end, stream) = stream::channel(self.cfg.stream_channel_capacity);
        // The ack goes first (the channel is empty, so this cannot fail):
        // the caller learns what the snapshots that follow are for.
        let _ = tx.try_send(StreamQuotesResponse { body: Some(Body::Ack(ack)) });
        let pump = Pump {
            sub,
            book: core.book.clone(),
            shutdown: core.shutdown.clone(),
            core: core.clone(),
            drain_key,
            cfg: PumpConfig {
                max_batch_bytes: self.cfg.max_batch_bytes,
                slow_client_timeout: self.cfg.slow_client_timeout(),
                deadline,
                expires: who
                    .remaining(std::time::SystemTime::now())
                    .map(|left| tokio::time::Instant::now() + left),
            },
            permit,
        };
        self.tasks.spawn(pump.run(tx, end));
        Ok(Response::new(stream))
    }
}
