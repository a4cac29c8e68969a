//! Wire contracts of quotecast, shared by every crate.
//!
//! # Layout
//! - [`feed`]: the feed's binary codec (MoldUDP64-style packets of
//!   fixed-layout messages), sans-I/O; byte layout in `FEED_FORMAT.md`.
//! - [`v1`]: protobuf messages for WebSocket clients and the gRPC service
//!   (package `quotecast.v1`), generated from `proto/quotecast/v1/*.proto`.
//! - [`FILE_DESCRIPTOR_SET`]: the compiled descriptors, for gRPC reflection.
//!
//! ```text
//! feed-sim --(feed::PacketBuilder)--> UDP --(feed::Packet::decode)--> gateway
//! gateway --(v1::ServerMessage, protobuf)--> WebSocket / gRPC clients
//! ```

pub mod feed;

/// The one clock of every timestamp in these contracts (`ts_event`,
/// `ts_recv`, `ts_send`, ...): wall-clock nanoseconds since the Unix
/// epoch, shared by the gateway, the simulator and the load generator so
/// their latencies subtract.
pub mod clock {
    use std::time::{SystemTime, UNIX_EPOCH};

    /// Wall clock in nanoseconds since the Unix epoch (0 if the clock is
    /// before 1970).
    pub fn now_ns() -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
    }
}

/// Generated protobuf types and gRPC stubs for package `quotecast.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("quotecast.v1");
}

/// Encoded `FileDescriptorSet` of every quotecast `.proto`, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/quotecast_descriptor.bin"));

pub use feed::PRICE_SCALE;
