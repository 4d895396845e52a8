//! Stage: resemblance detection for delta packs. Per host the mux keeps the bytes of
//! chunks it sent (bounded in bytes, least recently used dropped first), indexed by a few
//! features each, so that a new chunk can be LZ4'd against the held chunk most like it
//! (`proto::chunk::delta`), whichever source sent that one: the same header in another
//! variant (one macro more, one line marker less) then costs its differences, not its
//! text. A feature is the maximum, over the chunk, of one of [`FEATURES`] cheap
//! transforms of a gear rolling hash (a 64-byte window); two chunks that share most of
//! their text share most of their features, unrelated texts almost none. A lookup counts,
//! per candidate, the features it shares with the new chunk, and the best go first.
//! Chunks are kept as they are sent; only those the host is known to hold may serve
//! (the caller checks), so a chunk whose pack was never acknowledged is never a
//! dictionary. Neighbours: `mux::upload` (looks up, packs, indexes what it sends, in
//! `upload::HostChunks` beside `mux::recent` and `mux::known`), `mux::lru` (the bounded map
//! it keeps them in).

use std::collections::HashMap;
use std::sync::Arc;

use super::lru::CostLru;
use crate::proto::chunk_id::ChunkId;

/// Bytes of chunk text a mux keeps per host for resemblance by default.
pub const DEFAULT_SIMILAR_BYTES: usize = 32 << 20;
/// Features per chunk.
pub const FEATURES: usize = 12;
/// What a chunk costs beyond its bytes (its id, features and index entries).
const PER_CHUNK_COST: usize = 64 + FEATURES * 48;
/// The rolling hash's window: a feature covers this many bytes.
const WINDOW: usize = 64;
/// Texts shorter than this have no features (nothing worth a dictionary).
const MIN_LEN: usize = 2 * WINDOW;

/// A chunk's features (see the module text).
pub type Features = [u64; FEATURES];

/// SplitMix64: the fixed tables below, drawn at compile time.
const fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const fn table<const N: usize>(seed: u64, odd: bool) -> [u64; N] {
    let mut t = [0u64; N];
    let mut i = 0;
    while i < N {
        t[i] = mix(seed.wrapping_add(i as u64));
        if odd {
            t[i] |= 1;
        }
        i += 1;
    }
    t
}

/// The gear hash's byte table.
static GEAR: [u64; 256] = table(0x6765_6172, false);
/// The transforms `h * MUL[k] + ADD[k]` (odd multipliers: each is a bijection).
const MUL: [u64; FEATURES] = table(0x6d75_6c74, true);
const ADD: [u64; FEATURES] = table(0x6164_6473, false);

/// The features of `bytes`, or `None` for a text too short to have any. The same bytes
/// always give the same features (the tables are fixed).
pub fn features(bytes: &[u8]) -> Option<Features> {
    if bytes.len() < MIN_LEN {
        return None;
    }
    let mut h = 0u64;
    let mut best = [0u64; FEATURES];
    for &b in &bytes[..WINDOW - 1] {
        h = (h << 1).wrapping_add(GEAR[usize::from(b)]);
    }
    for &b in &bytes[WINDOW - 1..] {
        h = (h << 1).wrapping_add(GEAR[usize::from(b)]);
        for k in 0..FEATURES {
            let t = h.wrapping_mul(MUL[k]).wrapping_add(ADD[k]);
            best[k] = best[k].max(t);
        }
    }
    Some(best)
}

/// A kept chunk like a new one.
#[derive(Debug, Clone)]
pub struct Match {
    pub id: ChunkId,
    pub bytes: Arc<[u8]>,
    /// Features it shares with the new chunk.
    pub shared: usize,
}

