//! Stage: one native job on a lane — the exchange with a `hoardcc serve` session: the
//! compiler identity declared once per lane, the chunks the host lacks (claimed so that
//! no two lanes send the same ones, or awaited while another lane sends them; one pack
//! or several, each acknowledged in turn), the job, then heartbeats, `Stored` and
//! `Missing` until the answer. Neighbours: `mux::lane` (opens the lane, calls
//! [`run_native`]), `mux::upload` (what to send, in-flight chunks),
//! `subsystem::session` (the other end).

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use super::{
    completed_or_fault, LaneEvent, Observer, TransportError, MAX_MISSING_ROUNDS, SMALL_FRAME,
};
use crate::mux::upload::{self, Flight, Pack, SharedChunks, Source, Upload};
use crate::proto::chunk_id::ChunkId;
use crate::proto::fault::Ended;
use crate::proto::frame;
use crate::proto::msg::{
    Blob, CompilerId, Job, JobResult, JobSpec, Message, SourceKind, FAULT_VERSION, JOB3_VERSION,
    MAX_DECLARED_IDENTITIES,
};

/// The server a native job runs on.
#[derive(Clone, Copy)]
pub(super) struct Peer<'a> {
    pub host: &'a str,
    /// The negotiated protocol version.
    pub version: u32,
    /// The server takes chunked input.
    pub chunks: bool,
    /// The server acknowledges chunk packs (`Stored`) into a store its sessions share.
    pub acks: bool,
    /// The server takes compiler identities declared once per lane.
    pub identity: bool,
    /// The server takes delta packs (`chunk-delta`, and they are not turned off).
    pub delta: bool,
}

/// Where a native job learns and counts chunks.
#[derive(Clone, Copy)]
pub(super) struct Books<'a> {
    /// Which chunks the server holds.
    pub known: &'a SharedChunks,
    /// The host's counters.
    pub counts: &'a SharedChunks,
}

/// Writes one encoded frame within `io_timeout`, counting its bytes.
async fn send_frame<S: AsyncWrite + Unpin>(
    stream: &mut S,
    payload: &[u8],
    io_timeout: Duration,
    counts: &SharedChunks,
) -> Result<(), TransportError> {
    tokio::time::timeout(io_timeout, frame::write_frame(stream, payload))
        .await
        .map_err(|_| TransportError::Timeout("sending the job"))??;
    upload::lock(counts).counters.bytes_sent += 4 + payload.len() as u64;
    Ok(())
}

/// The identity a job carries: none when it was declared on this lane already (or is
/// declared now, by the frame returned), else the job's own.
fn identity_for(
    spec: &JobSpec,
    peer: Peer<'_>,
    declared: &mut HashMap<String, CompilerId>,
) -> (Option<CompilerId>, Option<Vec<u8>>) {
    let Some(id) = &spec.compiler_id else {
        return (None, None);
    };
    let name = &spec.header.compiler;
    if !peer.identity {
        return (Some(id.clone()), None);
    }
    if declared.get(name) == Some(id) {
        return (None, None);
    }
    if !declared.contains_key(name) && declared.len() >= MAX_DECLARED_IDENTITIES {
        return (Some(id.clone()), None);
    }
    declared.insert(name.clone(), id.clone());
    let frame = frame::encode(&Message::Identity {
        compiler: name.clone(),
        id: id.clone(),
    });
    (None, Some(frame))
}

