//! File-system locations (support for every stage): the config files read by [`crate::config`],
//! the distcc hosts file read through [`crate::hosts::resolve`], and the private runtime directory
//! holding the mux socket used by `wrapper::mux_client` and `mux::listener`.
//!
//! Everything is computed from an injected environment lookup so tests can point `HOME` and the
//! XDG variables at a temporary directory; [`directories::BaseDirs`] is only consulted when `HOME`
//! is unset. [`ensure_private_dir`] is the one function here that touches the disk.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The system-wide server config, read before the user's (see [`crate::config::load_server`]).
pub const SYSTEM_SERVER_CONFIG: &str = "/etc/hoardcc/server.toml";

/// Where hoardcc keeps its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The user's home directory, if known.
    pub home: Option<PathBuf>,
    /// Config directory: `$HOARDCC_CONFIG_DIR`, else `$XDG_CONFIG_HOME/hoardcc`, else
    /// `~/.config/hoardcc`.
    pub config_dir: PathBuf,
    /// Private runtime directory: `$XDG_RUNTIME_DIR/hoardcc`, else `/tmp/hoardcc-<uid>`.
    pub runtime_dir: PathBuf,
    /// State directory (logs): `$XDG_STATE_HOME/hoardcc`, else `~/.local/state/hoardcc`, else
    /// `<runtime_dir>/state`.
    pub state_dir: PathBuf,
}

