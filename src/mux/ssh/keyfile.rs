//! Stage: connections, key files for setup commands. OpenSSH public and private key
//! files read into `ALGO BASE64` lines, and new Ed25519 keys made, through russh's
//! `ssh-key`, so no code outside `mux` names russh. Neighbours: `cli::install::key` (the
//! compile-only key of `install-server --forced-command`), `mux::ssh::auth` (which loads
//! identities for logging in).

use std::path::Path;

use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::{LineEnding, PrivateKey, PublicKey};

/// `ALGO BASE64` of `key`, its comment dropped.
fn line(key: &PublicKey) -> Result<String, String> {
    let mut key = key.clone();
    key.set_comment("");
    Ok(key
        .to_openssh()
        .map_err(|e| e.to_string())?
        .trim()
        .to_string())
}

/// The public key in OpenSSH file `path` (`*.pub`), as `ALGO BASE64`.
///
/// # Errors
/// The reason, when the file cannot be read or parsed.
pub fn public_line_from_file(path: &Path) -> Result<String, String> {
    line(&PublicKey::read_openssh_file(path).map_err(|e| e.to_string())?)
}

/// The public half of the unencrypted private key in `path`, as `ALGO BASE64`.
///
/// # Errors
/// The reason, when the file cannot be read, parsed, or is encrypted.
pub fn public_line_from_private(path: &Path) -> Result<String, String> {
    let key = PrivateKey::read_openssh_file(path).map_err(|e| e.to_string())?;
    line(key.public_key())
}

/// A new Ed25519 key from the 32-byte `seed`: (the private key file's text, wiped from
/// memory when dropped; the `.pub` file's line with `comment`; the `ALGO BASE64` line).
///
/// # Errors
/// The reason, when encoding fails.
pub fn new_ed25519(
    seed: &[u8; 32],
    comment: &str,
) -> Result<(impl std::ops::Deref<Target = String>, String, String), String> {
    let mut key = PrivateKey::from(Ed25519Keypair::from_seed(seed));
    key.set_comment(comment);
    let private = key.to_openssh(LineEnding::LF).map_err(|e| e.to_string())?;
    let public = key.public_key().to_openssh().map_err(|e| e.to_string())?;
    let bare = line(key.public_key())?;
    Ok((private, public, bare))
}
