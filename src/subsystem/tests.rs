//! Tests of `hoardcc serve` driven over in-memory pipes with the real gcc: the native
//! lane (hello, jobs, refusals, busy, heartbeats, kill on EOF, timeout) and one stock
//! distcc job.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::io::{duplex, AsyncReadExt, DuplexStream};

use super::*;
use crate::proto::compress::MAX_BLOB;
use crate::proto::distcc::{read_response, write_request, DistccRequest};
use crate::proto::msg::SourceKind;
use crate::proto::msg::{Blob, Input, Job, JobHeader, JobResult, Message, JOB3_VERSION};

/// Bound on every wait in these tests.
pub(super) const WAIT: Duration = Duration::from_secs(60);

pub(super) fn settings(tmp: &Path) -> ServerSettings {
    ServerSettings {
        compilers: vec![],
        default_compilers: true,
        compile_timeout: Duration::from_secs(120),
        max_jobs: Some(4),
        tmpdir: Some(tmp.to_path_buf()),
        heartbeat: Duration::from_secs(5),
        ..ServerSettings::default()
    }
}

pub(super) fn options(tmp: &Path) -> ServeOptions {
    ServeOptions {
        slot_dir: tmp.join("slots"),
        search_path: None,
        hello_timeout: Duration::from_secs(10),
        cache_dir: None,
    }
}

/// The client end of a lane.
pub(super) struct Client {
    pub(super) w: Option<DuplexStream>,
    pub(super) r: DuplexStream,
    pub(super) heartbeats: usize,
}

/// Two one-way pipes: (client, server input, server output).
pub(super) fn lane() -> (Client, DuplexStream, DuplexStream) {
    let (client_w, server_r) = duplex(1 << 16);
    let (server_w, client_r) = duplex(1 << 16);
    (
        Client {
            w: Some(client_w),
            r: client_r,
            heartbeats: 0,
        },
        server_r,
        server_w,
    )
}

impl Client {
    pub(super) async fn hello(&mut self) -> Hello {
        self.hello_with(&["lz4"]).await
    }

    /// Our hello with these caps; the server's.
    pub(super) async fn hello_with(&mut self, caps: &[&str]) -> Hello {
        let ours = Hello {
            version: PROTOCOL_VERSION,
            min_version: MIN_PROTOCOL_VERSION,
            caps: caps.iter().map(|c| c.to_string()).collect(),
            slots: 0,
            load: 0,
            agent: "test client".into(),
        };
        frame::write_hello(self.w.as_mut().unwrap(), &ours)
            .await
            .unwrap();
        tokio::time::timeout(WAIT, frame::read_hello(&mut self.r))
            .await
            .expect("server hello in time")
            .unwrap()
    }

    pub(super) async fn send(&mut self, m: &Message) {
        frame::write_message(self.w.as_mut().unwrap(), m)
            .await
            .unwrap();
    }

    /// The next message that is not a heartbeat.
    pub(super) async fn answer(&mut self) -> Message {
        loop {
            let m = tokio::time::timeout(WAIT, frame::read_message(&mut self.r))
                .await
                .expect("answer in time")
                .unwrap()
                .expect("a message, not EOF");
            match m {
                Message::Heartbeat { .. } => self.heartbeats += 1,
                m => return m,
            }
        }
    }

    pub(super) fn hang_up(&mut self) {
        self.w = None;
    }
}

pub(super) fn job(id: u64, compiler: &str, cwd: &Path, source_name: &str, source: &[u8]) -> Job {
    Job {
        id,
        header: JobHeader {
            compiler: compiler.into(),
            args: vec!["-g".into(), "-O2".into()],
            assemble_only: false,
            cwd: cwd.to_string_lossy().into_owned(),
            source_name: source_name.into(),
            output_name: "foo.o".into(),
            extra_outputs: vec![],
        },
        source_kind: SourceKind::DirectivesOnly,
        source: Input::Whole(Blob::pack(source)),
        context: vec![],
        env: vec![],
        compiler_id: None,
        cache: false,
    }
}

const FOO_C: &str = "#include <stdio.h>\n#include <string.h>\n#define SQ(x) ((x) * (x))\n\
int foo(int a) { return SQ(a) + printf(\"%d\\n\", a); }\n\
size_t bar(const char *s) { return strlen(s) * 3; }\n";

