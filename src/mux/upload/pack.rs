//! Stage: how one native job's new chunks are packed (the planner of `mux::upload`).
//! Chunks go LZ4'd on their own, or against chunks the host holds: the chunks its source
//! sent last, or the held chunks most like them (`mux::similar`), in one pack or several,
//! whichever costs fewer bytes on the wire. A cold build's chunks whose most alike chunk
//! is still in flight on another lane are split off to wait for it. Neighbours:
//! `mux::upload` (claims chunks, builds the job frame), `mux::recent` (the last chunks per
//! source), `mux::similar` (features and the resemblance memory), `proto::chunk::delta`
//! (the pack formats).

use super::{lock, HostChunks, SharedChunks};
use crate::mux::recent::SourceKey;
use crate::mux::similar::{self, Features};
use crate::proto::chunk::delta::{DICT_WINDOW, MAX_DICT_IDS};
use crate::proto::chunk::{delta, ChunkPack, ChunkRef, DeltaPack, MAX_PACK_CHUNKS};
use crate::proto::chunk_id::ChunkId;
use crate::proto::msg::Message;

/// The chunks a job sends before its job frame.
#[derive(Debug)]
pub enum Pack {
    /// LZ4'd on their own (`Message::Chunks`).
    Plain(ChunkPack),
    /// LZ4'd against chunks the host holds (`Message::DeltaChunks`).
    Delta(DeltaPack),
}

impl Pack {
    /// The chunks packed.
    pub fn chunks(&self) -> &[ChunkRef] {
        match self {
            Pack::Plain(p) => &p.chunks,
            Pack::Delta(p) => &p.chunks,
        }
    }

    /// Whether it is a delta pack.
    pub fn is_delta(&self) -> bool {
        matches!(self, Pack::Delta(_))
    }

    /// The message that carries it.
    pub fn into_message(self) -> Message {
        match self {
            Pack::Plain(p) => Message::Chunks(p),
            Pack::Delta(p) => Message::DeltaChunks(p),
        }
    }
}

/// The dictionary kept for `key`, if delta packs are wanted, there is something to send,
/// and the host is believed to hold all of it.
pub(super) fn dictionary_for(
    h: &mut HostChunks,
    key: &SourceKey,
    delta: bool,
    fresh: usize,
) -> Option<Vec<(ChunkId, Vec<u8>)>> {
    if !delta || fresh == 0 {
        return None;
    }
    let HostChunks { known, recent, .. } = h;
    recent
        .dictionary_or_latest(key)
        .filter(|d| d.iter().all(|(id, _)| known.holds(id)))
        .map(<[_]>::to_vec)
}

/// `fresh` as a plain pack, or as a delta pack against `dict` when that is smaller.
/// Each dictionary id costs its 32 bytes: the last chunks that hold as much as the pack
/// (where the edited text's old version is) are tried, and the whole window.
pub(super) fn pack_chosen(
    fresh: &[(ChunkRef, &[u8])],
    dict: Option<Vec<(ChunkId, Vec<u8>)>>,
) -> Pack {
    let plain = ChunkPack::pack(fresh.iter().copied());
    let Some(dict) = dict else {
        return Pack::Plain(plain);
    };
    let lens: Vec<u32> = dict.iter().map(|(_, b)| b.len() as u32).collect();
    let raw: usize = fresh.iter().map(|(_, b)| b.len()).sum();
    let cost = |d: &DeltaPack| d.data.len() + std::mem::size_of::<ChunkId>() * d.dict.len();
    let mut best: Option<DeltaPack> = None;
    let mut tried = None;
    for start in [delta::suffix_start(&lens, raw), delta::window_start(&lens)] {
        if tried.replace(start) == Some(start) {
            continue;
        }
        let refs: Vec<(ChunkId, &[u8])> =
            dict[start..].iter().map(|(id, b)| (*id, &b[..])).collect();
        let d = DeltaPack::pack(fresh.iter().copied(), &refs);
        if best.as_ref().is_none_or(|b| cost(&d) < cost(b)) {
            best = Some(d);
        }
    }
    match best {
        Some(d) if cost(&d) < plain.data.data.len() => Pack::Delta(d),
        _ => Pack::Plain(plain),
    }
}

