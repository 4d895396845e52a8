//! Stage: the wrapper — `hoardcc gcc -c foo.c`, or a masquerade symlink named `gcc`.
//!
//! One straight line: find the real compiler → classify the arguments → pick a host →
//! preprocess locally (while the connection is made) → run the job remotely → write the
//! outputs atomically and replay the compiler's output → exit with its status.
//! Any failure of distribution (not the compiler's own error) ends in exactly one place,
//! `fallback`: one local compile with a one-line warning, or, with
//! `HOARDCC_FALLBACK=0`/`DISTCC_FALLBACK=0`, a distcc exit code and no output file.
//! The remote is reached through the per-user mux (`mux_client`); only the degraded
//! direct path (`direct`, `HOARDCC_MUX=0` or no mux) opens a lane itself.
//! Neighbours: `args`, `hosts`, `config` (pure inputs), `mux_client` (the mux), `direct`.

pub mod direct;
pub mod local;
pub mod masquerade;
pub mod mux_client;
pub mod outputs;
pub mod preprocess;

use std::path::{Path, PathBuf};

use crate::args::{self, Classified, CompileJob, CppStyle};
use crate::config::{self, Config};
use crate::exit::ExitCode;
use crate::hosts::{self, HostList};
use crate::mux::lane::{JobSpec, Wire};
use crate::paths::Paths;
use crate::proto::compress::MAX_BLOB;
use crate::proto::msg::MuxReply;
use crate::proto::msg::{JobHeader, JobResult};

/// Why a job could not be distributed. Always ends in [`fallback`].
#[derive(Debug)]
struct Failure {
    message: String,
    /// distcc exit code (100–120), used when fallback is off.
    code: u8,
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
/// masquerade symlink's `argv[0]`); `args` are its arguments, untouched.
pub fn main(compiler: String, args: Vec<String>) -> std::process::ExitCode {
    let env = |k: &str| std::env::var(k).ok();
    let self_exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("hoardcc"));
    let outer_var = std::env::var_os(masquerade::RECURSION_GUARD);
    let outer = outer_var
        .as_deref()
        .map(masquerade::guard_list)
        .unwrap_or_default();
    let resolved = match masquerade::find_real_compiler(
        &compiler,
        std::env::var_os("PATH").as_deref(),
        &self_exe,
        &outer,
    ) {
        Ok(r) => r,
        Err(e) => {
            say(&format!("hoardcc: error: {e}"));
            return ExitCode::CompilerMissing.into();
        }
    };
    // Another wrapper next to ours on PATH would have made a loop: say so, once, in one
    // write(2), so the line stays whole among a parallel build's output.
    if let Some(note) = resolved.loop_note() {
        say(&note);
    }
    let real = resolved.path;
    let _ = GUARD.set(
        masquerade::guard_value(&outer, &real)
            .to_string_lossy()
            .into_owned(),
    );
    // Re-entered from inside a compiler we started: never distribute twice.
    if outer_var.is_some() {
        return exit_with(run_local(&real, &args));
    }
    let paths = Paths::from_env(&env);
    let config = match config::load(&paths, &env) {
        Ok(c) => c,
        Err(e) => {
            let failure = Failure {
                message: format!("configuration: {e}"),
                code: ExitCode::BadArguments.code(),
            };
            return fallback(&real, &args, failure, fallback_enabled(&env));
        }
    };
    let cwd = match std::env::current_dir() {
        Ok(d) => d,
        Err(_) => return exit_with(run_local(&real, &args)),
    };
    let started = std::time::Instant::now();
    let mut note = Note::default();
    let outcome = distribute(
        &real, &compiler, &args, &cwd, &config, &paths, &env, &mut note,
    );
    let line = match &outcome {
        Outcome::Local(reason) => format!("local\t{reason}"),
        Outcome::Done(_) if note.cached => format!("remote-cached\t{}", note.host),
        Outcome::Done(_) => format!("remote\t{}", note.host),
        Outcome::Failed(f) => format!("local\tfallback: {}", f.message),
    };
    let local_start = std::time::Instant::now();
    let (code, compiled_here) = match outcome {
        Outcome::Local(_) => (exit_with(run_local(&real, &args)), true),
        Outcome::Done(code) => (exit_with(code), false),
        Outcome::Failed(f) => (fallback(&real, &args, f, config.fallback), config.fallback),
    };
    // The mux counts the local compiles it knows of (`hoardcc stats`): one write on the
    // connection it answered on, after the compile.
    if let Some(client) = note.slot.take() {
        if compiled_here {
            client.local_done(local_start.elapsed());
        }
    }
    if let Some(log) = env("HOARDCC_JOBLOG") {
        append_joblog(
            Path::new(&log),
            &format!(
                "{line}\t{}\t{}\n",
                note.source,
                started.elapsed().as_millis()
            ),
        );
    }
    code
}

