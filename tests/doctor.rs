//! `hoardcc doctor` against the private real sshd: a healthy host passes every step with a
//! real compile; each failure stops at its own ✗ line with its fix, and the steps after it
//! are skipped: an unknown host key, a wrong user, a dead port, no `hoardcc` subsystem, a
//! host entry naming a missing server binary, and a mismatched compiler.
//!
//! Neighbours: tests/support (the sshd fixture); src/cli/doctor.rs.

use std::io::Write as _;
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::{free_port, hoardcc_bin, run_with_timeout, Sshd, SshdOptions};

/// Upper bound for one `hoardcc doctor` run.
const T: Duration = Duration::from_secs(90);

fn doctor(sshd: &Sshd, hosts: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(hoardcc_bin());
    sshd.apply_env(&mut cmd);
    cmd.env("HOARDCC_HOSTS", hosts).arg("doctor").args(args);
    let out = run_with_timeout(&mut cmd, T, "hoardcc doctor");
    // Shown when a test fails (and with --nocapture).
    eprintln!(
        "$ hoardcc doctor {args:?} ({})\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The report's step lines, without their indentation.
fn steps(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("  "))
        .map(|l| l.trim_start().to_string())
        .collect()
}

/// The line of step `name`.
fn step<'a>(lines: &'a [String], name: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l[l.find(' ').map_or(0, |i| i + 1)..].starts_with(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name:?} step in {lines:#?}"))
}

/// Every step after `name` is marked skipped.
fn skipped_after(lines: &[String], name: &str) {
    let at = lines
        .iter()
        .position(|l| l.contains(&format!(" {name}: ")))
        .expect("step present");
    assert!(at + 1 < lines.len(), "steps follow {name}: {lines:#?}");
    for l in &lines[at + 1..] {
        assert!(
            l.starts_with("- ") && l.ends_with(": skipped"),
            "{lines:#?}"
        );
    }
}

#[test]
fn healthy_host_passes_every_step() {
    let sshd = Sshd::start(SshdOptions::default());
    let entry = format!("@{}", sshd.alias());
    let out = doctor(&sshd, &entry, &[]);
    let lines = steps(&out);
    assert!(out.status.success(), "{out:?}");
    for line in &lines {
        assert!(line.starts_with("✓ "), "{lines:#?}");
    }
    // The fixed steps in order, one line per local compiler before the compile.
    let names: Vec<&str> = lines
        .iter()
        .map(|l| &l[4..l.find(": ").unwrap()])
        .filter(|n| !n.starts_with("compiler "))
        .collect();
    assert_eq!(
        names,
        [
            "ssh config",
            "DNS",
            "TCP connect",
            "host key",
            "authentication",
            "route",
            "server version",
            "compile",
        ],
        "{lines:#?}"
    );
    // This machine's gcc is the server's (the same machine).
    let gcc = step(&lines, "compiler gcc");
    assert!(gcc.contains("; on the server: gcc (/usr/bin/gcc)"), "{gcc}");
    let config = step(&lines, "ssh config");
    assert!(
        config.contains("HostName 127.0.0.1")
            && config.contains(&format!("User {}", sshd.login_user()))
            && config.contains(&format!("Port {}", sshd.port()))
            && config.contains(&sshd.client_key_path().display().to_string())
            && config.contains("ProxyJump none"),
        "{config}"
    );
    assert!(
        step(&lines, "authentication").contains("identity file"),
        "{lines:#?}"
    );
    assert!(step(&lines, "route").contains("subsystem"), "{lines:#?}");
    assert!(
        step(&lines, "server version").contains(&format!("hoardcc {}", env!("CARGO_PKG_VERSION"))),
        "{lines:#?}"
    );
    assert!(
        step(&lines, "compile").contains("-byte object"),
        "{lines:#?}"
    );
    // Named by its alias alone, the listed entry is found.
    let out = doctor(&sshd, &entry, &[sshd.alias()]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&format!("{entry} (")));
}

