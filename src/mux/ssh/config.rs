//! Stage: connections, destination resolution. Before [`super::Connection::connect`]
//! dials a host from the host list, [`destination`] (the one reader of the file) turns the entry's `user@alias` into what
//! OpenSSH would dial: HostName, Port, User, IdentityFile, ProxyJump,
//! UserKnownHostsFile, ServerAliveInterval and ServerAliveCountMax from `~/.ssh/config`,
//! parsed by the `ssh2-config` crate (which
//! handles `Include`, `Key=Value`, tabs, globs and negation; see notes/russh.md §6).
//! ProxyJump hops resolve here too. Neighbours: `hosts` (gives alias and user),
//! `mux::ssh` (consumes [`Destination`]), `mux::pool` and `mux::lane` (callers).

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ssh2_config::{ParseRule, SshConfig};

use super::{SshError, SshSettings};

/// Where and as whom to connect, fully resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The name as written in the host list (the `Host` pattern key).
    pub alias: String,
    /// The name or address to dial (HostName, else the alias).
    pub hostname: String,
    /// TCP port (Port, else 22).
    pub port: u16,
    /// Login user: the host-list entry's user, else User, else the local user.
    pub user: String,
    /// IdentityFile entries in config order, `~` expanded.
    pub identity_files: Vec<PathBuf>,
    /// ProxyJump value (comma list of hops), `None` when unset or `none`.
    pub proxy_jump: Option<String>,
    /// UserKnownHostsFile entries, `~` expanded (empty when unset or `none`).
    pub user_known_hosts: Vec<PathBuf>,
    /// `IdentitiesOnly yes`: only the IdentityFile keys (agent keys only when they match
    /// one), and no default identity files when IdentityFile is set.
    pub identities_only: bool,
    /// ServerAliveInterval, when set (zero: no keepalives, as in OpenSSH). Unset: the
    /// `[ssh]` settings apply (see [`super::Keepalive::for_destination`]).
    pub server_alive_interval: Option<Duration>,
    /// ServerAliveCountMax, when set.
    pub server_alive_count_max: Option<u32>,
}

/// Resolve `alias` like OpenSSH does. `user` is the host-list entry's user and wins over
/// the config's `User`. `config_text` is the content of `~/.ssh/config` (`None` when the
/// file is missing: defaults apply); relative `Include` paths resolve under `home/.ssh`.
///
/// # Errors
/// [`SshError::Config`] when the config cannot be parsed (or an `Include` cycles).
pub fn resolve(
    alias: &str,
    user: Option<&str>,
    config_text: Option<&str>,
    home: &Path,
    local_user: &str,
) -> Result<Destination, SshError> {
    let params = match config_text {
        Some(text) => {
            let mut reader = BufReader::new(text.as_bytes());
            SshConfig::default()
                .home_dir(home)
                .parse(
                    &mut reader,
                    ParseRule::ALLOW_UNKNOWN_FIELDS | ParseRule::ALLOW_UNSUPPORTED_FIELDS,
                )
                .map_err(|e| SshError::Config(format!("~/.ssh/config: {e}")))?
                .query(alias)
        }
        None => SshConfig::default().query(alias),
    };
    let user = user
        .map(str::to_string)
        .or_else(|| params.user.clone())
        .unwrap_or_else(|| local_user.to_string());
    let hostname = match &params.host_name {
        Some(h) => expand_tokens(h, alias, alias, &user, local_user, home),
        None => alias.to_string(),
    };
    let port = params.port.unwrap_or(22);
    let expand_path = |p: &str| -> PathBuf {
        let p = expand_tokens(p, alias, &hostname, &user, local_user, home);
        expand_tilde(&p, home)
    };
    let identity_files = params
        .identity_file
        .iter()
        .flatten()
        .map(|p| expand_path(&p.to_string_lossy()))
        .collect();
    let proxy_jump = params
        .proxy_jump
        .as_ref()
        .map(|hops| hops.join(","))
        .filter(|j| !j.is_empty() && !j.eq_ignore_ascii_case("none"));
    let user_known_hosts = params
        .unsupported_fields
        .get("userknownhostsfile")
        .or_else(|| params.ignored_fields.get("userknownhostsfile"))
        .map(|files| {
            files
                .iter()
                .filter(|f| !f.eq_ignore_ascii_case("none"))
                .map(|f| expand_path(f))
                .collect()
        })
        .unwrap_or_default();
    let identities_only = params
        .unsupported_fields
        .get("identitiesonly")
        .or_else(|| params.ignored_fields.get("identitiesonly"))
        .and_then(|v| v.first())
        .is_some_and(|v| v.eq_ignore_ascii_case("yes"));
    // ssh2-config parses ServerAliveInterval but leaves ServerAliveCountMax as raw tokens.
    let server_alive_count_max = match params
        .unsupported_fields
        .get("serveralivecountmax")
        .or_else(|| params.ignored_fields.get("serveralivecountmax"))
        .and_then(|v| v.first())
    {
        None => None,
        Some(v) => Some(v.parse::<u32>().map_err(|_| {
            SshError::Config(format!(
                "~/.ssh/config: ServerAliveCountMax {v:?} is not a number"
            ))
        })?),
    };
    Ok(Destination {
        alias: alias.to_string(),
        hostname,
        port,
        user,
        identity_files,
        proxy_jump,
        user_known_hosts,
        identities_only,
        server_alive_interval: params.server_alive_interval,
        server_alive_count_max,
    })
}

