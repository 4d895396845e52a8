//! Native protocol messages: what the wrapper (directly, or through the mux) and
//! `hoardcc serve` say to each other over a lane. Pure data; encoding is postcard
//! inside `proto::frame` frames. Neighbours: `proto::frame` (framing), `proto::compress`
//! (the `Blob` payloads), `subsystem` (the server side), `mux::lane` (the client side).

use serde::{Deserialize, Serialize};

/// Protocol version spoken by this build. Bumped on any incompatible change.
/// 2: [`Message::Fault`] (a protocol-1 server reports a killed compiler as
/// `exit_code` 128 + signal; see `proto::fault::Ended::from_v1_exit_code`).
/// 3: [`Message::Job3`] and [`Message::Result3`] carry the one [`Job`] and [`JobResult`]
/// (input that may be chunked, the compiler's identity, the result cache); with the
/// capability word [`CHUNKS_CAP`], input as recipes ([`Input::Chunked`]), chunks in
/// [`Message::Chunks`], and [`Message::Missing`].
/// 4: a recipe's [`Markers`](crate::proto::chunk::Markers) carry the main source's
/// marker line numbers, so chunked input needs 4 on both sides (a protocol-3 peer gets
/// whole blobs); with the capability words [`CHUNK_ACK_CAP`] and [`IDENTITY_CAP`],
/// [`Message::Stored`] and [`Message::Identity`].
pub const PROTOCOL_VERSION: u32 = 4;
/// Oldest peer version this build still talks to.
pub const MIN_PROTOCOL_VERSION: u32 = 1;
/// The first version whose peers understand [`Message::Fault`]; an older client is told
/// about a fault with `ServerError` instead.
pub const FAULT_VERSION: u32 = 2;
/// The first version whose peers take [`Message::Job3`] and answer [`Message::Result3`];
/// an older server gets a [`JobV2`] (whole blobs, no identity, no cache).
pub const JOB3_VERSION: u32 = 3;
/// The first version whose peers may carry chunked input (when both say [`CHUNKS_CAP`]);
/// protocol 3's recipes had another shape, so a server leaves [`CHUNKS_CAP`] out of its
/// hello to a protocol-3 client.
pub const CHUNKS_VERSION: u32 = 4;
/// Hello capability word: this peer takes (server) or sends (client) chunked input.
pub const CHUNKS_CAP: &str = "chunks";
/// Hello capability word of a server whose chunk store is shared by all its sessions of
/// the user (on disk): a chunk sent on one lane is there for the next, so the client
/// keeps one set of known chunks per host rather than per lane.
pub const CHUNK_STORE_CAP: &str = "chunk-store";
/// Hello capability word (both peers): the server answers every [`Message::Chunks`] with
/// [`Message::Stored`] as soon as the pack is in its shared store, so that a job on
/// another lane that needs the same chunks can go without them instead of sending them
/// again.
pub const CHUNK_ACK_CAP: &str = "chunk-ack";
/// Hello capability word (both peers): a compiler's identity is said once per lane
/// ([`Message::Identity`]); a later [`Job`] for that compiler carries none and means
/// the declared one.
pub const IDENTITY_CAP: &str = "identity";
/// The name of a context entry that is a *manifest* (protocol ≥ 4, chunked input): its
/// text is the postcard list of further [`ContextFile`]s, each a recipe, which the server
/// puts in its place. The mux lists the user headers this way, so a job names them all
/// with the manifest's few chunk ids (the same in every unit that includes the same
/// headers). No real context file has this name: the client skips `<…>` names.
pub const CONTEXT_MANIFEST: &str = "<hoardcc>context";
/// Most compiler identities one session keeps from [`Message::Identity`].
pub const MAX_DECLARED_IDENTITIES: usize = 64;
/// Hello capability word of a server that takes [`Message::DeltaChunks`]: chunks LZ4'd
/// against a dictionary of chunks it holds (`proto::chunk::delta`).
pub const CHUNK_DELTA_CAP: &str = "chunk-delta";

pub use crate::proto::chunk::{ChunkPack, DeltaPack, Recipe};
pub use crate::proto::chunk_id::ChunkId;
pub use crate::proto::fault::Fault;
pub use crate::proto::identity::{CompilerId, OfferedCompiler};
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
    /// Server: its server slots, the concurrent compiles its slot directory allows
    /// (host-wide with `/run/hoardcc`, else per user). Client: 0.
    pub slots: u32,
    /// Server: compiles holding a server slot in that directory right now. Client: 0.
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

