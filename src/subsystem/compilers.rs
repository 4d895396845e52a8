//! Server stage, the right compiler or none: among the compilers this server allows
//! (`job::AllowList`), [`Compilers::pick`] finds one whose identity is the client's
//! (`proto::identity::CompilerId`, carried in the job): the name asked for, then its
//! versioned and target-prefixed names on the search path (`gcc-12`,
//! `x86_64-linux-gnu-gcc-12`), then allow-listed extra names of the same tool. A client
//! gcc 12.2.0 is thus served by `gcc-12` where `gcc` is 13. None matching is a refusal
//! that names both versions. [`Compilers::offered`] lists every allowed compiler on the
//! search path with its identity (`hoardcc serve --check`, `Message::Compilers`).
//! Identities are memoised per process (`identity::Prober`). Neighbours: `session`
//! (calls `pick` per job), `job` (the allow-list), `check` (`serve --check`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use super::job::{AllowList, CompilerRefusal};
use crate::identity::{ProbeError, ProbeOptions, Prober};
use crate::proto::identity::{
    candidate_names, tool_of, CompilerId, OfferedCompiler, Rule, MAX_OFFERED,
};

/// Most directory entries read from one search-path directory when listing compilers.
const MAX_DIR_ENTRIES: usize = 50_000;
/// Compilers probed at once when listing them.
const PROBES_AT_ONCE: usize = 4;

/// Why no compiler was picked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    /// The name is not allowed, or not installed (and nothing else matched).
    #[error(transparent)]
    Refused(#[from] CompilerRefusal),
    /// Allowed compilers exist, none with the client's identity.
    #[error("{0}")]
    NoMatch(String),
    /// The client's identity has a field longer than `proto::identity::MAX_ID_FIELD`.
    #[error("the job's compiler identity is too long")]
    Oversized,
}

/// This server's compilers: the allow-list, and their identities.
#[derive(Debug)]
pub struct Compilers {
    allow: AllowList,
    prober: Arc<Prober>,
    rule: Rule,
}

/// One allowed compiler found on the search path, probed or not.
#[derive(Debug, Clone)]
pub struct Found {
    /// The name a job asks for.
    pub name: String,
    /// Where it resolves.
    pub path: PathBuf,
    /// Its identity, or why it has none.
    pub id: Result<CompilerId, ProbeError>,
    /// Named in the `compilers` setting (a candidate for every job of its tool).
    pub extra: bool,
}

impl Compilers {
    /// The compilers of `allow`, matched by `rule` (with `rule.binaries` their binaries
    /// are hashed).
    pub fn new(allow: AllowList, rule: Rule) -> Compilers {
        let prober = Arc::new(Prober::new(ProbeOptions {
            hash_binaries: rule.binaries,
            search_path: Some(allow.search_path.clone()),
        }));
        Compilers {
            allow,
            prober,
            rule,
        }
    }

    /// The compilers `settings` allow and the rule they set, on `search_path` (`None`:
    /// this process's `$PATH`).
    pub fn from_settings(
        settings: &crate::config::ServerSettings,
        search_path: Option<std::ffi::OsString>,
    ) -> Compilers {
        let allow = AllowList::new(
            settings.default_compilers,
            settings.compilers.clone(),
            search_path,
        );
        Compilers::new(
            allow,
            Rule {
                configured: settings.match_configured,
                binaries: settings.strict,
            },
        )
    }

    /// The allow-list.
    pub fn allow(&self) -> &AllowList {
        &self.allow
    }

    /// The identity of the server's compiler at `path` (memoised per process, binaries
    /// hashed only with `strict`): what a job picked by [`Compilers::pick`] ran with,
    /// e.g. for a result-cache key.
    ///
    /// # Errors
    /// As `identity::Prober::identity`.
    pub async fn identity(&self, path: &std::path::Path) -> Result<CompilerId, ProbeError> {
        self.prober.identity(path).await
    }

