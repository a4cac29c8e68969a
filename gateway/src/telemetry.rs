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
    // Logs go to stderr so stdout stays for what the user asked for (the
    // connect line); colours only on a terminal.
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    Ok(())
}
