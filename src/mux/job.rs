//! Stage: one job in the mux — reserve a host slot (`mux::scheduler`), run attempts on a
//! lane from `mux::pool` (`mux::lane`), and follow the retry policy of `mux::retry`
//! between them. The job's compiler identity (`identity::Prober`, once per compiler)
//! goes with it; a server without a match blocks that compiler there, and the job moves
//! on or compiles locally. Neighbours: `mux::conn` (asks for it), `mux::listener` (the
//! shared `Daemon` state).

use std::time::Duration;

use tokio::time::Instant;

use crate::exit::ExitCode;
use crate::hosts::{self, HostSpec};
use crate::mux::conn::failed;
use crate::mux::lane::{LaneEvent, TransportError, Wire};
use crate::mux::listener::Daemon;
use crate::mux::pool::{PoolError, PooledLane};
use crate::mux::retry::{next_step, until_answer, Failure, Step, Tally};
use crate::mux::scheduler::{CompilerKey, Grant, HostSlot, HostVerdict, NoSlot, Want};
use crate::mux::upload::{SharedChunks, Source};
use crate::proto::chunk::{Cut, Recipe};
use crate::proto::compress::MAX_BLOB;
use crate::proto::msg::{Blob, JobSpec, LocalCompiler, MuxReply};
use crate::proto::status::JobState;

/// How long a retry may wait for a host slot on another host.
const RETRY_WAIT: Duration = Duration::from_secs(5);

/// A reserved remote host slot and what the wrapper was told.
pub(crate) struct Held {
    guard: HostSlot,
    spec: HostSpec,
    wire: Wire,
    /// The job's hosts, for a retry elsewhere.
    hosts: Vec<HostSpec>,
    /// The job's compiler, when its identity is known.
    compiler: Option<CompilerKey>,
}

impl Daemon {
    fn set_job(&self, id: u64, file: Option<&str>, state: JobState, host: Option<&str>) {
        self.monitor.set_job(id, file, state, host);
    }

    /// What a lane reports of job `id` on `host`: its state, and bytes for the job and
    /// the counters.
    fn lane_event(&self, id: u64, host: &str, e: LaneEvent) {
        let (state, sent, received) = match e {
            LaneEvent::Sending { bytes } => (JobState::Sending, bytes, 0),
            LaneEvent::Compiling => (JobState::Compiling, 0, 0),
            LaneEvent::Receiving { bytes } => (JobState::Receiving, 0, bytes),
        };
        self.monitor.set_state(id, state);
        if sent + received > 0 {
            self.monitor.add_bytes(id, sent, received);
            self.stats.update(|s| {
                s.bytes_sent += sent;
                s.bytes_received += received;
                let h = s.host_mut(host);
                h.bytes_sent += sent;
                h.bytes_received += received;
            });
        }
    }

    /// The identity of the wrapper's compiler (probed on first use, then one `stat`).
    async fn compiler_key(&self, compiler: Option<LocalCompiler>) -> Option<CompilerKey> {
        let c = compiler?;
        match self.prober.identity(std::path::Path::new(&c.path)).await {
            Ok(id) => Some(CompilerKey { name: c.name, id }),
            Err(e) => {
                tracing::debug!("{e}: its jobs carry no identity");
                None
            }
        }
    }

    /// The host's chunk knowledge and counters, shared by its lanes.
    pub(crate) fn host_chunks(&self, key: &str) -> SharedChunks {
        let mut all = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        all.entry(key.to_string()).or_default().clone()
    }

