//! End to end: the real `hoardcc` binary → a private real OpenSSH sshd → `hoardcc serve`
//! → real gcc, and stock distcc in both directions. Objects are compared byte for byte
//! with local builds; fallbacks are checked for their one warning and their outputs.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use hoardcc::mux::status::JobState;

use crate::faults::Client;
use crate::support::{
    hoardcc_bin, run_with_timeout, wait_until, Distccd, Project, Proxy, Sshd, SshdOptions,
};

const T: Duration = Duration::from_secs(120);

/// `hoardcc COMPILER ARGS…` in `dir`, isolated to `sshd`'s client HOME, with `hosts`.
fn hoardcc(sshd: &Sshd, dir: &Path, hosts: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(hoardcc_bin());
    sshd.apply_env(&mut cmd);
    cmd.current_dir(dir)
        .env("HOARDCC_HOSTS", hosts)
        .env("HOARDCC_IDLE_TIMEOUT", "20")
        .args(args);
    cmd
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

fn gcc_local(compiler: &str, dir: &Path, args: &[&str]) -> Output {
    let out = run_with_timeout(
        Command::new(compiler).current_dir(dir).args(args),
        T,
        "local compile",
    );
    ok(&out, "local compile");
    out
}

/// Compile every source of `p` locally and through `compile`, and require identical objects.
/// Each object is built in place (same cwd, same names) so paths in debug info agree.
fn compare_objects(
    p: &Project,
    compiler: &str,
    flags: &[&str],
    compile: &dyn Fn(&[&str]) -> Output,
) {
    let local_dir = p.dir().join("local-objs");
    std::fs::create_dir_all(&local_dir).unwrap();
    for (src, obj) in p.sources().iter().zip(p.objects()) {
        let (src, obj) = (src.to_str().unwrap(), obj.to_str().unwrap().to_string());
        let mut args: Vec<&str> = flags.to_vec();
        args.extend(["-c", src, "-o", &obj]);
        gcc_local(compiler, p.dir(), &args);
        let local = std::fs::read(p.dir().join(&obj)).unwrap();
        std::fs::remove_file(p.dir().join(&obj)).unwrap();
        let out = compile(&args);
        ok(&out, &format!("remote compile of {src}"));
        let remote =
            std::fs::read(p.dir().join(&obj)).unwrap_or_else(|e| panic!("{obj} missing: {e}"));
        assert!(
            local == remote,
            "{obj} differs from the local build with flags {flags:?} ({} vs {} bytes)",
            local.len(),
            remote.len()
        );
    }
}

fn joblog_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Every job in the log ran remotely.
fn assert_all_remote(log: &Path, n: usize) {
    let lines = joblog_lines(log);
    assert_eq!(lines.len(), n, "job log: {lines:#?}");
    for l in &lines {
        assert!(l.starts_with("remote\t"), "not remote: {l}");
    }
}

/// Builds `p` with each set of `flags`, locally and through hoardcc (`compiler` on
/// `@hoardtest/4`, fallback off), requiring identical objects and every job remote.
fn objects_are_identical(p: &Project, compiler: &str, flag_sets: &[&[&str]]) {
    let sshd = Sshd::start(SshdOptions::default());
    let log = p.dir().join("joblog");
    for flags in flag_sets {
        compare_objects(p, compiler, flags, &|args| {
            let mut a = vec![compiler];
            a.extend_from_slice(args);
            let mut cmd = hoardcc(&sshd, p.dir(), "@hoardtest/4", &a);
            cmd.env("HOARDCC_FALLBACK", "0").env("HOARDCC_JOBLOG", &log);
            run_with_timeout(&mut cmd, T, &format!("hoardcc {compiler}"))
        });
    }
    assert_all_remote(&log, flag_sets.len() * p.sources().len());
}

#[test]
fn c_objects_are_identical_with_and_without_g() {
    objects_are_identical(
        &Project::c_multi(),
        "gcc",
        &[
            &["-O2"],
            &["-O2", "-g"],
            &["-O0", "-g3"],
            &["-O1", "-g", "-DEXTRA=1", "-UNDEBUG"],
        ],
    );
}

#[test]
fn cxx_objects_are_identical_with_and_without_g() {
    objects_are_identical(
        &Project::cxx_multi(),
        "g++",
        &[&["-O1", "-std=c++17"], &["-O2", "-g", "-std=c++17"]],
    );
}

/// A masquerade symlink named `gcc` finds the real gcc, and the linked program runs.
#[test]
fn masquerade_build_links_and_runs() {
    let sshd = Sshd::start(SshdOptions::default());
    let p = Project::c_multi();
    let masq = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(hoardcc_bin(), masq.path().join("gcc")).unwrap();
    let path = format!(
        "{}:{}",
        masq.path().display(),
        std::env::var("PATH").unwrap()
    );
    let log = p.dir().join("joblog");
    for src in p.sources() {
        let mut cmd = Command::new(masq.path().join("gcc"));
        sshd.apply_env(&mut cmd);
        cmd.current_dir(p.dir())
            .env("PATH", &path)
            .env("HOARDCC_HOSTS", "@hoardtest")
            .env("HOARDCC_IDLE_TIMEOUT", "20")
            .env("HOARDCC_FALLBACK", "0")
            .env("HOARDCC_JOBLOG", &log)
            .args(["-O2", "-c", src.to_str().unwrap()]);
        ok(
            &run_with_timeout(&mut cmd, T, "masquerade gcc"),
            "masquerade gcc -c",
        );
    }
    assert_all_remote(&log, p.sources().len());
    // Linking goes through the symlink too, and runs locally.
    let objs: Vec<String> = p
        .objects()
        .iter()
        .map(|o| o.display().to_string())
        .collect();
    let mut link = Command::new(masq.path().join("gcc"));
    sshd.apply_env(&mut link);
    link.current_dir(p.dir())
        .env("PATH", &path)
        .env("HOARDCC_HOSTS", "@hoardtest")
        .args(&objs)
        .args(["-o", "prog"]);
    ok(&run_with_timeout(&mut link, T, "link"), "link");
    let run = run_with_timeout(&mut Command::new(p.dir().join("prog")), T, "prog");
    assert_eq!(String::from_utf8_lossy(&run.stdout), p.expected_stdout());
}

/// Dependency files are written locally and match a local compile's exactly.
#[test]
fn dependency_files_match_local() {
    let sshd = Sshd::start(SshdOptions::default());
    let p = Project::c_multi();
    std::fs::create_dir(p.dir().join("obj")).unwrap();
    let cases: &[&[&str]] = &[
        &["-MD", "-c", "vec.c", "-o", "obj/vec.o"],
        &["-MMD", "-MP", "-c", "vec.c", "-o", "obj/vec.o"],
        &[
            "-MMD",
            "-MF",
            "obj/deps.d",
            "-MT",
            "custom-target",
            "-c",
            "vec.c",
            "-o",
            "obj/vec.o",
        ],
        &["-Wp,-MD,obj/wp.d", "-c", "vec.c", "-o", "obj/vec.o"],
        &["-MD", "-c", "vec.c"],
    ];
    for args in cases {
        let d_files = ["obj/vec.d", "obj/deps.d", "obj/wp.d", "vec.d"];
        let clean = || {
            for f in d_files {
                let _ = std::fs::remove_file(p.dir().join(f));
            }
        };
        clean();
        gcc_local("gcc", p.dir(), args);
        let local: Vec<Option<Vec<u8>>> = d_files
            .iter()
            .map(|f| std::fs::read(p.dir().join(f)).ok())
            .collect();
        assert!(
            local.iter().any(Option::is_some),
            "local gcc wrote no .d for {args:?}"
        );
        clean();
        let mut a = vec!["gcc"];
        a.extend_from_slice(args);
        let mut cmd = hoardcc(&sshd, p.dir(), "@hoardtest", &a);
        cmd.env("HOARDCC_FALLBACK", "0");
        ok(
            &run_with_timeout(&mut cmd, T, "hoardcc -MD"),
            "hoardcc with dependency flags",
        );
        let remote: Vec<Option<Vec<u8>>> = d_files
            .iter()
            .map(|f| std::fs::read(p.dir().join(f)).ok())
            .collect();
        for (i, f) in d_files.iter().enumerate() {
            assert_eq!(
                local[i].as_deref().map(String::from_utf8_lossy),
                remote[i].as_deref().map(String::from_utf8_lossy),
                "{f} for {args:?}"
            );
        }
    }
}

/// A compile error on the server shows the compiler's own diagnostics and status (caret
/// lines quoted from the client's source, the client's locale), and leaves no object.
#[test]
fn remote_compile_error_matches_local_diagnostics() {
    let sshd = Sshd::start(SshdOptions::default());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("twice.h"),
        "#define TWICE(x) ((x) + (x))\nstatic int unused_in_header;\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("bad.c"),
        "#include \"twice.h\"\nint f(void) { return TWICE(undeclared_name); }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("warn.c"),
        "#include \"twice.h\"\nint g(int a) { int b; return TWICE(a); }\n#warning from cpp\n",
    )
    .unwrap();
    let log = dir.path().join("joblog");
    for src in ["bad.c", "warn.c"] {
        let obj = src.replace(".c", ".o");
        let args = ["-Wall", "-c", src, "-o", obj.as_str()];
        let local = run_with_timeout(
            Command::new("gcc")
                .current_dir(dir.path())
                .env("LANG", "C.UTF-8")
                .args(args),
            T,
            "local",
        );
        let _ = std::fs::remove_file(dir.path().join(&obj));
        let mut a = vec!["gcc"];
        a.extend_from_slice(&args);
        let mut cmd = hoardcc(&sshd, dir.path(), "@hoardtest", &a);
        cmd.env("HOARDCC_FALLBACK", "0")
            .env("HOARDCC_JOBLOG", &log)
            .env("LANG", "C.UTF-8");
        let remote = run_with_timeout(&mut cmd, T, "hoardcc");
        assert_eq!(remote.status.code(), local.status.code(), "{src}");
        // Exactly the same text, in the same order: `#warning` (the local preprocessor
        // has something to say) sends warn.c to the local compiler, which interleaves it
        // with the compiler's own warnings.
        assert_eq!(
            String::from_utf8_lossy(&remote.stderr),
            String::from_utf8_lossy(&local.stderr),
            "{src}"
        );
        assert_eq!(dir.path().join(&obj).exists(), local.status.success());
    }
    assert!(!dir.path().join("bad.o").exists());
    let jobs = std::fs::read_to_string(&log).unwrap();
    let kinds: Vec<&str> = jobs
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(kinds, ["remote", "local"], "{jobs}");
    assert!(
        jobs.lines()
            .nth(1)
            .unwrap()
            .contains("preprocessor printed diagnostics"),
        "{jobs}"
    );
}

