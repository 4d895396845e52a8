//! Fuzz target `chunks`: what a server decodes of a client's chunked input
//! (`proto::chunk`): a plain pack (`ChunkPack::unpack`), a delta pack against a dictionary
//! (`DeltaPack::check`, `DeltaPack::unpack`), a node's list (`node::decode`), and a recipe
//! assembled from a store of chunks (`Recipe::check`, `Recipe::assemble`).
//!
//! Input: a mode byte, then for the packs and the recipe a postcard value, and after a
//! `0xff 0xfe` separator the bytes of the dictionary (delta pack) or of the store's
//! chunks (recipe: NUL-separated pieces, each stored under its own id).
//!
//! Properties: no panic, no allocation past the harness's cap; every chunk a pack yields
//! as good hashes to its id, and good plus corrupt chunks are the pack's; a decoded node's
//! entries add up to the length asked for, within the entry bound; an assembled recipe
//! without markers is exactly its length, and a recipe that names a chunk the store lacks
//! does not assemble.
#![no_main]

use std::collections::HashMap;

use hoardcc::proto::chunk::{node, ChunkId, ChunkPack, DeltaPack, Recipe, Unpacked};
use hoardcc::proto::frame;
use libfuzzer_sys::fuzz_target;

/// Longest recipe the harness assembles: the server's admission limit (`max_job_mib`)
/// bounds a real one; this keeps within the harness's allocation cap.
const MAX_ASSEMBLED: u64 = 4 << 20;

fn split(data: &[u8]) -> (&[u8], &[u8]) {
    match data.windows(2).position(|w| w == [0xff, 0xfe]) {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[]),
    }
}

fn checked(u: &Unpacked, ids: &[ChunkId]) {
    for (id, bytes) in &u.good {
        assert_eq!(ChunkId::of(bytes), *id, "a good chunk must hash to its id");
    }
    assert!(u.good.len() + u.corrupt.len() <= ids.len());
    assert!(u.good.iter().all(|(id, _)| ids.contains(id)));
    assert!(u.corrupt.iter().all(|id| ids.contains(id)));
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (value, extra) = split(rest);
    match mode % 4 {
        0 => {
            let Ok(p) = frame::decode::<ChunkPack>(value) else {
                return;
            };
            if let Ok(u) = p.unpack() {
                checked(&u, &p.chunks.iter().map(|c| c.id).collect::<Vec<_>>());
            }
        }
        1 => {
            let Ok(p) = frame::decode::<DeltaPack>(value) else {
                return;
            };
            if p.check().is_err() {
                assert!(p.unpack(extra).is_err(), "unpack checks what check checks");
                return;
            }
            let u = p.unpack(extra).expect("a checked pack unpacks or is corrupt");
            assert_eq!(u.good.len() + u.corrupt.len(), p.chunks.len());
            checked(&u, &p.chunks.iter().map(|c| c.id).collect::<Vec<_>>());
        }
        2 => {
            let len = u64::from_le_bytes(
                extra.get(..8).and_then(|b| b.try_into().ok()).unwrap_or([0; 8]),
            );
            if let Ok(members) = node::decode(value, len) {
                assert!(!members.is_empty() && members.len() <= node::MAX_NODE_ENTRIES);
                assert_eq!(members.iter().map(|m| u64::from(m.len)).sum::<u64>(), len);
            }
        }
        _ => {
            let Ok(r) = frame::decode::<Recipe>(value) else {
                return;
            };
            if r.check().is_err() || r.len > MAX_ASSEMBLED {
                return;
            }
            let store: HashMap<ChunkId, Vec<u8>> = extra
                .split(|&b| b == 0)
                .map(|p| (ChunkId::of(p), p.to_vec()))
                .collect();
            let mut asked_missing = false;
            let got = r.assemble(|id| {
                let d = store.get(id).cloned();
                asked_missing |= d.is_none();
                d
            });
            if let Ok(text) = got {
                assert!(!asked_missing, "assembled though a chunk was missing");
                // With markers the text comes back restored (names and numbers put back).
                if r.markers.is_none() {
                    assert_eq!(text.len() as u64, r.len);
                }
            }
        }
    }
});
