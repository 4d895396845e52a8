//! Unit tests of `mux::upload`: what a job packs and sends.

use super::pack::*;
use super::*;
use crate::proto::chunk::{delta, DeltaPack};
use crate::proto::msg::JobHeader;
use std::collections::HashMap;

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
    // The source's own dictionary alone: no resemblance memory.
    lock(&host).similar = SimilarChunks::new(0);
    let spec = spec(vec![]);
    let first = edited(0);
    let up = Upload::chunked(&spec, &first);
    let pack = one(up.pack_new(&host, true));
    assert!(!pack.is_delta(), "nothing sent before: plain");
    let sent: Vec<ChunkId> = pack.chunks().iter().map(|c| c.id).collect();
    lock(&host).known.learn(up.ids());
    up.remember(&host, &sent);
    let old: std::collections::HashMap<ChunkId, Vec<u8>> =
        up.chunks().map(|(c, b)| (c.id, b.to_vec())).collect();

    let second = edited(1);
    let up = Upload::chunked(&spec, &second);
    let Pack::Delta(d) = one(up.pack_new(&host, true)) else {
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
    assert!(!one(up.pack_new(&host, false)).is_delta(), "delta off");
    // A dictionary chunk the host is no longer believed to hold: plain.
    lock(&host).known.forget(&d.dict[..1]);
    assert!(!one(up.pack_new(&host, true)).is_delta());
    // Another source has no dictionary.
    let mut other = spec.clone();
    other.header.source_name = "b.c".into();
    assert!(!one(Upload::chunked(&other, &second).pack_new(&host, true)).is_delta());
}

/// The only pack of `packs`.
fn one(mut packs: Vec<Pack>) -> Pack {
    assert_eq!(packs.len(), 1, "{packs:?}");
    packs.pop().unwrap()
}

/// `n` header-like lines; with `variant`, every 40th line differs a little (as one
/// header's text differs between units: a macro more, another value). Shared with the
/// lane's tests.
pub(crate) fn macro_lines(n: u32, variant: Option<u32>) -> Vec<u8> {
    let mut t = Vec::new();
    for i in 0..n {
        let v = match variant {
            Some(v) if i % 40 == 7 => format!(" + {v}"),
            _ => String::new(),
        };
        t.extend(format!("#define LUAI_MACRO_{i} (lua_Integer)({i} * 31{v})\n").into_bytes());
    }
    t
}

/// [`macro_lines`] as a unit's directives-only text, cut.
fn header_text(n: u32, variant: Option<u32>) -> Source {
    let mut t = b"# 0 \"a.c\"\n# 1 \"/p//\"\n".to_vec();
    t.extend(macro_lines(n, variant));
    Source::Cut(Cut::normalised(&t))
}

/// Every pack's chunks, decoded with the dictionaries `held` gives, must be the job's.
fn round_trip(up: &Upload<'_>, packs: Vec<Pack>, held: &HashMap<ChunkId, Vec<u8>>) {
    let want: HashMap<ChunkId, Vec<u8>> = up.chunks().map(|(c, b)| (c.id, b.to_vec())).collect();
    for p in packs {
        let got = match p {
            Pack::Plain(p) => p.unpack().unwrap(),
            Pack::Delta(d) => {
                let dict = delta::dictionary(d.dict.iter().map(|id| held[id].as_slice()));
                d.unpack(&dict).unwrap()
            }
        };
        assert!(got.corrupt.is_empty());
        for (id, bytes) in got.good {
            assert_eq!(want[&id], bytes);
        }
    }
}

fn wire(packs: &[Pack]) -> usize {
    packs.iter().map(wire_cost).sum()
}

