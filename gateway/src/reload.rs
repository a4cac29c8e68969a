//! Files the gateway re-reads while it runs (key files, certificates):
//! one loop that looks every interval, logs a change once, and a file
//! that no longer loads once per bad version, not once per look.

use std::path::Path;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// A file's modification time, the change a reload looks for (`None`
/// while it cannot be read).
pub fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Calls `reload` every `every` until `stop`: `Ok(true)` means the files
/// changed and were taken, `Ok(false)` nothing changed, `Err` they changed
/// but cannot be used (the previous version stays in force).
pub async fn watch<E: std::fmt::Display>(
    what: &'static str,
    every: Duration,
    stop: CancellationToken,
    mut reload: impl FnMut() -> Result<bool, E>,
) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        match reload() {
            Ok(true) => {
                failing = false;
                tracing::info!(what, "reloaded");
            }
            Ok(false) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(what, error = %e, "changed but cannot be used; keeping the previous version");
            }
            Err(_) => {}
        }
    }
}
