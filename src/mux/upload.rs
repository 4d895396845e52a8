//! Stage: what one native job uploads. To a server that takes chunks (protocol ≥ 3,
//! capability `chunks`) the source and the context files go as recipes, preceded in the
//! same write by the chunks the host is not known to hold; a `Missing` answer is served
//! from the same texts. To an older server they go as whole LZ4 blobs. Per host the mux
//! keeps which chunks it holds ([`HostChunks`]), the chunks each source's last job sent
//! and every chunk it sent by resemblance (so that a job's new chunks go LZ4'd against
//! the held chunks most like them, or its source's last ones, to a server that says
//! `chunk-delta`: one pack or several per job), and counts what it sent. Neighbours:
//! `mux::lane` (runs the exchange), `mux::known` (the id set), `mux::recent` (the last
//! sent chunks per source), `mux::similar` (the sent chunks by resemblance),
//! `proto::chunk` (cutting, packs), `wrapper` (cuts the source; the context files are
//! cut here).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::mux::known::KnownChunks;
use crate::mux::recent::{RecentChunks, SourceKey};
use crate::mux::similar::{self, Features, SimilarChunks};
use crate::proto::chunk::delta::{DICT_WINDOW, MAX_DICT_IDS};
use crate::proto::chunk::node::{self, Node};
use crate::proto::chunk::{delta, markers, ChunkPack, ChunkRef, Cut, DeltaPack, MAX_PACK_CHUNKS};
use crate::proto::chunk_id::ChunkId;
use crate::proto::msg::{Blob, ContextFile, Input, JobSpec, Message, CONTEXT_MANIFEST};

/// A job's preprocessed source as the lane gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The text as the preprocessor wrote it (classic `.i` for distcc wires, or a
    /// directives-only text nobody cut).
    Whole(Vec<u8>),
    /// Directives-only text, normalised and cut by the wrapper.
    Cut(Cut),
}

impl Source {
    /// The text as the preprocessor wrote it (a cut one restored).
    pub fn text(&self) -> std::borrow::Cow<'_, [u8]> {
        match self {
            Source::Whole(t) => t.as_slice().into(),
            Source::Cut(c) => match &c.recipe.markers {
                Some(m) => markers::restore(&c.bytes, m).into(),
                None => c.bytes.as_slice().into(),
            },
        }
    }
}

pub use crate::proto::status::ChunkCounters;

/// One host's chunk knowledge and counters, shared by its lanes.
#[derive(Debug, Default)]
pub struct HostChunks {
    pub known: KnownChunks,
    pub counters: ChunkCounters,
    /// Chunks a lane is sending to the host and the server has not yet acknowledged
    /// (`Stored`), by the [`Flight`] that claimed them.
    in_flight: HashMap<ChunkId, u64>,
    /// The last flight token handed out.
    flights: u64,
    /// Woken whenever chunks land (or a flight ends without them).
    settled: Arc<tokio::sync::Notify>,
    /// The chunks each source's last job sent (the dictionaries of delta packs).
    pub recent: RecentChunks,
    /// The chunks sent to the host, by resemblance (the dictionaries of delta packs for
    /// new chunks like one the host holds).
    pub similar: SimilarChunks,
}

/// What a job still has to do about the chunks its host lacks ([`Upload::claim`]).
pub struct Claim {
    /// Chunks no other lane is sending: this job's to send, in one pack or more.
    pub mine: Vec<Pack>,
    /// Chunks another lane is sending right now: wait for them to land.
    pub awaited: Vec<ChunkId>,
    /// Chunks of this job's (claimed) most like a chunk another lane is sending right
    /// now: packed once those ([`Claim::bases`]) have landed, against them
    /// ([`Upload::pack_chunks`]), rather than now without a dictionary. A cold build's
    /// first jobs start together, each with its own variant of the same headers.
    pub later: Vec<ChunkId>,
    /// The chunks in flight on other lanes that `later` waits for.
    pub bases: Vec<ChunkId>,
}

