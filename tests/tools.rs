//! Real build tools in front of hoardcc, against the private sshd fixture (issue 8): a CMake
//! project built with Ninja through `CMAKE_C_COMPILER_LAUNCHER=hoardcc`, compared object by
//! object (and dependency file by dependency file) with a plain build in the same
//! directory; ccache with `CCACHE_PREFIX=hoardcc` (first build remote, second all hits);
//! and a hoardcc masquerade directory next to ccache's `/usr/lib/ccache` under `make -j2`,
//! in both PATH orders, with the number of processes bounded while it runs; and an
//! autoconf `./configure CC="hoardcc gcc"` project built with make.
//!
//! Neighbours: tests/conformance.rs (single invocations); tests/e2e.rs (the plain
//! masquerade build); tests/support (fixture, [`Project`]). `.ci/run` installs cmake, autoconf,
//! ninja-build and ccache; a machine without them fails these tests with that hint.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{descendants, hoardcc_bin, run_with_timeout, Project, Sshd, SshdOptions};

const T: Duration = Duration::from_secs(180);
const HOSTS: &str = "@hoardtest/4";

fn require(tool: &str) {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{tool} is not installed (.ci/run installs it with apt-get)"
    );
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({:?})\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `cmd` isolated to `sshd`, with the host list and, if given, a job log.
fn fixture_env<'c>(sshd: &Sshd, cmd: &'c mut Command, log: Option<&Path>) -> &'c mut Command {
    sshd.apply_env(cmd);
    cmd.env("HOARDCC_HOSTS", HOSTS)
        .env("HOARDCC_IDLE_TIMEOUT", "60")
        .env("LANG", "C.UTF-8");
    if let Some(log) = log {
        cmd.env("HOARDCC_JOBLOG", log);
    }
    cmd
}

fn joblog(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn assert_remote(log: &[String], n: usize, what: &str) {
    assert_eq!(log.len(), n, "{what}: job log {log:#?}");
    assert!(
        log.iter().all(|l| l.starts_with("remote\t")),
        "{what}: not all remote: {log:#?}"
    );
}

/// Every regular file under `dir` whose name `keep` accepts, by relative path.
fn files_under(dir: &Path, keep: &dyn Fn(&str) -> bool) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                todo.push(path);
            } else if meta.is_file() && keep(&path.file_name().unwrap().to_string_lossy()) {
                let rel = path.strip_prefix(dir).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

fn assert_same_files(
    plain: &BTreeMap<PathBuf, Vec<u8>>,
    ours: &BTreeMap<PathBuf, Vec<u8>>,
    what: &str,
) {
    let names = |m: &BTreeMap<PathBuf, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(plain), names(ours), "{what}: the same files");
    for (k, v) in plain {
        assert!(
            ours[k] == *v,
            "{what}: {} differs from the plain build ({} vs {} bytes)",
            k.display(),
            v.len(),
            ours[k].len()
        );
    }
}

/// Stops the fixture's mux when the test ends.
struct MuxStop<'a>(&'a Sshd);

impl Drop for MuxStop<'_> {
    fn drop(&mut self) {
        let mut cmd = Command::new(hoardcc_bin());
        self.0.apply_env(&mut cmd);
        cmd.args(["mux", "--stop"]);
        let _ = run_with_timeout(&mut cmd, T, "hoardcc mux --stop");
    }
}

const CMAKE_LISTS: &str = "cmake_minimum_required(VERSION 3.13)\nproject(geom C)\n\
    add_library(geom STATIC vec.c clamp.c str.c)\nadd_executable(prog main.c)\n\
    target_link_libraries(prog geom)\n";

