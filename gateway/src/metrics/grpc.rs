//! gRPC request metrics: a tower [`Layer`] for the tonic server, and the
//! small [`GrpcMetrics::start`] / [`GrpcCall::finish`] API underneath it.
//!
//! Attach with one line:
//! `tonic::transport::Server::builder().layer(core.metrics.grpc_layer())`.
//!
//! Series are keyed by service, method and status code. Methods come from
//! a fixed list (the quotecast descriptor set plus health and reflection),
//! and any other path is counted as `unknown`, so a client probing random
//! paths cannot create series. Every (method, code) pair has its counters
//! and histogram allocated up front: recording is lock-free.
//!
//! The status of a call is read where gRPC puts it: the `grpc-status`
//! header of a trailers-only response (errors), or the trailers at the end
//! of the body (successful unary calls and streams). A response body
//! dropped before its end (the client went away) counts as `CANCELLED`,
//! unless the call's `grpc-timeout` had (all but) elapsed: then it counts
//! as `DEADLINE_EXCEEDED`, whichever side noticed the deadline first.
//!
//! Why the "all but": gRPC clients (grpcio, grpc-go, grpc-java) enforce
//! their deadline themselves and reset the stream (RST_STREAM CANCEL, the
//! same frame as a user's cancel) when it passes. Their clock starts before
//! the request reaches the gateway, so their reset often arrives a little
//! before the gateway's own timer would have ended the call with
//! DEADLINE_EXCEEDED; counted as CANCELLED that race split one kind of end
//! into two codes (8 vs 17 of 25 streams). A reset within
//! [`deadline_slack`] of the deadline is therefore counted as the deadline.

use super::histogram::{write_header, write_histogram, write_sample, AtomicHistogram, GRPC_BUCKETS};
use super::names;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use prost::Message as _;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tower_layer::Layer;
use tower_service::Service;

/// gRPC status code names, indexed by code (Prometheus label values).
pub const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

const CANCELLED: usize = 1;
const UNKNOWN: usize = 2;
const DEADLINE_EXCEEDED: usize = 4;

/// How long before its deadline a call that the caller abandons still
/// counts as ended by the deadline: a quarter of the timeout, at most
/// 100 ms. It covers the time between the caller starting its deadline
/// clock and its request reaching the gateway (connection setup, queueing,
/// one-way latency); a cancel earlier than that is the caller's choice.
pub fn deadline_slack(timeout: Duration) -> Duration {
    (timeout / 4).min(Duration::from_millis(100))
}

/// Services served next to quotecast's own, whose methods are labelled by
/// name rather than as `unknown`.
const EXTRA_METHODS: [(&str, &str); 4] = [
    ("grpc.health.v1.Health", "Check"),
    ("grpc.health.v1.Health", "Watch"),
    ("grpc.reflection.v1.ServerReflection", "ServerReflectionInfo"),
    ("grpc.reflection.v1alpha.ServerReflection", "ServerReflectionInfo"),
];

#[derive(Debug)]
struct MethodStats {
    service: String,
    method: String,
    in_flight: AtomicI64,
    /// One histogram per status code (its count is the request counter).
    by_code: Vec<AtomicHistogram>,
}

impl MethodStats {
    fn new(service: &str, method: &str) -> Self {
        MethodStats {
            service: service.to_string(),
            method: method.to_string(),
            in_flight: AtomicI64::new(0),
            by_code: CODES.iter().map(|_| AtomicHistogram::new(&GRPC_BUCKETS)).collect(),
        }
    }
}

/// Request counts, in-flight gauges and latency histograms of the gRPC
/// server, by service, method and status code.
#[derive(Debug)]
pub struct GrpcMetrics {
    methods: Vec<MethodStats>,
    /// "/pkg.Service/Method" -> index in `methods`; the last entry of
    /// `methods` is the `unknown` catch-all.
    index: HashMap<String, usize>,
}

impl Default for GrpcMetrics {
    fn default() -> Self {
        GrpcMetrics::new()
    }
}

impl GrpcMetrics {
    /// Series for every method of the quotecast descriptor set, gRPC
    /// health and reflection, plus `unknown`.
    pub fn new() -> Self {
        let mut known: Vec<(String, String)> = descriptor_methods(quotecast_proto::FILE_DESCRIPTOR_SET);
        known.extend(EXTRA_METHODS.iter().map(|(s, m)| (s.to_string(), m.to_string())));
        Self::with_methods(&known)
    }

