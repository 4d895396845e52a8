//! Classes 8 and 9, work before admission and the stock-distcc path: with the only compile
//! slot held by a slow job, a request that claims 1 GiB of LZ4 payload or carries 100 000
//! context files must cost no memory or disk; a lane that goes quiet after its hello is
//! closed after the idle timeout; `#include "/dev/zero"` and `.space 1<<30` stop in bounded
//! time and disk; a stock-distcc job takes a slot and its compiler dies with its client.
//!
//! The slow compiler is `slowcc` (allowed by absolute path in `server.toml`): it writes
//! `started-<pid>` into a directory of the test, then sleeps.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hoardcc::proto::msg::{Blob, Codec, Input, Message};
use tempfile::TempDir;

use super::{describe, script_dir, SHORT, T};
use crate::support::attack::{context, job, random_hex, refused_or_failed, Incoming, Lane, Target};
use crate::support::{processes, wait_until, SshdOptions};

/// A world-writable scratch directory under /var/tmp.
fn scratch(prefix: &str) -> TempDir {
    let d = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    d
}

/// `slowcc`: becomes `sleep 60.<tag>` (a sandboxed compiler can write nothing outside its
/// job directory, so it is found by its command line instead).
struct SlowCc {
    bin: TempDir,
    tag: String,
}

impl SlowCc {
    fn new() -> SlowCc {
        let tag = format!(
            "60.{}",
            random_hex(4)
                .chars()
                .filter(char::is_ascii_digit)
                .collect::<String>()
                + "1"
        );
        let bin = script_dir("slowcc", &format!("#!/bin/sh\nexec sleep {tag}\n"));
        SlowCc { bin, tag }
    }

    fn path(&self) -> PathBuf {
        self.bin.path().join("slowcc")
    }

    /// Pids of the slowcc runs alive now.
    fn started(&self) -> Vec<i32> {
        processes()
            .into_iter()
            .filter(|(_, p)| p.argv.len() == 2 && p.argv[0] == "sleep" && p.argv[1] == self.tag)
            .map(|(pid, _)| pid)
            .collect()
    }

    fn wait_started(&self, n: usize) {
        wait_until(T, &format!("{n} slowcc running"), || {
            self.started().len() >= n
        });
    }
}

/// A target whose server has one slot, `slowcc`, and job directories in `work`.
fn one_slot_target(slow: &SlowCc, work: &Path, extra: &str) -> Target {
    Target::start(SshdOptions {
        server_toml: Some(format!(
            "[server]\nmax_jobs = 1\ncompile_timeout_secs = 120\ntmpdir = \"{}\"\ncompilers = [\"{}\"]\n{extra}",
            work.display(),
            slow.path().display()
        )),
        ..SshdOptions::default()
    })
}

/// This fixture's `serve` processes.
fn serve_pids(t: &Target) -> Vec<i32> {
    let bin = t.sshd.server_hoardcc().display().to_string();
    processes()
        .into_iter()
        .filter(|(_, p)| p.argv.first() == Some(&bin))
        .map(|(pid, _)| pid)
        .collect()
}

/// Peak resident memory of `pid` in bytes (`VmHWM`), 0 if gone.
fn peak_rss(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Watches a directory tree on a thread: the most bytes and files it ever held beyond the
/// entries present at the start.
struct Watch {
    stop: Arc<AtomicBool>,
    bytes: Arc<AtomicU64>,
    files: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    fn start(dir: &Path) -> Watch {
        let before: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        let (stop, bytes, files) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let (s, b, f, dir) = (
            stop.clone(),
            bytes.clone(),
            files.clone(),
            dir.to_path_buf(),
        );
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let (mut nb, mut nf) = (0u64, 0u64);
                for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    if !before.contains(&e.path()) {
                        tree_size(&e.path(), &mut nb, &mut nf);
                    }
                }
                b.fetch_max(nb, Ordering::SeqCst);
                f.fetch_max(nf, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Watch {
            stop,
            bytes,
            files,
            thread: Some(thread),
        }
    }

    /// (most bytes, most files) seen.
    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        (
            self.bytes.load(Ordering::SeqCst),
            self.files.load(Ordering::SeqCst),
        )
    }
}

