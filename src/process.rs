//! This machine's processes, as far as a run needs to know them: whether a
//! pid another run wrote down is still an embedflow run, and the host name
//! it wrote beside it.

/// Whether `pid` is a running embedflow process (Linux: /proc). Without
/// /proc every pid counts as alive: another run's files and leases are
/// never taken on a guess.
pub fn embedflow_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) => comm.trim_end().starts_with("embedflow"),
        Err(_) => !std::path::Path::new("/proc/self").exists(),
    }
}

/// This machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown-host".into())
}
