//! Server stage, `hoardcc serve`: the SSH subsystem (or forced command, or masquerading
//! `distccd --inetd`) that runs compiles for a client over stdin/stdout. The client
//! speaks first; the opening bytes pick the protocol: `\0HOARDCC` → the native lane
//! protocol (hello, then any number of `Job`/`Ping` messages until EOF), `DIST` → one
//! stock distcc job ([`distccd`]), anything else → "garbage on stdin" and a non-zero
//! exit. Logs go to stderr (sshd forwards them as extended data), never stdout.
//!
//! Per job, admission comes before work: [`job::check`] validates it cheaply
//! (allow-list, arguments, and the counts and sizes it claims against
//! [`Admission`](crate::config::Admission)), [`slots`] admits it against the slot limit
//! (or answers `Busy`), and only then [`job::stage`] decodes and writes it into its
//! [`workdir`]. [`exec`] runs the compiler while [`reader`] keeps reading the lane: `Ping`
//! is answered, a `Heartbeat` goes out every `heartbeat`, and EOF (client gone) kills
//! the compiler's process group at once. Jobs pipelined behind the running one are
//! queued within a byte budget (else answered `Busy`); a lane with no work closes after
//! the idle timeout. Neighbours: `mux` and `wrapper` (the clients, via
//! `proto::frame`), `config` (the [`ServerSettings`]).

pub mod distccd;
pub mod exec;
pub mod job;
pub mod reader;
pub mod sandbox;
pub mod slots;
pub mod workdir;

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt, AsyncWrite, BufReader};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::ServerSettings;
use crate::proto::fault::{self, Ended};
use crate::proto::frame::{self, MAGIC, MAX_FRAME};
use crate::proto::msg::{
    Blob, Hello, Job, JobResult, Message, OutputFile, FAULT_VERSION, MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
};
use crate::proto::Error as ProtoError;

use exec::ExecError;
use job::{AllowList, PrepareError};
use reader::Incoming;

/// Capability words this server announces in its hello.
pub const CAPS: [&str; 5] = ["lz4", "directives-only", "heartbeat", "busy", "ping"];
/// How long the client has for its opening bytes and hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(60);
/// Jobs a client may queue on one lane while another compiles (a lane normally runs
/// one job at a time; a few pipelined ones are served in order, within
/// `max_queued_bytes`).
pub const MAX_QUEUED_JOBS: usize = 8;
/// Room in a job's frame for its names and arguments beyond `max_job_bytes` of files.
const JOB_FRAME_SLACK: u64 = 32 << 20;
/// Room left in a frame for everything in a `JobResult` besides the blobs.
const RESULT_OVERHEAD: u64 = 64 << 10;

/// Command-line options of `hoardcc serve` (clap lives in `main`).
#[derive(Debug, Clone, Default)]
pub struct ServeArgs {
    /// `--inetd`: accepted for symmetry with distccd; serving stdin/stdout is the only mode.
    pub inetd: bool,
}

/// Process-level knobs of [`serve_with`] that are not user settings (injected by tests).
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The directory of slot lock files ([`slots::slot_dir_from_env`]).
    pub slot_dir: PathBuf,
    /// The PATH used to resolve compilers (`None`: the process's `$PATH`).
    pub search_path: Option<OsString>,
    /// How long the client has for its opening bytes and hello.
    pub hello_timeout: Duration,
}

impl ServeOptions {
    /// Options from the environment: the slot directory ([`slots::slot_dir_from_env`]), `$PATH`.
    pub fn from_env() -> Self {
        ServeOptions {
            slot_dir: slots::slot_dir_from_env(),
            search_path: None,
            hello_timeout: HELLO_TIMEOUT,
        }
    }
}

