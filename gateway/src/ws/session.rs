//! One client connection: a reader that handles requests and a writer that
//! drains the connection's [`Mailbox`] into batched frames. Both run in one
//! task; when either ends, the session ends and unsubscribes everything.

use super::close::{self, End};
use super::close_code;
use super::protocol::{self, BadRequest, Envelope, Format, Reply, Request};
use crate::auth::limits::{Held, RateLimit};
use crate::auth::Principal;
use crate::book::SymbolId;
use crate::conn::Conn;
use crate::core::Core;
use crate::hub::encode;
use crate::hub::frames;
use crate::hub::mailbox::{Control, Drained, Mailbox};
use crate::hub::notice::Grouped;
use crate::hub::{ResumeFrom, Start};
use bytes::{Bytes, BytesMut};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use prost::Message as _;
use quotecast_proto::clock::now_ns;
use quotecast_proto::feed::Symbol;
use quotecast_proto::v1::{self, ErrorCode};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// A connection's key for its drain turn: its address and port, so the
/// turns of many clients spread evenly.
fn drain_key(peer: SocketAddr) -> u64 {
    let ip = match peer.ip() {
        std::net::IpAddr::V4(a) => u64::from(u32::from(a)),
        std::net::IpAddr::V6(a) => u128::from(a) as u64,
    };
    (ip << 16) | u64::from(peer.port())
}

/// Who `p` is, as the reply to `auth` (request `id`) or, `expiring`, as
/// the warning before its token expires.
fn authenticated(id: &str, p: &Principal, expiring: bool) -> Reply {
    Reply::Authenticated(v1::Authenticated {
        id: id.to_string(),
        subject: p.subject.clone(),
        expires_at_ms: p.expires_at.map_or(0, |s| s.saturating_mul(1000)),
        expiring,
    })
}

/// What [`Session::guard`] wakes up for.
#[derive(Debug, Clone, Copy)]
enum Wake {
    NoCredential,
    Warn,
    Expired,
}

/// Per-session state the reader changes.
struct State {
    subs: BTreeSet<SymbolId>,
    limit: RateLimit,
    /// Who the client is; `None` until it authenticates (authentication
    /// on and no credential in the upgrade).
    principal: Option<Arc<Principal>>,
    /// Its place among its subject's connections (`max_connections`);
    /// boxed: a connection without a limit pays one pointer.
    held: Option<Box<Held>>,
    /// The encoding of the client's last request: how to send what it did
    /// not ask for (the expiry warning).
    format: Format,
}

/// A connected, upgraded client.
pub struct Session {
    shared: Arc<Core>,
    mailbox: Arc<Mailbox>,
    state: parking_lot::Mutex<State>,
    peer: SocketAddr,
}

impl Session {
    /// A session for `peer`, running on the worker of fan-out lane `lane`,
    /// as `principal` (`None`: it must authenticate first).
    pub fn new(shared: Arc<Core>, peer: SocketAddr, lane: usize, principal: Option<Arc<Principal>>) -> Self {
        let cfg = &shared.config.ws;
        Session {
            mailbox: Arc::new(Mailbox::new(cfg.queue_capacity, 64).on_lane(lane)),
            state: parking_lot::Mutex::new(State {
                subs: BTreeSet::new(),
                limit: RateLimit::new(cfg.max_requests_per_sec),
                principal,
                held: None,
                format: Format::Binary,
            }),
            shared,
            peer,
        }
    }

    /// Takes the connection's place among its subject's connections.
    fn hold(&self, st: &mut State) -> Result<(), End> {
        let Some(p) = &st.principal else { return Ok(()) };
        if !self.shared.auth.enabled() || st.held.is_some() {
            return Ok(());
        }
        match self.shared.auth.connections.take(&p.subject, p.max_connections) {
            Some(h) => {
                st.held = Some(Box::new(h));
                Ok(())
            }
            None => {
                self.shared.auth.stats.connection_limited.fetch_add(1, Ordering::Relaxed);
                let max = p.max_connections.unwrap_or_default();
                Err(End::Close(
                    close_code::TRY_AGAIN_LATER,
                    format!("{} holds its {max} connections; close one or retry later", p.subject),
                ))
            }
        }
    }

