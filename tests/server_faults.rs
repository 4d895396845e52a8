//! Server faults and hostile server output, through the real sshd: compilers SIGKILLed on
//! the server mid-build (the whole process group, or only `cc1` under a surviving
//! driver), with `make -j4` through the mux and with wrappers on the direct path; and a
//! server whose compiler prints terminal control sequences or writes a `.o` that is not
//! an object. Builds succeed with every object identical to a local gcc's, a fault is
//! never a job's status, and nothing but SGR colour reaches the terminal.
//!
//! The server's `gcc` is a script on its PATH ([`ServerGcc`]) that runs the real gcc with
//! `-wrapper`, so each `cc1` runs under a small shell stand-in that first sleeps for the
//! seconds in a control file: every job is in flight when a fault lands, and a test can
//! kill the driver's group or only the `cc1` stand-in. A `mode` file switches the script
//! to hostile output. The stand-in and the control files sit beside the script, in its
//! `bin/`, where the server's compiler sandbox lets the compiler read and execute.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::faults::{assert_all_remote, joblog, Client, Reference, T};
use crate::support::{
    hoardcc_bin, processes, run_with_timeout, wait_until, Sshd, SshdOptions, ALIAS,
};

/// How long each `cc1` waits until a test releases it.
const HELD: f64 = 20.0;

/// The server's `gcc` and its control files; also a world-writable directory for the
/// server's job directories.
struct ServerGcc {
    dir: TempDir,
}

