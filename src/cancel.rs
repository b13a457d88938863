//! One stop signal for the whole process. SIGINT (Ctrl-C) and SIGTERM (what
//! Slurm, Kubernetes and AWS Batch send before they kill a task) both set it,
//! once, for good: a signal is never lost between two places that listen,
//! because nobody listens for the signal itself but for this flag.
//!
//! Every stage polls [`requested`] between batches, async code awaits
//! [`wait`], and [`crate::sink::ParquetSink::commit`] refuses to commit once
//! it is set, so a stop anywhere before the commit point commits nothing. A
//! second signal exits at once (status 130) for a run that does not stop
//! soon enough; its temporary files are then removed by the next run.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use tokio::sync::Notify;

use crate::{Error, Result};

static REQUESTED: AtomicBool = AtomicBool::new(false);
/// 0: none; 1: SIGINT; 2: SIGTERM.
static SIGNAL: AtomicU8 = AtomicU8::new(0);
static NOTIFY: Notify = Notify::const_new();

/// The exit status of a run stopped by a signal (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: u8 = 130;

/// Installs the SIGINT and SIGTERM handlers on `rt`. Call once, first thing,
/// before any work: from then on a signal only sets the flag.
pub fn install(rt: &tokio::runtime::Handle) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let _entered = rt.enter();
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    rt.spawn(async move {
        loop {
            let code = tokio::select! {
                Some(()) = interrupt.recv() => 1,
                Some(()) = terminate.recv() => 2,
                else => return,
            };
            let name = signal_name(code);
            if REQUESTED.load(Ordering::SeqCst) {
                crate::note!(
                    "second {name}: exiting now; nothing was committed (temporary files are removed by the next run)"
                );
                std::process::exit(i32::from(EXIT_INTERRUPTED));
            }
            request(code);
            crate::note!("{name} received: stopping (send it again to exit at once)");
        }
    });
    Ok(())
}

fn signal_name(code: u8) -> &'static str {
    match code {
        2 => "SIGTERM",
        _ => "SIGINT",
    }
}

/// Sets the flag (the signal handler).
fn request(code: u8) {
    SIGNAL.store(code, Ordering::SeqCst);
    REQUESTED.store(true, Ordering::SeqCst);
    NOTIFY.notify_waiters();
}

/// Clears the flag: only for the interactive SQL prompt, where Ctrl-C
/// during a statement cancels that statement and the prompt goes on.
pub fn reset() {
    REQUESTED.store(false, Ordering::SeqCst);
    SIGNAL.store(0, Ordering::SeqCst);
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// The signal that asked for the stop, by name.
pub fn signal() -> Option<&'static str> {
    requested().then(|| signal_name(SIGNAL.load(Ordering::SeqCst)))
}

/// [`Error::Interrupted`] once a stop was asked for.
pub fn check() -> Result<()> {
    if requested() {
        Err(Error::Interrupted)
    } else {
        Ok(())
    }
}

/// Resolves once a stop is asked for (at once if it already was).
pub async fn wait() {
    loop {
        // Registered before the flag is read, so a request in between wakes it.
        let notified = NOTIFY.notified();
        if requested() {
            return;
        }
        notified.await;
    }
}