    /// Runs the session until the client leaves, is closed, or the gateway
    /// shuts down, then ends the connection so the client learns why (see
    /// [`close`](super::close)). `initial` are symbols from the URL
    /// (`?symbols=`).
    #[tracing::instrument(name = "session", skip_all, fields(peer = %self.peer))]
    pub async fn run(self, ws: WebSocketStream<Conn>, initial: Vec<String>) {
        let (mut sink, mut stream) = ws.split();
        let held = self.hold(&mut self.state.lock());
        if let Err(end) = held {
            let label = end.label();
            let linger = self.shared.config.ws.close_linger().min(Duration::from_secs(1));
            if let Ok(ws) = sink.reunite(stream) {
                Box::pin(close::finish(ws, end, linger)).await;
            }
            self.shared.ws.record_close(label);
            return;
        }
        if !initial.is_empty() {
            self.handle(Envelope {
                id: String::new(),
                request: Request::Subscribe {
                    symbols: initial,
                    from_seq: BTreeMap::new(),
                    from_epoch: String::new(),
                },
                format: Format::Binary,
            });
        }
        let end = tokio::select! {
            end = self.read_loop(&mut stream) => end,
            end = self.write_loop(&mut sink) => end,
            // Boxed, and only with authentication on: an idle connection
            // without it carries no guard at all.
            end = async {
                if self.shared.auth.enabled() {
                    Box::pin(self.guard()).await
                } else {
                    std::future::pending().await
                }
            } => end,
            () = self.shared.drain.turn(drain_key(self.peer)) => {
                End::Close(close_code::SERVICE_RESTART, crate::drain::HINT.into())
            }
        };
        // Nothing queued is sent after this: a closing connection holds no
        // data, and its Close frame comes right after what is in the socket.
        self.mailbox.close();
        let subs = std::mem::take(&mut self.state.lock().subs);
        self.shared.ws.subscriptions.fetch_sub(subs.len() as i64, Ordering::Relaxed);
        for id in subs {
            self.shared.hub.unsubscribe(id, &self.mailbox);
        }
        let mut linger = self.shared.config.ws.close_linger();
        if self.shared.shutdown.is_cancelled() {
            // Every connection closes at once: stay within the grace period.
            linger = linger.min(Duration::from_millis(self.shared.config.serve.shutdown_grace_ms) / 2);
        }
        let label = end.label();
        if let Ok(ws) = sink.reunite(stream) {
            // A close still lingering when shutdown starts gets what is left
            // of the grace period, not its whole linger.
            let grace = Duration::from_millis(self.shared.config.serve.shutdown_grace_ms);
            let shutdown = self.shared.shutdown.clone();
            tokio::select! {
                // Boxed: the closing phase is a large future (~3 KB) that
                // every open connection would otherwise carry while idle.
                _ = Box::pin(close::finish(ws, end, linger)) => {}
                _ = async { shutdown.cancelled().await; tokio::time::sleep(grace / 2).await } => {}
            }
        }
        tracing::debug!(reason = label, "session ended");
        self.shared.ws.record_close(label);
    }