    /// The names the `compilers` setting adds (an absolute entry by its file name).
    fn extra_names(&self) -> impl Iterator<Item = String> + '_ {
        self.allow
            .extra
            .iter()
            .map(|e| e.rsplit('/').next().unwrap_or(e).to_string())
            .filter(|n| !n.is_empty())
    }

    /// What must be equal.
    pub fn rule(&self) -> Rule {
        self.rule
    }

    /// The executable to run for a job's compiler `name`. Without `wanted` (an older
    /// client, a stock distcc one) that is the allow-list's answer for the name; with it,
    /// the first allowed candidate ([`candidate_names`], then extra names of the same
    /// tool) whose identity is `wanted`.
    ///
    /// # Errors
    /// [`PickError::Refused`] for a name that is not allowed (or not installed, with
    /// nothing else matching); [`PickError::NoMatch`] naming both versions.
    pub async fn pick(
        &self,
        name: &str,
        wanted: Option<&CompilerId>,
    ) -> Result<PathBuf, PickError> {
        let plain = self.allow.resolve(name);
        let Some(wanted) = wanted else {
            return Ok(plain?);
        };
        if !wanted.is_bounded() {
            return Err(PickError::Oversized);
        }
        if let Err(e @ CompilerRefusal::NotAllowed(_)) = &plain {
            return Err(PickError::Refused(e.clone()));
        }
        let tool = tool_of(name);
        let extra = self.extra_names().filter(|e| tool_of(e) == tool);
        let mut seen = BTreeSet::new();
        let mut here: Option<Result<CompilerId, ProbeError>> = None;
        for candidate in candidate_names(name, wanted).into_iter().chain(extra) {
            let Ok(path) = self.allow.resolve(&candidate) else {
                continue;
            };
            if !seen.insert(path.clone()) {
                continue;
            }
            let id = self.prober.identity(&path).await;
            if let Ok(id) = &id {
                if id.mismatch(wanted, self.rule).is_none() {
                    if candidate != name {
                        tracing::debug!("{name} {}: served by {}", wanted.label(), path.display());
                    }
                    return Ok(path);
                }
            }
            if candidate == name {
                here = Some(id);
            }
        }
        let asked = format!("no compiler matching {name} {}", wanted.label());
        let mine = match (here, plain) {
            (Some(Ok(id)), _) => {
                let note = id.mismatch(wanted, self.rule).map_or("", |m| m.note());
                format!("{name} here is {}{note}", id.label())
            }
            (Some(Err(e)), _) => format!("{name} here cannot be probed: {e}"),
            (None, Err(_)) => format!("{name} is not installed here"),
            (None, Ok(p)) => format!("{name} here is {}", p.display()),
        };
        Err(PickError::NoMatch(format!("{asked}; {mine}")))
    }

    /// Every allowed compiler name on the search path (the first of each name in PATH
    /// order, then absolute extra entries), sorted by name, with its identity.
    pub async fn found(&self) -> Vec<Found> {
        let mut names = BTreeSet::new();
        for dir in std::env::split_paths(&self.allow.search_path).filter(|d| d.is_absolute()) {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.take(MAX_DIR_ENTRIES).flatten() {
                if let Some(n) = entry.file_name().to_str() {
                    if allows(&self.allow, n) {
                        names.insert(n.to_string());
                    }
                }
            }
        }
        names.extend(self.extra_names());
        let extras: Arc<BTreeSet<String>> = Arc::new(self.extra_names().collect());
        // Probed a few at a time: a clang takes ~0.1 s per probe.
        let mut probes = tokio::task::JoinSet::new();
        let gate = Arc::new(tokio::sync::Semaphore::new(PROBES_AT_ONCE));
        for (i, name) in names.into_iter().take(MAX_OFFERED * 2).enumerate() {
            let Ok(path) = self.allow.resolve(&name) else {
                continue;
            };
            let (prober, gate, extras) = (self.prober.clone(), gate.clone(), extras.clone());
            probes.spawn(async move {
                let _permit = gate.acquire_owned().await;
                let id = prober.identity(&path).await;
                let extra = extras.contains(&name);
                (
                    i,
                    Found {
                        name,
                        path,
                        id,
                        extra,
                    },
                )
            });
        }
        let mut out = Vec::new();
        while let Some(done) = probes.join_next().await {
            out.extend(done.ok());
        }
        out.sort_by_key(|(i, _)| *i);
        out.into_iter().map(|(_, f)| f).collect()
    }

    /// The compilers [`Compilers::found`] that have an identity, at most [`MAX_OFFERED`].
    pub async fn offered(&self) -> Vec<OfferedCompiler> {
        self.found()
            .await
            .into_iter()
            .filter_map(|f| {
                Some(OfferedCompiler {
                    name: f.name,
                    path: f.path.display().to_string(),
                    id: f.id.ok()?,
                    extra: f.extra,
                })
            })
            .take(MAX_OFFERED)
            .collect()
    }
}

