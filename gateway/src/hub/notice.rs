//! Changes told to clients about symbols that are not updates: feed
//! health (`Status`) and exchange trading state (`TradingStatus`). Both
//! writers (WebSocket sessions and gRPC streams) group a run of equal
//! notices into one message; this module is that one grouping.

use crate::book::{Book, SymbolId};
use crate::hub::encode;
use quotecast_proto::clock::now_ns;
use quotecast_proto::feed::{ReasonCode, TradingState};
use quotecast_proto::v1::{self, status};

/// One change of one kind, for some symbols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// Feed health changed.
    Status(status::State, status::Reason),
    /// The exchange changed the trading state.
    Trading(TradingState, ReasonCode),
}

/// A grouped notice, ready to wrap in the writer's message type.
#[derive(Debug, Clone, PartialEq)]
pub enum Grouped {
    /// For `ServerMessage.status` / `StreamQuotesResponse.status`.
    Status(v1::Status),
    /// For `ServerMessage.trading` / `StreamQuotesResponse.trading`.
    Trading(v1::TradingStatus),
}

/// Emits one message per run of equal notices in `pending` (in order),
/// naming the run's symbols, and empties it.
pub fn flush(pending: &mut Vec<(Notice, SymbolId)>, book: &Book, mut emit: impl FnMut(Grouped)) {
    let mut i = 0;
    while i < pending.len() {
        let notice = pending[i].0;
        let mut symbols = Vec::new();
        while i < pending.len() && pending[i].0 == notice {
            if let Some(n) = book.name(pending[i].1) {
                symbols.push(n.as_str().to_string());
            }
            i += 1;
        }
        let ts = now_ns();
        emit(match notice {
            Notice::Status(state, reason) => {
                Grouped::Status(v1::Status { state: state as i32, reason: reason as i32, symbols, ts })
            }
            Notice::Trading(state, reason) => Grouped::Trading(v1::TradingStatus {
                state: encode::trading_state(state) as i32,
                reason: reason.as_str().to_string(),
                symbols,
                ts,
            }),
        });
    }
    pending.clear();
}