/// Packs `fresh` (chunks of `key`'s job the host lacks) as [`pack_planned`] does, and
/// keeps them in the host's resemblance memory (usable once the host holds them).
pub(super) fn pack_fresh(
    key: &SourceKey,
    host: &SharedChunks,
    fresh: &[(ChunkRef, &[u8])],
    delta: bool,
) -> Vec<Pack> {
    pack_featured(key, host, fresh, &features_of(fresh, delta), delta)
}

/// The features of each of `fresh` (none without delta packs).
pub(super) fn features_of(fresh: &[(ChunkRef, &[u8])], delta: bool) -> Vec<Option<Features>> {
    fresh
        .iter()
        .map(|(_, b)| if delta { similar::features(b) } else { None })
        .collect()
}

/// [`pack_fresh`] with each chunk's features computed already.
pub(super) fn pack_featured(
    key: &SourceKey,
    host: &SharedChunks,
    fresh: &[(ChunkRef, &[u8])],
    feats: &[Option<Features>],
    delta: bool,
) -> Vec<Pack> {
    if fresh.is_empty() {
        return Vec::new();
    }
    let (sims, dict) = {
        let mut h = lock(host);
        let sims = similar_for(&mut h, fresh, feats);
        (sims, dictionary_for(&mut h, key, delta, fresh.len()))
    };
    let packs = pack_planned(fresh, feats, &sims, dict);
    let mut h = lock(host);
    for ((c, b), f) in fresh.iter().zip(feats) {
        if let Some(f) = f {
            h.similar.insert(c.id, b, f);
        }
    }
    packs
}

/// [`split_by_base`]'s answer: the chunks to pack now with their features, the ids of
/// those to pack later, and the ids of the in-flight chunks they wait for.
pub(super) type Split<'b> = (
    Vec<(ChunkRef, &'b [u8])>,
    Vec<Option<Features>>,
    Vec<ChunkId>,
    Vec<ChunkId>,
);

/// The least a job's chunks must weigh, in all, to wait for chunks like them in flight.
/// A wait costs the job about a round trip, and the most it can save is what those
/// chunks cost sent now: a generated source's own kilobyte or two is not worth one (on
/// a 200-file build where each unit resembles the one before, waiting made every job a
/// round trip slower), a header variant's tens of kilobytes are.
pub(super) const MIN_WAIT_BYTES: usize = 8 << 10;

/// `mine` (chunks a flight claimed, with their features `feats`, computed before the
/// host's lock is taken) split into those to pack now and those whose most alike chunk
/// in the resemblance memory is not held yet but in flight on another lane (claimed
/// before this flight's claim: an older token, so waiting for it cannot close a ring),
/// with those chunks. Nothing waits when the chunks that would wait weigh less than
/// [`MIN_WAIT_BYTES`] in all.
pub(super) fn split_by_base<'b>(
    host: &SharedChunks,
    token: u64,
    mine: &[(ChunkRef, &'b [u8])],
    feats: Vec<Option<Features>>,
) -> Split<'b> {
    let (mut now, mut now_feats, mut later, mut bases) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut h = lock(host);
    let HostChunks {
        known,
        similar,
        in_flight,
        ..
    } = &mut *h;
    // Per chunk, the in-flight chunk it would wait for.
    let waits: Vec<Option<ChunkId>> = mine
        .iter()
        .zip(&feats)
        .map(|(&(c, _), f)| {
            let best = f.as_ref().and_then(|f| {
                similar
                    .similar(f, MIN_SHARED, 1, |id| {
                        *id != c.id
                            && (known.holds(id) || in_flight.get(id).is_some_and(|t| *t < token))
                    })
                    .into_iter()
                    .next()
            })?;
            (!known.holds(&best.id)).then_some(best.id)
        })
        .collect();
    let waiting: usize = mine
        .iter()
        .zip(&waits)
        .filter(|(_, w)| w.is_some())
        .map(|((_, b), _)| b.len())
        .sum();
    let wait = waiting >= MIN_WAIT_BYTES;
    for ((&(c, b), f), base) in mine.iter().zip(feats).zip(waits) {
        match base.filter(|_| wait) {
            Some(base) => {
                later.push(c.id);
                if !bases.contains(&base) {
                    bases.push(base);
                }
            }
            None => {
                now.push((c, b));
                now_feats.push(f);
            }
        }
    }
    (now, now_feats, later, bases)
}

