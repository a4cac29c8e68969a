//! The `gateway` binary: `--help`, one-line errors with exit code 64 for bad
//! flags, and a clean exit on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn gateway() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gateway"))
}

#[test]
fn help_lists_every_setting_with_env_and_default() {
    let out = gateway().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for want in [
        "--group",
        "QUOTECAST_GROUP",
        "239.255.0.1",
        "--ws-addr",
        "127.0.0.1:8080",
        "--queue-capacity",
        "--feed-nats <URL>",
        "QUOTECAST_FEED_NATS",
        "--feed-nats-subject-prefix",
        "quotecast.feed",
        "--feed-nats-line-b",
        "--feed-nats-snapshot",
        "--feed-nats-retrans",
        "--api-keys-file",
        "QUOTECAST_JWT_KEY_FILE",
        "--allowed-origins",
        "--insecure",
    ] {
        assert!(help.contains(want), "--help lacks {want}");
    }
}

#[test]
fn bad_values_print_one_line_and_exit_64() {
    for (args, want) in [
        (&["--feed-port", "x"][..], "--feed-port"),
        (&["--group", "10.1.1.1"][..], "not a multicast"),
        (&["--max-connections", "0"][..], "--max-connections"),
        (&["--no-such-flag"][..], "--no-such-flag"),
        (&["--feed-nats-retrans"][..], "--feed-nats-retrans needs --feed-nats"),
        (
            &["--feed-nats", "nats://127.0.0.1:4222", "--retrans-addr", "127.0.0.1:9"][..],
            "--feed-nats-retrans",
        ),
        // Safe by default: off loopback only with authentication or --insecure
        // (refused before anything binds).
        (&["--ws-addr", "10.0.0.1:8080"][..], "--ws-addr 10.0.0.1:8080 is reachable from the network"),
        (&["--grpc-addr", "0.0.0.0:50051"][..], "without authentication and TLS"),
        (&["--grpc-addr", "0.0.0.0:50051", "--api-keys-file", "/nonexistent"][..], "without TLS"),
    ] {
        let out = gateway().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let (group, port) = common::unique_feed();
    let mut child = gateway()
        .args(["--group", &group.to_string(), "--feed-port", &port.to_string()])
        .args(["--ws-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.contains("ws://127.0.0.1:"), "{line}");
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let t0 = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "gateway did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}
