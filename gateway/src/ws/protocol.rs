//! Client requests and server replies, in both encodings: binary protobuf
//! (`ClientMessage` / `ServerMessage`) and JSON text for humans. A request
//! is answered in the encoding it came in.

use crate::hub::mailbox::Control;
use prost::Message as _;
use quotecast_proto::v1::{self, client_message::Op, server_message::Body, ErrorCode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Longest accepted request id (bytes).
pub const MAX_ID_LEN: usize = 64;

/// How a request was encoded, and so how to answer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON text frame.
    Json,
    /// Protobuf binary frame.
    Binary,
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Add symbols, optionally resuming from per-symbol sequences.
    Subscribe {
        /// Symbols as sent.
        symbols: Vec<String>,
        /// Resume points.
        from_seq: BTreeMap<String, u64>,
        /// The epoch the resume points belong to (empty: each symbol's
        /// current one).
        from_epoch: String,
    },
    /// Remove symbols.
    Unsubscribe {
        /// Symbols as sent.
        symbols: Vec<String>,
    },
    /// List the subscription set.
    List,
    /// Application ping.
    Ping {
        /// Echoed timestamp.
        ts: i64,
    },
    /// A credential: the first one, or a fresh one before expiry.
    Auth {
        /// JWT or API key.
        token: String,
    },
}

/// A request with its id and encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Client id, echoed in the reply.
    pub id: String,
    /// What was asked.
    pub request: Request,
    /// How to answer.
    pub format: Format,
}

/// A request that could not be parsed; answered with `BAD_REQUEST`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BadRequest {
    /// The id, when it could be read.
    pub id: String,
    /// What was wrong.
    pub message: String,
    /// How to answer.
    pub format: Format,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRequest {
    op: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    symbols: Option<Vec<String>>,
    #[serde(default)]
    from_seq: Option<BTreeMap<String, u64>>,
    #[serde(default)]
    from_epoch: Option<String>,
    #[serde(default)]
    ts: Option<i64>,
    #[serde(default)]
    token: Option<String>,
}

fn check_id(id: String, format: Format) -> Result<String, BadRequest> {
    if id.len() > MAX_ID_LEN {
        return Err(BadRequest {
            id: String::new(),
            message: format!("id longer than {MAX_ID_LEN} bytes"),
            format,
        });
    }
    Ok(id)
}

/// Parses a JSON text request such as
/// `{"op":"subscribe","symbols":["AAPL"],"id":"1"}`.
///
/// # Errors
/// [`BadRequest`] naming what is wrong.
pub fn parse_text(text: &str) -> Result<Envelope, BadRequest> {
    let bad = |id: &str, message: String| BadRequest { id: id.to_string(), message, format: Format::Json };
    let r: JsonRequest =
        serde_json::from_str(text).map_err(|e| bad("", format!("invalid JSON request: {e}")))?;
    let id = check_id(r.id.unwrap_or_default(), Format::Json)?;
    let request = match r.op.as_str() {
        "subscribe" => Request::Subscribe {
            symbols: r.symbols.ok_or_else(|| bad(&id, "subscribe needs \"symbols\"".into()))?,
            from_seq: r.from_seq.unwrap_or_default(),
            from_epoch: r.from_epoch.unwrap_or_default(),
        },
        "unsubscribe" => Request::Unsubscribe {
            symbols: r.symbols.ok_or_else(|| bad(&id, "unsubscribe needs \"symbols\"".into()))?,
        },
        "list" => Request::List,
        "ping" => Request::Ping { ts: r.ts.unwrap_or_default() },
        "auth" => Request::Auth { token: r.token.ok_or_else(|| bad(&id, "auth needs \"token\"".into()))? },
        other => {
            return Err(bad(
                &id,
                format!("unknown op {other:?}; expected subscribe, unsubscribe, list, ping or auth"),
            ))
        }
    };
    Ok(Envelope { id, request, format: Format::Json })
}

