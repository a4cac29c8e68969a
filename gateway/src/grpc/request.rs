//! Parsing what a caller sends: symbol lists, page tokens and the
//! `grpc-timeout` deadline. Pure functions, no I/O.

use super::error::CallError;
use quotecast_proto::feed::Symbol;
use std::time::Duration;

/// Longest symbol text quoted back in an error message.
const MAX_ECHO: usize = 32;

/// Parses requested symbol texts, in order, without duplicates.
///
/// # Errors
/// [`CallError::TooManySymbols`] over `max`, [`CallError::InvalidSymbol`]
/// for the first text that is not a valid symbol.
pub fn symbols(texts: &[String], max: usize) -> Result<Vec<Symbol>, CallError> {
    if texts.len() > max {
        return Err(CallError::TooManySymbols { count: texts.len(), max });
    }
    let mut out: Vec<Symbol> = Vec::with_capacity(texts.len());
    for t in texts {
        let s = Symbol::new(t).map_err(|e| CallError::InvalidSymbol {
            symbol: t.chars().take(MAX_ECHO).collect(),
            reason: e.to_string(),
        })?;
        // Lists are short (capped above); a linear scan beats hashing here.
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

/// Opaque cursor of the all-symbols GetSnapshot: the next symbol id to
/// read, bound to one gateway instance. Symbol ids are dense, assigned in
/// order of first appearance and never reused, so an id cursor is stable:
/// no symbol is skipped or repeated across pages, and symbols that appear
/// meanwhile come on later pages. A restarted gateway numbers symbols
/// anew, so its tokens carry the instance and old ones are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageToken {
    /// Instance the token belongs to.
    pub instance: u64,
    /// First symbol id of the next page.
    pub next: u32,
}

impl PageToken {
    /// Text form: 16 hex digits of instance, 8 of the next id.
    pub fn encode(&self) -> String {
        format!("{:016x}{:08x}", self.instance, self.next)
    }

    /// Parses a token and checks it was issued by `instance`.
    ///
    /// # Errors
    /// [`CallError::BadPageToken`] for anything else.
    pub fn decode(text: &str, instance: u64) -> Result<PageToken, CallError> {
        let bad = || CallError::BadPageToken(text.chars().take(MAX_ECHO).collect());
        if text.len() != 24 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let inst = u64::from_str_radix(&text[..16], 16).map_err(|_| bad())?;
        let next = u32::from_str_radix(&text[16..], 16).map_err(|_| bad())?;
        if inst != instance {
            return Err(bad());
        }
        Ok(PageToken { instance, next })
    }
}

/// Parses a `grpc-timeout` header value: 1-8 ASCII digits and a unit
/// (H, M, S, m, u, n). `None` when absent or malformed (a malformed
/// deadline is ignored, as tonic's own server does).
pub fn grpc_timeout(value: Option<&str>) -> Option<Duration> {
    let v = value?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn symbols_are_checked_capped_and_deduplicated() {
        let got = symbols(&strings(&["AAPL", "BRK.B", "AAPL"]), 3).unwrap();
        assert_eq!(got.iter().map(|s| s.as_str()).collect::<Vec<_>>(), vec!["AAPL", "BRK.B"]);
        assert_eq!(
            symbols(&strings(&["A", "B", "C"]), 2),
            Err(CallError::TooManySymbols { count: 3, max: 2 })
        );
        for bad in ["", "aapl", "TOOLONGSYM", "A B"] {
            match symbols(&strings(&["MSFT", bad]), 10) {
                Err(CallError::InvalidSymbol { symbol, .. }) => assert_eq!(symbol, bad),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn page_tokens_round_trip_and_refuse_strangers() {
        let t = PageToken { instance: 0xDEAD_BEEF_0123, next: 500 };
        assert_eq!(PageToken::decode(&t.encode(), t.instance), Ok(t));
        assert!(PageToken::decode(&t.encode(), 7).is_err(), "another instance");
        for bad in ["", "xyz", "00000000000000000000000g", "0000000000000000000000001"] {
            assert!(PageToken::decode(bad, 0).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(grpc_timeout(Some("100m")), Some(Duration::from_millis(100)));
        assert_eq!(grpc_timeout(Some("2S")), Some(Duration::from_secs(2)));
        assert_eq!(grpc_timeout(Some("1H")), Some(Duration::from_secs(3600)));
        assert_eq!(grpc_timeout(Some("3M")), Some(Duration::from_secs(180)));
        assert_eq!(grpc_timeout(Some("7u")), Some(Duration::from_micros(7)));
        assert_eq!(grpc_timeout(Some("9n")), Some(Duration::from_nanos(9)));
        for bad in [None, Some(""), Some("m"), Some("123456789m"), Some("1x"), Some("-1S"), Some("1.5S")] {
            assert_eq!(grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
