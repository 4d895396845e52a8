//! Stage: the chunks a host was recently sent, per source, kept so that the next job of
//! the same source can send its new chunks LZ4'd against them (a delta pack,
//! `proto::chunk::delta`): after a one-line edit a changed chunk then costs about the
//! line. Per source (the job's working directory and source name) the memory keeps the
//! last chunks that went in that source's last job's pack, no more than one dictionary
//! window of them; the whole is bounded in bytes, least recently used sources dropped
//! first. Wrong memory (a chunk the server has since evicted) costs one round trip: the
//! server reports the pack's chunks missing and they go again, plain. Neighbours:
//! `mux::upload` (packs against it, and feeds it once a job ran), `mux::known` (which
//! chunks the host holds, kept beside it in `upload::HostChunks`), `mux::lru` (the
//! bounded map it keeps them in).

use super::lru::CostLru;
use crate::proto::chunk::delta;
use crate::proto::chunk_id::ChunkId;

/// Bytes of chunk text a mux keeps per host by default.
pub const DEFAULT_RECENT_BYTES: usize = 32 << 20;
/// What an entry costs beyond its chunks' bytes (the id and bookkeeping per chunk).
const PER_CHUNK_COST: usize = 64;

/// `HOARDCC_CHUNK_DELTA=0` (read once by the mux, or by the wrapper on the direct path)
/// turns delta packs off: every pack goes plain.
pub const DELTA_ENV: &str = "HOARDCC_CHUNK_DELTA";

/// Whether delta packs are on for this process ([`DELTA_ENV`] is not `0`).
pub fn delta_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var(DELTA_ENV).map_or(true, |v| v.trim() != "0"))
}

/// Which source a job compiles: its working directory and source name, as the job
/// header gives them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceKey {
    pub cwd: String,
    pub source_name: String,
}

/// The chunks kept for one source, in the order they went (the dictionary's order).
type Dictionary = Vec<(ChunkId, Vec<u8>)>;

/// Recently sent chunks per source, at most `cap` bytes in all.
#[derive(Debug)]
pub struct RecentChunks {
    sources: CostLru<SourceKey, Dictionary>,
}

impl Default for RecentChunks {
    fn default() -> Self {
        RecentChunks::new(DEFAULT_RECENT_BYTES)
    }
}

impl RecentChunks {
    /// A memory of at most `cap` bytes.
    pub fn new(cap: usize) -> RecentChunks {
        RecentChunks {
            sources: CostLru::new(cap),
        }
    }

    /// `key`'s job sent `chunks` (in pack order) and ran: the last of them, one
    /// dictionary window's worth, replace what was kept for `key`. Nothing sent keeps
    /// the old entry (the chunks it names were current, and are still held).
    pub fn remember<'a>(
        &mut self,
        key: &SourceKey,
        chunks: impl IntoIterator<Item = (ChunkId, &'a [u8])>,
    ) {
        let chunks: Vec<(ChunkId, &[u8])> = chunks.into_iter().collect();
        if chunks.is_empty() {
            return;
        }
        let lens: Vec<u32> = chunks.iter().map(|(_, b)| b.len() as u32).collect();
        let kept: Dictionary = chunks[delta::window_start(&lens)..]
            .iter()
            .map(|(id, b)| (*id, b.to_vec()))
            .collect();
        let cost = key.cwd.len()
            + key.source_name.len()
            + kept
                .iter()
                .map(|(_, b)| b.len() + PER_CHUNK_COST)
                .sum::<usize>();
        self.sources.insert(key.clone(), kept, cost, |_, _| {});
    }

    /// [`RecentChunks::dictionary`] of `key`, or for a source not kept, that of the
    /// source used last: another unit's text is much like this one's (the same headers,
    /// in other variants, and the same kind of code), so a first build's packs shrink too.
    pub fn dictionary_or_latest(&mut self, key: &SourceKey) -> Option<&[(ChunkId, Vec<u8>)]> {
        let key = if self.sources.contains(key) {
            key.clone()
        } else {
            self.sources.newest()?.clone()
        };
        self.dictionary(&key)
    }

