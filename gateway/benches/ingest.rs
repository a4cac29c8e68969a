//! Ingest capacity without the socket: decode -> sequence -> book -> hub,
//! driven with prebuilt feed-sim packets through `Ingest::on_datagram`.
//!
//! `cargo bench -p quotecast-gateway --bench ingest` prints ticks/s on one
//! core for: no subscribers, and 1,000 mailboxes x 10 symbols (the hub's
//! fan-out, with a drainer thread emptying the mailboxes like writers do).

use gateway::book::{Book, BookWriter};
use gateway::hub::mailbox::{Drained, Mailbox};
use gateway::hub::{Hub, HubWriter};
use gateway::ingest::{FeedStats, Ingest, IngestConfig};
use quotecast_proto::feed::{PacketBuilder, SessionId};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TICKS: u64 = 2_000_000;
const SYMBOLS: usize = 300;

fn packets() -> Vec<Vec<u8>> {
    let mut market = feed_sim::Market::new(1, SYMBOLS, 1.1, 0.1);
    let mut b = PacketBuilder::new(SessionId::from_text("BENCH"), 1, 1400);
    let mut out = Vec::new();
    let push = |b: &mut PacketBuilder, m, out: &mut Vec<Vec<u8>>| {
        if !b.push(&m) {
            out.push(b.finish().to_vec());
            assert!(b.push(&m));
        }
    };
    for m in market.directory() {
        push(&mut b, m, &mut out);
    }
    for i in 0..TICKS {
        let m = market.next_tick(1_700_000_000_000_000_000 + i);
        push(&mut b, m, &mut out);
    }
    out.push(b.finish().to_vec());
    out
}

fn ingest(book: BookWriter, hub: HubWriter) -> Ingest {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    Ingest::new(
        sock,
        book,
        hub,
        Arc::new(FeedStats::default()),
        IngestConfig {
            feed_timeout: Duration::from_secs(60),
            reorder_window: 32,
            reorder_hold: Duration::from_millis(2),
        },
    )
}

fn run(name: &str, pkts: &[Vec<u8>], subscribers: usize, per_sub: usize) {
    let (book, writer) = Book::with_writer(SYMBOLS);
    let (hub, hub_writer) = Hub::new(SYMBOLS, 256).into_writer();
    let mut ing = ingest(writer, hub_writer);
    // The directory packets first, so symbols exist before subscribing.
    let now = Instant::now();
    let mut i = 0;
    while book.len() < SYMBOLS {
        ing.on_datagram(&pkts[i], now, 1);
        i += 1;
    }
    let boxes: Vec<Arc<Mailbox>> = (0..subscribers).map(|_| Arc::new(Mailbox::new(4096, 64))).collect();
    for (k, m) in boxes.iter().enumerate() {
        for j in 0..per_sub {
            // Spread subscriptions over the Zipf-hot head like real clients.
            hub.subscribe(((k + j * 7) % 100) as u32, m, None);
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let drainer = {
        let boxes = boxes.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut d = Drained::default();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for m in &boxes {
                    if m.drain(&mut d) {
                        n += d.entries.len() as u64 + d.pending.len() as u64;
                    }
                }
                if boxes.is_empty() {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            n
        })
    };
    let t0 = Instant::now();
    for p in &pkts[i..] {
        ing.on_datagram(p, now, 1);
    }
    let dt = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let drained = drainer.join().unwrap();
    println!(
        "{name:<40} {:>10.0} ticks/s  ({:.0} ns/tick, {} entries handed to mailboxes)",
        TICKS as f64 / dt.as_secs_f64(),
        dt.as_nanos() as f64 / TICKS as f64,
        drained
    );
}

fn main() {
    let pkts = packets();
    println!("{} ticks in {} packets, {SYMBOLS} symbols", TICKS, pkts.len());
    run("no subscribers", &pkts, 0, 0);
    run("1,000 connections x 10 symbols", &pkts, 1000, 10);
}
