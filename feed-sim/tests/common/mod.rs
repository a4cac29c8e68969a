//! Shared helpers for the end-to-end tests: a real multicast receiver on
//! loopback and a decoder that turns a capture into checkable facts.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use feed_sim::SimConfig;
use quotecast_proto::feed::{Message, Packet, PacketKind, SessionId};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// A group and port no other test in this run uses: a random
/// 239.255.x.y (x, y in 1..=254) and a port the kernel just handed out.
pub fn unique_group_port() -> (Ipv4Addr, u16) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let salt =
        std::process::id().wrapping_mul(2_654_435_761) ^ n.wrapping_mul(40_503) ^ rand::random::<u32>();
    let group = Ipv4Addr::new(239, 255, 1 + (salt % 254) as u8, 1 + ((salt >> 8) % 254) as u8);
    let port = UdpSocket::bind("0.0.0.0:0").unwrap().local_addr().unwrap().port();
    (group, port)
}

/// A config sending to a fresh group/port on loopback, recording.
pub fn test_config(session: &str) -> SimConfig {
    let (group, port) = unique_group_port();
    SimConfig { group, port, session: Some(session.into()), record: true, ..SimConfig::default() }
}

/// Joins `group` on loopback the way the gateway does: bound to the group
/// port on 0.0.0.0, SO_REUSEADDR, IP_MULTICAST_ALL off so other tests'
/// groups on the same port never leak in.
pub fn join(group: Ipv4Addr, port: u16) -> UdpSocket {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    s.set_reuse_address(true).unwrap();
    s.set_recv_buffer_size(4 << 20).unwrap();
    s.bind(&SockAddr::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))).unwrap();
    s.join_multicast_v4(&group, &Ipv4Addr::LOCALHOST).unwrap();
    s.set_multicast_all_v4(false).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    s.into()
}

/// Starts receiving on `cfg`'s group in a thread, before the sender runs,
/// until three end-of-session packets arrived or `limit` passed.
pub fn receive(cfg: &SimConfig, limit: Duration) -> JoinHandle<Vec<Vec<u8>>> {
    receive_on(cfg.group, cfg.port, limit)
}

/// Like [`receive`], on any group and port (line B, say).
pub fn receive_on(group: Ipv4Addr, port: u16, limit: Duration) -> JoinHandle<Vec<Vec<u8>>> {
    let sock = join(group, port);
    std::thread::spawn(move || {
        let deadline = Instant::now() + limit;
        let mut out = Vec::new();
        let mut ends = 0;
        let mut buf = vec![0u8; 65_536];
        while ends < 3 && Instant::now() < deadline {
            match sock.recv(&mut buf) {
                Ok(n) => {
                    let d = buf[..n].to_vec();
                    if Packet::decode(&d).is_ok_and(|p| p.kind == PacketKind::EndOfSession) {
                        ends += 1;
                    }
                    out.push(d);
                }
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => panic!("recv: {e}"),
            }
        }
        out
    })
}

/// One received datagram, decoded.
#[derive(Debug, Clone)]
pub struct Got {
    pub session: SessionId,
    pub seq: u64,
    pub kind: PacketKind,
    pub len: usize,
    pub msgs: Vec<(u64, Message)>,
}

impl Got {
    /// Messages in the datagram (0 for heartbeat and end of session).
    pub fn count(&self) -> u16 {
        match self.kind {
            PacketKind::Data(n) => n,
            _ => 0,
        }
    }
}

/// Decodes every datagram; any undecodable one fails the test.
pub fn decode_all(raw: &[Vec<u8>]) -> Vec<Got> {
    raw.iter()
        .map(|d| {
            let p = Packet::decode(d).unwrap_or_else(|e| panic!("undecodable datagram: {e}"));
            Got { session: p.session, seq: p.seq, kind: p.kind, len: d.len(), msgs: p.messages().collect() }
        })
        .collect()
}

/// Data packets only, in arrival order.
pub fn data(got: &[Got]) -> Vec<&Got> {
    got.iter().filter(|g| matches!(g.kind, PacketKind::Data(_))).collect()
}

/// Per-locate state a consumer would build from `msgs`: bid/ask from
/// quotes, last from trades, and the number of updates applied.
pub type Book = BTreeMap<u16, (i64, u32, i64, u32, i64, u32, u64)>;

/// Applies quotes and trades to a [`Book`]; other messages are ignored
/// (keyed by locate, so a dropped directory packet does not matter).
pub fn book(msgs: impl IntoIterator<Item = Message>) -> Book {
    let mut out = Book::new();
    for m in msgs {
        match m {
            Message::Quote { locate, bid_px, bid_sz, ask_px, ask_sz, .. } => {
                let e = out.entry(locate).or_default();
                (e.0, e.1, e.2, e.3) = (bid_px, bid_sz, ask_px, ask_sz);
                e.6 += 1;
            }
            Message::Trade { locate, px, sz, .. } => {
                let e = out.entry(locate).or_default();
                (e.4, e.5) = (px, sz);
                e.6 += 1;
            }
            _ => {}
        }
    }
    out
}
