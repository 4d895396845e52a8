//! Stage: lane — one job on one remote, the boundary between the mux and a remote
//! compile.
//!
//! Given a host from the host list, [`Lane::open`] reaches it (a native `hoardcc`
//! subsystem lane over ssh, a stock `distccd --inetd` on an ssh exec channel, or a stock
//! `distccd` over TCP) and [`Lane::run`] runs one job on it. The mux (`mux::job`, with
//! lanes from `mux::pool`) runs every job here; the wrapper's direct path
//! (`HOARDCC_MUX=0`) calls it in-process. Neighbours: `mux::ssh` (connections), `proto`
//! (wire formats), `subsystem` (the other end).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::exit::ExitCode;
use crate::hosts::{HostKind, HostSpec};
use crate::mux::recent;
use crate::mux::ssh::{self, Connection, SshError, SshSettings, Stream};
use crate::mux::upload::SharedChunks;
use crate::proto::distcc::{self, DistccRequest};
use crate::proto::fault::{self, Ended, Fault};
use crate::proto::frame;
use crate::proto::msg::{
    Blob, Hello, JobResult, Message, OutputFile, CHUNKS_CAP, CHUNKS_VERSION, CHUNK_ACK_CAP,
    CHUNK_DELTA_CAP, CHUNK_STORE_CAP, IDENTITY_CAP, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use crate::proto::{self, compress::MAX_BLOB};

mod list;
mod native;
mod route;

pub use route::Route;

/// Name of the sshd subsystem that runs `hoardcc serve`.
pub const SUBSYSTEM: &str = "hoardcc";
/// The stock distcc program a host without our subsystem runs on an exec channel
/// ([`Lane::on_connection`] appends `--inetd`).
pub const DEFAULT_DISTCCD: &str = "distccd";
/// The hello cap word of peers that know [`Message::ListCompilers`] (servers) and
/// [`Message::Mismatch`] (clients).
pub const COMPILERS_CAP: &str = "compilers";
/// TCP connect timeout for stock distccd hosts (distcc uses a fixed 4 s).
const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(4);
/// `Missing` answers one job may get before it is given up: the first round covers
/// evicted or never-sent chunks, the second a chunk evicted (or corrupted) again
/// before its job was read.
const MAX_MISSING_ROUNDS: u32 = 3;

pub use crate::mux::upload::Source;
pub use crate::proto::msg::{JobSpec, Wire};

/// What a running job is doing on its lane, for `hoardcc mon` and `hoardcc stats`
/// ([`Lane::run_observed`]). Byte counts are what travels on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaneEvent {
    /// The job (`bytes` of it) is being sent.
    Sending { bytes: u64 },
    /// The job is sent: the server compiles.
    Compiling,
    /// An answer (`bytes` of it) is coming back.
    Receiving { bytes: u64 },
}

/// Where [`Lane::run_observed`] reports [`LaneEvent`]s.
pub type Observer<'a> = &'a (dyn Fn(LaneEvent) + Send + Sync);

/// Frames up to this size (heartbeats, short answers) are reported as received once
/// decoded, not as they start arriving.
const SMALL_FRAME: u32 = 256;

/// Failures of distribution (never the compiler's own error).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("{0}")]
    Ssh(#[from] SshError),
    #[error("protocol: {0}")]
    Proto(#[from] proto::Error),
    #[error("cannot connect to {host}:{port}: {source}")]
    TcpConnect {
        host: String,
        port: u16,
        source: std::io::Error,
    },
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("{host} refused the job: {reason}")]
    Refused { host: String, reason: String },
    #[error("{host} is busy")]
    Busy { host: String },
    /// The server has no compiler with the job's identity (`reason` names both
    /// versions): that compiler goes elsewhere, or the job compiles locally.
    #[error("{host}: {reason}")]
    Mismatch { host: String, reason: String },
    #[error("server error on {host}: {message}")]
    Server { host: String, message: String },
    /// The compiler did not finish on its own terms on the server (killed by a signal,
    /// an internal compiler error): retried once, then compiled locally; never the job's
    /// status.
    #[error("{fault}")]
    Fault { host: String, fault: Fault },
    #[error("the server closed the lane before answering")]
    Closed,
    #[error("unexpected message from server: {0}")]
    Unexpected(String),
    #[error("{0}")]
    Other(String),
}

