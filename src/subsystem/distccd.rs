//! Stage: server, for stock distcc clients: one distcc protocol 1/2 job on the stream
//! (what `distccd --inetd` does when `DISTCC_HOSTS=@host` runs it over ssh). Reads the
//! request with `proto::distcc`, applies the same compiler allow-list and argument rules
//! as native jobs, takes a server slot (`subsystem::slots`), compiles the `.i` in a
//! private temporary directory, and answers `DONE/STAT/SERR/SOUT/DOTO`. Neighbours:
//! `subsystem` (detects `DIST` and calls [`serve_one`]), `subsystem::job` (allow-list),
//! `subsystem::sandbox` (environment and containment, as for native jobs),
//! `subsystem::exec` (runs the compiler).
//!
//! Unlike stock distccd in SSH mode (which turns its allow-list off and has no job
//! limit, distcc.md §1.2), the allow-list and the slot limit always apply. A full host
//! makes the job wait, as a connection to a full `distccd --jobs N` daemon waits in its
//! listen queue, but only for `slot_wait` (polling, since slot locks are never waited
//! on); then it is answered exit 114 ("busy"), which the distcc client, like any remote
//! failure, retries locally. While it waits and while it compiles, the lane is watched:
//! EOF (the client gone) stops the wait, or kills the compiler's process group, as
//! distccd's `dcc_collect_child` does. The request is read whole before admission (the
//! protocol sends the source right after the arguments), bounded by `proto::distcc`;
//! nothing is written to disk before the slot is held.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio_util::sync::CancellationToken;

use crate::exit::ExitCode;
use crate::proto::distcc::{
    read_request, wait_status_from_exit_code, write_response, DistccRequest, DistccResponse,
};
use crate::proto::fault::{self, Ended};
use crate::proto::Error as ProtoError;

use crate::config::ServerSettings;

use super::exec::{self, CompileCommand, ExecError};
use super::job::{AllowList, CompilerRefusal};
use super::sandbox::{compiler_env, Sandbox};
use super::slots::{self, ServerSlot};

/// distcc's I/O timeout default (`DISTCC_IO_TIMEOUT`), used for reading the request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// How often a waiting stock distcc job tries the slots again.
pub const SLOT_POLL: Duration = Duration::from_millis(200);