/// What the pipeline learnt, for the job log; and the mux connection that holds a local
/// host slot while a local compile runs (or that told of a failure: the fallback's time is
/// reported on it).
#[derive(Default)]
struct Note {
    source: String,
    host: String,
    /// The server answered from its result cache (the job log says `remote-cached`).
    cached: bool,
    slot: Option<mux_client::MuxClient>,
}

/// One line per compile, appended in a single write (O_APPEND keeps lines whole).
fn append_joblog(path: &Path, line: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// The pipeline proper, up to the point where the outcome is known.
#[allow(clippy::too_many_arguments)]
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
    let compiler_name = Path::new(compiler)
        .file_name()
        .map_or(compiler.to_string(), |n| n.to_string_lossy().into_owned());
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
    // Outputs the compiler itself must deal with (a missing directory, the source as
    // output, a file that cannot be written): it prints its own message.
    let wanted = std::iter::once(&job.output).chain(&job.extra_outputs);
    if let Some(reason) = outputs::local_reason(cwd, &job.source, wanted.map(String::as_str)) {
        return Outcome::Local(reason);
    }
    let list = match resolve_hosts(config, paths, env) {
        Ok(Some(l)) => l,
        Ok(None) => return Outcome::Local("no hosts".into()),
        Err(f) => return Outcome::Failed(f),
    };
    if env("HOARDCC_MUX").is_none_or(|v| v.trim() != "0") {
        let deadline = mux_reply_deadline(config);
        if let Some(outcome) = via_mux(real, &job, cwd, &list, paths, env, note, deadline) {
            return outcome;
        }
    }
    direct::run(real, &job, cwd, &list, config, paths, env, note)
}

/// Margin on top of the longest job the mux can legitimately take, in
/// [`mux_reply_deadline`].
const MUX_REPLY_MARGIN: std::time::Duration = std::time::Duration::from_secs(120);

/// The longest silence from the mux that a healthy one cannot cause: a job that runs
/// twice (the mux's one retry), each time connecting, compiling up to the compile
/// timeout and then up to one I/O timeout of silence, plus a margin. Defaults:
/// 2 × (10 s + 1200 s + 300 s) + 120 s = 52 min 20 s. A wait in the mux's queue longer than that
/// is taken for a stuck mux too: the job compiles locally.
fn mux_reply_deadline(config: &Config) -> std::time::Duration {
    let one = config.ssh.connect_timeout + config.server.compile_timeout + config.ssh.io_timeout;
    one * 2 + MUX_REPLY_MARGIN
}