/// The chunks one job sends to a host whose server acknowledges them (`chunk-ack`),
/// pack by pack, until each `Stored` comes back. Dropped (the job ended, the lane
/// died), it gives up its claims so another lane sends those chunks.
pub struct Flight {
    chunks: SharedChunks,
    token: u64,
    /// The ids of each pack written and not yet acknowledged, oldest first.
    packs: VecDeque<Vec<ChunkId>>,
}

impl Flight {
    /// A new flight on `chunks`.
    pub fn new(chunks: &SharedChunks) -> Flight {
        let mut h = lock(chunks);
        h.flights += 1;
        Flight {
            chunks: chunks.clone(),
            token: h.flights,
            packs: VecDeque::new(),
        }
    }

    /// A pack with these chunks was written.
    pub fn sent(&mut self, chunks: &[ChunkRef]) {
        self.packs.push_back(chunks.iter().map(|c| c.id).collect());
    }

    /// The server acknowledged the oldest pack: its chunks are held, except `unshared`.
    /// An acknowledgement with no pack outstanding is the server's mistake, ignored.
    pub fn stored(&mut self, unshared: &[ChunkId]) {
        let Some(ids) = self.packs.pop_front() else {
            return;
        };
        let unshared: HashSet<&ChunkId> = unshared.iter().collect();
        let mut h = lock(&self.chunks);
        h.known
            .learn(ids.iter().filter(|id| !unshared.contains(id)).copied());
        for id in &ids {
            if h.in_flight.get(id) == Some(&self.token) {
                h.in_flight.remove(id);
            }
        }
        h.counters.chunks_known = h.known.len() as u64;
        h.settled.notify_waiters();
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        let mut h = lock(&self.chunks);
        let token = self.token;
        let before = h.in_flight.len();
        h.in_flight.retain(|_, t| *t != token);
        if h.in_flight.len() != before {
            h.settled.notify_waiters();
        }
    }
}

/// Waits, at most `limit`, until none of `ids` is in flight on another lane any more
/// (each has landed, or its flight ended without it). Returns the ids the host is still
/// not known to hold: the caller sends those itself.
pub async fn await_landed(
    chunks: &SharedChunks,
    mut ids: Vec<ChunkId>,
    limit: Duration,
) -> Vec<ChunkId> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let settled = lock(chunks).settled.clone();
        let notified = settled.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let waiting = {
            let mut h = lock(chunks);
            let h = &mut *h;
            ids.retain(|id| !h.known.holds(id));
            ids.iter().any(|id| h.in_flight.contains_key(id))
        };
        if !waiting || tokio::time::timeout_at(deadline, notified).await.is_err() {
            return ids;
        }
    }
}

/// The handle lanes share.
pub type SharedChunks = Arc<Mutex<HostChunks>>;

/// Locks a shared set (a panicked holder left nothing half-done that matters here).
pub fn lock(c: &SharedChunks) -> std::sync::MutexGuard<'_, HostChunks> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

/// A job's inputs ready for the wire.
pub struct Upload<'a> {
    /// The job's source.
    pub source: Input,
    /// The job's context files.
    pub context: Vec<ContextFile>,
    /// The source as the wrapper cut it, when it went as a recipe.
    source_cut: Option<&'a Cut>,
    /// The context files, cut here, when they went as recipes.
    context_cuts: Vec<Cut>,
    /// The nodes of the source's recipe (runs of header chunks under one id).
    nodes: Vec<Node>,
    /// The job's source, for [`RecentChunks`].
    key: SourceKey,
}

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

fn key_of(spec: &JobSpec) -> SourceKey {
    SourceKey {
        cwd: spec.header.cwd.clone(),
        source_name: spec.header.source_name.clone(),
    }
}

