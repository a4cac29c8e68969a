//! Prometheus metrics (issue 4): not implemented yet; the listener is
//! bound and held until shutdown so the port is reserved.

use crate::server::Core;
use std::sync::Arc;

/// The tick-to-send latency histogram handle given to the WebSocket stats.
pub fn send_latency_histogram() -> metrics::Histogram {
    metrics::Histogram::noop()
}

/// Serves `/metrics` on `listener` until shutdown.
///
/// # Errors
/// When the server fails.
pub async fn serve(listener: tokio::net::TcpListener, core: Arc<Core>) -> anyhow::Result<()> {
    let _listener = listener;
    core.shutdown.cancelled().await;
    Ok(())
}
