//! Delta packs, pure: new chunks LZ4'd against a dictionary of chunks the receiver
//! already holds (an earlier version of the same text, as a rebuild after a one-line
//! edit sends it), so that a chunk that differs from one the server holds by a line costs
//! about that line. The dictionary is named by chunk ids; the receiver fetches them from
//! its store, concatenates them and keeps the last [`DICT_WINDOW`] bytes (LZ4 looks back
//! no further). Neighbours: `proto::chunk` (plain [`ChunkPack`]s, chunk ids, bounds),
//! `proto::msg` (`Message::DeltaChunks`), `mux::upload` (packs them), `subsystem::chunks`
//! (unpacks them).
//!
//! A wrong or missing dictionary never yields a wrong chunk: every decoded chunk is
//! checked against its id, and one that does not match comes out in
//! [`Unpacked::corrupt`], as does every chunk of a pack that does not decode.
//!
//! [`ChunkPack`]: super::ChunkPack

use serde::{Deserialize, Serialize};

use super::{bound, check_lengths, ChunkError, ChunkId, ChunkRef, Unpacked};
use super::{MAX_PACK_CHUNKS, MAX_PACK_LEN};

/// Bytes of dictionary LZ4 can use: its matches look back at most 64 KiB.
pub const DICT_WINDOW: usize = 64 << 10;
/// Most chunk ids naming one dictionary. A client picks the fewest whole chunks that
/// fill [`DICT_WINDOW`] (usually one to three); this bounds what a peer may ask a
/// server to read.
pub const MAX_DICT_IDS: usize = 32;
/// LZ4 cannot expand data by more than ~255:1 (as in `proto::compress`); a pack claiming
/// more is refused before its buffer exists.
const LZ4_MAX_RATIO: u64 = 256;
/// Slack for that bound on tiny packs.
const LZ4_RATIO_SLACK: u64 = 1024;

/// Chunks on the wire, LZ4'd (block format) with an external dictionary: the chunks
/// `dict` names, concatenated in order, the last [`DICT_WINDOW`] bytes of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaPack {
    /// The chunks the pack carries, in order: their bytes are consecutive in the decoded
    /// data.
    pub chunks: Vec<ChunkRef>,
    /// The chunks whose bytes are the dictionary (held by the receiver).
    pub dict: Vec<ChunkId>,
    /// The decoded length (the sum of the chunks' lengths).
    pub raw_len: u64,
    /// The LZ4 block.
    pub data: Vec<u8>,
}

/// The dictionary made of `parts` (chunk bytes, in the pack's `dict` order): their
/// concatenation's last [`DICT_WINDOW`] bytes.
pub fn dictionary<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(p);
        if out.len() > 2 * DICT_WINDOW {
            out.drain(..out.len() - DICT_WINDOW);
        }
    }
    if out.len() > DICT_WINDOW {
        out.drain(..out.len() - DICT_WINDOW);
    }
    out
}

/// Where the dictionary of a text's chunks (`lens`, in order) should start: the fewest
/// last chunks that fill [`DICT_WINDOW`], and at most [`MAX_DICT_IDS`] of them.
pub fn window_start(lens: &[u32]) -> usize {
    suffix_start(lens, DICT_WINDOW)
}

/// The start of the fewest last chunks (`lens`) that hold `want` bytes (at most
/// [`DICT_WINDOW`]), and at most [`MAX_DICT_IDS`] of them: a smaller dictionary costs
/// fewer ids on the wire.
pub fn suffix_start(lens: &[u32], want: usize) -> usize {
    let want = want.min(DICT_WINDOW);
    let mut have = 0usize;
    let mut start = lens.len();
    while start > 0 && have < want && lens.len() - start < MAX_DICT_IDS {
        start -= 1;
        have += lens[start] as usize;
    }
    start
}

impl DeltaPack {
    /// Packs `chunks` (each with its bytes) against `dict`: the ids of chunks the receiver
    /// holds, with their bytes, in order.
    pub fn pack<'a>(
        chunks: impl IntoIterator<Item = (ChunkRef, &'a [u8])>,
        dict: &[(ChunkId, &[u8])],
    ) -> DeltaPack {
        let mut refs = Vec::new();
        let mut raw = Vec::new();
        for (c, bytes) in chunks {
            refs.push(c);
            raw.extend_from_slice(bytes);
        }
        let window = dictionary(dict.iter().map(|(_, b)| *b));
        DeltaPack {
            chunks: refs,
            dict: dict.iter().map(|(id, _)| *id).collect(),
            raw_len: raw.len() as u64,
            data: lz4_flex::block::compress_with_dict(&raw, &window),
        }
    }

