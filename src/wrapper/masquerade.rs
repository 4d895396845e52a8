//! Stage: wrapper, compiler lookup: find the real compiler. hoardcc runs either as
//! `hoardcc gcc …` or through a symlink named `gcc` (masquerade). The real compiler is the
//! first one on PATH that is neither hoardcc (this binary, or any file that resolves to a
//! `hoardcc`) nor another compiler wrapper (ccache, distcc, icecc, sccache: recognised by
//! the resolved target's name, or by a masquerade directory such as `/usr/lib/ccache`),
//! nor a compiler an outer hoardcc already ran (named in [`RECURSION_GUARD`]). So hoardcc
//! never recurses, even when another wrapper's masquerade directory is on PATH next to
//! hoardcc's and each would otherwise pick the other. Neighbours: `wrapper`
//! (caller, prints the loop note), `wrapper::local` (runs what we find).

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

/// Set in the environment of every compiler hoardcc runs, so that a hoardcc reached again
/// from inside it (through some other wrapper on PATH) runs the compiler directly, and
/// never picks the same compiler again. Its value lists (PATH-style) the compilers the
/// outer hoardcc processes ran, canonicalised; `1` when a path could not be listed.
pub const RECURSION_GUARD: &str = "HOARDCC_INSIDE";

/// Most hoardcc processes nested through other wrappers before we stop with an error
/// (each level names one more compiler in [`RECURSION_GUARD`], so this is a hard bound).
pub const MAX_NESTING: usize = 4;

/// Compiler wrappers that run "the next compiler of the same name on PATH", and hoardcc
/// itself: never taken for the real compiler.
pub const KNOWN_WRAPPERS: &[&str] = &["ccache", "sccache", "distcc", "icecc", "hoardcc"];

/// True when `argv[0]`'s file name is a compiler name we masquerade as (including
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
    #[error("cannot find the real compiler `{name}` on PATH (other than hoardcc itself and other compiler wrappers)")]
    NotFound { name: String },
    #[error("`{name}` led back to hoardcc {depth} times through other compiler wrappers ({chain}); giving up")]
    Loop {
        name: String,
        depth: usize,
        chain: String,
    },
}

/// Why a PATH entry was passed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// hoardcc itself (this binary, or another `hoardcc`).
    Hoardcc,
    /// Another compiler wrapper; holds its name (`ccache`, …).
    Wrapper(&'static str),
    /// A compiler an outer hoardcc already ran: going through it again led back here.
    Loop,
}

/// The real compiler, and what was passed over to find it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub path: PathBuf,
    pub skipped: Vec<(PathBuf, Skip)>,
}

impl Resolved {
    /// The one-line note to print, when what was skipped shows a loop: another caching
    /// wrapper (ccache, sccache) next to hoardcc on PATH, or a compiler that led back to
    /// hoardcc. Distributing wrappers (distcc, icecc) are passed over silently: hoardcc
    /// does their job.
    pub fn loop_note(&self) -> Option<String> {
        let real = self.path.display();
        if let Some((p, _)) = self.skipped.iter().find(|(_, s)| *s == Skip::Loop) {
            return Some(format!(
                "hoardcc: note: {} led back to hoardcc (a loop through another compiler wrapper); compiling with {real}",
                p.display()
            ));
        }
        let me_too = self.skipped.iter().any(|(_, s)| *s == Skip::Hoardcc);
        let caching = self.skipped.iter().find_map(|(p, s)| match s {
            Skip::Wrapper(w @ ("ccache" | "sccache")) => Some((p, *w)),
            _ => None,
        });
        let (p, w) = caching.filter(|_| me_too)?;
        let hint = if w == "ccache" {
            "; to use both, set CCACHE_PREFIX=hoardcc and leave hoardcc's directory off PATH"
        } else {
            ""
        };
        Some(format!(
            "hoardcc: note: {w} ({}) and hoardcc are both on PATH and would run each other in a loop; compiling with {real}{hint}",
            p.display()
        ))
    }
}

/// The compilers named in a [`RECURSION_GUARD`] value.
pub fn guard_list(value: &OsStr) -> Vec<PathBuf> {
    std::env::split_paths(value)
        .filter(|p| p.is_absolute())
        .collect()
}

/// The [`RECURSION_GUARD`] value for the compilers hoardcc runs: the outer list plus
/// `real` (canonicalised). `1` when a path holds a `:`.
pub fn guard_value(outer: &[PathBuf], real: &Path) -> OsString {
    let real = std::fs::canonicalize(real).unwrap_or_else(|_| real.to_path_buf());
    let mut all = outer.to_vec();
    if !all.contains(&real) {
        all.push(real);
    }
    std::env::join_paths(&all).unwrap_or_else(|_| OsString::from("1"))
}

