//! Logging setup.

use tracing_subscriber::EnvFilter;

/// Installs the global `tracing` subscriber with `filter` (EnvFilter
/// syntax); `RUST_LOG`, when set, wins.
///
/// # Errors
/// When the filter does not parse.
pub fn init(filter: &str) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(f) if !f.is_empty() => EnvFilter::try_new(f)?,
        _ => EnvFilter::try_new(filter)?,
    };
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).try_init();
    Ok(())
}
