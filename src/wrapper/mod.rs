//! Stage: the wrapper — `hoardcc gcc -c foo.c`, or a masquerade symlink named `gcc`.
//!
//! One straight line: find the real compiler → classify the arguments → pick a host →
//! preprocess locally (while the connection is made) → run the job remotely → write the
//! outputs atomically and replay the compiler's output → exit with its status.
//! Any failure of distribution (not the compiler's own error) ends in exactly one place,
//! [`fallback`]: one local compile with a one-line warning, or, with
//! `HOARDCC_FALLBACK=0`/`DISTCC_FALLBACK=0`, a distcc exit code and no output file.
//! Neighbours: `args`, `hosts`, `config` (pure inputs), `mux::transport` (the remote).

pub mod local;
pub mod masquerade;
pub mod outputs;
pub mod preprocess;

use std::path::{Path, PathBuf};

use crate::args::{self, Classified, CompileJob, CppStyle};
use crate::config::{self, Config};
use crate::exit::ExitCode;
use crate::hosts::{self, HostSpec};
use crate::mux::ssh::SshSettings;
use crate::mux::transport::{self, JobSpec, Lane, TransportError, Wire};
use crate::paths::Paths;

/// Why a job could not be distributed. Always ends in [`fallback`].
#[derive(Debug)]
struct Failure {
    message: String,
    code: ExitCode,
}

impl From<TransportError> for Failure {
    fn from(e: TransportError) -> Self {
        Failure { code: e.exit_code(), message: e.to_string() }
    }
}

/// What the pipeline decided.
enum Outcome {
    /// Not distributable (or no remote host chosen): compile locally, silently.
    Local(String),
    /// The remote compile ran; exit with this status (outputs already written).
    Done(i32),
    /// Distribution failed.
    Failed(Failure),
}

/// Entry point. `compiler` is the compiler as invoked (`gcc`, `/usr/bin/g++`, or the
/// masquerade symlink's argv[0]); `args` are its arguments, untouched.
pub fn main(compiler: String, args: Vec<String>) -> std::process::ExitCode {
    let env = |k: &str| std::env::var(k).ok();
    let self_exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("hoardcc"));
    let real = match masquerade::find_real_compiler(&compiler, std::env::var_os("PATH").as_deref(), &self_exe) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("hoardcc: error: {e}");
            return ExitCode::CompilerMissing.into();
        }
    };
    // Re-entered from inside a compiler we started: never distribute twice.
    if env(masquerade::RECURSION_GUARD).is_some() {
        return exit_with(run_local(&real, &args));
    }
    let paths = Paths::from_env(&env);
    let config = match config::load(&paths, &env) {
        Ok(c) => c,
        Err(e) => {
            let failure = Failure { message: format!("configuration: {e}"), code: ExitCode::BadArguments };
            return fallback(&real, &args, failure, fallback_enabled(&env));
        }
    };
    let cwd = match std::env::current_dir() {
        Ok(d) => d,
        Err(_) => return exit_with(run_local(&real, &args)),
    };
    let started = std::time::Instant::now();
    let mut note = Note::default();
    let outcome = distribute(&real, &compiler, &args, &cwd, &config, &paths, &env, &mut note);
    let line = match &outcome {
        Outcome::Local(reason) => format!("local\t{reason}"),
        Outcome::Done(_) => format!("remote\t{}", note.host),
        Outcome::Failed(f) => format!("local\tfallback: {}", f.message),
    };
    let code = match outcome {
        Outcome::Local(_) => exit_with(run_local(&real, &args)),
        Outcome::Done(code) => exit_with(code),
        Outcome::Failed(f) => fallback(&real, &args, f, config.fallback),
    };
    if let Some(log) = env("HOARDCC_JOBLOG") {
        append_joblog(Path::new(&log), &format!("{line}\t{}\t{}\n", note.source, started.elapsed().as_millis()));
    }
    code
}

/// What the pipeline learnt, for the job log.
#[derive(Default)]
struct Note {
    source: String,
    host: String,
}

/// One line per compile, appended in a single write (O_APPEND keeps lines whole).
fn append_joblog(path: &Path, line: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = f.write_all(line.as_bytes());
    }
}

