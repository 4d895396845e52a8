//! Unit tests of `mux::lane`: native and distcc jobs against in-memory servers (faults,
//! the events an observer sees).

use super::native::{run_native, Books, Peer};
use super::*;
use crate::mux::upload;
use crate::proto::distcc::DistccResponse;
use crate::proto::msg::JOB3_VERSION;
use crate::proto::msg::{Input, JobHeader, JobResult};
use std::collections::HashMap;

pub(super) fn spec() -> JobSpec {
    JobSpec {
        header: JobHeader {
            compiler: "gcc".into(),
            args: vec![],
            assemble_only: false,
            cwd: "/src".into(),
            source_name: "a.c".into(),
            output_name: "a.o".into(),
            extra_outputs: vec![],
        },
        distcc_argv: ["gcc", "-c", "a.i", "-o", "a.o"].map(String::from).to_vec(),
        env: vec![],
        context: vec![],
        compiler_id: None,
        cache: true,
    }
}

/// A protocol-1/2 server's result.
fn result(exit_code: i32, stderr: &[u8]) -> Message {
    Message::Result(result3(exit_code, stderr).into())
}

fn result3(exit_code: i32, stderr: &[u8]) -> JobResult {
    JobResult {
        id: 1,
        exit_code,
        stdout: Blob::raw(vec![]),
        stderr: Blob::pack(stderr),
        outputs: vec![],
        cached: false,
    }
}

/// The same set for knowledge and counts.
fn books_of(c: &SharedChunks) -> Books<'_> {
    Books {
        known: c,
        counts: c,
    }
}

/// One native job against a server that answers `answer`, on a lane of `version`.
async fn native(version: u32, answer: Message) -> Result<JobResult, TransportError> {
    let (mut client, mut server) = tokio::io::duplex(1 << 16);
    let serve = async move {
        let job = frame::read_message(&mut server).await.unwrap();
        match version {
            JOB3_VERSION.. => assert!(matches!(job, Some(Message::Job3(_)))),
            _ => assert!(matches!(job, Some(Message::Job(_)))),
        }
        frame::write_message(&mut server, &Message::Heartbeat { id: 1 })
            .await
            .unwrap();
        frame::write_message(&mut server, &answer).await.unwrap();
        server
    };
    let peer = Peer {
        host: "h",
        version,
        chunks: false,
        acks: false,
        identity: false,
        delta: false,
    };
    let spec = spec();
    let books = SharedChunks::default();
    let source = Source::Whole(b"int x;".to_vec());
    let mut declared = HashMap::new();
    let (r, _server) = tokio::join!(
        run_native(
            &mut client,
            1,
            &spec,
            &source,
            Duration::from_secs(10),
            peer,
            books_of(&books),
            &mut declared,
            &|_| {}
        ),
        serve
    );
    r
}

/// The observer hears the job go out, the compile, and the result come back (not the
/// heartbeat), with the bytes on the wire.
#[tokio::test]
async fn native_events_follow_the_job() {
    let (mut client, mut server) = tokio::io::duplex(1 << 20);
    let serve = async move {
        let job = frame::read_frame(&mut server, frame::MAX_FRAME)
            .await
            .unwrap();
        frame::write_message(&mut server, &Message::Heartbeat { id: 1 })
            .await
            .unwrap();
        let big = Message::Result3(JobResult {
            id: 1,
            exit_code: 0,
            stdout: Blob::raw(vec![]),
            stderr: Blob::raw(vec![b'w'; 1000]),
            outputs: vec![],
            cached: false,
        });
        let answer = frame::encode(&big);
        frame::write_frame(&mut server, &answer).await.unwrap();
        (job.unwrap().len(), answer.len(), server)
    };
    let events = std::sync::Mutex::new(Vec::new());
    let observe = |e: LaneEvent| events.lock().unwrap().push(e);
    let peer = Peer {
        host: "h",
        version: JOB3_VERSION,
        chunks: false,
        acks: false,
        identity: false,
        delta: false,
    };
    let spec = spec();
    let books = SharedChunks::default();
    let source = Source::Whole(b"int x;".to_vec());
    let mut declared = HashMap::new();
    let (r, (sent, received, _server)) = tokio::join!(
        run_native(
            &mut client,
            1,
            &spec,
            &source,
            Duration::from_secs(10),
            peer,
            books_of(&books),
            &mut declared,
            &observe
        ),
        serve
    );
    assert_eq!(r.unwrap().stderr.raw_len, 1000);
    assert_eq!(
        *events.lock().unwrap(),
        [
            LaneEvent::Sending {
                bytes: sent as u64 + 4
            },
            LaneEvent::Compiling,
            LaneEvent::Receiving {
                bytes: received as u64 + 4
            }
        ]
    );
}

