//! Faults in the middle of jobs through the mux: the server killed, sshd restarted, the mux
//! killed, the connection cut or frozen (mid-job and while idle) by the proxy of
//! [`crate::support::Proxy`]; also a build over a slow link, and a compile longer than the io
//! timeout kept alive by heartbeats (and timing out without them). Builds complete and
//! objects are correct.
//!
//! Each fault test builds [`Project::c_multi`] with one `hoardcc gcc -c` per source, all at
//! once, against a server whose `gcc` ([`SlowGcc`]) sleeps before it compiles, so every job
//! is in flight on the server when the fault lands, without burning CPU. It asserts that
//! every wrapper exits 0 with at most one warning line, that every object equals a local
//! gcc build byte for byte, and that nothing but the objects was added to the project
//! directory. The first tests check the proxy itself against a tiny echo server.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use hoardcc::mux::status::{HostReport, StatusReport};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::support::{
    hoardcc_bin, processes, removed_env_keys, run_with_timeout, wait_until, Project, Proxy, Sshd,
    SshdOptions, ALIAS,
};

/// Bound on any one command (a wrapper, a local gcc, `hoardcc status`).
pub(crate) const T: Duration = Duration::from_secs(60);
/// How long the server's gcc sleeps until a test releases it: far longer than any fault
/// takes to inject, so every job is still compiling when it lands.
const HELD: f64 = 20.0;

// ---------------------------------------------------------------------------------------
// The proxy itself.

/// A loopback echo server (one thread per connection, echoing until EOF). Drop stops it.
pub(crate) struct Echo {
    pub(crate) addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Echo {
    pub(crate) fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let accept = std::thread::spawn(move || {
            for c in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut c) = c else { continue };
                std::thread::spawn(move || {
                    let mut w = c.try_clone().unwrap();
                    let _ = std::io::copy(&mut c, &mut w);
                    let _ = w.shutdown(Shutdown::Write);
                });
            }
        });
        Echo {
            addr,
            stop,
            accept: Some(accept),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

pub(crate) fn connect(proxy: &Proxy) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Sends `data` and reads the same number of bytes back.
pub(crate) fn echo_round_trip(s: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    let mut w = s.try_clone().unwrap();
    let owned = data.to_vec();
    let writer = std::thread::spawn(move || w.write_all(&owned).unwrap());
    let mut back = vec![0u8; data.len()];
    s.read_exact(&mut back).unwrap();
    writer.join().unwrap();
    back
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

#[test]
fn proxy_forwards_and_cut_ends_the_open_connections_only() {
    let echo = Echo::start();
    let proxy = Proxy::start(echo.addr);
    let mut a = connect(&proxy);
    assert_eq!(echo_round_trip(&mut a, b"ping"), b"ping");
    assert_eq!(proxy.connections_accepted(), 1);
    // A reader blocked on the connection sees it end when the proxy cuts it.
    let (tx, rx) = mpsc::channel();
    let mut reader = a.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut b = [0u8; 16];
        let _ = tx.send(reader.read(&mut b));
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "the reader should still be blocked"
    );
    proxy.cut();
    match rx
        .recv_timeout(Duration::from_secs(5))
        .expect("reader woke")
    {
        Ok(n) => assert_eq!(n, 0, "EOF expected after cut"),
        Err(e) => assert!(!is_timeout(&e), "cut must end the read, got {e}"),
    }
    // New connections still go through.
    let mut b = connect(&proxy);
    assert_eq!(echo_round_trip(&mut b, b"again"), b"again");
    assert_eq!(proxy.connections_accepted(), 2);
    assert_eq!(proxy.connections_open(), 1);
}

#[test]
fn proxy_freeze_holds_bytes_without_closing_until_thaw() {
    let echo = Echo::start();
    let proxy = Proxy::start(echo.addr);
    let mut a = connect(&proxy);
    assert_eq!(echo_round_trip(&mut a, b"before"), b"before");
    proxy.freeze();
    a.write_all(b"held").unwrap();
    // A connection made while frozen is accepted but moves nothing either.
    let mut b = connect(&proxy);
    b.write_all(b"new").unwrap();
    for s in [&mut a, &mut b] {
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 8];
        match s.read(&mut buf) {
            Err(e) if is_timeout(&e) => {}
            other => panic!("a frozen connection delivered or ended: {other:?}"),
        }
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    proxy.thaw();
    let mut buf = [0u8; 4];
    a.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"held");
    let mut buf = [0u8; 3];
    b.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"new");
    assert_eq!(proxy.connections_accepted(), 2);
}

