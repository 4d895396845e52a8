//! Server stage, `hoardcc serve --check`: tells an admin (or `hoardcc install-server`)
//! whether this server can take jobs, without a client: the configuration loads, the
//! sandbox can contain a compiler on this kernel, job directories can be made, the slot
//! directory is usable, and which compilers it offers (name, path, version, target, from
//! `subsystem::compilers`). One line per check, ✓ or ✗; `--json` prints the same as one
//! object. Exits non-zero when the server is unusable. Neighbours: `main` (dispatch),
//! `config`, `sandbox`, `slots`, `workdir`, `compilers`.

use serde::Serialize;

use super::compilers::{Compilers, Found};
use super::{sandbox, slots, workdir};
use crate::config::ServerSettings;
use crate::paths::{Paths, SYSTEM_SERVER_CONFIG};

/// One check's outcome.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Check {
    /// What was checked: `config`, `sandbox`, `tmpdir`, `slots`, `compilers`.
    pub what: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// What was found, or what is wrong.
    pub detail: String,
}

/// One compiler as `--check` reports it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub path: String,
    /// Empty when it could not be probed (`error` says why).
    pub version: String,
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Report {
    /// `hoardcc 0.1.0 on HOST`.
    pub agent: String,
    /// True when every check passed.
    pub ok: bool,
    pub checks: Vec<Check>,
    pub compilers: Vec<Listed>,
}

impl Report {
    /// The report as text: one line per check, then the compilers as a table.
    pub fn text(&self) -> String {
        let mut out = format!("{}\n", self.agent);
        for c in &self.checks {
            let mark = if c.ok { '✓' } else { '✗' };
            out.push_str(&format!("{mark} {}: {}\n", c.what, c.detail));
        }
        let w =
            |f: fn(&Listed) -> &str| self.compilers.iter().map(|c| f(c).len()).max().unwrap_or(0);
        let (wn, wp, wv) = (w(|c| &c.name), w(|c| &c.path), w(|c| &c.version));
        for c in &self.compilers {
            match &c.error {
                None => out.push_str(&format!(
                    "  {:wn$}  {:wp$}  {:wv$}  {}\n",
                    c.name, c.path, c.version, c.target
                )),
                Some(e) => out.push_str(&format!("  {:wn$}  {:wp$}  ✗ {e}\n", c.name, c.path)),
            }
        }
        out
    }
}

/// Runs every check against `settings` (loaded from `files`, or the load error), with
/// `search_path` for the compilers (`None`: `$PATH`).
pub async fn run(
    settings: Result<(ServerSettings, String), String>,
    search_path: Option<std::ffi::OsString>,
    slot_dir: &std::path::Path,
) -> Report {
    let agent = format!(
        "hoardcc {} on {}",
        env!("CARGO_PKG_VERSION"),
        super::hostname()
    );
    let mut checks = Vec::new();
    let settings = match settings {
        Ok((s, files)) => {
            checks.push(Check {
                what: "config",
                ok: true,
                detail: files,
            });
            s
        }
        Err(e) => {
            checks.push(Check {
                what: "config",
                ok: false,
                detail: e,
            });
            return Report {
                agent,
                ok: false,
                checks,
                compilers: Vec::new(),
            };
        }
    };
    let sandbox = sandbox::Sandbox::new(&settings);
    checks.push(match sandbox.check() {
        Ok(()) if settings.sandbox == crate::config::SandboxMode::Off => Check {
            what: "sandbox",
            ok: true,
            detail: "off (sandbox = \"off\"): resource limits only".into(),
        },
        Ok(()) => Check {
            what: "sandbox",
            ok: true,
            detail: format!("Landlock ABI {}", sandbox::kernel_abi()),
        },
        Err(e) => Check {
            what: "sandbox",
            ok: false,
            detail: e.to_string(),
        },
    });
    let tmp = settings.tmpdir.clone().unwrap_or_else(std::env::temp_dir);
    checks.push(
        match workdir::private_dir(settings.tmpdir.as_deref(), "hoardcc-check-") {
            Ok(_dir) => Check {
                what: "tmpdir",
                ok: true,
                detail: format!("job directories in {}", tmp.display()),
            },
            Err(e) => Check {
                what: "tmpdir",
                ok: false,
                detail: format!("cannot make a job directory in {}: {e}", tmp.display()),
            },
        },
    );
    let limit = slots::host_limit(settings.max_jobs);
    checks.push(match slots::open_dir(slot_dir) {
        Ok((_fd, scope)) => Check {
            what: "slots",
            ok: true,
            detail: format!(
                "{limit} in {} ({})",
                slot_dir.display(),
                match scope {
                    slots::Scope::Private => "this user's",
                    slots::Scope::Shared => "shared by all users",
                }
            ),
        },
        Err(e) => Check {
            what: "slots",
            ok: false,
            detail: e.to_string(),
        },
    });
    let compilers = Compilers::from_settings(&settings, search_path);
    let found = compilers.found().await;
    let usable = found.iter().filter(|f| f.id.is_ok()).count();
    let rule = compilers.rule();
    checks.push(Check {
        what: "compilers",
        ok: usable > 0,
        detail: if usable == 0 {
            "none allowed and installed on the search path".into()
        } else {
            format!(
                "{usable} offered (matched by version, target{}{})",
                if rule.configured {
                    ", configuration"
                } else {
                    ""
                },
                if rule.binaries {
                    " and binary hashes (strict)"
                } else {
                    ""
                }
            )
        },
    });
    let compilers = found.into_iter().map(listed).collect();
    Report {
        agent,
        ok: checks.iter().all(|c| c.ok),
        checks,
        compilers,
    }
}

