//! Stage: server execution. Runs one resolved compiler command in its own process
//! group inside the job directory, captures stdout and stderr concurrently (each capped),
//! and enforces the compile timeout and cancellation (client gone) by killing the whole
//! group: SIGTERM first (gcc then removes its temporary files), SIGKILL after a short
//! grace. The compiler gets only the environment the command carries, and its
//! [`Containment`] (Landlock, resource limits) is armed in this process before the
//! spawn and applied in the child just before `exec`. Neighbours: `subsystem::job` /
//! `subsystem::distccd` (build the [`CompileCommand`]), `subsystem::sandbox` (the
//! containment), `subsystem::session` (cancels when the client hangs up, turns the outcome
//! into a message).
//!
//! Like distccd's `dcc_collect_child`, but event-driven: no polling of the client fd.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;

use super::sandbox::Containment;

/// Most bytes of stdout (and, separately, of stderr) kept from a compiler; the rest is
/// read and dropped so the compiler never blocks on a full pipe.
pub const CAPTURE_CAP: usize = 64 << 20;
/// How long a killed compiler gets between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(1);

/// A fully resolved command: what to run, with which arguments, where.
#[derive(Debug, Clone)]
pub struct CompileCommand {
    /// Absolute path of the compiler, resolved through the allow-list.
    pub program: PathBuf,
    /// Arguments (without argv\[0\]).
    pub args: Vec<OsString>,
    /// The compiler's working directory.
    pub cwd: PathBuf,
    /// The compiler's whole environment (nothing is inherited from the server): see
    /// `sandbox::compiler_env` (`PATH`, `TMPDIR` in the job directory so temporaries of
    /// a killed compiler are removed with it, checked locale variables).
    pub env: Vec<(OsString, OsString)>,
    /// What the compiler runs under (Landlock, resource limits).
    pub containment: Containment,
}

/// What a compiler that ran to its end did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// Exit code 0–255, or 128+signal if it died of a signal.
    pub exit_code: i32,
    /// The raw wait status (`W_EXITCODE`-style), as stock distcc sends in `STAT`.
    pub wait_status: i32,
    /// Captured stdout (at most [`CAPTURE_CAP`] bytes).
    pub stdout: Vec<u8>,
    /// Captured stderr (at most [`CAPTURE_CAP`] bytes).
    pub stderr: Vec<u8>,
}

/// Why the compiler did not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// It could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn { program: String, source: io::Error },
    /// Waiting for it failed.
    #[error("waiting for the compiler: {0}")]
    Wait(io::Error),
    /// It ran longer than the compile timeout and was killed.
    #[error("compile timed out after {} s", .0.as_secs_f64())]
    TimedOut(Duration),
    /// The caller cancelled (the client went away) and it was killed.
    #[error("compile cancelled: the client went away")]
    Cancelled,
}

/// Kills the process group with SIGKILL when dropped while armed: the last line of
/// defence if the future running the compiler is dropped instead of finishing.
struct GroupGuard {
    pgid: Option<Pid>,
}