/// A project dir with `src/foo.c`; returns (dir, directives-only source, local `gcc -c` object).
pub(super) fn project(tmp: &Path) -> (PathBuf, Vec<u8>, Vec<u8>) {
    let proj = tmp.join("home/user/proj");
    std::fs::create_dir_all(proj.join("src")).unwrap();
    std::fs::write(proj.join("src/foo.c"), FOO_C).unwrap();
    let pre = Command::new("gcc")
        .args(["-g", "-O2", "-E", "-fdirectives-only", "src/foo.c"])
        .current_dir(&proj)
        .output()
        .unwrap();
    assert!(
        pre.status.success(),
        "{}",
        String::from_utf8_lossy(&pre.stderr)
    );
    let local = Command::new("gcc")
        .args(["-g", "-O2", "-c", "src/foo.c", "-o", "foo.o"])
        .current_dir(&proj)
        .status()
        .unwrap();
    assert!(local.success());
    let object = std::fs::read(proj.join("foo.o")).unwrap();
    std::fs::remove_file(proj.join("foo.o")).unwrap();
    (proj, pre.stdout, object)
}

pub(super) fn expect_result(m: Message, id: u64) -> JobResult {
    match m {
        Message::Result3(r) => {
            assert_eq!(r.id, id);
            r
        }
        other => panic!("expected Result for job {id}, got {other:?}"),
    }
}

#[tokio::test]
async fn native_jobs_give_objects_identical_to_a_local_build() {
    let tmp = tempfile::tempdir().unwrap();
    let (proj, source, reference) = project(tmp.path());
    let mapped_arg = format!("-fdebug-prefix-map={}=.", proj.display());
    let st = Command::new("gcc")
        .args([
            "-g",
            "-O2",
            &mapped_arg,
            "-c",
            "src/foo.c",
            "-o",
            "mapped.o",
        ])
        .current_dir(&proj)
        .status()
        .unwrap();
    assert!(st.success());
    let mapped_reference = std::fs::read(proj.join("mapped.o")).unwrap();
    let (settings, opts) = (settings(tmp.path()), options(tmp.path()));
    let (mut c, sr, sw) = lane();
    let client = async {
        let hello = c.hello().await;
        assert_eq!(hello.version, PROTOCOL_VERSION);
        assert_eq!(hello.slots, 4);
        assert_eq!(hello.load, 0);
        assert!(hello.caps.iter().any(|c| c == "busy"));
        assert!(hello.agent.starts_with("hoardcc "), "{}", hello.agent);
        for id in 1..=3 {
            c.send(&Message::Job3(job(id, "gcc", &proj, "src/foo.c", &source)))
                .await;
            let r = expect_result(c.answer().await, id);
            assert_eq!(
                r.exit_code,
                0,
                "{}",
                String::from_utf8_lossy(&r.stderr.unpack(MAX_BLOB).unwrap())
            );
            assert_eq!(r.outputs.len(), 1);
            assert_eq!(r.outputs[0].name, "foo.o");
            let object = r.outputs[0].data.unpack(MAX_BLOB).unwrap();
            assert!(
                object == reference,
                "job {id}: object differs from the local build"
            );
            c.send(&Message::Ping { nonce: 40 + id }).await;
            assert_eq!(c.answer().await, Message::Pong { nonce: 40 + id });
        }
        // The client's own prefix map applies as it does locally.
        let mut j = job(4, "gcc", &proj, "src/foo.c", &source);
        j.header.args.push(mapped_arg.clone());
        c.send(&Message::Job3(j)).await;
        let r = expect_result(c.answer().await, 4);
        let object = r.outputs[0].data.unpack(MAX_BLOB).unwrap();
        assert!(
            object == mapped_reference,
            "object with a client prefix map differs"
        );
        assert!(object != reference);
        c.hang_up();
    };
    let (served, ()) = tokio::join!(serve_with(sr, sw, &settings, &opts), client);
    served.unwrap();
    // Every job directory is gone.
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("hoardcc-job-"))
        .collect();
    assert!(left.is_empty(), "job directories left behind: {left:?}");
}