/// CMake + Ninja, RelWithDebInfo (`-O2 -g`): with `CMAKE_C_COMPILER_LAUNCHER=hoardcc` every
/// object, dependency file (kept with `ninja -d keepdepfile`), the library and the program
/// equal a plain build's in the same build directory, and every compile ran remotely.
#[test]
fn cmake_ninja_launcher_builds_identical_objects() {
    require("cmake");
    require("ninja");
    let sshd = Sshd::start(SshdOptions::default());
    let _stop = MuxStop(&sshd);
    let p = Project::c_multi();
    std::fs::write(p.dir().join("CMakeLists.txt"), CMAKE_LISTS).unwrap();
    let build = p.dir().join("build");
    let log = p.dir().join("joblog");
    let keep = |n: &str| n.ends_with(".o") || n.ends_with(".d") || n.ends_with(".a") || n == "prog";
    let mut results = Vec::new();
    for launcher in [None, Some(hoardcc_bin())] {
        let _ = std::fs::remove_dir_all(&build);
        let mut configure = Command::new("cmake");
        fixture_env(&sshd, &mut configure, None)
            .current_dir(p.dir())
            .args(["-S", ".", "-B", "build", "-G", "Ninja"])
            .args([
                "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
                "-DCMAKE_C_COMPILER=gcc",
            ]);
        if let Some(l) = &launcher {
            configure.arg(format!("-DCMAKE_C_COMPILER_LAUNCHER={}", l.display()));
        }
        ok(
            &run_with_timeout(&mut configure, T, "cmake"),
            "cmake configure",
        );
        let _ = std::fs::remove_file(&log);
        let mut ninja = Command::new("ninja");
        fixture_env(&sshd, &mut ninja, Some(&log))
            .current_dir(p.dir())
            .args(["-C", "build", "-d", "keepdepfile", "-j", "2"]);
        ok(&run_with_timeout(&mut ninja, T, "ninja"), "ninja");
        let run = run_with_timeout(&mut Command::new(build.join("prog")), T, "prog");
        assert_eq!(String::from_utf8_lossy(&run.stdout), p.expected_stdout());
        let files = files_under(&build, &keep);
        let objects = files
            .keys()
            .filter(|k| k.extension().is_some_and(|e| e == "o"));
        assert_eq!(objects.count(), 4, "{:?}", files.keys());
        assert_eq!(
            files
                .keys()
                .filter(|k| k.extension().is_some_and(|e| e == "d"))
                .count(),
            4,
            "a kept .d per object: {:?}",
            files.keys()
        );
        if launcher.is_some() {
            assert_remote(&joblog(&log), 4, "cmake + ninja");
        } else {
            assert!(joblog(&log).is_empty(), "the plain build ran no hoardcc");
        }
        results.push(files);
    }
    assert_same_files(&results[0], &results[1], "CMake launcher build");
}

/// `CCACHE_DIR`, `CCACHE_CONFIGPATH` (empty config) and `CCACHE_PREFIX=hoardcc` for `cmd`.
fn ccache_env<'c>(cmd: &'c mut Command, cache: &Path) -> &'c mut Command {
    let conf = cache.join("ccache.conf");
    if !conf.exists() {
        std::fs::write(&conf, "").unwrap();
    }
    cmd.env("CCACHE_DIR", cache)
        .env("CCACHE_CONFIGPATH", &conf)
        .env("CCACHE_PREFIX", hoardcc_bin())
        .env_remove("CCACHE_DISABLE")
        .env_remove("CCACHE_BASEDIR")
}