/// Parses a binary `ClientMessage`.
///
/// # Errors
/// [`BadRequest`] when the bytes are not a `ClientMessage` with an op.
pub fn parse_binary(bytes: &[u8]) -> Result<Envelope, BadRequest> {
    let format = Format::Binary;
    let m = v1::ClientMessage::decode(bytes).map_err(|e| BadRequest {
        id: String::new(),
        message: format!("invalid protobuf ClientMessage: {e}"),
        format,
    })?;
    let id = check_id(m.id, format)?;
    let request = match m.op {
        Some(Op::Subscribe(s)) => Request::Subscribe {
            symbols: s.symbols,
            from_seq: s.from_seq.into_iter().collect(),
            from_epoch: s.from_epoch,
        },
        Some(Op::Unsubscribe(u)) => Request::Unsubscribe { symbols: u.symbols },
        Some(Op::List(_)) => Request::List,
        Some(Op::Ping(p)) => Request::Ping { ts: p.ts },
        Some(Op::Auth(a)) => Request::Auth { token: a.token },
        None => return Err(BadRequest { id, message: "ClientMessage has no op".into(), format }),
    };
    Ok(Envelope { id, request, format })
}

/// A reply to one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Result of a subscribe or unsubscribe.
    Ack(v1::Ack),
    /// The request failed as a whole.
    Error(v1::Error),
    /// Answer to a ping.
    Pong(v1::Pong),
    /// The subscription set.
    Subscriptions(v1::Subscriptions),
    /// Who the connection is (a reply to `auth`, or an expiry warning).
    Authenticated(v1::Authenticated),
}

/// The JSON spelling of an error code (`UNKNOWN_SYMBOL`, ...).
pub fn code_name(code: ErrorCode) -> &'static str {
    let name = code.as_str_name();
    name.strip_prefix("ERROR_CODE_").unwrap_or(name)
}

