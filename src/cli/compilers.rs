//! The compiler column of `hoardcc ping` and the compiler steps of `hoardcc doctor`: the
//! local compilers the wrapper would run (each masquerade name found on PATH the way
//! `wrapper::masquerade` finds it, probed by `identity`), and for each, the compiler a
//! server offers (`mux::lane::Lane::compilers`) with the same identity, found as the
//! server itself looks (`proto::identity::candidate_names`, the default rule: version,
//! target and configuration). Neighbours: `cli::ping`, `cli::doctor` (callers),
//! `identity` and `proto::identity` (probe and comparison), `subsystem::compilers` (the
//! server's own pick, which this mirrors).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::identity::{probe, ProbeOptions};
use crate::proto::identity::{
    candidate_names, find_match, tool_of, CompilerId, OfferedCompiler, Rule,
};
use crate::wrapper::masquerade::find_real_compiler;

/// The compiler names checked locally, in this order.
pub const LOCAL_NAMES: &[&str] = &["cc", "c++", "gcc", "g++", "clang", "clang++"];
/// Bound on the text of one identity failure.
const MAX_TEXT: usize = 300;

/// One local compiler the wrapper would run.
#[derive(Debug, Clone)]
pub struct LocalCompiler {
    /// The name (`gcc`).
    pub name: String,
    /// Where it resolves (hoardcc and other wrappers passed over).
    pub path: PathBuf,
    /// Its identity, or why it has none.
    pub id: Result<CompilerId, String>,
}

/// Each of [`LOCAL_NAMES`] found on `path_var` (the local `PATH`), probed at once.
/// Names not installed are left out.
pub async fn local_compilers(path_var: Option<&std::ffi::OsStr>) -> Vec<LocalCompiler> {
    let me = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("hoardcc"));
    let found: Vec<(String, PathBuf)> = LOCAL_NAMES
        .iter()
        .filter_map(|name| {
            let r = find_real_compiler(name, path_var, &me, &[]).ok()?;
            Some((name.to_string(), r.path))
        })
        .collect();
    let opts = ProbeOptions {
        hash_binaries: false,
        search_path: path_var.map(|p| p.to_os_string()),
    };
    let probes = found.iter().map(|(_, path)| probe(path, &opts));
    let ids = join_all(probes).await;
    found
        .into_iter()
        .zip(ids)
        .map(|((name, path), id)| LocalCompiler {
            name,
            path,
            id: id.map_err(|e| e.to_string().chars().take(MAX_TEXT).collect()),
        })
        .collect()
}

/// Run `futs` concurrently (a handful of probes; no extra crate for it).
async fn join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futs.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// How one local compiler fares on one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompilerMatch {
    /// The local name (`gcc`).
    pub name: String,
    /// The local compiler's identity, `12.2.0 (x86_64-linux-gnu)`; absent when it could
    /// not be probed.
    pub local: Option<String>,
    /// The server's compiler with the same identity (`gcc`, `gcc-12`), if any.
    pub server: Option<String>,
    /// Where that resolves on the server.
    pub server_path: Option<String>,
    /// Why there is no match.
    pub mismatch: Option<String>,
}

impl CompilerMatch {
    /// True when the server has this compiler.
    pub fn matched(&self) -> bool {
        self.server.is_some()
    }

    /// `gcc→gcc-12` or `gcc✗` (the ping column).
    pub fn short(&self) -> String {
        match &self.server {
            Some(s) if *s == self.name => self.name.clone(),
            Some(s) => format!("{}→{s}", self.name),
            None => format!("{}✗", self.name),
        }
    }
}

