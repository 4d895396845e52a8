//! The setup commands against the real sshd (issue 11 items 6 and 7): `hoardcc
//! install-server` copies the binary into the fixture user's home over russh and prints a
//! host entry that then really builds; a second run changes nothing; a different binary
//! is refused without `--force`; `--forced-command` adds exactly one compile-only line
//! that works. `hoardcc masquerade DIR` makes links that compile.
//!
//! Each test gives sshd's sessions their own HOME (`SetEnv HOME=…`), so "the server
//! user's home" is a fresh directory and tests never share `~/.local/bin`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::support::{hoardcc_bin, run_with_timeout, wait_until, Sshd, SshdOptions};

const T: Duration = Duration::from_secs(180);

/// A server HOME the login user owns, inside a directory everyone may traverse.
struct ServerHome {
    _root: tempfile::TempDir,
    home: PathBuf,
}

impl ServerHome {
    fn new() -> ServerHome {
        let root = tempfile::Builder::new()
            .prefix("hoardcc-install-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let home = root.path().join("home");
        std::fs::create_dir(&home).unwrap();
        if nix::unistd::geteuid().is_root() {
            // The login user is then `hoardtest` (see support/sshd.rs).
            let user = nix::unistd::User::from_name(crate::support::TEST_USER)
                .ok()
                .flatten();
            if let Some(u) = user {
                nix::unistd::chown(&home, Some(u.uid), Some(u.gid)).unwrap();
            } else {
                std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o777)).unwrap();
            }
        }
        ServerHome { _root: root, home }
    }

    fn bin(&self) -> PathBuf {
        self.home.join(".local/bin/hoardcc")
    }

    fn authorized_keys(&self) -> PathBuf {
        self.home.join(".ssh/authorized_keys")
    }
}

/// sshd without the `hoardcc` subsystem (so only the installed binary can answer), whose
/// sessions see `home` as HOME.
fn start(home: &ServerHome) -> Sshd {
    Sshd::start(SshdOptions {
        subsystem: false,
        extra: vec![format!("SetEnv HOME={}", home.home.display())],
        extra_authorized_keys: Some(home.authorized_keys()),
        ..Default::default()
    })
}

fn install(sshd: &Sshd, args: &[&str]) -> Output {
    let mut cmd = Command::new(hoardcc_bin());
    sshd.apply_env(&mut cmd);
    cmd.arg("install-server").args(args);
    run_with_timeout(&mut cmd, T, "hoardcc install-server")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `host entry: …` line of a successful run.
fn host_entry(out: &Output) -> String {
    assert!(out.status.success(), "install-server failed: {}", text(out));
    stdout(out)
        .lines()
        .find_map(|l| l.strip_prefix("host entry: "))
        .unwrap_or_else(|| panic!("no host entry printed: {}", text(out)))
        .trim()
        .to_string()
}

/// Compile a small C file through `hosts` with the fallback off; the job log must say
/// remote, and the object must be there.
fn build_through(sshd: &Sshd, hosts: &str) {
    build_through_with(sshd, hosts, &[]);
}

/// [`build_through`] with extra environment (e.g. an ssh-agent socket).
fn build_through_with(sshd: &Sshd, hosts: &str, env: &[(&str, &Path)]) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("hello.c"),
        "int hello(int x) { return x * 7; }\n",
    )
    .unwrap();
    let log = dir.path().join("joblog");
    let mut cmd = Command::new(hoardcc_bin());
    sshd.apply_env(&mut cmd);
    cmd.current_dir(dir.path())
        .env("HOARDCC_HOSTS", hosts)
        .env("HOARDCC_FALLBACK", "0")
        .env("HOARDCC_JOBLOG", &log)
        .env("HOARDCC_IDLE_TIMEOUT", "20")
        .args(["gcc", "-O2", "-c", "hello.c", "-o", "hello.o"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run_with_timeout(&mut cmd, T, "hoardcc gcc");
    // The wrapper started a mux for this client HOME: stop it before looking further.
    let mut stop = Command::new(hoardcc_bin());
    sshd.apply_env(&mut stop);
    stop.args(["mux", "--stop"]);
    run_with_timeout(&mut stop, T, "hoardcc mux --stop");
    assert!(
        out.status.success(),
        "build through {hosts}: {}",
        text(&out)
    );
    assert!(dir.path().join("hello.o").exists());
    let joblog = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        joblog.lines().count() == 1 && joblog.starts_with("remote\t"),
        "not built remotely through {hosts}: {joblog:?}"
    );
}