#[test]
fn proxy_delay_and_bandwidth_slow_the_traffic() {
    let echo = Echo::start();
    let proxy = Proxy::start(echo.addr);
    let mut a = connect(&proxy);
    let fast = Instant::now();
    echo_round_trip(&mut a, b"warm");
    let fast = fast.elapsed();
    let delay = Duration::from_millis(100);
    proxy.set_delay(delay);
    let start = Instant::now();
    assert_eq!(echo_round_trip(&mut a, b"slow"), b"slow");
    let rtt = start.elapsed();
    assert!(
        rtt >= 2 * delay && rtt < 2 * delay + Duration::from_secs(2),
        "round trip {rtt:?} with {delay:?} each way (unproxied {fast:?})"
    );
    proxy.set_delay(Duration::ZERO);
    // 256 KiB each way at 512 KiB/s: at least ~0.4 s per direction even with whole chunks.
    let data: Vec<u8> = (0..256 << 10).map(|i| (i % 251) as u8).collect();
    let start = Instant::now();
    assert_eq!(echo_round_trip(&mut a, &data), data);
    let uncapped = start.elapsed();
    proxy.set_bandwidth(Some(512 << 10));
    let start = Instant::now();
    assert_eq!(echo_round_trip(&mut a, &data), data);
    let capped = start.elapsed();
    assert!(
        capped >= Duration::from_millis(350) && capped > uncapped,
        "capped {capped:?}, uncapped {uncapped:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Helpers for the fault tests.

/// A `gcc` for the server's PATH: sleeps for the seconds written in its `bin/delay` file
/// (beside it, where the server's compiler sandbox lets it read), then
/// runs the real gcc. Also holds a world-writable scratch dir for the server's job
/// directories, so jobs orphaned by a killed server are cleaned up with this value.
struct SlowGcc {
    dir: TempDir,
}

impl SlowGcc {
    fn new(secs: f64) -> SlowGcc {
        let dir = tempfile::Builder::new()
            .prefix("hoardcc-slowgcc-")
            .tempdir()
            .unwrap();
        let chmod = |p: &Path, mode| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        chmod(dir.path(), 0o755);
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        chmod(&bin, 0o755);
        let script = format!(
            // Identity probes (`-dumpfullversion`, `-v` …) are answered at once.
            "#!/bin/sh\ncase \"$1\" in -dump*|-v|-print-*) exec /usr/bin/gcc \"$@\";; esac\n\
             sleep \"$(cat {})\"\nexec /usr/bin/gcc \"$@\"\n",
            dir.path().join("bin/delay").display()
        );
        std::fs::write(bin.join("gcc"), script).unwrap();
        chmod(&bin.join("gcc"), 0o755);
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        chmod(&work, 0o1777);
        let slow = SlowGcc { dir };
        slow.set(secs);
        slow
    }

    /// How long compiles that start from now on sleep first.
    fn set(&self, secs: f64) {
        let tmp = self.dir.path().join("bin/delay.tmp");
        std::fs::write(&tmp, format!("{secs}\n")).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::rename(&tmp, self.dir.path().join("bin/delay")).unwrap();
    }

    /// A private sshd whose `hoardcc serve` finds this gcc first, may run 8 jobs at once,
    /// and keeps its job directories here; `server_extra` is appended to its `[server]`.
    fn sshd(&self, server_extra: &str) -> Sshd {
        Sshd::start(SshdOptions {
            server_env: vec![(
                "PATH".into(),
                format!("{}:/usr/bin:/bin", self.dir.path().join("bin").display()),
            )],
            server_toml: Some(format!(
                "[server]\nmax_jobs = 8\ntmpdir = \"{}\"\n{server_extra}",
                self.dir.path().join("work").display()
            )),
            ..SshdOptions::default()
        })
    }
}

/// The client side of a fixture, owned (so the build can run on other threads while the
/// test restarts sshd): the isolating environment plus per-test variables. Drop stops the
/// fixture's mux.
pub(crate) struct Client {
    pub(crate) env: Vec<(String, String)>,
}

impl Client {
    /// Backoff is off: these tests check that a host works again right after a fault; the
    /// scheduler's own tests cover backoff.
    pub(crate) fn new(sshd: &Sshd) -> Client {
        let mut env = sshd.env();
        env.push(("HOARDCC_IDLE_TIMEOUT".into(), "60".into()));
        env.push(("DISTCC_BACKOFF_PERIOD".into(), "0".into()));
        Client { env }
    }

    pub(crate) fn with(mut self, key: &str, value: &str) -> Client {
        self.env.push((key.into(), value.into()));
        self
    }

    pub(crate) fn command(&self, dir: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(hoardcc_bin());
        for k in removed_env_keys() {
            cmd.env_remove(k);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(dir)
            .args(args);
        cmd
    }

    /// The mux's status, or `None` when no mux is running.
    pub(crate) fn status(&self) -> Option<StatusReport> {
        let out = run_with_timeout(
            &mut self.command(Path::new("/"), &["status", "--json"]),
            T,
            "hoardcc status --json",
        );
        assert!(out.status.success(), "status: {out:?}");
        StatusReport::from_json(String::from_utf8_lossy(&out.stdout).trim()).ok()
    }

    /// `hoardcc mux --stop` (which waits for the mux to exit); how long it took.
    fn stop_mux(&self) -> (Duration, Output) {
        let started = Instant::now();
        let mut cmd = self.command(Path::new("/"), &["mux", "--stop"]);
        let out = run_with_timeout(&mut cmd, T, "hoardcc mux --stop");
        (started.elapsed(), out)
    }

    fn host(&self, key: &str) -> Option<HostReport> {
        self.status()?.hosts.into_iter().find(|h| h.host == key)
    }

    /// `hoardcc gcc -O2 -c SRC -o OBJ` for every source of `p` at once, with `hosts` and a
    /// job log at `log`; the outputs by source.
    pub(crate) fn build(&self, p: &Project, hosts: &str, log: &Path) -> Vec<(String, Output)> {
        std::thread::scope(|s| {
            let handles: Vec<_> = p
                .sources()
                .iter()
                .zip(p.objects())
                .map(|(src, obj)| {
                    let (src, obj) = (src.display().to_string(), obj.display().to_string());
                    s.spawn(move || {
                        let mut cmd =
                            self.command(p.dir(), &["gcc", "-O2", "-c", &src, "-o", &obj]);
                        cmd.env("HOARDCC_HOSTS", hosts).env("HOARDCC_JOBLOG", log);
                        let out = run_with_timeout(&mut cmd, T, &format!("hoardcc gcc {src}"));
                        (src, out)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop_mux();
    }
}

/// A project with its local reference objects (built in place, then moved aside) and the
/// directory listing before any remote build.
pub(crate) struct Reference {
    pub(crate) project: Project,
    local: Vec<Vec<u8>>,
    files: BTreeSet<String>,
}

impl Reference {
    pub(crate) fn new() -> Reference {
        let project = Project::c_multi();
        let mut local = Vec::new();
        for (src, obj) in project.sources().iter().zip(project.objects()) {
            let out = run_with_timeout(
                Command::new("gcc")
                    .current_dir(project.dir())
                    .args(["-O2", "-c"])
                    .arg(src)
                    .arg("-o")
                    .arg(&obj),
                T,
                "local gcc",
            );
            assert!(out.status.success(), "local gcc: {out:?}");
            let path = project.dir().join(&obj);
            local.push(std::fs::read(&path).unwrap());
            std::fs::remove_file(path).unwrap();
        }
        let files = listing(project.dir());
        Reference {
            project,
            local,
            files,
        }
    }

    /// Every wrapper succeeded with at most one warning, every object is identical to the
    /// local one, and the directory holds exactly the sources and the objects. Removes
    /// the objects again for the next build.
    pub(crate) fn check(&self, outs: &[(String, Output)], what: &str) {
        for (src, out) in outs {
            eprintln!(
                "{what}: {src}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        for (src, out) in outs {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "{what}: {src} failed ({}): {err}",
                out.status
            );
            assert!(err.lines().count() <= 1, "{what}: {src}: {err}");
        }
        let dir = self.project.dir();
        for (obj, local) in self.project.objects().iter().zip(&self.local) {
            let got = std::fs::read(dir.join(obj))
                .unwrap_or_else(|e| panic!("{what}: {} missing: {e}", obj.display()));
            assert!(
                &got == local,
                "{what}: {} differs from gcc's",
                obj.display()
            );
        }
        let mut want = self.files.clone();
        want.extend(
            self.project
                .objects()
                .iter()
                .map(|o| o.display().to_string()),
        );
        assert_eq!(
            listing(dir),
            want,
            "{what}: stray files next to the outputs"
        );
        for obj in self.project.objects() {
            std::fs::remove_file(dir.join(obj)).unwrap();
        }
    }
}

fn listing(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// The job log's lines, split into (kind, rest): `remote\tHOST\tSRC\tMS` / `local\t...`.
pub(crate) fn joblog(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    eprintln!("{}:\n{text}", path.display());
    text.lines()
        .map(|l| {
            let (kind, rest) = l.split_once('\t').unwrap_or((l, ""));
            (kind.to_string(), rest.to_string())
        })
        .collect()
}

pub(crate) fn assert_all_remote(log: &Path, n: usize, host: &str) {
    let lines = joblog(log);
    assert_eq!(lines.len(), n, "{lines:#?}");
    for (kind, rest) in &lines {
        assert!(
            kind == "remote" && rest.starts_with(&format!("{host}\t")),
            "not remote on {host}: {kind}\t{rest}"
        );
    }
}

/// This fixture's `hoardcc serve` processes, each with its child processes (a running
/// compile). Other fixtures' servers run the same user but their own copy of the binary.
fn servers(sshd: &Sshd) -> Vec<(i32, Vec<i32>)> {
    let bin = sshd.server_hoardcc().display().to_string();
    let all = processes();
    all.iter()
        .filter(|(_, p)| {
            p.argv.first() == Some(&bin) && p.argv.get(1).map(String::as_str) == Some("serve")
        })
        .map(|(pid, _)| {
            let kids = all
                .iter()
                .filter(|(_, c)| c.ppid == *pid)
                .map(|(k, _)| *k)
                .collect();
            (*pid, kids)
        })
        .collect()
}

/// The client's config.toml: a keepalive every second, the connection dropped after three
/// unanswered ones, and 3 s to connect, so a silent partition costs seconds, not minutes.
fn short_keepalive(sshd: &Sshd) {
    let dir = sshd.config_home().join("hoardcc");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.toml"),
        "[ssh]\nkeepalive_interval_secs = 1\nkeepalive_max = 3\nconnect_timeout_secs = 3\n",
    )
    .unwrap();
}

/// How many of this fixture's servers are running a compile.
fn compiles_running(sshd: &Sshd) -> usize {
    servers(sshd).iter().filter(|(_, k)| !k.is_empty()).count()
}

fn wait_for_compiles(sshd: &Sshd, n: usize) {
    wait_until(T, &format!("{n} compiles running on the server"), || {
        compiles_running(sshd) >= n
    });
}

// ---------------------------------------------------------------------------------------
// Faults.

/// Every `hoardcc serve` of the fixture is SIGKILLed (compiles and idle lanes alike) while
/// four jobs compile: each job is retried on a fresh lane or compiled locally once.
#[test]
fn server_killed_mid_build() {
    let slow = SlowGcc::new(HELD);
    let sshd = slow.sshd("");
    let client = Client::new(&sshd);
    let r = Reference::new();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("joblog");
    let hosts = format!("@{ALIAS}/4");
    let outs = std::thread::scope(|s| {
        let build = s.spawn(|| client.build(&r.project, &hosts, &log));
        wait_for_compiles(&sshd, 4);
        slow.set(0.0);
        for (pid, kids) in servers(&sshd) {
            for k in kids {
                // The compiler runs in its own process group: stop it with its server.
                let _ = killpg(Pid::from_raw(k), Signal::SIGKILL);
            }
            // A server may be gone already: once its compiler is killed it reports the
            // fault, the mux drops that lane, and the server exits on the lane's EOF
            // (quickly, when this thread is preempted on a loaded machine).
            match kill(Pid::from_raw(pid), Signal::SIGKILL) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => panic!("kill {pid}: {e}"),
            }
        }
        build.join().unwrap()
    });
    r.check(&outs, "server killed");
    assert_eq!(joblog(&log).len(), 4);
    // The host works again at once, on fresh lanes.
    let log2 = logs.path().join("joblog2");
    r.check(&client.build(&r.project, &hosts, &log2), "after the kill");
    assert_all_remote(&log2, 4, ALIAS);
}

/// sshd is restarted while four jobs compile (the listener and every session process
/// killed, so the connection really drops): the build completes, and the next build runs
/// remotely again on a new connection.
#[test]
fn sshd_restarted_mid_build() {
    let slow = SlowGcc::new(HELD);
    let mut sshd = slow.sshd("");
    let client = Client::new(&sshd);
    let r = Reference::new();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("joblog");
    let hosts = format!("@{ALIAS}/4");
    let outs = std::thread::scope(|s| {
        let build = s.spawn(|| client.build(&r.project, &hosts, &log));
        wait_for_compiles(&sshd, 4);
        slow.set(0.0);
        sshd.kill();
        assert!(
            sshd.drop_connections() > 0,
            "no sshd session processes found"
        );
        sshd.restart();
        build.join().unwrap()
    });
    r.check(&outs, "sshd restarted");
    assert_eq!(joblog(&log).len(), 4);
    let log2 = logs.path().join("joblog2");
    r.check(
        &client.build(&r.project, &hosts, &log2),
        "after the restart",
    );
    assert_all_remote(&log2, 4, ALIAS);
    let h = client.host(ALIAS).unwrap();
    assert_eq!(h.connections, 1, "{h:?}");
    // The restarted sshd (whose log continues the old one) let the mux in again.
    let log = sshd.log();
    let restart = log.rfind("Server listening on").unwrap();
    assert!(
        log[restart..].contains("Accepted publickey"),
        "no login after the restart:\n{log}"
    );
}

/// The proxy cuts the connection while four jobs compile: they are retried or fall back,
/// the build completes, and the next build runs remotely over a new connection.
#[test]
fn connection_cut_mid_build() {
    let slow = SlowGcc::new(HELD);
    let sshd = slow.sshd("");
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], sshd.port())));
    let alias = proxy.alias_for(&sshd);
    let client = Client::new(&sshd);
    let r = Reference::new();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("joblog");
    let hosts = format!("@{alias}/4");
    let (outs, before) = std::thread::scope(|s| {
        let build = s.spawn(|| client.build(&r.project, &hosts, &log));
        wait_for_compiles(&sshd, 4);
        slow.set(0.0);
        let before = proxy.connections_accepted();
        proxy.cut();
        (build.join().unwrap(), before)
    });
    r.check(&outs, "connection cut");
    assert_eq!(joblog(&log).len(), 4);
    let log2 = logs.path().join("joblog2");
    r.check(&client.build(&r.project, &hosts, &log2), "after the cut");
    assert_all_remote(&log2, 4, &alias);
    assert!(
        proxy.connections_accepted() > before,
        "the mux reconnected through the proxy"
    );
}

/// The proxy freezes the connection (a silent partition) while four jobs compile. With a
/// 1 s keepalive and 3 unanswered ones allowed, the mux drops the connection within about
/// four intervals, the jobs complete (retried or local) in bounded time, and after the
/// thaw the next build runs remotely again.
#[test]
fn connection_frozen_mid_build() {
    let slow = SlowGcc::new(HELD);
    let sshd = slow.sshd("");
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], sshd.port())));
    let alias = proxy.alias_for(&sshd);
    short_keepalive(&sshd);
    let client = Client::new(&sshd);
    let r = Reference::new();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("joblog");
    let hosts = format!("@{alias}/4");
    let (outs, noticed, finished) = std::thread::scope(|s| {
        let build = s.spawn(|| client.build(&r.project, &hosts, &log));
        wait_for_compiles(&sshd, 4);
        assert_eq!(client.host(&alias).unwrap().connections, 1);
        slow.set(0.0);
        proxy.freeze();
        let frozen = Instant::now();
        wait_until(
            Duration::from_secs(15),
            "the mux to drop the frozen connection",
            || client.host(&alias).is_some_and(|h| h.connections == 0),
        );
        let noticed = frozen.elapsed();
        let outs = build.join().unwrap();
        (outs, noticed, frozen.elapsed())
    });
    // Keepalive (1 s × 3) notices in about 3 s; without it the wait above gives up at 15 s.
    // 12 s leaves a loaded CI machine room and still tells the two apart.
    assert!(
        noticed < Duration::from_secs(12),
        "keepalive (1 s × 3) noticed the partition only after {noticed:?}"
    );
    assert!(
        finished < Duration::from_secs(20),
        "the jobs took {finished:?} to complete after the freeze"
    );
    r.check(&outs, "connection frozen");
    assert_eq!(joblog(&log).len(), 4);
    proxy.thaw();
    let log2 = logs.path().join("joblog2");
    r.check(&client.build(&r.project, &hosts, &log2), "after the thaw");
    assert_all_remote(&log2, 4, &alias);
    assert_eq!(client.host(&alias).unwrap().connections, 1);
}