/// An environment variable that is set, non-empty, and (for XDG variables, as the XDG base
/// directory spec requires) an absolute path.
fn abs_var(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<PathBuf> {
    env(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

impl Paths {
    /// Compute the locations from `HOME`, `XDG_CONFIG_HOME`, `XDG_RUNTIME_DIR`,
    /// `XDG_STATE_HOME` and the `HOARDCC_CONFIG_DIR` override, read through `env`.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Paths {
        let home = env("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .or_else(|| directories::BaseDirs::new().map(|b| b.home_dir().to_path_buf()));
        let uid = nix::unistd::getuid().as_raw();
        let runtime_dir = abs_var(env, "XDG_RUNTIME_DIR")
            .map(|d| d.join("hoardcc"))
            .unwrap_or_else(|| PathBuf::from(format!("/tmp/hoardcc-{uid}")));
        let config_dir = env("HOARDCC_CONFIG_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| abs_var(env, "XDG_CONFIG_HOME").map(|d| d.join("hoardcc")))
            .or_else(|| home.as_ref().map(|h| h.join(".config").join("hoardcc")))
            .unwrap_or_else(|| runtime_dir.join("config"));
        let state_dir = abs_var(env, "XDG_STATE_HOME")
            .map(|d| d.join("hoardcc"))
            .or_else(|| {
                home.as_ref()
                    .map(|h| h.join(".local").join("state").join("hoardcc"))
            })
            .unwrap_or_else(|| runtime_dir.join("state"));
        Paths {
            home,
            config_dir,
            runtime_dir,
            state_dir,
        }
    }

    /// The client config file, `<config_dir>/config.toml`.
    pub fn config_file(&self) -> PathBuf {
        self.config_dir.join("config.toml")
    }

    /// The user's server config file, `<config_dir>/server.toml`.
    pub fn server_config_file(&self) -> PathBuf {
        self.config_dir.join("server.toml")
    }

    /// The mux's Unix socket, `<runtime_dir>/mux.sock`.
    pub fn mux_socket(&self) -> PathBuf {
        self.runtime_dir.join("mux.sock")
    }

    /// The mux's log file, `<state_dir>/mux.log`.
    pub fn mux_log(&self) -> PathBuf {
        self.state_dir.join("mux.log")
    }

    /// The user's OpenSSH directory, `~/.ssh` (config, known_hosts, identities).
    pub fn ssh_dir(&self) -> Option<PathBuf> {
        self.home.as_ref().map(|h| h.join(".ssh"))
    }

    /// The user's distcc hosts file: `$DISTCC_DIR/hosts` when `DISTCC_DIR` is set and non-empty,
    /// else `~/.distcc/hosts` (distcc `dcc_get_top_dir`).
    pub fn distcc_hosts_file(&self, env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
        match env("DISTCC_DIR").filter(|d| !d.is_empty()) {
            Some(dir) => Some(PathBuf::from(dir).join("hosts")),
            None => self.home.as_ref().map(|h| h.join(".distcc").join("hosts")),
        }
    }
}

/// Create `dir` (and missing parents) with mode 0700, and refuse it if it already exists as
/// something other than a real directory owned by the current user with no group/other
/// permissions. A symlink is refused, not followed: `/tmp/hoardcc-<uid>` is guessable.
///
/// # Errors
/// The creation error, or `PermissionDenied` naming the directory and what is wrong with it.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        // `recursive(true)` succeeds on an existing directory; an existing non-directory
        // shows up here and is reported below with a clearer message.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot create {}: {e}", dir.display()),
            ))
        }
    }
    let meta = std::fs::symlink_metadata(dir)?;
    let refuse = |why: String| {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("refusing to use {}: {why}", dir.display()),
        ))
    };
    if meta.file_type().is_symlink() {
        return refuse("it is a symbolic link".to_string());
    }
    if !meta.is_dir() {
        return refuse("it is not a directory".to_string());
    }
    let uid = nix::unistd::getuid().as_raw();
    if meta.uid() != uid {
        return refuse(format!("owned by uid {}, not {uid}", meta.uid()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return refuse(format!(
            "mode {mode:03o} gives access to group or others (chmod 700 it)"
        ));
    }
    Ok(())
}

/// Whether `p` is a regular file with an execute bit (following symlinks).
pub fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The environment lookup the pure modules take (`&dyn Fn(&str) -> Option<String>`), made
/// from a fixed list, for their tests.
#[cfg(test)]
pub(crate) mod test_env {
    use std::collections::HashMap;

    pub(crate) fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::test_env::env_of;
    use super::*;

    #[test]
    fn defaults_from_home() {
        let p = Paths::from_env(&env_of(&[("HOME", "/h")]));
        let uid = nix::unistd::getuid().as_raw();
        assert_eq!(p.home, Some(PathBuf::from("/h")));
        assert_eq!(p.config_dir, PathBuf::from("/h/.config/hoardcc"));
        assert_eq!(
            p.config_file(),
            PathBuf::from("/h/.config/hoardcc/config.toml")
        );
        assert_eq!(
            p.server_config_file(),
            PathBuf::from("/h/.config/hoardcc/server.toml")
        );
        assert_eq!(p.runtime_dir, PathBuf::from(format!("/tmp/hoardcc-{uid}")));
        assert_eq!(
            p.mux_socket(),
            PathBuf::from(format!("/tmp/hoardcc-{uid}/mux.sock"))
        );
        assert_eq!(p.state_dir, PathBuf::from("/h/.local/state/hoardcc"));
        assert_eq!(
            p.mux_log(),
            PathBuf::from("/h/.local/state/hoardcc/mux.log")
        );
        assert_eq!(p.ssh_dir(), Some(PathBuf::from("/h/.ssh")));
    }

    #[test]
    fn xdg_variables_and_override() {
        let env = env_of(&[
            ("HOME", "/h"),
            ("XDG_CONFIG_HOME", "/x/cfg"),
            ("XDG_RUNTIME_DIR", "/run/user/7"),
            ("XDG_STATE_HOME", "/x/state"),
        ]);
        let p = Paths::from_env(&env);
        assert_eq!(p.config_dir, PathBuf::from("/x/cfg/hoardcc"));
        assert_eq!(p.runtime_dir, PathBuf::from("/run/user/7/hoardcc"));
        assert_eq!(
            p.mux_socket(),
            PathBuf::from("/run/user/7/hoardcc/mux.sock")
        );
        assert_eq!(p.state_dir, PathBuf::from("/x/state/hoardcc"));

        let env = env_of(&[
            ("HOME", "/h"),
            ("XDG_CONFIG_HOME", "/x/cfg"),
            ("HOARDCC_CONFIG_DIR", "/custom"),
        ]);
        assert_eq!(Paths::from_env(&env).config_dir, PathBuf::from("/custom"));
    }

    #[test]
    fn relative_or_empty_xdg_values_are_ignored() {
        let env = env_of(&[
            ("HOME", "/h"),
            ("XDG_CONFIG_HOME", "relative"),
            ("XDG_RUNTIME_DIR", ""),
            ("HOARDCC_CONFIG_DIR", ""),
        ]);
        let p = Paths::from_env(&env);
        assert_eq!(p.config_dir, PathBuf::from("/h/.config/hoardcc"));
        assert!(p.runtime_dir.starts_with("/tmp"));
    }

    #[test]
    fn distcc_hosts_file_honours_distcc_dir() {
        let p = Paths::from_env(&env_of(&[("HOME", "/h")]));
        assert_eq!(
            p.distcc_hosts_file(&env_of(&[])),
            Some(PathBuf::from("/h/.distcc/hosts"))
        );
        assert_eq!(
            p.distcc_hosts_file(&env_of(&[("DISTCC_DIR", "/dd")])),
            Some(PathBuf::from("/dd/hosts"))
        );
        assert_eq!(
            p.distcc_hosts_file(&env_of(&[("DISTCC_DIR", "")])),
            Some(PathBuf::from("/h/.distcc/hosts"))
        );
    }

    #[test]
    fn private_dir_created_0700() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a").join("rt");
        ensure_private_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // Idempotent.
        ensure_private_dir(&dir).unwrap();
    }

    #[test]
    fn private_dir_refuses_open_permissions() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("rt");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
        let err = ensure_private_dir(&dir).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(err.to_string().contains("750"), "{err}");
        assert!(
            err.to_string().contains(&dir.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn private_dir_refuses_symlink_and_file() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = ensure_private_dir(&link).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");

        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let err = ensure_private_dir(&file).unwrap_err();
        assert!(
            err.to_string().contains(&file.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn private_dir_refuses_other_owner() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, owner) = if nix::unistd::getuid().is_root() {
            // As root, hand a directory to another uid.
            let dir = tmp.path().join("theirs");
            std::fs::create_dir(&dir).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
            std::os::unix::fs::chown(&dir, Some(4242), Some(4242)).unwrap();
            (dir, 4242)
        } else {
            // As a user, "/" is owned by root.
            (PathBuf::from("/"), 0)
        };
        let err = ensure_private_dir(&dir).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(
            err.to_string().contains(&format!("owned by uid {owner}")),
            "{err}"
        );
    }
}
