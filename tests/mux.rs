//! The mux (`hoardcc mux`) against the private real sshd: lane reuse, `MaxSessions`,
//! concurrent auto-spawn, the make hang, BUSY, idle exit, `mux --stop`, local slots in the
//! pool and heartbeats.
//!
//! Every test runs the real wrapper (`hoardcc gcc -c f.c -o f.o`), which auto-spawns the
//! per-user mux in the fixture's private XDG_RUNTIME_DIR; the mux hoards ssh connections
//! and subsystem lanes to the fixture's sshd. What the mux did is read from three places:
//! the job log (`HOARDCC_JOBLOG`: `remote` or `local` per compile), sshd's VERBOSE log
//! (one `Accepted publickey` per ssh connection, one `Starting session: subsystem
//! 'hoardcc'` per lane) and `hoardcc status --json` (`mux::status::StatusReport`).
//!
//! Neighbours: tests/support (the sshd fixture, process helpers); src/mux/{daemon,pool,
//! scheduler,client}.rs (the code under test); tests/e2e.rs (object correctness).

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hoardcc::mux::status::StatusReport;
use tempfile::TempDir;

use crate::support::{hoardcc_bin, run_with_timeout, wait_until, Sshd, SshdOptions};

/// Limit for one wrapper or command; every test is much shorter.
const T: Duration = Duration::from_secs(60);

/// sshd's VERBOSE line for each accepted ssh connection.
const ACCEPTED: &str = "Accepted publickey for";
/// sshd's VERBOSE line for each subsystem channel, i.e. each lane (one `hoardcc serve`).
const SUBSYSTEM: &str = "Starting session: subsystem 'hoardcc'";
/// sshd's line for a session refused because the connection has MaxSessions open.
const REFUSED: &str = "no more sessions";

/// Debug logging for the mux's own modules only (the wrapper shares the variable; its
/// modules stay at `warn`, so its stderr stays clean).
const MUX_LOG: &str = "warn,hoardcc::mux::listener=debug,hoardcc::mux::conn=debug,\
                       hoardcc::mux::job=debug,hoardcc::mux::pool=debug,\
                       hoardcc::mux::scheduler=debug,hoardcc::mux::lane=debug";

/// A directory of small C sources and the job log the wrappers append to.
struct Work {
    dir: TempDir,
}

impl Work {
    /// `n` sources `s0.c … s<n-1>.c`, each a few distinct functions.
    fn new(n: usize) -> Work {
        let dir = tempfile::Builder::new()
            .prefix("hoardcc-mux-")
            .tempdir()
            .expect("work dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for i in 0..n {
            std::fs::write(dir.path().join(format!("s{i}.c")), small_source(i)).unwrap();
        }
        Work { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn joblog(&self) -> PathBuf {
        self.path().join("joblog")
    }

    fn joblog_lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.joblog())
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Every one of `n` jobs ran remotely, and each object exists.
    fn assert_all_remote(&self, n: usize) {
        let lines = self.joblog_lines();
        assert_eq!(lines.len(), n, "job log: {lines:#?}");
        for l in &lines {
            assert!(l.starts_with("remote\t"), "not remote: {l}");
        }
        for i in 0..n {
            let o = self.path().join(format!("s{i}.o"));
            let meta = std::fs::metadata(&o).unwrap_or_else(|e| panic!("{}: {e}", o.display()));
            assert!(meta.len() > 0, "{} is empty", o.display());
        }
    }
}

fn small_source(i: usize) -> String {
    format!(
        "static int k{i} = {i};\n\
         int f{i}(int x) {{ return x * k{i} + {i}; }}\n\
         int g{i}(int x) {{ int s = 0; for (int j = 0; j < x; j++) s += f{i}(j); return s; }}\n"
    )
}

/// `hoardcc gcc -O2 -c s<i>.c -o s<i>.o` in `work`, isolated to `sshd`'s client, with
/// `hosts`, the job log, no fallback (a failed distribution fails the test) and mux debug
/// logging. The mux it spawns inherits this environment.
fn compile(sshd: &Sshd, work: &Work, hosts: &str, i: usize) -> Command {
    let mut cmd = Command::new(hoardcc_bin());
    sshd.apply_env(&mut cmd);
    cmd.current_dir(work.path())
        .env("HOARDCC_HOSTS", hosts)
        .env("HOARDCC_JOBLOG", work.joblog())
        .env("HOARDCC_FALLBACK", "0")
        .env("HOARDCC_IDLE_TIMEOUT", "120")
        .env("HOARDCC_LOG", MUX_LOG)
        .args(["gcc", "-O2", "-c"])
        .arg(format!("s{i}.c"))
        .arg("-o")
        .arg(format!("s{i}.o"));
    cmd
}

/// Asserts a wrapper succeeded without a word on stderr (a warning would mean it did not
/// go through the mux, or fell back).
fn ok_quiet(out: &Output, what: &str, mux: &Mux) {
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{what}: {:?}\nstdout: {}\nstderr: {}\nmux log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        mux.log()
    );
}