    /// Series for the given (fully qualified service, method) pairs.
    pub fn with_methods(known: &[(String, String)]) -> Self {
        let mut methods = Vec::with_capacity(known.len() + 1);
        let mut index = HashMap::with_capacity(known.len());
        for (service, method) in known {
            let path = format!("/{service}/{method}");
            if index.contains_key(&path) {
                continue;
            }
            index.insert(path, methods.len());
            methods.push(MethodStats::new(service, method));
        }
        methods.push(MethodStats::new("unknown", "unknown"));
        GrpcMetrics { methods, index }
    }

    fn lookup(&self, path: &str) -> usize {
        self.index.get(path).copied().unwrap_or(self.methods.len() - 1)
    }

    /// Starts timing a call to `path` (the HTTP/2 `:path`,
    /// "/quotecast.v1.QuoteService/GetSnapshot"); it is in flight until
    /// [`GrpcCall::finish`] or until the guard is dropped (`CANCELLED`).
    pub fn start(self: &Arc<Self>, path: &str) -> GrpcCall {
        self.start_with_timeout(path, None)
    }

    /// Like [`start`](Self::start) for a call with the caller's
    /// `grpc-timeout`: dropped unfinished at or after (within
    /// [`deadline_slack`] of) that deadline, it counts as
    /// `DEADLINE_EXCEEDED` instead of `CANCELLED`.
    pub fn start_with_timeout(self: &Arc<Self>, path: &str, timeout: Option<Duration>) -> GrpcCall {
        let method = self.lookup(path);
        self.methods[method].in_flight.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        // Where the reset counts as the deadline; an absurd timeout (past
        // what an Instant holds) is no deadline.
        let deadline = timeout.and_then(|t| started.checked_add(t - deadline_slack(t)));
        GrpcCall { metrics: self.clone(), method, started, deadline, done: false }
    }

    /// Requests finished so far for `service`/`method` with `code` (tests).
    pub fn requests(&self, service: &str, method: &str, code: &str) -> u64 {
        let Some(c) = CODES.iter().position(|n| *n == code) else { return 0 };
        self.methods
            .iter()
            .find(|m| m.service == service && m.method == method)
            .map_or(0, |m| m.by_code[c].count())
    }

    /// Calls of `service`/`method` in flight (tests).
    pub fn in_flight(&self, service: &str, method: &str) -> i64 {
        self.methods
            .iter()
            .find(|m| m.service == service && m.method == method)
            .map_or(0, |m| m.in_flight.load(Ordering::Relaxed))
    }

    /// Appends the request counter, the in-flight gauge and the latency
    /// histogram in the Prometheus text format. Every known method shows a
    /// request count with code `OK` (0 before its first call) so dashboards
    /// have series from the start; other codes, and latency histograms,
    /// appear once calls happen.
    pub fn write(&self, out: &mut String) {
        let shown = |m: &MethodStats, code: usize| code == 0 || m.by_code[code].count() > 0;
        write_header(
            out,
            names::GRPC_REQUESTS,
            "counter",
            "gRPC requests finished, by method and status code.",
        );
        for m in &self.methods {
            for (code, h) in m.by_code.iter().enumerate().filter(|(c, _)| shown(m, *c)) {
                let labels =
                    [("service", m.service.as_str()), ("method", m.method.as_str()), ("code", CODES[code])];
                write_sample(out, names::GRPC_REQUESTS, &labels, h.count() as f64);
            }
        }
        write_header(out, names::GRPC_IN_FLIGHT, "gauge", "gRPC requests (and streams) in progress.");
        for m in &self.methods {
            let labels = [("service", m.service.as_str()), ("method", m.method.as_str())];
            write_sample(out, names::GRPC_IN_FLIGHT, &labels, m.in_flight.load(Ordering::Relaxed) as f64);
        }
        write_header(
            out,
            names::GRPC_DURATION,
            "histogram",
            "gRPC request handling time (whole stream for streaming calls), seconds.",
        );
        for m in &self.methods {
            // Only pairs that happened: 22 lines of zeros per method would
            // triple the scrape for nothing a quantile can use.
            for (code, h) in m.by_code.iter().enumerate().filter(|(_, h)| h.count() > 0) {
                let labels =
                    [("service", m.service.as_str()), ("method", m.method.as_str()), ("code", CODES[code])];
                write_histogram(out, names::GRPC_DURATION, &labels, h);
            }
        }
    }
}

