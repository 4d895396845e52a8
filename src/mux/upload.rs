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
//! `proto::chunk` (cutting, packs), `mux::upload::pack` (packs a job's new chunks),
//! `wrapper` (cuts the source; the context files are cut here).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::mux::known::KnownChunks;
use crate::mux::recent::{RecentChunks, SourceKey};
use crate::mux::similar::SimilarChunks;
use crate::proto::chunk::node::{self, Node};
use crate::proto::chunk::{markers, ChunkPack, ChunkRef, Cut};
use crate::proto::chunk_id::ChunkId;
use crate::proto::msg::{Blob, ContextFile, Input, JobSpec, CONTEXT_MANIFEST};

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

fn key_of(spec: &JobSpec) -> SourceKey {
    SourceKey {
        cwd: spec.header.cwd.clone(),
        source_name: spec.header.source_name.clone(),
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

mod pack;
pub use pack::Pack;
use pack::{features_of, pack_featured, pack_fresh, split_by_base};

#[cfg(test)]
pub(crate) mod tests;
