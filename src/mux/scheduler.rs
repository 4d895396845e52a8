//! Stage: mux scheduling — the one waiting room for all of a user's jobs. The daemon
//! (`mux::job`, for one wrapper connection of `mux::conn`) asks here for a host slot
//! before it replies `Reserved`/`Local`; the pool (`mux::pool`) then supplies a lane on
//! the chosen host. [`Scheduler`] is pure decision logic (no I/O, time passed in);
//! [`SchedHandle`] wraps it for async callers with a FIFO waiter queue (no polling: a
//! waiter wakes when a host slot is released or a backoff/busy period it waits on ends)
//! and [`HostSlot`] frees one whatever happens to the job. The per-host slot state lives
//! here alone: the pool asks [`HostState::lane_target`] how many lanes a host wants.
//!
//! Words: a *host slot* is one of the host list's places for a compile (`/N` on a remote,
//! `localhost/N` or `--localslots` for local ones), held here as a [`HostSlot`]. A
//! *server slot* is the server's own limit (`subsystem::slots`, advertised in its hello
//! as `slots`): it caps a remote's host slots (`server_slots`).
//!
//! Policy: per-host slot limits from the host list (`/N`, capped by the server's advertised
//! `slots`); among hosts with a free slot the one expected to finish first (lowest measured
//! per-host job time, an EWMA; unmeasured hosts first so they get measured; ties go to the
//! least loaded, then list order). Local slots (`localhost` entries, `--localslots`) share
//! the pool: a job is sent local only when every remote slot is busy. A failed host is
//! backed off for `backoff` (zero disables); a `Busy` answer only pauses the host briefly.
//! A server that has no compiler with the client's identity blocks that compiler (by
//! [`CompilerKey`]) on that host for [`MISMATCH_BLOCK`]; its other compilers still go there.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use crate::hosts::HostSpec;
use crate::mux::monitor::Changes;
use crate::proto::identity::CompilerId;

/// Weight of the newest job time in the per-host EWMA.
const EWMA_ALPHA: f64 = 0.3;
/// How long a host that answered `Busy` gets no new jobs (no penalty counted).
pub const BUSY_PAUSE: Duration = Duration::from_millis(500);

/// How long a host that has no compiler matching the client's is skipped for it (an
/// admin may install one meanwhile).
pub const MISMATCH_BLOCK: Duration = Duration::from_secs(600);

/// A client compiler as the scheduler tells them apart: the name a job asks for and
/// what it is (a server picks by both).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CompilerKey {
    /// The compiler name the job carries (`gcc`, `g++-12`).
    pub name: String,
    /// Its identity on the client.
    pub id: CompilerId,
}

impl CompilerKey {
    /// `gcc 12.2.0 (x86_64-linux-gnu)`.
    pub fn label(&self) -> String {
        format!("{} {}", self.name, self.id.label())
    }
}

/// A compiler a host has no match for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The server's refusal, naming both versions.
    pub reason: String,
    /// Skipped for that compiler until then.
    pub until: Instant,
}

/// A waiter's place in the queue.
pub type Ticket = u64;

/// What a job needs: the remote hosts it may use (keys of registered hosts, in list
/// order) and how many local compiles its host list allows at once (0: none).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Want {
    /// Registered host keys, in host-list order.
    pub remotes: Vec<String>,
    /// Local slot limit of the job's host list (`localhost/N`, `--localslots`); 0 = none.
    pub local_limit: u32,
    /// The job's compiler, when its identity is known: hosts that block it are skipped.
    pub compiler: Option<CompilerKey>,
}

/// A slot held by a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// One of the host's slots (by host key).
    Remote(String),
    /// A local compile slot.
    Local,
}

/// The scheduler's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A slot was taken.
    Granted(Grant),
    /// Nothing free now; the request waits in the queue.
    Wait,
    /// No remote host is usable and no local slot exists: compile locally, unmetered.
    Unusable(String),
    /// Every usable remote host lacks a compiler matching the job's (and no local slot
    /// exists): compile locally, unmetered, without a warning. The reason is one host's.
    NoMatch(String),
}

/// Why [`SchedHandle::acquire`] gives no slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoSlot {
    /// No host is usable (all down or backed off): a distribution failure.
    Unusable(String),
    /// No usable host has the job's compiler ([`Decision::NoMatch`]).
    NoMatch(String),
}

impl NoSlot {
    /// The reason, either way.
    pub fn reason(&self) -> &str {
        match self {
            NoSlot::Unusable(r) | NoSlot::NoMatch(r) => r,
        }
    }
}

