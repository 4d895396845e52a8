//! Unit tests of the scheduler: slot limits, local slots, FIFO waiters, backoff, busy
//! periods and wake-ups, some in paused time.

use super::*;
use crate::hosts::HostKind;

fn tcp(name: &str, slots: u32) -> HostSpec {
    HostSpec {
        kind: HostKind::Tcp {
            host: name.into(),
            port: 3632,
        },
        slots,
        lzo: false,
        down: false,
        token: name.into(),
    }
}

fn setup(hosts: &[(&str, u32)], backoff: Duration) -> (Scheduler, Vec<String>) {
    let mut s = Scheduler::new(backoff);
    let keys = hosts.iter().map(|(n, k)| s.register(&tcp(n, *k))).collect();
    (s, keys)
}

fn want(keys: &[String], local: u32) -> Want {
    Want {
        remotes: keys.to_vec(),
        local_limit: local,
        compiler: None,
    }
}

/// One job on `key` that failed there (the host is backed off, if backoff is on).
fn fail_once(s: &mut Scheduler, key: &str, now: Instant) {
    let one = Want {
        remotes: vec![key.to_string()],
        local_limit: 0,
        compiler: None,
    };
    assert_eq!(
        s.try_acquire(&one, now),
        Decision::Granted(Grant::Remote(key.into()))
    );
    s.release(&Grant::Remote(key.into()), HostVerdict::Failed, now);
}

fn remote(d: &Decision) -> &str {
    match d {
        Decision::Granted(Grant::Remote(k)) => k,
        other => panic!("expected a remote grant, got {other:?}"),
    }
}

#[test]
fn slot_limits_then_local_then_wait() {
    let (mut s, keys) = setup(&[("a", 2), ("b", 1)], Duration::from_secs(60));
    let now = Instant::now();
    let w = want(&keys, 1);
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(remote(&s.try_acquire(&w, now)).to_string());
    }
    got.sort();
    assert_eq!(got, vec!["a:3632", "a:3632", "b:3632"]);
    // Every remote slot busy: the local slot is next, then the job waits.
    assert_eq!(s.try_acquire(&w, now), Decision::Granted(Grant::Local));
    assert_eq!(s.try_acquire(&w, now), Decision::Wait);
    assert_eq!(s.local_running(), 1);
    assert_eq!(s.host("a:3632").unwrap().running, 2);
}

#[test]
fn spreads_over_unmeasured_hosts_then_prefers_the_faster_one() {
    let (mut s, keys) = setup(&[("a", 4), ("b", 4)], Duration::from_secs(60));
    let now = Instant::now();
    let w = want(&keys, 0);
    let first = remote(&s.try_acquire(&w, now)).to_string();
    let second = remote(&s.try_acquire(&w, now)).to_string();
    assert_ne!(first, second, "unmeasured hosts are used evenly");
    s.release(
        &Grant::Remote(first.clone()),
        HostVerdict::Ok {
            elapsed: Duration::from_millis(900),
        },
        now,
    );
    s.release(
        &Grant::Remote(second.clone()),
        HostVerdict::Ok {
            elapsed: Duration::from_millis(300),
        },
        now,
    );
    // b measured faster: it gets jobs until it is full, then a.
    for _ in 0..4 {
        assert_eq!(remote(&s.try_acquire(&w, now)), second);
    }
    assert_eq!(remote(&s.try_acquire(&w, now)), first);
    let h = s.host(&second).unwrap();
    assert_eq!(h.jobs_ok, 1);
    assert_eq!(h.mean_ms(), Some(300));
}

#[test]
fn ewma_moves_toward_new_times() {
    let (mut s, keys) = setup(&[("a", 4)], Duration::ZERO);
    let now = Instant::now();
    let g = Grant::Remote(keys[0].clone());
    for ms in [1000, 2000] {
        assert!(matches!(
            s.try_acquire(&want(&keys, 0), now),
            Decision::Granted(_)
        ));
        s.release(
            &g,
            HostVerdict::Ok {
                elapsed: Duration::from_millis(ms),
            },
            now,
        );
    }
    let e = s.host(&keys[0]).unwrap().ewma_ms.unwrap();
    assert!((e - 1300.0).abs() < 1e-6, "{e}");
    assert_eq!(s.host(&keys[0]).unwrap().mean_ms(), Some(1500));
}

#[test]
fn server_slots_cap_the_list_limit() {
    let (mut s, keys) = setup(&[("a", 8)], Duration::ZERO);
    s.set_server_slots(&keys[0], 2);
    let now = Instant::now();
    let w = want(&keys, 0);
    assert!(matches!(s.try_acquire(&w, now), Decision::Granted(_)));
    assert!(matches!(s.try_acquire(&w, now), Decision::Granted(_)));
    assert_eq!(s.try_acquire(&w, now), Decision::Wait);
}

