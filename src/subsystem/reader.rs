//! Stage: server, the lane reader: reads the client's frames after the hellos, with
//! the two timeouts a lane needs. Between frames, a lane with nothing to do (no job
//! running or queued: the `busy` flag) may stay silent for the idle timeout, then it is
//! closed cleanly, as if the client had hung up. The mux notices that at once (its idle
//! lane watcher sees EOF and drops the lane) and pings any lane idle over 30 s before
//! giving it a job, so a server closing an idle lane never fails a job. Inside a frame,
//! the client must keep sending: a silence longer than the frame timeout drops the lane.
//! Neighbours: `subsystem::session` (runs this next to the job it serves),
//! `proto::frame` (the framing).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, ReadBuf};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::proto::frame;
use crate::proto::msg::Message;
use crate::proto::Error as ProtoError;

/// What the reader found next.
// One value per frame, moved once into a channel: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Incoming {
    /// A message, with the size of the frame it came in (for the queue's byte budget).
    Message(Message, u64),
    /// The client closed the lane between frames.
    Eof,
    /// Nothing arrived for the idle timeout while the lane had no work: close it.
    Idle,
}

/// The lane's timeouts and frame bound.
#[derive(Debug, Clone, Copy)]
pub struct LaneLimits {
    /// Silence allowed between frames while not busy.
    pub idle: Duration,
    /// Silence allowed inside a frame.
    pub frame: Duration,
    /// Largest frame accepted.
    pub max_frame: u32,
}

/// Reads the next message from `r`.
///
/// # Errors
/// As [`frame::read_frame`] and [`frame::decode`]; a frame that stalls for longer than
/// `limits.frame` is [`ProtoError::Io`] of kind `TimedOut`.
///
/// # Cancel safety
/// Cancel safe only while waiting for a frame's first byte (nothing is consumed then).
pub async fn next<R: AsyncBufRead + Unpin>(
    r: &mut R,
    busy: &mut watch::Receiver<bool>,
    limits: LaneLimits,
) -> Result<Incoming, ProtoError> {
    loop {
        let is_busy = *busy.borrow_and_update();
        let idle = async {
            if is_busy {
                std::future::pending::<()>().await
            } else {
                tokio::time::sleep(limits.idle).await
            }
        };
        tokio::select! {
            got = r.fill_buf() => {
                if got?.is_empty() {
                    return Ok(Incoming::Eof);
                }
                break;
            }
            () = idle => return Ok(Incoming::Idle),
            changed = busy.changed() => {
                if changed.is_err() {
                    // The session is gone; nobody will read what we would read.
                    return Ok(Incoming::Eof);
                }
            }
        }
    }
    let mut stalled = Stall::new(r, limits.frame);
    let body = frame::read_frame(&mut stalled, limits.max_frame)
        .await?
        .ok_or(ProtoError::Truncated {
            what: "frame length",
        })?;
    let len = body.len() as u64;
    // A protocol-1/2 client's job becomes the one `Job` here, at the edge.
    let message = match frame::decode(&body)? {
        Message::Job(v2) => Message::Job3(v2.into()),
        m => m,
    };
    Ok(Incoming::Message(message, len))
}

/// An `AsyncRead` that fails with `TimedOut` when `inner` makes no progress for `limit`.
struct Stall<'a, R> {
    inner: &'a mut R,
    limit: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<'a, R> Stall<'a, R> {
    fn new(inner: &'a mut R, limit: Duration) -> Self {
        Stall {
            inner,
            limit,
            deadline: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Stall<'_, R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut *this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                let limit = this.limit;
                this.deadline.as_mut().reset(Instant::now() + limit);
                Poll::Ready(r)
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the client sent nothing for {} s in the middle of a frame",
                        this.limit.as_secs()
                    ),
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncWriteExt, BufReader};

    const LIMITS: LaneLimits = LaneLimits {
        idle: Duration::from_secs(300),
        frame: Duration::from_secs(60),
        max_frame: 1 << 20,
    };

    fn ping_frame() -> Vec<u8> {
        let body = frame::encode(&Message::Ping { nonce: 7 });
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend(body);
        f
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_lane_closes_after_the_idle_timeout_only_when_not_busy() {
        let (_client, server) = tokio::io::duplex(1024);
        let mut r = BufReader::new(server);
        let (busy_tx, mut busy) = watch::channel(true);
        let start = Instant::now();
        // Busy: no idle timeout, however long.
        let waited =
            tokio::time::timeout(Duration::from_secs(3600), next(&mut r, &mut busy, LIMITS)).await;
        assert!(waited.is_err(), "a busy lane is never idle");
        // Not busy: closed after exactly the idle timeout, counted from becoming idle.
        busy_tx.send_replace(false);
        let became_idle = Instant::now();
        let got = next(&mut r, &mut busy, LIMITS).await.unwrap();
        assert!(matches!(got, Incoming::Idle), "{got:?}");
        assert_eq!(became_idle - start, Duration::from_secs(3600));
        assert_eq!(Instant::now() - became_idle, LIMITS.idle);
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_resets_the_idle_timer_and_eof_is_clean() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut r = BufReader::new(server);
        let (_busy_tx, mut busy) = watch::channel(false);
        let writer = async {
            tokio::time::sleep(LIMITS.idle - Duration::from_secs(1)).await;
            client.write_all(&ping_frame()).await.unwrap();
            client
        };
        let (got, client) = tokio::join!(next(&mut r, &mut busy, LIMITS), writer);
        assert!(matches!(
            got.unwrap(),
            Incoming::Message(Message::Ping { nonce: 7 }, _)
        ));
        drop(client);
        assert!(matches!(
            next(&mut r, &mut busy, LIMITS).await.unwrap(),
            Incoming::Eof
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_that_stalls_times_out() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut r = BufReader::new(server);
        let (_busy_tx, mut busy) = watch::channel(false);
        let f = ping_frame();
        client.write_all(&f[..f.len() - 1]).await.unwrap();
        let start = Instant::now();
        let err = next(&mut r, &mut busy, LIMITS).await.unwrap_err();
        match err {
            ProtoError::Io(e) => assert_eq!(e.kind(), io::ErrorKind::TimedOut),
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert_eq!(Instant::now() - start, LIMITS.frame);
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_but_steady_frame_is_read() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut r = BufReader::new(server);
        let (_busy_tx, mut busy) = watch::channel(false);
        let f = ping_frame();
        let writer = async {
            for b in &f {
                tokio::time::sleep(LIMITS.frame - Duration::from_secs(1)).await;
                client.write_all(std::slice::from_ref(b)).await.unwrap();
            }
        };
        let (got, ()) = tokio::join!(next(&mut r, &mut busy, LIMITS), writer);
        assert!(matches!(
            got.unwrap(),
            Incoming::Message(Message::Ping { .. }, _)
        ));
    }

    #[tokio::test]
    async fn an_oversized_frame_is_refused_before_its_body() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut r = BufReader::new(server);
        let (_busy_tx, mut busy) = watch::channel(false);
        client
            .write_all(&(LIMITS.max_frame + 1).to_be_bytes())
            .await
            .unwrap();
        let err = next(&mut r, &mut busy, LIMITS).await.unwrap_err();
        assert!(matches!(err, ProtoError::TooLarge { .. }), "{err:?}");
    }
}
