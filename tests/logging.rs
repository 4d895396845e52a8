//! Logging as `main.rs` sets it up for each mode, seen from outside: `distccd --inetd
//! --log-file F` writes the server's log lines into F (not stderr), and `hoardcc serve`
//! writes them to stderr, never to stdout (the protocol). The mux's `info` default is
//! tested in tests/mux.rs (`mux_log_has_info_lines_by_default`).
//!
//! Neighbours: src/main.rs (`init_logging`), src/subsystem/mod.rs (`parse_distccd_args`,
//! `run_stdio`'s error lines); tests/support (the binary's path).

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::support::hoardcc_bin;

/// Far above the few milliseconds a refused client takes.
const T: Duration = Duration::from_secs(60);

/// Bytes that are neither a hoardcc hello nor a distcc request.
const GARBAGE: &[u8] = b"hello, this is not a compiler client\n";

/// Runs `cmd` in `dir` with [`GARBAGE`] on stdin, HOARDCC_LOG unset and the server config
/// isolated to an empty file; returns its status, stdout and stderr.
fn serve_garbage(mut cmd: Command, dir: &Path) -> (ExitStatus, String, String) {
    let input = dir.join("input");
    std::fs::write(&input, GARBAGE).unwrap();
    let config = dir.join("server.toml");
    std::fs::write(&config, "").unwrap();
    let (out, err) = (dir.join("stdout"), dir.join("stderr"));
    let mut child = cmd
        .env_remove("HOARDCC_LOG")
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir.join("cfg"))
        .env("HOARDCC_SERVER_CONFIG", &config)
        .stdin(std::fs::File::open(&input).unwrap())
        .stdout(Stdio::from(std::fs::File::create(&out).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err).unwrap()))
        .spawn()
        .expect("spawn the server");
    let end = Instant::now() + T;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server did not exit on garbage within {T:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    (status, read(&out), read(&err))
}

/// The line the server logs (at `error`) when a client sends garbage.
const GARBAGE_LINE: &str = "garbage on stdin";

#[test]
fn distccd_log_file_gets_the_server_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let distccd = dir.path().join("distccd");
    std::os::unix::fs::symlink(hoardcc_bin(), &distccd).unwrap();
    let log = dir.path().join("distccd.log");
    let mut cmd = Command::new(&distccd);
    cmd.args(["--inetd", "--enable-tcp-insecure", "--log-file"])
        .arg(&log);
    let (status, stdout, stderr) = serve_garbage(cmd, dir.path());
    assert!(!status.success(), "garbage is refused: {status:?}");
    let logged = std::fs::read_to_string(&log).expect("the log file exists");
    assert!(
        logged.contains("ERROR") && logged.contains(GARBAGE_LINE),
        "log file: {logged:?}\nstderr: {stderr:?}"
    );
    assert!(
        !stderr.contains(GARBAGE_LINE),
        "went to the file, not stderr: {stderr:?}"
    );
    assert!(!stdout.contains(GARBAGE_LINE), "stdout: {stdout:?}");
    // No escape codes in a file.
    assert!(!logged.contains('\u{1b}'), "{logged:?}");
}

#[test]
fn serve_logs_to_stderr_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(hoardcc_bin());
    cmd.arg("serve");
    let (status, stdout, stderr) = serve_garbage(cmd, dir.path());
    assert!(!status.success(), "garbage is refused: {status:?}");
    assert!(stderr.contains(GARBAGE_LINE), "stderr: {stderr:?}");
    assert!(!stdout.contains(GARBAGE_LINE), "stdout: {stdout:?}");
}