/// `alias` (with the host list's `user`) resolved through `settings.home/.ssh/config`:
/// the one reader of that file. A missing file means OpenSSH's defaults.
///
/// # Errors
/// As [`resolve`].
pub fn destination(
    alias: &str,
    user: Option<&str>,
    settings: &SshSettings,
) -> Result<Destination, SshError> {
    let text = std::fs::read_to_string(settings.home.join(".ssh").join("config")).ok();
    resolve(
        alias,
        user,
        text.as_deref(),
        &settings.home,
        &settings.local_user,
    )
}

/// Split a ProxyJump hop `[ssh://][user@]host[:port]` (host may be `[v6]`) into its parts;
/// `None` when it does not parse.
pub(super) fn parse_hop(hop: &str) -> Option<(Option<&str>, &str, Option<u16>)> {
    let hop = hop.trim();
    let hop = hop.strip_prefix("ssh://").unwrap_or(hop);
    let (user, rest) = match hop.rsplit_once('@') {
        Some((u, r)) if !u.is_empty() => (Some(u), r),
        Some(_) => return None,
        None => (None, hop),
    };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?.parse().ok()?)),
        }
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h, Some(p.parse().ok()?)),
            None => (rest, None),
        }
    };
    if host.is_empty() || host.contains([' ', '/', ':']) && !rest.starts_with('[') {
        return None;
    }
    Some((user, host, port))
}

/// Resolve one ProxyJump hop through the ssh config; `None` when the spec does not parse.
pub(super) fn resolve_hop(
    hop: &str,
    settings: &SshSettings,
) -> Option<Result<Destination, SshError>> {
    let (user, host, port) = parse_hop(hop)?;
    Some(destination(host, user, settings).map(|mut d| {
        if let Some(p) = port {
            d.port = p;
        }
        d.proxy_jump = None;
        d
    }))
}

/// Expand the ssh_config `%` tokens we can know here: `%%`, `%h` (host name), `%n` (alias),
/// `%r` (remote user), `%u` (local user), `%d` (home). Unknown tokens stay as written.
fn expand_tokens(
    s: &str,
    alias: &str,
    host: &str,
    user: &str,
    local_user: &str,
    home: &Path,
) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('h') => out.push_str(host),
            Some('n') => out.push_str(alias),
            Some('r') => out.push_str(user),
            Some('u') => out.push_str(local_user),
            Some('d') => out.push_str(&home.to_string_lossy()),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// `~` or `~/x` against `home`; anything else unchanged.
