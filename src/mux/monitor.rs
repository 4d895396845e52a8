//! Stage: mux monitor — what `hoardcc status` and `hoardcc mon` watch change: the job
//! table (state, host and bytes of each wrapper's job), the recent failures, and the
//! change signal (`Changes`) that a watcher (`mux::conn`, `MuxRequest::Watch`) waits
//! on. `mux::job` moves jobs through their states, `mux::scheduler` and `mux::pool`
//! signal their own changes, and `mux::status` reads it all into a report.
//! Everything here is bounded: one entry per connected wrapper, [`MAX_FAILURES`]
//! failures, [`MAX_HOSTS`] hosts' cache hits.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::time::Instant;

use crate::proto::stats::MAX_HOSTS;
use crate::proto::status::{
    one_line, FailureReport, JobReport, JobState, MAX_FAILURES, MAX_JOBS_SHOWN,
};

/// The change signal: a generation number bumped on every change. A watcher holds a
/// receiver and wakes on the latest generation only, so any number of changes while it
/// is busy sending coalesce into one, and bumping never waits for anybody.
#[derive(Clone)]
pub(crate) struct Changes(Arc<watch::Sender<u64>>);

impl Changes {
    pub(crate) fn new() -> Changes {
        Changes(Arc::new(watch::Sender::new(0)))
    }