impl TransportError {
    /// The distcc exit code for this failure, used when fallback is off.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            TransportError::Ssh(e) => e.exit_code(),
            TransportError::Proto(proto::Error::Truncated { .. }) => ExitCode::Truncated,
            TransportError::Proto(proto::Error::Io(_)) => ExitCode::IoError,
            TransportError::Proto(_) => ExitCode::ProtocolError,
            TransportError::TcpConnect { .. } => ExitCode::ConnectFailed,
            TransportError::Timeout(_) => ExitCode::Timeout,
            TransportError::Refused { .. } | TransportError::Mismatch { .. } => {
                ExitCode::AccessDenied
            }
            TransportError::Busy { .. } => ExitCode::Busy,
            TransportError::Server { .. } => ExitCode::DistccFailed,
            TransportError::Fault { .. } => ExitCode::CompilerCrashed,
            TransportError::Closed => ExitCode::Gone,
            TransportError::Unexpected(_) => ExitCode::ProtocolError,
            TransportError::Other(_) => ExitCode::DistccFailed,
        }
    }
}

/// The wire a host is expected to speak, known before connecting (so preprocessing can
/// start while the connection is made). `@host` without a command is expected to have
/// our subsystem; if it turns out not to, the lane says so and the wrapper re-runs cpp.
pub fn expected_wire(host: &HostSpec) -> Wire {
    match &host.kind {
        HostKind::Ssh {
            command: Some(c), ..
        } if !is_hoardcc_command(c) => Wire::Distcc { lzo: host.lzo },
        HostKind::Ssh { .. } => Wire::Native,
        HostKind::Tcp { .. } | HostKind::Local => Wire::Distcc { lzo: host.lzo },
    }
}

/// `@host:/path/to/hoardcc` runs our server by exec (for users without root): true when
/// the command's program is named `hoardcc*`.
pub fn is_hoardcc_command(command: &str) -> bool {
    let first = command.split_whitespace().next().unwrap_or("");
    let base = first.rsplit('/').next().unwrap_or(first);
    base.starts_with("hoardcc")
}

enum LaneIo {
    Native { stream: Stream, conn: Connection },
    DistccSsh { stream: Stream, conn: Connection },
    DistccTcp { stream: TcpStream },
}

/// An open path to one server, ready for jobs.
pub struct Lane {
    io: LaneIo,
    wire: Wire,
    host: String,
    io_timeout: Duration,
    next_id: u64,
    /// The protocol version negotiated on a native lane (0 on distcc lanes).
    version: u32,
    /// The server's hello (native lanes only).
    pub server_hello: Option<Hello>,
    /// Chunks this lane's server holds, when its store is its own (the server did not
    /// announce a shared one): then what one lane sent is unknown to the others.
    own_chunks: SharedChunks,
    /// How this lane reaches its server.
    route: Route,
    /// The compiler identities declared to this lane's server (`Message::Identity`).
    declared: std::collections::HashMap<String, crate::proto::msg::CompilerId>,
}

impl Lane {
    /// Reach `host` and make a lane. `@host` tries the `hoardcc` subsystem first, then
    /// falls back to `distccd --inetd` on an exec channel of the same connection.
    pub async fn open(host: &HostSpec, settings: &SshSettings) -> Result<Lane, TransportError> {
        match &host.kind {
            HostKind::Local => Err(TransportError::Other(
                "localhost is not a remote host".into(),
            )),
            HostKind::Tcp { host: h, port } => {
                let stream = tokio::time::timeout(
                    TCP_CONNECT_TIMEOUT,
                    TcpStream::connect((h.as_str(), *port)),
                )
                .await
                .map_err(|_| TransportError::Timeout("TCP connect"))?
                .map_err(|source| TransportError::TcpConnect {
                    host: h.clone(),
                    port: *port,
                    source,
                })?;
                let _ = stream.set_nodelay(true);
                Ok(Lane::new(
                    LaneIo::DistccTcp { stream },
                    Wire::Distcc { lzo: host.lzo },
                    host.key(),
                    settings,
                    Route::DistccdTcp,
                ))
            }
            HostKind::Ssh {
                user,
                host: alias,
                command,
            } => {
                let dest = resolve_destination(alias, user.as_deref(), settings)?;
                let conn = Connection::connect(&dest, settings).await?;
                Lane::on_connection(conn, host, command.as_deref(), settings).await
            }
        }
    }

