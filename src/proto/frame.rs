//! Native framing: the byte layer under [`msg`](super::msg) on every hoardcc lane
//! (wrapper ⇄ mux on the Unix socket, mux ⇄ `hoardcc serve` over an SSH channel).
//! Neighbours: `proto::msg` (what the frames carry, postcard-encoded), `mux::channel`
//! and `subsystem` (the async users), `wrapper::daemon` (the [`blocking`] user).
//!
//! Layout: each side first sends [`MAGIC`] then one frame holding its [`Hello`]; after
//! that, frames of `u32` big-endian length + payload. The magic lets the server's peer
//! notice shell start-up output (a `.bashrc` that echoes) instead of misparsing it as a
//! length: anything else becomes [`Error::Garbage`] with a printable preview.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::msg::{Hello, Message};
use super::{escape_preview, Error};

/// The 8 bytes each side sends before its hello frame.
pub const MAGIC: [u8; 8] = *b"\0HOARDCC";
/// The largest frame accepted (or sent): 256 MiB.
pub const MAX_FRAME: u32 = 256 << 20;
/// The largest hello frame accepted.
pub const MAX_HELLO: u32 = 64 << 10;
/// How many bytes of garbage [`read_hello`] shows in [`Error::Garbage`].
const PREVIEW_LEN: usize = 64;
/// Frames up to this size are written with one `write_all` (header and payload copied
/// together), so that small messages leave as one packet.
const COALESCE_LIMIT: usize = 64 << 10;
/// The initial buffer for a frame body; it grows as bytes really arrive, so a peer that
/// announces a big frame and sends nothing costs us nothing.
const INITIAL_BODY_CAPACITY: usize = 1 << 20;

/// Encodes a value with postcard.
///
/// # Panics
/// Only if `T`'s `Serialize` impl is one postcard cannot express (a sequence of
/// unknown length, a custom error): never for the types in [`msg`](super::msg).
pub fn encode<T: Serialize>(t: &T) -> Vec<u8> {
    postcard::to_allocvec(t).expect("postcard encodes every hoardcc message type")
}

/// Decodes a postcard value that must fill `b` exactly.
///
/// # Errors
/// [`Error::Decode`] on malformed input or trailing bytes.
pub fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, Error> {
    let (value, rest) = postcard::take_from_bytes(b).map_err(|e| Error::Decode(e.to_string()))?;
    if !rest.is_empty() {
        return Err(Error::Decode(format!(
            "{} trailing bytes after the message",
            rest.len()
        )));
    }
    Ok(value)
}

/// Checks a frame length against the local bound `max` (and the global [`MAX_FRAME`]).
fn check_len(what: &'static str, len: u32, max: u32) -> Result<(), Error> {
    let max = max.min(MAX_FRAME);
    if len > max {
        return Err(Error::TooLarge {
            what,
            len: len.into(),
            max: max.into(),
        });
    }
    Ok(())
}

/// The 4-byte header of a payload we are about to send.
fn header_for(payload: &[u8]) -> Result<[u8; 4], Error> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&l| l <= MAX_FRAME)
        .ok_or(Error::TooLarge {
            what: "outgoing frame",
            len: payload.len() as u64,
            max: MAX_FRAME.into(),
        })?;
    Ok(len.to_be_bytes())
}

/// Writes one frame (length + payload) and flushes.
///
/// # Errors
/// [`Error::TooLarge`] if `payload` exceeds [`MAX_FRAME`] (nothing is written then);
/// [`Error::Io`] from the stream.
///
/// # Cancel safety
/// Not cancel safe: a cancelled write leaves a partial frame on the stream.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, payload: &[u8]) -> Result<(), Error> {
    let header = header_for(payload)?;
    if payload.len() <= COALESCE_LIMIT {
        let mut buf = Vec::with_capacity(4 + payload.len());
        buf.extend_from_slice(&header);
        buf.extend_from_slice(payload);
        w.write_all(&buf).await?;
    } else {
        w.write_all(&header).await?;
        w.write_all(payload).await?;
    }
    w.flush().await?;
    Ok(())
}

