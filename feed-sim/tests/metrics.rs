//! Prometheus metrics served on `metrics_addr`. Its own test binary: the
//! recorder is process-global.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::test_config;
use feed_sim::SimConfig;
use tokio_util::sync::CancellationToken;

fn scrape(addr: std::net::SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The value of the series whose line starts with `series` (name plus
/// labels exactly as rendered).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{series} missing from:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_match_the_report() {
    let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let cfg = SimConfig {
        rate: 50_000,
        max_ticks: Some(10_000),
        drop_every: 7,
        dup_every: 5,
        reorder_every: 9,
        b_drop_every: 4,
        metrics_addr: Some(addr),
        ..test_config("MET1")
    };
    let retrans = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let cfg = SimConfig {
        line_b_group: Some(common::unique_group_port().0),
        retrans_addr: Some(retrans),
        retrans_linger_ms: 0,
        snapshot_group: Some(common::unique_group_port().0),
        snapshot_port: Some(common::unique_group_port().1),
        ..cfg
    };
    let report = feed_sim::run(cfg, CancellationToken::new()).await.unwrap();
    let text = tokio::task::spawn_blocking(move || scrape(addr)).await.unwrap();

    assert_eq!(value(&text, "feedsim_packets_sent_total"), report.packets as f64);
    assert_eq!(value(&text, "feedsim_bytes_sent_total"), report.bytes as f64);
    assert_eq!(value(&text, "feedsim_heartbeats_sent_total"), report.heartbeats as f64);
    assert_eq!(value(&text, "feedsim_messages_sent_total{type=\"quote\"}"), report.quotes as f64);
    assert_eq!(value(&text, "feedsim_messages_sent_total{type=\"trade\"}"), report.trades as f64);
    assert_eq!(value(&text, "feedsim_messages_sent_total{type=\"directory\"}"), report.directory as f64);
    for (i, l) in report.lines.iter().enumerate() {
        let name = ["a", "b"][i];
        let v = |kind: &str| {
            value(&text, &format!("feedsim_faults_injected_total{{kind=\"{kind}\",line=\"{name}\"}}"))
        };
        assert_eq!(v("drop"), l.dropped_packets as f64);
        assert_eq!(v("dup"), l.duplicated_packets as f64);
        assert_eq!(v("reorder"), l.reordered_packets as f64);
        assert_eq!(
            value(&text, &format!("feedsim_line_packets_sent_total{{line=\"{name}\"}}")),
            l.packets as f64
        );
        assert_eq!(
            value(&text, &format!("feedsim_line_bytes_sent_total{{line=\"{name}\"}}")),
            l.bytes as f64
        );
    }
    assert_eq!(report.lines.len(), 2);
    // The retransmission server's series exist from the start (no requests here).
    for result in ["answered", "gone", "not_yet", "rate_limited", "malformed", "foreign_session"] {
        assert_eq!(value(&text, &format!("feedsim_retrans_requests_total{{result=\"{result}\"}}")), 0.0);
    }
    assert_eq!(report.retrans, Some(feed_sim::RetransReport::default()));
    let snap = report.snapshot.clone().unwrap();
    assert_eq!(value(&text, "feedsim_snapshot_cycles_total"), snap.cycles as f64);
    assert_eq!(value(&text, "feedsim_snapshot_symbols_sent_total"), snap.snapshots as f64);
    assert_eq!(value(&text, "feedsim_snapshot_packets_sent_total"), snap.packets as f64);
    assert!(snap.cycles > 0);
    // Line B drops every 4th packet on top of every 7th on both lines.
    assert!(report.lines[1].dropped_packets > report.lines[0].dropped_packets);
    assert_eq!(report.lines[0].dropped_packets, report.dropped_packets, "A's drops are the both-lines ones");
    assert_eq!(
        report.duplicated_packets,
        report.lines[0].duplicated_packets + report.lines[1].duplicated_packets
    );
    assert_eq!(value(&text, "feedsim_ticks_per_second_target"), 50_000.0);
    assert!(report.dropped_packets > 0 && report.duplicated_packets > 0 && report.reordered_packets > 0);
    assert!(text.contains("# HELP feedsim_packets_sent_total"), "metrics are described");

    // One recorder per process: a second exporter is refused with a reason.
    let again = SimConfig { metrics_addr: Some(addr), max_ticks: Some(1), ..test_config("MET2") };
    let err = feed_sim::run(again, CancellationToken::new()).await.unwrap_err();
    assert!(format!("{err:#}").contains("serving metrics"), "{err:#}");
}