/// With an empty host list, hoardcc compiles locally with exactly one warning line.
/// (The machine's /etc/distcc/hosts, which the distcc package installs, would otherwise
/// be read; an empty DISTCC_HOSTS is a present-but-empty list and shadows it.)
#[test]
fn no_hosts_compiles_locally_with_one_warning() {
    let sshd = Sshd::start(SshdOptions::default());
    let p = Project::c_multi();
    let mut cmd = Command::new(hoardcc_bin());
    sshd.apply_env(&mut cmd);
    cmd.current_dir(p.dir())
        .env("DISTCC_HOSTS", " # nothing here")
        .args(["gcc", "-c", "vec.c"]);
    let out = run_with_timeout(&mut cmd, T, "no hosts");
    ok(&out, "no hosts");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("empty"), "{err}");
    assert!(p.dir().join("vec.o").exists());
}

/// Distribution failures get exactly one local compile and one warning; with fallback off
/// they exit with a distcc code and leave no output file.
fn check_fallback(
    sshd: &Sshd,
    hosts: &str,
    expect_in_warning: &str,
    expect_code: std::ops::RangeInclusive<i32>,
) {
    let p = Project::c_multi();
    gcc_local("gcc", p.dir(), &["-O2", "-c", "vec.c", "-o", "vec.o"]);
    let local = std::fs::read(p.dir().join("vec.o")).unwrap();
    std::fs::remove_file(p.dir().join("vec.o")).unwrap();

    let mut cmd = hoardcc(
        sshd,
        p.dir(),
        hosts,
        &["gcc", "-O2", "-c", "vec.c", "-o", "vec.o"],
    );
    let out = run_with_timeout(&mut cmd, T, "fallback");
    ok(&out, "fallback compile");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one warning line expected: {err}");
    assert!(
        err.contains("warning") && err.contains(expect_in_warning),
        "{err}"
    );
    assert_eq!(std::fs::read(p.dir().join("vec.o")).unwrap(), local);
    std::fs::remove_file(p.dir().join("vec.o")).unwrap();

    let mut cmd = hoardcc(
        sshd,
        p.dir(),
        hosts,
        &["gcc", "-O2", "-c", "vec.c", "-o", "vec.o"],
    );
    cmd.env("HOARDCC_FALLBACK", "0");
    let out = run_with_timeout(&mut cmd, T, "no fallback");
    let code = out.status.code().unwrap_or(-1);
    assert!(
        expect_code.contains(&code),
        "exit {code}, stderr {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !p.dir().join("vec.o").exists(),
        "no output without fallback"
    );
    let leftovers: Vec<_> = std::fs::read_dir(p.dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".hoardcc"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}

#[test]
fn fallback_when_the_server_program_is_missing() {
    let sshd = Sshd::start(SshdOptions::default());
    check_fallback(
        &sshd,
        "@hoardtest:/nonexistent/bin/hoardcc",
        "hoardtest",
        100..=120,
    );
}

#[test]
fn fallback_when_the_host_key_changed() {
    let mut sshd = Sshd::start(SshdOptions::default());
    sshd.replace_host_key();
    check_fallback(&sshd, "@hoardtest", "host key", 100..=120);
}

#[test]
fn fallback_when_the_server_refuses_the_compiler() {
    let sshd = Sshd::start(SshdOptions::default());
    // A client-side compiler name that the server's allow-list does not know.
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/usr/bin/gcc", bin.path().join("mycc")).unwrap();
    let p = Project::c_multi();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap()
    );
    let mut cmd = hoardcc(
        &sshd,
        p.dir(),
        "@hoardtest",
        &["mycc", "-c", "vec.c", "-o", "vec.o"],
    );
    cmd.env("PATH", &path);
    let out = run_with_timeout(&mut cmd, T, "refused");
    ok(&out, "refused → local");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused") && err.lines().count() == 1, "{err}");
    // The host is named once (not `hoardtest: hoardtest refused …`).
    assert_eq!(err.matches("hoardtest").count(), 1, "{err}");
    assert!(p.dir().join("vec.o").exists());
    let mut cmd = hoardcc(
        &sshd,
        p.dir(),
        "@hoardtest",
        &["mycc", "-c", "vec.c", "-o", "vec2.o"],
    );
    cmd.env("PATH", &path).env("HOARDCC_FALLBACK", "0");
    let out = run_with_timeout(&mut cmd, T, "refused, no fallback");
    assert_eq!(
        out.status.code(),
        Some(113),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!p.dir().join("vec2.o").exists());
}

