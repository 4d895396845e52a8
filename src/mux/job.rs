//! Stage: one job in the mux — reserve a slot (`mux::scheduler`), run attempts on a
//! lane from `mux::pool` (`mux::lane`), and the one retry policy. Neighbours:
//! `mux::conn` (asks for it), `mux::listener` (the shared [`Daemon`] state).

use std::time::Duration;

use tokio::time::Instant;

use crate::exit::ExitCode;
use crate::hosts::{self, HostSpec};
use crate::mux::conn::failed;
use crate::mux::lane::{TransportError, Wire};
use crate::mux::listener::{Daemon, JobInfo};
use crate::mux::scheduler::{Grant, Outcome, SlotGuard, Want};
use crate::proto::compress::MAX_BLOB;
use crate::proto::msg::{Blob, JobSpec, MuxReply};

/// How long a retry may wait for a slot on another host.
const RETRY_WAIT: Duration = Duration::from_secs(5);
/// Busy answers tolerated for one job before it is given up (the wrapper compiles locally).
const MAX_BUSY_RETRIES: u32 = 8;

/// A reserved remote slot and what the wrapper was told.
pub(crate) struct Held {
    guard: SlotGuard,
    spec: HostSpec,
    wire: Wire,
    /// The job's hosts, for a retry elsewhere.
    hosts: Vec<HostSpec>,
}