impl ServerGcc {
    fn new() -> ServerGcc {
        let dir = tempfile::Builder::new()
            .prefix("hoardcc-servergcc-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let chmod = |p: &Path, mode| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        chmod(d, 0o755);
        std::fs::create_dir(d.join("bin")).unwrap();
        chmod(&d.join("bin"), 0o755);
        std::fs::create_dir(d.join("work")).unwrap();
        chmod(&d.join("work"), 0o1777);
        // The `cc1` stand-in: its sleep holds no pipe, so killing the stand-in alone ends
        // the driver's wait at once.
        let wrap = d.join("bin/wrap");
        std::fs::write(
            &wrap,
            format!(
                "#!/bin/sh\ncase \"$1\" in */cc1|*/cc1plus) sleep \"$(cat {d}/bin/delay)\" \
                 </dev/null >/dev/null 2>&1;; esac\nexec \"$@\"\n",
                d = d.display()
            ),
        )
        .unwrap();
        chmod(&wrap, 0o755);
        let gcc = d.join("bin/gcc");
        std::fs::write(
            &gcc,
            format!(
                r#"#!/bin/sh
mode=$(cat {d}/bin/mode)
if [ "$mode" = escapes ]; then
    printf '\033]0;owned\007\033[2J\033[01;35m\033[Kcoloured\033[m\033[K note\n' >&2
fi
if [ "$mode" = badobject ]; then
    while [ $# -gt 1 ]; do
        if [ "$1" = -o ]; then printf 'not an object\n' > "$2"; exit 0; fi
        shift
    done
fi
exec /usr/bin/gcc -wrapper {wrap} "$@"
"#,
                d = d.display(),
                wrap = wrap.display()
            ),
        )
        .unwrap();
        chmod(&gcc, 0o755);
        let g = ServerGcc { dir };
        g.set("delay", "0");
        g.set("mode", "plain");
        g
    }

    /// Replaces a control file atomically (`delay`: seconds; `mode`: plain, escapes,
    /// badobject).
    fn set(&self, name: &str, value: &str) {
        let tmp = self.dir.path().join(format!("bin/{name}.tmp"));
        std::fs::write(&tmp, format!("{value}\n")).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::rename(&tmp, self.dir.path().join("bin").join(name)).unwrap();
    }

    fn sshd(&self) -> Sshd {
        Sshd::start(SshdOptions {
            server_env: vec![(
                "PATH".into(),
                format!("{}:/usr/bin:/bin", self.dir.path().join("bin").display()),
            )],
            server_toml: Some(format!(
                "[server]\nmax_jobs = 8\ntmpdir = \"{}\"\n",
                self.dir.path().join("work").display()
            )),
            ..SshdOptions::default()
        })
    }

    /// The `cc1` stand-ins that are sleeping: (pid of the stand-in, pids of its children).
    fn held_cc1s(&self) -> Vec<(i32, Vec<i32>)> {
        let wrap = self.dir.path().join("bin/wrap").display().to_string();
        let all = processes();
        all.iter()
            .filter(|(_, p)| {
                p.argv.get(1) == Some(&wrap) && p.argv.get(2).is_some_and(|a| a.ends_with("/cc1"))
            })
            .map(|(pid, _)| {
                let kids = all.iter().filter(|(_, c)| c.ppid == *pid).map(|(k, _)| *k);
                (*pid, kids.collect())
            })
            .filter(|(_, kids): &(i32, Vec<i32>)| !kids.is_empty())
            .collect()
    }

    /// Waits until `n` compiles are held in `cc1`.
    fn wait_held(&self, n: usize) -> Vec<(i32, Vec<i32>)> {
        wait_until(T, &format!("{n} cc1s held on the server"), || {
            self.held_cc1s().len() >= n
        });
        self.held_cc1s()
    }
}

/// The process group of a held `cc1`'s driver (the group `hoardcc serve` made for it).
fn driver_group(cc1: i32) -> Pid {
    let pgid = nix::unistd::getpgid(Some(Pid::from_raw(cc1))).unwrap();
    assert_ne!(
        pgid,
        nix::unistd::getpgrp(),
        "the compiler runs in its own group"
    );
    pgid
}

/// `make -j4` of the reference project with `CC="hoardcc gcc"` and the client's
/// environment.
fn make(client: &Client, r: &Reference, log: &Path) -> std::thread::JoinHandle<Output> {
    let dir = r.project.dir().to_path_buf();
    let objects: Vec<String> = r
        .project
        .objects()
        .iter()
        .map(|o| o.display().to_string())
        .collect();
    std::fs::write(
        dir.join("Makefile"),
        format!(
            "all: {}\n%.o: %.c\n\t$(CC) -O2 -c $< -o $@\n",
            objects.join(" ")
        ),
    )
    .unwrap();
    let mut cmd = Command::new("make");
    for k in crate::support::removed_env_keys() {
        cmd.env_remove(k);
    }
    cmd.envs(client.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&dir)
        .args(["-s", "-j4"])
        .arg(format!("CC={} gcc", hoardcc_bin().display()))
        .env("HOARDCC_HOSTS", format!("@{ALIAS}/4"))
        .env("HOARDCC_JOBLOG", log)
        .stdin(Stdio::null());
    std::thread::spawn(move || run_with_timeout(&mut cmd, T * 2, "make -j4"))
}

/// [`Reference::check`] for one make run (the Makefile is not an output).
fn check_make(r: &Reference, out: Output, what: &str) {
    let makefile = r.project.dir().join("Makefile");
    std::fs::remove_file(&makefile).unwrap();
    r.check(&[("make -j4".to_string(), out)], what);
}

/// `make -j4` survives server compilers SIGKILLed mid-build: first every driver's whole
/// process group (the driver dies by the signal), then only each `cc1` (the driver lives
/// and reports "Killed signal terminated program cc1"). Each job is retried once on the
/// host, without a word, and every object equals gcc's. On the direct path
/// (`HOARDCC_MUX=0`) each job compiles locally with one warning; no wrapper exits 137.
#[test]
fn make_survives_sigkilled_server_compilers() {
    let gcc = ServerGcc::new();
    let sshd = gcc.sshd();
    let client = Client::new(&sshd);
    let r = Reference::new();
    let logs = tempfile::tempdir().unwrap();
    let n = r.project.sources().len();

    for (round, whole_group) in [("process groups killed", true), ("cc1 killed", false)] {
        let log = logs.path().join(format!("joblog-{whole_group}"));
        gcc.set("delay", &HELD.to_string());
        let build = make(&client, &r, &log);
        let held = gcc.wait_held(n);
        gcc.set("delay", "0");
        for (cc1, kids) in held {
            if whole_group {
                killpg(driver_group(cc1), Signal::SIGKILL).unwrap();
            } else {
                kill(Pid::from_raw(cc1), Signal::SIGKILL).unwrap();
                for k in kids {
                    let _ = kill(Pid::from_raw(k), Signal::SIGKILL);
                }
            }
        }
        let out = build.join().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        check_make(&r, out, round);
        assert_eq!(err, "", "{round}: retried without a word");
        assert_all_remote(&log, n, ALIAS);
    }

    // The direct path: no retry, one local compile with one warning each.
    let direct = Client::new(&sshd).with("HOARDCC_MUX", "0");
    let log = logs.path().join("joblog-direct");
    gcc.set("delay", &HELD.to_string());
    let outs = std::thread::scope(|s| {
        let build = s.spawn(|| direct.build(&r.project, &format!("@{ALIAS}/4"), &log));
        let held = gcc.wait_held(n);
        gcc.set("delay", "0");
        for (cc1, _) in held {
            killpg(driver_group(cc1), Signal::SIGKILL).unwrap();
        }
        build.join().unwrap()
    });
    for (src, out) in &outs {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            err.trim(),
            format!("hoardcc: warning: {ALIAS}: gcc killed by signal 9; compiling locally"),
            "{src}"
        );
    }
    r.check(&outs, "direct path, process groups killed");
    let lines = joblog(&log);
    assert_eq!(lines.len(), n);
    assert!(lines.iter().all(|(kind, _)| kind == "local"), "{lines:?}");
}

/// A server's compiler prints a title change, a screen clear and SGR colour: the colour
/// reaches the user's terminal, the rest does not. A server whose compiler writes a `.o`
/// that is not an object has it refused: the job compiles locally with one warning, and
/// the object is gcc's.
#[test]
fn hostile_server_output_is_neutralised() {
    let gcc = ServerGcc::new();
    let sshd = gcc.sshd();
    let client = Client::new(&sshd);
    let r = Reference::new();
    let logs = tempfile::tempdir().unwrap();
    let hosts = format!("@{ALIAS}/4");
    let n = r.project.sources().len();

    gcc.set("mode", "escapes");
    let log = logs.path().join("joblog-escapes");
    let outs = client.build(&r.project, &hosts, &log);
    for (src, out) in &outs {
        assert!(out.status.success(), "{src}: {out:?}");
        let err = &out.stderr;
        let has = |needle: &[u8]| err.windows(needle.len()).any(|w| w == needle);
        assert!(
            has(b"\x1b[01;35m\x1b[Kcoloured\x1b[m\x1b[K note\n"),
            "{src}: {}",
            err.escape_ascii()
        );
        assert!(
            !has(b"\x1b]") && !has(b"\x1b[2J") && !has(b"\x07"),
            "{src}: {}",
            err.escape_ascii()
        );
        assert!(
            !has(b"owned"),
            "the title text went too: {}",
            err.escape_ascii()
        );
    }
    // The SGR line is the only one: Reference::check allows at most one.
    r.check(&outs, "escapes");
    assert_all_remote(&log, n, ALIAS);

    gcc.set("mode", "badobject");
    let log = logs.path().join("joblog-badobject");
    let outs = client.build(&r.project, &hosts, &log);
    for (src, out) in &outs {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with(&format!(
                "hoardcc: warning: {ALIAS}: the server's {}",
                PathBuf::from(src).with_extension("o").display()
            )) && err
                .trim_end()
                .ends_with("is not an ELF object (or LLVM bitcode); compiling locally"),
            "{src}: {err}"
        );
    }
    r.check(&outs, "bad object");
    let lines = joblog(&log);
    assert_eq!(lines.len(), n);
    assert!(lines.iter().all(|(kind, _)| kind == "local"), "{lines:?}");
}

