//! Content-addressed input, pure: a job's text (the directives-only source, a context
//! file) is cut into content-defined chunks (FastCDC 2020, 8 KiB average) named by their
//! BLAKE3 hash, and travels as a [`Recipe`] (the ordered ids) plus the chunks the server
//! is not known to hold ([`ChunkPack`], LZ4'd). The server rebuilds the text from its
//! chunk store and restores the line markers ([`markers`]). Neighbours: `proto::msg`
//! (`Input::Chunked` carries a recipe), `wrapper` (cuts), `mux::lane` (sends packs, learns
//! which chunks a host holds), `subsystem::job` (assembles), [`delta`] (packs LZ4'd
//! against chunks the server holds).
//!
//! Every count and length in a recipe or pack from a peer is checked before use.

pub mod delta;
pub mod markers;
pub mod node;

use serde::{Deserialize, Serialize};

pub use self::delta::DeltaPack;
pub use self::markers::Markers;
pub use crate::proto::chunk_id::ChunkId;
use crate::proto::msg::Blob;

/// Smallest chunk FastCDC cuts (except a text's last).
pub const MIN_CHUNK: u32 = 2 << 10;
/// The average chunk size asked of FastCDC.
pub const AVG_CHUNK: u32 = 8 << 10;
/// Largest chunk: FastCDC never cuts longer ones, and a peer's longer one is refused.
pub const MAX_CHUNK: u32 = 64 << 10;
/// Largest text a recipe describes (the frame bound, which a whole blob obeys too).
pub const MAX_RECIPE_LEN: u64 = 256 << 20;
/// Most chunks in one recipe: [`MAX_RECIPE_LEN`] in chunks of [`MIN_CHUNK`], and one more.
pub const MAX_RECIPE_CHUNKS: usize = (MAX_RECIPE_LEN / MIN_CHUNK as u64) as usize + 1;
/// Most chunks in one pack.
pub const MAX_PACK_CHUNKS: usize = MAX_RECIPE_CHUNKS;
/// Most decoded bytes in one pack.
pub const MAX_PACK_LEN: u64 = MAX_RECIPE_LEN;

/// Errors of the chunk path: a peer's recipe or pack out of bounds, a chunk that does not
/// hash to its id, a chunk the server does not have.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    /// A count or length broke its bound.
    #[error("{what} too large: {len}, at most {max}")]
    TooLarge {
        what: &'static str,
        len: u64,
        max: u64,
    },
    /// The chunk lengths do not add up to the announced total.
    #[error("{what}: chunk lengths add up to {sum} bytes, not the {len} announced")]
    Length {
        what: &'static str,
        sum: u64,
        len: u64,
    },
    /// The pack's blob did not decode.
    #[error("chunk pack: {0}")]
    Decode(#[from] crate::proto::Error),
    /// Chunks the server does not hold: ask the client for them.
    #[error("{} chunk(s) missing", .0.len())]
    Missing(Vec<ChunkId>),
}

/// One chunk of a recipe: its id and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub id: ChunkId,
    pub len: u32,
}

/// How to rebuild one text from chunks: their ids in order, the total length, and what
/// [`markers::restore`] needs (none for text that was not normalised).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipe {
    pub chunks: Vec<ChunkRef>,
    /// The length of the concatenated chunks (before markers are restored).
    pub len: u64,
    /// Set when the text was normalised ([`markers::normalise`]).
    pub markers: Option<Markers>,
    /// The indices of the entries that are nodes ([`node`]), ascending: such an entry's
    /// id names a node chunk and its length is the length of the text it stands for.
    pub nodes: Vec<u32>,
}

impl Recipe {
    /// Checks a peer's recipe against the bounds: chunk count, each chunk's length, the
    /// total, and the marker names.
    ///
    /// # Errors
    /// [`ChunkError::TooLarge`] or [`ChunkError::Length`].
    pub fn check(&self) -> Result<(), ChunkError> {
        bound(
            "recipe chunks",
            self.chunks.len() as u64,
            MAX_RECIPE_CHUNKS as u64,
        )?;
        bound("recipe length", self.len, MAX_RECIPE_LEN)?;
        if !self.nodes.windows(2).all(|w| w[0] < w[1])
            || self
                .nodes
                .last()
                .is_some_and(|&n| n as usize >= self.chunks.len())
        {
            return Err(ChunkError::TooLarge {
                what: "node index",
                len: self.nodes.last().map_or(0, |&n| u64::from(n)),
                max: self.chunks.len() as u64,
            });
        }
        let mut sum = 0u64;
        let mut nodes = self.nodes.iter().peekable();
        for (i, c) in self.chunks.iter().enumerate() {
            let max = if nodes.next_if(|&&n| n as usize == i).is_some() {
                node::MAX_NODE_ENTRIES as u64 * u64::from(MAX_CHUNK)
            } else {
                u64::from(MAX_CHUNK)
            };
            bound("chunk", u64::from(c.len), max)?;
            sum += u64::from(c.len);
        }
        if sum != self.len {
            return Err(ChunkError::Length {
                what: "recipe",
                sum,
                len: self.len,
            });
        }
        if let Some(m) = &self.markers {
            bound(
                "main-source markers",
                m.lines.len() as u64,
                markers::MAX_MAIN_MARKERS as u64,
            )?;
            if !m.is_bounded() {
                return Err(ChunkError::TooLarge {
                    what: "marker name",
                    len: u64::MAX,
                    max: markers::MAX_MARKER_NAME as u64,
                });
            }
        }
        Ok(())
    }

