//! The attacker's side of tests/security.rs: a compile-only key holder talking to the real
//! sshd's forced `hoardcc serve` the way a hostile client would, with nothing but `ssh` and
//! the crate's own wire encoders (`proto::frame`, `proto::msg`, `proto::distcc`), plus the
//! evidence checks: a secret file in the server user's home, marker paths that only a
//! successful attack creates, and the home directory's listing.
//!
//! Neighbours: [`super::sshd`] (the fixture and its `restrict,command=` key); tests/security.rs
//! (the attacks and what they must not achieve).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use hoardcc::proto::distcc::{self, DistccRequest, DistccResponse};
use hoardcc::proto::frame::{self, blocking, MAGIC, MAX_HELLO};
use hoardcc::proto::msg::{
    Blob, ContextFile, Hello, Input, Job, JobHeader, Message, SourceKind, MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
};
use tempfile::TempDir;

use super::process::run_with_timeout;
use super::sshd::{Sshd, SshdOptions};

/// Prefix of the secret files tests put in the server user's home (one per [`Target`]).
pub const SECRET_PREFIX: &str = ".hoardcc-secret-";

/// Everything the server said on a lane, as the reader thread saw it. (A test's handful
/// of these: their size does not matter.)
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Incoming {
    Hello(Hello),
    Msg(Message),
    /// The server closed its stdout.
    Eof,
    /// Not our protocol, or a broken frame.
    Broken(String),
}

/// A server under attack: a fresh fixture sshd, a secret in its login user's home, and a
/// world-writable directory for markers. Drop removes the secret.
pub struct Target {
    pub sshd: Sshd,
    /// Random hex, unique to this target.
    pub token: String,
    /// `<login home>/.hoardcc-secret-<token>`, mode 0600, owned by the login user.
    pub secret_path: PathBuf,
    /// The secret's text (a C identifier, so that it shows in diagnostics too).
    pub secret: String,
    markers: TempDir,
    home_before: BTreeSet<String>,
}

impl Target {
    pub fn start(opts: SshdOptions) -> Target {
        let sshd = Sshd::start(opts);
        let token = random_hex(12);
        let secret = format!("hoardcc_secret_{token}");
        let home = sshd.login_home();
        let secret_path = home.join(format!("{SECRET_PREFIX}{token}"));
        std::fs::write(&secret_path, format!("{secret}\n")).expect("write the secret");
        std::fs::set_permissions(&secret_path, std::fs::Permissions::from_mode(0o600)).unwrap();
        if let Ok(Some(u)) = nix::unistd::User::from_name(sshd.login_user()) {
            nix::unistd::chown(&secret_path, Some(u.uid), Some(u.gid)).expect("chown secret");
        }
        let markers = tempfile::Builder::new()
            .prefix("hoardcc-markers-")
            .tempdir_in("/var/tmp")
            .expect("marker dir");
        std::fs::set_permissions(markers.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let home_before = home_listing(&home);
        Target {
            sshd,
            token,
            secret_path,
            secret,
            markers,
            home_before,
        }
    }

    /// A marker path (in a directory the server user may write): it exists only if an
    /// attack ran something.
    pub fn marker(&self, name: &str) -> PathBuf {
        self.markers.path().join(name)
    }

    /// A shell command without spaces (for argv splitters): creates marker `name` and
    /// copies the secret to stderr and into the marker.
    pub fn cmd(&self, name: &str) -> String {
        let m = self.marker(name).display().to_string();
        let s = self.secret_path.display().to_string();
        format!("touch${{IFS}}{m};cat${{IFS}}{s}>&2;cat${{IFS}}{s}>>{m}")
    }

    /// The same with ordinary spaces.
    pub fn cmd_spaced(&self, name: &str) -> String {
        let m = self.marker(name).display().to_string();
        let s = self.secret_path.display().to_string();
        format!("touch {m}; cat {s} >&2; cat {s} >> {m}")
    }

    /// A shared object whose constructor runs [`Target::cmd_spaced`] (`name`): what a
    /// compiler plugin or an `LD_PRELOAD` would load.
    pub fn evil_so(&self, name: &str) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let c = format!(
            "#include <stdlib.h>\n__attribute__((constructor)) static void pwn(void) \
             {{ system(\"{}\"); }}\nint plugin_is_GPL_compatible;\n",
            self.cmd_spaced(name).replace('"', "\\\"")
        );
        std::fs::write(dir.path().join("evil.c"), c).unwrap();
        let out = run_with_timeout(
            Command::new("gcc")
                .current_dir(dir.path())
                .args(["-shared", "-fPIC", "-o", "evil.so", "evil.c"]),
            Duration::from_secs(60),
            "gcc -shared evil.so",
        );
        assert!(out.status.success(), "building evil.so: {out:?}");
        std::fs::read(dir.path().join("evil.so")).unwrap()
    }