/// gcc's own colour and documentation links (`-fdiagnostics-color=always
/// -fdiagnostics-urls=always`) reach the terminal from a remote compile byte for byte as
/// a local gcc prints them.
#[test]
fn gcc_colour_and_links_survive_the_replay() {
    let gcc = ServerGcc::new();
    let sshd = gcc.sshd();
    let client = Client::new(&sshd);
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        dir.path().join("w.c"),
        "int f(int a)\n{\n    int unused;\n    return a << 40;\n}\n",
    )
    .unwrap();
    let flags = [
        "-Wall",
        "-fdiagnostics-color=always",
        "-fdiagnostics-urls=always",
        "-c",
        "w.c",
        "-o",
        "w.o",
    ];
    let local = run_with_timeout(
        Command::new("gcc").current_dir(dir.path()).args(flags),
        T,
        "local gcc",
    );
    assert!(local.status.success(), "{local:?}");
    assert!(
        local.stderr.windows(4).any(|w| w == b"\x1b]8;"),
        "gcc printed no link: {}",
        local.stderr.escape_ascii()
    );
    let object = std::fs::read(dir.path().join("w.o")).unwrap();
    std::fs::remove_file(dir.path().join("w.o")).unwrap();
    let log = dir.path().join("joblog");
    let mut args = vec!["gcc"];
    args.extend(flags);
    let mut cmd = client.command(dir.path(), &args);
    cmd.env("HOARDCC_HOSTS", format!("@{ALIAS}"))
        .env("HOARDCC_JOBLOG", &log);
    let remote = run_with_timeout(&mut cmd, T, "hoardcc gcc");
    assert!(remote.status.success(), "{remote:?}");
    assert_eq!(
        remote.stderr.escape_ascii().to_string(),
        local.stderr.escape_ascii().to_string()
    );
    assert_eq!(std::fs::read(dir.path().join("w.o")).unwrap(), object);
    assert_all_remote(&log, 1, ALIAS);
}
