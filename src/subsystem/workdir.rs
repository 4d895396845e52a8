//! Stage: server execution, the job's private directory: a fresh `TempDir` per job holding
//! `root/`, under which the client's working directory is mirrored so that file names
//! and `DW_AT_comp_dir` come out as in a local build (see `notes/identical-objects.md`).
//! Every path a job names is resolved lexically inside `root/`; one that would climb out
//! is refused. Neighbours: `subsystem::job` (validates a `Job` and calls this),
//! `subsystem::exec` (runs the compiler in [`WorkDir::cwd`]), `subsystem::distccd` (its
//! [`private_dir`]), `subsystem` ([`sweep_stale`] at start).
//! The directory is removed when the [`WorkDir`] is dropped, whatever happened, and a
//! killed server's leftovers are removed by the next server's [`sweep_stale`]: every
//! directory's name carries the pid of the server that made it.

use std::io;
use std::path::{Component, Path, PathBuf};

/// Why a job's path was refused or the directory could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum WorkDirError {
    /// The client's working directory must be absolute (it is mirrored under `root/`).
    #[error("working directory {0:?} is not absolute")]
    CwdNotAbsolute(String),
    /// A path would leave the job root once `..` is resolved, or names no file.
    #[error("path {0:?} escapes the job directory")]
    Escapes(String),
    /// A path that names no file (empty, or the root itself).
    #[error("path {0:?} does not name a file")]
    NotAFile(String),
    /// Creating the directory or writing into it failed (disk full, permissions).
    #[error("preparing the job directory: {0}")]
    Io(#[from] io::Error),
}

/// A private per-job directory, deleted on drop.
#[derive(Debug)]
pub struct WorkDir {
    /// Owns the directory; dropping it removes everything inside.
    dir: tempfile::TempDir,
    /// `dir/root`: stands for the client's `/`.
    root: PathBuf,
    /// `root/<client cwd>`: where the compiler runs.
    cwd: PathBuf,
}

impl WorkDir {
    /// Creates a fresh private (0700) directory in `tmpdir` (or `$TMPDIR`) with `root/`
    /// and the mirrored client working directory `client_cwd` inside it.
    ///
    /// # Errors
    /// [`WorkDirError::CwdNotAbsolute`] / [`WorkDirError::Escapes`] for a bad `client_cwd`,
    /// [`WorkDirError::Io`] when the directory cannot be made.
    pub fn create(tmpdir: Option<&Path>, client_cwd: &str) -> Result<WorkDir, WorkDirError> {
        if !client_cwd.starts_with('/') {
            return Err(WorkDirError::CwdNotAbsolute(client_cwd.to_owned()));
        }
        let rel = normalise(&[], client_cwd)
            .ok_or_else(|| WorkDirError::Escapes(client_cwd.to_owned()))?;
        let dir = private_dir(tmpdir, JOB_PREFIX)?;
        let root = dir.path().join("root");
        let cwd = join_parts(&root, &rel);
        std::fs::create_dir_all(&cwd)?;
        Ok(WorkDir { dir, root, cwd })
    }

    /// The directory standing for the client's `/` (the prefix to map away in debug info).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The mirrored client working directory: the compiler's current directory.
    pub fn cwd(&self) -> &Path {
        &self.cwd
    }

    /// The temporary directory itself (parent of `root/`).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Resolves `name` (relative to the client's cwd, or absolute on the client) to a
    /// path inside `root/`, lexically (`.` and `..` resolved without touching the disk).
    ///
    /// # Errors
    /// [`WorkDirError::Escapes`] if it would leave `root/`, [`WorkDirError::NotAFile`] if
    /// it names the root itself or is empty.
    pub fn resolve(&self, name: &str) -> Result<PathBuf, WorkDirError> {
        if name.is_empty() || name.contains('\0') {
            return Err(WorkDirError::NotAFile(name.to_owned()));
        }
        let cwd_rel: Vec<String> = self
            .cwd
            .strip_prefix(&self.root)
            .expect("cwd is under root by construction")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let start: &[String] = if name.starts_with('/') { &[] } else { &cwd_rel };
        let parts = normalise(start, name).ok_or_else(|| WorkDirError::Escapes(name.to_owned()))?;
        if parts.is_empty() || name.ends_with('/') {
            return Err(WorkDirError::NotAFile(name.to_owned()));
        }
        Ok(join_parts(&self.root, &parts))
    }

