//! Unit tests of `proto::frame`: every message round-trips (one stream, a duplex pipe,
//! byte-identical through the blocking driver), the frame layout, truncation and the
//! bounds checked before a body is read, hellos, garbage previews and version negotiation.

use super::*;
use crate::proto::msg::{
    Blob, Codec, ContextFile, Input, Job, JobHeader, JobResult, OutputFile, ResultV2, SourceKind,
};

fn hello(min_version: u32, version: u32) -> Hello {
    Hello {
        version,
        min_version,
        caps: vec!["lz4".into(), "heartbeat".into()],
        slots: 8,
        load: 3,
        agent: "hoardcc 0.1.0 on testhost".into(),
    }
}

fn blob(bytes: &[u8]) -> Blob {
    Blob {
        codec: Codec::None,
        raw_len: bytes.len() as u64,
        data: bytes.to_vec(),
    }
}

fn every_message() -> Vec<Message> {
    vec![
        Message::Job3(Job {
            id: 7,
            header: JobHeader {
                compiler: "gcc".into(),
                args: vec!["-O2".into(), "-g".into(), "-Wall".into()],
                assemble_only: false,
                cwd: "/home/me/src".into(),
                source_name: "foo.c".into(),
                output_name: "obj/foo.o".into(),
                extra_outputs: vec!["obj/foo.dwo".into()],
            },
            source_kind: SourceKind::DirectivesOnly,
            source: Input::Whole(blob(b"int main(void) { return 0; }\n")),
            context: vec![ContextFile {
                name: "foo.c".into(),
                data: Input::Whole(blob(b"int main(void) { return 0; }\n")),
            }],
            env: vec![("LANG".into(), "C.UTF-8".into())],
            compiler_id: None,
            cache: false,
        }),
        Message::Job3(Job {
            id: u64::MAX,
            header: JobHeader {
                compiler: "clang++".into(),
                args: vec![],
                assemble_only: true,
                cwd: "/".into(),
                source_name: "x.ii".into(),
                output_name: "x.s".into(),
                extra_outputs: vec![],
            },
            source_kind: SourceKind::Preprocessed,
            source: Input::Whole(Blob {
                codec: Codec::Lz4,
                raw_len: 4,
                data: vec![1, 2, 3],
            }),
            context: vec![],
            env: vec![],
            compiler_id: None,
            cache: false,
        }),
        Message::Heartbeat { id: 1 },
        Message::Result3(JobResult {
            id: 7,
            exit_code: 0,
            stdout: blob(b""),
            stderr: blob(b"foo.c:1: warning: unused\n"),
            outputs: vec![OutputFile {
                name: "obj/foo.o".into(),
                data: blob(&[0x7f, b'E', b'L', b'F', 0, 0, 0]),
            }],
            cached: true,
        }),
        // Protocol 2's shapes still travel.
        Message::Result(ResultV2 {
            id: 8,
            exit_code: 137,
            stdout: blob(b"x"),
            stderr: blob(b""),
            outputs: vec![],
        }),
        Message::Busy { id: 2 },
        Message::Refused {
            id: 3,
            reason: "compiler not allowed: rm".into(),
        },
        Message::ServerError {
            id: 4,
            message: "No space left on device".into(),
        },
        Message::Ping { nonce: 0xdead_beef },
        Message::Pong { nonce: 0xdead_beef },
        Message::Fault {
            id: 9,
            fault: crate::proto::msg::Fault {
                program: "cc1".into(),
                signal: 9,
                detail: String::new(),
            },
        },
    ]
}

/// Protocol 2 added `Fault` after every protocol-1 variant: the others keep their
/// encoding (postcard tags variants by index), so a protocol-1 peer reads them.
#[test]
fn protocol_1_variants_keep_their_tags() {
    assert_eq!(encode(&Message::Busy { id: 2 })[0], 3);
    assert_eq!(encode(&Message::Pong { nonce: 1 })[0], 7);
    let fault = every_message().pop().unwrap();
    assert!(matches!(fault, Message::Fault { .. }));
    assert_eq!(encode(&fault)[0], 8);
}

