//! How a connection ends, so that the client learns why.
//!
//! A close frame is worth nothing if it never reaches the client: dropping
//! a socket that still has unread input makes the kernel send a reset,
//! which discards whatever the client had not read yet, the close frame
//! included; and a close frame written behind a MiB of queued updates is
//! never read by a client that is closed for being slow. So every close
//! goes the same way:
//!
//! 1. the session has already stopped its writer and closed its mailbox:
//!    what was queued but not yet in the socket is dropped;
//! 2. the rest of a partly written frame, if any, then the Close frame
//!    (ours, or tungstenite's echo of the client's) are written;
//! 3. what the client still sends is read and discarded until its Close
//!    reply arrives (or, after 1002/1007/1009, whose input cannot be parsed
//!    as frames any more, the write side is shut down and raw bytes are
//!    discarded until the client closes its side), and only then is the
//!    socket closed: no unread input, no reset.
//!
//! A Close from the client is simpler: tungstenite queued its echo, which is
//! flushed before the socket is closed.
//!
//! Steps 2 and 3 share one deadline (`--close-linger-ms`), so a client that
//! never reads cannot hold a closing socket longer than that.

use super::close_code;
use crate::conn::Conn;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Why a session ended, and so what is left to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The peer is gone (EOF, reset, a failed write): nothing can be said.
    Gone,
    /// The peer sent a Close frame; tungstenite queued the echo (or 1002
    /// in its place when the peer's code was not a valid one).
    PeerClosed {
        /// The echo is 1002: the peer's close code or payload was invalid.
        protocol_error: bool,
    },
    /// The gateway closes with this code and reason.
    Close(u16, String),
}

impl End {
    /// The metrics label of this end (see [`close_code::LABELS`]).
    pub fn label(&self) -> &'static str {
        match self {
            End::Gone => close_code::label(close_code::ABNORMAL),
            End::PeerClosed { protocol_error: true } => close_code::label(close_code::PROTOCOL),
            End::PeerClosed { protocol_error: false } => close_code::label(close_code::NORMAL),
            End::Close(code, _) => close_code::label(*code),
        }
    }

    /// The end of a session whose peer sent `frame`.
    pub fn peer_closed(frame: Option<&CloseFrame>) -> End {
        End::PeerClosed { protocol_error: frame.is_some_and(|f| f.code == CloseCode::Protocol) }
    }
}

/// A close message with `code` and `reason`, the reason cut (at a character
/// boundary) to fit a control frame's 125 bytes.
pub fn close_message(code: u16, reason: &str) -> Message {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame { code: CloseCode::from(code), reason: reason[..end].into() }))
}

/// Ends the connection as described in the module docs and returns the
/// label it ended with. Never takes longer than `linger`.
pub async fn finish(mut ws: WebSocketStream<Conn>, end: End, linger: Duration) -> &'static str {
    let label = end.label();
    let deadline = Instant::now() + linger;
    match end {
        End::Gone => {}
        End::PeerClosed { .. } => {
            // Flushing writes the echo tungstenite queued when it read the
            // peer's Close (after the rest of a partly written frame). The
            // peer sends nothing after its Close: the handshake is complete
            // and the server closes TCP first (RFC 6455 §7.1.1).
            let _ = tokio::time::timeout_at(deadline, ws.flush()).await;
            let _ = tokio::time::timeout_at(deadline, ws.get_mut().shutdown()).await;
        }
        End::Close(code, reason) => {
            tracing::debug!(code, reason, "closing connection");
            let sent = tokio::time::timeout_at(deadline, ws.send(close_message(code, &reason))).await;
            if !matches!(sent, Ok(Ok(()))) {
                // The client does not take even the close frame.
                return label;
            }
            if framing_broken(code) {
                // What follows in the input cannot be parsed as frames (the
                // rest of an oversized or malformed one): discard raw bytes.
                shut_and_drain(ws.get_mut(), deadline).await;
            } else {
                await_close_reply(&mut ws, deadline).await;
                let _ = tokio::time::timeout_at(deadline, ws.get_mut().shutdown()).await;
            }
        }
    }
    label
}

/// After these codes the client's input is not at a frame boundary.
fn framing_broken(code: u16) -> bool {
    matches!(code, close_code::TOO_BIG | close_code::PROTOCOL | close_code::INVALID_UTF8)
}

/// Reads (and discards) what the client still sends until its Close reply,
/// the end of its stream, or `deadline`.
async fn await_close_reply(ws: &mut WebSocketStream<Conn>, deadline: Instant) {
    let _ = tokio::time::timeout_at(deadline, async {
        while let Some(Ok(m)) = ws.next().await {
            if m.is_close() {
                break;
            }
        }
    })
    .await;
}

/// Ends the write side (FIN), then reads and discards what the peer still
/// sends until it closes its side or `deadline` passes, so that dropping
/// the socket afterwards does not reset the connection.
pub async fn shut_and_drain(tcp: &mut Conn, deadline: Instant) {
    let _ = tcp.shutdown().await;
    let mut scratch = [0u8; 2048];
    let _ = tokio::time::timeout_at(deadline, async {
        while let Ok(n) = tcp.read(&mut scratch).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_fits_a_control_frame_at_a_char_boundary() {
        let long = "é".repeat(100);
        let Message::Close(Some(f)) = close_message(4008, &long) else { panic!() };
        assert!(f.reason.len() <= 123);
        assert!(f.reason.chars().all(|c| c == 'é'));
        let Message::Close(Some(f)) = close_message(1000, "bye") else { panic!() };
        assert_eq!((u16::from(f.code), f.reason.as_str()), (1000, "bye"));
    }

    #[test]
    fn labels() {
        assert_eq!(End::Gone.label(), "client_gone");
        assert_eq!(End::peer_closed(None).label(), "normal");
        let bad = CloseFrame { code: CloseCode::Protocol, reason: "".into() };
        assert_eq!(End::peer_closed(Some(&bad)).label(), "protocol_error");
        assert_eq!(End::Close(4008, String::new()).label(), "slow_consumer");
    }
}
