//! Tests of admission before work: a job over its claimed-size or count limits is
//! refused before anything is decoded or written, a full host answers `Busy` before any
//! work, pipelined jobs are bounded in bytes, an idle lane closes cleanly (paused time),
//! and stock distcc jobs take a slot and lose their compiler when the client goes.

use std::path::Path;
use std::time::{Duration, Instant};

use super::tests::{
    distcc_round_trip, job, lane, options, settings, slow_compiler, wait_for_file, WAIT,
};
use super::*;
use crate::proto::distcc::{write_request, DistccRequest};
use crate::proto::msg::Codec;
use crate::proto::msg::{Blob, ContextFile, Input, Message};

/// The job directories in `tmp` (the server's `tmpdir`).
fn job_dirs(tmp: &Path) -> Vec<String> {
    std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("hoardcc-"))
        .collect()
}

/// An LZ4 blob of `data_len` bytes of garbage that claims `raw_len`: decoding it would
/// allocate `raw_len` bytes and then fail.
fn lying_blob(raw_len: u64, data_len: usize) -> Blob {
    Blob {
        codec: Codec::Lz4,
        raw_len,
        data: vec![0xAB; data_len],
    }
}

#[tokio::test]
async fn a_huge_claim_is_refused_before_any_decoding_or_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let (settings, opts) = (settings(tmp.path()), options(tmp.path()));
    let (mut c, sr, sw) = lane();
    let client = async {
        c.hello().await;
        // 4 MiB on the wire claiming 1 GiB: within LZ4's ratio, far over the job limit.
        let mut j = job(1, "gcc", Path::new("/w"), "a.c", b"");
        j.source = Input::Whole(lying_blob(1 << 30, 4 << 20));
        c.send(&Message::Job3(j)).await;
        match c.answer().await {
            // Refused, not "bad source blob": the claim was judged, nothing decoded.
            Message::Refused { id: 1, reason } => assert!(reason.contains("claim"), "{reason}"),
            other => panic!("expected Refused, got {other:?}"),
        }
        // The same through context files: each small, together too much.
        let mut j = job(2, "gcc", Path::new("/w"), "a.c", b"int x;\n");
        j.context = (0..3)
            .map(|i| ContextFile {
                name: format!("h{i}.h"),
                data: Input::Whole(lying_blob(100 << 20, 1 << 20)),
            })
            .collect();
        c.send(&Message::Job3(j)).await;
        assert!(matches!(c.answer().await, Message::Refused { id: 2, .. }));
        assert!(
            job_dirs(tmp.path()).is_empty(),
            "{:?}",
            job_dirs(tmp.path())
        );
        c.hang_up();
    };
    let (served, ()) = tokio::join!(serve_with(sr, sw, &settings, &opts), client);
    served.unwrap();
    assert_eq!(slots::current_load(&opts.slot_dir, 4), 0);
}

#[tokio::test]
async fn a_full_host_answers_busy_before_decoding_or_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut settings = settings(tmp.path());
    settings.max_jobs = Some(1);
    let opts = options(tmp.path());
    let held = slots::try_acquire(&opts.slot_dir, 1).unwrap().unwrap();
    let (mut c, sr, sw) = lane();
    let client = async {
        c.hello().await;
        let lying = || {
            let mut j = job(3, "gcc", Path::new("/w"), "a.c", b"");
            j.source = Input::Whole(lying_blob(100 << 20, 1 << 20));
            j
        };
        c.send(&Message::Job3(lying())).await;
        // Busy, not "bad source blob": nothing was decoded without the slot.
        assert_eq!(c.answer().await, Message::Busy { id: 3 });
        assert!(
            job_dirs(tmp.path()).is_empty(),
            "{:?}",
            job_dirs(tmp.path())
        );
        drop(held);
        // With the slot free, the same job is decoded (and found bad) only now.
        c.send(&Message::Job3(lying())).await;
        match c.answer().await {
            Message::ServerError { id: 3, message } => {
                assert!(message.contains("bad source blob"), "{message}")
            }
            other => panic!("expected ServerError, got {other:?}"),
        }
        assert!(job_dirs(tmp.path()).is_empty(), "the job dir is removed");
        c.hang_up();
    };
    let (served, ()) = tokio::join!(serve_with(sr, sw, &settings, &opts), client);
    served.unwrap();
}

