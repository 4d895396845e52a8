//! Stage: the wrapper's side of the mux socket (blocking, std only: the wrapper needs no
//! async runtime for it). [`connect_or_spawn`] reaches the per-user mux daemon
//! (`mux`) on `Paths::mux_socket()`, starting one if none answers — single flight
//! under an exclusive `flock` on `runtime_dir/mux.lock`, so a `make -j64` start spawns one
//! daemon — and replaces a mux of another version. [`MuxClient`] then carries one job:
//! `reserve`, preprocess, `run`. The `hoardcc status` and `hoardcc mux --stop` commands
//! (`cli`) use it too. Neighbours: `wrapper` (caller), `cli`, `proto::frame::blocking`
//! (framing), `proto::msg` (the `MuxRequest`/`MuxReply` contract).

use std::fs::File;
use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::mux::mux_version;
use crate::paths::{self, Paths};
use crate::proto::frame::blocking;
use crate::proto::msg::{Blob, JobSpec, LocalCompiler, MuxReply, MuxRequest, Recipe};
use crate::proto::stats::Stats;
use crate::proto::status::StatusReport;

/// How long to wait for a freshly spawned (or replaced) mux to answer.
pub const SPAWN_DEADLINE: Duration = Duration::from_secs(5);
/// Read/write timeout for the short requests (Status, Stop) and for every write.
const SHORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `hoardcc mux --stop` waits for the daemon to exit (its jobs get a grace period).
pub(crate) const STOP_DEADLINE: Duration = Duration::from_secs(15);
/// First and longest pause between connection attempts while a mux starts.
const RETRY_FIRST: Duration = Duration::from_millis(5);
const RETRY_MAX: Duration = Duration::from_millis(100);

