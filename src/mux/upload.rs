//! Stage: what one native job uploads. To a server that takes chunks (protocol ≥ 3,
//! capability `chunks`) the source and the context files go as recipes, preceded in the
//! same write by the chunks the host is not known to hold; a `Missing` answer is served
//! from the same texts. To an older server they go as whole LZ4 blobs. Per host the mux
//! keeps which chunks it holds ([`HostChunks`]), the chunks each source's last job sent
//! (so that the next job's new chunks go LZ4'd against them, to a server that says
//! `chunk-delta`), and counts what it sent. Neighbours: `mux::lane` (runs the exchange),
//! `mux::known` (the id set), `mux::recent` (the sent chunks), `proto::chunk` (cutting,
//! packs), `wrapper` (cuts the source; the context files are cut here).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::mux::known::KnownChunks;
use crate::mux::recent::{RecentChunks, SourceKey};
use crate::proto::chunk::node::{self, Node};
use crate::proto::chunk::{delta, markers, ChunkPack, ChunkRef, Cut, DeltaPack};
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
}

/// What a job still has to do about the chunks its host lacks ([`Upload::claim`]).
pub struct Claim {
    /// Chunks no other lane is sending: this job's to send.
    pub mine: Pack,
    /// Chunks another lane is sending right now: wait for them to land.
    pub awaited: Vec<ChunkId>,
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

    /// The chunks the host is not known to hold. With `delta`, when the memory has
    /// chunks an earlier job of the same source sent (all still believed held), they
    /// are LZ4'd against those, if that comes out smaller than a plain pack.
    pub fn pack_new(&self, host: &SharedChunks, delta: bool) -> Pack {
        let (fresh, dict) = {
            let mut h = lock(host);
            let fresh = self.lacking(&mut h.known);
            let dict = dictionary_for(&mut h, &self.key, delta, fresh.len());
            (fresh, dict)
        };
        pack_chosen(&fresh, dict)
    }

    /// Splits the chunks the host is not known to hold into those this job sends (claimed
    /// for `flight`, so no other lane sends them too; packed as by [`Upload::pack_new`])
    /// and those another lane is sending.
    pub fn claim(&self, flight: &Flight, delta: bool) -> Claim {
        let (mine, dict, awaited) = {
            let mut h = lock(&flight.chunks);
            let h = &mut *h;
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
            let dict = dictionary_for(h, &self.key, delta, mine.len());
            (mine, dict, awaited)
        };
        Claim {
            mine: pack_chosen(&mine, dict),
            awaited,
        }
    }

    /// The job ran with the chunks `sent` (its first pack): they are what the next job of
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
mod tests {
    use super::*;
    use crate::proto::msg::JobHeader;

    fn spec(context: Vec<(String, Vec<u8>)>) -> JobSpec {
        JobSpec {
            header: JobHeader {
                compiler: "gcc".into(),
                args: vec![],
                assemble_only: false,
                cwd: "/p".into(),
                source_name: "a.c".into(),
                output_name: "a.o".into(),
                extra_outputs: vec![],
            },
            distcc_argv: vec![],
            env: vec![],
            context,
            compiler_id: None,
            cache: true,
        }
    }

    fn text(n: usize) -> Vec<u8> {
        (0..n as u32)
            .flat_map(|i| format!("int v{i} = {i};\n").into_bytes())
            .collect()
    }

    #[test]
    fn only_unknown_chunks_are_packed_and_missing_ones_are_found() {
        let mut t = b"# 0 \"a.c\"\n# 1 \"/p//\"\n".to_vec();
        t.extend(text(5000));
        let source = Source::Cut(Cut::normalised(&t));
        assert_eq!(source.text(), t, "a cut source restores to the text");
        let spec = spec(vec![("a.c".into(), b"int a;\n".to_vec())]);
        let up = Upload::chunked(&spec, &source);
        assert!(up.is_chunked());
        assert!(matches!(up.source, Input::Chunked(_)));
        assert!(matches!(up.context[0].data, Input::Chunked(_)));
        let all: Vec<ChunkId> = up.ids().collect();
        let mut known = KnownChunks::new(1000);
        assert_eq!(up.pack_unknown(&mut known).chunks.len(), all.len());
        known.learn(all.iter().copied().skip(1));
        let pack = up.pack_unknown(&mut known);
        assert_eq!(
            pack.chunks.iter().map(|c| c.id).collect::<Vec<_>>(),
            vec![all[0]]
        );
        let asked = up.pack_ids(&[all[2], all[1]]).unwrap();
        assert_eq!(asked.unpack().unwrap().good.len(), 2);
        assert!(up.pack_ids(&[ChunkId([9; 32])]).is_none(), "not the job's");
    }

