//! The binary: exit code 64 with one line on bad flags, a report on
//! stdout at the end, and a clean end of session on SIGTERM.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{decode_all, unique_group_port};
use quotecast_proto::feed::PacketKind;

fn feed_sim() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_feed-sim"));
    // The developer's environment must not change what the test runs.
    for (k, _) in std::env::vars() {
        if k.starts_with("FEED_SIM_") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn bad_values_exit_64_with_one_line() {
    let cases: &[(&[&str], &str)] = &[
        (&["--ttl", "300"], "--ttl 300: must be 0..=255"),
        (&["--group", "10.1.1.1"], "--group 10.1.1.1: not a multicast address"),
        (&["--port", "0"], "--port 0"),
        (&["--max-packet-bytes", "50"], "--max-packet-bytes 50"),
        (&["--port", "abc"], "--port"),
        (&["--no-such-flag"], "--no-such-flag"),
    ];
    for (args, want) in cases {
        let out = feed_sim().args(*args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err:?}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err:?}");
        assert!(out.stdout.is_empty());
    }
    // The environment is read too, and validated the same way.
    let out = feed_sim().env("FEED_SIM_TTL", "999").output().unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn help_lists_env_names_and_exits_0() {
    let out = feed_sim().arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--rate",
        "--drop-every",
        "FEED_SIM_GROUP",
        "FEED_SIM_METRICS_ADDR",
        "239.255.0.1",
        "--line-b-group",
        "--a-drop-every",
        "--b-drop-every",
        "--retrans-addr",
        "FEED_SIM_RETRANS_RING_PACKETS",
        "--snapshot-group",
        "--snapshot-rate",
        "--halt-every-ticks",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
    assert!(!help.contains("--record"), "--record is a hidden test flag");
}

#[test]
fn max_ticks_run_prints_the_report() {
    let (group, port) = unique_group_port();
    let out = feed_sim()
        .args(["--group", &group.to_string(), "--port", &port.to_string()])
        .args(["--rate", "0", "--max-ticks", "5000", "--session", "CLI1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("session      CLI1"), "{report}");
    assert!(report.contains("ticks/s"), "{report}");
}

#[test]
fn sigterm_ends_the_session_cleanly() {
    let (group, port) = unique_group_port();
    let rx = common::join(group, port);
    rx.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut child = feed_sim()
        .args(["--group", &group.to_string(), "--port", &port.to_string(), "--session", "TERM1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 65_536];
    let start = Instant::now();
    let mut signalled = false;
    let mut ends = 0;
    while ends < 3 && start.elapsed() < Duration::from_secs(15) {
        if !signalled && start.elapsed() > Duration::from_millis(500) {
            let ok = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
            assert!(ok.success());
            signalled = true;
        }
        if let Ok(n) = rx.recv(&mut buf) {
            raw.push(buf[..n].to_vec());
            if buf[18..20] == [0xFF, 0xFF] {
                ends += 1;
            }
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let got = decode_all(&raw);
    assert_eq!(got.iter().filter(|g| g.kind == PacketKind::EndOfSession).count(), 3);
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(stdout.contains("session      TERM1"), "{stdout}");
}

#[test]
fn every_channel_at_once_prints_its_report_lines() {
    let (group, port) = unique_group_port();
    let (b, _) = unique_group_port();
    let (snap, snap_port) = unique_group_port();
    let retrans = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let out = feed_sim()
        .args(["--group", &group.to_string(), "--port", &port.to_string(), "--line-b-group", &b.to_string()])
        .args(["--snapshot-group", &snap.to_string(), "--snapshot-port", &snap_port.to_string()])
        .args(["--retrans-addr", &retrans.to_string(), "--retrans-linger-ms", "0"])
        .args(["--rate", "20000", "--max-ticks", "5000", "--halt-every-ticks", "1000", "--session", "CLI2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = String::from_utf8_lossy(&out.stdout);
    for want in
        ["line a", "line b", "retrans      0 requests", "snapshots    ", "4 system events, 5 trading actions"]
    {
        assert!(report.contains(want), "{want:?} missing from {report}");
    }
}