/// How a job that held a remote host slot ended, for the per-host statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostVerdict {
    /// The job ran (the compiler's own failure included); `elapsed` feeds the EWMA.
    Ok { elapsed: Duration },
    /// Distribution failed on this host: back it off.
    Failed,
    /// The server said it is full: pause the host briefly, no penalty.
    Busy,
    /// The slot was not used, or the failure is not the host's (refused job, client gone).
    Unused,
}

/// Per-host state.
#[derive(Debug, Clone)]
pub struct HostState {
    /// The host as the newest host list gives it.
    pub spec: HostSpec,
    /// Jobs holding a slot right now.
    pub running: u32,
    /// Slots the server advertised in its hello, once known.
    pub server_slots: Option<u32>,
    /// Mean job time (EWMA), once measured.
    pub ewma_ms: Option<f64>,
    /// No jobs until then (distribution failure).
    pub backoff_until: Option<Instant>,
    /// No new jobs until then (the server said Busy).
    pub busy_until: Option<Instant>,
    /// Jobs that ran.
    pub jobs_ok: u64,
    /// Distribution failures.
    pub jobs_failed: u64,
    /// Busy answers.
    pub jobs_busy: u64,
    /// Jobs sent again on this host after their lane died mid-job.
    pub jobs_resent: u64,
    /// Sum of job times, for the plain mean in `hoardcc status`.
    pub total_ms: u64,
    /// Client compilers this host has no match for.
    pub blocked: HashMap<CompilerKey, Block>,
}

impl HostState {
    fn new(spec: HostSpec) -> HostState {
        HostState {
            spec,
            running: 0,
            server_slots: None,
            ewma_ms: None,
            backoff_until: None,
            busy_until: None,
            jobs_ok: 0,
            jobs_failed: 0,
            jobs_busy: 0,
            jobs_resent: 0,
            total_ms: 0,
            blocked: HashMap::new(),
        }
    }

    /// True while the host is blocked for `compiler`.
    pub fn blocks(&self, compiler: Option<&CompilerKey>, now: Instant) -> Option<&Block> {
        self.blocked.get(compiler?).filter(|b| now < b.until)
    }

    /// Lanes worth keeping open to the host (the pool asks): the list's `/N`, capped by
    /// the server's advertised slots.
    pub fn lane_target(&self) -> u32 {
        let slots = self.spec.slots.max(1);
        self.server_slots.map_or(slots, |s| slots.min(s.max(1)))
    }

    /// Slots usable now: the list's `/N`, capped by the server's advertised slots, and
    /// frozen at the running count while the host is paused for Busy.
    pub fn limit(&self, now: Instant) -> u32 {
        let mut limit = self.lane_target();
        if self.busy_until.is_some_and(|t| now < t) {
            limit = limit.min(self.running);
        }
        limit
    }

    /// True while the host is backed off after a failure.
    pub fn backed_off(&self, now: Instant) -> bool {
        self.backoff_until.is_some_and(|t| now < t)
    }

    /// Plain mean job time in ms, once a job ran.
    pub fn mean_ms(&self) -> Option<u64> {
        (self.jobs_ok > 0).then(|| self.total_ms / self.jobs_ok)
    }
}

struct Waiter {
    ticket: Ticket,
    want: Want,
}

/// The pure scheduler: slot accounting, host choice, backoff and the FIFO waiter queue.
pub struct Scheduler {
    hosts: BTreeMap<String, HostState>,
    local_running: u32,
    backoff: Duration,
    waiters: VecDeque<Waiter>,
    next_ticket: Ticket,
}

impl Scheduler {
    /// A scheduler that backs failed hosts off for `backoff` (zero disables backoff).
    pub fn new(backoff: Duration) -> Scheduler {
        Scheduler {
            hosts: BTreeMap::new(),
            local_running: 0,
            backoff,
            waiters: VecDeque::new(),
            next_ticket: 1,
        }
    }

    /// Add a remote host, or update its slot limit and options from a newer host list.
    /// Returns its key. `localhost` entries are not registered (see [`Want::local_limit`]).
    pub fn register(&mut self, spec: &HostSpec) -> String {
        let key = spec.key();
        match self.hosts.get_mut(&key) {
            Some(h) => h.spec = spec.clone(),
            None => {
                self.hosts.insert(key.clone(), HostState::new(spec.clone()));
            }
        }
        key
    }

    /// Record the slot count a server advertised in its hello.
    pub fn set_server_slots(&mut self, key: &str, slots: u32) {
        if let Some(h) = self.hosts.get_mut(key) {
            h.server_slots = Some(slots);
        }
    }

