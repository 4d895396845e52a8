//! Stage: connections — the per-user mux daemon (`hoardcc mux`) and the only code that
//! knows russh. This file starts the process and its runtime; the daemon is [`process`]
//! (daemonize, socket bind) → [`listener`] (accept loop, idle exit, shutdown) → [`conn`]
//! (one wrapper connection's protocol) → [`job`] (reserve, the attempts, following
//! [`retry`], the one retry policy) → [`lane`] (one job over one ssh channel or TCP
//! socket), with [`pool`] (connections and lanes), [`scheduler`] (host slots, backoff),
//! [`ssh`] (russh), [`monitor`] (the job table and change signal behind `hoardcc mon`),
//! [`status`] (`hoardcc status`) and [`stats`] (`hoardcc stats`, kept across restarts).
//! Neighbours: `wrapper` (the caller, through `wrapper::mux_client`), `proto` (what
//! travels), `subsystem` (the other end).
//!
//! The daemon listens on the private Unix socket `Paths::mux_socket()`; each wrapper
//! connects for one job: `Reserve` (the scheduler picks a host slot; the reply comes at once
//! while the lane may still be connecting, so the wrapper preprocesses meanwhile), then
//! `Run` (a job whose lane died is sent again on the same host once it answers; one
//! retry on another host after a failure; `Failed` makes the wrapper fall back to a
//! local compile). The host slot is freed when the wrapper's connection ends, whatever
//! happens. The daemon exits after `mux.idle_timeout` without wrappers, on `Stop`, or on
//! SIGTERM/SIGINT, closing every ssh connection and removing its socket.

pub mod conn;
pub mod job;
pub mod known;
pub mod lane;
pub mod listener;
pub mod lru;
pub mod monitor;
pub mod pool;
pub mod process;
pub mod recent;
pub mod retry;
pub mod scheduler;
pub mod similar;
pub mod ssh;
pub mod stats;
pub mod status;
pub mod upload;

use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

use crate::config;
use crate::exit::ExitCode;
use crate::mux::listener::run;
use crate::mux::process::{bind_socket, daemonize};
use crate::paths::{self, Paths};
use crate::proto::msg::PROTOCOL_VERSION;

/// How long blocking threads get once the daemon has stopped.
const RUNTIME_EXIT_GRACE: Duration = Duration::from_millis(200);

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