/// What a compile is, apart from its input: shared by the wrapper's [`JobSpec`] and the
/// wire's [`Job`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobHeader {
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
}

/// The bytes of a source or context file, as a job carries them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Input {
    /// The whole file in one blob.
    Whole(Blob),
    /// The file as chunks named by their hashes (protocol ≥ [`CHUNKS_VERSION`] with
    /// [`CHUNKS_CAP`]): the server rebuilds it from its chunk store, and answers
    /// [`Message::Missing`] for the chunks it lacks.
    Chunked(Recipe),
}

impl Input {
    /// The decoded length the sender claims (checked against admission limits before
    /// anything is decoded). For a recipe, the length of its chunks (restored line
    /// markers may add a little; the decoded whole is bounded again).
    pub fn claimed_len(&self) -> u64 {
        match self {
            Input::Whole(b) => b.raw_len,
            Input::Chunked(r) => r.len,
        }
    }

    /// The bytes, decoded within `max`.
    ///
    /// # Errors
    /// A bad blob, or one over `max`; a recipe (which must be assembled from the chunk
    /// store first).
    pub fn unpack(&self, max: u64) -> Result<Vec<u8>, crate::proto::Error> {
        match self {
            Input::Whole(b) => b.unpack(max),
            Input::Chunked(_) => Err(crate::proto::Error::Decode(
                "chunked input was not assembled".into(),
            )),
        }
    }

    /// The whole blob, if this input is one.
    pub fn as_whole(&self) -> Option<&Blob> {
        match self {
            Input::Whole(b) => Some(b),
            Input::Chunked(_) => None,
        }
    }
}

/// A context file of a [`Job`]: the original text of the main source or of a user
/// header, under the name the line markers give it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextFile {
    pub name: String,
    pub data: Input,
}

/// One compile request: the one job type from the lane to the server's compile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Client-chosen id, echoed in the result.
    pub id: u64,
    pub header: JobHeader,
    /// How `source` was produced.
    pub source_kind: SourceKind,
    /// The preprocessed source.
    pub source: Input,
    /// Original text of the main source and of the user's own headers, under the names
    /// the line markers give them. The compiler reads them only to quote source lines in
    /// diagnostics, so warnings and errors look exactly as a local compile shows them.
    pub context: Vec<ContextFile>,
    /// Locale variables (`LANG`, `LC_*`) for the compiler, so diagnostics are in the
    /// client's language and quoting style. The server ignores any other name.
    pub env: Vec<(String, String)>,
    /// The client compiler's identity, when the client knows it: the server compiles
    /// only with a compiler of the same identity.
    pub compiler_id: Option<CompilerId>,
    /// The client allows an answer from the server's result cache (`HOARDCC_CACHE=0`
    /// says no).
    pub cache: bool,
}

/// The job as protocol 1 and 2 send it ([`Message::Job`]): whole blobs, no identity, no
/// cache. Converted to and from [`Job`] at the edges only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobV2 {
    pub id: u64,
    /// Encoded exactly as protocol 2's flat fields were (postcard nests without framing).
    pub header: JobHeader,
    pub source_kind: SourceKind,
    pub source: Blob,
    pub context: Vec<OutputFile>,
    pub env: Vec<(String, String)>,
}

impl From<JobV2> for Job {
    fn from(j: JobV2) -> Job {
        Job {
            id: j.id,
            header: j.header,
            source_kind: j.source_kind,
            source: Input::Whole(j.source),
            context: j
                .context
                .into_iter()
                .map(|f| ContextFile {
                    name: f.name,
                    data: Input::Whole(f.data),
                })
                .collect(),
            env: j.env,
            compiler_id: None,
            cache: false,
        }
    }
}

impl Job {
    /// The job for a protocol-1/2 server, if its input is whole blobs (identity and cache
    /// flag are dropped: such a server knows neither).
    pub fn to_v2(&self) -> Option<JobV2> {
        Some(JobV2 {
            id: self.id,
            header: self.header.clone(),
            source_kind: self.source_kind,
            source: self.source.as_whole()?.clone(),
            context: self
                .context
                .iter()
                .map(|f| {
                    Some(OutputFile {
                        name: f.name.clone(),
                        data: f.data.as_whole()?.clone(),
                    })
                })
                .collect::<Option<Vec<_>>>()?,
            env: self.env.clone(),
        })
    }
}

/// A file the compile produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    /// The name as the job named it (`output_name` or one of `extra_outputs`).
    pub name: String,
    pub data: Blob,
}

/// The outcome of one job that ran: the one result type. The server sends it, the lane
/// returns it, the mux forwards it untouched, the wrapper unpacks it once.
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
    /// Answered from the server's result cache, not compiled.
    pub cached: bool,
}