    /// Something watchers show has changed.
    pub(crate) fn bump(&self) {
        self.0.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// A receiver that sees the next bump.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}

/// One wrapper's job.
struct JobInfo {
    file: String,
    state: JobState,
    host: Option<String>,
    /// When it entered `state`.
    since: Instant,
    /// When the wrapper asked for a host slot.
    started: Instant,
    bytes_sent: u64,
    bytes_received: u64,
}

/// One failure, as it happened.
struct Failure {
    at: Instant,
    file: String,
    host: Option<String>,
    reason: String,
}

/// The job table and recent failures, with the change signal.
pub(crate) struct Monitor {
    jobs: Mutex<HashMap<u64, JobInfo>>,
    failures: Mutex<VecDeque<Failure>>,
    /// Results answered from a server's cache, per host (at most [`MAX_HOSTS`] hosts).
    cache_hits: Mutex<HashMap<String, u64>>,
    changes: Changes,
}

impl Monitor {
    pub(crate) fn new(changes: Changes) -> Monitor {
        Monitor {
            jobs: Mutex::new(HashMap::new()),
            failures: Mutex::new(VecDeque::new()),
            cache_hits: Mutex::new(HashMap::new()),
            changes,
        }
    }

    pub(crate) fn changes(&self) -> &Changes {
        &self.changes
    }

    fn with_jobs<R>(&self, f: impl FnOnce(&mut HashMap<u64, JobInfo>) -> R) -> R {
        let r = f(&mut self.jobs.lock().unwrap_or_else(|p| p.into_inner()));
        self.changes.bump();
        r
    }

    /// Job `id` (a wrapper connection) is now in `state` on `host`; `file` names it the
    /// first time.
    pub(crate) fn set_job(&self, id: u64, file: Option<&str>, state: JobState, host: Option<&str>) {
        self.with_jobs(|jobs| {
            let now = Instant::now();
            let entry = jobs.entry(id).or_insert_with(|| JobInfo {
                file: String::new(),
                state,
                host: None,
                since: now,
                started: now,
                bytes_sent: 0,
                bytes_received: 0,
            });
            if let Some(f) = file {
                entry.file = f.to_string();
            }
            if entry.state != state {
                entry.since = now;
            }
            entry.state = state;
            entry.host = host.map(str::to_string);
        });
    }

    /// Job `id` moved to `state`, on the host it has.
    pub(crate) fn set_state(&self, id: u64, state: JobState) {
        self.with_jobs(|jobs| {
            if let Some(j) = jobs.get_mut(&id) {
                if j.state != state {
                    j.since = Instant::now();
                }
                j.state = state;
            }
        });
    }

    /// Count bytes sent and received for job `id`.
    pub(crate) fn add_bytes(&self, id: u64, sent: u64, received: u64) {
        self.with_jobs(|jobs| {
            if let Some(j) = jobs.get_mut(&id) {
                j.bytes_sent = j.bytes_sent.saturating_add(sent);
                j.bytes_received = j.bytes_received.saturating_add(received);
            }
        });
    }

    /// The host of job `id`, if it has one (for the counters, `mux::stats`).
    pub(crate) fn host_of(&self, id: u64) -> Option<String> {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.get(&id).and_then(|j| j.host.clone())
    }

    /// The wrapper of job `id` is gone.
    pub(crate) fn remove_job(&self, id: u64) {
        self.with_jobs(|jobs| jobs.remove(&id));
    }

    /// Job `id` failed on `host` (or before a host was chosen) for `reason`.
    pub(crate) fn fail(&self, id: u64, host: Option<&str>, reason: &str) {
        let file = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .map(|j| j.file.clone())
            .unwrap_or_default();
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        f.push_front(Failure {
            at: Instant::now(),
            file,
            host: host.map(str::to_string),
            reason: one_line(reason),
        });
        f.truncate(MAX_FAILURES);
        drop(f);
        self.changes.bump();
    }

    /// `host` answered a job from its result cache.
    pub(crate) fn cache_hit(&self, host: &str) {
        let mut hits = self.cache_hits.lock().unwrap_or_else(|p| p.into_inner());
        if hits.len() < MAX_HOSTS || hits.contains_key(host) {
            *hits.entry(host.to_string()).or_default() += 1;
        }
        drop(hits);
        self.changes.bump();
    }

    /// Cache hits of `host` since the mux started.
    pub(crate) fn cache_hits(&self, host: &str) -> u64 {
        let hits = self.cache_hits.lock().unwrap_or_else(|p| p.into_inner());
        hits.get(host).copied().unwrap_or(0)
    }

    /// The jobs in flight (at most [`MAX_JOBS_SHOWN`], the longest-running first) and
    /// how many there are.
    pub(crate) fn jobs_report(&self, now: Instant) -> (Vec<JobReport>, u32) {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<&JobInfo> = jobs.values().collect();
        list.sort_by_key(|j| j.started);
        let shown = list
            .iter()
            .take(MAX_JOBS_SHOWN)
            .map(|j| JobReport {
                file: j.file.clone(),
                state: j.state,
                host: j.host.clone(),
                secs: (now - j.since).as_secs_f64(),
                total_secs: (now - j.started).as_secs_f64(),
                bytes_sent: j.bytes_sent,
                bytes_received: j.bytes_received,
            })
            .collect();
        (shown, u32::try_from(jobs.len()).unwrap_or(u32::MAX))
    }

    /// The recent failures, newest first.
    pub(crate) fn failures_report(&self, now: Instant) -> Vec<FailureReport> {
        let f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        f.iter()
            .map(|f| FailureReport {
                secs_ago: (now - f.at).as_secs(),
                file: f.file.clone(),
                host: f.host.clone(),
                reason: f.reason.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn states_bytes_and_failures_are_kept_bounded() {
        let m = Monitor::new(Changes::new());
        m.set_job(1, Some("a.c"), JobState::Waiting, None);
        m.set_job(1, None, JobState::Preprocessing, Some("me@b"));
        tokio::time::advance(std::time::Duration::from_secs(2)).await;
        m.set_state(1, JobState::Sending);
        m.add_bytes(1, 100, 0);
        m.add_bytes(1, 0, 40);
        let (jobs, n) = m.jobs_report(Instant::now());
        assert_eq!(n, 1);
        let j = &jobs[0];
        assert_eq!(
            (j.file.as_str(), j.state, j.host.as_deref()),
            ("a.c", JobState::Sending, Some("me@b"))
        );
        assert_eq!((j.bytes_sent, j.bytes_received), (100, 40));
        assert!(j.secs < 0.5 && j.total_secs >= 2.0, "{j:?}");
        for i in 0..MAX_FAILURES + 5 {
            m.fail(1, Some("me@b"), &format!("boom {i}\nsecond line"));
        }
        let f = m.failures_report(Instant::now());
        assert_eq!(f.len(), MAX_FAILURES);
        assert_eq!(
            f[0].reason,
            format!("boom {} second line", MAX_FAILURES + 4)
        );
        assert_eq!(f[0].file, "a.c");
        m.remove_job(1);
        assert_eq!(m.jobs_report(Instant::now()).1, 0);
        m.cache_hit("me@b");
        m.cache_hit("me@b");
        assert_eq!((m.cache_hits("me@b"), m.cache_hits("other")), (2, 0));
    }

    /// A watcher that never reads does not hold anything up: bumps never wait, and the
    /// watcher sees one change however many happened.
    #[tokio::test]
    async fn changes_coalesce_for_a_slow_watcher() {
        let c = Changes::new();
        let mut rx = c.subscribe();
        for _ in 0..10_000 {
            c.bump();
        }
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 10_000);
        assert!(!rx.has_changed().unwrap());
        c.bump();
        tokio::time::timeout(std::time::Duration::from_secs(5), rx.changed())
            .await
            .expect("woken")
            .unwrap();
    }
}
