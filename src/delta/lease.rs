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
        let unlock = format!(
            "Wait for it to finish; if it is gone, `embedflow unlock {}` breaks the lease",
            self.display()
        );
        self.acquire(LEASE_FILE, "another run is writing this table", &unlock)
            .await
    }

    /// Takes the lease of one shard of a sharded run: two processes of one
    /// shard (a retry while the first still runs) would write the same parts.
    pub async fn acquire_shard_lease(self: &Arc<Self>, run: &str, shard: u32) -> Result<Lease> {
        self.acquire(
            &shard_lease_file(run, shard),
            &format!("shard {shard} of this run is running already"),
            "Two processes of one shard would write the same parts; wait for it, or stop it first",
        )
        .await
    }

    async fn acquire(self: &Arc<Self>, file: &str, what: &str, advice: &str) -> Result<Lease> {
        let me = LeaseHolder::me();
        for _ in 0..2 {
            if self.create_state(file, me.to_json()).await? {
                return Ok(Lease::start(Arc::clone(self), file.to_string(), me));
            }
            let held = self.read_state(file).await?;
            let holder = held
                .as_deref()
                .and_then(|b| serde_json::from_slice::<LeaseHolder>(b).ok());
            match holder {
                Some(h) if !h.is_stale() => {
                    return Err(Error::output(
                        self.display(),
                        format!("{what}: {}. {advice}", h.describe()),
                    ));
                }
                Some(h) => tracing::warn!(
                    host = %h.host,
                    pid = h.pid,
                    "taking over a stale lease {file} on {}",
                    self.display()
                ),
                None => {}
            }
            self.delete(file).await?;
        }
        Err(Error::output(
            self.display(),
            "another run took the table's lease at the same moment; try again",
        ))
    }

    /// Who holds the table's lease now, if anyone live does.
    pub async fn live_lease(&self) -> Result<Option<String>> {
        Ok(self.live_holder(LEASE_FILE).await?.map(|h| h.describe()))
    }

    /// The live shard leases: (run, shard, holder).
    pub async fn live_shard_leases(&self) -> Result<Vec<(String, u32, String)>> {
        let mut out = Vec::new();
        for name in self.list(SHARD_LEASES).await? {
            let Some((run, shard)) = parse_shard_lease_file(&name) else {
                continue;
            };
            if let Some(h) = self.live_holder(&name).await? {
                out.push((run, shard, h.describe()));
            }
        }
        Ok(out)
    }

    async fn live_holder(&self, file: &str) -> Result<Option<LeaseHolder>> {
        let held = self.read_state(file).await?;
        Ok(held
            .as_deref()
            .and_then(|b| serde_json::from_slice::<LeaseHolder>(b).ok())
            .filter(|h| !h.is_stale()))
    }

    /// Breaks the lease (`embedflow unlock`): returns who held it. A holder
    /// alive on this host is refused (breaking its lease would let a second
    /// run delete the parts it is writing); of a holder on another host,
    /// what its lease says is told, and if it is still running it finds
    /// its lease gone before it commits, and commits nothing.
    pub async fn break_lease(&self) -> Result<Option<String>> {
        let held = self.read_state(LEASE_FILE).await?;
        let Some(bytes) = held else { return Ok(None) };
        let holder = serde_json::from_slice::<LeaseHolder>(&bytes).ok();
        if let Some(h) = holder
            .as_ref()
            .filter(|h| h.host == hostname() && embedflow_alive(h.pid))
        {
            return Err(Error::output(
                self.display(),
                format!(
                    "the lease is held by a run that is alive on this host: {}. Stop it first (kill {}); unlock breaks the lease of a writer that is gone",
                    h.describe(),
                    h.pid
                ),
            ));
        }
        self.delete(LEASE_FILE).await?;
        Ok(Some(match holder {
            Some(h) if h.host != hostname() && h.expires_ms >= now_ms() => format!(
                "{} (pid {}, started {}), on another host, whose lease ran until {}: if it is still running, it will find its lease gone and commit nothing",
                h.host,
                h.pid,
                iso(h.started_ms),
                iso(h.expires_ms)
            ),
            Some(h) => format!("{} (pid {}, started {})", h.host, h.pid, iso(h.started_ms)),
            None => "an unreadable lease".into(),
        }))
    }
}

