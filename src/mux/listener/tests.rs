//! Tests of the mux daemon against a tiny in-process stock distccd: reserve/run/done,
//! slot limits, local slots, backoff and retry, server faults, wrappers leaving, version
//! mismatch, stop and idle exit.

use super::*;
use crate::exit::ExitCode;
use crate::mux::lane::Wire;
use crate::mux::status::{JobState, StatusReport};
use crate::proto::compress::MAX_BLOB;
use crate::proto::distcc::{self, DistccResponse};
use crate::proto::msg::{Blob, JobHeader, JobSpec, MuxReply, MuxRequest};
use crate::test_util::RefusedPort;
use crate::wrapper::mux_client::MuxClient;
use std::sync::atomic::AtomicU32;
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(10);

/// A tiny stock distccd: answers each request with `OBJ:` + the source, after `delay`,
/// counting jobs and the most it ever ran at once.
struct FakeDistccd {
    port: u16,
    jobs: Arc<AtomicU32>,
    max_concurrent: Arc<AtomicU32>,
}

async fn fake_distccd(delay: Duration) -> FakeDistccd {
    faulty_distccd(delay, 0).await
}

/// [`fake_distccd`] whose compiler is SIGKILLed on the first `faults` jobs.
async fn faulty_distccd(delay: Duration, faults: u32) -> FakeDistccd {
    let faults = Arc::new(AtomicU32::new(faults));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let jobs = Arc::new(AtomicU32::new(0));
    let max_concurrent = Arc::new(AtomicU32::new(0));
    let current = Arc::new(AtomicU32::new(0));
    let (j, m) = (jobs.clone(), max_concurrent.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let (j, m, c) = (j.clone(), m.clone(), current.clone());
            let faults = faults.clone();
            tokio::spawn(async move {
                let Ok(req) = distcc::read_request(&mut s).await else {
                    return;
                };
                let now = c.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                let mut doto = b"OBJ:".to_vec();
                doto.extend_from_slice(&req.doti);
                let killed = faults
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| f.checked_sub(1))
                    .is_ok();
                let resp = DistccResponse {
                    version: req.version,
                    status: if killed { 9 } else { 0 },
                    stderr: b"warn\n".to_vec(),
                    stdout: Vec::new(),
                    doto,
                };
                c.fetch_sub(1, Ordering::SeqCst);
                j.fetch_add(1, Ordering::SeqCst);
                let _ = distcc::write_response(&mut s, &resp).await;
            });
        }
    });
    FakeDistccd {
        port,
        jobs,
        max_concurrent,
    }
}

struct Mux {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    paths: Paths,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), DaemonError>>,
}

fn start(idle: Duration, backoff: Duration) -> Mux {
    start_with(idle, backoff, Duration::from_secs(2))
}

/// [`start`] with the ssh connect timeout `connect_timeout`.
fn start_with(idle: Duration, backoff: Duration, connect_timeout: Duration) -> Mux {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("mux.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let mut config = Config {
        backoff,
        ..Config::default()
    };
    config.mux.idle_timeout = idle;
    let settings = SshSettings {
        home: dir.path().to_path_buf(),
        connect_timeout,
        keepalive_interval: Duration::ZERO,
        keepalive_max: 3,
        io_timeout: Duration::from_secs(5),
        agent_socket: None,
        local_user: "test".into(),
    };
    let home = dir.path().to_str().unwrap().to_string();
    let paths = Paths::from_env(&|k: &str| (k == "HOME").then(|| home.clone()));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run_with(listener, config, settings, shutdown.clone()));
    Mux {
        _dir: dir,
        socket,
        paths,
        shutdown,
        task,
    }
}

impl Mux {
    fn client(&self) -> MuxClient {
        let s = std::os::unix::net::UnixStream::connect(&self.socket).unwrap();
        MuxClient::from_stream(s, &self.paths, Path::new("/nonexistent/hoardcc"))
    }

    async fn status(&self) -> StatusReport {
        let mut c = self.client();
        tokio::task::spawn_blocking(move || c.status().unwrap())
            .await
            .unwrap()
    }