    /// Markers that exist now.
    pub fn markers_present(&self) -> Vec<String> {
        std::fs::read_dir(self.markers.path())
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// New entries in the login user's home (other targets' secrets aside).
    pub fn home_changes(&self) -> Vec<String> {
        let now = home_listing(&self.sshd.login_home());
        now.symmetric_difference(&self.home_before)
            .cloned()
            .collect()
    }

    /// A lane over the compile-only key, hello exchanged.
    pub fn lane(&self) -> Lane {
        let mut lane = Lane::open(&self.sshd);
        match lane.hello(Duration::from_secs(30)) {
            Ok(_) => lane,
            Err(e) => panic!(
                "no hello from the forced-command server: {e}; {}",
                lane.stderr()
            ),
        }
    }

    /// Runs one job on a fresh lane; returns the answer and all decoded reply bytes.
    pub fn run_job(&self, job: Job, timeout: Duration) -> (Incoming, Vec<u8>) {
        let mut lane = self.lane();
        lane.send(&Message::Job3(job.clone()));
        let answer = lane.answer(job.id, timeout);
        let mut evidence = lane.evidence();
        evidence.extend_from_slice(&lane.stderr_bytes());
        (answer, evidence)
    }

    /// Sends one stock distcc request over the compile-only key (the connection is held
    /// open until the response is complete, as a distcc client does).
    pub fn run_distcc(&self, argv: &[&str], doti: &[u8], timeout: Duration) -> DistccOutcome {
        run_distcc(&self.sshd, argv, doti, timeout)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.secret_path);
    }
}

/// True when `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn home_listing(home: &Path) -> BTreeSet<String> {
    std::fs::read_dir(home)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with(SECRET_PREFIX))
                .collect()
        })
        .unwrap_or_default()
}

/// `n` random bytes from the kernel, as hex.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A C job as an honest wrapper would send it, to be bent by the test: `gcc`, `-O2`,
/// directives-only `a.c` → `a.o` in `/home/client/src`.
pub fn job(compiler: &str, args: &[&str], source: &str) -> Job {
    Job {
        id: 1,
        header: JobHeader {
            compiler: compiler.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            assemble_only: false,
            cwd: "/home/client/src".into(),
            source_name: if compiler.contains("++") {
                "a.cc"
            } else {
                "a.c"
            }
            .into(),
            output_name: "a.o".into(),
            extra_outputs: Vec::new(),
        },
        source_kind: SourceKind::DirectivesOnly,
        source: Input::Whole(Blob::pack(source.as_bytes())),
        context: Vec::new(),
        env: Vec::new(),
        compiler_id: None,
        cache: false,
    }
}

/// A context file (`Job::context`) named `name`.
pub fn context(name: &str, data: &[u8]) -> ContextFile {
    ContextFile {
        name: name.into(),
        data: Input::Whole(Blob::pack(data)),
    }
}

/// Every byte a message carries, blobs decoded (bounded), for the secret search.
pub fn message_bytes(m: &Message) -> Vec<u8> {
    let unpack = |b: &Blob| b.unpack(1 << 30).unwrap_or_else(|_| b.data.clone());
    let mut out = Vec::new();
    match m {
        Message::Result3(r) => {
            out.extend(unpack(&r.stdout));
            out.extend(unpack(&r.stderr));
            for o in &r.outputs {
                out.extend_from_slice(o.name.as_bytes());
                out.extend(unpack(&o.data));
            }
        }
        Message::Refused { reason, .. } => out.extend_from_slice(reason.as_bytes()),
        Message::ServerError { message, .. } => out.extend_from_slice(message.as_bytes()),
        _ => {}
    }
    out
}

/// True for an answer that refused or failed the job (anything but a successful Result).
pub fn refused_or_failed(answer: &Incoming) -> bool {
    !matches!(answer, Incoming::Msg(Message::Result3(r)) if r.exit_code == 0)
}

/// One native lane: `ssh -T hoardtest-forced` with the protocol on its stdin/stdout.
pub struct Lane {
    child: Child,
    stdin: Option<ChildStdin>,
    rx: mpsc::Receiver<Incoming>,
    seen: Vec<Incoming>,
    stderr: Arc<Mutex<Vec<u8>>>,
    raw: Arc<Mutex<Vec<u8>>>,
}

/// Copies everything read into `seen` as well.
struct Tee<R> {
    inner: R,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen.lock().unwrap().extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

impl Lane {
    /// Starts `ssh` with the forced-command key and sends our hello (the server's is read
    /// by [`Lane::hello`]).
    pub fn open(sshd: &Sshd) -> Lane {
        let mut cmd = sshd.forced_ssh(&[]);
        Lane::spawn(&mut cmd, true)
    }

