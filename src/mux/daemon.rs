//! Stage: the per-user mux daemon (`hoardcc mux`). It listens on the private Unix socket
//! `Paths::mux_socket()`; each wrapper (`wrapper::mux_client`) connects for one job: `Reserve`
//! (the scheduler, `mux::scheduler`, picks a slot; the reply comes at once while the lane
//! may still be connecting, so the wrapper preprocesses meanwhile), then `Run` (a lane
//! from the pool, `mux::pool`, runs it through `mux::transport`; one retry on another
//! lane or host; `Failed` makes the wrapper fall back to a local compile). The slot is
//! freed when the wrapper's connection ends, whatever happens. The daemon exits after
//! `mux.idle_timeout` without wrappers, on `Stop`, or on SIGTERM/SIGINT, closing every
//! ssh connection and removing its socket.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{self, Config};
use crate::exit::ExitCode;
use crate::hosts::{self, HostSpec};
use crate::mux::pool::Pool;
use crate::mux::scheduler::{Grant, Outcome, SchedHandle, SlotGuard, Want};
use crate::mux::ssh::SshSettings;
use crate::mux::status::{HostReport, JobReport, StatusReport};
use crate::mux::transport::{Completed, TransportError, Wire};
use crate::paths::{self, Paths};
use crate::proto::compress::MAX_BLOB;
use crate::proto::frame::{self, MAX_FRAME};
use crate::proto::msg::{
    Blob, JobResult, JobSpec, MuxReply, MuxRequest, OutputFile, PROTOCOL_VERSION,
};

/// How long a wrapper may hold a reserved slot before sending `Run` (it is preprocessing).
const RESERVED_TIMEOUT: Duration = Duration::from_secs(600);
/// How long writing a reply to a wrapper may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a retry may wait for a slot on another host.
const RETRY_WAIT: Duration = Duration::from_secs(5);
/// Busy answers tolerated for one job before it is given up (the wrapper compiles locally).
const MAX_BUSY_RETRIES: u32 = 8;
/// How long blocking threads get once the daemon has stopped.
const RUNTIME_EXIT_GRACE: Duration = Duration::from_millis(200);

/// How long running jobs get to finish after a shutdown request.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The version a wrapper must match (crate version and protocol version): a wrapper of
/// another build replaces the running mux.
pub fn mux_version() -> String {
    format!("{}+p{}", env!("CARGO_PKG_VERSION"), PROTOCOL_VERSION)
}

/// `hoardcc mux` options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MuxArgs {
    /// Stay attached to the terminal (for a systemd user unit).
    pub foreground: bool,
    /// Ask the running mux to exit.
    pub stop: bool,
}

/// Failures starting or running the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The config could not be loaded.
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    /// The runtime directory is unusable.
    #[error("runtime directory: {0}")]
    RuntimeDir(io::Error),
    /// Another mux already serves the socket.
    #[error("a mux is already running on {0}")]
    AlreadyRunning(PathBuf),
    /// The socket could not be bound.
    #[error("cannot listen on {path}: {source}")]
    Bind {
        /// Socket path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Forking into the background failed.
    #[error("cannot daemonize: {0}")]
    Daemonize(String),
    /// The tokio runtime could not start, or accepting failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// `hoardcc mux [--foreground] [--stop]`.
pub fn main(args: MuxArgs) -> std::process::ExitCode {
    if args.stop {
        return crate::cli::stop_main();
    }
    let env = |k: &str| std::env::var(k).ok();
    let paths = Paths::from_env(&env);
    let config = match config::load(&paths, &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hoardcc mux: {e}");
            return ExitCode::BadArguments.into();
        }
    };
    let socket = paths.mux_socket();
    let listener = match paths::ensure_private_dir(&paths.runtime_dir)
        .map_err(DaemonError::RuntimeDir)
        .and_then(|()| bind_socket(&socket))
    {
        Ok(l) => l,
        Err(DaemonError::AlreadyRunning(p)) => {
            eprintln!("hoardcc mux: already running on {}", p.display());
            return std::process::ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("hoardcc mux: {e}");
            return ExitCode::BindFailed.into();
        }
    };
    // Logging was set up by `main.rs` (`info` on stderr), which the daemon child points at
    // `mux.log`.
    if !args.foreground {
        match daemonize(&paths, listener.as_raw_fd()) {
            Ok(true) => return std::process::ExitCode::SUCCESS, // the parent
            Ok(false) => {}
            Err(e) => {
                eprintln!("hoardcc mux: {e}");
                let _ = std::fs::remove_file(&socket);
                return ExitCode::DistccFailed.into();
            }
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            let _ = std::fs::remove_file(&socket);
            return ExitCode::DistccFailed.into();
        }
    };
    let result = runtime.block_on(async move {
        listener.set_nonblocking(true)?;
        let listener = UnixListener::from_std(listener)?;
        let shutdown = CancellationToken::new();
        spawn_signal_watch(shutdown.clone());
        run(listener, config, shutdown).await
    });
    // Blocking helper threads (socket I/O of wrappers that went away) must not keep a
    // stopped mux alive: `hoardcc mux --stop` waits for this process to be gone.
    runtime.shutdown_timeout(RUNTIME_EXIT_GRACE);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("mux: {e}");
            ExitCode::DistccFailed.into()
        }
    }
}