/// Failures talking to (or starting) the mux. Any of them makes the wrapper fall back to
/// running the transport itself or compiling locally.
#[derive(Debug, thiserror::Error)]
pub enum MuxClientError {
    /// The private runtime directory is unusable.
    #[error("runtime directory: {0}")]
    RuntimeDir(io::Error),
    /// The spawn lock could not be taken.
    #[error("cannot lock {path}: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// `hoardcc mux` could not be started.
    #[error("cannot start the mux ({exe}): {source}")]
    Spawn {
        /// The executable run.
        exe: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The mux did not answer in time.
    #[error("the mux did not come up on {path} within {secs} s")]
    NotUp {
        /// The socket.
        path: PathBuf,
        /// The deadline in seconds.
        secs: u64,
    },
    /// No mux is running (status, stop).
    #[error("no mux is running on {0}")]
    NotRunning(PathBuf),
    /// Socket I/O failed.
    #[error("mux connection: {0}")]
    Io(#[from] io::Error),
    /// Framing or decoding failed.
    #[error("mux protocol: {0}")]
    Proto(#[from] crate::proto::Error),
    /// The mux closed the connection (it died or shut down).
    #[error("the mux closed the connection")]
    Closed,
    /// The mux answered something that does not fit the request.
    #[error("unexpected reply from the mux: {0}")]
    Unexpected(String),
    /// The mux sent nothing for the whole reply deadline ([`MuxClient::with_reply_deadline`]):
    /// it is stuck, and the wrapper compiles locally rather than hang the build.
    #[error("the mux sent nothing for {after:?}")]
    NoAnswer {
        /// The deadline.
        after: Duration,
    },
    /// The mux still speaks another version after being replaced.
    #[error("the mux speaks version {0}, not {ours}", ours = mux_version())]
    WrongVersion(String),
}

/// One wrapper connection to the mux (one job).
pub struct MuxClient {
    stream: UnixStream,
    paths: Paths,
    self_exe: PathBuf,
    /// Longest silence allowed while waiting for the `Reserve` and `Run` replies.
    reply_deadline: Option<Duration>,
}

/// Connect to the running mux, or start `self_exe mux` and connect to it (single flight
/// across processes; bounded by [`SPAWN_DEADLINE`]).
///
/// # Errors
/// [`MuxClientError`] when no mux can be reached or started.
pub fn connect_or_spawn(paths: &Paths, self_exe: &Path) -> Result<MuxClient, MuxClientError> {
    let stream = connect_or_spawn_stream(paths, self_exe)?;
    Ok(MuxClient {
        stream,
        paths: paths.clone(),
        self_exe: self_exe.to_path_buf(),
        reply_deadline: None,
    })
}

fn connect_or_spawn_stream(paths: &Paths, self_exe: &Path) -> Result<UnixStream, MuxClientError> {
    let socket = paths.mux_socket();
    if let Some(s) = try_connect(&socket)? {
        return Ok(s);
    }
    paths::ensure_private_dir(&paths.runtime_dir).map_err(MuxClientError::RuntimeDir)?;
    let deadline = Instant::now() + SPAWN_DEADLINE;
    let _lock = lock(
        &paths.runtime_dir.join("mux.lock"),
        deadline + SPAWN_DEADLINE,
    )?;
    // Someone may have started it while we waited for the lock.
    if let Some(s) = try_connect(&socket)? {
        return Ok(s);
    }
    // Nobody answers: whatever is at the path is stale (we hold the lock).
    let _ = std::fs::remove_file(&socket);
    let mut child = Command::new(self_exe)
        .arg("mux")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| MuxClientError::Spawn {
            exe: self_exe.to_path_buf(),
            source,
        })?;
    let mut reaped = false;
    let mut pause = RETRY_FIRST;
    loop {
        if !reaped {
            // The spawned process forks and exits once its socket is bound.
            if let Ok(Some(_)) = child.try_wait() {
                reaped = true;
            }
        }
        if let Some(s) = try_connect(&socket)? {
            if !reaped {
                // Reap it in the background of our own lifetime: it exits right away.
                std::thread::spawn(move || {
                    let _ = child.wait();
                });
            }
            return Ok(s);
        }
        if Instant::now() >= deadline {
            if !reaped {
                let _ = child.kill();
                let _ = child.wait();
            }
            return Err(MuxClientError::NotUp {
                path: socket,
                secs: SPAWN_DEADLINE.as_secs(),
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(RETRY_MAX);
    }
}

/// Connect if a mux answers; `None` when the socket is absent or refuses (stale).
fn try_connect(socket: &Path) -> Result<Option<UnixStream>, MuxClientError> {
    match UnixStream::connect(socket) {
        Ok(s) => {
            s.set_write_timeout(Some(SHORT_TIMEOUT))?;
            Ok(Some(s))
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Take the exclusive spawn lock, retrying until `deadline`.
fn lock(path: &Path, deadline: Instant) -> Result<nix::fcntl::Flock<File>, MuxClientError> {
    let lock_err = |source| MuxClientError::Lock {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(lock_err)?;
    loop {
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(l) => return Ok(l),
            Err((f, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                file = f;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err((_, e)) => return Err(lock_err(io::Error::from(e))),
        }
    }
}

/// Wait until the socket file is gone (an old mux shutting down), up to `deadline`.
pub(crate) fn wait_socket_gone(socket: &Path, deadline: Instant) -> bool {
    let mut pause = RETRY_FIRST;
    while socket.exists() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(RETRY_MAX);
    }
    true
}

/// Wait (without polling: a pidfd becomes readable when the process exits) until process
/// `pid` is gone or `deadline` passes. True when it is gone.
pub(crate) fn wait_process_gone(pid: u32, deadline: Instant) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let Some(target) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    let fd = match rustix::process::pidfd_open(target, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::SRCH) => return true,
        // No pidfd (a kernel before 5.3, a seccomp filter): look at /proc instead.
        Err(_) => return wait_process_gone_by_proc(pid, deadline),
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(
            std::os::fd::AsFd::as_fd(&fd),
            PollFlags::POLLIN,
        )];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) if n > 0 => return true,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
}

/// [`wait_process_gone`] without pidfd: check `/proc/<pid>/stat` (gone, or a zombie) with
/// growing pauses.
fn wait_process_gone_by_proc(pid: u32, deadline: Instant) -> bool {
    let gone = || match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    };
    let mut pause = RETRY_FIRST;
    while !gone() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(RETRY_MAX);
    }
    true
}

impl MuxClient {
    /// A client on an already connected stream (tests, or a caller that connected itself).
    pub fn from_stream(stream: UnixStream, paths: &Paths, self_exe: &Path) -> MuxClient {
        MuxClient {
            stream,
            paths: paths.clone(),
            self_exe: self_exe.to_path_buf(),
            reply_deadline: None,
        }
    }

    /// Bound the wait for the `Reserve` and `Run` replies: past `deadline` without a byte
    /// from the mux they fail with [`MuxClientError::NoAnswer`]. The bound is on silence
    /// (each read), so a reply that is arriving never trips it.
    #[must_use]
    pub fn with_reply_deadline(mut self, deadline: Duration) -> MuxClient {
        self.reply_deadline = Some(deadline);
        self
    }

    fn request(
        &mut self,
        req: &MuxRequest,
        read_timeout: Option<Duration>,
    ) -> Result<MuxReply, MuxClientError> {
        self.stream.set_write_timeout(Some(SHORT_TIMEOUT))?;
        blocking::write_message(&mut self.stream, req)?;
        self.stream.set_read_timeout(read_timeout)?;
        match blocking::read_message::<_, MuxReply>(&mut self.stream) {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(MuxClientError::Closed),
            Err(crate::proto::Error::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(MuxClientError::NoAnswer {
                    after: read_timeout.unwrap_or_default(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Ask for a host slot for one job (`hosts_text`: the host list the wrapper resolved;
    /// `file`: the source, for status). Waits in the mux's queue as long as it takes, up to
    /// the reply deadline if one is set.
    /// A mux of another version is stopped and replaced, once.
    ///
    /// Returns `Reserved`, `Local` or `Failed`. After `Local` keep the client open while
    /// compiling locally: the local host slot is held until it is dropped.
    ///
    /// # Errors
    /// Socket or protocol failures, or a replacement that still has the wrong version.
    pub fn reserve(&mut self, hosts_text: &str, file: &str) -> Result<MuxReply, MuxClientError> {
        self.reserve_for(hosts_text, file, None)
    }

    /// [`MuxClient::reserve`] for a job that will run `compiler`: the mux probes its
    /// identity and avoids hosts that have no match for it.
    ///
    /// # Errors
    /// As [`MuxClient::reserve`].
    pub fn reserve_for(
        &mut self,
        hosts_text: &str,
        file: &str,
        compiler: Option<LocalCompiler>,
    ) -> Result<MuxReply, MuxClientError> {
        let req = MuxRequest::Reserve {
            hosts: hosts_text.to_string(),
            file: file.to_string(),
            client_version: mux_version(),
            compiler,
        };
        match self.request(&req, self.reply_deadline)? {
            MuxReply::WrongVersion {
                mux_version: theirs,
            } => {
                tracing::info!("the mux speaks {theirs}; replacing it");
                self.replace()?;
                match self.request(&req, self.reply_deadline)? {
                    MuxReply::WrongVersion { mux_version } => {
                        Err(MuxClientError::WrongVersion(mux_version))
                    }
                    r => Ok(r),
                }
            }
            r @ (MuxReply::Reserved { .. } | MuxReply::Local { .. } | MuxReply::Failed { .. }) => {
                Ok(r)
            }
            other => Err(MuxClientError::Unexpected(
                format!("{other:?}").chars().take(80).collect(),
            )),
        }
    }

    /// Stop the mux on this connection, wait for its socket to go, start ours.
    fn replace(&mut self) -> Result<(), MuxClientError> {
        let socket = self.paths.mux_socket();
        let _ = self.request(&MuxRequest::Stop, Some(SHORT_TIMEOUT));
        let deadline = Instant::now() + SPAWN_DEADLINE;
        if !wait_socket_gone(&socket, deadline) {
            return Err(MuxClientError::NotUp {
                path: socket,
                secs: SPAWN_DEADLINE.as_secs(),
            });
        }
        self.stream = connect_or_spawn_stream(&self.paths, &self.self_exe)?;
        Ok(())
    }

    /// Run the job on the reserved host slot. The mux enforces the transport timeouts and a dead
    /// mux closes the socket; the reply deadline, if set, catches a stuck one.
    ///
    /// Returns `Done`, `Failed`, `Local` (no host has a compiler matching the job's), or
    /// `Rewire` (the host speaks the other wire: preprocess again and run once more).
    ///
    /// # Errors
    /// Socket or protocol failures.
    pub fn run(
        &mut self,
        spec: &JobSpec,
        source: &[u8],
        recipe: Option<&Recipe>,
    ) -> Result<MuxReply, MuxClientError> {
        let req = MuxRequest::Run {
            spec: Box::new(spec.clone()),
            source: Blob::raw(source.to_vec()),
            recipe: recipe.cloned(),
        };
        match self.request(&req, self.reply_deadline)? {
            r @ (MuxReply::Done(_)
            | MuxReply::Failed { .. }
            | MuxReply::Local { .. }
            | MuxReply::Rewire { .. }) => Ok(r),
            other => Err(MuxClientError::Unexpected(
                format!("{other:?}").chars().take(80).collect(),
            )),
        }
    }

    /// The mux's status report.
    ///
    /// # Errors
    /// Socket or protocol failures.
    pub fn status(&mut self) -> Result<StatusReport, MuxClientError> {
        match self.request(&MuxRequest::Status, Some(SHORT_TIMEOUT))? {
            MuxReply::Status(report) => Ok(*report),
            other => Err(MuxClientError::Unexpected(
                format!("{other:?}").chars().take(80).collect(),
            )),
        }
    }

    /// Tell the mux that the local compile it knows of on this connection (after a
    /// `Local` answer, or a fallback after `Failed`) took `took`. One write, no reply;
    /// the connection closes after it. Errors are ignored: it only feeds
    /// `hoardcc stats`.
    pub fn local_done(mut self, took: Duration) {
        let millis = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        let _ = self.stream.set_write_timeout(Some(SHORT_TIMEOUT));
        let _ = blocking::write_message(&mut self.stream, &MuxRequest::LocalDone { millis });
    }

    /// The counters of `hoardcc stats`, reset first when `zero`.
    ///
    /// # Errors
    /// Socket or protocol failures.
    pub fn stats(&mut self, zero: bool) -> Result<Stats, MuxClientError> {
        match self.request(&MuxRequest::Stats { zero }, Some(SHORT_TIMEOUT))? {
            MuxReply::Stats(s) => Ok(*s),
            other => Err(MuxClientError::Unexpected(
                format!("{other:?}").chars().take(80).collect(),
            )),
        }
    }

    /// Subscribe to the mux's reports (`hoardcc mon`): the first arrives at once, the
    /// next ones as the mux's state changes.
    ///
    /// # Errors
    /// Socket failures.
    pub fn watch(mut self) -> Result<Watcher, MuxClientError> {
        self.stream.set_write_timeout(Some(SHORT_TIMEOUT))?;
        blocking::write_message(&mut self.stream, &MuxRequest::Watch)?;
        self.stream.set_read_timeout(Some(WATCH_SILENCE))?;
        Ok(Watcher {
            stream: self.stream,
        })
    }

    /// Ask the mux to exit.
    ///
    /// # Errors
    /// Socket or protocol failures.
    pub fn stop(&mut self) -> Result<(), MuxClientError> {
        match self.request(&MuxRequest::Stop, Some(SHORT_TIMEOUT))? {
            MuxReply::Stopping => Ok(()),
            other => Err(MuxClientError::Unexpected(
                format!("{other:?}").chars().take(80).collect(),
            )),
        }
    }
}

/// Longest a watcher waits for the next report: three of the mux's beats
/// (`mux::conn::WATCH_BEAT`), after which the mux is taken for stuck.
pub const WATCH_SILENCE: Duration = Duration::from_secs(30);

/// A subscription to the mux's reports ([`MuxClient::watch`]).
pub struct Watcher {
    stream: UnixStream,
}

impl Watcher {
    /// The next report; `Ok(None)` when the mux closed the connection (it exited).
    ///
    /// # Errors
    /// [`MuxClientError::NoAnswer`] after [`WATCH_SILENCE`] without a report; socket or
    /// protocol failures.
    pub fn next_report(&mut self) -> Result<Option<StatusReport>, MuxClientError> {
        match blocking::read_message::<_, MuxReply>(&mut self.stream) {
            Ok(Some(MuxReply::Status(r))) => Ok(Some(*r)),
            Ok(Some(other)) => Err(MuxClientError::Unexpected(
                format!("{other:?}").chars().take(80).collect(),
            )),
            Ok(None) => Ok(None),
            Err(crate::proto::Error::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(MuxClientError::NoAnswer {
                    after: WATCH_SILENCE,
                })
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Connect to a running mux without starting one.
pub fn connect_existing(paths: &Paths) -> Result<MuxClient, MuxClientError> {
    let socket = paths.mux_socket();
    match try_connect(&socket)? {
        Some(stream) => Ok(MuxClient {
            stream,
            paths: paths.clone(),
            self_exe: PathBuf::new(),
            reply_deadline: None,
        }),
        None => Err(MuxClientError::NotRunning(socket)),
    }
}

/// The running mux's status, when one is running and answers (never starts one).
pub fn running_status(paths: &Paths) -> Option<StatusReport> {
    connect_existing(paths).and_then(|mut c| c.status()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::sync::mpsc;

    /// A mux that accepts, reads the request and never answers: `reserve` gives up after
    /// the reply deadline with `NoAnswer` (and without a deadline it would still wait).
    #[test]
    fn a_silent_mux_trips_the_reply_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("mux.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let (got_tx, got_rx) = mpsc::channel();
        let (end_tx, end_rx) = mpsc::channel::<()>();
        let fake = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let req: Option<MuxRequest> = blocking::read_message(&mut s).unwrap();
            got_tx.send(req.is_some()).unwrap();
            // Hold the connection open, silent, until the test is done.
            let _ = end_rx.recv();
        });
        let paths = Paths::from_env(&|_: &str| None);
        let stream = UnixStream::connect(&sock).unwrap();
        let deadline = Duration::from_millis(300);
        let client = MuxClient::from_stream(stream, &paths, Path::new("/nonexistent"))
            .with_reply_deadline(deadline);
        let (done_tx, done_rx) = mpsc::channel();
        let start = Instant::now();
        let caller = std::thread::spawn(move || {
            let mut client = client;
            done_tx.send(client.reserve("@h/1", "a.c")).unwrap();
            client
        });
        assert!(got_rx.recv_timeout(Duration::from_secs(60)).unwrap());
        let r = done_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("reserve returned");
        assert!(
            matches!(r, Err(MuxClientError::NoAnswer { after }) if after == deadline),
            "{r:?}"
        );
        assert!(start.elapsed() >= deadline);
        drop(caller.join().unwrap());
        end_tx.send(()).unwrap();
        fake.join().unwrap();
    }

    #[test]
    fn wait_process_gone_sees_an_exit_and_respects_its_deadline() {
        let mut quick = Command::new("sleep").arg("0.2").spawn().unwrap();
        let start = Instant::now();
        assert!(wait_process_gone(
            quick.id(),
            start + Duration::from_secs(10)
        ));
        assert!(start.elapsed() < Duration::from_secs(5));
        quick.wait().unwrap();

        let mut slow = Command::new("sleep").arg("30").spawn().unwrap();
        let start = Instant::now();
        assert!(!wait_process_gone(
            slow.id(),
            start + Duration::from_millis(150)
        ));
        assert!(start.elapsed() >= Duration::from_millis(150));
        slow.kill().unwrap();
        slow.wait().unwrap();
        // The /proc fallback sees the same.
        let mut other = Command::new("sleep").arg("0.2").spawn().unwrap();
        assert!(wait_process_gone_by_proc(
            other.id(),
            Instant::now() + Duration::from_secs(10)
        ));
        other.wait().unwrap();
        // A reaped pid no longer exists: gone at once.
        assert!(wait_process_gone(
            slow.id(),
            Instant::now() + Duration::from_secs(1)
        ));
    }
}
