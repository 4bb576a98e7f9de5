//! Interrupts. Ctrl-C (SIGINT) and SIGTERM, what CI runners and Kubernetes send, stop a run the
//! same way: the virtual users stop, every report is written marked interrupted, the stack is
//! torn down, and thumper exits 128 + the signal (130, 143). A second signal means "now": the
//! servers thumper started are stopped at once (they run in their own process groups, so the
//! terminal's Ctrl-C never reached them) and thumper exits without its reports.

use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// The first interrupting signal received, 0 before any.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

/// A token cancelled by the first SIGINT or SIGTERM; a second one quits at once.
pub fn watch() -> CancellationToken {
    let interrupt = CancellationToken::new();
    let on_signal = interrupt.clone();
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!("cannot install signal handlers; Ctrl-C will end thumper at once");
        return interrupt;
    };
    tokio::spawn(async move {
        let first = next(&mut int, &mut term).await;
        RECEIVED.store(first, Ordering::SeqCst);
        eprintln!(
            "\nthumper: {}; stopping virtual users and writing reports ({} again to quit at once)",
            describe(first),
            name(first)
        );
        on_signal.cancel();
        let second = next(&mut int, &mut term).await;
        eprintln!(
            "\nthumper: {} again: stopping the servers thumper started and quitting",
            name(second)
        );
        let _ = tokio::task::spawn_blocking(|| {
            crate::stack::process::stop_owned_now(Duration::from_secs(5))
        })
        .await;
        std::process::exit(128 + second);
    });
    interrupt
}

fn name(signal: i32) -> &'static str {
    if signal == SIGTERM {
        "SIGTERM"
    } else {
        "Ctrl-C"
    }
}

fn describe(signal: i32) -> &'static str {
    if signal == SIGTERM {
        "terminated (SIGTERM)"
    } else {
        "interrupted (Ctrl-C)"
    }
}

/// The next SIGINT or SIGTERM.
async fn next(
    int: &mut tokio::signal::unix::Signal,
    term: &mut tokio::signal::unix::Signal,
) -> i32 {
    tokio::select! {
        _ = int.recv() => SIGINT,
        _ = term.recv() => SIGTERM,
    }
}

/// The first interrupting signal this process received, if any.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Why an interrupted run stopped, for its summary.
pub fn stop_reason() -> String {
    match RECEIVED.load(Ordering::SeqCst) {
        SIGTERM => "terminated by SIGTERM".to_owned(),
        _ => "interrupted by the user (Ctrl-C)".to_owned(),
    }
}

/// The exit code of an interrupted run: 128 + the signal (130 for Ctrl-C, 143 for SIGTERM).
pub fn exit_code() -> u8 {
    match RECEIVED.load(Ordering::SeqCst) {
        SIGTERM => 143,
        _ => 130,
    }
}
