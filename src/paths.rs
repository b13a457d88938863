//! Where embedflow keeps what it installs and caches.

use std::path::PathBuf;

/// embedflow's cache root: `$EMBEDFLOW_HOME`, else `$XDG_CACHE_HOME/embedflow`,
/// else `~/.cache/embedflow` (what `scripts/setup` fills).
pub fn embedflow_home() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).map(PathBuf::from);
    embedflow_home_from(var("EMBEDFLOW_HOME"), var("XDG_CACHE_HOME"), var("HOME"))
}

/// [`embedflow_home`] from the values of `EMBEDFLOW_HOME`, `XDG_CACHE_HOME`
/// and `HOME`.
pub fn embedflow_home_from(
    embedflow_home: Option<PathBuf>,
    xdg_cache_home: Option<PathBuf>,
    home: Option<PathBuf>,
) -> PathBuf {
    if let Some(h) = embedflow_home {
        return h;
    }
    xdg_cache_home
        .or_else(|| home.map(|h| h.join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"))
        .join("embedflow")
}