    /// Parse the host list, register and warm its hosts, learn the compiler's identity,
    /// and wait for a host slot on a host that has not refused that compiler.
    pub(super) async fn reserve(
        &self,
        id: u64,
        hosts_text: &str,
        file: &str,
        compiler: Option<LocalCompiler>,
        held: &mut Option<Held>,
        local: &mut Option<HostSlot>,
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
        self.set_job(id, Some(file), JobState::Waiting, None);
        let compiler = self.compiler_key(compiler).await;
        let want = Want {
            remotes: keys,
            local_limit,
            compiler: compiler.clone(),
        };
        match self.sched.acquire(want).await {
            Ok(guard) => match guard.grant().clone() {
                Grant::Remote(key) => {
                    let spec = remotes
                        .iter()
                        .find(|h| h.key() == key)
                        .cloned()
                        .expect("granted host is in the list");
                    // What the host is known (or, before its first lane, expected) to
                    // speak: the wrapper preprocesses while the pool connects. A host
                    // that turns out to speak the other wire answers `Rewire`.
                    let wire = self.pool.wire(&spec);
                    self.set_job(id, None, JobState::Preprocessing, Some(&key));
                    *held = Some(Held {
                        guard,
                        spec,
                        wire,
                        hosts: remotes,
                        compiler,
                    });
                    MuxReply::Reserved { host: key, wire }
                }
                Grant::Local => {
                    self.set_job(id, None, JobState::Local, None);
                    *local = Some(guard);
                    MuxReply::Local {
                        reason: "every remote slot is busy; a local slot is free".into(),
                    }
                }
            },
            Err(NoSlot::NoMatch(why)) => {
                // No host has this compiler: not a failure, and no warning.
                self.set_job(id, None, JobState::Local, None);
                MuxReply::Local { reason: why }
            }
            Err(NoSlot::Unusable(why)) => {
                // No usable host (all backed off or down): a distribution failure, so the
                // wrapper falls back with a warning, or fails when fallback is off.
                MuxReply::Failed {
                    message: why,
                    exit_code: ExitCode::NoHosts.code(),
                }
            }
        }
    }

