//! Native protocol messages: what the wrapper (directly, or through the mux) and
//! `hoardcc serve` say to each other over a lane. Pure data; encoding is postcard
//! inside `proto::frame` frames. Neighbours: `proto::frame` (framing), `proto::compress`
//! (the `Blob` payloads), `subsystem` (the server side), `ssh::lane` (the client side).

use serde::{Deserialize, Serialize};

/// Protocol version spoken by this build. Bumped on any incompatible change.
/// 2: [`Message::Fault`] (a protocol-1 server reports a killed compiler as
/// `exit_code` 128 + signal; see `proto::fault::Ended::from_v1_exit_code`).
pub const PROTOCOL_VERSION: u32 = 2;
/// Oldest peer version this build still talks to.
pub const MIN_PROTOCOL_VERSION: u32 = 1;
/// The first version whose peers understand [`Message::Fault`]; an older client is told
/// about a fault with `ServerError` instead.
pub const FAULT_VERSION: u32 = 2;

pub use crate::proto::fault::Fault;
use crate::proto::stats::Stats;
use crate::proto::status::StatusReport;

/// A compressed (or raw) byte payload: preprocessed source, object files, big stderr.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blob {
    /// How `data` is encoded.
    pub codec: Codec,
    /// The decoded length; checked against the bound before decoding.
    pub raw_len: u64,
    /// The encoded bytes.
    pub data: Vec<u8>,
}

/// Blob codecs of the native protocol. (LZO lives in `proto::distcc`, for stock distcc.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Codec {
    None,
    Lz4,
}

/// First frame each side sends, after the 8-byte magic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Newest protocol version the sender speaks.
    pub version: u32,
    /// Oldest protocol version the sender still speaks.
    pub min_version: u32,
    /// Capability words, e.g. "lz4", "directives-only", "heartbeat", "busy".
    pub caps: Vec<String>,
    /// Server: concurrent compiles its slot directory allows (host-wide with `/run/hoardcc`, else per user). Client: 0.
    pub slots: u32,
    /// Server: compiles holding a slot in that directory right now. Client: 0.
    pub load: u32,
    /// Free text: "hoardcc 0.1.0 on HOSTNAME".
    pub agent: String,
}

/// How the source in a `Job` was preprocessed on the client; the server compiles it
/// accordingly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceKind {
    /// `-E -fdirectives-only` (gcc) or `-E -frewrite-includes` (clang), built-in macros
    /// stripped: compiled as source under the client's path, so `-g` objects are identical.
    DirectivesOnly,
    /// Classic fully preprocessed `.i`/`.ii`/`.mi`/`.mii`.
    Preprocessed,
}

/// One compile request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Client-chosen id, echoed in the result.
    pub id: u64,
    /// Compiler name as the user gave it (bare name; the server resolves it on its PATH
    /// through its allow-list).
    pub compiler: String,
    /// Compile-only arguments: no preprocessor options, no input, no `-o`, no `-c`/`-S`.
    pub args: Vec<String>,
    /// `true` for `-S` (assembly out), `false` for `-c`.
    pub assemble_only: bool,
    /// The client's absolute working directory (mirrored under the job root on the server).
    pub cwd: String,
    /// Source path as the client's command line names it (relative to `cwd`, or absolute).
    /// For `SourceKind::Preprocessed` this already has the `.i`-style extension.
    pub source_name: String,
    /// Output path as the client's command line names it (or the default `foo.o`).
    pub output_name: String,
    /// Further outputs to bring back, relative paths as the client names them (e.g. the
    /// `.dwo` of `-gsplit-dwarf`). Missing ones are simply not returned.
    pub extra_outputs: Vec<String>,
    /// How `source` was produced.
    pub source_kind: SourceKind,
    /// The preprocessed source.
    pub source: Blob,
    /// Original text of the main source and of the user's own headers, under the names
    /// the line markers give them. The compiler reads them only to quote source lines in
    /// diagnostics, so warnings and errors look exactly as a local compile shows them.
    pub context: Vec<OutputFile>,
    /// Locale variables (`LANG`, `LC_*`) for the compiler, so diagnostics are in the
    /// client's language and quoting style. The server ignores any other name.
    pub env: Vec<(String, String)>,
}

/// A file the compile produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    /// The name as the job named it (`output_name` or one of `extra_outputs`).
    pub name: String,
    pub data: Blob,
}

/// The outcome of one job that ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobResult {
    pub id: u64,
    /// The compiler's exit code (0–255). A compiler killed by a signal is a
    /// [`Message::Fault`] instead (protocol 1 sent 128 + signal here).
    pub exit_code: i32,
    pub stdout: Blob,
    pub stderr: Blob,
    /// Outputs (only when `exit_code == 0`).
    pub outputs: Vec<OutputFile>,
}