/// Why a distcc job could not be served at all (the stream is then abandoned).
#[derive(Debug, thiserror::Error)]
pub enum DistccServeError {
    /// Reading the request or writing the response failed.
    #[error("distcc protocol: {0}")]
    Protocol(#[from] ProtoError),
    /// The request did not arrive in time.
    #[error("no complete distcc request within {0:?}")]
    Timeout(Duration),
}

use crate::args::extension;
pub use crate::args::{preprocessed_extension, DistccPlan};

/// Splits a distcc argv into compiler, compile arguments and input, holding every
/// argument to the option policy (`args::distcc_plan`).
///
/// # Errors
/// A reason (for the client's stderr) when there is no compiler, no `-c`/`-S`, no
/// source file, or an argument the policy refuses.
pub fn plan(argv: &[String]) -> Result<DistccPlan, String> {
    crate::args::distcc_plan(argv).map_err(|e| e.to_string())
}

/// Resolves distcc's argv\[0\]: a bare allowed name, or `/usr/bin/NAME` / `/bin/NAME`
/// with an allowed NAME (distcc's rule, for IDEs that send full paths). Either way the
/// name is resolved through the allow-list, never run as sent.
pub fn resolve_compiler(allow: &AllowList, argv0: &str) -> Result<PathBuf, CompilerRefusal> {
    let name = ["/usr/bin/", "/bin/"]
        .iter()
        .find_map(|dir| argv0.strip_prefix(dir))
        .filter(|n| !n.contains('/'))
        .unwrap_or(argv0);
    allow.resolve(name)
}

fn refusal(version: u32, code: ExitCode, message: String) -> DistccResponse {
    tracing::warn!("distcc job refused: {message}");
    DistccResponse {
        version,
        status: wait_status_from_exit_code(code.code().into()),
        stderr: format!("hoardcc server: {message}\n").into_bytes(),
        stdout: Vec::new(),
        doto: Vec::new(),
    }
}

/// Waits until the client closes its end (or errors); returns `false` if it sends more
/// bytes instead (a protocol slip, not a hang-up: stop watching then).
///
/// # Cancel safety
/// Cancel safe: a dropped one-byte read consumes nothing.
async fn client_gone<R: AsyncRead + Unpin>(input: &mut R) -> bool {
    let mut b = [0u8; 1];
    !matches!(input.read(&mut b).await, Ok(n) if n > 0)
}

/// What waiting for a slot came to.
enum Admitted {
    ServerSlot(ServerSlot),
    /// None free within `slot_wait`.
    Busy,
    /// The client went away while waiting.
    Gone,
    /// The slot directory is unusable.
    Failed(String),
}

/// Takes a slot in `slot_dir`, polling every [`SLOT_POLL`] for up to `wait`, and
/// giving up at once if the client hangs up.
async fn admit<R: AsyncRead + Unpin>(
    input: &mut R,
    slot_dir: &Path,
    limit: u32,
    wait: Duration,
) -> Admitted {
    let deadline = tokio::time::Instant::now() + wait;
    let mut watching = true;
    loop {
        match slots::try_acquire(slot_dir, limit) {
            Ok(Some(slot)) => return Admitted::ServerSlot(slot),
            Ok(None) => {}
            Err(e) => return Admitted::Failed(e.to_string()),
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Admitted::Busy;
        }
        let pause = tokio::time::sleep_until(deadline.min(now + SLOT_POLL));
        tokio::select! {
            () = pause => {}
            gone = client_gone(input), if watching => {
                if gone {
                    return Admitted::Gone;
                }
                watching = false;
            }
        }
    }
}

/// Runs one request to a response: every problem becomes a status, except the client
/// going away, which is `None` (there is nobody to answer).
pub async fn run_request<R: AsyncRead + Unpin>(
    req: &DistccRequest,
    input: &mut R,
    allow: &AllowList,
    settings: &ServerSettings,
    slot_dir: &Path,
    sandbox: &Sandbox,
) -> Option<DistccResponse> {
    let v = req.version;
    if let Err(e) = sandbox.check() {
        // distcc clients retry a failed remote compile locally.
        return Some(refusal(v, ExitCode::AccessDenied, e.to_string()));
    }
    let plan = match plan(&req.argv) {
        Ok(p) => p,
        Err(reason) => return Some(refusal(v, ExitCode::AccessDenied, reason)),
    };
    let program = match resolve_compiler(allow, &plan.compiler) {
        Ok(p) => p,
        Err(e @ CompilerRefusal::NotFound(_)) => {
            return Some(refusal(v, ExitCode::CompilerMissing, e.to_string()))
        }
        Err(e) => return Some(refusal(v, ExitCode::AccessDenied, e.to_string())),
    };
    let limit = slots::host_limit(settings.max_jobs);
    let wait = settings.admission.slot_wait;
    let _slot = match admit(input, slot_dir, limit, wait).await {
        Admitted::ServerSlot(slot) => slot,
        Admitted::Busy => {
            let message = format!("all {limit} compile slots stayed busy for {wait:?}");
            return Some(refusal(v, ExitCode::Busy, message));
        }
        Admitted::Gone => {
            tracing::debug!("distcc client went away while waiting for a slot");
            return None;
        }
        Admitted::Failed(message) => return Some(refusal(v, ExitCode::DistccFailed, message)),
    };
    let dir =
        super::workdir::private_dir(settings.tmpdir.as_deref(), super::workdir::DISTCC_PREFIX);
    let dir = match dir {
        Ok(d) => d,
        Err(e) => {
            return Some(refusal(
                v,
                ExitCode::DistccFailed,
                format!("cannot make a job directory: {e}"),
            ))
        }
    };
    let ext = preprocessed_extension(extension(&plan.input).unwrap_or("c"));
    let input_path = dir.path().join(format!("input.{ext}"));
    let output = dir.path().join(if plan.assemble_only {
        "output.s"
    } else {
        "output.o"
    });
    if let Err(e) = std::fs::write(&input_path, &req.doti) {
        return Some(refusal(
            v,
            ExitCode::DistccFailed,
            format!("cannot write the source: {e}"),
        ));
    }
    let mut args: Vec<OsString> = plan.args.iter().map(OsString::from).collect();
    args.push(if plan.assemble_only { "-S" } else { "-c" }.into());
    args.push(input_path.into_os_string());
    args.push("-o".into());
    args.push(output.clone().into_os_string());
    let cmd = CompileCommand {
        program,
        args,
        cwd: dir.path().to_path_buf(),
        // Stock distcc sends no environment: the compiler runs in the C locale.
        env: compiler_env(&allow.search_path, dir.path(), []),
        containment: sandbox.containment(dir.path()),
    };
    let cancel = CancellationToken::new();
    let compile = exec::run(&cmd, settings.compile_timeout, &cancel);
    tokio::pin!(compile);
    let mut watching = true;
    let outcome = loop {
        tokio::select! {
            r = &mut compile => break r,
            gone = client_gone(input), if watching => {
                watching = false;
                if gone {
                    tracing::debug!("distcc client went away, killing the compiler");
                    cancel.cancel();
                }
            }
        }
    };
    let finished = match outcome {
        Ok(f) => f,
        Err(ExecError::Cancelled) => return None,
        Err(e @ ExecError::TimedOut(_)) => {
            return Some(refusal(v, ExitCode::Timeout, e.to_string()))
        }
        Err(e) => return Some(refusal(v, ExitCode::DistccFailed, e.to_string())),
    };
    // A killed compiler is not the compile's result. Stock distcc retries a remote failure
    // locally only when its status is below 128, so say "crashed" (104) rather than
    // pass the signal on.
    let ended = Ended::from_wait_status(finished.wait_status);
    let driver = cmd.program.to_string_lossy();
    if let Some(fault) = fault::classify(ended, &finished.stderr, &driver) {
        return Some(refusal(v, ExitCode::CompilerCrashed, fault.to_string()));
    }
    let mut doto = Vec::new();
    if finished.wait_status == 0 {
        match std::fs::read(&output) {
            Ok(o) => doto = o,
            Err(e) => {
                return Some(refusal(
                    v,
                    ExitCode::DistccFailed,
                    format!("compiler succeeded but its output is missing: {e}"),
                ))
            }
        }
    }
    Some(DistccResponse {
        version: v,
        status: finished.wait_status,
        stderr: finished.stderr,
        stdout: finished.stdout,
        doto,
    })
}

/// Serves one distcc job: reads the request from `input` (which must start at `DIST`),
/// waits for a slot, compiles, writes the response to `output`. If the client hangs up
/// meanwhile, the compile is stopped and nothing is written.
///
/// # Errors
/// [`DistccServeError`] when the request cannot be read or the response not written;
/// compile problems are answered in the response instead.
pub async fn serve_one<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    input: &mut R,
    output: &mut W,
    allow: &AllowList,
    settings: &ServerSettings,
    slot_dir: &Path,
    sandbox: &Sandbox,
) -> Result<(), DistccServeError> {
    let req = tokio::time::timeout(REQUEST_TIMEOUT, read_request(input))
        .await
        .map_err(|_| DistccServeError::Timeout(REQUEST_TIMEOUT))??;
    tracing::debug!("distcc request v{}: {:?}", req.version, req.argv);
    if let Some(resp) = run_request(&req, input, allow, settings, slot_dir, sandbox).await {
        write_response(output, &resp).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn plan_holds_the_argv_to_the_policy() {
        let p = plan(&s(&["gcc", "-O2", "-c", "src/foo.c", "-o", "foo.o", "-g"])).unwrap();
        assert_eq!(
            (p.input.as_str(), p.args.clone()),
            ("src/foo.c", s(&["-O2", "-g"]))
        );
        let e = plan(&s(&["gcc", "-E", "-c", "a.i", "-o", "a.o"])).unwrap_err();
        assert!(e.contains("\"-E\""), "{e}");
        assert!(plan(&s(&["gcc", "foo.c"])).is_err());
    }

    #[test]
    fn compiler_paths_follow_distccs_rule() {
        let allow = AllowList::new(true, vec![], Some("/usr/bin:/bin".into()));
        assert!(resolve_compiler(&allow, "gcc").is_ok());
        assert!(resolve_compiler(&allow, "/usr/bin/gcc").is_ok());
        assert!(matches!(
            resolve_compiler(&allow, "/usr/local/bin/gcc"),
            Err(CompilerRefusal::NotAllowed(_))
        ));
        assert!(matches!(
            resolve_compiler(&allow, "/usr/bin/rm"),
            Err(CompilerRefusal::NotAllowed(_))
        ));
        assert!(matches!(
            resolve_compiler(&allow, "/usr/bin/x/gcc"),
            Err(CompilerRefusal::NotAllowed(_))
        ));
    }
}