impl JobResult {
    /// The same result with every blob decoded (each within `max`): what the wrapper
    /// works on, once.
    ///
    /// # Errors
    /// A bad blob, or one over `max`.
    pub fn unpacked(self, max: u64) -> Result<JobResult, crate::proto::Error> {
        let raw = |b: Blob| b.into_unpacked(max).map(Blob::raw);
        Ok(JobResult {
            id: self.id,
            exit_code: self.exit_code,
            stdout: raw(self.stdout)?,
            stderr: raw(self.stderr)?,
            outputs: self
                .outputs
                .into_iter()
                .map(|o| {
                    Ok(OutputFile {
                        name: o.name,
                        data: raw(o.data)?,
                    })
                })
                .collect::<Result<_, crate::proto::Error>>()?,
            cached: self.cached,
        })
    }
}

/// The result as protocol 1 and 2 send it ([`Message::Result`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultV2 {
    pub id: u64,
    pub exit_code: i32,
    pub stdout: Blob,
    pub stderr: Blob,
    pub outputs: Vec<OutputFile>,
}

impl From<ResultV2> for JobResult {
    fn from(r: ResultV2) -> JobResult {
        JobResult {
            id: r.id,
            exit_code: r.exit_code,
            stdout: r.stdout,
            stderr: r.stderr,
            outputs: r.outputs,
            cached: false,
        }
    }
}

impl From<JobResult> for ResultV2 {
    fn from(r: JobResult) -> ResultV2 {
        ResultV2 {
            id: r.id,
            exit_code: r.exit_code,
            stdout: r.stdout,
            stderr: r.stderr,
            outputs: r.outputs,
        }
    }
}

/// Everything that travels on a lane after the hellos.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Client → server (protocol ≤ 2): run this job. See [`Message::Job3`].
    Job(JobV2),
    /// Server → client: still compiling job `id` (sent every few seconds).
    Heartbeat {
        id: u64,
    },
    /// Server → client (protocol ≤ 2): the job ran; here is what it did. See
    /// [`Message::Result3`].
    Result(ResultV2),
    /// Server → client: every server slot (`max_jobs`) is held; try elsewhere. No penalty.
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
    /// Client → server (protocol ≥ [`JOB3_VERSION`]): run this job.
    Job3(Job),
    /// Server → client (protocol ≥ [`JOB3_VERSION`]): the job ran (or was answered from
    /// the result cache); here is what it did.
    Result3(JobResult),
    /// Client → server (the server's hello has the cap word "compilers"), on an idle
    /// lane: which compilers do you offer? Answered by [`Message::Compilers`].
    ListCompilers,
    /// Server → client: the allowed compilers on the server's PATH with their identities
    /// (at most `proto::identity::MAX_OFFERED`).
    Compilers {
        list: Vec<OfferedCompiler>,
    },
    /// Server → client (the client's hello has the cap word "compilers"; others get
    /// `Refused`): no allowed compiler has the job's `compiler_id`. `reason` names both
    /// versions. The client stops sending that compiler to this server for a while and
    /// runs the job elsewhere or locally.
    Mismatch {
        id: u64,
        reason: String,
    },
    /// Client → server (with [`CHUNKS_CAP`]): chunks for the store, written right before
    /// the `Job3` that needs them (no round trip of its own), or after a `Missing`.
    Chunks(ChunkPack),
    /// Server → client (with [`CHUNKS_CAP`]): job `id` was not run: its recipes name
    /// chunks the server does not hold (evicted, corrupt, or never sent). The client
    /// sends them (`Chunks`) and the job again.
    Missing {
        id: u64,
        ids: Vec<ChunkId>,
    },
    /// Server → client (both say [`CHUNK_ACK_CAP`]): the last `Chunks` (or
    /// `DeltaChunks`) pack is in the shared store, except `unshared` (corrupt, or kept in
    /// this session's memory only). One per pack, in order.
    Stored {
        unshared: Vec<ChunkId>,
    },
    /// Client → server (both say [`IDENTITY_CAP`]): jobs after this one for `compiler`
    /// that carry no identity mean `id`. A later declaration for the same name replaces
    /// it; a session keeps at most [`MAX_DECLARED_IDENTITIES`] names.
    Identity {
        compiler: String,
        id: CompilerId,
    },
    /// Client → server (the server's hello has [`CHUNK_DELTA_CAP`]): chunks as in
    /// [`Message::Chunks`], LZ4'd against chunks the server holds. A server that lacks
    /// one of the dictionary's chunks, or cannot decode the pack, stores none of its
    /// chunks: the job then answers [`Message::Missing`] and they come again, plain.
    /// With [`CHUNK_ACK_CAP`] it is answered by [`Message::Stored`] as a `Chunks` pack is
    /// (every chunk not stored is `unshared`). Added last, so the other variants keep
    /// their encoding.
    DeltaChunks(DeltaPack),
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
    /// `source_name` is the `.i` name on distcc wires.
    pub header: JobHeader,
    /// Full argv for a stock distccd (only used on distcc wires).
    pub distcc_argv: Vec<String>,
    /// See [`Job::env`].
    pub env: Vec<(String, String)>,
    /// See [`Job::context`]: (name, original text).
    pub context: Vec<(String, Vec<u8>)>,
    /// See [`Job::compiler_id`].
    pub compiler_id: Option<CompilerId>,
    /// See [`Job::cache`].
    pub cache: bool,
}

