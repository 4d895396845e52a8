//! Compiler identity, the I/O half (support for the mux and the server): [`probe`] runs a
//! compiler with `-dumpfullversion`, `-dumpmachine` and `-v` (each bounded in time and
//! output, in a cleared environment with `LC_ALL=C` so the lines parse) and makes a
//! [`CompilerId`] of what it prints (`proto::identity::parse_probe`); with
//! [`ProbeOptions::hash_binaries`] it also hashes (blake3) the driver, `cc1`, `cc1plus`
//! and `as` (`-print-prog-name=`). [`Prober`] memoises identities per process by path,
//! size and mtime, so a compiler is probed once per mux (or server) lifetime and every
//! later job pays one `stat`. Neighbours: `mux::job` (the client's compiler, carried in the
//! `Job`), `subsystem::compilers` (the server's candidates), `proto::identity` (the data).

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::io::AsyncReadExt;
use tokio::sync::OnceCell;

pub use crate::proto::identity::CompilerId;
use crate::proto::identity::{parse_probe, ParseError, ProbeOutput};

/// How long one probe command may run.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes kept of one probe command's stdout (and of its stderr).
pub const MAX_PROBE_OUTPUT: usize = 64 << 10;
/// Largest binary hashed (a bigger `cc1plus` is refused, not read forever).
pub const MAX_HASHED_BYTES: u64 = 1 << 30;
/// Most identities one [`Prober`] keeps (then it starts afresh).
const MAX_CACHED: usize = 512;
/// The search path used when none is given and `$PATH` is unset.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Why a compiler's identity is unknown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The path cannot be read.
    #[error("cannot stat {path}: {message}")]
    Stat { path: String, message: String },
    /// The compiler could not be started.
    #[error("cannot run {path}: {message}")]
    Spawn { path: String, message: String },
    /// A probe command ran longer than [`PROBE_TIMEOUT`] (it was killed).
    #[error("{path} {arg} did not finish within {} s", PROBE_TIMEOUT.as_secs())]
    Timeout { path: String, arg: &'static str },
    /// What it printed is not a gcc's or clang's.
    #[error("{path}: {error}")]
    Parse { path: String, error: ParseError },
    /// A binary could not be hashed.
    #[error("hashing {path}: {message}")]
    Hash { path: String, message: String },
}

/// How to probe.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ProbeOptions {
    /// Also hash the binaries ([`CompilerId::binaries`]).
    pub hash_binaries: bool,
    /// `PATH` for the compiler (and for finding a bare `as`); `None`: this process's.
    pub search_path: Option<OsString>,
}

impl ProbeOptions {
    fn path(&self) -> OsString {
        self.search_path
            .clone()
            .or_else(|| std::env::var_os("PATH"))
            .unwrap_or_else(|| DEFAULT_PATH.into())
    }
}