fn fault_of(r: Result<JobResult, TransportError>) -> Fault {
    match r {
        Err(TransportError::Fault { host, fault }) => {
            assert_eq!(host, "h");
            fault
        }
        other => panic!("expected a fault, got {other:?}"),
    }
}

#[tokio::test]
async fn native_faults_are_never_a_status() {
    let f = Fault {
        program: "cc1".into(),
        signal: 9,
        detail: String::new(),
    };
    let got = fault_of(
        native(
            2,
            Message::Fault {
                id: 1,
                fault: f.clone(),
            },
        )
        .await,
    );
    assert_eq!(got, f);
    assert_eq!(
        TransportError::Fault {
            host: "h".into(),
            fault: f
        }
        .to_string(),
        "cc1 killed by signal 9"
    );
    // A protocol-1 server says 128 + signal.
    assert_eq!(fault_of(native(1, result(137, b"")).await).signal, 9);
    // A protocol-2 server's 137 is what the compiler exited with.
    assert_eq!(native(2, result(137, b"")).await.unwrap().exit_code, 137);
    // Any server: a driver reporting its cc1 killed.
    let ice = b"gcc: fatal error: Killed signal terminated program cc1\n";
    assert_eq!(fault_of(native(2, result(1, ice)).await).program, "cc1");
    // The user's own error stays the job's status.
    let err = b"a.c:1:1: error: expected ';'\n";
    assert_eq!(native(2, result(1, err)).await.unwrap().exit_code, 1);
    // A protocol-3 server: its `Result3` comes back untouched (blobs still packed),
    // and a reported cc1 kill is still a fault.
    let mut long = err.repeat(20);
    long.extend_from_slice(b"note: a cached answer\n");
    let r3 = result3(1, &long);
    let got = native(JOB3_VERSION, Message::Result3(r3.clone())).await;
    assert_eq!(got.unwrap(), r3);
    let r3 = result3(1, ice);
    let got = native(JOB3_VERSION, Message::Result3(r3)).await;
    assert_eq!(fault_of(got).program, "cc1");
}

async fn distcc(status: i32, stderr: &[u8]) -> Result<JobResult, TransportError> {
    let (mut client, mut server) = tokio::io::duplex(1 << 16);
    let stderr = stderr.to_vec();
    let serve = async move {
        let req = distcc::read_request(&mut server).await.unwrap();
        let resp = DistccResponse {
            version: req.version,
            status,
            stderr,
            stdout: vec![],
            doto: vec![],
        };
        distcc::write_response(&mut server, &resp).await.unwrap();
        server
    };
    let wire = Wire::Distcc { lzo: false };
    let spec = spec();
    let (r, _server) = tokio::join!(
        run_distcc(
            &mut client,
            wire,
            &spec,
            b"int x;",
            Duration::from_secs(10),
            "h",
            &|_| {}
        ),
        serve
    );
    r
}

#[tokio::test]
async fn distcc_faults_are_never_a_status() {
    // Stock distccd passes the raw wait status of a killed compiler.
    let f = fault_of(distcc(9, b"").await);
    assert_eq!((f.program.as_str(), f.signal), ("gcc", 9));
    // A hoardcc server tells a stock client "crashed" (104).
    let f = fault_of(distcc(104 << 8, b"hoardcc server: cc1 killed by signal 9\n").await);
    assert_eq!(f.to_string(), "gcc: cc1 killed by signal 9");
    let f = fault_of(
        distcc(
            1 << 8,
            b"gcc: fatal error: Killed signal terminated program cc1plus\n",
        )
        .await,
    );
    assert_eq!(f.program, "cc1plus");
    assert_eq!(
        distcc(1 << 8, b"a.c:1: error: x\n")
            .await
            .unwrap()
            .exit_code,
        1
    );
}

#[tokio::test]
async fn a_mismatch_is_its_own_error() {
    let reason =
        "no compiler matching gcc 12.2.0 (x86_64-linux-gnu); gcc here is 13.1.0 (x86_64-linux-gnu)";
    match native(
        JOB3_VERSION,
        Message::Mismatch {
            id: 1,
            reason: reason.into(),
        },
    )
    .await
    {
        Err(e @ TransportError::Mismatch { .. }) => {
            assert_eq!(e.to_string(), format!("h: {reason}"));
            assert_eq!(e.exit_code(), ExitCode::AccessDenied);
        }
        other => panic!("{other:?}"),
    }
    assert!(client_hello().caps.iter().any(|c| c == COMPILERS_CAP));
}

/// A directives-only text long enough for several chunks.
fn long_source() -> Vec<u8> {
    let mut t = b"# 0 \"a.c\"\n# 1 \"/src//\"\n# 1 \"a.c\"\n".to_vec();
    t.extend((0..6000u32).flat_map(|i| format!("int v{i} = {i};\n").into_bytes()));
    t
}