    /// A host's state, if registered.
    pub fn host(&self, key: &str) -> Option<&HostState> {
        self.hosts.get(key)
    }

    /// All registered hosts, by key.
    pub fn hosts(&self) -> impl Iterator<Item = (&String, &HostState)> {
        self.hosts.iter()
    }

    /// Local compiles holding a slot.
    pub fn local_running(&self) -> u32 {
        self.local_running
    }

    /// Requests waiting for a slot.
    pub fn queued(&self) -> usize {
        self.waiters.len()
    }

    /// Decide for `want` without queueing, taking the slot if one is free.
    pub fn try_acquire(&mut self, want: &Want, now: Instant) -> Decision {
        /// (measured at all, mean ms, load, position in the list): lowest wins.
        type Score = (u8, f64, f64, usize);
        let mut best: Option<(&String, Score)> = None;
        let mut usable_remote = false;
        let mut no_match: Option<&str> = None;
        for (pos, key) in want.remotes.iter().enumerate() {
            let Some(h) = self.hosts.get(key) else {
                continue;
            };
            if h.spec.down || h.backed_off(now) {
                continue;
            }
            if let Some(b) = h.blocks(want.compiler.as_ref(), now) {
                no_match = no_match.or(Some(&b.reason));
                continue;
            }
            usable_remote = true;
            let limit = h.limit(now);
            if h.running >= limit {
                continue;
            }
            // Unmeasured hosts sort first (class 0) so every host gets measured; then the
            // fastest, then the least loaded, then list order.
            let (class, ms) = match h.ewma_ms {
                None => (0u8, 0.0),
                Some(ms) => (1u8, ms),
            };
            let score = (class, ms, f64::from(h.running) / f64::from(limit), pos);
            let better = match &best {
                None => true,
                Some((_, b)) => score.partial_cmp(b).is_some_and(|o| o.is_lt()),
            };
            if better {
                best = Some((key, score));
            }
        }
        if let Some((key, _)) = best {
            let key = key.clone();
            if let Some(h) = self.hosts.get_mut(&key) {
                h.running += 1;
            }
            return Decision::Granted(Grant::Remote(key));
        }
        if want.local_limit > 0 && self.local_running < want.local_limit {
            self.local_running += 1;
            return Decision::Granted(Grant::Local);
        }
        if usable_remote || want.local_limit > 0 {
            return Decision::Wait;
        }
        if let Some(reason) = no_match {
            return Decision::NoMatch(reason.to_string());
        }
        if want.remotes.is_empty() {
            Decision::Unusable("no remote hosts in the host list".into())
        } else {
            Decision::Unusable("every remote host is down or backed off after failures".into())
        }
    }

    /// Put a request in the queue; [`Scheduler::dispatch`] answers it.
    pub fn enqueue(&mut self, want: Want) -> Ticket {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.waiters.push_back(Waiter { ticket, want });
        ticket
    }

    /// Remove a request from the queue (its job went away). True if it was queued.
    pub fn cancel(&mut self, ticket: Ticket) -> bool {
        let before = self.waiters.len();
        self.waiters.retain(|w| w.ticket != ticket);
        before != self.waiters.len()
    }

    /// Answer queued requests in FIFO order: each one that can take a slot (or learns
    /// that nothing is usable) leaves the queue with its decision; the rest keep waiting.
    pub fn dispatch(&mut self, now: Instant) -> Vec<(Ticket, Decision)> {
        let mut out = Vec::new();
        let mut keep = VecDeque::with_capacity(self.waiters.len());
        while let Some(w) = self.waiters.pop_front() {
            match self.try_acquire(&w.want, now) {
                Decision::Wait => keep.push_back(w),
                d => out.push((w.ticket, d)),
            }
        }
        self.waiters = keep;
        out
    }

    /// Give a slot back and record how the job went on that host.
    pub fn release(&mut self, grant: &Grant, verdict: HostVerdict, now: Instant) {
        match grant {
            Grant::Local => self.local_running = self.local_running.saturating_sub(1),
            Grant::Remote(key) => {
                let backoff = self.backoff;
                let Some(h) = self.hosts.get_mut(key) else {
                    return;
                };
                h.running = h.running.saturating_sub(1);
                match verdict {
                    HostVerdict::Ok { elapsed } => {
                        let ms = elapsed.as_secs_f64() * 1000.0;
                        h.ewma_ms = Some(match h.ewma_ms {
                            None => ms,
                            Some(old) => old + EWMA_ALPHA * (ms - old),
                        });
                        h.jobs_ok += 1;
                        h.total_ms += elapsed.as_millis() as u64;
                        h.backoff_until = None;
                    }
                    HostVerdict::Failed => {
                        h.jobs_failed += 1;
                        if !backoff.is_zero() {
                            h.backoff_until = Some(now + backoff);
                        }
                    }
                    HostVerdict::Busy => {
                        h.jobs_busy += 1;
                        h.busy_until = Some(now + BUSY_PAUSE);
                    }
                    HostVerdict::Unused => {}
                }
            }
        }
    }