/// Count of `needle` in sshd's log after byte `mark`.
fn count_since(sshd: &Sshd, mark: usize, needle: &str) -> usize {
    sshd.log()
        .get(mark..)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

/// A directory on PATH for `hoardcc serve` holding `gcc`, a script that sleeps `secs`
/// before running the real gcc (but answers identity probes at once): jobs overlap on
/// the server without burning CPU.
fn slow_gcc_dir(secs: &str) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("hoardcc-slowgcc-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let gcc = dir.path().join("gcc");
    std::fs::write(
        &gcc,
        // The server asks its compilers who they are (`-dumpfullversion`, `-v` …):
        // only compiles are slow.
        format!(
            "#!/bin/sh\ncase \"$1\" in -dump*|-v|-print-*) exec /usr/bin/gcc \"$@\";; esac\n\
             sleep {secs}\nexec /usr/bin/gcc \"$@\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&gcc, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// `server_env` putting `slow`'s gcc first on the server's PATH.
fn slow_path_env(slow: &TempDir) -> Vec<(String, String)> {
    vec![(
        "PATH".to_string(),
        format!("{}:/usr/local/bin:/usr/bin:/bin", slow.path().display()),
    )]
}

/// Writes the client's `$XDG_CONFIG_HOME/hoardcc/config.toml`.
fn write_client_config(sshd: &Sshd, text: &str) {
    let dir = sshd.config_home().join("hoardcc");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.toml"), text).unwrap();
}

/// Handle on the fixture's mux (whichever process serves its runtime dir). Dropping it
/// stops every mux of this fixture: `hoardcc mux --stop`, then SIGKILL to the pids still
/// there (found by [`Mux::pids`], so only processes these tests started are touched).
struct Mux<'a> {
    sshd: &'a Sshd,
}

impl<'a> Mux<'a> {
    fn new(sshd: &'a Sshd) -> Mux<'a> {
        Mux { sshd }
    }

    fn socket(&self) -> PathBuf {
        self.sshd.runtime_dir().join("hoardcc/mux.sock")
    }

    /// The mux's log file (`$HOME/.local/state/hoardcc/mux.log`: the fixture unsets
    /// XDG_STATE_HOME).
    fn log(&self) -> String {
        std::fs::read_to_string(self.sshd.client_home().join(".local/state/hoardcc/mux.log"))
            .unwrap_or_default()
    }

    fn hoardcc(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(hoardcc_bin());
        self.sshd.apply_env(&mut cmd);
        cmd.args(args);
        cmd
    }

    /// `hoardcc status --json`; `None` when no mux runs.
    fn status(&self) -> Option<StatusReport> {
        let out = run_with_timeout(&mut self.hoardcc(&["status", "--json"]), T, "status");
        assert!(out.status.success(), "hoardcc status: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("\"running\": false") {
            return None;
        }
        Some(
            StatusReport::from_json(&text).unwrap_or_else(|e| panic!("status --json: {e}\n{text}")),
        )
    }

    /// Pids of `hoardcc mux` processes serving this fixture's runtime dir: argv is
    /// `<…/hoardcc> mux` and the environment has this fixture's XDG_RUNTIME_DIR.
    fn pids(&self) -> Vec<i32> {
        let want_env = format!("XDG_RUNTIME_DIR={}", self.sshd.runtime_dir().display());
        let mut pids = Vec::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return pids;
        };
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let argv: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let is_mux = argv.len() >= 2
                && argv[0].ends_with(b"hoardcc")
                && argv[1] == b"mux"
                && !argv.iter().any(|a| *a == b"--stop");
            if !is_mux || is_zombie(pid) {
                continue;
            }
            let Ok(environ) = std::fs::read(e.path().join("environ")) else {
                continue;
            };
            if environ
                .split(|b| *b == 0)
                .any(|kv| kv == want_env.as_bytes())
            {
                pids.push(pid);
            }
        }
        pids
    }

    /// The single mux process; panics if there is none or more than one.
    fn only_pid(&self) -> i32 {
        let pids = self.pids();
        assert_eq!(pids.len(), 1, "mux processes: {pids:?}\n{}", self.log());
        pids[0]
    }
}

impl Drop for Mux<'_> {
    fn drop(&mut self) {
        if self.pids().is_empty() {
            return;
        }
        let _ = self
            .hoardcc(&["mux", "--stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let end = Instant::now() + Duration::from_secs(10);
        while !self.pids().is_empty() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        for pid in self.pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// A zombie (exited, not yet reaped) or missing process.
fn is_zombie(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    // "pid (comm) S ..."; comm may hold spaces, so look after the last ')'.
    stat.rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next())
        .is_none_or(|s| s == "Z" || s == "X")
}

/// 100 jobs in 4 parallel streams to `@hoardtest/2`: one ssh connection, at most two
/// lanes (subsystem requests), every job remote.
#[test]
fn lane_reuse() {
    let sshd = Sshd::start(SshdOptions::default());
    let mux = Mux::new(&sshd);
    let work = Work::new(100);
    // The fixture's own login check was one connection; count only what follows.
    let mark = sshd.log().len();
    let start = Instant::now();
    std::thread::scope(|s| {
        for stream in 0..4 {
            let (sshd, work, mux) = (&sshd, &work, &mux);
            s.spawn(move || {
                for i in (stream..100).step_by(4) {
                    let out = run_with_timeout(
                        &mut compile(sshd, work, "@hoardtest/2", i),
                        T,
                        "hoardcc gcc",
                    );
                    ok_quiet(&out, &format!("job {i}"), mux);
                }
            });
        }
    });
    let took = start.elapsed();
    work.assert_all_remote(100);
    let accepted = count_since(&sshd, mark, ACCEPTED);
    let lanes = count_since(&sshd, mark, SUBSYSTEM);
    let st = mux.status().expect("the mux is running");
    eprintln!("lane_reuse: 100 jobs in {took:?}; {accepted} connection(s), {lanes} lane(s); status {st:?}");
    assert_eq!(accepted, 1, "ssh connections; sshd log:\n{}", sshd.log());
    // Lanes are only replaced when one fails; a healthy run opens one per slot at most.
    assert!(
        (1..=2).contains(&lanes),
        "{lanes} subsystem requests for /2; sshd log:\n{}",
        sshd.log()
    );
    let h = &st.hosts[0];
    assert_eq!(
        (h.jobs_ok, h.jobs_failed, h.jobs_busy),
        (100, 0, 0),
        "{h:?}"
    );
    assert_eq!(h.wire.as_deref(), Some("native"), "{h:?}");
    assert_eq!(h.connections, 1, "{h:?}");
    assert!(h.lanes <= 2, "{h:?}");
}

/// Runs `cmds` at the same moment (all threads pass a barrier first), calling `poll`
/// every 50 ms until all have finished. Returns their outputs in order.
fn run_together(cmds: Vec<Command>, mut poll: impl FnMut()) -> Vec<Output> {
    let barrier = Arc::new(Barrier::new(cmds.len()));
    std::thread::scope(|s| {
        let handles: Vec<_> = cmds
            .into_iter()
            .map(|mut cmd| {
                let barrier = barrier.clone();
                s.spawn(move || {
                    barrier.wait();
                    run_with_timeout(&mut cmd, T, "hoardcc gcc")
                })
            })
            .collect();
        while !handles.iter().all(|h| h.is_finished()) {
            poll();
            std::thread::sleep(Duration::from_millis(50));
        }
        handles
            .into_iter()
            .map(|h| h.join().expect("wrapper thread"))
            .collect()
    })
}

/// The most any host showed at once while jobs ran.
#[derive(Debug, Default)]
struct Peak {
    connections: u32,
    busy_lanes: u32,
    running: u32,
}

impl Peak {
    fn sample(&mut self, mux: &Mux) {
        if let Some(st) = mux.status() {
            for h in &st.hosts {
                self.connections = self.connections.max(h.connections);
                self.busy_lanes = self.busy_lanes.max(h.busy_lanes);
                self.running = self.running.max(h.running);
            }
        }
    }
}

/// 24 concurrent slow jobs to `@hoardtest/24` on an sshd with the default MaxSessions
/// (10), the server admitting 24. With `channels_per_connection` (if given) the mux
/// opens lanes until sshd refuses a session, then more connections. Returns the new
/// ssh connections and lanes counted in sshd's log, the peak status and the logs.
fn run_24(channels_per_connection: Option<u32>) -> Run24 {
    let slow = slow_gcc_dir("3");
    let sshd = Sshd::start(SshdOptions {
        max_sessions: Some(10),
        server_toml: Some("[server]\nmax_jobs = 24\n".into()),
        server_env: slow_path_env(&slow),
        ..SshdOptions::default()
    });
    if let Some(n) = channels_per_connection {
        write_client_config(&sshd, &format!("[mux]\nchannels_per_connection = {n}\n"));
    }
    let mux = Mux::new(&sshd);
    let work = Work::new(24);
    let mark = sshd.log().len();
    let cmds = (0..24)
        .map(|i| compile(&sshd, &work, "@hoardtest/24", i))
        .collect();
    let mut peak = Peak::default();
    let start = Instant::now();
    let outs = run_together(cmds, || peak.sample(&mux));
    let took = start.elapsed();
    for (i, out) in outs.iter().enumerate() {
        ok_quiet(out, &format!("job {i}"), &mux);
    }
    work.assert_all_remote(24);
    let st = mux.status().expect("the mux is running");
    let h = &st.hosts[0];
    assert_eq!((h.jobs_ok, h.jobs_failed), (24, 0), "{h:?}");
    assert_eq!(h.wire.as_deref(), Some("native"), "{h:?}");
    let accepted = count_since(&sshd, mark, ACCEPTED);
    let lanes = count_since(&sshd, mark, SUBSYSTEM);
    eprintln!(
        "24 jobs, channels_per_connection {channels_per_connection:?}: {took:?}; \
         {accepted} connection(s), {lanes} lane(s); peak {peak:?}; final {h:?}"
    );
    // Every job sleeps 3 s on the server: run one after another they would take 72 s.
    assert!(
        took < Duration::from_secs(30),
        "24 jobs took {took:?}: they did not overlap; peak {peak:?}\n{}",
        mux.log()
    );
    let refused = count_since(&sshd, mark, REFUSED);
    let log = format!("{}\n--- sshd ---\n{}", mux.log(), sshd.log());
    Run24 {
        accepted,
        lanes,
        refused,
        peak,
        log,
    }
}

/// What [`run_24`] saw.
struct Run24 {
    /// ssh connections sshd accepted.
    accepted: usize,
    /// Subsystem sessions sshd started (lanes).
    lanes: usize,
    /// Sessions sshd refused for MaxSessions.
    refused: usize,
    /// Peak status while the jobs ran.
    peak: Peak,
    /// The mux's log, then sshd's.
    log: String,
}

/// `channels_per_connection = 16` > MaxSessions 10: sshd refuses the 11th session on a
/// connection, and the mux carries on with more connections; all 24 jobs run remotely
/// and at once.
#[test]
fn max_sessions_refusal_opens_another_connection() {
    let r = run_24(Some(16));
    let log = &r.log;
    // 24 lanes at 10 per connection: 10 + 10 + 4.
    assert_eq!(r.accepted, 3, "connections; logs:\n{log}");
    assert_eq!(r.lanes, 24, "lanes; logs:\n{log}");
    assert!(r.peak.connections >= 2, "{:?}", r.peak);
    assert!(
        r.peak.busy_lanes > 10,
        "more jobs at once than one connection holds: {:?}",
        r.peak
    );
    // The refusal path was taken: sshd refused sessions and the mux noticed.
    assert!(r.refused > 0, "no session refused; logs:\n{log}");
    assert!(log.contains("MaxSessions reached"), "logs:\n{log}");
}

/// The default 8 channels per connection stays under MaxSessions 10: /24 is three
/// connections of 8 lanes and no session is refused.
#[test]
fn max_sessions_default_channels_never_refused() {
    let r = run_24(None);
    let log = &r.log;
    assert_eq!(r.accepted, 3, "connections; logs:\n{log}");
    assert_eq!(r.lanes, 24, "lanes; logs:\n{log}");
    assert!(r.peak.busy_lanes > 10, "{:?}", r.peak);
    assert_eq!(r.refused, 0, "logs:\n{log}");
    assert!(!log.contains("MaxSessions reached"), "logs:\n{log}");
}

/// 16 wrappers start at the same moment with no mux running: one mux is spawned (the
/// spawn lock), every job goes through it, and it stays the only one.
#[test]
fn concurrent_auto_spawn_starts_one_mux() {
    let sshd = Sshd::start(SshdOptions::default());
    let mux = Mux::new(&sshd);
    let work = Work::new(17);
    assert!(mux.pids().is_empty() && !mux.socket().exists());
    let mark = sshd.log().len();
    let mut seen = Vec::new();
    let cmds = (0..16)
        .map(|i| compile(&sshd, &work, "@hoardtest/4", i))
        .collect();
    let outs = run_together(cmds, || {
        for p in mux.pids() {
            if !seen.contains(&p) {
                seen.push(p);
            }
        }
    });
    for (i, out) in outs.iter().enumerate() {
        ok_quiet(out, &format!("job {i}"), &mux);
    }
    let pid = mux.only_pid();
    let st = mux.status().expect("the mux is running");
    assert_eq!(st.pid as i32, pid);
    // Every job went through this one mux (a wrapper that could not reach it would have
    // connected directly, and a second mux would have counted its own jobs).
    assert_eq!(st.hosts[0].jobs_ok, 16, "{st:?}");
    assert_eq!(st.hosts[0].wire.as_deref(), Some("native"), "{st:?}");
    assert_eq!(
        mux.log().matches("mux listening").count(),
        1,
        "muxes that bound the socket:\n{}",
        mux.log()
    );
    assert_eq!(count_since(&sshd, mark, ACCEPTED), 1, "{}", sshd.log());
    // The pids seen while it started: the spawned `hoardcc mux` (which forks and exits)
    // and its daemon child; never a second daemon.
    assert!(seen.len() <= 2, "mux processes seen: {seen:?}");
    // Later wrappers find the same mux.
    let out = run_with_timeout(
        &mut compile(&sshd, &work, "@hoardtest/4", 16),
        T,
        "one more",
    );
    ok_quiet(&out, "job 16", &mux);
    let st = mux.status().expect("still running");
    assert_eq!((st.pid as i32, st.hosts[0].jobs_ok), (pid, 17), "{st:?}");
    work.assert_all_remote(17);
}

/// The server processes (`hoardcc serve`, one per lane) of this fixture.
fn server_pids(sshd: &Sshd) -> Vec<i32> {
    let want = sshd.server_hoardcc();
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let argv: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if argv.len() >= 2
            && argv[0] == want.as_os_str().as_encoded_bytes()
            && argv[1] == b"serve"
            && !is_zombie(pid)
        {
            pids.push(pid);
        }
    }
    pids
}

/// With HOARDCC_IDLE_TIMEOUT=2 the mux exits by itself after a compile, removes its
/// socket and closes its lanes; the next compile starts a new mux.
#[test]
fn idle_mux_exits_and_a_new_one_starts() {
    let sshd = Sshd::start(SshdOptions::default());
    let mux = Mux::new(&sshd);
    let work = Work::new(2);
    let idle = |i| {
        let mut c = compile(&sshd, &work, "@hoardtest/2", i);
        c.env("HOARDCC_IDLE_TIMEOUT", "2");
        c
    };
    let out = run_with_timeout(&mut idle(0), T, "first compile");
    ok_quiet(&out, "first compile", &mux);
    let first = mux.only_pid();
    assert!(mux.socket().exists());
    assert!(!server_pids(&sshd).is_empty(), "lanes are open");
    let exited = Instant::now();
    wait_until(Duration::from_secs(15), "the idle mux to exit", || {
        mux.pids().is_empty() && !mux.socket().exists()
    });
    let after = exited.elapsed();
    eprintln!("idle mux exited {after:?} after its job");
    assert!(
        mux.log().contains("idle for 2s: exiting"),
        "mux log:\n{}",
        mux.log()
    );
    // Its ssh connection closed, so sshd ended every lane's server process.
    wait_until(Duration::from_secs(10), "the lanes' servers to end", || {
        server_pids(&sshd).is_empty()
    });
    let out = run_with_timeout(&mut idle(1), T, "second compile");
    ok_quiet(&out, "second compile", &mux);
    let second = mux.only_pid();
    assert_ne!(first, second, "a new mux serves the second compile");
    work.assert_all_remote(2);
}

/// `hoardcc mux --stop` ends the running mux: the process, its socket and its lanes go.
#[test]
fn mux_stop_ends_it() {
    let sshd = Sshd::start(SshdOptions::default());
    let mux = Mux::new(&sshd);
    let work = Work::new(1);
    let out = run_with_timeout(&mut compile(&sshd, &work, "@hoardtest/2", 0), T, "compile");
    ok_quiet(&out, "compile", &mux);
    work.assert_all_remote(1);
    let pid = mux.only_pid();
    let stop = run_with_timeout(&mut mux.hoardcc(&["mux", "--stop"]), T, "mux --stop");
    let err = String::from_utf8_lossy(&stop.stderr);
    assert!(stop.status.success() && err.contains("stopped"), "{stop:?}");
    // `--stop` returns once the daemon has exited.
    assert!(mux.pids().is_empty(), "mux still running after --stop");
    assert!(!mux.socket().exists());
    assert!(mux.log().contains("stop requested"), "{}", mux.log());
    wait_until(Duration::from_secs(10), "the lanes' servers to end", || {
        server_pids(&sshd).is_empty()
    });
    assert!(mux.status().is_none(), "status after stop");
    // Stopping again finds nothing to stop and says so.
    let again = run_with_timeout(&mut mux.hoardcc(&["mux", "--stop"]), T, "mux --stop");
    assert!(again.status.success(), "{again:?}");
    assert!(String::from_utf8_lossy(&again.stderr).contains("not running"));
    eprintln!("stopped mux {pid}");
}

/// With `HOARDCC_LOG` unset, the mux logs at its `info` default into `mux.log` (it used
/// to hold warnings only), while the wrapper that spawned it stays quiet at `warn`.
#[test]
fn mux_log_has_info_lines_by_default() {
    let sshd = Sshd::start(SshdOptions::default());
    let mux = Mux::new(&sshd);
    let work = Work::new(1);
    let mut cmd = compile(&sshd, &work, "@hoardtest/2", 0);
    cmd.env_remove("HOARDCC_LOG");
    let out = run_with_timeout(&mut cmd, T, "compile");
    ok_quiet(&out, "compile", &mux);
    work.assert_all_remote(1);
    let log = mux.log();
    assert!(
        log.contains("INFO") && log.contains("mux listening"),
        "{log}"
    );
    // Nothing at debug: the default is `info`, not everything.
    assert!(!log.contains("DEBUG"), "{log}");
}

/// A socket file left by a mux that died (nothing listens on it) is replaced by the first
/// wrapper's new mux.
#[test]
fn stale_socket_is_replaced() {
    let sshd = Sshd::start(SshdOptions::default());
    let mux = Mux::new(&sshd);
    let dir = mux.socket().parent().unwrap().to_path_buf();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    drop(std::os::unix::net::UnixListener::bind(mux.socket()).unwrap());
    assert!(mux.socket().exists(), "the stale socket file stays behind");
    let work = Work::new(1);
    let out = run_with_timeout(&mut compile(&sshd, &work, "@hoardtest/2", 0), T, "compile");
    ok_quiet(&out, "compile over a stale socket", &mux);
    work.assert_all_remote(1);
    mux.only_pid();
}

/// A running mux of another version (here a fake that only knows how to say so and how
/// to stop) is stopped by the first wrapper, which starts its own and compiles remotely.
#[test]
fn mux_of_another_version_is_replaced() {
    use hoardcc::proto::frame::blocking;
    use hoardcc::proto::msg::{MuxReply, MuxRequest};

    let sshd = Sshd::start(SshdOptions::default());
    let mux = Mux::new(&sshd);
    let dir = mux.socket().parent().unwrap().to_path_buf();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(mux.socket()).unwrap();
    let socket = mux.socket();
    let old = std::thread::spawn(move || -> Vec<String> {
        let mut seen = Vec::new();
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            stream.set_read_timeout(Some(T)).unwrap();
            while let Ok(Some(req)) = blocking::read_message::<_, MuxRequest>(&mut stream) {
                match req {
                    MuxRequest::Reserve { client_version, .. } => {
                        seen.push(format!("reserve from {client_version}"));
                        let reply = MuxReply::WrongVersion {
                            mux_version: "0.0.1-old".into(),
                        };
                        blocking::write_message(&mut stream, &reply).unwrap();
                    }
                    MuxRequest::Stop => {
                        seen.push("stop".into());
                        std::fs::remove_file(&socket).unwrap();
                        blocking::write_message(&mut stream, &MuxReply::Stopping).unwrap();
                        return seen;
                    }
                    other => panic!("the old mux got {other:?}"),
                }
            }
        }
        seen
    });
    let work = Work::new(1);
    let out = run_with_timeout(&mut compile(&sshd, &work, "@hoardtest/2", 0), T, "compile");
    ok_quiet(&out, "compile against an old mux", &mux);
    let seen = old.join().unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[0].starts_with("reserve from ") && !seen[0].ends_with("0.0.1-old"));
    assert_eq!(seen[1], "stop");
    work.assert_all_remote(1);
    let status = mux.status().expect("the new mux runs");
    assert_eq!(status.pid as i32, mux.only_pid());
    assert_ne!(status.version, "0.0.1-old");
}

/// Link target of `/proc/<pid>/fd/<fd>` for every open descriptor of `pid`.
fn fd_targets(pid: i32) -> Vec<(i32, String)> {
    let mut fds: Vec<(i32, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some((fd, target.display().to_string()))
        })
        .collect();
    fds.sort();
    fds
}

