//! Stage: mux retry policy — what a job does after an attempt that gave no answer. Pure
//! decisions ([`next_step`], [`resend_wait`]) plus the one bounded wait for a host to
//! answer again ([`until_answer`]). Neighbours: `mux::job` (runs the attempts and follows
//! the steps), `mux::scheduler` (the host verdicts a step records), `mux::pool` (the lanes a
//! resend waits for).
//!
//! Policy, in one place:
//! - the lane died mid-job (the connection was cut, the server's end closed, a keepalive
//!   timeout): a blip, not the host's fault. The job keeps its host slot and is sent again on
//!   the same host, on a fresh lane (a fresh connection when the old one is gone), as soon
//!   as the host answers within [`resend_wait`] (about two keepalive intervals). One
//!   resend per job; a host that does not answer in time, or a second lane loss, is a
//!   failure of the host;
//! - a compiler fault on the server (killed, an ICE): one retry on any host;
//! - any other failure of the host (no lane, a timeout, a server error): one retry on
//!   another host, this one backed off;
//! - a second failure, or a refusal: give up (the wrapper compiles locally);
//! - a Busy answer: reschedule without penalty, up to [`MAX_BUSY_RETRIES`] times.

use std::future::Future;
use std::time::Duration;

use tokio::time::{sleep_until, timeout_at, Instant};

use crate::mux::scheduler::HostVerdict;

/// Busy answers tolerated for one job before it is given up (the wrapper compiles locally).
pub const MAX_BUSY_RETRIES: u32 = 8;
/// Times one job is sent again on the same host after its lane died.
pub const MAX_RESENDS: u32 = 1;
/// Bounds on [`resend_wait`].
pub const RESEND_WAIT_MIN: Duration = Duration::from_secs(1);
/// See [`RESEND_WAIT_MIN`].
pub const RESEND_WAIT_MAX: Duration = Duration::from_secs(120);
/// First pause between two probes of a host that did not answer; it doubles up to
/// [`PROBE_PAUSE_MAX`].
const PROBE_PAUSE_FIRST: Duration = Duration::from_millis(100);
/// See [`PROBE_PAUSE_FIRST`].
const PROBE_PAUSE_MAX: Duration = Duration::from_secs(1);

/// Why an attempt gave no answer, as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The lane ended under the job: connection cut, EOF, keepalive timeout.
    LaneDied,
    /// After a lane loss, the host did not give a fresh lane within the resend wait.
    Unanswered,
    /// The compiler did not finish on its own terms on the server.
    Fault,
    /// The server has no free server slot.
    Busy,
    /// The server refused the job (policy, not load): retrying cannot help.
    Refused,
    /// Any other failure of the host: no lane, a timeout, a server or protocol error.
    Host,
}

/// What the job does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Keep the host slot and send the job again on the same host, once it gives a fresh lane
    /// within [`resend_wait`].
    Resend,
    /// Give the host slot back (the Busy verdict is recorded) and wait for any host slot.
    Reschedule,
    /// Give the host slot back with `verdict` and take one on any host of the list (this one
    /// included when `exclude_this` is false), for the one retry.
    Retry {
        /// The host verdict for the host slot given back.
        verdict: HostVerdict,
        /// Whether this host is left out.
        exclude_this: bool,
    },
    /// Stop: the wrapper compiles locally (or fails without fallback). `verdict` is
    /// recorded on the host slot.
    GiveUp {
        /// The host verdict for the host slot.
        verdict: HostVerdict,
    },
}

/// What one job has been through so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Failures that count towards the one retry.
    pub failures: u32,
    /// Busy answers.
    pub busy: u32,
    /// Resends after a lane loss.
    pub resends: u32,
}

/// The one retry policy: after `failure`, what next (and `tally` updated).
pub fn next_step(tally: &mut Tally, failure: Failure) -> Step {
    match failure {
        Failure::Busy => {
            tally.busy += 1;
            if tally.busy > MAX_BUSY_RETRIES {
                Step::GiveUp {
                    verdict: HostVerdict::Busy,
                }
            } else {
                Step::Reschedule
            }
        }
        Failure::Refused => Step::GiveUp {
            verdict: HostVerdict::Unused,
        },
        Failure::LaneDied if tally.resends < MAX_RESENDS => {
            tally.resends += 1;
            Step::Resend
        }
        Failure::Fault => {
            tally.failures += 1;
            if tally.failures >= 2 {
                Step::GiveUp {
                    verdict: HostVerdict::Failed,
                }
            } else {
                // Not the host's failure (the OOM killer, an admin): no backoff, and the
                // host may take the retry.
                Step::Retry {
                    verdict: HostVerdict::Unused,
                    exclude_this: false,
                }
            }
        }
        Failure::LaneDied | Failure::Unanswered | Failure::Host => {
            tally.failures += 1;
            if tally.failures >= 2 {
                Step::GiveUp {
                    verdict: HostVerdict::Failed,
                }
            } else {
                Step::Retry {
                    verdict: HostVerdict::Failed,
                    exclude_this: true,
                }
            }
        }
    }
}

/// How long a resend waits for the host to answer: two keepalive intervals of the
/// host's connection (`keepalive`; zero when keepalives are off, then `fallback`, the
/// `[ssh]` setting), within [`RESEND_WAIT_MIN`]..=[`RESEND_WAIT_MAX`].
pub fn resend_wait(keepalive: Duration, fallback: Duration) -> Duration {
    let interval = if keepalive.is_zero() {
        fallback
    } else {
        keepalive
    };
    interval
        .saturating_mul(2)
        .clamp(RESEND_WAIT_MIN, RESEND_WAIT_MAX)
}

/// Run `probe` until it succeeds or `deadline` passes, pausing between tries (0.1 s,
/// doubling to 1 s; a pause that would end past the deadline is not taken). A probe still
/// running at the deadline is dropped. `Err` carries the last probe's error, `None` when
/// none finished.
///
/// # Cancel safety
/// Cancel-safe if `probe`'s futures are.
pub async fn until_answer<T, E, F, Fut>(deadline: Instant, mut probe: F) -> Result<T, Option<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut pause = PROBE_PAUSE_FIRST;
    let mut last = None;
    loop {
        match timeout_at(deadline, probe()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => last = Some(e),
            Err(_) => return Err(last),
        }
        let next = Instant::now() + pause;
        if next >= deadline {
            return Err(last);
        }
        sleep_until(next).await;
        pause = (pause * 2).min(PROBE_PAUSE_MAX);
    }
}

#[cfg(test)]
mod tests;
