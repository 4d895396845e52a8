//! Server stage, chunked input of one session: chunks that arrive (`Message::Chunks`,
//! or `Message::DeltaChunks` decoded against chunks already held) go into a
//! [`ChunkStore`]; a job whose input is a recipe (`Input::Chunked`) is rebuilt
//! from it before it is staged, or answered with the ids the store lacks
//! (`Message::Missing`), which the client then sends. A chunk is used only if its bytes
//! hash to its id: a corrupt one is dropped and so is asked for again. Neighbours:
//! `session` (calls [`SessionChunks::receive`] and [`SessionChunks::materialise`] before
//! a job takes a slot), `proto::chunk` (recipes and packs), `subsystem::store` (the
//! per-user store on disk, shared by every session of the user).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use super::store::Store;

use crate::proto::chunk::{
    delta, ChunkError, ChunkPack, DeltaPack, Recipe, Unpacked, MAX_RECIPE_CHUNKS,
};
use crate::proto::chunk_id::ChunkId;
use crate::proto::msg::{Blob, ContextFile, Input, Job, CONTEXT_MANIFEST};

/// Where a session keeps chunks between jobs.
pub trait ChunkStore {
    /// The chunk's bytes, if held and intact (their hash is `id`).
    fn get(&self, id: &ChunkId) -> Option<Vec<u8>>;
    /// Keeps a chunk whose bytes hash to `id` (checked by the caller).
    ///
    /// # Errors
    /// The store could not keep it (full disk, a chunk over its cap): a reason.
    fn put(&self, id: &ChunkId, data: &[u8]) -> Result<(), String>;
}

impl ChunkStore for Store {
    fn get(&self, id: &ChunkId) -> Option<Vec<u8>> {
        Store::get(self, id)
    }

    fn put(&self, id: &ChunkId, data: &[u8]) -> Result<(), String> {
        Store::put(self, id, data).map_err(|e| e.to_string())
    }
}

/// A per-session store in memory, oldest chunks dropped first past its cap.
#[derive(Debug)]
pub struct MemoryStore {
    inner: Mutex<Memory>,
    cap: u64,
}

#[derive(Debug, Default)]
struct Memory {
    chunks: HashMap<ChunkId, Vec<u8>>,
    order: VecDeque<ChunkId>,
    bytes: u64,
}