/// The server process is killed while it compiles: the wrapper compiles locally once and
/// the object is correct.
#[test]
fn fallback_when_the_server_is_killed_mid_job() {
    let sshd = Sshd::start(SshdOptions::default());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("slow.c"), slow_source()).unwrap();
    gcc_local("gcc", dir.path(), &["-O2", "-c", "slow.c", "-o", "slow.o"]);
    let local = std::fs::read(dir.path().join("slow.o")).unwrap();
    std::fs::remove_file(dir.path().join("slow.o")).unwrap();

    let mut cmd = hoardcc(
        &sshd,
        dir.path(),
        "@hoardtest",
        &["gcc", "-O2", "-c", "slow.c", "-o", "slow.o"],
    );
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    // Wait until this fixture's server runs the compiler, then kill that server process.
    // (Other tests run servers as the same user: match this fixture's own binary path.)
    let pattern = format!("{} serve", sshd.server_hoardcc().display());
    let children = |pid: &str| -> Vec<String> {
        let out = Command::new("pgrep").args(["-P", pid]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let mut server = String::new();
    wait_until(T, "the remote compiler to start", || {
        let out = Command::new("pgrep")
            .args(["-f", &pattern])
            .output()
            .unwrap();
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            // serve → gcc → cc1
            if children(pid).iter().any(|gcc| !children(gcc).is_empty()) {
                server = pid.to_string();
                return true;
            }
        }
        false
    });
    let killed = Command::new("kill")
        .args(["-KILL", &server])
        .status()
        .unwrap();
    assert!(killed.success(), "could not kill the server {server}");
    let out = child.wait_with_output().unwrap();
    ok(&out, "compile after the server was killed");
    let err = String::from_utf8_lossy(&out.stderr);
    // Either the mux retried the job on a fresh lane (no warning), or it fell back to
    // one local compile (one warning). Never more, and the object is right either way.
    assert!(err.lines().count() <= 1, "{err}");
    assert_eq!(std::fs::read(dir.path().join("slow.o")).unwrap(), local);
}

