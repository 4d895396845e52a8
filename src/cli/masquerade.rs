//! `hoardcc masquerade DIR`: make the masquerade directory for the user (distcc's
//! `update-distcc-symlinks`, without root). It creates DIR and, for each compiler name
//! found on PATH (`gcc`, `g++`, `cc`, `c++`, `clang`, `clang++`, and the versioned
//! `gcc-N`, `g++-N`, `clang-N`, `clang++-N` present), a symlink to this binary, then prints
//! the PATH line. A compiler counts as present when the wrapper's own lookup
//! ([`crate::wrapper::masquerade::find_real_compiler`], the runtime side) finds a real one
//! for that name, so links to hoardcc or to other wrappers (ccache …) are not taken for
//! compilers. Idempotent: links already right are kept, links to another hoardcc binary
//! are replaced (atomically), and nothing else is ever replaced. Neighbours: `main`
//! (dispatch), `wrapper::masquerade` (what runs through the links).

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::wrapper::masquerade::find_real_compiler;

/// The names always looked for.
pub const BASE_NAMES: &[&str] = &["gcc", "g++", "cc", "c++", "clang", "clang++"];
/// The bases of versioned names (`gcc-12`, `clang++-16` …).
const VERSIONED_BASES: &[&str] = &["gcc", "g++", "clang", "clang++"];
/// Most PATH entries read when looking for versioned names.
const MAX_DIR_ENTRIES: usize = 100_000;

/// What happened to one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Made now.
    Created,
    /// Already pointed to this binary.
    Kept,
    /// Pointed to another hoardcc binary; now to this one.
    Replaced,
    /// A file that is not a symlink: left alone.
    NotASymlink,
    /// A symlink to something other than hoardcc: left alone.
    Foreign(PathBuf),
}

/// One compiler name and its link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The name (`gcc`, `g++-12` …).
    pub name: String,
    /// The real compiler the wrapper will run for it.
    pub real: PathBuf,
    /// What happened.
    pub state: LinkState,
}

/// Why the directory could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MasqueradeSetupError {
    /// Creating DIR, or a link in it.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No compiler name at all is on PATH.
    #[error("no compiler found on PATH (looked for {})", BASE_NAMES.join(", "))]
    NoCompilers,
}

/// True for `gcc-12`, `g++-13.2`, `clang-17`, `clang++-17`.
pub fn is_versioned_name(name: &str) -> bool {
    let Some((base, version)) = name.rsplit_once('-') else {
        return false;
    };
    VERSIONED_BASES.contains(&base)
        && !version.is_empty()
        && version.starts_with(|c: char| c.is_ascii_digit())
        && version.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// The names to look for: [`BASE_NAMES`] and the versioned names in the PATH directories
/// `dirs`, sorted.
fn candidate_names(dirs: &[PathBuf]) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = BASE_NAMES.iter().map(|s| s.to_string()).collect();
    for d in dirs {
        let Ok(entries) = std::fs::read_dir(d) else {
            continue;
        };
        for e in entries.take(MAX_DIR_ENTRIES).flatten() {
            if let Some(n) = e.file_name().to_str() {
                if is_versioned_name(n) {
                    names.insert(n.to_string());
                }
            }
        }
    }
    names
}

/// Create or update `dir` for the compilers on `path_var`, linking to `self_exe`.
///
/// # Errors
/// [`MasqueradeSetupError::Io`] when DIR or a link cannot be made,
/// [`MasqueradeSetupError::NoCompilers`] when PATH has none.
pub fn make_masquerade(
    dir: &Path,
    path_var: Option<&OsStr>,
    self_exe: &Path,
) -> Result<Vec<Link>, MasqueradeSetupError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| MasqueradeSetupError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let dir = std::fs::canonicalize(dir).map_err(io(dir))?;
    let me = std::fs::canonicalize(self_exe).map_err(io(self_exe))?;
    // Our own directory is never where a real compiler is looked for.
    let dirs: Vec<PathBuf> = path_var
        .map(|v| std::env::split_paths(v).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|d| std::fs::canonicalize(d).map_or(true, |c| c != dir))
        .collect();
    let search = std::env::join_paths(&dirs).ok();
    let mut links = Vec::new();
    for name in candidate_names(&dirs) {
        let Ok(found) = find_real_compiler(&name, search.as_deref(), &me, &[]) else {
            continue;
        };
        let link = dir.join(&name);
        let state = ensure_link(&link, &me).map_err(io(&link))?;
        links.push(Link {
            name,
            real: found.path,
            state,
        });
    }
    if links.is_empty() {
        return Err(MasqueradeSetupError::NoCompilers);
    }
    Ok(links)
}