    /// Reads and serves requests until the connection must end.
    async fn read_loop<R>(&self, stream: &mut R) -> End
    where
        R: Stream<Item = Result<Message, WsError>> + Unpin,
    {
        let cfg = &self.shared.config.ws;
        let idle = cfg.idle_timeout();
        loop {
            if !self.mailbox.has_control_room() {
                // Pipelined requests: read the next one only once its reply
                // has room. TCP pushes back on the client meanwhile; only a
                // client that stops reading its replies is closed.
                let waited =
                    tokio::time::timeout(cfg.slow_client_timeout(), self.mailbox.control_room()).await;
                if waited.is_err() {
                    let reason = format!("replies not read for {} ms", cfg.slow_client_timeout_ms);
                    return End::Close(close_code::POLICY, reason);
                }
            }
            let msg = match tokio::time::timeout(idle, stream.next()).await {
                Err(_) => {
                    return End::Close(
                        close_code::IDLE,
                        format!("nothing received for {} ms (no pong)", idle.as_millis()),
                    )
                }
                Ok(None) => return End::Gone,
                Ok(Some(Err(e))) => return classify_read_error(e, cfg.max_request_bytes),
                Ok(Some(Ok(m))) => m,
            };
            let parsed = match msg {
                Message::Text(t) => protocol::parse_text(&t),
                Message::Binary(b) => protocol::parse_binary(&b),
                Message::Close(f) => return End::peer_closed(f.as_ref()),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            };
            self.shared.ws.requests.fetch_add(1, Ordering::Relaxed);
            // Per connection, then per key (over all its connections).
            let allowed = {
                let mut st = self.state.lock();
                let per_connection = st.limit.take();
                let per_key = st.principal.as_ref().and_then(|p| Some((p.max_requests_per_sec?, &p.subject)));
                match (per_connection, per_key) {
                    (Err(wait), _) => {
                        Err((wait, format!("more than {} requests per second", cfg.max_requests_per_sec)))
                    }
                    (Ok(()), Some((rate, subject))) => {
                        self.shared.auth.rates.take(subject, rate).map_err(|wait| {
                            (wait, format!("more than {rate} requests per second for {subject}"))
                        })
                    }
                    (Ok(()), None) => Ok(()),
                }
            };
            let overflow = match (parsed, allowed) {
                (Err(BadRequest { id, message, format }), _) => {
                    self.shared.ws.bad_requests.fetch_add(1, Ordering::Relaxed);
                    self.reply(&Reply::error(&id, ErrorCode::BadRequest, message, 0), format)
                }
                (Ok(env), Err((wait, what))) => {
                    self.shared.ws.rate_limited.fetch_add(1, Ordering::Relaxed);
                    let ms = wait.as_millis().max(1) as u64;
                    let msg = format!("{what}; retry after {ms} ms");
                    self.reply(&Reply::error(&env.id, ErrorCode::RateLimited, msg, ms), env.format)
                }
                (Ok(Envelope { id, request: Request::Auth { token }, format }), Ok(())) => {
                    match self.authenticate(&id, &token, format) {
                        Ok(overflow) => overflow,
                        Err(end) => return end,
                    }
                }
                (Ok(env), Ok(())) => self.handle(env),
            };
            if overflow {
                return End::Close(close_code::POLICY, "too many unanswered requests".into());
            }
        }
    }

    /// Queues a reply; true if the client is not reading its replies.
    fn reply(&self, r: &Reply, format: Format) -> bool {
        self.mailbox.push_control(r.encode(format)).is_err()
    }

    /// Serves one request; true if the reply could not be queued.
    fn handle(&self, env: Envelope) -> bool {
        let Envelope { id, request, format } = env;
        {
            let mut st = self.state.lock();
            st.format = format;
            if st.principal.is_none() {
                drop(st);
                let msg = "authenticate first: send {\"op\":\"auth\",\"token\":...} (or an Auth message)";
                return self.reply(&Reply::error(&id, ErrorCode::NotAuthenticated, msg, 0), format);
            }
        }
        match request {
            Request::Subscribe { symbols, from_seq, from_epoch } => {
                self.subscribe(&id, symbols, &from_seq, &from_epoch, format)
            }
            Request::Unsubscribe { symbols } => self.unsubscribe(&id, symbols, format),
            Request::List => {
                let names = self.subscribed_names();
                self.reply(&Reply::Subscriptions(v1::Subscriptions { id, symbols: names }), format)
            }
            Request::Ping { ts } => self.reply(&Reply::Pong(v1::Pong { id, ts }), format),
            // Taken by the read loop before this (it may end the session).
            Request::Auth { .. } => false,
        }
    }