/// Without the mux (`HOARDCC_MUX=0`) a full server (BUSY) is asked again after a pause:
/// two jobs against a one-slot server both run remotely, one after the other.
#[test]
fn direct_path_waits_out_a_busy_server() {
    let sshd = Sshd::start(SshdOptions {
        server_toml: Some("[server]\nmax_jobs = 1\n".into()),
        ..SshdOptions::default()
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("slow.c"), slow_source()).unwrap();
    gcc_local("gcc", dir.path(), &["-O1", "-c", "slow.c", "-o", "local.o"]);
    let local = std::fs::read(dir.path().join("local.o")).unwrap();
    let log = dir.path().join("joblog");
    let children: Vec<_> = ["a.o", "b.o"]
        .iter()
        .map(|obj| {
            let mut cmd = hoardcc(
                &sshd,
                dir.path(),
                "@hoardtest/4",
                &["gcc", "-O1", "-c", "slow.c", "-o", obj],
            );
            cmd.env("HOARDCC_MUX", "0")
                .env("HOARDCC_FALLBACK", "0")
                .env("HOARDCC_LOG", "hoardcc=debug")
                .env("HOARDCC_JOBLOG", &log)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    let mut stderr = String::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        ok(&out, "direct compile against a one-slot server");
        stderr.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    assert!(stderr.contains("server busy; asking again"), "{stderr}");
    assert_all_remote(&log, 2);
    for obj in ["a.o", "b.o"] {
        assert_eq!(std::fs::read(dir.path().join(obj)).unwrap(), local, "{obj}");
    }
}

/// A C file that takes gcc -O2 a few seconds.
fn slow_source() -> String {
    let mut s = String::from("#define R(x) x = (x * 1103515245u + 12345u) ^ (x >> 7);\n");
    for f in 0..600 {
        s.push_str(&format!("unsigned f{f}(unsigned x) {{ for (int i = 0; i < 64; i++) {{ R(x) R(x) R(x) R(x) if (x % {m} == 3) x += i; }} return x; }}\n", m = f + 7));
    }
    s
}

/// Stock distcc client → hoardcc acting as `distccd --inetd` over ssh.
#[test]
fn stock_distcc_client_to_hoardcc_server_over_ssh() {
    let sshd = Sshd::start(SshdOptions::default());
    let p = Project::c_multi();
    let hosts = format!("@hoardtest:{}", sshd.server_distccd().display());
    compare_objects(&p, "gcc", &["-O2"], &|args| {
        let mut cmd = Command::new("distcc");
        sshd.apply_env(&mut cmd);
        cmd.current_dir(p.dir())
            .env("DISTCC_HOSTS", &hosts)
            .env("DISTCC_SSH", sshd.distcc_ssh())
            .env("DISTCC_FALLBACK", "0")
            .env("DISTCC_SKIP_LOCAL_RETRY", "1")
            .arg("gcc")
            .args(args);
        run_with_timeout(&mut cmd, T, "distcc → hoardcc")
    });
}

/// hoardcc client → stock distccd over TCP, plain and with `,lzo`.
#[test]
fn hoardcc_client_to_stock_distccd_over_tcp() {
    let sshd = Sshd::start(SshdOptions::default());
    let distccd = Distccd::start();
    let p = Project::c_multi();
    for opt in ["", ",lzo"] {
        let hosts = format!("127.0.0.1:{}{opt}", distccd.port());
        let log = p.dir().join(format!("joblog{opt}"));
        compare_objects(&p, "gcc", &["-O2"], &|args| {
            let mut a = vec!["gcc"];
            a.extend_from_slice(args);
            let mut cmd = hoardcc(&sshd, p.dir(), &hosts, &a);
            cmd.env("HOARDCC_FALLBACK", "0").env("HOARDCC_JOBLOG", &log);
            run_with_timeout(&mut cmd, T, "hoardcc → distccd")
        });
        assert_all_remote(&log, p.sources().len());
    }
}

/// hoardcc client → stock `distccd --inetd` on an ssh exec channel, for a host whose sshd
/// has no hoardcc subsystem.
#[test]
fn hoardcc_client_to_stock_distccd_over_ssh_exec() {
    let sshd = Sshd::start(SshdOptions {
        subsystem: false,
        ..SshdOptions::default()
    });
    let p = Project::cxx_multi();
    let log = p.dir().join("joblog");
    compare_objects(&p, "g++", &["-O2"], &|args| {
        let mut a = vec!["g++"];
        a.extend_from_slice(args);
        let mut cmd = hoardcc(&sshd, p.dir(), "@hoardtest", &a);
        cmd.env("HOARDCC_FALLBACK", "0").env("HOARDCC_JOBLOG", &log);
        run_with_timeout(&mut cmd, T, "hoardcc → distccd --inetd")
    });
    assert_all_remote(&log, p.sources().len());
}

/// The first job on a host that turns out to speak distcc's wire (no `hoardcc`
/// subsystem, so `distccd` over exec) is reserved for hoardcc's own wire while the mux
/// connects, answered `Rewire` once the lane shows the other one, and preprocessed again.
/// The proxy in front of sshd holds every byte until `hoardcc status` shows the job past
/// its reservation, so no lane can have told the wire before the reservation did; the
/// object is still gcc's, byte for byte.
#[test]
fn a_first_job_is_rewired_when_the_host_turns_out_to_speak_distcc() {
    let sshd = Sshd::start(SshdOptions {
        subsystem: false,
        ..SshdOptions::default()
    });
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], sshd.port())));
    let hosts = format!("@{}", proxy.alias_for(&sshd));
    let p = Project::c_multi();
    let log = p.dir().join("joblog");
    let client = Client::new(&sshd);
    let first = std::cell::Cell::new(true);
    // No -g: a stock distccd compiles a classic `.i`, whose `-g` objects differ (README).
    compare_objects(&p, "gcc", &["-O2"], &|args| {
        let mut a = vec!["gcc"];
        a.extend_from_slice(args);
        let mut cmd = hoardcc(&sshd, p.dir(), &hosts, &a);
        cmd.env("HOARDCC_FALLBACK", "0").env("HOARDCC_JOBLOG", &log);
        if !first.replace(false) {
            return run_with_timeout(&mut cmd, T, "hoardcc gcc");
        }
        proxy.freeze();
        let build = std::thread::spawn(move || run_with_timeout(&mut cmd, T, "hoardcc gcc"));
        wait_until(T, "the first job reserved while the link is frozen", || {
            client
                .status()
                .is_some_and(|s| s.jobs.iter().any(|j| j.state != JobState::Waiting))
        });
        proxy.thaw();
        build.join().unwrap()
    });
    assert_all_remote(&log, p.sources().len());
    let mux_log = sshd.client_home().join(".local/state/hoardcc/mux.log");
    let text = std::fs::read_to_string(&mux_log).unwrap_or_default();
    assert_eq!(
        text.matches("the wrapper preprocesses again").count(),
        1,
        "one rewire (the first job's) in {}:\n{text}",
        mux_log.display()
    );
}

