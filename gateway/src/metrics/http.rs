//! The `/metrics` endpoint: a minimal HTTP/1.1 server (hyper) on its own
//! listener, stopped by the gateway's shutdown token.

use crate::core::Core;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Scrapers connected at once; more wait in the listen backlog. Prometheus
/// keeps one connection per target, so this only bounds misbehaving peers.
const MAX_CONNECTIONS: usize = 16;
/// A peer must send its request headers within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The Prometheus text format version the exposition follows.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `/metrics` on `listener` until `core.shutdown` is cancelled; open
/// scrape connections are dropped then.
///
/// # Errors
/// None so far: failed accepts are logged and retried (they are transient,
/// e.g. out of file descriptors). The `Result` leaves room for setup
/// failures.
pub async fn serve(listener: TcpListener, core: Arc<Core>) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = JoinSet::new();
    tracing::debug!(addr = ?listener.local_addr().ok(), "metrics endpoint serving");
    loop {
        let permit = tokio::select! {
            _ = core.shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = core.shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Reap finished connections so the set does not grow.
        while conns.try_join_next().is_some() {}
        let core = core.clone();
        conns.spawn(async move {
            let _permit = permit;
            let shutdown = core.shutdown.clone();
            let svc = service_fn(move |req| {
                let core = core.clone();
                async move { Ok::<_, Infallible>(respond(&req, &core)) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                r = conn => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "metrics connection ended");
                    }
                }
                _ = shutdown.cancelled() => {}
            }
        });
    }
    conns.shutdown().await;
    tracing::debug!("metrics endpoint stopped");
    Ok(())
}

fn respond(req: &Request<Incoming>, core: &Core) -> Response<Full<Bytes>> {
    let plain = |status: StatusCode, body: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *r.status_mut() = status;
        r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain"));
        r
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => {
            let body = core.metrics.render(core);
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(CONTENT_TYPE));
            r
        }
        (&Method::GET | &Method::HEAD, "/") => {
            plain(StatusCode::OK, "quotecast gateway metrics: GET /metrics\n")
        }
        // The health answers of the WebSocket port, in plain HTTP here too:
        // a probe that cannot speak TLS (a container's bash health check)
        // still has a port to ask when the client ports are TLS-only.
        (&Method::GET | &Method::HEAD, "/healthz") => plain(StatusCode::OK, "ok\n"),
        (&Method::GET | &Method::HEAD, "/readyz") => {
            let (ok, why) = core.readiness();
            let mut r = Response::new(Full::new(Bytes::from(format!("{why}\n"))));
            *r.status_mut() = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain"));
            r
        }
        (_, "/metrics" | "/") => plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n"),
        _ => plain(StatusCode::NOT_FOUND, "not found; metrics are at /metrics\n"),
    }
}