/// Which wrapper, if any, `cand` (a PATH entry, or a path given) is. `me` is this binary,
/// canonicalised.
fn wrapper_kind(cand: &Path, me: &Path) -> Option<Skip> {
    let resolved = std::fs::canonicalize(cand).ok()?;
    if resolved == me {
        return Some(Skip::Hoardcc);
    }
    let named = |p: &Path| {
        let n = p.file_name()?.to_str()?;
        KNOWN_WRAPPERS.iter().copied().find(|w| *w == n)
    };
    let by_target = named(&resolved);
    // Masquerade directories: /usr/lib/ccache, /usr/lib64/ccache, /usr/lib/distcc,
    // /usr/lib/icecc/bin, /usr/libexec/icecc/bin … (copies or hard links of the wrapper
    // are only recognisable by where they are).
    let dir = cand.parent();
    let by_dir = dir.and_then(named).or_else(|| {
        let d = dir?;
        matches!(d.file_name()?.to_str()?, "bin" | "libexec")
            .then(|| d.parent().and_then(named))
            .flatten()
    });
    match by_target.or(by_dir)? {
        "hoardcc" => Some(Skip::Hoardcc),
        w => Some(Skip::Wrapper(w)),
    }
}

/// Resolve `name` (a bare name, or a path) to the real compiler: the first executable of
/// that name on PATH that is not hoardcc (`self_exe`), not a known wrapper, and not one of
/// `outer` (the compilers outer hoardcc processes ran, from [`RECURSION_GUARD`]). A path
/// given is used as it is unless it is one of those; then its bare name is looked up.
pub fn find_real_compiler(
    name: &str,
    path_var: Option<&OsStr>,
    self_exe: &Path,
    outer: &[PathBuf],
) -> Result<Resolved, MasqueradeError> {
    let not_found = || MasqueradeError::NotFound {
        name: name.to_string(),
    };
    if outer.len() >= MAX_NESTING {
        return Err(MasqueradeError::Loop {
            name: name.to_string(),
            depth: outer.len(),
            chain: outer
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" → "),
        });
    }
    let me = std::fs::canonicalize(self_exe).unwrap_or_else(|_| self_exe.to_path_buf());
    let base = Path::new(name)
        .file_name()
        .and_then(OsStr::to_str)
        .unwrap_or(name)
        .to_string();
    // `hoardcc ccache gcc …` asks for a wrapper by name: then only hoardcc is skipped.
    let wants_wrapper = KNOWN_WRAPPERS.contains(&base.as_str());
    // What stands in the way of `cand`: `None` to take it.
    let obstacle = |cand: &Path| -> Option<Skip> {
        let kind = match wrapper_kind(cand, &me) {
            Some(Skip::Wrapper(_)) if wants_wrapper => None,
            k => k,
        };
        kind.or_else(|| {
            let c = std::fs::canonicalize(cand).ok()?;
            outer.contains(&c).then_some(Skip::Loop)
        })
    };
    let mut skipped = Vec::new();
    let given = name.contains('/').then(|| PathBuf::from(name));
    // A path given is tried first; a path to our own symlink (or to a wrapper) falls
    // through to the bare name on PATH.
    let on_path = path_var
        .map(|v| {
            std::env::split_paths(v)
                .map(|d| d.join(&base))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    for cand in given.into_iter().chain(on_path) {
        if !crate::paths::is_executable(&cand) {
            continue;
        }
        match obstacle(&cand) {
            None => {
                return Ok(Resolved {
                    path: cand,
                    skipped,
                })
            }
            Some(k) => skipped.push((cand, k)),
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
            find_real_compiler("gcc", Some(&path), &me, &[])
                .unwrap()
                .path,
            real.join("gcc")
        );
        // Called through the symlink's own path, it still finds the real one.
        let via = masq.join("gcc");
        assert_eq!(
            find_real_compiler(via.to_str().unwrap(), Some(&path), &me, &[])
                .unwrap()
                .path,
            real.join("gcc")
        );
        // Only ourselves on PATH: a clear error, never recursion.
        let only = std::env::join_paths([&masq]).unwrap();
        assert!(matches!(
            find_real_compiler("gcc", Some(&only), &me, &[]),
            Err(MasqueradeError::NotFound { .. })
        ));
    }

    fn exe(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }

    /// ccache's masquerade directory next to ours, in both orders: neither is the real
    /// compiler, and the note names the loop and CCACHE_PREFIX.
    #[test]
    fn skips_ccache_masquerade_in_both_orders() {
        let t = tempfile::tempdir().unwrap();
        let me = t.path().join("bin/hoardcc");
        exe(&me);
        let ccache = t.path().join("usr/bin/ccache");
        exe(&ccache);
        let cc_dir = t.path().join("usr/lib/ccache");
        std::fs::create_dir_all(&cc_dir).unwrap();
        symlink("../../bin/ccache", cc_dir.join("gcc")).unwrap();
        let masq = t.path().join("masq");
        std::fs::create_dir(&masq).unwrap();
        symlink(&me, masq.join("gcc")).unwrap();
        let real = t.path().join("real/gcc");
        exe(&real);
        for order in [[&cc_dir, &masq], [&masq, &cc_dir]] {
            let path = std::env::join_paths([order[0], order[1], &t.path().join("real")]).unwrap();
            let r = find_real_compiler("gcc", Some(&path), &me, &[]).unwrap();
            assert_eq!(r.path, real);
            assert_eq!(r.skipped.len(), 2, "{r:?}");
            let note = r.loop_note().expect("a note");
            assert!(
                note.contains("ccache") && note.contains("CCACHE_PREFIX=hoardcc"),
                "{note}"
            );
            assert_eq!(note.lines().count(), 1);
        }
        // ccache alone (no hoardcc link on PATH) is skipped quietly: no loop to report.
        let path = std::env::join_paths([&cc_dir, &t.path().join("real")]).unwrap();
        let r = find_real_compiler("gcc", Some(&path), &me, &[]).unwrap();
        assert_eq!(r.path, real);
        assert_eq!(r.loop_note(), None);
        // Asked for by name, ccache itself is found.
        let path = std::env::join_paths([t.path().join("usr/bin")]).unwrap();
        let r = find_real_compiler("ccache", Some(&path), &me, &[]).unwrap();
        assert_eq!(r.path, ccache);
    }

    /// Copies or hard links in a wrapper's directory, a symlink resolving to a wrapper of
    /// any kind, and another hoardcc install, are all passed over.
    #[test]
    fn recognises_wrapper_directories_and_targets() {
        let t = tempfile::tempdir().unwrap();
        let me = t.path().join("me/hoardcc");
        exe(&me);
        let mut dirs = Vec::new();
        for dir in ["usr/lib64/ccache", "usr/lib/distcc", "usr/lib/icecc/bin"] {
            exe(&t.path().join(dir).join("cc"));
            dirs.push(t.path().join(dir));
        }
        for w in ["sccache", "icecc", "hoardcc"] {
            let target = t.path().join(format!("opt/{w}-bin/{w}"));
            exe(&target);
            let d = t.path().join(format!("links-{w}"));
            std::fs::create_dir(&d).unwrap();
            symlink(&target, d.join("cc")).unwrap();
            dirs.push(d);
        }
        let real = t.path().join("real/cc");
        exe(&real);
        dirs.push(t.path().join("real"));
        let path = std::env::join_paths(&dirs).unwrap();
        let r = find_real_compiler("cc", Some(&path), &me, &[]).unwrap();
        assert_eq!(r.path, real, "{r:?}");
        assert_eq!(r.skipped.len(), 6, "{r:?}");
        // An explicit path to a wrapper is looked up by its bare name instead.
        let via = dirs[0].join("cc");
        let r = find_real_compiler(via.to_str().unwrap(), Some(&path), &me, &[]).unwrap();
        assert_eq!(r.path, real);
    }

    /// An unknown wrapper that leads back to hoardcc: the guard names it, so the inner
    /// hoardcc passes it over (with a note), and nesting is bounded.
    #[test]
    fn guard_breaks_loops_through_unknown_wrappers() {
        let t = tempfile::tempdir().unwrap();
        let me = t.path().join("me/hoardcc");
        exe(&me);
        let odd = t.path().join("odd/gcc");
        exe(&odd);
        let real = t.path().join("real/gcc");
        exe(&real);
        let path = std::env::join_paths([t.path().join("odd"), t.path().join("real")]).unwrap();
        let first = find_real_compiler("gcc", Some(&path), &me, &[]).unwrap();
        assert_eq!(first.path, odd);
        assert_eq!(first.loop_note(), None);
        let value = guard_value(&[], &first.path);
        let outer = guard_list(&value);
        let inner = find_real_compiler("gcc", Some(&path), &me, &outer).unwrap();
        assert_eq!(inner.path, real);
        assert!(inner.loop_note().unwrap().contains("led back to hoardcc"));
        let deep: Vec<PathBuf> = (0..MAX_NESTING)
            .map(|i| PathBuf::from(format!("/x/{i}")))
            .collect();
        assert!(matches!(
            find_real_compiler("gcc", Some(&path), &me, &deep),
            Err(MasqueradeError::Loop { .. })
        ));
        assert_eq!(guard_list(OsStr::new("1")), Vec::<PathBuf>::new());
    }
}
