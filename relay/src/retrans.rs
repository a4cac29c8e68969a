//! Retransmission over NATS: a request on `<prefix>.retrans` (payload: the
//! 20-byte MoldUDP64 re-request, reply subject: where the answers go) is
//! sent over UDP to the feed's retransmission server, and every answer
//! datagram is published, unchanged, to the reply subject.
//!
//! Each request gets its own UDP socket, so answers to concurrent requests
//! never mix and need no matching here: the gateway matches them to its
//! requests by sequence, as it does on UDP. A request ends when an answer
//! covers its whole range, when a heartbeat answers it ("gone" / "not
//! yet", FEED_FORMAT.md), when no datagram came for `--retrans-wait-ms`
//! (the server sends an answer as one burst, up to 2,000 datagrams, so
//! the wait restarts with each one), and after `--retrans-max-answer-ms`
//! at the latest, so a request holds its slot for a bounded time; at most
//! `--retrans-max-in-flight` run at once, and one more is refused
//! (counted as `busy`) rather than queued: the gateway's own timeout asks
//! again. A request that is not a valid re-request or has no reply subject
//! is counted as `malformed` and dropped.
//!
//! Note: the server limits requests per requester (ip:port); with a socket
//! per request that limit no longer sees one gateway as one requester, so
//! the gateways' `--retrans-max-requests-per-sec` and this relay's
//! `--retrans-max-in-flight` are what bound the load on the server.

use crate::metrics::Metrics;
use async_nats::{Client, Message, Subject, Subscriber};
use bytes::Bytes;
use futures_util::StreamExt;
use quotecast_proto::feed::{RetransRequest, HEADER_LEN};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Indexes into [`Metrics::retrans`] (see [`crate::metrics::RETRANS_RESULTS`]).
const ANSWERED: usize = 0;
const UNANSWERED: usize = 1;
const BUSY: usize = 2;
const MALFORMED: usize = 3;
const FAILED: usize = 4;

/// The proxy's settings.
#[derive(Debug, Clone)]
pub struct Proxy {
    /// The retransmission server.
    pub server: SocketAddr,
    /// Local address requests leave from (loopback for a loopback server,
    /// else the feed interface).
    pub local: IpAddr,
    /// Longest wait for the first answer datagram and between two.
    pub wait: Duration,
    /// Longest time one request is served.
    pub max_answer: Duration,
    /// Requests in flight at once.
    pub max_in_flight: usize,
    /// Receive buffer of each request's socket.
    pub recv_buffer: usize,
}

impl Proxy {
    /// The proxy for `server`, requests leaving by `interface`.
    pub fn new(
        server: SocketAddr,
        interface: Ipv4Addr,
        wait: Duration,
        max_answer: Duration,
        max_in_flight: usize,
        recv_buffer: usize,
    ) -> Proxy {
        let local = match server {
            SocketAddr::V4(a) if a.ip().is_loopback() => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V4(_) => interface.into(),
            SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        };
        Proxy { server, local, wait, max_answer, max_in_flight, recv_buffer }
    }

    /// Serves the requests of `sub` until `stop`.
    pub async fn serve(self, mut sub: Subscriber, client: Client, m: Metrics, stop: CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.max_in_flight));
        let tasks = tokio_util::task::TaskTracker::new();
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => break,
                msg = sub.next() => match msg {
                    Some(msg) => msg,
                    None => break,
                },
            };
            let Some((reply, req)) = parse(&msg) else {
                m.retrans[MALFORMED].increment(1);
                continue;
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                m.retrans[BUSY].increment(1);
                continue;
            };
            let (p, client, m) = (self.clone(), client.clone(), m.clone());
            tasks.spawn(async move {
                let result = p.one(&client, reply, req, msg.payload, &m).await;
                m.retrans[result].increment(1);
                drop(permit);
            });
        }
        tasks.close();
        tasks.wait().await;
    }

    /// Proxies one request; returns its result index.
    async fn one(
        &self,
        client: &Client,
        reply: Subject,
        req: RetransRequest,
        payload: Bytes,
        m: &Metrics,
    ) -> usize {
        let Ok(sock) = self.socket() else { return FAILED };
        if sock.connect(self.server).await.is_err() || sock.send(&payload).await.is_err() {
            return FAILED;
        }
        let want_end = req.seq.saturating_add(u64::from(req.count));
        let end = tokio::time::Instant::now() + self.max_answer;
        let mut buf = vec![0u8; 65_536];
        let mut answered = false;
        loop {
            let deadline = (tokio::time::Instant::now() + self.wait).min(end);
            let n = match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Ok(Ok(n)) => n,
                // ICMP "port unreachable" (no server), or the wait is over.
                Ok(Err(_)) | Err(_) => break,
            };
            answered = true;
            let datagram = Bytes::copy_from_slice(&buf[..n]);
            match client.publish(reply.clone(), datagram).await {
                Ok(()) => m.retrans_answers.increment(1),
                Err(_) => return FAILED,
            }
            if covers(&buf[..n], want_end) {
                break;
            }
        }
        if answered {
            ANSWERED
        } else {
            UNANSWERED
        }
    }
}

impl Proxy {
    /// A request's socket. The server sends an answer as one burst (up to
    /// 2,000 datagrams) while this side publishes each before reading the
    /// next, so the socket needs room for the whole burst: a default
    /// receive buffer (~200 KiB) drops most of a long answer.
    fn socket(&self) -> std::io::Result<UdpSocket> {
        use socket2::{Domain, Protocol, Socket, Type};
        let domain = if self.local.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
        let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        let _ = s.set_recv_buffer_size(self.recv_buffer);
        s.bind(&SocketAddr::new(self.local, 0).into())?;
        s.set_nonblocking(true)?;
        UdpSocket::from_std(s.into())
    }
}

/// The reply subject and the request, if `msg` is a valid re-request.
fn parse(msg: &Message) -> Option<(Subject, RetransRequest)> {
    let reply = msg.reply.clone()?;
    let req = RetransRequest::decode(&msg.payload).ok()?;
    Some((reply, req))
}

/// True when this answer datagram ends the request: a heartbeat (count 0,
/// "gone" or "not yet") or data reaching the end of the wanted range.
fn covers(datagram: &[u8], want_end: u64) -> bool {
    if datagram.len() < HEADER_LEN {
        return false;
    }
    let seq = u64::from_be_bytes(datagram[10..18].try_into().unwrap_or_default());
    let count = u16::from_be_bytes(datagram[18..20].try_into().unwrap_or_default());
    count == 0 || (count != 0xFFFF && seq.saturating_add(u64::from(count)) >= want_end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quotecast_proto::feed::{header, SessionId};

    #[test]
    fn an_answer_ends_a_request_when_it_reaches_the_range_end_or_is_a_heartbeat() {
        let s = SessionId::from_text("S1");
        assert!(covers(&header(s, 100, 0), 110), "heartbeat: gone / not yet");
        assert!(!covers(&header(s, 100, 5), 110), "first part of the range");
        assert!(covers(&header(s, 105, 5), 110), "reaches the end");
        assert!(covers(&header(s, 105, 9), 110));
        assert!(!covers(&header(s, 105, 0xFFFF), 110), "end of session is no answer");
        assert!(!covers(&[0u8; 7], 110), "too short to be an answer");
    }
}