    /// Resolves `name` like [`WorkDir::resolve`] and creates its parent directories.
    ///
    /// # Errors
    /// As [`WorkDir::resolve`], plus [`WorkDirError::Io`].
    pub fn prepare(&self, name: &str) -> Result<PathBuf, WorkDirError> {
        let path = self.resolve(name)?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        Ok(path)
    }

    /// The name to put on the compiler's command line for client path `name`: relative
    /// names stay as they are (the compiler runs in [`WorkDir::cwd`], so file names in
    /// diagnostics and debug info match the client's); absolute ones become their mirror
    /// under `root/` (the debug prefix map turns them back). A relative name starting with
    /// `-` or `@` gets a `./` so it can never be read as an option.
    ///
    /// # Errors
    /// As [`WorkDir::resolve`].
    pub fn command_name(&self, name: &str) -> Result<String, WorkDirError> {
        let resolved = self.resolve(name)?;
        if name.starts_with('/') {
            Ok(resolved.to_string_lossy().into_owned())
        } else if name.starts_with('-') || name.starts_with('@') {
            // Never an option or a response file (`args::check_name` refuses these
            // names earlier; this holds even if a caller forgets).
            Ok(format!("./{name}"))
        } else {
            Ok(name.to_owned())
        }
    }
}

/// Name prefix of per-job directories (native protocol).
pub const JOB_PREFIX: &str = "hoardcc-job-";
/// Name prefix of per-job directories (stock distcc protocol).
pub const DISTCC_PREFIX: &str = "hoardcc-distcc-";

/// A fresh 0700 directory `<prefix><our pid>-<random>` in `tmpdir` (or `$TMPDIR`).
///
/// # Errors
/// The directory cannot be created.
pub fn private_dir(tmpdir: Option<&Path>, prefix: &str) -> io::Result<tempfile::TempDir> {
    let prefix = format!("{prefix}{}-", std::process::id());
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix);
    match tmpdir {
        Some(t) => builder.tempdir_in(t),
        None => builder.tempdir(),
    }
}

/// Where job directories go when `server.tmpdir` is not set and `$TMPDIR` is not either:
/// the shared memory file system, when it is a tmpfs we may write with at least
/// [`SHM_MIN_FREE`] free. A job makes and removes a directory tree and a few files, and on
/// a disk file system (ext4's inode allocation scans for recently freed inodes) that
/// costs a few ms of CPU per job; on tmpfs next to nothing. Otherwise `None`: the
/// system temp dir.
pub fn default_tmpdir() -> Option<PathBuf> {
    if std::env::var_os("TMPDIR").is_some() {
        return None;
    }
    let shm = Path::new(SHM_DIR);
    usable_tmpfs(shm).then(|| shm.to_path_buf())
}

/// The shared memory file system's usual place.
const SHM_DIR: &str = "/dev/shm";
/// Free space `/dev/shm` must have for job directories to go there: a job's files are
/// bounded by the admission and file-size limits, and a full tmpfs would fail compiles.
pub const SHM_MIN_FREE: u64 = 1 << 30;

