//! Class 7, local users against the compile slots: another user (`nobody`) squats the slot
//! directory the server would use — a FIFO named like a slot file, a directory of mode 0755
//! or owned by another uid, a symlink to one, a held `flock` on the slot files — and the
//! server must still answer its hello, serve a job and notice EOF, each in bounded time.
//!
//! The default-directory case runs sshd in a private mount namespace (fresh tmpfs on `/tmp`
//! and `/run`), so the squat touches no directory of the host's; which directory the server
//! uses by default is found by running one job there first and looking for its slot files.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hoardcc::proto::msg::Message;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::stat::Mode;

use super::{describe, NOBODY, SHORT};
use crate::support::attack::{job, random_hex, Incoming, Target};
use crate::support::{processes, wait_until, SshdOptions};

/// What a squatter did before the server's first job.
#[derive(Debug, Clone, Copy)]
enum Squat {
    /// `slot-0 … slot-15` are FIFOs (owned by `nobody`).
    Fifos,
    /// The directory exists, mode 0755, owned by `nobody`.
    ForeignDir,
    /// The directory is a symlink (owned by `nobody`) to a `nobody`-owned 0777 directory
    /// full of FIFOs.
    Symlink,
    /// The server made its slot files (`nobody` made the missing ones); `nobody` holds an
    /// exclusive `flock` on each.
    HeldLocks,
}

fn chown_nobody(p: &Path) {
    std::os::unix::fs::lchown(p, Some(NOBODY), Some(NOBODY))
        .unwrap_or_else(|e| panic!("chown nobody {}: {e}", p.display()));
}

fn mkdir_as_nobody(p: &Path, mode: u32) {
    std::fs::create_dir_all(p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    chown_nobody(p);
}

fn fifos_in(dir: &Path) {
    for i in 0..16 {
        let p = dir.join(format!("slot-{i}"));
        let _ = std::fs::remove_file(&p);
        nix::unistd::mkfifo(&p, Mode::from_bits_truncate(0o666)).expect("mkfifo");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        chown_nobody(&p);
    }
}

/// `nobody` processes holding `flock -x` on every slot file in `dir` (the server's view
/// `server_dir`, entered through sshd's mount namespace when `ns_pid` is set). Files
/// `nobody` cannot open are left alone: that is the defence.
fn hold_locks(dir: &Path, server_dir: &Path, ns_pid: Option<i32>) -> Vec<Child> {
    // The slot files the server has not made yet, the squatter makes (world-readable), if
    // the directory lets other users add files.
    let open_to_all = std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o002 != 0);
    for i in (0..16).filter(|_| open_to_all) {
        let p = dir.join(format!("slot-{i}"));
        if std::fs::symlink_metadata(&p).is_err() {
            std::fs::write(&p, b"").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            chown_nobody(&p);
        }
    }
    let mut holders = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read slot dir").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("slot") {
            continue;
        }
        let mut cmd = match ns_pid {
            Some(pid) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--mount=/proc/{pid}/ns/mnt"))
                    .arg("--")
                    .arg("setpriv");
                c
            }
            None => Command::new("setpriv"),
        };
        cmd.args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "flock",
            "-x",
            "-n",
        ])
        .arg(server_dir.join(&name))
        .args(["sleep", "300"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawn flock holder");
        let path = dir.join(&name);
        // Held once our own non-blocking try fails; or the holder gave up (no access).
        wait_until(SHORT, "the squatter's flock", || {
            if child.try_wait().ok().flatten().is_some() {
                return true;
            }
            let Ok(f) = std::fs::File::open(&path) else {
                return true;
            };
            matches!(
                Flock::lock(f, FlockArg::LockExclusiveNonblock),
                Err((_, nix::errno::Errno::EWOULDBLOCK))
            )
        });
        holders.push(child);
    }
    holders
}