#[test]
fn unknown_host_key() {
    let sshd = Sshd::start(SshdOptions::default());
    std::fs::write(sshd.known_hosts_path(), "").unwrap();
    let out = doctor(&sshd, &format!("@{}", sshd.alias()), &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let lines = steps(&out);
    let line = step(&lines, "host key");
    assert!(line.starts_with("✗ host key: "), "{line}");
    assert!(line.contains(&sshd.host_key_fingerprint()), "{line}");
    let fix = format!(
        "ssh-keyscan -p {} 127.0.0.1 >> {}",
        sshd.port(),
        sshd.known_hosts_path().display()
    );
    assert!(line.contains(&fix), "{line}");
    assert!(line.contains(&format!("ssh {}", sshd.alias())), "{line}");
    skipped_after(&lines, "host key");
    // Following the fix works: the server's key is in known_hosts again.
    sshd.write_known_hosts();
    assert!(doctor(&sshd, &format!("@{}", sshd.alias()), &[])
        .status
        .success());
}

#[test]
fn wrong_user() {
    let sshd = Sshd::start(SshdOptions::default());
    let entry = format!("nosuchuser@{}", sshd.alias());
    let out = doctor(&sshd, &entry, &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let lines = steps(&out);
    assert!(step(&lines, "host key").starts_with("✓ "), "{lines:#?}");
    let line = step(&lines, "authentication");
    assert!(
        line.starts_with("✗ authentication: nosuchuser@127.0.0.1 refused"),
        "{line}"
    );
    assert!(
        line.contains(&sshd.client_key_path().display().to_string()),
        "{line}"
    );
    assert!(
        line.contains("check the login name \"nosuchuser\"")
            && line.contains("~nosuchuser/.ssh/authorized_keys"),
        "{line}"
    );
    skipped_after(&lines, "authentication");
}

#[test]
fn dead_port() {
    let sshd = Sshd::start(SshdOptions::default());
    let dead = free_port();
    let mut config = std::fs::OpenOptions::new()
        .append(true)
        .open(sshd.ssh_config_path())
        .unwrap();
    write!(config, "{}", sshd.client_host_block("deadport", dead)).unwrap();
    drop(config);
    let out = doctor(&sshd, "@deadport", &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let lines = steps(&out);
    assert!(
        step(&lines, "DNS").starts_with("✓ DNS: 127.0.0.1 → 127.0.0.1"),
        "{lines:#?}"
    );
    let line = step(&lines, "TCP connect");
    assert!(
        line.starts_with(&format!(
            "✗ TCP connect: cannot connect to 127.0.0.1 port {dead}"
        )),
        "{line}"
    );
    assert!(
        line.contains("is sshd running on 127.0.0.1 and listening on port"),
        "{line}"
    );
    skipped_after(&lines, "TCP connect");
}

#[test]
fn no_subsystem() {
    let sshd = Sshd::start(SshdOptions {
        subsystem: false,
        ..SshdOptions::default()
    });
    let out = doctor(&sshd, &format!("@{}", sshd.alias()), &[]);
    let lines = steps(&out);
    let line = step(&lines, "route");
    assert!(
        line.starts_with(&format!(
            "✗ route: sshd on {} has no `hoardcc` subsystem; trying stock `distccd --inetd`",
            sshd.alias()
        )),
        "{line}"
    );
    assert!(
        line.contains("add `Subsystem hoardcc /usr/bin/hoardcc serve` to the server's sshd_config")
            && line.contains(&format!("hoardcc install-server @{}", sshd.alias())),
        "{line}"
    );
    // Not fatal by itself: the walk goes on with the stock distccd fallback.
    assert!(
        !step(&lines, "compile").ends_with(": skipped"),
        "{lines:#?}"
    );
}

#[test]
fn missing_server_binary() {
    let sshd = Sshd::start(SshdOptions::default());
    let entry = format!("@{}:/nonexistent/hoardcc", sshd.alias());
    let out = doctor(&sshd, &entry, &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let lines = steps(&out);
    assert!(
        step(&lines, "authentication").starts_with("✓ "),
        "{lines:#?}"
    );
    let line = step(&lines, "route");
    assert!(
        line.starts_with("✗ route: exec `/nonexistent/hoardcc serve` failed"),
        "{line}"
    );
    assert!(
        line.contains(&format!(
            "is /nonexistent/hoardcc installed on {a}? check with `ssh {a} /nonexistent/hoardcc --version`",
            a = sshd.alias()
        )),
        "{line}"
    );
    skipped_after(&lines, "route");
}

/// A client PATH whose `gcc` says it is 99.1.0 (and otherwise runs the real gcc), in front
/// of `rest` (`None`: nothing else).
fn lying_gcc(rest: Option<&str>) -> (tempfile::TempDir, String) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let gcc = dir.path().join("gcc");
    std::fs::write(
        &gcc,
        "#!/bin/sh\ncase \"$1\" in -dumpfullversion) echo 99.1.0; exit 0;; esac\nexec /usr/bin/gcc \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&gcc, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = match rest {
        Some(r) => format!("{}:{r}", dir.path().display()),
        None => dir.path().display().to_string(),
    };
    (dir, path)
}

fn doctor_with_path(sshd: &Sshd, path: &str) -> Output {
    let mut cmd = Command::new(hoardcc_bin());
    sshd.apply_env(&mut cmd);
    cmd.env("HOARDCC_HOSTS", format!("@{}", sshd.alias()))
        .env("PATH", path)
        .arg("doctor");
    let out = run_with_timeout(&mut cmd, T, "hoardcc doctor");
    eprintln!(
        "$ PATH={path} hoardcc doctor ({})\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn mismatched_compiler() {
    let sshd = Sshd::start(SshdOptions::default());
    let real = gcc_full_version();
    // Next to the other compilers: gcc alone has no match; the host stays usable.
    let (_shim, path) = lying_gcc(Some("/usr/local/bin:/usr/bin:/bin"));
    let out = doctor_with_path(&sshd, &path);
    let lines = steps(&out);
    let line = step(&lines, "compiler gcc");
    assert!(
        line.starts_with(&format!(
            "✗ compiler gcc: no compiler on the server matches gcc 99.1.0 (x86_64-linux-gnu); \
             gcc there is {real} (x86_64-linux-gnu)"
        )),
        "{line}"
    );
    assert!(
        line.contains(&format!(
            "— fix: jobs for gcc compile locally until {} has the same compiler (same \
             version, target and configuration) on its PATH, under its own name or a \
             versioned one such as gcc-MAJOR",
            sshd.alias()
        )),
        "{line}"
    );
    assert!(step(&lines, "compiler cc").starts_with("✓ "), "{lines:#?}");
    assert!(step(&lines, "compile").starts_with("✓ "), "{lines:#?}");
    assert!(
        out.status.success(),
        "other compilers still go there: {out:?}"
    );

    // Alone on PATH: nothing this machine has is on the server; the host is unusable.
    let (_shim, path) = lying_gcc(None);
    let out = doctor_with_path(&sshd, &path);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let lines = steps(&out);
    assert!(step(&lines, "compiler gcc").starts_with("✗ "), "{lines:#?}");
    let line = step(&lines, "compilers");
    assert!(
        line.starts_with(&format!(
            "✗ compilers: no compiler of this machine has its match on {}",
            sshd.alias()
        )),
        "{line}"
    );
    skipped_after(&lines, "compilers");
}

/// The real gcc's full version here (and on the fixture's server: the same machine).
fn gcc_full_version() -> String {
    let out = Command::new("gcc")
        .arg("-dumpfullversion")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