/// Objects with -gsplit-dwarf: the .dwo comes back and both files match a local build.
#[test]
fn split_dwarf_brings_the_dwo_back() {
    let sshd = Sshd::start(SshdOptions::default());
    let p = Project::c_multi();
    let args = ["-O2", "-g", "-gsplit-dwarf", "-c", "vec.c", "-o", "vec.o"];
    gcc_local("gcc", p.dir(), &args);
    let files = ["vec.o", "vec.dwo"];
    let local: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(p.dir().join(f)).unwrap())
        .collect();
    for f in files {
        std::fs::remove_file(p.dir().join(f)).unwrap();
    }
    let mut a = vec!["gcc"];
    a.extend_from_slice(&args);
    let mut cmd = hoardcc(&sshd, p.dir(), "@hoardtest", &a);
    cmd.env("HOARDCC_FALLBACK", "0");
    ok(&run_with_timeout(&mut cmd, T, "split dwarf"), "split dwarf");
    for (f, l) in files.iter().zip(local) {
        let r = std::fs::read(p.dir().join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(r == l, "{f} differs");
    }
}

/// The server's compiler runs sandboxed over the real sshd: a source whose `.incbin`
/// names a file outside the job directory (here a secret beside the test, which the
/// server can see because it runs on this machine) fails remotely (gas says "file not
/// found" for the denied open), while the same compile succeeds locally.
#[test]
fn remote_compiler_is_sandboxed() {
    let sshd = Sshd::start(SshdOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("id_ed25519");
    std::fs::write(&secret, "e2e-secret").unwrap();
    std::fs::write(
        dir.path().join("steal.c"),
        format!("asm(\".incbin \\\"{}\\\"\");\n", secret.display()),
    )
    .unwrap();
    let args = ["gcc", "-c", "steal.c", "-o", "steal.o"];
    gcc_local("gcc", dir.path(), &args[1..]);
    std::fs::remove_file(dir.path().join("steal.o")).unwrap();
    let log = dir.path().join("joblog");
    let mut cmd = hoardcc(&sshd, dir.path(), "@hoardtest", &args);
    cmd.env("HOARDCC_FALLBACK", "0").env("HOARDCC_JOBLOG", &log);
    let out = run_with_timeout(&mut cmd, T, "hoardcc");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the remote compile read the secret");
    assert!(err.contains("id_ed25519"), "{err}");
    assert!(!dir.path().join("steal.o").exists());
    assert_all_remote(&log, 1);
}
