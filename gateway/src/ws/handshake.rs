//! The HTTP side of the WebSocket port: reads one request head, answers
//! health checks in plain HTTP, and performs the WebSocket upgrade itself
//! (so `/healthz` and WebSocket share a port without a web framework).

use std::io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Largest request head accepted (bytes).
const MAX_HEAD: usize = 8192;

/// What the request asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A valid WebSocket upgrade; the 101 response was written. `leftover`
    /// holds bytes the client sent after the head.
    Upgraded {
        /// Symbols from `?symbols=A,B`.
        symbols: Vec<String>,
        /// Bytes read past the request head.
        leftover: Vec<u8>,
    },
    /// A plain HTTP request that was answered; close the connection.
    Answered,
    /// The peer closed before sending a whole head.
    Closed,
}

/// Answers for the plain-HTTP paths.
pub trait Health {
    /// Whether `/readyz` should say ready, and a short explanation.
    fn ready(&self) -> (bool, String);
}

/// Reads the request head and answers it.
///
/// # Errors
/// I/O errors of the socket. Malformed requests are answered with a 4xx
/// status and [`Outcome::Answered`].
pub async fn accept(stream: &mut TcpStream, health: &(dyn Health + Sync)) -> io::Result<Outcome> {
    let mut buf = Vec::with_capacity(1024);
    let head_len = loop {
        if let Some(end) = find_head_end(&buf) {
            break end;
        }
        if buf.len() >= MAX_HEAD {
            respond(stream, "431 Request Header Fields Too Large", "request head too large\n").await?;
            return Ok(Outcome::Answered);
        }
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Outcome::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    if req.parse(&buf[..head_len]).is_err() || req.method != Some("GET") {
        respond(stream, "400 Bad Request", "expected a GET request\n").await?;
        return Ok(Outcome::Answered);
    }
    let target = req.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let upgrade = header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    match (path, upgrade) {
        ("/healthz", false) => respond(stream, "200 OK", "ok\n").await?,
        ("/readyz", false) => {
            let (ok, why) = health.ready();
            let status = if ok { "200 OK" } else { "503 Service Unavailable" };
            respond(stream, status, &format!("{why}\n")).await?;
        }
        ("/" | "/ws", true) => {
            let key = header("sec-websocket-key");
            let version_ok = header("sec-websocket-version") == Some("13");
            let connection_ok = header("connection")
                .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")));
            let Some(key) = key.filter(|_| version_ok && connection_ok) else {
                respond(stream, "400 Bad Request", "invalid WebSocket upgrade request\n").await?;
                return Ok(Outcome::Answered);
            };
            let accept = derive_accept_key(key.as_bytes());
            let symbols = query_symbols(query);
            let resp = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            stream.write_all(resp.as_bytes()).await?;
            return Ok(Outcome::Upgraded { symbols, leftover: buf[head_len..].to_vec() });
        }
        ("/" | "/ws", false) => {
            respond(stream, "426 Upgrade Required", "this is a WebSocket endpoint; see README.md\n").await?
        }
        _ => respond(stream, "404 Not Found", "try / (WebSocket), /healthz or /readyz\n").await?,
    }
    Ok(Outcome::Answered)
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

async fn respond(stream: &mut TcpStream, status: &str, body: &str) -> io::Result<()> {
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(resp.as_bytes()).await?;
    stream.shutdown().await
}

/// Symbols of `symbols=A,B` in a query string (`%2C` accepted for commas).
fn query_symbols(query: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("symbols="))
        .flat_map(|v| {
            v.replace("%2C", ",").replace("%2c", ",").split(',').map(str::to_string).collect::<Vec<_>>()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_from_query() {
        assert_eq!(query_symbols("symbols=AAPL,MSFT&x=1"), vec!["AAPL", "MSFT"]);
        assert_eq!(query_symbols("symbols=AAPL%2CBRK.B"), vec!["AAPL", "BRK.B"]);
        assert!(query_symbols("").is_empty());
    }

    #[test]
    fn head_end() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\nxx"), Some(18));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n"), None);
    }
}
