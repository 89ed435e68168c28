//! Interrupts (SIGINT, SIGTERM, SIGHUP): a thread that sees which one arrived, and the exit code
//! shells give it (128 + the signal number: 130 for Ctrl-C, 143 for SIGTERM).

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// The exit code of a process stopped by signal `sig`, as shells report it.
pub fn exit_code(sig: i32) -> i32 {
    128 + sig
}

/// Call `on_signal(sig)` on a watcher thread for every SIGINT, SIGTERM or SIGHUP from now on
/// (instead of the default of dying at once). Returns the last signal seen (0 = none yet).
pub fn watch(mut on_signal: impl FnMut(i32) + Send + 'static) -> Result<Arc<AtomicI32>> {
    let mut signals =
        Signals::new([SIGINT, SIGTERM, SIGHUP]).context("installing the interrupt handler")?;
    let last = Arc::new(AtomicI32::new(0));
    let seen = last.clone();
    std::thread::Builder::new()
        .name("interrupts".into())
        .spawn(move || {
            for sig in signals.forever() {
                seen.store(sig, Ordering::SeqCst);
                on_signal(sig);
            }
        })
        .context("starting the interrupt thread")?;
    Ok(last)
}
