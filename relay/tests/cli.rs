//! The `feed-relay` binary: `--help` lists every setting with its env var
//! and default; a bad flag is one line and exit code 64.

use std::process::Command;

fn relay() -> Command {
    Command::new(env!("CARGO_BIN_EXE_feed-relay"))
}

#[test]
fn help_lists_every_setting_with_env_and_default() {
    let out = relay().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for want in [
        "--nats <URL>",
        "FEED_RELAY_NATS",
        "nats://127.0.0.1:4222",
        "--subject-prefix",
        "quotecast.feed",
        "--group",
        "--port",
        "--line-b-group",
        "--snapshot-group",
        "--retrans-addr",
        "--retrans-wait-ms",
        "--retrans-max-answer-ms",
        "--retrans-max-in-flight",
        "--metrics-addr",
        "127.0.0.1:8086",
    ] {
        assert!(help.contains(want), "--help lacks {want}");
    }
}

#[test]
fn bad_values_print_one_line_and_exit_64() {
    for (args, want) in [
        (&["--port", "x"][..], "--port"),
        (&["--group", "10.1.1.1"][..], "not a multicast"),
        (&["--subject-prefix", "a.*"][..], "--subject-prefix"),
        (&["--retrans-max-in-flight", "0"][..], "--retrans-max-in-flight"),
        (&["--no-such-flag"][..], "--no-such-flag"),
    ] {
        let out = relay().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
