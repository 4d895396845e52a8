//! Tests of the test fixtures themselves: the private sshd really logs in with `/bin/sh`, its
//! config carries (or omits) the hoardcc Subsystem, host-key changes are refused, listeners can
//! be killed and restarted, several instances coexist, stock distcc really compiles through the
//! stock distccd fixture, and the sample projects build and run.
//!
//! Neighbours: tests/support (the fixtures under test); later test modules build on them.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::{run_with_timeout, Distccd, Project, Sshd, SshdOptions, TEST_USER};

const T: Duration = Duration::from_secs(60);

fn ssh(sshd: &Sshd, remote: &str) -> Output {
    run_with_timeout(&mut sshd.ssh(&[remote]), T, "ssh")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed with {}:\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sshd_logs_in_with_sh_as_login_user() {
    let sshd = Sshd::start(SshdOptions::default());
    let out = ssh(&sshd, "echo $0; id -un");
    assert_ok(&out, "ssh echo $0");
    let text = stdout(&out);
    let mut lines = text.lines();
    let shell = lines.next().unwrap_or_default();
    if nix::unistd::geteuid().is_root() {
        assert!(
            shell == "/bin/sh" || shell == "sh",
            "login shell is {shell:?}"
        );
    } else {
        assert!(!shell.is_empty(), "no $0 from the login shell");
    }
    assert_eq!(lines.next(), Some(sshd.login_user()));
    if nix::unistd::geteuid().is_root() {
        // Run as root, the fixture logs in as its unprivileged user, never as root.
        assert_eq!(sshd.login_user(), TEST_USER);
    }
    // The client side is hermetic: the config points at the fixture's own key and known_hosts.
    let config = std::fs::read_to_string(sshd.ssh_config_path()).unwrap();
    assert!(
        config.contains(&format!("Port {}", sshd.port())),
        "{config}"
    );
    assert!(config.contains("StrictHostKeyChecking yes"), "{config}");
    let known = std::fs::read_to_string(sshd.known_hosts_path()).unwrap();
    assert_eq!(
        known.trim(),
        format!("[127.0.0.1]:{} {}", sshd.port(), sshd.host_public_key())
    );
    assert!(
        sshd.log().contains("Accepted publickey for"),
        "{}",
        sshd.log()
    );
}

#[test]
fn subsystem_line_points_at_copied_binary() {
    let sshd = Sshd::start(SshdOptions::default());
    let bin = sshd.bin_dir().join("hoardcc");
    let line = format!("Subsystem hoardcc {}", sshd.serve_command());
    assert!(
        line.ends_with(&format!(" {} serve", bin.display())),
        "{line}"
    );
    assert!(
        sshd.config_text().lines().any(|l| l == line),
        "missing {line:?} in:\n{}",
        sshd.config_text()
    );
    assert_eq!(
        std::fs::read(&bin).unwrap(),
        std::fs::read(crate::support::hoardcc_bin()).unwrap(),
        "the subsystem binary is a copy of the one under test"
    );
    assert_eq!(
        std::fs::read_link(sshd.bin_dir().join("distccd")).unwrap(),
        Path::new("hoardcc")
    );
    // The login user (hoardtest when root) can reach and run the copy.
    let out = ssh(
        &sshd,
        &format!(
            "test -x {b} && test -r {b} && test -x {d} && echo ok",
            b = bin.display(),
            d = sshd.bin_dir().join("distccd").display()
        ),
    );
    assert_ok(&out, "ssh test -x");
    assert_eq!(stdout(&out), "ok");
}

#[test]
fn subsystem_line_absent_when_disabled() {
    let sshd = Sshd::start(SshdOptions {
        subsystem: false,
        max_sessions: Some(3),
        extra: vec!["ClientAliveInterval 30".into()],
        ..SshdOptions::default()
    });
    let cfg = sshd.config_text();
    assert!(!cfg.contains("Subsystem"), "{cfg}");
    assert!(cfg.lines().any(|l| l == "MaxSessions 3"), "{cfg}");
    assert!(cfg.lines().any(|l| l == "ClientAliveInterval 30"), "{cfg}");
    // Without the subsystem, requesting it fails; logins still work.
    let out = run_with_timeout(
        sshd.ssh(&[]).args(["-s", "hoardcc"]).arg("-T"),
        T,
        "ssh -s hoardcc",
    );
    assert!(
        !out.status.success(),
        "subsystem request succeeded: {out:?}"
    );
    assert_ok(&ssh(&sshd, "true"), "ssh true");
}

#[test]
fn changed_host_key_is_refused() {
    let mut sshd = Sshd::start(SshdOptions::default());
    let before = sshd.host_key_fingerprint();
    assert!(before.starts_with("SHA256:"), "{before}");
    let port = sshd.port();
    sshd.replace_host_key();
    assert_eq!(sshd.port(), port);
    assert_ne!(sshd.host_key_fingerprint(), before);
    let out = ssh(&sshd, "true");
    assert!(!out.status.success(), "ssh accepted a changed host key");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            || err.contains("Host key verification failed"),
        "{err}"
    );
    // Trusting the new key makes the same server reachable again: the failure was the key.
    sshd.write_known_hosts();
    assert_ok(&ssh(&sshd, "true"), "ssh after trusting the new key");
}