#[tokio::test(start_paused = true)]
async fn failed_host_is_backed_off_then_returns() {
    let backoff = Duration::from_secs(60);
    let (mut s, keys) = setup(&[("a", 1), ("b", 1)], backoff);
    let w = want(&keys, 0);
    let now = Instant::now();
    let a = Grant::Remote(keys[0].clone());
    assert_eq!(remote(&s.try_acquire(&w, now)), keys[0]);
    s.release(&a, HostVerdict::Failed, now);
    assert!(s.host(&keys[0]).unwrap().backed_off(now));
    // Only b is usable now; with b busy the job waits rather than using a.
    assert_eq!(remote(&s.try_acquire(&w, now)), keys[1]);
    assert_eq!(s.try_acquire(&w, now), Decision::Wait);
    tokio::time::advance(backoff + Duration::from_millis(1)).await;
    let later = Instant::now();
    assert_eq!(remote(&s.try_acquire(&w, later)), keys[0]);
    assert_eq!(s.host(&keys[0]).unwrap().jobs_failed, 1);
}

#[test]
fn all_hosts_backed_off_is_unusable_and_zero_backoff_disables() {
    let (mut s, keys) = setup(&[("a", 1)], Duration::from_secs(60));
    let now = Instant::now();
    fail_once(&mut s, &keys[0], now);
    assert!(matches!(
        s.try_acquire(&want(&keys, 0), now),
        Decision::Unusable(_)
    ));
    // With a local slot the job runs locally instead.
    assert_eq!(
        s.try_acquire(&want(&keys, 2), now),
        Decision::Granted(Grant::Local)
    );
    assert!(matches!(
        s.try_acquire(&want(&[], 0), now),
        Decision::Unusable(_)
    ));

    let (mut s, keys) = setup(&[("a", 1)], Duration::ZERO);
    fail_once(&mut s, &keys[0], now);
    assert_eq!(remote(&s.try_acquire(&want(&keys, 0), now)), keys[0]);
}

#[test]
fn down_hosts_are_skipped() {
    let mut s = Scheduler::new(Duration::ZERO);
    let mut spec = tcp("a", 4);
    spec.down = true;
    let k = s.register(&spec);
    assert!(matches!(
        s.try_acquire(&want(&[k], 0), Instant::now()),
        Decision::Unusable(_)
    ));
}

#[tokio::test(start_paused = true)]
async fn busy_pauses_host_without_penalty() {
    let (mut s, keys) = setup(&[("a", 2)], Duration::from_secs(60));
    let w = want(&keys, 0);
    let now = Instant::now();
    let g = Grant::Remote(keys[0].clone());
    assert!(matches!(s.try_acquire(&w, now), Decision::Granted(_)));
    s.release(&g, HostVerdict::Busy, now);
    let h = s.host(&keys[0]).unwrap();
    assert_eq!((h.jobs_failed, h.jobs_busy), (0, 1));
    assert!(!h.backed_off(now));
    // Paused: the job waits (not Unusable), and a wakeup is scheduled for the pause end.
    let t = s.enqueue(w.clone());
    assert!(s.dispatch(now).is_empty());
    assert_eq!(s.next_wakeup(now), Some(now + BUSY_PAUSE));
    tokio::time::advance(BUSY_PAUSE).await;
    let d = s.dispatch(Instant::now());
    assert_eq!(d, vec![(t, Decision::Granted(g))]);
}

#[test]
fn queue_is_fifo_and_release_serves_the_oldest() {
    let (mut s, keys) = setup(&[("a", 1)], Duration::ZERO);
    let now = Instant::now();
    let w = want(&keys, 0);
    let g = Grant::Remote(keys[0].clone());
    let t1 = s.enqueue(w.clone());
    let t2 = s.enqueue(w.clone());
    let t3 = s.enqueue(w.clone());
    assert_eq!(s.dispatch(now), vec![(t1, Decision::Granted(g.clone()))]);
    assert_eq!(s.queued(), 2);
    assert!(s.cancel(t2));
    assert!(!s.cancel(t2));
    s.release(&g, HostVerdict::Unused, now);
    assert_eq!(s.dispatch(now), vec![(t3, Decision::Granted(g.clone()))]);
    assert_eq!(s.next_wakeup(now), None);
}

#[test]
fn queued_job_learns_when_nothing_is_usable() {
    let (mut s, keys) = setup(&[("a", 1)], Duration::from_secs(60));
    let now = Instant::now();
    let w = want(&keys, 0);
    let g = Grant::Remote(keys[0].clone());
    assert!(matches!(s.try_acquire(&w, now), Decision::Granted(_)));
    let t = s.enqueue(w);
    assert!(s.dispatch(now).is_empty());
    s.release(&g, HostVerdict::Failed, now);
    let d = s.dispatch(now);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].0, t);
    assert!(matches!(d[0].1, Decision::Unusable(_)));
}