    #[test]
    fn a_held_node_stands_for_its_chunks() {
        let mut t =
            b"# 0 \"a.c\"\n# 1 \"/p//\"\n# 1 \"a.c\"\n# 1 \"/usr/include/h.h\" 1 3 4\n".to_vec();
        t.extend(text(20_000));
        t.extend(b"# 2 \"a.c\" 2\n");
        t.extend((0..100).flat_map(|i| format!("int main_{i} = {i};\n").into_bytes()));
        let source = Source::Cut(Cut::normalised(&t));
        let spec = spec(vec![]);
        let up = Upload::chunked(&spec, &source);
        assert!(!up.nodes.is_empty(), "the header's chunks are a node");
        let Input::Chunked(recipe) = &up.source else {
            panic!("a recipe")
        };
        assert_eq!(recipe.nodes.len(), up.nodes.len());
        let mut known = KnownChunks::new(1000);
        let all = up.pack_unknown(&mut known);
        let ids: Vec<ChunkId> = up.ids().collect();
        assert_eq!(
            all.chunks.len(),
            ids.iter().collect::<HashSet<_>>().len(),
            "nodes and leaves"
        );
        // The host holds the nodes: their chunks are not sent again.
        known.learn(up.nodes.iter().map(|n| n.chunk.id));
        let rest = up.pack_unknown(&mut known);
        let covered: HashSet<ChunkId> = up
            .nodes
            .iter()
            .flat_map(|n| {
                up.source_cut.unwrap().recipe.chunks[n.members.clone()]
                    .iter()
                    .map(|c| c.id)
            })
            .collect();
        assert!(!covered.is_empty());
        assert!(
            rest.chunks.iter().all(|c| !covered.contains(&c.id)),
            "{rest:?}"
        );
        assert!(!rest.chunks.is_empty(), "the main source's chunk");
        // Asked for by id (a Missing answer), a node's chunk is found.
        let leaf = *covered.iter().next().unwrap();
        assert_eq!(up.pack_ids(&[leaf]).unwrap().chunks[0].id, leaf);
    }

    /// A source cut as the wrapper cuts it, `edit` lines appended.
    fn edited(edit: usize) -> Source {
        let mut t = b"# 0 \"a.c\"\n# 1 \"/p//\"\n".to_vec();
        t.extend(text(5000));
        for e in 0..edit {
            t.extend(format!("int edit{e} = {e};\n").into_bytes());
        }
        Source::Cut(Cut::normalised(&t))
    }

    #[test]
    fn an_edited_source_goes_as_a_delta_against_what_its_last_job_sent() {
        let host = SharedChunks::default();
        let spec = spec(vec![]);
        let first = edited(0);
        let up = Upload::chunked(&spec, &first);
        let pack = up.pack_new(&host, true);
        assert!(!pack.is_delta(), "nothing sent before: plain");
        let sent: Vec<ChunkId> = pack.chunks().iter().map(|c| c.id).collect();
        lock(&host).known.learn(up.ids());
        up.remember(&host, &sent);
        let old: std::collections::HashMap<ChunkId, Vec<u8>> =
            up.chunks().map(|(c, b)| (c.id, b.to_vec())).collect();

        let second = edited(1);
        let up = Upload::chunked(&spec, &second);
        let Pack::Delta(d) = up.pack_new(&host, true) else {
            panic!("a delta pack")
        };
        let plain = up.pack_unknown(&mut lock(&host).known);
        assert_eq!(d.chunks, plain.chunks, "the same chunks");
        assert!(
            d.data.len() * 4 < plain.data.data.len(),
            "delta {} bytes, plain {}",
            d.data.len(),
            plain.data.data.len()
        );
        let dict = delta::dictionary(d.dict.iter().map(|id| old[id].as_slice()));
        let got = d.unpack(&dict).unwrap();
        assert!(got.corrupt.is_empty());
        assert_eq!(got.good.len(), plain.chunks.len());
        assert!(!up.pack_new(&host, false).is_delta(), "delta off");
        // A dictionary chunk the host is no longer believed to hold: plain.
        lock(&host).known.forget(&d.dict[..1]);
        assert!(!up.pack_new(&host, true).is_delta());
        // Another source has no dictionary.
        let mut other = spec.clone();
        other.header.source_name = "b.c".into();
        assert!(!Upload::chunked(&other, &second)
            .pack_new(&host, true)
            .is_delta());
    }

    #[test]
    fn an_older_server_gets_the_restored_text_whole() {
        let t = b"# 0 \"src/q.c\"\n# 1 \"src/q.c\"\nint q;\n".to_vec();
        let up = Upload::whole(&spec(vec![]), &Source::Cut(Cut::normalised(&t)));
        assert!(!up.is_chunked());
        assert_eq!(up.source.unpack(1 << 20).unwrap(), t);
    }
}
