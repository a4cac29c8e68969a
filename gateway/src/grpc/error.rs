//! Why a call is refused or a stream ends, and the gRPC status each maps to.

use tonic::{Code, Status};

/// A call refused as a whole. Per-symbol problems that are not the
/// caller's fault (a well-formed symbol the feed does not know) are not
/// errors: they are listed in the answer's `rejected`.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CallError {
    /// The gateway is shutting down.
    #[error("the gateway is shutting down; retry against another instance")]
    ShuttingDown,
    /// More symbols than `--grpc-max-symbols-per-call`.
    #[error("{count} symbols in one call; at most {max} (--grpc-max-symbols-per-call)")]
    TooManySymbols {
        /// Symbols in the request.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A symbol that is not syntactically valid.
    #[error("invalid symbol {symbol:?}: {reason}")]
    InvalidSymbol {
        /// The text as sent (truncated).
        symbol: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A page token this gateway did not issue (or issued before a restart).
    #[error("page_token {0:?} was not issued by this gateway instance; start again without a token")]
    BadPageToken(String),
    /// A page token together with named symbols.
    #[error("page_token applies only to the all-symbols form (empty symbols)")]
    PageTokenWithSymbols,
    /// StreamQuotes without symbols.
    #[error("symbols must not be empty: name the symbols to stream")]
    NoSymbols,
    /// StreamQuotes where no requested symbol is known.
    #[error("none of the requested symbols is in the feed's symbol directory: {0}")]
    NoKnownSymbols(String),
    /// No credential, or a refused one (`authorization` metadata).
    #[error("{0}")]
    Unauthenticated(String),
    /// The key's `max_requests_per_sec` used up.
    #[error("more than {rate} requests per second for {subject}; retry after {retry_ms} ms")]
    KeyRateLimited {
        /// The key's name or token subject.
        subject: String,
        /// Its limit.
        rate: u32,
        /// When to retry (ms).
        retry_ms: u64,
    },
    /// The address failed authentication too often.
    #[error("too many failed authentications from this address; retry after {0} s")]
    Blocked(u64),
    /// StreamQuotes where the credential covers none of the symbols.
    #[error("not entitled to any of the requested symbols: {0}")]
    NotEntitled(String),
    /// Every StreamQuotes slot is taken.
    #[error("{max} quote streams are open, the most this gateway serves (--grpc-max-streams); retry later")]
    TooManyStreams {
        /// The limit.
        max: usize,
    },
}

impl CallError {
    /// The gRPC code of this refusal.
    pub fn code(&self) -> Code {
        match self {
            CallError::ShuttingDown => Code::Unavailable,
            CallError::TooManySymbols { .. } | CallError::TooManyStreams { .. } => Code::ResourceExhausted,
            CallError::InvalidSymbol { .. }
            | CallError::BadPageToken(_)
            | CallError::PageTokenWithSymbols
            | CallError::NoSymbols => Code::InvalidArgument,
            CallError::NoKnownSymbols(_) => Code::NotFound,
            CallError::Unauthenticated(_) => Code::Unauthenticated,
            CallError::Blocked(_) | CallError::KeyRateLimited { .. } => Code::ResourceExhausted,
            CallError::NotEntitled(_) => Code::PermissionDenied,
        }
    }
}

impl From<CallError> for Status {
    fn from(e: CallError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

/// Why a quote stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// The caller went away (cancelled, disconnected): nobody to tell.
    ClientGone,
    /// The gateway is shutting down.
    Shutdown,
    /// The node is draining (SIGTERM) and this stream's turn came.
    Drained,
    /// The caller's deadline passed.
    Deadline,
    /// The caller's token expired.
    Expired,
    /// The caller read too slowly for too long.
    SlowConsumer {
        /// The limit that was exceeded (ms).
        limit_ms: u64,
    },
    /// The gateway could not encode what it had to send (a bug).
    Internal(String),
}

impl StreamEnd {
    /// The status the stream ends with, `None` when nobody is listening.
    pub fn status(&self) -> Option<Status> {
        match self {
            StreamEnd::ClientGone => None,
            StreamEnd::Shutdown => {
                Some(Status::unavailable("the gateway is shutting down; reconnect and stream again"))
            }
            StreamEnd::Drained => Some(Status::unavailable(crate::drain::HINT)),
            StreamEnd::Deadline => {
                Some(Status::deadline_exceeded("the call's deadline (grpc-timeout) passed"))
            }
            StreamEnd::Expired => {
                Some(Status::unauthenticated("token expired; call again with a fresh token"))
            }
            StreamEnd::SlowConsumer { limit_ms } => Some(Status::resource_exhausted(format!(
                "slow consumer: behind the feed for more than {limit_ms} ms (--grpc-slow-client-timeout-ms); \
                 read faster or stream fewer symbols"
            ))),
            StreamEnd::Internal(m) => Some(Status::internal(m.clone())),
        }
    }

    /// Low-cardinality label for logs.
    pub fn label(&self) -> &'static str {
        match self {
            StreamEnd::ClientGone => "client_gone",
            StreamEnd::Shutdown => "shutdown",
            StreamEnd::Drained => "drained",
            StreamEnd::Deadline => "deadline",
            StreamEnd::Expired => "expired",
            StreamEnd::SlowConsumer { .. } => "slow_consumer",
            StreamEnd::Internal(_) => "internal",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_documented_contract() {
        let bad = CallError::InvalidSymbol { symbol: "a b".into(), reason: "bad char".into() };
        for (e, code) in [
            (CallError::ShuttingDown, Code::Unavailable),
            (CallError::TooManySymbols { count: 2, max: 1 }, Code::ResourceExhausted),
            (CallError::TooManyStreams { max: 1 }, Code::ResourceExhausted),
            (bad, Code::InvalidArgument),
            (CallError::BadPageToken("x".into()), Code::InvalidArgument),
            (CallError::PageTokenWithSymbols, Code::InvalidArgument),
            (CallError::NoSymbols, Code::InvalidArgument),
            (CallError::NoKnownSymbols("X".into()), Code::NotFound),
        ] {
            let s = Status::from(e.clone());
            assert_eq!(s.code(), code, "{e:?}");
            assert_eq!(s.message(), e.to_string());
        }
        assert_eq!(StreamEnd::ClientGone.status().map(|s| s.code()), None);
        assert_eq!(StreamEnd::Shutdown.status().map(|s| s.code()), Some(Code::Unavailable));
        assert_eq!(StreamEnd::Drained.status().map(|s| s.code()), Some(Code::Unavailable));
        assert_eq!(StreamEnd::Deadline.status().map(|s| s.code()), Some(Code::DeadlineExceeded));
        let slow = StreamEnd::SlowConsumer { limit_ms: 5 }.status().unwrap();
        assert_eq!(slow.code(), Code::ResourceExhausted);
        assert!(slow.message().contains("5 ms"));
    }
}