/// The pipeline proper, up to the point where the outcome is known.
fn distribute(
    real: &Path,
    compiler: &str,
    args: &[String],
    cwd: &Path,
    config: &Config,
    paths: &Paths,
    env: &dyn Fn(&str) -> Option<String>,
    note: &mut Note,
) -> Outcome {
    let compiler_name = Path::new(compiler).file_name().map_or(compiler.to_string(), |n| n.to_string_lossy().into_owned());
    let job = match args::classify(&compiler_name, args, cwd) {
        Ok(Classified::Remote(job)) => job,
        Ok(Classified::Local(reason)) => {
            tracing::debug!(%reason, "compiling locally");
            return Outcome::Local(reason.to_string());
        }
        Err(e) => {
            tracing::debug!(error = %e, "cannot classify; compiling locally");
            return Outcome::Local(format!("arguments: {e}"));
        }
    };
    note.source = job.source.clone();
    let host = match choose_host(config, paths, env) {
        Ok(Some(h)) => h,
        Ok(None) => return Outcome::Local("no remote host".into()),
        Err(f) => return Outcome::Failed(f),
    };
    note.host = host.key();
    let home = paths.home.clone().unwrap_or_else(|| PathBuf::from("/"));
    let settings = SshSettings::from_config(config, env, home);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(Failure { message: format!("cannot start runtime: {e}"), code: ExitCode::DistccFailed }),
    };
    // Channels and connections close themselves on drop by spawning a task: keep the
    // runtime entered until they are gone (declared first, so dropped last).
    let _entered = runtime.enter();

    // Connect while the preprocessor runs: the wire is usually known before connecting.
    let guessed = transport::expected_wire(&host);
    let (lane, cpp) = std::thread::scope(|s| {
        let cpp = s.spawn(|| preprocess::run(real, &job, style_for(guessed), guard()));
        let lane = runtime.block_on(Lane::open(&host, &settings));
        (lane, cpp.join())
    });
    let on_host = |e: TransportError| {
        let f = Failure::from(e);
        Outcome::Failed(Failure { message: format!("{}: {}", host.key(), f.message), code: f.code })
    };
    let mut lane = match lane {
        Ok(l) => l,
        Err(e) => return on_host(e),
    };
    let cpp = match cpp {
        Ok(Ok(p)) if lane.wire() == guessed => p,
        Ok(Ok(_)) => match preprocess::run(real, &job, style_for(lane.wire()), guard()) {
            Ok(p) => p,
            Err(e) => return cpp_failed(e),
        },
        Ok(Err(e)) => return cpp_failed(e),
        Err(_) => return Outcome::Failed(Failure { message: "preprocessor thread panicked".into(), code: ExitCode::LocalCppFailed }),
    };

    let mut spec = job_spec(&job, cwd, lane.wire());
    if lane.wire() == Wire::Native {
        spec.env = preprocess::locale_env(env);
        let read = |name: &str| {
            let p = cwd.join(name);
            std::fs::metadata(&p).ok().filter(|m| m.is_file() && m.len() < (1 << 20))?;
            std::fs::read(p).ok()
        };
        spec.context = preprocess::context_files(&job.source, &cpp.source, &read);
    }
    let done = match runtime.block_on(lane.run(&spec, &cpp.source)) {
        Ok(d) => d,
        Err(e) => return on_host(e),
    };
    // Let the channel close go out before the process exits.
    runtime.block_on(async move {
        drop(lane);
        tokio::task::yield_now().await;
    });
    let mut wanted = vec![job.output.clone()];
    wanted.extend(job.extra_outputs.iter().cloned());
    if done.exit_code == 0 {
        if let Err(e) = outputs::write_all(cwd, &done, &wanted) {
            return Outcome::Failed(Failure { message: e.to_string(), code: ExitCode::IoError });
        }
    } else {
        // Like gcc, a failed compile leaves no stale object behind.
        let _ = std::fs::remove_file(cwd.join(&job.output));
    }
    let mut err = cpp.stderr;
    err.extend_from_slice(&done.stderr);
    outputs::replay(false, &done.stdout);
    outputs::replay(true, &err);
    Outcome::Done(done.exit_code)
}

