//! `hoardcc mon` and `hoardcc stats` against the real sshd (issue 11 items 2 and 5): a
//! slow build watched live in a real terminal (a detached tmux session of fixed size,
//! its pane captured until the jobs and the host appear), `mon --once` for scripts, and
//! the counters of `hoardcc stats` after a build, across a mux restart, `--zero` and
//! `--json`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use hoardcc::proto::stats::Stats;
use tempfile::TempDir;

use crate::support::{hoardcc_bin, run_with_timeout, wait_until, Sshd, SshdOptions};

/// Limit for one command; every test is much shorter.
const T: Duration = Duration::from_secs(60);
/// The host the jobs go to (the fixture's ssh alias) and its key in reports.
const HOST: &str = "hoardtest";

/// `n` small C sources `s0.c … s<n-1>.c` in a fresh directory.
fn work(n: usize) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("hoardcc-mon-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for i in 0..n {
        std::fs::write(
            dir.path().join(format!("s{i}.c")),
            format!("int f{i}(int x) {{ return x * {i} + 1; }}\n"),
        )
        .unwrap();
    }
    dir
}

/// A directory for the server's PATH whose `gcc` sleeps `secs`, then runs the real one.
fn slow_gcc(secs: u32) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("hoardcc-slowgcc-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let gcc = dir.path().join("gcc");
    std::fs::write(
        &gcc,
        format!("#!/bin/sh\nsleep {secs}\nexec /usr/bin/gcc \"$@\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&gcc, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// `hoardcc …` isolated to the fixture's client.
fn hoardcc(sshd: &Sshd, args: &[&str]) -> Command {
    let mut cmd = Command::new(hoardcc_bin());
    sshd.apply_env(&mut cmd);
    cmd.args(args);
    cmd
}

/// `hoardcc gcc -c s<i>.c -o s<i>.o` in `dir` to `hosts`; the mux it starts stays up.
fn compile(sshd: &Sshd, dir: &Path, hosts: &str, i: usize) -> Command {
    let mut cmd = hoardcc(sshd, &["gcc", "-c"]);
    cmd.current_dir(dir)
        .env("HOARDCC_HOSTS", hosts)
        .env("HOARDCC_IDLE_TIMEOUT", "120")
        .arg(format!("s{i}.c"))
        .arg("-o")
        .arg(format!("s{i}.o"));
    cmd
}

fn ok(out: &Output, what: &str) -> String {
    assert!(out.status.success(), "{what}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stops the fixture's mux when the test ends, however it ends.
struct StopMux<'a>(&'a Sshd);

impl Drop for StopMux<'_> {
    fn drop(&mut self) {
        let _ = hoardcc(self.0, &["mux", "--stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn stats(sshd: &Sshd) -> Stats {
    let text = ok(
        &run_with_timeout(&mut hoardcc(sshd, &["stats", "--json"]), T, "stats"),
        "stats --json",
    );
    Stats::from_json(&text).unwrap_or_else(|e| panic!("stats --json: {e}\n{text}"))
}

/// A private tmux server (its own socket) running one command in a detached session of
/// a fixed size. Dropping it kills that server and so the command.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(env: &[(String, String)], argv: &[&str], cols: u16, rows: u16) -> Tmux {
        let socket = format!("hoardcc-mon-{}", std::process::id());
        let mut cmd = Command::new("tmux");
        cmd.args([
            "-L",
            &socket,
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "mon",
        ])
        .args(["-x", &cols.to_string(), "-y", &rows.to_string()])
        .arg("env");
        for (k, v) in env {
            cmd.arg(format!("{k}={v}"));
        }
        cmd.args(argv);
        ok(
            &run_with_timeout(&mut cmd, T, "tmux new-session"),
            "tmux new-session",
        );
        Tmux { socket }
    }

    fn tmux(&self, args: &[&str]) -> Output {
        run_with_timeout(
            Command::new("tmux").args(["-L", &self.socket]).args(args),
            T,
            "tmux",
        )
    }

    /// The pane's text now.
    fn capture(&self) -> String {
        String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p", "-t", "mon"]).stdout)
            .into_owned()
    }

    /// Capture the pane until `pred` holds (or panic after `within`); the last capture.
    fn wait_for(&self, within: Duration, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_until(within, what, || {
                last = self.capture();
                pred(&last)
            })
        }));
        assert!(found.is_ok(), "{what}; the pane shows:\n{last}");
        last
    }

    fn alive(&self) -> bool {
        self.tmux(&["has-session", "-t", "mon"]).status.success()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Job rows (`STATE HOST ELAPSED … FILE`) of a frame in `state` on the test host.
fn job_rows<'a>(frame: &'a str, state: &str) -> Vec<&'a str> {
    frame
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with(state) && l.contains(HOST) && l.contains(".c"))
        .collect()
}