#[tokio::test]
async fn every_message_round_trips_in_one_stream() {
    let messages = every_message();
    let mut wire = Vec::new();
    for m in &messages {
        write_message(&mut wire, m).await.unwrap();
    }
    let mut r = wire.as_slice();
    for m in &messages {
        assert_eq!(read_message(&mut r).await.unwrap().as_ref(), Some(m));
    }
    assert_eq!(read_message(&mut r).await.unwrap(), None);
}

#[tokio::test]
async fn messages_round_trip_over_a_duplex_pipe() {
    let (mut a, mut b) = tokio::io::duplex(64);
    let messages = every_message();
    let sent = messages.clone();
    let writer = tokio::spawn(async move {
        for m in &sent {
            write_message(&mut a, m).await.unwrap();
        }
    });
    for m in &messages {
        assert_eq!(read_message(&mut b).await.unwrap().as_ref(), Some(m));
    }
    writer.await.unwrap();
    assert_eq!(read_message(&mut b).await.unwrap(), None);
}

#[test]
fn blocking_is_byte_identical_to_async() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for m in every_message() {
        let mut sync_wire = Vec::new();
        blocking::write_message(&mut sync_wire, &m).unwrap();
        let mut async_wire = Vec::new();
        rt.block_on(write_message(&mut async_wire, &m)).unwrap();
        assert_eq!(sync_wire, async_wire);
        let back: Option<Message> = blocking::read_message(&mut sync_wire.as_slice()).unwrap();
        assert_eq!(back, Some(m));
    }
    let none: Option<Message> = blocking::read_message(&mut &b""[..]).unwrap();
    assert_eq!(none, None);
}

/// A std reader that hands out one byte per call, with an `Interrupted` before each,
/// then the error `end` once its bytes are gone (`None`: end of stream).
struct Dribble {
    bytes: Vec<u8>,
    at: usize,
    interrupt: bool,
    end: Option<std::io::ErrorKind>,
}

impl std::io::Read for Dribble {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.interrupt = !self.interrupt;
        if self.interrupt {
            return Err(std::io::ErrorKind::Interrupted.into());
        }
        if self.at == self.bytes.len() {
            return match self.end {
                Some(kind) => Err(kind.into()),
                None => Ok(0),
            };
        }
        buf[0] = self.bytes[self.at];
        self.at += 1;
        Ok(1)
    }
}