    /// The chunk ids, in order, each once.
    pub fn unique_ids(&self) -> Vec<ChunkId> {
        let mut seen = std::collections::HashSet::with_capacity(self.chunks.len());
        self.chunks
            .iter()
            .filter(|c| seen.insert(c.id))
            .map(|c| c.id)
            .collect()
    }

    /// Rebuilds the text: every chunk from `get` (which must return the bytes whose hash is
    /// the id, or `None`), concatenated, markers restored. The recipe must have passed
    /// [`Recipe::check`].
    ///
    /// # Errors
    /// [`ChunkError::Missing`] naming every chunk `get` lacked (each once), or
    /// [`ChunkError::Length`] when a chunk's length is not the recipe's.
    pub fn assemble(
        &self,
        mut get: impl FnMut(&ChunkId) -> Option<Vec<u8>>,
    ) -> Result<Vec<u8>, ChunkError> {
        let mut out = Vec::with_capacity(self.len as usize);
        let mut missing = Vec::new();
        let mut nodes = self.nodes.iter().peekable();
        for (i, c) in self.chunks.iter().enumerate() {
            let is_node = nodes.next_if(|&&n| n as usize == i).is_some();
            if missing.contains(&c.id) {
                continue;
            }
            let Some(data) = get(&c.id) else {
                missing.push(c.id);
                continue;
            };
            if !is_node {
                leaf(&mut out, c, data)?;
                continue;
            }
            for m in node::decode(&data, u64::from(c.len))? {
                if missing.contains(&m.id) {
                    continue;
                }
                match get(&m.id) {
                    Some(d) => leaf(&mut out, &m, d)?,
                    None => missing.push(m.id),
                }
            }
        }
        if !missing.is_empty() {
            return Err(ChunkError::Missing(missing));
        }
        Ok(match &self.markers {
            Some(m) => markers::restore(&out, m),
            None => out,
        })
    }
}

/// Appends one chunk's bytes, which must be as long as the recipe says.
fn leaf(out: &mut Vec<u8>, c: &ChunkRef, data: Vec<u8>) -> Result<(), ChunkError> {
    if data.len() != c.len as usize {
        return Err(ChunkError::Length {
            what: "chunk",
            sum: data.len() as u64,
            len: u64::from(c.len),
        });
    }
    out.extend_from_slice(&data);
    Ok(())
}

fn bound(what: &'static str, len: u64, max: u64) -> Result<(), ChunkError> {
    if len > max {
        return Err(ChunkError::TooLarge { what, len, max });
    }
    Ok(())
}

fn check_lengths(what: &'static str, chunks: &[ChunkRef], len: u64) -> Result<(), ChunkError> {
    let mut sum = 0u64;
    for c in chunks {
        bound("chunk", u64::from(c.len), u64::from(MAX_CHUNK))?;
        sum += u64::from(c.len);
    }
    if sum != len {
        return Err(ChunkError::Length { what, sum, len });
    }
    Ok(())
}

/// A text cut into chunks: the recipe, and the bytes the chunks are slices of (the
/// normalised text, for a normalised one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    pub recipe: Recipe,
    pub bytes: Vec<u8>,
}

impl Cut {
    /// Cuts `text` as it is (a context file: the main source, a user header).
    pub fn plain(text: Vec<u8>) -> Cut {
        Cut {
            recipe: Recipe {
                chunks: cut(&text),
                len: text.len() as u64,
                markers: None,
                nodes: Vec::new(),
            },
            bytes: text,
        }
    }

    /// Normalises directives-only `text`'s line markers ([`markers::normalise`]), then cuts
    /// it, at the main source's include boundaries too ([`markers::include_boundaries`]).
    pub fn normalised(text: &[u8]) -> Cut {
        let (bytes, m) = markers::normalise(text);
        Cut {
            recipe: Recipe {
                chunks: cut_at(&bytes, &markers::include_boundaries(&bytes)),
                len: bytes.len() as u64,
                markers: Some(m),
                nodes: Vec::new(),
            },
            bytes,
        }
    }

