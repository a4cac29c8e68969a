//! feed-relay configuration: every setting a flag with an env var
//! (`FEED_RELAY_*`) and a default, shown in `--help`, validated before
//! anything binds.

use clap::Parser;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// feed-relay: joins the quotecast multicast feed (line A, optionally line
/// B and the snapshot channel) and publishes every datagram unchanged on
/// core NATS subjects `<prefix>.a`, `<prefix>.b`, `<prefix>.snapshot`, for
/// gateways where the network carries no multicast (`gateway --feed-nats`).
/// With --retrans-addr it also forwards retransmission requests from
/// `<prefix>.retrans` to the feed's retransmission server and publishes
/// the answers to each request's reply subject.
#[derive(Debug, Clone, Parser)]
#[command(name = "feed-relay", version, about, long_about = None)]
pub struct Config {
    /// NATS server to publish to.
    #[arg(
        long = "nats",
        env = "FEED_RELAY_NATS",
        value_name = "URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats: async_nats::ServerAddr,
    /// Subject prefix: line A on `<prefix>.a`, line B on `<prefix>.b`,
    /// snapshots on `<prefix>.snapshot`, requests on `<prefix>.retrans`.
    #[arg(long = "subject-prefix", env = "FEED_RELAY_SUBJECT_PREFIX", default_value = "quotecast.feed")]
    pub subject_prefix: String,
    /// Multicast group of line A.
    #[arg(long = "group", env = "FEED_RELAY_GROUP", default_value = "239.255.0.1")]
    pub group: Ipv4Addr,
    /// UDP port of line A.
    #[arg(long = "port", env = "FEED_RELAY_PORT", default_value_t = 31001)]
    pub port: u16,
    /// Local interface address to join the groups on.
    #[arg(long = "interface", env = "FEED_RELAY_INTERFACE", default_value = "127.0.0.1")]
    pub interface: Ipv4Addr,
    /// Multicast group of line B (default: no line B).
    #[arg(long = "line-b-group", env = "FEED_RELAY_LINE_B_GROUP")]
    pub line_b_group: Option<Ipv4Addr>,
    /// UDP port of line B (default: --port). Needs --line-b-group.
    #[arg(long = "line-b-port", env = "FEED_RELAY_LINE_B_PORT")]
    pub line_b_port: Option<u16>,
    /// Multicast group of the snapshot channel (default: none).
    #[arg(long = "snapshot-group", env = "FEED_RELAY_SNAPSHOT_GROUP")]
    pub snapshot_group: Option<Ipv4Addr>,
    /// UDP port of the snapshot channel. Needs --snapshot-group.
    #[arg(long = "snapshot-port", env = "FEED_RELAY_SNAPSHOT_PORT")]
    pub snapshot_port: Option<u16>,
    /// Socket receive buffer per joined group (bytes; above
    /// net.core.rmem_max SO_RCVBUFFORCE is tried, which needs CAP_NET_ADMIN).
    #[arg(long = "recv-buffer-bytes", env = "FEED_RELAY_RECV_BUFFER_BYTES", default_value_t = 16 << 20)]
    pub recv_buffer_bytes: usize,
    /// The feed's retransmission server (MoldUDP64 re-request over unicast
    /// UDP, feed-sim --retrans-addr). Default: no retransmission proxy.
    #[arg(long = "retrans-addr", env = "FEED_RELAY_RETRANS_ADDR")]
    pub retrans_addr: Option<SocketAddr>,
    /// A request ends when no answer datagram came for this long (ms),
    /// counted from the request, then from each datagram; an answer that
    /// covers the range, or a heartbeat ("gone"/"not yet"), ends it sooner.
    #[arg(long = "retrans-wait-ms", env = "FEED_RELAY_RETRANS_WAIT_MS", default_value_t = 50)]
    pub retrans_wait_ms: u64,
    /// Longest time one request is served, however its answer streams (ms).
    /// Keep it at or under the gateways' --retrans-timeout-ms.
    #[arg(long = "retrans-max-answer-ms", env = "FEED_RELAY_RETRANS_MAX_ANSWER_MS", default_value_t = 100)]
    pub retrans_max_answer_ms: u64,
    /// Requests proxied at once; more are refused (counted, unanswered:
    /// the gateway's own timeout asks again).
    #[arg(long = "retrans-max-in-flight", env = "FEED_RELAY_RETRANS_MAX_IN_FLIGHT", default_value_t = 16)]
    pub retrans_max_in_flight: usize,
    /// Receive buffer of each proxied request's socket (bytes): room for a
    /// whole answer (up to 2,000 datagrams) while they are published.
    #[arg(long = "retrans-recv-buffer-bytes", env = "FEED_RELAY_RETRANS_RECV_BUFFER_BYTES", default_value_t = 4 << 20)]
    pub retrans_recv_buffer_bytes: usize,
    /// Prometheus /metrics listen address.
    #[arg(long = "metrics-addr", env = "FEED_RELAY_METRICS_ADDR", default_value = "127.0.0.1:8086")]
    pub metrics_addr: SocketAddr,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long = "log", env = "FEED_RELAY_LOG", default_value = "info")]
    pub log: String,
}

/// A setting that parses but makes no sense.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A group that is not IPv4 multicast.
    #[error("{flag} {group} is not a multicast address (224.0.0.0/4)")]
    NotMulticast {
        /// The flag.
        flag: &'static str,
        /// Its value.
        group: Ipv4Addr,
    },
    /// A value that must be positive is zero.
    #[error("{0} must be greater than 0")]
    Zero(&'static str),
    /// Two settings contradict each other.
    #[error("{0}")]
    Conflict(String),
}