#[test]
fn blocking_reader_retries_interrupts_and_passes_a_timeout_on() {
    let mut wire = Vec::new();
    blocking::write_frame(&mut wire, b"hello").unwrap();
    blocking::write_frame(&mut wire, b"").unwrap();
    let mut r = Dribble {
        bytes: wire.clone(),
        at: 0,
        interrupt: false,
        end: None,
    };
    assert_eq!(
        blocking::read_frame(&mut r, 16).unwrap(),
        Some(b"hello".to_vec())
    );
    assert_eq!(blocking::read_frame(&mut r, 16).unwrap(), Some(vec![]));
    assert_eq!(blocking::read_frame(&mut r, 16).unwrap(), None);
    // A socket read timeout mid-frame is the stream's error, not a truncation.
    let mut r = Dribble {
        bytes: wire[..6].to_vec(),
        at: 0,
        interrupt: false,
        end: Some(std::io::ErrorKind::WouldBlock),
    };
    match blocking::read_frame(&mut r, 16).unwrap_err() {
        Error::Io(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
        other => panic!("{other:?}"),
    }
    // The bound holds on the blocking side, before the body is read.
    let mut r = Dribble {
        bytes: wire,
        at: 0,
        interrupt: false,
        end: Some(std::io::ErrorKind::WouldBlock),
    };
    assert!(matches!(
        blocking::read_frame(&mut r, 4),
        Err(Error::TooLarge { len: 5, max: 4, .. })
    ));
    assert_eq!(r.at, 4, "only the length was read");
}

#[tokio::test]
async fn frame_layout_is_big_endian_length_then_payload() {
    let mut wire = Vec::new();
    write_frame(&mut wire, b"abc").await.unwrap();
    assert_eq!(wire, b"\0\0\0\x03abc");
}

#[tokio::test]
async fn zero_length_frame_is_a_frame_not_eof() {
    let mut wire = Vec::new();
    write_frame(&mut wire, b"").await.unwrap();
    assert_eq!(wire, [0, 0, 0, 0]);
    let mut r = wire.as_slice();
    assert_eq!(read_frame(&mut r, 16).await.unwrap(), Some(vec![]));
    assert_eq!(read_frame(&mut r, 16).await.unwrap(), None);
}

#[tokio::test]
async fn large_frame_round_trips() {
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut wire = Vec::new();
    write_frame(&mut wire, &payload).await.unwrap();
    let got = read_frame(&mut wire.as_slice(), MAX_FRAME).await.unwrap();
    assert_eq!(got, Some(payload));
}

#[tokio::test]
async fn truncated_length_is_an_error() {
    let err = read_frame(&mut &b"\0\0"[..], 16).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Truncated {
                what: "frame length"
            }
        ),
        "{err:?}"
    );
    let err = blocking::read_frame(&mut &b"\0\0"[..], 16).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Truncated {
                what: "frame length"
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn truncated_body_is_an_error() {
    let err = read_frame(&mut &b"\0\0\0\x05abc"[..], 16)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Truncated { what: "frame body" }),
        "{err:?}"
    );
    let err = blocking::read_frame(&mut &b"\0\0\0\x05abc"[..], 16).unwrap_err();
    assert!(
        matches!(err, Error::Truncated { what: "frame body" }),
        "{err:?}"
    );
}

#[tokio::test]
async fn oversized_length_is_rejected_before_reading_the_body() {
    // Announces 4 GiB - 1 and sends no body: must fail on the length alone.
    let (mut a, mut b) = tokio::io::duplex(64);
    a.write_all(&[0xff, 0xff, 0xff, 0xff]).await.unwrap();
    // `a` stays open: if the reader tried to read (or allocate) the body it would hang.
    let err = read_frame(&mut b, MAX_FRAME).await.unwrap_err();
    match err {
        Error::TooLarge { len, max, .. } => {
            assert_eq!(len, u32::MAX as u64);
            assert_eq!(max, MAX_FRAME as u64);
        }
        other => panic!("{other:?}"),
    }
    let err = read_frame(&mut &b"\0\0\0\x11"[..], 16).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooLarge {
                len: 17,
                max: 16,
                ..
            }
        ),
        "{err:?}"
    );
    let err = blocking::read_frame(&mut &b"\0\0\0\x11"[..], 16).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooLarge {
                len: 17,
                max: 16,
                ..
            }
        ),
        "{err:?}"
    );
    drop(a);
}

#[tokio::test]
async fn undecodable_message_is_a_decode_error() {
    let mut wire = Vec::new();
    write_frame(&mut wire, &[0xff, 0xff, 0xff]).await.unwrap();
    let err = read_message(&mut wire.as_slice()).await.unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "{err:?}");
    // Trailing bytes after a valid message are refused too.
    let mut payload = encode(&Message::Ping { nonce: 1 });
    payload.push(0);
    let mut wire = Vec::new();
    write_frame(&mut wire, &payload).await.unwrap();
    let err = read_message(&mut wire.as_slice()).await.unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "{err:?}");
}