    /// Checks a peer's pack against the bounds, before its dictionary is read: chunk
    /// and dictionary counts, lengths, and a decoded length LZ4 can reach.
    ///
    /// # Errors
    /// [`ChunkError::TooLarge`] or [`ChunkError::Length`].
    pub fn check(&self) -> Result<(), ChunkError> {
        bound(
            "delta pack chunks",
            self.chunks.len() as u64,
            MAX_PACK_CHUNKS as u64,
        )?;
        bound(
            "delta pack dictionary ids",
            self.dict.len() as u64,
            MAX_DICT_IDS as u64,
        )?;
        bound("delta pack length", self.raw_len, MAX_PACK_LEN)?;
        bound(
            "delta pack length",
            self.raw_len,
            (self.data.len() as u64)
                .saturating_mul(LZ4_MAX_RATIO)
                .saturating_add(LZ4_RATIO_SLACK),
        )?;
        check_lengths("delta pack", &self.chunks, self.raw_len)
    }

    /// Every chunk the pack carries, as corrupt (its dictionary is not at hand).
    pub fn all_corrupt(&self) -> Unpacked {
        Unpacked {
            good: Vec::new(),
            corrupt: self.chunks.iter().map(|c| c.id).collect(),
        }
    }

    /// Decodes a peer's pack with `dict` (the [`dictionary`] of the chunks
    /// [`DeltaPack::dict`] names) and splits it into chunks, keeping those whose bytes
    /// hash to their id. A pack that does not decode to exactly its length gives every
    /// chunk as corrupt: a wrong dictionary costs a resend, never a wrong chunk.
    ///
    /// # Errors
    /// As [`DeltaPack::check`].
    pub fn unpack(&self, dict: &[u8]) -> Result<Unpacked, ChunkError> {
        self.check()?;
        let dict = &dict[dict.len().saturating_sub(DICT_WINDOW)..];
        // Within MAX_PACK_LEN, checked above.
        let mut raw = vec![0u8; self.raw_len as usize];
        match lz4_flex::block::decompress_into_with_dict(&self.data, &mut raw, dict) {
            Ok(n) if n == raw.len() => {}
            Ok(n) => {
                tracing::debug!("delta pack decoded to {n} bytes, not {}", self.raw_len);
                return Ok(self.all_corrupt());
            }
            Err(e) => {
                tracing::debug!("delta pack does not decode: {e}");
                return Ok(self.all_corrupt());
            }
        }
        Ok(Unpacked::split(&self.chunks, &raw))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ChunkPack, Cut};
    use super::*;

    /// A C-like text of about `n` lines, and the same with one line appended.
    fn versions(n: u32) -> (Vec<u8>, Vec<u8>) {
        let old: Vec<u8> = (0..n)
            .flat_map(|i| {
                format!("static int f{i}(int x) {{ return x * {i} + {}; }}\n", i % 7).into_bytes()
            })
            .collect();
        let mut new = old.clone();
        new.extend_from_slice(b"int appended(void) { return 42; }\n");
        (old, new)
    }

    /// The chunks of `new` that `old` lacks, and `old`'s last chunks as a dictionary.
    fn delta_of(old: &Cut, new: &Cut) -> DeltaPack {
        let held: std::collections::HashSet<_> = old.recipe.chunks.iter().map(|c| c.id).collect();
        let all: Vec<_> = old.chunks().collect();
        let lens: Vec<u32> = all.iter().map(|(c, _)| c.len).collect();
        let dict: Vec<(ChunkId, &[u8])> = all[window_start(&lens)..]
            .iter()
            .map(|(c, b)| (c.id, *b))
            .collect();
        DeltaPack::pack(new.chunks().filter(|(c, _)| !held.contains(&c.id)), &dict)
    }

    fn window_of(cut: &Cut, ids: &[ChunkId]) -> Vec<u8> {
        let by_id: std::collections::HashMap<_, _> = cut.chunks().map(|(c, b)| (c.id, b)).collect();
        dictionary(ids.iter().map(|id| by_id[id]))
    }

    #[test]
    fn a_one_line_edit_round_trips_in_a_fraction_of_a_plain_pack() {
        let (old, new) = versions(3000);
        let (old, new) = (Cut::plain(old), Cut::plain(new));
        let delta = delta_of(&old, &new);
        assert!(!delta.chunks.is_empty() && !delta.dict.is_empty());
        let plain = ChunkPack::pack(
            new.chunks()
                .filter(|(c, _)| delta.chunks.iter().any(|d| d.id == c.id)),
        );
        let got = delta.unpack(&window_of(&old, &delta.dict)).unwrap();
        assert!(got.corrupt.is_empty());
        let want: Vec<_> = new
            .chunks()
            .filter(|(c, _)| delta.chunks.contains(c))
            .map(|(c, b)| (c.id, b.to_vec()))
            .collect();
        assert_eq!(got.good, want);
        assert!(
            delta.data.len() * 10 < plain.data.data.len(),
            "delta {} bytes, plain {}",
            delta.data.len(),
            plain.data.data.len()
        );
    }

