//! Server stage, chunked input of one session: chunks that arrive (`Message::Chunks`)
//! go into a [`ChunkStore`]; a job whose input is a recipe (`Input::Chunked`) is rebuilt
//! from it before it is staged, or answered with the ids the store lacks
//! (`Message::Missing`), which the client then sends. A chunk is used only if its bytes
//! hash to its id: a corrupt one is dropped and so is asked for again. Neighbours:
//! `session` (calls [`SessionChunks::receive`] and [`SessionChunks::materialise`] before
//! a job takes a slot), `proto::chunk` (recipes and packs), `subsystem::store` (the
//! per-user store on disk, shared by every session of the user).

use std::collections::{HashMap, VecDeque};

use crate::proto::chunk::{ChunkError, ChunkPack, MAX_RECIPE_CHUNKS};
use crate::proto::chunk_id::ChunkId;

/// Where a session keeps chunks between jobs.
pub trait ChunkStore: Send {
    /// The chunk's bytes, if held and intact (their hash is `id`).
    fn get(&mut self, id: &ChunkId) -> Option<Vec<u8>>;
    /// Keeps a chunk whose bytes hash to `id` (checked by the caller). Best effort: a
    /// store that cannot keep it loses it, and the chunk is asked for again.
    fn put(&mut self, id: &ChunkId, data: &[u8]);
}

/// Bytes a session's own memory store holds when there is no store on disk.
pub const MEMORY_STORE_BYTES: u64 = 64 << 20;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::chunk::Cut;

    #[test]
    fn memory_store_drops_the_oldest_past_its_cap() {
        let mut s = MemoryStore::new(10);
        let (a, b, c) = (ChunkId::of(b"aaaa"), ChunkId::of(b"bbbb"), ChunkId::of(b"cccc"));
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
        let text: Vec<u8> = (0..50_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        let cut = Cut::plain(text);
        let mut pack = ChunkPack::pack(cut.chunks());
        let bad = pack.chunks[0].id;
        pack.chunks[0].id = ChunkId([1; 32]);
        let mut s = SessionChunks::new(Box::new(MemoryStore::new(MEMORY_STORE_BYTES)));
        assert_eq!(s.receive(&pack).unwrap(), cut.recipe.chunks.len() - 1);
        assert!(s.get(&ChunkId([1; 32])).is_none());
        assert!(s.get(&bad).is_none());
        let second = cut.recipe.chunks[1].id;
        assert!(s.get(&second).is_some());
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
