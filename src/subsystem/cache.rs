//! Server stage, the result cache of `hoardcc serve`: a job that matches an earlier clean
//! compile is answered from the store (`subsystem::store`, whose directory and size cap
//! it shares with the chunks) without a slot or a compile, in the same single round
//! trip, with `JobResult.cached` set. Neighbours: `subsystem::session` (looks up after
//! admission, before the slot; records after a compile), `subsystem::store`,
//! `proto::msg` (`Job`, `JobResult`).
//!
//! **The key** is blake3 (in its key-derivation mode, under this format's context
//! string) over a postcard encoding of everything the result depends on:
//! - this server's compiler: its path as run and resolved, its size and mtime, and what
//!   it prints for `-dumpfullversion` (else `-dumpversion`), `-dumpmachine` and `-v`
//!   (its configuration lines) ([`ServerCompiler`], from the compiler-identity probe,
//!   `identity::probe`, once per process per path, size and mtime);
//! - this build of hoardcc (it decides how the job is staged and which flags are added);
//! - the job's header (compiler name, arguments, `-c`/`-S`, working directory, source
//!   and output names, extra-output names) and its source kind;
//! - the environment the compiler gets: the server's `PATH` and the client's locale
//!   variables (as sent);
//! - the input, all of it: the source and every context file by name, hashed as
//!   decoded, so the same text keys the same however it travelled (one blob or chunks,
//!   compressed or not).
//!
//! A source that names `__DATE__`, `__TIME__` or `__TIMESTAMP__` (directives-only text
//! keeps macros unexpanded) is never cached: its object holds the moment of its compile.
//!
//! **What is stored**: results of a compile that exited 0 (with its warnings), only.
//! A compiler's own error is not cached: it is usually fixed and rebuilt with other
//! input anyway, and a non-zero exit can come from the server's state rather than the
//! input (a full disk for the compiler's temporaries, a memory limit the compiler
//! reports as an error): a fault must never be replayed. Faults, timeouts and server
//! errors never reach the cache at all.
//!
//! **Off switches**: `[server] cache = false`, and a job with `cache == false` (the
//! client's `HOARDCC_CACHE=0`, and every protocol-2 job) neither reads nor writes it.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use memchr::memmem;
use serde::{Deserialize, Serialize};

use super::store::{Store, StoreError};
use crate::proto::msg::{Blob, Input, Job, JobHeader, JobResult, OutputFile, SourceKind};

/// The context string of the key derivation: changing what a key covers, or how an
/// entry is encoded, changes this, so old entries simply stop matching.
const KEY_CONTEXT: &str = "hoardcc 2026-12 result cache key v1";
/// A result larger than this share of the cap is not stored (one huge object would
/// evict everything else).
const MAX_SHARE_OF_CAP: u64 = 8;

/// Macros whose value is the time of the compile (or of the staged file): a source that
/// names one is compiled every time.
const TIME_MACROS: [&str; 3] = ["__DATE__", "__TIME__", "__TIMESTAMP__"];

/// A result-cache key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(pub [u8; 32]);

/// Why a job has no key (it is compiled, and its result not stored).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Uncacheable {
    /// The source names a macro that expands to the time of the compile.
    #[error("the source uses {0}")]
    TimeMacro(&'static str),
    /// The input does not decode within the job limit (staging will say so properly).
    #[error("the input does not decode: {0}")]
    Input(String),
}

/// The compiler `hoardcc serve` would run, as far as its output depends on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerCompiler {
    /// The executable as it is run (its argv\[0\]: a clang symlink takes its target from
    /// its name).
    pub invoked: PathBuf,
    /// The executable, with every symlink resolved (`gcc` → `gcc-12` → `x86_64-linux-gnu-gcc-12`).
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its mtime, seconds and nanoseconds.
    pub mtime: (i64, i64),
    /// Its `-dumpfullversion` (or `-dumpversion`) output, trimmed.
    pub version: String,
    /// Its `-dumpmachine` output, trimmed.
    pub machine: String,
    /// The configuration lines of its `-v` (`Configured with:`, `Thread model:`).
    pub configured: String,
}

/// What the key covers (module docs); encoded with postcard, which is canonical for a
/// given value (fixed field order, length-prefixed strings and lists).
#[derive(Serialize)]
struct KeyMaterial<'a> {
    hoardcc: &'a str,
    compiler: &'a ServerCompiler,
    header: &'a JobHeader,
    source_kind: SourceKind,
    search_path: &'a [u8],
    env: &'a [(String, String)],
    source: [u8; 32],
    context: Vec<(&'a str, [u8; 32])>,
}

/// A stored result, without the job id (postcard, in a keyed store entry).
#[derive(Deserialize)]
struct Entry {
    exit_code: i32,
    stdout: Blob,
    stderr: Blob,
    outputs: Vec<OutputFile>,
}

