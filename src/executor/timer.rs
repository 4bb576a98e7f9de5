//! A sleep to the microsecond on tokio's own I/O threads, for the open model's due times.
//!
//! tokio's timer rounds every sleep up to the next millisecond, which would start iterations up
//! to 1 ms late. A thread of its own sleeping with the OS timer is precise but costs two context
//! switches and a cross-thread wake of a tokio worker per iteration (a fifth of thumper's CPU
//! per query at 10,000/s, `docs/figures.md`). A `timerfd` registered with tokio's reactor is
//! both: the kernel's high-resolution timer, delivered by the same `epoll_wait` that waits for
//! the replies, so the task it wakes runs on the worker that was waiting anyway.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Instant;

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::unix::AsyncFd;

/// The timerfd, seen by tokio's reactor through its raw descriptor.
struct Fd(TimerFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Registers the timer with tokio's reactor. tokio deprecated the safe constructor (its I/O
/// safety rests on the caller, tokio#8587) in favour of an `unsafe` one, and this crate forbids
/// `unsafe`; the condition is met: [`Fd`] owns its descriptor, which stays open and the same
/// until the `AsyncFd` drops it.
#[allow(deprecated)]
fn register(fd: Fd) -> io::Result<AsyncFd<Fd>> {
    AsyncFd::with_interest(fd, tokio::io::Interest::READABLE)
}

/// One one-shot timer; a new [`sleep_until`](Self::sleep_until) replaces the last one's
/// deadline, so a sleep abandoned in a `select!` leaves nothing behind.
pub struct PreciseTimer {
    /// `None` where no timerfd could be made (out of descriptors): tokio's timer then, late by
    /// up to a millisecond, which `scheduling_lag` shows.
    fd: Option<AsyncFd<Fd>>,
}

impl Default for PreciseTimer {
    fn default() -> Self {
        Self::new()
    }
}

impl PreciseTimer {
    /// A timer on `CLOCK_MONOTONIC`, the clock of [`Instant`]. Must be called inside tokio.
    pub fn new() -> Self {
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .map_err(io::Error::from)
        .and_then(|fd| register(Fd(fd)));
        match fd {
            Ok(fd) => Self { fd: Some(fd) },
            Err(error) => {
                tracing::warn!(%error, "no timerfd: the schedule falls back to tokio's 1 ms timer");
                Self { fd: None }
            }
        }
    }

    /// Returns at `deadline` (within the kernel's timer slack, tens of microseconds), at once if
    /// it has passed.
    pub async fn sleep_until(&mut self, deadline: Instant) {
        let now = Instant::now();
        if deadline <= now {
            return;
        }
        let Some(fd) = &self.fd else {
            return tokio::time::sleep_until(deadline.into()).await;
        };
        // Setting the timer also clears an expiry nobody read: a stale readiness that tokio
        // still reports reads as `WouldBlock` below and is waited out.
        let wait = TimeSpec::from_duration(deadline - now);
        if fd
            .get_ref()
            .0
            .set(Expiration::OneShot(wait), TimerSetTimeFlags::empty())
            .is_err()
        {
            return tokio::time::sleep_until(deadline.into()).await;
        }
        loop {
            let Ok(mut ready) = fd.readable().await else {
                return tokio::time::sleep_until(deadline.into()).await;
            };
            let mut expiries = [0u8; 8];
            let read = ready.try_io(|fd| Ok(nix::unistd::read(fd.as_raw_fd(), &mut expiries)?));
            if read.is_ok() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn sleeps_until_the_deadline_and_not_before_even_after_an_abandoned_sleep() {
        let mut timer = PreciseTimer::new();
        // An abandoned sleep, then a new deadline: the old one must not end the new sleep.
        let short = Instant::now() + Duration::from_millis(1);
        tokio::select! {
            _ = timer.sleep_until(short) => {}
            _ = std::future::ready(()) => {}
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
        for gap in [Duration::from_micros(300), Duration::from_millis(5)] {
            let deadline = Instant::now() + gap;
            timer.sleep_until(deadline).await;
            assert!(Instant::now() >= deadline, "woke before the deadline");
        }
        // A deadline already past returns at once.
        timer.sleep_until(Instant::now()).await;
    }
}