#[test]
fn kill_stops_listener_and_restart_reuses_port() {
    let mut sshd = Sshd::start(SshdOptions::default());
    let port = sshd.port();
    sshd.kill();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still accepts after kill"
    );
    assert!(!ssh(&sshd, "true").status.success());
    sshd.restart();
    assert_eq!(sshd.port(), port);
    assert_ok(&ssh(&sshd, "true"), "ssh after restart");
}

#[test]
fn two_sshd_instances_run_at_once() {
    let a = Sshd::start(SshdOptions::default());
    let b = Sshd::start(SshdOptions::default());
    assert_ne!(a.port(), b.port());
    assert_ne!(a.client_home(), b.client_home());
    assert_ne!(a.host_key_fingerprint(), b.host_key_fingerprint());
    for s in [&a, &b] {
        let out = ssh(s, "echo hello");
        assert_ok(&out, "ssh echo");
        assert_eq!(stdout(&out), "hello");
    }
    // Each client only trusts its own server.
    let argv = a.ssh_command();
    let mut cross = Command::new(&argv[0]);
    cross
        .args(&argv[1..])
        .args(["-o", &format!("Port={}", b.port()), "hoardtest", "true"]);
    a.apply_env(&mut cross);
    let out = run_with_timeout(&mut cross, T, "ssh cross");
    assert!(
        !out.status.success(),
        "client a accepted server b's host key"
    );
}

#[test]
fn stock_distcc_compiles_through_stock_distccd() {
    let distccd = Distccd::start();
    let project = Project::c_multi();
    let home = tempfile::tempdir().unwrap();
    for src in project.sources() {
        let remote_obj = src.with_extension("distcc.o");
        let local_obj = src.with_extension("local.o");
        let mut cmd = Command::new("distcc");
        cmd.current_dir(project.dir())
            .env("HOME", home.path())
            .env("DISTCC_HOSTS", distccd.host())
            .env("DISTCC_FALLBACK", "0")
            .env_remove("DISTCC_VERBOSE")
            .args(["gcc", "-O2", "-c"])
            .arg(src)
            .arg("-o")
            .arg(&remote_obj);
        assert_ok(
            &run_with_timeout(&mut cmd, T, "distcc gcc -c"),
            "distcc gcc -c",
        );
        let mut cmd = Command::new("gcc");
        cmd.current_dir(project.dir())
            .args(["-O2", "-c"])
            .arg(src)
            .arg("-o")
            .arg(&local_obj);
        assert_ok(&run_with_timeout(&mut cmd, T, "gcc -c"), "gcc -c");
        let remote = std::fs::read(project.dir().join(&remote_obj)).unwrap();
        let local = std::fs::read(project.dir().join(&local_obj)).unwrap();
        assert!(!local.is_empty());
        assert!(
            remote == local,
            "{} differs from a local build",
            src.display()
        );
    }
    let log = distccd.log();
    assert_eq!(
        log.matches("COMPILE_OK").count(),
        project.sources().len(),
        "distccd did not compile every job:\n{log}"
    );
}

fn build_and_run(project: &Project, compiler: &str) {
    for src in project.sources() {
        let mut cmd = Command::new(compiler);
        cmd.current_dir(project.dir()).args(["-O1", "-c"]).arg(src);
        assert_ok(&run_with_timeout(&mut cmd, T, compiler), compiler);
    }
    let mut link = Command::new(compiler);
    link.current_dir(project.dir())
        .args(project.objects())
        .args(["-o", "prog"]);
    assert_ok(&run_with_timeout(&mut link, T, "link"), "link");
    // Every translation unit is needed (so a build that skips one cannot pass): the link
    // fails without any one of the objects.
    let objects = project.objects();
    for (i, left_out) in objects.iter().enumerate() {
        let mut link = Command::new(compiler);
        link.current_dir(project.dir())
            .args(
                objects
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != i)
                    .map(|(_, o)| o),
            )
            .args(["-o", "partial"]);
        let out = run_with_timeout(&mut link, T, "partial link");
        assert!(
            !out.status.success(),
            "linked without {}: the project does not need it",
            left_out.display()
        );
    }
    let out = run_with_timeout(&mut Command::new(project.dir().join("prog")), T, "prog");
    assert_ok(&out, "prog");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        project.expected_stdout()
    );
}

#[test]
fn c_project_builds_and_runs() {
    let p = Project::c_multi();
    build_and_run(&p, "gcc");
}

#[test]
fn cxx_project_builds_and_runs() {
    let p = Project::cxx_multi();
    build_and_run(&p, "g++");
}