#[tokio::test(start_paused = true)]
async fn handle_wakes_waiters_when_slots_free() {
    let h = SchedHandle::new(Duration::ZERO);
    let key = h.with(|s| s.register(&tcp("a", 1)));
    let w = Want {
        remotes: vec![key.clone()],
        local_limit: 0,
        compiler: None,
    };
    let first = h.acquire(w.clone()).await.unwrap();
    assert_eq!(first.host(), Some(key.as_str()));
    let h2 = h.clone();
    let w2 = w.clone();
    let waiter = tokio::spawn(async move { h2.acquire(w2).await.map(|g| g.grant().clone()) });
    // The waiter is queued, not granted.
    tokio::time::timeout(Duration::from_secs(5), async {
        while h.with(|s| s.queued()) == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    drop(first);
    let got = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, Ok(Grant::Remote(key.clone())));
    // The waiter's guard was dropped inside the task: everything is free again.
    assert_eq!(h.with(|s| s.host(&key).unwrap().running), 0);
}

/// A BUSY answer pauses the host; the job that got it may give up and leave, and the
/// job already queued must still wake when the pause ends (nothing else happens).
#[tokio::test(start_paused = true)]
async fn a_pause_set_after_queueing_wakes_the_waiter_when_it_ends() {
    let h = SchedHandle::new(Duration::ZERO);
    let key = h.with(|s| s.register(&tcp("a", 1)));
    let w = Want {
        remotes: vec![key.clone()],
        local_limit: 0,
        compiler: None,
    };
    let mut first = h.acquire(w.clone()).await.unwrap();
    let h2 = h.clone();
    let waiter = tokio::spawn(async move { h2.acquire(w).await.map(|g| g.grant().clone()) });
    tokio::time::timeout(Duration::from_secs(5), async {
        while h.with(|s| s.queued()) == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    let paused_at = Instant::now();
    first.set_verdict(HostVerdict::Busy);
    drop(first);
    let got = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter must wake when the BUSY pause ends")
        .unwrap();
    assert_eq!(got, Ok(Grant::Remote(key)));
    // On paused time the wake-up is the pause's own timer, not a later one.
    let waited = paused_at.elapsed();
    assert!(
        waited >= BUSY_PAUSE && waited < BUSY_PAUSE + Duration::from_millis(100),
        "granted {waited:?} after the pause began (pause {BUSY_PAUSE:?})"
    );
}

#[tokio::test(start_paused = true)]
async fn cancelled_waiter_leaves_the_queue() {
    let h = SchedHandle::new(Duration::ZERO);
    let key = h.with(|s| s.register(&tcp("a", 1)));
    let w = Want {
        remotes: vec![key.clone()],
        local_limit: 0,
        compiler: None,
    };
    let first = h.acquire(w.clone()).await.unwrap();
    let r = tokio::time::timeout(Duration::from_millis(20), h.acquire(w.clone())).await;
    assert!(r.is_err(), "second acquire must wait");
    assert_eq!(
        h.with(|s| s.queued()),
        0,
        "the dropped waiter left the queue"
    );
    drop(first);
    assert_eq!(h.with(|s| s.host(&key).unwrap().running), 0);
    let again = h.try_acquire(&w).expect("slot free again");
    assert_eq!(again.grant(), &Grant::Remote(key));
}

fn gcc(version: &str) -> CompilerKey {
    CompilerKey {
        name: "gcc".into(),
        id: CompilerId {
            version: version.into(),
            target: "x86_64-linux-gnu".into(),
            configured: String::new(),
            binaries: None,
        },
    }
}

#[test]
fn a_mismatch_blocks_one_compiler_on_one_host() {
    let (mut s, keys) = setup(&[("a", 4), ("b", 4)], Duration::from_secs(60));
    let now = Instant::now();
    s.block(&keys[0], gcc("12.2.0"), "no gcc 12 on a".into(), now);
    let mut w12 = want(&keys, 0);
    w12.compiler = Some(gcc("12.2.0"));
    // gcc 12 goes only to b; gcc 13 and jobs of unknown identity still go to a.
    for _ in 0..3 {
        assert_eq!(remote(&s.try_acquire(&w12, now)), "b:3632");
    }
    let mut w13 = want(&keys, 0);
    w13.compiler = Some(gcc("13.1.0"));
    assert_eq!(remote(&s.try_acquire(&w13, now)), "a:3632");
    assert_eq!(remote(&s.try_acquire(&want(&keys, 0), now)), "a:3632");
    // Blocked on every host: compile locally, with the host's reason.
    s.block(&keys[1], gcc("12.2.0"), "no gcc 12 on b".into(), now);
    assert_eq!(
        s.try_acquire(&w12, now),
        Decision::NoMatch("no gcc 12 on a".into())
    );
    // ... unless a local slot exists.
    w12.local_limit = 1;
    assert_eq!(s.try_acquire(&w12, now), Decision::Granted(Grant::Local));
    // The block ends.
    w12.local_limit = 0;
    let later = now + MISMATCH_BLOCK + Duration::from_secs(1);
    assert!(matches!(
        s.try_acquire(&w12, later),
        Decision::Granted(Grant::Remote(_))
    ));
    assert!(s
        .host(&keys[0])
        .unwrap()
        .blocks(Some(&gcc("12.2.0")), now)
        .is_some());
    assert!(s
        .host(&keys[0])
        .unwrap()
        .blocks(Some(&gcc("12.2.0")), later)
        .is_none());
}
