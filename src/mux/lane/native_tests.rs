//! Unit tests of `mux::lane::native` against in-memory servers: a compiler identity is
//! declared once per lane and jobs after it carry none; a job whose chunks another lane
//! is sending waits for that lane's `Stored` and then sends none of them; a lane that
//! dies with its chunks unacknowledged leaves them for the waiting job to send; an
//! edited source's new chunks go as a delta against its last job's; a job that sends
//! several packs has each acknowledged.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::DuplexStream;
use tokio::sync::oneshot;

use super::native::{run_native, Books, Peer};
use super::*;
use crate::mux::upload::{self, SharedChunks};
use crate::proto::chunk::Cut;
use crate::proto::msg::{ChunkId, CompilerId, Input};

const WAIT: Duration = Duration::from_secs(10);

fn spec(compiler_id: Option<CompilerId>) -> JobSpec {
    JobSpec {
        distcc_argv: vec![],
        compiler_id,
        ..super::tests::spec()
    }
}

fn peer(acks: bool, identity: bool) -> Peer<'static> {
    Peer {
        host: "h",
        version: PROTOCOL_VERSION,
        chunks: true,
        acks,
        identity,
        delta: false,
    }
}

fn ok(id: u64) -> Message {
    Message::Result3(JobResult {
        id,
        exit_code: 0,
        stdout: Blob::raw(vec![]),
        stderr: Blob::raw(vec![]),
        outputs: vec![],
        cached: false,
    })
}

fn text(seed: u32) -> Vec<u8> {
    let mut t = b"# 0 \"a.c\"\n# 1 \"/src//\"\n# 1 \"a.c\"\n".to_vec();
    t.extend((0..6000u32).flat_map(|i| format!("int v{i} = {};\n", i ^ seed).into_bytes()));
    t
}

async fn next(server: &mut DuplexStream) -> Message {
    tokio::time::timeout(WAIT, frame::read_message(server))
        .await
        .expect("a message in time")
        .unwrap()
        .expect("not EOF")
}

fn gcc_id(version: &str) -> CompilerId {
    CompilerId {
        version: version.into(),
        target: "x86_64-linux-gnu".into(),
        configured: "Configured with: ../src/configure --long --list --of --options".into(),
        binaries: Some("ab".repeat(32)),
    }
}

#[tokio::test]
async fn an_identity_is_declared_once_per_lane() {
    let (mut client, mut server) = tokio::io::duplex(1 << 20);
    let books = SharedChunks::default();
    let b = Books {
        known: &books,
        counts: &books,
    };
    let source = Source::Whole(b"int x;\n".to_vec());
    let mut declared = HashMap::new();
    let serve = async {
        let mut seen = Vec::new();
        for id in 1..=3 {
            loop {
                match next(&mut server).await {
                    Message::Identity { compiler, id } => seen.push((compiler, Some(id))),
                    Message::Job3(j) => {
                        seen.push(("job".into(), j.compiler_id));
                        break;
                    }
                    other => panic!("{other:?}"),
                }
            }
            frame::write_message(&mut server, &ok(id)).await.unwrap();
        }
        seen
    };
    let jobs = async {
        let (a, b12) = (spec(Some(gcc_id("12.2.0"))), spec(Some(gcc_id("13.1.0"))));
        for (id, s) in [(1, &a), (2, &a), (3, &b12)] {
            let r = run_native(
                &mut client,
                id,
                s,
                &source,
                WAIT,
                peer(false, true),
                b,
                &mut declared,
                &|_| {},
            )
            .await;
            assert_eq!(r.unwrap().exit_code, 0);
        }
    };
    let (seen, ()) = tokio::join!(serve, jobs);
    assert_eq!(
        seen,
        [
            ("gcc".into(), Some(gcc_id("12.2.0"))),
            ("job".into(), None),
            ("job".into(), None),
            ("gcc".into(), Some(gcc_id("13.1.0"))),
            ("job".into(), None),
        ]
    );

    // A server without the cap gets the identity in every job.
    let (mut client, mut server) = tokio::io::duplex(1 << 20);
    let serve = async {
        let Message::Job3(j) = next(&mut server).await else {
            panic!("a job")
        };
        frame::write_message(&mut server, &ok(1)).await.unwrap();
        j.compiler_id
    };
    let s = spec(Some(gcc_id("12.2.0")));
    let mut none_declared = HashMap::new();
    let job = run_native(
        &mut client,
        1,
        &s,
        &source,
        WAIT,
        peer(false, false),
        b,
        &mut none_declared,
        &|_| {},
    );
    let (sent, r) = tokio::join!(serve, job);
    assert_eq!(r.unwrap().exit_code, 0);
    assert_eq!(sent, Some(gcc_id("12.2.0")));
}

