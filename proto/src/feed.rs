//! The feed's binary codec: MoldUDP64-style packets of fixed-layout
//! ITCH-style messages. Sans-I/O: encoding writes into a caller's buffer,
//! decoding borrows a datagram and never panics on any input.
//!
//! The byte-by-byte format is documented in `proto/FEED_FORMAT.md`; the
//! `layout` tests below pin every size written there.

use thiserror::Error;

/// Fixed-point price scale: a wire price of `1_234_500` is $123.45.
pub const PRICE_SCALE: i64 = 10_000;

/// Bytes in a packet header: session (10), sequence (8), count (2).
pub const HEADER_LEN: usize = 20;
/// Bytes in a message block's length prefix.
pub const BLOCK_PREFIX_LEN: usize = 2;
/// `count` value of an end-of-session packet.
pub const END_OF_SESSION: u16 = 0xFFFF;
/// Largest datagram the codec produces or accepts (fits a loopback MTU
/// of 64 KiB with room to spare; senders normally stay far below).
pub const MAX_PACKET_LEN: usize = 65_000;

/// Wire size of a [`Message::SymbolDirectory`] payload.
pub const SYMBOL_DIRECTORY_LEN: usize = 11;
/// Wire size of a [`Message::Quote`] payload.
pub const QUOTE_LEN: usize = 39;
/// Wire size of a [`Message::Trade`] payload.
pub const TRADE_LEN: usize = 27;

/// Wire size of a [`Message::TradingAction`] payload.
pub const TRADING_ACTION_LEN: usize = 16;
/// Wire size of a [`Message::SystemEvent`] payload.
pub const SYSTEM_EVENT_LEN: usize = 11;
/// Wire size of a [`Message::SnapshotBegin`] or [`Message::SnapshotEnd`] payload.
pub const SNAPSHOT_MARKER_LEN: usize = 15;
/// Wire size of a [`Message::SymbolSnapshot`] payload.
pub const SYMBOL_SNAPSHOT_LEN: usize = 80;

/// Version of the feed format this codec speaks (`FEED_FORMAT.md`).
///
/// Version 2 added the per-symbol sequence to `Q` and `T`. The MoldUDP64
/// header has no version field; a version is identified by its set of
/// message types and their fixed lengths, which the decoder checks
/// exactly, so a v1 packet (35-byte `Q`, 23-byte `T`) is rejected by this
/// codec as `bad_length`, never misread.
pub const FORMAT_VERSION: u8 = 2;

const TYPE_DIRECTORY: u8 = b'R';
const TYPE_QUOTE: u8 = b'Q';
const TYPE_TRADE: u8 = b'T';
const TYPE_TRADING_ACTION: u8 = b'H';
const TYPE_SYSTEM_EVENT: u8 = b'S';
const TYPE_SNAPSHOT_BEGIN: u8 = b'B';
const TYPE_SYMBOL_SNAPSHOT: u8 = b'X';
const TYPE_SNAPSHOT_END: u8 = b'E';

/// A feed session identifier: 10 ASCII bytes, space padded. A sender
/// restart starts a new session, which restarts sequence numbers at 1.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SessionId(pub [u8; 10]);

impl SessionId {
    /// Builds a session id from text, truncated or space-padded to 10 bytes.
    pub fn from_text(s: &str) -> Self {
        let mut b = [b' '; 10];
        for (d, c) in b.iter_mut().zip(s.bytes()) {
            *d = c;
        }
        SessionId(b)
    }

    /// The id as text, trailing spaces trimmed, when every byte is
    /// printable ASCII (what senders use); `None` otherwise.
    ///
    /// ```
    /// use quotecast_proto::feed::SessionId;
    /// assert_eq!(SessionId::from_text("S1").as_text(), Some("S1"));
    /// assert_eq!(SessionId([0xFF; 10]).as_text(), None);
    /// ```
    pub fn as_text(&self) -> Option<&str> {
        let end = self.0.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
        let t = &self.0[..end];
        t.iter().all(|b| (0x20..0x7F).contains(b)).then(|| std::str::from_utf8(t).ok()).flatten()
    }
}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionId({:?})", String::from_utf8_lossy(&self.0).trim_end())
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(String::from_utf8_lossy(&self.0).trim_end())
    }
}

/// A ticker: 1 to 8 bytes of `A-Z 0-9 . -`, space padded on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Symbol([u8; 8]);

impl Symbol {
    /// Parses a ticker, rejecting empty, over-long or out-of-alphabet text.
    ///
    /// # Errors
    /// [`SymbolError`] says which rule was broken.
    pub fn new(s: &str) -> Result<Self, SymbolError> {
        let b = s.as_bytes();
        if b.is_empty() {
            return Err(SymbolError::Empty);
        }
        if b.len() > 8 {
            return Err(SymbolError::TooLong(b.len()));
        }
        let mut out = [b' '; 8];
        for (i, &c) in b.iter().enumerate() {
            if !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'.' || c == b'-') {
                return Err(SymbolError::BadChar(c as char));
            }
            out[i] = c;
        }
        Ok(Symbol(out))
    }

    /// Parses the 8 wire bytes (space padded).
    fn from_wire(b: [u8; 8]) -> Result<Self, SymbolError> {
        let len = b.iter().position(|&c| c == b' ').unwrap_or(8);
        if b[len..].iter().any(|&c| c != b' ') {
            return Err(SymbolError::BadPadding);
        }
        let s = std::str::from_utf8(&b[..len]).map_err(|_| SymbolError::BadChar('?'))?;
        Symbol::new(s)
    }

    /// The ticker text without padding.
    pub fn as_str(&self) -> &str {
        let len = self.0.iter().position(|&c| c == b' ').unwrap_or(8);
        // Construction guarantees ASCII, so this cannot fail.
        std::str::from_utf8(&self.0[..len]).unwrap_or("")
    }

    /// The 8 space-padded wire bytes.
    pub fn wire(&self) -> [u8; 8] {
        self.0
    }
}

impl std::fmt::Debug for Symbol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Symbol({})", self.as_str())
    }
}

impl std::fmt::Display for Symbol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Symbol {
    type Err = SymbolError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Symbol::new(s)
    }
}