#[test]
fn a_chunk_like_one_another_source_sent_goes_as_a_delta_against_it() {
    let host = SharedChunks::default();
    let a_spec = spec(vec![]);
    let a = header_text(4000, None);
    let a_up = Upload::chunked(&a_spec, &a);
    let first = a_up.pack_new(&host, true);
    assert!(first.iter().all(|p| !p.is_delta()), "nothing held yet");
    lock(&host).known.learn(a_up.ids());
    let held: HashMap<ChunkId, Vec<u8>> = a_up.chunks().map(|(c, b)| (c.id, b.to_vec())).collect();
    assert!(!lock(&host).similar.is_empty(), "sent chunks are kept");

    // Another source (never sent, nothing remembered for any source), its own variant
    // of the text: every chunk differs, and each goes against the one it resembles.
    let mut b_spec = spec(vec![]);
    b_spec.header.cwd = "/q".into();
    b_spec.header.source_name = "b.c".into();
    let b = header_text(4000, Some(1));
    let b_up = Upload::chunked(&b_spec, &b);
    let fresh = b_up.pack_unknown(&mut lock(&host).known);
    assert!(fresh.chunks.len() >= 4, "{} chunks", fresh.chunks.len());
    let packs = b_up.pack_new(&host, true);
    let deltas: Vec<&DeltaPack> = packs
        .iter()
        .filter_map(|p| match p {
            Pack::Delta(d) => Some(d),
            Pack::Plain(_) => None,
        })
        .collect();
    assert!(!deltas.is_empty(), "{packs:?}");
    assert!(deltas
        .iter()
        .all(|d| d.dict.iter().all(|id| held.contains_key(id))));
    let mut sent: Vec<ChunkId> = packs
        .iter()
        .flat_map(|p| p.chunks())
        .map(|c| c.id)
        .collect();
    let mut want: Vec<ChunkId> = fresh.chunks.iter().map(|c| c.id).collect();
    sent.sort();
    want.sort();
    assert_eq!(sent, want, "every new chunk, once");
    let plain = wire(&[Pack::Plain(fresh.clone())]);
    assert!(
        wire(&packs) * 3 < plain,
        "{} against {plain} plain",
        wire(&packs)
    );
    round_trip(&b_up, packs, &held);

    // Delta packs off: plain.
    assert!(!one(b_up.pack_new(&host, false)).is_delta());
    // The resembling chunks are no longer believed held: not used.
    lock(&host)
        .known
        .forget(&held.keys().copied().collect::<Vec<_>>());
    let packs = b_up.pack_new(&host, true);
    assert!(packs.iter().all(|p| !p.is_delta()), "{packs:?}");
}

#[test]
fn a_chunk_like_nothing_held_goes_as_before() {
    let host = SharedChunks::default();
    let a = header_text(4000, None);
    let a_up = Upload::chunked(&spec(vec![]), &a);
    a_up.pack_new(&host, true);
    lock(&host).known.learn(a_up.ids());
    // Unrelated text, another source: one plain pack, as without resemblance.
    let mut t = b"# 0 \"b.c\"\n# 1 \"/p//\"\n".to_vec();
    t.extend(text(5000));
    let b = Source::Cut(Cut::normalised(&t));
    let mut b_spec = spec(vec![]);
    b_spec.header.source_name = "b.c".into();
    let b_up = Upload::chunked(&b_spec, &b);
    let plain = b_up.pack_unknown(&mut lock(&host).known);
    let Pack::Plain(p) = one(b_up.pack_new(&host, true)) else {
        panic!("plain")
    };
    assert_eq!(p, plain);
}

#[test]
fn an_older_server_gets_the_restored_text_whole() {
    let t = b"# 0 \"src/q.c\"\n# 1 \"src/q.c\"\nint q;\n".to_vec();
    let up = Upload::whole(&spec(vec![]), &Source::Cut(Cut::normalised(&t)));
    assert!(!up.is_chunked());
    assert_eq!(up.source.unpack(1 << 20).unwrap(), t);
}

/// The chunks of `claim`'s packs, written on `flight` (in flight, not yet held).
fn send_claim(flight: &mut Flight, claim: &Claim) -> Vec<ChunkRef> {
    let chunks: Vec<ChunkRef> = claim
        .mine
        .iter()
        .flat_map(|p| p.chunks())
        .copied()
        .collect();
    flight.sent(&chunks);
    chunks
}

