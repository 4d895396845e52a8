//! Local users against the compile slots, with a real `hoardcc serve` process over pipes:
//! a FIFO squatting a slot name, a symlinked slot file, a lock held by another process,
//! a squatted slot directory (widened mode, a symlink), the per-user default directory.
//! None of them may hang the server (its hello, or a job's answer), and it keeps serving.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use hoardcc::proto::frame::{self, blocking, MAGIC};
use hoardcc::proto::msg::{
    Blob, Hello, Input, Job, JobHeader, Message, SourceKind, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};

use crate::support::hoardcc_bin;

/// Every answer must come well within this (a hang shows as a failure, not a stuck test).
const ANSWER: Duration = Duration::from_secs(30);

/// A `hoardcc serve` child speaking the native protocol on its stdin/stdout.
struct Serve {
    child: Child,
    stdin: Option<ChildStdin>,
    rx: mpsc::Receiver<Option<Message>>,
    hello: Hello,
}

impl Serve {
    /// Starts `hoardcc serve` with `env` (and a config of `max_jobs`, tmpdir `tmp`) and
    /// exchanges hellos.
    fn start(tmp: &Path, max_jobs: u32, env: &[(&str, &Path)]) -> Serve {
        let config = tmp.join("server.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nmax_jobs = {max_jobs}\ntmpdir = \"{}\"\n",
                tmp.display()
            ),
        )
        .unwrap();
        let mut cmd = Command::new(hoardcc_bin());
        cmd.arg("serve")
            .env_remove("HOARDCC_SLOT_DIR")
            .env_remove("XDG_RUNTIME_DIR")
            .env("HOARDCC_SERVER_CONFIG", &config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn hoardcc serve");
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let ours = Hello {
            version: PROTOCOL_VERSION,
            min_version: MIN_PROTOCOL_VERSION,
            caps: vec!["lz4".into()],
            slots: 0,
            load: 0,
            agent: "slots test".into(),
        };
        stdin.write_all(&MAGIC).unwrap();
        blocking::write_frame(&mut stdin, &frame::encode(&ours)).unwrap();
        let (hello_tx, hello_rx) = mpsc::channel();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut magic = [0u8; 8];
            if stdout.read_exact(&mut magic).is_err() || magic != MAGIC {
                return;
            }
            let Ok(Some(h)) = blocking::read_frame(&mut stdout, 1 << 16) else {
                return;
            };
            let _ = hello_tx.send(frame::decode::<Hello>(&h).unwrap());
            loop {
                match blocking::read_message::<_, Message>(&mut stdout) {
                    Ok(Some(Message::Heartbeat { .. })) => continue,
                    Ok(m) => {
                        let end = m.is_none();
                        if tx.send(m).is_err() || end {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        let hello = hello_rx
            .recv_timeout(ANSWER)
            .expect("the server's hello in time (a slot file must not block it)");
        Serve {
            child,
            stdin: Some(stdin),
            rx,
            hello,
        }
    }

    /// Sends a trivial gcc job and returns the answer.
    fn job(&mut self, id: u64) -> Message {
        let job = Job {
            id,
            header: JobHeader {
                compiler: "gcc".into(),
                args: vec!["-O2".into()],
                assemble_only: false,
                cwd: "/w".into(),
                source_name: "a.c".into(),
                output_name: "a.o".into(),
                extra_outputs: vec![],
            },
            source_kind: SourceKind::Preprocessed,
            source: Input::Whole(Blob::pack(b"int a(void) { return 42; }\n")),
            context: vec![],
            env: vec![],
            compiler_id: None,
            cache: false,
        };
        blocking::write_message(self.stdin.as_mut().unwrap(), &Message::Job3(job)).unwrap();
        self.rx
            .recv_timeout(ANSWER)
            .expect("an answer in time")
            .expect("a message, not EOF")
    }

    /// Closes stdin and waits (bounded) for a clean exit.
    fn finish(mut self) {
        drop(self.stdin.take());
        let deadline = std::time::Instant::now() + ANSWER;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                assert!(st.success(), "hoardcc serve exited {st}");
                return;
            }
            assert!(std::time::Instant::now() < deadline, "serve ignored EOF");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A shared slot directory (sticky, world-writable, like `/run/hoardcc`).
fn shared(tmp: &Path) -> PathBuf {
    let dir = tmp.join("slots");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o1777);
    dir
}

fn is_result(m: &Message, id: u64) -> bool {
    matches!(m, Message::Result3(r) if r.id == id && r.exit_code == 0)
}

/// Holds `path` locked with flock(1) in another process until dropped.
struct Holder(Child);

impl Holder {
    fn lock(path: &Path) -> Holder {
        let mut child = Command::new("flock")
            .arg(path)
            .args(["-c", "echo locked; read x"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("flock(1)");
        let mut buf = [0u8; 7];
        child.stdout.as_mut().unwrap().read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"locked\n");
        Holder(child)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

#[test]
fn squatted_slot_files_never_hang_the_server() {
    let t = tempfile::tempdir().unwrap();
    let dir = shared(t.path());
    // slot-0 a FIFO (the old hang), slot-1 a symlink to a file the squatter wants
    // written, slot-2 locked by another process.
    nix::unistd::mkfifo(
        &dir.join("slot-0"),
        nix::sys::stat::Mode::from_bits_truncate(0o666),
    )
    .unwrap();
    let victim = t.path().join("victim");
    std::os::unix::fs::symlink(&victim, dir.join("slot-1")).unwrap();
    std::fs::write(dir.join("slot-2"), b"").unwrap();
    let _holder = Holder::lock(&dir.join("slot-2"));

    // Four slots, three squatted: the hello counts them as held, slot-3 compiles.
    let mut s = Serve::start(t.path(), 4, &[("HOARDCC_SLOT_DIR", &dir)]);
    assert_eq!((s.hello.slots, s.hello.load), (4, 3));
    let m = s.job(1);
    assert!(is_result(&m, 1), "{m:?}");
    let m = s.job(2);
    assert!(is_result(&m, 2), "the server keeps serving: {m:?}");
    s.finish();

    // Three slots, all squatted: Busy at once (the client tries elsewhere), no hang.
    let mut s = Serve::start(t.path(), 3, &[("HOARDCC_SLOT_DIR", &dir)]);
    assert_eq!(s.job(3), Message::Busy { id: 3 });
    s.finish();
    assert!(!victim.exists(), "the symlink was never followed");
}

#[test]
fn a_squatted_slot_directory_is_an_answer_not_a_hang() {
    let t = tempfile::tempdir().unwrap();
    // World-writable without the sticky bit: others could swap the slot files.
    let wide = t.path().join("wide");
    std::fs::create_dir(&wide).unwrap();
    chmod(&wide, 0o777);
    // A symlink to a directory.
    let real = t.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = t.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    for dir in [&wide, &link] {
        let mut s = Serve::start(t.path(), 2, &[("HOARDCC_SLOT_DIR", dir)]);
        match s.job(1) {
            Message::ServerError { id: 1, message } => {
                assert!(message.contains("slot directory"), "{message}")
            }
            other => panic!("expected ServerError for {}, got {other:?}", dir.display()),
        }
        s.finish();
    }
    assert!(std::fs::read_dir(&real).unwrap().next().is_none());
}

#[test]
fn the_default_slot_directory_is_private_to_the_user() {
    let t = tempfile::tempdir().unwrap();
    let runtime = t.path().join("run-user");
    std::fs::create_dir(&runtime).unwrap();
    chmod(&runtime, 0o700);
    // Unless an admin made /run/hoardcc, slots live in the user's runtime directory.
    if Path::new("/run/hoardcc").exists() {
        eprintln!("skipped: this host provisions /run/hoardcc");
        return;
    }
    let mut s = Serve::start(t.path(), 1, &[("XDG_RUNTIME_DIR", &runtime)]);
    let m = s.job(1);
    assert!(is_result(&m, 1), "{m:?}");
    s.finish();
    let slots = runtime.join("hoardcc-slots");
    let mode = std::fs::metadata(&slots).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700, "nobody else may enter it");
    let file = std::fs::symlink_metadata(slots.join("slot-0")).unwrap();
    assert!(file.is_file());
    assert_eq!(file.permissions().mode() & 0o077, 0);
}

/// Whether `pid` has exited (a zombie counts as gone).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
    }
}

/// Stock distcc over a real `hoardcc serve`: the job holds a slot while it compiles (a
/// second one with `max_jobs = 1` and no wait is answered busy, exit 114), and when its
/// client hangs up the compiler's whole process group is killed and the server exits.
#[test]
fn a_stock_distcc_job_takes_a_slot_and_dies_with_its_client() {
    use hoardcc::proto::distcc::{read_response, write_request, DistccRequest};
    let t = tempfile::tempdir().unwrap();
    let bin = t.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let pids = t.path().join("pids");
    let slowcc = bin.join("slowcc");
    std::fs::write(
        &slowcc,
        format!(
            "#!/bin/sh\nsleep 300 &\necho $$ $! > {p}.tmp && mv {p}.tmp {p}\nwait\n",
            p = pids.display()
        ),
    )
    .unwrap();
    chmod(&slowcc, 0o755);
    let config = t.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            // `sandbox = "off"`: the stand-in compiler reports its pids outside its job
            // directory (the sandbox itself is tested in subsystem::sandbox and e2e).
            "[server]\nmax_jobs = 1\nslot_wait_secs = 0\nsandbox = \"off\"\ncompilers = [\"{}\"]\ntmpdir = \"{}\"\n",
            slowcc.display(),
            t.path().display()
        ),
    )
    .unwrap();
    let slots = t.path().join("slots");
    let serve = |stdin: Stdio| -> Child {
        Command::new(hoardcc_bin())
            .arg("serve")
            .env("HOARDCC_SERVER_CONFIG", &config)
            .env("HOARDCC_SLOT_DIR", &slots)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn hoardcc serve")
    };
    let request = |buf: &mut Vec<u8>| {
        let req = DistccRequest {
            version: 1,
            argv: ["slowcc", "-c", "a.c", "-o", "a.o"]
                .map(String::from)
                .to_vec(),
            doti: b"int a;\n".to_vec(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(write_request(buf, &req)).unwrap();
    };
    let mut bytes = Vec::new();
    request(&mut bytes);
    let mut first = serve(Stdio::piped());
    let mut first_in = first.stdin.take().unwrap();
    first_in.write_all(&bytes).unwrap();
    crate::support::wait_until(ANSWER, "the slow compiler to start", || pids.exists());

    // The second job finds the only slot held: busy (114) at once, the client goes local.
    let mut second = serve(Stdio::piped());
    let mut second_in = second.stdin.take().unwrap();
    second_in.write_all(&bytes).unwrap();
    let mut second_out = second.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = second_out.read_to_end(&mut out);
        let _ = tx.send(out);
    });
    let out = rx
        .recv_timeout(ANSWER)
        .expect("the second job answered in time");
    drop(second_in);
    assert!(second.wait().unwrap().success());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let resp = rt.block_on(read_response(&mut &out[..], 1)).unwrap();
    assert_eq!(
        resp.status,
        114 << 8,
        "{}",
        String::from_utf8_lossy(&resp.stderr)
    );

    // The first client hangs up: its compiler and the compiler's child die, serve exits.
    let text = std::fs::read_to_string(&pids).unwrap();
    drop(first_in);
    crate::support::wait_until(ANSWER, "serve to exit after EOF", || {
        first.try_wait().unwrap().is_some()
    });
    for pid in text.split_whitespace().map(|p| p.parse::<i32>().unwrap()) {
        crate::support::wait_until(ANSWER, "the compiler to die", || gone(pid));
    }
    let mut rest = Vec::new();
    first.stdout.take().unwrap().read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "nothing is answered to a client that left");
}
