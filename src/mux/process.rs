//! Stage: mux process set-up — bind the wrapper socket (replacing a stale one), fork
//! into the background and close inherited descriptors. Called by `mux::main` (`mux`)
//! before the runtime starts; the bound socket goes to `mux::listener`.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use crate::mux::DaemonError;
use crate::paths::Paths;

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
pub(super) fn daemonize(paths: &Paths, keep_fd: RawFd) -> Result<bool, DaemonError> {
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