/// For each of a job's new chunks (by their features, in order), the earlier one most
/// like it, with the features they share (at least `min`): the chunks LZ4 should see
/// together in one pack.
pub fn within(features: &[Option<Features>], min: usize) -> Vec<Option<(usize, usize)>> {
    let mut index: Vec<HashMap<u64, usize>> = vec![HashMap::new(); FEATURES];
    let mut out = Vec::with_capacity(features.len());
    for (i, f) in features.iter().enumerate() {
        let Some(f) = f else {
            out.push(None);
            continue;
        };
        let mut votes: Vec<(usize, usize)> = Vec::new();
        for (k, v) in f.iter().enumerate() {
            if let Some(&j) = index[k].get(v) {
                match votes.iter_mut().find(|(x, _)| *x == j) {
                    Some((_, c)) => *c += 1,
                    None => votes.push((j, 1)),
                }
            }
            index[k].insert(*v, i);
        }
        out.push(
            votes
                .into_iter()
                .filter(|(_, c)| *c >= min.max(1))
                .max_by_key(|(j, c)| (*c, *j)),
        );
    }
    out
}

#[derive(Debug)]
struct Entry {
    bytes: Arc<[u8]>,
    features: Features,
}

/// Held chunks by resemblance, at most `cap` bytes in all.
#[derive(Debug)]
pub struct SimilarChunks {
    entries: CostLru<ChunkId, Entry>,
    /// Per feature, value → the chunk kept last with it.
    index: Vec<HashMap<u64, ChunkId>>,
}

impl Default for SimilarChunks {
    fn default() -> Self {
        SimilarChunks::new(DEFAULT_SIMILAR_BYTES)
    }
}

/// Takes dropped chunk `id` out of `index` (where a later chunk has not taken its place).
fn unindex(index: &mut [HashMap<u64, ChunkId>], id: &ChunkId, e: &Entry) {
    for (k, f) in e.features.iter().enumerate() {
        if index[k].get(f) == Some(id) {
            index[k].remove(f);
        }
    }
}

impl SimilarChunks {
    /// A memory of at most `cap` bytes.
    pub fn new(cap: usize) -> SimilarChunks {
        SimilarChunks {
            entries: CostLru::new(cap),
            index: vec![HashMap::new(); FEATURES],
        }
    }

    /// Keeps chunk `id` (`bytes`, with its `features`), dropping the least recently used
    /// to stay within the cap. A chunk kept already is only marked used.
    pub fn insert(&mut self, id: ChunkId, bytes: &[u8], features: &Features) {
        if self.entries.get(&id).is_some() {
            return;
        }
        let entry = Entry {
            bytes: bytes.into(),
            features: *features,
        };
        let index = &mut self.index;
        let cost = bytes.len() + PER_CHUNK_COST;
        if self
            .entries
            .insert(id, entry, cost, |old, e| unindex(index, &old, &e))
        {
            for (k, f) in features.iter().enumerate() {
                index[k].insert(*f, id);
            }
        }
    }

    /// Drops chunk `id` and its index entries.
    pub fn remove(&mut self, id: &ChunkId) {
        if let Some(e) = self.entries.remove(id) {
            unindex(&mut self.index, id, &e);
        }
    }

    /// Up to `n` kept chunks most like `features` (by features shared, at least `min`
    /// of them; the most recently used first among equals) that `usable` accepts, each
    /// with its bytes, marked used.
    pub fn similar(
        &mut self,
        features: &Features,
        min: usize,
        n: usize,
        mut usable: impl FnMut(&ChunkId) -> bool,
    ) -> Vec<Match> {
        let mut votes: Vec<(ChunkId, usize)> = Vec::new();
        for (k, f) in features.iter().enumerate() {
            if let Some(id) = self.index[k].get(f) {
                match votes.iter_mut().find(|(v, _)| v == id) {
                    Some((_, c)) => *c += 1,
                    None => votes.push((*id, 1)),
                }
            }
        }
        votes.retain(|(_, c)| *c >= min.max(1));
        votes.sort_by_key(|(id, c)| {
            (
                std::cmp::Reverse(*c),
                std::cmp::Reverse(self.entries.last_use(id).unwrap_or(0)),
            )
        });
        let mut out = Vec::new();
        for (id, shared) in votes {
            if out.len() >= n {
                break;
            }
            if !usable(&id) {
                continue;
            }
            if let Some(e) = self.entries.get(&id) {
                out.push(Match {
                    id,
                    bytes: e.bytes.clone(),
                    shared,
                });
            }
        }
        out
    }