    /// Serves `auth`: the first credential, or a fresh one for the same
    /// subject (the new entitlements apply at once: symbols it no longer
    /// covers are unsubscribed, and the client is told which). A refused
    /// credential ends the session with 4401. `Ok(true)`: the reply could
    /// not be queued.
    fn authenticate(&self, id: &str, token: &str, format: Format) -> Result<bool, End> {
        let auth = &self.shared.auth;
        let refused = |e: crate::auth::AuthError| {
            auth.failed(self.peer.ip(), &e);
            End::Close(close_code::UNAUTHORIZED, e.to_string())
        };
        let p = Arc::new(auth.verify(token).map_err(refused)?);
        let mut removed = Vec::new();
        let mut st = self.state.lock();
        st.format = format;
        match &st.principal {
            Some(old) if old.subject != p.subject => {
                return Err(refused(crate::auth::AuthError::OtherSubject(old.subject.clone())));
            }
            Some(_) => {
                let subs: Vec<SymbolId> = st.subs.iter().copied().collect();
                for sid in subs {
                    let Some(name) = self.shared.book.name(sid) else { continue };
                    if !p.entitlements.allows(name.as_str()) {
                        st.subs.remove(&sid);
                        self.shared.hub.unsubscribe(sid, &self.mailbox);
                        self.shared.ws.subscriptions.fetch_sub(1, Ordering::Relaxed);
                        removed.push(name.as_str().to_string());
                    }
                }
                st.principal = Some(p.clone());
                auth.stats.refreshed.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                st.principal = Some(p.clone());
                self.hold(&mut st)?;
            }
        }
        drop(st);
        if self.reply(&authenticated(id, &p, false), format) {
            return Ok(true);
        }
        if !removed.is_empty() {
            let msg = format!("the refreshed credential does not cover {}: unsubscribed", removed.join(", "));
            return Ok(self.reply(&Reply::error(id, ErrorCode::NotEntitled, msg, 0), format));
        }
        Ok(false)
    }