/// Why a serving session ended badly (the process then exits non-zero, and the client
/// falls back).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The opening bytes were neither the hoardcc magic nor `DIST`.
    #[error("garbage on stdin (not a hoardcc or distcc client?): \"{preview}\"")]
    Garbage {
        /// The first bytes, escaped.
        preview: String,
    },
    /// The client said nothing (or no complete hello) in time.
    #[error("no handshake from the client within {0:?}")]
    HandshakeTimeout(Duration),
    /// Reading the opening bytes failed.
    #[error("reading from the client: {0}")]
    Io(#[from] std::io::Error),
    /// A frame or message could not be read, decoded or written, or versions do not meet.
    #[error("protocol error: {0}")]
    Protocol(ProtoError),
    /// The client sent a message only a server sends.
    #[error("unexpected message from the client: {0}")]
    Unexpected(String),
    /// The client queued more than [`MAX_QUEUED_JOBS`] jobs.
    #[error("the client queued more than {MAX_QUEUED_JOBS} jobs on one lane")]
    Flooded,
    /// The stock distcc job could not be served.
    #[error(transparent)]
    Distcc(#[from] distccd::DistccServeError),
}

impl From<ProtoError> for ServeError {
    fn from(e: ProtoError) -> Self {
        match e {
            ProtoError::Garbage { preview } => ServeError::Garbage { preview },
            e => ServeError::Protocol(e),
        }
    }
}

impl ServeError {
    /// The distcc-style exit status for this failure.
    pub fn exit_code(&self) -> crate::exit::ExitCode {
        use crate::exit::ExitCode as E;
        match self {
            ServeError::HandshakeTimeout(_) => E::Timeout,
            ServeError::Io(_) => E::IoError,
            ServeError::Protocol(ProtoError::Truncated { .. }) => E::Truncated,
            ServeError::Protocol(ProtoError::Io(_)) => E::IoError,
            _ => E::ProtocolError,
        }
    }
}

/// Loads the server configuration and serves stdin/stdout on a current-thread runtime.
fn run_stdio() -> std::process::ExitCode {
    let env = |k: &str| std::env::var(k).ok();
    let paths = crate::paths::Paths::from_env(&env);
    let config = match crate::config::load_server(&paths, &env) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("hoardcc serve: {e}");
            return crate::exit::ExitCode::BadArguments.into();
        }
    };
    let swept = workdir::sweep_stale(config.server.tmpdir.as_deref());
    if swept > 0 {
        tracing::info!("removed {swept} job directories left by killed servers");
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("hoardcc serve: cannot start the runtime: {e}");
            return crate::exit::ExitCode::DistccFailed.into();
        }
    };
    let result = rt.block_on(serve(
        tokio::io::stdin(),
        tokio::io::stdout(),
        &config.server,
    ));
    // tokio's stdin reads on a blocking thread that cannot be interrupted: do not wait for it.
    rt.shutdown_background();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("hoardcc serve: {e}");
            e.exit_code().into()
        }
    }
}

/// `hoardcc serve [--inetd]` and `distccd --inetd`: the subsystem entry point (`main.rs`
/// has set up logging, with `distccd --log-file F` read by [`parse_distccd_args`]).
pub fn main(args: ServeArgs) -> std::process::ExitCode {
    tracing::debug!("hoardcc serve starting (inetd: {})", args.inetd);
    run_stdio()
}

/// The stock distccd flags that matter to us.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DistccdOpts {
    /// `--log-file F`: where the server's log lines go instead of stderr.
    pub log_file: Option<PathBuf>,
}

/// Parses the argv of `distccd` (a masquerade link): stock distcc's ssh mode runs
/// `distccd --inetd --enable-tcp-insecure` on the server. Stock flags are accepted and
/// ignored (`--log-file F` is honoured); without `--inetd` this is an error, because daemon
/// mode is not supported (sshd is the daemon).
///
/// # Errors
/// The message to print (the caller exits 101).
pub fn parse_distccd_args(argv: &[String]) -> Result<DistccdOpts, String> {
    const WITH_VALUE: [&str; 18] = [
        "--log-file",
        "--log-level",
        "--allow",
        "-a",
        "--jobs",
        "-j",
        "--port",
        "-p",
        "--nice",
        "-N",
        "--user",
        "--listen",
        "--pid-file",
        "-P",
        "--job-lifetime",
        "--stats-port",
        "--lifetime",
        "--zeroconf-name",
    ];
    let mut opts = DistccdOpts::default();
    let mut inetd = false;
    let mut daemon = false;
    let mut it = argv.iter().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (arg.as_str(), None),
        };
        match flag {
            "--inetd" => inetd = true,
            "--daemon" => daemon = true,
            "--help" | "--version" => {
                return Err(format!(
                    "this is hoardcc {}, serving stock distcc clients in --inetd mode only",
                    env!("CARGO_PKG_VERSION")
                ))
            }
            f if WITH_VALUE.contains(&f) => {
                let value = match inline {
                    Some(v) => Some(v),
                    None => it.next().cloned(),
                };
                let value = value.ok_or_else(|| format!("{f} needs a value"))?;
                if f == "--log-file" {
                    opts.log_file = Some(PathBuf::from(value));
                }
            }
            f if f.starts_with("-j") && f.len() > 2 => {}
            _ => {} // --enable-tcp-insecure, --log-stderr, --no-detach, --allow-private, --verbose, …
        }
    }
    if daemon || !inetd {
        return Err(
            "daemon mode is not supported: run `distccd --inetd` from sshd (DISTCC_HOSTS=@host), \
             or use the hoardcc subsystem"
                .into(),
        );
    }
    Ok(opts)
}