fn spawn_signal_watch(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: exiting"),
            _ = int.recv() => tracing::info!("SIGINT: exiting"),
            _ = shutdown.cancelled() => return,
        }
        shutdown.cancel();
    });
}

/// Bind the socket, replacing a stale one (nobody answers on it). A live mux on it is
/// [`DaemonError::AlreadyRunning`].
pub fn bind_socket(path: &Path) -> Result<std::os::unix::net::UnixListener, DaemonError> {
    match std::os::unix::net::UnixListener::bind(path) {
        Ok(l) => return Ok(l),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {}
        Err(source) => {
            return Err(DaemonError::Bind {
                path: path.to_path_buf(),
                source,
            })
        }
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(DaemonError::AlreadyRunning(path.to_path_buf())),
        Err(_) => {
            let _ = std::fs::remove_file(path);
            std::os::unix::net::UnixListener::bind(path).map_err(|source| DaemonError::Bind {
                path: path.to_path_buf(),
                source,
            })
        }
    }
}

/// Fork into the background: the parent returns `Ok(true)` (the socket is already bound,
/// so a client can connect as soon as it exits); the child starts a new session, moves
/// to `/`, closes every inherited descriptor but `keep_fd` (make's jobserver pipes, the
/// caller's stdout/stderr), and points stdin at /dev/null and stdout/stderr at the log.
fn daemonize(paths: &Paths, keep_fd: RawFd) -> Result<bool, DaemonError> {
    let fail =
        |what: &str, e: &dyn std::fmt::Display| DaemonError::Daemonize(format!("{what}: {e}"));
    let _ = std::fs::create_dir_all(&paths.state_dir);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.mux_log())
        .or_else(|_| std::fs::OpenOptions::new().write(true).open("/dev/null"))
        .map_err(|e| fail("log file", &e))?;
    let null = std::fs::File::open("/dev/null").map_err(|e| fail("/dev/null", &e))?;
    // SAFETY: called before any thread is started (no runtime yet); the child only runs
    // async-signal-safe work until it continues as a normal single-threaded process.
    match unsafe { nix::unistd::fork() }.map_err(|e| fail("fork", &e))? {
        nix::unistd::ForkResult::Parent { .. } => return Ok(true),
        nix::unistd::ForkResult::Child => {}
    }
    nix::unistd::setsid().map_err(|e| fail("setsid", &e))?;
    nix::unistd::chdir("/").map_err(|e| fail("chdir /", &e))?;
    nix::unistd::dup2_stdin(&null).map_err(|e| fail("stdin", &e))?;
    nix::unistd::dup2_stdout(&log).map_err(|e| fail("stdout", &e))?;
    nix::unistd::dup2_stderr(&log).map_err(|e| fail("stderr", &e))?;
    drop(null);
    drop(log);
    close_inherited_fds(&[0, 1, 2, keep_fd]);
    Ok(false)
}