/// The usual path: the per-user mux holds the connections and picks the host. `None`
/// when the mux cannot be reached at all (then the job goes direct). A mux that sends
/// nothing for `deadline` is stuck: the job falls back locally with one warning.
#[allow(clippy::too_many_arguments)]
fn via_mux(
    real: &Path,
    job: &CompileJob,
    cwd: &Path,
    list: &HostList,
    paths: &Paths,
    env: &dyn Fn(&str) -> Option<String>,
    note: &mut Note,
    deadline: std::time::Duration,
) -> Option<Outcome> {
    let self_exe = std::env::current_exe().ok()?;
    let mut client = match mux_client::connect_or_spawn(paths, &self_exe) {
        Ok(c) => c.with_reply_deadline(deadline),
        Err(e) => {
            tracing::warn!(error = %e, "mux unavailable; connecting directly");
            return None;
        }
    };
    // Ask for a host slot before preprocessing, so the mux connects while cpp runs.
    // The compiler the job runs, for the mux to match on the servers (absolute: the mux
    // has another cwd).
    let compiler = crate::proto::msg::LocalCompiler {
        name: job.compiler.clone(),
        path: cwd.join(real).to_string_lossy().into_owned(),
    };
    let wire = match client.reserve_for(&host_list_text(list), &job.source, Some(compiler)) {
        Ok(MuxReply::Reserved { host, wire }) => {
            note.host = host;
            wire
        }
        Ok(MuxReply::Local { reason }) => {
            // A local host slot of the shared pool: hold it (the connection) while compiling.
            note.slot = Some(client);
            return Some(Outcome::Local(reason));
        }
        Ok(MuxReply::Failed { message, exit_code }) => {
            note.slot = Some(client);
            return Some(Outcome::Failed(Failure {
                message,
                code: exit_code,
            }));
        }
        Ok(other) => {
            tracing::warn!(reply = ?other, "unexpected mux reply; connecting directly");
            return None;
        }
        Err(e @ mux_client::MuxClientError::NoAnswer { .. }) => {
            return Some(Outcome::Failed(Failure {
                message: e.to_string(),
                code: ExitCode::Timeout.code(),
            }))
        }
        Err(e) => {
            tracing::warn!(error = %e, "mux failed; connecting directly");
            return None;
        }
    };
    // Preprocessed for the wire the host is expected to speak; a host whose first lane
    // showed the other one answers `Rewire` (once), and the job is preprocessed again.
    let mut wire = wire;
    let mut rewired = false;
    let (cpp, reply) = loop {
        let cpp = match preprocess::run(real, job, style_for(wire), guard()) {
            Ok(p) => p,
            Err(e) => return Some(cpp_failed(e)),
        };
        let spec = job_spec(job, cwd, wire, &cpp.source, env);
        // The directives-only text goes cut into chunks (here, so that the CPU it takes
        // is spread over the wrappers): the mux sends the server only those it lacks.
        let reply = match wire {
            Wire::Native => {
                let cut = crate::proto::chunk::Cut::normalised(&cpp.source);
                client.run(&spec, &cut.bytes, Some(&cut.recipe))
            }
            Wire::Distcc { .. } => client.run(&spec, &cpp.source, None),
        };
        match reply {
            Ok(MuxReply::Rewire { wire: w }) if !rewired && w != wire => {
                rewired = true;
                wire = w;
            }
            r => break (cpp, r),
        }
    };
    if let Ok(MuxReply::Done(result)) = &reply {
        note.cached = result.cached;
    }
    if matches!(reply, Ok(MuxReply::Failed { .. })) {
        note.slot = Some(client);
    }
    let on_host = |message: String, code: u8| {
        Some(Outcome::Failed(Failure {
            message: on_host_message(&note.host, &message),
            code,
        }))
    };
    match reply {
        Ok(MuxReply::Done(result)) => match result.unpacked(MAX_BLOB) {
            Ok(done) => Some(finish(job, cwd, &note.host, done, &cpp.driver_notes)),
            Err(e) => on_host(e.to_string(), ExitCode::ProtocolError.code()),
        },
        Ok(MuxReply::Failed { message, exit_code }) => on_host(message, exit_code),
        // No host has a compiler with this one's identity: not a failure.
        Ok(MuxReply::Local { reason }) => Some(Outcome::Local(reason)),
        Ok(other) => on_host(
            format!("unexpected mux reply {other:?}")
                .chars()
                .take(120)
                .collect(),
            ExitCode::ProtocolError.code(),
        ),
        Err(e @ mux_client::MuxClientError::NoAnswer { .. }) => {
            on_host(e.to_string(), ExitCode::Timeout.code())
        }
        Err(e) => on_host(format!("mux: {e}"), ExitCode::IoError.code()),
    }
}