    /// Make a lane on an already-authenticated connection (the mux's hoarded ones).
    pub async fn on_connection(
        conn: Connection,
        host: &HostSpec,
        command: Option<&str>,
        settings: &SshSettings,
    ) -> Result<Lane, TransportError> {
        let key = host.key();
        // A named hoardcc runs `serve` on an exec channel; another named program is a stock
        // distccd; without a name the subsystem is tried, then `distccd` on an exec channel.
        let distccd = |program: &str| format!("{program} --inetd --enable-tcp-insecure");
        let (stream, route) = match command {
            Some(c) if is_hoardcc_command(c) => (
                conn.open_exec(&format!("{c} serve")).await?,
                Route::Exec { command: c.into() },
            ),
            Some(c) => (
                conn.open_exec(&distccd(c)).await?,
                Route::DistccdSsh {
                    command: c.into(),
                    subsystem_refused: false,
                },
            ),
            None => match conn.open_subsystem(SUBSYSTEM).await? {
                Some(stream) => (stream, Route::Subsystem),
                None => {
                    tracing::info!(host = %key, "no hoardcc subsystem; using distccd --inetd over exec");
                    (
                        conn.open_exec(&distccd(DEFAULT_DISTCCD)).await?,
                        Route::DistccdSsh {
                            command: DEFAULT_DISTCCD.into(),
                            subsystem_refused: true,
                        },
                    )
                }
            },
        };
        if matches!(route, Route::Subsystem | Route::Exec { .. }) {
            let io = LaneIo::Native { stream, conn };
            Lane::native(io, key, settings, route).await
        } else {
            let io = LaneIo::DistccSsh { stream, conn };
            let wire = Wire::Distcc { lzo: host.lzo };
            Ok(Lane::new(io, wire, key, settings, route))
        }
    }

    fn new(io: LaneIo, wire: Wire, host: String, settings: &SshSettings, route: Route) -> Lane {
        Lane {
            io,
            wire,
            host,
            io_timeout: settings.io_timeout,
            next_id: 1,
            version: 0,
            server_hello: None,
            own_chunks: SharedChunks::default(),
            declared: Default::default(),
            route,
        }
    }

    async fn native(
        io: LaneIo,
        host: String,
        settings: &SshSettings,
        route: Route,
    ) -> Result<Lane, TransportError> {
        let mut lane = Lane::new(io, Wire::Native, host, settings, route);
        let LaneIo::Native { stream, .. } = &mut lane.io else {
            unreachable!("native lane")
        };
        let ours = client_hello();
        let theirs = tokio::time::timeout(settings.io_timeout, async {
            frame::write_hello(stream, &ours).await?;
            frame::read_hello(stream).await
        })
        .await
        .map_err(|_| TransportError::Timeout("the server's hello"))??;
        lane.version = frame::negotiate(&ours, &theirs)?;
        lane.server_hello = Some(theirs);
        Ok(lane)
    }

    /// The wire this lane speaks (decides how the source is preprocessed).
    pub fn wire(&self) -> Wire {
        self.wire
    }

    /// How this lane reaches its server.
    pub fn route(&self) -> &Route {
        &self.route
    }

    /// The protocol version negotiated on a native lane (0 on distcc lanes).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The host key this lane reaches, e.g. `user@host`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Whether the ssh connection under the lane has ended (never for TCP lanes, whose
    /// end shows only when they are used).
    pub fn is_closed(&self) -> bool {
        match &self.io {
            LaneIo::Native { conn, .. } | LaneIo::DistccSsh { conn, .. } => conn.is_closed(),
            LaneIo::DistccTcp { .. } => false,
        }
    }

    /// Native lanes run job after job; a distcc lane serves one job and is then spent.
    pub fn reusable(&self) -> bool {
        matches!(self.io, LaneIo::Native { .. })
    }

    /// Check an idle native lane end to end: one `Ping`, answered by `Pong` within
    /// `timeout`. Returns the round-trip time. Distcc lanes have nothing to ping.
    pub async fn ping(&mut self, timeout: Duration) -> Result<Duration, TransportError> {
        let LaneIo::Native { stream, .. } = &mut self.io else {
            return Ok(Duration::ZERO);
        };
        let nonce = self.next_id;
        self.next_id += 1;
        let start = std::time::Instant::now();
        tokio::time::timeout(timeout, async {
            frame::write_message(stream, &Message::Ping { nonce }).await?;
            loop {
                match frame::read_message(stream).await? {
                    Some(Message::Pong { nonce: n }) if n == nonce => return Ok(start.elapsed()),
                    Some(Message::Heartbeat { .. }) => continue,
                    Some(other) => {
                        return Err(TransportError::Unexpected(
                            format!("{other:?}").chars().take(80).collect(),
                        ))
                    }
                    None => return Err(TransportError::Closed),
                }
            }
        })
        .await
        .map_err(|_| TransportError::Timeout("a ping answer"))?
    }

