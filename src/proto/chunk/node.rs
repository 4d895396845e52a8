//! Nodes, pure: a run of chunks that holds no main-source text (the headers a unit
//! includes, the same in most units) is named by one id in a job's recipe. A node is a
//! chunk like any other — the server's store keeps it and checks its hash — whose bytes
//! are the postcard list of the chunks it stands for. Runs are split where a chunk's id
//! is small (content-defined, so one changed header changes one node, not the run).
//! Neighbours: `proto::chunk` (recipes; [`Recipe::nodes`] marks node entries),
//! `mux::upload` (groups a job's recipe, sends nodes with chunks), `subsystem::chunks`
//! (expands them through [`Recipe::assemble`]).

use std::ops::Range;

use super::{markers, ChunkError, ChunkRef, Cut, Recipe, MAX_CHUNK, MAX_RECIPE_LEN};
use crate::proto::chunk_id::ChunkId;

/// Most chunks one node stands for (its bytes stay far below [`MAX_CHUNK`]).
pub const MAX_NODE_ENTRIES: usize = 256;
/// A node ends after a chunk whose id's first byte is below this: one in 16 on average.
const SPLIT_BELOW: u8 = 16;
/// Main-source text shorter than this between two headers (a marker and blank lines, a
/// `#define`) does not keep the chunk that holds it out of a node.
const MIN_MAIN_SPAN: usize = 256;

/// One node of a grouped recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The node as a chunk: its id and the length of its bytes.
    pub chunk: ChunkRef,
    /// Its bytes: the postcard list of the chunks it stands for.
    pub bytes: Vec<u8>,
    /// The indices, in the cut's recipe, of the chunks it stands for.
    pub members: Range<usize>,
}

/// A cut's recipe with runs of header chunks as nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grouped {
    /// The recipe to send: leaves and nodes ([`Recipe::nodes`] says which).
    pub recipe: Recipe,
    /// The nodes, in recipe order.
    pub nodes: Vec<Node>,
}

/// Groups `cut`'s recipe: maximal runs of chunks outside the main source's text, split
/// where an id is small and at [`MAX_NODE_ENTRIES`]; a group of one stays a leaf.
pub fn group(cut: &Cut) -> Grouped {
    let leaves = &cut.recipe.chunks;
    let main = markers::main_spans(&cut.bytes, MIN_MAIN_SPAN);
    let mut at = 0usize;
    let header: Vec<bool> = leaves
        .iter()
        .map(|c| {
            let span = at..at + c.len as usize;
            at = span.end;
            !main
                .iter()
                .any(|m| m.start < span.end && span.start < m.end)
        })
        .collect();
    let mut recipe = Recipe {
        chunks: Vec::new(),
        len: cut.recipe.len,
        markers: cut.recipe.markers.clone(),
        nodes: Vec::new(),
    };
    let mut nodes = Vec::new();
    let mut i = 0;
    while i < leaves.len() {
        let mut end = i;
        while end < leaves.len()
            && header[end]
            && end - i < MAX_NODE_ENTRIES
            && (end == i || leaves[end - 1].id.0[0] >= SPLIT_BELOW)
        {
            end += 1;
        }
        if end - i >= 2 {
            let members = &leaves[i..end];
            let bytes = postcard::to_allocvec(members).expect("chunk refs encode");
            let chunk = ChunkRef {
                id: ChunkId::of(&bytes),
                len: bytes.len() as u32,
            };
            // A node's entry in the recipe carries the length it stands for.
            let len: u32 = members.iter().map(|c| c.len).sum();
            recipe.nodes.push(recipe.chunks.len() as u32);
            recipe.chunks.push(ChunkRef { id: chunk.id, len });
            nodes.push(Node {
                chunk,
                bytes,
                members: i..end,
            });
            i = end;
        } else {
            recipe.chunks.push(leaves[i]);
            i += 1;
        }
    }
    Grouped { recipe, nodes }
}

/// The chunks a node's bytes list, checked: within [`MAX_NODE_ENTRIES`], each within
/// [`MAX_CHUNK`], adding up to `len` (the recipe entry's).
///
/// # Errors
/// [`ChunkError::TooLarge`] or [`ChunkError::Length`]; a node that does not decode is
/// [`ChunkError::Length`] too (its bytes matched its id, so the client made it so).
pub fn decode(bytes: &[u8], len: u64) -> Result<Vec<ChunkRef>, ChunkError> {
    let bad = || ChunkError::Length {
        what: "node",
        sum: 0,
        len,
    };
    let members: Vec<ChunkRef> = postcard::from_bytes(bytes).map_err(|_| bad())?;
    if members.len() > MAX_NODE_ENTRIES || members.is_empty() {
        return Err(ChunkError::TooLarge {
            what: "node entries",
            len: members.len() as u64,
            max: MAX_NODE_ENTRIES as u64,
        });
    }
    let mut sum = 0u64;
    for m in &members {
        if m.len > MAX_CHUNK {
            return Err(ChunkError::TooLarge {
                what: "chunk",
                len: u64::from(m.len),
                max: u64::from(MAX_CHUNK),
            });
        }
        sum += u64::from(m.len);
    }
    if sum != len || sum > MAX_RECIPE_LEN {
        return Err(ChunkError::Length {
            what: "node",
            sum,
            len,
        });
    }
    Ok(members)
}