#[tokio::test]
async fn context_files_extra_outputs_and_names_are_capped() {
    let tmp = tempfile::tempdir().unwrap();
    let mut settings = settings(tmp.path());
    settings.admission.max_context_files = 3;
    settings.admission.max_extra_outputs = 2;
    let opts = options(tmp.path());
    let (mut c, sr, sw) = lane();
    let with_context = |id, n: usize| {
        let mut j = job(id, "gcc", Path::new("/w"), "a.c", b"int x;\n");
        j.context = (0..n)
            .map(|i| ContextFile {
                name: format!("inc/h{i}.h"),
                data: Input::Whole(Blob::pack(b"/* header */\n")),
            })
            .collect();
        j
    };
    let client = async {
        c.hello().await;
        c.send(&Message::Job3(with_context(1, 4))).await;
        match c.answer().await {
            Message::Refused { id: 1, reason } => {
                assert!(reason.contains("4 context files"), "{reason}")
            }
            other => panic!("expected Refused, got {other:?}"),
        }
        c.send(&Message::Job3(with_context(2, 3))).await;
        match c.answer().await {
            Message::Result3(r) => assert_eq!((r.id, r.exit_code), (2, 0)),
            other => panic!("expected a Result, got {other:?}"),
        }
        let mut j = job(3, "gcc", Path::new("/w"), "a.c", b"int x;\n");
        j.header.extra_outputs = vec!["a.dwo".into(), "a.su".into(), "a.ci".into()];
        c.send(&Message::Job3(j)).await;
        assert!(matches!(c.answer().await, Message::Refused { id: 3, .. }));
        let mut j = job(4, "gcc", Path::new("/w"), "a.c", b"int x;\n");
        j.header.output_name = "x".repeat(job::MAX_NAME_LEN + 1);
        c.send(&Message::Job3(j)).await;
        assert!(matches!(c.answer().await, Message::Refused { id: 4, .. }));
        c.hang_up();
    };
    let (served, ()) = tokio::join!(serve_with(sr, sw, &settings, &opts), client);
    served.unwrap();
}

/// A compiler that waits until `gate` exists, then fails (exit 1, no output needed).
fn gate_compiler(bin: &Path, gate: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(bin).unwrap();
    let script = format!(
        "#!/bin/sh\nwhile [ ! -e {} ]; do sleep 0.02; done\nexit 1\n",
        gate.display()
    );
    let path = bin.join("gatecc");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test]
async fn jobs_queued_behind_a_compile_are_bounded_in_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    let gate = tmp.path().join("gate");
    gate_compiler(&bin, &gate);
    let mut settings = settings(tmp.path());
    settings.compilers = vec!["gatecc".into()];
    settings.heartbeat = Duration::from_millis(50);
    settings.admission.max_queued_bytes = 4096;
    let mut opts = options(tmp.path());
    opts.search_path = Some(bin.into_os_string());
    let (mut c, sr, sw) = lane();
    let client = async {
        c.hello().await;
        let small = |id| job(id, "gatecc", Path::new("/w"), "a.c", b"int x;\n");
        c.send(&Message::Job3(small(1))).await;
        // Job 2 (raw, 8 KiB) does not fit the 4 KiB queue budget: Busy at once, while
        // job 1 still runs. Job 3 is small and waits its turn.
        let mut big = small(2);
        big.source = Input::Whole(Blob::raw(vec![b' '; 8 << 10]));
        c.send(&Message::Job3(big)).await;
        c.send(&Message::Job3(small(3))).await;
        assert_eq!(c.answer().await, Message::Busy { id: 2 });
        std::fs::write(&gate, b"").unwrap();
        for id in [1, 3] {
            match c.answer().await {
                Message::Result3(r) => assert_eq!((r.id, r.exit_code), (id, 1)),
                other => panic!("expected Result {id}, got {other:?}"),
            }
        }
        c.hang_up();
    };
    let (served, ()) = tokio::join!(serve_with(sr, sw, &settings, &opts), client);
    served.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_idle_lane_is_closed_cleanly_after_the_idle_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let (settings, opts) = (settings(tmp.path()), options(tmp.path()));
    let idle = settings.admission.idle_timeout;
    let (mut c, sr, sw) = lane();
    let client = async {
        c.hello().await;
        let start = tokio::time::Instant::now();
        // A ping just before the timeout keeps the lane: the timer starts again.
        tokio::time::sleep(idle - Duration::from_secs(1)).await;
        c.send(&Message::Ping { nonce: 1 }).await;
        assert_eq!(c.answer().await, Message::Pong { nonce: 1 });
        // Then silence: the server closes its end (EOF, no error message).
        let end = frame::read_message(&mut c.r).await.unwrap();
        assert_eq!(end, None, "a clean close");
        let closed_after = tokio::time::Instant::now() - start;
        assert_eq!(closed_after, idle * 2 - Duration::from_secs(1));
        c.hang_up();
    };
    let (served, ()) = tokio::join!(serve_with(sr, sw, &settings, &opts), client);
    served.expect("closing an idle lane is not an error");
}