#[test]
fn install_server_installs_builds_and_is_idempotent() {
    let home = ServerHome::new();
    let sshd = start(&home);

    let first = install(&sshd, &["@hoardtest"]);
    eprintln!("first run: {}", text(&first));
    let entry = host_entry(&first);
    assert_eq!(entry, "@hoardtest:~/.local/bin/hoardcc");
    let out = stdout(&first);
    assert!(out.contains("installed ~/.local/bin/hoardcc"), "{out}");
    assert!(out.contains("runs there: hoardcc "), "{out}");
    assert!(out.contains("route checked"), "{out}");
    // `hoardcc serve --check` ran there and listed the server's gcc.
    assert!(
        out.contains("server check (hoardcc serve --check there):"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("gcc ") && l.contains("/gcc")),
        "{out}"
    );
    assert_eq!(
        std::fs::read(home.bin()).unwrap(),
        std::fs::read(hoardcc_bin()).unwrap(),
        "the installed binary is this one"
    );
    let mode = std::fs::metadata(home.bin()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
    let leftovers: Vec<_> = std::fs::read_dir(home.bin().parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "hoardcc")
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");

    // The printed entry builds (no subsystem: only the installed binary can serve).
    build_through(&sshd, &entry);

    // A second run is a no-op.
    let inode = std::fs::metadata(home.bin()).unwrap().ino();
    let second = install(&sshd, &["@hoardtest"]);
    assert_eq!(host_entry(&second), entry);
    assert!(
        stdout(&second).contains("is up to date"),
        "{}",
        text(&second)
    );
    assert_eq!(
        std::fs::metadata(home.bin()).unwrap().ino(),
        inode,
        "rewritten"
    );

    // A different binary is refused without --force, and left as it was.
    let other = b"#!/bin/sh\necho hoardcc 0.0.1-other\n";
    // Put in place by a rename, as an install does: the old binary may still be running
    // (a lane's `serve` that has not noticed its channel close), so it cannot be written.
    let staged = home.bin().with_file_name("other-build");
    std::fs::write(&staged, other).unwrap();
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&staged, home.bin()).unwrap();
    let refused = install(&sshd, &["@hoardtest"]);
    eprintln!("refused: {}", text(&refused));
    assert!(!refused.status.success(), "{}", text(&refused));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("--force") && err.contains("another build"),
        "{err}"
    );
    assert!(
        err.contains("hoardcc 0.0.1-other"),
        "names what is there: {err}"
    );
    assert_eq!(std::fs::read(home.bin()).unwrap(), other);

    // With --force it is replaced, and builds again.
    let forced = install(&sshd, &["--force", "@hoardtest"]);
    assert_eq!(host_entry(&forced), entry);
    assert!(
        stdout(&forced).contains("replaced ~/.local/bin/hoardcc"),
        "{}",
        text(&forced)
    );
    assert_eq!(
        std::fs::read(home.bin()).unwrap(),
        std::fs::read(hoardcc_bin()).unwrap()
    );
    build_through(&sshd, &entry);
}

/// The indented `~/.ssh/config` block printed after `add to ~/.ssh/config:`.
fn printed_ssh_block(out: &str) -> String {
    let mut lines = out
        .lines()
        .skip_while(|l| !l.starts_with("add to ~/.ssh/config:"));
    lines.next();
    let mut block = String::new();
    for l in lines.take_while(|l| l.starts_with("  ")) {
        block.push_str(&l[2..]);
        block.push('\n');
    }
    block
}