/// Every (service, method) of a serialized `FileDescriptorSet`.
fn descriptor_methods(bytes: &[u8]) -> Vec<(String, String)> {
    let Ok(set) = prost_types::FileDescriptorSet::decode(bytes) else { return Vec::new() };
    let mut out = Vec::new();
    for file in &set.file {
        let package = file.package();
        for service in &file.service {
            let full = if package.is_empty() {
                service.name().to_string()
            } else {
                format!("{package}.{}", service.name())
            };
            for m in &service.method {
                out.push((full.clone(), m.name().to_string()));
            }
        }
    }
    out
}

/// One call in progress. Finish it with its status code; dropping it
/// unfinished records `CANCELLED`, or `DEADLINE_EXCEEDED` once its
/// deadline (less the slack) has passed.
#[derive(Debug)]
pub struct GrpcCall {
    metrics: Arc<GrpcMetrics>,
    method: usize,
    started: Instant,
    /// From when an unfinished drop counts as the caller's deadline.
    deadline: Option<Instant>,
    done: bool,
}

impl GrpcCall {
    /// Records the call as finished with gRPC status `code` (0 = OK; codes
    /// outside 0..=16 count as `UNKNOWN`).
    pub fn finish(mut self, code: i32) {
        self.record(usize::try_from(code).ok().filter(|c| *c < CODES.len()).unwrap_or(UNKNOWN));
    }

    fn record(&mut self, code: usize) {
        if self.done {
            return;
        }
        self.done = true;
        let m = &self.metrics.methods[self.method];
        m.by_code[code].observe(self.started.elapsed().as_secs_f64());
        m.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for GrpcCall {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let code = match self.deadline {
            Some(d) if Instant::now() >= d => DEADLINE_EXCEEDED,
            _ => CANCELLED,
        };
        self.record(code);
    }
}

/// The `grpc-status` of a header map, if present and numeric.
fn grpc_status(h: &http::HeaderMap) -> Option<i32> {
    h.get("grpc-status")?.to_str().ok()?.trim().parse().ok()
}

/// Tower layer recording every call that passes through it.
#[derive(Debug, Clone)]
pub struct GrpcMetricsLayer {
    metrics: Arc<GrpcMetrics>,
}

impl GrpcMetricsLayer {
    /// A layer recording into `metrics`.
    pub fn new(metrics: Arc<GrpcMetrics>) -> Self {
        GrpcMetricsLayer { metrics }
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService { inner, metrics: self.metrics.clone() }
    }
}

/// The service [`GrpcMetricsLayer`] wraps around the gRPC router.
#[derive(Debug, Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    metrics: Arc<GrpcMetrics>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for GrpcMetricsService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
{
    type Response = http::Response<GrpcMetricsBody<ResBody>>;
    type Error = S::Error;
    // Boxed: one allocation per call (not per message), which gRPC itself
    // dwarfs; it keeps the crate free of unsafe pin projections.
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let timeout = crate::grpc::request::grpc_timeout(
            req.headers().get("grpc-timeout").and_then(|v| v.to_str().ok()),
        );
        let call = self.metrics.start_with_timeout(req.uri().path(), timeout);
        let fut = self.inner.call(req);
        Box::pin(async move {
            // An error here is a transport failure (tonic's router never
            // returns one): the guard records it as CANCELLED when dropped.
            let res = fut.await?;
            let call = match grpc_status(res.headers()) {
                Some(code) => {
                    // Trailers-only response: the status is already known.
                    call.finish(code);
                    None
                }
                None => Some(call),
            };
            Ok(res.map(|b| GrpcMetricsBody { inner: Box::pin(b), call }))
        })
    }
}

/// A response body that records its call's status from the trailers.
pub struct GrpcMetricsBody<B> {
    inner: Pin<Box<B>>,
    call: Option<GrpcCall>,
}

impl<B> std::fmt::Debug for GrpcMetricsBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcMetricsBody").field("pending", &self.call.is_some()).finish()
    }
}