/// Apply a remote result: outputs into place, output replayed, the compiler's status.
fn finish(
    job: &CompileJob,
    cwd: &Path,
    host: &str,
    done: JobResult,
    driver_notes: &[u8],
) -> Outcome {
    let wanted = outputs::Wanted {
        main: &job.output,
        extra: &job.extra_outputs,
        assemble_only: job.assemble_only,
    };
    if done.exit_code == 0 {
        if let Err(e) = outputs::write_all(cwd, &done, wanted) {
            return Outcome::Failed(Failure {
                message: on_host_message(host, &e.to_string()),
                code: ExitCode::IoError.code(),
            });
        }
    }
    // A failed compile writes nothing; an output that was there stays or goes as the
    // compiler alone would have it.
    if done.exit_code != 0 {
        let gcc_deletes = job.assemble_only || job.compile_args.iter().any(|a| a == "-pipe");
        outputs::after_failure(cwd, &job.output, job.family, gcc_deletes);
    }
    // clang's driver warnings (from the local preprocessor run) come first, as clang
    // alone prints them before compiling; only the server's part is sanitized.
    let stderr = done.stderr.raw_bytes().unwrap_or_default();
    let mut err = driver_notes.to_vec();
    err.extend_from_slice(&outputs::sanitize(
        &stderr[..stderr.len().min(outputs::MAX_REPLAY)],
    ));
    outputs::replay(false, done.stdout.raw_bytes().unwrap_or_default());
    outputs::replay_local(true, &err);
    Outcome::Done(done.exit_code)
}

/// The preprocessor failed: that is the user's error (missing header, `#error`). A plain
/// local compile reports it exactly as the compiler would, so hand over to it.
fn cpp_failed(e: preprocess::PreprocessError) -> Outcome {
    match e {
        preprocess::PreprocessError::Failed { .. } => Outcome::Local("preprocessor failed".into()),
        preprocess::PreprocessError::Diagnostics => Outcome::Local(e.to_string()),
        other => Outcome::Failed(Failure {
            message: other.to_string(),
            code: ExitCode::LocalCppFailed.code(),
        }),
    }
}

fn style_for(wire: Wire) -> CppStyle {
    match wire {
        Wire::Native => CppStyle::DirectivesOnly,
        Wire::Distcc { .. } => CppStyle::Classic,
    }
}

fn job_spec(
    job: &CompileJob,
    cwd: &Path,
    wire: Wire,
    source: &[u8],
    env: &dyn Fn(&str) -> Option<String>,
) -> JobSpec {
    // `HOARDCC_CACHE=0`: the server must compile, not answer from its result cache.
    let cache = env("HOARDCC_CACHE").is_none_or(|v| v.trim() != "0");
    let (source_name, env, context) = match wire {
        Wire::Native => {
            let read = |name: &str| {
                let p = cwd.join(name);
                std::fs::metadata(&p)
                    .ok()
                    .filter(|m| m.is_file() && m.len() < (1 << 20))?;
                std::fs::read(p).ok()
            };
            (
                job.source.clone(),
                preprocess::locale_env(env),
                preprocess::context_files(&job.source, source, &read),
            )
        }
        Wire::Distcc { .. } => (job.preprocessed_name(), Vec::new(), Vec::new()),
    };
    let mut args = job.compile_args.clone();
    if wire == Wire::Native {
        // The directives-only text no longer holds the -D/-U (see strip_builtin_section).
        args.extend(preprocess::command_line_macros(
            &job.preprocess_args(CppStyle::DirectivesOnly),
        ));
    }
    JobSpec {
        header: JobHeader {
            compiler: job.compiler.clone(),
            args,
            assemble_only: job.assemble_only,
            cwd: cwd.to_string_lossy().into_owned(),
            source_name,
            output_name: job.output.clone(),
            extra_outputs: job.extra_outputs.clone(),
        },
        distcc_argv: job.distcc_argv(),
        env,
        context,
        compiler_id: None,
        cache,
    }
}

/// The host list in hoardcc's own grammar, for the mux (its environment may differ).
fn host_list_text(list: &HostList) -> String {
    let mut parts: Vec<String> = list.hosts.iter().map(|h| h.token.clone()).collect();
    if list.randomize {
        parts.push("--randomize".into());
    }
    if let Some(n) = list.local_slots {
        parts.push(format!("--localslots={n}"));
    }
    parts.join(" ")
}