impl GroupGuard {
    fn kill(&self, sig: Signal) {
        if let Some(pgid) = self.pgid {
            // ESRCH (group already gone) is the expected, harmless outcome.
            let _ = killpg(pgid, sig);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill(Signal::SIGKILL);
    }
}

/// Reads `r` to its end, keeping at most `cap` bytes.
async fn read_capped<R: AsyncRead + Unpin>(mut r: R, cap: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    kept
}

/// Runs `cmd` with stdin from `/dev/null`, in a new process group, until it exits, the
/// `timeout` passes, or `cancel` fires; in the last two cases the whole group is killed
/// (SIGTERM, then SIGKILL after [`KILL_GRACE`]) and reaped before this returns.
///
/// # Errors
/// [`ExecError::Spawn`], [`ExecError::Wait`], [`ExecError::TimedOut`], [`ExecError::Cancelled`].
///
/// # Cancel safety
/// Dropping the future kills the process group with SIGKILL (no grace) and leaves the
/// reaping to tokio.
pub async fn run(
    cmd: &CompileCommand,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<Finished, ExecError> {
    let spawn_error = |source| ExecError::Spawn {
        program: cmd.program.display().to_string(),
        source,
    };
    let armed = cmd
        .containment
        .arm(&cmd.program)
        .map_err(|e| spawn_error(io::Error::other(e)))?;
    let mut command = tokio::process::Command::new(&cmd.program);
    command
        .args(&cmd.args)
        .current_dir(&cmd.cwd)
        .env_clear()
        .envs(cmd.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: `Armed::apply` only makes system calls (no allocation, no locks), which
    // is what may run between fork and exec.
    unsafe {
        command.pre_exec(move || armed.apply());
    }
    let spawned = command.spawn();
    // Closes this process's copy of the ruleset fd.
    drop(command);
    let mut child = spawned.map_err(spawn_error)?;
    let guard = GroupGuard {
        pgid: child.id().map(|id| Pid::from_raw(id as i32)),
    };
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let all = async {
        tokio::join!(
            child.wait(),
            read_capped(stdout, CAPTURE_CAP),
            read_capped(stderr, CAPTURE_CAP)
        )
    };
    tokio::pin!(all);
    let failure = tokio::select! {
        (status, out, err) = &mut all => {
            let status = status.map_err(ExecError::Wait)?;
            let mut guard = guard;
            guard.pgid = None; // finished on its own: nothing to kill
            let exit_code = status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
            return Ok(Finished {
                exit_code,
                wait_status: status.into_raw(),
                stdout: out,
                stderr: err,
            });
        }
        _ = tokio::time::sleep(timeout) => ExecError::TimedOut(timeout),
        _ = cancel.cancelled() => ExecError::Cancelled,
    };
    tracing::debug!("killing compiler process group: {failure}");
    guard.kill(Signal::SIGTERM);
    if tokio::time::timeout(KILL_GRACE, &mut all).await.is_err() {
        guard.kill(Signal::SIGKILL);
        // After SIGKILL the pipes close and the leader is reaped promptly; the bound only
        // guards against a grandchild that escaped the group holding a pipe open.
        let _ = tokio::time::timeout(KILL_GRACE, &mut all).await;
    }
    // Stragglers that ignored SIGTERM but let the leader exit.
    drop(guard);
    Err(failure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subsystem::tests::gone;

    fn sh(script: &str, cwd: &std::path::Path) -> CompileCommand {
        CompileCommand {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            cwd: cwd.to_path_buf(),
            env: vec![
                ("HOARDCC_TEST_VAR".into(), "v".into()),
                ("PATH".into(), "/usr/bin:/bin".into()),
            ],
            containment: Containment::default(),
        }
    }

    #[tokio::test]
    async fn captures_status_streams_cwd_and_env() {
        let t = tempfile::tempdir().unwrap();
        let cmd = sh(
            "pwd; echo \"$HOARDCC_TEST_VAR\" >&2; read x && echo stdin-not-empty; exit 3",
            t.path(),
        );
        let f = run(&cmd, Duration::from_secs(30), &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(f.exit_code, 3);
        assert_eq!(f.wait_status, 3 << 8);
        let cwd = t.path().canonicalize().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&f.stdout).trim(),
            cwd.to_string_lossy()
        );
        assert_eq!(f.stderr, b"v\n");
    }

    #[tokio::test]
    async fn signal_death_is_128_plus_signal() {
        let t = tempfile::tempdir().unwrap();
        let f = run(
            &sh("kill -SEGV $$", t.path()),
            Duration::from_secs(30),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(f.exit_code, 128 + 11);
        assert_eq!(f.wait_status & 0x7f, 11);
    }

    #[tokio::test]
    async fn caps_huge_output_without_blocking() {
        let t = tempfile::tempdir().unwrap();
        // 80 MiB of zeros on stdout: more than the cap, must not deadlock.
        let f = run(
            &sh("head -c 83886080 /dev/zero", t.path()),
            Duration::from_secs(60),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(f.exit_code, 0);
        assert_eq!(f.stdout.len(), CAPTURE_CAP);
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let t = tempfile::tempdir().unwrap();
        let pids = t.path().join("pids");
        let script = format!(
            "sleep 300 & echo $$ $! > {p}.tmp; mv {p}.tmp {p}; wait",
            p = pids.display()
        );
        let err = run(
            &sh(&script, t.path()),
            Duration::from_millis(500),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ExecError::TimedOut(_)), "{err}");
        assert_eq!(err.to_string(), "compile timed out after 0.5 s");
        let text = std::fs::read_to_string(&pids).unwrap();
        for pid in text.split_whitespace() {
            let pid: i32 = pid.parse().unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !gone(pid) {
                assert!(std::time::Instant::now() < deadline, "pid {pid} survived");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    #[tokio::test]
    async fn cancel_kills_promptly() {
        let t = tempfile::tempdir().unwrap();
        let token = CancellationToken::new();
        let trigger = token.clone();
        let started = std::time::Instant::now();
        let cmd = sh("exec sleep 300", t.path());
        let (res, _) = tokio::join!(run(&cmd, Duration::from_secs(600), &token), async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            trigger.cancel();
        });
        assert!(matches!(res, Err(ExecError::Cancelled)));
        // Killed, not waited for: far below the child's 300 s (CI-safe margin).
        assert!(started.elapsed() < Duration::from_secs(60));
    }

    #[tokio::test]
    async fn spawn_failure_is_reported() {
        let t = tempfile::tempdir().unwrap();
        let cmd = CompileCommand {
            program: t.path().join("no-such-compiler"),
            args: vec![],
            cwd: t.path().to_path_buf(),
            env: vec![],
            containment: Containment::default(),
        };
        let err = run(&cmd, Duration::from_secs(5), &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(matches!(err, ExecError::Spawn { .. }));
    }
}
