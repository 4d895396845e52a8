//! The right compiler, or none (issue 11), against the private real sshd: the server
//! picks the compiler with the client's identity among its allowed ones, never one that
//! only shares its name; with no match the job runs locally and `hoardcc status` shows
//! the block; `hoardcc serve --check` and `Lane::compilers` list what a server offers.
//!
//! The server's PATH holds shims in front of the real gcc: a `gcc` that says it is 99.1.0
//! (`-dumpfullversion`) and otherwise runs the real gcc, and an honest `gcc-MAJOR` that
//! just runs it; each appends a line to its own marker file when it compiles (`-c`), so
//! the test sees which one ran. The sandbox is off on that server, so the shims may write
//! their markers (the sandbox has its own tests).
//!
//! Neighbours: tests/support (the sshd fixture); src/identity.rs, src/proto/identity.rs,
//! src/subsystem/compilers.rs, src/subsystem/check.rs, src/mux/scheduler.rs (the code
//! under test).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use hoardcc::mux::status::StatusReport;
use tempfile::TempDir;

use crate::support::{hoardcc_bin, run_with_timeout, Sshd, SshdOptions};

/// Limit for one command.
const T: Duration = Duration::from_secs(90);

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The real gcc's full version and major number on this machine.
fn gcc_version() -> (String, String) {
    let out = Command::new("gcc")
        .arg("-dumpfullversion")
        .output()
        .unwrap();
    let full = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let major = full.split('.').next().unwrap().to_string();
    (full, major)
}

/// Shims and their markers: `bin/` (0755) for the PATH, `marks/` (world-writable) for
/// the lines the shims append, and a work directory with sources.
struct Shims {
    dir: TempDir,
}