/// The host list, or `Ok(None)` (after one warning) when there is none or it is empty.
fn resolve_hosts(
    config: &Config,
    paths: &Paths,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<HostList>, Failure> {
    let file = paths.config_file();
    let read = |p: &Path| std::fs::read_to_string(p).ok();
    let resolved = hosts::resolve(
        env,
        config.hosts.as_deref().map(|h| (h, file.as_path())),
        paths.home.as_deref(),
        &read,
    )
    .map_err(|e| Failure {
        message: e.to_string(),
        code: ExitCode::BadHostspec.code(),
    })?;
    let Some((list, _source)) = resolved else {
        say("hoardcc: warning: no hosts are set (HOARDCC_HOSTS, DISTCC_HOSTS or ~/.distcc/hosts); compiling locally");
        return Ok(None);
    };
    if list.ordered(0).is_empty() {
        say("hoardcc: warning: the host list is empty; compiling locally");
        return Ok(None);
    }
    Ok(Some(list))
}

/// Most characters of a failure message in the one warning line.
const MAX_WARNING: usize = 400;

/// The single fallback point.
fn fallback(
    real: &Path,
    args: &[String],
    failure: Failure,
    enabled: bool,
) -> std::process::ExitCode {
    // The message may quote a server (a refusal, a fault): one printable line.
    let message: String = failure
        .message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_WARNING)
        .collect();
    if !enabled {
        say(&format!("hoardcc: error: {message} (fallback is off)"));
        return std::process::ExitCode::from(failure.code);
    }
    say(&format!("hoardcc: warning: {message}; compiling locally"));
    exit_with(run_local(real, args))
}

fn fallback_enabled(env: &dyn Fn(&str) -> Option<String>) -> bool {
    let off = |v: Option<String>| v.is_some_and(|v| v.trim() == "0");
    match env("HOARDCC_FALLBACK") {
        Some(v) => !off(Some(v)),
        None => !off(env("DISTCC_FALLBACK")),
    }
}

/// The [`masquerade::RECURSION_GUARD`] value for the compilers this process runs (set
/// once the real compiler is known).
static GUARD: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn guard() -> (&'static str, &'static str) {
    (
        masquerade::RECURSION_GUARD,
        GUARD.get().map_or("1", String::as_str),
    )
}

/// `message` about `host`, naming the host once: transport errors mostly name it
/// already (`127.0.0.1 refused the job: …`).
fn on_host_message(host: &str, message: &str) -> String {
    let bare = host.rsplit('@').next().unwrap_or(host);
    if message.contains(host) || (!bare.is_empty() && message.contains(bare)) {
        message.to_string()
    } else {
        format!("{host}: {message}")
    }
}

fn run_local(real: &Path, args: &[String]) -> i32 {
    match local::run(real, args, guard()) {
        Ok(code) => code,
        Err(e) => {
            say(&format!(
                "hoardcc: error: cannot run {}: {e}",
                real.display()
            ));
            i32::from(ExitCode::CompilerMissing.code())
        }
    }
}

/// One line of our own on stderr, newline included, in a single write(2): a parallel
/// build's other output cannot split it.
fn say(line: &str) {
    outputs::replay_local(true, format!("{line}\n").as_bytes());
}

