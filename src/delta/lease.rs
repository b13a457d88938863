//! One writer per table: a lease file (`_embedflow/lease.json`: host, pid,
//! start, expiry) created with put-if-absent, renewed in the background,
//! taken over when its holder is gone, broken by `embedflow unlock`.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{DeltaTarget, now_ms};
use crate::process::{embedflow_alive, hostname};
use crate::{Error, Result};

/// How long a lease holds without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(120);

impl DeltaTarget {
    /// Takes the table's lease or says who holds it. A lease whose holder
    /// is gone (a dead process on this host, or not renewed for
    /// [`LEASE_TTL`]) is taken over.
    pub async fn acquire_lease(self: &Arc<Self>) -> Result<Lease> {
        let me = LeaseHolder::me();
        for _ in 0..2 {
            if self.create_state(LEASE_FILE, me.to_json()).await? {
                return Ok(Lease::start(Arc::clone(self), me));
            }
            let held = self.read_state(LEASE_FILE).await?;
            let holder = held
                .as_deref()
                .and_then(|b| serde_json::from_slice::<LeaseHolder>(b).ok());
            match holder {
                Some(h) if !h.is_stale() => {
                    return Err(Error::output(
                        self.display(),
                        format!(
                            "another run is writing this table: {} (pid {}, started {}, lease renewed until {}). Wait for it to finish; if it is gone, `embedflow unlock {}` breaks the lease",
                            h.host,
                            h.pid,
                            iso(h.started_ms),
                            iso(h.expires_ms),
                            self.display()
                        ),
                    ));
                }
                Some(h) => tracing::warn!(
                    host = %h.host,
                    pid = h.pid,
                    "taking over a stale lease on {}",
                    self.display()
                ),
                None => {}
            }
            self.delete(LEASE_FILE).await?;
        }
        Err(Error::output(
            self.display(),
            "another run took the table's lease at the same moment; try again",
        ))
    }

    /// Breaks the lease (`embedflow unlock`): returns who held it.
    pub async fn break_lease(&self) -> Result<Option<String>> {
        let held = self.read_state(LEASE_FILE).await?;
        let Some(bytes) = held else { return Ok(None) };
        self.delete(LEASE_FILE).await?;
        Ok(Some(match serde_json::from_slice::<LeaseHolder>(&bytes) {
            Ok(h) => format!("{} (pid {}, started {})", h.host, h.pid, iso(h.started_ms)),
            Err(_) => "an unreadable lease".into(),
        }))
    }
}

const LEASE_FILE: &str = "_embedflow/lease.json";

/// Who writes a table, until when.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct LeaseHolder {
    host: String,
    pid: u32,
    started_ms: i64,
    expires_ms: i64,
}

impl LeaseHolder {
    fn me() -> LeaseHolder {
        let now = now_ms();
        LeaseHolder {
            host: hostname(),
            pid: std::process::id(),
            started_ms: now,
            expires_ms: now + LEASE_TTL.as_millis() as i64,
        }
    }

    fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn is_stale(&self) -> bool {
        if self.expires_ms < now_ms() {
            return true;
        }
        // A run of this host that is gone holds nothing.
        self.host == hostname() && !embedflow_alive(self.pid)
    }
}

/// A held lease: renewed in the background until released or dropped.
pub struct Lease {
    target: Arc<DeltaTarget>,
    renew: tokio::task::JoinHandle<()>,
}

impl Lease {
    fn start(target: Arc<DeltaTarget>, me: LeaseHolder) -> Lease {
        let t = Arc::clone(&target);
        let renew = tokio::spawn(async move {
            let mut me = me;
            loop {
                tokio::time::sleep(LEASE_TTL / 4).await;
                me.expires_ms = now_ms() + LEASE_TTL.as_millis() as i64;
                if let Err(e) = t.write_state(LEASE_FILE, me.to_json()).await {
                    tracing::warn!("cannot renew the table's lease: {e}");
                }
            }
        });
        Lease { target, renew }
    }

    /// Stops renewing and removes the lease file.
    pub async fn release(self) {
        self.renew.abort();
        if let Err(e) = self.target.delete(LEASE_FILE).await {
            tracing::warn!("cannot remove the table's lease: {e}");
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renew.abort();
    }
}

/// A time for messages: seconds since the epoch, as UTC.
fn iso(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(iso(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(iso(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(
            iso(1_796_083_200_000 + 3_723_000),
            "2026-12-01 01:02:03 UTC"
        );
    }
}