impl Shims {
    fn new() -> Shims {
        let dir = tempfile::Builder::new()
            .prefix("hoardcc-identity-")
            .tempdir()
            .unwrap();
        chmod(dir.path(), 0o755);
        for (sub, mode) in [("bin", 0o755), ("marks", 0o1777), ("work", 0o755)] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
            chmod(&dir.path().join(sub), mode);
        }
        for i in 0..3 {
            std::fs::write(
                dir.path().join(format!("work/s{i}.c")),
                format!("int f{i}(int x) {{ return x * {i} + 1; }}\n"),
            )
            .unwrap();
        }
        Shims { dir }
    }

    fn bin(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// `bin/<name>`: reports `version` to `-dumpfullversion` when given, marks compiles
    /// in `marks/<name>`, and runs the real gcc for everything else.
    fn shim(&self, name: &str, version: Option<&str>) {
        let mark = self.dir.path().join("marks").join(name);
        let lie = version
            .map(|v| format!("case \"$1\" in -dumpfullversion) echo {v}; exit 0;; esac\n"))
            .unwrap_or_default();
        let script = format!(
            "#!/bin/sh\n{lie}for a in \"$@\"; do [ \"$a\" = -c ] && echo x >> {m}; done\n\
             exec /usr/bin/gcc \"$@\"\n",
            m = mark.display()
        );
        let p = self.bin().join(name);
        std::fs::write(&p, script).unwrap();
        chmod(&p, 0o755);
    }

    /// Compiles `bin/<name>` ran.
    fn marks(&self, name: &str) -> usize {
        std::fs::read_to_string(self.dir.path().join("marks").join(name))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    fn joblog(&self) -> Vec<String> {
        std::fs::read_to_string(self.work().join("joblog"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// An sshd whose `hoardcc serve` runs with `path` first on its PATH, without the sandbox.
fn sshd_with_path(path: Option<&Path>) -> Sshd {
    let server_env = path
        .map(|p| {
            vec![(
                "PATH".to_string(),
                format!("{}:/usr/local/bin:/usr/bin:/bin", p.display()),
            )]
        })
        .unwrap_or_default();
    Sshd::start(SshdOptions {
        server_toml: Some("[server]\nsandbox = \"off\"\n".into()),
        server_env,
        ..SshdOptions::default()
    })
}

/// Stops the fixture's mux when dropped.
struct MuxStop<'a>(&'a Sshd);

impl Drop for MuxStop<'_> {
    fn drop(&mut self) {
        let mut cmd = Command::new(hoardcc_bin());
        self.0.apply_env(&mut cmd);
        let _ = cmd
            .args(["mux", "--stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `hoardcc <compiler> -c s<i>.c -o s<i>.o` through the mux, with no fallback (a failed
/// distribution fails the test) and `path` (if any) first on the client's PATH.
fn compile(sshd: &Sshd, shims: &Shims, compiler: &str, i: usize, path: Option<&Path>) -> Output {
    compile_with(sshd, shims, compiler, i, path, &[])
}

/// [`compile`] with extra environment variables.
fn compile_with(
    sshd: &Sshd,
    shims: &Shims,
    compiler: &str,
    i: usize,
    path: Option<&Path>,
    vars: &[(&str, &str)],
) -> Output {
    let mut cmd = Command::new(hoardcc_bin());
    sshd.apply_env(&mut cmd);
    if let Some(p) = path {
        let old = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{old}", p.display()));
    }
    cmd.current_dir(shims.work())
        .env("HOARDCC_HOSTS", format!("@{}/2", sshd.alias()))
        .env("HOARDCC_JOBLOG", shims.work().join("joblog"))
        .env("HOARDCC_FALLBACK", "0")
        .env("HOARDCC_IDLE_TIMEOUT", "120")
        .envs(vars.iter().copied())
        .args([compiler, "-O2", "-c"])
        .arg(format!("s{i}.c"))
        .arg("-o")
        .arg(format!("s{i}.o"));
    let out = run_with_timeout(&mut cmd, T, "compile");
    assert!(
        out.status.success(),
        "{compiler} s{i}.c: {out:?}\nmux log:\n{}",
        mux_log(sshd)
    );
    assert!(shims.work().join(format!("s{i}.o")).exists());
    out
}

fn mux_log(sshd: &Sshd) -> String {
    std::fs::read_to_string(sshd.client_home().join(".local/state/hoardcc/mux.log"))
        .unwrap_or_default()
}

fn status(sshd: &Sshd) -> StatusReport {
    let mut cmd = Command::new(hoardcc_bin());
    sshd.apply_env(&mut cmd);
    let out = run_with_timeout(cmd.args(["status", "--json"]), T, "status");
    StatusReport::from_json(&String::from_utf8_lossy(&out.stdout))
        .unwrap_or_else(|e| panic!("status --json: {e}: {out:?}"))
}

/// Two compilers on the server's PATH: `gcc` lies about its version, `gcc-MAJOR` is the
/// client's. Every job runs remotely, all on `gcc-MAJOR`; the liar never compiles.
#[test]
fn the_matching_compiler_serves_and_the_liar_never_compiles() {
    let (_, major) = gcc_version();
    let shims = Shims::new();
    shims.shim("gcc", Some("99.1.0"));
    let honest = format!("gcc-{major}");
    shims.shim(&honest, None);
    let sshd = sshd_with_path(Some(&shims.bin()));
    let _stop = MuxStop(&sshd);
    for i in 0..3 {
        let out = compile(&sshd, &shims, "gcc", i, None);
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let log = shims.joblog();
    assert_eq!(log.len(), 3, "{log:#?}");
    assert!(log.iter().all(|l| l.starts_with("remote\t")), "{log:#?}");
    assert_eq!(shims.marks("gcc"), 0, "the mismatched gcc compiled");
    assert_eq!(
        shims.marks(&honest),
        3,
        "the matching {honest} did not compile"
    );
    let host = &status(&sshd).hosts[0];
    assert!(host.mismatched.is_empty(), "{:?}", host.mismatched);
    assert_eq!(host.jobs_ok, 3);
}

/// The client's compiler says 99.1.0; the server has only the real gcc. The server
/// refuses naming both versions, the job compiles locally (even with fallback off: a
/// mismatch is not a failure), `hoardcc status` shows the block, the next job does not
/// go there, and another compiler (the real `gcc-MAJOR`) still does.
#[test]
fn no_matching_compiler_means_local_and_a_block_in_status() {
    let (full, major) = gcc_version();
    let client = Shims::new();
    client.shim("gcc", Some("99.1.0"));
    let sshd = sshd_with_path(None);
    let _stop = MuxStop(&sshd);
    compile(&sshd, &client, "gcc", 0, Some(&client.bin()));
    assert_eq!(
        client.marks("gcc"),
        1,
        "compiled locally by the client's gcc"
    );
    let host = status(&sshd).hosts.remove(0);
    assert_eq!(host.mismatched.len(), 1, "{host:?}");
    let m = &host.mismatched[0];
    assert!(m.compiler.starts_with("gcc 99.1.0 ("), "{m:?}");
    assert!(
        m.reason.starts_with("no compiler matching gcc 99.1.0 (")
            && m.reason.contains(&format!("; gcc here is {full} (")),
        "{m:?}"
    );
    assert!(m.remaining_secs > 0);
    // The next job with that compiler stays local without asking the server.
    compile(&sshd, &client, "gcc", 1, Some(&client.bin()));
    assert_eq!(client.marks("gcc"), 2);
    let host = status(&sshd).hosts.remove(0);
    assert_eq!(host.jobs_ok, 0);
    // Another compiler still goes there.
    let real = format!("gcc-{major}");
    if Path::new("/usr/bin").join(&real).exists() {
        compile(&sshd, &client, &real, 2, None);
        let log = client.joblog();
        assert!(log[2].starts_with("remote\t"), "{log:#?}");
        assert_eq!(status(&sshd).hosts[0].jobs_ok, 1);
    }
    let log = client.joblog();
    assert!(
        log[0].starts_with("local\t") && log[1].starts_with("local\t"),
        "{log:#?}"
    );
    let text = {
        let mut cmd = Command::new(hoardcc_bin());
        sshd.apply_env(&mut cmd);
        let out = run_with_timeout(cmd.arg("status"), T, "status");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(text.contains("mismatch: gcc 99.1.0"), "{text}");
}

/// `hoardcc serve --check` on the server lists both compilers with their versions, and
/// exits 0.
#[test]
fn serve_check_lists_what_the_server_offers() {
    let (full, major) = gcc_version();
    let shims = Shims::new();
    shims.shim("gcc", Some("99.1.0"));
    let sshd = sshd_with_path(Some(&shims.bin()));
    let check = format!("{} --check", sshd.serve_command());
    let out = run_with_timeout(&mut sshd.ssh(&[&check]), T, "serve --check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let line = |name: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        line("gcc")[1..3],
        [
            shims.bin().join("gcc").display().to_string(),
            "99.1.0".into()
        ]
    );
    if Path::new("/usr/bin").join(format!("gcc-{major}")).exists() {
        assert_eq!(line(&format!("gcc-{major}"))[2], full);
    }
    assert!(text.contains("✓ sandbox: off"), "{text}");
    // A config error: non-zero, and said.
    let bad = format!(
        "/usr/bin/env HOARDCC_SERVER_CONFIG=/nonexistent/server.toml {} serve --check",
        sshd.server_hoardcc().display()
    );
    let out = run_with_timeout(&mut sshd.ssh(&[&bad]), T, "serve --check");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("✗ config"),
        "{out:?}"
    );
}

/// `Lane::compilers` asks a live lane what the server offers (for `ping` and `doctor`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_lists_the_server_s_compilers() {
    let shims = Shims::new();
    shims.shim("gcc", Some("99.1.0"));
    let sshd = sshd_with_path(Some(&shims.bin()));
    let settings = hoardcc::mux::ssh::SshSettings {
        home: sshd.client_home().to_path_buf(),
        connect_timeout: Duration::from_secs(10),
        keepalive_interval: Duration::from_secs(15),
        keepalive_max: 3,
        io_timeout: T,
        agent_socket: None,
        local_user: sshd.login_user().to_string(),
    };
    let list = hoardcc::hosts::parse(&format!("@{}", sshd.alias())).unwrap();
    let mut lane =
        tokio::time::timeout(T, hoardcc::mux::lane::Lane::open(&list.hosts[0], &settings))
            .await
            .expect("open in time")
            .expect("open a lane");
    let offered = lane
        .compilers(T)
        .await
        .expect("list compilers")
        .expect("the server lists its compilers");
    let gcc = offered
        .iter()
        .find(|c| c.name == "gcc")
        .expect("gcc listed");
    assert_eq!(gcc.id.version, "99.1.0");
    assert_eq!(gcc.path, shims.bin().join("gcc").display().to_string());
    // The lane still runs jobs afterwards.
    assert!(lane.ping(T).await.is_ok());
}

/// Without the mux (`HOARDCC_MUX=0`) the wrapper probes its compiler itself: the liar on
/// the server never compiles, and a client compiler with no match compiles locally.
#[test]
fn the_direct_path_matches_too() {
    let (_, major) = gcc_version();
    let server = Shims::new();
    server.shim("gcc", Some("99.1.0"));
    let honest = format!("gcc-{major}");
    server.shim(&honest, None);
    let sshd = sshd_with_path(Some(&server.bin()));
    let direct = [("HOARDCC_MUX", "0")];
    let out = compile_with(&sshd, &server, "gcc", 0, None, &direct);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!((server.marks("gcc"), server.marks(&honest)), (0, 1));
    // A client gcc that says 88.1.0: nothing matches there.
    let client = Shims::new();
    client.shim("gcc", Some("88.1.0"));
    compile_with(&sshd, &server, "gcc", 1, Some(&client.bin()), &direct);
    assert_eq!(client.marks("gcc"), 1, "compiled locally");
    assert_eq!((server.marks("gcc"), server.marks(&honest)), (0, 1));
    let log = server.joblog();
    assert!(
        log[0].starts_with("remote\t") && log[1].starts_with("local\t"),
        "{log:#?}"
    );
}
