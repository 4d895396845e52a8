//! Process and polling helpers shared by the fixtures: free loopback ports, deadline polling,
//! running a command with a timeout, and daemons that live in their own process group.
//!
//! Neighbours: [`super::sshd`] and [`super::distccd`] start their daemons with [`Daemon`];
//! test modules use [`run_with_timeout`] to run `ssh`, `distcc`, `gcc` and `hoardcc` without
//! risking a hung test.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// Path of the `hoardcc` binary that Cargo built for this test run.
pub fn hoardcc_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hoardcc"))
}

/// A loopback TCP port that was free a moment ago (bound on `127.0.0.1:0`, then released).
///
/// Another process may take it before the caller binds it; the daemon fixtures retry with a
/// new port when their daemon reports "Address already in use".
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// Polls `f` until it returns true, with short waits between tries.
///
/// # Panics
/// Panics naming `what` if `f` has not returned true within `deadline`.
pub fn wait_until(deadline: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    let mut pause = Duration::from_millis(5);
    loop {
        if f() {
            return;
        }
        if Instant::now() >= end {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Runs `cmd` to completion with stdin closed, capturing stdout and stderr.
///
/// # Panics
/// Panics if the command cannot be spawned, or kills it and panics if it runs longer than
/// `timeout` (the message names `what` and shows the output so far).
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration, what: &str) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: spawn {cmd:?}: {e}"));
    let out_reader = spawn_reader(child.stdout.take().expect("stdout piped"));
    let err_reader = spawn_reader(child.stderr.take().expect("stderr piped"));
    let end = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = out_reader.join().unwrap_or_default();
            let stderr = err_reader.join().unwrap_or_default();
            panic!(
                "{what}: timed out after {timeout:?}: {cmd:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: out_reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
    }
}

fn spawn_reader(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// A long-running daemon started in its own process group with stderr appended to a log file.
pub(crate) struct Daemon {
    child: Child,
}

/// How a daemon start attempt ended.
pub(crate) enum Started {
    /// The log showed the ready marker.
    Ready(Daemon),
    /// The daemon exited because its port was taken; the caller may retry with another port.
    PortInUse,
}

impl Daemon {
    /// Spawns `cmd` (stdin/stdout null, stderr appended to `log`) in a new process group and
    /// waits until the part of `log` written by this start contains `ready`.
    ///
    /// # Panics
    /// Panics (showing the log) if the daemon exits for another reason than a taken port, or
    /// if it is not ready within `timeout`.
    pub(crate) fn start(
        mut cmd: Command,
        log: &Path,
        ready: &str,
        timeout: Duration,
        what: &str,
    ) -> Started {
        let offset = std::fs::metadata(log).map(|m| m.len()).unwrap_or(0);
        let log_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("{what}: open log {}: {e}", log.display()));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: spawn {cmd:?}: {e}"));
        let mut daemon = Daemon { child };
        let end = Instant::now() + timeout;
        let mut pause = Duration::from_millis(5);
        loop {
            let text = read_from(log, offset);
            if text.contains(ready) {
                return Started::Ready(daemon);
            }
            if let Some(status) = daemon.child.try_wait().expect("try_wait") {
                // Re-read: the last lines may have landed after the check above.
                let text = read_from(log, offset);
                if text.contains("Address already in use") {
                    return Started::PortInUse;
                }
                panic!("{what}: exited with {status} before it was ready; log:\n{text}");
            }
            if Instant::now() >= end {
                daemon.kill_group();
                panic!("{what}: not ready after {timeout:?}; log:\n{text}");
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Process id of the daemon's main process.
    pub(crate) fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// SIGKILLs only the main process and reaps it; children it forked keep running.
    pub(crate) fn kill_main(&mut self) {
        let _ = kill(self.pid(), Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// SIGKILLs the daemon's whole process group and reaps the main process.
    pub(crate) fn kill_group(&mut self) {
        // The group id equals the main pid (process_group(0)); killing the group also stops
        // forked workers (distccd's preforked children, sshd's per-connection monitors).
        let _ = killpg(self.pid(), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill_group();
    }
}

/// The text of `path` from byte `offset` on (lossy UTF-8); empty if unreadable.
pub(crate) fn read_from(path: &Path, offset: u64) -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = File::open(path) {
        use std::io::{Seek, SeekFrom};
        if f.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = f.read_to_end(&mut buf);
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// One process as /proc shows it.
pub struct Proc {
    pub ppid: i32,
    pub comm: String,
    pub argv: Vec<String>,
}

pub fn processes() -> HashMap<i32, Proc> {
    let mut all = HashMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ..."; comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let Some(Ok(ppid)) = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .map(str::parse::<i32>)
        else {
            continue;
        };
        let argv = std::fs::read(entry.path().join("cmdline"))
            .unwrap_or_default()
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        all.insert(
            pid,
            Proc {
                ppid,
                comm: stat[open + 1..close].to_string(),
                argv,
            },
        );
    }
    all
}

/// The descendants of `root` that `keep` accepts.
pub fn descendants(root: i32, keep: impl Fn(&Proc) -> bool) -> Vec<i32> {
    let all = processes();
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for (pid, p) in &all {
            if p.ppid == parent {
                frontier.push(*pid);
                if keep(p) {
                    found.push(*pid);
                }
            }
        }
    }
    found
}
