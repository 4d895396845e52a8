//! Stage: connections, the SSH client. The only code that knows russh: [`Connection::connect`]
//! dials a [`Destination`] (resolved by [`super::ssh_config`]), verifies the host key against
//! known_hosts with [`super::known_hosts`] (fail closed, never trust on first use),
//! authenticates with ssh-agent and identity files (never prompting: make has no tty), and
//! then opens session channels for the `hoardcc` subsystem or an exec command. Neighbours:
//! `mux::lane` and the mux daemon's pool (callers), sshd (the other end).
//!
//! Client settings follow the measurements in notes/russh.md: `nodelay` (Nagle costs ~44 ms
//! per job), a 16 MiB window, AES-GCM first, keepalives so a dead peer is noticed.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, AuthResult, Handle};
use russh::keys::agent::client::AgentClient;
use russh::keys::{self, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, ChannelOpenFailure, Disconnect};
use tokio::time::{timeout, timeout_at, Instant};

use super::known_hosts::{self, HostKeyStatus};
pub use super::ssh_config::Destination;
use crate::exit::ExitCode;

/// A bidirectional byte stream over one SSH channel (AsyncRead + AsyncWrite). Dropping it
/// sends CLOSE, which frees the server's MaxSessions slot.
pub type Stream = russh::ChannelStream<russh::client::Msg>;

/// Identity files tried after the config's IdentityFile entries, as OpenSSH does.
const DEFAULT_IDENTITIES: [&str; 3] = [".ssh/id_ed25519", ".ssh/id_ecdsa", ".ssh/id_rsa"];

/// Connection settings shared by every connection of one process.
#[derive(Debug, Clone)]
pub struct SshSettings {
    /// Home directory: `~/.ssh/known_hosts` and the default identity files live here.
    pub home: PathBuf,
    /// Bound on TCP connect + key exchange + authentication together.
    pub connect_timeout: Duration,
    /// Interval between keepalive requests (zero disables them).
    pub keepalive_interval: Duration,
    /// Unanswered keepalives before the connection is declared dead.
    pub keepalive_max: usize,
    /// Bound on each channel open and channel request.
    pub io_timeout: Duration,
    /// ssh-agent socket (`SSH_AUTH_SOCK`), tried before identity files.
    pub agent_socket: Option<PathBuf>,
    /// The local user name (default login user, `%u`).
    pub local_user: String,
}