/// Adds the sizes and count of the files under `p` (stopping at 5000 files).
fn tree_size(p: &Path, bytes: &mut u64, files: &mut u64) {
    if *files > 5000 {
        return;
    }
    let Ok(m) = std::fs::symlink_metadata(p) else {
        return;
    };
    if m.is_dir() {
        for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
            tree_size(&e.path(), bytes, files);
        }
    } else {
        *bytes += m.len();
        *files += 1;
    }
}

/// An LZ4 block that really decodes to exactly `len` spaces (≥ 25), in about len/255 bytes.
fn lz4_spaces(len: u64) -> Vec<u8> {
    // One literal, then a match at offset 1 of length `m`, then 5 final literals.
    let m = len - 6;
    let mut out = vec![0x1F, b' ', 1, 0];
    let mut rest = m - 4 - 15;
    while rest >= 255 {
        out.push(255);
        rest -= 255;
    }
    out.push(rest as u8);
    out.push(0x50);
    out.extend_from_slice(b"     ");
    out
}

#[test]
fn no_work_before_admission() {
    let slow = SlowCc::new();
    let work = scratch("hoardcc-redteam-work-");
    let t = one_slot_target(&slow, work.path(), "");
    // Lane A takes the only slot.
    let mut a = t.lane();
    a.send(&Message::Job3(job("slowcc", &[], "int x;\n")));
    slow.wait_started(1);

    let gib = 1u64 << 30;
    let mut big = job("gcc", &[], "");
    big.source = Input::Whole(Blob {
        codec: Codec::Lz4,
        raw_len: gib,
        data: lz4_spaces(gib),
    });
    let mut many = job("gcc", &[], "int x;\n");
    many.context = (0..100_000)
        .map(|i| context(&format!("ctx/{}/{i}.h", i % 100), b"x"))
        .collect();
    let mut failures = Vec::new();
    for (what, j) in [("1 GiB LZ4 claim", big), ("100 000 context files", many)] {
        let before = serve_pids(&t);
        let watch = Watch::start(work.path());
        let started = Instant::now();
        let mut b = t.lane();
        let mine: Vec<i32> = serve_pids(&t)
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        b.send(&Message::Job3(j));
        let answer = b.answer(1, T);
        let rss = mine.iter().map(|p| peak_rss(*p)).max().unwrap_or(0);
        let (bytes, files) = watch.finish();
        let took = started.elapsed();
        eprintln!(
            "{what}: {} in {took:?}, peak rss {rss}, disk {bytes} bytes / {files} files",
            describe(&answer)
        );
        if matches!(answer, Incoming::Msg(Message::Result3(_))) {
            failures.push(format!("{what}: compiled although the only slot was held"));
        }
        if matches!(answer, Incoming::Broken(_)) {
            failures.push(format!("{what}: no answer: {}", describe(&answer)));
        }
        if bytes > 64 << 20 || files > 1000 {
            failures.push(format!(
                "{what}: wrote {bytes} bytes in {files} files before admission"
            ));
        }
        if rss > 512 << 20 {
            failures.push(format!(
                "{what}: the server grew to {rss} bytes before admission"
            ));
        }
    }
    a.kill();
    super::report(failures);
}

/// The `[server]` setting naming the idle timeout between frames, in seconds.
pub const IDLE_TIMEOUT_KEY: &str = "idle_timeout_secs";
/// The `[server]` setting bounding the silence inside a frame, in seconds.
pub const FRAME_TIMEOUT_KEY: &str = "frame_timeout_secs";

#[test]
fn idle_lane_is_closed() {
    let t = Target::start(SshdOptions {
        server_toml: Some(format!(
            "[server]\nmax_jobs = 4\n{IDLE_TIMEOUT_KEY} = 2\n{FRAME_TIMEOUT_KEY} = 2\n"
        )),
        ..SshdOptions::default()
    });
    let mut lane = Lane::open(&t.sshd);
    let hello = lane.hello(SHORT);
    assert!(hello.is_ok(), "no hello: {hello:?}; {}", lane.stderr());
    // Nothing after the hello: the server must close the lane (2 s idle, 20 s bound).
    let started = Instant::now();
    let next = lane.next(Duration::from_secs(20));
    assert!(
        matches!(next, Some(Incoming::Eof) | Some(Incoming::Broken(_))),
        "an idle lane stayed open for {:?}: {next:?}",
        started.elapsed()
    );
    assert!(lane.wait_exit(SHORT), "the session did not end");
    // A lane that stops in the middle of a frame is idle too.
    let mut lane = Lane::open(&t.sshd);
    lane.hello(SHORT).unwrap();
    lane.write(&[0, 0, 1, 0]); // a frame header announcing 256 bytes, then nothing
    let next = lane.next(Duration::from_secs(20));
    assert!(
        matches!(next, Some(Incoming::Eof) | Some(Incoming::Broken(_))),
        "a lane stuck inside a frame stayed open: {next:?}"
    );
}