    /// Run the job on the reserved host's lane, following the retry policy of
    /// `mux::retry` after each attempt that gave no answer: a job whose lane died is sent
    /// again on the same host (same host slot, fresh lane) once the host answers within the
    /// resend wait; a fault or a failure of the host gets one retry (on any host, or on
    /// another one); then the wrapper compiles locally. Busy answers reschedule without
    /// penalty.
    ///
    /// A host that turned out to speak the other wire gives `Rewire`: the slot stays in
    /// `slot`, for the wrapper's `Run` with the source preprocessed again.
    pub(super) async fn run_job(
        &self,
        id: u64,
        slot: &mut Option<Held>,
        mut spec: JobSpec,
        source: Blob,
        recipe: Option<Recipe>,
    ) -> MuxReply {
        let Some(mut held) = slot.take() else {
            return failed(
                "Run without a reserved remote slot on this connection",
                ExitCode::ProtocolError,
            );
        };
        let bad = |e: String| {
            failed(
                format!("bad source from the wrapper: {e}"),
                ExitCode::ProtocolError,
            )
        };
        let source = match source.into_unpacked(MAX_BLOB) {
            Ok(s) => s,
            Err(e) => return bad(e.to_string()),
        };
        let source = match recipe {
            None => Source::Whole(source),
            Some(r) => match Cut::from_parts(r, source) {
                Ok(cut) => Source::Cut(cut),
                Err(e) => return bad(e.to_string()),
            },
        };
        spec.compiler_id = held.compiler.as_ref().map(|c| c.id.clone());
        let first_key = held.spec.key();
        let mut tally = Tally::default();
        // After a lost lane: the moment the host must have given a fresh one by.
        let mut resend_by: Option<Instant> = None;
        loop {
            let key = held.spec.key();
            let state = if resend_by.is_some() {
                JobState::Resending
            } else {
                JobState::Sending
            };
            self.set_job(id, None, state, Some(&key));
            let (failure, (message, code)) = match self
                .attempt(id, &mut held, &spec, &source, resend_by.take())
                .await
            {
                Attempt::Answer(reply) => return reply,
                Attempt::Rewire(wire) => {
                    tracing::info!(host = %key, "speaks {wire:?}: the wrapper preprocesses again");
                    held.wire = wire;
                    *slot = Some(held);
                    self.set_job(id, None, JobState::Preprocessing, Some(&key));
                    return MuxReply::Rewire { wire };
                }
                Attempt::Failed { failure, error } => (failure, error),
                Attempt::Mismatch(reason) => {
                    tracing::info!(host = %key, "{reason}; that compiler goes elsewhere");
                    let Held {
                        guard,
                        wire,
                        hosts,
                        compiler,
                        ..
                    } = held;
                    let Some(compiler) = compiler else {
                        // Only a job with an identity can mismatch.
                        return failed(reason, ExitCode::AccessDenied);
                    };
                    self.sched
                        .with(|s| s.block(&key, compiler.clone(), reason.clone(), Instant::now()));
                    drop(guard);
                    self.monitor.set_state(id, JobState::Waiting);
                    // The scheduler skips every host blocked for this compiler; when none
                    // is left the job compiles locally, quietly.
                    match self
                        .reacquire(&hosts, wire, Some(compiler), None, None)
                        .await
                    {
                        Some(h) => held = h,
                        None => {
                            self.monitor.set_state(id, JobState::Local);
                            return MuxReply::Local { reason };
                        }
                    }
                    continue;
                }
            };
            let give_up = |message: String| {
                if key != first_key {
                    failed(format!("{message} (on {key})"), code)
                } else {
                    failed(message, code)
                }
            };
            match next_step(&mut tally, failure) {
                Step::Resend => {
                    let wait = self.pool.resend_wait(&held.spec);
                    tracing::info!(
                        host = %key,
                        "lane lost mid-job: {message}; sending the job again once {key} answers (waiting up to {wait:?})"
                    );
                    self.sched.with(|s| s.record_resend(&key));
                    self.monitor
                        .fail(id, Some(&key), &format!("{message} (sending it again)"));
                    resend_by = Some(Instant::now() + wait);
                }
                Step::Reschedule => {
                    tracing::debug!(host = %key, "busy: rescheduling");
                    self.stats.update(|s| s.host_mut(&key).jobs_busy += 1);
                    self.monitor.set_state(id, JobState::Waiting);
                    let Held {
                        mut guard,
                        wire,
                        hosts,
                        compiler,
                        ..
                    } = held;
                    guard.set_verdict(HostVerdict::Busy);
                    drop(guard);
                    match self.reacquire(&hosts, wire, compiler, None, None).await {
                        Some(h) => held = h,
                        None => return failed(message, code),
                    }
                }
                Step::Retry {
                    verdict,
                    exclude_this,
                } => {
                    tracing::info!(host = %key, "job failed: {message}; retrying (on {})",
                        if exclude_this { "another host" } else { "any host" });
                    let Held {
                        mut guard,
                        wire,
                        hosts,
                        compiler,
                        ..
                    } = held;
                    guard.set_verdict(verdict);
                    drop(guard);
                    self.monitor.set_state(id, JobState::Waiting);
                    let exclude = exclude_this.then_some(key.as_str());
                    match self
                        .reacquire(&hosts, wire, compiler, exclude, Some(RETRY_WAIT))
                        .await
                    {
                        Some(h) => {
                            self.monitor
                                .fail(id, Some(&key), &format!("{message} (retried)"));
                            held = h;
                        }
                        None => return give_up(message),
                    }
                }
                Step::GiveUp { verdict } => {
                    held.guard.set_verdict(verdict);
                    return give_up(message);
                }
            }
        }
    }

