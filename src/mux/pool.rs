//! Stage: mux connection hoarding. For each SSH host the daemon keeps a set of
//! authenticated russh [`Connection`]s, and on them lanes ([`Lane`]s over subsystem
//! channels, each one `hoardcc serve` process that runs job after job). Lanes are opened
//! ahead of need up to the host's slot limit, at most `channels_per_connection` per
//! connection; a channel open refused for MaxSessions opens another connection. New
//! connections to one host are made by one opener task at a time, at least
//! [`CONNECT_GAP`] apart, to stay under sshd's MaxStartups. Every idle lane is owned by a
//! task that waits on (a job taking it, `Lane::idle_watch`), so idle channels are always
//! drained and a dead lane is noticed at once. Hosts without our subsystem get one
//! `distccd --inetd` exec channel per job on the hoarded connection; TCP hosts get a
//! fresh TCP connection per job. Neighbours: `mux::lane` (lanes), `mux::ssh`
//! (connections), `mux::scheduler` (owns the per-host slot state: told each server's
//! advertised slots, asked how many lanes a host wants), `mux::job` (the caller:
//! [`Pool::checkout`] / [`Pool::checkin`] around each job).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::exit::ExitCode;
use crate::hosts::{HostKind, HostSpec};
use crate::mux::lane::{self, Lane, TransportError, Wire};
use crate::mux::scheduler::SchedHandle;
use crate::mux::ssh::{self, Connection, SshError, SshSettings};

/// Minimum gap between two connection starts to one host (sshd MaxStartups).
pub const CONNECT_GAP: Duration = Duration::from_millis(100);
/// A lane idle longer than this is pinged before it gets a job.
pub const PING_IDLE_AFTER: Duration = Duration::from_secs(30);
/// How long a ping of an idle lane may take.
const PING_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an idle lane's task may take to hand the lane over.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(1);

/// Why no lane could be had. Cloneable, so one failed connect answers every waiter.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct PoolError {
    /// What went wrong, naming the host.
    pub message: String,
    /// The distcc exit code for it.
    pub exit_code: ExitCode,
    /// Whether trying again (another lane or connection) may help.
    pub transient: bool,
}

impl From<&TransportError> for PoolError {
    fn from(e: &TransportError) -> PoolError {
        let transient = match e {
            TransportError::Ssh(s) => s.is_transient(),
            TransportError::Refused { .. } => false,
            _ => true,
        };
        PoolError {
            message: e.to_string(),
            exit_code: e.exit_code(),
            transient,
        }
    }
}

impl From<TransportError> for PoolError {
    fn from(e: TransportError) -> PoolError {
        PoolError::from(&e)
    }
}

/// Counts a lane against its host and its connection while it exists.
struct LaneCount {
    host: Arc<AtomicU32>,
    conn: Option<Arc<AtomicU32>>,
}

impl LaneCount {
    fn new(host: &Arc<AtomicU32>, conn: Option<&Arc<AtomicU32>>) -> LaneCount {
        host.fetch_add(1, Ordering::SeqCst);
        if let Some(c) = conn {
            c.fetch_add(1, Ordering::SeqCst);
        }
        LaneCount {
            host: host.clone(),
            conn: conn.cloned(),
        }
    }
}