/// One multicast group to join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Join {
    /// Group.
    pub group: Ipv4Addr,
    /// Port.
    pub port: u16,
}

impl Config {
    /// Line A.
    pub fn line_a(&self) -> Join {
        Join { group: self.group, port: self.port }
    }

    /// Line B, when `--line-b-group` is set.
    pub fn line_b(&self) -> Option<Join> {
        self.line_b_group.map(|group| Join { group, port: self.line_b_port.unwrap_or(self.port) })
    }

    /// The snapshot channel, when configured.
    pub fn snapshot(&self) -> Option<Join> {
        Some(Join { group: self.snapshot_group?, port: self.snapshot_port? })
    }

    /// `--retrans-wait-ms` as a duration.
    pub fn retrans_wait(&self) -> Duration {
        Duration::from_millis(self.retrans_wait_ms)
    }

    /// `--retrans-max-answer-ms` as a duration.
    pub fn retrans_max_answer(&self) -> Duration {
        Duration::from_millis(self.retrans_max_answer_ms)
    }

    /// Checks what clap cannot.
    ///
    /// # Errors
    /// The first [`ConfigError`] found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let multicast = |flag: &'static str, group: Ipv4Addr| {
            if group.is_multicast() {
                Ok(())
            } else {
                Err(ConfigError::NotMulticast { flag, group })
            }
        };
        multicast("--group", self.group)?;
        if let Some(g) = self.line_b_group {
            multicast("--line-b-group", g)?;
        } else if self.line_b_port.is_some() {
            return Err(ConfigError::Conflict("--line-b-port needs --line-b-group".into()));
        }
        match (self.snapshot_group, self.snapshot_port) {
            (Some(g), Some(_)) => multicast("--snapshot-group", g)?,
            (None, None) => {}
            (Some(_), None) => {
                return Err(ConfigError::Conflict("--snapshot-group needs --snapshot-port".into()))
            }
            (None, Some(_)) => {
                return Err(ConfigError::Conflict("--snapshot-port needs --snapshot-group".into()))
            }
        }
        let joins: Vec<(&str, Join)> =
            [("line A", Some(self.line_a())), ("line B", self.line_b()), ("snapshot", self.snapshot())]
                .into_iter()
                .filter_map(|(n, j)| j.map(|j| (n, j)))
                .collect();
        for (i, (n, j)) in joins.iter().enumerate() {
            if let Some((m, _)) = joins[..i].iter().find(|(_, k)| k == j) {
                return Err(ConfigError::Conflict(format!(
                    "{n} and {m} are the same group and port {}:{}",
                    j.group, j.port
                )));
            }
        }
        if !gateway::config::valid_subject_prefix(&self.subject_prefix) {
            return Err(ConfigError::Conflict(format!(
                "--subject-prefix {:?} is not a NATS subject (dot-separated tokens, no spaces or wildcards)",
                self.subject_prefix
            )));
        }
        for (name, v) in [
            ("--retrans-wait-ms", self.retrans_wait_ms as usize),
            ("--retrans-max-answer-ms", self.retrans_max_answer_ms as usize),
            ("--retrans-max-in-flight", self.retrans_max_in_flight),
            ("--recv-buffer-bytes", self.recv_buffer_bytes),
            ("--retrans-recv-buffer-bytes", self.retrans_recv_buffer_bytes),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.retrans_max_answer_ms < self.retrans_wait_ms {
            return Err(ConfigError::Conflict(format!(
                "--retrans-max-answer-ms ({}) is below --retrans-wait-ms ({})",
                self.retrans_max_answer_ms, self.retrans_wait_ms
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let c = Config::try_parse_from(std::iter::once("feed-relay").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn defaults_are_valid_and_local() {
        let c = parse(&[]).unwrap();
        assert!(c.metrics_addr.ip().is_loopback());
        assert!(c.interface.is_loopback());
        assert_eq!(c.subject_prefix, "quotecast.feed");
        assert_eq!((c.line_b(), c.snapshot(), c.retrans_addr), (None, None, None));
    }

    #[test]
    fn line_b_defaults_to_line_a_port() {
        let c = parse(&["--line-b-group", "239.255.0.2"]).unwrap();
        assert_eq!(c.line_b(), Some(Join { group: "239.255.0.2".parse().unwrap(), port: 31001 }));
    }

    #[test]
    fn bad_values_are_named() {
        for (args, want) in [
            (&["--group", "10.0.0.1"][..], "--group 10.0.0.1 is not a multicast"),
            (&["--line-b-group", "10.0.0.1"][..], "--line-b-group"),
            (&["--line-b-port", "5"][..], "--line-b-port needs --line-b-group"),
            (&["--line-b-group", "239.255.0.1"][..], "line B and line A are the same"),
            (&["--snapshot-group", "239.255.0.9"][..], "--snapshot-group needs --snapshot-port"),
            (&["--snapshot-port", "5"][..], "--snapshot-port needs --snapshot-group"),
            (&["--subject-prefix", "a b"][..], "--subject-prefix"),
            (&["--subject-prefix", "a.>"][..], "--subject-prefix"),
            (&["--retrans-wait-ms", "0"][..], "--retrans-wait-ms must be greater than 0"),
            (&["--retrans-max-in-flight", "0"][..], "--retrans-max-in-flight"),
            (
                &["--retrans-max-answer-ms", "10"][..],
                "--retrans-max-answer-ms (10) is below --retrans-wait-ms (50)",
            ),
            (&["--nats", "nats://a b"][..], "--nats"),
            (&["--retrans-addr", "nope"][..], "--retrans-addr"),
        ] {
            let err = parse(args).unwrap_err();
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }
}
