//! Drop-in exactness (issue 8): hoardcc in front of a compile changes nothing but the speed.
//! Masquerade next to ccache's masquerade directory (real ccache, both PATH orders, the
//! process count bounded while it runs); `-o /dev/null` as root in a private mount
//! namespace; an output that is the source; an output directory that does not exist; a
//! failed compile next to an existing output; the job log's reasons. Each compile is
//! checked against what gcc alone does in the same directory, through the real sshd.

use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{descendants, hoardcc_bin, run_with_timeout, Sshd, SshdOptions};

const T: Duration = Duration::from_secs(120);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `hoardcc gcc ARGS…` in `dir` against `sshd`, without the mux (every process it starts
/// stays in its process group), fallback off, logging jobs to `dir/joblog`.
fn hoardcc_gcc(sshd: &Sshd, dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(hoardcc_bin());
    sshd.apply_env(&mut cmd);
    cmd.current_dir(dir)
        .env("HOARDCC_HOSTS", "@hoardtest")
        .env("HOARDCC_MUX", "0")
        .env("HOARDCC_FALLBACK", "0")
        .env("HOARDCC_JOBLOG", dir.join("joblog"))
        .arg("gcc")
        .args(args);
    run_with_timeout(&mut cmd, T, "hoardcc gcc")
}

fn gcc(dir: &Path, args: &[&str]) -> Output {
    run_with_timeout(Command::new("gcc").current_dir(dir).args(args), T, "gcc")
}

/// The job log's lines, and the log emptied for the next compile.
fn take_joblog(dir: &Path) -> Vec<String> {
    let p = dir.join("joblog");
    let lines = std::fs::read_to_string(&p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    let _ = std::fs::remove_file(p);
    lines
}

/// Same exit status and the same stderr as gcc alone (hoardcc adds nothing).
fn same_as_gcc(ours: &Output, theirs: &Output, what: &str) {
    assert_eq!(
        ours.status.code(),
        theirs.status.code(),
        "{what}: exit status\nhoardcc: {}\ngcc: {}",
        text(&ours.stderr),
        text(&theirs.stderr)
    );
    assert_eq!(text(&ours.stderr), text(&theirs.stderr), "{what}: stderr");
    assert_eq!(text(&ours.stdout), text(&theirs.stdout), "{what}: stdout");
}

fn project() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("a.c"), "int answer(void) { return 42; }\n").unwrap();
    std::fs::write(
        t.path().join("bad.c"),
        "int broken(void) { return ; }\nint x = ;\n",
    )
    .unwrap();
    t
}

/// Most processes (hoardcc, ccache, gcc and what they run) one compile may have at once:
/// a loop grows far past this within milliseconds.
const MAX_PROCESSES: usize = 12;

/// Runs `cmd` in its own process group; while it runs, counts its descendants. A loop
/// (more than [`MAX_PROCESSES`]) kills the whole group and fails the test.
fn run_bounded(cmd: &mut Command, what: &str) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let child = cmd.spawn().unwrap();
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let end = Instant::now() + T;
    let mut most = 0;
    loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(out) => return out.unwrap(),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(e) => panic!("{what}: {e}"),
        }
        let n = descendants(pid, |_| true).len();
        most = most.max(n);
        if n > MAX_PROCESSES || Instant::now() > end {
            let group = nix::unistd::Pid::from_raw(pid);
            // Kill the group until nothing of it is left (a fork may race one kill).
            for _ in 0..100 {
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
                if rx.recv_timeout(Duration::from_millis(50)).is_ok()
                    && descendants(pid, |_| true).is_empty()
                {
                    break;
                }
            }
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            panic!("{what}: {n} processes at once (most seen {most}): a loop; killed");
        }
    }
}