impl Drop for LaneCount {
    fn drop(&mut self) {
        self.host.fetch_sub(1, Ordering::SeqCst);
        if let Some(c) = &self.conn {
            c.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// A lane lent to one job. Give it back with [`Pool::checkin`] (or drop it: the channel
/// closes and the counts go down).
pub struct PooledLane {
    /// The lane itself.
    pub lane: Lane,
    /// True if the lane already ran a job before this checkout (a failure on it may be a
    /// stale lane rather than the host).
    pub reused: bool,
    jobs: u64,
    host_key: String,
    _count: LaneCount,
}

impl PooledLane {
    /// The host key this lane reaches.
    pub fn host_key(&self) -> &str {
        &self.host_key
    }
}

struct ConnEntry {
    id: u64,
    conn: Connection,
    lanes: Arc<AtomicU32>,
    /// Channels allowed on this connection (lowered when the server refuses a session).
    cap: u32,
}

struct IdleLane {
    id: u64,
    since: Instant,
    take: oneshot::Sender<oneshot::Sender<PooledLane>>,
}

#[derive(Default)]
struct HostPoolState {
    conns: Vec<ConnEntry>,
    idle: Vec<IdleLane>,
    waiters: VecDeque<oneshot::Sender<Result<PooledLane, PoolError>>>,
    opener_running: bool,
    /// Learned: the host has no `hoardcc` subsystem, use distccd over exec.
    distcc_exec: bool,
    /// The wire lanes turned out to speak, once one opened.
    wire: Option<Wire>,
    last_connect: Option<Instant>,
    last_error: Option<String>,
    connections_made: u64,
    /// The keepalive interval of the newest connection (zero: off), once one was made.
    keepalive: Option<Duration>,
}

struct HostPool {
    key: String,
    spec: Mutex<HostSpec>,
    lanes: Arc<AtomicU32>,
    jobs: AtomicU64,
    state: Mutex<HostPoolState>,
}

impl HostPool {
    fn spec(&self) -> HostSpec {
        self.spec.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, HostPoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Per-host counters for `hoardcc status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolHostStatus {
    /// Host key.
    pub host: String,
    /// Live SSH connections.
    pub connections: u32,
    /// Open lanes (idle + busy).
    pub lanes: u32,
    /// Idle lanes.
    pub idle: u32,
    /// Jobs waiting for a lane to open.
    pub waiting: u32,
    /// The wire, once learned.
    pub wire: Option<Wire>,
    /// SSH connections made so far.
    pub connections_made: u64,
    /// Jobs handed to lanes so far.
    pub jobs: u64,
    /// The last connection or lane error.
    pub last_error: Option<String>,
}

struct PoolInner {
    settings: SshSettings,
    channels_per_connection: u32,
    sched: Option<Arc<SchedHandle>>,
    hosts: Mutex<HashMap<String, Arc<HostPool>>>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    next_id: AtomicU64,
}

/// The daemon's hoard of connections and lanes. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

impl Pool {
    /// An empty pool. `sched`, when given, learns each server's advertised slots.
    /// Background tasks run on `tracker` and stop when `shutdown` is cancelled.
    pub fn new(
        settings: SshSettings,
        channels_per_connection: u32,
        sched: Option<Arc<SchedHandle>>,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> Pool {
        Pool {
            inner: Arc::new(PoolInner {
                settings,
                channels_per_connection: channels_per_connection.max(1),
                sched,
                hosts: Mutex::new(HashMap::new()),
                shutdown,
                tracker,
                next_id: AtomicU64::new(1),
            }),
        }
    }

    fn host_pool(&self, spec: &HostSpec) -> Arc<HostPool> {
        let key = spec.key();
        let mut hosts = self.inner.hosts.lock().unwrap_or_else(|p| p.into_inner());
        let hp = hosts.entry(key.clone()).or_insert_with(|| {
            Arc::new(HostPool {
                key,
                spec: Mutex::new(spec.clone()),
                lanes: Arc::new(AtomicU32::new(0)),
                jobs: AtomicU64::new(0),
                state: Mutex::new(HostPoolState::default()),
            })
        });
        *hp.spec.lock().unwrap_or_else(|p| p.into_inner()) = spec.clone();
        hp.clone()
    }

    /// Lanes wanted open to `hp`: the scheduler's per-host target (the list's `/N`
    /// capped by the server's advertised slots), or the list's `/N` for a host it does
    /// not know.
    fn target(&self, hp: &HostPool) -> u32 {
        let known = self
            .inner
            .sched
            .as_ref()
            .and_then(|s| s.peek(|s| s.host(&hp.key).map(|h| h.lane_target())));
        known.unwrap_or_else(|| hp.spec().slots.max(1))
    }

    /// Tell `hoardcc mon` watchers that connections or lanes changed.
    fn changed(&self) {
        if let Some(s) = &self.inner.sched {
            s.changes().bump();
        }
    }

    /// The wire a job for `spec` should be preprocessed for: what the host's lanes turned
    /// out to speak, else what the host list suggests.
    pub fn wire(&self, spec: &HostSpec) -> Wire {
        if spec.is_ssh() {
            if let Some(w) = self.host_pool(spec).state().wire {
                return w;
            }
        }
        lane::expected_wire(spec)
    }

    /// How long a job whose lane died waits for `spec` to give a fresh lane
    /// (`mux::retry::resend_wait`: two keepalive intervals of the host's newest
    /// connection, else of the `[ssh]` settings).
    pub fn resend_wait(&self, spec: &HostSpec) -> Duration {
        let keepalive = self.host_pool(spec).state().keepalive;
        let fallback = self.inner.settings.keepalive_interval;
        crate::mux::retry::resend_wait(keepalive.unwrap_or(fallback), fallback)
    }

    /// Start connecting to an SSH host and opening lanes up to its slot limit, in the
    /// background. No-op for other hosts or when the host is already warm.
    pub fn warm(&self, spec: &HostSpec) {
        if !spec.is_ssh() || spec.down || self.inner.shutdown.is_cancelled() {
            return;
        }
        let hp = self.host_pool(spec);
        let mut st = hp.state();
        if !st.opener_running && hp.lanes.load(Ordering::SeqCst) < self.target(&hp) {
            st.opener_running = true;
            drop(st);
            self.spawn_opener(hp);
        }
    }

    /// A lane on `spec` for one job: an idle one (pinged first if it idled long), else a
    /// newly opened one. TCP hosts get a fresh connection.
    ///
    /// # Errors
    /// The connection or lane failure, or a timeout.
    pub async fn checkout(&self, spec: &HostSpec) -> Result<PooledLane, PoolError> {
        match &spec.kind {
            HostKind::Ssh { .. } => self.checkout_ssh(spec).await,
            _ => {
                let lane = Lane::open(spec, &self.inner.settings).await?;
                let hp = self.host_pool(spec);
                hp.jobs.fetch_add(1, Ordering::SeqCst);
                Ok(PooledLane {
                    lane,
                    reused: false,
                    jobs: 1,
                    host_key: hp.key.clone(),
                    _count: LaneCount::new(&hp.lanes, None),
                })
            }
        }
    }

    async fn checkout_ssh(&self, spec: &HostSpec) -> Result<PooledLane, PoolError> {
        let hp = self.host_pool(spec);
        loop {
            let idle = hp.state().idle.pop();
            let Some(idle) = idle else { break };
            let (tx, rx) = oneshot::channel();
            if idle.take.send(tx).is_err() {
                continue; // the lane died meanwhile
            }
            let Ok(Ok(mut pl)) = tokio::time::timeout(HANDOVER_TIMEOUT, rx).await else {
                continue;
            };
            if pl.lane.is_closed() {
                // Its connection just ended (its idle task had not noticed yet).
                continue;
            }
            if idle.since.elapsed() > PING_IDLE_AFTER {
                if let Err(e) = pl.lane.ping(PING_TIMEOUT).await {
                    tracing::info!(host = %hp.key, "idle lane failed its ping: {e}");
                    continue;
                }
            }
            pl.reused = pl.jobs > 0;
            pl.jobs += 1;
            hp.jobs.fetch_add(1, Ordering::SeqCst);
            return Ok(pl);
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut st = hp.state();
            st.waiters.push_back(tx);
            if !st.opener_running {
                st.opener_running = true;
                drop(st);
                self.spawn_opener(hp.clone());
            }
        }
        let limit = self.inner.settings.connect_timeout + self.inner.settings.io_timeout * 2;
        match tokio::time::timeout(limit, rx).await {
            Ok(Ok(Ok(mut pl))) => {
                pl.reused = pl.jobs > 0;
                pl.jobs += 1;
                hp.jobs.fetch_add(1, Ordering::SeqCst);
                Ok(pl)
            }
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(PoolError {
                message: format!("{}: the lane opener stopped", hp.key),
                exit_code: ExitCode::DistccFailed,
                transient: true,
            }),
            Err(_) => Err(PoolError {
                message: format!("{}: timed out waiting for a lane", hp.key),
                exit_code: ExitCode::Timeout,
                transient: true,
            }),
        }
    }

    /// Give a lane back after a job that completed on it. Reusable lanes go to a waiting
    /// job or back to idle; spent ones (distcc) are closed.
    pub fn checkin(&self, pl: PooledLane) {
        if !pl.lane.reusable() || self.inner.shutdown.is_cancelled() {
            return;
        }
        let hp = {
            let hosts = self.inner.hosts.lock().unwrap_or_else(|p| p.into_inner());
            match hosts.get(&pl.host_key) {
                Some(hp) => hp.clone(),
                None => return,
            }
        };
        self.give(&hp, pl);
    }

    /// Hand a fresh or returned lane to the oldest waiter, else park it idle.
    fn give(&self, hp: &Arc<HostPool>, mut pl: PooledLane) {
        loop {
            let waiter = hp.state().waiters.pop_front();
            match waiter {
                Some(w) => match w.send(Ok(pl)) {
                    Ok(()) => return,
                    Err(Ok(back)) => pl = back,
                    Err(Err(_)) => return,
                },
                None => break,
            }
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::SeqCst);
        let (take_tx, take_rx) = oneshot::channel();
        hp.state().idle.push(IdleLane {
            id,
            since: Instant::now(),
            take: take_tx,
        });
        let pool = self.clone();
        let hp = hp.clone();
        let shutdown = self.inner.shutdown.clone();
        self.inner.tracker.spawn(async move {
            pool.idle_task(hp, id, pl, take_rx, shutdown).await;
        });
    }

    async fn idle_task(
        &self,
        hp: Arc<HostPool>,
        id: u64,
        mut pl: PooledLane,
        take: oneshot::Receiver<oneshot::Sender<PooledLane>>,
        shutdown: CancellationToken,
    ) {
        enum Woke {
            Taken(oneshot::Sender<PooledLane>),
            Dead(TransportError),
            Stop,
        }
        let woke = tokio::select! {
            r = take => match r {
                Ok(reply) => Woke::Taken(reply),
                Err(_) => Woke::Stop,
            },
            e = pl.lane.idle_watch() => Woke::Dead(e),
            _ = shutdown.cancelled() => Woke::Stop,
        };
        match woke {
            Woke::Taken(reply) => {
                if let Err(pl) = reply.send(pl) {
                    self.give(&hp, pl);
                }
            }
            Woke::Dead(e) => {
                tracing::info!(host = %hp.key, "idle lane ended: {e}");
                hp.state().idle.retain(|l| l.id != id);
                self.changed();
            }
            Woke::Stop => {
                hp.state().idle.retain(|l| l.id != id);
            }
        }
    }

    fn spawn_opener(&self, hp: Arc<HostPool>) {
        let pool = self.clone();
        self.inner.tracker.spawn(async move {
            let shutdown = pool.inner.shutdown.clone();
            tokio::select! {
                _ = pool.opener(&hp) => {}
                _ = shutdown.cancelled() => {}
            }
            // The opener clears `opener_running` itself, under the same lock as its last
            // look at the waiters; only a cancelled opener is cleaned up here.
            if shutdown.is_cancelled() {
                let mut st = hp.state();
                st.opener_running = false;
                for w in st.waiters.drain(..) {
                    let _ = w.send(Err(PoolError {
                        message: format!("{}: the mux is shutting down", hp.key),
                        exit_code: ExitCode::DistccFailed,
                        transient: false,
                    }));
                }
            }
        });
    }

    /// Open lanes while jobs wait or the host has fewer than its target; one opener per
    /// host at a time. Each round opens one batch on one connection; three rounds in a
    /// row without a lane fail the waiting jobs.
    async fn opener(&self, hp: &Arc<HostPool>) {
        let mut failed_rounds = 0u32;
        loop {
            let Some(need) = opener_need(hp, self.target(hp)) else {
                return;
            };
            let entry = match self.connection_with_room(hp).await {
                Ok(e) => e,
                Err(e) => {
                    self.fail_waiters(hp, e);
                    return;
                }
            };
            let room = entry.cap.saturating_sub(entry.lanes.load(Ordering::SeqCst)) as usize;
            let batch = batch_size(need, room);
            let (opened, mut fatal) = self.open_batch(hp, &entry, batch).await;
            failed_rounds = if opened > 0 { 0 } else { failed_rounds + 1 };
            if fatal.is_none() && failed_rounds >= 3 {
                let last = hp
                    .state()
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "lanes keep failing".into());
                fatal = Some(PoolError {
                    message: format!("{}: {last}", hp.key),
                    exit_code: ExitCode::DistccFailed,
                    transient: true,
                });
            }
            if let Some(e) = fatal {
                self.fail_waiters(hp, e);
                return;
            }
        }
    }

    /// Open `batch` lanes at once on `entry` and hand each to a waiter or the idle set.
    /// Returns how many opened and the error that ends the opener, if any (a refused
    /// session only lowers the connection's cap, unless it allows no lane at all).
    async fn open_batch(
        &self,
        hp: &Arc<HostPool>,
        entry: &ConnEntryRef,
        batch: usize,
    ) -> (u32, Option<PoolError>) {
        let spec = hp.spec();
        let command = lane_command(&spec, hp.state().distcc_exec);
        let mut set = JoinSet::new();
        for _ in 0..batch {
            let count = LaneCount::new(&hp.lanes, Some(&entry.lanes));
            let (conn, spec, command) = (entry.conn.clone(), spec.clone(), command.clone());
            let settings = self.inner.settings.clone();
            set.spawn(async move {
                let r = Lane::on_connection(conn, &spec, command.as_deref(), &settings).await;
                (r, count)
            });
        }
        let mut fatal: Option<PoolError> = None;
        let mut opened = 0u32;
        while let Some(joined) = set.join_next().await {
            let Ok((result, count)) = joined else {
                continue;
            };
            match result {
                Ok(lane) => {
                    opened += 1;
                    self.learn(hp, &lane);
                    let pl = PooledLane {
                        lane,
                        reused: false,
                        jobs: 0,
                        host_key: hp.key.clone(),
                        _count: count,
                    };
                    self.give(hp, pl);
                }
                Err(TransportError::Ssh(SshError::SessionLimit { .. })) => {
                    drop(count);
                    let refused = session_refused(hp, entry.id);
                    if refused.is_some() && fatal.is_none() {
                        fatal = refused;
                    }
                }
                Err(e) => {
                    drop(count);
                    tracing::warn!(host = %hp.key, "cannot open a lane: {e}");
                    hp.state().last_error = Some(e.to_string());
                    if entry.conn.is_closed() {
                        hp.state().conns.retain(|c| c.id != entry.id);
                    } else if fatal.is_none() {
                        fatal = Some(PoolError::from(&e));
                    }
                }
            }
        }
        self.changed();
        (opened, fatal)
    }

    /// Record what an opened lane taught us about its host.
    fn learn(&self, hp: &Arc<HostPool>, lane: &Lane) {
        let mut st = hp.state();
        st.wire = Some(lane.wire());
        if !lane.reusable() && matches!(hp.spec().kind, HostKind::Ssh { command: None, .. }) {
            st.distcc_exec = true;
        }
        if let Some(hello) = &lane.server_hello {
            if hello.slots > 0 {
                if let Some(s) = &self.inner.sched {
                    s.with(|s| s.set_server_slots(&hp.key, hello.slots));
                }
            }
        }
    }

    fn fail_waiters(&self, hp: &Arc<HostPool>, e: PoolError) {
        let mut st = hp.state();
        st.last_error = Some(e.message.clone());
        st.opener_running = false;
        for w in st.waiters.drain(..) {
            let _ = w.send(Err(e.clone()));
        }
        drop(st);
        self.changed();
    }

    /// A live connection with room for another channel, connecting a new one if needed
    /// (at most one handshake at a time per host: only the opener calls this).
    async fn connection_with_room(&self, hp: &Arc<HostPool>) -> Result<ConnEntryRef, PoolError> {
        {
            let mut st = hp.state();
            st.conns.retain(|c| !c.conn.is_closed());
            if let Some(c) = st
                .conns
                .iter()
                .find(|c| c.lanes.load(Ordering::SeqCst) < c.cap)
            {
                return Ok(ConnEntryRef {
                    id: c.id,
                    conn: c.conn.clone(),
                    lanes: c.lanes.clone(),
                    cap: c.cap,
                });
            }
        }
        let wait_until = hp.state().last_connect.map(|t| t + CONNECT_GAP);
        if let Some(t) = wait_until {
            tokio::time::sleep_until(t).await;
        }
        hp.state().last_connect = Some(Instant::now());
        let spec = hp.spec();
        let HostKind::Ssh { user, host, .. } = &spec.kind else {
            return Err(PoolError {
                message: format!("{} is not an ssh host", hp.key),
                exit_code: ExitCode::BadHostspec,
                transient: false,
            });
        };
        let settings = &self.inner.settings;
        let dest = ssh::config::destination(host, user.as_deref(), settings)
            .map_err(|e| PoolError::from(TransportError::Ssh(e)))?;
        let conn = Connection::connect(&dest, settings).await.map_err(|e| {
            let e = TransportError::Ssh(e);
            PoolError::from(&e)
        })?;
        tracing::info!(host = %hp.key, "ssh connection established");
        let entry = ConnEntry {
            id: self.inner.next_id.fetch_add(1, Ordering::SeqCst),
            conn,
            lanes: Arc::new(AtomicU32::new(0)),
            cap: self.inner.channels_per_connection,
        };
        let r = ConnEntryRef {
            id: entry.id,
            conn: entry.conn.clone(),
            lanes: entry.lanes.clone(),
            cap: entry.cap,
        };
        let mut st = hp.state();
        st.connections_made += 1;
        st.keepalive = Some(r.conn.keepalive().interval);
        st.conns.push(entry);
        drop(st);
        self.changed();
        Ok(r)
    }

    /// Every host the pool knows, taken out of the lock.
    fn all_hosts(&self) -> Vec<Arc<HostPool>> {
        let hosts = self.inner.hosts.lock().unwrap_or_else(|p| p.into_inner());
        hosts.values().cloned().collect()
    }

    /// State of every host the pool knows, by key.
    pub fn status(&self) -> Vec<PoolHostStatus> {
        let hosts = self.all_hosts();
        let mut out: Vec<PoolHostStatus> = hosts
            .iter()
            .map(|hp| {
                let st = hp.state();
                PoolHostStatus {
                    host: hp.key.clone(),
                    connections: st.conns.iter().filter(|c| !c.conn.is_closed()).count() as u32,
                    lanes: hp.lanes.load(Ordering::SeqCst),
                    idle: st.idle.len() as u32,
                    waiting: st.waiters.len() as u32,
                    wire: st.wire,
                    connections_made: st.connections_made,
                    jobs: hp.jobs.load(Ordering::SeqCst),
                    last_error: st.last_error.clone(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.host.cmp(&b.host));
        out
    }

    /// Close every lane and say goodbye on every connection (each bounded by the io
    /// timeout). Call after cancelling the shutdown token.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        let hosts = self.all_hosts();
        let mut conns = Vec::new();
        for hp in hosts {
            let mut st = hp.state();
            st.idle.clear();
            conns.extend(st.conns.drain(..).map(|c| c.conn));
        }
        let mut set = JoinSet::new();
        for c in conns {
            set.spawn(async move { c.disconnect().await });
        }
        while set.join_next().await.is_some() {}
    }
}

/// A snapshot of a connection entry, usable outside the lock.
struct ConnEntryRef {
    id: u64,
    conn: Connection,
    lanes: Arc<AtomicU32>,
    cap: u32,
}

/// What the opener still has to open on `hp`: (lanes, whether the wire is known), or
/// `None` when nothing is needed; then the opener is done, and says so under the same
/// lock as its last look at the waiters (a job queued after it sees no opener).
fn opener_need(hp: &HostPool, target: u32) -> Option<usize> {
    let mut st = hp.state();
    st.waiters.retain(|w| !w.is_closed());
    let lanes = hp.lanes.load(Ordering::SeqCst);
    let deficit = target.saturating_sub(lanes) as usize;
    let need = deficit.max(st.waiters.len());
    if need == 0 {
        st.opener_running = false;
        return None;
    }
    Some(need)
}

/// How many lanes to open at once: all that are needed and fit on the connection, from
/// the first round on (each lane finds out for itself whether the host has our
/// subsystem, so a cold start opens them all in one round trip, not one and then the
/// rest).
fn batch_size(need: usize, room: usize) -> usize {
    need.min(room).max(1)
}

/// The exec command for a lane to `spec`: the list's own command, else `distccd` once
/// the host turned out to have no `hoardcc` subsystem, else `None` (the subsystem).
fn lane_command(spec: &HostSpec, distcc_exec: bool) -> Option<String> {
    match &spec.kind {
        HostKind::Ssh {
            command: Some(c), ..
        } => Some(c.clone()),
        _ if distcc_exec => Some(lane::DEFAULT_DISTCCD.to_string()),
        _ => None,
    }
}

/// The server refused a session on connection `conn_id` (MaxSessions): later lanes go on
/// another connection. An error when the connection allows no lane at all.
fn session_refused(hp: &HostPool, conn_id: u64) -> Option<PoolError> {
    let mut st = hp.state();
    let c = st.conns.iter_mut().find(|c| c.id == conn_id)?;
    c.cap = c.lanes.load(Ordering::SeqCst);
    tracing::info!(host = %hp.key, cap = c.cap, "MaxSessions reached; next lanes go on a new connection");
    (c.cap == 0).then(|| PoolError {
        message: format!("{}: the server refuses every session", hp.key),
        exit_code: ExitCode::Busy,
        transient: true,
    })
}

#[cfg(test)]
mod tests;