/// Serves one client on `input`/`output` with the environment's [`ServeOptions`].
///
/// # Errors
/// [`ServeError`] when the session ends abnormally (garbage, protocol error, timeout);
/// a clean EOF between jobs is `Ok`.
pub async fn serve<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    input: R,
    output: W,
    settings: &ServerSettings,
) -> Result<(), ServeError> {
    serve_with(input, output, settings, &ServeOptions::from_env()).await
}

/// What the opening bytes announced.
enum Opening {
    /// Nothing at all: the client closed at once.
    Eof,
    /// `DIST`: a stock distcc request.
    Distcc,
    /// Anything else: the native hello, or garbage (`read_hello` tells which).
    Other,
}

/// Reads up to 4 bytes, stopping early once they can be neither `DIST` nor the magic.
async fn read_opening<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<(Opening, Vec<u8>)> {
    let mut head = Vec::with_capacity(4);
    let mut buf = [0u8; 4];
    while head.len() < 4 {
        let n = r.read(&mut buf[..4 - head.len()]).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if !b"DIST".starts_with(&head) && !MAGIC.starts_with(&head) {
            break;
        }
    }
    let kind = if head.is_empty() {
        Opening::Eof
    } else if head == b"DIST" {
        Opening::Distcc
    } else {
        Opening::Other
    };
    Ok((kind, head))
}

/// [`serve`] with explicit [`ServeOptions`].
///
/// # Errors
/// As [`serve`].
pub async fn serve_with<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    input: R,
    mut output: W,
    settings: &ServerSettings,
    opts: &ServeOptions,
) -> Result<(), ServeError> {
    let allow = AllowList::new(
        settings.default_compilers,
        settings.compilers.clone(),
        opts.search_path.clone(),
    );
    let sandbox = sandbox::Sandbox::new(settings);
    let mut input = BufReader::new(input);
    let (kind, head) = tokio::time::timeout(opts.hello_timeout, read_opening(&mut input))
        .await
        .map_err(|_| ServeError::HandshakeTimeout(opts.hello_timeout))??;
    let mut input = std::io::Cursor::new(head).chain(input);
    match kind {
        Opening::Eof => Ok(()),
        Opening::Distcc => {
            distccd::serve_one(
                &mut input,
                &mut output,
                &allow,
                settings,
                &opts.slot_dir,
                &sandbox,
            )
            .await?;
            Ok(())
        }
        Opening::Other => {
            let theirs = tokio::time::timeout(opts.hello_timeout, frame::read_hello(&mut input))
                .await
                .map_err(|_| ServeError::HandshakeTimeout(opts.hello_timeout))?
                .map_err(ServeError::from)?;
            let ours = our_hello(settings, opts);
            frame::write_hello(&mut output, &ours).await?;
            let version = frame::negotiate(&ours, &theirs)?;
            tracing::debug!("client {:?} speaks v{version}", theirs.agent);
            Session {
                settings,
                opts,
                allow: &allow,
                sandbox: &sandbox,
                output,
                version,
            }
            .run(input)
            .await
        }
    }
}

/// This host's name, for the hello's agent string.
pub(crate) fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .map(|s| s.to_string_lossy().trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

fn our_hello(settings: &ServerSettings, opts: &ServeOptions) -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        min_version: MIN_PROTOCOL_VERSION,
        caps: CAPS.iter().map(|c| c.to_string()).collect(),
        slots: slots::host_limit(settings.max_jobs),
        load: slots::current_load(&opts.slot_dir, slots::host_limit(settings.max_jobs)),
        agent: format!("hoardcc {} on {}", env!("CARGO_PKG_VERSION"), hostname()),
    }
}