fn exit_with(code: i32) -> std::process::ExitCode {
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frame::blocking;
    use crate::proto::msg::MuxRequest;
    use std::os::unix::net::UnixListener;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A stuck mux on `paths.mux_socket()`: it reads every request and answers the first
    /// `Reserve` with `Reserved` only if `reserve` is set, then says nothing more until
    /// `end` fires. Sends the requests it read, in order, on the returned channel.
    fn stuck_mux(
        paths: &Paths,
        reserve: bool,
    ) -> (
        mpsc::Receiver<&'static str>,
        mpsc::Sender<()>,
        std::thread::JoinHandle<()>,
    ) {
        std::fs::create_dir_all(&paths.runtime_dir).unwrap();
        let listener = UnixListener::bind(paths.mux_socket()).unwrap();
        let (seen_tx, seen_rx) = mpsc::channel();
        let (end_tx, end_rx) = mpsc::channel::<()>();
        let fake = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            while let Ok(Some(req)) = blocking::read_message::<_, MuxRequest>(&mut s) {
                let name = match req {
                    MuxRequest::Reserve { .. } => "reserve",
                    MuxRequest::Run { .. } => "run",
                    _ => "other",
                };
                let _ = seen_tx.send(name);
                if name == "reserve" && reserve {
                    let reply = MuxReply::Reserved {
                        host: "@stuck".into(),
                        wire: Wire::Native,
                    };
                    blocking::write_message(&mut s, &reply).unwrap();
                } else {
                    break;
                }
            }
            let _ = end_rx.recv();
        });
        (seen_rx, end_tx, fake)
    }

    /// Run `via_mux` on `gcc -c a.c` against a stuck mux with a short deadline; the
    /// outcome as (message, exit code) and the requests the mux saw.
    fn against_stuck_mux(reserve: bool) -> (String, u8, Vec<&'static str>) {
        let dir = tempfile::tempdir().unwrap();
        let runtime = dir.path().join("run");
        let paths = Paths::from_env(&|k: &str| {
            (k == "XDG_RUNTIME_DIR").then(|| runtime.to_string_lossy().into_owned())
        });
        assert!(paths.mux_socket().starts_with(dir.path()));
        std::fs::write(dir.path().join("a.c"), "int x;\n").unwrap();
        // Absolute names: the preprocessor runs in this process's directory.
        let at = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
        let args = vec!["-c".to_string(), at("a.c"), "-o".into(), at("a.o")];
        let Ok(Classified::Remote(job)) = args::classify("gcc", &args, dir.path()) else {
            panic!("gcc -c a.c should be remote");
        };
        let list = hosts::parse("@stuck/1").unwrap();
        let (seen, end, fake) = stuck_mux(&paths, reserve);
        let (tx, rx) = mpsc::channel();
        let cwd = dir.path().to_path_buf();
        let worker = std::thread::spawn(move || {
            let mut note = Note::default();
            let deadline = Duration::from_millis(300);
            let real = Path::new("/usr/bin/gcc");
            let outcome = via_mux(
                real,
                &job,
                &cwd,
                &list,
                &paths,
                &|_| None,
                &mut note,
                deadline,
            );
            let summary = match outcome {
                Some(Outcome::Failed(f)) => (f.message, f.code),
                Some(Outcome::Local(r)) => (format!("local: {r}"), 0),
                Some(Outcome::Done(c)) => (format!("done: {c}"), 0),
                None => ("went direct".to_string(), 0),
            };
            tx.send(summary).unwrap();
        });
        let (message, code) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("via_mux returned despite a silent mux");
        worker.join().unwrap();
        end.send(()).unwrap();
        fake.join().unwrap();
        (message, code, seen.try_iter().collect())
    }

    #[test]
    fn a_mux_silent_on_reserve_means_a_local_fallback() {
        let (message, code, seen) = against_stuck_mux(false);
        assert_eq!(seen, ["reserve"]);
        assert_eq!(code, ExitCode::Timeout.code(), "{message}");
        assert_eq!(message, "the mux sent nothing for 300ms");
    }

    #[test]
    fn a_mux_silent_on_run_means_a_local_fallback() {
        if !Path::new("/usr/bin/gcc").exists() {
            eprintln!("skipped: no /usr/bin/gcc");
            return;
        }
        let (message, code, seen) = against_stuck_mux(true);
        assert_eq!(seen, ["reserve", "run"], "{message}");
        assert_eq!(code, ExitCode::Timeout.code(), "{message}");
        assert_eq!(message, "@stuck: the mux sent nothing for 300ms");
    }

    #[test]
    fn the_mux_deadline_outlasts_a_retried_compile_at_its_timeout() {
        let config = Config::default();
        let one =
            config.ssh.connect_timeout + config.server.compile_timeout + config.ssh.io_timeout;
        assert_eq!(mux_reply_deadline(&config), one * 2 + MUX_REPLY_MARGIN);
        assert_eq!(mux_reply_deadline(&config), Duration::from_secs(3140));
        let mut long = config.clone();
        long.server.compile_timeout = Duration::from_secs(7200);
        assert!(mux_reply_deadline(&long) > Duration::from_secs(2 * 7200));
    }

    #[test]
    fn a_message_names_its_host_once() {
        for (host, msg, want) in [
            (
                "127.0.0.1",
                "127.0.0.1 refused the job: x",
                "127.0.0.1 refused the job: x",
            ),
            (
                "me@build1",
                "ssh to build1: timed out",
                "ssh to build1: timed out",
            ),
            (
                "me@build1",
                "cc1 killed by signal 9",
                "me@build1: cc1 killed by signal 9",
            ),
            ("build1", "", "build1: "),
        ] {
            assert_eq!(on_host_message(host, msg), want);
        }
    }
}