/// What one probe command left.
struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn read_capped<R: tokio::io::AsyncRead + Unpin>(r: Option<R>) -> Vec<u8> {
    let Some(mut r) = r else { return Vec::new() };
    let mut kept = Vec::new();
    // On the heap: several of these run at once inside one future.
    let mut buf = vec![0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = MAX_PROBE_OUTPUT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    kept
}

/// Runs `path arg` with stdin from /dev/null in a cleared environment.
async fn run(path: &Path, arg: &'static str, env_path: &OsString) -> Result<Ran, ProbeError> {
    let shown = || path.display().to_string();
    let mut child = tokio::process::Command::new(path)
        .arg(arg)
        .env_clear()
        .env("PATH", env_path)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ProbeError::Spawn {
            path: shown(),
            message: e.to_string(),
        })?;
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let all = async { tokio::join!(child.wait(), read_capped(out), read_capped(err)) };
    let (status, stdout, stderr) = tokio::time::timeout(PROBE_TIMEOUT, all)
        .await
        .map_err(|_| ProbeError::Timeout { path: shown(), arg })?;
    Ok(Ran {
        ok: status.is_ok_and(|s| s.success()),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

/// Probes the compiler at `path` (run as given: a prefixed clang symlink knows its target
/// by its name).
///
/// # Errors
/// [`ProbeError`] when it cannot be run, does not finish, or prints no identity.
pub async fn probe(path: &Path, opts: &ProbeOptions) -> Result<CompilerId, ProbeError> {
    let env_path = opts.path();
    // All at once: clang takes ~0.1 s per run, and knows no -dumpfullversion.
    let (full, machine, verbose, short) = tokio::join!(
        run(path, "-dumpfullversion", &env_path),
        run(path, "-dumpmachine", &env_path),
        run(path, "-v", &env_path),
        run(path, "-dumpversion", &env_path),
    );
    let (full, machine, verbose, short) = (full?, machine?, verbose?, short?);
    let ok_out = |r: &Ran| r.ok.then(|| r.stdout.clone());
    let full_out = ok_out(&full);
    let machine_out = ok_out(&machine);
    let dumpversion_out = if full.ok { None } else { ok_out(&short) };
    let text = format!("{}{}", verbose.stderr, verbose.stdout);
    let mut id = parse_probe(&ProbeOutput {
        dumpfullversion: full_out.as_deref(),
        dumpversion: dumpversion_out.as_deref(),
        dumpmachine: machine_out.as_deref(),
        verbose: &text,
    })
    .map_err(|error| ProbeError::Parse {
        path: path.display().to_string(),
        error,
    })?;
    if opts.hash_binaries {
        id.binaries = Some(hash_binaries(path, &env_path).await?);
    }
    Ok(id)
}

/// The programs a strict identity covers, as (label, path): the driver, then `cc1`,
/// `cc1plus` and `as` where the driver names one that exists (clang has no separate cc1).
async fn binaries(
    driver: &Path,
    env_path: &OsString,
) -> Result<Vec<(String, PathBuf)>, ProbeError> {
    let mut out = vec![("driver".to_string(), driver.to_path_buf())];
    for (prog, arg) in [
        ("cc1", "-print-prog-name=cc1"),
        ("cc1plus", "-print-prog-name=cc1plus"),
        ("as", "-print-prog-name=as"),
    ] {
        let ran = run(driver, arg, env_path).await?;
        let named = ran.stdout.trim();
        if !ran.ok || named.is_empty() {
            continue;
        }
        let found = if named.contains('/') {
            Some(PathBuf::from(named)).filter(|p| p.is_absolute() && p.is_file())
        } else if prog == "as" {
            crate::subsystem::job::find_on_path(named, env_path)
        } else {
            None
        };
        out.extend(found.map(|p| (prog.to_string(), p)));
    }
    Ok(out)
}

/// blake3 over the [`binaries`]: each one's label and content hash, in order.
async fn hash_binaries(driver: &Path, env_path: &OsString) -> Result<String, ProbeError> {
    let files = binaries(driver, env_path).await?;
    tokio::task::spawn_blocking(move || {
        let mut all = blake3::Hasher::new();
        for (label, path) in files {
            let h = hash_file(&path).map_err(|e| ProbeError::Hash {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            all.update(label.as_bytes());
            all.update(b"\0");
            all.update(h.as_bytes());
        }
        Ok(all.finalize().to_hex().to_string())
    })
    .await
    .map_err(|e| ProbeError::Hash {
        path: driver.display().to_string(),
        message: e.to_string(),
    })?
}

fn hash_file(path: &Path) -> std::io::Result<blake3::Hash> {
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len > MAX_HASHED_BYTES {
        return Err(std::io::Error::other(format!("{len} bytes is too large")));
    }
    let mut hasher = blake3::Hasher::new();
    let mut reader = file.take(MAX_HASHED_BYTES);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize())
}

/// What a memoised identity is keyed by: the path as given, and its target's size and
/// modification time (a package upgrade changes them).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    path: PathBuf,
    size: u64,
    mtime: SystemTime,
}

fn key_of(path: &Path) -> Result<Key, ProbeError> {
    let m = std::fs::metadata(path).map_err(|e| ProbeError::Stat {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(Key {
        path: path.to_path_buf(),
        size: m.len(),
        mtime: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
    })
}

type ProbeCell = Arc<OnceCell<Result<CompilerId, ProbeError>>>;

/// Identities memoised by (path, size, mtime): concurrent asks for one compiler share one
/// probe; a failed probe is kept too (until the file changes), so a broken compiler costs
/// one attempt, not one per job.
#[derive(Debug, Default)]
pub struct Prober {
    opts: ProbeOptions,
    cache: Mutex<HashMap<Key, ProbeCell>>,
}

impl Prober {
    /// A prober with these options for every compiler.
    pub fn new(opts: ProbeOptions) -> Prober {
        Prober {
            opts,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The options every probe uses.
    pub fn options(&self) -> &ProbeOptions {
        &self.opts
    }

    /// The identity of the compiler at `path`, probed on first use. A cached answer costs
    /// one `stat` and a map lookup.
    ///
    /// # Errors
    /// As [`probe`], and [`ProbeError::Stat`].
    pub async fn identity(&self, path: &Path) -> Result<CompilerId, ProbeError> {
        let key = key_of(path)?;
        let slot = {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= MAX_CACHED && !cache.contains_key(&key) {
                cache.clear();
            }
            cache.entry(key).or_default().clone()
        };
        // Boxed: a probe's future is large, and it sits inside every caller's.
        slot.get_or_init(|| Box::pin(probe(path, &self.opts)))
            .await
            .clone()
    }

    /// The identity already known for `path` at its current size and mtime, without
    /// probing.
    pub fn cached(&self, path: &Path) -> Option<Result<CompilerId, ProbeError>> {
        let key = key_of(path).ok()?;
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(&key).and_then(|s| s.get().cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A fake compiler that answers like gcc `version`, and counts its runs.
    fn fake(dir: &Path, name: &str, version: &str) -> PathBuf {
        let p = dir.join(name);
        let runs = dir.join(format!("{name}.runs"));
        let script = format!(
            "#!/bin/sh\necho x >> '{runs}'\ncase \"$1\" in\n\
             -dumpfullversion) echo {version};;\n-dumpmachine) echo x86_64-linux-gnu;;\n\
             -v) echo 'Target: x86_64-linux-gnu' >&2; echo \"Configured with: ./configure LC=$LC_ALL\" >&2;\
             echo 'Thread model: posix' >&2; echo 'gcc version {version} (test)' >&2;;\n\
             -print-prog-name=as) echo as;;\n-print-prog-name=*) echo \"${{1#*=}}\";;\n\
             *) exit 1;;\nesac\n",
            runs = runs.display()
        );
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn runs(dir: &Path, name: &str) -> usize {
        std::fs::read_to_string(dir.join(format!("{name}.runs")))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn probes_a_fake_gcc_in_the_c_locale() {
        let t = tempfile::tempdir().unwrap();
        let cc = fake(t.path(), "gcc", "12.2.0");
        let id = probe(&cc, &ProbeOptions::default()).await.unwrap();
        assert_eq!(id.version, "12.2.0");
        assert_eq!(id.target, "x86_64-linux-gnu");
        assert_eq!(
            id.configured,
            "Configured with: ./configure LC=C\nThread model: posix"
        );
        assert_eq!(id.binaries, None);
    }

    #[tokio::test]
    async fn memoised_by_path_size_and_mtime() {
        let t = tempfile::tempdir().unwrap();
        let cc = fake(t.path(), "gcc", "12.2.0");
        let prober = Prober::new(ProbeOptions::default());
        assert!(prober.cached(&cc).is_none());
        let (a, b) = tokio::join!(prober.identity(&cc), prober.identity(&cc));
        assert_eq!(a.unwrap(), b.unwrap());
        let once = runs(t.path(), "gcc");
        assert_eq!(once, 4, "one probe for two concurrent asks");
        for _ in 0..10 {
            prober.identity(&cc).await.unwrap();
        }
        assert_eq!(runs(t.path(), "gcc"), once);
        // Replaced (another size): probed again.
        let cc = fake(t.path(), "gcc", "13.10.0");
        assert_eq!(prober.identity(&cc).await.unwrap().version, "13.10.0");
        assert_eq!(prober.cached(&cc).unwrap().unwrap().version, "13.10.0");
    }

    /// A job after the first pays a `stat` and a map lookup: measured here (printed with
    /// `--nocapture`), bounded loosely so a loaded CI machine passes.
    #[tokio::test]
    async fn per_job_cost_is_a_stat() {
        let t = tempfile::tempdir().unwrap();
        let cc = fake(t.path(), "gcc", "12.2.0");
        let prober = Prober::new(ProbeOptions::default());
        prober.identity(&cc).await.unwrap();
        const N: u32 = 2000;
        let start = std::time::Instant::now();
        for _ in 0..N {
            prober.identity(&cc).await.unwrap();
        }
        let each = start.elapsed() / N;
        println!("cached identity: {each:?} per job");
        assert_eq!(runs(t.path(), "gcc"), 4, "probed once");
        assert!(each < Duration::from_millis(1), "{each:?} per job");
    }

    #[tokio::test]
    async fn a_non_compiler_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let err = probe(Path::new("/bin/true"), &ProbeOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, ProbeError::Parse { .. }), "{err}");
        let missing = t.path().join("nope");
        let err = Prober::default().identity(&missing).await.unwrap_err();
        assert!(matches!(err, ProbeError::Stat { .. }), "{err}");
    }

    #[tokio::test]
    async fn strict_hashes_the_binaries() {
        let t = tempfile::tempdir().unwrap();
        let cc = fake(t.path(), "gcc", "12.2.0");
        // `cc1` is named by absolute path; `as` is found on the search path.
        std::fs::write(t.path().join("as"), "assembler v1").unwrap();
        std::fs::set_permissions(t.path().join("as"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let opts = ProbeOptions {
            hash_binaries: true,
            search_path: Some(t.path().as_os_str().to_owned()),
        };
        let a = probe(&cc, &opts).await.unwrap().binaries.unwrap();
        assert_eq!(a.len(), 64);
        assert_eq!(probe(&cc, &opts).await.unwrap().binaries.unwrap(), a);
        std::fs::write(t.path().join("as"), "assembler v2").unwrap();
        assert_ne!(probe(&cc, &opts).await.unwrap().binaries.unwrap(), a);
    }

    #[tokio::test]
    async fn the_real_gcc_if_installed() {
        let Some(gcc) = crate::subsystem::job::find_on_path(
            "gcc",
            &std::env::var_os("PATH").unwrap_or_default(),
        ) else {
            return;
        };
        let id = probe(
            &gcc,
            &ProbeOptions {
                hash_binaries: true,
                search_path: None,
            },
        )
        .await
        .unwrap();
        assert!(
            id.version.starts_with(|c: char| c.is_ascii_digit()),
            "{id:?}"
        );
        assert!(id.configured.starts_with("Configured with:"), "{id:?}");
        assert!(id.binaries.is_some());
    }
}