/// The preprocessor failed: that is the user's error (missing header, `#error`). A plain
/// local compile reports it exactly as the compiler would, so hand over to it.
fn cpp_failed(e: preprocess::PreprocessError) -> Outcome {
    match e {
        preprocess::PreprocessError::Failed { .. } => Outcome::Local("preprocessor failed".into()),
        other => Outcome::Failed(Failure { message: other.to_string(), code: ExitCode::LocalCppFailed }),
    }
}

fn style_for(wire: Wire) -> CppStyle {
    match wire {
        Wire::Native => CppStyle::DirectivesOnly,
        Wire::Distcc { .. } => CppStyle::Classic,
    }
}

fn job_spec(job: &CompileJob, cwd: &Path, wire: Wire) -> JobSpec {
    let source_name = match wire {
        Wire::Native => job.source.clone(),
        Wire::Distcc { .. } => job.preprocessed_name(),
    };
    JobSpec {
        compiler: job.compiler.clone(),
        args: job.compile_args.clone(),
        assemble_only: job.assemble_only,
        cwd: cwd.to_string_lossy().into_owned(),
        source_name,
        output_name: job.output.clone(),
        extra_outputs: job.extra_outputs.clone(),
        distcc_argv: job.distcc_argv(),
        env: Vec::new(),
        context: Vec::new(),
    }
}

/// Pick the host for this job. `Ok(None)` means compile locally: no hosts at all (with one
/// warning), or the chosen slot is `localhost`. Without the mux, the choice spreads
/// parallel jobs over the list in proportion to each host's slots.
fn choose_host(config: &Config, paths: &Paths, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<HostSpec>, Failure> {
    let config_hosts = config.hosts.as_deref().map(|h| (h, paths.config_file()));
    let read = |p: &Path| std::fs::read_to_string(p).ok();
    let resolved = hosts::resolve(env, config_hosts.as_ref().map(|(h, p)| (*h, p.as_path())), paths.home.as_deref(), &read)
        .map_err(|e| Failure { message: e.to_string(), code: ExitCode::BadHostspec })?;
    let Some((list, _source)) = resolved else {
        eprintln!("hoardcc: warning: no hosts are set (HOARDCC_HOSTS, DISTCC_HOSTS or ~/.distcc/hosts); compiling locally");
        return Ok(None);
    };
    let seed = u64::from(std::process::id());
    let ordered = list.ordered(seed);
    if ordered.is_empty() {
        eprintln!("hoardcc: warning: the host list is empty; compiling locally");
        return Ok(None);
    }
    let total: u64 = ordered.iter().map(|h| u64::from(h.slots.max(1))).sum();
    let mut pick = splitmix(seed) % total;
    for h in ordered {
        let w = u64::from(h.slots.max(1));
        if pick < w {
            return Ok(if h.is_local() { None } else { Some(h) });
        }
        pick -= w;
    }
    Ok(None)
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The single fallback point.
fn fallback(real: &Path, args: &[String], failure: Failure, enabled: bool) -> std::process::ExitCode {
    if !enabled {
        eprintln!("hoardcc: error: {} (fallback is off)", failure.message);
        return failure.code.into();
    }
    eprintln!("hoardcc: warning: {}; compiling locally", failure.message);
    exit_with(run_local(real, args))
}

fn fallback_enabled(env: &dyn Fn(&str) -> Option<String>) -> bool {
    let off = |v: Option<String>| v.is_some_and(|v| v.trim() == "0");
    match env("HOARDCC_FALLBACK") {
        Some(v) => !off(Some(v)),
        None => !off(env("DISTCC_FALLBACK")),
    }
}

fn guard() -> (&'static str, &'static str) {
    (masquerade::RECURSION_GUARD, "1")
}

fn run_local(real: &Path, args: &[String]) -> i32 {
    match local::run(real, args, guard()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hoardcc: error: cannot run {}: {e}", real.display());
            i32::from(ExitCode::CompilerMissing.code())
        }
    }
}

fn exit_with(code: i32) -> std::process::ExitCode {
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}
