//! Protobuf encoding of quote updates, done once per update.
//!
//! An update is encoded as one entry of `UpdateBatch.updates` (field 1:
//! tag, length, `QuoteUpdate` bytes). A frame is then the `ServerMessage`
//! header plus `ts_send` plus the concatenated entries, so every subscriber
//! shares the same bytes and a batch costs one copy per entry. Encoding is
//! hand-written against `prost::encoding` to avoid building a `String` per
//! tick; the tests check it decodes to exactly what prost's types say.

use crate::book::{Quote, UpdateKind};
use bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use quotecast_proto::feed::TradingState;
use quotecast_proto::v1;

/// `ServerMessage.updates` (field 1, length-delimited).
const SERVER_UPDATES_TAG: u8 = 0x0A;
/// `UpdateBatch.updates` (field 1, length-delimited).
const BATCH_ENTRY_TAG: u8 = 0x0A;
/// `UpdateBatch.ts_send` (field 2, varint).
const BATCH_TS_SEND_TAG: u8 = 0x10;

/// Per-subscriber flags that differ from the shared encoding.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flags {
    /// Sent as the subscribe snapshot.
    pub snapshot: bool,
    /// Updates of this symbol skipped before this one.
    pub skipped: u64,
    /// A requested resume was impossible.
    pub resume_failed: bool,
}

fn kind(k: UpdateKind) -> i32 {
    match k {
        UpdateKind::None => v1::UpdateKind::Unspecified as i32,
        UpdateKind::Quote => v1::UpdateKind::Quote as i32,
        UpdateKind::Trade => v1::UpdateKind::Trade as i32,
    }
}

fn varint_field(tag: u32, v: u64, buf: &mut impl BufMut) {
    if v != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(v, buf);
    }
}

fn varint_field_len(tag: u32, v: u64) -> usize {
    if v == 0 {
        0
    } else {
        prost::encoding::key_len(tag) + encoded_len_varint(v)
    }
}

/// The `(tag, value)` varint fields of a quote, in field order.
fn fields(q: &Quote, f: Flags) -> [(u32, u64); 16] {
    [
        (2, q.seq),
        (3, kind(q.kind) as u64),
        (4, q.bid_px as u64),
        (5, q.bid_sz),
        (6, q.ask_px as u64),
        (7, q.ask_sz),
        (8, q.last_px as u64),
        (9, q.last_sz),
        (10, q.ts_event as u64),
        (11, q.ts_recv as u64),
        (12, u64::from(f.snapshot)),
        (13, f.skipped),
        (14, u64::from(q.stale)),
        (15, u64::from(f.resume_failed)),
        (16, q.feed_seq),
        (17, trading_state(q.trading_state) as u64),
    ]
}

/// The client-facing trading state of a feed state.
pub fn trading_state(s: TradingState) -> v1::TradingState {
    match s {
        TradingState::Trading => v1::TradingState::Trading,
        TradingState::Halted => v1::TradingState::Halted,
        TradingState::Paused => v1::TradingState::Paused,
        TradingState::QuotationOnly => v1::TradingState::QuotationOnly,
    }
}

/// `QuoteUpdate.epoch` (field 18, length-delimited: two key bytes).
const EPOCH_TAG: u32 = 18;

/// The client-facing epoch of a quote: its feed session id as text
/// (empty before any session). A session id that is not printable ASCII
/// (the format allows any bytes; no sender uses them) is shown lossily.
pub fn epoch_text(q: &Quote) -> std::borrow::Cow<'_, str> {
    if q.epoch == quotecast_proto::feed::SessionId::default() {
        return "".into();
    }
    match q.epoch.as_text() {
        Some(t) => t.into(),
        None => q.epoch.to_string().into(),
    }
}

fn string_field_len(tag: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        prost::encoding::key_len(tag) + encoded_len_varint(s.len() as u64) + s.len()
    }
}

/// Encoded length of the `QuoteUpdate` message body.
fn body_len(q: &Quote, f: Flags) -> usize {
    let sym = q.symbol.as_str().len();
    let mut n = 1 + encoded_len_varint(sym as u64) + sym;
    for (tag, v) in fields(q, f) {
        n += varint_field_len(tag, v);
    }
    n + string_field_len(EPOCH_TAG, &epoch_text(q))
}

/// Appends one `UpdateBatch.updates` entry for `q` to `buf`.
pub fn entry(q: &Quote, f: Flags, buf: &mut BytesMut) {
    let body = body_len(q, f);
    buf.reserve(1 + encoded_len_varint(body as u64) + body);
    buf.put_u8(BATCH_ENTRY_TAG);
    encode_varint(body as u64, buf);
    let sym = q.symbol.as_str();
    encode_key(1, WireType::LengthDelimited, buf);
    encode_varint(sym.len() as u64, buf);
    buf.put_slice(sym.as_bytes());
    for (tag, v) in fields(q, f) {
        varint_field(tag, v, buf);
    }
    let epoch = epoch_text(q);
    if !epoch.is_empty() {
        encode_key(EPOCH_TAG, WireType::LengthDelimited, buf);
        encode_varint(epoch.len() as u64, buf);
        buf.put_slice(epoch.as_bytes());
    }
}

/// Encodes one entry for `q` into its own exactly-sized buffer.
///
/// Not carved from a shared arena on purpose: one queued entry of a stalled
/// connection would keep its whole arena chunk alive, so memory would follow
/// the feed rate times the slow-client timeout instead of the entries held.
pub fn shared_entry(q: &Quote, f: Flags) -> Bytes {
    let body = body_len(q, f);
    let mut buf = BytesMut::with_capacity(1 + encoded_len_varint(body as u64) + body);
    entry(q, f, &mut buf);
    buf.freeze()
}

