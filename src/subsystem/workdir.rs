//! Server stage 8b, the job's private directory: a fresh `TempDir` per job holding
//! `root/`, under which the client's working directory is mirrored so that file names
//! and `DW_AT_comp_dir` come out as in a local build (see `notes/identical-objects.md`).
//! Every path a job names is resolved lexically inside `root/`; one that would climb out
//! is refused. Neighbours: `subsystem::job` (validates a `Job` and calls this),
//! `subsystem::exec` (runs the compiler in [`WorkDir::cwd`]), `subsystem::distccd`.
//! The directory is removed when the [`WorkDir`] is dropped, whatever happened.

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
        let mut builder = tempfile::Builder::new();
        builder.prefix("hoardcc-job-");
        let dir = match tmpdir {
            Some(t) => builder.tempdir_in(t)?,
            None => builder.tempdir()?,
        };
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
    /// under `root/` (the debug prefix map turns them back).
    ///
    /// # Errors
    /// As [`WorkDir::resolve`].
    pub fn command_name(&self, name: &str) -> Result<String, WorkDirError> {
        let resolved = self.resolve(name)?;
        if name.starts_with('/') {
            Ok(resolved.to_string_lossy().into_owned())
        } else {
            Ok(name.to_owned())
        }
    }
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
    fn honours_tmpdir() {
        let t = tempfile::tempdir().unwrap();
        let w = WorkDir::create(Some(t.path()), "/x").unwrap();
        assert!(w.path().starts_with(t.path()));
    }
}