/// Reads one frame of at most `max` bytes (and never more than [`MAX_FRAME`]).
///
/// Returns `Ok(None)` on a clean end of stream before the first length byte.
///
/// # Errors
/// [`Error::Truncated`] if the stream ends inside the frame; [`Error::TooLarge`] if the
/// announced length exceeds `max` (checked before allocating); [`Error::Io`].
///
/// # Cancel safety
/// Not cancel safe: bytes already consumed from `r` are lost if the future is dropped.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: u32,
) -> Result<Option<Vec<u8>>, Error> {
    read_frame_observed(r, max, &mut |_| {}).await
}

/// [`read_frame`], calling `on_len` with the announced length (checked against `max`)
/// before the body is read: a caller can tell that a big frame is arriving.
///
/// # Errors
/// As [`read_frame`].
///
/// # Cancel safety
/// As [`read_frame`].
pub async fn read_frame_observed<R: AsyncRead + Unpin>(
    r: &mut R,
    max: u32,
    on_len: &mut (dyn FnMut(u32) + Send),
) -> Result<Option<Vec<u8>>, Error> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < header.len() {
        let n = r.read(&mut header[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(Error::Truncated {
                    what: "frame length",
                })
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes(header);
    check_len("frame", len, max)?;
    on_len(len);
    let mut body = Vec::with_capacity((len as usize).min(INITIAL_BODY_CAPACITY));
    (&mut *r).take(len.into()).read_to_end(&mut body).await?;
    if body.len() != len as usize {
        return Err(Error::Truncated { what: "frame body" });
    }
    Ok(Some(body))
}

/// Encodes `m` with postcard and writes it as one frame.
///
/// # Errors
/// As [`write_frame`].
pub async fn write_message<W: AsyncWrite + Unpin>(w: &mut W, m: &Message) -> Result<(), Error> {
    write_frame(w, &encode(m)).await
}

/// Reads one frame (at most [`MAX_FRAME`]) and decodes it as a [`Message`].
///
/// Returns `Ok(None)` on a clean end of stream between messages.
///
/// # Errors
/// As [`read_frame`], plus [`Error::Decode`].
pub async fn read_message<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Message>, Error> {
    match read_frame(r, MAX_FRAME).await? {
        Some(frame) => decode(&frame).map(Some),
        None => Ok(None),
    }
}

/// Writes [`MAGIC`] and then `h` as one frame, and flushes.
///
/// # Errors
/// As [`write_frame`].
pub async fn write_hello<W: AsyncWrite + Unpin>(w: &mut W, h: &Hello) -> Result<(), Error> {
    let payload = encode(h);
    let mut buf = Vec::with_capacity(MAGIC.len() + 4 + payload.len());
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&header_for(&payload)?);
    buf.extend_from_slice(&payload);
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

/// Reads the peer's [`MAGIC`] and hello frame (at most [`MAX_HELLO`]).
///
/// If the stream starts with anything but the magic, it reads whatever else of the first
/// 64 bytes is available *right now* (without waiting) and reports it. Otherwise this
/// waits for as long as the peer takes: wrap it in the caller's handshake timeout.
///
/// # Errors
/// [`Error::Garbage`] with an escaped preview of the stray bytes (cut at the magic if
/// the real hello follows them); [`Error::Truncated`] if the stream ends first;
/// [`Error::TooLarge`], [`Error::Decode`], [`Error::Io`].
pub async fn read_hello<R: AsyncRead + Unpin>(r: &mut R) -> Result<Hello, Error> {
    let mut head = [0u8; PREVIEW_LEN];
    let mut got = 0;
    while got < MAGIC.len() {
        let n = r.read(&mut head[got..MAGIC.len()]).await?;
        if n == 0 {
            if got == 0 {
                return Err(Error::Truncated { what: "hello" });
            }
            // A stream that ends inside something magic-like is merely short.
            return Err(Error::Truncated {
                what: "hello magic",
            });
        }
        let before = got;
        got += n;
        if head[before..got] != MAGIC[before..got] {
            got += read_available(r, &mut head[got..]).await;
            return Err(garbage(&head[..got]));
        }
    }
    let frame = read_frame(r, MAX_HELLO)
        .await?
        .ok_or(Error::Truncated { what: "hello" })?;
    decode(&frame)
}

/// Reads into `buf` what the stream has ready without waiting; returns the count.
/// Errors are swallowed: this only enriches an error message that is already coming.
async fn read_available<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> usize {
    let mut filled = 0;
    while filled < buf.len() {
        let step = poll_fn(|cx| {
            let mut rb = ReadBuf::new(&mut buf[filled..]);
            match Pin::new(&mut *r).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => Poll::Ready(rb.filled().len()),
                Poll::Ready(Err(_)) | Poll::Pending => Poll::Ready(0),
            }
        })
        .await;
        if step == 0 {
            break;
        }
        filled += step;
    }
    filled
}

/// Builds the [`Error::Garbage`] for the stray bytes `bytes`: if the real magic appears
/// after them (a banner then our hello), the preview stops there.
fn garbage(bytes: &[u8]) -> Error {
    let cut = (1..bytes.len())
        .find(|&i| {
            let tail = &bytes[i..];
            let n = tail.len().min(MAGIC.len());
            // Either the whole magic, or a prefix of it cut off by the 64-byte window.
            tail[..n] == MAGIC[..n] && (n == MAGIC.len() || bytes.len() == PREVIEW_LEN)
        })
        .unwrap_or(bytes.len());
    Error::Garbage {
        preview: escape_preview(&bytes[..cut]),
    }
}

/// Picks the highest protocol version both hellos allow.
///
/// # Errors
/// [`Error::Version`] if the ranges `min_version..=version` do not overlap.
pub fn negotiate(ours: &Hello, theirs: &Hello) -> Result<u32, Error> {
    let high = ours.version.min(theirs.version);
    let low = ours.min_version.max(theirs.min_version);
    if high >= low {
        Ok(high)
    } else {
        Err(Error::Version {
            ours: ours.version,
            theirs_min: theirs.min_version,
            theirs_max: theirs.version,
        })
    }
}

/// The same framing over blocking `std::io`, for the synchronous wrapper talking to the
/// local mux on its Unix socket. Frames and messages are byte-identical to the async ones.
pub mod blocking {
    use std::io::{Read, Write};

    use serde::de::DeserializeOwned;
    use serde::Serialize;

    use super::{check_len, decode, encode, header_for, INITIAL_BODY_CAPACITY, MAX_FRAME};
    use crate::proto::Error;

    /// Writes one frame (length + payload) and flushes.
    ///
    /// # Errors
    /// [`Error::TooLarge`] if `payload` exceeds [`MAX_FRAME`]; [`Error::Io`].
    pub fn write_frame<W: Write>(w: &mut W, payload: &[u8]) -> Result<(), Error> {
        let header = header_for(payload)?;
        w.write_all(&header)?;
        w.write_all(payload)?;
        w.flush()?;
        Ok(())
    }

    /// Reads one frame of at most `max` bytes; `Ok(None)` on a clean end of stream
    /// before the first length byte.
    ///
    /// # Errors
    /// [`Error::Truncated`], [`Error::TooLarge`] (before allocating), [`Error::Io`].
    pub fn read_frame<R: Read>(r: &mut R, max: u32) -> Result<Option<Vec<u8>>, Error> {
        let mut header = [0u8; 4];
        let mut got = 0;
        while got < header.len() {
            let n = match r.read(&mut header[got..]) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                return if got == 0 {
                    Ok(None)
                } else {
                    Err(Error::Truncated {
                        what: "frame length",
                    })
                };
            }
            got += n;
        }
        let len = u32::from_be_bytes(header);
        check_len("frame", len, max)?;
        let mut body = Vec::with_capacity((len as usize).min(INITIAL_BODY_CAPACITY));
        r.by_ref().take(len.into()).read_to_end(&mut body)?;
        if body.len() != len as usize {
            return Err(Error::Truncated { what: "frame body" });
        }
        Ok(Some(body))
    }

    /// Encodes `t` with postcard and writes it as one frame.
    ///
    /// # Errors
    /// As [`write_frame`].
    pub fn write_message<W: Write, T: Serialize>(w: &mut W, t: &T) -> Result<(), Error> {
        write_frame(w, &encode(t))
    }

    /// Reads one frame (at most [`MAX_FRAME`]) and decodes it; `Ok(None)` on a clean end
    /// of stream between messages.
    ///
    /// # Errors
    /// As [`read_frame`], plus [`Error::Decode`].
    pub fn read_message<R: Read, T: DeserializeOwned>(r: &mut R) -> Result<Option<T>, Error> {
        match read_frame(r, MAX_FRAME)? {
            Some(frame) => decode(&frame).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::msg::{
        Blob, Codec, ContextFile, Input, Job, JobHeader, JobResult, OutputFile, ResultV2,
        SourceKind,
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
}
