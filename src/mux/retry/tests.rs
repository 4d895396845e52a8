//! Unit tests of the retry policy and of the bounded wait for a host (paused time).

use std::cell::Cell;
use std::time::Duration;

use tokio::time::Instant;

use super::*;

const FAILED_ELSEWHERE: Step = Step::Retry {
    verdict: HostVerdict::Failed,
    exclude_this: true,
};
const GIVE_UP_FAILED: Step = Step::GiveUp {
    verdict: HostVerdict::Failed,
};

fn steps(failures: &[Failure]) -> Vec<Step> {
    let mut t = Tally::default();
    failures.iter().map(|f| next_step(&mut t, *f)).collect()
}

#[test]
fn a_lost_lane_is_sent_again_on_the_same_host_once() {
    use Failure::*;
    assert_eq!(steps(&[LaneDied]), [Step::Resend]);
    // The resend does not use up the one retry: a host failure after it still moves on.
    assert_eq!(
        steps(&[LaneDied, Host, Host]),
        [Step::Resend, FAILED_ELSEWHERE, GIVE_UP_FAILED]
    );
    // A second lane loss is the host's failure.
    assert_eq!(
        steps(&[LaneDied, LaneDied, LaneDied]),
        [Step::Resend, FAILED_ELSEWHERE, GIVE_UP_FAILED]
    );
    // The host did not answer within the wait: another host (or local, if none).
    assert_eq!(
        steps(&[LaneDied, Unanswered]),
        [Step::Resend, FAILED_ELSEWHERE]
    );
    // A lane lost on the retry's host: resent there.
    assert_eq!(steps(&[Host, LaneDied]), [FAILED_ELSEWHERE, Step::Resend]);
}

#[test]
fn faults_and_host_failures_get_one_retry() {
    use Failure::*;
    let anywhere = Step::Retry {
        verdict: HostVerdict::Unused,
        exclude_this: false,
    };
    assert_eq!(steps(&[Fault, Fault]), [anywhere, GIVE_UP_FAILED]);
    assert_eq!(steps(&[Fault, Host]), [anywhere, GIVE_UP_FAILED]);
    assert_eq!(steps(&[Host, Fault]), [FAILED_ELSEWHERE, GIVE_UP_FAILED]);
    assert_eq!(steps(&[Host, Host]), [FAILED_ELSEWHERE, GIVE_UP_FAILED]);
    assert_eq!(
        steps(&[Host, Unanswered]),
        [FAILED_ELSEWHERE, GIVE_UP_FAILED]
    );
}

#[test]
fn refusals_stop_at_once_and_busy_reschedules_without_penalty() {
    use Failure::*;
    let unused = Step::GiveUp {
        verdict: HostVerdict::Unused,
    };
    assert_eq!(steps(&[Refused]), [unused]);
    assert_eq!(steps(&[Busy, Refused]), [Step::Reschedule, unused]);
    let mut all = vec![Busy; MAX_BUSY_RETRIES as usize + 1];
    all.push(Busy);
    let got = steps(&all);
    assert!(got[..MAX_BUSY_RETRIES as usize]
        .iter()
        .all(|s| *s == Step::Reschedule));
    assert_eq!(
        got[MAX_BUSY_RETRIES as usize],
        Step::GiveUp {
            verdict: HostVerdict::Busy
        }
    );
    // Busy answers count apart: a host failure after them still gets its retry.
    assert_eq!(
        steps(&[Busy, Busy, Host, LaneDied]),
        [
            Step::Reschedule,
            Step::Reschedule,
            FAILED_ELSEWHERE,
            Step::Resend
        ]
    );
}

#[test]
fn the_resend_wait_is_two_keepalive_intervals_within_bounds() {
    let s = Duration::from_secs;
    assert_eq!(resend_wait(s(15), s(15)), s(30));
    assert_eq!(resend_wait(s(2), s(15)), s(4));
    // Keepalives off (ServerAliveInterval 0): the [ssh] interval.
    assert_eq!(resend_wait(Duration::ZERO, s(15)), s(30));
    assert_eq!(
        resend_wait(Duration::from_millis(100), s(15)),
        RESEND_WAIT_MIN
    );
    assert_eq!(resend_wait(s(600), s(15)), RESEND_WAIT_MAX);
}

#[tokio::test(start_paused = true)]
async fn a_host_that_answers_in_time_is_used() {
    let start = Instant::now();
    let wait = resend_wait(Duration::from_secs(1), Duration::from_secs(15));
    let tries = Cell::new(0u32);
    // Refused twice at once (the host is still unreachable), then it answers.
    let got = until_answer(start + wait, || {
        let n = tries.get() + 1;
        tries.set(n);
        async move {
            if n < 3 {
                Err(n)
            } else {
                Ok("lane")
            }
        }
    })
    .await;
    assert_eq!(got, Ok("lane"));
    assert_eq!(tries.get(), 3);
    // Two pauses: 0.1 s, then 0.2 s.
    assert_eq!(start.elapsed(), Duration::from_millis(300));
}

#[tokio::test(start_paused = true)]
async fn a_first_answer_costs_no_pause() {
    let start = Instant::now();
    let got: Result<u8, Option<()>> =
        until_answer(start + Duration::from_secs(2), || async { Ok(7) }).await;
    assert_eq!(got, Ok(7));
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_host_that_keeps_refusing_is_given_up_at_the_deadline() {
    let start = Instant::now();
    let wait = Duration::from_secs(4);
    let tries = Cell::new(0u32);
    let got: Result<(), Option<u32>> = until_answer(start + wait, || {
        tries.set(tries.get() + 1);
        let n = tries.get();
        async move { Err(n) }
    })
    .await;
    // The last probe's error comes back; pauses 0.1, 0.2, 0.4, 0.8, 1, 1 (3.5 s), and
    // the next would end past the deadline.
    assert_eq!(got, Err(Some(7)));
    assert_eq!(start.elapsed(), Duration::from_millis(3500));
    assert!(start.elapsed() <= wait);
}

#[tokio::test(start_paused = true)]
async fn a_host_that_hangs_is_given_up_at_the_deadline() {
    let start = Instant::now();
    let wait = Duration::from_secs(4);
    // Each probe hangs (a connect into a black hole): the first one is cut by the deadline.
    let got: Result<(), Option<()>> =
        until_answer(start + wait, std::future::pending::<Result<(), ()>>).await;
    assert_eq!(got, Err(None));
    assert_eq!(start.elapsed(), wait);
    // A slow answer that comes after the deadline is not waited for either.
    let start = Instant::now();
    let got: Result<(), Option<()>> = until_answer(start + wait, || async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok(())
    })
    .await;
    assert_eq!(got, Err(None));
    assert_eq!(start.elapsed(), wait);
}