impl SshSettings {
    /// Settings from the hoardcc config, the environment (`SSH_AUTH_SOCK`, `USER`,
    /// `LOGNAME`) and the home directory. The local user falls back to the passwd entry.
    pub fn from_config(
        cfg: &crate::config::Config,
        env: &dyn Fn(&str) -> Option<String>,
        home: PathBuf,
    ) -> SshSettings {
        let nonempty = |k: &str| env(k).filter(|v| !v.is_empty());
        let local_user = nonempty("USER")
            .or_else(|| nonempty("LOGNAME"))
            .or_else(|| {
                nix::unistd::User::from_uid(nix::unistd::getuid())
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            })
            .unwrap_or_else(|| "root".to_string());
        SshSettings {
            home,
            connect_timeout: cfg.ssh.connect_timeout,
            keepalive_interval: cfg.ssh.keepalive_interval,
            keepalive_max: cfg.ssh.keepalive_max as usize,
            io_timeout: cfg.ssh.io_timeout,
            agent_socket: nonempty("SSH_AUTH_SOCK").map(PathBuf::from),
            local_user,
        }
    }
}

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
    fn from_russh(host: &str, e: russh::Error) -> SshError {
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

/// The russh handler: checks the server's key and records the precise verdict so
/// [`Connection::connect`] can report it (russh itself only says "UnknownKey").
struct Verifier {
    host: String,
    port: u16,
    files: Vec<PathBuf>,
    verdict: Arc<Mutex<Option<SshError>>>,
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
        let fingerprint = known_hosts::fingerprint(&key);
        let host = self.host.clone();
        let port = self.port;
        let verdict = match known_hosts::check(&host, port, &key, &self.files) {
            HostKeyStatus::Known => return Ok(true),
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

struct Inner {
    handle: Handle<Verifier>,
    dest: Destination,
    io_timeout: Duration,
    /// The ProxyJump connection this one tunnels through, kept alive with it.
    _via: Option<Connection>,
}

/// One authenticated SSH connection. Cheap to clone; channels can be opened from many tasks
/// at once (up to the server's MaxSessions, 10 by default).
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("dest", &self.inner.dest)
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// russh client configuration from the settings (see notes/russh.md §4).
fn client_config(settings: &SshSettings) -> client::Config {
    let keepalive = !settings.keepalive_interval.is_zero();
    client::Config {
        nodelay: true,
        window_size: 16 << 20,
        keepalive_interval: keepalive.then_some(settings.keepalive_interval),
        keepalive_max: settings.keepalive_max,
        inactivity_timeout: None,
        preferred: russh::Preferred {
            cipher: Cow::Borrowed(&[
                russh::cipher::AES_256_GCM,
                russh::cipher::CHACHA20_POLY1305,
                russh::cipher::AES_256_CTR,
            ]),
            ..Default::default()
        },
        ..Default::default()
    }
}

impl Connection {
    /// TCP connect, key exchange, host key check against `~/.ssh/known_hosts`, the
    /// destination's UserKnownHostsFile entries and `/etc/ssh/ssh_known_hosts`, then
    /// authentication: ssh-agent keys first, then identity files (IdentityFile entries,
    /// then `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa`). Encrypted keys are skipped silently.
    /// Each hop is bounded by `settings.connect_timeout`.
    ///
    /// ProxyJump (`[user@]host[:port]`, comma-separated hops) is followed like OpenSSH: each
    /// hop is resolved through `~/.ssh/config` (its own ProxyJump is ignored), connected and
    /// verified in turn, and the next hop is reached over a `direct-tcpip` channel of the
    /// previous one. The jump connections live as long as the returned connection.
    ///
    /// # Errors
    /// [`SshError::Connect`], [`SshError::Timeout`], [`SshError::UnknownHostKey`],
    /// [`SshError::HostKeyChanged`], [`SshError::HostKeyRevoked`], [`SshError::Auth`],
    /// [`SshError::ProxyJumpUnsupported`] for a hop spec that cannot be parsed,
    /// [`SshError::Config`] or [`SshError::Protocol`].
    pub async fn connect(
        dest: &Destination,
        settings: &SshSettings,
    ) -> Result<Connection, SshError> {
        let mut via: Option<Connection> = None;
        if let Some(jump) = &dest.proxy_jump {
            let config_text = std::fs::read_to_string(settings.home.join(".ssh/config")).ok();
            for hop in jump.split(',') {
                let hop_dest =
                    resolve_hop(hop, config_text.as_deref(), settings).ok_or_else(|| {
                        SshError::ProxyJumpUnsupported {
                            host: dest.alias.clone(),
                            jump: jump.clone(),
                        }
                    })??;
                via = Some(Self::connect_hop(&hop_dest, settings, via).await?);
            }
        }
        Self::connect_hop(dest, settings, via).await
    }

    /// Connect to `dest` directly, or through `via` (a direct-tcpip channel) when given.
    async fn connect_hop(
        dest: &Destination,
        settings: &SshSettings,
        via: Option<Connection>,
    ) -> Result<Connection, SshError> {
        let host = dest.hostname.clone();
        let deadline = Instant::now() + settings.connect_timeout;
        let timed_out = |what| SshError::Timeout {
            host: host.clone(),
            what,
        };

        let verdict = Arc::new(Mutex::new(None));
        let handler = Verifier {
            host: host.clone(),
            port: dest.port,
            files: known_hosts::default_files(&settings.home, &dest.user_known_hosts),
            verdict: verdict.clone(),
        };
        let config = Arc::new(client_config(settings));
        let kex = match &via {
            None => {
                let tcp = timeout_at(
                    deadline,
                    tokio::net::TcpStream::connect((host.as_str(), dest.port)),
                )
                .await
                .map_err(|_| timed_out("TCP connect"))?
                .map_err(|source| SshError::Connect {
                    host: host.clone(),
                    port: dest.port,
                    source,
                })?;
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!("set_nodelay: {e}");
                }
                timeout_at(deadline, client::connect_stream(config, tcp, handler)).await
            }
            Some(jump) => {
                let tunnel = jump.inner.handle.channel_open_direct_tcpip(
                    host.clone(),
                    u32::from(dest.port),
                    "127.0.0.1",
                    0,
                );
                let channel = match timeout_at(deadline, tunnel).await {
                    Err(_) => return Err(timed_out("ProxyJump channel open")),
                    Ok(Ok(channel)) => channel,
                    // Here ConnectFailed means the jump host could not reach the target.
                    Ok(Err(russh::Error::ChannelOpenFailure(why))) => {
                        return Err(SshError::Connect {
                            host: host.clone(),
                            port: dest.port,
                            source: std::io::Error::other(format!(
                                "via ProxyJump {}: {why:?}",
                                jump.inner.dest.alias
                            )),
                        });
                    }
                    Ok(Err(e)) => return Err(SshError::from_russh(&jump.inner.dest.hostname, e)),
                };
                let stream = channel.into_stream();
                timeout_at(deadline, client::connect_stream(config, stream, handler)).await
            }
        };
        let mut handle = match kex {
            Err(_) => return Err(timed_out("key exchange")),
            Ok(Ok(handle)) => handle,
            Ok(Err(e)) => {
                let stored = verdict.lock().unwrap_or_else(|p| p.into_inner()).take();
                return Err(stored.unwrap_or_else(|| SshError::from_russh(&host, e)));
            }
        };

        match timeout_at(deadline, authenticate(&mut handle, dest, settings)).await {
            Err(_) => {
                abandon(&handle).await;
                return Err(timed_out("authentication"));
            }
            Ok(Err(e)) => {
                abandon(&handle).await;
                return Err(e);
            }
            Ok(Ok(())) => {}
        }
        tracing::debug!(host = %host, port = dest.port, user = %dest.user, "ssh connected");
        Ok(Connection {
            inner: Arc::new(Inner {
                handle,
                dest: dest.clone(),
                io_timeout: settings.io_timeout,
                _via: via,
            }),
        })
    }

    /// Open a session channel and request subsystem `name` (want_reply). `Ok(None)` when the
    /// server refuses it (the channel is closed again); otherwise the channel as a stream.
    ///
    /// # Errors
    /// [`SshError::SessionLimit`] when MaxSessions is reached, [`SshError::Timeout`] after
    /// `io_timeout` per step, [`SshError::Disconnected`] when the connection is gone.
    pub async fn open_subsystem(&self, name: &str) -> Result<Option<Stream>, SshError> {
        let channel = self.open_session().await?;
        let sent = self
            .io("subsystem request", channel.request_subsystem(true, name))
            .await;
        if let Err(e) = sent {
            let _ = channel.close().await;
            return Err(e);
        }
        self.await_reply(channel, "subsystem reply").await
    }

    /// Open a session channel and run `command` (want_reply).
    ///
    /// # Errors
    /// [`SshError::ExecRefused`] when the server refuses, plus those of [`Self::open_subsystem`].
    pub async fn open_exec(&self, command: &str) -> Result<Stream, SshError> {
        let channel = self.open_session().await?;
        let sent = self.io("exec request", channel.exec(true, command)).await;
        if let Err(e) = sent {
            let _ = channel.close().await;
            return Err(e);
        }
        self.await_reply(channel, "exec reply")
            .await?
            .ok_or_else(|| SshError::ExecRefused {
                host: self.inner.dest.hostname.clone(),
                command: command.to_string(),
            })
    }

    /// Whether the connection has ended (keepalive timeout, server gone, disconnected).
    pub fn is_closed(&self) -> bool {
        self.inner.handle.is_closed()
    }

    /// Where this connection goes.
    pub fn destination(&self) -> &Destination {
        &self.inner.dest
    }

    /// Say goodbye to the server (bounded by `io_timeout`; errors are ignored).
    pub async fn disconnect(&self) {
        let bye = self
            .inner
            .handle
            .disconnect(Disconnect::ByApplication, "", "en");
        let _ = timeout(self.inner.io_timeout, bye).await;
    }

    /// Run one channel step with `io_timeout`, mapping errors.
    async fn io<T>(
        &self,
        what: &'static str,
        fut: impl std::future::Future<Output = Result<T, russh::Error>>,
    ) -> Result<T, SshError> {
        let host = &self.inner.dest.hostname;
        match timeout(self.inner.io_timeout, fut).await {
            Err(_) => Err(SshError::Timeout {
                host: host.clone(),
                what,
            }),
            Ok(r) => r.map_err(|e| SshError::from_russh(host, e)),
        }
    }

    async fn open_session(&self) -> Result<russh::Channel<client::Msg>, SshError> {
        if self.is_closed() {
            return Err(SshError::Disconnected {
                host: self.inner.dest.hostname.clone(),
            });
        }
        self.io("channel open", self.inner.handle.channel_open_session())
            .await
    }

    /// Wait for the reply to a want_reply request: Success → the stream, Failure (or the
    /// channel ending first) → close it and `None`.
    async fn await_reply(
        &self,
        mut channel: russh::Channel<client::Msg>,
        what: &'static str,
    ) -> Result<Option<Stream>, SshError> {
        let host = self.inner.dest.hostname.clone();
        let deadline = Instant::now() + self.inner.io_timeout;
        loop {
            let msg = match timeout_at(deadline, channel.wait()).await {
                Err(_) => {
                    let _ = timeout(self.inner.io_timeout, channel.close()).await;
                    return Err(SshError::Timeout { host, what });
                }
                Ok(None) => return Err(SshError::Disconnected { host }),
                Ok(Some(msg)) => msg,
            };
            match msg {
                ChannelMsg::Success => return Ok(Some(channel.into_stream())),
                ChannelMsg::Failure | ChannelMsg::Eof | ChannelMsg::Close => {
                    let _ = timeout(self.inner.io_timeout, channel.close()).await;
                    return Ok(None);
                }
                ChannelMsg::Data { .. } | ChannelMsg::ExtendedData { .. } => {
                    // OpenSSH replies before the child's output can arrive; anything else
                    // would lose bytes, so refuse rather than corrupt the stream.
                    let _ = timeout(self.inner.io_timeout, channel.close()).await;
                    return Err(SshError::Protocol(russh::Error::Inconsistent));
                }
                _ => continue,
            }
        }
    }
}

/// Split a ProxyJump hop `[ssh://][user@]host[:port]` (host may be `[v6]`) into its parts;
/// `None` when it does not parse.
fn parse_hop(hop: &str) -> Option<(Option<&str>, &str, Option<u16>)> {
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
fn resolve_hop(
    hop: &str,
    config_text: Option<&str>,
    settings: &SshSettings,
) -> Option<Result<Destination, SshError>> {
    let (user, host, port) = parse_hop(hop)?;
    Some(
        super::ssh_config::resolve(
            host,
            user,
            config_text,
            &settings.home,
            &settings.local_user,
        )
        .map(|mut d| {
            if let Some(p) = port {
                d.port = p;
            }
            d.proxy_jump = None;
            d
        }),
    )
}

/// Best effort disconnect of a half-set-up connection.
async fn abandon(handle: &Handle<Verifier>) {
    let bye = handle.disconnect(Disconnect::ByApplication, "", "en");
    let _ = timeout(Duration::from_secs(1), bye).await;
}

/// Try ssh-agent keys, then identity files, until one is accepted.
async fn authenticate(
    handle: &mut Handle<Verifier>,
    dest: &Destination,
    settings: &SshSettings,
) -> Result<(), SshError> {
    let host = dest.hostname.clone();
    let user = dest.user.clone();
    let mut tried: Vec<String> = Vec::new();
    let mut offered: Vec<PublicKey> = Vec::new();
    // Asked at most once, and only for RSA keys: it can wait up to 1 s for EXT_INFO.
    let mut rsa_hash: Option<Option<keys::HashAlg>> = None;

    if let Some(sock) = &settings.agent_socket {
        match agent_identities(sock).await {
            Ok((mut agent, ids)) => {
                for id in ids {
                    let key = id.public_key().into_owned();
                    let hash = rsa_hash_for(handle, &key, &mut rsa_hash).await;
                    tried.push(format!(
                        "agent key {} {}",
                        key.algorithm().as_str(),
                        known_hosts::fingerprint(&key)
                    ));
                    let r = handle
                        .authenticate_publickey_with(user.clone(), key.clone(), hash, &mut agent)
                        .await;
                    offered.push(key);
                    match r {
                        Ok(r) if r.success() => return Ok(()),
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
    for default in DEFAULT_IDENTITIES {
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
            return Ok(());
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
async fn agent_identities(
    sock: &Path,
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
    Ok((agent, ids))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_host_key_message_names_host_fingerprint_and_fix() {
        let e = SshError::UnknownHostKey {
            host: "127.0.0.1".into(),
            port: 2222,
            key_type: "ssh-ed25519".into(),
            fingerprint: "SHA256:abc".into(),
        };
        let msg = e.to_string();
        assert!(msg.contains("[127.0.0.1]:2222"), "{msg}");
        assert!(msg.contains("ssh-ed25519 SHA256:abc"), "{msg}");
        assert!(
            msg.contains("ssh-keyscan -p 2222 -t ssh-ed25519 127.0.0.1 >> ~/.ssh/known_hosts"),
            "{msg}"
        );
        assert!(!e.is_transient());
        assert_eq!(e.exit_code(), ExitCode::SshFailed);
    }

    #[test]
    fn changed_host_key_message_names_file_line_and_fix() {
        let e = SshError::HostKeyChanged {
            host: "build1".into(),
            port: 22,
            fingerprint: "SHA256:xyz".into(),
            file: PathBuf::from("/home/a/.ssh/known_hosts"),
            line: 7,
        };
        let msg = e.to_string();
        assert!(msg.contains("CHANGED"), "{msg}");
        assert!(msg.contains("/home/a/.ssh/known_hosts:7"), "{msg}");
        assert!(msg.contains("ssh-keygen -R 'build1'"), "{msg}");
        assert!(msg.contains("SHA256:xyz"), "{msg}");
    }

    #[test]
    fn classification_and_exit_codes() {
        let t = SshError::Timeout {
            host: "h".into(),
            what: "TCP connect",
        };
        assert!(t.is_transient());
        assert_eq!(t.exit_code(), ExitCode::Timeout);
        let c = SshError::Connect {
            host: "h".into(),
            port: 22,
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        assert!(c.is_transient());
        assert_eq!(c.exit_code(), ExitCode::ConnectFailed);
        let s = SshError::from_russh(
            "h",
            russh::Error::ChannelOpenFailure(ChannelOpenFailure::ConnectFailed),
        );
        assert!(matches!(s, SshError::SessionLimit { .. }));
        assert!(s.is_transient());
        let a = SshError::Auth {
            host: "h".into(),
            user: "u".into(),
            tried: vec!["/k".into()],
        };
        assert!(!a.is_transient());
        assert_eq!(a.exit_code(), ExitCode::SshFailed);
        assert!(a.to_string().contains("/k"));
    }

    #[test]
    fn proxy_jump_hops_parse() {
        assert_eq!(parse_hop("bastion"), Some((None, "bastion", None)));
        assert_eq!(
            parse_hop("ops@bastion:2222"),
            Some((Some("ops"), "bastion", Some(2222)))
        );
        assert_eq!(
            parse_hop("ssh://ops@b.example"),
            Some((Some("ops"), "b.example", None))
        );
        assert_eq!(parse_hop("[::1]:2200"), Some((None, "::1", Some(2200))));
        assert_eq!(parse_hop("host:notaport"), None);
        assert_eq!(parse_hop("@host"), None);
        assert_eq!(parse_hop(""), None);
    }

    #[tokio::test]
    async fn unparseable_proxy_jump_is_refused_clearly() {
        let dest = Destination {
            alias: "inner".into(),
            hostname: "inner".into(),
            port: 22,
            user: "u".into(),
            identity_files: vec![],
            proxy_jump: Some("bastion:99999".into()),
            user_known_hosts: vec![],
        };
        let settings = test_settings(PathBuf::from("/nonexistent"));
        let err = Connection::connect(&dest, &settings).await.unwrap_err();
        assert!(
            matches!(err, SshError::ProxyJumpUnsupported { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("bastion:99999"));
    }

    #[tokio::test]
    async fn refused_tcp_connect_is_connect_error() {
        // Bind then drop to get a port that is (almost certainly) closed.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let dest = Destination {
            alias: "x".into(),
            hostname: "127.0.0.1".into(),
            port,
            user: "u".into(),
            identity_files: vec![],
            proxy_jump: None,
            user_known_hosts: vec![],
        };
        let err = Connection::connect(&dest, &test_settings(PathBuf::from("/nonexistent")))
            .await
            .unwrap_err();
        assert!(
            matches!(err, SshError::Connect { port: p, .. } if p == port),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn silent_server_times_out_in_key_exchange() {
        // A listener that accepts but never speaks SSH.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // The accepted socket is kept in the task's output until `hold` is dropped.
        let hold = tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) });
        let dest = Destination {
            alias: "x".into(),
            hostname: "127.0.0.1".into(),
            port,
            user: "u".into(),
            identity_files: vec![],
            proxy_jump: None,
            user_known_hosts: vec![],
        };
        let mut settings = test_settings(PathBuf::from("/nonexistent"));
        settings.connect_timeout = Duration::from_millis(300);
        let err = Connection::connect(&dest, &settings).await.unwrap_err();
        assert!(
            matches!(
                err,
                SshError::Timeout {
                    what: "key exchange",
                    ..
                }
            ),
            "{err:?}"
        );
        drop(hold);
    }

    #[test]
    fn settings_from_config_and_env() {
        let cfg = crate::config::Config::default();
        let env = |k: &str| match k {
            "SSH_AUTH_SOCK" => Some("/tmp/agent.sock".to_string()),
            "USER" => Some(String::new()),
            "LOGNAME" => Some("logname-user".to_string()),
            _ => None,
        };
        let s = SshSettings::from_config(&cfg, &env, PathBuf::from("/home/x"));
        assert_eq!(s.home, PathBuf::from("/home/x"));
        assert_eq!(s.agent_socket, Some(PathBuf::from("/tmp/agent.sock")));
        assert_eq!(s.local_user, "logname-user");
        assert_eq!(s.connect_timeout, cfg.ssh.connect_timeout);
        assert_eq!(s.io_timeout, cfg.ssh.io_timeout);
        assert_eq!(s.keepalive_max, cfg.ssh.keepalive_max as usize);
        let none = SshSettings::from_config(&cfg, &|_| None, PathBuf::from("/h"));
        assert_eq!(none.agent_socket, None);
        assert!(!none.local_user.is_empty());
    }

    fn test_settings(home: PathBuf) -> SshSettings {
        SshSettings {
            home,
            connect_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(15),
            keepalive_max: 3,
            io_timeout: Duration::from_secs(5),
            agent_socket: None,
            local_user: "u".into(),
        }
    }
}
