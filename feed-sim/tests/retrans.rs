//! End-to-end: the retransmission server answers real unicast requests
//! while the simulator sends over loopback multicast.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::{join, test_config};
use feed_sim::SimConfig;
use quotecast_proto::feed::{Message, Packet, PacketKind, RetransRequest, SessionId};
use tokio_util::sync::CancellationToken;

/// A requester socket on loopback with a short read timeout.
fn requester() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    s
}

fn request(s: &UdpSocket, to: SocketAddr, session: SessionId, seq: u64, count: u16) {
    s.send_to(&RetransRequest { session, seq, count }.encode(), to).unwrap();
}

/// Every datagram that arrives on `s` until it is quiet for the timeout.
fn answers(s: &UdpSocket) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while let Ok(n) = s.recv(&mut buf) {
        out.push(buf[..n].to_vec());
    }
    out
}

fn messages(packets: &[Vec<u8>]) -> Vec<(u64, Message)> {
    packets.iter().flat_map(|p| Packet::decode(p).unwrap().messages().collect::<Vec<_>>()).collect()
}

/// What the requesting side saw, checked against the report afterwards.
struct Seen {
    gone: (u64, PacketKind),
    gap: (u64, u64),
    gap_fill: Vec<(u64, Message)>,
    capped: Vec<(u64, Message)>,
    not_yet: (u64, PacketKind),
    rate_limited_answers: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retransmission_fills_gaps_reports_gone_ranges_and_limits_rates() {
    let addr: SocketAddr = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let cfg = SimConfig {
        symbols: 20,
        rate: 2_000,
        duration: Some(Duration::from_secs(10)),
        drop_every: 3,
        retrans_addr: Some(addr),
        retrans_ring_packets: 512,
        retrans_max_messages: 5,
        retrans_max_requests_per_sec: 4,
        retrans_linger_ms: 0,
        ..test_config("RT1")
    };
    let session = SessionId::from_text("RT1");
    let live = join(cfg.group, cfg.port);
    let token = CancellationToken::new();
    let stop = token.clone();
    let client = tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; 65_536];
        let (mut expected, mut gap) = (1u64, None);
        // Follow the live feed until sequence 1 is long evicted and a hole
        // (a packet dropped on purpose) has been seen.
        let deadline = Instant::now() + Duration::from_secs(8);
        // (The ring holds 512 packets, ~1 message each at this rate: about
        // a quarter of a second.)
        while expected < 2_000 || gap.is_none() {
            assert!(Instant::now() < deadline, "live feed too slow");
            let Ok(n) = live.recv(&mut buf) else { continue };
            let p = Packet::decode(&buf[..n]).unwrap();
            if let PacketKind::Data(c) = p.kind {
                if p.seq > expected && expected > 1_900 && gap.is_none() {
                    gap = Some((expected, p.seq - expected));
                }
                expected = p.seq + u64::from(c);
            }
        }
        let (gap_seq, gap_len) = gap.unwrap();
        // Recent ranges first, while they are still in the ring.
        let r1 = requester();
        request(&r1, addr, session, gap_seq, gap_len as u16);
        let gap_fill = messages(&answers(&r1));
        request(&r1, addr, session, expected - 40, 50);
        let capped = messages(&answers(&r1));
        request(&r1, addr, session, 1, 10);
        let gone = answers(&r1);
        assert_eq!(gone.len(), 1);
        let g = Packet::decode(&gone[0]).unwrap();
        request(&r1, addr, session, 1 << 40, 1);
        let ny = answers(&r1);
        let n = Packet::decode(&ny[0]).unwrap();
        // A second requester over its budget: 4 answered of 10 (asking
        // ahead, so the answers do not depend on timing).
        let r2 = requester();
        for i in 0..10 {
            request(&r2, addr, session, (1 << 40) + i, 1);
        }
        let rate_limited_answers = answers(&r2).len();
        // Malformed and foreign requests are dropped.
        r2.send_to(b"short", addr).unwrap();
        request(&requester(), addr, SessionId::from_text("OTHER"), expected - 5, 1);
        std::thread::sleep(Duration::from_millis(100));
        stop.cancel();
        Seen {
            gone: (g.seq, g.kind),
            gap: (gap_seq, gap_len),
            gap_fill,
            capped,
            not_yet: (n.seq, n.kind),
            rate_limited_answers,
        }
    });
    let report = feed_sim::run(cfg, token).await.unwrap();
    let seen = client.await.unwrap();
    let recorded = |from: u64, n: u64| -> Vec<(u64, Message)> {
        report.recorded.iter().filter(|(s, _)| (from..from + n).contains(s)).copied().collect()
    };

    // An evicted range: a heartbeat carrying the oldest sequence still held.
    assert_eq!(seen.gone.1, PacketKind::Heartbeat);
    assert!(seen.gone.0 > 100, "oldest held {}", seen.gone.0);
    // A gap the sender dropped on purpose: exactly the missing messages.
    let (gap_seq, gap_len) = seen.gap;
    assert!(gap_len >= 1);
    assert_eq!(seen.gap_fill, recorded(gap_seq, gap_len.min(5)));
    // 50 asked, at most 5 given: the first 5.
    assert_eq!(seen.capped.len(), 5);
    assert_eq!(seen.capped, recorded(seen.capped[0].0, 5));
    // Not sent yet: a heartbeat with the next sequence, below the request.
    assert_eq!(seen.not_yet.1, PacketKind::Heartbeat);
    assert!(seen.not_yet.0 < 1 << 40);
    assert_eq!(seen.rate_limited_answers, 4);

    let r = report.retrans.expect("server ran");
    assert_eq!((r.requests, r.answered, r.gone, r.not_yet), (4 + 11 + 1, 2, 1, 1 + 4));
    assert_eq!((r.rate_limited, r.malformed, r.foreign_session), (6, 1, 1));
    assert_eq!(r.messages, gap_len.min(5) + 5);
}
