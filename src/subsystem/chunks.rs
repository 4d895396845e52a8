//! Server stage, chunked input of one session: chunks that arrive (`Message::Chunks`)
//! go into a [`ChunkStore`]; a job whose input is a recipe (`Input::Chunked`) is rebuilt
//! from it before it is staged, or answered with the ids the store lacks
//! (`Message::Missing`), which the client then sends. A chunk is used only if its bytes
//! hash to its id: a corrupt one is dropped and so is asked for again. Neighbours:
//! `session` (calls [`SessionChunks::receive`] and [`SessionChunks::materialise`] before
//! a job takes a slot), `proto::chunk` (recipes and packs), `subsystem::store` (the
//! per-user store on disk, shared by every session of the user).

use std::collections::{HashMap, VecDeque};

use crate::proto::chunk::{ChunkError, ChunkPack, Recipe, MAX_RECIPE_CHUNKS};
use crate::proto::chunk_id::ChunkId;
use crate::proto::msg::{Blob, Input, Job};

/// Where a session keeps chunks between jobs.
pub trait ChunkStore: Send {
    /// The chunk's bytes, if held and intact (their hash is `id`).
    fn get(&mut self, id: &ChunkId) -> Option<Vec<u8>>;
    /// Keeps a chunk whose bytes hash to `id` (checked by the caller). Best effort: a
    /// store that cannot keep it loses it, and the chunk is asked for again.
    fn put(&mut self, id: &ChunkId, data: &[u8]);
}

/// A per-session store in memory, oldest chunks dropped first past its cap.
#[derive(Debug)]
pub struct MemoryStore {
    chunks: HashMap<ChunkId, Vec<u8>>,
    order: VecDeque<ChunkId>,
    bytes: u64,
    cap: u64,
}

impl MemoryStore {
    /// A store holding at most `cap` bytes.
    pub fn new(cap: u64) -> MemoryStore {
        MemoryStore {
            chunks: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            cap,
        }
    }
}

impl ChunkStore for MemoryStore {
    fn get(&mut self, id: &ChunkId) -> Option<Vec<u8>> {
        self.chunks.get(id).cloned()
    }

    fn put(&mut self, id: &ChunkId, data: &[u8]) {
        if self.chunks.contains_key(id) || data.len() as u64 > self.cap {
            return;
        }
        while self.bytes + data.len() as u64 > self.cap {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(d) = self.chunks.remove(&old) {
                self.bytes -= d.len() as u64;
            }
        }
        self.bytes += data.len() as u64;
        self.order.push_back(*id);
        self.chunks.insert(*id, data.to_vec());
    }
}

/// The chunk store of one session, and whether it is shared by the user's sessions
/// (announced as `chunk-store`). Until the store on disk is here, a session keeps its
/// chunks in memory, one job's worth (`max_job_bytes`).
pub fn open_store(settings: &crate::config::ServerSettings) -> (Box<dyn ChunkStore>, bool) {
    (
        Box::new(MemoryStore::new(settings.admission.max_job_bytes)),
        false,
    )
}

/// Most ids one `Missing` answer names (a job's recipes may name more; the rest are
/// asked for in the next round).
pub const MAX_MISSING_IDS: usize = MAX_RECIPE_CHUNKS;

/// The chunk side of one session.
pub struct SessionChunks {
    store: Box<dyn ChunkStore>,
}

impl SessionChunks {
    /// Chunks kept in `store`.
    pub fn new(store: Box<dyn ChunkStore>) -> SessionChunks {
        SessionChunks { store }
    }

    /// Stores the chunks of a pack the client sent. Chunks whose bytes do not hash to
    /// their id are dropped (and will be reported missing).
    ///
    /// # Errors
    /// The pack breaks a bound or does not decode (a protocol error).
    pub fn receive(&mut self, pack: &ChunkPack) -> Result<usize, ChunkError> {
        let got = pack.unpack()?;
        if !got.corrupt.is_empty() {
            tracing::warn!(
                "{} chunk(s) arrived corrupt (bytes do not match the id); dropped",
                got.corrupt.len()
            );
        }
        for (id, data) in &got.good {
            self.store.put(id, data);
        }
        Ok(got.good.len())
    }

    /// Rebuilds every recipe input of `job` from the store (line markers restored),
    /// leaving whole blobs in their place, within `max_bytes` in all.
    ///
    /// # Errors
    /// [`Materialise::Missing`] with the ids the store lacks (each once, at most
    /// [`MAX_MISSING_IDS`]); [`Materialise::Refused`] for a recipe out of bounds or
    /// input over `max_bytes`.
    pub fn materialise(&mut self, job: &mut Job, max_bytes: u64) -> Result<(), Materialise> {
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
    pub(super) fn get(&mut self, id: &ChunkId) -> Option<Vec<u8>> {
        let data = self.store.get(id)?;
        if ChunkId::of(&data) == *id {
            Some(data)
        } else {
            tracing::warn!("chunk {id} is corrupt in the store; asking for it again");
            None
        }
    }
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
        let mut s = MemoryStore::new(10);
        let (a, b, c) = (
            ChunkId::of(b"aaaa"),
            ChunkId::of(b"bbbb"),
            ChunkId::of(b"cccc"),
        );
        s.put(&a, b"aaaa");
        s.put(&b, b"bbbb");
        s.put(&c, b"cccc");
        assert_eq!(s.get(&a), None);
        assert_eq!(s.get(&b).as_deref(), Some(&b"bbbb"[..]));
        assert_eq!(s.get(&c).as_deref(), Some(&b"cccc"[..]));
        s.put(&a, &[0; 11]);
        assert_eq!(s.get(&a), None, "larger than the whole cap");
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
        let mut s = SessionChunks::new(Box::new(MemoryStore::new(64 << 20)));
        assert_eq!(s.receive(&pack).unwrap(), cut.recipe.chunks.len() - 1);
        assert!(s.get(&ChunkId([1; 32])).is_none());
        assert!(s.get(&bad).is_none());
        let second = cut.recipe.chunks[1].id;
        assert!(s.get(&second).is_some());
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
        let mut s = SessionChunks::new(Box::new(MemoryStore::new(64 << 20)));
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

    /// A store that hands back bytes other than the ones put.
    struct Rotten;
    impl ChunkStore for Rotten {
        fn get(&mut self, _: &ChunkId) -> Option<Vec<u8>> {
            Some(b"rotten".to_vec())
        }
        fn put(&mut self, _: &ChunkId, _: &[u8]) {}
    }

    #[test]
    fn a_corrupt_stored_chunk_is_not_used() {
        let mut s = SessionChunks::new(Box::new(Rotten));
        assert!(s.get(&ChunkId::of(b"fresh")).is_none());
        assert!(s.get(&ChunkId::of(b"rotten")).is_some());
    }
}