/// Ends the holders and every `serve` of this fixture (a server stuck on a FIFO would
/// otherwise outlive the test).
fn cleanup(t: &Target, holders: &mut Vec<Child>) {
    for h in holders.iter_mut() {
        let _ = h.kill();
        let _ = h.wait();
    }
    holders.clear();
    let bin = t.sshd.server_hoardcc().display().to_string();
    for (pid, p) in processes() {
        if p.argv.first() == Some(&bin) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The server's hello, a served job and its exit after EOF, each in bounded time.
/// `must_serve`: the job must compile (not Busy or an error).
fn check_server(t: &Target, what: &str, must_serve: bool) -> Option<String> {
    let mut lane = crate::support::attack::Lane::open(&t.sshd);
    if let Err(e) = lane.hello(SHORT) {
        return Some(format!("{what}: the server did not answer its hello: {e}"));
    }
    lane.send(&Message::Job3(job(
        "gcc",
        &["-O2"],
        "int f(void) { return 2; }\n",
    )));
    let answer = lane.answer(1, Duration::from_secs(30));
    let bad = match &answer {
        Incoming::Msg(Message::Result3(r)) if r.exit_code == 0 => None,
        Incoming::Msg(Message::Busy { .. } | Message::ServerError { .. }) if !must_serve => None,
        other => Some(format!(
            "{what}: the job was not served: {}",
            describe(other)
        )),
    };
    if bad.is_some() {
        return bad;
    }
    lane.close();
    if !lane.wait_exit(SHORT) {
        return Some(format!("{what}: the server ignored EOF"));
    }
    None
}

/// Finds the directory holding the slot files a default `serve` made (server view), by
/// looking under `/tmp`, `/run` and the login home.
fn find_slot_dir(t: &Target) -> PathBuf {
    let (answer, _) = t.run_job(job("gcc", &[], "int x;\n"), Duration::from_secs(60));
    assert!(
        matches!(&answer, Incoming::Msg(Message::Result3(r)) if r.exit_code == 0),
        "the discovery job failed: {}",
        describe(&answer)
    );
    let home = t.sshd.login_home();
    let roots = [PathBuf::from("/tmp"), PathBuf::from("/run"), home.clone()];
    for root in roots {
        let seen = if root == home {
            root.clone()
        } else {
            t.sshd.server_path(&root)
        };
        if let Some(dir) = find_slot_file_dir(&seen, 6) {
            let rel = dir.strip_prefix(&seen).unwrap();
            return root.join(rel);
        }
    }
    panic!(
        "no slot files under /tmp, /run or the home after a job: where does the server keep them?"
    );
}

fn find_slot_file_dir(dir: &Path, depth: u32) -> Option<PathBuf> {
    if depth == 0 || dir.ends_with("run/sshd") {
        return None;
    }
    let entries = std::fs::read_dir(dir).ok()?;
    let mut subdirs = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let ft = e.file_type().ok()?;
        if ft.is_file() && name.starts_with("slot") {
            return Some(dir.to_path_buf());
        }
        if ft.is_dir() && !name.starts_with(crate::support::attack::SECRET_PREFIX) {
            subdirs.push(e.path());
        }
    }
    subdirs
        .into_iter()
        .find_map(|d| find_slot_file_dir(&d, depth - 1))
}

/// True if another user could create `p` (its nearest existing ancestor is world-writable).
fn squattable(p: &Path) -> bool {
    let mut a = p.parent();
    while let Some(dir) = a {
        if let Ok(m) = std::fs::metadata(dir) {
            return m.permissions().mode() & 0o002 != 0;
        }
        a = dir.parent();
    }
    false
}

#[test]
fn default_slot_dir_squatters_do_not_block() {
    let opts = || SshdOptions {
        private_tmp: true,
        server_toml: Some("[server]\nmax_jobs = 4\n".into()),
        // Empty: leave HOARDCC_SLOT_DIR out, so the server uses its default.
        server_env: vec![("HOARDCC_SLOT_DIR".into(), String::new())],
        ..SshdOptions::default()
    };
    let mut failures = Vec::new();
    for squat in [
        Squat::Fifos,
        Squat::ForeignDir,
        Squat::Symlink,
        Squat::HeldLocks,
    ] {
        let t = Target::start(opts());
        let dir = find_slot_dir(&t);
        let seen = if dir.starts_with(t.sshd.login_home()) {
            dir.clone()
        } else {
            t.sshd.server_path(&dir)
        };
        let what = format!("{squat:?} at the default {}", dir.display());
        let mut holders = Vec::new();
        match squat {
            Squat::HeldLocks => {
                holders = hold_locks(
                    &seen,
                    &dir,
                    (seen != dir).then(|| t.sshd.sshd_pid()).flatten(),
                );
            }
            _ if !squattable(&seen) => {
                eprintln!("{what}: no other user can create it; nothing to squat");
                continue;
            }
            Squat::Fifos => {
                std::fs::remove_dir_all(&seen).unwrap();
                mkdir_as_nobody(&seen, 0o1777);
                fifos_in(&seen);
            }
            Squat::ForeignDir => {
                std::fs::remove_dir_all(&seen).unwrap();
                mkdir_as_nobody(&seen, 0o755);
            }
            Squat::Symlink => {
                std::fs::remove_dir_all(&seen).unwrap();
                let elsewhere = format!("/tmp/squat-{}", random_hex(4));
                let target = t.sshd.server_path(Path::new(&elsewhere));
                mkdir_as_nobody(&target, 0o777);
                fifos_in(&target);
                if let Some(parent) = seen.parent() {
                    std::fs::create_dir_all(parent).unwrap();
                }
                symlink(&elsewhere, &seen).unwrap();
                chown_nobody(&seen);
            }
        }
        failures.extend(check_server(&t, &what, true));
        cleanup(&t, &mut holders);
    }
    super::report(failures);
}

#[test]
fn slot_dir_override_squatters_do_not_hang() {
    let mut failures = Vec::new();
    for squat in [Squat::Fifos, Squat::HeldLocks] {
        let t = Target::start(SshdOptions {
            server_toml: Some("[server]\nmax_jobs = 4\n".into()),
            ..SshdOptions::default()
        });
        let dir = t.sshd.slot_dir();
        let what = format!("{squat:?} in HOARDCC_SLOT_DIR={}", dir.display());
        let mut holders = Vec::new();
        match squat {
            Squat::Fifos => fifos_in(&dir),
            _ => {
                // The server makes its slot files; then the squatter locks them.
                failures.extend(check_server(&t, &format!("{what} (before)"), true));
                holders = hold_locks(&dir, &dir, None);
            }
        }
        // A shared directory is the admin's choice: Busy is a fair answer, a hang is not.
        failures.extend(check_server(&t, &what, false));
        cleanup(&t, &mut holders);
    }
    super::report(failures);
}
