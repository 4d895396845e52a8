//! Last wrapper stage: apply a remote result. Each output goes to a temp file in its
//! target directory and is renamed into place, so a reader never sees a partial `.o`;
//! stdout and stderr are replayed in single writes so parallel jobs don't interleave
//! mid-line. Neighbours: `mux::transport` (produces `Completed`), `wrapper::mod`.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::mux::transport::Completed;

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("the server returned an output we did not ask for: {0}")]
    Unexpected(String),
    #[error("the server did not return {0}")]
    Missing(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Write every output of `done` atomically. `wanted` lists the names the job asked for;
/// the first is required (when the compile succeeded), the rest are optional.
/// Nothing is renamed into place unless every file was written to its temp file.
pub fn write_all(cwd: &Path, done: &Completed, wanted: &[String]) -> Result<(), OutputError> {
    if done.exit_code == 0 {
        if let Some(first) = wanted.first() {
            if !done.outputs.iter().any(|(n, _)| n == first) {
                return Err(OutputError::Missing(first.clone()));
            }
        }
    }
    let mask = current_umask();
    let mut staged = Vec::with_capacity(done.outputs.len());
    for (name, data) in &done.outputs {
        if !wanted.iter().any(|w| w == name) {
            return Err(OutputError::Unexpected(name.clone()));
        }
        let path = cwd.join(name);
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(cwd);
        let werr = |source| OutputError::Write {
            path: path.clone(),
            source,
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".hoardcc-")
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(werr)?;
        tmp.write_all(data).map_err(werr)?;
        // tempfile creates 0600; give the file the mode the compiler would have (0666 & ~umask).
        std::fs::set_permissions(
            tmp.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o666 & !mask),
        )
        .map_err(werr)?;
        staged.push((tmp, path));
    }
    for (tmp, path) in staged {
        tmp.persist(&path).map_err(|e| OutputError::Write {
            path: path.clone(),
            source: e.error,
        })?;
    }
    Ok(())
}

fn current_umask() -> u32 {
    use nix::sys::stat::{umask, Mode};
    let old = umask(Mode::from_bits_truncate(0o022));
    umask(old);
    old.bits()
}

/// Write `bytes` to stdout or stderr in one write call (after building the whole text).
pub fn replay(to_stderr: bool, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let _ = if to_stderr {
        std::io::stderr().lock().write_all(bytes)
    } else {
        std::io::stdout().lock().write_all(bytes)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(outputs: Vec<(&str, &[u8])>) -> Completed {
        Completed {
            exit_code: 0,
            stdout: vec![],
            stderr: vec![],
            outputs: outputs
                .into_iter()
                .map(|(n, d)| (n.to_string(), d.to_vec()))
                .collect(),
        }
    }

    #[test]
    fn writes_outputs_into_place_and_leaves_no_temp_files() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("obj")).unwrap();
        write_all(
            t.path(),
            &done(vec![("obj/a.o", b"OBJ"), ("obj/a.dwo", b"DWO")]),
            &["obj/a.o".into(), "obj/a.dwo".into()],
        )
        .unwrap();
        assert_eq!(std::fs::read(t.path().join("obj/a.o")).unwrap(), b"OBJ");
        assert_eq!(std::fs::read(t.path().join("obj/a.dwo")).unwrap(), b"DWO");
        let left: Vec<_> = std::fs::read_dir(t.path().join("obj"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
    }

    #[test]
    fn refuses_names_not_asked_for_and_writes_nothing() {
        let t = tempfile::tempdir().unwrap();
        let err = write_all(
            t.path(),
            &done(vec![("a.o", b"x"), ("../evil", b"y")]),
            &["a.o".into()],
        )
        .unwrap_err();
        assert!(matches!(err, OutputError::Unexpected(_)));
        assert!(
            !t.path().join("a.o").exists(),
            "nothing is renamed into place on error"
        );
    }

    #[test]
    fn missing_main_output_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        assert!(matches!(
            write_all(t.path(), &done(vec![]), &["a.o".into()]),
            Err(OutputError::Missing(_))
        ));
    }

    #[test]
    fn existing_output_is_replaced_whole() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a.o"), b"old old old").unwrap();
        write_all(t.path(), &done(vec![("a.o", b"new")]), &["a.o".into()]).unwrap();
        assert_eq!(std::fs::read(t.path().join("a.o")).unwrap(), b"new");
    }
}
