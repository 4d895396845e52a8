//! Stage 1 of the wrapper: find the real compiler. hoardcc runs either as
//! `hoardcc gcc …` or through a symlink named `gcc` (masquerade); either way the real
//! compiler is the first one on PATH that is not hoardcc itself, so we never recurse.
//! Neighbours: `wrapper::mod` (caller), `wrapper::local` (runs what we find).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Set in the environment of every compiler hoardcc runs, so that a hoardcc reached again
/// from inside it (through some other wrapper on PATH) runs the compiler directly.
pub const RECURSION_GUARD: &str = "HOARDCC_INSIDE";

/// True when argv[0]'s file name is a compiler name we masquerade as (including
/// versioned or target-prefixed names such as `gcc-12` or `x86_64-linux-gnu-g++`):
/// the same rule as the server's default allow-list, [`crate::args::is_compiler_name`].
pub fn is_masquerade_name(argv0: &str) -> bool {
    Path::new(argv0)
        .file_name()
        .and_then(OsStr::to_str)
        .is_some_and(crate::args::is_compiler_name)
}

#[derive(Debug, thiserror::Error)]
pub enum MasqueradeError {
    #[error("cannot find the real compiler `{name}` on PATH (other than hoardcc itself)")]
    NotFound { name: String },
}

/// Resolve `name` (a bare name, or a path) to the real compiler, skipping every PATH
/// entry that is hoardcc itself (`self_exe`, canonicalised).
pub fn find_real_compiler(
    name: &str,
    path_var: Option<&OsStr>,
    self_exe: &Path,
) -> Result<PathBuf, MasqueradeError> {
    let not_found = || MasqueradeError::NotFound {
        name: name.to_string(),
    };
    let me = std::fs::canonicalize(self_exe).unwrap_or_else(|_| self_exe.to_path_buf());
    let is_me = |p: &Path| std::fs::canonicalize(p).map(|c| c == me).unwrap_or(false);
    let base = Path::new(name)
        .file_name()
        .and_then(OsStr::to_str)
        .unwrap_or(name)
        .to_string();
    if name.contains('/') {
        let p = PathBuf::from(name);
        if !is_me(&p) && crate::paths::is_executable(&p) {
            return Ok(p);
        }
        // A path to our own symlink: look the bare name up on PATH instead.
    }
    let path_var = path_var.ok_or_else(not_found)?;
    for dir in std::env::split_paths(path_var) {
        let cand = dir.join(&base);
        if crate::paths::is_executable(&cand) && !is_me(&cand) {
            return Ok(cand);
        }
    }
    Err(not_found())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn masquerade_names() {
        for yes in [
            "gcc",
            "/usr/lib/hoardcc/g++",
            "cc",
            "c++",
            "clang",
            "clang++",
            "gcc-12",
            "x86_64-linux-gnu-gcc-12",
            "clang++-16",
        ] {
            assert!(is_masquerade_name(yes), "{yes}");
        }
        for no in ["hoardcc", "distccd", "ld", "gcc-ar", "make", "clang-tidy"] {
            assert!(!is_masquerade_name(no), "{no}");
        }
    }

    #[test]
    fn skips_itself_on_path() {
        let t = tempfile::tempdir().unwrap();
        let me = t.path().join("hoardcc");
        std::fs::write(&me, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&me, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let masq = t.path().join("masq");
        std::fs::create_dir(&masq).unwrap();
        symlink(&me, masq.join("gcc")).unwrap();
        let real = t.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::write(real.join("gcc"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            real.join("gcc"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let path = std::env::join_paths([&masq, &real]).unwrap();
        assert_eq!(
            find_real_compiler("gcc", Some(&path), &me).unwrap(),
            real.join("gcc")
        );
        // Called through the symlink's own path, it still finds the real one.
        let via = masq.join("gcc");
        assert_eq!(
            find_real_compiler(via.to_str().unwrap(), Some(&path), &me).unwrap(),
            real.join("gcc")
        );
        // Only ourselves on PATH: a clear error, never recursion.
        let only = std::env::join_paths([&masq]).unwrap();
        assert!(matches!(
            find_real_compiler("gcc", Some(&only), &me),
            Err(MasqueradeError::NotFound { .. })
        ));
    }
}