#[test]
fn compiler_resource_limits() {
    let work = scratch("hoardcc-redteam-work-");
    // The server's own limits are configured (1 GiB of address space, 64 MiB files); the
    // test's safety net (an unfixed server would eat the machine) is 4 GiB of address
    // space for sshd and everything below it.
    let t = Target::start(SshdOptions {
        server_toml: Some(format!(
            "[server]\nmax_jobs = 4\ncompile_timeout_secs = 40\ntmpdir = \"{}\"\n\
             max_memory_mib = 1024\nmax_file_size_mib = 64\n",
            work.path().display()
        )),
        address_space_limit: Some(4 << 30),
        ..SshdOptions::default()
    });
    let cases = [
        ("#include \"/dev/zero\"", "#include \"/dev/zero\"\n"),
        ("#include \"/dev/urandom\"", "#include \"/dev/urandom\"\n"),
        (".space 1<<30", "asm(\".space 1<<30\");\n"),
        (".fill 1<<28, 4", "asm(\".fill 1<<28, 4, 0x41414141\");\n"),
    ];
    let mut failures = Vec::new();
    for (what, src) in cases {
        let watch = Watch::start(work.path());
        let started = Instant::now();
        let (answer, _) = t.run_job(job("gcc", &[], src), Duration::from_secs(90));
        let took = started.elapsed();
        let (bytes, _) = watch.finish();
        eprintln!("{what}: {} in {took:?}, disk {bytes}", describe(&answer));
        if !refused_or_failed(&answer) {
            failures.push(format!(
                "{what}: compiled to completion ({bytes} bytes on disk)"
            ));
        }
        if matches!(answer, Incoming::Broken(_)) || took > Duration::from_secs(60) {
            failures.push(format!("{what}: not stopped in bounded time ({took:?})"));
        }
        if bytes > 256 << 20 {
            failures.push(format!("{what}: used {bytes} bytes of disk"));
        }
    }
    super::report(failures);
}

#[test]
fn distcc_jobs_take_a_slot() {
    let slow = SlowCc::new();
    let work = scratch("hoardcc-redteam-work-");
    let t = one_slot_target(&slow, work.path(), "");
    let mut a = t.lane();
    a.send(&Message::Job3(job("slowcc", &[], "int x;\n")));
    slow.wait_started(1);
    // The only slot is held: a stock-distcc job must not start its compiler now.
    let out = t.run_distcc(
        &["slowcc", "-c", "x.c", "-o", "x.o"],
        b"int x;\n",
        Duration::from_secs(8),
    );
    let started = slow.started();
    a.kill();
    drop(out);
    assert_eq!(
        started.len(),
        1,
        "a stock-distcc job compiled while the host-wide slots were full"
    );
}

#[test]
fn distcc_compiler_dies_with_its_client() {
    let slow = SlowCc::new();
    let work = scratch("hoardcc-redteam-work-");
    let t = one_slot_target(&slow, work.path(), "");
    for (what, argv) in [
        ("distcc slowcc -c", vec!["slowcc", "-c", "x.c", "-o", "x.o"]),
        ("distcc slowcc -S", vec!["slowcc", "-S", "y.c", "-o", "y.s"]),
    ] {
        let before = slow.started();
        let mut cmd = t.sshd.forced_ssh(&[]);
        let mut lane = Lane::spawn(&mut cmd, false);
        lane.write(&crate::support::attack::distcc_request(&argv, b"int x;\n"));
        slow.wait_started(before.len() + 1);
        let pid = *slow.started().iter().find(|p| !before.contains(p)).unwrap();
        // The client goes away.
        lane.kill();
        let gone = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    s.rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z')
                })
                .unwrap_or(true)
        };
        let end = Instant::now() + Duration::from_secs(15);
        while !gone() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        let alive = !gone();
        if alive {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        assert!(
            !alive,
            "{what}: the compiler kept running 15 s after its client left"
        );
    }
}