/// The wrapper's compiler, as it resolved it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalCompiler {
    /// The name the job carries (`JobHeader::compiler`).
    pub name: String,
    /// The absolute path the wrapper would run locally.
    pub path: String,
}

/// Wrapper → mux.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MuxRequest {
    /// Ask for a host slot for one job, before preprocessing (so connecting overlaps cpp).
    /// `hosts` is the host-list text the wrapper resolved (its environment decides it);
    /// `file` names the source, for `hoardcc status`.
    Reserve {
        hosts: String,
        file: String,
        client_version: String,
        /// The compiler the job will run, when the wrapper resolved it: the mux probes
        /// its identity (once per path, size and mtime) and avoids hosts without a match.
        compiler: Option<LocalCompiler>,
    },
    /// Run the job on the slot reserved on this connection. With `recipe`, `source`
    /// holds the directives-only text normalised and cut by the wrapper
    /// (`proto::chunk::Cut`: the recipe's chunks are consecutive slices of it).
    Run {
        spec: Box<JobSpec>,
        source: Blob,
        recipe: Option<Recipe>,
    },
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
    /// A remote host slot is held for this connection: preprocess for `wire`, then send Run.
    Reserved { host: String, wire: Wire },
    /// Compile locally (a local host slot was free first, or no remote host is usable).
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
    /// Answer to `Run`: the reserved host turned out to speak `wire`, not the one the
    /// source was preprocessed for (its first lane opened while the wrapper preprocessed).
    /// The slot is still held: preprocess for `wire` and send `Run` again.
    Rewire { wire: Wire },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Protocol 2's job, as it was declared (flat fields).
    #[derive(Serialize)]
    struct FlatJobV2 {
        id: u64,
        compiler: String,
        args: Vec<String>,
        assemble_only: bool,
        cwd: String,
        source_name: String,
        output_name: String,
        extra_outputs: Vec<String>,
        source_kind: SourceKind,
        source: Blob,
        context: Vec<OutputFile>,
        env: Vec<(String, String)>,
    }

    #[test]
    fn job_v2_encodes_as_protocol_2_did() {
        let header = JobHeader {
            compiler: "gcc".into(),
            args: vec!["-O2".into(), "-g".into()],
            assemble_only: true,
            cwd: "/home/u/p".into(),
            source_name: "src/a.c".into(),
            output_name: "a.s".into(),
            extra_outputs: vec!["a.dwo".into()],
        };
        let context = vec![OutputFile {
            name: "src/a.c".into(),
            data: Blob::pack(b"int x;\n"),
        }];
        let env = vec![("LANG".into(), "C".into())];
        let v2 = JobV2 {
            id: 9,
            header: header.clone(),
            source_kind: SourceKind::DirectivesOnly,
            source: Blob::pack(&[b'x'; 600]),
            context: context.clone(),
            env: env.clone(),
        };
        let flat = FlatJobV2 {
            id: 9,
            compiler: header.compiler,
            args: header.args,
            assemble_only: header.assemble_only,
            cwd: header.cwd,
            source_name: header.source_name,
            output_name: header.output_name,
            extra_outputs: header.extra_outputs,
            source_kind: SourceKind::DirectivesOnly,
            source: Blob::pack(&[b'x'; 600]),
            context,
            env,
        };
        assert_eq!(
            postcard::to_allocvec(&v2).unwrap(),
            postcard::to_allocvec(&flat).unwrap()
        );
        // And the round trip through the one `Job` keeps everything protocol 2 has.
        let job = Job::from(v2.clone());
        assert_eq!(job.to_v2(), Some(v2));
    }
}