/// Close every open descriptor not in `keep`.
fn close_inherited_fds(keep: &[RawFd]) {
    let listed: Option<Vec<RawFd>> = std::fs::read_dir("/proc/self/fd").ok().map(|dir| {
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect()
    });
    let fds = listed.unwrap_or_else(|| (0..4096).collect());
    for fd in fds {
        if keep.contains(&fd) {
            continue;
        }
        // The directory's own descriptor is already closed: fcntl fails and we skip it.
        if nix::fcntl::fcntl(
            unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
            nix::fcntl::FcntlArg::F_GETFD,
        )
        .is_err()
        {
            continue;
        }
        // SAFETY: the descriptor is open and nothing in this process owns it any more.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}

/// Counts connected wrappers; wakes the accept loop when the count changes.
struct Activity {
    active: Mutex<(u32, Instant)>,
    changed: Notify,
}

struct Active<'a>(&'a Activity);

impl Activity {
    fn enter(&self) -> Active<'_> {
        let mut g = self.active.lock().unwrap_or_else(|p| p.into_inner());
        g.0 += 1;
        g.1 = Instant::now();
        self.changed.notify_one();
        Active(self)
    }

    fn count(&self) -> u32 {
        self.active.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    /// When the daemon may exit for idleness (no wrappers since then + `timeout`).
    fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        let g = self.active.lock().unwrap_or_else(|p| p.into_inner());
        (g.0 == 0).then(|| g.1 + timeout)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        let mut g = self.0.active.lock().unwrap_or_else(|p| p.into_inner());
        g.0 -= 1;
        g.1 = Instant::now();
        self.0.changed.notify_one();
    }
}

struct JobInfo {
    file: String,
    state: &'static str,
    host: Option<String>,
    since: Instant,
}

struct Daemon {
    sched: Arc<SchedHandle>,
    pool: Pool,
    shutdown: CancellationToken,
    activity: Activity,
    jobs: Mutex<HashMap<u64, JobInfo>>,
    started: Instant,
}

/// A reserved remote slot and what the wrapper was told.
struct Held {
    guard: SlotGuard,
    spec: HostSpec,
    wire: Wire,
    /// The job's hosts, for a retry elsewhere.
    hosts: Vec<HostSpec>,
}

/// Serve wrappers on `listener` until `shutdown` is cancelled, a `Stop` arrives, or no
/// wrapper was connected for `config.mux.idle_timeout`. Uses the process environment
/// (`HOME`, `SSH_AUTH_SOCK`, `USER`) for ssh settings. On return every ssh connection is
/// closed and the socket file (if it is still this listener's) is removed.
///
/// # Errors
/// Accepting on the listener failed.
pub async fn run(
    listener: UnixListener,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    let env = |k: &str| std::env::var(k).ok();
    let home = Paths::from_env(&env)
        .home
        .unwrap_or_else(|| PathBuf::from("/"));
    let settings = SshSettings::from_config(&config, &env, home);
    run_with(listener, config, settings, shutdown).await
}

/// [`run`] with explicit ssh settings (tests point `home` at a temporary directory).
///
/// # Errors
/// As [`run`].
pub async fn run_with(
    listener: UnixListener,
    config: Config,
    settings: SshSettings,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    let socket = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf));
    let socket_ino = socket
        .as_ref()
        .and_then(|p| std::fs::metadata(p).ok())
        .map(|m| (m.dev(), m.ino()));
    // Wrapper connections and the pool's own tasks (openers, idle lanes) are tracked
    // apart: the pool's tasks only end when the pool shuts down, after the wrappers.
    let tracker = TaskTracker::new();
    let pool_tracker = TaskTracker::new();
    let sched = SchedHandle::new(config.backoff);
    let pool_token = CancellationToken::new();
    let pool = Pool::new(
        settings,
        config.mux.channels_per_connection,
        Some(sched.clone()),
        pool_token.clone(),
        pool_tracker.clone(),
    );
    let idle_timeout = config.mux.idle_timeout;
    let daemon = Arc::new(Daemon {
        sched,
        pool: pool.clone(),
        shutdown: shutdown.clone(),
        activity: Activity {
            active: Mutex::new((0, Instant::now())),
            changed: Notify::new(),
        },
        jobs: Mutex::new(HashMap::new()),
        started: Instant::now(),
    });
    tracing::info!(socket = ?socket, version = %mux_version(), "mux listening");
    let next_conn = AtomicU64::new(1);
    let mut result = Ok(());
    loop {
        let deadline = daemon.activity.idle_deadline(idle_timeout);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let id = next_conn.fetch_add(1, Ordering::SeqCst);
                    let d = daemon.clone();
                    tracker.spawn(async move { serve_wrapper(d, stream, id).await });
                    // Count it at once, so the idle check below sees it.
                    tokio::task::yield_now().await;
                }
                Err(e) if is_transient_accept_error(&e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    result = Err(DaemonError::Io(e));
                    break;
                }
            },
            _ = daemon.activity.changed.notified() => {}
            _ = sleep_until_opt(deadline) => {
                if daemon.activity.idle_deadline(idle_timeout).is_some_and(|d| d <= Instant::now()) {
                    tracing::info!("idle for {idle_timeout:?}: exiting");
                    break;
                }
            }
        }
    }
    // Stop taking wrappers first: the socket goes away before connections are closed, so
    // a new mux can start while this one winds down.
    drop(listener);
    if let (Some(path), Some(ino)) = (&socket, socket_ino) {
        if std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino())) == Some(ino) {
            let _ = std::fs::remove_file(path);
        }
    }
    shutdown.cancel();
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some wrapper tasks did not finish in time");
    }
    pool.shutdown().await;
    pool_tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, pool_tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some lane tasks did not finish in time");
    }
    tracing::info!("mux stopped");
    result
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc_errno::EMFILE
                | libc_errno::ENFILE
                | libc_errno::ENOBUFS
                | libc_errno::ENOMEM
                | libc_errno::ECONNABORTED
        )
    )
}