/// The proxy freezes the connection while it is idle between builds; the next build's
/// jobs take the hoarded lanes, hear nothing back, and complete (retried or local) once
/// the keepalive gives up; after the thaw the host is used again.
#[test]
fn connection_frozen_between_builds() {
    let slow = SlowGcc::new(0.0);
    let sshd = slow.sshd("");
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], sshd.port())));
    let alias = proxy.alias_for(&sshd);
    short_keepalive(&sshd);
    let client = Client::new(&sshd);
    let r = Reference::new();
    let logs = tempfile::tempdir().unwrap();
    let hosts = format!("@{alias}/4");
    let log = logs.path().join("joblog");
    r.check(&client.build(&r.project, &hosts, &log), "warm-up");
    assert_all_remote(&log, 4, &alias);
    let h = client.host(&alias).unwrap();
    assert_eq!((h.connections, h.idle_lanes), (1, 4), "{h:?}");
    proxy.freeze();
    let frozen = Instant::now();
    let log2 = logs.path().join("joblog2");
    let outs = client.build(&r.project, &hosts, &log2);
    let finished = frozen.elapsed();
    assert!(
        finished < Duration::from_secs(20),
        "the jobs took {finished:?} to complete after the freeze"
    );
    r.check(&outs, "frozen while idle");
    assert_eq!(joblog(&log2).len(), 4);
    proxy.thaw();
    let log3 = logs.path().join("joblog3");
    r.check(&client.build(&r.project, &hosts, &log3), "after the thaw");
    assert_all_remote(&log3, 4, &alias);
}