/// [`Entry`] borrowed from a result, for writing (the same encoding).
#[derive(Serialize)]
struct EntryRef<'a> {
    exit_code: i32,
    stdout: &'a Blob,
    stderr: &'a Blob,
    outputs: &'a [OutputFile],
}

/// The first time macro `source` names, if any.
pub fn time_macro(source: &[u8]) -> Option<&'static str> {
    TIME_MACROS
        .into_iter()
        .find(|m| memmem::find(source, m.as_bytes()).is_some())
}

/// The key of `job` compiled by `compiler` with the server's `search_path` as `PATH`,
/// decoding its input within `max_input` bytes in all. Pure: everything it covers is an
/// argument.
///
/// # Errors
/// [`Uncacheable`]: the source uses a time macro, or the input does not decode.
pub fn key(
    compiler: &ServerCompiler,
    search_path: &OsStr,
    job: &Job,
    max_input: u64,
) -> Result<Key, Uncacheable> {
    let mut budget = max_input;
    let mut digest = |input: &Input| {
        let data = input
            .unpack(budget)
            .map_err(|e| Uncacheable::Input(e.to_string()))?;
        budget = budget.saturating_sub(data.len() as u64);
        Ok::<_, Uncacheable>((*blake3::hash(&data).as_bytes(), data))
    };
    let (source, text) = digest(&job.source)?;
    if let Some(m) = time_macro(&text) {
        return Err(Uncacheable::TimeMacro(m));
    }
    drop(text);
    let mut context = Vec::with_capacity(job.context.len());
    for f in &job.context {
        context.push((f.name.as_str(), digest(&f.data)?.0));
    }
    let material = KeyMaterial {
        hoardcc: env!("CARGO_PKG_VERSION"),
        compiler,
        header: &job.header,
        source_kind: job.source_kind,
        search_path: search_path.as_bytes(),
        env: &job.env,
        source,
        context,
    };
    let bytes = postcard::to_allocvec(&material).expect("key material encodes");
    let mut h = blake3::Hasher::new_derive_key(KEY_CONTEXT);
    h.update(&bytes);
    Ok(Key(*h.finalize().as_bytes()))
}

/// The answer to job `id` stored under `key`, if any (marked `cached`). An entry that
/// does not decode is treated as missing.
pub fn lookup(store: &Store, key: &Key, id: u64) -> Option<JobResult> {
    let bytes = store.get_keyed(&key.0)?;
    match postcard::from_bytes::<Entry>(&bytes) {
        Ok(e) => Some(JobResult {
            id,
            exit_code: e.exit_code,
            stdout: e.stdout,
            stderr: e.stderr,
            outputs: e.outputs,
            cached: true,
        }),
        Err(err) => {
            tracing::warn!("result cache: undecodable entry: {err}");
            None
        }
    }
}

/// Stores `result` under `key` if it is one to keep: exit 0, and no larger than an
/// eighth of the store's cap. Returns whether it was stored.
///
/// # Errors
/// The store's write error (the caller logs it; the job's answer is unaffected).
pub fn record(store: &Store, key: &Key, result: &JobResult) -> Result<bool, StoreError> {
    if result.exit_code != 0 || result.cached {
        return Ok(false);
    }
    let entry = EntryRef {
        exit_code: result.exit_code,
        stdout: &result.stdout,
        stderr: &result.stderr,
        outputs: &result.outputs,
    };
    let bytes = postcard::to_allocvec(&entry).expect("an entry encodes");
    if bytes.len() as u64 > store.cap() / MAX_SHARE_OF_CAP {
        return Ok(false);
    }
    store.put_keyed(&key.0, &bytes)?;
    Ok(true)
}

/// The identity of the compiler at `program` for a key: the session's identity of it
/// ([`Compilers::identity`](super::compilers::Compilers::identity), probed once per
/// path, size and mtime, and shared with picking the job's compiler), with its resolved
/// path, size and mtime. `None` if it cannot be probed: the job then runs without the
/// cache.
pub async fn server_compiler(
    program: &Path,
    compilers: &super::compilers::Compilers,
) -> Option<ServerCompiler> {
    let resolved = std::fs::canonicalize(program).ok()?;
    let meta = std::fs::metadata(&resolved).ok()?;
    let id = compilers
        .identity(program)
        .await
        .inspect_err(|e| {
            tracing::warn!(
                "result cache: cannot probe {}, so no caching with it: {e}",
                program.display()
            )
        })
        .ok()?;
    Some(ServerCompiler {
        invoked: program.to_path_buf(),
        path: resolved,
        size: meta.len(),
        mtime: (meta.mtime(), meta.mtime_nsec()),
        version: id.version,
        machine: id.target,
        configured: id.configured,
    })
}

#[cfg(test)]
mod tests;