#[derive(Serialize)]
struct JsonRejection<'a> {
    symbol: &'a str,
    code: &'static str,
    reason: &'a str,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum JsonReply<'a> {
    Ack { id: &'a str, accepted: &'a [String], rejected: Vec<JsonRejection<'a>> },
    Error { id: &'a str, code: &'static str, message: &'a str, retry_after_ms: u64 },
    Pong { id: &'a str, ts: i64 },
    Subscriptions { id: &'a str, symbols: &'a [String] },
    Authenticated { id: &'a str, subject: &'a str, expires_at_ms: u64, expiring: bool },
}

impl Reply {
    /// The WebSocket message carrying this reply in `format`.
    pub fn encode(&self, format: Format) -> Control {
        match format {
            Format::Binary => {
                let body = match self.clone() {
                    Reply::Ack(a) => Body::Ack(a),
                    Reply::Error(e) => Body::Error(e),
                    Reply::Pong(p) => Body::Pong(p),
                    Reply::Subscriptions(s) => Body::Subscriptions(s),
                    Reply::Authenticated(a) => Body::Authenticated(a),
                };
                Control::Binary(v1::ServerMessage { body: Some(body) }.encode_to_vec().into())
            }
            Format::Json => {
                let j = match self {
                    Reply::Ack(a) => JsonReply::Ack {
                        id: &a.id,
                        accepted: &a.accepted,
                        rejected: a
                            .rejected
                            .iter()
                            .map(|r| JsonRejection {
                                symbol: &r.symbol,
                                code: code_name(r.code()),
                                reason: &r.reason,
                            })
                            .collect(),
                    },
                    Reply::Error(e) => JsonReply::Error {
                        id: &e.id,
                        code: code_name(e.code()),
                        message: &e.message,
                        retry_after_ms: e.retry_after_ms,
                    },
                    Reply::Pong(p) => JsonReply::Pong { id: &p.id, ts: p.ts },
                    Reply::Subscriptions(s) => JsonReply::Subscriptions { id: &s.id, symbols: &s.symbols },
                    Reply::Authenticated(a) => JsonReply::Authenticated {
                        id: &a.id,
                        subject: &a.subject,
                        expires_at_ms: a.expires_at_ms,
                        expiring: a.expiring,
                    },
                };
                // Serializing these plain structs cannot fail.
                Control::Text(serde_json::to_string(&j).unwrap_or_default())
            }
        }
    }

    /// An error reply.
    pub fn error(id: &str, code: ErrorCode, message: impl Into<String>, retry_after_ms: u64) -> Reply {
        Reply::Error(v1::Error {
            id: id.to_string(),
            code: code as i32,
            message: message.into(),
            retry_after_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_requests() {
        let e = parse_text(r#"{"op":"subscribe","symbols":["AAPL","MSFT"],"id":"7","from_seq":{"AAPL":3}}"#)
            .unwrap();
        assert_eq!(e.id, "7");
        assert_eq!(
            e.request,
            Request::Subscribe {
                symbols: vec!["AAPL".into(), "MSFT".into()],
                from_seq: [("AAPL".to_string(), 3)].into_iter().collect(),
                from_epoch: String::new(),
            }
        );
        assert_eq!(parse_text(r#"{"op":"list"}"#).unwrap().request, Request::List);
        assert_eq!(parse_text(r#"{"op":"ping","ts":5}"#).unwrap().request, Request::Ping { ts: 5 });
        assert_eq!(
            parse_text(r#"{"op":"auth","token":"k"}"#).unwrap().request,
            Request::Auth { token: "k".into() }
        );
    }

    #[test]
    fn bad_json_is_explained() {
        for (text, want) in [
            ("not json", "invalid JSON"),
            (r#"{"op":"subscribe"}"#, "needs \"symbols\""),
            (r#"{"op":"buy","id":"x"}"#, "unknown op"),
            (r#"{"op":"list","extra":1}"#, "unknown field"),
            (r#"{"op":"subscribe","symbols":"AAPL"}"#, "invalid JSON"),
        ] {
            let e = parse_text(text).unwrap_err();
            assert!(e.message.contains(want), "{text}: {}", e.message);
        }
        assert_eq!(parse_text(r#"{"op":"buy","id":"x"}"#).unwrap_err().id, "x");
        let long = format!(r#"{{"op":"list","id":"{}"}}"#, "x".repeat(65));
        assert!(parse_text(&long).is_err());
    }

    #[test]
    fn binary_requests() {
        let m = v1::ClientMessage {
            id: "9".into(),
            op: Some(Op::Unsubscribe(v1::Unsubscribe { symbols: vec!["IBM".into()] })),
        };
        let e = parse_binary(&m.encode_to_vec()).unwrap();
        assert_eq!((e.id.as_str(), e.format), ("9", Format::Binary));
        assert!(parse_binary(&[0xFF, 0xFF, 0xFF]).is_err());
        assert!(parse_binary(&v1::ClientMessage::default().encode_to_vec())
            .unwrap_err()
            .message
            .contains("no op"));
    }

    #[test]
    fn replies_in_both_formats() {
        let r = Reply::Ack(v1::Ack {
            id: "1".into(),
            accepted: vec!["AAPL".into()],
            rejected: vec![v1::Rejection {
                symbol: "ZZZZ".into(),
                code: ErrorCode::UnknownSymbol as i32,
                reason: "not in directory".into(),
            }],
        });
        let Control::Text(t) = r.encode(Format::Json) else { panic!("text expected") };
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        assert_eq!(v["type"], "ack");
        assert_eq!(v["rejected"][0]["code"], "UNKNOWN_SYMBOL");
        let Control::Binary(b) = r.encode(Format::Binary) else { panic!("binary expected") };
        let m = v1::ServerMessage::decode(b).unwrap();
        assert!(matches!(m.body, Some(Body::Ack(a)) if a.accepted == ["AAPL"]));
    }
}
