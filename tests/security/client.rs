//! Classes 10 and 11, through the real wrapper and mux (the Subsystem key): server
//! compilers SIGKILLed mid-build (the OOM killer, an admin's `kill -9`) must not fail
//! `make -j4`, and every object must equal a local gcc build; a hostile server's terminal
//! escapes are neutralised (SGR colour kept), and a non-ELF `.o` from it is not installed.
//!
//! The server's `gcc` is a script on its PATH: a slow one (sleeps while the test kills it)
//! or a hostile one (real gcc, then escape sequences on stderr and, when the source asks
//! for it, a replaced output).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::script_dir;
use crate::support::{
    hoardcc_bin, processes, run_with_timeout, wait_until, Project, Sshd, SshdOptions, ALIAS,
};

const T: Duration = Duration::from_secs(120);

/// A private sshd whose `serve` finds `gcc` in `bin` first.
fn sshd_with_gcc(bin: &Path) -> Sshd {
    Sshd::start(SshdOptions {
        server_env: vec![("PATH".into(), format!("{}:/usr/bin:/bin", bin.display()))],
        server_toml: Some("[server]\nmax_jobs = 8\n".into()),
        ..SshdOptions::default()
    })
}

/// `hoardcc ARGS…` in `dir` as the fixture's client, with `hosts`.
fn wrapper(sshd: &Sshd, dir: &Path, hosts: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(hoardcc_bin());
    sshd.apply_env(&mut cmd);
    cmd.current_dir(dir)
        .env("HOARDCC_HOSTS", hosts)
        .env("HOARDCC_IDLE_TIMEOUT", "30")
        .env("DISTCC_BACKOFF_PERIOD", "0")
        .args(args);
    cmd
}

fn stop_mux(sshd: &Sshd) {
    let _ = run_with_timeout(
        &mut wrapper(sshd, Path::new("/"), "", &["mux", "--stop"]),
        T,
        "hoardcc mux --stop",
    );
}

fn local_object(dir: &Path, src: &str, args: &[&str]) -> Vec<u8> {
    let out_name = format!("{src}.local.o");
    let out = run_with_timeout(
        Command::new("gcc")
            .current_dir(dir)
            .args(args)
            .args(["-c", src, "-o", &out_name]),
        T,
        "local gcc",
    );
    assert!(out.status.success(), "local gcc: {out:?}");
    let obj = std::fs::read(dir.join(&out_name)).unwrap();
    std::fs::remove_file(dir.join(&out_name)).unwrap();
    obj
}

/// The compilers (children of this fixture's `serve` processes) running now.
fn server_compilers(sshd: &Sshd) -> Vec<i32> {
    let bin = sshd.server_hoardcc().display().to_string();
    let all = processes();
    let serves: Vec<i32> = all
        .iter()
        .filter(|(_, p)| p.argv.first() == Some(&bin))
        .map(|(pid, _)| *pid)
        .collect();
    all.iter()
        .filter(|(_, p)| serves.contains(&p.ppid))
        .map(|(pid, _)| *pid)
        .collect()
}

#[test]
fn security_sigkilled_compilers_do_not_fail_make() {
    // The delay sits beside the script: a sandboxed compiler reads only its own install.
    let bin = script_dir(
        "gcc",
        "#!/bin/sh\nsleep \"$(cat \"$(dirname \"$0\")/delay\")\"\nexec /usr/bin/gcc \"$@\"\n",
    );
    let delay = bin.path().join("delay");
    std::fs::write(&delay, "30\n").unwrap();
    std::fs::set_permissions(&delay, std::fs::Permissions::from_mode(0o644)).unwrap();
    let sshd = sshd_with_gcc(bin.path());
    let p = Project::c_multi();
    let mut local = Vec::new();
    for src in p.sources() {
        let s = src.display().to_string();
        local.push(local_object(p.dir(), &s, &["-O2"]));
    }
    let mut make = String::from("all:");
    for obj in p.objects() {
        make.push_str(&format!(" {}", obj.display()));
    }
    make.push_str(&format!(
        "\n%.o: %.c\n\t{} gcc -O2 -c $< -o $@\n",
        hoardcc_bin().display()
    ));
    std::fs::write(p.dir().join("Makefile"), make).unwrap();
    let hosts = format!("@{ALIAS}/4");
    let out: Output = std::thread::scope(|s| {
        let build = s.spawn(|| {
            let mut make = Command::new("make");
            sshd.apply_env(&mut make);
            make.current_dir(p.dir())
                .env("HOARDCC_HOSTS", &hosts)
                .env("HOARDCC_IDLE_TIMEOUT", "30")
                .env("DISTCC_BACKOFF_PERIOD", "0")
                .arg("-j4");
            run_with_timeout(&mut make, T, "make -j4")
        });
        wait_until(T, "4 compiles running on the server", || {
            server_compilers(&sshd).len() >= 4
        });
        std::fs::write(&delay, "0\n").unwrap();
        // Each compiler runs in its own process group: SIGKILL it (not its server).
        for pid in server_compilers(&sshd) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        build.join().unwrap()
    });
    stop_mux(&sshd);
    assert!(
        out.status.success(),
        "make -j4 failed after server compilers were SIGKILLed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for (obj, want) in p.objects().iter().zip(&local) {
        let got = std::fs::read(p.dir().join(obj)).unwrap();
        assert!(
            &got == want,
            "{} differs from a local gcc build",
            obj.display()
        );
    }
}