fn expand_tilde(p: &str, home: &Path) -> PathBuf {
    if p == "~" {
        home.to_path_buf()
    } else if let Some(rest) = p.strip_prefix("~/") {
        home.join(rest)
    } else {
        PathBuf::from(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home() -> PathBuf {
        PathBuf::from("/home/alice")
    }

    fn res(alias: &str, user: Option<&str>, text: &str) -> Destination {
        resolve(alias, user, Some(text), &home(), "alice").expect("resolves")
    }

    #[test]
    fn missing_config_gives_defaults() {
        let d = resolve("build1", None, None, &home(), "alice").unwrap();
        assert_eq!(
            d,
            Destination {
                alias: "build1".into(),
                hostname: "build1".into(),
                port: 22,
                user: "alice".into(),
                identity_files: vec![],
                proxy_jump: None,
                user_known_hosts: vec![],
                identities_only: false,
                server_alive_interval: None,
                server_alive_count_max: None,
            }
        );
    }

    #[test]
    fn identities_only_is_read() {
        let text = "Host strict\n  IdentitiesOnly yes\n  IdentityFile ~/.ssh/k\nHost *\n  IdentitiesOnly no\n";
        assert!(res("strict", None, text).identities_only);
        assert!(!res("other", None, text).identities_only);
        assert!(!res("x", None, "Host x\n  HostName y\n").identities_only);
    }

    #[test]
    fn server_alive_settings() {
        let text = "Host fast\n  ServerAliveInterval 2\n  ServerAliveCountMax 5\nHost off\n  ServerAliveInterval 0\nHost *\n  ServerAliveCountMax=4\n";
        let fast = res("fast", None, text);
        assert_eq!(fast.server_alive_interval, Some(Duration::from_secs(2)));
        assert_eq!(fast.server_alive_count_max, Some(5));
        let off = res("off", None, text);
        assert_eq!(off.server_alive_interval, Some(Duration::ZERO));
        assert_eq!(off.server_alive_count_max, Some(4));
        let other = res("other", None, "Host x\n  ServerAliveInterval 9\n");
        assert_eq!(other.server_alive_interval, None);
        assert_eq!(other.server_alive_count_max, None);
        let err = resolve(
            "h",
            None,
            Some("ServerAliveCountMax many\n"),
            &home(),
            "alice",
        )
        .unwrap_err();
        assert!(matches!(err, SshError::Config(_)), "{err:?}");
        let err = resolve(
            "h",
            None,
            Some("ServerAliveInterval soon\n"),
            &home(),
            "alice",
        )
        .unwrap_err();
        assert!(matches!(err, SshError::Config(_)), "{err:?}");
    }

    #[test]
    fn hostname_user_port_identity() {
        let text = "Host build1\n  HostName 10.0.0.5\n  User bob\n  Port 2222\n  IdentityFile ~/.ssh/build_key\n\nHost *\n  User nobody\n  IdentityFile ~/.ssh/id_common\n";
        let d = res("build1", None, text);
        assert_eq!(d.hostname, "10.0.0.5");
        assert_eq!(d.user, "bob");
        assert_eq!(d.port, 2222);
        assert_eq!(
            d.identity_files,
            vec![
                PathBuf::from("/home/alice/.ssh/build_key"),
                PathBuf::from("/home/alice/.ssh/id_common")
            ]
        );
        let other = res("other", None, text);
        assert_eq!(other.hostname, "other");
        assert_eq!(other.user, "nobody");
        assert_eq!(other.port, 22);
    }

    #[test]
    fn entry_user_beats_config_user() {
        let text = "Host build1\n  User bob\n";
        assert_eq!(res("build1", Some("carol"), text).user, "carol");
        assert_eq!(res("build1", None, text).user, "bob");
    }

    #[test]
    fn key_equals_value_tabs_and_globals() {
        let text = "Port=2200\nHost *.farm !bad.farm\n\tHostName=%h.example.org\n\tUser\tfarmer\n";
        let d = res("a.farm", None, text);
        assert_eq!(d.hostname, "a.farm.example.org");
        assert_eq!(d.user, "farmer");
        assert_eq!(d.port, 2200);
        let bad = res("bad.farm", None, text);
        assert_eq!(bad.hostname, "bad.farm");
        assert_eq!(bad.user, "alice");
    }

    #[test]
    fn include_relative_to_dot_ssh() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".ssh/conf.d")).unwrap();
        std::fs::write(
            dir.path().join(".ssh/conf.d/farm.conf"),
            "Host inc1\n  HostName 192.0.2.7\n  Port 2201\n  IdentityFile ~/.ssh/inc_key\n",
        )
        .unwrap();
        let text = "Include conf.d/*.conf\nHost *\n  User root\n";
        let d = resolve("inc1", None, Some(text), dir.path(), "alice").unwrap();
        assert_eq!(d.hostname, "192.0.2.7");
        assert_eq!(d.port, 2201);
        assert_eq!(d.user, "root");
        assert_eq!(d.identity_files, vec![dir.path().join(".ssh/inc_key")]);
    }

    #[test]
    fn proxy_jump_detected() {
        let text = "Host inner\n  ProxyJump bastion\nHost direct\n  ProxyJump none\n";
        assert_eq!(
            res("inner", None, text).proxy_jump.as_deref(),
            Some("bastion")
        );
        assert_eq!(res("direct", None, text).proxy_jump, None);
        assert_eq!(res("elsewhere", None, text).proxy_jump, None);
    }

    #[test]
    fn user_known_hosts_file() {
        let text = "Host h\n  UserKnownHostsFile ~/.ssh/kh_a /etc/kh_b\nHost n\n  UserKnownHostsFile none\n";
        assert_eq!(
            res("h", None, text).user_known_hosts,
            vec![
                PathBuf::from("/home/alice/.ssh/kh_a"),
                PathBuf::from("/etc/kh_b")
            ]
        );
        assert!(res("n", None, text).user_known_hosts.is_empty());
    }

    #[test]
    fn bad_config_is_an_error() {
        let err = resolve("h", None, Some("Port notanumber\n"), &home(), "alice").unwrap_err();
        assert!(matches!(err, SshError::Config(_)), "{err:?}");
    }
}