/// Why text is not a valid [`Symbol`].
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SymbolError {
    /// No characters.
    #[error("symbol is empty")]
    Empty,
    /// More than 8 bytes.
    #[error("symbol is {0} bytes long, at most 8 allowed")]
    TooLong(usize),
    /// A character outside `A-Z 0-9 . -`.
    #[error("symbol contains {0:?}; allowed are A-Z, 0-9, '.', '-'")]
    BadChar(char),
    /// Non-space bytes after the padding on the wire.
    #[error("symbol has bytes after its space padding")]
    BadPadding,
}

/// A symbol's trading state, as announced by a [`Message::TradingAction`]
/// (the ITCH `H` states plus quotation-only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TradingState {
    /// `H`: halted; no quotes or trades until a later action.
    Halted,
    /// `P`: paused (e.g. a volatility pause); no quotes or trades.
    Paused,
    /// `Q`: quotation only: quotes but no trades (e.g. before a reopening).
    QuotationOnly,
    /// `T`: trading normally. A symbol's state until an action says otherwise.
    #[default]
    Trading,
}

impl TradingState {
    /// The wire byte.
    pub fn to_byte(self) -> u8 {
        match self {
            TradingState::Halted => b'H',
            TradingState::Paused => b'P',
            TradingState::QuotationOnly => b'Q',
            TradingState::Trading => b'T',
        }
    }

    /// Parses the wire byte; `None` for anything else.
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            b'H' => TradingState::Halted,
            b'P' => TradingState::Paused,
            b'Q' => TradingState::QuotationOnly,
            b'T' => TradingState::Trading,
            _ => return None,
        })
    }

    /// Whether quotes may be sent in this state (trades only when `Trading`).
    pub fn quotes_allowed(self) -> bool {
        matches!(self, TradingState::Trading | TradingState::QuotationOnly)
    }
}

/// A 4-byte ASCII reason code of a trading action (ITCH style: `T1`
/// news pending, `LUDP` volatility pause, ...), space padded; all spaces
/// when there is no reason.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReasonCode(pub [u8; 4]);

impl ReasonCode {
    /// No reason: four spaces.
    pub const NONE: ReasonCode = ReasonCode(*b"    ");

    /// From text, truncated or space padded to 4 bytes; non-printable
    /// characters become `?` so the result always encodes.
    pub fn from_text(s: &str) -> Self {
        let mut b = [b' '; 4];
        for (d, c) in b.iter_mut().zip(s.bytes()) {
            *d = if c.is_ascii_graphic() { c } else { b'?' };
        }
        ReasonCode(b)
    }

    /// The text without trailing padding.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("????").trim_end()
    }

    fn valid(b: &[u8; 4]) -> bool {
        b.iter().all(|&c| c == b' ' || c.is_ascii_graphic())
    }
}

impl Default for ReasonCode {
    fn default() -> Self {
        ReasonCode::NONE
    }
}

impl std::fmt::Debug for ReasonCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReasonCode({:?})", self.as_str())
    }
}

/// What a [`Message::SystemEvent`] announces (ITCH `S` event codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SystemEventCode {
    /// `O`: start of messages: the first message of a session.
    StartOfMessages,
    /// `Q`: start of market hours: the market is open.
    StartOfMarketHours,
    /// `M`: end of market hours: the market is closed.
    EndOfMarketHours,
    /// `C`: end of messages: the last message of a session.
    EndOfMessages,
}

impl SystemEventCode {
    /// The wire byte.
    pub fn to_byte(self) -> u8 {
        match self {
            SystemEventCode::StartOfMessages => b'O',
            SystemEventCode::StartOfMarketHours => b'Q',
            SystemEventCode::EndOfMarketHours => b'M',
            SystemEventCode::EndOfMessages => b'C',
        }
    }

    /// Parses the wire byte; `None` for anything else.
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            b'O' => SystemEventCode::StartOfMessages,
            b'Q' => SystemEventCode::StartOfMarketHours,
            b'M' => SystemEventCode::EndOfMarketHours,
            b'C' => SystemEventCode::EndOfMessages,
            _ => return None,
        })
    }
}

/// The full state of one symbol on the snapshot channel, as of a live
/// feed sequence: apply it, then the live messages after `feed_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymbolSnapshot {
    /// Locate code (as bound by the directory).
    pub locate: u16,
    /// The ticker bound to it.
    pub symbol: Symbol,
    /// Live feed sequence this reflects: every live message with a
    /// sequence `<= feed_seq` is included, none after it.
    pub feed_seq: u64,
    /// The symbol's last per-symbol sequence (0 = no quote or trade yet).
    pub symbol_seq: u32,
    /// Trading state after the symbol's last trading action.
    pub state: TradingState,
    /// Reason code of that action (spaces if none).
    pub reason: ReasonCode,
    /// Timestamp of the last quote (0 = none).
    pub quote_ts: u64,
    /// Best bid price (fixed-point; 0 = no quote yet).
    pub bid_px: i64,
    /// Best bid size.
    pub bid_sz: u32,
    /// Best ask price (fixed-point).
    pub ask_px: i64,
    /// Best ask size.
    pub ask_sz: u32,
    /// Timestamp of the last trade (0 = none).
    pub trade_ts: u64,
    /// Last trade price (fixed-point; 0 = no trade yet).
    pub last_px: i64,
    /// Last trade size.
    pub last_sz: u32,
}