mod libc_errno {
    pub const EMFILE: i32 = nix::errno::Errno::EMFILE as i32;
    pub const ENFILE: i32 = nix::errno::Errno::ENFILE as i32;
    pub const ENOBUFS: i32 = nix::errno::Errno::ENOBUFS as i32;
    pub const ENOMEM: i32 = nix::errno::Errno::ENOMEM as i32;
    pub const ECONNABORTED: i32 = nix::errno::Errno::ECONNABORTED as i32;
}

fn failed(message: impl Into<String>, code: ExitCode) -> MuxReply {
    MuxReply::Failed {
        message: message.into(),
        exit_code: code.code(),
    }
}

/// One wrapper connection: requests until it closes. Everything it holds (slot, job
/// entry) is released on return.
async fn serve_wrapper(d: Arc<Daemon>, stream: UnixStream, id: u64) {
    let _active = d.activity.enter();
    let (mut rd, mut wr) = stream.into_split();
    let mut held: Option<Held> = None;
    let mut local: Option<SlotGuard> = None;
    loop {
        let wait = if held.is_some() {
            RESERVED_TIMEOUT
        } else {
            Duration::MAX
        };
        let frame = tokio::select! {
            f = tokio::time::timeout(wait, frame::read_frame(&mut rd, MAX_FRAME)) => f,
            _ = d.shutdown.cancelled() => break,
        };
        let req: MuxRequest = match frame {
            Ok(Ok(Some(bytes))) => match frame::decode(&bytes) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("wrapper {id}: bad request: {e}");
                    break;
                }
            },
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                tracing::debug!("wrapper {id}: {e}");
                break;
            }
            Err(_) => {
                tracing::warn!(
                    "wrapper {id}: no Run within {RESERVED_TIMEOUT:?} of Reserve; freeing the slot"
                );
                break;
            }
        };
        let mut stop = false;
        let reply = match req {
            MuxRequest::Reserve {
                hosts,
                file,
                client_version,
            } => {
                if client_version != mux_version() {
                    MuxReply::WrongVersion {
                        mux_version: mux_version(),
                    }
                } else {
                    drop(held.take());
                    drop(local.take());
                    let r = tokio::select! {
                        r = d.reserve(id, &hosts, &file, &mut held, &mut local) => r,
                        _ = d.shutdown.cancelled() => break,
                    };
                    r
                }
            }
            MuxRequest::Run { spec, source } => {
                // The wrapper says nothing while its job runs: anything on the socket,
                // its end included, means it is gone, and the job (and slot) go too.
                let r = tokio::select! {
                    r = d.run_job(id, held.take(), spec, source) => r,
                    _ = wrapper_gone(&mut rd) => {
                        tracing::info!("wrapper {id} went away during its job");
                        break;
                    }
                    _ = d.shutdown.cancelled() => break,
                };
                r
            }
            MuxRequest::Status => MuxReply::Status {
                json: d.status().to_json(),
            },
            MuxRequest::Stop => {
                stop = true;
                MuxReply::Stopping
            }
        };
        let sent = tokio::time::timeout(
            REPLY_TIMEOUT,
            frame::write_frame(&mut wr, &frame::encode(&reply)),
        )
        .await;
        if stop {
            tracing::info!("stop requested");
            d.shutdown.cancel();
            break;
        }
        if !matches!(sent, Ok(Ok(()))) {
            break;
        }
    }
    d.jobs.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
}

