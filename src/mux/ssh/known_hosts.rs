//! Stage: connections, host key verification. The russh handler `Verifier` (used by
//! `mux::ssh`'s `Connection::connect`) calls [`check`] with the key the server presented
//! during key exchange; the verdict decides whether the connection proceeds (never trust
//! on first use) and becomes an `SshError` (`mux::ssh::error`) when it does not. This is our own
//! reader of OpenSSH's `known_hosts` format because russh's helper misses wildcards,
//! tab separators, `@revoked` and miscounts line numbers (see notes/russh.md §2).
//!
//! Format (sshd(8) "SSH_KNOWN_HOSTS FILE FORMAT"): `[@marker] hostpatterns keytype base64 [comment]`,
//! fields separated by spaces or tabs. Host patterns are a comma list of names with `*`/`?`
//! wildcards and `!negation`, written `[host]:port` for ports other than 22, or a single
//! hashed entry `|1|base64(salt)|base64(HMAC-SHA1(salt, name))`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use data_encoding::BASE64;
use hmac::{Hmac, KeyInit, Mac};
use russh::client;
use russh::keys::{HashAlg, PublicKey, PublicKeyOrCertificate};
use sha1::Sha1;

use super::SshError;

/// What the known_hosts files say about a host's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyStatus {
    /// A line for this host holds exactly this key.
    Known,
    /// No line for this host holds a key of this type: the host has never been verified.
    Unknown,
    /// A line for this host holds a different key of the same type: possible
    /// man-in-the-middle attack (or a reinstalled server).
    Changed {
        /// The file holding the conflicting line.
        file: PathBuf,
        /// The real 1-based line number (comments and blank lines counted).
        line: usize,
    },
    /// An `@revoked` line for this host lists this very key.
    Revoked {
        /// The file holding the `@revoked` line.
        file: PathBuf,
        /// The real 1-based line number.
        line: usize,
    },
}

/// The name known_hosts lines are matched against: `host` for port 22, `[host]:port` otherwise
/// (OpenSSH's `put_host_port`).
pub fn lookup_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// Check `key` for `host:port` against `files`, in order (missing or unreadable files are
/// skipped). A revoked key wins over everything; a matching key anywhere wins over a
/// conflicting key; a conflicting key of the same type is reported with its first location.
/// Keys are compared by key data only (comments are ignored).
pub fn check(host: &str, port: u16, key: &PublicKey, files: &[PathBuf]) -> HostKeyStatus {
    let name = lookup_name(host, port).to_ascii_lowercase();
    let mut known = false;
    let mut changed: Option<(PathBuf, usize)> = None;
    for file in files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for (index, raw) in text.lines().enumerate() {
            let Some(entry) = parse_line(raw) else {
                continue;
            };
            if !entry.hosts_match(&name) {
                continue;
            }
            let Ok(entry_key) = russh::keys::parse_public_key_base64(entry.key_base64) else {
                continue;
            };
            let same_key = entry_key.key_data() == key.key_data();
            match entry.marker {
                Marker::Revoked if same_key => {
                    return HostKeyStatus::Revoked {
                        file: file.clone(),
                        line: index + 1,
                    };
                }
                Marker::Revoked | Marker::CertAuthority => {}
                Marker::None if same_key => known = true,
                Marker::None => {
                    if changed.is_none() && entry_key.algorithm() == key.algorithm() {
                        changed = Some((file.clone(), index + 1));
                    }
                }
            }
        }
    }
    match (known, changed) {
        (true, _) => HostKeyStatus::Known,
        (false, Some((file, line))) => HostKeyStatus::Changed { file, line },
        (false, None) => HostKeyStatus::Unknown,
    }
}

/// The key's SHA-256 fingerprint as `ssh-keygen -l` prints it: `SHA256:<base64 without padding>`.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The `@marker` in front of a known_hosts line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    Revoked,
    CertAuthority,
}

/// One parsed (but not yet key-decoded) known_hosts line.
#[derive(Debug)]
struct Entry<'a> {
    marker: Marker,
    hosts: &'a str,
    key_base64: &'a str,
}

/// Split a line into fields; `None` for blank lines, comments, unknown markers and
/// lines with too few fields.
fn parse_line(raw: &str) -> Option<Entry<'_>> {
    let line = raw.trim_start_matches([' ', '\t']);
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut fields = line.split([' ', '\t']).filter(|f| !f.is_empty());
    let mut first = fields.next()?;
    let marker = if let Some(m) = first.strip_prefix('@') {
        let marker = match m {
            "revoked" => Marker::Revoked,
            "cert-authority" => Marker::CertAuthority,
            _ => return None,
        };
        first = fields.next()?;
        marker
    } else {
        Marker::None
    };
    let _key_type = fields.next()?;
    let key_base64 = fields.next()?;
    Some(Entry {
        marker,
        hosts: first,
        key_base64,
    })
}