/// Held chunks like one new chunk, the most alike first.
pub(super) type Similar = Vec<similar::Match>;

/// Held chunks looked up per new chunk: at most this many serve as its dictionary.
pub(super) const SIMILAR_PER_CHUNK: usize = 2;
/// Features a chunk shares with a new one, at least, to serve as its dictionary (or to
/// be packed beside it).
pub(super) const MIN_SHARED: usize = 1;
/// Bytes of new chunks kept together in one pack because they resemble each other.
pub(super) const MAX_UNIT: usize = DICT_WINDOW * 3 / 4;

/// What a pack costs on the wire, about: its data, each dictionary id, each chunk's
/// reference, the message's framing.
pub(super) fn wire_cost(p: &Pack) -> usize {
    const PER_MESSAGE: usize = 16;
    const PER_CHUNK: usize = 36;
    match p {
        Pack::Plain(p) => p.data.data.len() + PER_CHUNK * p.chunks.len() + PER_MESSAGE,
        Pack::Delta(d) => {
            d.data.len()
                + std::mem::size_of::<ChunkId>() * d.dict.len()
                + PER_CHUNK * d.chunks.len()
                + PER_MESSAGE
                + 4
        }
    }
}

/// For each of `fresh` (with its features), the held chunks most like it: kept by the
/// host's resemblance memory and known to be held by the host.
pub(super) fn similar_for(
    h: &mut HostChunks,
    fresh: &[(ChunkRef, &[u8])],
    feats: &[Option<Features>],
) -> Vec<Similar> {
    let HostChunks { known, similar, .. } = h;
    fresh
        .iter()
        .zip(feats)
        .map(|((c, _), f)| match f {
            Some(f) => similar.similar(f, MIN_SHARED, SIMILAR_PER_CHUNK, |id| {
                *id != c.id && known.holds(id)
            }),
            None => Vec::new(),
        })
        .collect()
}

/// A job's new chunks (indices into its fresh chunks) that go in one pack, next to each
/// other, with the held chunks like them.
pub(super) struct Unit {
    members: Vec<usize>,
    bytes: usize,
    dict: Similar,
}

/// `fresh` in units: a chunk that resembles an earlier new chunk at least as much as any
/// held one goes right after it (LZ4 then finds their common text in the pack: the main
/// source's text in the preprocessed source and in its context file, say), as long as
/// the unit stays within [`MAX_UNIT`]; every other chunk starts a unit. Each unit's
/// dictionary is its chunks' similar held chunks.
pub(super) fn units(
    fresh: &[(ChunkRef, &[u8])],
    feats: &[Option<Features>],
    sims: &[Similar],
) -> Vec<Unit> {
    let like = similar::within(feats, MIN_SHARED);
    let mut units: Vec<Unit> = Vec::new();
    let mut unit_of = vec![0usize; fresh.len()];
    for (i, (c, _)) in fresh.iter().enumerate() {
        let len = c.len as usize;
        let held = sims[i].first().map_or(0, |m| m.shared);
        let joined = like[i]
            .filter(|(_, shared)| *shared >= held)
            .and_then(|(j, _)| {
                let u = &mut units[unit_of[j]];
                (u.bytes + len <= MAX_UNIT && u.members.len() < MAX_PACK_CHUNKS).then(|| {
                    let at = u.members.iter().position(|&m| m == j).map_or(0, |p| p + 1);
                    u.members.insert(at, i);
                    u.bytes += len;
                    unit_of[j]
                })
            });
        let u = joined.unwrap_or_else(|| {
            units.push(Unit {
                members: vec![i],
                bytes: len,
                dict: Vec::new(),
            });
            units.len() - 1
        });
        unit_of[i] = u;
        let dict = &mut units[u].dict;
        for m in &sims[i] {
            if dict.len() < MAX_DICT_IDS && !dict.iter().any(|d| d.id == m.id) {
                dict.push(m.clone());
            }
        }
    }
    units
}