/// The hostile server's `gcc`: the real one, then escapes on stderr; and, when the source
/// names a `BADOBJ_*` mode, a replaced output file.
const HOSTILE_GCC: &str = r#"#!/bin/sh
/usr/bin/gcc "$@" || exit $?
out= src= prev=
for a in "$@"; do
    [ "$prev" = -o ] && out=$a
    case $a in *.c) src=$a ;; esac
    prev=$a
done
printf 'a.c:1: \033[01;35mwarning:\033[0m hostile\n' >&2
printf '\033]0;pwned-title\007\033[2J\033[1A\033P+q544e\033\\\302\2332J\033[?1049h\n' >&2
if grep -q BADOBJ_SCRIPT "$src"; then printf '#!/bin/sh\nrm -rf ~\n' > "$out"; fi
if grep -q BADOBJ_AR "$src"; then printf '!<arch>\n' > "$out"; fi
if grep -q BADOBJ_EMPTY "$src"; then : > "$out"; fi
exit 0
"#;

/// The escape sequences in `text` that are not SGR (`ESC [ digits/; m`) or `ESC [ K`, plus
/// BEL and C1 CSI.
fn non_sgr_escapes(text: &[u8]) -> Vec<String> {
    let mut bad = Vec::new();
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            0x1b => {
                let mut j = i + 1;
                let sgr = text.get(j) == Some(&b'[') && {
                    j += 1;
                    while j < text.len() && (text[j].is_ascii_digit() || text[j] == b';') {
                        j += 1;
                    }
                    // SGR, or `ESC [ K` (erase to end of line), which gcc's colours use.
                    text.get(j) == Some(&b'm') || (text.get(j) == Some(&b'K') && j == i + 2)
                };
                if !sgr {
                    let end = (i + 8).min(text.len());
                    bad.push(format!("{:?}", String::from_utf8_lossy(&text[i..end])));
                }
            }
            0x07 => bad.push("BEL".into()),
            0xc2 if text.get(i + 1) == Some(&0x9b) => bad.push("C1 CSI".into()),
            _ => {}
        }
        i += 1;
    }
    bad
}

#[test]
fn hostile_server_escapes_are_neutralised() {
    let bin = script_dir("gcc", HOSTILE_GCC);
    let sshd = sshd_with_gcc(bin.path());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.c"), "int f(void) { return 1; }\n").unwrap();
    let log = dir.path().join("joblog");
    let hosts = format!("@{ALIAS}");
    let out = run_with_timeout(
        wrapper(
            &sshd,
            dir.path(),
            &hosts,
            &["gcc", "-O2", "-c", "a.c", "-o", "a.o"],
        )
        .env("HOARDCC_JOBLOG", &log),
        T,
        "hoardcc gcc against a hostile server",
    );
    stop_mux(&sshd);
    assert!(out.status.success(), "{out:?}");
    let joblog = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        joblog.starts_with("remote\t"),
        "the compile did not run on the hostile server: {joblog:?}"
    );
    let bad = non_sgr_escapes(&out.stderr);
    assert!(
        bad.is_empty(),
        "the server's terminal escapes were replayed: {bad:?}\nstderr: {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn hostile_server_non_elf_object_is_not_installed() {
    let bin = script_dir("gcc", HOSTILE_GCC);
    let sshd = sshd_with_gcc(bin.path());
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for mode in ["BADOBJ_SCRIPT", "BADOBJ_AR", "BADOBJ_EMPTY"] {
        let src = format!("{}.c", mode.to_lowercase());
        std::fs::write(
            dir.path().join(&src),
            format!("int f(void) {{ return 1; }} /* {mode} */\n"),
        )
        .unwrap();
        let want = local_object(dir.path(), &src, &["-O2"]);
        let obj = format!("{src}.o");
        let hosts = format!("@{ALIAS}");
        let out = run_with_timeout(
            &mut wrapper(
                &sshd,
                dir.path(),
                &hosts,
                &["gcc", "-O2", "-c", &src, "-o", &obj],
            ),
            T,
            "hoardcc gcc against a hostile server",
        );
        let got = std::fs::read(dir.path().join(&obj)).unwrap_or_default();
        if !out.status.success() {
            failures.push(format!("{mode}: the wrapper failed: {out:?}"));
        } else if got != want {
            failures.push(format!(
                "{mode}: installed {} bytes starting {:?} instead of the local compile's object",
                got.len(),
                String::from_utf8_lossy(&got[..got.len().min(16)])
            ));
        }
    }
    stop_mux(&sshd);
    super::report(failures);
}