/// Where shard leases live.
const SHARD_LEASES: &str = "_embedflow/shards";

fn shard_lease_file(run: &str, shard: u32) -> String {
    format!("{SHARD_LEASES}/{run}-s{shard}.json")
}

/// (run, shard) of a shard lease file's name.
fn parse_shard_lease_file(name: &str) -> Option<(String, u32)> {
    let file = name.rsplit('/').next()?.strip_suffix(".json")?;
    let (run, shard) = file.rsplit_once("-s")?;
    Some((run.to_string(), shard.parse().ok()?))
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

    fn describe(&self) -> String {
        format!(
            "{} (pid {}, started {}, lease renewed until {})",
            self.host,
            self.pid,
            iso(self.started_ms),
            iso(self.expires_ms)
        )
    }

    fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Whether `other` is this same holder (a renewal changes the expiry only).
    fn same(&self, other: &LeaseHolder) -> bool {
        (self.host.as_str(), self.pid, self.started_ms)
            == (other.host.as_str(), other.pid, other.started_ms)
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
    file: String,
    me: LeaseHolder,
    renew: tokio::task::JoinHandle<()>,
}

impl Lease {
    fn start(target: Arc<DeltaTarget>, file: String, me: LeaseHolder) -> Lease {
        let (t, f, mine) = (Arc::clone(&target), file.clone(), me.clone());
        let renew = tokio::spawn(async move {
            let mut me = mine;
            loop {
                tokio::time::sleep(LEASE_TTL / 4).await;
                // A lease broken or taken over is not renewed: renewing would
                // overwrite the new holder's.
                if !holds(&t, &f, &me).await.unwrap_or(true) {
                    tracing::warn!("the lease {f} is no longer this run's; not renewing it");
                    return;
                }
                me.expires_ms = now_ms() + LEASE_TTL.as_millis() as i64;
                if let Err(e) = t.write_state(&f, me.to_json()).await {
                    tracing::warn!("cannot renew the lease {f}: {e}");
                }
            }
        });
        Lease {
            target,
            file,
            me,
            renew,
        }
    }

    /// Confirms, just before a commit, that this run still holds its lease:
    /// one broken by `embedflow unlock`, or taken over after it was not
    /// renewed in time, means another run may have cleared or rewritten
    /// this run's files; then nothing is committed.
    pub async fn confirm(&self) -> Result<()> {
        if holds(&self.target, &self.file, &self.me).await? {
            return Ok(());
        }
        Err(Error::output(
            self.target.display(),
            format!(
                "this run's lease ({}) was broken while it ran (by `embedflow unlock`, or taken over by another run after it went {} s without renewal): another run may have removed or rewritten its files, so nothing was committed. Run the job again once no other run writes the table",
                self.file,
                LEASE_TTL.as_secs()
            ),
        ))
    }

    /// Stops renewing and removes the lease file, if it is still this run's.
    pub async fn release(self) {
        self.renew.abort();
        if !holds(&self.target, &self.file, &self.me)
            .await
            .unwrap_or(false)
        {
            return;
        }
        if let Err(e) = self.target.delete(&self.file).await {
            tracing::warn!("cannot remove the lease {}: {e}", self.file);
        }
    }
}

/// Whether the lease file names `me` (a renewal changes the expiry only).
async fn holds(target: &DeltaTarget, file: &str, me: &LeaseHolder) -> Result<bool> {
    Ok(target
        .read_state(file)
        .await?
        .and_then(|b| serde_json::from_slice::<LeaseHolder>(&b).ok())
        .is_some_and(|h| h.same(me)))
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
    fn shard_lease_names_read_back() {
        let f = shard_lease_file("ab12-cd", 7);
        assert_eq!(parse_shard_lease_file(&f), Some(("ab12-cd".into(), 7)));
        assert_eq!(parse_shard_lease_file("_embedflow/shards/x.txt"), None);
    }

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