/// One feed message. Prices are fixed-point with [`PRICE_SCALE`]; `ts` is
/// the exchange timestamp in nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// Binds a locate code to a ticker for the rest of the session.
    SymbolDirectory {
        /// Feed-local symbol id used by the other messages.
        locate: u16,
        /// The ticker.
        symbol: Symbol,
    },
    /// New top of book.
    Quote {
        /// Symbol locate code.
        locate: u16,
        /// The symbol's own sequence in the session: 1 for its first quote
        /// or trade, +1 for each later one (like MDP3's RptSeq).
        symbol_seq: u32,
        /// Exchange timestamp (ns).
        ts: u64,
        /// Best bid price (fixed-point).
        bid_px: i64,
        /// Best bid size (shares).
        bid_sz: u32,
        /// Best ask price (fixed-point).
        ask_px: i64,
        /// Best ask size (shares).
        ask_sz: u32,
    },
    /// A trade print.
    Trade {
        /// Symbol locate code.
        locate: u16,
        /// The symbol's own sequence in the session (shared with its quotes).
        symbol_seq: u32,
        /// Exchange timestamp (ns).
        ts: u64,
        /// Trade price (fixed-point).
        px: i64,
        /// Trade size (shares).
        sz: u32,
    },
    /// A symbol's trading state changed (ITCH `H`, stock trading action).
    TradingAction {
        /// Symbol locate code.
        locate: u16,
        /// Exchange timestamp (ns).
        ts: u64,
        /// The new state.
        state: TradingState,
        /// Why (4 ASCII bytes, space padded).
        reason: ReasonCode,
    },
    /// A session-wide event (ITCH `S`): start/end of messages and of market
    /// hours.
    SystemEvent {
        /// Exchange timestamp (ns).
        ts: u64,
        /// What happened.
        event: SystemEventCode,
        /// The feed format version the sender speaks ([`FORMAT_VERSION`]).
        version: u8,
    },
    /// Snapshot channel: a cycle starts; `symbols` snapshots follow.
    SnapshotBegin {
        /// Cycle number, from 1, +1 per cycle.
        cycle: u32,
        /// Symbol snapshots in this cycle (every symbol once).
        symbols: u16,
        /// Live feed sequence when the cycle started (each snapshot has
        /// its own).
        feed_seq: u64,
    },
    /// Snapshot channel: one symbol's state.
    SymbolSnapshot(SymbolSnapshot),
    /// Snapshot channel: the cycle is complete.
    SnapshotEnd {
        /// The cycle's number (as in its begin).
        cycle: u32,
        /// Symbol snapshots sent in the cycle.
        symbols: u16,
        /// Live feed sequence when the cycle ended.
        feed_seq: u64,
    },
}

impl Message {
    /// Bytes this message's payload takes on the wire (without the prefix).
    pub fn wire_len(&self) -> usize {
        match self {
            Message::SymbolDirectory { .. } => SYMBOL_DIRECTORY_LEN,
            Message::Quote { .. } => QUOTE_LEN,
            Message::Trade { .. } => TRADE_LEN,
            Message::TradingAction { .. } => TRADING_ACTION_LEN,
            Message::SystemEvent { .. } => SYSTEM_EVENT_LEN,
            Message::SnapshotBegin { .. } | Message::SnapshotEnd { .. } => SNAPSHOT_MARKER_LEN,
            Message::SymbolSnapshot(_) => SYMBOL_SNAPSHOT_LEN,
        }
    }