/// The server compiler that serves `local`, looked for as the server does
/// (`proto::identity::find_match`: the candidate names, then the server's extra
/// compilers of the same tool).
pub fn match_one(local: &LocalCompiler, offered: &[OfferedCompiler]) -> CompilerMatch {
    let id = match &local.id {
        Ok(id) => id,
        Err(e) => {
            return CompilerMatch {
                name: local.name.clone(),
                local: None,
                server: None,
                server_path: None,
                mismatch: Some(format!("its identity is unknown here: {e}")),
            }
        }
    };
    let found = find_match(&local.name, id, offered, Rule::DEFAULT);
    let mut m = CompilerMatch {
        name: local.name.clone(),
        local: Some(id.label()),
        server: None,
        server_path: None,
        mismatch: None,
    };
    match found {
        Some(o) => {
            m.server = Some(o.name.clone());
            m.server_path = Some(o.path.clone());
        }
        None => {
            let tool = tool_of(&local.name);
            let there = candidate_names(&local.name, id)
                .iter()
                .find_map(|n| offered.iter().find(|o| &o.name == n))
                .map(|o| match o.id.mismatch(id, Rule::DEFAULT) {
                    Some(why) => format!("{} there is {}{}", o.name, o.id.label(), why.note()),
                    None => format!("{} there is {}", o.name, o.id.label()),
                })
                .unwrap_or_else(|| format!("the server offers no {tool}"));
            m.mismatch = Some(format!(
                "no compiler on the server matches {} {}; {there}",
                local.name,
                id.label()
            ));
        }
    }
    m
}

/// [`match_one`] for every local compiler.
pub fn match_all(locals: &[LocalCompiler], offered: &[OfferedCompiler]) -> Vec<CompilerMatch> {
    locals.iter().map(|l| match_one(l, offered)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(version: &str) -> CompilerId {
        CompilerId {
            version: version.into(),
            target: "x86_64-linux-gnu".into(),
            configured: "Configured with: ../configure\nThread model: posix".into(),
            binaries: None,
        }
    }

    fn offered(name: &str, version: &str) -> OfferedCompiler {
        OfferedCompiler {
            name: name.into(),
            path: format!("/usr/bin/{name}"),
            id: id(version),
            extra: false,
        }
    }

    fn local(name: &str, version: &str) -> LocalCompiler {
        LocalCompiler {
            name: name.into(),
            path: PathBuf::from(format!("/usr/bin/{name}")),
            id: Ok(id(version)),
        }
    }

    #[test]
    fn same_name_versioned_name_or_none() {
        let server = [offered("gcc", "13.1.0"), offered("gcc-12", "12.2.0")];
        let same = match_one(&local("gcc", "13.1.0"), &server);
        assert_eq!(same.server.as_deref(), Some("gcc"));
        assert_eq!(same.short(), "gcc");
        // A client gcc 12 is served by the server's gcc-12.
        let older = match_one(&local("gcc", "12.2.0"), &server);
        assert_eq!(older.server.as_deref(), Some("gcc-12"));
        assert_eq!(older.server_path.as_deref(), Some("/usr/bin/gcc-12"));
        assert_eq!(older.short(), "gcc→gcc-12");
        let none = match_one(&local("gcc", "99.1.0"), &server);
        assert!(!none.matched());
        assert_eq!(
            none.mismatch.as_deref(),
            Some(
                "no compiler on the server matches gcc 99.1.0 (x86_64-linux-gnu); \
                 gcc there is 13.1.0 (x86_64-linux-gnu)"
            )
        );
        assert_eq!(none.short(), "gcc✗");
        let absent = match_one(&local("clang", "14.0.6"), &server);
        assert!(absent
            .mismatch
            .unwrap()
            .ends_with("the server offers no clang"));
    }

    #[test]
    fn configured_differently_is_named() {
        let mut other = offered("gcc", "12.2.0");
        other.id.configured = "Configured with: ../configure --other".into();
        let m = match_one(&local("gcc", "12.2.0"), &[other]);
        assert!(m
            .mismatch
            .unwrap()
            .ends_with("12.2.0 (x86_64-linux-gnu), configured differently"),);
    }

    #[tokio::test]
    async fn finds_and_probes_local_compilers() {
        // A PATH with one fake gcc: only that name is found, and it is probed.
        let dir = tempfile::tempdir().unwrap();
        let gcc = dir.path().join("gcc");
        std::fs::write(
            &gcc,
            "#!/bin/sh\ncase \"$1\" in -dumpfullversion) echo 7.5.0;; -dumpmachine) echo \
             x86_64-linux-gnu;; -v) echo 'gcc version 7.5.0 (fake)' >&2;; esac\n",
        )
        .unwrap();
        std::fs::set_permissions(&gcc, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let path = dir.path().as_os_str().to_os_string();
        let found = local_compilers(Some(&path)).await;
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].name, "gcc");
        assert_eq!(found[0].id.as_ref().unwrap().version, "7.5.0");
    }
}
