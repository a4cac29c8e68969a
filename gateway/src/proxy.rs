//! The client's real address behind a trusted balancer: connections from
//! `--trusted-proxies` must start with a PROXY protocol header (v1 text or
//! v2 binary, as HAProxy's `send-proxy` / `send-proxy-v2` write it), and
//! the address it names is the one every per-address limit counts.
//! Without it, behind a balancer every client shares the balancer's
//! address and one noisy client would use up everyone's limits.

use ppp::{HeaderResult, PartialResult};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Longest PROXY header read (v1 is at most 107 bytes; v2 with the usual
/// TLVs well under this).
const MAX_HEADER: usize = 536;

/// The balancers whose PROXY headers are believed.
#[derive(Debug, Clone, Default)]
pub struct Trusted(Vec<ipnet::IpNet>);

impl Trusted {
    /// From `--trusted-proxies` values: CIDRs or single addresses.
    ///
    /// # Errors
    /// The first value that is neither.
    pub fn parse(values: &[String]) -> Result<Self, String> {
        let mut nets = Vec::new();
        for v in values.iter().map(|v| v.trim()).filter(|v| !v.is_empty()) {
            let net =
                v.parse::<ipnet::IpNet>().or_else(|_| v.parse::<IpAddr>().map(ipnet::IpNet::from)).map_err(
                    |_| format!("--trusted-proxies {v:?}: expected an address or a CIDR such as 10.0.0.0/8"),
                )?;
            nets.push(net);
        }
        Ok(Trusted(nets))
    }

    /// Whether connections from `ip` carry a PROXY header.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// Whether any balancer is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A connection from a trusted balancer without a usable PROXY header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// Not a PROXY header, or a malformed one.
    #[error("a connection from a trusted proxy must start with a PROXY protocol header: {0}")]
    Invalid(String),
    /// It did not arrive within the handshake timeout.
    #[error("no PROXY protocol header in time")]
    Timeout,
    /// The balancer closed first.
    #[error("closed before the PROXY protocol header")]
    Closed,
}

/// Reads the PROXY header at the start of `tcp` (and nothing after it)
/// and returns the client address it names; `peer` (the balancer) for a
/// header that names none (`UNKNOWN`, v2 `LOCAL`: the balancer's own
/// health checks).
///
/// # Errors
/// [`ProxyError`].
pub async fn read_header(
    tcp: &mut TcpStream,
    peer: SocketAddr,
    deadline: Instant,
) -> Result<SocketAddr, ProxyError> {
    let mut buf = [0u8; MAX_HEADER];
    loop {
        // Peeked, so the bytes after the header stay for TLS or HTTP.
        let n = match tokio::time::timeout_at(deadline, tcp.peek(&mut buf)).await {
            Err(_) => return Err(ProxyError::Timeout),
            Ok(Err(e)) => return Err(ProxyError::Invalid(e.to_string())),
            Ok(Ok(0)) => return Err(ProxyError::Closed),
            Ok(Ok(n)) => n,
        };
        let parsed = HeaderResult::parse(&buf[..n]);
        if parsed.is_incomplete() && n < MAX_HEADER {
            // The rest of the header is still on its way: look again
            // shortly (peek returns at once while the bytes are unread).
            if Instant::now() >= deadline {
                return Err(ProxyError::Timeout);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        let (len, addr) = match parsed {
            HeaderResult::V1(Ok(h)) => (h.header.len(), v1_source(&h.addresses)),
            HeaderResult::V2(Ok(h)) => (h.len(), v2_source(&h)),
            HeaderResult::V1(Err(e)) => return Err(ProxyError::Invalid(format!("{e:?}"))),
            HeaderResult::V2(Err(e)) => return Err(ProxyError::Invalid(format!("{e:?}"))),
        };
        let mut header = vec![0u8; len];
        tokio::io::AsyncReadExt::read_exact(tcp, &mut header)
            .await
            .map_err(|e| ProxyError::Invalid(e.to_string()))?;
        return Ok(addr.unwrap_or(peer));
    }
}

fn v1_source(a: &ppp::v1::Addresses) -> Option<SocketAddr> {
    match a {
        ppp::v1::Addresses::Tcp4(x) => Some(SocketAddr::new(x.source_address.into(), x.source_port)),
        ppp::v1::Addresses::Tcp6(x) => Some(SocketAddr::new(x.source_address.into(), x.source_port)),
        ppp::v1::Addresses::Unknown => None,
    }
}

fn v2_source(h: &ppp::v2::Header<'_>) -> Option<SocketAddr> {
    if h.command == ppp::v2::Command::Local {
        return None;
    }
    match h.addresses {
        ppp::v2::Addresses::IPv4(x) => Some(SocketAddr::new(x.source_address.into(), x.source_port)),
        ppp::v2::Addresses::IPv6(x) => Some(SocketAddr::new(x.source_address.into(), x.source_port)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_by_cidr_or_address() {
        let t = Trusted::parse(&["10.0.0.0/8".into(), "127.0.0.1".into()]).unwrap();
        assert!(t.contains("10.1.2.3".parse().unwrap()) && t.contains("127.0.0.1".parse().unwrap()));
        assert!(!t.contains("127.0.0.2".parse().unwrap()));
        assert!(Trusted::parse(&["10.0.0.0/33".into()]).unwrap_err().contains("--trusted-proxies"));
    }

    #[tokio::test]
    async fn the_header_is_read_and_nothing_after_it() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (mut s, peer) = l.accept().await.unwrap();
        c.write_all(b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 8080\r\nGET /").await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let addr = read_header(&mut s, peer, deadline).await.unwrap();
        assert_eq!(addr, "203.0.113.9:5555".parse().unwrap());
        let mut rest = [0u8; 5];
        s.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"GET /");
        // Not a header at all.
        let mut c2 = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (mut s2, peer2) = l.accept().await.unwrap();
        c2.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(matches!(read_header(&mut s2, peer2, deadline).await, Err(ProxyError::Invalid(_))));
    }
}