/// One item from the lane reader.
type Received = Result<Incoming, ProtoError>;

/// Jobs received while another runs, with their frame sizes.
#[derive(Default)]
struct Queue {
    jobs: VecDeque<(Job, u64)>,
    bytes: u64,
}

/// How a job left the session.
enum Flow {
    /// Answered; read the next message.
    Continue,
    /// The client went away (or broke the protocol) during the compile.
    End(Result<(), ServeError>),
}

/// The native session after the hellos.
struct Session<'a, W> {
    settings: &'a ServerSettings,
    opts: &'a ServeOptions,
    allow: &'a AllowList,
    sandbox: &'a sandbox::Sandbox,
    output: W,
    /// The protocol version negotiated with the client (decides how a fault is told).
    version: u32,
}

impl<W: AsyncWrite + Unpin> Session<'_, W> {
    /// Reads messages on one side and serves them on the other, in one task: the reader
    /// keeps going while a job compiles, so EOF is noticed at once.
    async fn run<R: AsyncBufRead + Unpin>(mut self, mut input: R) -> Result<(), ServeError> {
        let (tx, rx) = mpsc::channel::<Received>(1);
        let (busy_tx, mut busy) = watch::channel(false);
        let a = &self.settings.admission;
        let limits = reader::Limits {
            idle: a.idle_timeout,
            frame: a.frame_timeout,
            max_frame: a
                .max_job_bytes
                .saturating_add(JOB_FRAME_SLACK)
                .min(u64::from(MAX_FRAME)) as u32,
        };
        let reader = async move {
            loop {
                let item = reader::next(&mut input, &mut busy, limits).await;
                let last = !matches!(item, Ok(Incoming::Message(..)));
                if tx.send(item).await.is_err() || last {
                    break;
                }
            }
            std::future::pending::<()>().await
        };
        tokio::select! {
            r = self.serve_messages(rx, &busy_tx) => r,
            _ = reader => unreachable!("the reader never finishes"),
        }
    }

    async fn send(&mut self, m: &Message) -> Result<(), ServeError> {
        frame::write_message(&mut self.output, m).await?;
        Ok(())
    }

    async fn serve_messages(
        &mut self,
        mut rx: mpsc::Receiver<Received>,
        busy: &watch::Sender<bool>,
    ) -> Result<(), ServeError> {
        let mut queue = Queue::default();
        loop {
            let msg = match queue.jobs.pop_front() {
                Some((job, len)) => {
                    queue.bytes -= len;
                    Message::Job(job)
                }
                None => match rx.recv().await {
                    Some(Ok(Incoming::Message(m, _))) => m,
                    Some(Ok(Incoming::Eof)) | None => return Ok(()),
                    Some(Ok(Incoming::Idle)) => {
                        tracing::debug!(
                            "no job for {:?}: closing the idle lane",
                            self.settings.admission.idle_timeout
                        );
                        return Ok(());
                    }
                    Some(Err(e)) => return Err(e.into()),
                },
            };
            match msg {
                Message::Job(job) => {
                    busy.send_replace(true);
                    let flow = self.job(job, &mut rx, &mut queue).await?;
                    if let Flow::End(r) = flow {
                        return r;
                    }
                    busy.send_replace(!queue.jobs.is_empty());
                }
                Message::Ping { nonce } => self.send(&Message::Pong { nonce }).await?,
                other => return Err(unexpected(&other)),
            }
        }
    }

    /// Runs one job and answers it with exactly one of Result / Busy / Refused /
    /// ServerError (unless the client goes away first).
    async fn job(
        &mut self,
        job: Job,
        rx: &mut mpsc::Receiver<Received>,
        queue: &mut Queue,
    ) -> Result<Flow, ServeError> {
        let id = job.id;
        let limits = &self.settings.admission;
        let program = match job::check(&job, self.allow, limits, self.sandbox) {
            Ok(p) => p,
            Err(e) => return self.not_prepared(id, e).await,
        };
        let limit = slots::host_limit(self.settings.max_jobs);
        let slot = match slots::try_acquire(&self.opts.slot_dir, limit) {
            Ok(Some(slot)) => slot,
            Ok(None) => {
                tracing::debug!("job {id}: all {limit} slots busy");
                self.send(&Message::Busy { id }).await?;
                return Ok(Flow::Continue);
            }
            Err(e) => {
                let message = e.to_string();
                tracing::warn!("job {id}: {message}");
                self.send(&Message::ServerError { id, message }).await?;
                return Ok(Flow::Continue);
            }
        };
        let prepared = match job::stage(
            &job,
            program,
            self.allow,
            self.settings.tmpdir.as_deref(),
            limits,
            self.sandbox,
        ) {
            Ok(p) => p,
            Err(e) => return self.not_prepared(id, e).await,
        };
        drop(job);
        tracing::debug!("job {id}: slot {} : {:?}", slot.index, prepared.command);

        let cancel = CancellationToken::new();
        let mut compile = Box::pin(exec::run(
            &prepared.command,
            self.settings.compile_timeout,
            &cancel,
        ));
        let beat = self.settings.heartbeat;
        let mut heartbeat = (!beat.is_zero())
            .then(|| tokio::time::interval_at(tokio::time::Instant::now() + beat, beat));
        let mut ended: Option<Result<(), ServeError>> = None;
        let outcome = loop {
            tokio::select! {
                r = &mut compile => break r,
                _ = async { heartbeat.as_mut().expect("guarded").tick().await },
                    if heartbeat.is_some() && ended.is_none() =>
                {
                    if let Err(e) = self.send(&Message::Heartbeat { id }).await {
                        ended = Some(Err(e));
                        cancel.cancel();
                    }
                }
                m = rx.recv(), if ended.is_none() => {
                    let end = match m {
                        Some(Ok(Incoming::Message(Message::Ping { nonce }, _))) => {
                            self.send(&Message::Pong { nonce }).await.err().map(Err)
                        }
                        Some(Ok(Incoming::Message(Message::Job(_), _)))
                            if queue.jobs.len() >= MAX_QUEUED_JOBS =>
                        {
                            Some(Err(ServeError::Flooded))
                        }
                        Some(Ok(Incoming::Message(Message::Job(next), len)))
                            if queue.bytes + len > limits.max_queued_bytes =>
                        {
                            tracing::debug!("job {}: queue budget full, busy", next.id);
                            self.send(&Message::Busy { id: next.id }).await.err().map(Err)
                        }
                        Some(Ok(Incoming::Message(Message::Job(next), len))) => {
                            queue.bytes += len;
                            queue.jobs.push_back((next, len));
                            None
                        }
                        Some(Ok(Incoming::Message(other, _))) => Some(Err(unexpected(&other))),
                        // A busy lane is never idle; treat it like EOF if it happens.
                        Some(Ok(Incoming::Eof | Incoming::Idle)) | None => {
                            tracing::debug!("job {id}: client went away, killing the compiler");
                            Some(Ok(()))
                        }
                        Some(Err(e)) => Some(Err(e.into())),
                    };
                    if end.is_some() {
                        ended = end;
                        cancel.cancel();
                    }
                }
            }
        };
        drop(slot);
        if let Some(end) = ended {
            return Ok(Flow::End(end));
        }
        let answer = match outcome {
            Ok(finished) => result_message(id, finished, &prepared, self.version),
            Err(e @ (ExecError::TimedOut(_) | ExecError::Spawn { .. } | ExecError::Wait(_))) => {
                tracing::warn!("job {id}: {e}");
                Message::ServerError {
                    id,
                    message: e.to_string(),
                }
            }
            Err(ExecError::Cancelled) => Message::ServerError {
                id,
                message: "compile cancelled".into(),
            },
        };
        drop(compile);
        // Answer first, then remove the job directory: the client should not wait for
        // the cleanup.
        let sent = self.send(&answer).await;
        drop(prepared);
        sent?;
        Ok(Flow::Continue)
    }
}