/// Whether `allow` takes the bare name `name` (without looking for it).
fn allows(allow: &AllowList, name: &str) -> bool {
    allow.extra.iter().any(|e| e == name)
        || (allow.default_compilers && crate::args::is_compiler_name(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    /// A fake gcc reporting `version`; it appends its name to `runs` when it compiles.
    fn fake(dir: &Path, name: &str, version: &str) -> PathBuf {
        let p = dir.join(name);
        let script = format!(
            "#!/bin/sh\ncase \"$1\" in\n-dumpfullversion) echo {version};;\n\
             -dumpmachine) echo x86_64-linux-gnu;;\n\
             -v) echo 'Configured with: ./configure' >&2; echo 'gcc version {version} (t)' >&2;;\n\
             *) exit 1;;\nesac\n"
        );
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn id(version: &str) -> CompilerId {
        CompilerId {
            version: version.into(),
            target: "x86_64-linux-gnu".into(),
            configured: "Configured with: ./configure".into(),
            binaries: None,
        }
    }

    fn compilers(dirs: &[&Path], extra: Vec<String>) -> Compilers {
        let path = std::env::join_paths(dirs).unwrap();
        Compilers::new(AllowList::new(true, extra, Some(path)), Rule::DEFAULT)
    }

    #[tokio::test]
    async fn a_versioned_name_serves_the_client_s_version() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        fake(&a, "gcc", "13.1.0");
        let gcc12 = fake(&b, "gcc-12", "12.2.0");
        let c = compilers(&[&a, &b], vec![]);
        assert_eq!(c.pick("gcc", Some(&id("12.2.0"))).await.unwrap(), gcc12);
        // cc of a gcc client: gcc-12 too.
        assert_eq!(c.pick("cc", Some(&id("12.2.0"))).await.unwrap(), gcc12);
        assert_eq!(
            c.pick("gcc", Some(&id("13.1.0"))).await.unwrap(),
            a.join("gcc")
        );
        // Without an identity: the name, as before.
        assert_eq!(c.pick("gcc", None).await.unwrap(), a.join("gcc"));
        let err = c.pick("gcc", Some(&id("11.4.0"))).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "no compiler matching gcc 11.4.0 (x86_64-linux-gnu); \
             gcc here is 13.1.0 (x86_64-linux-gnu)"
        );
        let err = c.pick("g++", Some(&id("12.2.0"))).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "no compiler matching g++ 12.2.0 (x86_64-linux-gnu); g++ is not installed here"
        );
        let err = c.pick("rm", Some(&id("12.2.0"))).await.unwrap_err();
        assert!(matches!(
            err,
            PickError::Refused(CompilerRefusal::NotAllowed(_))
        ));
    }

    #[tokio::test]
    async fn configuration_and_strict_hashes_count() {
        let t = tempfile::tempdir().unwrap();
        fake(t.path(), "gcc", "12.2.0");
        let c = compilers(&[t.path()], vec![]);
        let mut other = id("12.2.0");
        other.configured = "Configured with: ./configure --other".into();
        let err = c.pick("gcc", Some(&other)).await.unwrap_err();
        assert!(
            err.to_string()
                .ends_with("12.2.0 (x86_64-linux-gnu), configured differently"),
            "{err}"
        );
        let path = std::env::join_paths([t.path()]).unwrap();
        let strict = Compilers::new(AllowList::new(true, vec![], Some(path)), Rule::STRICT);
        let err = strict.pick("gcc", Some(&id("12.2.0"))).await.unwrap_err();
        assert!(
            err.to_string().ends_with("with other binaries (strict)"),
            "{err}"
        );
        let here = strict.found().await[0].id.clone().unwrap();
        assert!(here.binaries.is_some());
        assert_eq!(
            strict.pick("gcc", Some(&here)).await.unwrap(),
            t.path().join("gcc")
        );
    }

    #[tokio::test]
    async fn extra_names_of_the_same_tool_are_candidates() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("opt"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        fake(&a, "gcc", "13.1.0");
        let pinned = fake(&b, "my-gcc", "12.2.0");
        let c = compilers(&[&a], vec![pinned.display().to_string()]);
        assert_eq!(c.pick("gcc", Some(&id("12.2.0"))).await.unwrap(), pinned);
        let listed: Vec<(String, String, bool)> = c
            .offered()
            .await
            .into_iter()
            .map(|o| (o.name, o.id.version, o.extra))
            .collect();
        assert_eq!(
            listed,
            [
                ("gcc".to_string(), "13.1.0".to_string(), false),
                ("my-gcc".to_string(), "12.2.0".to_string(), true)
            ]
        );
    }
}