/// The chunk path: the chunks the host lacks go before the job; a `Missing` answer
/// gets exactly those chunks and the job again; the result teaches the mux that the
/// host holds them all, so the next job sends none.
#[tokio::test]
async fn chunks_go_with_the_job_and_missing_ones_follow() {
    use crate::proto::chunk::Cut;
    let text = long_source();
    let cut = Cut::normalised(&text);
    let ids: Vec<_> = cut.recipe.unique_ids();
    assert!(ids.len() > 3, "{} chunks", ids.len());
    let (mut client, mut server) = tokio::io::duplex(1 << 20);
    let expect_first = ids.clone();
    let serve = async move {
        // First job: every chunk (the mux knew none), then the job.
        let Some(Message::Chunks(pack)) = frame::read_message(&mut server).await.unwrap() else {
            panic!("chunks first")
        };
        let got: Vec<_> = pack
            .unpack()
            .unwrap()
            .good
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let context_id = got.last().copied().unwrap();
        assert_eq!(
            got[..got.len() - 1],
            expect_first[..],
            "source chunks, then the context file's"
        );
        let Some(Message::Job3(job)) = frame::read_message(&mut server).await.unwrap() else {
            panic!("then the job")
        };
        assert!(matches!(job.source, Input::Chunked(_)));
        // Pretend two were evicted.
        let lost = vec![expect_first[1], context_id];
        frame::write_message(
            &mut server,
            &Message::Missing {
                id: job.id,
                ids: lost.clone(),
            },
        )
        .await
        .unwrap();
        let Some(Message::Chunks(pack)) = frame::read_message(&mut server).await.unwrap() else {
            panic!("the missing chunks")
        };
        let got: Vec<_> = pack
            .unpack()
            .unwrap()
            .good
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(got, lost);
        let Some(Message::Job3(again)) = frame::read_message(&mut server).await.unwrap() else {
            panic!("and the job again")
        };
        assert_eq!(again, job);
        frame::write_message(&mut server, &Message::Result3(result3(0, b"")))
            .await
            .unwrap();
        // Second job: no chunks at all, straight to the job.
        let m = frame::read_message(&mut server).await.unwrap();
        assert!(matches!(m, Some(Message::Job3(_))), "{m:?}");
        let mut r = result3(0, b"");
        r.id = 2;
        frame::write_message(&mut server, &Message::Result3(r))
            .await
            .unwrap();
        server
    };
    let mut spec = spec();
    spec.context = vec![("a.c".into(), b"int a_c_context;\n".to_vec())];
    let books = SharedChunks::default();
    let source = Source::Cut(cut);
    let client_side = async {
        for id in 1..=2 {
            let peer = Peer {
                host: "h",
                version: PROTOCOL_VERSION,
                chunks: true,
                acks: false,
                identity: false,
                delta: false,
            };
            let b = Books {
                known: &books,
                counts: &books,
            };
            let r = run_native(
                &mut client,
                id,
                &spec,
                &source,
                Duration::from_secs(10),
                peer,
                b,
                &mut HashMap::new(),
                &|_| {},
            )
            .await;
            assert_eq!(r.unwrap().exit_code, 0);
        }
    };
    let ((), _server) = tokio::join!(client_side, serve);
    let c = upload::lock(&books).counters;
    assert_eq!(c.chunked_jobs, 2);
    assert_eq!(c.chunks_missing, 2);
    assert_eq!(c.chunks_sent, ids.len() as u64 + 1 + 2);
    assert_eq!(c.chunks_known, ids.len() as u64 + 1);
    assert!(c.bytes_sent > 0);
}

/// A protocol-2 server gets the text whole, exactly as the preprocessor wrote it.
#[tokio::test]
async fn a_v2_server_gets_whole_blobs() {
    use crate::proto::chunk::Cut;
    let text = long_source();
    let (mut client, mut server) = tokio::io::duplex(1 << 20);
    let want = text.clone();
    let serve = async move {
        let Some(Message::Job(job)) = frame::read_message(&mut server).await.unwrap() else {
            panic!("a protocol-2 job")
        };
        assert_eq!(job.source.unpack(1 << 30).unwrap(), want);
        frame::write_message(&mut server, &Message::Result(result3(0, b"").into()))
            .await
            .unwrap();
        server
    };
    let peer = Peer {
        host: "h",
        version: 2,
        chunks: true,
        acks: false,
        identity: false,
        delta: false,
    };
    let books = SharedChunks::default();
    let spec = spec();
    let source = Source::Cut(Cut::normalised(&text));
    let b = Books {
        known: &books,
        counts: &books,
    };
    let mut declared = HashMap::new();
    let (r, _server) = tokio::join!(
        run_native(
            &mut client,
            1,
            &spec,
            &source,
            Duration::from_secs(10),
            peer,
            b,
            &mut declared,
            &|_| {}
        ),
        serve
    );
    assert_eq!(r.unwrap().exit_code, 0);
    assert_eq!(upload::lock(&books).counters.chunks_sent, 0);
}
