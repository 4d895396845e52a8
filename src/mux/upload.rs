//! Stage: what one native job uploads. To a server that takes chunks (protocol ≥ 3,
//! capability `chunks`) the source and the context files go as recipes, preceded in the
//! same write by the chunks the host is not known to hold; a `Missing` answer is served
//! from the same texts. To an older server they go as whole LZ4 blobs. Per host the mux
//! keeps which chunks it holds ([`HostChunks`]), the chunks each source's last job sent
//! (so that the next job's new chunks go LZ4'd against them, to a server that says
//! `chunk-delta`), and counts what it sent. Neighbours: `mux::lane` (runs the exchange),
//! `mux::known` (the id set), `mux::recent` (the sent chunks), `proto::chunk` (cutting,
//! packs), `wrapper` (cuts the source; the context files are cut here).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::mux::known::KnownChunks;
use crate::mux::recent::{RecentChunks, SourceKey};
use crate::proto::chunk::{delta, markers, ChunkPack, ChunkRef, Cut, DeltaPack};
use crate::proto::chunk_id::ChunkId;
use crate::proto::msg::{Blob, ContextFile, Input, JobSpec, Message};

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
    /// The chunks each source's last job sent (the dictionaries of delta packs).
    pub recent: RecentChunks,
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
            key: key_of(spec),
        }
    }

    /// Recipes: the source as the wrapper cut it (or whole, if it did not), each context
    /// file cut here.
    pub fn chunked(spec: &JobSpec, source: &'a Source) -> Upload<'a> {
        let mut cuts = Vec::with_capacity(spec.context.len());
        let (source, source_cut) = match source {
            Source::Cut(c) => (Input::Chunked(c.recipe.clone()), Some(c)),
            Source::Whole(t) => (Input::Whole(Blob::pack(t)), None),
        };
        let context = spec
            .context
            .iter()
            .map(|(name, data)| {
                let cut = Cut::plain(data.clone());
                let input = Input::Chunked(cut.recipe.clone());
                cuts.push(cut);
                ContextFile {
                    name: name.clone(),
                    data: input,
                }
            })
            .collect();
        Upload {
            source,
            context,
            source_cut,
            context_cuts: cuts,
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

    /// Every chunk id of the job's recipes (with repeats).
    pub fn ids(&self) -> impl Iterator<Item = ChunkId> + '_ {
        self.cuts()
            .flat_map(|c| c.recipe.chunks.iter().map(|r| r.id))
    }

    /// Each distinct chunk with its bytes, in recipe order.
    fn chunks(&self) -> impl Iterator<Item = (ChunkRef, &[u8])> {
        let mut seen = HashSet::new();
        self.cuts()
            .flat_map(Cut::chunks)
            .filter(move |(c, _)| seen.insert(c.id))
    }

    /// A pack of the chunks `known` does not list (the ones the host lacks, as far as the
    /// mux knows).
    pub fn pack_unknown(&self, known: &mut KnownChunks) -> ChunkPack {
        ChunkPack::pack(self.chunks().filter(|(c, _)| !known.holds(&c.id)))
    }

    /// The chunks the host is not known to hold. With `delta`, when the memory has
    /// chunks an earlier job of the same source sent (all still believed held), they
    /// are LZ4'd against those, if that comes out smaller than a plain pack.
    pub fn pack_new(&self, host: &SharedChunks, delta: bool) -> Pack {
        let (fresh, dict) = {
            let mut guard = lock(host);
            let h = &mut *guard;
            let fresh: Vec<(ChunkRef, &[u8])> = self
                .chunks()
                .filter(|(c, _)| !h.known.holds(&c.id))
                .collect();
            let dict = (delta && !fresh.is_empty())
                .then(|| h.recent.dictionary(&self.key))
                .flatten()
                .filter(|d| d.iter().all(|(id, _)| h.known.holds(id)))
                .map(<[_]>::to_vec);
            (fresh, dict)
        };
        let plain = ChunkPack::pack(fresh.iter().copied());
        let Some(dict) = dict else {
            return Pack::Plain(plain);
        };
        // Each dictionary id costs its 32 bytes: try the last chunks that hold as much as
        // the pack (where the edited text's old version is), and the whole window.
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