#[tokio::test]
async fn a_protocol_2_client_gets_protocol_2_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    let (proj, source, reference) = project(tmp.path());
    let (settings, opts) = (settings(tmp.path()), options(tmp.path()));
    let (mut c, sr, sw) = lane();
    let client = async {
        let ours = Hello {
            version: 2,
            min_version: 1,
            caps: vec![],
            slots: 0,
            load: 0,
            agent: "a protocol-2 client".into(),
        };
        frame::write_hello(c.w.as_mut().unwrap(), &ours)
            .await
            .unwrap();
        frame::read_hello(&mut c.r).await.unwrap();
        let v2 = job(1, "gcc", &proj, "src/foo.c", &source)
            .to_v2()
            .expect("whole blobs");
        c.send(&Message::Job(v2)).await;
        match c.answer().await {
            Message::Result(r) => {
                assert_eq!((r.id, r.exit_code), (1, 0));
                let object = r.outputs[0].data.unpack(MAX_BLOB).unwrap();
                assert!(object == reference, "object differs from the local build");
            }
            other => panic!("a protocol-2 client needs a Result, got {other:?}"),
        }
        c.hang_up();
    };
    let (served, ()) = tokio::join!(serve_with(sr, sw, &settings, &opts), client);
    served.unwrap();
}

#[tokio::test]
async fn errors_and_refusals_are_answered_and_the_lane_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let (proj, source, _) = project(tmp.path());
    let (settings, opts) = (settings(tmp.path()), options(tmp.path()));
    let (mut c, sr, sw) = lane();
    let client = async {
        c.hello().await;
        // Compile error.
        // Shaped like directives-only output: markers before the code.
        let bad = b"# 0 \"src/bad.c\"\n# 0 \"<command-line>\"\n# 1 \"src/bad.c\"\n\
                    int main(void) { return undeclared_thing; }\n";
        c.send(&Message::Job3(job(1, "gcc", &proj, "src/bad.c", bad)))
            .await;
        let r = expect_result(c.answer().await, 1);
        assert_eq!(r.exit_code, 1);
        let stderr = String::from_utf8(r.stderr.unpack(MAX_BLOB).unwrap()).unwrap();
        assert!(stderr.contains("undeclared_thing"), "{stderr}");
        assert!(
            stderr.contains("src/bad.c"),
            "diagnostics use the client's name: {stderr}"
        );
        assert!(
            !stderr.contains("# 0"),
            "no caret lines quoted from the staged file: {stderr}"
        );
        assert!(r.outputs.is_empty());
        // Refused compiler.
        c.send(&Message::Job3(job(2, "rm", &proj, "src/foo.c", &source)))
            .await;
        assert!(
            matches!(c.answer().await, Message::Refused { id: 2, reason } if reason.contains("rm"))
        );
        c.send(&Message::Job3(job(
            3,
            "/usr/bin/gcc",
            &proj,
            "src/foo.c",
            &source,
        )))
        .await;
        assert!(matches!(c.answer().await, Message::Refused { id: 3, .. }));
        // Refused argument.
        let mut j = job(4, "gcc", &proj, "src/foo.c", &source);
        j.header.args.push("-fplugin=x.so".into());
        c.send(&Message::Job3(j)).await;
        assert!(
            matches!(c.answer().await, Message::Refused { id: 4, reason } if reason.contains("-fplugin"))
        );
        // Output that escapes the job root.
        let mut j = job(5, "gcc", Path::new("/tmp"), "foo.c", &source);
        j.header.output_name = "../../escape.o".into();
        c.send(&Message::Job3(j)).await;
        assert!(matches!(c.answer().await, Message::Refused { id: 5, .. }));
        // Source that escapes.
        let j = job(6, "gcc", Path::new("/a"), "../../../etc/passwd.c", &source);
        c.send(&Message::Job3(j)).await;
        assert!(matches!(c.answer().await, Message::Refused { id: 6, .. }));
        // `../` inside the root is fine, and -S with an extra output that is not made.
        let mut j = job(7, "gcc", &proj.join("src"), "foo.c", &source);
        j.header.output_name = "../obj/foo.s".into();
        j.header.assemble_only = true;
        j.header.extra_outputs = vec!["../obj/foo.dwo".into()];
        c.send(&Message::Job3(j)).await;
        let r = expect_result(c.answer().await, 7);
        assert_eq!(r.exit_code, 0);
        assert_eq!(r.outputs.len(), 1);
        assert_eq!(r.outputs[0].name, "../obj/foo.s");
        let asm = String::from_utf8(r.outputs[0].data.unpack(MAX_BLOB).unwrap()).unwrap();
        assert!(asm.contains("foo:"), "{asm}");
        c.hang_up();
    };
    let (served, ()) = tokio::join!(serve_with(sr, sw, &settings, &opts), client);
    served.unwrap();
    assert!(!Path::new("/tmp/escape.o").exists());
}

