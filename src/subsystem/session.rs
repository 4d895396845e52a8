//! Stage: server, one native session of `hoardcc serve` after the hellos (`subsystem`
//! reads the opening and negotiates): per job, admit (`job::check_sandbox`, the compiler
//! with the client's identity from `compilers`, `job::check_request`, recipes made whole
//! from the chunk store or `Missing`), answer from the result cache if it holds the job
//! (`cache`, no server slot needed), else take a server slot from `slots` (or answer
//! `Busy`), compile (`job::stage` into a `workdir`, `exec` while `reader` keeps reading
//! the lane, with heartbeats, `Ping` answers and EOF killing the compiler), answer
//! (`result_message`: outputs read back within the frame budget, or the fault), and keep
//! a clean result in the cache. Pipelined jobs wait in a byte-bounded queue.
//! Neighbours: `subsystem` (caller), `job`, `compilers`, `chunks`, `cache`, `slots`,
//! `exec`, `reader`, `proto::frame`.

use std::collections::VecDeque;

use tokio::io::{AsyncBufRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::config::ServerSettings;
use crate::proto::fault::{self, Ended};
use crate::proto::frame::{self, MAX_FRAME};
use crate::proto::msg::{
    Blob, ChunkPack, CompilerId, DeltaPack, Job, JobResult, Message, OutputFile, CHUNKS_VERSION,
    CONTEXT_MANIFEST, FAULT_VERSION, JOB3_VERSION, MAX_DECLARED_IDENTITIES,
};
use crate::proto::Error as ProtoError;

use exec::ExecError;
use job::{AllowList, PrepareError};
use reader::Incoming;

/// One item from the lane reader.
pub(super) type Received = Result<Incoming, ProtoError>;

/// Jobs received while another runs, with their frame sizes.
#[derive(Default)]
pub(super) struct Queue {
    jobs: VecDeque<(Job, u64)>,
    bytes: u64,
}

/// How a job left the session.
pub(super) enum Flow {
    /// Answered; read the next message.
    Continue,
    /// The client went away (or broke the protocol) during the compile.
    End(Result<(), ServeError>),
}

/// The native session after the hellos.
pub(super) struct Session<'a, W> {
    pub(super) settings: &'a ServerSettings,
    pub(super) opts: &'a ServeOptions,
    pub(super) allow: &'a AllowList,
    /// The allowed compilers and their identities: picks the job's compiler.
    pub(super) compilers: &'a compilers::Compilers,
    /// The client's hello has the "compilers" cap: it understands `Mismatch`.
    pub(super) client_knows_mismatch: bool,
    /// Both hellos have `chunk-ack` (and the store is shared): each `Chunks` is answered
    /// with `Stored`.
    pub(super) ack_chunks: bool,
    /// Compiler identities the client declared (`Message::Identity`), by compiler name.
    pub(super) declared: std::collections::HashMap<String, CompilerId>,
    pub(super) sandbox: &'a sandbox::Sandbox,
    /// The per-user store of chunks and results, when it could be opened.
    pub(super) store: Option<&'a store::Store>,
    pub(super) output: W,
    /// The protocol version negotiated with the client (decides how a fault is told).
    pub(super) version: u32,
    /// Chunks the client sent, and the store recipes are assembled from.
    pub(super) chunks: chunks::SessionChunks<'a>,
}