/// A stock distcc request for `compiler` on a trivial source.
fn distcc_request(compiler: &str) -> DistccRequest {
    DistccRequest {
        version: 1,
        argv: [compiler, "-c", "foo.c", "-o", "foo.o"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        doti: b"int foo(void) { return 1; }\n".to_vec(),
    }
}

#[tokio::test]
async fn a_stock_distcc_job_waits_for_a_slot_then_answers_busy() {
    let tmp = tempfile::tempdir().unwrap();
    let mut settings = settings(tmp.path());
    settings.max_jobs = Some(1);
    settings.admission.slot_wait = Duration::ZERO;
    let opts = options(tmp.path());
    let held = slots::try_acquire(&opts.slot_dir, 1).unwrap().unwrap();
    // No wait allowed: exit 114 (busy) at once, which the distcc client compiles locally.
    let started = Instant::now();
    let resp = distcc_round_trip(&distcc_request("gcc"), &settings, &opts).await;
    assert_eq!(
        resp.status,
        114 << 8,
        "{}",
        String::from_utf8_lossy(&resp.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(job_dirs(tmp.path()).is_empty());
    // Allowed to wait: the slot is freed while it waits, and the job compiles. (It cannot
    // have taken the slot earlier: it is held until the release.)
    settings.admission.slot_wait = WAIT;
    let release = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(held);
    };
    let started = Instant::now();
    let req = distcc_request("gcc");
    let (resp, ()) = tokio::join!(distcc_round_trip(&req, &settings, &opts), release);
    assert_eq!(resp.status, 0, "{}", String::from_utf8_lossy(&resp.stderr));
    assert!(!resp.doto.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn a_stock_distcc_job_holds_a_slot_and_dies_with_its_client() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    let pids = tmp.path().join("pids");
    slow_compiler(&bin, &pids);
    let mut settings = settings(tmp.path());
    settings.compilers = vec!["slowcc".into()];
    settings.max_jobs = Some(1);
    settings.admission.slot_wait = Duration::ZERO;
    // The stand-in compiler writes its pids outside its job directory.
    settings.sandbox = crate::config::SandboxMode::Off;
    let mut opts = options(tmp.path());
    opts.search_path = Some(bin.into_os_string());
    let (mut c, sr, sw) = lane();
    let client = async {
        write_request(c.w.as_mut().unwrap(), &distcc_request("slowcc"))
            .await
            .unwrap();
        let text = wait_for_file(&pids).await;
        // The running job holds the only slot: a second client is turned away.
        assert_eq!(slots::current_load(&opts.slot_dir, 1), 1);
        let second = distcc_round_trip(&distcc_request("slowcc"), &settings, &opts).await;
        assert_eq!(second.status, 114 << 8);
        c.hang_up();
        text
    };
    let started = Instant::now();
    let (served, text) = tokio::join!(serve_with(sr, sw, &settings, &opts), client);
    served.unwrap();
    assert!(started.elapsed() < WAIT);
    let deadline = Instant::now() + WAIT;
    for pid in text.split_whitespace().map(|p| p.parse::<i32>().unwrap()) {
        while !super::tests::gone(pid) {
            assert!(
                Instant::now() < deadline,
                "pid {pid} outlived its distcc client"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Nothing was answered to the client that left, and the slot is free again.
    let mut rest = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut c.r, &mut rest)
        .await
        .unwrap();
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    assert_eq!(slots::current_load(&opts.slot_dir, 1), 0);
}
