//! Stage: one wrapper connection — `Reserve`, `Run`, `Status`, `Stop` over the mux
//! socket until the wrapper closes it; whatever it holds (slot, job entry) is released
//! when it ends. Neighbours: `mux::listener` (accepts it), `mux::job` (reserve and run),
//! `mux::status` (the report), `wrapper::mux_client` (the other end).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixStream;

use crate::exit::ExitCode;
use crate::mux::job::Held;
use crate::mux::listener::{Active, Daemon};
use crate::mux::mux_version;
use crate::mux::scheduler::SlotGuard;
use crate::proto::frame::{self, MAX_FRAME};
use crate::proto::msg::{MuxReply, MuxRequest};

/// How long a wrapper may hold a reserved slot before sending `Run` (it is preprocessing).
const RESERVED_TIMEOUT: Duration = Duration::from_secs(600);
/// How long writing a reply to a wrapper may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) fn failed(message: impl Into<String>, code: ExitCode) -> MuxReply {
    MuxReply::Failed {
        message: message.into(),
        exit_code: code.code(),
    }
}

/// One wrapper connection: requests until it closes. Everything it holds (slot, job
/// entry) is released on return; `_active` counts the wrapper as connected until this returns.
pub(super) async fn serve_wrapper(d: Arc<Daemon>, stream: UnixStream, id: u64, _active: Active) {
    let (mut rd, mut wr) = stream.into_split();
    let mut held: Option<Held> = None;
    let mut local: Option<SlotGuard> = None;
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
                    r
                }
            }
            MuxRequest::Run { spec, source } => {
                // The wrapper says nothing while its job runs: anything on the socket,
                // its end included, means it is gone, and the job (and slot) go too.
                let r = tokio::select! {
                    r = d.run_job(id, held.take(), *spec, source) => r,
                    _ = wrapper_gone(&mut rd) => {
                        tracing::info!("wrapper {id} went away during its job");
                        break;
                    }
                    _ = d.shutdown.cancelled() => break,
                };
                r
            }
            MuxRequest::Status => MuxReply::Status {
                json: d.status().to_json(),
            },
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
    d.jobs.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
}

/// Returns when the wrapper closes its end (or sends something mid-job).
async fn wrapper_gone(rd: &mut tokio::net::unix::OwnedReadHalf) {
    use tokio::io::AsyncReadExt;
    let mut b = [0u8; 1];
    let _ = rd.read(&mut b).await;
}