    /// Ends the session when its access does: no credential within
    /// `--auth-timeout-ms`, the token's expiry (warned
    /// `--auth-expiry-warning-ms` before), or its key removed from the key
    /// file. Run only with authentication on.
    async fn guard(&self) -> End {
        let auth = &self.shared.auth;
        let cfg = auth.config();
        let mut changes = auth.changes();
        let deadline = tokio::time::Instant::now() + cfg.auth_timeout();
        let mut warned: Option<u64> = None;
        loop {
            let p = self.state.lock().principal.clone();
            // When to look again, and what it means then.
            let (at, what) = match &p {
                None => (Some(deadline), Wake::NoCredential),
                Some(p) => match p.remaining(std::time::SystemTime::now()) {
                    None => (None, Wake::Expired),
                    Some(left) => {
                        let now = tokio::time::Instant::now();
                        if left.is_zero() {
                            (Some(now), Wake::Expired)
                        } else if warned != p.expires_at && left > cfg.expiry_warning() {
                            (Some(now + left - cfg.expiry_warning()), Wake::Warn)
                        } else if warned != p.expires_at {
                            (Some(now), Wake::Warn)
                        } else {
                            (Some(now + left), Wake::Expired)
                        }
                    }
                },
            };
            let sleep = async {
                match at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let checked = tokio::select! {
                () = sleep => {
                    // Authenticated or refreshed meanwhile: look again.
                    let now = self.state.lock().principal.clone();
                    if now.as_ref().map(Arc::as_ptr) != p.as_ref().map(Arc::as_ptr) {
                        continue;
                    }
                    match (what, &p) {
                        (Wake::NoCredential, _) => Err(crate::auth::AuthError::Missing),
                        (Wake::Expired, _) => Err(crate::auth::AuthError::Expired),
                        (Wake::Warn, Some(p)) => {
                            warned = p.expires_at;
                            let format = self.state.lock().format;
                            let _ = self.reply(&authenticated("", p, true), format);
                            Ok(())
                        }
                        (Wake::Warn, None) => Ok(()),
                    }
                },
                changed = changes.changed() => {
                    if changed.is_err() {
                        return std::future::pending().await;
                    }
                    p.as_ref().map_or(Ok(()), |p| auth.still_valid(p))
                }
            };
            match checked {
                Ok(()) => {}
                Err(crate::auth::AuthError::Missing) => {
                    auth.failed(self.peer.ip(), &crate::auth::AuthError::Missing);
                    let ms = cfg.auth_timeout_ms;
                    return End::Close(close_code::UNAUTHORIZED, format!("no credential within {ms} ms"));
                }
                Err(e) => {
                    let closes = match e {
                        crate::auth::AuthError::Expired => &auth.stats.expired_closes,
                        _ => &auth.stats.revoked_closes,
                    };
                    closes.fetch_add(1, Ordering::Relaxed);
                    return End::Close(close_code::UNAUTHORIZED, e.to_string());
                }
            }
        }
    }

    fn subscribed_names(&self) -> Vec<String> {
        let st = self.state.lock();
        st.subs.iter().filter_map(|id| self.shared.book.name(*id)).map(|s| s.as_str().to_string()).collect()
    }

    /// Resolves symbol texts to ids, rejecting bad ones.
    fn resolve(&self, symbols: Vec<String>, rejected: &mut Vec<v1::Rejection>) -> Vec<(String, SymbolId)> {
        let mut out: Vec<(String, SymbolId)> = Vec::with_capacity(symbols.len());
        for text in symbols {
            match Symbol::new(&text) {
                Err(e) => rejected.push(rejection(&text, ErrorCode::InvalidSymbol, e.to_string())),
                Ok(sym) => match self.shared.book.id(&sym) {
                    None => rejected.push(rejection(
                        &text,
                        ErrorCode::UnknownSymbol,
                        "not in the feed's symbol directory".into(),
                    )),
                    Some(id) if !out.iter().any(|(_, o)| *o == id) => out.push((text, id)),
                    Some(_) => {}
                },
            }
        }
        out
    }

    fn subscribe(
        &self,
        id: &str,
        symbols: Vec<String>,
        from_seq: &BTreeMap<String, u64>,
        from_epoch: &str,
        format: Format,
    ) -> bool {
        let mut max = self.shared.config.ws.max_symbols_per_connection;
        let mut rejected = Vec::new();
        // Entitlements first, on the text as sent: a symbol the client may
        // not see is refused the same way whether the feed has it or not.
        let symbols = {
            let st = self.state.lock();
            let Some(p) = &st.principal else { return false };
            if let Some(m) = p.max_symbols {
                max = max.min(m as usize);
            }
            let (allowed, refused): (Vec<String>, Vec<String>) =
                symbols.into_iter().partition(|s| p.entitlements.allows(&s.to_ascii_uppercase()));
            for s in refused {
                self.shared.auth.stats.not_entitled.fetch_add(1, Ordering::Relaxed);
                rejected.push(rejection(&s, ErrorCode::NotEntitled, "not entitled to this symbol".into()));
            }
            allowed
        };
        if symbols.len() > max {
            let msg = format!("{} symbols in one request; at most {max}", symbols.len());
            return self.reply(&Reply::error(id, ErrorCode::SymbolLimit, msg, 0), format);
        }
        let resolved = self.resolve(symbols, &mut rejected);
        let mut accepted: Vec<(String, SymbolId)> = Vec::new();
        {
            let st = self.state.lock();
            let new = resolved.iter().filter(|(_, sid)| !st.subs.contains(sid)).count();
            if st.subs.len() + new > max {
                let reason = format!(
                    "would exceed {max} symbols per connection ({} subscribed, {new} new)",
                    st.subs.len()
                );
                for (text, _) in &resolved {
                    rejected.push(rejection(text, ErrorCode::SymbolLimit, reason.clone()));
                }
            } else {
                accepted = resolved;
            }
        }
        let ack = v1::Ack {
            id: id.to_string(),
            accepted: accepted.iter().map(|(t, _)| t.clone()).collect(),
            rejected,
        };
        // The ack goes first so the client knows what the snapshots are for.
        if self.reply(&Reply::Ack(ack), format) {
            return true;
        }
        let mut st = self.state.lock();
        for (text, sid) in accepted {
            let resume = from_seq.get(&text).map(|&seq| ResumeFrom { seq, epoch: from_epoch });
            if st.subs.insert(sid) {
                self.shared.ws.subscriptions.fetch_add(1, Ordering::Relaxed);
            } else {
                // Already subscribed: the stream continues, gapless, with no
                // new snapshot. A resume point is moot here: replaying from
                // it would queue old updates behind newer ones already sent
                // (duplicates, out of order).
                continue;
            }
            match self.shared.hub.subscribe(sid, &self.mailbox, resume) {
                Some(Start::ResumeFailed) => {
                    self.shared.ws.resume_failed.fetch_add(1, Ordering::Relaxed);
                }
                Some(_) => {}
                None => tracing::warn!(symbol = %text, "symbol known to the book but not the hub"),
            }
        }
        false
    }

    fn unsubscribe(&self, id: &str, symbols: Vec<String>, format: Format) -> bool {
        let mut rejected = Vec::new();
        let resolved = self.resolve(symbols, &mut rejected);
        let mut accepted = Vec::new();
        {
            let mut st = self.state.lock();
            for (text, sid) in resolved {
                if st.subs.remove(&sid) {
                    self.shared.hub.unsubscribe(sid, &self.mailbox);
                    self.shared.ws.subscriptions.fetch_sub(1, Ordering::Relaxed);
                    accepted.push(text);
                } else {
                    rejected.push(rejection(&text, ErrorCode::NotSubscribed, "not subscribed".into()));
                }
            }
        }
        self.reply(&Reply::Ack(v1::Ack { id: id.to_string(), accepted, rejected }), format)
    }

    /// How the gateway's shutdown ends this connection: 1001, or 1012 with
    /// the reconnect hint when the shutdown ends a drain (a client whose
    /// turn had not come yet is still told to go to another node).
    fn shutdown_end(&self) -> End {
        if self.shared.drain.is_draining() {
            End::Close(close_code::SERVICE_RESTART, crate::drain::HINT.into())
        } else {
            End::Close(close_code::GOING_AWAY, "server shutting down".into())
        }
    }

    /// Drains the mailbox into frames until the connection must end.
    async fn write_loop<W>(&self, sink: &mut W) -> End
    where
        W: Sink<Message, Error = WsError> + Unpin,
    {
        let cfg = &self.shared.config.ws;
        let shutdown = self.shared.shutdown.clone();
        let mut drained = Drained::default();
        let mut out: Vec<Message> = Vec::new();
        // Pings go out when due, busy or idle: a client that only listens
        // must not be closed as idle because its frames never paused.
        let mut next_ping = tokio::time::Instant::now() + cfg.ping_interval();
        // While the client is behind, frames are paced: each then carries
        // everything pending (bigger, fewer frames), so a slow reader has
        // few frames in flight, catches up sooner, and if it is closed its
        // Close frame is not queued behind thousands of tiny ones.
        let mut paced_until: Option<tokio::time::Instant> = None;
        // Made once and polled by reference: a wake-up then touches neither
        // the timer wheel nor the shutdown token's waiter list (rebuilding
        // them per wake-up was measurable per frame).
        let ping = tokio::time::sleep_until(next_ping);
        let cancelled = shutdown.cancelled();
        tokio::pin!(ping, cancelled);
        loop {
            if shutdown.is_cancelled() {
                return self.shutdown_end();
            }
            if let Some(t) = paced_until.take() {
                tokio::select! {
                    _ = tokio::time::sleep_until(t) => {}
                    _ = &mut cancelled => continue,
                }
            }
            if tokio::time::Instant::now() >= next_ping {
                out.push(Message::Ping(Bytes::new()));
                next_ping = tokio::time::Instant::now() + cfg.ping_interval();
                ping.as_mut().reset(next_ping);
            }
            if !self.mailbox.drain(&mut drained) && out.is_empty() {
                tokio::select! {
                    _ = self.mailbox.notified() => {}
                    _ = &mut ping => {}
                    _ = &mut cancelled => {}
                }
                continue;
            }
            if let Some(since) = drained.behind_since {
                if since.elapsed() > cfg.slow_client_timeout() {
                    self.shared.ws.slow_closes.fetch_add(1, Ordering::Relaxed);
                    let reason =
                        format!("slow consumer: behind for more than {} ms", cfg.slow_client_timeout_ms);
                    return End::Close(close_code::SLOW_CONSUMER, reason);
                }
            }
            let behind = drained.behind_since.is_some();
            let oldest = self.frames(&mut drained, &mut out);
            let n = out.len();
            let started = tokio::time::Instant::now();
            let sent = {
                let send = async {
                    for m in out.drain(..) {
                        sink.feed(m).await?;
                    }
                    sink.flush().await
                };
                tokio::pin!(send);
                // Usually the socket takes the write at once: the slow-client
                // timer is armed only when it does not.
                match futures_util::poll!(send.as_mut()) {
                    std::task::Poll::Ready(r) => Ok(r),
                    std::task::Poll::Pending => tokio::select! {
                        r = tokio::time::timeout(cfg.slow_client_timeout(), send) => r,
                        // Cancel-safe: tungstenite keeps a partly written frame
                        // in its buffer, and the close path finishes it.
                        _ = &mut cancelled => {
                            return self.shutdown_end();
                        }
                    },
                }
            };
            match sent {
                Ok(Ok(())) => {
                    let pace = cfg.slow_client_pace();
                    if behind || started.elapsed() >= pace / 4 {
                        // Behind, or the socket made us wait.
                        paced_until = Some(started + pace);
                    }
                    self.shared.ws.frames.fetch_add(n as u64, Ordering::Relaxed);
                    if oldest > 0 {
                        // Worst tick-to-send latency of this write.
                        let secs = (now_ns() - oldest).max(0) as f64 * 1e-9;
                        self.shared.ws.send_latency.record(secs);
                    }
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "write failed");
                    return End::Gone;
                }
                Err(_) => {
                    self.shared.ws.slow_closes.fetch_add(1, Ordering::Relaxed);
                    let reason =
                        format!("slow consumer: could not take a frame in {} ms", cfg.slow_client_timeout_ms);
                    return End::Close(close_code::SLOW_CONSUMER, reason);
                }
            }
            out.clear();
            // A burst may have grown the swap buffer far beyond what the
            // connection usually needs; give the memory back.
            if drained.entries.capacity() > 1024 {
                drained.entries.shrink_to(64);
            }
        }
    }