    /// Starts `cmd` (an ssh to a serve). With `say_hello`, sends our hello and parses
    /// native frames; without, only collects the raw bytes (stock distcc).
    pub fn spawn(cmd: &mut Command, say_hello: bool) -> Lane {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ssh");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let mut err = child.stderr.take().expect("stderr");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let raw = Arc::new(Mutex::new(Vec::new()));
        let e2 = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                e2.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let (tx, rx) = mpsc::channel();
        let mut r = Tee {
            inner: stdout,
            seen: raw.clone(),
        };
        std::thread::spawn(move || {
            if !say_hello {
                // Not the native protocol: keep every byte (in `raw`) until EOF.
                let mut sink = Vec::new();
                let _ = r.read_to_end(&mut sink);
                let _ = tx.send(Incoming::Eof);
                return;
            }
            let mut magic = [0u8; 8];
            if let Err(e) = r.read_exact(&mut magic) {
                let _ = tx.send(if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    Incoming::Eof
                } else {
                    Incoming::Broken(e.to_string())
                });
                return;
            }
            if magic != MAGIC {
                let _ = tx.send(Incoming::Broken(format!("no magic: {magic:?}")));
                return;
            }
            match blocking::read_frame(&mut r, MAX_HELLO) {
                Ok(Some(f)) => match frame::decode::<Hello>(&f) {
                    Ok(h) => {
                        let _ = tx.send(Incoming::Hello(h));
                    }
                    Err(e) => {
                        let _ = tx.send(Incoming::Broken(e.to_string()));
                        return;
                    }
                },
                Ok(None) => {
                    let _ = tx.send(Incoming::Eof);
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Incoming::Broken(e.to_string()));
                    return;
                }
            }
            loop {
                let item = match blocking::read_message::<_, Message>(&mut r) {
                    Ok(Some(m)) => Incoming::Msg(m),
                    Ok(None) => Incoming::Eof,
                    Err(e) => Incoming::Broken(e.to_string()),
                };
                let last = !matches!(item, Incoming::Msg(_));
                if tx.send(item).is_err() || last {
                    return;
                }
            }
        });
        let mut lane = Lane {
            child,
            stdin,
            rx,
            seen: Vec::new(),
            stderr,
            raw,
        };
        if say_hello {
            let hello = Hello {
                version: PROTOCOL_VERSION,
                min_version: MIN_PROTOCOL_VERSION,
                caps: vec!["lz4".into(), "heartbeat".into(), "ping".into()],
                slots: 0,
                load: 0,
                agent: "hoardcc red team".into(),
            };
            let mut bytes = MAGIC.to_vec();
            blocking::write_message(&mut bytes, &hello).unwrap();
            lane.write(&bytes);
        }
        lane
    }

    /// Writes raw bytes; false if the server is gone.
    pub fn write(&mut self, bytes: &[u8]) -> bool {
        match self.stdin.as_mut() {
            Some(w) => w.write_all(bytes).and_then(|_| w.flush()).is_ok(),
            None => false,
        }
    }

    /// Sends one message; false if the server is gone.
    pub fn send(&mut self, m: &Message) -> bool {
        let mut bytes = Vec::new();
        blocking::write_message(&mut bytes, m).unwrap();
        self.write(&bytes)
    }

    /// Closes our side (EOF on the server's stdin).
    pub fn close(&mut self) {
        self.stdin.take();
    }

    /// The next thing the server said, within `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Option<Incoming> {
        let item = self.rx.recv_timeout(timeout).ok()?;
        self.seen.push(item.clone());
        Some(item)
    }

    /// The server's hello.
    pub fn hello(&mut self, timeout: Duration) -> Result<Hello, String> {
        match self.next(timeout) {
            Some(Incoming::Hello(h)) => Ok(h),
            Some(other) => Err(format!("instead of a hello: {other:?}")),
            None => Err(format!("no hello within {timeout:?}")),
        }
    }

    /// The answer to job `id` (heartbeats and pongs skipped); `Broken("timeout")` if none
    /// came within `timeout`.
    pub fn answer(&mut self, id: u64, timeout: Duration) -> Incoming {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.next(left) {
                None => return Incoming::Broken(format!("no answer within {timeout:?}")),
                Some(Incoming::Msg(Message::Heartbeat { .. } | Message::Pong { .. })) => {}
                Some(Incoming::Msg(m)) => {
                    let mine = match &m {
                        Message::Result3(r) => r.id == id,
                        Message::Busy { id: i }
                        | Message::Refused { id: i, .. }
                        | Message::ServerError { id: i, .. } => *i == id,
                        _ => true,
                    };
                    if mine {
                        return Incoming::Msg(m);
                    }
                }
                Some(other) => return other,
            }
        }
    }

    /// Waits up to `timeout` for the ssh client to exit (the server closed the session).
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if self.child.try_wait().ok().flatten().is_some() {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the ssh client (the connection drops, as when a client dies).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Decoded bytes of every message so far, plus the raw stream.
    pub fn evidence(&self) -> Vec<u8> {
        let mut out = self.raw.lock().unwrap().clone();
        for item in &self.seen {
            if let Incoming::Msg(m) = item {
                out.extend(message_bytes(m));
            }
        }
        out
    }

    pub fn stderr_bytes(&self) -> Vec<u8> {
        self.stderr.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr_bytes()).into_owned()
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a stock distcc request got back.
pub struct DistccOutcome {
    /// The parsed response, if a complete one arrived in time.
    pub response: Option<DistccResponse>,
    /// Everything the server sent (decoded response bodies too) and ssh's stderr.
    pub evidence: Vec<u8>,
    /// The ssh client, held connected until the outcome is dropped.
    _lane: Lane,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

/// The bytes of a distcc protocol-1 request.
pub fn distcc_request(argv: &[&str], doti: &[u8]) -> Vec<u8> {
    let req = DistccRequest {
        version: 1,
        argv: argv.iter().map(|s| s.to_string()).collect(),
        doti: doti.to_vec(),
    };
    let mut bytes = Vec::new();
    runtime()
        .block_on(distcc::write_request(&mut bytes, &req))
        .expect("encode request");
    bytes
}

/// Sends a distcc request on a forced-command connection and waits for the response.
pub fn run_distcc(sshd: &Sshd, argv: &[&str], doti: &[u8], timeout: Duration) -> DistccOutcome {
    let mut cmd = sshd.forced_ssh(&[]);
    let mut lane = Lane::spawn(&mut cmd, false);
    lane.write(&distcc_request(argv, doti));
    let end = Instant::now() + timeout;
    let rt = runtime();
    let response = loop {
        let raw = lane.raw.lock().unwrap().clone();
        if let Ok(r) = rt.block_on(distcc::read_response(&mut &raw[..], 1)) {
            break Some(r);
        }
        if Instant::now() >= end || lane.child.try_wait().ok().flatten().is_some() {
            // One last look: the last bytes may have come with the exit.
            std::thread::sleep(Duration::from_millis(50));
            let raw = lane.raw.lock().unwrap().clone();
            break rt.block_on(distcc::read_response(&mut &raw[..], 1)).ok();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut evidence = lane.raw.lock().unwrap().clone();
    if response.is_none() {
        eprintln!(
            "distcc {argv:?}: no complete response; raw {:?}; ssh stderr {}",
            String::from_utf8_lossy(&evidence),
            lane.stderr()
        );
    }
    if let Some(r) = &response {
        evidence.extend_from_slice(&r.stderr);
        evidence.extend_from_slice(&r.stdout);
        evidence.extend_from_slice(&r.doto);
    }
    evidence.extend_from_slice(&lane.stderr_bytes());
    DistccOutcome {
        response,
        evidence,
        _lane: lane,
    }
}

/// A gettext `.mo` catalog translating `pairs` (msgid → msgstr), UTF-8 header included.
pub fn mo_catalog(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut entries: Vec<(String, String)> = vec![(
        String::new(),
        "Content-Type: text/plain; charset=UTF-8\n".into(),
    )];
    entries.extend(pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())));
    entries.sort();
    let n = entries.len() as u32;
    let header = 28u32;
    let orig_tab = header;
    let trans_tab = orig_tab + 8 * n;
    let mut strings = Vec::new();
    let mut orig = Vec::new();
    let mut trans = Vec::new();
    let base = trans_tab + 8 * n;
    for (k, _) in &entries {
        orig.push((k.len() as u32, base + strings.len() as u32));
        strings.extend_from_slice(k.as_bytes());
        strings.push(0);
    }
    for (_, v) in &entries {
        trans.push((v.len() as u32, base + strings.len() as u32));
        strings.extend_from_slice(v.as_bytes());
        strings.push(0);
    }
    let mut out = Vec::new();
    for w in [0x9504_12de_u32, 0, n, orig_tab, trans_tab, 0, base] {
        out.extend_from_slice(&w.to_le_bytes());
    }
    for (len, off) in orig.iter().chain(trans.iter()) {
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&off.to_le_bytes());
    }
    out.extend(strings);
    out
}

/// Whether an executable `name` is on this machine's PATH.
pub fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| hoardcc::paths::is_executable(&d.join(name))))
        .unwrap_or(false)
}