    /// A recipe and the bytes it was cut from, as a peer (the wrapper) sent them: the
    /// recipe within bounds and as long as the bytes. The ids are not re-hashed here
    /// (a wrong one is refused by the server, which checks every chunk).
    ///
    /// # Errors
    /// As [`Recipe::check`], or [`ChunkError::Length`].
    pub fn from_parts(recipe: Recipe, bytes: Vec<u8>) -> Result<Cut, ChunkError> {
        recipe.check()?;
        if recipe.len != bytes.len() as u64 {
            return Err(ChunkError::Length {
                what: "cut text",
                sum: bytes.len() as u64,
                len: recipe.len,
            });
        }
        Ok(Cut { recipe, bytes })
    }

    /// Each chunk with its bytes, in recipe order.
    pub fn chunks(&self) -> impl Iterator<Item = (ChunkRef, &[u8])> {
        chunk_slices(&self.recipe.chunks, &self.bytes)
    }
}

/// `chunks` paired with consecutive slices of `bytes` (which must be at least as long as
/// their total; extra bytes are ignored).
pub fn chunk_slices<'a>(
    chunks: &'a [ChunkRef],
    bytes: &'a [u8],
) -> impl Iterator<Item = (ChunkRef, &'a [u8])> + 'a {
    let mut at = 0usize;
    chunks.iter().map(move |c| {
        let end = (at + c.len as usize).min(bytes.len());
        let s = &bytes[at.min(end)..end];
        at = end;
        (*c, s)
    })
}

/// Cuts `data` into content-defined chunks and hashes each.
pub fn cut(data: &[u8]) -> Vec<ChunkRef> {
    fastcdc::v2020::FastCDC::new(data, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK)
        .map(|c| {
            let bytes = &data[c.offset..c.offset + c.length];
            ChunkRef {
                id: ChunkId::of(bytes),
                len: c.length as u32,
            }
        })
        .collect()
}

/// Cuts `data` into content-defined chunks that also end at each of `boundaries`
/// (ascending offsets), except where that would leave a piece shorter than
/// [`MIN_CHUNK`]: such a piece runs on to the next boundary.
pub fn cut_at(data: &[u8], boundaries: &[usize]) -> Vec<ChunkRef> {
    let mut out = Vec::new();
    let mut start = 0;
    for &b in boundaries.iter().chain(std::iter::once(&data.len())) {
        let b = b.min(data.len());
        if b <= start || (b - start < MIN_CHUNK as usize && b < data.len()) {
            continue;
        }
        out.extend(cut(&data[start..b]));
        start = b;
    }
    out
}

/// Chunks on the wire: their ids and lengths, and their bytes concatenated in one blob
/// (LZ4 works across chunk boundaries that way).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkPack {
    pub chunks: Vec<ChunkRef>,
    pub data: Blob,
}

impl ChunkPack {
    /// Packs `chunks` (each with its bytes).
    pub fn pack<'a>(chunks: impl IntoIterator<Item = (ChunkRef, &'a [u8])>) -> ChunkPack {
        let mut refs = Vec::new();
        let mut raw = Vec::new();
        for (c, bytes) in chunks {
            refs.push(c);
            raw.extend_from_slice(bytes);
        }
        ChunkPack {
            chunks: refs,
            data: Blob::pack(&raw),
        }
    }

    /// An empty pack.
    pub fn empty() -> ChunkPack {
        ChunkPack {
            chunks: Vec::new(),
            data: Blob::empty(),
        }
    }

    /// Decodes a peer's pack within the bounds, and splits it into chunks, keeping those
    /// whose bytes hash to their id; the others are returned apart (by id), dropped.
    ///
    /// # Errors
    /// [`ChunkError::TooLarge`], [`ChunkError::Length`], [`ChunkError::Decode`].
    pub fn unpack(&self) -> Result<Unpacked, ChunkError> {
        bound(
            "pack chunks",
            self.chunks.len() as u64,
            MAX_PACK_CHUNKS as u64,
        )?;
        bound("pack length", self.data.raw_len, MAX_PACK_LEN)?;
        check_lengths("pack", &self.chunks, self.data.raw_len)?;
        // Exactly `raw_len` bytes, or an error.
        let raw = self.data.unpack(MAX_PACK_LEN)?;
        Ok(Unpacked::split(&self.chunks, &raw))
    }
}

/// A pack split into chunks by [`ChunkPack::unpack`].
#[derive(Debug, Default)]
pub struct Unpacked {
    /// Chunks whose bytes match their id.
    pub good: Vec<(ChunkId, Vec<u8>)>,
    /// Ids whose bytes did not match (dropped; the server will report them missing).
    pub corrupt: Vec<ChunkId>,
}

impl Unpacked {
    /// `raw` cut into `chunks` (as [`chunk_slices`] does), each kept if its bytes hash to
    /// its id, else named as corrupt.
    pub fn split(chunks: &[ChunkRef], raw: &[u8]) -> Unpacked {
        let mut out = Unpacked::default();
        for (c, bytes) in chunk_slices(chunks, raw) {
            if ChunkId::of(bytes) == c.id {
                out.good.push((c.id, bytes.to_vec()));
            } else {
                out.corrupt.push(c.id);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