/// A compiler stand-in that records its pid and a child's, then waits forever.
pub(super) fn slow_compiler(bin: &Path, pids: &Path) {
    std::fs::create_dir_all(bin).unwrap();
    let script = format!(
        "#!/bin/sh\nsleep 300 &\necho $$ $! > {p}.tmp && mv {p}.tmp {p}\nwait\n",
        p = pids.display()
    );
    let path = bin.join("slowcc");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Whether process `pid` has exited (also for the exec tests).
pub(crate) fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie that PID 1 of a container has not reaped yet is dead too.
        Ok(s) => s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
    }
}

pub(super) async fn wait_for_file(p: &Path) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(s) = std::fs::read_to_string(p) {
            return s;
        }
        assert!(Instant::now() < deadline, "{} never appeared", p.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn client_eof_mid_compile_kills_the_process_group() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    let pids = tmp.path().join("pids");
    slow_compiler(&bin, &pids);
    let mut settings = settings(tmp.path());
    settings.compilers = vec!["slowcc".into()];
    settings.heartbeat = Duration::from_millis(50);
    // The stand-in records its pids outside its job directory.
    settings.sandbox = crate::config::SandboxMode::Off;
    let mut opts = options(tmp.path());
    opts.search_path = Some(bin.clone().into_os_string());
    let (mut c, sr, sw) = lane();
    let client = async {
        c.hello().await;
        c.send(&Message::Job3(job(
            1,
            "slowcc",
            Path::new("/w"),
            "a.c",
            b"int x;\n",
        )))
        .await;
        let m = tokio::time::timeout(WAIT, frame::read_message(&mut c.r))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m, Some(Message::Heartbeat { id: 1 }));
        let text = wait_for_file(&pids).await;
        c.hang_up();
        text
    };
    let started = Instant::now();
    let (served, text) = tokio::join!(serve_with(sr, sw, &settings, &opts), client);
    served.unwrap();
    assert!(started.elapsed() < Duration::from_secs(30));
    let pids: Vec<i32> = text
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2);
    let deadline = Instant::now() + WAIT;
    for pid in pids {
        while !gone(pid) {
            assert!(
                Instant::now() < deadline,
                "pid {pid} survived the client's EOF"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Nothing more was written after the heartbeats.
    let mut rest = Vec::new();
    c.r.read_to_end(&mut rest).await.unwrap();
    let mut rest = &rest[..];
    while let Some(m) = frame::read_message(&mut rest).await.unwrap() {
        assert_eq!(m, Message::Heartbeat { id: 1 });
    }
}

#[tokio::test]
async fn compile_timeout_is_a_server_error() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    slow_compiler(&bin, &tmp.path().join("pids"));
    let mut settings = settings(tmp.path());
    settings.compilers = vec!["slowcc".into()];
    settings.default_compilers = false;
    settings.compile_timeout = Duration::from_millis(300);
    settings.sandbox = crate::config::SandboxMode::Off;
    let mut opts = options(tmp.path());
    opts.search_path = Some(bin.into_os_string());
    let (mut c, sr, sw) = lane();
    let client = async {
        c.hello().await;
        c.send(&Message::Job3(job(
            9,
            "slowcc",
            Path::new("/w"),
            "a.c",
            b"int x;\n",
        )))
        .await;
        match c.answer().await {
            Message::ServerError { id: 9, message } => {
                assert!(message.contains("timed out after 0.3 s"), "{message}")
            }
            other => panic!("expected ServerError, got {other:?}"),
        }
        // default_compilers = false: gcc is not allowed here.
        c.send(&Message::Job3(job(
            10,
            "gcc",
            Path::new("/w"),
            "a.c",
            b"int x;\n",
        )))
        .await;
        assert!(matches!(c.answer().await, Message::Refused { id: 10, .. }));
        c.hang_up();
    };
    let (served, ()) = tokio::join!(serve_with(sr, sw, &settings, &opts), client);
    served.unwrap();
}

#[tokio::test]
async fn all_slots_held_means_busy_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let mut settings = settings(tmp.path());
    settings.max_jobs = Some(1);
    let opts = options(tmp.path());
    let held = slots::try_acquire(&opts.slot_dir, 1)
        .unwrap()
        .expect("free slot");
    let (mut c, sr, sw) = lane();
    let client = async {
        let hello = c.hello().await;
        assert_eq!((hello.slots, hello.load), (1, 1));
        let started = Instant::now();
        c.send(&Message::Job3(job(
            5,
            "gcc",
            Path::new("/w"),
            "a.c",
            b"int x;\n",
        )))
        .await;
        assert_eq!(c.answer().await, Message::Busy { id: 5 });
        assert!(started.elapsed() < Duration::from_secs(5));
        c.hang_up();
    };
    let (served, ()) = tokio::join!(serve_with(sr, sw, &settings, &opts), client);
    served.unwrap();
    drop(held);
}