    /// The server on `key` has no compiler matching `compiler`: skip the host for it for
    /// [`MISMATCH_BLOCK`] (its other compilers still go there).
    pub fn block(&mut self, key: &str, compiler: CompilerKey, reason: String, now: Instant) {
        if let Some(h) = self.hosts.get_mut(key) {
            h.blocked.retain(|_, b| now < b.until);
            h.blocked.insert(
                compiler,
                Block {
                    reason,
                    until: now + MISMATCH_BLOCK,
                },
            );
        }
    }

    /// Count a job sent again on `key` after its lane died (the slot stays held).
    pub fn record_resend(&mut self, key: &str) {
        if let Some(h) = self.hosts.get_mut(key) {
            h.jobs_resent += 1;
        }
    }

    /// The next moment a paused or backed-off host becomes usable again, if any host is
    /// paused and requests are waiting (then [`Scheduler::dispatch`] should run again).
    pub fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        if self.waiters.is_empty() {
            return None;
        }
        self.hosts
            .values()
            .flat_map(|h| {
                let blocks = h.blocked.values().map(|b| b.until);
                [h.backoff_until, h.busy_until]
                    .into_iter()
                    .flatten()
                    .chain(blocks)
            })
            .filter(|t| *t > now)
            .min()
    }
}

/// The scheduler shared by the daemon's tasks: the pure [`Scheduler`] behind a mutex plus
/// the senders that wake queued requests.
pub struct SchedHandle {
    inner: Mutex<SchedShared>,
    /// Fired when a change moves [`Scheduler::next_wakeup`], so queued requests re-read
    /// it: a pause set by one job (BUSY, backoff) must wake the others when it ends even
    /// if that job has gone.
    changed: Notify,
    /// Tells `hoardcc mon` watchers (`mux::monitor`) that slots or counters changed.
    watchers: Changes,
}

struct SchedShared {
    sched: Scheduler,
    wake: HashMap<Ticket, oneshot::Sender<Decision>>,
}

impl SchedHandle {
    /// A shared scheduler with the given backoff period.
    pub fn new(backoff: Duration) -> Arc<SchedHandle> {
        Arc::new(SchedHandle {
            inner: Mutex::new(SchedShared {
                sched: Scheduler::new(backoff),
                wake: HashMap::new(),
            }),
            changed: Notify::new(),
            watchers: Changes::new(),
        })
    }

    /// The change signal of `hoardcc mon` watchers, bumped on every scheduler change
    /// (the pool and the job table share it).
    pub(crate) fn changes(&self) -> &Changes {
        &self.watchers
    }

    /// Run `f` on the scheduler, then hand out whatever slots became available.
    pub fn with<R>(&self, f: impl FnOnce(&mut Scheduler) -> R) -> R {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let before = g.sched.next_wakeup(now);
        let r = f(&mut g.sched);
        Self::deliver(&mut g);
        let moved = g.sched.next_wakeup(now) != before;
        drop(g);
        if moved {
            self.changed.notify_waiters();
        }
        self.watchers.bump();
        r
    }

    /// Read the scheduler without changing it (reports, lane targets): no waiter is
    /// woken, and watchers are not told of a change.
    pub fn peek<R>(&self, f: impl FnOnce(&Scheduler) -> R) -> R {
        f(&self.inner.lock().unwrap_or_else(|p| p.into_inner()).sched)
    }

    /// Answer queued requests; a grant whose waiter vanished is given back at once.
    fn deliver(g: &mut SchedShared) {
        loop {
            let now = Instant::now();
            let decided = g.sched.dispatch(now);
            if decided.is_empty() {
                return;
            }
            let mut returned = false;
            for (ticket, d) in decided {
                let sent = match g.wake.remove(&ticket) {
                    Some(tx) => tx.send(d),
                    None => Err(d),
                };
                if let Err(Decision::Granted(grant)) = sent {
                    g.sched.release(&grant, HostVerdict::Unused, now);
                    returned = true;
                }
            }
            if !returned {
                return;
            }
        }
    }