impl Entry<'_> {
    /// Whether this line's host field matches `name` (already lowercased).
    fn hosts_match(&self, name: &str) -> bool {
        if let Some(hashed) = self.hosts.strip_prefix("|1|") {
            return hashed_match(hashed, name);
        }
        pattern_list_match(self.hosts, name)
    }
}

/// `salt|hash` (both base64) against `name`: HMAC-SHA1 keyed with the salt.
fn hashed_match(hashed: &str, name: &str) -> bool {
    let Some((salt, hash)) = hashed.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (
        BASE64.decode(salt.as_bytes()),
        BASE64.decode(hash.as_bytes()),
    ) else {
        return false;
    };
    let Ok(mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(&salt) else {
        return false;
    };
    mac.chain_update(name.as_bytes())
        .verify_slice(&hash)
        .is_ok()
}

/// OpenSSH `match_hostname`: a comma list of patterns; any matching negated pattern
/// rejects, otherwise any matching positive pattern accepts. Case-insensitive.
fn pattern_list_match(list: &str, name: &str) -> bool {
    let mut matched = false;
    for pattern in list.split(',').filter(|p| !p.is_empty()) {
        let pattern = pattern.to_ascii_lowercase();
        if let Some(negated) = pattern.strip_prefix('!') {
            if glob_match(negated.as_bytes(), name.as_bytes()) {
                return false;
            }
        } else if glob_match(pattern.as_bytes(), name.as_bytes()) {
            matched = true;
        }
    }
    matched
}

/// `*` (any run, including empty) and `?` (exactly one byte) glob, iterative with backtracking.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// The known_hosts files OpenSSH consults for a user with home `home`, plus `extra`
/// (UserKnownHostsFile entries) and the system-wide file.
pub fn default_files(home: &Path, extra: &[PathBuf]) -> Vec<PathBuf> {
    let mut files = vec![
        home.join(".ssh/known_hosts"),
        home.join(".ssh/known_hosts2"),
    ];
    for f in extra {
        if !files.contains(f) {
            files.push(f.clone());
        }
    }
    files.push(PathBuf::from("/etc/ssh/ssh_known_hosts"));
    files.push(PathBuf::from("/etc/ssh/ssh_known_hosts2"));
    files
}

/// The russh handler: checks the server's key and records the precise verdict so
/// [`super::Connection::connect`] can report it (russh itself only says "UnknownKey"). russh
/// owns it for the life of the session and drops it when the session ends, whatever
/// ended it: `_ended` then cancels the token [`super::Connection::closed`] waits on.
pub(super) struct Verifier {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) files: Vec<PathBuf>,
    pub(super) verdict: Arc<Mutex<Option<SshError>>>,
    /// The accepted key, `TYPE SHA256:…`, once it matched a known_hosts line.
    pub(super) accepted: Arc<Mutex<Option<String>>>,
    pub(super) _ended: tokio_util::sync::DropGuard,
}

impl client::Handler for Verifier {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        presented: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // A host certificate is checked as its plain key (no @cert-authority support),
        // which is OpenSSH's fallback too.
        let key = match presented {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(cert) => {
                PublicKey::new(cert.public_key().clone(), "")
            }
        };
        let fingerprint = fingerprint(&key);
        let host = self.host.clone();
        let port = self.port;
        let verdict = match check(&host, port, &key, &self.files) {
            HostKeyStatus::Known => {
                let seen = format!("{} {fingerprint}", key.algorithm().as_str());
                *self.accepted.lock().unwrap_or_else(|p| p.into_inner()) = Some(seen);
                return Ok(true);
            }
            HostKeyStatus::Unknown => SshError::UnknownHostKey {
                host,
                port,
                key_type: key.algorithm().as_str().to_string(),
                fingerprint,
            },
            HostKeyStatus::Changed { file, line } => SshError::HostKeyChanged {
                host,
                port,
                fingerprint,
                file,
                line,
            },
            HostKeyStatus::Revoked { file, line } => SshError::HostKeyRevoked {
                host,
                port,
                fingerprint,
                file,
                line,
            },
        };
        *self.verdict.lock().unwrap_or_else(|p| p.into_inner()) = Some(verdict);
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    // Two distinct ed25519 keys and an ecdsa key (public halves only; generated with ssh-keygen).
    const ED_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIA0VUIvEjp8H/9vFL1k7nFFt8gR6LMwPp6D5LfgW1Mj3";
    const ED_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIP7vUO3bahFLL3ekz76QbTmpBFYCNOMZ06mk1egM6lQS";
    const ECDSA: &str = "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBJpEmM5kr1k30Pj+0z6lVeMAiw4fxvlD60ysKeqW33eHk92jZKatnwpzxz57KTGFNlvPKZx7rQ08sWIqD3+IT3s=";