impl<B: Body> Body for GrpcMetricsBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let r = this.inner.as_mut().poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(t) = frame.trailers_ref() {
                    if let Some(call) = this.call.take() {
                        call.finish(grpc_status(t).unwrap_or(UNKNOWN as i32));
                    }
                }
            }
            Poll::Ready(Some(Err(_))) | Poll::Ready(None) => {
                // Failed, or ended without any status: not a gRPC answer.
                if let Some(call) = this.call.take() {
                    call.finish(UNKNOWN as i32);
                }
            }
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty, Full, StreamBody};
    use std::convert::Infallible;

    fn metrics() -> Arc<GrpcMetrics> {
        Arc::new(GrpcMetrics::new())
    }

    /// A service answering with whatever `respond` builds.
    #[derive(Clone)]
    struct Fixed<F>(F);

    impl<F, B> Service<http::Request<()>> for Fixed<F>
    where
        F: Fn() -> http::Response<B> + Clone,
    {
        type Response = http::Response<B>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            std::future::ready(Ok((self.0)()))
        }
    }

    fn req(path: &str) -> http::Request<()> {
        http::Request::builder().uri(format!("http://x{path}")).body(()).unwrap()
    }

    fn trailers(code: &str) -> http::HeaderMap {
        let mut t = http::HeaderMap::new();
        t.insert("grpc-status", code.parse().unwrap());
        t
    }

    #[test]
    fn descriptor_set_names_the_quote_service() {
        let m = descriptor_methods(quotecast_proto::FILE_DESCRIPTOR_SET);
        assert!(m.iter().any(|(s, m)| s == "quotecast.v1.QuoteService" && m == "GetSnapshot"), "{m:?}");
    }

    #[tokio::test]
    async fn status_from_trailers_only_headers() {
        let m = metrics();
        let mut svc = GrpcMetricsLayer::new(m.clone()).layer(Fixed(|| {
            http::Response::builder().header("grpc-status", "5").body(Empty::<Bytes>::new()).unwrap()
        }));
        let res = svc.call(req("/quotecast.v1.QuoteService/GetSnapshot")).await.unwrap();
        assert_eq!(m.requests("quotecast.v1.QuoteService", "GetSnapshot", "NOT_FOUND"), 1);
        assert_eq!(m.in_flight("quotecast.v1.QuoteService", "GetSnapshot"), 0);
        drop(res);
        assert_eq!(
            m.requests("quotecast.v1.QuoteService", "GetSnapshot", "CANCELLED"),
            0,
            "already finished"
        );
    }

    #[tokio::test]
    async fn status_from_trailers_after_the_body() {
        let m = metrics();
        let mut svc = GrpcMetricsLayer::new(m.clone()).layer(Fixed(|| {
            let frames: Vec<Result<Frame<Bytes>, Infallible>> =
                vec![Ok(Frame::data(Bytes::from_static(b"abc"))), Ok(Frame::trailers(trailers("0")))];
            http::Response::new(StreamBody::new(futures_util::stream::iter(frames)))
        }));
        let res = svc.call(req("/quotecast.v1.QuoteService/ListSymbols")).await.unwrap();
        assert_eq!(m.in_flight("quotecast.v1.QuoteService", "ListSymbols"), 1, "open until the trailers");
        let collected = res.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().and_then(grpc_status), Some(0));
        assert_eq!(m.requests("quotecast.v1.QuoteService", "ListSymbols", "OK"), 1);
        assert_eq!(m.in_flight("quotecast.v1.QuoteService", "ListSymbols"), 0);
    }

    #[tokio::test]
    async fn dropped_stream_is_cancelled_and_unknown_paths_share_one_series() {
        let m = metrics();
        let mut svc = GrpcMetricsLayer::new(m.clone())
            .layer(Fixed(|| http::Response::new(Full::new(Bytes::from_static(b"partial")))));
        let res = svc.call(req("/quotecast.v1.QuoteService/StreamQuotes")).await.unwrap();
        drop(res);
        assert_eq!(m.requests("quotecast.v1.QuoteService", "StreamQuotes", "CANCELLED"), 1);
        for p in ["/evil/1", "/evil/2", "/x"] {
            let _ = svc.call(req(p)).await.unwrap().into_body().collect().await;
        }
        assert_eq!(m.requests("unknown", "unknown", "UNKNOWN"), 3, "no trailers: UNKNOWN");
        let mut out = String::new();
        m.write(&mut out);
        assert!(!out.contains("evil"));
        assert!(out.contains(
            "quotecast_grpc_requests_total{service=\"quotecast.v1.QuoteService\",method=\"StreamQuotes\",code=\"CANCELLED\"} 1\n"
        ));
        assert!(out.contains(
            "quotecast_grpc_requests_total{service=\"quotecast.v1.QuoteService\",method=\"GetSnapshot\",code=\"OK\"} 0\n"
        ));
        assert!(!out.contains("method=\"GetSnapshot\",code=\"NOT_FOUND\""), "codes never seen stay hidden");
        assert!(!out
            .contains("duration_seconds_count{service=\"quotecast.v1.QuoteService\",method=\"GetSnapshot\""));
        assert!(out.contains("duration_seconds_count{service=\"quotecast.v1.QuoteService\",method=\"StreamQuotes\",code=\"CANCELLED\"} 1\n"));
    }

    fn req_with_timeout(path: &str, timeout: &str) -> http::Request<()> {
        http::Request::builder()
            .uri(format!("http://x{path}"))
            .header("grpc-timeout", timeout)
            .body(())
            .unwrap()
    }

    #[tokio::test]
    async fn a_stream_reset_at_its_deadline_counts_as_deadline_exceeded() {
        let m = metrics();
        let path = "/quotecast.v1.QuoteService/StreamQuotes";
        let mut svc = GrpcMetricsLayer::new(m.clone())
            .layer(Fixed(|| http::Response::new(Full::new(Bytes::from_static(b"partial")))));
        let count = |code| m.requests("quotecast.v1.QuoteService", "StreamQuotes", code);
        // The caller's clock ran out (a 0 ms timeout has passed at once):
        // its reset is the deadline, not a cancel.
        for _ in 0..3 {
            drop(svc.call(req_with_timeout(path, "0m")).await.unwrap());
        }
        assert_eq!((count("DEADLINE_EXCEEDED"), count("CANCELLED")), (3, 0));
        // Reset long before its deadline, or without one: a cancel.
        drop(svc.call(req_with_timeout(path, "10S")).await.unwrap());
        drop(svc.call(req(path)).await.unwrap());
        drop(svc.call(req_with_timeout(path, "bogus")).await.unwrap());
        assert_eq!((count("DEADLINE_EXCEEDED"), count("CANCELLED")), (3, 3));
        assert_eq!(m.in_flight("quotecast.v1.QuoteService", "StreamQuotes"), 0);
    }

    #[test]
    fn deadline_counts_from_the_slack_before_it() {
        assert_eq!(deadline_slack(Duration::from_millis(200)), Duration::from_millis(50));
        assert_eq!(deadline_slack(Duration::from_secs(30)), Duration::from_millis(100));
        assert_eq!(deadline_slack(Duration::ZERO), Duration::ZERO);
        let m = metrics();
        let path = "/quotecast.v1.QuoteService/StreamQuotes";
        drop(m.start_with_timeout(path, Some(Duration::from_millis(40))));
        let late = m.start_with_timeout(path, Some(Duration::from_millis(40)));
        std::thread::sleep(Duration::from_millis(31)); // past 40 ms less 10 ms of slack
        drop(late);
        // A call that finished keeps its own code, deadline or not.
        m.start_with_timeout(path, Some(Duration::ZERO)).finish(0);
        // An absurd timeout is no deadline at all.
        drop(m.start_with_timeout(path, Some(Duration::MAX)));
        let count = |code| m.requests("quotecast.v1.QuoteService", "StreamQuotes", code);
        assert_eq!((count("CANCELLED"), count("DEADLINE_EXCEEDED"), count("OK")), (2, 1, 1));
    }

    #[test]
    fn api_without_the_layer() {
        let m = metrics();
        let call = m.start("/grpc.health.v1.Health/Check");
        assert_eq!(m.in_flight("grpc.health.v1.Health", "Check"), 1);
        call.finish(14);
        m.start("/grpc.health.v1.Health/Check").finish(99);
        assert_eq!(m.requests("grpc.health.v1.Health", "Check", "UNAVAILABLE"), 1);
        assert_eq!(m.requests("grpc.health.v1.Health", "Check", "UNKNOWN"), 1);
        assert_eq!(m.in_flight("grpc.health.v1.Health", "Check"), 0);
    }
}