/// Whether `dir` is a tmpfs directory we can write, with [`SHM_MIN_FREE`] free.
fn usable_tmpfs(dir: &Path) -> bool {
    use nix::sys::statfs::{statfs, TMPFS_MAGIC};
    use nix::sys::statvfs::statvfs;
    use nix::unistd::{access, AccessFlags};
    let Ok(fs) = statfs(dir) else {
        return false;
    };
    let Ok(vfs) = statvfs(dir) else {
        return false;
    };
    // fsblkcnt_t is not u64 on every target.
    #[allow(clippy::useless_conversion)]
    let free = u64::from(vfs.blocks_available()).saturating_mul(vfs.fragment_size());
    fs.filesystem_type() == TMPFS_MAGIC
        && free >= SHM_MIN_FREE
        && access(dir, AccessFlags::W_OK | AccessFlags::X_OK).is_ok()
}

/// Removes job directories in `tmpdir` (or `$TMPDIR`) left by servers that died without
/// cleaning up (SIGKILL, power loss): ours (same owner) whose pid no longer exists.
/// Returns how many were removed. Errors are ignored: this is housekeeping.
pub fn sweep_stale(tmpdir: Option<&Path>) -> usize {
    use std::os::unix::fs::MetadataExt;
    let dir = tmpdir.map_or_else(std::env::temp_dir, Path::to_path_buf);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let uid = nix::unistd::getuid().as_raw();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = owner_pid(&name.to_string_lossy()) else {
            continue;
        };
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        if !meta.is_dir() || meta.uid() != uid || pid_alive(pid) {
            continue;
        }
        if std::fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The server pid in a job directory's name, `hoardcc-job-<pid>-<random>`.
fn owner_pid(name: &str) -> Option<i32> {
    let rest = name
        .strip_prefix(JOB_PREFIX)
        .or_else(|| name.strip_prefix(DISTCC_PREFIX))?;
    let (pid, random) = rest.split_once('-')?;
    if random.is_empty() {
        return None;
    }
    pid.parse().ok().filter(|p| *p > 0)
}

/// True unless the process is known to be gone (`kill(pid, 0)` says ESRCH). A zombie
/// still counts as alive: its parent may yet reap it, and its directory costs nothing.
fn pid_alive(pid: i32) -> bool {
    let pid = nix::unistd::Pid::from_raw(pid);
    !matches!(
        nix::sys::signal::kill(pid, None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Applies the components of `name` to the stack `start` (already normalised).
/// `None` if a `..` would climb above the empty stack (the root).
fn normalise(start: &[String], name: &str) -> Option<Vec<String>> {
    let mut parts: Vec<String> = start.to_vec();
    for comp in Path::new(name).components() {
        match comp {
            Component::RootDir | Component::Prefix(_) => parts.clear(),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
        }
    }
    Some(parts)
}

fn join_parts(root: &Path, parts: &[String]) -> PathBuf {
    let mut p = root.to_path_buf();
    for part in parts {
        p.push(part);
    }
    p
}

#[cfg(test)]
mod tests {

    #[test]
    fn job_directories_go_to_a_tmpfs_only() {
        assert!(!usable_tmpfs(Path::new("/nonexistent/hoardcc")));
        // The source tree is on a disk file system here (and on CI); where it is a
        // tmpfs the check has nothing to say.
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        let fs = nix::sys::statfs::statfs(here).unwrap();
        if fs.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC {
            assert!(!usable_tmpfs(here));
        }
        // /dev/shm where it is a writable tmpfs with room, as on this machine: a job
        // directory can be made and removed there.
        if usable_tmpfs(Path::new(SHM_DIR)) {
            let d = private_dir(Some(Path::new(SHM_DIR)), "hoardcc-test-").unwrap();
            assert!(d.path().starts_with(SHM_DIR));
        }
    }

    use super::*;

    fn wd(cwd: &str) -> WorkDir {
        WorkDir::create(None, cwd).unwrap()
    }

    #[test]
    fn mirrors_cwd_under_root() {
        let w = wd("/home/u/proj/./sub/..");
        assert_eq!(w.cwd(), w.root().join("home/u/proj"));
        assert!(w.cwd().is_dir());
        assert_eq!(w.root(), w.path().join("root"));
    }

    #[test]
    fn resolves_relative_and_absolute_names_inside_root() {
        let w = wd("/home/u/proj");
        assert_eq!(
            w.resolve("src/a.c").unwrap(),
            w.root().join("home/u/proj/src/a.c")
        );
        assert_eq!(
            w.resolve("../obj/a.o").unwrap(),
            w.root().join("home/u/obj/a.o")
        );
        assert_eq!(w.resolve("/opt/x/a.c").unwrap(), w.root().join("opt/x/a.c"));
        assert_eq!(w.command_name("src/a.c").unwrap(), "src/a.c");
        assert_eq!(w.command_name("-fplugin=x.c").unwrap(), "./-fplugin=x.c");
        assert_eq!(w.command_name("@rsp").unwrap(), "./@rsp");
        assert_eq!(
            w.command_name("/opt/x/a.c").unwrap(),
            w.root().join("opt/x/a.c").to_string_lossy()
        );
    }

    #[test]
    fn refuses_escapes_and_non_files() {
        let w = wd("/home/u");
        assert!(matches!(
            w.resolve("../../../etc/passwd"),
            Err(WorkDirError::Escapes(_))
        ));
        assert!(matches!(w.resolve("/../x"), Err(WorkDirError::Escapes(_))));
        assert!(matches!(w.resolve("../.."), Err(WorkDirError::NotAFile(_))));
        assert!(matches!(w.resolve(""), Err(WorkDirError::NotAFile(_))));
        assert!(matches!(w.resolve("dir/"), Err(WorkDirError::NotAFile(_))));
        assert!(matches!(
            WorkDir::create(None, "rel/dir"),
            Err(WorkDirError::CwdNotAbsolute(_))
        ));
        assert!(matches!(
            WorkDir::create(None, "/.."),
            Err(WorkDirError::Escapes(_))
        ));
    }

    #[test]
    fn prepare_creates_parents_and_drop_removes_everything() {
        let w = wd("/a/b");
        let p = w.prepare("deep/er/x.o").unwrap();
        assert!(p.parent().unwrap().is_dir());
        std::fs::write(&p, b"x").unwrap();
        let top = w.path().to_path_buf();
        drop(w);
        assert!(!top.exists());
    }

    #[test]
    fn names_carry_the_pid_and_sweep_removes_only_dead_owners() {
        let t = tempfile::tempdir().unwrap();
        let live = WorkDir::create(Some(t.path()), "/x").unwrap();
        let name = live
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert_eq!(owner_pid(&name), Some(std::process::id() as i32));
        // A dead server's directory: a child that has exited and been reaped.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = child.id();
        child.wait().unwrap();
        let dead = t.path().join(format!("{JOB_PREFIX}{dead_pid}-abc123"));
        std::fs::create_dir_all(dead.join("root/home")).unwrap();
        std::fs::write(dead.join("root/home/a.o"), b"partial").unwrap();
        let dead_distcc = t.path().join(format!("{DISTCC_PREFIX}{dead_pid}-zz"));
        std::fs::create_dir(&dead_distcc).unwrap();
        // Names that are not ours stay.
        let other = t.path().join("hoardcc-job-notapid-x");
        std::fs::create_dir(&other).unwrap();
        let old_style = t.path().join(format!("{JOB_PREFIX}{dead_pid}"));
        std::fs::create_dir(&old_style).unwrap();

        assert_eq!(sweep_stale(Some(t.path())), 2);
        assert!(!dead.exists() && !dead_distcc.exists());
        assert!(live.path().is_dir(), "a live server's job dir stays");
        assert!(other.is_dir() && old_style.is_dir());
    }

    #[test]
    fn honours_tmpdir() {
        let t = tempfile::tempdir().unwrap();
        let w = WorkDir::create(Some(t.path()), "/x").unwrap();
        assert!(w.path().starts_with(t.path()));
    }
}
