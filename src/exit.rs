//! Exit codes: one table for every command, documented in the README's "Exit codes".

use crate::metrics::summary::Verdict;

/// Every threshold passed (health: healthy; compare: no regression).
pub const PASS: u8 = 0;
/// The run could not be carried out (the stack did not start, the target refused the login;
/// health: a check failed).
pub const FAILED: u8 = 1;
/// Bad input: a scenario, a flag or an output path is wrong; nothing was started.
pub const BAD_INPUT: u8 = 2;
/// compare could not judge (different scenarios, or intervals too wide to tell anything and no
/// regression): distinct from a regression so a CI job can tell "slower" from "no verdict".
pub const NOT_JUDGED: u8 = 98;
/// A threshold failed or stopped the run (k6's code); compare: a regression beyond the limit.
pub const THRESHOLD: u8 = 99;

/// The exit code of a finished run's verdict. An interrupted run exits 128 + the signal
/// (130 for Ctrl-C, 143 for SIGTERM), or 1 when no signal stopped this process (a fleet lost a
/// worker, or its coordinator stopped it).
pub fn of_verdict(verdict: Verdict) -> u8 {
    match verdict {
        Verdict::Pass => PASS,
        Verdict::Fail => THRESHOLD,
        // Interrupted without a signal here: a fleet that lost a worker, or was stopped by
        // its coordinator.
        Verdict::Interrupted => match crate::signals::received() {
            Some(_) => crate::signals::exit_code(),
            None => FAILED,
        },
    }
}