#[tokio::test]
async fn garbage_and_empty_input() {
    let tmp = tempfile::tempdir().unwrap();
    let (settings, opts) = (settings(tmp.path()), options(tmp.path()));
    let mut out = Vec::new();
    let err = serve_with(
        &b"Welcome to the server!\n\0HOARDCC"[..],
        &mut out,
        &settings,
        &opts,
    )
    .await
    .unwrap_err();
    match &err {
        ServeError::Garbage { preview } => assert!(preview.contains("Welcome"), "{preview}"),
        other => panic!("expected Garbage, got {other:?}"),
    }
    assert_eq!(err.exit_code(), crate::exit::ExitCode::ProtocolError);
    assert!(out.is_empty(), "nothing may be written after garbage");
    for short in [&b"DI"[..], &b"X"[..]] {
        let mut out = Vec::new();
        assert!(serve_with(short, &mut out, &settings, &opts).await.is_err());
        assert!(out.is_empty());
    }
    let mut out = Vec::new();
    serve_with(&b""[..], &mut out, &settings, &opts)
        .await
        .unwrap();
    assert!(out.is_empty());
}

/// Sends `req` as a stock distcc client does (keeping its end open until the answer is
/// in: EOF would mean it went away) and returns the server's response.
pub(super) async fn distcc_round_trip(
    req: &DistccRequest,
    settings: &ServerSettings,
    opts: &ServeOptions,
) -> crate::proto::distcc::DistccResponse {
    let (mut c, sr, sw) = lane();
    let client = async {
        write_request(c.w.as_mut().unwrap(), req).await.unwrap();
        let resp = tokio::time::timeout(WAIT, read_response(&mut c.r, req.version))
            .await
            .expect("a distcc answer in time")
            .unwrap();
        c.hang_up();
        resp
    };
    let (served, resp) = tokio::join!(serve_with(sr, sw, settings, opts), client);
    served.unwrap();
    resp
}

#[tokio::test]
async fn stock_distcc_job() {
    let tmp = tempfile::tempdir().unwrap();
    let (settings, opts) = (settings(tmp.path()), options(tmp.path()));
    let dir = tmp.path().join("d");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("foo.c"), FOO_C).unwrap();
    let pre = Command::new("gcc")
        .args(["-E", "foo.c", "-o", "foo.i"])
        .current_dir(&dir)
        .status()
        .unwrap();
    assert!(pre.success());
    let st = Command::new("gcc")
        .args(["-O2", "-c", "foo.i", "-o", "ref.o"])
        .current_dir(&dir)
        .status()
        .unwrap();
    assert!(st.success());
    let doti = std::fs::read(dir.join("foo.i")).unwrap();
    let reference = std::fs::read(dir.join("ref.o")).unwrap();
    let argv = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    for version in [1, 2] {
        let req = DistccRequest {
            version,
            argv: argv(&["gcc", "-O2", "-c", "foo.c", "-o", "foo.o"]),
            doti: doti.clone(),
        };
        let resp = distcc_round_trip(&req, &settings, &opts).await;
        assert_eq!(resp.status, 0, "{}", String::from_utf8_lossy(&resp.stderr));
        assert!(resp.doto == reference, "distcc v{version} object differs");
    }

    // A compile error: status of exit 1, stderr, no object.
    let req = DistccRequest {
        version: 1,
        argv: argv(&["cc", "-c", "bad.c", "-o", "bad.o"]),
        doti: b"int f(void) { return nope; }\n".to_vec(),
    };
    let resp = distcc_round_trip(&req, &settings, &opts).await;
    assert_eq!(resp.status, 1 << 8);
    assert!(String::from_utf8_lossy(&resp.stderr).contains("nope"));
    assert!(resp.doto.is_empty());

    // Refused compiler and argument: exit 113 with an explanation.
    for bad in [
        argv(&["rm", "-c", "foo.c", "-o", "foo.o"]),
        argv(&["gcc", "-fplugin=evil.so", "-c", "foo.c", "-o", "foo.o"]),
    ] {
        let req = DistccRequest {
            version: 1,
            argv: bad,
            doti: doti.clone(),
        };
        let mut input = Vec::new();
        write_request(&mut input, &req).await.unwrap();
        let mut out = Vec::new();
        serve_with(&input[..], &mut out, &settings, &opts)
            .await
            .unwrap();
        let resp = read_response(&mut &out[..], 1).await.unwrap();
        assert_eq!(resp.status, 113 << 8);
        assert!(String::from_utf8_lossy(&resp.stderr).contains("hoardcc server"));
        assert!(resp.doto.is_empty());
    }
}