/// The mux itself is SIGKILLed while four jobs compile: each wrapper compiles locally once,
/// the server's compiles end with their channels, and the next build starts a new mux
/// that runs every job remotely.
#[test]
fn mux_killed_mid_build() {
    let slow = SlowGcc::new(HELD);
    let sshd = slow.sshd("");
    let client = Client::new(&sshd);
    let r = Reference::new();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("joblog");
    let hosts = format!("@{ALIAS}/4");
    let (outs, old) = std::thread::scope(|s| {
        let build = s.spawn(|| client.build(&r.project, &hosts, &log));
        wait_for_compiles(&sshd, 4);
        slow.set(0.0);
        let pid = client.status().expect("a mux runs").pid;
        kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
        (build.join().unwrap(), pid)
    });
    r.check(&outs, "mux killed");
    let lines = joblog(&log);
    assert_eq!(lines.len(), 4);
    assert!(lines.iter().all(|(k, _)| k == "local"), "{lines:?}");
    // The orphaned server processes notice the end of their channels and stop compiling.
    wait_until(T, "the old servers to exit", || servers(&sshd).is_empty());
    let log2 = logs.path().join("joblog2");
    r.check(&client.build(&r.project, &hosts, &log2), "with a new mux");
    assert_all_remote(&log2, 4, ALIAS);
    assert_ne!(client.status().unwrap().pid, old);
}

