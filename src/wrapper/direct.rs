//! Stage: the wrapper's degraded path, without the mux (`HOARDCC_MUX=0`, or no mux can be
//! reached or started): this one process picks a host, opens its own SSH lane
//! (`mux::lane::Lane`) on a private tokio runtime, and runs the job there. This is the
//! one place where the wrapper reaches a server other than through the mux. The host
//! choice is `hosts::HostList::pick_weighted` (the hosts' own RNG); the mux's scheduler
//! needs state shared across jobs, which a lone process does not have. A full server
//! (`Busy`) is asked again after a growing pause, since no mux can wake this job.
//! The compiler's identity is probed here for every job (while the lane opens); a server
//! without a match makes it a local compile.
//! Neighbours: `wrapper` (caller; `finish`, `job_spec`, fallback), `mux::lane`.

use std::path::{Path, PathBuf};

use super::{
    cpp_failed, finish, guard, job_spec, on_host_message, preprocess, style_for, Failure, Note,
    Outcome,
};
use crate::args::CompileJob;
use crate::config::Config;
use crate::exit::ExitCode;
use crate::hosts::HostList;
use crate::mux::lane::{self, Lane, TransportError};
use crate::mux::ssh::SshSettings;
use crate::paths::Paths;

impl From<TransportError> for Failure {
    fn from(e: TransportError) -> Self {
        Failure {
            code: e.exit_code().code(),
            message: e.to_string(),
        }
    }
}

/// How long a direct job keeps asking a full (BUSY) server before it gives up and
/// falls back locally.
const DIRECT_BUSY_PATIENCE: std::time::Duration = std::time::Duration::from_secs(20);
/// The first pause after a BUSY answer on the direct path; it doubles up to
/// [`DIRECT_BUSY_MAX_PAUSE`].
const DIRECT_BUSY_FIRST_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);
const DIRECT_BUSY_MAX_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// Without the mux (`HOARDCC_MUX=0`, or it cannot start): one connection for this job.
#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    real: &Path,
    job: &CompileJob,
    cwd: &Path,
    list: &HostList,
    config: &Config,
    paths: &Paths,
    env: &dyn Fn(&str) -> Option<String>,
    note: &mut Note,
) -> Outcome {
    let Some(host) = list.pick_weighted(u64::from(std::process::id())) else {
        return Outcome::Local("localhost slot".into());
    };
    note.host = host.key();
    let home = paths.home.clone().unwrap_or_else(|| PathBuf::from("/"));
    let settings = SshSettings::from_config(config, env, home);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            return Outcome::Failed(Failure {
                message: format!("cannot start runtime: {e}"),
                code: ExitCode::DistccFailed.code(),
            })
        }
    };
    // Channels and connections close themselves on drop by spawning a task: keep the
    // runtime entered until they are gone (declared first, so dropped last).
    let _entered = runtime.enter();

    // Connect while the preprocessor runs: the wire is usually known before connecting.
    let guessed = lane::expected_wire(&host);
    let (lane, id, cpp) = std::thread::scope(|s| {
        let cpp = s.spawn(|| preprocess::run(real, job, style_for(guessed), guard()));
        // The compiler's identity too (no mux to remember it: probed per job, while
        // the connection is made).
        let probe_opts = crate::identity::ProbeOptions {
            hash_binaries: true,
            search_path: None,
        };
        let compiler = cwd.join(real);
        let (lane, id) = runtime.block_on(async {
            tokio::join!(
                Lane::open(&host, &settings),
                crate::identity::probe(&compiler, &probe_opts)
            )
        });
        (lane, id, cpp.join())
    });
    let on_host = |e: TransportError| {
        let f = Failure::from(e);
        Outcome::Failed(Failure {
            message: on_host_message(&host.key(), &f.message),
            code: f.code,
        })
    };
    let mut lane = match lane {
        Ok(l) => l,
        Err(e) => return on_host(e),
    };
    let cpp = match cpp {
        Ok(Ok(p)) if lane.wire() == guessed => p,
        Ok(Ok(_)) => match preprocess::run(real, job, style_for(lane.wire()), guard()) {
            Ok(p) => p,
            Err(e) => return cpp_failed(e),
        },
        Ok(Err(e)) => return cpp_failed(e),
        Err(_) => {
            return Outcome::Failed(Failure {
                message: "preprocessor thread panicked".into(),
                code: ExitCode::LocalCppFailed.code(),
            })
        }
    };
    let mut spec = job_spec(job, cwd, lane.wire(), &cpp.source, env);
    spec.compiler_id = id.ok();
    // Without the mux nobody can wake this job when a server slot frees: a server that
    // is full (BUSY) is asked again after a growing pause, a bounded number of times.
    let mut pause = DIRECT_BUSY_FIRST_PAUSE;
    let give_up = std::time::Instant::now() + DIRECT_BUSY_PATIENCE;
    let done = loop {
        match runtime.block_on(lane.run(&spec, &cpp.source)) {
            Ok(d) => match d.unpacked(crate::proto::compress::MAX_BLOB) {
                Ok(d) => break d,
                Err(e) => return on_host(e.into()),
            },
            Err(TransportError::Busy { .. }) if std::time::Instant::now() + pause < give_up => {
                tracing::debug!(host = %host.key(), ?pause, "server busy; asking again");
                std::thread::sleep(pause);
                pause = (pause * 2).min(DIRECT_BUSY_MAX_PAUSE);
            }
            // No compiler with this one's identity there: not a failure.
            Err(TransportError::Mismatch { reason, .. }) => return Outcome::Local(reason),
            Err(e) => return on_host(e),
        }
    };
    // Let the channel close go out before the process exits.
    runtime.block_on(async move {
        drop(lane);
        tokio::task::yield_now().await;
    });
    finish(job, cwd, &note.host, done, &cpp.driver_notes)
}