fn ccache_stats(sshd: &Sshd, cache: &Path) -> BTreeMap<String, u64> {
    let mut cmd = Command::new("ccache");
    sshd.apply_env(&mut cmd);
    ccache_env(&mut cmd, cache).arg("--print-stats");
    let out = run_with_timeout(&mut cmd, T, "ccache --print-stats");
    ok(&out, "ccache --print-stats");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('\t')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// ccache with `CCACHE_PREFIX=hoardcc`: the first build misses and compiles every object
/// remotely; the second is all cache hits and runs no hoardcc job. Both give the objects a
/// plain gcc build gives.
#[test]
fn ccache_prefix_first_build_remote_then_all_hits() {
    require("ccache");
    let sshd = Sshd::start(SshdOptions::default());
    let _stop = MuxStop(&sshd);
    let p = Project::c_multi();
    let cache = tempfile::tempdir().unwrap();
    let log = p.dir().join("joblog");
    let flags = ["-O2", "-g", "-c"];
    let build = |wrapped: bool| -> BTreeMap<PathBuf, Vec<u8>> {
        for (src, obj) in p.sources().iter().zip(p.objects()) {
            let _ = std::fs::remove_file(p.dir().join(&obj));
            let mut cmd = Command::new(if wrapped { "ccache" } else { "gcc" });
            fixture_env(&sshd, &mut cmd, Some(&log)).current_dir(p.dir());
            if wrapped {
                ccache_env(&mut cmd, cache.path()).arg("gcc");
            }
            cmd.args(flags).arg(src).arg("-o").arg(&obj);
            ok(&run_with_timeout(&mut cmd, T, "compile"), "compile");
        }
        files_under(p.dir(), &|n: &str| n.ends_with(".o"))
    };
    let plain = build(false);
    assert!(joblog(&log).is_empty());
    let mut zero = Command::new("ccache");
    sshd.apply_env(&mut zero);
    ok(
        &run_with_timeout(
            ccache_env(&mut zero, cache.path()).arg("-z"),
            T,
            "ccache -z",
        ),
        "ccache -z",
    );

    let first = build(true);
    assert_same_files(&plain, &first, "first ccache build");
    assert_remote(&joblog(&log), 4, "first ccache build");
    let stats = ccache_stats(&sshd, cache.path());
    let hits = |s: &BTreeMap<String, u64>| {
        s.get("direct_cache_hit").copied().unwrap_or(0)
            + s.get("preprocessed_cache_hit").copied().unwrap_or(0)
    };
    assert_eq!(stats.get("cache_miss").copied(), Some(4), "{stats:?}");
    assert_eq!(hits(&stats), 0, "{stats:?}");

    let second = build(true);
    assert_same_files(&plain, &second, "second ccache build");
    assert_remote(&joblog(&log), 4, "no new job in the second build");
    let stats = ccache_stats(&sshd, cache.path());
    assert_eq!(hits(&stats), 4, "{stats:?}");
    assert_eq!(stats.get("cache_miss").copied(), Some(4), "{stats:?}");
}

const MAKEFILE: &str = "OBJS = main.o vec.o clamp.o str.o\n\
    prog: $(OBJS)\n\tgcc -o $@ $(OBJS)\n\
    %.o: %.c geom.h\n\tgcc -O2 -g -c $< -o $@\n";

/// Most processes a `make -j2` of the project may have at once (make, the shells, and per
/// job ccache → hoardcc → gcc → cc1/as); a loop through the wrappers passes it at once.
const MAX_PROCESSES: usize = 40;

/// Runs `cmd` in a new process group, counting its descendants every 20 ms; kills the
/// group and panics when they pass [`MAX_PROCESSES`] or `T` passes. Returns the output and
/// the most processes seen.
fn run_bounded(cmd: &mut Command, what: &str) -> (Output, usize) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let child = cmd.spawn().unwrap_or_else(|e| panic!("{what}: spawn: {e}"));
    let pid = child.id() as i32;
    let waiter = std::thread::spawn(move || child.wait_with_output());
    let end = Instant::now() + T;
    let mut most = 0;
    while !waiter.is_finished() {
        let n = descendants(pid, |_| true).len();
        most = most.max(n);
        if n > MAX_PROCESSES || Instant::now() > end {
            let group = nix::unistd::Pid::from_raw(pid);
            while !waiter.is_finished() {
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            panic!("{what}: {n} processes (at most {MAX_PROCESSES} allowed) or timed out; killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (waiter.join().unwrap().expect("wait"), most)
}

/// A hoardcc masquerade directory next to ccache's `/usr/lib/ccache` under `make -j2`, in
/// both PATH orders (issue 8 #1): the build finishes with a bounded number of processes,
/// the objects are a plain build's, the program runs, and hoardcc says at most one line
/// per compile (the note that names `CCACHE_PREFIX=hoardcc`).
#[test]
fn masquerade_next_to_ccache_under_make_never_loops() {
    require("ccache");
    require("make");
    let ccache_dir = Path::new("/usr/lib/ccache");
    assert!(
        ccache_dir.join("gcc").exists(),
        "/usr/lib/ccache/gcc missing (the ccache package makes it)"
    );
    let sshd = Sshd::start(SshdOptions::default());
    let _stop = MuxStop(&sshd);
    let p = Project::c_multi();
    std::fs::write(p.dir().join("Makefile"), MAKEFILE).unwrap();
    let masq = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(hoardcc_bin(), masq.path().join("gcc")).unwrap();
    let system = std::env::var("PATH").unwrap();
    let objects = |n: &str| n.ends_with(".o");
    let clean = || {
        for o in p.objects() {
            let _ = std::fs::remove_file(p.dir().join(o));
        }
        let _ = std::fs::remove_file(p.dir().join("prog"));
    };
    let mut plain_make = Command::new("make");
    sshd.apply_env(&mut plain_make);
    plain_make.current_dir(p.dir()).arg("-j2");
    ok(
        &run_with_timeout(&mut plain_make, T, "plain make"),
        "plain make",
    );
    let plain = files_under(p.dir(), &objects);
    for (order, path) in [
        (
            "ccache first",
            format!(
                "{}:{}:{system}",
                ccache_dir.display(),
                masq.path().display()
            ),
        ),
        (
            "hoardcc first",
            format!(
                "{}:{}:{system}",
                masq.path().display(),
                ccache_dir.display()
            ),
        ),
    ] {
        clean();
        let cache = tempfile::tempdir().unwrap();
        let log = p.dir().join(format!("joblog-{}", order.replace(' ', "-")));
        let mut make = Command::new("make");
        fixture_env(&sshd, &mut make, Some(&log));
        std::fs::write(cache.path().join("ccache.conf"), "").unwrap();
        make.current_dir(p.dir())
            .env("PATH", &path)
            .env("CCACHE_DIR", cache.path())
            .env("CCACHE_CONFIGPATH", cache.path().join("ccache.conf"))
            .env_remove("CCACHE_PREFIX")
            .arg("-j2");
        let (out, most) = run_bounded(&mut make, order);
        ok(&out, order);
        // At most one note per compiler run (4 compiles and the link), each naming
        // CCACHE_PREFIX, and nothing else; each note is written in one write(2), so the
        // lines of `make -j2`'s two compiles never split or join.
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().collect();
        assert!(
            lines.len() <= p.sources().len() + 1
                && (err.is_empty() || err.ends_with('\n'))
                && lines.iter().all(|l| {
                    l.starts_with("hoardcc: note: ")
                        && l.contains("CCACHE_PREFIX")
                        && l.matches("hoardcc: ").count() == 1
                }),
            "{order}: stderr\n{err}"
        );
        assert_same_files(&plain, &files_under(p.dir(), &objects), order);
        let run = run_with_timeout(&mut Command::new(p.dir().join("prog")), T, "prog");
        assert_eq!(String::from_utf8_lossy(&run.stdout), p.expected_stdout());
        let log = joblog(&log);
        let remote = log.iter().filter(|l| l.starts_with("remote\t")).count();
        assert!(
            remote == p.sources().len() && !log.iter().any(|l| l.contains("fallback")),
            "{order}: every compile remote, no fallback: {log:#?}"
        );
        eprintln!("{order}: at most {most} processes; job log {log:#?}");
    }
}

const CONFIGURE_AC: &str =
    "AC_INIT([geom], [1.0])\nAC_PROG_CC\nAC_CONFIG_FILES([Makefile])\nAC_OUTPUT\n";

const MAKEFILE_IN: &str = "CC = @CC@\nCFLAGS = @CFLAGS@\nOBJS = main.o vec.o clamp.o str.o\n\
    prog: $(OBJS)\n\t$(CC) $(CFLAGS) -o $@ $(OBJS)\n\
    %.o: %.c geom.h\n\t$(CC) $(CFLAGS) -c $< -o $@\n";

/// Autotools (the README's `CC="hoardcc gcc"`): `autoconf`, then `./configure` with that
/// CC (its own test compiles go through hoardcc too), then `make -j2`: the generated
/// Makefile names hoardcc, every object of the project is compiled remotely, and the
/// program runs.
#[test]
fn autoconf_configure_with_cc_hoardcc_builds_remotely() {
    require("autoconf");
    let sshd = Sshd::start(SshdOptions::default());
    let _stop = MuxStop(&sshd);
    let p = Project::c_multi();
    std::fs::write(p.dir().join("configure.ac"), CONFIGURE_AC).unwrap();
    std::fs::write(p.dir().join("Makefile.in"), MAKEFILE_IN).unwrap();
    let out = run_with_timeout(Command::new("autoconf").current_dir(p.dir()), T, "autoconf");
    ok(&out, "autoconf");

    let cc = format!("{} gcc", hoardcc_bin().display());
    let log = p.dir().join("joblog");
    let mut configure = Command::new("./configure");
    fixture_env(&sshd, &mut configure, Some(&log))
        .current_dir(p.dir())
        .env("CC", &cc)
        .env("CFLAGS", "-O2");
    let out = run_with_timeout(&mut configure, T, "./configure");
    ok(&out, "./configure CC=\"hoardcc gcc\"");
    let makefile = std::fs::read_to_string(p.dir().join("Makefile")).unwrap();
    assert!(makefile.contains(&format!("CC = {cc}")), "{makefile}");
    let configure_jobs = joblog(&log);
    assert!(
        !configure_jobs.is_empty(),
        "configure's compiles did not go through hoardcc"
    );
    std::fs::remove_file(&log).unwrap();

    let mut make = Command::new("make");
    fixture_env(&sshd, &mut make, Some(&log))
        .current_dir(p.dir())
        .arg("-j2");
    let out = run_with_timeout(&mut make, T, "make -j2");
    ok(&out, "make -j2");
    let jobs = joblog(&log);
    let remote: Vec<&String> = jobs.iter().filter(|l| l.starts_with("remote\t")).collect();
    assert_eq!(remote.len(), p.sources().len(), "job log {jobs:#?}");
    for src in ["main.c", "vec.c", "clamp.c", "str.c"] {
        assert!(
            remote.iter().any(|l| l.contains(src)),
            "{src} not remote: {jobs:#?}"
        );
    }
    let run = run_with_timeout(&mut Command::new(p.dir().join("prog")), T, "prog");
    assert_eq!(String::from_utf8_lossy(&run.stdout), p.expected_stdout());
}