    fn key(b64: &str) -> PublicKey {
        russh::keys::parse_public_key_base64(b64).expect("test key parses")
    }

    fn file_with(text: &str) -> (tempfile::TempDir, Vec<PathBuf>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        (dir, vec![path])
    }

    fn status(text: &str, host: &str, port: u16, k: &str) -> HostKeyStatus {
        let (_dir, files) = file_with(text);
        check(host, port, &key(k), &files)
    }

    #[test]
    fn plain_name_matches() {
        let text = format!("server1 ssh-ed25519 {ED_A} comment here\n");
        assert_eq!(status(&text, "server1", 22, ED_A), HostKeyStatus::Known);
        assert_eq!(status(&text, "SERVER1", 22, ED_A), HostKeyStatus::Known);
        assert_eq!(status(&text, "server2", 22, ED_A), HostKeyStatus::Unknown);
        // Port 22 entries do not cover other ports.
        assert_eq!(status(&text, "server1", 2222, ED_A), HostKeyStatus::Unknown);
    }

    #[test]
    fn comma_list_and_bracketed_port() {
        let text = format!("hoardtest,[127.0.0.1]:2222 ssh-ed25519 {ED_A}\n");
        assert_eq!(status(&text, "127.0.0.1", 2222, ED_A), HostKeyStatus::Known);
        assert_eq!(status(&text, "hoardtest", 22, ED_A), HostKeyStatus::Known);
        assert_eq!(status(&text, "127.0.0.1", 22, ED_A), HostKeyStatus::Unknown);
        assert_eq!(
            status(&text, "127.0.0.1", 2223, ED_A),
            HostKeyStatus::Unknown
        );
    }

    #[test]
    fn tabs_and_comments_and_real_line_numbers() {
        let text =
            format!("# a comment\n\n\t# indented comment\n[127.0.0.1]:2222\tssh-ed25519\t{ED_B}\n");
        let (_dir, files) = file_with(&text);
        assert_eq!(
            check("127.0.0.1", 2222, &key(ED_A), &files),
            HostKeyStatus::Changed {
                file: files[0].clone(),
                line: 4
            }
        );
        assert_eq!(
            check("127.0.0.1", 2222, &key(ED_B), &files),
            HostKeyStatus::Known
        );
    }

    #[test]
    fn matching_key_anywhere_beats_a_conflict() {
        let text = format!("h ssh-ed25519 {ED_B}\nh ssh-ed25519 {ED_A}\n");
        assert_eq!(status(&text, "h", 22, ED_A), HostKeyStatus::Known);
    }

    #[test]
    fn other_key_type_only_is_unknown() {
        let text = format!("h ecdsa-sha2-nistp256 {ECDSA}\n");
        assert_eq!(status(&text, "h", 22, ED_A), HostKeyStatus::Unknown);
    }

    #[test]
    fn wildcards_and_negation() {
        let text = format!("[127.0.0.*]:2222,*.farm,!bad.farm,build?? ssh-ed25519 {ED_A}\n");
        assert_eq!(status(&text, "127.0.0.1", 2222, ED_A), HostKeyStatus::Known);
        assert_eq!(status(&text, "a.farm", 22, ED_A), HostKeyStatus::Known);
        assert_eq!(status(&text, "bad.farm", 22, ED_A), HostKeyStatus::Unknown);
        assert_eq!(status(&text, "build01", 22, ED_A), HostKeyStatus::Known);
        assert_eq!(status(&text, "build1", 22, ED_A), HostKeyStatus::Unknown);
        assert_eq!(
            status(&text, "127.0.1.1", 2222, ED_A),
            HostKeyStatus::Unknown
        );
    }