    /// Appends the payload (no length prefix) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Message::SymbolDirectory { locate, symbol } => {
                out.push(TYPE_DIRECTORY);
                out.extend_from_slice(&locate.to_be_bytes());
                out.extend_from_slice(&symbol.wire());
            }
            Message::Quote { locate, symbol_seq, ts, bid_px, bid_sz, ask_px, ask_sz } => {
                out.push(TYPE_QUOTE);
                out.extend_from_slice(&locate.to_be_bytes());
                out.extend_from_slice(&symbol_seq.to_be_bytes());
                out.extend_from_slice(&ts.to_be_bytes());
                out.extend_from_slice(&bid_px.to_be_bytes());
                out.extend_from_slice(&bid_sz.to_be_bytes());
                out.extend_from_slice(&ask_px.to_be_bytes());
                out.extend_from_slice(&ask_sz.to_be_bytes());
            }
            Message::Trade { locate, symbol_seq, ts, px, sz } => {
                out.push(TYPE_TRADE);
                out.extend_from_slice(&locate.to_be_bytes());
                out.extend_from_slice(&symbol_seq.to_be_bytes());
                out.extend_from_slice(&ts.to_be_bytes());
                out.extend_from_slice(&px.to_be_bytes());
                out.extend_from_slice(&sz.to_be_bytes());
            }
            Message::TradingAction { locate, ts, state, reason } => {
                out.push(TYPE_TRADING_ACTION);
                out.extend_from_slice(&locate.to_be_bytes());
                out.extend_from_slice(&ts.to_be_bytes());
                out.push(state.to_byte());
                out.extend_from_slice(&reason.0);
            }
            Message::SystemEvent { ts, event, version } => {
                out.push(TYPE_SYSTEM_EVENT);
                out.extend_from_slice(&ts.to_be_bytes());
                out.push(event.to_byte());
                out.push(version);
            }
            Message::SnapshotBegin { cycle, symbols, feed_seq }
            | Message::SnapshotEnd { cycle, symbols, feed_seq } => {
                out.push(if matches!(self, Message::SnapshotBegin { .. }) {
                    TYPE_SNAPSHOT_BEGIN
                } else {
                    TYPE_SNAPSHOT_END
                });
                out.extend_from_slice(&cycle.to_be_bytes());
                out.extend_from_slice(&symbols.to_be_bytes());
                out.extend_from_slice(&feed_seq.to_be_bytes());
            }
            Message::SymbolSnapshot(s) => {
                out.push(TYPE_SYMBOL_SNAPSHOT);
                out.extend_from_slice(&s.locate.to_be_bytes());
                out.extend_from_slice(&s.symbol.wire());
                out.extend_from_slice(&s.feed_seq.to_be_bytes());
                out.extend_from_slice(&s.symbol_seq.to_be_bytes());
                out.push(s.state.to_byte());
                out.extend_from_slice(&s.reason.0);
                out.extend_from_slice(&s.quote_ts.to_be_bytes());
                out.extend_from_slice(&s.bid_px.to_be_bytes());
                out.extend_from_slice(&s.bid_sz.to_be_bytes());
                out.extend_from_slice(&s.ask_px.to_be_bytes());
                out.extend_from_slice(&s.ask_sz.to_be_bytes());
                out.extend_from_slice(&s.trade_ts.to_be_bytes());
                out.extend_from_slice(&s.last_px.to_be_bytes());
                out.extend_from_slice(&s.last_sz.to_be_bytes());
            }
        }
    }

    /// Decodes one payload (no length prefix); the length must be exact.
    ///
    /// # Errors
    /// [`DecodeError::UnknownType`], [`DecodeError::BadLength`] or
    /// [`DecodeError::BadSymbol`].
    pub fn decode(p: &[u8]) -> Result<Message, DecodeError> {
        let Some(&ty) = p.first() else {
            return Err(DecodeError::BadLength { msg_type: 0, len: 0 });
        };
        let want = match ty {
            TYPE_DIRECTORY => SYMBOL_DIRECTORY_LEN,
            TYPE_QUOTE => QUOTE_LEN,
            TYPE_TRADE => TRADE_LEN,
            TYPE_TRADING_ACTION => TRADING_ACTION_LEN,
            TYPE_SYSTEM_EVENT => SYSTEM_EVENT_LEN,
            TYPE_SNAPSHOT_BEGIN | TYPE_SNAPSHOT_END => SNAPSHOT_MARKER_LEN,
            TYPE_SYMBOL_SNAPSHOT => SYMBOL_SNAPSHOT_LEN,
            other => return Err(DecodeError::UnknownType(other)),
        };
        if p.len() != want {
            return Err(DecodeError::BadLength { msg_type: ty, len: p.len() });
        }
        let mut r = Reader(&p[1..]);
        Ok(match ty {
            TYPE_DIRECTORY => {
                let locate = r.u16();
                let symbol = Symbol::from_wire(r.array())?;
                Message::SymbolDirectory { locate, symbol }
            }
            TYPE_QUOTE => Message::Quote {
                locate: r.u16(),
                symbol_seq: r.u32(),
                ts: r.u64(),
                bid_px: r.i64(),
                bid_sz: r.u32(),
                ask_px: r.i64(),
                ask_sz: r.u32(),
            },
            TYPE_TRADE => {
                Message::Trade { locate: r.u16(), symbol_seq: r.u32(), ts: r.u64(), px: r.i64(), sz: r.u32() }
            }
            TYPE_TRADING_ACTION => {
                let (locate, ts) = (r.u16(), r.u64());
                let state = TradingState::from_byte(r.u8())
                    .ok_or(DecodeError::BadValue { msg_type: ty, field: "state" })?;
                let reason = r.array();
                if !ReasonCode::valid(&reason) {
                    return Err(DecodeError::BadValue { msg_type: ty, field: "reason" });
                }
                Message::TradingAction { locate, ts, state, reason: ReasonCode(reason) }
            }
            TYPE_SYSTEM_EVENT => {
                let ts = r.u64();
                let event = SystemEventCode::from_byte(r.u8())
                    .ok_or(DecodeError::BadValue { msg_type: ty, field: "event" })?;
                Message::SystemEvent { ts, event, version: r.u8() }
            }
            TYPE_SNAPSHOT_BEGIN => {
                Message::SnapshotBegin { cycle: r.u32(), symbols: r.u16(), feed_seq: r.u64() }
            }
            TYPE_SNAPSHOT_END => Message::SnapshotEnd { cycle: r.u32(), symbols: r.u16(), feed_seq: r.u64() },
            _ => {
                let (locate, symbol, feed_seq, symbol_seq) =
                    (r.u16(), Symbol::from_wire(r.array())?, r.u64(), r.u32());
                let state = TradingState::from_byte(r.u8())
                    .ok_or(DecodeError::BadValue { msg_type: ty, field: "state" })?;
                let reason = r.array();
                if !ReasonCode::valid(&reason) {
                    return Err(DecodeError::BadValue { msg_type: ty, field: "reason" });
                }
                Message::SymbolSnapshot(SymbolSnapshot {
                    locate,
                    symbol,
                    feed_seq,
                    symbol_seq,
                    state,
                    reason: ReasonCode(reason),
                    quote_ts: r.u64(),
                    bid_px: r.i64(),
                    bid_sz: r.u32(),
                    ask_px: r.i64(),
                    ask_sz: r.u32(),
                    trade_ts: r.u64(),
                    last_px: r.i64(),
                    last_sz: r.u32(),
                })
            }
        })
    }
}

/// Reads big-endian fields from a slice whose length was checked up front.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(&self.0[..N]);
        self.0 = &self.0[N..];
        a
    }
    fn u8(&mut self) -> u8 {
        u8::from_be_bytes(self.array())
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.array())
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.array())
    }
    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.array())
    }
    fn i64(&mut self) -> i64 {
        i64::from_be_bytes(self.array())
    }
}

/// Why a datagram was rejected. A rejected packet is skipped whole: none of
/// its messages are applied.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than the 20-byte header.
    #[error("packet of {0} bytes is shorter than the 20-byte header")]
    ShortHeader(usize),
    /// A message block runs past the end of the datagram.
    #[error("message {index} is truncated")]
    Truncated {
        /// Zero-based index of the message.
        index: u16,
    },
    /// Bytes left over after `count` messages.
    #[error("{0} trailing bytes after the last message")]
    TrailingBytes(usize),
    /// A heartbeat or end-of-session packet carrying a body.
    #[error("{0} bytes after a heartbeat or end-of-session header")]
    UnexpectedBody(usize),
    /// Message type byte not known to this codec.
    #[error("unknown message type 0x{0:02x}")]
    UnknownType(u8),
    /// Message length does not match its type's fixed layout.
    #[error("message type 0x{msg_type:02x} has length {len}")]
    BadLength {
        /// The type byte.
        msg_type: u8,
        /// The length found.
        len: usize,
    },
    /// A directory message with an invalid ticker.
    #[error("bad symbol: {0}")]
    BadSymbol(#[from] SymbolError),
    /// Sequence number plus count overflows u64.
    #[error("sequence number overflow")]
    SequenceOverflow,
    /// A field holding a value its type does not define (an unknown
    /// trading state or system event code, a non-ASCII reason).
    #[error("message type 0x{msg_type:02x} has an invalid {field}")]
    BadValue {
        /// The type byte.
        msg_type: u8,
        /// Name of the field.
        field: &'static str,
    },
}

