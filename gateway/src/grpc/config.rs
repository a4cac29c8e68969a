//! gRPC limits and timeouts: clap flags (`--grpc-*`, `QUOTECAST_GRPC_*`),
//! defaults, and the checks clap cannot do.

use clap::Args;
use std::time::Duration;

/// Default of `--grpc-max-request-bytes`.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Default of `--grpc-max-response-bytes`.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 8 << 20;
/// Default of `--grpc-max-concurrent-streams`.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 256;
/// Default of `--grpc-request-timeout-ms`.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 5_000;
/// Default of `--grpc-max-symbols-per-call`.
pub const DEFAULT_MAX_SYMBOLS_PER_CALL: usize = 1_000;
/// Default of `--grpc-default-page-size`.
pub const DEFAULT_PAGE_SIZE: u32 = 500;
/// Default of `--grpc-max-page-size`.
pub const DEFAULT_MAX_PAGE_SIZE: u32 = 5_000;
/// Default of `--grpc-max-streams`.
pub const DEFAULT_MAX_STREAMS: usize = 1_024;
/// Default of `--grpc-stream-queue-capacity`.
pub const DEFAULT_STREAM_QUEUE_CAPACITY: usize = 4_096;
/// Default of `--grpc-stream-channel-capacity`.
pub const DEFAULT_STREAM_CHANNEL_CAPACITY: usize = 16;
/// Default of `--grpc-slow-client-timeout-ms`.
pub const DEFAULT_SLOW_CLIENT_TIMEOUT_MS: u64 = 5_000;
/// Default of `--grpc-max-batch-bytes`.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 64 * 1024;
/// Default of `--grpc-keepalive-ms`.
pub const DEFAULT_KEEPALIVE_MS: u64 = 30_000;

/// Upper bound of one encoded `QuoteUpdate` entry (symbol, 15 varints of at
/// most 10 bytes, their keys, the entry's own tag and length), used to
/// check that the largest page or stream batch fits the response limit.
pub const MAX_QUOTE_BYTES: usize = 192;