#[test]
fn distccd_flags() {
    let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let o = parse_distccd_args(&a(&["distccd", "--inetd", "--enable-tcp-insecure"])).unwrap();
    assert_eq!(o, DistccdOpts::default());
    let o = parse_distccd_args(&a(&[
        "distccd",
        "--log-level",
        "debug",
        "--inetd",
        "--log-file=/tmp/x.log",
        "--allow",
        "10.0.0.0/8",
        "-j",
        "4",
        "--log-stderr",
        "-j8",
    ]))
    .unwrap();
    assert_eq!(o.log_file, Some(PathBuf::from("/tmp/x.log")));
    let err = parse_distccd_args(&a(&["distccd", "--allow", "1.2.3.4"])).unwrap_err();
    assert!(err.contains("daemon mode is not supported"), "{err}");
    assert!(parse_distccd_args(&a(&["distccd", "--inetd", "--daemon"])).is_err());
    assert!(parse_distccd_args(&a(&["distccd", "--inetd", "--log-file"])).is_err());
}

#[tokio::test]
async fn success_without_the_output_is_a_server_error() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let fake = bin.join("nooutcc");
    std::fs::write(&fake, "#!/bin/sh\necho pretending >&2\nexit 0\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut settings = settings(tmp.path());
    // An absolute entry pins the file, whatever the PATH says.
    settings.compilers = vec![fake.display().to_string()];
    let opts = options(tmp.path());
    let (mut c, sr, sw) = lane();
    let client = async {
        c.hello().await;
        c.send(&Message::Job3(job(
            3,
            "nooutcc",
            Path::new("/w"),
            "a.c",
            b"int x;\n",
        )))
        .await;
        match c.answer().await {
            Message::ServerError { id: 3, message } => {
                assert!(message.contains("wrote no foo.o"), "{message}")
            }
            other => panic!("expected ServerError, got {other:?}"),
        }
        c.hang_up();
    };
    let (served, ()) = tokio::join!(serve_with(sr, sw, &settings, &opts), client);
    served.unwrap();
}

/// What the wrapper does to directives-only output: drop the `<built-in>` section.
fn strip_builtins(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut in_builtin = false;
    for line in text.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b"# ") {
            in_builtin = line.windows(12).any(|w| w == b"\"<built-in>\"");
            if in_builtin {
                continue;
            }
        } else if in_builtin && line.starts_with(b"#define") {
            continue;
        }
        out.extend_from_slice(line);
    }
    out
}