impl Daemon {
    fn set_job(&self, id: u64, file: Option<&str>, state: &'static str, host: Option<&str>) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let entry = jobs.entry(id).or_insert_with(|| JobInfo {
            file: String::new(),
            state,
            host: None,
            since: Instant::now(),
        });
        if let Some(f) = file {
            entry.file = f.to_string();
        }
        entry.state = state;
        entry.host = host.map(str::to_string);
        entry.since = Instant::now();
    }

    /// Parse the host list, register and warm its hosts, and wait for a slot.
    pub(super) async fn reserve(
        &self,
        id: u64,
        hosts_text: &str,
        file: &str,
        held: &mut Option<Held>,
        local: &mut Option<SlotGuard>,
    ) -> MuxReply {
        let list = match hosts::parse(hosts_text) {
            Ok(l) => l,
            Err(e) => return failed(format!("host list: {e}"), ExitCode::BadHostspec),
        };
        let ordered = list.ordered(id);
        let remotes: Vec<HostSpec> = ordered.iter().filter(|h| !h.is_local()).cloned().collect();
        let local_limit = list.local_slots.unwrap_or_else(|| {
            ordered
                .iter()
                .filter(|h| h.is_local())
                .map(|h| h.slots)
                .sum()
        });
        let keys = self
            .sched
            .with(|s| remotes.iter().map(|h| s.register(h)).collect::<Vec<_>>());
        for h in &remotes {
            self.pool.warm(h);
        }
        self.set_job(id, Some(file), "queued", None);
        let want = Want {
            remotes: keys,
            local_limit,
        };
        match self.sched.acquire(want).await {
            Ok(guard) => match guard.grant().clone() {
                Grant::Remote(key) => {
                    let spec = remotes
                        .iter()
                        .find(|h| h.key() == key)
                        .cloned()
                        .expect("granted host is in the list");
                    // The first job to an ssh host learns what it speaks (our subsystem
                    // or stock distccd) before it preprocesses; later ones overlap.
                    if spec.is_ssh() && self.pool.known_wire(&spec).is_none() {
                        if let Ok(pl) = self.pool.checkout(&spec).await {
                            self.pool.checkin(pl);
                        }
                    }
                    let wire = self.pool.wire(&spec);
                    self.set_job(id, None, "reserved", Some(&key));
                    *held = Some(Held {
                        guard,
                        spec,
                        wire,
                        hosts: remotes,
                    });
                    MuxReply::Reserved { host: key, wire }
                }
                Grant::Local => {
                    self.set_job(id, None, "local", None);
                    *local = Some(guard);
                    MuxReply::Local {
                        reason: "every remote slot is busy; a local slot is free".into(),
                    }
                }
            },
            Err(why) => {
                // No usable host (all backed off or down): a distribution failure, so the
                // wrapper falls back with a warning, or fails when fallback is off.
                self.set_job(id, None, "failed", None);
                MuxReply::Failed {
                    message: why,
                    exit_code: ExitCode::NoHosts.code(),
                }
            }
        }
    }

    /// Run the job on the reserved host's lane. A failed attempt gets one retry, decided
    /// in one place ([`Daemon::retry`]): on a fresh lane of the same host (a hoarded lane
    /// went stale), on any host (the compiler was killed there: a server fault), or on
    /// another host (this one failed). After a second failure the wrapper compiles
    /// locally. Busy answers reschedule without penalty.
    pub(super) async fn run_job(
        &self,
        id: u64,
        held: Option<Held>,
        spec: JobSpec,
        source: Blob,
    ) -> MuxReply {
        let Some(mut held) = held else {
            return failed(
                "Run without a reserved remote slot on this connection",
                ExitCode::ProtocolError,
            );
        };
        let source = match source.into_unpacked(MAX_BLOB) {
            Ok(s) => s,
            Err(e) => {
                return failed(
                    format!("bad source from the wrapper: {e}"),
                    ExitCode::ProtocolError,
                )
            }
        };
        let first_key = held.spec.key();
        let mut failures = 0u32;
        let mut busy = 0u32;
        loop {
            let key = held.spec.key();
            self.set_job(id, None, "running", Some(&key));
            let (error, retry) = match self.attempt(&mut held, &spec, &source).await {
                Attempt::Answer(reply) => return reply,
                Attempt::Busy(e) => {
                    busy += 1;
                    if busy > MAX_BUSY_RETRIES {
                        return failed(e.to_string(), e.exit_code());
                    }
                    tracing::debug!(host = %key, "busy: rescheduling");
                    let Held {
                        guard, wire, hosts, ..
                    } = held;
                    drop(guard);
                    match self.reacquire(&hosts, wire, None, None).await {
                        Some(h) => held = h,
                        None => return failed(e.to_string(), e.exit_code()),
                    }
                    continue;
                }
                Attempt::Failed { error, retry } => (error, retry),
            };
            failures += 1;
            let Some(next) = self.retry(held, failures, retry, &error.0).await else {
                let (mut message, code) = error;
                if key != first_key {
                    message = format!("{message} (on {key})");
                }
                return failed(message, code);
            };
            held = next;
        }
    }

    /// One attempt of the job on `held`'s host: a lane from the pool, the job on it, and
    /// the outcome told to the scheduler for a success or a busy answer (a failure's
    /// outcome is [`Daemon::retry`]'s to set).
    async fn attempt(&self, held: &mut Held, spec: &JobSpec, source: &[u8]) -> Attempt {
        let key = held.spec.key();
        let start = Instant::now();
        let mut pl = match self.pool.checkout(&held.spec).await {
            Err(e) => {
                tracing::warn!(host = %key, "no lane: {e}");
                return Attempt::Failed {
                    error: (e.message.clone(), e.exit_code),
                    retry: Retry::Elsewhere,
                };
            }
            Ok(pl) if pl.lane.wire() != held.wire => {
                self.pool.checkin(pl);
                return Attempt::Answer(failed(
                    format!(
                        "{key} turned out to speak {:?}, not {:?}; compile locally this time",
                        self.pool.wire(&held.spec),
                        held.wire
                    ),
                    ExitCode::ProtocolError,
                ));
            }
            Ok(pl) => pl,
        };
        match pl.lane.run(spec, source).await {
            Ok(done) => {
                self.pool.checkin(pl);
                held.guard.set_outcome(Outcome::Ok {
                    elapsed: start.elapsed(),
                });
                Attempt::Answer(MuxReply::Done(done))
            }
            Err(e @ TransportError::Refused { .. }) => {
                self.pool.checkin(pl);
                Attempt::Answer(failed(e.to_string(), e.exit_code()))
            }
            Err(e @ TransportError::Busy { .. }) => {
                self.pool.checkin(pl);
                held.guard.set_outcome(Outcome::Busy);
                Attempt::Busy(e)
            }
            Err(e) => {
                // A fault leaves a working lane, but the retry gets a fresh one all the
                // same: nothing of the killed job can linger on it.
                let retry = match &e {
                    TransportError::Fault { .. } => Retry::Anywhere,
                    e if pl.reused && pl_was_stale(e) => Retry::FreshLane,
                    _ => Retry::Elsewhere,
                };
                drop(pl);
                Attempt::Failed {
                    error: (e.to_string(), e.exit_code()),
                    retry,
                }
            }
        }
    }

    /// After the `failures`-th failed attempt on `held` (`why`): the slot for the one
    /// retry `how` asks for, or `None` (give up: the wrapper compiles locally).
    async fn retry(&self, mut held: Held, failures: u32, how: Retry, why: &str) -> Option<Held> {
        let key = held.spec.key();
        if failures >= 2 {
            held.guard.set_outcome(Outcome::Failed);
            return None;
        }
        tracing::info!(host = %key, "job failed: {why}; retrying ({how:?})");
        let exclude = match how {
            Retry::FreshLane => return Some(held),
            // Not the host's failure (the OOM killer, an admin): no backoff, and the host
            // may take the retry.
            Retry::Anywhere => {
                held.guard.set_outcome(Outcome::Unused);
                None
            }
            Retry::Elsewhere => {
                held.guard.set_outcome(Outcome::Failed);
                Some(key.as_str())
            }
        };
        let Held {
            guard, wire, hosts, ..
        } = held;
        drop(guard);
        self.reacquire(&hosts, wire, exclude, Some(RETRY_WAIT))
            .await
    }

    /// A slot on one of `hosts` speaking `wire` (not `exclude`), waiting at most `wait`
    /// (or as long as the queue takes).
    async fn reacquire(
        &self,
        hosts: &[HostSpec],
        wire: Wire,
        exclude: Option<&str>,
        wait: Option<Duration>,
    ) -> Option<Held> {
        let candidates: Vec<&HostSpec> = hosts
            .iter()
            .filter(|h| Some(h.key().as_str()) != exclude && self.pool.wire(h) == wire)
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let want = Want {
            remotes: candidates.iter().map(|h| h.key()).collect(),
            local_limit: 0,
        };
        let acquired = match wait {
            Some(w) => tokio::time::timeout(w, self.sched.acquire(want))
                .await
                .ok()?,
            None => self.sched.acquire(want).await,
        };
        let guard = acquired.ok()?;
        let key = guard.host()?.to_string();
        let spec = candidates
            .iter()
            .find(|h| h.key() == key)
            .map(|h| (*h).clone())?;
        Some(Held {
            guard,
            spec,
            wire,
            hosts: hosts.to_vec(),
        })
    }
}

/// How one attempt ended.
enum Attempt {
    /// The wrapper's answer: the job is done, or it must not be retried.
    Answer(MuxReply),
    /// The server had no free slot: reschedule without penalty.
    Busy(TransportError),
    /// The attempt failed (message, exit code); [`Daemon::retry`] decides what next.
    Failed {
        error: (String, ExitCode),
        retry: Retry,
    },
}

/// Where the one retry of a failed job may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// The same host (and slot), on a fresh lane.
    FreshLane,
    /// Any host of the job's list, the same one included.
    Anywhere,
    /// Another host: this one is backed off.
    Elsewhere,
}

/// A failure that says the lane (not the host) went bad: retry on a fresh lane.
fn pl_was_stale(e: &TransportError) -> bool {
    matches!(
        e,
        TransportError::Closed | TransportError::Proto(crate::proto::Error::Io(_))
    )
}