/// Returns when the wrapper closes its end (or sends something mid-job).
async fn wrapper_gone(rd: &mut tokio::net::unix::OwnedReadHalf) {
    use tokio::io::AsyncReadExt;
    let mut b = [0u8; 1];
    let _ = rd.read(&mut b).await;
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
    async fn reserve(
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
    async fn run_job(&self, id: u64, held: Option<Held>, spec: JobSpec, source: Blob) -> MuxReply {
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
            let start = Instant::now();
            let (error, retry) = match self.pool.checkout(&held.spec).await {
                Err(e) => {
                    tracing::warn!(host = %key, "no lane: {e}");
                    ((e.message.clone(), e.exit_code), Retry::Elsewhere)
                }
                Ok(pl) if pl.lane.wire() != held.wire => {
                    self.pool.checkin(pl);
                    return failed(
                        format!(
                            "{key} turned out to speak {:?}, not {:?}; compile locally this time",
                            self.pool.wire(&held.spec),
                            held.wire
                        ),
                        ExitCode::ProtocolError,
                    );
                }
                Ok(mut pl) => match pl.lane.run(&spec, &source).await {
                    Ok(done) => {
                        self.pool.checkin(pl);
                        held.guard.set_outcome(Outcome::Ok {
                            elapsed: start.elapsed(),
                        });
                        return MuxReply::Done(job_result(done));
                    }
                    Err(e @ TransportError::Refused { .. }) => {
                        self.pool.checkin(pl);
                        return failed(e.to_string(), e.exit_code());
                    }
                    Err(e @ TransportError::Busy { .. }) => {
                        self.pool.checkin(pl);
                        busy += 1;
                        held.guard.set_outcome(Outcome::Busy);
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
                    Err(e) => {
                        // A fault leaves a working lane, but the retry gets a fresh one all
                        // the same: nothing of the killed job can linger on it.
                        let retry = match &e {
                            TransportError::Fault { .. } => Retry::Anywhere,
                            e if pl.reused && pl_was_stale(e) => Retry::FreshLane,
                            _ => Retry::Elsewhere,
                        };
                        drop(pl);
                        ((e.to_string(), e.exit_code()), retry)
                    }
                },
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

    fn status(&self) -> StatusReport {
        let now = Instant::now();
        let pool = self.pool.status();
        let (hosts, queued, local_running) = self.sched.with(|s| {
            let hosts: Vec<HostReport> = s
                .hosts()
                .map(|(key, h)| {
                    let p = pool.iter().find(|p| &p.host == key);
                    let lanes = p.map_or(0, |p| p.lanes);
                    let idle = p.map_or(0, |p| p.idle);
                    HostReport {
                        host: key.clone(),
                        slots: h.spec.slots,
                        server_slots: h.server_slots,
                        running: h.running,
                        connections: p.map_or(0, |p| p.connections),
                        lanes,
                        idle_lanes: idle,
                        busy_lanes: lanes.saturating_sub(idle),
                        wire: p.and_then(|p| p.wire).map(|w| wire_name(w).to_string()),
                        jobs_ok: h.jobs_ok,
                        jobs_failed: h.jobs_failed,
                        jobs_busy: h.jobs_busy,
                        mean_ms: h.mean_ms(),
                        ewma_ms: h.ewma_ms.map(|m| m as u64),
                        backoff_remaining_ms: h
                            .backoff_until
                            .filter(|t| *t > now)
                            .map(|t| (t - now).as_millis() as u64),
                        last_error: p.and_then(|p| p.last_error.clone()),
                    }
                })
                .collect();
            (hosts, s.queued() as u32, s.local_running())
        });
        let jobs = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|j| JobReport {
                file: j.file.clone(),
                state: j.state.to_string(),
                host: j.host.clone(),
                secs: (now - j.since).as_secs_f64(),
            })
            .collect();
        StatusReport {
            version: mux_version(),
            pid: std::process::id(),
            uptime_secs: (now - self.started).as_secs(),
            wrappers: self.activity.count(),
            queued,
            local_running,
            hosts,
            jobs,
        }
    }
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

fn wire_name(w: Wire) -> &'static str {
    match w {
        Wire::Native => "native",
        Wire::Distcc { lzo: false } => "distcc",
        Wire::Distcc { lzo: true } => "distcc+lzo",
    }
}

/// The wrapper-facing result of a completed job (raw blobs: the socket is local).
fn job_result(c: Completed) -> JobResult {
    JobResult {
        id: 0,
        exit_code: c.exit_code,
        stdout: Blob::raw(c.stdout),
        stderr: Blob::raw(c.stderr),
        outputs: c
            .outputs
            .into_iter()
            .map(|(name, data)| OutputFile {
                name,
                data: Blob::raw(data),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests;