    /// Turns drained entries into messages (see [`frames`]). Returns the
    /// oldest receive time of the updates (0 if none was a fresh tick).
    fn frames(&self, d: &mut Drained, out: &mut Vec<Message>) -> i64 {
        let stats = &self.shared.ws;
        let mut ws = WsFrames { out, stats };
        let built = frames::build(d, &self.shared.book, self.shared.config.ws.max_batch_bytes, &mut ws);
        if built.skipped > 0 {
            stats.conflated.fetch_add(built.skipped, Ordering::Relaxed);
        }
        built.oldest
    }
}

/// WebSocket messages for the [`frames`] builder: an update batch is one
/// binary `ServerMessage` (its header in front of the shared entries).
struct WsFrames<'a> {
    out: &'a mut Vec<Message>,
    stats: &'a super::WsStats,
}

impl frames::Frames for WsFrames<'_> {
    fn batch(&mut self, entries: &[Bytes], len: usize) {
        let mut f = BytesMut::with_capacity(len + encode::MAX_FRAME_HEADER);
        encode::frame_header(len, now_ns(), &mut f);
        for e in entries {
            f.extend_from_slice(e);
        }
        self.stats.updates.fetch_add(entries.len() as u64, Ordering::Relaxed);
        self.stats.bytes.fetch_add(f.len() as u64, Ordering::Relaxed);
        self.out.push(Message::Binary(f.freeze()));
    }

    fn notice(&mut self, g: Grouped) {
        let body = match g {
            Grouped::Status(s) => v1::server_message::Body::Status(s),
            Grouped::Trading(t) => v1::server_message::Body::Trading(t),
        };
        self.out.push(Message::Binary(v1::ServerMessage { body: Some(body) }.encode_to_vec().into()));
    }

    fn control(&mut self, reply: Control) {
        self.out.push(match reply {
            Control::Binary(b) => Message::Binary(b),
            Control::Text(t) => Message::text(t),
        });
    }
}

fn rejection(symbol: &str, code: ErrorCode, reason: String) -> v1::Rejection {
    v1::Rejection { symbol: symbol.to_string(), code: code as i32, reason }
}

/// The close answer to a read error (RFC 6455 §7.4.1 codes).
fn classify_read_error(e: WsError, max: usize) -> End {
    use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
    match e {
        // §5.2: the most significant bit of a 64-bit length MUST be 0; such
        // a length is malformed framing, not a large message.
        WsError::Capacity(CapacityError::MessageTooLong { size, .. }) if size as u64 > i64::MAX as u64 => {
            End::Close(close_code::PROTOCOL, "frame length has its most significant bit set".into())
        }
        WsError::Capacity(CapacityError::MessageTooLong { size, .. }) => {
            End::Close(close_code::TOO_BIG, format!("message of {size} bytes exceeds {max}"))
        }
        WsError::Capacity(c) => End::Close(close_code::TOO_BIG, c.to_string()),
        WsError::Utf8(_) => End::Close(close_code::INVALID_UTF8, "text frame is not valid UTF-8".into()),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => End::Gone,
        WsError::Protocol(p) => End::Close(close_code::PROTOCOL, p.to_string()),
        _ => End::Gone,
    }
}
