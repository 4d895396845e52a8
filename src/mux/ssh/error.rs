//! Stage: connections, SSH failures. [`SshError`] says why dialing, verifying,
//! authenticating or opening a channel failed, whether another try may help, and which
//! distcc exit code it maps to. Neighbours: `mux::ssh` (raises it), `mux::lane` and
//! `mux::pool` (callers that classify it).

use std::path::PathBuf;

use russh::ChannelOpenFailure;

use super::known_hosts;
use crate::exit::ExitCode;

/// Why an SSH operation failed. Messages name the host and, for host key problems, the fix.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// `~/.ssh/config` could not be parsed.
    #[error("ssh config: {0}")]
    Config(String),
    /// TCP connect failed.
    #[error("cannot connect to {}: {source}", host_port(host, *port))]
    Connect {
        /// Host dialled.
        host: String,
        /// Port dialled.
        port: u16,
        /// The socket error.
        source: std::io::Error,
    },
    /// A phase did not finish in time.
    #[error("ssh to {host}: timed out during {what}")]
    Timeout {
        /// Host concerned.
        host: String,
        /// The phase: "TCP connect", "key exchange", "authentication", "channel open", ...
        what: &'static str,
    },
    /// The host's key is in no known_hosts file: refuse (never trust on first use).
    #[error(
        "ssh to {}: host key is not known ({key_type} {fingerprint}); refusing to connect. \
         Verify the fingerprint, then run: ssh-keyscan -p {port} -t {key_type} {host} >> ~/.ssh/known_hosts \
         (or connect once with: ssh -p {port} {host})",
        host_port(host, *port)
    )]
    UnknownHostKey {
        /// Host name looked up.
        host: String,
        /// Port.
        port: u16,
        /// Key algorithm as ssh names it, e.g. `ssh-ed25519`.
        key_type: String,
        /// `SHA256:...` fingerprint of the presented key.
        fingerprint: String,
    },
    /// The host presented a different key than known_hosts holds.
    #[error(
        "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED for {} @@@ \
         Someone could be eavesdropping on you right now (man-in-the-middle attack), or the host key \
         was just changed. The host sent {fingerprint}; the conflicting key is at {}:{line}. \
         Refusing to connect. If the change is legitimate, verify the new key, then run: \
         ssh-keygen -R '{}' and add the new key",
        host_port(host, *port), file.display(), host_port(host, *port)
    )]
    HostKeyChanged {
        /// Host name looked up.
        host: String,
        /// Port.
        port: u16,
        /// `SHA256:...` fingerprint of the presented key.
        fingerprint: String,
        /// File holding the conflicting line.
        file: PathBuf,
        /// Its real 1-based line number.
        line: usize,
    },
    /// The host presented a key marked `@revoked`.
    #[error(
        "ssh to {}: host key {fingerprint} is REVOKED ({}:{line}); refusing to connect",
        host_port(host, *port), file.display()
    )]
    HostKeyRevoked {
        /// Host name looked up.
        host: String,
        /// Port.
        port: u16,
        /// `SHA256:...` fingerprint of the presented key.
        fingerprint: String,
        /// File holding the `@revoked` line.
        file: PathBuf,
        /// Its real 1-based line number.
        line: usize,
    },
    /// No identity was accepted.
    #[error(
        "ssh to {user}@{host}: authentication failed (tried: {}); hoardcc never prompts, so \
         load the key into ssh-agent or use an unencrypted IdentityFile",
        if tried.is_empty() { "no usable keys".to_string() } else { tried.join(", ") }
    )]
    Auth {
        /// Host.
        host: String,
        /// Login user.
        user: String,
        /// The identities offered, in order.
        tried: Vec<String>,
    },
    /// The host's ProxyJump cannot be followed (a hop spec that does not parse).
    #[error(
        "ssh to {host}: cannot follow ProxyJump {jump:?} (expected [user@]host[:port], \
         comma-separated)"
    )]
    ProxyJumpUnsupported {
        /// Host.
        host: String,
        /// The ProxyJump value.
        jump: String,
    },
    /// Channel open refused with ConnectFailed: the server's MaxSessions is reached.
    #[error("ssh to {host}: the server refused another session (MaxSessions reached)")]
    SessionLimit {
        /// Host.
        host: String,
    },
    /// The server refused an exec request.
    #[error("ssh to {host}: the server refused to run {command:?}")]
    ExecRefused {
        /// Host.
        host: String,
        /// The command.
        command: String,
    },
    /// The connection is gone.
    #[error("ssh to {host}: connection closed")]
    Disconnected {
        /// Host.
        host: String,
    },
    /// Any other SSH protocol failure.
    #[error("ssh: {0}")]
    Protocol(russh::Error),
}

fn host_port(host: &str, port: u16) -> String {
    known_hosts::lookup_name(host, port)
}

impl SshError {
    /// True for failures where retrying on another connection or host makes sense because
    /// the cause is a passing condition (network trouble, timeouts, a full session table, a
    /// dropped connection). False for configuration and security failures that will not fix
    /// themselves (host keys, authentication, config, unsupported ProxyJump, refused exec).
    pub fn is_transient(&self) -> bool {
        match self {
            SshError::Connect { .. }
            | SshError::Timeout { .. }
            | SshError::SessionLimit { .. }
            | SshError::Disconnected { .. }
            | SshError::Protocol(_) => true,
            SshError::Config(_)
            | SshError::UnknownHostKey { .. }
            | SshError::HostKeyChanged { .. }
            | SshError::HostKeyRevoked { .. }
            | SshError::Auth { .. }
            | SshError::ProxyJumpUnsupported { .. }
            | SshError::ExecRefused { .. } => false,
        }
    }

    /// The distcc exit code for this failure.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            SshError::Connect { .. } => ExitCode::ConnectFailed,
            SshError::Timeout { .. } => ExitCode::Timeout,
            SshError::SessionLimit { .. } => ExitCode::Busy,
            SshError::Disconnected { .. } => ExitCode::Gone,
            SshError::Protocol(russh::Error::IO(_)) => ExitCode::IoError,
            SshError::Config(_)
            | SshError::UnknownHostKey { .. }
            | SshError::HostKeyChanged { .. }
            | SshError::HostKeyRevoked { .. }
            | SshError::Auth { .. }
            | SshError::ProxyJumpUnsupported { .. }
            | SshError::ExecRefused { .. }
            | SshError::Protocol(_) => ExitCode::SshFailed,
        }
    }

    /// Map a russh error on connection `host`.
    pub(super) fn from_russh(host: &str, e: russh::Error) -> SshError {
        match e {
            russh::Error::ChannelOpenFailure(ChannelOpenFailure::ConnectFailed) => {
                SshError::SessionLimit {
                    host: host.to_string(),
                }
            }
            russh::Error::Disconnect
            | russh::Error::HUP
            | russh::Error::SendError
            | russh::Error::RecvError
            | russh::Error::KeepaliveTimeout
            | russh::Error::InactivityTimeout => SshError::Disconnected {
                host: host.to_string(),
            },
            russh::Error::ConnectionTimeout => SshError::Timeout {
                host: host.to_string(),
                what: "connection",
            },
            e => SshError::Protocol(e),
        }
    }
}