impl DecodeError {
    /// A short, stable, low-cardinality name for metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::ShortHeader(_) => "short_header",
            DecodeError::Truncated { .. } => "truncated",
            DecodeError::TrailingBytes(_) => "trailing_bytes",
            DecodeError::UnexpectedBody(_) => "unexpected_body",
            DecodeError::UnknownType(_) => "unknown_type",
            DecodeError::BadLength { .. } => "bad_length",
            DecodeError::BadSymbol(_) => "bad_symbol",
            DecodeError::SequenceOverflow => "sequence_overflow",
            DecodeError::BadValue { .. } => "bad_value",
        }
    }
}

/// What a packet is, from its header's count field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// `count` messages starting at the header's sequence number.
    Data(u16),
    /// No messages; the header's sequence is the next one expected.
    Heartbeat,
    /// The session is over; the header's sequence is one past the last.
    EndOfSession,
}

/// A validated datagram. Every message in it decodes, so iterating it
/// cannot fail.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    /// Session the packet belongs to.
    pub session: SessionId,
    /// Sequence number of the first message (or the next expected, for
    /// heartbeats and end of session).
    pub seq: u64,
    /// Data, heartbeat or end of session.
    pub kind: PacketKind,
    body: &'a [u8],
}

impl<'a> Packet<'a> {
    /// Validates a whole datagram: header, every block's length and every
    /// message's layout. Nothing is returned for a packet that is wrong
    /// anywhere, so a consumer never applies half of a corrupt packet.
    ///
    /// # Errors
    /// The first [`DecodeError`] found.
    pub fn decode(buf: &'a [u8]) -> Result<Packet<'a>, DecodeError> {
        if buf.len() < HEADER_LEN {
            return Err(DecodeError::ShortHeader(buf.len()));
        }
        let mut r = Reader(buf);
        let session = SessionId(r.array());
        let seq = r.u64();
        let count = r.u16();
        let body = &buf[HEADER_LEN..];
        let kind = match count {
            0 => PacketKind::Heartbeat,
            END_OF_SESSION => PacketKind::EndOfSession,
            n => PacketKind::Data(n),
        };
        if let PacketKind::Data(n) = kind {
            seq.checked_add(u64::from(n)).ok_or(DecodeError::SequenceOverflow)?;
            let mut rest = body;
            for index in 0..n {
                let (msg, tail) = split_block(rest, index)?;
                Message::decode(msg)?;
                rest = tail;
            }
            if !rest.is_empty() {
                return Err(DecodeError::TrailingBytes(rest.len()));
            }
        } else if !body.is_empty() {
            return Err(DecodeError::UnexpectedBody(body.len()));
        }
        Ok(Packet { session, seq, kind, body })
    }

    /// Number of messages (0 for heartbeat and end of session).
    pub fn count(&self) -> u16 {
        match self.kind {
            PacketKind::Data(n) => n,
            _ => 0,
        }
    }

    /// The messages with their feed sequence numbers, in order.
    pub fn messages(&self) -> Messages<'a> {
        Messages { rest: self.body, next_seq: self.seq, left: self.count() }
    }
}

fn split_block(buf: &[u8], index: u16) -> Result<(&[u8], &[u8]), DecodeError> {
    if buf.len() < BLOCK_PREFIX_LEN {
        return Err(DecodeError::Truncated { index });
    }
    let len = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
    let rest = &buf[BLOCK_PREFIX_LEN..];
    if rest.len() < len {
        return Err(DecodeError::Truncated { index });
    }
    Ok(rest.split_at(len))
}

/// Iterator over a validated packet's `(feed sequence, message)` pairs.
#[derive(Debug, Clone)]
pub struct Messages<'a> {
    rest: &'a [u8],
    next_seq: u64,
    left: u16,
}

impl Iterator for Messages<'_> {
    type Item = (u64, Message);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        // The packet was validated in `Packet::decode`, so these succeed.
        let (msg, tail) = split_block(self.rest, 0).ok()?;
        let m = Message::decode(msg).ok()?;
        self.rest = tail;
        self.left -= 1;
        let seq = self.next_seq;
        self.next_seq += 1;
        Some((seq, m))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::from(self.left), Some(usize::from(self.left)))
    }
}

/// Builds datagrams for one session, numbering messages consecutively.
///
/// ```
/// use quotecast_proto::feed::{Message, Packet, PacketBuilder, SessionId};
/// let mut b = PacketBuilder::new(SessionId::from_text("S1"), 1, 1400);
/// assert!(b.push(&Message::Trade { locate: 1, symbol_seq: 1, ts: 5, px: 1_000_000, sz: 100 }));
/// let bytes = b.finish().to_vec();
/// let p = Packet::decode(&bytes).unwrap();
/// assert_eq!(p.count(), 1);
/// assert_eq!(b.next_seq(), 2);
/// ```
#[derive(Debug)]
pub struct PacketBuilder {
    session: SessionId,
    /// Sequence number of the next message pushed.
    next_seq: u64,
    max_len: usize,
    buf: Vec<u8>,
    /// The last finished datagram; swapped with `buf` so nothing allocates.
    out: Vec<u8>,
    count: u16,
}

impl PacketBuilder {
    /// A builder whose first message gets `first_seq`, producing datagrams
    /// of at most `max_len` bytes (clamped to `HEADER_LEN + 64 ..= MAX_PACKET_LEN`).
    pub fn new(session: SessionId, first_seq: u64, max_len: usize) -> Self {
        let max_len = max_len.clamp(HEADER_LEN + 64, MAX_PACKET_LEN);
        let mut b = PacketBuilder {
            session,
            next_seq: first_seq,
            max_len,
            buf: Vec::with_capacity(max_len),
            out: Vec::with_capacity(max_len),
            count: 0,
        };
        b.reset();
        b
    }

    fn reset(&mut self) {
        self.buf.clear();
        self.buf.extend_from_slice(&self.session.0);
        self.buf.extend_from_slice(&self.next_seq.to_be_bytes());
        self.buf.extend_from_slice(&0u16.to_be_bytes());
        self.count = 0;
    }