/// gRPC server limits. Every limit is explicit so a misbehaving caller
/// costs a known, bounded amount.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "gRPC")]
pub struct GrpcConfig {
    /// Largest request message accepted (bytes); a larger one fails with
    /// RESOURCE_EXHAUSTED before it is decoded.
    #[arg(id = "grpc_max_request_bytes", long = "grpc-max-request-bytes", env = "QUOTECAST_GRPC_MAX_REQUEST_BYTES", default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: usize,
    /// Largest response message sent (bytes). Must hold the largest page and
    /// the whole ListSymbols answer.
    #[arg(id = "grpc_max_response_bytes", long = "grpc-max-response-bytes", env = "QUOTECAST_GRPC_MAX_RESPONSE_BYTES", default_value_t = DEFAULT_MAX_RESPONSE_BYTES)]
    pub max_response_bytes: usize,
    /// HTTP/2 concurrent calls per connection (SETTINGS_MAX_CONCURRENT_STREAMS).
    #[arg(id = "grpc_max_concurrent_streams", long = "grpc-max-concurrent-streams", env = "QUOTECAST_GRPC_MAX_CONCURRENT_STREAMS", default_value_t = DEFAULT_MAX_CONCURRENT_STREAMS)]
    pub max_concurrent_streams: u32,
    /// Time limit of a unary call (ms); a caller's shorter deadline wins.
    /// StreamQuotes is not limited by it, only by the caller's deadline.
    #[arg(id = "grpc_request_timeout_ms", long = "grpc-request-timeout-ms", env = "QUOTECAST_GRPC_REQUEST_TIMEOUT_MS", default_value_t = DEFAULT_REQUEST_TIMEOUT_MS)]
    pub request_timeout_ms: u64,
    /// Most symbols named in one GetSnapshot or StreamQuotes request; more
    /// fail with RESOURCE_EXHAUSTED.
    #[arg(id = "grpc_max_symbols_per_call", long = "grpc-max-symbols-per-call", env = "QUOTECAST_GRPC_MAX_SYMBOLS_PER_CALL", default_value_t = DEFAULT_MAX_SYMBOLS_PER_CALL)]
    pub max_symbols_per_call: usize,
    /// Page size of the all-symbols GetSnapshot when the caller sets none.
    #[arg(id = "grpc_default_page_size", long = "grpc-default-page-size", env = "QUOTECAST_GRPC_DEFAULT_PAGE_SIZE", default_value_t = DEFAULT_PAGE_SIZE)]
    pub default_page_size: u32,
    /// Largest page of the all-symbols GetSnapshot; larger requests are capped.
    #[arg(id = "grpc_max_page_size", long = "grpc-max-page-size", env = "QUOTECAST_GRPC_MAX_PAGE_SIZE", default_value_t = DEFAULT_MAX_PAGE_SIZE)]
    pub max_page_size: u32,
    /// Most StreamQuotes calls open at once over all connections; more fail
    /// with RESOURCE_EXHAUSTED.
    #[arg(id = "grpc_max_streams", long = "grpc-max-streams", env = "QUOTECAST_GRPC_MAX_STREAMS", default_value_t = DEFAULT_MAX_STREAMS)]
    pub max_streams: usize,
    /// Updates queued per stream before it conflates (latest value per
    /// symbol, with a skip count).
    #[arg(id = "grpc_stream_queue_capacity", long = "grpc-stream-queue-capacity", env = "QUOTECAST_GRPC_STREAM_QUEUE_CAPACITY", default_value_t = DEFAULT_STREAM_QUEUE_CAPACITY)]
    pub stream_queue_capacity: usize,
    /// Responses buffered per stream between the stream's pump and the
    /// transport (bounded; when full the pump waits and the queue conflates).
    #[arg(id = "grpc_stream_channel_capacity", long = "grpc-stream-channel-capacity", env = "QUOTECAST_GRPC_STREAM_CHANNEL_CAPACITY", default_value_t = DEFAULT_STREAM_CHANNEL_CAPACITY)]
    pub stream_channel_capacity: usize,
    /// A stream that stays behind (conflating, or unable to hand over a
    /// response) this long is ended with RESOURCE_EXHAUSTED (ms).
    #[arg(id = "grpc_slow_client_timeout_ms", long = "grpc-slow-client-timeout-ms", env = "QUOTECAST_GRPC_SLOW_CLIENT_TIMEOUT_MS", default_value_t = DEFAULT_SLOW_CLIENT_TIMEOUT_MS)]
    pub slow_client_timeout_ms: u64,
    /// Largest batch of updates in one StreamQuotes response (bytes).
    #[arg(id = "grpc_max_batch_bytes", long = "grpc-max-batch-bytes", env = "QUOTECAST_GRPC_MAX_BATCH_BYTES", default_value_t = DEFAULT_MAX_BATCH_BYTES)]
    pub max_batch_bytes: usize,
    /// HTTP/2 keepalive ping interval (ms; 0 = off): finds callers that
    /// vanished without closing, so their streams end.
    #[arg(id = "grpc_keepalive_ms", long = "grpc-keepalive-ms", env = "QUOTECAST_GRPC_KEEPALIVE_MS", default_value_t = DEFAULT_KEEPALIVE_MS)]
    pub keepalive_ms: u64,
}

impl Default for GrpcConfig {
    /// The CLI defaults, without reading the environment.
    fn default() -> Self {
        GrpcConfig {
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            max_symbols_per_call: DEFAULT_MAX_SYMBOLS_PER_CALL,
            default_page_size: DEFAULT_PAGE_SIZE,
            max_page_size: DEFAULT_MAX_PAGE_SIZE,
            max_streams: DEFAULT_MAX_STREAMS,
            stream_queue_capacity: DEFAULT_STREAM_QUEUE_CAPACITY,
            stream_channel_capacity: DEFAULT_STREAM_CHANNEL_CAPACITY,
            slow_client_timeout_ms: DEFAULT_SLOW_CLIENT_TIMEOUT_MS,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            keepalive_ms: DEFAULT_KEEPALIVE_MS,
        }
    }
}