/// `make -j4` over 8 objects with `CC="hoardcc gcc"`, stdout and stderr piped: the
/// first compile spawns the mux, which outlives make (HOARDCC_IDLE_TIMEOUT=600). make
/// must return and both pipes reach EOF at once; a daemon that kept make's pipes (its
/// stdout, or the jobserver) would hold them open until it exits. Each recipe is `+`
/// (make hands it the jobserver descriptors) and duplicates make's stdout onto fd 7, so
/// the wrapper, and the `hoardcc mux` it starts, inherit both.
#[test]
fn make_returns_while_the_mux_lives_on() {
    let sshd = Sshd::start(SshdOptions::default());
    let mux = Mux::new(&sshd);
    let work = Work::new(8);
    std::fs::write(
        work.path().join("Makefile"),
        "OBJS = s0.o s1.o s2.o s3.o s4.o s5.o s6.o s7.o\n\
         all: $(OBJS)\n\
         %.o: %.c\n\
         \t+$(CC) -O2 -c $< -o $@ 7>&1\n",
    )
    .unwrap();
    let mut cmd = Command::new("make");
    sshd.apply_env(&mut cmd);
    cmd.current_dir(work.path())
        .arg("-j4")
        .arg(format!("CC={} gcc", hoardcc_bin().display()))
        .env("HOARDCC_HOSTS", "@hoardtest/4")
        .env("HOARDCC_JOBLOG", work.joblog())
        .env("HOARDCC_FALLBACK", "0")
        .env("HOARDCC_IDLE_TIMEOUT", "600")
        .env("HOARDCC_LOG", MUX_LOG)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn make");
    let make_pipes: Vec<String> = [
        child.stdout.as_ref().map(std::os::fd::AsRawFd::as_raw_fd),
        child.stderr.as_ref().map(std::os::fd::AsRawFd::as_raw_fd),
    ]
    .into_iter()
    .flatten()
    .map(|fd| {
        std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .unwrap()
            .display()
            .to_string()
    })
    .collect();
    // Each pipe is read to EOF on its own thread, which reports when it got there.
    let (tx, rx) = std::sync::mpsc::channel::<(&str, Vec<u8>, Duration)>();
    for (name, pipe) in [
        (
            "stdout",
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        ),
        ("stderr", Box::new(child.stderr.take().unwrap())),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut pipe = pipe;
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            let _ = tx.send((name, buf, start.elapsed()));
        });
    }
    drop(tx);
    let deadline = start + Duration::from_secs(60);
    let mut eof = Vec::new();
    while eof.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(got) => eof.push(got),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "make's pipes did not reach EOF within 60 s (EOF so far: {:?}); \
                     make exited: {:?}; mux fds: {:?}\nmux log:\n{}",
                    eof.iter().map(|e| e.0).collect::<Vec<_>>(),
                    child.try_wait(),
                    mux.pids()
                        .iter()
                        .map(|p| fd_targets(*p))
                        .collect::<Vec<_>>(),
                    mux.log()
                );
            }
        }
    }
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "make did not exit within 60 s");
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = start.elapsed();
    let text = |n: &str| {
        eof.iter()
            .find(|e| e.0 == n)
            .map(|e| String::from_utf8_lossy(&e.1).into_owned())
            .unwrap_or_default()
    };
    assert!(
        status.success(),
        "make: {status:?}\nstdout:\n{}\nstderr:\n{}\nmux log:\n{}",
        text("stdout"),
        text("stderr"),
        mux.log()
    );
    assert!(
        text("stderr").is_empty(),
        "make stderr:\n{}",
        text("stderr")
    );
    eprintln!(
        "make -j4: exited after {took:?}; EOF at {:?}",
        eof.iter().map(|e| (e.0, e.2)).collect::<Vec<_>>()
    );
    work.assert_all_remote(8);
    // The mux outlived make, so the EOF above was not just the mux exiting.
    let pid = mux.only_pid();
    let fds = fd_targets(pid);
    let log_path = sshd
        .client_home()
        .join(".local/state/hoardcc/mux.log")
        .display()
        .to_string();
    for (fd, target) in &fds {
        assert!(
            !make_pipes.contains(target),
            "the mux holds make's pipe {target} as fd {fd}: {fds:?}"
        );
        let allowed = target == "/dev/null"
            || *target == log_path
            || target.starts_with("socket:[")
            || target.starts_with("anon_inode:");
        assert!(allowed, "mux fd {fd} -> {target} was inherited: {fds:?}");
    }
    assert_eq!(
        fds.iter().find(|f| f.0 == 0).map(|f| f.1.as_str()),
        Some("/dev/null"),
        "{fds:?}"
    );
    for out in [1, 2] {
        assert_eq!(
            fds.iter().find(|f| f.0 == out).map(|f| f.1.as_str()),
            Some(log_path.as_str()),
            "{fds:?}"
        );
    }
    eprintln!("mux {pid} fds: {fds:?}");
}