    /// Adds a message if it fits; returns `false` (and adds nothing) when
    /// the datagram is full, so the caller sends it with [`finish`](Self::finish) first.
    pub fn push(&mut self, m: &Message) -> bool {
        let need = BLOCK_PREFIX_LEN + m.wire_len();
        if self.buf.len() + need > self.max_len || self.count == END_OF_SESSION - 1 {
            return false;
        }
        self.buf.extend_from_slice(&(m.wire_len() as u16).to_be_bytes());
        m.encode(&mut self.buf);
        self.count += 1;
        true
    }

    /// Messages in the datagram being built.
    pub fn len(&self) -> u16 {
        self.count
    }

    /// True when no message has been pushed since the last `finish`.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Sequence number the next pushed message will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Session this builder numbers messages for.
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// Completes the datagram and returns its bytes; the builder starts a
    /// new one. With no message pushed this is a heartbeat.
    pub fn finish(&mut self) -> &[u8] {
        let count = self.count;
        self.buf[18..20].copy_from_slice(&count.to_be_bytes());
        self.next_seq += u64::from(count);
        std::mem::swap(&mut self.buf, &mut self.out);
        self.reset();
        &self.out
    }

    /// An end-of-session datagram: no more messages follow in this session.
    pub fn end_of_session(&self) -> [u8; HEADER_LEN] {
        header(self.session, self.next_seq, END_OF_SESSION)
    }
}

/// A MoldUDP64 retransmission request (`FEED_FORMAT.md`, "Retransmission"):
/// `count` messages of `session` from `seq`, in the 20-byte header layout.
///
/// ```
/// use quotecast_proto::feed::{RetransRequest, SessionId};
/// let r = RetransRequest { session: SessionId::from_text("S1"), seq: 42, count: 3 };
/// assert_eq!(RetransRequest::decode(&r.encode()), Ok(r));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetransRequest {
    /// Session the messages belong to.
    pub session: SessionId,
    /// First message wanted.
    pub seq: u64,
    /// Messages wanted, `1..=0xFFFE`.
    pub count: u16,
}

impl RetransRequest {
    /// Bytes of a request.
    pub const LEN: usize = HEADER_LEN;

    /// The request datagram.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        header(self.session, self.seq, self.count)
    }

    /// Parses a request datagram.
    ///
    /// # Errors
    /// [`DecodeError::ShortHeader`] or [`DecodeError::TrailingBytes`] for a
    /// datagram that is not 20 bytes; [`DecodeError::BadValue`] for a count
    /// of 0 or `0xFFFF`.
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        if b.len() < HEADER_LEN {
            return Err(DecodeError::ShortHeader(b.len()));
        }
        if b.len() > HEADER_LEN {
            return Err(DecodeError::TrailingBytes(b.len() - HEADER_LEN));
        }
        let mut r = Reader(b);
        let (session, seq, count) = (SessionId(r.array()), r.u64(), r.u16());
        if count == 0 || count == END_OF_SESSION {
            return Err(DecodeError::BadValue { msg_type: 0, field: "count" });
        }
        Ok(RetransRequest { session, seq, count })
    }
}