#[tokio::test]
async fn hello_round_trips_and_frames_follow() {
    let mut wire = Vec::new();
    write_hello(&mut wire, &hello(1, 3)).await.unwrap();
    assert_eq!(&wire[..8], b"\0HOARDCC");
    write_message(&mut wire, &Message::Ping { nonce: 9 })
        .await
        .unwrap();
    let mut r = wire.as_slice();
    assert_eq!(read_hello(&mut r).await.unwrap(), hello(1, 3));
    assert_eq!(
        read_message(&mut r).await.unwrap(),
        Some(Message::Ping { nonce: 9 })
    );
}

#[tokio::test]
async fn banner_before_hello_is_garbage_with_a_preview() {
    let mut wire = b"Welcome to buildbox\n".to_vec();
    write_hello(&mut wire, &hello(1, 1)).await.unwrap();
    let err = read_hello(&mut wire.as_slice()).await.unwrap_err();
    match err {
        Error::Garbage { preview } => assert_eq!(preview, "Welcome to buildbox\\n"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn garbage_preview_waits_for_nothing_and_stops_at_64_bytes() {
    // The writer stays open and sends more than 64 bytes: the reader must report
    // what is there without waiting for an end of stream.
    let (mut a, mut b) = tokio::io::duplex(4096);
    let banner = "x".repeat(100);
    a.write_all(banner.as_bytes()).await.unwrap();
    let err = read_hello(&mut b).await.unwrap_err();
    match err {
        Error::Garbage { preview } => assert_eq!(preview, "x".repeat(64)),
        other => panic!("{other:?}"),
    }
    // Short garbage followed by silence: reported at once as well.
    let (mut a, mut b) = tokio::io::duplex(4096);
    a.write_all(b"bash: \x1b[1mno\r").await.unwrap();
    let err = read_hello(&mut b).await.unwrap_err();
    match err {
        Error::Garbage { preview } => assert_eq!(preview, "bash: \\x1b[1mno\\r"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn short_garbage_then_eof_is_garbage_and_empty_stream_is_truncated() {
    let err = read_hello(&mut &b"hi\n"[..]).await.unwrap_err();
    assert!(matches!(err, Error::Garbage { ref preview } if preview == "hi\\n"));
    let err = read_hello(&mut &b""[..]).await.unwrap_err();
    assert!(matches!(err, Error::Truncated { what: "hello" }), "{err:?}");
    let err = read_hello(&mut &b"\0HOA"[..]).await.unwrap_err();
    assert!(matches!(err, Error::Truncated { .. }), "{err:?}");
    let err = read_hello(&mut &b"\0HOARDCC"[..]).await.unwrap_err();
    assert!(matches!(err, Error::Truncated { what: "hello" }), "{err:?}");
}

#[tokio::test]
async fn oversized_hello_is_refused() {
    let mut wire = MAGIC.to_vec();
    wire.extend_from_slice(&(MAX_HELLO + 1).to_be_bytes());
    let err = read_hello(&mut wire.as_slice()).await.unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");
}

#[test]
fn negotiation_picks_the_highest_common_version() {
    assert_eq!(negotiate(&hello(1, 3), &hello(2, 5)).unwrap(), 3);
    assert_eq!(negotiate(&hello(2, 5), &hello(1, 3)).unwrap(), 3);
    assert_eq!(negotiate(&hello(1, 1), &hello(1, 1)).unwrap(), 1);
    assert_eq!(negotiate(&hello(1, 4), &hello(4, 9)).unwrap(), 4);
}

#[test]
fn negotiation_without_overlap_is_a_version_error() {
    let err = negotiate(&hello(1, 2), &hello(3, 5)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Version {
                ours: 2,
                theirs_min: 3,
                theirs_max: 5
            }
        ),
        "{err:?}"
    );
    let err = negotiate(&hello(4, 6), &hello(1, 3)).unwrap_err();
    assert!(matches!(err, Error::Version { ours: 6, .. }), "{err:?}");
    // A nonsense range (min > max) never negotiates.
    assert!(negotiate(&hello(1, 9), &hello(5, 2)).is_err());
}