/// Where the mux logs each `Busy` answer it reschedules (debug, `mux::job`).
const BUSY_LINE: &str = "busy: rescheduling";

/// The server admits one compile at a time (`max_jobs = 1`) while the list says `/4`,
/// and another client holds that one slot when the jobs start: the server answers
/// `Busy`, which the mux takes as "try again shortly" (no failure, no backoff). All 8
/// concurrent jobs run remotely once the slot is free. (Nothing asks the mux for its
/// status while the jobs run: a status request also re-runs the scheduler's queue.)
#[test]
fn busy_server_reschedules_without_penalty() {
    let sshd = Sshd::start(SshdOptions {
        server_toml: Some("[server]\nmax_jobs = 1\n".into()),
        ..SshdOptions::default()
    });
    let mux = Mux::new(&sshd);
    let work = Work::new(8);
    // Another client's compile, as far as the server's admission can tell (a flock on
    // its slot file, the same as a `hoardcc serve` holding it).
    let mut other = Some(hold_server_slot(&sshd));
    let mut released_at = None;
    let start = Instant::now();
    let cmds = (0..8)
        .map(|i| compile(&sshd, &work, "@hoardtest/4", i))
        .collect();
    let outs = run_together(cmds, || {
        if other.is_some() && mux.log().contains(BUSY_LINE) {
            other = None;
            released_at = Some(start.elapsed());
        }
    });
    for (i, out) in outs.iter().enumerate() {
        ok_quiet(out, &format!("job {i}"), &mux);
    }
    let released_at = released_at.expect("the server never answered Busy");
    work.assert_all_remote(8);
    let st = mux.status().expect("the mux is running");
    let h = &st.hosts[0];
    eprintln!(
        "busy: slot released at {released_at:?}, done at {:?}; {h:?}",
        start.elapsed()
    );
    assert!(h.jobs_busy > 0, "{h:?}");
    assert_eq!((h.jobs_ok, h.jobs_failed), (8, 0), "{h:?}");
    assert_eq!(
        h.backoff_remaining_ms, None,
        "Busy must not back the host off: {h:?}"
    );
    assert_eq!(h.server_slots, Some(1), "{h:?}");
}