/// Runs of units that have similar held chunks, each with its dictionary: a run grows
/// while its dictionary and its chunks fit in LZ4's window together (every chunk can
/// reach its similar ones) and within the bounds.
pub(super) fn similar_runs(units: &[Unit]) -> Vec<(Vec<usize>, Similar)> {
    let mut runs: Vec<(Vec<usize>, Similar)> = Vec::new();
    let mut bytes = 0usize;
    for u in units.iter().filter(|u| !u.dict.is_empty()) {
        let grown = runs.last_mut().and_then(|(run, dict)| {
            let new: Similar = u
                .dict
                .iter()
                .filter(|m| !dict.iter().any(|d| d.id == m.id))
                .cloned()
                .collect();
            let add = u.bytes + new.iter().map(|m| m.bytes.len()).sum::<usize>();
            (bytes + add <= DICT_WINDOW
                && dict.len() + new.len() <= MAX_DICT_IDS
                && run.len() + u.members.len() <= MAX_PACK_CHUNKS)
                .then(|| {
                    run.extend(&u.members);
                    dict.extend(new);
                    add
                })
        });
        match grown {
            Some(add) => bytes += add,
            None => {
                bytes = u.bytes + u.dict.iter().map(|m| m.bytes.len()).sum::<usize>();
                runs.push((u.members.clone(), u.dict.clone()));
            }
        }
    }
    runs
}

/// `fresh` packed the smallest way found: the runs of chunks that have similar held
/// chunks as delta packs against those (each run that comes out smaller so), the rest
/// as [`pack_chosen`] packs it against `dict`; or all of them in one pack, as
/// [`pack_chosen`] does, if that is smaller. Chunks alike go next to each other.
pub(super) fn pack_planned(
    fresh: &[(ChunkRef, &[u8])],
    feats: &[Option<Features>],
    sims: &[Similar],
    dict: Option<Vec<(ChunkId, Vec<u8>)>>,
) -> Vec<Pack> {
    if fresh.is_empty() {
        return Vec::new();
    }
    if feats.iter().all(Option::is_none) {
        return vec![pack_chosen(fresh, dict)];
    }
    let units = units(fresh, feats, sims);
    let ordered: Vec<(ChunkRef, &[u8])> = units
        .iter()
        .flat_map(|u| u.members.iter().map(|&i| fresh[i]))
        .collect();
    let mut whole = pack_chosen(fresh, dict.clone());
    if ordered.iter().zip(fresh).any(|(a, b)| a.0.id != b.0.id) {
        let alike = pack_chosen(&ordered, dict.clone());
        if wire_cost(&alike) < wire_cost(&whole) {
            whole = alike;
        }
    }
    let mut packs = Vec::new();
    let mut in_delta = vec![false; fresh.len()];
    for (run, similar) in similar_runs(&units) {
        let chunks: Vec<(ChunkRef, &[u8])> = run.iter().map(|&i| fresh[i]).collect();
        let refs: Vec<(ChunkId, &[u8])> = similar.iter().map(|m| (m.id, &m.bytes[..])).collect();
        let d = Pack::Delta(DeltaPack::pack(chunks.iter().copied(), &refs));
        let plain = Pack::Plain(ChunkPack::pack(chunks.iter().copied()));
        if wire_cost(&d) < wire_cost(&plain) {
            for &i in &run {
                in_delta[i] = true;
            }
            packs.push(d);
        }
    }
    if packs.is_empty() {
        return vec![whole];
    }
    let rest: Vec<(ChunkRef, &[u8])> = units
        .iter()
        .flat_map(|u| u.members.iter())
        .filter(|&&i| !in_delta[i])
        .map(|&i| fresh[i])
        .collect();
    if !rest.is_empty() {
        packs.insert(0, pack_chosen(&rest, dict));
    }
    if packs.iter().map(wire_cost).sum::<usize>() < wire_cost(&whole) {
        packs
    } else {
        vec![whole]
    }
}
