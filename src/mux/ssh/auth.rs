//! Stage: connections, SSH user authentication: ssh-agent keys first, then the
//! config's IdentityFile entries and the default identity files, never prompting (make
//! has no tty). Neighbours: `mux::ssh` (calls `authenticate` once per connection),
//! `mux::ssh::config` (the [`Destination`]'s identity files).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use russh::client::{AuthResult, Handle};
use russh::keys::agent::client::AgentClient;
use russh::keys::{self, PrivateKeyWithHashAlg, PublicKey};
use tokio::time::timeout;

use super::known_hosts::{self, Verifier};
use super::{Destination, SshError, SshSettings};

/// Identity files tried after the config's IdentityFile entries, as OpenSSH does.
const DEFAULT_IDENTITIES: [&str; 3] = [".ssh/id_ed25519", ".ssh/id_ecdsa", ".ssh/id_rsa"];

/// Try ssh-agent keys, then identity files, until one is accepted. Returns that identity,
/// as `ssh-agent key TYPE SHA256:…` or the identity file's path.
pub(super) async fn authenticate(
    handle: &mut Handle<Verifier>,
    dest: &Destination,
    settings: &SshSettings,
) -> Result<String, SshError> {
    let host = dest.hostname.clone();
    let user = dest.user.clone();
    let mut tried: Vec<String> = Vec::new();
    let mut offered: Vec<PublicKey> = Vec::new();
    // Asked at most once, and only for RSA keys: it can wait up to 1 s for EXT_INFO.
    let mut rsa_hash: Option<Option<keys::HashAlg>> = None;

    if let Some(sock) = &settings.agent_socket {
        match agent_identities(sock, dest).await {
            Ok((mut agent, ids)) => {
                for id in ids {
                    let key = id.public_key().into_owned();
                    let hash = rsa_hash_for(handle, &key, &mut rsa_hash).await;
                    let name = format!(
                        "agent key {} {}",
                        key.algorithm().as_str(),
                        known_hosts::fingerprint(&key)
                    );
                    tried.push(name.clone());
                    let r = handle
                        .authenticate_publickey_with(user.clone(), key.clone(), hash, &mut agent)
                        .await;
                    offered.push(key);
                    match r {
                        Ok(r) if r.success() => return Ok(format!("ssh-{name}")),
                        Ok(_) => {}
                        Err(e) => tracing::debug!("agent signing failed: {e}"),
                    }
                    if handle.is_closed() {
                        return Err(SshError::Disconnected { host });
                    }
                }
            }
            Err(e) => tracing::debug!("ssh-agent at {} unusable: {e}", sock.display()),
        }
    }

    let mut files: Vec<PathBuf> = dest.identity_files.clone();
    // IdentitiesOnly with IdentityFile entries: those files only, as OpenSSH does.
    let defaults: &[&str] = if dest.identities_only && !files.is_empty() {
        &[]
    } else {
        &DEFAULT_IDENTITIES
    };
    for default in defaults {
        let path = settings.home.join(default);
        if !files.contains(&path) {
            files.push(path);
        }
    }
    for path in files {
        let Some(secret) = load_identity(&path) else {
            continue;
        };
        let public = secret.public_key().clone();
        if offered.iter().any(|k| k.key_data() == public.key_data()) {
            continue;
        }
        let hash = rsa_hash_for(handle, &public, &mut rsa_hash).await;
        tried.push(path.display().to_string());
        let r = handle
            .authenticate_publickey(
                user.clone(),
                PrivateKeyWithHashAlg::new(Arc::new(secret), hash),
            )
            .await
            .map_err(|e| SshError::from_russh(&host, e))?;
        offered.push(public);
        if r.success() {
            return Ok(format!("identity file {}", path.display()));
        }
        if let AuthResult::Failure {
            remaining_methods, ..
        } = &r
        {
            tracing::debug!(
                "{} rejected; server allows {remaining_methods:?}",
                path.display()
            );
        }
    }
    Err(SshError::Auth { host, user, tried })
}

/// Connect to the agent and list its identities (bounded: a stuck agent must not hang us;
/// the caller's deadline bounds the whole authentication too).
/// The agent's keys; with IdentitiesOnly, only those that match an IdentityFile (by the
/// public key beside it, or in it), as OpenSSH does.
async fn agent_identities(
    sock: &Path,
    dest: &Destination,
) -> Result<
    (
        AgentClient<tokio::net::UnixStream>,
        Vec<keys::agent::AgentIdentity>,
    ),
    String,
> {
    let limit = Duration::from_secs(5);
    let mut agent = timeout(limit, AgentClient::connect_uds(sock))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())?;
    let ids = timeout(limit, agent.request_identities())
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())?;
    if !dest.identities_only {
        return Ok((agent, ids));
    }
    let allowed: Vec<PublicKey> = dest
        .identity_files
        .iter()
        .filter_map(|p| identity_public_key(p))
        .collect();
    let ids = ids
        .into_iter()
        .filter(|id| {
            let key = id.public_key();
            allowed.iter().any(|a| a.key_data() == key.key_data())
        })
        .collect();
    Ok((agent, ids))
}

/// The public half of identity file `path`: `path.pub`, else the private key's own.
fn identity_public_key(path: &Path) -> Option<PublicKey> {
    let mut pub_path = path.as_os_str().to_owned();
    pub_path.push(".pub");
    keys::load_public_key(PathBuf::from(pub_path))
        .ok()
        .or_else(|| load_identity(path).map(|k| k.public_key().clone()))
}

/// Load an unencrypted private key; `None` (logged at debug) for missing, unreadable or
/// passphrase-protected files: hoardcc never prompts.
fn load_identity(path: &Path) -> Option<keys::PrivateKey> {
    if !path.exists() {
        return None;
    }
    match keys::load_secret_key(path, None) {
        Ok(k) => Some(k),
        Err(e) => {
            tracing::debug!("skipping identity {}: {e}", path.display());
            None
        }
    }
}

/// The signature hash for `key`: only RSA keys need one (rsa-sha2-256/512 when offered).
async fn rsa_hash_for(
    handle: &Handle<Verifier>,
    key: &PublicKey,
    cache: &mut Option<Option<keys::HashAlg>>,
) -> Option<keys::HashAlg> {
    if !key.algorithm().is_rsa() {
        return None;
    }
    if cache.is_none() {
        *cache = Some(
            handle
                .best_supported_rsa_hash()
                .await
                .ok()
                .flatten()
                .flatten(),
        );
    }
    cache.flatten()
}