/// Takes the only compile slot of `sshd`'s server (`max_jobs = 1`) as another client
/// would; the server answers `Busy` while it is held.
fn hold_server_slot(sshd: &Sshd) -> hoardcc::subsystem::slots::ServerSlot {
    hoardcc::subsystem::slots::try_acquire(&sshd.slot_dir(), 1)
        .expect("slot dir")
        .expect("the only slot is free")
}

/// A server that stays busy: each job gives up after the mux's busy retries (exit 114,
/// "busy", no fallback) in bounded time, however many jobs wait. Three jobs share the
/// one server slot, each Busy pauses the host 0.5 s and a job gives up after 9 answers:
/// about 14 s for all three.
#[test]
fn busy_forever_gives_up_in_bounded_time() {
    let sshd = Sshd::start(SshdOptions {
        server_toml: Some("[server]\nmax_jobs = 1\n".into()),
        ..SshdOptions::default()
    });
    let mux = Mux::new(&sshd);
    let work = Work::new(3);
    let _other = hold_server_slot(&sshd);
    let start = Instant::now();
    let mut kids: Vec<_> = (0..3)
        .map(|i| {
            compile(&sshd, &work, "@hoardtest/4", i)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn hoardcc")
        })
        .collect();
    let mut done: Vec<Option<(std::process::ExitStatus, Duration)>> = vec![None; kids.len()];
    let deadline = Duration::from_secs(25);
    // Only the children are polled: no status request (it would re-run the queue).
    while done.iter().any(Option::is_none) && start.elapsed() < deadline {
        for (k, d) in kids.iter_mut().zip(done.iter_mut()) {
            if d.is_none() {
                if let Some(status) = k.try_wait().unwrap() {
                    *d = Some((status, start.elapsed()));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for k in &mut kids {
        let _ = k.kill();
    }
    let stderrs: Vec<String> = kids
        .into_iter()
        .map(|k| {
            let out = k.wait_with_output().unwrap();
            String::from_utf8_lossy(&out.stderr).into_owned()
        })
        .collect();
    let busy_answers = mux.log().matches(BUSY_LINE).count();
    eprintln!("busy forever: {done:?}; {busy_answers} busy answers rescheduled");
    assert!(
        done.iter().all(Option::is_some),
        "jobs still waiting after {deadline:?}: {done:?} ({busy_answers} Busy answers \
         rescheduled; the last was at the end of this mux log):\n{}",
        mux.log()
            .lines()
            .filter(|l| !l.contains(" ssh"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    for ((status, _), err) in done.iter().flatten().zip(&stderrs) {
        assert_eq!(status.code(), Some(114), "{err}");
        assert!(err.contains("busy"), "{err}");
    }
    assert!(work.joblog_lines().iter().all(|l| !l.starts_with("remote")));
}

/// `@hoardtest/1 localhost/1`: local slots are part of the mux's pool. The one remote
/// slot is held by a slow job (the server's gcc sleeps 2 s), so the other jobs take the
/// local slot in turn. The job log has both kinds and every object matches a plain
/// local build.
#[test]
fn local_slots_share_the_pool() {
    let slow = slow_gcc_dir("2");
    let sshd = Sshd::start(SshdOptions {
        server_env: slow_path_env(&slow),
        ..SshdOptions::default()
    });
    let mux = Mux::new(&sshd);
    let work = Work::new(4);
    let expected: Vec<Vec<u8>> = (0..4)
        .map(|i| {
            let obj = format!("s{i}.o");
            let out = run_with_timeout(
                Command::new("gcc").current_dir(work.path()).args([
                    "-O2",
                    "-c",
                    &format!("s{i}.c"),
                    "-o",
                    &obj,
                ]),
                T,
                "local gcc",
            );
            assert!(out.status.success(), "{out:?}");
            let bytes = std::fs::read(work.path().join(&obj)).unwrap();
            std::fs::remove_file(work.path().join(&obj)).unwrap();
            bytes
        })
        .collect();
    let cmds = (0..4)
        .map(|i| compile(&sshd, &work, "@hoardtest/1 localhost/1", i))
        .collect();
    let outs = run_together(cmds, || {});
    for (i, out) in outs.iter().enumerate() {
        ok_quiet(out, &format!("job {i}"), &mux);
    }
    let lines = work.joblog_lines();
    let remote = lines.iter().filter(|l| l.starts_with("remote\t")).count();
    let local = lines.iter().filter(|l| l.starts_with("local\t")).count();
    eprintln!("local slots: {remote} remote, {local} local: {lines:#?}");
    assert_eq!((lines.len(), remote + local), (4, 4), "{lines:#?}");
    assert!(remote >= 1 && local >= 1, "{lines:#?}");
    for l in lines.iter().filter(|l| l.starts_with("local\t")) {
        assert!(l.contains("remote slot is busy"), "{l}");
    }
    for (i, want) in expected.iter().enumerate() {
        let got = std::fs::read(work.path().join(format!("s{i}.o"))).unwrap();
        assert!(&got == want, "s{i}.o differs from the local build");
    }
    let st = mux.status().expect("the mux is running");
    assert_eq!(st.hosts.len(), 1, "localhost is no remote host: {st:?}");
    assert_eq!(st.hosts[0].jobs_ok as usize, remote, "{st:?}");
}

/// A compile longer than the client's io timeout stays alive on the server's
/// heartbeats: DISTCC_IO_TIMEOUT=2, the server's gcc takes 5 s and heartbeats every
/// second. The job runs remotely, on its first lane, with no failure counted.
#[test]
fn heartbeats_keep_a_long_compile_alive() {
    let slow = slow_gcc_dir("5");
    let sshd = Sshd::start(SshdOptions {
        server_toml: Some("[server]\nheartbeat_secs = 1\n".into()),
        server_env: slow_path_env(&slow),
        ..SshdOptions::default()
    });
    let mux = Mux::new(&sshd);
    let work = Work::new(1);
    let mark = sshd.log().len();
    let mut cmd = compile(&sshd, &work, "@hoardtest/1", 0);
    cmd.env("DISTCC_IO_TIMEOUT", "2");
    let start = Instant::now();
    let out = run_with_timeout(&mut cmd, T, "long compile");
    let took = start.elapsed();
    ok_quiet(&out, "long compile", &mux);
    work.assert_all_remote(1);
    assert!(
        took >= Duration::from_secs(5),
        "the server's gcc sleeps 5 s: {took:?}"
    );
    let st = mux.status().expect("the mux is running");
    let h = &st.hosts[0];
    assert_eq!((h.jobs_ok, h.jobs_failed), (1, 0), "{h:?}");
    assert_eq!(
        count_since(&sshd, mark, SUBSYSTEM),
        1,
        "one lane, not retried"
    );
}

/// Servers close lanes that idle past their `idle_timeout_secs`: the mux notices (its
/// idle-lane watch sees EOF), keeps running, and the next job gets a fresh lane. No job
/// fails and none falls back.
#[test]
fn servers_closing_idle_lanes_cost_no_job() {
    let sshd = Sshd::start(SshdOptions {
        server_toml: Some("[server]\nidle_timeout_secs = 1\n".into()),
        ..SshdOptions::default()
    });
    let mux = Mux::new(&sshd);
    let work = Work::new(3);
    let out = run_with_timeout(&mut compile(&sshd, &work, "@hoardtest/2", 0), T, "job 0");
    ok_quiet(&out, "job 0", &mux);
    let pid = mux.only_pid();
    for i in 1..3 {
        // Every lane's server closes its idle lane by itself; the mux stays.
        wait_until(
            Duration::from_secs(15),
            "the servers to close idle lanes",
            || server_pids(&sshd).is_empty(),
        );
        assert_eq!(mux.only_pid(), pid);
        let out = run_with_timeout(&mut compile(&sshd, &work, "@hoardtest/2", i), T, "job");
        ok_quiet(&out, &format!("job {i}"), &mux);
    }
    let st = mux.status().expect("still running");
    assert_eq!(
        (st.hosts[0].jobs_ok, st.hosts[0].jobs_failed),
        (3, 0),
        "{st:?}"
    );
    work.assert_all_remote(3);
}
