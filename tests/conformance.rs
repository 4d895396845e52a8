//! Conformance: every row of [`table::rows`] runs twice in fresh copies of the same directory
//! (same absolute path), once as `CC …` and once as `hoardcc CC …` through the real sshd
//! fixture and one mux, for gcc, g++ and (when installed) clang. Compared: exit status,
//! stdout, stderr, every file created, changed or deleted (type, mode, contents, link
//! target), `/dev/null` still being a character device, and where the job ran (the job log's
//! `remote`/`local`, against the row's README expectation).
//!
//! Neighbours: tests/conformance/table.rs (the layout and the rows); tests/support (the
//! fixture); tests/tools.rs (real build tools on top). Rows that name `/dev/null` run, as
//! root, in a private mount namespace with its own `/dev` (a wrapper that replaces
//! `/dev/null` must not break the machine).

mod table;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::support::{hoardcc_bin, run_with_timeout, Sshd, SshdOptions};
use table::{Row, Where, LAYOUT};

const T: Duration = Duration::from_secs(120);
/// Rows run concurrently (each in its own directory; the two runs of a row in turn).
const WORKERS: usize = 3;
const HOSTS: &str = "@hoardtest/4";

/// A file system entry as the comparison sees it (times are ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    File { mode: u32, bytes: Vec<u8> },
    Dir { mode: u32 },
    Symlink(PathBuf),
    Other(String),
}

impl Entry {
    fn describe(&self) -> String {
        match self {
            Entry::File { mode, bytes } => {
                let text = std::str::from_utf8(bytes)
                    .ok()
                    .filter(|t| t.len() <= 400 && !t.contains('\0'));
                match text {
                    Some(t) => format!("file {mode:o} {:?}", t),
                    None => format!("file {mode:o} {} bytes, {:016x}", bytes.len(), fnv(bytes)),
                }
            }
            Entry::Dir { mode } => format!("dir {mode:o}"),
            Entry::Symlink(t) => format!("symlink -> {}", t.display()),
            Entry::Other(k) => k.clone(),
        }
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

type Snapshot = BTreeMap<PathBuf, Entry>;

/// `snap` with the bytes of the row's loose outputs dropped.
fn loosen(row: &Row, snap: &Snapshot) -> Snapshot {
    snap.iter()
        .map(|(k, v)| {
            let v = match v {
                Entry::File { mode, .. } if row.is_loose(&k.to_string_lossy()) => Entry::File {
                    mode: *mode,
                    bytes: b"(contents not compared)".to_vec(),
                },
                other => other.clone(),
            };
            (k.clone(), v)
        })
        .collect()
}

/// Replaces the compiler driver's temp file names (gcc `/tmp/ccAbC123.o`, clang
/// `/tmp/conftest-1a2b3c.o`), which differ between any two runs, by `/tmp/TEMP.ext`.
fn normalize_temps(text: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(text);
    let mut out = String::with_capacity(text.len());
    let mut rest: &str = &text;
    while let Some(at) = rest.find("/tmp/") {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 5..];
        let end = tail
            .find(|c: char| c.is_whitespace() || c == ':' || c == '\'' || c == '"')
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let temp = name.rsplit_once('.').is_some_and(|(stem, ext)| {
            let alnum = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric());
            let gcc = stem.len() == 8 && stem.starts_with("cc") && alnum(&stem[2..]);
            let clang = stem
                .rsplit_once('-')
                .is_some_and(|(_, h)| h.len() == 6 && h.chars().all(|c| c.is_ascii_hexdigit()));
            !name.contains('/') && alnum(ext) && (gcc || clang)
        });
        if temp {
            out.push_str("/tmp/TEMP.");
            out.push_str(name.rsplit_once('.').map_or("", |(_, e)| e));
        } else {
            out.push_str("/tmp/");
            out.push_str(name);
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out.into_bytes()
}

fn snapshot(root: &Path) -> Snapshot {
    fn walk(root: &Path, dir: &Path, out: &mut Snapshot) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let ft = meta.file_type();
            let mode = meta.permissions().mode() & 0o7777;
            let entry = if ft.is_symlink() {
                Entry::Symlink(std::fs::read_link(&path).unwrap())
            } else if ft.is_dir() {
                walk(root, &path, out);
                Entry::Dir { mode }
            } else if ft.is_file() {
                Entry::File {
                    mode,
                    bytes: std::fs::read(&path).unwrap(),
                }
            } else {
                Entry::Other(format!(
                    "special file, mode {:o}, rdev {}",
                    meta.mode(),
                    meta.rdev()
                ))
            };
            out.insert(rel, entry);
        }
    }
    let mut out = Snapshot::new();
    walk(root, root, &mut out);
    out
}

