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

/// Generated protobuf types and gRPC stubs for package `quotecast.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("quotecast.v1");
}

/// Encoded `FileDescriptorSet` of every quotecast `.proto`, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/quotecast_descriptor.bin"));

pub use feed::PRICE_SCALE;
