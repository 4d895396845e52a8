//! The compile-only key of `install-server --forced-command`: take the one the user names,
//! or make an Ed25519 key (no passphrase: make has no tty to ask on) at
//! `~/.ssh/hoardcc-<host>` the first time and reuse it after. Written 0600 through a temp
//! file and a rename. Neighbours: `cli::install` (caller), `mux::ssh::keyfile` (the key
//! encoding), `scripts::authorized_line` (what is done with the public half).

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::mux::ssh::keyfile;

use super::InstallError;

/// A key to authorise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileKey {
    /// The private key file (what `IdentityFile` names).
    pub private: PathBuf,
    /// The public key line, `ALGO BASE64 [COMMENT]`.
    pub public: String,
    /// Whether it was generated just now.
    pub created: bool,
}

impl CompileKey {
    /// The base64 key blob (the second field of the public line).
    pub fn blob(&self) -> &str {
        self.public.split_whitespace().nth(1).unwrap_or("")
    }
}

fn key_error(path: &Path, reason: impl std::fmt::Display) -> InstallError {
    InstallError::Key {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// `path` is a `.pub` file, or a private key with (or without) its `.pub` beside it; a
/// missing `path` is generated (with `host` in the comment).
///
/// # Errors
/// [`InstallError::Key`] when the file cannot be read or parsed, or a new key cannot be
/// written.
pub fn load_or_create_key(path: &Path, host: &str) -> Result<CompileKey, InstallError> {
    let is_pub = path.extension().is_some_and(|e| e == "pub");
    let private = if is_pub {
        path.with_extension("")
    } else {
        path.to_path_buf()
    };
    let public_path = if is_pub {
        path.to_path_buf()
    } else {
        append_pub(path)
    };
    if public_path.exists() {
        return Ok(CompileKey {
            private,
            public: keyfile::public_line_from_file(&public_path)
                .map_err(|e| key_error(&public_path, e))?,
            created: false,
        });
    }
    if is_pub {
        return Err(key_error(path, "no such public key file"));
    }
    if private.exists() {
        return Ok(CompileKey {
            public: keyfile::public_line_from_private(&private)
                .map_err(|e| key_error(&private, e))?,
            private,
            created: false,
        });
    }
    generate(&private, host)
}

fn append_pub(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// A new Ed25519 key at `private` (and `private.pub`), 0600 / 0644.
fn generate(private: &Path, host: &str) -> Result<CompileKey, InstallError> {
    let mut seed = [0u8; 32];
    match rustix::rand::getrandom(&mut seed[..], rustix::rand::GetRandomFlags::empty()) {
        Ok(32) => {}
        Ok(_) => return Err(key_error(private, "short read from getrandom")),
        Err(e) => return Err(key_error(private, e)),
    }
    let made = keyfile::new_ed25519(&seed, &format!("hoardcc compile-only key for {host}"));
    seed.fill(0);
    let (pem, public, bare) = made.map_err(|e| key_error(private, e))?;
    let dir = private.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| key_error(private, e))?;
    write_atomic(private, pem.as_bytes(), 0o600)?;
    write_atomic(
        &append_pub(private),
        format!("{public}\n").as_bytes(),
        0o644,
    )?;
    Ok(CompileKey {
        private: private.to_path_buf(),
        public: bare,
        created: true,
    })
}

/// Write `bytes` to `path` through a temp file in the same directory, with `mode`.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".hoardcc-key.")
        .tempfile_in(dir)
        .map_err(|e| key_error(path, e))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| key_error(path, e))?;
    tmp.write_all(bytes).map_err(|e| key_error(path, e))?;
    tmp.as_file().sync_all().map_err(|e| key_error(path, e))?;
    // Never replace a key that appeared meanwhile.
    tmp.persist_noclobber(path)
        .map_err(|e| key_error(path, e.error))?;
    Ok(())
}