    /// Poll the status until `pred` holds (the daemon's state changes asynchronously).
    async fn wait_status(&self, pred: impl Fn(&StatusReport) -> bool) -> StatusReport {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = self.status().await;
            if pred(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "status never matched: {s:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn spec() -> JobSpec {
    JobSpec {
        header: JobHeader {
            compiler: "gcc".into(),
            args: vec!["-O2".into()],
            assemble_only: false,
            cwd: "/src".into(),
            source_name: "foo.i".into(),
            output_name: "foo.o".into(),
            extra_outputs: vec![],
        },
        distcc_argv: ["gcc", "-O2", "-c", "foo.i", "-o", "foo.o"]
            .map(String::from)
            .to_vec(),
        env: vec![],
        context: vec![],
        compiler_id: None,
        cache: true,
    }
}

/// Reserve and run one job with a blocking client on its own thread.
async fn job(c: MuxClient, hosts: String, source: &'static [u8]) -> (MuxReply, Option<MuxReply>) {
    tokio::task::spawn_blocking(move || {
        let mut c = c;
        let r = c.reserve(&hosts, "foo.c").unwrap();
        if !matches!(r, MuxReply::Reserved { .. }) {
            return (r, None);
        }
        let done = c.run(&spec(), source, None).unwrap();
        (r, Some(done))
    })
    .await
    .unwrap()
}

fn expect_done(r: &Option<MuxReply>, source: &[u8]) {
    let Some(MuxReply::Done(res)) = r else {
        panic!("expected Done, got {r:?}")
    };
    assert_eq!(res.exit_code, 0);
    assert_eq!(res.stderr.data, b"warn\n");
    let mut want = b"OBJ:".to_vec();
    want.extend_from_slice(source);
    assert_eq!(res.outputs.len(), 1);
    assert_eq!(res.outputs[0].name, "foo.o");
    assert_eq!(res.outputs[0].data.unpack(MAX_BLOB).unwrap(), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_run_done_and_status() {
    let fake = fake_distccd(Duration::ZERO).await;
    let mux = start(Duration::from_secs(60), Duration::from_secs(60));
    let hosts = format!("127.0.0.1:{}/2", fake.port);
    let (r, done) = job(mux.client(), hosts, b"int x;").await;
    assert_eq!(
        r,
        MuxReply::Reserved {
            host: format!("127.0.0.1:{}", fake.port),
            wire: Wire::Distcc { lzo: false }
        }
    );
    expect_done(&done, b"int x;");
    let s = mux
        .wait_status(|s| s.wrappers == 1 && s.jobs.is_empty())
        .await;
    let h = &s.hosts[0];
    assert_eq!((h.jobs_ok, h.jobs_failed, h.running, h.slots), (1, 0, 0, 2));
    assert!(h.mean_ms.is_some());
    assert_eq!(fake.jobs.load(Ordering::SeqCst), 1);
    mux.shutdown.cancel();
    tokio::time::timeout(WAIT, mux.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!mux.socket.exists(), "socket removed on exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_limit_holds_with_many_clients() {
    let fake = fake_distccd(Duration::from_millis(50)).await;
    let mux = start(Duration::from_secs(60), Duration::from_secs(60));
    let hosts = format!("127.0.0.1:{}/2", fake.port);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..12 {
        set.spawn(job(mux.client(), hosts.clone(), b"src"));
    }
    while let Some(r) = set.join_next().await {
        let (_, done) = r.unwrap();
        expect_done(&done, b"src");
    }
    assert_eq!(fake.jobs.load(Ordering::SeqCst), 12);
    let max = fake.max_concurrent.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&max),
        "at most 2 jobs at once on a /2 host, saw {max}"
    );
    let s = mux.status().await;
    assert_eq!(
        (s.hosts[0].jobs_ok, s.hosts[0].running, s.queued),
        (12, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_slot_when_remote_full_then_queue_until_release() {
    let fake = fake_distccd(Duration::ZERO).await;
    let mux = start(Duration::from_secs(60), Duration::from_secs(60));
    let hosts = format!("127.0.0.1:{}/1 localhost/1", fake.port);
    let blocking = |c: MuxClient, h: String| {
        tokio::task::spawn_blocking(move || {
            let mut c = c;
            let r = c.reserve(&h, "f.c").unwrap();
            (c, r)
        })
    };
    let (a, ra) = blocking(mux.client(), hosts.clone()).await.unwrap();
    assert!(matches!(ra, MuxReply::Reserved { .. }), "{ra:?}");
    let (b, rb) = blocking(mux.client(), hosts.clone()).await.unwrap();
    assert!(matches!(rb, MuxReply::Local { .. }), "{rb:?}");
    // Both slots held: the third waits in the queue.
    let third = blocking(mux.client(), hosts.clone());
    let s = mux.wait_status(|s| s.queued == 1).await;
    assert_eq!(s.local_running, 1);
    assert!(!third.is_finished());
    drop(a); // the remote slot's wrapper goes away
    let (_c, rc) = tokio::time::timeout(WAIT, third).await.unwrap().unwrap();
    assert!(matches!(rc, MuxReply::Reserved { .. }), "{rc:?}");
    drop(b);
    mux.wait_status(|s| s.local_running == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusing_host_is_backed_off_and_the_job_retried_elsewhere() {
    let fake = fake_distccd(Duration::ZERO).await;
    let refused = RefusedPort::new();
    let dead = refused.port();
    let mux = start(Duration::from_secs(60), Duration::from_secs(60));
    // The dead host comes first in the list, so the first job tries it.
    let hosts = format!("127.0.0.1:{dead}/1 127.0.0.1:{}/1", fake.port);
    let (r, done) = job(mux.client(), hosts.clone(), b"a").await;
    assert_eq!(
        r,
        MuxReply::Reserved {
            host: format!("127.0.0.1:{dead}"),
            wire: Wire::Distcc { lzo: false }
        }
    );
    expect_done(&done, b"a");
    let s = mux.status().await;
    let d = s
        .hosts
        .iter()
        .find(|h| h.host.ends_with(&format!(":{dead}")))
        .unwrap();
    assert_eq!(d.jobs_failed, 1);
    assert!(
        d.backoff_remaining_ms.is_some_and(|ms| ms > 50_000),
        "{d:?}"
    );
    // While backed off, jobs go straight to the good host.
    let (r, done) = job(mux.client(), hosts, b"b").await;
    assert_eq!(
        r,
        MuxReply::Reserved {
            host: format!("127.0.0.1:{}", fake.port),
            wire: Wire::Distcc { lzo: false }
        }
    );
    expect_done(&done, b"b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_host_refusing_fails_the_job_then_fails_fast_while_backed_off() {
    let refused = RefusedPort::new();
    let dead = refused.port();
    let mux = start(Duration::from_secs(60), Duration::from_secs(60));
    let hosts = format!("127.0.0.1:{dead}/1");
    let (_, done) = job(mux.client(), hosts.clone(), b"a").await;
    let Some(MuxReply::Failed { exit_code, .. }) = done else {
        panic!("{done:?}")
    };
    assert_eq!(exit_code, ExitCode::ConnectFailed.code());
    // While backed off, the Reserve itself fails (no usable host): the wrapper falls
    // back with a warning, or exits with a distcc code when fallback is off.
    let (r, _) = job(mux.client(), hosts, b"a").await;
    assert!(
        matches!(r, MuxReply::Failed { exit_code, .. } if exit_code == ExitCode::NoHosts.code()),
        "{r:?}"
    );
}

/// A compiler killed on the server is retried once, on the same host if it is the
/// only one, without backing it off; killed twice, the job is given up (the wrapper
/// compiles locally), never answered with the signal as its status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_compiler_is_retried_once_then_given_up() {
    let fake = faulty_distccd(Duration::ZERO, 1).await;
    let mux = start(Duration::from_secs(60), Duration::from_secs(60));
    let hosts = format!("127.0.0.1:{}/2", fake.port);
    let (_, done) = job(mux.client(), hosts.clone(), b"a").await;
    expect_done(&done, b"a");
    assert_eq!(fake.jobs.load(Ordering::SeqCst), 2);
    let s = mux.wait_status(|s| s.jobs.is_empty()).await;
    let h = &s.hosts[0];
    assert_eq!((h.jobs_ok, h.jobs_failed), (1, 0), "{h:?}");
    assert!(h.backoff_remaining_ms.is_none(), "{h:?}");

    let fake = faulty_distccd(Duration::ZERO, 2).await;
    let hosts = format!("127.0.0.1:{}/2", fake.port);
    let (_, done) = job(mux.client(), hosts, b"b").await;
    let Some(MuxReply::Failed { message, exit_code }) = done else {
        panic!("{done:?}")
    };
    assert_eq!(message, "gcc killed by signal 9");
    assert_eq!(exit_code, ExitCode::CompilerCrashed.code());
    assert_eq!(fake.jobs.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrapper_leaving_mid_job_frees_its_slot() {
    let fake = fake_distccd(Duration::from_secs(60)).await;
    let mux = start(Duration::from_secs(60), Duration::from_secs(60));
    let hosts = format!("127.0.0.1:{}/1", fake.port);
    let mut a = std::os::unix::net::UnixStream::connect(&mux.socket).unwrap();
    let h = hosts.clone();
    let a = tokio::task::spawn_blocking(move || {
        let req = MuxRequest::Reserve {
            hosts: h,
            file: "a.c".into(),
            client_version: mux_version(),
            compiler: None,
        };
        blocking::write_message(&mut a, &req).unwrap();
        let r: MuxReply = blocking::read_message(&mut a).unwrap().unwrap();
        assert!(matches!(r, MuxReply::Reserved { .. }));
        let run = MuxRequest::Run {
            spec: Box::new(spec()),
            source: Blob::raw(b"x".to_vec()),
            recipe: None,
        };
        blocking::write_message(&mut a, &run).unwrap();
        a
    })
    .await
    .unwrap();
    mux.wait_status(|s| {
        s.jobs
            .iter()
            .any(|j| matches!(j.state, JobState::Sending | JobState::Compiling))
    })
    .await;
    drop(a);
    let c = mux.client();
    let r = tokio::time::timeout(
        WAIT,
        tokio::task::spawn_blocking(move || c.reserve_owned(&hosts)),
    )
    .await
    .expect("the slot was freed")
    .unwrap();
    assert!(matches!(r, MuxReply::Reserved { .. }), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_version_is_reported() {
    let mux = start(Duration::from_secs(60), Duration::from_secs(60));
    let mut s = std::os::unix::net::UnixStream::connect(&mux.socket).unwrap();
    let r: MuxReply = tokio::task::spawn_blocking(move || {
        let req = MuxRequest::Reserve {
            hosts: "localhost".into(),
            file: "a.c".into(),
            client_version: "0.0.0+p0".into(),
            compiler: None,
        };
        blocking::write_message(&mut s, &req).unwrap();
        blocking::read_message(&mut s).unwrap().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        r,
        MuxReply::WrongVersion {
            mux_version: mux_version()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_request_ends_the_daemon() {
    let mux = start(Duration::from_secs(60), Duration::from_secs(60));
    let mut c = mux.client();
    tokio::task::spawn_blocking(move || c.stop().unwrap())
        .await
        .unwrap();
    tokio::time::timeout(WAIT, mux.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!mux.socket.exists());
}

/// The pool's background tasks (here an opener stuck in a handshake with a server that
/// never speaks) end with the pool; they do not hold up the wrappers' grace period.
/// Were they waited for, stopping would take the whole `SHUTDOWN_GRACE` (the opener's
/// connect timeout is far longer), so the bound below is that grace less a wide margin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_does_not_wait_for_the_pools_tasks() {
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let _held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            open.push(s);
        }
    });
    let mux = start_with(
        Duration::from_secs(60),
        Duration::from_secs(60),
        Duration::from_secs(600),
    );
    let home = mux.paths.home.clone().unwrap();
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::write(
        home.join(".ssh/config"),
        format!("Host silent\n    HostName 127.0.0.1\n    Port {port}\n"),
    )
    .unwrap();
    let c = mux.client();
    // Its Reserve waits for the first lane, which is still connecting.
    let _waiting = tokio::task::spawn_blocking(move || {
        let mut c = c;
        let _ = c.reserve("@silent/1", "a.c");
    });
    mux.wait_status(|s| s.hosts.iter().any(|h| h.host == "silent"))
        .await;
    let mut c = mux.client();
    let asked = Instant::now();
    tokio::task::spawn_blocking(move || c.stop().unwrap())
        .await
        .unwrap();
    tokio::time::timeout(WAIT, mux.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        asked.elapsed() < SHUTDOWN_GRACE - Duration::from_secs(2),
        "stopping took {:?}",
        asked.elapsed()
    );
}

/// The idle timer on paused time: the daemon outlives any idle period while a wrapper is
/// connected, and exits exactly `idle` after the last one leaves.
#[tokio::test(start_paused = true)]
async fn idle_exit_only_without_wrappers() {
    let idle = Duration::from_secs(600);
    let mux = start(idle, Duration::from_secs(60));
    // A wrapper's connection: the daemon counts it from the accept on.
    let c = tokio::net::UnixStream::connect(&mux.socket).await.unwrap();
    // c and the status client itself.
    mux.wait_status(|s| s.wrappers == 2).await;
    // Held open for three idle periods: the daemon stays.
    tokio::time::sleep(idle * 3).await;
    assert!(!mux.task.is_finished(), "exited with a wrapper connected");
    drop(c);
    let left = Instant::now();
    tokio::time::timeout(idle * 2, mux.task)
        .await
        .expect("exits once idle")
        .unwrap()
        .unwrap();
    // Time only moves when every task waits, so the exit is at the idle deadline itself.
    let waited = left.elapsed();
    assert!(
        waited >= idle && waited < idle + Duration::from_secs(1),
        "exited {waited:?} after the last wrapper left"
    );
    assert!(!mux.socket.exists());
}

use crate::proto::frame::blocking;

impl MuxClient {
    fn reserve_owned(mut self, hosts: &str) -> MuxReply {
        self.reserve(hosts, "b.c").unwrap()
    }
}

/// Reports from a watcher on its own thread, as they arrive.
fn watch(mux: &Mux) -> std::sync::mpsc::Receiver<Option<StatusReport>> {
    let mut w = mux.client().watch().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || loop {
        let r = w.next_report().unwrap();
        let end = r.is_none();
        if tx.send(r).is_err() || end {
            return;
        }
    });
    rx
}

/// The next report matching `pred` (reports come as the state changes; none is asked for).
async fn wait_report(
    rx: &std::sync::mpsc::Receiver<Option<StatusReport>>,
    pred: impl Fn(&StatusReport) -> bool,
) -> StatusReport {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let r = tokio::task::block_in_place(|| rx.recv_timeout(left))
            .expect("a report in time")
            .expect("the mux is still there");
        if pred(&r) {
            return r;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_sees_a_job_go_through_its_states() {
    let fake = fake_distccd(Duration::from_millis(1500)).await;
    let mux = start(Duration::from_secs(60), Duration::from_secs(60));
    let rx = watch(&mux);
    let first = wait_report(&rx, |_| true).await;
    assert!(first.jobs.is_empty() && first.failures.is_empty());
    assert_eq!(first.wrappers, 0, "a watcher is not counted as a wrapper");
    let hosts = format!("127.0.0.1:{}/2", fake.port);
    let key = format!("127.0.0.1:{}", fake.port);
    let job = tokio::spawn(job(mux.client(), hosts, b"int x;"));
    let r = wait_report(&rx, |r| {
        r.jobs.iter().any(|j| j.state == JobState::Compiling)
    })
    .await;
    let j = &r.jobs[0];
    assert_eq!(
        (j.file.as_str(), j.host.as_deref()),
        ("foo.c", Some(key.as_str()))
    );
    assert!(j.bytes_sent >= 6, "{j:?}");
    assert_eq!(r.jobs_in_flight, 1);
    let (_, done) = job.await.unwrap();
    expect_done(&done, b"int x;");
    let r = wait_report(&rx, |r| {
        r.jobs.is_empty() && r.hosts.iter().any(|h| h.jobs_ok == 1)
    })
    .await;
    assert_eq!(r.hosts[0].running, 0);
    mux.shutdown.cancel();
    tokio::time::timeout(WAIT, mux.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// A failed job shows in the recent failures with its one-line reason, and the counters
/// see the remote jobs and the bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_and_counters() {
    let fake = fake_distccd(Duration::ZERO).await;
    let refused = RefusedPort::new();
    let dead = refused.port();
    let mux = start(Duration::from_secs(60), Duration::from_secs(60));
    let rx = watch(&mux);
    let (_, done) = job(
        mux.client(),
        format!("127.0.0.1:{}/2", fake.port),
        b"int x;",
    )
    .await;
    expect_done(&done, b"int x;");
    let (_, failed) = job(mux.client(), format!("127.0.0.1:{dead}/1"), b"int y;").await;
    assert!(
        matches!(failed, Some(MuxReply::Failed { .. })),
        "{failed:?}"
    );
    let r = wait_report(&rx, |r| !r.failures.is_empty()).await;
    let f = &r.failures[0];
    assert_eq!(f.file, "foo.c");
    assert_eq!(
        f.host.as_deref(),
        Some(format!("127.0.0.1:{dead}").as_str())
    );
    assert!(f.reason.contains("connect"), "{f:?}");
    let mut c = mux.client();
    let s = tokio::task::spawn_blocking(move || c.stats(false).unwrap())
        .await
        .unwrap();
    assert_eq!(s.jobs_remote, 1);
    let h = &s.hosts[&format!("127.0.0.1:{}", fake.port)];
    assert_eq!(h.jobs_remote, 1);
    assert!(h.bytes_sent >= 6 && h.bytes_received >= 10, "{h:?}");
    // Nothing reached the dead host; a fallback counts once the wrapper reports its
    // local compile (`LocalDone`), which this one did not.
    assert_eq!(s.bytes_sent, h.bytes_sent);
    assert!(!s.hosts.contains_key(&format!("127.0.0.1:{dead}")));
    assert_eq!(s.jobs_fallback, 0);
    let mut c = mux.client();
    let z = tokio::task::spawn_blocking(move || c.stats(true).unwrap())
        .await
        .unwrap();
    assert_eq!((z.jobs_remote, z.hosts.len()), (0, 0));
    mux.shutdown.cancel();
    tokio::time::timeout(WAIT, mux.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// A watcher that never reads holds up no job, and keeps no idle mux alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_watcher_blocks_nothing() {
    let fake = fake_distccd(Duration::from_millis(20)).await;
    let idle = Duration::from_millis(500);
    let mux = start(idle, Duration::from_secs(60));
    let stalled = std::os::unix::net::UnixStream::connect(&mux.socket).unwrap();
    blocking::write_message(&mut &stalled, &MuxRequest::Watch).unwrap();
    let hosts = format!("127.0.0.1:{}/2", fake.port);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..40 {
        set.spawn(job(mux.client(), hosts.clone(), b"src"));
    }
    tokio::time::timeout(WAIT * 3, async {
        while let Some(r) = set.join_next().await {
            expect_done(&r.unwrap().1, b"src");
        }
    })
    .await
    .expect("jobs finish with a stalled watcher connected");
    // Only the watcher is connected now: the mux exits for idleness all the same.
    tokio::time::timeout(WAIT, mux.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    drop(stalled);
}

/// A wrapper sent to a local slot reports its compile's time on the same connection
/// (`LocalDone`, no reply): the counters have the local job and its time, which the
/// estimate of `hoardcc stats` is built on; a second report on that connection is not
/// counted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_job_reports_its_time() {
    let fake = fake_distccd(Duration::ZERO).await;
    let mux = start(Duration::from_secs(60), Duration::from_secs(60));
    let hosts = format!("127.0.0.1:{}/1 localhost/1", fake.port);
    let mut remote = mux.client();
    let h = hosts.clone();
    let remote = tokio::task::spawn_blocking(move || {
        assert!(matches!(
            remote.reserve(&h, "a.c").unwrap(),
            MuxReply::Reserved { .. }
        ));
        remote
    })
    .await
    .unwrap();
    let stream = std::os::unix::net::UnixStream::connect(&mux.socket).unwrap();
    let reserve = MuxRequest::Reserve {
        hosts,
        file: "b.c".into(),
        client_version: mux_version(),
        compiler: None,
    };
    let stream = tokio::task::spawn_blocking(move || {
        let mut s = stream;
        blocking::write_message(&mut s, &reserve).unwrap();
        let r: MuxReply = blocking::read_message(&mut s).unwrap().unwrap();
        assert!(matches!(r, MuxReply::Local { .. }), "{r:?}");
        for millis in [300, 999] {
            blocking::write_message(&mut s, &MuxRequest::LocalDone { millis }).unwrap();
        }
        s
    })
    .await
    .unwrap();
    drop(stream);
    mux.wait_status(|s| s.local_running == 0).await;
    let mut c = mux.client();
    let s = tokio::task::spawn_blocking(move || c.stats(false).unwrap())
        .await
        .unwrap();
    assert_eq!(
        (s.jobs_local, s.local_timed, s.local_ms),
        (1, 1, 300),
        "{s:?}"
    );
    assert_eq!(s.jobs_fallback, 0);
    drop(remote);
    mux.shutdown.cancel();
    tokio::time::timeout(WAIT, mux.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
