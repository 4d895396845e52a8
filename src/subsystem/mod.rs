//! Stage: server, `hoardcc serve`: the SSH subsystem (or forced command, or masquerading
//! `distccd --inetd`) that runs compiles for a client over stdin/stdout. The client
//! speaks first; the opening bytes pick the protocol: `\0HOARDCC` → the native lane
//! protocol (hello, then any number of `Job`/`Ping` messages until EOF), `DIST` → one
//! stock distcc job ([`distccd`]), anything else → "garbage on stdin" and a non-zero
//! exit. Logs go to stderr (sshd forwards them as extended data), never stdout.
//!
//! Per job (in `session`, after the hellos), admission comes before work:
//! [`job::check`] validates it cheaply (allow-list, arguments, and the counts and sizes
//! it claims against [`Admission`](crate::config::Admission)), with the compiler picked by
//! [`compilers::Compilers::pick`] (the one with the client's identity, else `Mismatch`
//! naming both versions); a job the result [`cache`] holds is answered from the per-user
//! [`store`] at once, without a server slot or a compile; else [`slots`] admits it against
//! the server slot limit (or answers `Busy`), and only then [`job::stage`] decodes and
//! writes it into its [`workdir`]. [`exec`] runs the compiler while [`reader`] keeps
//! reading the lane: `Ping` is answered, a `Heartbeat` goes out every `heartbeat`, and
//! EOF (client gone) kills
//! the compiler's process group at once. Jobs pipelined behind the running one are
//! queued within a byte budget (else answered `Busy`); a lane with no work closes after
//! the idle timeout. `ListCompilers` is answered with the compilers offered. `serve
//! --check` ([`check`]) tells an admin whether all this can work here. Neighbours: `mux`
//! and `wrapper` (the clients, via `proto::frame`), `config` (the [`ServerSettings`]).

pub mod cache;
pub mod check;
pub mod chunks;
pub mod compilers;
pub mod distccd;
pub mod exec;
pub mod job;
pub mod reader;
pub mod sandbox;
mod session;
pub mod slots;
pub mod store;
pub mod workdir;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, BufReader};

use crate::config::ServerSettings;
use crate::proto::frame::{self, MAGIC};
use crate::proto::msg::{Hello, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use crate::proto::Error as ProtoError;

use job::AllowList;
use session::Session;

/// Capability words this server announces in its hello.
/// (`chunk-store` and `chunk-ack` are added when the session's chunk store is the user's
/// shared one.)
pub const CAPS: [&str; 9] = [
    "lz4",
    "directives-only",
    "heartbeat",
    "busy",
    "ping",
    crate::mux::lane::COMPILERS_CAP,
    crate::proto::msg::CHUNKS_CAP,
    crate::proto::msg::IDENTITY_CAP,
    crate::proto::msg::CHUNK_DELTA_CAP,
];
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
    /// The store's directory when `[server] cache_dir` is not set
    /// ([`crate::paths::Paths::cache_dir`]); `None`: no store unless configured.
    pub cache_dir: Option<PathBuf>,
}

impl ServeOptions {
    /// Options from the environment: the slot directory ([`slots::slot_dir_from_env`]), `$PATH`.
    pub fn from_env() -> Self {
        ServeOptions {
            slot_dir: slots::slot_dir_from_env(),
            search_path: None,
            hello_timeout: HELLO_TIMEOUT,
            cache_dir: Some(
                crate::paths::Paths::from_env(&|k: &str| std::env::var(k).ok()).cache_dir,
            ),
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
    let mut config = match crate::config::load_server(&paths, &env) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("hoardcc serve: {e}");
            return crate::exit::ExitCode::BadArguments.into();
        }
    };
    if config.server.tmpdir.is_none() {
        config.server.tmpdir = workdir::default_tmpdir();
    }
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
            let store = open_store(settings, opts);
            let disk = store.as_ref().map(|s| s as &dyn chunks::ChunkStore);
            let chunks = chunks::SessionChunks::new(disk, settings.admission.max_job_bytes);
            let chunky = theirs.version >= crate::proto::msg::CHUNKS_VERSION;
            let ours = our_hello(settings, opts, chunks.shared(), chunky);
            frame::write_hello(&mut output, &ours).await?;
            let version = frame::negotiate(&ours, &theirs)?;
            tracing::debug!("client {:?} speaks v{version}", theirs.agent);
            let compilers = compilers::Compilers::from_settings(settings, opts.search_path.clone());
            let client_has = |cap: &str| theirs.caps.iter().any(|c| c == cap);
            let client_knows_mismatch = client_has(crate::mux::lane::COMPILERS_CAP);
            let ack_chunks = chunks.shared() && client_has(crate::proto::msg::CHUNK_ACK_CAP);
            Session {
                settings,
                opts,
                allow: &allow,
                compilers: &compilers,
                client_knows_mismatch,
                ack_chunks,
                declared: Default::default(),
                sandbox: &sandbox,
                store: store.as_ref(),
                output,
                version,
                chunks,
            }
            .run(input)
            .await
        }
    }
}

/// The per-user store (`[server] cache_dir`, else [`ServeOptions::cache_dir`]), opened
/// once per session. `None`, with a warning, when it cannot be used (a directory of
/// another user, or open to others): the session then works without it.
fn open_store(settings: &ServerSettings, opts: &ServeOptions) -> Option<store::Store> {
    let dir = settings.cache_dir.as_ref().or(opts.cache_dir.as_ref())?;
    match store::Store::open(dir, settings.cache_bytes) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("no store, so no result cache and no shared chunk store: {e}");
            None
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

/// The server's hello. `chunky`: the client is new enough for chunked input (else the
/// chunk capability words are left out, and it sends whole blobs).
fn our_hello(
    settings: &ServerSettings,
    opts: &ServeOptions,
    shared_store: bool,
    chunky: bool,
) -> Hello {
    let store_caps = [
        crate::proto::msg::CHUNK_STORE_CAP,
        crate::proto::msg::CHUNK_ACK_CAP,
    ]
    .into_iter()
    .filter(|_| shared_store && chunky);
    Hello {
        version: PROTOCOL_VERSION,
        min_version: MIN_PROTOCOL_VERSION,
        caps: CAPS
            .iter()
            .copied()
            .filter(|c| chunky || *c != crate::proto::msg::CHUNKS_CAP)
            .chain(store_caps)
            .map(String::from)
            .collect(),
        slots: slots::host_limit(settings.max_jobs),
        load: slots::current_load(&opts.slot_dir, slots::host_limit(settings.max_jobs)),
        agent: format!("hoardcc {} on {}", env!("CARGO_PKG_VERSION"), hostname()),
    }
}

#[cfg(test)]
mod ack_tests;
#[cfg(test)]
mod admission_tests;
#[cfg(test)]
mod identity_tests;
#[cfg(test)]
mod tests;