/// A build over a slow link (25 ms each way, 4 MB/s) runs remotely with correct objects,
/// and the mux then stops promptly, closing its connection.
#[test]
fn build_over_a_slow_link() {
    let sshd = Sshd::start(SshdOptions::default());
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], sshd.port())));
    proxy.set_delay(Duration::from_millis(25));
    proxy.set_bandwidth(Some(4 << 20));
    let alias = proxy.alias_for(&sshd);
    let client = Client::new(&sshd);
    let r = Reference::new();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("joblog");
    r.check(
        &client.build(&r.project, &format!("@{alias}/4"), &log),
        "slow link",
    );
    assert_all_remote(&log, 4, &alias);
    assert_eq!(proxy.connections_accepted(), 1);
    // Stopping the mux with four idle lanes is prompt (their tasks end with the pool).
    let (took, out) = client.stop_mux();
    let err = String::from_utf8_lossy(&out.stderr);
    // Prompt is well under a second; lanes that outlive the pool would hold the daemon for
    // its 5 s shutdown grace. 4.5 s is CI-safe and still tells the two apart.
    assert!(
        err.contains("stopped") && took < Duration::from_millis(4500),
        "{took:?}: {err}"
    );
    wait_until(T, "the proxied connection to close", || {
        proxy.connections_open() == 0
    });
}