/// Everything that travels on a lane after the hellos.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Client → server: run this job.
    Job(Job),
    /// Server → client: still compiling job `id` (sent every few seconds).
    Heartbeat {
        id: u64,
    },
    /// Server → client: the job ran; here is what it did.
    Result(JobResult),
    /// Server → client: the slot limit (`max_jobs`) is full; try elsewhere. No penalty.
    Busy {
        id: u64,
    },
    /// Server → client: the job was refused (compiler not allowed, dangerous argument).
    /// The client falls back to a local compile and reports `reason`.
    Refused {
        id: u64,
        reason: String,
    },
    /// Server → client: the server failed (not the compiler): disk full, spawn failure.
    ServerError {
        id: u64,
        message: String,
    },
    /// Client → server: ping, answered by `Pong` (used to check an idle lane).
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
    /// Server → client (protocol ≥ [`FAULT_VERSION`]): the compiler did not finish on its
    /// own terms (killed by a signal, a sub-program killed, an internal compiler error).
    /// Not the job's result: the client retries once, then compiles locally. Added last,
    /// so the other variants keep their encoding.
    Fault {
        id: u64,
        fault: Fault,
    },
}

// ---------------------------------------------------------------------------------------
// Wrapper ⇄ mux, on the per-user Unix socket (blocking frames on the wrapper side).
// One wrapper connection carries one job: Reserve, then Run (or nothing, if told Local).

/// How the reserved lane wants the source preprocessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Wire {
    /// Our own protocol: directives-only source, compiled under the client's path.
    Native,
    /// Stock distcc protocol 1 (plain) or 2 (`,lzo`): classic `.i`.
    Distcc { lzo: bool },
}

/// Everything a remote compile needs besides the preprocessed source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub compiler: String,
    pub args: Vec<String>,
    pub assemble_only: bool,
    pub cwd: String,
    /// Source name as the command line gives it (`.i` name on distcc wires).
    pub source_name: String,
    pub output_name: String,
    pub extra_outputs: Vec<String>,
    /// Full argv for a stock distccd (only used on distcc wires).
    pub distcc_argv: Vec<String>,
    /// See [`Job::env`].
    pub env: Vec<(String, String)>,
    /// See [`Job::context`]: (name, original text).
    pub context: Vec<(String, Vec<u8>)>,
}

/// Wrapper → mux.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MuxRequest {
    /// Ask for a slot for one job, before preprocessing (so connecting overlaps cpp).
    /// `hosts` is the host-list text the wrapper resolved (its environment decides it);
    /// `file` names the source, for `hoardcc status`.
    Reserve {
        hosts: String,
        file: String,
        client_version: String,
    },
    /// Run the job on the slot reserved on this connection.
    Run { spec: JobSpec, source: Blob },
    /// Report state for `hoardcc status`.
    Status,
    /// Exit now (`hoardcc mux --stop`).
    Stop,
    // Added later: appended, so the variants above keep their encoding.
    /// Subscribe (`hoardcc mon`): answered by one `Status` now and another each time the
    /// mux's state changes, until the watcher closes the connection.
    Watch,
    /// The wrapper finished the local compile the mux knows of on this connection (a
    /// `Local` answer, or a fallback after `Failed`), in `millis` of wall time. No reply:
    /// it costs a local job one write and the remote path nothing.
    LocalDone { millis: u64 },
    /// The counters of `hoardcc stats`; `zero` resets them first.
    Stats { zero: bool },
}

/// Mux → wrapper.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MuxReply {
    /// A remote slot is held for this connection: preprocess for `wire`, then send Run.
    Reserved { host: String, wire: Wire },
    /// Compile locally (a local slot was free first, or no remote host is usable).
    Local { reason: String },
    /// The remote compile ran (with or without the compiler's own error).
    Done(JobResult),
    /// Distribution failed (after the mux's own retries); the wrapper falls back.
    /// `exit_code` is the distcc exit code to use when fallback is off.
    Failed { message: String, exit_code: u8 },
    /// Answer to Status: the typed report (`hoardcc status --json` prints it as JSON).
    /// Boxed: it is much bigger than the other replies.
    Status(Box<StatusReport>),
    /// Answer to Stop.
    Stopping,
    /// The mux speaks another version: the wrapper replaces it.
    WrongVersion { mux_version: String },
    // Added later: appended, so the variants above keep their encoding.
    /// Answer to `Stats`.
    Stats(Box<Stats>),
}