#[test]
fn forced_command_adds_one_compile_only_line() {
    let home = ServerHome::new();
    let sshd = start(&home);

    let first = install(&sshd, &["--forced-command", "@hoardtest"]);
    eprintln!("first run: {}", text(&first));
    let entry = host_entry(&first);
    assert_eq!(entry, "@hoardtest-hoardcc:~/.local/bin/hoardcc");
    let key = sshd.client_home().join(".ssh/hoardcc-hoardtest");
    assert!(key.exists() && key.with_extension("pub").exists());
    assert!(stdout(&first).contains("generated the compile-only key"));
    let lines = |path: &Path| -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    };
    let keys = lines(&home.authorized_keys());
    let blob = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let blob = blob.split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let want = format!(
        "restrict,command=\"{}/.local/bin/hoardcc serve\" ssh-ed25519 {blob} hoardcc-compile-only",
        home.home.display()
    );
    assert_eq!(keys[0], want);

    // Idempotent: same key, same line, nothing added.
    let second = install(&sshd, &["--forced-command", "@hoardtest"]);
    assert_eq!(host_entry(&second), entry);
    assert!(stdout(&second).contains("already in ~/.ssh/authorized_keys"));
    assert!(!stdout(&second).contains("generated"));
    assert_eq!(lines(&home.authorized_keys()), vec![want.clone()]);

    // The printed ssh config block and entry compile with that key alone …
    let block = printed_ssh_block(&stdout(&first));
    assert!(block.starts_with("Host hoardtest-hoardcc\n"), "{block}");
    assert!(
        block.contains(&format!("IdentityFile {}", key.display())),
        "{block}"
    );
    let mut config = std::fs::read_to_string(sshd.ssh_config_path()).unwrap();
    config.push_str(&block);
    std::fs::write(sshd.ssh_config_path(), config).unwrap();
    build_through(&sshd, &entry);
    let fp = fingerprint(&key.with_extension("pub"));
    assert!(
        sshd.log()
            .lines()
            .any(|l| l.contains("Accepted publickey") && l.contains(&fp)),
        "the build did not log in with the compile-only key {fp}:\n{}",
        sshd.log()
    );

    // IdentitiesOnly is honoured: with an agent holding the login key (which sshd also
    // accepts, without restriction), the entry still logs in with the compile-only key.
    let agent_dir = tempfile::tempdir().unwrap();
    let sock = agent_dir.path().join("agent.sock");
    let _agent = Agent::start(&sock);
    let add = run_with_timeout(
        Command::new("ssh-add")
            .arg(sshd.client_key_path())
            .env("SSH_AUTH_SOCK", &sock),
        T,
        "ssh-add",
    );
    assert!(add.status.success(), "ssh-add: {}", text(&add));
    let before = sshd.log().len();
    build_through_with(&sshd, &entry, &[("SSH_AUTH_SOCK", &sock)]);
    let logins: Vec<String> = sshd.log()[before..]
        .lines()
        .filter(|l| l.contains("Accepted publickey"))
        .map(str::to_string)
        .collect();
    let login_fp = fingerprint(&sshd.client_key_path().with_extension("pub"));
    assert!(
        !logins.is_empty() && logins.iter().all(|l| l.contains(&fp) && !l.contains(&login_fp)),
        "with an agent, the compile-only entry logged in as {logins:#?} (compile key {fp}, login key {login_fp})"
    );

    // … and the key can do nothing else: whatever is asked, the forced serve runs.
    let argv = sshd.ssh_command();
    let mut ssh = Command::new(&argv[0]);
    ssh.args(&argv[1..])
        .args(["-T", "hoardtest-hoardcc", "echo", "shell-reached"])
        .stdin(Stdio::null());
    sshd.apply_env(&mut ssh);
    let out = run_with_timeout(&mut ssh, T, "ssh with the compile-only key");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("shell-reached"),
        "the compile-only key ran a command: {}",
        text(&out)
    );
}

#[test]
fn install_server_refuses_bad_targets_before_connecting() {
    let out = run_with_timeout(
        Command::new(hoardcc_bin()).args(["install-server", "@box:/usr/bin/hoardcc"]),
        T,
        "install-server with a command",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("give the host alone"));
}

#[test]
fn masquerade_dir_links_compile() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("masq");
    let run = || {
        let mut cmd = Command::new(hoardcc_bin());
        cmd.args(["masquerade"]).arg(&dir);
        run_with_timeout(&mut cmd, T, "hoardcc masquerade")
    };
    let first = run();
    assert!(first.status.success(), "{}", text(&first));
    let out = stdout(&first);
    assert!(
        out.lines()
            .any(|l| l == format!("export PATH=\"{}:$PATH\"", dir.display())),
        "{out}"
    );
    assert!(out.contains("gcc\tcreated"), "{out}");
    let me = std::fs::canonicalize(hoardcc_bin()).unwrap();
    assert_eq!(std::fs::read_link(dir.join("gcc")).unwrap(), me);
    let second = run();
    assert!(
        stdout(&second)
            .lines()
            .filter(|l| l.contains('\t'))
            .all(|l| l.contains("\tup to date")),
        "{}",
        text(&second)
    );

    // The link compiles (locally here: no hosts), finding the real gcc past itself.
    std::fs::write(t.path().join("m.c"), "int main(void) { return 0; }\n").unwrap();
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Isolated: a HOME and runtime dir of its own, no mux (so nothing outlives the test).
    let run_dir = t.path().join("run");
    std::fs::create_dir(&run_dir).unwrap();
    std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut gcc = Command::new(dir.join("gcc"));
    for key in crate::support::removed_env_keys() {
        gcc.env_remove(key);
    }
    let out = run_with_timeout(
        gcc.current_dir(t.path())
            .env("PATH", path)
            .env("HOME", t.path())
            .env("XDG_RUNTIME_DIR", &run_dir)
            .env("HOARDCC_MUX", "0")
            .env("HOARDCC_HOSTS", "localhost")
            .args(["-c", "m.c", "-o", "m.o"]),
        T,
        "gcc through the masquerade link",
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(t.path().join("m.o").exists());
}

/// `SHA256:…` of a public key file.
fn fingerprint(pub_key: &Path) -> String {
    let out = run_with_timeout(
        Command::new("ssh-keygen")
            .args(["-l", "-E", "sha256", "-f"])
            .arg(pub_key),
        T,
        "ssh-keygen -l",
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap_or("no fingerprint")
        .to_string()
}

/// A private `ssh-agent -D` on `sock`, killed on drop.
struct Agent(std::process::Child);

impl Agent {
    fn start(sock: &Path) -> Agent {
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ssh-agent");
        let agent = Agent(child);
        wait_until(T, "the ssh-agent socket", || sock.exists());
        agent
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
