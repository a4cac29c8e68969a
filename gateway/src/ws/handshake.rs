//! The HTTP side of the WebSocket port: reads one request head, answers
//! health checks in plain HTTP, and performs the WebSocket upgrade itself
//! (so `/healthz` and WebSocket share a port without a web framework).

use crate::auth::Principal;
use crate::conn::Conn;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Largest request head accepted (bytes).
const MAX_HEAD: usize = 8192;

/// Most header lines accepted; more get 431 (browsers send ~15).
pub const MAX_HEADERS: usize = 64;

/// What the request asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A valid WebSocket upgrade; the 101 response was written. `leftover`
    /// holds bytes the client sent after the head.
    Upgraded {
        /// Symbols from `?symbols=A,B`.
        symbols: Vec<String>,
        /// Who the upgrade's credential proved the client to be; `None`
        /// when it brought none (with authentication on, the session then
        /// waits for an `auth` request).
        principal: Option<Arc<Principal>>,
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
    /// This node's name (`--node-name`), sent as `X-Quotecast-Node` with
    /// every answer, so a client behind a balancer knows which node serves
    /// it.
    fn node(&self) -> &str;
    /// Whether an upgrade from `peer` with this `Origin` and credential
    /// (bearer header, else `?token=`) may proceed, and who it is.
    ///
    /// # Errors
    /// The HTTP answer that refuses it (403 origin, 401 credential, 429
    /// too many failures).
    fn admit(
        &self,
        peer: IpAddr,
        origin: Option<&str>,
        token: Option<&str>,
    ) -> Result<Option<Arc<Principal>>, Denied>;
}

/// An upgrade refused before it happens, as an HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// Status line, e.g. "401 Unauthorized".
    pub status: &'static str,
    /// Extra headers (`WWW-Authenticate`, `Retry-After`).
    pub headers: Vec<(&'static str, String)>,
    /// Plain-text body saying why.
    pub body: String,
}

/// The response header naming the node.
pub const NODE_HEADER: &str = "X-Quotecast-Node";

/// Reads the request head and answers it.
///
/// # Errors
/// I/O errors of the socket. Malformed requests are answered with a 4xx
/// status and [`Outcome::Answered`].
pub async fn accept(stream: &mut Conn, health: &(dyn Health + Sync), peer: IpAddr) -> io::Result<Outcome> {
    let mut buf = Vec::with_capacity(1024);
    let head_len = loop {
        if let Some(end) = find_head_end(&buf) {
            break end;
        }
        if buf.len() >= MAX_HEAD {
            let body = format!("request head over {MAX_HEAD} bytes\n");
            respond(stream, "431 Request Header Fields Too Large", &[], &body, false).await?;
            return Ok(Outcome::Answered);
        }
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Outcome::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&buf[..head_len]) {
        Ok(_) => {}
        Err(httparse::Error::TooManyHeaders) => {
            let body = format!("more than {MAX_HEADERS} header lines\n");
            respond(stream, "431 Request Header Fields Too Large", &[], &body, false).await?;
            return Ok(Outcome::Answered);
        }
        Err(e) => {
            respond(stream, "400 Bad Request", &[], &format!("malformed HTTP request: {e}\n"), false).await?;
            return Ok(Outcome::Answered);
        }
    }
    let head = match req.method {
        Some("GET") => false,
        Some("HEAD") => true,
        _ => {
            let allow = [("Allow", "GET, HEAD")];
            respond(stream, "405 Method Not Allowed", &allow, "only GET and HEAD are served\n", false)
                .await?;
            return Ok(Outcome::Answered);
        }
    };
    let target = req.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let upgrade = header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let node = [(NODE_HEADER, health.node())];
    match (path, upgrade) {
        ("/healthz", _) => respond(stream, "200 OK", &node, "ok\n", head).await?,
        ("/readyz", _) => {
            let (ok, why) = health.ready();
            let status = if ok { "200 OK" } else { "503 Service Unavailable" };
            respond(stream, status, &node, &format!("{why}\n"), head).await?;
        }
        ("/" | "/ws", true) => match check_upgrade(head, req.version, &header) {
            Err(refusal) => {
                respond(stream, "400 Bad Request", refusal.headers, refusal.body, head).await?;
            }
            Ok(key) => {
                let token = header("authorization")
                    .and_then(crate::auth::bearer)
                    .map(str::to_string)
                    .or_else(|| query_token(query));
                let principal = match health.admit(peer, header("origin"), token.as_deref()) {
                    Ok(p) => p,
                    Err(d) => {
                        let extra: Vec<(&str, &str)> =
                            d.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                        respond(stream, d.status, &extra, &d.body, head).await?;
                        return Ok(Outcome::Answered);
                    }
                };
                let accept = derive_accept_key(key.as_bytes());
                let symbols = query_symbols(query);
                let resp = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{NODE_HEADER}: {}\r\n\r\n",
                    health.node()
                );
                stream.write_all(resp.as_bytes()).await?;
                return Ok(Outcome::Upgraded { symbols, principal, leftover: buf[head_len..].to_vec() });
            }
        },
        ("/" | "/ws", false) => {
            let upgrade = [("Upgrade", "websocket")];
            respond(
                stream,
                "426 Upgrade Required",
                &upgrade,
                "this is a WebSocket endpoint; see README.md\n",
                head,
            )
            .await?
        }
        _ => respond(stream, "404 Not Found", &[], "try / (WebSocket), /healthz or /readyz\n", head).await?,
    }
    Ok(Outcome::Answered)
}