#[test]
fn a_few_kilobytes_like_a_chunk_in_flight_go_at_once() {
    let host = SharedChunks::default();
    let (a_spec, a) = (spec(vec![]), header_text(60, None));
    let a_up = Upload::chunked(&a_spec, &a);
    let mut a_flight = Flight::new(&host);
    let a_claim = a_up.claim(&mut a_flight, true);
    let a_chunks = send_claim(&mut a_flight, &a_claim);
    let mut b_spec = spec(vec![]);
    b_spec.header.cwd = "/q".into();
    b_spec.header.source_name = "b.c".into();
    let b = header_text(60, Some(1));
    let b_up = Upload::chunked(&b_spec, &b);
    // Lane one's chunk is in flight and like lane two's: over MIN_WAIT_BYTES it would wait.
    let b_bytes: usize = b_up.chunks().map(|(_, b)| b.len()).sum();
    assert!(b_bytes < MIN_WAIT_BYTES, "{b_bytes}");
    let like = b_up.chunks().any(|(c, b)| {
        let f = crate::mux::similar::features(b).unwrap();
        let mut h = lock(&host);
        let found = h.similar.similar(&f, MIN_SHARED, 1, |id| *id != c.id);
        found.iter().any(|m| a_chunks.iter().any(|a| a.id == m.id))
    });
    assert!(like, "lane one's chunk is like lane two's");
    let mut b_flight = Flight::new(&host);
    let b_claim = b_up.claim(&mut b_flight, true);
    assert!(
        b_claim.later.is_empty() && b_claim.bases.is_empty(),
        "a kilobyte or two is not worth a round trip's wait"
    );
    let now: usize = b_claim.mine.iter().map(|p| p.chunks().len()).sum();
    assert_eq!(now, b_up.pack_unknown(&mut lock(&host).known).chunks.len());
}

#[test]
fn a_chunk_like_one_in_flight_on_another_lane_waits_for_it_then_goes_as_a_delta() {
    let host = SharedChunks::default();
    // Lane one claims and packs its text: in flight, not yet held.
    let a_spec = spec(vec![]);
    let a = header_text(4000, None);
    let a_up = Upload::chunked(&a_spec, &a);
    let mut a_flight = Flight::new(&host);
    let a_claim = a_up.claim(&mut a_flight, true);
    assert!(a_claim.later.is_empty() && a_claim.bases.is_empty());
    send_claim(&mut a_flight, &a_claim);
    let held: HashMap<ChunkId, Vec<u8>> = a_up.chunks().map(|(c, b)| (c.id, b.to_vec())).collect();

    // Lane two, another source with its own variant: its chunks wait for lane one's.
    let mut b_spec = spec(vec![]);
    b_spec.header.cwd = "/q".into();
    b_spec.header.source_name = "b.c".into();
    let b = header_text(4000, Some(1));
    let b_up = Upload::chunked(&b_spec, &b);
    let mut b_flight = Flight::new(&host);
    let b_claim = b_up.claim(&mut b_flight, true);
    assert!(!b_claim.later.is_empty(), "variants wait for their like");
    assert!(b_claim.bases.iter().all(|id| held.contains_key(id)));
    let now: usize = b_claim.mine.iter().map(|p| p.chunks().len()).sum();
    let fresh = b_up.pack_unknown(&mut lock(&host).known).chunks.len();
    assert_eq!(
        now + b_claim.later.len(),
        fresh,
        "every claimed chunk, once"
    );

    // Lane one's pack lands: the waiting chunks go as deltas against it.
    a_flight.stored(&[]);
    let late = b_up.pack_chunks(&host, &b_claim.later, true).unwrap();
    assert!(late.iter().any(Pack::is_delta), "{late:?}");
    for p in &late {
        if let Pack::Delta(d) = p {
            assert!(d.dict.iter().all(|id| held.contains_key(id)));
        }
    }
    round_trip(&b_up, late, &held);
    // Not the job's: no pack.
    assert!(b_up.pack_chunks(&host, &[ChunkId([7; 32])], true).is_none());
    // Delta packs off: nothing waits.
    let mut c_flight = Flight::new(&host);
    let mut c_spec = b_spec.clone();
    c_spec.header.source_name = "c.c".into();
    let c = header_text(4000, Some(2));
    let c_up = Upload::chunked(&c_spec, &c);
    let c_claim = c_up.claim(&mut c_flight, false);
    assert!(c_claim.later.is_empty() && c_claim.bases.is_empty());
}