/// Recreates `dir` from [`LAYOUT`] plus the row's files, and runs the row's `pre` steps.
fn populate(dir: &Path, cc: &str, row: &Row) {
    if dir.exists() {
        std::fs::remove_dir_all(dir).unwrap();
    }
    std::fs::create_dir_all(dir).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (name, text) in LAYOUT.iter().chain(row.files.iter()) {
        let path = dir.join(name);
        if let Some(d) = name.strip_suffix('/') {
            std::fs::create_dir_all(dir.join(d)).unwrap();
            std::fs::set_permissions(dir.join(d), std::fs::Permissions::from_mode(0o755)).unwrap();
        } else if let Some(target) = text.strip_prefix('@') {
            let _ = std::fs::remove_file(&path);
            std::os::unix::fs::symlink(target, &path).unwrap();
        } else {
            let _ = std::fs::remove_file(&path);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    for args in &row.pre {
        let out = run_with_timeout(
            Command::new(cc).current_dir(dir).args(*args),
            T,
            "conformance pre step",
        );
        assert!(
            out.status.success(),
            "{cc} {}: pre step {args:?} failed: {}",
            row.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// What one run left behind.
struct Run {
    out: Output,
    after: Snapshot,
    /// `stat -c %F /dev/null` as the command saw it (namespaced rows only).
    dev_null: Option<String>,
}

/// Script for `unshare --mount`: a private `/dev` with the usual nodes, then the command,
/// then the type of `/dev/null` into `$1`.
const DEV_SCRIPT: &str = r#"m=$1; shift
mount -t tmpfs -o mode=755 tmpfs /dev || exit 97
mknod -m 666 /dev/null c 1 3 && mknod -m 666 /dev/zero c 1 5 && mknod -m 666 /dev/urandom c 1 9 || exit 97
ln -s /proc/self/fd /dev/fd
"$@"
rc=$?
stat -c %F /dev/null > "$m" 2>&1 || echo missing > "$m"
exit $rc"#;

struct Ctx<'a> {
    sshd: &'a Sshd,
    base: PathBuf,
    root: bool,
}

impl Ctx<'_> {
    fn command(&self, dir: &Path, argv: &[String], namespaced: Option<&Path>) -> Command {
        let mut cmd = match namespaced {
            Some(meta) => {
                let mut c = Command::new("unshare");
                c.args([
                    "--mount",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    DEV_SCRIPT,
                    "sh",
                ])
                .arg(meta)
                .args(argv);
                c
            }
            None => {
                let mut c = Command::new(&argv[0]);
                c.args(&argv[1..]);
                c
            }
        };
        self.sshd.apply_env(&mut cmd);
        cmd.current_dir(dir)
            .env("LANG", "C.UTF-8")
            .env_remove("LC_ALL")
            .env_remove("GCC_COLORS")
            .env("HOARDCC_HOSTS", HOSTS)
            .env("HOARDCC_IDLE_TIMEOUT", "60");
        cmd
    }

    fn run(&self, dir: &Path, cc: &str, row: &Row, argv: Vec<String>, log: Option<&Path>) -> Run {
        populate(dir, cc, row);
        let namespaced = self.root && row.args.iter().any(|a| a.contains("/dev/null"));
        let meta = dir.with_extension("devnull");
        let _ = std::fs::remove_file(&meta);
        let mut cmd = self.command(dir, &argv, namespaced.then_some(meta.as_path()));
        if let Some(log) = log {
            cmd.env("HOARDCC_JOBLOG", log);
        }
        let out = run_with_timeout(&mut cmd, T, &format!("{cc} {}", row.name));
        let dev_null = namespaced.then(|| {
            std::fs::read_to_string(&meta)
                .unwrap_or_else(|_| "(not recorded)".into())
                .trim()
                .to_string()
        });
        let out = Output {
            status: out.status,
            stdout: normalize_temps(&out.stdout),
            stderr: normalize_temps(&out.stderr),
        };
        Run {
            out,
            after: loosen(row, &snapshot(dir)),
            dev_null,
        }
    }

    /// Runs one row under `cc` both ways; `Err` describes every difference.
    fn check(&self, cc: &str, row: &Row) -> Result<(), String> {
        let dir = self.base.join(format!("{cc}-{}", row.name));
        let dir_text = dir.display().to_string();
        let args: Vec<String> = row
            .args
            .iter()
            .map(|a| a.replace("{dir}", &dir_text))
            .collect();
        populate(&dir, cc, row);
        let before = loosen(row, &snapshot(&dir));

        let mut local_argv = vec![cc.to_string()];
        local_argv.extend(args.iter().cloned());
        let local = self.run(&dir, cc, row, local_argv.clone(), None);

        let log = self.base.join(format!("{cc}-{}.joblog", row.name));
        let _ = std::fs::remove_file(&log);
        let mut wrapped = vec![hoardcc_bin().display().to_string()];
        wrapped.extend(local_argv);
        let remote = self.run(&dir, cc, row, wrapped, Some(&log));

        let mut diffs = String::new();
        compare_runs(&before, &local, &remote, &mut diffs);
        let lines: Vec<String> = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        match row.expect_for(cc) {
            Where::Remote => {
                if lines.len() != 1 || !lines[0].starts_with("remote\t") {
                    let _ = writeln!(diffs, "  expected one remote job; job log: {lines:?}");
                }
            }
            Where::Local(why) => {
                let fine = !lines.is_empty()
                    && lines
                        .iter()
                        .all(|l| l.starts_with("local\t") && !l.starts_with("local\tfallback"));
                if !fine {
                    let _ = writeln!(diffs, "  expected local ({why}); job log: {lines:?}");
                }
            }
        }
        if diffs.is_empty() {
            Ok(())
        } else {
            Err(format!("{cc} {}: {}\n{diffs}", row.name, args.join(" ")))
        }
    }
}

fn compare_runs(before: &Snapshot, local: &Run, remote: &Run, diffs: &mut String) {
    let (l, r) = (&local.out, &remote.out);
    if l.status.code() != r.status.code() {
        let _ = writeln!(
            diffs,
            "  exit: {:?} alone, {:?} through hoardcc",
            l.status, r.status
        );
    }
    for (what, a, b) in [
        ("stdout", &l.stdout, &r.stdout),
        ("stderr", &l.stderr, &r.stderr),
    ] {
        if a != b {
            let _ = writeln!(
                diffs,
                "  {what} differs\n    alone:   {:?}\n    hoardcc: {:?}",
                String::from_utf8_lossy(a),
                String::from_utf8_lossy(b)
            );
        }
    }
    if local.dev_null != remote.dev_null
        || local
            .dev_null
            .as_deref()
            .is_some_and(|t| t != "character special file")
    {
        let _ = writeln!(
            diffs,
            "  /dev/null afterwards: {:?} alone, {:?} through hoardcc",
            local.dev_null, remote.dev_null
        );
    }
    let keys: std::collections::BTreeSet<&PathBuf> =
        local.after.keys().chain(remote.after.keys()).collect();
    for k in keys {
        let (a, b) = (local.after.get(k), remote.after.get(k));
        if a == b {
            continue;
        }
        let state = |e: Option<&Entry>| match (before.get(k), e) {
            (_, None) if before.contains_key(k) => "deleted".to_string(),
            (_, None) => "absent".to_string(),
            (Some(old), Some(new)) if old == new => "unchanged".to_string(),
            (Some(_), Some(new)) => format!("changed to {}", new.describe()),
            (None, Some(new)) => format!("created: {}", new.describe()),
        };
        let _ = writeln!(
            diffs,
            "  {}\n    alone:   {}\n    hoardcc: {}",
            k.display(),
            state(a),
            state(b)
        );
    }
}

fn installed(cc: &str) -> bool {
    Command::new(cc)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Stops the fixture's mux when the test ends, pass or fail.
struct MuxStop<'a>(&'a Sshd);

impl Drop for MuxStop<'_> {
    fn drop(&mut self) {
        let mut cmd = Command::new(hoardcc_bin());
        self.0.apply_env(&mut cmd);
        cmd.args(["mux", "--stop"]);
        let _ = run_with_timeout(&mut cmd, T, "hoardcc mux --stop");
    }
}

#[test]
fn conformance_gcc_gxx_clang() {
    let sshd = Sshd::start(SshdOptions::default());
    let _stop = MuxStop(&sshd);
    let mut base = tempfile::Builder::new()
        .prefix("hoardcc-conform-")
        .tempdir()
        .unwrap();
    // CONFORMANCE_KEEP=1 keeps the directories (the hoardcc run's results) for a look.
    if std::env::var_os("CONFORMANCE_KEEP").is_some() {
        base.disable_cleanup(true);
        eprintln!("conformance: keeping {}", base.path().display());
    }
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let ctx = Ctx {
        sshd: &sshd,
        base: base.path().to_path_buf(),
        root: nix::unistd::geteuid().is_root(),
    };
    let mut compilers = vec!["gcc", "g++"];
    if installed("clang") {
        compilers.push("clang");
    } else {
        eprintln!("conformance: clang is not installed; gcc and g++ only");
    }
    // Start the mux and its lanes outside any namespace, before the rows.
    let warm = table::rows().into_iter().find(|r| r.name == "c").unwrap();
    for cc in &compilers {
        let _ = ctx.check(cc, &warm);
    }

    // CONFORMANCE_ROWS=a,b runs only the rows whose names contain one of the words.
    let only = std::env::var("CONFORMANCE_ROWS").unwrap_or_default();
    let words: Vec<&str> = only.split(',').filter(|w| !w.is_empty()).collect();
    let rows: Vec<Row> = table::rows()
        .into_iter()
        .filter(|r| words.is_empty() || words.iter().any(|w| r.name.contains(w)))
        .collect();
    let jobs: Vec<(&str, &Row)> = compilers
        .iter()
        .flat_map(|cc| {
            rows.iter()
                .filter(|r| r.runs_under(cc))
                .map(move |r| (*cc, r))
        })
        .collect();
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((cc, row)) = jobs.get(i) else { break };
                if let Err(e) = ctx.check(cc, row) {
                    failures.lock().unwrap().push(e);
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort();
    eprintln!(
        "conformance: {} invocations ({} rows × {:?}), {} differ",
        jobs.len(),
        rows.len(),
        compilers,
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} invocations differ from the compiler alone:\n{}",
        failures.len(),
        jobs.len(),
        failures.join("\n")
    );
}