    /// Wait in the queue for a slot for `want`. Returns the grant as a guard that releases
    /// it when dropped, or the reason nothing is usable. Cancel-safe: dropping the future
    /// leaves the queue and gives back a slot granted meanwhile.
    pub async fn acquire(self: &Arc<Self>, want: Want) -> Result<HostSlot, NoSlot> {
        let (tx, rx) = oneshot::channel();
        let ticket = {
            let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let t = g.sched.enqueue(want);
            g.wake.insert(t, tx);
            Self::deliver(&mut g);
            t
        };
        let mut waiting = Waiting {
            handle: self.clone(),
            ticket,
            rx: Some(rx),
        };
        loop {
            // Register for change notices before reading the wake-up time, so a change in
            // between is not missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let wakeup = {
                let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
                g.sched.next_wakeup(Instant::now())
            };
            let rx = waiting.rx.as_mut().expect("receiver present while waiting");
            let woke = tokio::select! {
                r = rx => Woke::Decided(r),
                _ = sleep_until_opt(wakeup) => Woke::PauseOver,
                _ = &mut changed => Woke::Changed,
            };
            match woke {
                Woke::Changed => continue,
                // A pause ended: re-run the queue (which may answer this request).
                Woke::PauseOver => self.with(|_| ()),
                Woke::Decided(Ok(d)) => {
                    waiting.rx = None;
                    return match d {
                        Decision::Granted(grant) => Ok(HostSlot::new(self.clone(), grant)),
                        Decision::Unusable(why) => Err(NoSlot::Unusable(why)),
                        Decision::NoMatch(why) => Err(NoSlot::NoMatch(why)),
                        Decision::Wait => Err(NoSlot::Unusable(
                            "internal: a waiter was woken to wait".into(),
                        )),
                    };
                }
                Woke::Decided(Err(_)) => {
                    waiting.rx = None;
                    return Err(NoSlot::Unusable("the scheduler dropped the request".into()));
                }
            }
        }
    }

    /// Take a free slot for `want` now, without queueing (used for retries).
    pub fn try_acquire(self: &Arc<Self>, want: &Want) -> Option<HostSlot> {
        match self.with(|s| s.try_acquire(want, Instant::now())) {
            Decision::Granted(grant) => Some(HostSlot::new(self.clone(), grant)),
            _ => None,
        }
    }
}

/// What ended one wait of a queued request.
enum Woke {
    /// The request was answered (or its sender dropped).
    Decided(Result<Decision, oneshot::error::RecvError>),
    /// The earliest pause (BUSY or backoff) ended.
    PauseOver,
    /// The scheduler changed: the earliest pause may have moved.
    Changed,
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A queued request; on drop (the job went away) it leaves the queue and gives back a slot
/// that was granted but not yet received.
struct Waiting {
    handle: Arc<SchedHandle>,
    ticket: Ticket,
    rx: Option<oneshot::Receiver<Decision>>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else { return };
        let mut g = self.handle.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.sched.cancel(self.ticket);
        g.wake.remove(&self.ticket);
        if let Ok(Decision::Granted(grant)) = rx.try_recv() {
            g.sched.release(&grant, HostVerdict::Unused, Instant::now());
        }
        SchedHandle::deliver(&mut g);
    }
}

/// A held host slot. Dropping it releases it with the recorded verdict (`Unused` unless
/// [`HostSlot::set_verdict`] was called), so a wrapper that disconnects mid-job frees it.
pub struct HostSlot {
    handle: Arc<SchedHandle>,
    grant: Grant,
    verdict: HostVerdict,
}

impl HostSlot {
    fn new(handle: Arc<SchedHandle>, grant: Grant) -> HostSlot {
        HostSlot {
            handle,
            grant,
            verdict: HostVerdict::Unused,
        }
    }

    /// The slot held.
    pub fn grant(&self) -> &Grant {
        &self.grant
    }

    /// The host key for a remote slot.
    pub fn host(&self) -> Option<&str> {
        match &self.grant {
            Grant::Remote(k) => Some(k),
            Grant::Local => None,
        }
    }

    /// Record how the job went; applied when the guard is dropped.
    pub fn set_verdict(&mut self, verdict: HostVerdict) {
        self.verdict = verdict;
    }
}

impl Drop for HostSlot {
    fn drop(&mut self) {
        let (grant, verdict) = (self.grant.clone(), self.verdict);
        self.handle
            .with(|s| s.release(&grant, verdict, Instant::now()));
    }
}

#[cfg(test)]
mod tests;