    #[test]
    fn revoked_key_is_reported_and_wins() {
        let text = format!("h ssh-ed25519 {ED_A}\n# x\n@revoked * ssh-ed25519 {ED_A}\n");
        let (_dir, files) = file_with(&text);
        assert_eq!(
            check("h", 22, &key(ED_A), &files),
            HostKeyStatus::Revoked {
                file: files[0].clone(),
                line: 3
            }
        );
        // Another key is not affected by the revocation.
        assert_eq!(
            check("h", 22, &key(ED_B), &files),
            HostKeyStatus::Changed {
                file: files[0].clone(),
                line: 1
            }
        );
    }

    #[test]
    fn cert_authority_lines_are_ignored() {
        let text = format!("@cert-authority h ssh-ed25519 {ED_B}\n");
        assert_eq!(status(&text, "h", 22, ED_A), HostKeyStatus::Unknown);
        let text = format!("@cert-authority h ssh-ed25519 {ED_A}\n");
        assert_eq!(status(&text, "h", 22, ED_A), HostKeyStatus::Unknown);
    }

    #[test]
    fn missing_files_are_skipped_and_later_files_count() {
        let (dir, mut files) = file_with(&format!("h ssh-ed25519 {ED_A}\n"));
        files.insert(0, dir.path().join("does-not-exist"));
        assert_eq!(check("h", 22, &key(ED_A), &files), HostKeyStatus::Known);
        assert_eq!(check("h", 22, &key(ED_A), &[]), HostKeyStatus::Unknown);
    }

    fn hashed_host(name: &str, salt: &[u8]) -> String {
        let mac = <Hmac<Sha1> as KeyInit>::new_from_slice(salt)
            .unwrap()
            .chain_update(name.as_bytes())
            .finalize()
            .into_bytes();
        format!("|1|{}|{}", BASE64.encode(salt), BASE64.encode(&mac))
    }

    #[test]
    fn hashed_entry_computed_here() {
        let host = hashed_host("[127.0.0.1]:2222", b"01234567890123456789");
        let text = format!("{host} ssh-ed25519 {ED_A}\n");
        assert_eq!(status(&text, "127.0.0.1", 2222, ED_A), HostKeyStatus::Known);
        assert_eq!(
            status(&text, "127.0.0.2", 2222, ED_A),
            HostKeyStatus::Unknown
        );
        let (_dir, files) = file_with(&text);
        assert_eq!(
            check("127.0.0.1", 2222, &key(ED_B), &files),
            HostKeyStatus::Changed {
                file: files[0].clone(),
                line: 1
            }
        );
    }

    #[test]
    fn hashed_entry_from_ssh_keygen() {
        let text = format!("[127.0.0.1]:2222 ssh-ed25519 {ED_A}\nplain ssh-ed25519 {ED_A}\n");
        let (_dir, files) = file_with(&text);
        let out = match std::process::Command::new("ssh-keygen")
            .arg("-H")
            .arg("-f")
            .arg(&files[0])
            .output()
        {
            Ok(out) => out,
            Err(_) => {
                eprintln!("ssh-keygen not installed; skipping the cross-check");
                return;
            }
        };
        assert!(out.status.success(), "ssh-keygen -H failed: {out:?}");
        let hashed = std::fs::read_to_string(&files[0]).unwrap();
        assert!(hashed.starts_with("|1|"), "not hashed: {hashed}");
        assert!(!hashed.contains("127.0.0.1"));
        assert_eq!(
            check("127.0.0.1", 2222, &key(ED_A), &files),
            HostKeyStatus::Known
        );
        assert_eq!(check("plain", 22, &key(ED_A), &files), HostKeyStatus::Known);
        assert_eq!(
            check("other", 22, &key(ED_A), &files),
            HostKeyStatus::Unknown
        );
    }

    #[test]
    fn fingerprint_like_ssh_keygen() {
        let fp = fingerprint(&key(ED_A));
        assert!(fp.starts_with("SHA256:"), "{fp}");
        assert_eq!(fp.len(), "SHA256:".len() + 43, "{fp}");
        // Cross-check with ssh-keygen -l when it is installed.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pub");
        std::fs::write(&path, format!("ssh-ed25519 {ED_A} c\n")).unwrap();
        if let Ok(out) = std::process::Command::new("ssh-keygen")
            .arg("-lf")
            .arg(&path)
            .output()
        {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains(&fp), "{text} vs {fp}");
        }
    }

    #[test]
    fn glob() {
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"a*b*c", b"axxbyyc"));
        assert!(!glob_match(b"a*b*c", b"axxbyy"));
        assert!(glob_match(b"?", b"x"));
        assert!(!glob_match(b"?", b""));
    }
}
