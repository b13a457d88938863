//! Where embedflow keeps what it installs and caches.

use std::path::PathBuf;

/// embedflow's cache root: `$EMBEDFLOW_HOME`, else `$XDG_CACHE_HOME/embedflow`,
/// else `~/.cache/embedflow` (what `scripts/setup` fills).
pub fn embedflow_home() -> PathBuf {
    if let Some(h) = std::env::var_os("EMBEDFLOW_HOME") {
        return PathBuf::from(h);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("embedflow")
}