/// The host row of a frame, split into its columns.
fn host_row(frame: &str) -> Option<Vec<String>> {
    frame
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(HOST))
        .map(|l| l.split_whitespace().map(String::from).collect())
}

/// Four jobs whose server compiler takes 6 s each: the live view (in tmux) shows each of
/// them compiling on the host, with the host's slots in use, as the mux's reports
/// arrive; `mon --once` prints the same frame as text; when the build is done the view
/// shows no job and the host's four successes; `q` quits.
#[test]
fn mon_shows_a_slow_build_live_and_once() {
    let slow = slow_gcc(6);
    let sshd = Sshd::start(SshdOptions {
        server_env: vec![(
            "PATH".into(),
            format!("{}:/usr/local/bin:/usr/bin:/bin", slow.path().display()),
        )],
        // Four slots on the server whatever its CPU count.
        server_toml: Some("[server]\nmax_jobs = 4\n".into()),
        ..SshdOptions::default()
    });
    let _stop = StopMux(&sshd);
    let dir = work(4);
    // The view starts before the mux: it waits for one, then follows its reports.
    let env: Vec<(String, String)> = sshd
        .env()
        .into_iter()
        .chain([("TERM".to_string(), "xterm-256color".to_string())])
        .collect();
    let bin = hoardcc_bin();
    let tmux = Tmux::start(&env, &[bin.to_str().unwrap(), "mon"], 160, 40);
    tmux.wait_for(T, "mon says no mux runs", |p| p.contains("no mux running"));
    let hosts = format!("@{HOST}/4");
    let mut jobs: Vec<Child> = (0..4)
        .map(|i| {
            compile(&sshd, dir.path(), &hosts, i)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let frame = tmux.wait_for(T, "four jobs compiling on the host", |p| {
        job_rows(p, "compiling").len() == 4
    });
    for i in 0..4 {
        assert!(
            job_rows(&frame, "compiling")
                .iter()
                .any(|l| l.ends_with(&format!("s{i}.c"))),
            "s{i}.c:\n{frame}"
        );
    }
    let row = host_row(&frame).unwrap_or_else(|| panic!("no host row:\n{frame}"));
    // HOST SLOTS USED FREE CONNS LANES …
    assert_eq!(row[2], "4", "four slots in use:\n{frame}");
    assert_eq!(row[3], "0", "none free:\n{frame}");
    assert!(
        row[4].parse::<u32>().unwrap() >= 1,
        "a connection:\n{frame}"
    );
    // Every job row shows the bytes it sent.
    for l in job_rows(&frame, "compiling") {
        assert!(l.contains(" B ") || l.contains("KiB"), "bytes sent: {l}");
    }
    // The same, once, as plain text for scripts.
    let once = ok(
        &run_with_timeout(&mut hoardcc(&sshd, &["mon", "--once"]), T, "mon --once"),
        "mon --once",
    );
    eprintln!("mon --once during the build:\n{once}");
    assert!(once.starts_with("hoardcc mon: mux "), "{once}");
    assert!(once.contains("HOST") && once.contains("STATE"), "{once}");
    assert_eq!(job_rows(&once, "compiling").len(), 4, "{once}");
    assert!(host_row(&once).is_some(), "{once}");
    for (i, job) in jobs.iter_mut().enumerate() {
        let out = wait_child(job);
        assert!(out.status.success(), "job {i}: {out:?}");
        assert!(dir.path().join(format!("s{i}.o")).exists());
    }
    let frame = tmux.wait_for(T, "the build is over", |p| {
        p.contains("(no jobs)") && host_row(p).is_some_and(|r| r[6] == "4")
    });
    assert!(job_rows(&frame, "").is_empty(), "{frame}");
    tmux.tmux(&["send-keys", "-t", "mon", "q"]);
    wait_until(T, "mon to quit on q", || !tmux.alive());
}

fn wait_child(child: &mut Child) -> Output {
    let deadline = std::time::Instant::now() + T;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = Output {
        status: child.wait().unwrap(),
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    use std::io::Read;
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_end(&mut out.stderr);
    }
    out
}

/// `mon --once` without a mux says so and succeeds; without a terminal it needs none.
#[test]
fn mon_once_without_a_mux() {
    let sshd = Sshd::start(SshdOptions::default());
    let out = run_with_timeout(&mut hoardcc(&sshd, &["mon", "--once"]), T, "mon --once");
    assert!(ok(&out, "mon --once").contains("no mux running"), "{out:?}");
}

/// The counters after a small build (three remote jobs, one fallback from a dead host),
/// kept in the state directory across a mux restart, added to by the next mux, and
/// reset by `--zero` with and without a mux.
#[test]
fn stats_count_a_build_and_survive_a_restart() {
    let sshd = Sshd::start(SshdOptions::default());
    let _stop = StopMux(&sshd);
    let dir = work(4);
    let hosts = format!("@{HOST}/2");
    for i in 0..3 {
        let out = run_with_timeout(&mut compile(&sshd, dir.path(), &hosts, i), T, "compile");
        assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    }
    // A stock distccd host nobody listens on: the job falls back and compiles here.
    let dead = crate::support::free_port();
    let out = run_with_timeout(
        &mut compile(&sshd, dir.path(), &format!("127.0.0.1:{dead}/1"), 3),
        T,
        "compile to a dead host",
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("compiling locally"),
        "{out:?}"
    );
    // The wrapper reports its local compile after the fact: wait for the mux to read it.
    let mut s = Stats::default();
    wait_until(T, "the fallback counted", || {
        s = stats(&sshd);
        s.jobs_fallback == 1
    });
    eprintln!(
        "stats after the build:\n{}",
        ok(
            &run_with_timeout(&mut hoardcc(&sshd, &["stats"]), T, "stats"),
            "stats",
        )
    );
    assert_eq!(
        (s.jobs_remote, s.jobs_local, s.jobs_cache_hit),
        (3, 0, 0),
        "{s:?}"
    );
    let h = &s.hosts[HOST];
    assert_eq!(h.jobs_remote, 3, "{s:?}");
    assert!(
        h.bytes_sent > 0 && h.bytes_received > 0 && h.remote_ms > 0,
        "{s:?}"
    );
    assert_eq!(
        s.bytes_sent, h.bytes_sent,
        "nothing reached the dead host: {s:?}"
    );
    assert_eq!(
        s.hosts[&format!("127.0.0.1:{dead}")].jobs_fallback,
        1,
        "{s:?}"
    );
    assert_eq!(s.local_timed, 1, "{s:?}");
    assert!(s.estimated_local_ms().is_some(), "{s:?}");
    let text = ok(
        &run_with_timeout(&mut hoardcc(&sshd, &["stats"]), T, "stats"),
        "stats",
    );
    assert!(text.contains("jobs remote             3"), "{text}");
    assert!(text.contains("jobs fallen back        1"), "{text}");

    // The mux stops: the counters are in the file, and `stats` reads them there.
    ok(
        &run_with_timeout(&mut hoardcc(&sshd, &["mux", "--stop"]), T, "mux --stop"),
        "stop",
    );
    let file: PathBuf = sshd.client_home().join(".local/state/hoardcc/stats.json");
    assert!(file.exists(), "{}", file.display());
    let after = stats(&sshd);
    assert_eq!(after, s, "the file holds what the mux counted");
    // A new mux starts from the file.
    let out = run_with_timeout(&mut compile(&sshd, dir.path(), &hosts, 0), T, "compile");
    assert!(out.status.success(), "{out:?}");
    let more = stats(&sshd);
    assert_eq!(
        (more.jobs_remote, more.hosts[HOST].jobs_remote),
        (4, 4),
        "{more:?}"
    );
    assert_eq!(more.jobs_fallback, 1, "{more:?}");

    // --zero with a mux, then without one.
    let zeroed = ok(
        &run_with_timeout(
            &mut hoardcc(&sshd, &["stats", "--zero", "--json"]),
            T,
            "zero",
        ),
        "stats --zero",
    );
    let z = Stats::from_json(&zeroed).unwrap();
    assert_eq!(
        (z.jobs_remote, z.jobs_fallback, z.hosts.len()),
        (0, 0, 0),
        "{z:?}"
    );
    assert_eq!(stats(&sshd).jobs_remote, 0);
    let out = run_with_timeout(&mut compile(&sshd, dir.path(), &hosts, 1), T, "compile");
    assert!(out.status.success(), "{out:?}");
    ok(
        &run_with_timeout(&mut hoardcc(&sshd, &["mux", "--stop"]), T, "mux --stop"),
        "stop",
    );
    assert_eq!(stats(&sshd).jobs_remote, 1, "saved on exit");
    ok(
        &run_with_timeout(&mut hoardcc(&sshd, &["stats", "--zero"]), T, "zero"),
        "zero",
    );
    assert_eq!(stats(&sshd).jobs_remote, 0, "zeroed in the file");
}
