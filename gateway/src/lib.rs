//! quotecast gateway: one tick's path from UDP multicast to WebSocket clients.
//!
//! # Layout
//! - [`config`] — every setting (flag + env var + default), validated.
//! - [`ingest`] — the feed socket thread: line A and optionally line B
//!   (A/B arbitration through one sequencer), decode, sequence tracking
//!   (gaps, duplicates, reorders, restarts), the single writer of the book.
//! - [`feed_nats`] — `--feed-nats`: NATS subjects (from `feed-relay`) turned
//!   back into datagrams on loopback socket pairs that ingest reads as if
//!   they were multicast.
//! - [`book`] — the quote book, one `ArcSwap` per symbol, lock-free readers.
//! - [`hub`] — per-symbol subscriber lists; each update encoded once and
//!   shared; bounded, conflating per-connection mailboxes.
//! - [`ws`] — accept, HTTP health, handshake, and the per-connection session
//!   (reader of requests, writer of batched frames).
//! - [`grpc`] — snapshots and streams over gRPC, read from the side.
//! - [`metrics`] — Prometheus `/metrics` on its own listener.
//! - [`histogram`] — fixed-bucket lock-free histograms (feed fill latency,
//!   send latency, gRPC), rendered by [`metrics`].
//! - [`ratelog`] — one warning line per interval for repeating faults.
//! - [`server`] — binds everything, starts the stages, runs shutdown.
//! - [`telemetry`] — logging.
//!
//! ```text
//! UDP line A (+ B) -> ingest (decode, arbitrate, sequence) -> book (ArcSwap per symbol)
//!                                      \-> hub (topic -> mailboxes) -> ws session writer -> client
//! ```

pub mod auth;
pub mod book;
pub mod config;
pub mod conn;
pub mod core;
pub mod drain;
pub mod feed_nats;
pub mod grpc;
pub mod histogram;
pub mod hub;
pub mod ingest;
pub mod metrics;
pub mod proxy;
pub mod ratelog;
pub mod reload;
pub mod server;
pub mod telemetry;
pub mod tls;
pub mod ws;

pub use crate::core::Core;
pub use config::Config;
pub use server::{start, Bound, Running};