    #[test]
    fn a_wrong_or_missing_dictionary_gives_corrupt_chunks_never_wrong_ones() {
        let (old, new) = versions(3000);
        let (old, new) = (Cut::plain(old), Cut::plain(new));
        let delta = delta_of(&old, &new);
        let n = delta.chunks.len();
        let mut right = window_of(&old, &delta.dict);
        for dict in [Vec::new(), b"something else entirely".repeat(100)] {
            let got = delta.unpack(&dict).unwrap();
            assert!(got.good.is_empty(), "no chunk from a wrong dictionary");
            assert_eq!(got.corrupt.len(), n);
        }
        // One byte off in the dictionary: whatever decodes is checked by its id.
        let mid = right.len() / 2;
        right[mid] ^= 1;
        let got = delta.unpack(&right).unwrap();
        assert_eq!(got.good.len() + got.corrupt.len(), n);
        for (id, bytes) in &got.good {
            assert_eq!(ChunkId::of(bytes), *id);
        }
        // Damaged data: corrupt, not an error, not a panic.
        let mut broken = delta.clone();
        let last = broken.data.len() - 1;
        broken.data[last] ^= 0xff;
        broken.data.truncate(broken.data.len() / 2);
        let got = broken.unpack(&window_of(&old, &delta.dict)).unwrap();
        assert!(got.good.is_empty());
        assert_eq!(all_ids(&got), n);
    }

    fn all_ids(u: &Unpacked) -> usize {
        u.good.len() + u.corrupt.len()
    }

    #[test]
    fn bounds_are_checked_before_decoding() {
        let (old, new) = versions(3000);
        let (old, new) = (Cut::plain(old), Cut::plain(new));
        let good = delta_of(&old, &new);
        let dict = window_of(&old, &good.dict);
        let mut p = good.clone();
        p.dict = vec![ChunkId([0; 32]); MAX_DICT_IDS + 1];
        assert!(matches!(p.check(), Err(ChunkError::TooLarge { .. })));
        let mut p = good.clone();
        p.raw_len += 1;
        assert!(matches!(p.unpack(&dict), Err(ChunkError::Length { .. })));
        let mut p = good.clone();
        p.raw_len = MAX_PACK_LEN + 1;
        assert!(matches!(p.unpack(&dict), Err(ChunkError::TooLarge { .. })));
        // A length LZ4 cannot reach from so few bytes.
        let mut p = good.clone();
        p.chunks = vec![ChunkRef {
            id: ChunkId([0; 32]),
            len: super::super::MAX_CHUNK,
        }];
        p.raw_len = u64::from(super::super::MAX_CHUNK);
        p.data = vec![0; 8];
        assert!(matches!(p.unpack(&dict), Err(ChunkError::TooLarge { .. })));
        let mut p = good;
        p.chunks = vec![
            ChunkRef {
                id: ChunkId([0; 32]),
                len: 1,
            };
            MAX_PACK_CHUNKS + 1
        ];
        assert!(matches!(p.check(), Err(ChunkError::TooLarge { .. })));
    }

    #[test]
    fn the_window_is_the_fewest_last_chunks_that_fill_it() {
        assert_eq!(window_start(&[]), 0);
        assert_eq!(window_start(&[100, 200]), 0);
        let k = 16 << 10;
        assert_eq!(window_start(&[k, k, k, k, k, k]), 2);
        assert_eq!(window_start(&[k, k, k, 3 * k, k]), 3);
        let tiny = vec![10u32; 100];
        assert_eq!(window_start(&tiny), 100 - MAX_DICT_IDS);
        assert_eq!(suffix_start(&[k, k, k, k], 1), 3);
        assert_eq!(suffix_start(&[k, k, k, k], k as usize + 1), 2);
        assert_eq!(
            suffix_start(&[k; 8], usize::MAX),
            4,
            "never past the window"
        );
        let parts: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 20 << 10]).collect();
        let d = dictionary(parts.iter().map(Vec::as_slice));
        assert_eq!(d.len(), DICT_WINDOW);
        assert_eq!(d[0], 1, "starts inside the second part");
        assert_eq!(*d.last().unwrap(), 4);
        assert_eq!(dictionary([&b"ab"[..], b"cd"]), b"abcd");
    }
}