/// One job on a native lane: identity, chunks, job, then the answers until its result.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run_native<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    id: u64,
    spec: &JobSpec,
    source: &Source,
    io_timeout: Duration,
    peer: Peer<'_>,
    books: Books<'_>,
    declared: &mut HashMap<String, CompilerId>,
    observe: Observer<'_>,
) -> Result<JobResult, TransportError> {
    let mut up = if peer.chunks && peer.version >= JOB3_VERSION {
        Upload::chunked(spec, source)
    } else {
        Upload::whole(spec, source)
    };
    let (compiler_id, identity_frame) = if peer.version >= JOB3_VERSION {
        identity_for(spec, peer, declared)
    } else {
        (None, None)
    };
    let job = Job {
        id,
        header: spec.header.clone(),
        source_kind: SourceKind::DirectivesOnly,
        source: std::mem::replace(
            &mut up.source,
            crate::proto::msg::Input::Whole(Blob::empty()),
        ),
        context: std::mem::take(&mut up.context),
        env: spec.env.clone(),
        compiler_id,
        cache: spec.cache,
    };
    let message = if peer.version >= JOB3_VERSION {
        Message::Job3(job)
    } else {
        Message::Job(job.to_v2().ok_or_else(|| {
            TransportError::Other(format!(
                "{} speaks protocol {}, which cannot take this job",
                peer.host, peer.version
            ))
        })?)
    };
    let job_frame = frame::encode(&message);
    drop(message);
    // The chunks the host is not known to hold go in the same write, right before the
    // job: no round trip of their own. Where the server acknowledges them, the ones
    // another lane is sending right now are awaited instead of sent twice.
    let mut flight = (up.is_chunked() && peer.acks).then(|| Flight::new(books.known));
    let mut awaited = Vec::new();
    // Claimed chunks packed once chunks like them that other lanes are sending (`bases`)
    // have landed.
    let (mut later, mut bases) = (Vec::new(), Vec::new());
    let mut packs = match (flight.as_mut(), up.is_chunked()) {
        (Some(f), _) => {
            let claim = up.claim(f, peer.delta);
            awaited = claim.awaited;
            later = claim.later;
            bases = claim.bases;
            claim.mine
        }
        (None, true) => up.pack_new(books.known, peer.delta),
        (None, false) => Vec::new(),
    };
    // What this job sent first: the next job of its source is packed against it.
    let mut sent: Vec<_> = packs
        .iter()
        .flat_map(|p| p.chunks())
        .map(|c| c.id)
        .collect();
    // The dictionaries of the delta packs, by the chunks packed against them.
    let mut dictionaries: Vec<(Vec<ChunkId>, Vec<ChunkId>)> = packs
        .iter()
        .filter_map(|p| match p {
            Pack::Delta(d) => Some((d.chunks.iter().map(|c| c.id).collect(), d.dict.clone())),
            Pack::Plain(_) => None,
        })
        .collect();
    if up.is_chunked() {
        upload::lock(books.counts).counters.chunked_jobs += 1;
    }
    if let Some(f) = identity_frame {
        send_frame(stream, &f, io_timeout, books.counts).await?;
    }
    let mut rounds = 0u32;
    'send: loop {
        let chunk_frames: Vec<(u64, bool, Vec<u8>)> = std::mem::take(&mut packs)
            .into_iter()
            .filter(|p| !p.chunks().is_empty())
            .map(|p| {
                if let Some(f) = flight.as_mut() {
                    f.sent(p.chunks());
                }
                let (n, delta) = (p.chunks().len() as u64, p.is_delta());
                (n, delta, frame::encode(&p.into_message()))
            })
            .collect();
        let chunk_bytes: u64 = chunk_frames
            .iter()
            .map(|(_, _, f)| f.len() as u64 + 4)
            .sum();
        observe(LaneEvent::Sending {
            bytes: chunk_bytes + job_frame.len() as u64 + 4,
        });
        for (n, delta, f) in chunk_frames {
            send_frame(stream, &f, io_timeout, books.counts).await?;
            let mut b = upload::lock(books.counts);
            b.counters.chunks_sent += n;
            b.counters.delta_packs += u64::from(delta);
            b.counters.pack_bytes += f.len() as u64 + 4;
        }
        if !awaited.is_empty() || !later.is_empty() {
            // Only flights claimed before this job's are awaited, and the oldest waits
            // for none, so lanes never wait on each other in a ring.
            let mine: std::collections::HashSet<ChunkId> = awaited.iter().copied().collect();
            let mut wait = std::mem::take(&mut awaited);
            wait.append(&mut bases);
            let left = upload::await_landed(books.known, wait, io_timeout).await;
            // The awaited chunks that did not land (their lane died), and the chunks
            // that waited for their like to land: packed against what the host now holds.
            let mut ids: Vec<ChunkId> = left.into_iter().filter(|id| mine.contains(id)).collect();
            ids.append(&mut later);
            if !ids.is_empty() {
                let late = up
                    .pack_chunks(books.known, &ids, peer.delta)
                    .ok_or_else(|| {
                        TransportError::Unexpected("an awaited chunk is not the job's".into())
                    })?;
                for p in late.into_iter().filter(|p| !p.chunks().is_empty()) {
                    if let Some(f) = flight.as_mut() {
                        f.sent(p.chunks());
                    }
                    sent.extend(p.chunks().iter().map(|c| c.id));
                    if let Pack::Delta(d) = &p {
                        dictionaries
                            .push((d.chunks.iter().map(|c| c.id).collect(), d.dict.clone()));
                    }
                    let (n, delta) = (p.chunks().len() as u64, p.is_delta());
                    let f = frame::encode(&p.into_message());
                    send_frame(stream, &f, io_timeout, books.counts).await?;
                    let mut b = upload::lock(books.counts);
                    b.counters.chunks_sent += n;
                    b.counters.delta_packs += u64::from(delta);
                    b.counters.pack_bytes += f.len() as u64 + 4;
                }
            }
        }
        send_frame(stream, &job_frame, io_timeout, books.counts).await?;
        observe(LaneEvent::Compiling);
        loop {
            // Each message (heartbeats included) must arrive within io_timeout: a long
            // compile stays alive as long as the server reports progress. A big frame is
            // reported as it starts; a small one once it is known not to be a heartbeat.
            let mut len = 0u32;
            let mut on_len = |l: u32| {
                len = l;
                if l > SMALL_FRAME {
                    observe(LaneEvent::Receiving {
                        bytes: u64::from(l) + 4,
                    });
                }
            };
            let read = frame::read_frame_observed(stream, frame::MAX_FRAME, &mut on_len);
            let bytes = tokio::time::timeout(io_timeout, read)
                .await
                .map_err(|_| TransportError::Timeout("the server's answer"))??;
            let msg: Option<Message> = bytes.map(|b| frame::decode(&b)).transpose()?;
            if len <= SMALL_FRAME
                && !matches!(
                    msg,
                    None | Some(
                        Message::Heartbeat { .. }
                            | Message::Missing { .. }
                            | Message::Stored { .. }
                    )
                )
            {
                observe(LaneEvent::Receiving {
                    bytes: u64::from(len) + 4,
                });
            }
            let host = peer.host.to_string();
            let result = match msg {
                None => return Err(TransportError::Closed),
                Some(Message::Heartbeat { .. }) => continue,
                Some(Message::Stored { unshared }) => {
                    if let Some(f) = flight.as_mut() {
                        f.stored(&unshared);
                    }
                    continue;
                }
                Some(Message::Missing { id: mid, ids }) if mid == id && up.is_chunked() => {
                    rounds += 1;
                    if rounds > MAX_MISSING_ROUNDS {
                        return Err(TransportError::Server {
                            host,
                            message: format!(
                                "{} chunk(s) still missing after {MAX_MISSING_ROUNDS} rounds",
                                ids.len()
                            ),
                        });
                    }
                    tracing::debug!(host = %host, job = id, "the server lacks {} chunk(s)", ids.len());
                    // A delta pack's chunks missing: its dictionary may be gone too,
                    // so it is not believed held any more (never packed against again
                    // before the host has it again).
                    let missing: std::collections::HashSet<&ChunkId> = ids.iter().collect();
                    let mut gone = ids.clone();
                    dictionaries.retain(|(chunks, dict)| {
                        let hit = chunks.iter().any(|c| missing.contains(c));
                        if hit {
                            gone.extend(dict.iter().copied());
                        }
                        !hit
                    });
                    upload::lock(books.known).known.forget(&gone);
                    upload::lock(books.counts).counters.chunks_missing += ids.len() as u64;
                    packs = vec![Pack::Plain(up.pack_ids(&ids).ok_or_else(|| {
                        TransportError::Unexpected("Missing names chunks the job has not".into())
                    })?)];
                    continue 'send;
                }
                Some(Message::Result(r)) if r.id == id => JobResult::from(r),
                Some(Message::Result3(r)) if r.id == id => r,
                Some(Message::Fault { id: fid, fault }) if fid == id => {
                    return Err(TransportError::Fault { host, fault })
                }
                Some(Message::Busy { .. }) => return Err(TransportError::Busy { host }),
                Some(Message::Refused { reason, .. }) => {
                    return Err(TransportError::Refused { host, reason })
                }
                Some(Message::Mismatch { id: mid, reason }) if mid == id => {
                    return Err(TransportError::Mismatch { host, reason })
                }
                Some(Message::ServerError { message, .. }) => {
                    return Err(TransportError::Server { host, message })
                }
                Some(other) => {
                    return Err(TransportError::Unexpected(
                        format!("{other:?}").chars().take(80).collect(),
                    ))
                }
            };
            if up.is_chunked() {
                // The server ran the job: it holds every chunk its recipes name.
                let mut k = upload::lock(books.known);
                k.known.learn(up.ids());
                let held = k.known.len() as u64;
                drop(k);
                up.remember(books.known, &sent);
                upload::lock(books.counts).counters.chunks_known = held;
            }
            let ended = if peer.version >= FAULT_VERSION {
                Ended::Exited(result.exit_code)
            } else {
                Ended::from_v1_exit_code(result.exit_code)
            };
            return completed_or_fault(result, ended, &spec.header.compiler, &host);
        }
    }
}
