//! Offline measurement of the chunk path's upload bytes (not part of the product): for a
//! workload directory with `src/` (sources), `do/` (directives-only outputs) and `ii/`
//! (classic `.i`), the bytes a mux would send per job, with a window of `J` jobs in flight
//! whose chunks are not yet known (`INFLIGHT=1`: a chunk is known once sent), against LZO
//! of the classic `.i`. Packs go as the mux sends them (`Upload::pack_new`): LZ4'd
//! against the held chunks most like them, or each source's last sent chunks, when that
//! is smaller (`DELTA=0`: never; `PACKS=1` lists every pack).
//! Several DIRs run one after another against the same host books (a cold tree, then
//! the same tree edited: the warm rebuild).
//!
//! `cargo run --release --example chunksim -- J DIR [DIR...]`

use std::collections::HashSet;
use std::path::Path;

use hoardcc::mux::upload::{Source, Upload};
use hoardcc::proto::chunk::Cut;
use hoardcc::proto::frame;
use hoardcc::proto::msg::{Blob, Job, JobHeader, JobSpec, Message, SourceKind};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let window: usize = args[1].parse().unwrap();
    let inflight = std::env::var("INFLIGHT").is_ok();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cid = rt
        .block_on(hoardcc::identity::probe(
            Path::new("/usr/bin/gcc"),
            &hoardcc::identity::ProbeOptions {
                hash_binaries: true,
                search_path: None,
            },
        ))
        .unwrap();
    // The host's books as the mux keeps them: known chunks, and (with delta packs, unless
    // DELTA=0) each source's last sent chunks.
    let delta = std::env::var("DELTA").as_deref() != Ok("0");
    let host = hoardcc::mux::upload::SharedChunks::default();
    let mut pending: Vec<Vec<hoardcc::proto::chunk::ChunkId>> = Vec::new();
    for dir in &args[2..] {
        let dir = Path::new(dir);
        let mut names: Vec<String> = std::fs::read_dir(dir.join("do"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let mut t_delta = 0usize;
        let mut t_msgs = 0usize;
        let mut t_packing = std::time::Duration::ZERO;
        let (mut t_job, mut t_pack, mut t_lzo, mut t_cid, mut t_ctx_raw) = (0, 0, 0, 0, 0);
        let mut t_chunks = 0;
        let (mut t_src_new, mut t_ctx_new, mut t_src_lz, mut t_ctx_lz, mut t_ctx_dict) =
            (0usize, 0usize, 0usize, 0usize, 0usize);
        for n in &names {
            let text = std::fs::read(dir.join("do").join(n)).unwrap();
            let ii = std::fs::read(dir.join("ii").join(n)).unwrap();
            t_lzo += lzokay::compress::compress(&ii).unwrap().len();
            let stem = n.trim_end_matches(".i");
            let src = ["c", "cpp"]
                .iter()
                .map(|e| format!("src/{stem}.{e}"))
                .find(|p| dir.join(p).exists())
                .unwrap();
            let read = |p: &str| std::fs::read(dir.join(p)).ok();
            let context = hoardcc::wrapper::preprocess::context_files(&src, &text, &read);
            t_ctx_raw += context.iter().map(|(_, d)| d.len()).sum::<usize>();
            let spec = JobSpec {
                header: JobHeader {
                    compiler: "gcc".into(),
                    args: vec!["-O2".into(), "-g".into(), "-c".into()],
                    assemble_only: false,
                    cwd: "/home/user/project".into(),
                    source_name: src.clone(),
                    output_name: format!("obj/{stem}.o"),
                    extra_outputs: vec![],
                },
                distcc_argv: vec![],
                env: vec![],
                context,
                compiler_id: Some(cid.clone()),
                cache: true,
            };
            let source = Source::Cut(Cut::normalised(&text));
            if std::env::var("CUTS").is_ok() {
                if let Source::Cut(c) = &source {
                    eprintln!(
                        "{n}: {:?}",
                        c.recipe
                            .chunks
                            .iter()
                            .take(6)
                            .map(|r| (r.len, r.id.0[0]))
                            .collect::<Vec<_>>()
                    );
                }
            }
            let mut up = Upload::chunked(&spec, &source);
            let job = Job {
                id: 1,
                header: spec.header.clone(),
                source_kind: SourceKind::DirectivesOnly,
                source: std::mem::replace(
                    &mut up.source,
                    hoardcc::proto::msg::Input::Whole(Blob::empty()),
                ),
                context: std::mem::take(&mut up.context),
                env: vec![],
                compiler_id: spec.compiler_id.clone(),
                cache: true,
            };
            t_cid += frame::encode(&cid).len();
            t_job += frame::encode(&Message::Job3(job)).len() + 4;
            // Jobs more than `window` back have been acknowledged.
            if pending.len() >= window {
                let done = pending.remove(0);
                hoardcc::mux::upload::lock(&host).known.learn(done);
            }
            let started = std::time::Instant::now();
            let sent_packs = up.pack_new(&host, delta);
            t_packing += started.elapsed();
            let sent: Vec<_> = sent_packs
                .iter()
                .flat_map(|p| p.chunks())
                .map(|c| c.id)
                .collect();
            if inflight {
                hoardcc::mux::upload::lock(&host)
                    .known
                    .learn(sent.iter().copied());
            }
            up.remember(&host, &sent);
            t_delta += sent_packs.iter().filter(|p| p.is_delta()).count();
            if std::env::var("PACKS").is_ok() {
                for p in &sent_packs {
                    let raw: u32 = p.chunks().iter().map(|c| c.len).sum();
                    match p {
                        hoardcc::mux::upload::Pack::Plain(x) => eprintln!(
                            "{n} plain {} chunks raw {raw} data {}",
                            x.chunks.len(),
                            x.data.data.len()
                        ),
                        hoardcc::mux::upload::Pack::Delta(x) => eprintln!(
                            "{n} delta {} chunks raw {raw} data {} dict {}",
                            x.chunks.len(),
                            x.data.len(),
                            x.dict.len()
                        ),
                    }
                }
            }
            t_msgs += sent_packs.len();
            let sent_frame: usize = sent_packs
                .into_iter()
                .map(|p| frame::encode(&p.into_message()).len() + 4)
                .sum();
            // The same chunks, plain, for the breakdown below.
            let pack = up.pack_ids(&sent).unwrap();
            t_chunks += pack.chunks.len();
            {
                let src_ids: HashSet<_> = match &source {
                    Source::Cut(c) => c.recipe.chunks.iter().map(|r| r.id).collect(),
                    _ => HashSet::new(),
                };
                let raw = pack.data.unpack(1 << 30).unwrap();
                let mut at = 0usize;
                let (mut s_raw, mut c_raw) = (Vec::new(), Vec::new());
                for c in &pack.chunks {
                    let b = &raw[at..at + c.len as usize];
                    at += c.len as usize;
                    if src_ids.contains(&c.id) {
                        s_raw.extend_from_slice(b)
                    } else {
                        c_raw.extend_from_slice(b)
                    }
                }
                if std::env::var("DUMP").as_deref() == Ok(n.as_str()) {
                    std::fs::write("/tmp/newsrc.txt", &s_raw).unwrap();
                }
                t_src_new += s_raw.len();
                t_ctx_new += c_raw.len();
                t_src_lz += lz4_flex::compress(&s_raw).len();
                t_ctx_lz += lz4_flex::compress(&c_raw).len();
                let dict = &text[text.len().saturating_sub(65536)..];
                t_ctx_dict += lz4_flex::block::compress_with_dict(&c_raw, dict).len();
            }
            t_pack += sent_frame;
            if std::env::var("PERJOB").is_ok() {
                eprintln!(
                    "{n}: {} chunks ({:?}), frame {sent_frame} B, delta {}",
                    pack.chunks.len(),
                    pack.chunks.iter().map(|c| c.len).collect::<Vec<_>>(),
                    t_delta
                );
            }
            pending.push(up.ids().collect());
        }
        let kib = |b: usize| b as f64 / 1024.0;
        println!("  new source chunks raw {:.0} lz4 {:.0}; new context raw {:.0} lz4 {:.0} lz4-dict(.i tail) {:.0} KiB", kib(t_src_new), kib(t_src_lz), kib(t_ctx_new), kib(t_ctx_lz), kib(t_ctx_dict));
        println!(
        "{}: {} jobs, window {window}{}: lzo {:.0} KiB; job frames {:.0} KiB (compiler ids {:.0}), packs {:.0} KiB ({t_chunks} chunks, {t_msgs} packs, {t_delta} delta; {:.0} B/job), context raw {:.0} KiB; packing {:.2} ms/job; total {:.2}x lzo",
        dir.display(),
        names.len(),
        if inflight { " (in-flight known)" } else { "" },
        kib(t_lzo),
        kib(t_job),
        kib(t_cid),
        kib(t_pack),
        t_pack as f64 / names.len() as f64,
        kib(t_ctx_raw),
        t_packing.as_secs_f64() * 1e3 / names.len() as f64,
        (t_job + t_pack) as f64 / t_lzo as f64
    );
    }
}
