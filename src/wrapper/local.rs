//! Stage: wrapper, local compile: run the real compiler locally — for commands that are
//! not distributed, and as the single fallback when distribution fails. Exit status
//! passes through.
//! Neighbours: `wrapper` (decides), `wrapper::masquerade` (finds the compiler).

use std::path::Path;
use std::process::{Command, ExitStatus};

/// Run `compiler args…` with inherited stdio and return its exit code (128+signal when
/// it was killed), as a shell would report it.
pub fn run(compiler: &Path, args: &[String], guard_env: (&str, &str)) -> std::io::Result<i32> {
    let status = Command::new(compiler)
        .args(args)
        .env(guard_env.0, guard_env.1)
        .status()?;
    Ok(exit_code_of(status))
}

/// A process's exit code as a shell reports it.
pub fn exit_code_of(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 1,
    }
}