/// The dictionary kept for `key`, if delta packs are wanted, there is something to send,
/// and the host is believed to hold all of it.
fn dictionary_for(
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
fn pack_chosen(fresh: &[(ChunkRef, &[u8])], dict: Option<Vec<(ChunkId, Vec<u8>)>>) -> Pack {
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
fn pack_fresh(
    key: &SourceKey,
    host: &SharedChunks,
    fresh: &[(ChunkRef, &[u8])],
    delta: bool,
) -> Vec<Pack> {
    pack_featured(key, host, fresh, &features_of(fresh, delta), delta)
}

/// The features of each of `fresh` (none without delta packs).
fn features_of(fresh: &[(ChunkRef, &[u8])], delta: bool) -> Vec<Option<Features>> {
    fresh
        .iter()
        .map(|(_, b)| if delta { similar::features(b) } else { None })
        .collect()
}

/// [`pack_fresh`] with each chunk's features computed already.
fn pack_featured(
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
type Split<'b> = (
    Vec<(ChunkRef, &'b [u8])>,
    Vec<Option<Features>>,
    Vec<ChunkId>,
    Vec<ChunkId>,
);

/// `mine` (chunks a flight claimed, with their features `feats`, computed before the
/// host's lock is taken) split into those to pack now and those whose most alike chunk
/// in the resemblance memory is not held yet but in flight on another lane (claimed
/// before this flight's claim: an older token, so waiting for it cannot close a ring),
/// with those chunks.
fn split_by_base<'b>(
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
    for (&(c, b), f) in mine.iter().zip(feats) {
        let best = f.as_ref().and_then(|f| {
            similar
                .similar(f, MIN_SHARED, 1, |id| {
                    *id != c.id
                        && (known.holds(id) || in_flight.get(id).is_some_and(|t| *t < token))
                })
                .into_iter()
                .next()
        });
        match best {
            Some(m) if !known.holds(&m.id) => {
                later.push(c.id);
                if !bases.contains(&m.id) {
                    bases.push(m.id);
                }
            }
            _ => {
                now.push((c, b));
                now_feats.push(f);
            }
        }
    }
    (now, now_feats, later, bases)
}

/// Held chunks like one new chunk, the most alike first.
type Similar = Vec<similar::Match>;

/// Held chunks looked up per new chunk: at most this many serve as its dictionary.
const SIMILAR_PER_CHUNK: usize = 2;
/// Features a chunk shares with a new one, at least, to serve as its dictionary (or to
/// be packed beside it).
const MIN_SHARED: usize = 1;
/// Bytes of new chunks kept together in one pack because they resemble each other.
const MAX_UNIT: usize = DICT_WINDOW * 3 / 4;

/// What a pack costs on the wire, about: its data, each dictionary id, each chunk's
/// reference, the message's framing.
fn wire_cost(p: &Pack) -> usize {
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
fn similar_for(
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
struct Unit {
    members: Vec<usize>,
    bytes: usize,
    dict: Similar,
}

/// `fresh` in units: a chunk that resembles an earlier new chunk at least as much as any
/// held one goes right after it (LZ4 then finds their common text in the pack: the main
/// source's text in the preprocessed source and in its context file, say), as long as
/// the unit stays within [`MAX_UNIT`]; every other chunk starts a unit. Each unit's
/// dictionary is its chunks' similar held chunks.
fn units(fresh: &[(ChunkRef, &[u8])], feats: &[Option<Features>], sims: &[Similar]) -> Vec<Unit> {
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
fn similar_runs(units: &[Unit]) -> Vec<(Vec<usize>, Similar)> {
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
fn pack_planned(
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

impl<'a> Upload<'a> {
    /// Whole blobs (an older server, or a source nobody cut).
    pub fn whole(spec: &JobSpec, source: &Source) -> Upload<'a> {
        Upload {
            source: Input::Whole(Blob::pack(&source.text())),
            context: spec
                .context
                .iter()
                .map(|(name, data)| ContextFile {
                    name: name.clone(),
                    data: Input::Whole(Blob::pack(data)),
                })
                .collect(),
            source_cut: None,
            context_cuts: Vec::new(),
            nodes: Vec::new(),
            key: key_of(spec),
        }
    }

    /// Recipes: the source as the wrapper cut it (or whole, if it did not), its runs of
    /// header chunks as nodes, each context file cut here.
    pub fn chunked(spec: &JobSpec, source: &'a Source) -> Upload<'a> {
        let mut cuts = Vec::with_capacity(spec.context.len());
        let mut nodes = Vec::new();
        let (source, source_cut) = match source {
            Source::Cut(c) => {
                let g = node::group(c);
                nodes = g.nodes;
                (Input::Chunked(g.recipe), Some(c))
            }
            Source::Whole(t) => (Input::Whole(Blob::pack(t)), None),
        };
        let mut cut_file = |name: &str, data: &[u8]| {
            let cut = Cut::plain(data.to_vec());
            let file = ContextFile {
                name: name.to_string(),
                data: Input::Chunked(cut.recipe.clone()),
            };
            cuts.push(cut);
            file
        };
        // The main source goes as itself; the user headers, the same in many units, in
        // one manifest (when there are two or more).
        let main = &spec.header.source_name;
        let (own, headers): (Vec<_>, Vec<_>) =
            spec.context.iter().partition(|(name, _)| name == main);
        let mut context: Vec<ContextFile> = own
            .iter()
            .map(|(name, data)| cut_file(name, data))
            .collect();
        if headers.len() >= 2 {
            let listed: Vec<ContextFile> = headers
                .iter()
                .map(|(name, data)| cut_file(name, data))
                .collect();
            let bytes = postcard::to_allocvec(&listed).expect("context files encode");
            context.push(cut_file(CONTEXT_MANIFEST, &bytes));
        } else {
            context.extend(headers.iter().map(|(name, data)| cut_file(name, data)));
        }
        Upload {
            source,
            context,
            source_cut,
            context_cuts: cuts,
            nodes,
            key: key_of(spec),
        }
    }

    /// Every text that went as a recipe.
    fn cuts(&self) -> impl Iterator<Item = &Cut> {
        self.source_cut.into_iter().chain(&self.context_cuts)
    }

    /// Whether any input is a recipe.
    pub fn is_chunked(&self) -> bool {
        self.cuts().next().is_some()
    }

    /// Every chunk id of the job's recipes, nodes and the chunks they stand for (with
    /// repeats).
    pub fn ids(&self) -> impl Iterator<Item = ChunkId> + '_ {
        self.nodes.iter().map(|n| n.chunk.id).chain(
            self.cuts()
                .flat_map(|c| c.recipe.chunks.iter().map(|r| r.id)),
        )
    }

    /// Each distinct chunk with its bytes (nodes first, then in recipe order).
    fn chunks(&self) -> impl Iterator<Item = (ChunkRef, &[u8])> {
        let mut seen = HashSet::new();
        self.nodes
            .iter()
            .map(|n| (n.chunk, n.bytes.as_slice()))
            .chain(self.cuts().flat_map(Cut::chunks))
            .filter(move |(c, _)| seen.insert(c.id))
    }

    /// Each distinct chunk `known` does not hold, in recipe order: a node the host holds
    /// stands for its chunks (they went with it), so those are left out too.
    fn lacking(&self, known: &mut KnownChunks) -> Vec<(ChunkRef, &[u8])> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let mut nodes = self.nodes.iter().peekable();
        if let Some(cut) = self.source_cut {
            let leaves: Vec<_> = cut.chunks().collect();
            let mut i = 0;
            while i < leaves.len() {
                if let Some(n) = nodes.next_if(|n| n.members.start == i) {
                    if known.holds(&n.chunk.id) {
                        i = n.members.end;
                        continue;
                    }
                    if seen.insert(n.chunk.id) {
                        out.push((n.chunk, n.bytes.as_slice()));
                    }
                }
                let (c, bytes) = leaves[i];
                if !known.holds(&c.id) && seen.insert(c.id) {
                    out.push((c, bytes));
                }
                i += 1;
            }
        }
        for (c, bytes) in self.context_cuts.iter().flat_map(Cut::chunks) {
            if !known.holds(&c.id) && seen.insert(c.id) {
                out.push((c, bytes));
            }
        }
        out
    }

    /// A pack of the chunks `known` does not list (the ones the host lacks, as far as the
    /// mux knows), plain: what [`Upload::pack_new`] sends without a dictionary.
    #[cfg(test)]
    pub fn pack_unknown(&self, known: &mut KnownChunks) -> ChunkPack {
        ChunkPack::pack(self.lacking(known))
    }

    /// The chunks the host is not known to hold, in packs (none when there are none).
    /// With `delta`, the chunks like one the host holds (whichever source sent it) go
    /// LZ4'd against those, and the others against the chunks an earlier job of the
    /// same source sent (all still believed held), each where that comes out smaller
    /// than plain.
    pub fn pack_new(&self, host: &SharedChunks, delta: bool) -> Vec<Pack> {
        let fresh = self.lacking(&mut lock(host).known);
        pack_fresh(&self.key, host, &fresh, delta)
    }

    /// Splits the chunks the host is not known to hold into those this job sends (claimed
    /// for `flight`, so no other lane sends them too; packed as by [`Upload::pack_new`])
    /// and those another lane is sending.
    pub fn claim(&self, flight: &mut Flight, delta: bool) -> Claim {
        let (mine, awaited) = {
            let mut h = lock(&flight.chunks);
            let h = &mut *h;
            // Tokens follow the order of claims: a job waits only for chunks claimed
            // before its own (the ones in flight now, and the bases `split_by_base` picks
            // among older tokens), so no two jobs ever wait for each other.
            h.flights += 1;
            flight.token = h.flights;
            let mut awaited = Vec::new();
            let lacking = self.lacking(&mut h.known);
            let mine: Vec<(ChunkRef, &[u8])> = lacking
                .into_iter()
                .filter(|(c, _)| match h.in_flight.get(&c.id) {
                    Some(t) if *t != flight.token => {
                        awaited.push(c.id);
                        false
                    }
                    _ => {
                        h.in_flight.insert(c.id, flight.token);
                        true
                    }
                })
                .collect();
            (mine, awaited)
        };
        let feats = features_of(&mine, delta);
        let (now, now_feats, later, bases) = if delta {
            split_by_base(&flight.chunks, flight.token, &mine, feats)
        } else {
            (mine, feats, Vec::new(), Vec::new())
        };
        Claim {
            mine: pack_featured(&self.key, &flight.chunks, &now, &now_feats, delta),
            awaited,
            later,
            bases,
        }
    }

    /// The job's chunks `ids`, packed as [`Upload::pack_new`] packs (against held chunks
    /// like them); `None` if one is not the job's.
    pub fn pack_chunks(
        &self,
        host: &SharedChunks,
        ids: &[ChunkId],
        delta: bool,
    ) -> Option<Vec<Pack>> {
        let wanted: HashSet<&ChunkId> = ids.iter().collect();
        let found: Vec<(ChunkRef, &[u8])> = self
            .chunks()
            .filter(|(c, _)| wanted.contains(&c.id))
            .collect();
        (found.len() == wanted.len()).then(|| pack_fresh(&self.key, host, &found, delta))
    }

    /// The job ran with the chunks `sent` (its first packs): they are what the next job of
    /// the same source is packed against. The memory keeps the last of them, so they are
    /// ordered by how much they are the source's own: the user headers' text first, then
    /// the source's, then the main source file's (the first context file), which is
    /// what an edit changes.
    pub fn remember(&self, host: &SharedChunks, sent: &[ChunkId]) {
        let sent: HashSet<&ChunkId> = sent.iter().collect();
        let mut seen = HashSet::new();
        let texts = self
            .context_cuts
            .iter()
            .skip(1)
            .chain(self.source_cut)
            .chain(self.context_cuts.first());
        let chunks = texts
            .flat_map(Cut::chunks)
            .filter(|(c, _)| sent.contains(&c.id) && seen.insert(c.id))
            .map(|(c, b)| (c.id, b));
        lock(host).recent.remember(&self.key, chunks);
    }

    /// A pack of the chunks `ids` names, or `None` if one is not the job's.
    pub fn pack_ids(&self, ids: &[ChunkId]) -> Option<ChunkPack> {
        let wanted: HashSet<&ChunkId> = ids.iter().collect();
        let found: Vec<(ChunkRef, &[u8])> = self
            .chunks()
            .filter(|(c, _)| wanted.contains(&c.id))
            .collect();
        (found.len() == wanted.len()).then(|| ChunkPack::pack(found))
    }
}

#[cfg(test)]
pub(crate) mod tests;
