//! quotecast's load generator: thousands of real WebSocket or gRPC clients
//! against a gateway on this machine, per-hop latency from the timestamps
//! in every update, and a correctness check of everything each client saw
//! against the feed simulator's ground truth.
//!
//! # Layout
//! - [`config`]: the flags (`LOADTEST_*` env), validation, exit codes; only
//!   127.0.0.0/8 targets are accepted.
//! - [`symbols`]: which symbols a client asks for (fixed list, feed-sim's
//!   hot set, or random draws from its universe).
//! - [`client`]: worker threads (one current-thread runtime each) running
//!   WebSocket clients, StreamQuotes consumers and GetSnapshot callers.
//! - [`checker`]: the sans-I/O per-connection correctness checker.
//! - [`stats`]: HDR latency histograms per hop, throughput counters, merge.
//! - [`sys`]: open-file limit, CPU time from `/proc`, RSS.
//! - [`run`](mod@run): the controller: target check, in-process feed, ramp-up,
//!   measurement window, drain, final check.
//! - [`report`]: aggregation, the summary table and the JSON document.
//!
//! ```text
//! run ─► feed_sim::run (in-process, multicast 127.0.0.1 TTL 0) ─► gateway
//!  │                                                                 │
//!  └─► Worker threads ── ws / gRPC clients ◄── frames ───────────────┘
//!        each frame: prost decode ─► ConnChecker ─► Hops histograms
//!  ◄── WorkerResult (histograms, checkers) ─► RunReport (+ truth check)
//! ```

pub mod checker;
pub mod client;
pub mod config;
pub mod report;
pub mod run;
pub mod stats;
pub mod symbols;
pub mod sys;

pub use config::Config;
pub use report::RunReport;
pub use run::run;

use std::net::SocketAddr;

/// Why a run could not be carried out (as opposed to a run that found
/// problems, which is a [`RunReport`] with violations).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting that cannot work.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// Nothing answers at the target.
    #[error("{what} gateway unreachable at {addr}: {reason}")]
    Unreachable {
        /// WebSocket or gRPC.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// `--tls-ca-file` cannot be used.
    #[error("{0}")]
    Tls(String),
    /// Not a single client could connect.
    #[error("no client could connect to {addr} (see the failure reasons with RUST_LOG=debug)")]
    NoClient {
        /// The address.
        addr: SocketAddr,
    },
    /// The gateway does not know the symbols the clients would ask for.
    #[error("the gateway does not know {symbols}: is its feed running on the group/port given (--feed-group, --feed-port), and --feed-symbols right?")]
    SymbolsUnknown {
        /// The rejected symbols with reasons.
        symbols: String,
    },
    /// The in-process feed failed.
    #[error("feed-sim: {0}")]
    Feed(String),
    /// A local resource failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

impl Error {
    /// The process exit status for this error (64 for usage, 1 otherwise).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) => config::EX_USAGE,
            _ => config::EX_RUNTIME,
        }
    }
}
