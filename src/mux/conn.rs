//! Stage: one wrapper connection — `Reserve`, `Run`, `LocalDone`, `Status`, `Watch`,
//! `Stats`, `Stop` over the mux socket until the wrapper closes it; whatever it holds
//! (host slot, job entry) is released when it ends. How each job ends is counted here
//! (`mux::stats`). Neighbours: `mux::listener` (accepts it), `mux::job` (reserve and
//! run), `mux::status` (the report), `mux::monitor` (the change signal a watcher waits
//! on), `wrapper::mux_client` and `cli::mon` (the other ends).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use crate::exit::ExitCode;
use crate::mux::job::Held;
use crate::mux::listener::{Active, Daemon};
use crate::mux::mux_version;
use crate::mux::scheduler::HostSlot;
use crate::proto::frame::{self, MAX_FRAME};
use crate::proto::msg::{MuxReply, MuxRequest};
use crate::proto::status::JobState;

/// How long a wrapper may hold a reserved host slot before sending `Run` (it is preprocessing).
const RESERVED_TIMEOUT: Duration = Duration::from_secs(600);
/// How long writing a reply to a wrapper may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Least time between two reports to one watcher: the changes in between coalesce.
const WATCH_GAP: Duration = Duration::from_millis(100);
/// A watcher gets a report at least this often, changed or not, so it can tell a live
/// mux from a stuck one (`cli::mon` gives up after three missed beats).
pub const WATCH_BEAT: Duration = Duration::from_secs(10);

/// The local compile a wrapper runs after this connection's answer, counted when it
/// reports `LocalDone`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LocalKind {
    /// The mux gave it a local slot.
    Slot,
    /// Distribution failed (on this host, if one was chosen): a fallback.
    Fallback,
}

pub(super) fn failed(message: impl Into<String>, code: ExitCode) -> MuxReply {
    MuxReply::Failed {
        message: message.into(),
        exit_code: code.code(),
    }
}

/// One wrapper connection: requests until it closes. Everything it holds (host slot, job
/// entry) is released on return; `_active` counts the wrapper as connected until this returns.
pub(super) async fn serve_wrapper(d: Arc<Daemon>, stream: UnixStream, id: u64, active: Active) {
    let mut active = Some(active);
    let (mut rd, mut wr) = stream.into_split();
    let mut held: Option<Held> = None;
    let mut local: Option<HostSlot> = None;
    let mut local_kind: Option<(LocalKind, Option<String>)> = None;
    loop {
        let wait = if held.is_some() {
            RESERVED_TIMEOUT
        } else {
            Duration::MAX
        };
        let frame = tokio::select! {
            f = tokio::time::timeout(wait, frame::read_frame(&mut rd, MAX_FRAME)) => f,
            _ = d.shutdown.cancelled() => break,
        };
        let req: MuxRequest = match frame {
            Ok(Ok(Some(bytes))) => match frame::decode(&bytes) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("wrapper {id}: bad request: {e}");
                    break;
                }
            },
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                tracing::debug!("wrapper {id}: {e}");
                break;
            }
            Err(_) => {
                tracing::warn!(
                    "wrapper {id}: no Run within {RESERVED_TIMEOUT:?} of Reserve; freeing the slot"
                );
                break;
            }
        };
        let mut stop = false;
        let reply = match req {
            MuxRequest::Reserve {
                hosts,
                file,
                client_version,
                compiler,
            } => {
                if client_version != mux_version() {
                    MuxReply::WrongVersion {
                        mux_version: mux_version(),
                    }
                } else {
                    drop(held.take());
                    drop(local.take());
                    let r = tokio::select! {
                        r = d.reserve(id, &hosts, &file, compiler, &mut held, &mut local) => r,
                        _ = d.shutdown.cancelled() => break,
                    };
                    local_kind = d.reserve_ended(id, &r);
                    r
                }
            }
            MuxRequest::Run {
                spec,
                source,
                recipe,
            } => {
                // The wrapper says nothing while its job runs: anything on the socket,
                // its end included, means it is gone, and the job (and host slot) go too.
                let start = tokio::time::Instant::now();
                let r = tokio::select! {
                    r = d.run_job(id, &mut held, *spec, source, recipe) => r,
                    _ = wrapper_gone(&mut rd) => {
                        tracing::info!("wrapper {id} went away during its job");
                        break;
                    }
                    _ = d.shutdown.cancelled() => break,
                };
                local_kind = d.run_ended(id, &r, start.elapsed());
                r
            }
            MuxRequest::LocalDone { millis } => {
                if let Some((kind, host)) = local_kind.take() {
                    d.stats.update(|s| {
                        s.local_timed += 1;
                        s.local_ms = s.local_ms.saturating_add(millis);
                        if kind == LocalKind::Fallback {
                            s.jobs_fallback += 1;
                            if let Some(h) = &host {
                                s.host_mut(h).jobs_fallback += 1;
                            }
                        }
                    });
                }
                continue; // no reply
            }
            MuxRequest::Status => MuxReply::Status(Box::new(d.status())),
            MuxRequest::Watch => {
                // A watcher is not a wrapper: it keeps no mux alive.
                drop(active.take());
                watch(&d, &mut rd, &mut wr).await;
                break;
            }
            MuxRequest::Stats { zero } => {
                if zero {
                    d.stats.zero();
                }
                MuxReply::Stats(Box::new(d.stats.snapshot()))
            }
            MuxRequest::Stop => {
                stop = true;
                MuxReply::Stopping
            }
        };
        let sent = tokio::time::timeout(
            REPLY_TIMEOUT,
            frame::write_frame(&mut wr, &frame::encode(&reply)),
        )
        .await;
        if stop {
            tracing::info!("stop requested");
            d.shutdown.cancel();
            break;
        }
        if !matches!(sent, Ok(Ok(()))) {
            break;
        }
    }
    d.monitor.remove_job(id);
    drop(active);
}

