//! gRPC service (issue 3): not implemented yet; the listener is bound and
//! held until shutdown so the port is reserved.

use crate::server::Core;
use std::sync::Arc;

/// Serves gRPC on `listener` until shutdown.
///
/// # Errors
/// When the server fails.
pub async fn serve(listener: tokio::net::TcpListener, core: Arc<Core>) -> anyhow::Result<()> {
    let _listener = listener;
    core.shutdown.cancelled().await;
    Ok(())
}