    /// Whether chunk `id` is kept.
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.entries.contains(id)
    }

    /// Bytes counted against the cap.
    pub fn cost(&self) -> usize {
        self.entries.cost()
    }

    /// Chunks kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A C-like text of `n` lines, `salt` in every `every`th one.
    fn text(n: u32, salt: &str, every: u32) -> Vec<u8> {
        (0..n)
            .flat_map(|i| {
                let extra = if every > 0 && i % every == 0 {
                    salt
                } else {
                    ""
                };
                format!("#define LUA_MACRO_{i} (x{extra} + {})\n", i * 7).into_bytes()
            })
            .collect()
    }

    fn shared(a: &Features, b: &Features) -> usize {
        a.iter().zip(b).filter(|(x, y)| x == y).count()
    }

    #[test]
    fn features_are_stable_and_tell_near_duplicates_from_unrelated_text() {
        let a = text(300, "", 0);
        let fa = features(&a).unwrap();
        assert_eq!(features(&a.clone()), Some(fa), "same bytes, same features");
        // A few small edits keep most features.
        let b = text(300, "_v2", 97);
        let fb = features(&b).unwrap();
        assert_ne!(a, b);
        assert!(shared(&fa, &fb) >= FEATURES / 2, "{}", shared(&fa, &fb));
        // Unrelated text shares none.
        let c: Vec<u8> = (0..3000u32)
            .flat_map(|i| format!("static double g{i}(void);\n").into_bytes())
            .collect();
        assert_eq!(shared(&fa, &features(&c).unwrap()), 0);
        assert!(features(b"short").is_none());
    }

    fn id_of(b: &[u8]) -> ChunkId {
        ChunkId::of(b)
    }

    #[test]
    fn finds_the_most_similar_usable_chunk() {
        let mut s = SimilarChunks::default();
        let a = text(300, "", 0);
        let other: Vec<u8> = (0..3000u32)
            .flat_map(|i| format!("static double g{i}(void);\n").into_bytes())
            .collect();
        for t in [&a, &other] {
            s.insert(id_of(t), t, &features(t).unwrap());
        }
        let b = text(300, "_v2", 97);
        let fb = features(&b).unwrap();
        let got = s.similar(&fb, 2, 2, |_| true);
        assert_eq!(got.len(), 1, "only the near-duplicate");
        assert_eq!(got[0].id, id_of(&a));
        assert_eq!(&got[0].bytes[..], &a[..]);
        assert!(got[0].shared >= FEATURES / 2);
        assert!(s.similar(&fb, 2, 2, |id| *id != id_of(&a)).is_empty());
        s.remove(&id_of(&a));
        assert!(s.similar(&fb, 1, 2, |_| true).is_empty(), "removed");
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn stays_within_its_cap_dropping_the_least_recently_used() {
        let texts: Vec<Vec<u8>> = (0..6).map(|n| text(200, &format!("_{n}"), 1)).collect();
        let one = texts[0].len() + PER_CHUNK_COST;
        let mut s = SimilarChunks::new(3 * one + 10);
        for t in &texts[..3] {
            s.insert(id_of(t), t, &features(t).unwrap());
        }
        // Using the first makes the second the oldest.
        let f0 = features(&texts[0]).unwrap();
        assert_eq!(s.similar(&f0, 1, 1, |_| true)[0].id, id_of(&texts[0]));
        let t = &texts[3];
        s.insert(id_of(t), t, &features(t).unwrap());
        assert!(s.cost() <= 3 * one + 10, "{}", s.cost());
        assert!(
            !s.contains(&id_of(&texts[1])),
            "the least recently used went"
        );
        assert!(s.contains(&id_of(&texts[0])));
        for t in &texts[4..] {
            s.insert(id_of(t), t, &features(t).unwrap());
        }
        assert_eq!(s.len(), 3);
        assert!(s.cost() <= 3 * one + 10);
        // No index entry outlives its chunk.
        assert!(s
            .index
            .iter()
            .flat_map(|m| m.values())
            .all(|id| s.contains(id)));
        let huge = vec![b'x'; 4 * one];
        s.insert(id_of(&huge), &huge, &features(&huge).unwrap());
        assert!(!s.contains(&id_of(&huge)), "larger than the whole cap");
    }
}
