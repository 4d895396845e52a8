//! Native framing: the byte layer under [`msg`](super::msg) on every hoardcc lane
//! (wrapper ⇄ mux on the Unix socket, mux ⇄ `hoardcc serve` over an SSH channel).
//! Neighbours: `proto::msg` (what the frames carry, postcard-encoded), `mux::lane`,
//! `mux::conn` and `subsystem` (the async users), `wrapper::mux_client` and `cli` (the
//! [`blocking`] users, through the same reader and writer).
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
/// local mux on its Unix socket.
///
/// There is one frame reader and one writer: the async ones above. This module only runs
/// them over a `std::io` stream, seen through an adapter whose every poll is a blocking
/// call that is never `Pending`, so each future completes in its first poll and needs no
/// runtime. The bounds are the same code; a socket's read or write timeout
/// (`set_read_timeout`) surfaces as the [`Error::Io`] it raises
/// (`WouldBlock`/`TimedOut`), as the wrapper's reply deadline expects.
pub mod blocking {
    use std::future::Future;
    use std::io::{self, Read, Write};
    use std::pin::{pin, Pin};
    use std::task::{Context, Poll, Waker};

    use serde::de::DeserializeOwned;
    use serde::Serialize;
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    use super::{decode, encode, MAX_FRAME};
    use crate::proto::Error;

    /// A blocking `std::io` stream seen as a tokio one: each poll does the blocking call
    /// and is always ready. `Interrupted` is retried here, as `std`'s own loops do.
    struct Blocking<S>(S);

    impl<R: Read + Unpin> AsyncRead for Blocking<R> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            loop {
                match self.0.read(buf.initialize_unfilled()) {
                    Ok(n) => {
                        buf.advance(n);
                        return Poll::Ready(Ok(()));
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
        }
    }

    impl<W: Write + Unpin> AsyncWrite for Blocking<W> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            loop {
                match self.0.write(buf) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => return Poll::Ready(other),
                }
            }
        }

        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(self.0.flush())
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.poll_flush(cx)
        }
    }

    /// Runs a future over [`Blocking`] streams to completion in one poll.
    ///
    /// # Panics
    /// If the future is pending, which a future awaiting only [`Blocking`] streams never is.
    fn run<F: Future>(f: F) -> F::Output {
        match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(out) => out,
            Poll::Pending => unreachable!("a future over blocking streams is never pending"),
        }
    }

    /// Writes one frame (length + payload) and flushes: [`super::write_frame`].
    ///
    /// # Errors
    /// [`Error::TooLarge`] if `payload` exceeds [`MAX_FRAME`]; [`Error::Io`].
    pub fn write_frame<W: Write>(w: &mut W, payload: &[u8]) -> Result<(), Error> {
        run(super::write_frame(&mut Blocking(w), payload))
    }

    /// Reads one frame of at most `max` bytes: [`super::read_frame`]. `Ok(None)` on a clean
    /// end of stream before the first length byte.
    ///
    /// # Errors
    /// [`Error::Truncated`], [`Error::TooLarge`] (before allocating), [`Error::Io`].
    pub fn read_frame<R: Read>(r: &mut R, max: u32) -> Result<Option<Vec<u8>>, Error> {
        run(super::read_frame(&mut Blocking(r), max))
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
mod tests;
