//! The shared state every stage after ingest reads: the book, the hub,
//! the counters, the config, the shutdown and drain signals. A leaf of the
//! module tree: the sessions, the gRPC service and the metrics import it,
//! and only `server` (the wiring) builds it, so nothing imports upward.

use crate::book::Book;
use crate::config::Config;
use crate::hub::Hub;
use crate::ingest::FeedStats;
use crate::ws::WsStats;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What the WebSocket sessions and the side services (gRPC, metrics) read.
/// None of them writes to the book or the hub except through a
/// subscription, like a client; only the ingest thread writes.
pub struct Core {
    /// The quote book.
    pub book: Arc<Book>,
    /// The hub (for streaming subscriptions).
    pub hub: Arc<Hub>,
    /// Feed counters and health.
    pub feed: Arc<FeedStats>,
    /// WebSocket counters.
    pub ws: Arc<WsStats>,
    /// The whole configuration.
    pub config: Config,
    /// Who may connect and what each may see.
    pub auth: Arc<crate::auth::Authenticator>,
    /// TLS for the client ports (`None`: plain).
    pub tls: Option<crate::tls::Tls>,
    /// Balancers whose PROXY headers are believed (`--trusted-proxies`).
    pub trusted: crate::proxy::Trusted,
    /// This node's name (`--node-name`, else the host name).
    pub node: String,
    /// Cancelled on shutdown.
    pub shutdown: CancellationToken,
    /// Draining out of a fleet (SIGTERM): not ready, then clients closed
    /// at their turns.
    pub drain: crate::drain::Drain,
    /// This gateway's metrics (rendered by `/metrics`; the gRPC server
    /// attaches `metrics.grpc_layer()`).
    pub metrics: Arc<crate::metrics::Telemetry>,
}

impl Core {
    /// Whether to look ready (`/readyz`, gRPC health), and why not: the
    /// feed must be complete and the node not draining.
    pub fn readiness(&self) -> (bool, String) {
        if self.drain.is_draining() {
            return (false, "draining: closing clients for a restart; use another node".into());
        }
        self.feed.readiness()
    }

    /// [`readiness`](Self::readiness) without the explanation.
    pub fn ready(&self) -> bool {
        !self.drain.is_draining() && self.feed.ready()
    }
}