/// A compile that takes longer than DISTCC_IO_TIMEOUT succeeds remotely: the server's heartbeats
/// count as traffic.
#[test]
fn heartbeats_keep_a_long_compile_remote() {
    let slow = SlowGcc::new(5.0);
    let sshd = slow.sshd("heartbeat_secs = 1\n");
    let client = Client::new(&sshd)
        .with("DISTCC_IO_TIMEOUT", "3")
        .with("HOARDCC_FALLBACK", "0");
    let (local, obj, lines) = long_compile(&client);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].0, "remote", "{lines:?}");
    assert!(obj == local, "the object differs from gcc's");
}

/// The same compile without timely heartbeats times out after DISTCC_IO_TIMEOUT and is
/// compiled locally once.
#[test]
fn without_heartbeats_a_long_compile_times_out_and_falls_back() {
    let slow = SlowGcc::new(5.0);
    let sshd = slow.sshd("heartbeat_secs = 60\n");
    let client = Client::new(&sshd).with("DISTCC_IO_TIMEOUT", "3");
    let started = Instant::now();
    let (local, obj, lines) = long_compile(&client);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].0, "local", "{lines:?}");
    assert!(lines[0].1.contains("timed out"), "{lines:?}");
    assert!(obj == local, "the object differs from gcc's");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

/// One `hoardcc gcc -O2 -c vec.c` on the `hoardtest` host: (local object, hoardcc's
/// object, job log lines).
fn long_compile(client: &Client) -> (Vec<u8>, Vec<u8>, Vec<(String, String)>) {
    let r = Reference::new();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("joblog");
    let mut cmd = client.command(
        r.project.dir(),
        &["gcc", "-O2", "-c", "vec.c", "-o", "vec.o"],
    );
    cmd.env("HOARDCC_HOSTS", format!("@{ALIAS}"))
        .env("HOARDCC_JOBLOG", &log);
    let out = run_with_timeout(&mut cmd, T, "long compile");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.lines().count() <= 1, "{out:?}");
    let i = r
        .project
        .sources()
        .iter()
        .position(|s| s == Path::new("vec.c"))
        .unwrap();
    let obj = std::fs::read(r.project.dir().join("vec.o")).unwrap();
    (r.local[i].clone(), obj, joblog(&log))
}