/// A 20-byte header-only datagram (heartbeat: `count` 0; end: `END_OF_SESSION`).
pub fn header(session: SessionId, seq: u64, count: u16) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..10].copy_from_slice(&session.0);
    h[10..18].copy_from_slice(&seq.to_be_bytes());
    h[18..20].copy_from_slice(&count.to_be_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sym(s: &str) -> Symbol {
        Symbol::new(s).unwrap()
    }

    fn samples() -> Vec<Message> {
        vec![
            Message::SymbolDirectory { locate: 7, symbol: sym("BRK.B") },
            Message::Quote {
                locate: 65535,
                symbol_seq: u32::MAX,
                ts: u64::MAX,
                bid_px: 1_234_500,
                bid_sz: 300,
                ask_px: 1_234_600,
                ask_sz: u32::MAX,
            },
            Message::Trade { locate: 0, symbol_seq: 1, ts: 1, px: -5, sz: 1 },
            Message::TradingAction {
                locate: 9,
                ts: 3,
                state: TradingState::Halted,
                reason: ReasonCode::from_text("T1"),
            },
            Message::SystemEvent {
                ts: 4,
                event: SystemEventCode::StartOfMarketHours,
                version: FORMAT_VERSION,
            },
            Message::SnapshotBegin { cycle: 1, symbols: 2, feed_seq: 99 },
            Message::SymbolSnapshot(snapshot()),
            Message::SnapshotEnd { cycle: 1, symbols: 2, feed_seq: 120 },
        ]
    }

    fn snapshot() -> SymbolSnapshot {
        SymbolSnapshot {
            locate: 0x0102,
            symbol: sym("BRK.B"),
            feed_seq: 0x0304,
            symbol_seq: 0x0506,
            state: TradingState::QuotationOnly,
            reason: ReasonCode::from_text("T3"),
            quote_ts: 7,
            bid_px: 8,
            bid_sz: 9,
            ask_px: 10,
            ask_sz: 11,
            trade_ts: 12,
            last_px: 13,
            last_sz: 14,
        }
    }

    /// Pins every size in FEED_FORMAT.md.
    #[test]
    fn layout() {
        for m in samples() {
            let mut v = Vec::new();
            m.encode(&mut v);
            assert_eq!(v.len(), m.wire_len(), "{m:?}");
        }
        assert_eq!(
            samples().iter().map(Message::wire_len).collect::<Vec<_>>(),
            [11, 39, 27, 16, 11, 15, 80, 15]
        );
        assert_eq!(header(SessionId::from_text("A"), 1, 0).len(), 20);
        let mut b = PacketBuilder::new(SessionId::from_text("A"), 1, 1400);
        assert!(b.push(&samples()[1]));
        assert_eq!(b.finish().len(), HEADER_LEN + 2 + QUOTE_LEN);
    }

    /// Pins the v2 field offsets of `Q` and `T` written in FEED_FORMAT.md.
    #[test]
    fn quote_and_trade_offsets() {
        let mut v = Vec::new();
        Message::Quote {
            locate: 0x0102,
            symbol_seq: 0x0304_0506,
            ts: 7,
            bid_px: 8,
            bid_sz: 9,
            ask_px: 10,
            ask_sz: 11,
        }
        .encode(&mut v);
        assert_eq!(v[..7], [b'Q', 1, 2, 3, 4, 5, 6]);
        assert_eq!((v[14], v[22], v[26], v[34], v[38]), (7, 8, 9, 10, 11));
        v.clear();
        Message::Trade { locate: 0x0102, symbol_seq: 0x0304_0506, ts: 7, px: 8, sz: 9 }.encode(&mut v);
        assert_eq!(v[..7], [b'T', 1, 2, 3, 4, 5, 6]);
        assert_eq!((v[14], v[22], v[26]), (7, 8, 9));
        // A v1 trade (23 bytes) is refused, not misread.
        let mut v1 = v.clone();
        v1.truncate(23);
        assert_eq!(Message::decode(&v1).unwrap_err(), DecodeError::BadLength { msg_type: b'T', len: 23 });
    }

    /// Pins the `H` and `S` offsets written in FEED_FORMAT.md and rejects
    /// values their fields do not define.
    #[test]
    fn status_offsets_and_values() {
        let mut v = Vec::new();
        Message::TradingAction {
            locate: 0x0102,
            ts: 3,
            state: TradingState::Paused,
            reason: ReasonCode::from_text("LUDP"),
        }
        .encode(&mut v);
        assert_eq!(v, [b"H\x01\x02".as_slice(), &[0, 0, 0, 0, 0, 0, 0, 3], b"PLUDP"].concat());
        let mut bad = v.clone();
        bad[11] = b'X';
        assert_eq!(Message::decode(&bad).unwrap_err().reason(), "bad_value");
        bad[11] = b'T';
        bad[12] = 0x07;
        assert_eq!(
            Message::decode(&bad).unwrap_err(),
            DecodeError::BadValue { msg_type: b'H', field: "reason" }
        );
        v.clear();
        Message::SystemEvent { ts: 5, event: SystemEventCode::EndOfMessages, version: 2 }.encode(&mut v);
        assert_eq!(v, [b"S".as_slice(), &[0, 0, 0, 0, 0, 0, 0, 5], b"C", &[2]].concat());
        v[9] = b'Z';
        assert_eq!(
            Message::decode(&v).unwrap_err(),
            DecodeError::BadValue { msg_type: b'S', field: "event" }
        );
        for s in
            [TradingState::Halted, TradingState::Paused, TradingState::QuotationOnly, TradingState::Trading]
        {
            assert_eq!(TradingState::from_byte(s.to_byte()), Some(s));
        }
        assert_eq!(ReasonCode::from_text("T1").as_str(), "T1");
        assert_eq!(ReasonCode::from_text("A\nBCDE").0, *b"A?BC");
    }

    /// Pins the snapshot-channel offsets written in FEED_FORMAT.md.
    #[test]
    fn snapshot_offsets() {
        let mut v = Vec::new();
        Message::SnapshotBegin { cycle: 0x0102_0304, symbols: 0x0506, feed_seq: 7 }.encode(&mut v);
        assert_eq!(v, [b"B".as_slice(), &[1, 2, 3, 4, 5, 6], &[0, 0, 0, 0, 0, 0, 0, 7]].concat());
        v.clear();
        Message::SymbolSnapshot(snapshot()).encode(&mut v);
        assert_eq!(v[..3], [b'X', 1, 2]);
        assert_eq!(&v[3..11], b"BRK.B   ");
        assert_eq!((v[17], v[18], v[21], v[22], v[23]), (3, 4, 5, 6, b'Q'));
        assert_eq!(&v[24..28], b"T3  ");
        // Each number field's last byte: quote_ts .. last_sz.
        assert_eq!([v[35], v[43], v[47], v[55], v[59], v[67], v[75], v[79]], [7, 8, 9, 10, 11, 12, 13, 14]);
        v[23] = b'?';
        assert_eq!(
            Message::decode(&v).unwrap_err(),
            DecodeError::BadValue { msg_type: b'X', field: "state" }
        );
    }

    #[test]
    fn retrans_requests() {
        let r = RetransRequest { session: SessionId::from_text("S1"), seq: 7, count: 2 };
        let b = r.encode();
        assert_eq!(b, header(r.session, 7, 2));
        assert_eq!(RetransRequest::decode(&b), Ok(r));
        assert_eq!(RetransRequest::decode(&b[..19]), Err(DecodeError::ShortHeader(19)));
        assert_eq!(RetransRequest::decode(&[&b[..], &[0]].concat()), Err(DecodeError::TrailingBytes(1)));
        for count in [0, END_OF_SESSION] {
            let bad = header(r.session, 7, count);
            assert_eq!(RetransRequest::decode(&bad).unwrap_err().reason(), "bad_value");
        }
    }

    #[test]
    fn round_trip_every_message_type() {
        let mut b = PacketBuilder::new(SessionId::from_text("SESS01"), 42, 1400);
        for m in samples() {
            assert!(b.push(&m));
        }
        let bytes = b.finish().to_vec();
        let p = Packet::decode(&bytes).unwrap();
        assert_eq!(p.session, SessionId::from_text("SESS01"));
        assert_eq!(p.seq, 42);
        assert_eq!(p.kind, PacketKind::Data(8));
        let got: Vec<_> = p.messages().collect();
        let want: Vec<_> = samples().into_iter().enumerate().map(|(i, m)| (42 + i as u64, m)).collect();
        assert_eq!(got, want);
        assert_eq!(b.next_seq(), 50);
    }

    #[test]
    fn heartbeat_and_end_of_session() {
        let s = SessionId::from_text("X");
        let hb = header(s, 9, 0);
        let p = Packet::decode(&hb).unwrap();
        assert_eq!((p.kind, p.seq, p.messages().count()), (PacketKind::Heartbeat, 9, 0));
        let b = PacketBuilder::new(s, 9, 1400);
        let p = Packet::decode(&b.end_of_session()).unwrap().kind;
        assert_eq!(p, PacketKind::EndOfSession);
    }

    #[test]
    fn builder_respects_max_len() {
        let mut b = PacketBuilder::new(SessionId::from_text("X"), 1, 200);
        let q = samples()[1];
        let mut n = 0;
        while b.push(&q) {
            n += 1;
        }
        assert_eq!(n, (200 - HEADER_LEN) / (2 + QUOTE_LEN));
        assert!(b.finish().len() <= 200);
        assert_eq!(b.next_seq(), 1 + n as u64);
        assert!(b.is_empty());
    }

    #[test]
    fn rejects_inconsistent_packets() {
        let mut b = PacketBuilder::new(SessionId::from_text("X"), 1, 1400);
        b.push(&samples()[1]);
        b.push(&samples()[2]);
        let good = b.finish().to_vec();
        let cases: Vec<(Vec<u8>, DecodeError)> = vec![
            (good[..10].to_vec(), DecodeError::ShortHeader(10)),
            (good[..good.len() - 1].to_vec(), DecodeError::Truncated { index: 1 }),
            ([&good[..], &[0u8]].concat(), DecodeError::TrailingBytes(1)),
            ([&header(SessionId::from_text("X"), 1, 0)[..], &[1u8]].concat(), DecodeError::UnexpectedBody(1)),
            (
                {
                    let mut g = good.clone();
                    g[HEADER_LEN + 2] = b'Z';
                    g
                },
                DecodeError::UnknownType(b'Z'),
            ),
            (
                {
                    let mut g = good.clone();
                    g[10..18].copy_from_slice(&u64::MAX.to_be_bytes());
                    g
                },
                DecodeError::SequenceOverflow,
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(Packet::decode(&bytes).unwrap_err(), want);
        }
    }

    #[test]
    fn symbols() {
        assert_eq!(sym("AAPL").as_str(), "AAPL");
        assert_eq!(Symbol::new("").unwrap_err(), SymbolError::Empty);
        assert_eq!(Symbol::new("ABCDEFGHI").unwrap_err(), SymbolError::TooLong(9));
        assert_eq!(Symbol::new("aapl").unwrap_err(), SymbolError::BadChar('a'));
        assert!(Symbol::from_wire(*b"AB  C   ").is_err());
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (any::<u16>(), "[A-Z0-9.-]{1,8}")
                .prop_map(|(locate, s)| Message::SymbolDirectory { locate, symbol: sym(&s) }),
            (
                any::<u16>(),
                any::<u32>(),
                any::<u64>(),
                any::<i64>(),
                any::<u32>(),
                any::<i64>(),
                any::<u32>()
            )
                .prop_map(|(locate, symbol_seq, ts, bid_px, bid_sz, ask_px, ask_sz)| {
                    Message::Quote { locate, symbol_seq, ts, bid_px, bid_sz, ask_px, ask_sz }
                }),
            (any::<u16>(), any::<u32>(), any::<u64>(), any::<i64>(), any::<u32>()).prop_map(
                |(locate, symbol_seq, ts, px, sz)| Message::Trade { locate, symbol_seq, ts, px, sz }
            ),
            (any::<u16>(), any::<u64>(), 0..4usize, "[ A-Z0-9]{4}").prop_map(|(locate, ts, s, r)| {
                let state = [
                    TradingState::Halted,
                    TradingState::Paused,
                    TradingState::QuotationOnly,
                    TradingState::Trading,
                ][s];
                Message::TradingAction { locate, ts, state, reason: ReasonCode::from_text(&r) }
            }),
            (any::<u64>(), 0..4usize, any::<u8>()).prop_map(|(ts, e, version)| {
                let event = [
                    SystemEventCode::StartOfMessages,
                    SystemEventCode::StartOfMarketHours,
                    SystemEventCode::EndOfMarketHours,
                    SystemEventCode::EndOfMessages,
                ][e];
                Message::SystemEvent { ts, event, version }
            }),
            (any::<u32>(), any::<u16>(), any::<u64>(), any::<bool>()).prop_map(
                |(cycle, symbols, feed_seq, end)| {
                    if end {
                        Message::SnapshotEnd { cycle, symbols, feed_seq }
                    } else {
                        Message::SnapshotBegin { cycle, symbols, feed_seq }
                    }
                }
            ),
            (
                any::<u16>(),
                "[A-Z0-9.-]{1,8}",
                any::<u64>(),
                any::<u32>(),
                any::<[i64; 3]>(),
                any::<[u32; 3]>(),
                any::<[u64; 2]>()
            )
                .prop_map(|(locate, s, feed_seq, symbol_seq, px, sz, ts)| {
                    Message::SymbolSnapshot(SymbolSnapshot {
                        locate,
                        symbol: sym(&s),
                        feed_seq,
                        symbol_seq,
                        state: TradingState::Halted,
                        reason: ReasonCode::from_text("LUDP"),
                        quote_ts: ts[0],
                        bid_px: px[0],
                        bid_sz: sz[0],
                        ask_px: px[1],
                        ask_sz: sz[1],
                        trade_ts: ts[1],
                        last_px: px[2],
                        last_sz: sz[2],
                    })
                }),
        ]
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_error(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(p) = Packet::decode(&bytes) {
                prop_assert_eq!(p.messages().count(), usize::from(p.count()));
            }
        }

        #[test]
        fn corrupted_valid_packets_never_panic(
            msgs in proptest::collection::vec(arb_message(), 1..20),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            cut in any::<usize>(),
        ) {
            let mut b = PacketBuilder::new(SessionId::from_text("P"), 1, MAX_PACKET_LEN);
            for m in &msgs { b.push(m); }
            let mut bytes = b.finish().to_vec();
            for (i, v) in flips { let n = bytes.len(); bytes[i % n] = v; }
            let n = bytes.len();
            bytes.truncate(cut % (n + 1));
            if let Ok(p) = Packet::decode(&bytes) {
                prop_assert_eq!(p.messages().count(), usize::from(p.count()));
            }
        }

        #[test]
        fn round_trip(msgs in proptest::collection::vec(arb_message(), 1..50), seq in 1u64..1<<40) {
            let mut b = PacketBuilder::new(SessionId::from_text("P"), seq, MAX_PACKET_LEN);
            for m in &msgs { prop_assert!(b.push(m)); }
            let bytes = b.finish().to_vec();
            let p = Packet::decode(&bytes).unwrap();
            let got: Vec<Message> = p.messages().map(|(_, m)| m).collect();
            prop_assert_eq!(got, msgs);
        }
    }
}