/// Bug 1: a hoardcc masquerade directory next to ccache's `/usr/lib/ccache`, in both
/// orders. Each compile finishes with a bounded number of processes, prints exactly one
/// line (the loop note, naming CCACHE_PREFIX), and gives gcc's own object. With ccache
/// in front, the compile goes through ccache to hoardcc and runs remotely.
#[test]
fn masquerade_next_to_ccache_never_loops() {
    let ccache_dir = Path::new("/usr/lib/ccache");
    if !ccache_dir.join("gcc").exists() {
        panic!("ccache is not installed (.ci/run installs it: apt-get install ccache)");
    }
    let sshd = Sshd::start(SshdOptions::default());
    let t = project();
    let dir = t.path();
    let masq = dir.join("masq");
    std::fs::create_dir(&masq).unwrap();
    std::os::unix::fs::symlink(hoardcc_bin(), masq.join("gcc")).unwrap();
    assert!(gcc(dir, &["-O2", "-c", "a.c", "-o", "want.o"])
        .status
        .success());
    let want = std::fs::read(dir.join("want.o")).unwrap();
    let system_path = std::env::var("PATH").unwrap();
    for (order, path) in [
        (
            "ccache first",
            format!("{}:{}:{system_path}", ccache_dir.display(), masq.display()),
        ),
        (
            "hoardcc first",
            format!("{}:{}:{system_path}", masq.display(), ccache_dir.display()),
        ),
    ] {
        let cache = tempfile::tempdir().unwrap();
        let _ = std::fs::remove_file(dir.join("a.o"));
        let mut cmd = Command::new("gcc");
        sshd.apply_env(&mut cmd);
        cmd.current_dir(dir)
            .env("PATH", &path)
            .env("CCACHE_DIR", cache.path())
            .env_remove("CCACHE_PREFIX")
            .env("HOARDCC_HOSTS", "@hoardtest")
            .env("HOARDCC_MUX", "0")
            .env("HOARDCC_FALLBACK", "0")
            .env("HOARDCC_JOBLOG", dir.join("joblog"))
            .args(["-O2", "-c", "a.c", "-o", "a.o"]);
        let out = run_bounded(&mut cmd, order);
        let err = text(&out.stderr);
        assert!(out.status.success(), "{order}: {:?}\n{err}", out.status);
        assert_eq!(err.lines().count(), 1, "{order}: one line\n{err}");
        assert!(
            err.contains("loop") && err.contains("ccache") && err.contains("CCACHE_PREFIX=hoardcc"),
            "{order}: {err}"
        );
        assert_eq!(std::fs::read(dir.join("a.o")).unwrap(), want, "{order}");
        // With ccache in front, ccache runs hoardcc once more for its `-E`.
        let log = take_joblog(dir);
        let remote = log.iter().filter(|l| l.starts_with("remote\t")).count();
        let cpp = log
            .iter()
            .filter(|l| l.contains("preprocessing only"))
            .count();
        assert!(remote == 1 && remote + cpp == log.len(), "{order}: {log:?}");
    }
}

/// Bug 2: `-o /dev/null` as root replaced the device node with a regular file. Run only
/// in a private mount namespace whose `/dev` is a fresh tmpfs holding its own null
/// device, so the machine's `/dev/null` is never at risk even when the test fails; the
/// script refuses to run hoardcc unless it sees its own marker in that `/dev`.
#[test]
fn dev_null_output_stays_a_device_as_root() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root for a private mount namespace (CI runs as root)");
        return;
    }
    let sshd = Sshd::start(SshdOptions::default());
    let t = project();
    let dir = t.path();
    let fake_dev = dir.join("fake-dev");
    std::fs::create_dir(&fake_dev).unwrap();
    let marker = format!(".hoardcc-test-{}", std::process::id());
    // /dev as the compile and ssh need it: null, zero, full, random, urandom, tty.
    let script = r#"set -eu