    /// Wait while the lane is idle: returns when the server closes it or sends something
    /// it should not (both mean the lane is dead). Cancel-safe: no byte is consumed unless
    /// the future completes, so a lane task can `select!` on it against new jobs; this is
    /// also what keeps an idle channel drained.
    pub async fn idle_watch(&mut self) -> TransportError {
        use tokio::io::AsyncReadExt;
        let mut b = [0u8; 1];
        let r = match &mut self.io {
            LaneIo::Native { stream, .. } | LaneIo::DistccSsh { stream, .. } => {
                stream.read(&mut b).await
            }
            LaneIo::DistccTcp { stream } => stream.read(&mut b).await,
        };
        match r {
            Ok(0) => TransportError::Closed,
            Ok(_) => TransportError::Unexpected("data on an idle lane".into()),
            Err(e) => TransportError::Proto(proto::Error::Io(e)),
        }
    }

    /// Whether the server announced capability `cap`.
    fn server_can(&self, cap: &str) -> bool {
        self.server_hello
            .as_ref()
            .is_some_and(|h| h.caps.iter().any(|c| c == cap))
    }

    /// Run one job. `source` is preprocessed as [`Lane::wire`] asks. `host_chunks` is
    /// the host's chunk knowledge and counters, shared by its lanes (the mux's); without
    /// it, or when the server's store is its own, the lane keeps its own knowledge. On an
    /// ssh lane the job ends with [`TransportError::Closed`] as soon as the connection
    /// ends, even while it waits to send (russh does not wake such a writer).
    pub async fn run(
        &mut self,
        spec: &JobSpec,
        source: &Source,
        host_chunks: Option<&SharedChunks>,
    ) -> Result<JobResult, TransportError> {
        self.run_observed(spec, source, host_chunks, &|_| {}).await
    }

    /// [`Lane::run`], telling `observe` where the job is (sending, compiling, receiving)
    /// and how many bytes travel.
    pub async fn run_observed(
        &mut self,
        spec: &JobSpec,
        source: &Source,
        host_chunks: Option<&SharedChunks>,
        observe: Observer<'_>,
    ) -> Result<JobResult, TransportError> {
        let io_timeout = self.io_timeout;
        let chunks = self.version >= CHUNKS_VERSION && self.server_can(CHUNKS_CAP);
        let known = match host_chunks {
            Some(h) if self.server_can(CHUNK_STORE_CAP) => h.clone(),
            _ => self.own_chunks.clone(),
        };
        let counts = host_chunks.cloned().unwrap_or_else(|| known.clone());
        let acks = chunks && self.server_can(CHUNK_ACK_CAP);
        let identity = self.server_can(IDENTITY_CAP);
        let delta = chunks && self.server_can(CHUNK_DELTA_CAP) && recent::delta_enabled();
        match &mut self.io {
            LaneIo::Native { stream, conn } => {
                let id = self.next_id;
                self.next_id += 1;
                let peer = native::Peer {
                    host: &self.host,
                    version: self.version,
                    chunks,
                    acks,
                    identity,
                    delta,
                };
                let books = native::Books {
                    known: &known,
                    counts: &counts,
                };
                let declared = &mut self.declared;
                let run = native::run_native(
                    stream, id, spec, source, io_timeout, peer, books, declared, observe,
                );
                unless_closed(conn, run).await
            }
            LaneIo::DistccSsh { stream, conn } => {
                let host = &self.host;
                let text = source.text();
                let run = run_distcc(stream, self.wire, spec, &text, io_timeout, host, observe);
                unless_closed(conn, run).await
            }
            LaneIo::DistccTcp { stream } => {
                let host = &self.host;
                let text = source.text();
                run_distcc(stream, self.wire, spec, &text, io_timeout, host, observe).await
            }
        }
    }
}

/// `work` on a lane of `conn`, or [`TransportError::Closed`] once the connection has
/// ended (what `work` got done first wins).
async fn unless_closed<T>(
    conn: &Connection,
    work: impl std::future::Future<Output = Result<T, TransportError>>,
) -> Result<T, TransportError> {
    tokio::select! {
        biased;
        r = work => r,
        () = conn.closed() => Err(TransportError::Closed),
    }
}