/// What one fake server saw: whether a `Chunks` frame came before the job.
async fn serve_one(
    server: &mut DuplexStream,
    id: u64,
    got_chunks: Option<oneshot::Sender<()>>,
    release: Option<oneshot::Receiver<()>>,
) -> usize {
    let mut packs = 0;
    loop {
        match next(server).await {
            Message::Chunks(p) => {
                assert!(!p.chunks.is_empty());
                packs += 1;
            }
            Message::Job3(j) => {
                assert!(matches!(j.source, Input::Chunked(_)));
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    if let Some(tx) = got_chunks {
        tx.send(()).unwrap();
    }
    if let Some(rx) = release {
        // Dropped sender: this server dies without acknowledging.
        if rx.await.is_err() {
            return packs;
        }
    }
    for _ in 0..packs {
        frame::write_message(server, &Message::Stored { unshared: vec![] })
            .await
            .unwrap();
    }
    frame::write_message(server, &ok(id)).await.unwrap();
    packs
}

#[tokio::test]
async fn a_job_waits_for_chunks_another_lane_is_sending() {
    let host = SharedChunks::default();
    let b = Books {
        known: &host,
        counts: &host,
    };
    let a_source = Source::Cut(Cut::normalised(&text(0)));
    let b_source = Source::Cut(Cut::normalised(&text(0)));
    let s = spec(None);
    let (mut a_client, mut a_server) = tokio::io::duplex(1 << 22);
    let (mut b_client, mut b_server) = tokio::io::duplex(1 << 22);
    let (got_tx, got_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel();
    let lane_a = async {
        let r = run_native(
            &mut a_client,
            1,
            &s,
            &a_source,
            WAIT,
            peer(true, false),
            b,
            &mut HashMap::new(),
            &|_| {},
        )
        .await;
        assert_eq!(r.unwrap().exit_code, 0);
    };
    let lane_b = async {
        // B starts once A's chunks are on their way (and not yet acknowledged).
        got_rx.await.unwrap();
        let mut declared = HashMap::new();
        let waiting = run_native(
            &mut b_client,
            2,
            &s,
            &b_source,
            WAIT,
            peer(true, false),
            b,
            &mut declared,
            &|_| {},
        );
        tokio::pin!(waiting);
        // B must not get its job out before A's server acknowledges.
        let early = tokio::time::timeout(Duration::from_millis(200), &mut waiting).await;
        assert!(early.is_err(), "B waited for A's chunks");
        release_tx.send(()).unwrap();
        assert_eq!(waiting.await.unwrap().exit_code, 0);
    };
    let (a_packs, b_packs, (), ()) = tokio::join!(
        serve_one(&mut a_server, 1, Some(got_tx), Some(release_rx)),
        serve_one(&mut b_server, 2, None, None),
        lane_a,
        lane_b
    );
    assert_eq!(a_packs, 1);
    assert_eq!(b_packs, 0, "B sent none of the chunks A was sending");
    let c = upload::lock(&host).counters;
    assert_eq!(c.chunks_missing, 0);
}

#[tokio::test]
async fn chunks_of_a_lane_that_died_are_sent_by_the_waiting_job() {
    let host = SharedChunks::default();
    let b = Books {
        known: &host,
        counts: &host,
    };
    let source = Source::Cut(Cut::normalised(&text(1)));
    let s = spec(None);
    let (mut a_client, mut a_server) = tokio::io::duplex(1 << 22);
    let (mut b_client, mut b_server) = tokio::io::duplex(1 << 22);
    let (got_tx, got_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let lane_a = async {
        let mut declared = HashMap::new();
        let r = run_native(
            &mut a_client,
            1,
            &s,
            &source,
            WAIT,
            peer(true, false),
            b,
            &mut declared,
            &|_| {},
        );
        // A's lane is given up (the job dropped) while its chunks are unacknowledged.
        let _ = tokio::time::timeout(Duration::from_millis(300), r).await;
    };
    let lane_b = async {
        got_rx.await.unwrap();
        let r = run_native(
            &mut b_client,
            2,
            &s,
            &source,
            WAIT,
            peer(true, false),
            b,
            &mut HashMap::new(),
            &|_| {},
        )
        .await;
        drop(release_tx);
        assert_eq!(r.unwrap().exit_code, 0);
    };
    let (_, b_packs, (), ()) = tokio::join!(
        serve_one(&mut a_server, 1, Some(got_tx), Some(release_rx)),
        serve_one(&mut b_server, 2, None, None),
        lane_a,
        lane_b
    );
    assert_eq!(b_packs, 1, "B sent the chunks itself");
}

/// A source edited between two jobs on one lane: the second job's new chunks go as a
/// delta pack against what the first sent, which a server holding those chunks decodes
/// whole (and acknowledges, like a plain pack); with `delta` off they go plain.
#[tokio::test]
async fn an_edited_source_goes_as_a_delta_against_its_last_job() {
    use crate::proto::chunk::delta;
    for on in [true, false] {
        let host = SharedChunks::default();
        let b = Books {
            known: &host,
            counts: &host,
        };
        let mut edited = text(0);
        edited.extend_from_slice(b"int appended_line = 1;\n");
        let sources = [
            Source::Cut(Cut::normalised(&text(0))),
            Source::Cut(Cut::normalised(&edited)),
        ];
        let mut s = spec(None);
        s.context = vec![("a.c".into(), b"int a;\n".to_vec())];
        let (mut client, mut server) = tokio::io::duplex(1 << 22);
        let serve = async {
            let mut held: HashMap<ChunkId, Vec<u8>> = HashMap::new();
            let mut deltas = 0;
            for id in 1..=2 {
                loop {
                    let got = match next(&mut server).await {
                        Message::Chunks(p) => p.unpack().unwrap(),
                        Message::DeltaChunks(p) => {
                            deltas += 1;
                            let dict = delta::dictionary(p.dict.iter().map(|d| &held[d][..]));
                            p.unpack(&dict).unwrap()
                        }
                        Message::Job3(_) => break,
                        other => panic!("{other:?}"),
                    };
                    assert!(got.corrupt.is_empty(), "every chunk decodes to its id");
                    held.extend(got.good);
                    frame::write_message(&mut server, &Message::Stored { unshared: vec![] })
                        .await
                        .unwrap();
                }
                frame::write_message(&mut server, &ok(id)).await.unwrap();
            }
            deltas
        };
        let jobs = async {
            for (id, source) in (1..).zip(&sources) {
                let mut p = peer(true, false);
                p.delta = on;
                let r = run_native(
                    &mut client,
                    id,
                    &s,
                    source,
                    WAIT,
                    p,
                    b,
                    &mut HashMap::new(),
                    &|_| {},
                )
                .await;
                assert_eq!(r.unwrap().exit_code, 0);
            }
        };
        let (deltas, ()) = tokio::join!(serve, jobs);
        let c = upload::lock(&host).counters;
        assert_eq!(deltas, usize::from(on), "delta {on}");
        assert_eq!(c.delta_packs, u64::from(on));
        assert_eq!(c.chunks_missing, 0);
    }
}

/// `text`'s chunks, held by the host and kept in the mux's resemblance memory (as
/// another source's job left them); returns them by id.
fn hold_similar(host: &SharedChunks, text: &[u8]) -> HashMap<ChunkId, Vec<u8>> {
    let cut = Cut::normalised(text);
    let mut h = upload::lock(host);
    let mut held = HashMap::new();
    for (c, bytes) in cut.chunks() {
        h.similar
            .insert(c.id, bytes, &crate::mux::similar::features(bytes).unwrap());
        h.known.learn([c.id]);
        held.insert(c.id, bytes.to_vec());
    }
    held
}

/// Runs `source` as job 1 on a lane to a server that takes delta packs; it must succeed.
async fn run_delta_job(
    client: &mut tokio::io::DuplexStream,
    s: &JobSpec,
    source: &Source,
    b: Books<'_>,
) {
    let mut p = peer(true, false);
    p.delta = true;
    let r = run_native(
        client,
        1,
        s,
        source,
        WAIT,
        p,
        b,
        &mut HashMap::new(),
        &|_| {},
    )
    .await;
    assert_eq!(r.unwrap().exit_code, 0);
}

/// A header-like text of `n` lines; with `variant`, every 40th line differs a little.
fn header_text(n: u32, variant: Option<u32>) -> Vec<u8> {
    let mut t = b"# 0 \"b.c\"\n# 1 \"/src//\"\n# 1 \"b.c\"\n".to_vec();
    t.extend(crate::mux::upload::tests::macro_lines(n, variant));
    t
}

/// A job whose new chunks go in two packs or more (those like chunks another source
/// sent, against them; the others on their own): the server decodes each, and each
/// `Stored` is taken for its pack, so every chunk has landed before the answer.
#[tokio::test]
async fn a_job_sends_several_packs_and_each_is_acknowledged() {
    use crate::proto::chunk::delta;
    let host = SharedChunks::default();
    let b = Books {
        known: &host,
        counts: &host,
    };
    // Another source's text, held by the host and kept by the mux.
    let held = hold_similar(&host, &header_text(3000, None));
    // This job: a variant of that text, then text like nothing held.
    let mut t = header_text(3000, Some(1));
    t.extend((0..3000u32).flat_map(|i| {
        format!("static long tail_{i}(void) {{ return {}L; }}\n", i * i).into_bytes()
    }));
    let source = Source::Cut(Cut::normalised(&t));
    let s = spec(None);
    let (mut client, mut server) = tokio::io::duplex(1 << 22);
    let serve = async {
        let mut packs = 0;
        let mut deltas = 0;
        let mut ids = Vec::new();
        loop {
            let got = match next(&mut server).await {
                Message::Chunks(p) => p.unpack().unwrap(),
                Message::DeltaChunks(p) => {
                    deltas += 1;
                    let dict = delta::dictionary(p.dict.iter().map(|d| &held[d][..]));
                    p.unpack(&dict).unwrap()
                }
                Message::Job3(_) => break,
                other => panic!("{other:?}"),
            };
            assert!(got.corrupt.is_empty(), "every chunk decodes to its id");
            packs += 1;
            ids.extend(got.good.iter().map(|(id, _)| *id));
        }
        // The acknowledgements after the job, one per pack, in order.
        for _ in 0..packs {
            frame::write_message(&mut server, &Message::Stored { unshared: vec![] })
                .await
                .unwrap();
        }
        let left = upload::await_landed(&host, ids, WAIT).await;
        assert!(left.is_empty(), "{} chunks never landed", left.len());
        frame::write_message(&mut server, &ok(1)).await.unwrap();
        (packs, deltas)
    };
    let job = run_delta_job(&mut client, &s, &source, b);
    let ((packs, deltas), ()) = tokio::join!(serve, job);
    assert!(packs >= 2, "{packs} packs");
    assert!(deltas >= 1, "{deltas} delta packs");
    let c = upload::lock(&host).counters;
    assert_eq!(c.delta_packs, deltas as u64);
    assert_eq!(c.chunks_missing, 0);
}

/// A delta pack against chunks the server no longer holds: its chunks come back
/// `Missing`, go again plain, and its dictionary is no longer believed held (the next
/// job does not pack against it again).
#[tokio::test]
async fn a_delta_pack_reported_missing_goes_plain_and_its_dictionary_is_forgotten() {
    let host = SharedChunks::default();
    let b = Books {
        known: &host,
        counts: &host,
    };
    hold_similar(&host, &header_text(3000, None));
    let source = Source::Cut(Cut::normalised(&header_text(3000, Some(1))));
    let s = spec(None);
    let (mut client, mut server) = tokio::io::duplex(1 << 22);
    let serve = async {
        // The server lost the dictionaries: every delta pack's chunks are missing.
        let (mut lost, mut dicts) = (Vec::new(), Vec::new());
        loop {
            match next(&mut server).await {
                Message::Chunks(_) => {}
                Message::DeltaChunks(p) => {
                    lost.extend(p.chunks.iter().map(|c| c.id));
                    dicts.extend(p.dict);
                }
                Message::Job3(_) => break,
                other => panic!("{other:?}"),
            }
            frame::write_message(&mut server, &Message::Stored { unshared: vec![] })
                .await
                .unwrap();
        }
        assert!(!lost.is_empty(), "a delta pack");
        let missing = Message::Missing {
            id: 1,
            ids: lost.clone(),
        };
        frame::write_message(&mut server, &missing).await.unwrap();
        let Message::Chunks(p) = next(&mut server).await else {
            panic!("a plain pack")
        };
        let mut again: Vec<ChunkId> = p.unpack().unwrap().good.into_iter().map(|g| g.0).collect();
        again.sort();
        lost.sort();
        assert_eq!(again, lost, "the missing chunks, plain");
        frame::write_message(&mut server, &Message::Stored { unshared: vec![] })
            .await
            .unwrap();
        assert!(matches!(next(&mut server).await, Message::Job3(_)));
        frame::write_message(&mut server, &ok(1)).await.unwrap();
        dicts
    };
    let job = run_delta_job(&mut client, &s, &source, b);
    let (dicts, ()) = tokio::join!(serve, job);
    let mut h = upload::lock(&host);
    assert!(h.counters.chunks_missing > 0);
    for d in &dicts {
        assert!(
            !h.known.holds(d),
            "a lost dictionary chunk is not believed held"
        );
    }
}