fake=$1; marker=$2; report=$3; shift 3
mount -t tmpfs -o mode=755 hoardcc-test "$fake"
touch "$fake/$marker"
mknod -m 666 "$fake/null" c 1 3
mknod -m 666 "$fake/zero" c 1 5
mknod -m 666 "$fake/full" c 1 7
mknod -m 666 "$fake/random" c 1 8
mknod -m 666 "$fake/urandom" c 1 9
mknod -m 666 "$fake/tty" c 5 0
mount --bind "$fake" /dev
test -e "/dev/$marker" || { echo "not in the private /dev" >&2; exit 99; }
set +e
"$@"
rc=$?
stat -c %F /dev/null >"$report"
exit $rc
"#;
    // (arguments, runs remotely): a probe whose source is /dev/null too stays local.
    let cases: &[(&[&str], bool)] = &[
        (&["-c", "a.c", "-o", "/dev/null"], true),
        (&["-S", "a.c", "-o", "/dev/null"], true),
        (&["-O2", "-Werror", "-c", "a.c", "-o", "/dev/null"], true),
        (&["-x", "c", "/dev/null", "-c", "-o", "/dev/null"], false),
        (
            &["-Werror", "-x", "c", "-c", "/dev/null", "-o", "/dev/null"],
            false,
        ),
    ];
    for (args, remote) in cases {
        let report = dir.join("report");
        let _ = std::fs::remove_file(&report);
        let mut cmd = Command::new("unshare");
        sshd.apply_env(&mut cmd);
        cmd.current_dir(dir)
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
            ])
            .arg(&fake_dev)
            .arg(&marker)
            .arg(&report)
            .arg(hoardcc_bin())
            .arg("gcc")
            .args(*args)
            .env("HOARDCC_HOSTS", "@hoardtest")
            .env("HOARDCC_MUX", "0")
            .env("HOARDCC_FALLBACK", "0")
            .env("HOARDCC_JOBLOG", dir.join("joblog"));
        let out = run_with_timeout(&mut cmd, T, "hoardcc -o /dev/null in a namespace");
        let node = std::fs::read_to_string(&report).unwrap_or_default();
        assert_eq!(
            node.trim(),
            "character special file",
            "{args:?}: /dev/null became {node:?}\n{}",
            text(&out.stderr)
        );
        assert!(
            out.status.success(),
            "{args:?}: {:?} {}",
            out.status,
            text(&out.stderr)
        );
        assert_eq!(text(&out.stderr), "", "{args:?}: compiled once, no warning");
        let log = take_joblog(dir);
        let want = if *remote { "remote\t" } else { "local\t" };
        assert!(
            log.len() == 1 && log[0].starts_with(want),
            "{args:?}: {log:?}"
        );
    }
    // The machine's /dev/null was never touched.
    let m = std::fs::symlink_metadata("/dev/null").unwrap();
    assert!(m.file_type().is_char_device());
}

/// Bug 3: the output is the source (by identity, however spelt, or through a hard
/// link): gcc's own message and status, and the source untouched.
#[test]
fn output_that_is_the_source_is_left_to_gcc() {
    let sshd = Sshd::start(SshdOptions::default());
    let t = project();
    let dir = t.path();
    let src = std::fs::read(dir.join("a.c")).unwrap();
    for (input, output) in [
        ("a.c", "a.c"),
        ("a.c", "./a.c"),
        ("./a.c", "a.c"),
        ("a.c", "../$D/a.c"),
    ] {
        let output = output.replace("$D", &dir.file_name().unwrap().to_string_lossy());
        let args = ["-c", input, "-o", &output];
        let theirs = gcc(dir, &args);
        assert_eq!(theirs.status.code(), Some(1), "gcc refuses -o {output}");
        let ours = hoardcc_gcc(&sshd, dir, &args);
        assert!(
            std::fs::read(dir.join("a.c")).unwrap() == src,
            "hoardcc overwrote the source with -o {output}"
        );
        same_as_gcc(&ours, &theirs, &format!("-c {input} -o {output}"));
        let log = take_joblog(dir);
        assert!(
            log.len() == 1 && log[0].contains("is the input file"),
            "{input} -o {output}: {log:?}"
        );
    }
    // Through a hard link gcc does not notice, and replaces the file the name points at:
    // hoardcc leaves that to gcc too (a local compile) rather than decide otherwise.
    std::fs::hard_link(dir.join("a.c"), dir.join("link.c")).unwrap();
    let ours = hoardcc_gcc(&sshd, dir, &["-c", "link.c", "-o", "a.c"]);
    assert!(ours.status.success(), "{}", text(&ours.stderr));
    assert_eq!(std::fs::read(dir.join("link.c")).unwrap(), src);
    let log = take_joblog(dir);
    assert!(
        log.len() == 1 && log[0].contains("is the input file"),
        "{log:?}"
    );
}

/// Bug 9: `-o nodir/a.o` fails at once with gcc's message (one local run, nothing
/// remote).
#[test]
fn missing_output_directory_fails_like_gcc() {
    let sshd = Sshd::start(SshdOptions::default());
    let t = project();
    let dir = t.path();
    let args = ["-c", "a.c", "-o", "nodir/a.o"];
    let theirs = gcc(dir, &args);
    let ours = hoardcc_gcc(&sshd, dir, &args);
    same_as_gcc(&ours, &theirs, "-o nodir/a.o");
    let log = take_joblog(dir);
    assert!(
        log.len() == 1 && log[0].starts_with("local\t") && log[0].contains("does not exist"),
        "{log:?}"
    );
}