/// Our hello, as a client.
pub fn client_hello() -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        min_version: MIN_PROTOCOL_VERSION,
        caps: vec![
            "lz4".into(),
            "directives-only".into(),
            "heartbeat".into(),
            COMPILERS_CAP.into(),
            CHUNKS_CAP.into(),
            CHUNK_ACK_CAP.into(),
            IDENTITY_CAP.into(),
        ],
        slots: 0,
        load: 0,
        agent: format!("hoardcc {}", env!("CARGO_PKG_VERSION")),
    }
}

fn resolve_destination(
    alias: &str,
    user: Option<&str>,
    settings: &SshSettings,
) -> Result<ssh::Destination, TransportError> {
    Ok(ssh::config::destination(alias, user, settings)?)
}

/// A compile that ran to its end, unless what it reported is a [`Fault`] (classified here
/// too for servers that do not tell faults apart themselves: protocol-1 hoardcc servers
/// and stock distccd).
fn completed_or_fault(
    r: JobResult,
    ended: Ended,
    compiler: &str,
    host: &str,
) -> Result<JobResult, TransportError> {
    let stderr = r.stderr.unpack(MAX_BLOB)?;
    match fault::classify(ended, &stderr, compiler) {
        Some(fault) => Err(TransportError::Fault {
            host: host.to_string(),
            fault,
        }),
        None => Ok(r),
    }
}

async fn run_distcc<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    wire: Wire,
    spec: &JobSpec,
    source: &[u8],
    io_timeout: Duration,
    host: &str,
    observe: Observer<'_>,
) -> Result<JobResult, TransportError> {
    let version = match wire {
        Wire::Distcc { lzo: true } => 2,
        _ => 1,
    };
    let req = DistccRequest {
        version,
        argv: spec.distcc_argv.clone(),
        doti: source.to_vec(),
    };
    // The payload: the .i and the argv (the protocol's tokens add a few bytes each).
    let sent = req.doti.len() + req.argv.iter().map(String::len).sum::<usize>();
    observe(LaneEvent::Sending { bytes: sent as u64 });
    let resp = tokio::time::timeout(io_timeout, async {
        distcc::write_request(stream, &req).await?;
        observe(LaneEvent::Compiling);
        distcc::read_response(stream, version).await
    })
    .await
    .map_err(|_| TransportError::Timeout("distccd's answer"))??;
    let received = resp.doto.len() + resp.stdout.len() + resp.stderr.len();
    observe(LaneEvent::Receiving {
        bytes: received as u64,
    });
    let exit_code = distcc::exit_code_from_wait_status(resp.status);
    if exit_code == i32::from(ExitCode::CompilerCrashed.code()) && resp.doto.is_empty() {
        // A hoardcc server's way of telling a stock client that the compiler crashed.
        let text = String::from_utf8_lossy(&resp.stderr);
        let line = text.lines().last().unwrap_or("").trim();
        let detail = line.strip_prefix("hoardcc server: ").unwrap_or(line);
        return Err(TransportError::Fault {
            host: host.to_string(),
            fault: Fault {
                program: spec
                    .header
                    .compiler
                    .chars()
                    .take(fault::MAX_FAULT_TEXT)
                    .collect(),
                signal: 0,
                detail: detail
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(fault::MAX_FAULT_TEXT)
                    .collect(),
            },
        });
    }
    if exit_code != 0 && resp.doto.is_empty() && (100..=120).contains(&exit_code) {
        // distccd's own failure (compiler missing, access denied, …), not the compiler's.
        let text = String::from_utf8_lossy(&resp.stderr);
        return Err(TransportError::Server {
            host: host.to_string(),
            message: format!(
                "distccd exited {exit_code}: {}",
                text.lines().last().unwrap_or("").trim()
            ),
        });
    }
    let outputs = if exit_code == 0 {
        vec![OutputFile {
            name: spec.header.output_name.clone(),
            data: Blob::raw(resp.doto),
        }]
    } else {
        Vec::new()
    };
    let done = JobResult {
        id: 0,
        exit_code,
        stdout: Blob::raw(resp.stdout),
        stderr: Blob::raw(resp.stderr),
        outputs,
        cached: false,
    };
    completed_or_fault(
        done,
        Ended::from_wait_status(resp.status),
        &spec.header.compiler,
        host,
    )
}

#[cfg(test)]
mod native_tests;
#[cfg(test)]
mod tests;