fn listed(f: Found) -> Listed {
    let (version, target, error) = match f.id {
        Ok(id) => (id.version, id.target, None),
        Err(e) => (String::new(), String::new(), Some(e.to_string())),
    };
    Listed {
        name: f.name,
        path: f.path.display().to_string(),
        version,
        target,
        error,
    }
}

/// The server config files that exist, for the report.
fn config_files(paths: &Paths, env: &dyn Fn(&str) -> Option<String>) -> String {
    if let Some(named) = env("HOARDCC_SERVER_CONFIG").filter(|v| !v.trim().is_empty()) {
        return format!("{named} (HOARDCC_SERVER_CONFIG)");
    }
    let files: Vec<String> = [SYSTEM_SERVER_CONFIG.into(), paths.server_config_file()]
        .into_iter()
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if files.is_empty() {
        "defaults (no server.toml)".into()
    } else {
        files.join(", ")
    }
}

/// `hoardcc serve --check [--json]`: prints the report; exit 0 when usable.
pub fn main(json: bool) -> std::process::ExitCode {
    let env = |k: &str| std::env::var(k).ok();
    let paths = Paths::from_env(&env);
    let settings = crate::config::load_server(&paths, &env)
        .map(|mut c| {
            // The job directories' place as `serve` picks it.
            if c.server.tmpdir.is_none() {
                c.server.tmpdir = workdir::default_tmpdir();
            }
            (c.server, config_files(&paths, &env))
        })
        .map_err(|e| e.to_string());
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hoardcc serve --check: cannot start the runtime: {e}");
            return crate::exit::ExitCode::DistccFailed.into();
        }
    };
    let report = rt.block_on(run(settings, None, &slots::slot_dir_from_env()));
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_else(|_| "{}".into())
        );
    } else {
        print!("{}", report.text());
    }
    if report.ok {
        std::process::ExitCode::SUCCESS
    } else if report.checks.first().is_some_and(|c| !c.ok) {
        crate::exit::ExitCode::BadArguments.into()
    } else {
        crate::exit::ExitCode::DistccFailed.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn reports_compilers_and_fails_without_any() {
        let t = tempfile::tempdir().unwrap();
        let bin = t.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let gcc = bin.join("gcc-77");
        std::fs::write(
            &gcc,
            "#!/bin/sh\ncase \"$1\" in -dumpfullversion) echo 77.1.0;; -dumpmachine) echo t-linux;; \
             -v) echo 'gcc version 77.1.0' >&2;; esac\n",
        )
        .unwrap();
        std::fs::set_permissions(&gcc, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(bin.join("cc"), "#!/bin/sh\nexit 1\n").unwrap();
        std::fs::set_permissions(bin.join("cc"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let settings = ServerSettings {
            sandbox: crate::config::SandboxMode::Off,
            tmpdir: Some(t.path().to_path_buf()),
            ..ServerSettings::default()
        };
        let slots = t.path().join("slots");
        let r = run(
            Ok((settings.clone(), "defaults".into())),
            Some(bin.as_os_str().to_owned()),
            &slots,
        )
        .await;
        assert!(r.ok, "{}", r.text());
        assert_eq!(r.compilers.len(), 2);
        assert_eq!(r.compilers[0].name, "cc");
        assert!(r.compilers[0].error.is_some());
        assert_eq!(
            (
                r.compilers[1].name.as_str(),
                r.compilers[1].version.as_str()
            ),
            ("gcc-77", "77.1.0")
        );
        let text = r.text();
        assert!(text.contains("✓ compilers: 1 offered"), "{text}");
        assert!(
            text.contains(&format!("gcc-77  {}  77.1.0  t-linux", gcc.display())),
            "{text}"
        );

        let empty = t.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let r = run(
            Ok((settings, "defaults".into())),
            Some(empty.into_os_string()),
            &slots,
        )
        .await;
        assert!(!r.ok);
        assert!(r.text().contains("✗ compilers: none"), "{}", r.text());

        let r = run(Err("bad key".into()), None, &slots).await;
        assert!(!r.ok);
        assert_eq!(r.checks.len(), 1);
    }
}