/// Bug 9: a failed compile leaves an output that was there, as gcc does.
#[test]
fn failed_compile_keeps_an_existing_output() {
    let sshd = Sshd::start(SshdOptions::default());
    let t = project();
    let dir = t.path();
    let old = b"an object from an earlier build".to_vec();
    let args = ["-c", "bad.c", "-o", "bad.o"];
    std::fs::write(dir.join("bad.o"), &old).unwrap();
    let theirs = gcc(dir, &args);
    assert_eq!(
        std::fs::read(dir.join("bad.o")).unwrap(),
        old,
        "gcc keeps it"
    );
    let ours = hoardcc_gcc(&sshd, dir, &args);
    assert_eq!(
        ours.status.code(),
        theirs.status.code(),
        "{}",
        text(&ours.stderr)
    );
    assert_eq!(
        std::fs::read(dir.join("bad.o")).ok(),
        Some(old),
        "hoardcc must leave bad.o as gcc does"
    );
    let log = take_joblog(dir);
    assert!(log.len() == 1 && log[0].starts_with("remote\t"), "{log:?}");
}

/// Bug 9: the job log names why a compile stayed local; neither `-fsyntax-only` nor a
/// precompiled header build is "linking".
#[test]
fn job_log_reasons_name_syntax_checks_and_headers() {
    let t = project();
    let dir = t.path();
    std::fs::write(dir.join("h.h"), "int h(void);\n").unwrap();
    for (args, want) in [
        (&["-fsyntax-only", "a.c"][..], "syntax check only"),
        (&["h.h"][..], "precompiled header"),
        (
            &["-x", "c-header", "h.h", "-o", "h.pch"][..],
            "precompiled header",
        ),
        (
            &["a.c", "-o", "prog", "-nostartfiles", "-shared"][..],
            "linking",
        ),
    ] {
        let mut cmd = Command::new(hoardcc_bin());
        cmd.current_dir(dir)
            .env("HOARDCC_HOSTS", "localhost")
            .env("HOARDCC_MUX", "0")
            .env("HOARDCC_JOBLOG", dir.join("joblog"))
            .arg("gcc")
            .args(args);
        let out = run_with_timeout(&mut cmd, T, "hoardcc gcc");
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let log = take_joblog(dir);
        assert!(log.len() == 1 && log[0].contains(want), "{args:?}: {log:?}");
        if want != "linking" {
            assert!(!log[0].contains("linking"), "{args:?}: {log:?}");
        }
    }
}

/// Bug 9: `hoardcc hosts` and `hoardcc status` agree on a host's slots when the server
/// allows fewer than the host list says (`@hoardtest/4`, server `max_jobs = 1`).
#[test]
fn hosts_and_status_agree_on_slots() {
    let sshd = Sshd::start(SshdOptions {
        server_toml: Some("[server]\nmax_jobs = 1\n".into()),
        ..SshdOptions::default()
    });
    let t = project();
    let dir = t.path();
    let hoardcc = |args: &[&str]| {
        let mut cmd = Command::new(hoardcc_bin());
        sshd.apply_env(&mut cmd);
        cmd.current_dir(dir)
            .env("HOARDCC_HOSTS", "@hoardtest/4")
            .env("HOARDCC_IDLE_TIMEOUT", "30")
            .env("HOARDCC_FALLBACK", "0")
            .env("HOARDCC_JOBLOG", dir.join("joblog"))
            .args(args);
        run_with_timeout(&mut cmd, T, "hoardcc")
    };
    // Before any job the list is all there is.
    let before = hoardcc(&["hosts"]);
    assert!(
        text(&before.stdout).contains("hoardtest\t4 slots"),
        "{before:?}"
    );
    // One job through the mux: it learns what the server allows.
    let out = hoardcc(&["gcc", "-c", "a.c", "-o", "a.o"]);
    let stop = || {
        let _ = hoardcc(&["mux", "--stop"]);
    };
    if !out.status.success() {
        stop();
        panic!("compile: {}", text(&out.stderr));
    }
    let hosts = text(&hoardcc(&["hosts"]).stdout);
    let status = text(&hoardcc(&["status"]).stdout);
    stop();
    let host_line = hosts
        .lines()
        .find(|l| l.starts_with("hoardtest\t"))
        .unwrap_or_default();
    assert!(
        host_line.contains("\t1 slots") && host_line.contains("the host list says 4"),
        "hosts:\n{hosts}\nstatus:\n{status}"
    );
    let row = status
        .lines()
        .find(|l| l.starts_with("hoardtest "))
        .unwrap_or_default();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols.get(1), Some(&"1"), "status:\n{status}");
    assert!(status.contains("the host list says 4"), "status:\n{status}");
}
