//! Stage: which chunks a host is known to hold, as the mux learns it — from the chunks a
//! job sent and the server acknowledged with its result — so that a job sends only the
//! chunks its host lacks. Bounded: a two-generation set (an approximate LRU) of at most
//! `cap` ids. Wrong knowledge costs one round trip (the server answers `Missing`, the ids
//! are forgotten and sent), never a wrong object. Neighbours: `mux::lane` (consults and
//! teaches it per job), `mux::listener` (one per host, shared by its lanes).

use std::collections::HashSet;

use crate::proto::chunk_id::ChunkId;

/// Ids a mux keeps per host by default: 64 Ki chunks, about 700 MiB of text at the
/// ~11 KiB chunks FastCDC cuts (a server's store holds 1 GiB by default), in a few MB.
pub const DEFAULT_KNOWN_IDS: usize = 64 << 10;

/// A bounded set of chunk ids, the recently used ones kept.
#[derive(Debug)]
pub struct KnownChunks {
    /// Ids learned or used since the last rotation.
    current: HashSet<ChunkId>,
    /// The generation before; an id used again moves back to `current`.
    previous: HashSet<ChunkId>,
    /// Ids per generation (`cap / 2`).
    generation: usize,
}

impl Default for KnownChunks {
    fn default() -> Self {
        KnownChunks::new(DEFAULT_KNOWN_IDS)
    }
}

impl KnownChunks {
    /// A set that holds at most `cap` ids (at least 2).
    pub fn new(cap: usize) -> KnownChunks {
        KnownChunks {
            current: HashSet::new(),
            previous: HashSet::new(),
            generation: (cap / 2).max(1),
        }
    }

    /// Whether the host is believed to hold `id`; a hit keeps it among the recent.
    pub fn holds(&mut self, id: &ChunkId) -> bool {
        if self.current.contains(id) {
            return true;
        }
        if self.previous.remove(id) {
            self.insert(*id);
            return true;
        }
        false
    }

    /// The host holds these (it acknowledged a job that used them).
    pub fn learn(&mut self, ids: impl IntoIterator<Item = ChunkId>) {
        for id in ids {
            if !self.current.contains(&id) {
                self.previous.remove(&id);
                self.insert(id);
            }
        }
    }

    /// The host said it lacks these.
    pub fn forget(&mut self, ids: &[ChunkId]) {
        for id in ids {
            self.current.remove(id);
            self.previous.remove(id);
        }
    }

    /// How many ids are held.
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert(&mut self, id: ChunkId) {
        if self.current.len() >= self.generation {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> ChunkId {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&n.to_le_bytes());
        ChunkId(b)
    }

    #[test]
    fn learns_forgets_and_stays_bounded() {
        let mut k = KnownChunks::new(100);
        k.learn((0..10).map(id));
        assert!((0..10).all(|n| k.holds(&id(n))));
        assert!(!k.holds(&id(10)));
        k.forget(&[id(3)]);
        assert!(!k.holds(&id(3)));
        k.learn((0..1000).map(id));
        assert!(k.len() <= 100, "{} ids", k.len());
        assert!(k.holds(&id(999)), "the newest are kept");
        assert!(!k.holds(&id(0)), "the oldest are not");
    }

    #[test]
    fn a_used_id_survives_rotation() {
        let mut k = KnownChunks::new(10);
        k.learn([id(0)]);
        for n in 1..100 {
            k.learn([id(n)]);
            assert!(
                k.holds(&id(0)),
                "used after every insert, so kept (n = {n})"
            );
        }
    }
}