/// A gRPC setting that parses but cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GrpcConfigError {
    /// A limit that must be positive is zero.
    #[error("{0} must be greater than 0")]
    Zero(&'static str),
    /// Two settings contradict each other.
    #[error("{0}")]
    Conflict(String),
}

impl GrpcConfig {
    /// Checks what clap cannot.
    ///
    /// # Errors
    /// The first [`GrpcConfigError`] found.
    pub fn validate(&self) -> Result<(), GrpcConfigError> {
        let positive = [
            ("--grpc-max-request-bytes", self.max_request_bytes as u64),
            ("--grpc-max-response-bytes", self.max_response_bytes as u64),
            ("--grpc-max-concurrent-streams", u64::from(self.max_concurrent_streams)),
            ("--grpc-request-timeout-ms", self.request_timeout_ms),
            ("--grpc-max-symbols-per-call", self.max_symbols_per_call as u64),
            ("--grpc-default-page-size", u64::from(self.default_page_size)),
            ("--grpc-max-page-size", u64::from(self.max_page_size)),
            ("--grpc-max-streams", self.max_streams as u64),
            ("--grpc-stream-queue-capacity", self.stream_queue_capacity as u64),
            ("--grpc-stream-channel-capacity", self.stream_channel_capacity as u64),
            ("--grpc-slow-client-timeout-ms", self.slow_client_timeout_ms),
            ("--grpc-max-batch-bytes", self.max_batch_bytes as u64),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(GrpcConfigError::Zero(name));
        }
        if self.default_page_size > self.max_page_size {
            return Err(GrpcConfigError::Conflict(format!(
                "--grpc-default-page-size ({}) exceeds --grpc-max-page-size ({})",
                self.default_page_size, self.max_page_size
            )));
        }
        // Rejections echo the request's symbol texts, so a named snapshot
        // answer is bounded by the quotes plus the request itself.
        let largest = [
            ("--grpc-max-page-size", self.max_page_size as usize * MAX_QUOTE_BYTES),
            (
                "--grpc-max-symbols-per-call",
                self.max_symbols_per_call * MAX_QUOTE_BYTES + 2 * self.max_request_bytes,
            ),
            ("--grpc-max-batch-bytes", self.max_batch_bytes + MAX_QUOTE_BYTES),
        ];
        for (name, need) in largest {
            if need > self.max_response_bytes {
                return Err(GrpcConfigError::Conflict(format!(
                    "{name} allows responses of {need} bytes, over --grpc-max-response-bytes ({})",
                    self.max_response_bytes
                )));
            }
        }
        Ok(())
    }

    /// Unary call time limit.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// Slow-stream limit.
    pub fn slow_client_timeout(&self) -> Duration {
        Duration::from_millis(self.slow_client_timeout_ms)
    }

    /// Keepalive interval, `None` when off.
    pub fn keepalive(&self) -> Option<Duration> {
        (self.keepalive_ms > 0).then(|| Duration::from_millis(self.keepalive_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        grpc: GrpcConfig,
    }

    fn parse(args: &[&str]) -> Result<GrpcConfig, String> {
        let c = Cli::try_parse_from(std::iter::once("gateway").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?
            .grpc;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn default_matches_the_cli_defaults_and_is_valid() {
        let cli = parse(&[]).unwrap();
        let d = GrpcConfig::default();
        d.validate().unwrap();
        assert_eq!(format!("{cli:?}"), format!("{d:?}"));
    }

    #[test]
    fn bad_values_are_named() {
        for (args, want) in [
            (&["--grpc-max-streams", "0"][..], "--grpc-max-streams must be greater than 0"),
            (&["--grpc-default-page-size", "600", "--grpc-max-page-size", "500"][..], "exceeds"),
            (&["--grpc-max-page-size", "100000"][..], "--grpc-max-response-bytes"),
            (&["--grpc-max-response-bytes", "1000"][..], "--grpc-max-response-bytes"),
            (&["--grpc-keepalive-ms", "x"][..], "--grpc-keepalive-ms"),
        ] {
            let err = parse(args).unwrap_err();
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }
}