/// Make `link` a symlink to `target` unless something else is there.
fn ensure_link(link: &Path, target: &Path) -> std::io::Result<LinkState> {
    let meta = match std::fs::symlink_metadata(link) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::os::unix::fs::symlink(target, link)?;
            return Ok(LinkState::Created);
        }
        Err(e) => return Err(e),
        Ok(m) => m,
    };
    if !meta.file_type().is_symlink() {
        return Ok(LinkState::NotASymlink);
    }
    let current = std::fs::read_link(link)?;
    let resolved = std::fs::canonicalize(link).ok();
    if current == target || resolved.as_deref() == Some(target) {
        return Ok(LinkState::Kept);
    }
    let points_to_hoardcc = [Some(current.as_path()), resolved.as_deref()]
        .into_iter()
        .flatten()
        .any(|p| {
            p.file_name()
                .and_then(OsStr::to_str)
                .is_some_and(|n| n.starts_with("hoardcc"))
        });
    if !points_to_hoardcc {
        return Ok(LinkState::Foreign(current));
    }
    // Replace atomically: a new link beside it, renamed over the old one.
    let tmp = link.with_file_name(format!(
        ".{}.hoardcc-tmp.{}",
        link.file_name().and_then(OsStr::to_str).unwrap_or("link"),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    if let Err(e) = std::fs::rename(&tmp, link) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(LinkState::Replaced)
}

/// The line to put in a shell profile.
pub fn path_line(dir: &Path) -> String {
    format!("export PATH=\"{}:$PATH\"", dir.display())
}

/// `hoardcc masquerade DIR`.
pub fn masquerade_main(dir: &Path) -> std::process::ExitCode {
    let me = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("hoardcc masquerade: cannot find this binary: {e}");
            return crate::exit::ExitCode::DistccFailed.into();
        }
    };
    let path_var = std::env::var_os("PATH");
    match make_masquerade(dir, path_var.as_deref(), &me) {
        Ok(links) => {
            for l in &links {
                let what = match &l.state {
                    LinkState::Created => "created".to_string(),
                    LinkState::Kept => "up to date".to_string(),
                    LinkState::Replaced => "updated".to_string(),
                    LinkState::NotASymlink => "left alone: not a symlink".to_string(),
                    LinkState::Foreign(t) => format!("left alone: links to {}", t.display()),
                };
                println!("{}\t{what} (runs {})", l.name, l.real.display());
            }
            let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
            println!("{}", path_line(&dir));
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hoardcc masquerade: error: {e}");
            crate::exit::ExitCode::BadArguments.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn exe(path: &Path) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn versioned_names() {
        for yes in ["gcc-12", "g++-13.2", "clang-17", "clang++-17"] {
            assert!(is_versioned_name(yes), "{yes}");
        }
        for no in [
            "gcc-ar-12",
            "gcc-",
            "clang-tidy-17",
            "cc-1",
            "gcc-x",
            "gcc-.1",
            "gcc",
        ] {
            assert!(!is_versioned_name(no), "{no}");
        }
    }

    #[test]
    fn links_the_compilers_on_path_and_is_idempotent() {
        let t = tempfile::tempdir().unwrap();
        let bin = t.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        for n in ["gcc", "g++", "gcc-12", "clang-17", "gcc-ar-12", "ld"] {
            exe(&bin.join(n));
        }
        // A ccache masquerade link is not a compiler.
        let ccache_dir = t.path().join("ccache");
        std::fs::create_dir(&ccache_dir).unwrap();
        exe(&t.path().join("ccache-bin"));
        symlink(t.path().join("ccache-bin"), ccache_dir.join("cc")).unwrap();
        let me = t.path().join("hoardcc");
        exe(&me);
        let masq = t.path().join("masq");
        let path = std::env::join_paths([&masq, &ccache_dir, &bin]).unwrap();

        let links = make_masquerade(&masq, Some(&path), &me).unwrap();
        let names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["clang-17", "g++", "gcc", "gcc-12"]);
        assert!(links.iter().all(|l| l.state == LinkState::Created));
        assert_eq!(links[2].real, bin.join("gcc"));
        for n in names {
            assert_eq!(std::fs::read_link(masq.join(n)).unwrap(), me);
        }
        let again = make_masquerade(&masq, Some(&path), &me).unwrap();
        assert!(
            again.iter().all(|l| l.state == LinkState::Kept),
            "{again:?}"
        );
        assert_eq!(again.len(), 4);

        // Another hoardcc's link is updated; anything else is left alone.
        let old = t.path().join("old/hoardcc");
        std::fs::create_dir(old.parent().unwrap()).unwrap();
        exe(&old);
        std::fs::remove_file(masq.join("gcc")).unwrap();
        symlink(&old, masq.join("gcc")).unwrap();
        std::fs::remove_file(masq.join("g++")).unwrap();
        std::fs::write(masq.join("g++"), "mine").unwrap();
        std::fs::remove_file(masq.join("gcc-12")).unwrap();
        symlink(bin.join("ld"), masq.join("gcc-12")).unwrap();
        let third = make_masquerade(&masq, Some(&path), &me).unwrap();
        let state = |n: &str| third.iter().find(|l| l.name == n).unwrap().state.clone();
        assert_eq!(state("gcc"), LinkState::Replaced);
        assert_eq!(std::fs::read_link(masq.join("gcc")).unwrap(), me);
        assert_eq!(state("g++"), LinkState::NotASymlink);
        assert_eq!(std::fs::read_to_string(masq.join("g++")).unwrap(), "mine");
        assert_eq!(state("gcc-12"), LinkState::Foreign(bin.join("ld")));
        assert_eq!(state("clang-17"), LinkState::Kept);
        assert_eq!(path_line(Path::new("/m")), "export PATH=\"/m:$PATH\"");
    }

    #[test]
    fn no_compiler_on_path_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let me = t.path().join("hoardcc");
        exe(&me);
        let empty = t.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let r = make_masquerade(&t.path().join("m"), Some(empty.as_os_str()), &me);
        assert!(matches!(r, Err(MasqueradeSetupError::NoCompilers)));
    }
}