/// Why an upgrade request is refused with 400.
#[derive(Debug, PartialEq, Eq)]
struct Refusal {
    body: &'static str,
    headers: &'static [(&'static str, &'static str)],
}

/// Checks an upgrade request (RFC 6455 §4.2.1) and returns its key.
fn check_upgrade<'h>(
    head: bool,
    version: Option<u8>,
    header: &dyn Fn(&str) -> Option<&'h str>,
) -> Result<&'h str, Refusal> {
    let refuse = |body| Refusal { body, headers: &[] };
    if head || version != Some(1) {
        return Err(refuse("a WebSocket upgrade needs an HTTP/1.1 GET request\n"));
    }
    let connection_ok =
        header("connection").is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")));
    if !connection_ok {
        return Err(refuse("a WebSocket upgrade needs \"Connection: Upgrade\"\n"));
    }
    if header("sec-websocket-version").map(str::trim) != Some("13") {
        // §4.2.2: say which version the server speaks.
        return Err(Refusal {
            body: "unsupported Sec-WebSocket-Version; this server speaks 13\n",
            headers: &[("Sec-WebSocket-Version", "13")],
        });
    }
    match header("sec-websocket-key").map(str::trim) {
        Some(k) if data_encoding::BASE64.decode(k.as_bytes()).is_ok_and(|raw| raw.len() == 16) => Ok(k),
        _ => Err(refuse("Sec-WebSocket-Key must be 16 bytes in base64\n")),
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Writes a whole plain-text response (headers only for HEAD) and ends
/// the write side.
async fn respond(
    stream: &mut Conn,
    status: &str,
    extra: &[(&str, &str)],
    body: &str,
    head: bool,
) -> io::Result<()> {
    stream.write_all(plain_answer(status, extra, body, head).as_bytes()).await?;
    stream.shutdown().await
}

/// A whole plain-text HTTP answer that closes the connection (headers only
/// for HEAD): every answer the WebSocket port gives in plain HTTP.
pub fn plain_answer(status: &str, extra: &[(&str, &str)], body: &str, head: bool) -> String {
    let mut resp =
        format!("HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in extra {
        resp.push_str(&format!("{k}: {v}\r\n"));
    }
    resp.push_str("Connection: close\r\n\r\n");
    if !head {
        resp.push_str(body);
    }
    resp
}

/// `token=` of a query string, percent-decoded (browsers cannot set
/// headers on a WebSocket).
fn query_token(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "token").map(|(_, v)| v.into_owned())
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
    fn upgrade_checks() {
        let ok = |name: &str| match name {
            "connection" => Some("keep-alive, Upgrade"),
            "sec-websocket-version" => Some("13"),
            "sec-websocket-key" => Some("dGhlIHNhbXBsZSBub25jZQ=="),
            _ => None,
        };
        assert_eq!(check_upgrade(false, Some(1), &ok), Ok("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(check_upgrade(false, Some(0), &ok).is_err(), "HTTP/1.0");
        assert!(check_upgrade(true, Some(1), &ok).is_err(), "HEAD");
        let v8 = |name: &str| if name == "sec-websocket-version" { Some("8") } else { ok(name) };
        let r = check_upgrade(false, Some(1), &v8).unwrap_err();
        assert_eq!(r.headers, &[("Sec-WebSocket-Version", "13")]);
        for key in
            ["", "abc", "dGhlIHNhbXBsZSBub25jZQ", "dGhlIHNhbXBsZSBub25jZXg=", "!!!!!!!!!!!!!!!!!!!!!!=="]
        {
            let k = |name: &str| if name == "sec-websocket-key" { Some(key) } else { ok(name) };
            assert!(check_upgrade(false, Some(1), &k).is_err(), "{key:?}");
        }
    }

    #[test]
    fn credentials_from_header_and_query() {
        use crate::auth::bearer;
        assert_eq!(bearer("Bearer abc.def.ghi"), Some("abc.def.ghi"));
        assert_eq!(bearer("bearer  k1 "), Some("k1"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(query_token("symbols=A&token=a%2Bb"), Some("a+b".into()));
        assert_eq!(query_token("symbols=A"), None);
    }

    #[test]
    fn head_end() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\nxx"), Some(18));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n"), None);
    }
}