    /// The chunks kept for `key` (ids and bytes, in order), marked as recently used.
    pub fn dictionary(&mut self, key: &SourceKey) -> Option<&[(ChunkId, Vec<u8>)]> {
        self.sources.get(key).map(Vec::as_slice)
    }

    /// Drops what was kept for `key` (a new pack for `key` replaces it on its own).
    #[cfg(test)]
    pub fn forget(&mut self, key: &SourceKey) {
        self.sources.remove(key);
    }

    /// Bytes counted against the cap.
    pub fn cost(&self) -> usize {
        self.sources.cost()
    }

    /// Sources kept.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> SourceKey {
        SourceKey {
            cwd: "/p".into(),
            source_name: format!("u{n}.c"),
        }
    }

    fn chunk(n: u32, len: usize) -> (ChunkId, Vec<u8>) {
        let data = vec![n as u8; len];
        (ChunkId::of(&data), data)
    }

    fn remember(r: &mut RecentChunks, k: &SourceKey, chunks: &[(ChunkId, Vec<u8>)]) {
        r.remember(k, chunks.iter().map(|(id, b)| (*id, b.as_slice())));
    }

    #[test]
    fn keeps_the_last_window_of_a_sources_last_pack() {
        let mut r = RecentChunks::default();
        let big: Vec<_> = (0..6).map(|n| chunk(n, 20 << 10)).collect();
        remember(&mut r, &key(0), &big);
        let ids: Vec<ChunkId> = r.dictionary(&key(0)).unwrap().iter().map(|c| c.0).collect();
        assert_eq!(ids, big[2..].iter().map(|c| c.0).collect::<Vec<_>>());
        // An empty pack keeps the entry; a new one replaces it.
        r.remember(&key(0), std::iter::empty());
        assert_eq!(r.dictionary(&key(0)).unwrap().len(), 4);
        remember(&mut r, &key(0), &[chunk(9, 100)]);
        assert_eq!(r.dictionary(&key(0)).unwrap(), &[chunk(9, 100)][..]);
        assert_eq!(r.len(), 1);
        r.forget(&key(0));
        assert!(r.is_empty() && r.cost() == 0);
        assert!(r.dictionary(&key(1)).is_none());
    }

    #[test]
    fn stays_within_its_cap_dropping_the_least_recently_used() {
        let mut r = RecentChunks::new(10_000);
        for n in 0..3 {
            remember(&mut r, &key(n), &[chunk(n, 2000)]);
        }
        // Using source 0 makes source 1 the oldest.
        assert!(r.dictionary(&key(0)).is_some());
        for n in 3..5 {
            remember(&mut r, &key(n), &[chunk(n, 2000)]);
        }
        assert!(r.cost() <= 10_000, "{}", r.cost());
        assert!(
            r.dictionary(&key(1)).is_none(),
            "the least recently used went"
        );
        assert!(r.dictionary(&key(0)).is_some());
        assert!(r.dictionary(&key(4)).is_some());
        remember(&mut r, &key(7), &[chunk(7, 20_000)]);
        assert!(r.dictionary(&key(7)).is_none(), "larger than the whole cap");
        assert!(r.cost() <= 10_000);
    }

    #[test]
    fn a_new_source_is_packed_against_the_source_used_last() {
        let mut r = RecentChunks::default();
        assert!(r.dictionary_or_latest(&key(0)).is_none(), "nothing kept");
        remember(&mut r, &key(0), &[chunk(0, 100)]);
        remember(&mut r, &key(1), &[chunk(1, 100)]);
        assert_eq!(
            r.dictionary_or_latest(&key(5)).unwrap(),
            &[chunk(1, 100)][..]
        );
        assert!(r.dictionary(&key(0)).is_some());
        assert_eq!(
            r.dictionary_or_latest(&key(6)).unwrap(),
            &[chunk(0, 100)][..],
            "the one used last, not the one sent last"
        );
        assert_eq!(
            r.dictionary_or_latest(&key(1)).unwrap(),
            &[chunk(1, 100)][..],
            "its own first"
        );
        assert!(
            r.dictionary(&key(5)).is_none(),
            "nothing kept for 5 by asking"
        );
    }
}