impl<W: AsyncWrite + Unpin> Session<'_, W> {
    /// Answers a job that failed [`job::check`] or [`job::stage`].
    async fn not_prepared(&mut self, id: u64, e: PrepareError) -> Result<Flow, ServeError> {
        match e {
            PrepareError::Refused(reason) => {
                tracing::warn!("job {id} refused: {reason}");
                self.send(&Message::Refused { id, reason }).await?;
            }
            PrepareError::Server(message) => {
                tracing::warn!("job {id}: {message}");
                self.send(&Message::ServerError { id, message }).await?;
            }
        }
        Ok(Flow::Continue)
    }
}

fn unexpected(m: &Message) -> ServeError {
    let name = match m {
        Message::Job(_) => "Job",
        Message::Heartbeat { .. } => "Heartbeat",
        Message::Result(_) => "Result",
        Message::Busy { .. } => "Busy",
        Message::Refused { .. } => "Refused",
        Message::ServerError { .. } => "ServerError",
        Message::Ping { .. } => "Ping",
        Message::Pong { .. } => "Pong",
        Message::Fault { .. } => "Fault",
    };
    ServeError::Unexpected(name.into())
}

/// Turns a finished compile into the job's answer: `Result` with the outputs on success,
/// `Fault` when the compiler was killed (or reports a killed sub-program or an internal
/// error; `ServerError` to a protocol-1 client), `ServerError` when the compiler claimed
/// success without its output or the result cannot fit in one frame.
fn result_message(id: u64, f: exec::Finished, prepared: &job::Prepared, version: u32) -> Message {
    let server_error = |message: String| {
        tracing::warn!("job {id}: {message}");
        Message::ServerError { id, message }
    };
    let ended = Ended::from_wait_status(f.wait_status);
    let driver = prepared.command.program.to_string_lossy();
    if let Some(fault) = fault::classify(ended, &f.stderr, &driver) {
        tracing::warn!("job {id}: {fault}");
        return if version >= FAULT_VERSION {
            Message::Fault { id, fault }
        } else {
            server_error(fault.to_string())
        };
    }
    let mut outputs = Vec::new();
    // Everything must fit in one frame: read no output that would not.
    let mut room = u64::from(MAX_FRAME)
        .saturating_sub(RESULT_OVERHEAD)
        .saturating_sub((f.stdout.len() + f.stderr.len()) as u64);
    let mut read_output = |path: &std::path::Path| {
        let data = read_output(path, room)?;
        room = room.saturating_sub(data.as_ref().map_or(0, |d| d.len() as u64));
        Ok::<_, std::io::Error>(data)
    };
    if f.exit_code == 0 {
        let (name, path) = &prepared.output;
        match read_output(path) {
            Ok(Some(data)) => outputs.push(OutputFile {
                name: name.clone(),
                data: Blob::pack(&data),
            }),
            Ok(None) => return server_error(format!("the compiler exited 0 but wrote no {name}")),
            Err(e) => return server_error(format!("reading {name}: {e}")),
        }
        for (name, path) in &prepared.extra_outputs {
            match read_output(path) {
                Ok(Some(data)) => outputs.push(OutputFile {
                    name: name.clone(),
                    data: Blob::pack(&data),
                }),
                Ok(None) => {}
                Err(e) => return server_error(format!("reading {name}: {e}")),
            }
        }
    }
    let result = JobResult {
        id,
        exit_code: f.exit_code,
        stdout: Blob::pack(&f.stdout),
        stderr: Blob::pack(&prepared.client_stderr(&f.stderr)),
        outputs,
    };
    let size: u64 = [&result.stdout, &result.stderr]
        .into_iter()
        .chain(result.outputs.iter().map(|o| &o.data))
        .map(|b| b.data.len() as u64)
        .sum();
    if size + RESULT_OVERHEAD > u64::from(MAX_FRAME) {
        return server_error(format!(
            "the result ({size} bytes packed) does not fit in one frame"
        ));
    }
    Message::Result(result)
}

/// Reads an output file if it exists, if it is a regular file of at most `max` bytes
/// (checked before reading, and the read itself stops past `max`).
fn read_output(path: &std::path::Path, max: u64) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let too_large =
        |len: u64| std::io::Error::other(format!("{len} bytes is too large for the result"));
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.is_file() => Err(std::io::Error::other("not a regular file")),
        Ok(m) if m.len() > max => Err(too_large(m.len())),
        Ok(m) => {
            let mut data = Vec::with_capacity(m.len() as usize);
            std::fs::File::open(path)?
                .take(max.saturating_add(1))
                .read_to_end(&mut data)?;
            if data.len() as u64 > max {
                return Err(too_large(data.len() as u64));
            }
            Ok(Some(data))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod admission_tests;
#[cfg(test)]
mod tests;
