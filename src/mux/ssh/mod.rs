//! Stage: connections, the SSH client. The only code that knows russh: [`Connection::connect`]
//! dials a [`Destination`] (resolved by [`config::destination`]), verifies the host key
//! against known_hosts with [`known_hosts`] (fail closed, never trust on first use),
//! authenticates with [`auth`] (ssh-agent and identity files, never prompting: make has no
//! tty), and then opens session channels for the `hoardcc` subsystem or an exec command;
//! failures are [`error::SshError`]. Neighbours: `mux::lane` and `mux::pool` (callers),
//! sshd (the other end).
//!
//! Client settings follow the measurements in notes/russh.md: `nodelay` (Nagle costs ~44 ms
//! per job), a 16 MiB window, AES-GCM first, keepalives so a dead peer is noticed (every
//! `keepalive_interval`, or the host's ServerAliveInterval / ServerAliveCountMax from
//! `~/.ssh/config`: [`Keepalive`]).

pub mod auth;
pub mod config;
pub mod error;
pub mod exec;
pub mod keyfile;
pub mod known_hosts;

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::{ChannelMsg, Disconnect};
use tokio::time::{timeout, timeout_at, Instant};
use tokio_util::sync::CancellationToken;

use auth::authenticate;
use config::resolve_hop;
pub use config::Destination;
pub use error::SshError;
pub use exec::ExecOutput;
use known_hosts::Verifier;

/// A bidirectional byte stream over one SSH channel (AsyncRead + AsyncWrite). Dropping it
/// sends CLOSE, which frees the server's MaxSessions slot.
pub type Stream = russh::ChannelStream<russh::client::Msg>;

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

/// The keepalive of one connection: a request every `interval` (zero: none), and the
/// connection declared dead after `max` unanswered ones (zero: never).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Interval between keepalive requests; zero disables them.
    pub interval: Duration,
    /// Unanswered requests before the connection ends with a keepalive timeout.
    pub max: usize,
}

impl Keepalive {
    /// The host's ServerAliveInterval and ServerAliveCountMax from `~/.ssh/config` where
    /// set, else `keepalive_interval_secs` / `keepalive_max` of the `[ssh]` settings.
    pub fn for_destination(dest: &Destination, settings: &SshSettings) -> Keepalive {
        Keepalive {
            interval: dest
                .server_alive_interval
                .unwrap_or(settings.keepalive_interval),
            max: dest
                .server_alive_count_max
                .map_or(settings.keepalive_max, |m| m as usize),
        }
    }
}

struct Inner {
    handle: Handle<Verifier>,
    /// Cancelled when the session has ended (see [`Connection::closed`]).
    ended: CancellationToken,
    keepalive: Keepalive,
    dest: Destination,
    io_timeout: Duration,
    /// The server's host key as accepted, `TYPE SHA256:…`.
    host_key: String,
    /// The identity the server accepted (see [`Connection::authenticated_with`]).
    auth: String,
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

/// russh client configuration for a connection with `keepalive` (see notes/russh.md §4).
fn client_config(keepalive: Keepalive) -> client::Config {
    client::Config {
        nodelay: true,
        window_size: 16 << 20,
        keepalive_interval: (!keepalive.interval.is_zero()).then_some(keepalive.interval),
        keepalive_max: keepalive.max,
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
            for hop in jump.split(',') {
                let hop_dest = resolve_hop(hop, settings).ok_or_else(|| {
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
        let accepted = Arc::new(Mutex::new(None));
        let ended = CancellationToken::new();
        let handler = Verifier {
            host: host.clone(),
            port: dest.port,
            files: known_hosts::default_files(&settings.home, &dest.user_known_hosts),
            verdict: verdict.clone(),
            accepted: accepted.clone(),
            _ended: ended.clone().drop_guard(),
        };
        let keepalive = Keepalive::for_destination(dest, settings);
        let config = Arc::new(client_config(keepalive));
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

        let auth = match timeout_at(deadline, authenticate(&mut handle, dest, settings)).await {
            Err(_) => {
                abandon(&handle).await;
                return Err(timed_out("authentication"));
            }
            Ok(Err(e)) => {
                abandon(&handle).await;
                return Err(e);
            }
            Ok(Ok(identity)) => identity,
        };
        let host_key = accepted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default();
        tracing::debug!(host = %host, port = dest.port, user = %dest.user, "ssh connected");
        Ok(Connection {
            inner: Arc::new(Inner {
                handle,
                ended,
                keepalive,
                dest: dest.clone(),
                io_timeout: settings.io_timeout,
                host_key,
                auth,
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

    /// Completes when the session has ended (the connection was cut, timed out on
    /// keepalives, or was closed). A channel writer that waits for window space is not
    /// woken by russh when the session ends, so a job on the connection must also wait on
    /// this. Cancel-safe.
    pub async fn closed(&self) {
        self.inner.ended.cancelled().await;
    }

    /// The keepalive this connection runs with.
    pub fn keepalive(&self) -> Keepalive {
        self.inner.keepalive
    }

    /// Where this connection goes.
    pub fn destination(&self) -> &Destination {
        &self.inner.dest
    }

    /// The server's host key that known_hosts vouched for, as `TYPE SHA256:…`.
    pub fn host_key(&self) -> &str {
        &self.inner.host_key
    }

    /// The identity the server accepted: `ssh-agent key TYPE SHA256:…` or the identity
    /// file's path (for `hoardcc doctor`).
    pub fn authenticated_with(&self) -> &str {
        &self.inner.auth
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

/// Best effort disconnect of a half-set-up connection.
async fn abandon(handle: &Handle<Verifier>) {
    let bye = handle.disconnect(Disconnect::ByApplication, "", "en");
    let _ = timeout(Duration::from_secs(1), bye).await;
}

#[cfg(test)]
mod tests;