#[tokio::test]
async fn g3_macro_tables_match_a_local_build() {
    let tmp = tempfile::tempdir().unwrap();
    let proj = tmp.path().join("p");
    std::fs::create_dir_all(&proj).unwrap();
    std::fs::write(proj.join("m.c"), FOO_C).unwrap();
    let flags = ["-O0", "-g3"];
    let pre = Command::new("gcc")
        .args(flags)
        .args(["-E", "-fdirectives-only", "m.c"])
        .current_dir(&proj)
        .output()
        .unwrap();
    assert!(pre.status.success());
    let st = Command::new("gcc")
        .args(flags)
        .args(["-c", "m.c", "-o", "m.o"])
        .current_dir(&proj)
        .status()
        .unwrap();
    assert!(st.success());
    let reference = std::fs::read(proj.join("m.o")).unwrap();
    let (settings, opts) = (settings(tmp.path()), options(tmp.path()));
    let (mut c, sr, sw) = lane();
    let client = async {
        c.hello().await;
        let mut j = job(1, "gcc", &proj, "m.c", &strip_builtins(&pre.stdout));
        j.header.args = flags.iter().map(|f| f.to_string()).collect();
        j.header.output_name = "m.o".into();
        c.send(&Message::Job3(j)).await;
        let r = expect_result(c.answer().await, 1);
        assert_eq!(r.exit_code, 0);
        let stderr = r.stderr.unpack(MAX_BLOB).unwrap();
        assert!(stderr.is_empty(), "{}", String::from_utf8_lossy(&stderr));
        assert!(
            r.outputs[0].data.unpack(MAX_BLOB).unwrap() == reference,
            "-g3 object differs"
        );
        c.hang_up();
    };
    let (served, ()) = tokio::join!(serve_with(sr, sw, &settings, &opts), client);
    served.unwrap();
}

/// A compiler that dies by a signal, or whose driver reports a killed `cc1`, is a server
/// fault (`Fault` to a protocol-2 client, `ServerError` to a protocol-1 one, status 104 to
/// a stock distcc client), never the compiler's exit status; the lane goes on.
#[tokio::test]
async fn a_killed_compiler_is_a_fault_not_a_status() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let fake = |name: &str, script: &str| {
        let p = bin.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.display().to_string()
    };
    let mut settings = settings(tmp.path());
    settings.compilers = vec![
        fake("killedcc", "echo partial >&2; kill -KILL $$"),
        fake(
            "cc1killedcc",
            "echo 'gcc: fatal error: Killed signal terminated program cc1' >&2\n\
             echo 'compilation terminated.' >&2; exit 1",
        ),
    ];
    let opts = options(tmp.path());
    for version in [PROTOCOL_VERSION, 1] {
        let (mut c, sr, sw) = lane();
        let client = async {
            let ours = Hello {
                version,
                min_version: 1,
                caps: vec![],
                slots: 0,
                load: 0,
                agent: format!("test client v{version}"),
            };
            frame::write_hello(c.w.as_mut().unwrap(), &ours)
                .await
                .unwrap();
            frame::read_hello(&mut c.r).await.unwrap();
            for (id, compiler, program, signal) in
                [(1, "killedcc", "killedcc", 9), (2, "cc1killedcc", "cc1", 9)]
            {
                let j = job(id, compiler, Path::new("/w"), "a.c", b"int x;\n");
                // Each version's own job shape.
                let m = match version {
                    JOB3_VERSION.. => Message::Job3(j),
                    _ => Message::Job(j.to_v2().expect("whole blobs")),
                };
                c.send(&m).await;
                match (version, c.answer().await) {
                    (1, Message::ServerError { id: i, message }) => {
                        assert_eq!(i, id);
                        assert_eq!(message, format!("{program} killed by signal {signal}"));
                    }
                    (2.., Message::Fault { id: i, fault }) => {
                        assert_eq!(i, id);
                        assert_eq!((fault.program.as_str(), fault.signal), (program, signal));
                    }
                    (v, other) => panic!("v{v} job {id}: {other:?}"),
                }
            }
            c.hang_up();
        };
        let (served, ()) = tokio::join!(serve_with(sr, sw, &settings, &opts), client);
        served.unwrap();
    }
    // Stock distcc: a status below 128 (stock clients retry those locally), with the why.
    let allow = AllowList::new(false, settings.compilers.clone(), None);
    let req = DistccRequest {
        version: 1,
        argv: ["killedcc", "-c", "a.c", "-o", "a.o"]
            .map(String::from)
            .to_vec(),
        doti: b"int x;\n".to_vec(),
    };
    // The client stays connected (its end of the pipe is held open).
    let (_client, mut input) = duplex(64);
    let sandbox = super::sandbox::Sandbox::new(&settings);
    let resp = distccd::run_request(
        &req,
        &mut input,
        &allow,
        &settings,
        &opts.slot_dir,
        &sandbox,
    )
    .await
    .expect("the client is still there");
    assert_eq!(resp.status, 104 << 8);
    assert!(resp.doto.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&resp.stderr),
        "hoardcc server: killedcc killed by signal 9\n"
    );
}