impl MemoryStore {
    /// A store holding at most `cap` bytes.
    pub fn new(cap: u64) -> MemoryStore {
        MemoryStore {
            inner: Mutex::default(),
            cap,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ChunkStore for MemoryStore {
    fn get(&self, id: &ChunkId) -> Option<Vec<u8>> {
        self.lock().chunks.get(id).cloned()
    }

    fn put(&self, id: &ChunkId, data: &[u8]) -> Result<(), String> {
        let len = data.len() as u64;
        if len > self.cap {
            return Err(format!(
                "a chunk of {len} bytes is over the memory store's cap"
            ));
        }
        let mut m = self.lock();
        if m.chunks.contains_key(id) {
            return Ok(());
        }
        while m.bytes + len > self.cap {
            let Some(old) = m.order.pop_front() else {
                break;
            };
            if let Some(d) = m.chunks.remove(&old) {
                m.bytes -= d.len() as u64;
            }
        }
        m.bytes += len;
        m.order.push_back(*id);
        m.chunks.insert(*id, data.to_vec());
        Ok(())
    }
}

/// Most files one context manifest lists (the job's context files are then checked
/// against `max_context_files` like any others).
pub const MAX_MANIFEST_FILES: usize = 1 << 16;

/// Most ids one `Missing` answer names (a job's recipes may name more; the rest are
/// asked for in the next round).
pub const MAX_MISSING_IDS: usize = MAX_RECIPE_CHUNKS;

/// The chunk side of one session: the user's store on disk, shared by all their
/// sessions, when there is one; this session's memory for what the disk store cannot
/// keep (or, without a disk store, one job's worth: `max_job_bytes`).
pub struct SessionChunks<'a> {
    disk: Option<&'a dyn ChunkStore>,
    memory: MemoryStore,
    /// Chunks of the disk store this session read or stored lately, checked: the next
    /// job of the session (the same headers, mostly) reads them without a file open, a
    /// hash and an mtime update each.
    recent: Option<MemoryStore>,
}

/// Bytes of memory a session with a disk store keeps for chunks the disk refused.
const SPILL_BYTES: u64 = 16 << 20;
/// Bytes of the disk store's chunks a session keeps at hand ([`SessionChunks`]'s
/// `recent`): several units' worth of header text, even for C++.
const RECENT_BYTES: u64 = 32 << 20;

impl<'a> SessionChunks<'a> {
    /// Chunks kept in `disk` (if any), else in memory up to `max_job_bytes`.
    pub fn new(disk: Option<&'a dyn ChunkStore>, max_job_bytes: u64) -> SessionChunks<'a> {
        let memory = MemoryStore::new(match disk {
            Some(_) => SPILL_BYTES,
            None => max_job_bytes,
        });
        let recent = disk.map(|_| MemoryStore::new(RECENT_BYTES));
        SessionChunks {
            disk,
            memory,
            recent,
        }
    }

    /// Whether the chunks live in a store shared by the user's sessions (the hello says
    /// `chunk-store`).
    pub fn shared(&self) -> bool {
        self.disk.is_some()
    }

    /// Stores the chunks of a pack the client sent. Chunks whose bytes do not hash to
    /// their id are dropped (and will be reported missing).
    ///
    /// # Errors
    /// The pack breaks a bound or does not decode (a protocol error).
    pub fn receive(&mut self, pack: &ChunkPack) -> Result<Received, ChunkError> {
        let got = pack.unpack()?;
        Ok(self.keep(&got))
    }

    /// Stores the chunks of a delta pack, decoded against the chunks its dictionary
    /// names (read from this session's chunks or the store, each checked by its hash).
    /// When one of those is missing, or the pack does not decode, none of its chunks is
    /// stored: the job then reports them missing, and the client sends them plain.
    ///
    /// # Errors
    /// The pack breaks a bound (a protocol error).
    pub fn receive_delta(&mut self, pack: &DeltaPack) -> Result<Received, ChunkError> {
        pack.check()?;
        let mut parts = Vec::with_capacity(pack.dict.len());
        for id in &pack.dict {
            match self.get(id) {
                Some(data) => parts.push(data),
                None => {
                    tracing::debug!(
                        "delta pack: dictionary chunk {id} is not here; its {} chunk(s) dropped",
                        pack.chunks.len()
                    );
                    return Ok(Received {
                        received: 0,
                        unshared: pack.chunks.iter().map(|c| c.id).collect(),
                    });
                }
            }
        }
        let dict = delta::dictionary(parts.iter().map(Vec::as_slice));
        let got = pack.unpack(&dict)?;
        Ok(self.keep(&got))
    }

    /// Keeps the good chunks of an unpacked pack (on disk, else in memory).
    fn keep(&mut self, got: &Unpacked) -> Received {
        if !got.corrupt.is_empty() {
            tracing::warn!(
                "{} chunk(s) arrived corrupt (bytes do not match the id); dropped",
                got.corrupt.len()
            );
        }
        let mut unshared = got.corrupt.clone();
        for (id, data) in &got.good {
            let kept = match self.disk {
                Some(d) => d.put(id, data).inspect_err(|e| {
                    tracing::warn!("store: cannot keep chunk {id}: {e}; keeping it in memory");
                }),
                None => Err(String::new()),
            };
            if kept.is_ok() {
                // The job that sent it is about to use it.
                self.keep_at_hand(id, data);
            }
            if kept.is_err() {
                unshared.push(*id);
                if let Err(e) = self.memory.put(id, data) {
                    tracing::warn!("chunk {id} not kept: {e}");
                }
            }
        }
        Received {
            received: got.good.len(),
            unshared,
        }
    }

    /// Rebuilds every recipe input of `job` from the store (line markers restored),
    /// leaving whole blobs in their place, within `max_bytes` in all.
    ///
    /// # Errors
    /// [`Materialise::Missing`] with the ids the store lacks (each once, at most
    /// [`MAX_MISSING_IDS`]); [`Materialise::Refused`] for a recipe out of bounds or
    /// input over `max_bytes`.
    pub fn materialise(&mut self, job: &mut Job, max_bytes: u64) -> Result<(), Materialise> {
        self.materialise_inputs(job, max_bytes)?;
        // A manifest, now whole, lists more context files (recipes): they take its place.
        let Some(at) = job.context.iter().position(|f| f.name == CONTEXT_MANIFEST) else {
            return Ok(());
        };
        let manifest = job.context.remove(at);
        let bytes = manifest
            .data
            .unpack(max_bytes)
            .map_err(|e| Materialise::Refused(format!("context manifest: {e}")))?;
        let listed: Vec<ContextFile> = postcard::from_bytes(&bytes)
            .map_err(|e| Materialise::Refused(format!("context manifest: {e}")))?;
        if listed.len() > MAX_MANIFEST_FILES
            || listed
                .iter()
                .any(|f| f.name == CONTEXT_MANIFEST || !matches!(f.data, Input::Chunked(_)))
        {
            return Err(Materialise::Refused(
                "context manifest: too many files, a nested manifest, or a whole blob".into(),
            ));
        }
        job.context.splice(at..at, listed);
        self.materialise_inputs(job, max_bytes)
    }

    /// Every recipe input of `job` made whole (see [`SessionChunks::materialise`]).
    fn materialise_inputs(&mut self, job: &mut Job, max_bytes: u64) -> Result<(), Materialise> {
        let mut missing: Vec<ChunkId> = Vec::new();
        let mut total = 0u64;
        let inputs =
            std::iter::once(&mut job.source).chain(job.context.iter_mut().map(|f| &mut f.data));
        for input in inputs {
            let Input::Chunked(recipe) = input else {
                total = total.saturating_add(input.claimed_len());
                continue;
            };
            recipe
                .check()
                .map_err(|e| Materialise::Refused(e.to_string()))?;
            match self.assemble(recipe) {
                Ok(bytes) => {
                    total = total.saturating_add(bytes.len() as u64);
                    if total > max_bytes {
                        return Err(Materialise::Refused(format!(
                            "the job's input is over {max_bytes} bytes once assembled"
                        )));
                    }
                    *input = Input::Whole(Blob::raw(bytes));
                }
                Err(ChunkError::Missing(ids)) => {
                    for id in ids {
                        if missing.len() < MAX_MISSING_IDS && !missing.contains(&id) {
                            missing.push(id);
                        }
                    }
                }
                Err(e) => return Err(Materialise::Refused(e.to_string())),
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Materialise::Missing(missing))
        }
    }

    fn assemble(&mut self, recipe: &Recipe) -> Result<Vec<u8>, ChunkError> {
        recipe.assemble(|id| self.get(id))
    }

    /// A chunk's bytes, checked against its id.
    /// Keeps a checked chunk of the disk store in `recent` (a chunk over its cap is not
    /// kept: the disk has it).
    fn keep_at_hand(&self, id: &ChunkId, data: &[u8]) {
        if let Some(r) = &self.recent {
            let _ = r.put(id, data);
        }
    }

    /// Memory first (its chunks were checked on the way in), then the disk store.
    pub(super) fn get(&mut self, id: &ChunkId) -> Option<Vec<u8>> {
        let at_hand = || self.recent.as_ref().and_then(|r| r.get(id));
        if let Some(data) = self.memory.get(id).or_else(at_hand) {
            return Some(data);
        }
        let data = self.disk.and_then(|d| d.get(id))?;
        if ChunkId::of(&data) == *id {
            self.keep_at_hand(id, &data);
            Some(data)
        } else {
            tracing::warn!("chunk {id} is corrupt in the store; asking for it again");
            None
        }
    }
}

/// What [`SessionChunks::receive`] did with a pack.
#[derive(Debug, Default)]
pub struct Received {
    /// Chunks whose bytes matched their ids.
    pub received: usize,
    /// Ids not in the shared store now: corrupt ones, and ones only this session's memory
    /// holds (every id, without a disk store).
    pub unshared: Vec<ChunkId>,
}

/// Why a job's recipes could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum Materialise {
    /// The store lacks these chunks: answer `Missing`.
    #[error("{} chunk(s) missing", .0.len())]
    Missing(Vec<ChunkId>),
    /// The recipes are out of bounds: refuse the job.
    #[error("{0}")]
    Refused(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::chunk::Cut;

    #[test]
    fn memory_store_drops_the_oldest_past_its_cap() {
        let s = MemoryStore::new(10);
        let (a, b, c) = (
            ChunkId::of(b"aaaa"),
            ChunkId::of(b"bbbb"),
            ChunkId::of(b"cccc"),
        );
        s.put(&a, b"aaaa").unwrap();
        s.put(&b, b"bbbb").unwrap();
        s.put(&c, b"cccc").unwrap();
        assert_eq!(s.get(&a), None);
        assert_eq!(s.get(&b).as_deref(), Some(&b"bbbb"[..]));
        assert_eq!(s.get(&c).as_deref(), Some(&b"cccc"[..]));
        assert!(s.put(&a, &[0; 11]).is_err(), "larger than the whole cap");
        assert_eq!(s.get(&a), None);
    }

    #[test]
    fn received_chunks_are_kept_and_corrupt_ones_dropped() {
        let text: Vec<u8> = (0..50_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let cut = Cut::plain(text);
        let mut pack = ChunkPack::pack(cut.chunks());
        let bad = pack.chunks[0].id;
        pack.chunks[0].id = ChunkId([1; 32]);
        let mut s = SessionChunks::new(None, 64 << 20);
        let got = s.receive(&pack).unwrap();
        assert_eq!(got.received, cut.recipe.chunks.len() - 1);
        // Without a disk store nothing is shared; the corrupt one is not held at all.
        assert_eq!(got.unshared.len(), got.received + 1);
        assert!(got.unshared.contains(&ChunkId([1; 32])));
        assert!(s.get(&ChunkId([1; 32])).is_none());
        assert!(s.get(&bad).is_none());
        let second = cut.recipe.chunks[1].id;
        assert!(s.get(&second).is_some());
    }

    /// The mux's upload lists the user headers in a manifest; the server puts the files
    /// it lists in its place (asking for what it lacks, the manifest first), and refuses
    /// a manifest inside a manifest.
    #[test]
    fn a_context_manifest_becomes_the_files_it_lists() {
        use crate::mux::upload::{Source, Upload};
        use crate::proto::chunk::Cut;
        use crate::proto::msg::{JobHeader, JobSpec, SourceKind};
        let mut text = b"# 0 \"src/a.c\"\n# 1 \"/w//\"\n".to_vec();
        text.extend((0..4000u32).flat_map(|i| format!("int v{i};\n").into_bytes()));
        let header = JobHeader {
            compiler: "gcc".into(),
            args: vec![],
            assemble_only: false,
            cwd: "/w".into(),
            source_name: "src/a.c".into(),
            output_name: "a.o".into(),
            extra_outputs: vec![],
        };
        let files: Vec<(String, Vec<u8>)> = vec![
            ("src/a.c".into(), b"int a;\n".to_vec()),
            ("src/x.h".into(), b"int x;\n".to_vec()),
            ("src/y.h".into(), vec![b'y'; 30_000]),
        ];
        let spec = JobSpec {
            header: header.clone(),
            distcc_argv: vec![],
            env: vec![],
            context: files.clone(),
            compiler_id: None,
            cache: true,
        };
        let source = Source::Cut(Cut::normalised(&text));
        let mut up = Upload::chunked(&spec, &source);
        let names: Vec<&str> = up.context.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["src/a.c", CONTEXT_MANIFEST]);
        let job = Job {
            id: 1,
            header,
            source_kind: SourceKind::DirectivesOnly,
            source: std::mem::replace(&mut up.source, Input::Whole(Blob::empty())),
            context: std::mem::take(&mut up.context),
            env: vec![],
            compiler_id: None,
            cache: true,
        };
        let mut s = SessionChunks::new(None, 64 << 20);
        let mut known = crate::mux::known::KnownChunks::new(1 << 10);
        // Everything but the manifest's own chunk: it is asked for first.
        let manifest_id = match &job.context[1].data {
            Input::Chunked(r) => r.chunks[0].id,
            other => panic!("{other:?}"),
        };
        let rest: std::collections::HashSet<ChunkId> =
            up.ids().filter(|id| *id != manifest_id).collect();
        let rest: Vec<ChunkId> = rest.into_iter().collect();
        s.receive(&up.pack_ids(&rest).unwrap()).unwrap();
        let mut j = job.clone();
        match s.materialise(&mut j, 1 << 30) {
            Err(Materialise::Missing(ids)) => assert_eq!(ids, [manifest_id]),
            other => panic!("{other:?}"),
        }
        s.receive(&up.pack_unknown(&mut known)).unwrap();
        let mut j = job.clone();
        s.materialise(&mut j, 1 << 30).unwrap();
        let got: Vec<(String, Vec<u8>)> = j
            .context
            .iter()
            .map(|f| (f.name.clone(), f.data.unpack(1 << 30).unwrap()))
            .collect();
        assert_eq!(got, files);
        // A manifest that lists a manifest is refused.
        let inner = vec![ContextFile {
            name: CONTEXT_MANIFEST.into(),
            data: Input::Chunked(Cut::plain(b"x".to_vec()).recipe),
        }];
        let bytes = postcard::to_allocvec(&inner).unwrap();
        let outer = Cut::plain(bytes);
        s.receive(&ChunkPack::pack(outer.chunks())).unwrap();
        let mut j = job;
        j.context = vec![ContextFile {
            name: CONTEXT_MANIFEST.into(),
            data: Input::Chunked(outer.recipe.clone()),
        }];
        assert!(matches!(
            s.materialise(&mut j, 1 << 30),
            Err(Materialise::Refused(_))
        ));
    }

    #[test]
    fn a_job_is_assembled_or_told_what_is_missing() {
        use crate::proto::chunk::Cut;
        use crate::proto::msg::{ContextFile, JobHeader, SourceKind};
        let mut text = b"# 0 \"a.c\"\n# 1 \"/w//\"\n".to_vec();
        text.extend((0..4000u32).flat_map(|i| format!("int v{i};\n").into_bytes()));
        let source = Cut::normalised(&text);
        let ctx = Cut::plain(b"int a;\n".to_vec());
        let job = Job {
            id: 3,
            header: JobHeader {
                compiler: "gcc".into(),
                args: vec![],
                assemble_only: false,
                cwd: "/w".into(),
                source_name: "a.c".into(),
                output_name: "a.o".into(),
                extra_outputs: vec![],
            },
            source_kind: SourceKind::DirectivesOnly,
            source: Input::Chunked(source.recipe.clone()),
            context: vec![ContextFile {
                name: "a.c".into(),
                data: Input::Chunked(ctx.recipe.clone()),
            }],
            env: vec![],
            compiler_id: None,
            cache: true,
        };
        let mut s = SessionChunks::new(None, 64 << 20);
        // Everything but the source's first chunk and the context file.
        let held = ChunkPack::pack(source.chunks().skip(1));
        s.receive(&held).unwrap();
        let mut j = job.clone();
        match s.materialise(&mut j, 1 << 30) {
            Err(Materialise::Missing(ids)) => {
                assert_eq!(
                    ids,
                    vec![source.recipe.chunks[0].id, ctx.recipe.chunks[0].id]
                )
            }
            other => panic!("{other:?}"),
        }
        s.receive(&ChunkPack::pack(
            source.chunks().take(1).chain(ctx.chunks()),
        ))
        .unwrap();
        let mut j = job.clone();
        s.materialise(&mut j, 1 << 30).unwrap();
        assert_eq!(j.source.unpack(1 << 30).unwrap(), text, "markers restored");
        assert_eq!(j.context[0].data.unpack(1 << 30).unwrap(), b"int a;\n");
        let mut j = job.clone();
        assert!(matches!(
            s.materialise(&mut j, 100),
            Err(Materialise::Refused(_))
        ));
        let mut j = job;
        if let Input::Chunked(r) = &mut j.source {
            r.len += 1;
        }
        assert!(matches!(
            s.materialise(&mut j, 1 << 30),
            Err(Materialise::Refused(_))
        ));
    }

    #[test]
    fn a_delta_pack_is_stored_when_its_dictionary_is_here_and_dropped_when_not() {
        use crate::proto::chunk::{delta, Cut};
        let old: Vec<u8> = (0..6000u32)
            .flat_map(|i| format!("int v{i} = {};\n", i % 13).into_bytes())
            .collect();
        let mut new = old.clone();
        new.extend_from_slice(b"int edited = 1;\n");
        let (old, new) = (Cut::plain(old), Cut::plain(new));
        let held: Vec<ChunkId> = old.recipe.chunks.iter().map(|c| c.id).collect();
        let old_chunks: Vec<_> = old.chunks().collect();
        let lens: Vec<u32> = old_chunks.iter().map(|(c, _)| c.len).collect();
        let dict: Vec<(ChunkId, &[u8])> = old_chunks[delta::window_start(&lens)..]
            .iter()
            .map(|(c, b)| (c.id, *b))
            .collect();
        let pack = DeltaPack::pack(new.chunks().filter(|(c, _)| !held.contains(&c.id)), &dict);
        assert!(!pack.chunks.is_empty());

        // Without the dictionary's chunks: nothing stored, so the job reports them missing.
        let mut s = SessionChunks::new(None, 64 << 20);
        let got = s.receive_delta(&pack).unwrap();
        assert_eq!(got.received, 0);
        assert_eq!(got.unshared.len(), pack.chunks.len(), "none held");
        assert!(pack.chunks.iter().all(|c| s.get(&c.id).is_none()));

        // With them (sent plain earlier): every chunk, checked by its id.
        s.receive(&ChunkPack::pack(old.chunks())).unwrap();
        assert_eq!(s.receive_delta(&pack).unwrap().received, pack.chunks.len());
        let rebuilt = new.recipe.assemble(|id| s.get(id)).unwrap();
        assert_eq!(rebuilt, new.bytes);

        // A bound broken is a protocol error.
        let mut bad = pack.clone();
        bad.dict = vec![ChunkId([0; 32]); delta::MAX_DICT_IDS + 1];
        assert!(s.receive_delta(&bad).is_err());
    }

    /// A store that hands back bytes other than the ones put.
    struct Rotten;
    impl ChunkStore for Rotten {
        fn get(&self, _: &ChunkId) -> Option<Vec<u8>> {
            Some(b"rotten".to_vec())
        }
        fn put(&self, _: &ChunkId, _: &[u8]) -> Result<(), String> {
            Err("full".into())
        }
    }

    /// A disk store that counts its reads.
    struct Counting {
        inner: MemoryStore,
        reads: std::sync::atomic::AtomicUsize,
    }
    impl ChunkStore for Counting {
        fn get(&self, id: &ChunkId) -> Option<Vec<u8>> {
            self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.inner.get(id)
        }
        fn put(&self, id: &ChunkId, data: &[u8]) -> Result<(), String> {
            self.inner.put(id, data)
        }
    }

    #[test]
    fn a_session_reads_a_stored_chunk_from_disk_once() {
        let disk = Counting {
            inner: MemoryStore::new(1 << 20),
            reads: Default::default(),
        };
        let (old, new) = (b"stored by another session".to_vec(), b"sent now".to_vec());
        disk.put(&ChunkId::of(&old), &old).unwrap();
        let mut s = SessionChunks::new(Some(&disk), 1 << 20);
        let reads = || disk.reads.load(std::sync::atomic::Ordering::SeqCst);
        for _ in 0..3 {
            assert_eq!(s.get(&ChunkId::of(&old)).as_deref(), Some(&old[..]));
        }
        assert_eq!(reads(), 1, "later jobs of the session use the checked copy");
        // A chunk that arrives is at hand for the job that sent it.
        let got = s.receive(&ChunkPack::pack([(
            crate::proto::chunk::ChunkRef {
                id: ChunkId::of(&new),
                len: new.len() as u32,
            },
            &new[..],
        )]));
        assert_eq!(got.unwrap().received, 1);
        assert_eq!(s.get(&ChunkId::of(&new)).as_deref(), Some(&new[..]));
        assert_eq!(reads(), 1);
        assert_eq!(disk.inner.get(&ChunkId::of(&new)), Some(new), "and on disk");
        // What the disk lacks is still missing.
        assert!(s.get(&ChunkId::of(b"nowhere")).is_none());
    }

    #[test]
    fn a_corrupt_stored_chunk_is_not_used() {
        let rotten = Rotten;
        let mut s = SessionChunks::new(Some(&rotten), 1 << 20);
        assert!(s.shared());
        assert!(s.get(&ChunkId::of(b"fresh")).is_none());
        assert!(s.get(&ChunkId::of(b"rotten")).is_some());
    }
}