/// Re-encodes a shared entry with per-subscriber flags appended. Protobuf
/// merges repeated occurrences of a scalar field (last wins), so the shared
/// body plus the extra fields decodes as the flagged update.
pub fn with_flags(shared: &[u8], f: Flags, buf: &mut BytesMut) {
    let Some((body_start, body_len)) = entry_body(shared) else {
        return;
    };
    let extra = varint_field_len(12, u64::from(f.snapshot))
        + varint_field_len(13, f.skipped)
        + varint_field_len(15, u64::from(f.resume_failed));
    let total = body_len + extra;
    buf.put_u8(BATCH_ENTRY_TAG);
    encode_varint(total as u64, buf);
    buf.put_slice(&shared[body_start..body_start + body_len]);
    varint_field(12, u64::from(f.snapshot), buf);
    varint_field(13, f.skipped, buf);
    varint_field(15, u64::from(f.resume_failed), buf);
}

/// Finds the body of an entry: (offset, length).
fn entry_body(e: &[u8]) -> Option<(usize, usize)> {
    let mut rest = e.get(1..)?;
    let before = rest.len();
    let len = prost::encoding::decode_varint(&mut rest).ok()? as usize;
    let start = 1 + before - rest.len();
    (rest.len() >= len).then_some((start, len))
}

/// Writes a `ServerMessage{updates: UpdateBatch{..}}` frame holding
/// `entries_len` bytes of entries that the caller appends right after.
pub fn frame_header(entries_len: usize, ts_send: i64, buf: &mut BytesMut) {
    let ts_len = 1 + encoded_len_varint(ts_send as u64);
    let batch_len = entries_len + ts_len;
    buf.put_u8(SERVER_UPDATES_TAG);
    encode_varint(batch_len as u64, buf);
    buf.put_u8(BATCH_TS_SEND_TAG);
    encode_varint(ts_send as u64, buf);
}

/// Upper bound of [`frame_header`]'s size.
pub const MAX_FRAME_HEADER: usize = 1 + 10 + 1 + 10;

/// Converts a book quote into the protobuf type (for gRPC and tests).
pub fn to_proto(q: &Quote, f: Flags) -> v1::QuoteUpdate {
    v1::QuoteUpdate {
        symbol: q.symbol.as_str().to_string(),
        seq: q.seq,
        kind: kind(q.kind),
        bid_px: q.bid_px,
        bid_sz: q.bid_sz,
        ask_px: q.ask_px,
        ask_sz: q.ask_sz,
        last_px: q.last_px,
        last_sz: q.last_sz,
        ts_event: q.ts_event,
        ts_recv: q.ts_recv,
        snapshot: f.snapshot,
        skipped: f.skipped,
        stale: q.stale,
        resume_failed: f.resume_failed,
        feed_seq: q.feed_seq,
        trading_state: trading_state(q.trading_state) as i32,
        epoch: epoch_text(q).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use quotecast_proto::feed::Symbol;

    fn quote() -> Quote {
        Quote {
            symbol: Symbol::new("BRK.B").unwrap(),
            seq: 123_456,
            epoch: quotecast_proto::feed::SessionId::from_text("S093000123"),
            kind: UpdateKind::Trade,
            bid_px: 4_123_400,
            bid_sz: 300,
            ask_px: 4_123_500,
            ask_sz: 0,
            last_px: -1,
            last_sz: 100,
            ts_event: 1_700_000_000_000_000_000,
            ts_recv: 1_700_000_000_000_001_000,
            feed_seq: 99,
            feed_symbol_seq: 7,
            trading_state: quotecast_proto::feed::TradingState::Halted,
            trading_reason: quotecast_proto::feed::ReasonCode::from_text("T1"),
            stale: true,
        }
    }

    fn decode_frame(frame: &[u8]) -> v1::UpdateBatch {
        match v1::ServerMessage::decode(frame).unwrap().body {
            Some(v1::server_message::Body::Updates(b)) => b,
            other => panic!("not updates: {other:?}"),
        }
    }

    #[test]
    fn hand_encoding_matches_prost() {
        for f in [
            Flags::default(),
            Flags { snapshot: true, skipped: 0, resume_failed: false },
            Flags { snapshot: false, skipped: 7, resume_failed: true },
        ] {
            let mut e = BytesMut::new();
            entry(&quote(), f, &mut e);
            let mut frame = BytesMut::new();
            frame_header(e.len(), 42, &mut frame);
            frame.extend_from_slice(&e);
            let b = decode_frame(&frame);
            assert_eq!(b.ts_send, 42);
            assert_eq!(b.updates, vec![to_proto(&quote(), f)]);
            // Byte-identical to prost's own encoding of the entry.
            let mut want = BytesMut::new();
            prost::encoding::message::encode(1, &to_proto(&quote(), f), &mut want);
            assert_eq!(e, want);
        }
    }

    #[test]
    fn flags_appended_to_a_shared_entry_override() {
        let shared = shared_entry(&quote(), Flags::default());
        let f = Flags { snapshot: true, skipped: 12, resume_failed: true };
        let mut e = BytesMut::new();
        with_flags(&shared, f, &mut e);
        let mut two = shared.to_vec();
        two.extend_from_slice(&e);
        let mut frame = BytesMut::new();
        frame_header(two.len(), 1, &mut frame);
        frame.extend_from_slice(&two);
        let b = decode_frame(&frame);
        assert_eq!(b.updates, vec![to_proto(&quote(), Flags::default()), to_proto(&quote(), f)]);
    }
}
