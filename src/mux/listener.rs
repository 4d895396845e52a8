//! Stage: mux listener — the accept loop, the count of connected wrappers (idle exit)
//! and shutdown. Each accepted wrapper is served by `mux::conn`; the state they share
//! (`Daemon`: scheduler, pool, job table, counters) is built here. Neighbours: `mux` (starts it),
//! `mux::pool` and `mux::scheduler` (shut down last).

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::mux::conn::serve_wrapper;
use crate::mux::monitor::Monitor;
use crate::mux::pool::Pool;
use crate::mux::scheduler::SchedHandle;
use crate::mux::ssh::SshSettings;
use crate::mux::stats::StatsBook;
use crate::mux::{mux_version, DaemonError};
use crate::paths::Paths;

/// How long running jobs get to finish after a shutdown request.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Counts connected wrappers; wakes the accept loop when the count changes.
pub(crate) struct Activity {
    active: Mutex<(u32, Instant)>,
    changed: Notify,
}

/// One connected wrapper, counted from its accept until its connection task ends.
pub(crate) struct Active(Arc<Activity>);

impl Activity {
    /// Count one more wrapper. The accept loop takes this before it spawns the
    /// connection's task, so the idle check never misses a wrapper just accepted.
    fn enter(self: &Arc<Self>) -> Active {
        let mut g = self.active.lock().unwrap_or_else(|p| p.into_inner());
        g.0 += 1;
        g.1 = Instant::now();
        self.changed.notify_one();
        Active(self.clone())
    }

    pub(crate) fn count(&self) -> u32 {
        self.active.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    /// When the daemon may exit for idleness (no wrappers since then + `timeout`).
    fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        let g = self.active.lock().unwrap_or_else(|p| p.into_inner());
        (g.0 == 0).then(|| g.1 + timeout)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        let mut g = self.0.active.lock().unwrap_or_else(|p| p.into_inner());
        g.0 -= 1;
        g.1 = Instant::now();
        self.0.changed.notify_one();
    }
}

/// What every wrapper connection shares.
pub(crate) struct Daemon {
    pub(crate) sched: Arc<SchedHandle>,
    pub(crate) pool: Pool,
    pub(crate) shutdown: CancellationToken,
    pub(crate) activity: Arc<Activity>,
    /// The job table and recent failures (`hoardcc status`, `hoardcc mon`).
    pub(crate) monitor: Monitor,
    /// The counters of `hoardcc stats`.
    pub(crate) stats: Arc<StatsBook>,
    pub(crate) started: Instant,
    /// Client compiler identities, probed once per path, size and mtime (binaries
    /// hashed, for `strict` servers).
    pub(crate) prober: crate::identity::Prober,
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
    let paths = Paths::from_env(&env);
    let home = paths.home.clone().unwrap_or_else(|| PathBuf::from("/"));
    let settings = SshSettings::from_config(&config, &env, home);
    let stats = crate::mux::stats::stats_file(&paths.state_dir);
    run_with_stats(listener, config, settings, Some(stats), shutdown).await
}

/// [`run`] with explicit ssh settings (tests point `home` at a temporary directory),
/// counting `hoardcc stats` in memory only.
///
/// # Errors
/// As [`run`].
pub async fn run_with(
    listener: UnixListener,
    config: Config,
    settings: SshSettings,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    run_with_stats(listener, config, settings, None, shutdown).await
}

/// [`run_with`], keeping the counters of `hoardcc stats` in `stats_file` (read at start,
/// written while jobs run and on exit).
///
/// # Errors
/// As [`run`].
pub async fn run_with_stats(
    listener: UnixListener,
    config: Config,
    settings: SshSettings,
    stats_file: Option<PathBuf>,
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
        sched: sched.clone(),
        pool: pool.clone(),
        shutdown: shutdown.clone(),
        activity: Arc::new(Activity {
            active: Mutex::new((0, Instant::now())),
            changed: Notify::new(),
        }),
        monitor: Monitor::new(sched.changes().clone()),
        stats: Arc::new(StatsBook::load(stats_file)),
        started: Instant::now(),
        prober: crate::identity::Prober::new(crate::identity::ProbeOptions {
            hash_binaries: true,
            search_path: None,
        }),
    });
    let stats_writer = tokio::spawn(daemon.stats.clone().writer(pool_token.clone()));
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
                    // Counted here, before the next idle check, not when its task runs.
                    let active = daemon.activity.enter();
                    let d = daemon.clone();
                    tracker.spawn(async move { serve_wrapper(d, stream, id, active).await });
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
    // The counters are saved once more as the writer ends.
    let _ = stats_writer.await;
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

#[cfg(test)]
mod tests;