    /// One attempt of the job on `held`'s host: a lane from the pool (for a resend, the
    /// host has until `resend_by` to give one), the job on it, and the success told to
    /// the scheduler (a failure's verdict is the policy's to set).
    async fn attempt(
        &self,
        id: u64,
        held: &mut Held,
        spec: &JobSpec,
        source: &Source,
        resend_by: Option<Instant>,
    ) -> Attempt {
        let key = held.spec.key();
        let checkout = match resend_by {
            None => self
                .pool
                .checkout(&held.spec)
                .await
                .map_err(|e| (e, Failure::Host)),
            Some(by) => self.fresh_lane(&held.spec, by).await,
        };
        let start = Instant::now();
        let mut pl = match checkout {
            Err((e, failure)) => {
                tracing::warn!(host = %key, "no lane: {e}");
                return Attempt::Failed {
                    failure,
                    error: (e.message.clone(), e.exit_code),
                };
            }
            Ok(pl) if pl.lane.wire() != held.wire => {
                let wire = pl.lane.wire();
                self.pool.checkin(pl);
                return Attempt::Rewire(wire);
            }
            Ok(pl) => pl,
        };
        let chunks = self.host_chunks(&key);
        let observe = |e: LaneEvent| self.lane_event(id, &key, e);
        match pl
            .lane
            .run_observed(spec, source, Some(&chunks), &observe)
            .await
        {
            Ok(done) => {
                self.pool.checkin(pl);
                held.guard.set_verdict(if done.cached {
                    HostVerdict::Cached
                } else {
                    HostVerdict::Ok {
                        elapsed: start.elapsed(),
                    }
                });
                Attempt::Answer(MuxReply::Done(done))
            }
            Err(TransportError::Mismatch { reason, .. }) => {
                // The lane is fine; the slot is given back unused.
                self.pool.checkin(pl);
                Attempt::Mismatch(reason)
            }
            Err(e) => {
                let failure = failure_of(&e);
                if matches!(failure, Failure::Refused | Failure::Busy) {
                    // The lane itself is fine.
                    self.pool.checkin(pl);
                } else {
                    // A fault leaves a working lane, but a retry gets a fresh one all the
                    // same: nothing of the killed job can linger on it.
                    drop(pl);
                }
                Attempt::Failed {
                    failure,
                    error: (e.to_string(), e.exit_code()),
                }
            }
        }
    }

    /// A lane on `spec` for a resend: the pool is asked again (0.1 s apart, doubling to
    /// 1 s) until it gives one or `by` passes; an error that waiting cannot cure (host
    /// key, authentication, refusal) ends the wait at once.
    async fn fresh_lane(
        &self,
        spec: &HostSpec,
        by: Instant,
    ) -> Result<PooledLane, (PoolError, Failure)> {
        let probe = || async {
            match self.pool.checkout(spec).await {
                Ok(pl) => Ok(Ok(pl)),
                Err(e) if e.transient => Err(e),
                Err(e) => Ok(Err(e)),
            }
        };
        match until_answer(by, probe).await {
            Ok(Ok(pl)) => Ok(pl),
            Ok(Err(e)) => Err((e, Failure::Host)),
            Err(last) => {
                let key = spec.key();
                let e = match last {
                    Some(e) => PoolError {
                        message: format!("{key} did not answer again in time: {}", e.message),
                        ..e
                    },
                    None => PoolError {
                        message: format!("{key} did not answer again in time"),
                        exit_code: ExitCode::Timeout,
                        transient: true,
                    },
                };
                Err((e, Failure::Unanswered))
            }
        }
    }

    /// A slot on one of `hosts` speaking `wire` (not `exclude`, nor one blocked for
    /// `compiler`), waiting at most `wait` (or as long as the queue takes).
    async fn reacquire(
        &self,
        hosts: &[HostSpec],
        wire: Wire,
        compiler: Option<CompilerKey>,
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
            compiler: compiler.clone(),
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
            compiler,
        })
    }
}

/// How one attempt ended.
enum Attempt {
    /// The wrapper's answer: the job is done, or it must not be retried.
    Answer(MuxReply),
    /// No answer: `mux::retry::next_step` decides what next from `failure`; `error` is
    /// the message and exit code the wrapper gets if the job is given up.
    Failed {
        failure: Failure,
        error: (String, ExitCode),
    },
    /// The server has no compiler with the job's identity (the reason names both).
    Mismatch(String),
    /// The host speaks this wire, not the one the source was preprocessed for.
    Rewire(Wire),
}

/// How the policy sees a failed job on a lane.
fn failure_of(e: &TransportError) -> Failure {
    match e {
        TransportError::Refused { .. } => Failure::Refused,
        TransportError::Busy { .. } => Failure::Busy,
        TransportError::Fault { .. } => Failure::Fault,
        // The lane ended under the job: the connection was cut or timed out (keepalive),
        // or the server's end went away.
        TransportError::Closed
        | TransportError::Proto(crate::proto::Error::Io(_))
        | TransportError::Proto(crate::proto::Error::Truncated { .. }) => Failure::LaneDied,
        _ => Failure::Host,
    }
}