impl<W: AsyncWrite + Unpin> Session<'_, W> {
    /// Reads messages on one side and serves them on the other, in one task: the reader
    /// keeps going while a job compiles, so EOF is noticed at once.
    pub(super) async fn run<R: AsyncBufRead + Unpin>(
        mut self,
        mut input: R,
    ) -> Result<(), ServeError> {
        let (tx, rx) = mpsc::channel::<Received>(1);
        let (busy_tx, mut busy) = watch::channel(false);
        let a = &self.settings.admission;
        let limits = reader::LaneLimits {
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
                    Message::Job3(job)
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
                Message::Job3(mut job) => {
                    self.resolve_identity(&mut job);
                    busy.send_replace(true);
                    let flow = self.job(job, &mut rx, &mut queue).await?;
                    if let Flow::End(r) = flow {
                        return r;
                    }
                    busy.send_replace(!queue.jobs.is_empty());
                }
                Message::Ping { nonce } => self.send(&Message::Pong { nonce }).await?,
                Message::ListCompilers => {
                    let list = self.compilers.offered().await;
                    self.send(&Message::Compilers { list }).await?;
                }
                Message::Chunks(pack) if self.version >= CHUNKS_VERSION => {
                    self.receive_chunks(&pack).await?
                }
                Message::Identity { compiler, id } => self.declare(compiler, id)?,
                Message::DeltaChunks(pack) if self.version >= CHUNKS_VERSION => {
                    self.receive_delta(&pack).await?
                }
                other => return Err(unexpected(&other)),
            }
        }
    }

    /// Stores the chunks of a pack (those whose bytes match their ids), and says so when
    /// the client asked (`chunk-ack`).
    async fn receive_chunks(&mut self, pack: &ChunkPack) -> Result<(), ServeError> {
        let got = self.chunks.receive(pack);
        self.acknowledge(got, "chunk pack").await
    }

    /// Stores the chunks of a delta pack (none, if its dictionary is not all here), and
    /// acknowledges it as a plain pack is.
    async fn receive_delta(&mut self, pack: &DeltaPack) -> Result<(), ServeError> {
        let got = self.chunks.receive_delta(pack);
        self.acknowledge(got, "delta pack").await
    }

    /// What a pack of kind `what` left in the store: a protocol error, or (when the
    /// client asked, `chunk-ack`) `Stored` naming what is not shared.
    async fn acknowledge(
        &mut self,
        got: Result<chunks::Received, crate::proto::chunk::ChunkError>,
        what: &str,
    ) -> Result<(), ServeError> {
        let got = got.map_err(|e| ServeError::Unexpected(format!("{what}: {e}")))?;
        tracing::debug!(
            "{what}: {} chunk(s) received, {} not shared",
            got.received,
            got.unshared.len()
        );
        if self.ack_chunks {
            self.send(&Message::Stored {
                unshared: got.unshared,
            })
            .await?;
        }
        Ok(())
    }

    /// Keeps a declared identity (bounded: a client declaring more names is broken).
    fn declare(&mut self, compiler: String, id: CompilerId) -> Result<(), ServeError> {
        if !self.declared.contains_key(&compiler) && self.declared.len() >= MAX_DECLARED_IDENTITIES
        {
            return Err(ServeError::Unexpected(format!(
                "more than {MAX_DECLARED_IDENTITIES} compiler identities declared"
            )));
        }
        self.declared.insert(compiler, id);
        Ok(())
    }

    /// A job without an identity means the one declared for its compiler, if any. Done
    /// as the job is read, so a later declaration does not change a queued job.
    fn resolve_identity(&self, job: &mut Job) {
        if job.compiler_id.is_none() {
            job.compiler_id = self.declared.get(&job.header.compiler).cloned();
        }
    }

    /// Runs one job and answers it with exactly one of Result / Busy / Refused /
    /// ServerError (unless the client goes away first).
    async fn job(
        &mut self,
        mut job: Job,
        rx: &mut mpsc::Receiver<Received>,
        queue: &mut Queue,
    ) -> Result<Flow, ServeError> {
        let id = job.id;
        let limits = &self.settings.admission;
        if let Err(e) = job::check_sandbox(self.sandbox) {
            return self.not_prepared(id, e).await;
        }
        // The compiler with the client's identity, if it sent one (else the name's).
        let picked = self
            .compilers
            .pick(&job.header.compiler, job.compiler_id.as_ref())
            .await;
        let program = match picked {
            Ok(p) => p,
            Err(compilers::PickError::NoMatch(reason)) if self.client_knows_mismatch => {
                tracing::info!("job {id}: {reason}");
                self.send(&Message::Mismatch { id, reason }).await?;
                return Ok(Flow::Continue);
            }
            Err(e) => {
                return self
                    .not_prepared(id, PrepareError::Refused(e.to_string()))
                    .await
            }
        };
        if let Err(e) = job::check_request(&job, limits) {
            return self.not_prepared(id, e).await;
        }
        // Recipes become whole text here, before a server slot is taken: a job whose
        // chunks are not all here is answered at once, and the client sends them with the
        // job again.
        let listed = job.context.iter().any(|f| f.name == CONTEXT_MANIFEST);
        match self.chunks.materialise(&mut job, limits.max_job_bytes) {
            // The files a manifest listed are checked as the job's own were.
            Ok(()) if listed => {
                if let Err(e) = job::check_request(&job, limits) {
                    return self.not_prepared(id, e).await;
                }
            }
            Ok(()) => {}
            Err(chunks::Materialise::Missing(ids)) => {
                tracing::debug!("job {id}: {} chunk(s) missing", ids.len());
                self.send(&Message::Missing { id, ids }).await?;
                return Ok(Flow::Continue);
            }
            Err(chunks::Materialise::Refused(reason)) => {
                return self.not_prepared(id, PrepareError::Refused(reason)).await
            }
        }
        let cache_key = self.cache_key(&job, &program).await;
        if let Some(hit) = cache_key.and_then(|k| cache::lookup(self.store?, &k, id)) {
            tracing::debug!("job {id}: answered from the result cache");
            self.send(&result_for(hit, self.version)).await?;
            return Ok(Flow::Continue);
        }
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
                        Some(Ok(Incoming::Message(Message::Chunks(pack), _)))
                            if self.version >= CHUNKS_VERSION =>
                        {
                            self.receive_chunks(&pack).await.err().map(Err)
                        }
                        Some(Ok(Incoming::Message(Message::Identity { compiler, id }, _))) => {
                            self.declare(compiler, id).err().map(Err)
                        }
                        Some(Ok(Incoming::Message(Message::DeltaChunks(pack), _)))
                            if self.version >= CHUNKS_VERSION =>
                        {
                            self.receive_delta(&pack).await.err().map(Err)
                        }
                        Some(Ok(Incoming::Message(Message::Job3(_), _)))
                            if queue.jobs.len() >= MAX_QUEUED_JOBS =>
                        {
                            Some(Err(ServeError::Flooded))
                        }
                        Some(Ok(Incoming::Message(Message::Job3(next), len)))
                            if queue.bytes + len > limits.max_queued_bytes =>
                        {
                            tracing::debug!("job {}: queue budget full, busy", next.id);
                            self.send(&Message::Busy { id: next.id }).await.err().map(Err)
                        }
                        Some(Ok(Incoming::Message(Message::Job3(mut next), len))) => {
                            self.resolve_identity(&mut next);
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
        if let (Some(key), Some(store), Message::Result3(result)) = (cache_key, self.store, &answer)
        {
            match cache::record(store, &key, result) {
                Ok(true) => tracing::debug!("job {id}: result cached"),
                Ok(false) => {}
                Err(e) => tracing::warn!("job {id}: cannot cache the result: {e}"),
            }
        }
        drop(prepared);
        sent?;
        Ok(Flow::Continue)
    }

    /// The job's result-cache key, if the cache is on here (`[server] cache`, a store),
    /// the client allows it (`Job.cache`), the compiler `program` can be probed, and the
    /// job is one to cache ([`cache::Uncacheable`]). Its input must be whole by now.
    async fn cache_key(&self, job: &Job, program: &std::path::Path) -> Option<cache::Key> {
        if !(self.settings.cache && job.cache) {
            return None;
        }
        self.store?;
        let search_path = &self.allow.search_path;
        let compiler = cache::server_compiler(program, self.compilers).await?;
        let max = self.settings.admission.max_job_bytes;
        cache::key(&compiler, search_path, job, max)
            .inspect_err(|why| tracing::debug!("job {}: not cached: {why}", job.id))
            .ok()
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

pub(super) fn unexpected(m: &Message) -> ServeError {
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
        Message::Job3(_) => "Job3",
        Message::Result3(_) => "Result3",
        Message::ListCompilers => "ListCompilers",
        Message::Compilers { .. } => "Compilers",
        Message::Mismatch { .. } => "Mismatch",
        Message::Chunks(_) => "Chunks",
        Message::Missing { .. } => "Missing",
        Message::Stored { .. } => "Stored",
        Message::Identity { .. } => "Identity",
        Message::DeltaChunks(_) => "DeltaChunks",
    };
    ServeError::Unexpected(name.into())
}

/// Turns a finished compile into the job's answer: `Result` with the outputs on success,
/// `Fault` when the compiler was killed (or reports a killed sub-program or an internal
/// error; `ServerError` to a protocol-1 client), `ServerError` when the compiler claimed
/// success without its output or the result cannot fit in one frame.
pub(super) fn result_message(
    id: u64,
    f: exec::Finished,
    prepared: &job::Prepared,
    version: u32,
) -> Message {
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
        cached: false,
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
    result_for(result, version)
}

/// A result as the client's protocol version takes it.
pub(super) fn result_for(result: JobResult, version: u32) -> Message {
    if version >= JOB3_VERSION {
        Message::Result3(result)
    } else {
        Message::Result(result.into())
    }
}

/// Reads an output file if it exists, if it is a regular file of at most `max` bytes
/// (checked before reading, and the read itself stops past `max`).
pub(super) fn read_output(path: &std::path::Path, max: u64) -> std::io::Result<Option<Vec<u8>>> {
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