impl Daemon {
    /// Count a `Reserve` answer; what local compile (if any) the wrapper runs next.
    fn reserve_ended(&self, id: u64, reply: &MuxReply) -> Option<(LocalKind, Option<String>)> {
        match reply {
            MuxReply::Local { .. } => {
                self.stats.update(|s| s.jobs_local += 1);
                Some((LocalKind::Slot, None))
            }
            MuxReply::Failed { message, .. } => Some(self.fell_back(id, message)),
            _ => None,
        }
    }

    /// Count a `Run` answer that took `elapsed`; what local compile the wrapper runs next.
    fn run_ended(
        &self,
        id: u64,
        reply: &MuxReply,
        elapsed: Duration,
    ) -> Option<(LocalKind, Option<String>)> {
        match reply {
            MuxReply::Done(result) => {
                let host = self.monitor.host_of(id);
                let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
                let hit = u64::from(result.cached);
                if let (true, Some(h)) = (result.cached, &host) {
                    self.monitor.cache_hit(h);
                }
                self.stats.update(|s| {
                    s.jobs_remote += 1;
                    s.jobs_cache_hit += hit;
                    s.remote_ms = s.remote_ms.saturating_add(ms);
                    if let Some(h) = &host {
                        let h = s.host_mut(h);
                        h.jobs_remote += 1;
                        h.jobs_cache_hit += hit;
                        h.remote_ms = h.remote_ms.saturating_add(ms);
                    }
                });
                None
            }
            MuxReply::Failed { message, .. } => Some(self.fell_back(id, message)),
            _ => None,
        }
    }

    /// Job `id` could not be distributed (`why`): the wrapper compiles locally now.
    fn fell_back(&self, id: u64, why: &str) -> (LocalKind, Option<String>) {
        let host = self.monitor.host_of(id);
        self.monitor.fail(id, host.as_deref(), why);
        self.monitor.set_job(id, None, JobState::Local, None);
        (LocalKind::Fallback, host)
    }
}

/// Serve a watcher (`hoardcc mon`): a report now, then one after each change (changes
/// within [`WATCH_GAP`] coalesce) and at least every [`WATCH_BEAT`], until it closes
/// the connection or the mux stops. Bumping the change signal never waits for a
/// watcher; one that reads slowly only delays its own reports, and one that reads
/// nothing for [`REPLY_TIMEOUT`] is dropped.
async fn watch(d: &Daemon, rd: &mut OwnedReadHalf, wr: &mut OwnedWriteHalf) {
    let mut changes = d.monitor.changes().subscribe();
    loop {
        changes.borrow_and_update();
        let reply = MuxReply::Status(Box::new(d.status()));
        let sent = tokio::time::timeout(
            REPLY_TIMEOUT,
            frame::write_frame(wr, &frame::encode(&reply)),
        )
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(WATCH_GAP) => {}
            _ = wrapper_gone(rd) => return,
            _ = d.shutdown.cancelled() => return,
        }
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(WATCH_BEAT) => {}
            _ = wrapper_gone(rd) => return,
            _ = d.shutdown.cancelled() => return,
        }
    }
}

/// Returns when the wrapper closes its end (or sends something mid-job). Cancel-safe.
async fn wrapper_gone(rd: &mut OwnedReadHalf) {
    use tokio::io::AsyncReadExt;
    let mut b = [0u8; 1];
    let _ = rd.read(&mut b).await;
}
