//! `hoardcc doctor [HOST]`: why a host is not used, and what to do about it. The path a
//! job takes is walked one step at a time, each step printed as one line with ✓ or ✗ and,
//! for ✗, the fix: ssh config resolution (`mux::ssh::config`), DNS, TCP connect, the host
//! key against known_hosts and authentication (`mux::ssh::Connection`), the subsystem or
//! exec route and the server's hello (`mux::lane::Lane`), and a real compile of a tiny C
//! file on that lane. The first fatal ✗ ends the walk; the steps after it are marked
//! skipped. Neighbours: `main` (dispatch), `cli::ping` (shares `load_farm`), `mux::lane`
//! and `mux::ssh` (the code under test, the same the mux runs).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::exit::ExitCode;
use crate::hosts::{HostKind, HostList, HostSpec};
use crate::mux::lane::{self, JobSpec, Lane, Route, TransportError};
use crate::mux::ssh::{known_hosts, Connection, Destination, SshError, SshSettings};
use crate::proto::{self, compress::MAX_BLOB, msg::JobHeader};

use super::compilers;
use super::ping::{load_farm, EXIT_UNUSABLE};

/// `hoardcc doctor` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct DoctorArgs {
    /// The host to check: an entry of the host list (as written, or its `user@host` key or
    /// ssh alias) or any entry in host-list syntax (`@buildbox`, `host:3632`). Every host
    /// of the list when omitted.
    #[arg(value_name = "HOST")]
    pub host: Option<String>,
}

/// A step's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// ✓ passed.
    Pass,
    /// ✗ failed; `fatal` failures end the walk.
    Fail { fatal: bool },
    /// Not run: an earlier step failed, or it does not apply to this route.
    Skipped,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// What was checked ("host key", "authentication", "compiler gcc", ...).
    pub name: String,
    /// The outcome.
    pub mark: Mark,
    /// What was found.
    pub detail: String,
    /// What to do about a ✗.
    pub fix: Option<String>,
}

impl Step {
    /// The printed line: `✓ name: detail`, `✗ name: detail — fix: …` or `- name: skipped`.
    pub fn line(&self) -> String {
        let symbol = match self.mark {
            Mark::Pass => "✓",
            Mark::Fail { .. } => "✗",
            Mark::Skipped => "-",
        };
        let mut s = format!("{symbol} {}: {}", self.name, self.detail);
        if let Some(fix) = &self.fix {
            s.push_str(" — fix: ");
            s.push_str(fix);
        }
        s
    }
}

/// A fatal ✗ was recorded: the walk stops.
struct Stop;

/// The steps of one host, in order, printed as they complete.
struct Checklist<'a> {
    names: &'static [&'static str],
    next: usize,
    steps: Vec<Step>,
    emit: &'a mut dyn FnMut(&Step),
}

impl Checklist<'_> {
    fn record(&mut self, step: Step) -> Result<(), Stop> {
        // The per-compiler steps ("compiler gcc") stand in the place of "compilers".
        let slot = if step.name.starts_with("compiler ") {
            "compilers"
        } else {
            step.name.as_str()
        };
        if let Some(i) = self.names.iter().position(|n| *n == slot) {
            self.next = self.next.max(i + 1);
        }
        (self.emit)(&step);
        let fatal = matches!(step.mark, Mark::Fail { fatal: true });
        self.steps.push(step);
        if fatal {
            Err(Stop)
        } else {
            Ok(())
        }
    }

    fn pass(&mut self, name: impl Into<String>, detail: String) -> Result<(), Stop> {
        self.record(Step {
            name: name.into(),
            mark: Mark::Pass,
            detail,
            fix: None,
        })
    }

    /// Record a fatal ✗: always `Err(Stop)`.
    fn fail<T>(&mut self, name: impl Into<String>, detail: String, fix: String) -> Result<T, Stop> {
        let _ = self.record(Step {
            name: name.into(),
            mark: Mark::Fail { fatal: true },
            detail,
            fix: Some(fix),
        });
        Err(Stop)
    }

    fn warn(&mut self, name: impl Into<String>, detail: String, fix: String) -> Result<(), Stop> {
        self.record(Step {
            name: name.into(),
            mark: Mark::Fail { fatal: false },
            detail,
            fix: Some(fix),
        })
    }

    fn skip(&mut self, name: impl Into<String>, detail: String) -> Result<(), Stop> {
        self.record(Step {
            name: name.into(),
            mark: Mark::Skipped,
            detail,
            fix: None,
        })
    }

    /// Mark every step not reached as skipped.
    fn skip_rest(&mut self) {
        for name in &self.names[self.next..] {
            let step = Step {
                name: name.to_string(),
                mark: Mark::Skipped,
                detail: "skipped".into(),
                fix: None,
            };
            (self.emit)(&step);
            self.steps.push(step);
        }
        self.next = self.names.len();
    }
}

const SSH_STEPS: &[&str] = &[
    "ssh config",
    "DNS",
    "TCP connect",
    "host key",
    "authentication",
    "route",
    "server version",
    "compilers",
    "compile",
];
const TCP_STEPS: &[&str] = &["DNS", "TCP connect", "route", "compile"];

/// The outcome of checking one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    /// The entry as written.
    pub entry: String,
    /// Every step, in order (skipped ones included).
    pub steps: Vec<Step>,
}

impl Diagnosis {
    /// False when a fatal ✗ was recorded.
    pub fn usable(&self) -> bool {
        !self
            .steps
            .iter()
            .any(|s| matches!(s.mark, Mark::Fail { fatal: true }))
    }
}

/// Walk every step for `spec`, calling `emit` as each line is known.
pub async fn diagnose(
    spec: &HostSpec,
    settings: &SshSettings,
    emit: &mut dyn FnMut(&Step),
) -> Diagnosis {
    let names = match spec.kind {
        HostKind::Ssh { .. } => SSH_STEPS,
        HostKind::Tcp { .. } => TCP_STEPS,
        HostKind::Local => &[][..],
    };
    let mut list = Checklist {
        names,
        next: 0,
        steps: Vec::new(),
        emit,
    };
    let walked = match &spec.kind {
        HostKind::Ssh {
            user,
            host,
            command,
        } => {
            walk_ssh(
                &mut list,
                spec,
                host,
                user.as_deref(),
                command.as_deref(),
                settings,
            )
            .await
        }
        HostKind::Tcp { host, port } => walk_tcp(&mut list, spec, host, *port, settings).await,
        HostKind::Local => Ok(()),
    };
    if walked.is_err() {
        list.skip_rest();
    }
    Diagnosis {
        entry: spec.token.clone(),
        steps: list.steps,
    }
}

async fn walk_tcp(
    list: &mut Checklist<'_>,
    spec: &HostSpec,
    host: &str,
    port: u16,
    settings: &SshSettings,
) -> Result<(), Stop> {
    let addrs = check_dns(list, host, port, settings).await?;
    check_tcp(list, host, port, &addrs, settings, "distccd").await?;
    let mut lane = match Lane::open(spec, settings).await {
        Ok(l) => l,
        Err(e) => {
            return list.fail(
                "route",
                e.to_string(),
                format!("is distccd listening on {host}:{port}?"),
            )
        }
    };
    list.pass("route", format!("stock distccd over TCP at {host}:{port}"))?;
    check_compile(list, &mut lane, settings, &format!("{host}:{port}")).await
}

async fn walk_ssh(
    list: &mut Checklist<'_>,
    spec: &HostSpec,
    alias: &str,
    user: Option<&str>,
    command: Option<&str>,
    settings: &SshSettings,
) -> Result<(), Stop> {
    // 1. What OpenSSH would dial.
    let dest = match crate::mux::ssh::config::destination(alias, user, settings) {
        Ok(d) => d,
        Err(e) => {
            return list.fail(
                "ssh config",
                e.to_string(),
                format!("correct ~/.ssh/config (`ssh -G {alias}` shows how OpenSSH reads it)"),
            )
        }
    };
    list.pass("ssh config", describe_destination(&dest, settings))?;

    // 2, 3. DNS and TCP of the first hop; through a ProxyJump the jump host does both.
    if let Some(jump) = &dest.proxy_jump {
        let why = format!("reached through ProxyJump {jump} (checked by the host key step)");
        list.skip("DNS", why.clone())?;
        list.skip("TCP connect", why)?;
    } else {
        let addrs = check_dns(list, &dest.hostname, dest.port, settings).await?;
        check_tcp(list, &dest.hostname, dest.port, &addrs, settings, "sshd").await?;
    }

    // 4, 5. Key exchange, host key, authentication: the connection the mux would make.
    let conn = connect(list, &dest, settings).await?;

    // 6, 7. The lane, its route and the server's hello.
    let opened = Lane::on_connection(conn.clone(), spec, command, settings).await;
    let mut lane = match opened {
        Ok(l) => l,
        Err(e) => return route_failed(list, &e, &dest, command),
    };
    let server = &dest.alias;
    match lane.route().clone() {
        Route::Subsystem => list.pass("route", "the hoardcc sshd subsystem".into())?,
        Route::Exec { command } => list.pass("route", format!("exec `{command} serve`"))?,
        Route::DistccdSsh {
            command,
            subsystem_refused: false,
        } => list.pass(
            "route",
            format!("stock `{command} --inetd` on an exec channel"),
        )?,
        Route::DistccdSsh {
            command,
            subsystem_refused: true,
        } => list.warn(
            "route",
            format!(
                "sshd on {server} has no `hoardcc` subsystem; trying stock `{command} --inetd` \
                 on an exec channel"
            ),
            format!(
                "add `Subsystem hoardcc /usr/bin/hoardcc serve` to the server's sshd_config \
                 and reload sshd, or install hoardcc without root and name it in the host \
                 entry: `hoardcc install-server @{server}`, then use @{server}:~/.local/bin/hoardcc"
            ),
        )?,
        Route::DistccdTcp => list.pass("route", "stock distccd over TCP".into())?,
    }
    match &lane.server_hello {
        Some(hello) => {
            let ours = format!("hoardcc {}", env!("CARGO_PKG_VERSION"));
            let mut detail = format!(
                "{} (protocol {}; {} slots, {} in use)",
                hello.agent,
                lane.version(),
                hello.slots,
                hello.load
            );
            if !hello.agent.starts_with(&format!("{ours} ")) && hello.agent != ours {
                detail.push_str(&format!("; this client is {ours}"));
            }
            list.pass("server version", detail)?;
        }
        None => list.skip(
            "server version",
            "stock distccd does not report its version".into(),
        )?,
    }

    // 8. This machine's compilers against the server's.
    check_compilers(list, &mut lane, settings, server).await?;

    // 9. A real job.
    check_compile(list, &mut lane, settings, server).await
}

/// `HostName h, User u, Port p, IdentityFile …, ProxyJump …`.
fn describe_destination(d: &Destination, settings: &SshSettings) -> String {
    let files = if d.identity_files.is_empty() {
        "~/.ssh/id_{ed25519,ecdsa,rsa}".to_string()
    } else {
        d.identity_files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let agent = if settings.agent_socket.is_some() {
        "ssh-agent first, then "
    } else {
        ""
    };
    format!(
        "HostName {}, User {}, Port {}, IdentityFile {agent}{files}, ProxyJump {}",
        d.hostname,
        d.user,
        d.port,
        d.proxy_jump.as_deref().unwrap_or("none")
    )
}

async fn check_dns(
    list: &mut Checklist<'_>,
    host: &str,
    port: u16,
    settings: &SshSettings,
) -> Result<Vec<SocketAddr>, Stop> {
    let looked = tokio::time::timeout(
        settings.connect_timeout,
        tokio::net::lookup_host((host, port)),
    )
    .await;
    let fix = || format!("check the name {host:?} (HostName in ~/.ssh/config, /etc/hosts or DNS)");
    match looked {
        Err(_) => list.fail(
            "DNS",
            format!("no answer for {host} within {:?}", settings.connect_timeout),
            fix(),
        ),
        Ok(Err(e)) => list.fail("DNS", format!("cannot resolve {host}: {e}"), fix()),
        Ok(Ok(addrs)) => {
            let mut addrs: Vec<SocketAddr> = addrs.take(16).collect();
            addrs.dedup();
            let shown: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
            list.pass("DNS", format!("{host} → {}", shown.join(", ")))?;
            Ok(addrs)
        }
    }
}

async fn check_tcp(
    list: &mut Checklist<'_>,
    host: &str,
    port: u16,
    addrs: &[SocketAddr],
    settings: &SshSettings,
    daemon: &str,
) -> Result<(), Stop> {
    let mut last = String::from("no address");
    for addr in addrs {
        let start = Instant::now();
        let dial = tokio::time::timeout(
            settings.connect_timeout,
            tokio::net::TcpStream::connect(addr),
        );
        match dial.await {
            Ok(Ok(_stream)) => {
                let ms = start.elapsed().as_secs_f64() * 1000.0;
                return list.pass("TCP connect", format!("{addr} in {ms:.1} ms"));
            }
            Ok(Err(e)) => last = format!("{addr}: {e}"),
            Err(_) => last = format!("{addr}: no answer within {:?}", settings.connect_timeout),
        }
    }
    list.fail(
        "TCP connect",
        format!("cannot connect to {host} port {port} ({last})"),
        format!(
            "is {daemon} running on {host} and listening on port {port}? (check the Port, \
             the host's firewall, `nc -vz {host} {port}`)"
        ),
    )
}

/// Key exchange, host key check and authentication, as one `Connection::connect`; its
/// error says which step failed.
async fn connect(
    list: &mut Checklist<'_>,
    dest: &Destination,
    settings: &SshSettings,
) -> Result<Connection, Stop> {
    let err = match Connection::connect(dest, settings).await {
        Ok(conn) => {
            list.pass(
                "host key",
                format!(
                    "{} matches known_hosts for {}",
                    conn.host_key(),
                    known_hosts::lookup_name(&dest.hostname, dest.port)
                ),
            )?;
            list.pass(
                "authentication",
                format!("{} accepted {}", dest.user, conn.authenticated_with()),
            )?;
            return Ok(conn);
        }
        Err(e) => e,
    };
    let known_hosts_file = dest
        .user_known_hosts
        .first()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "~/.ssh/known_hosts".into());
    let alias = &dest.alias;
    match &err {
        SshError::UnknownHostKey {
            host,
            port,
            key_type,
            fingerprint,
        } => list.fail(
            "host key",
            format!(
                "{} presented {key_type} {fingerprint}, which no known_hosts file lists",
                known_hosts::lookup_name(host, *port)
            ),
            format!(
                "check that {fingerprint} is the server's key, then run: \
                 ssh-keyscan -p {port} {host} >> {known_hosts_file}   (or connect once with: ssh {alias})"
            ),
        ),
        SshError::HostKeyChanged {
            host,
            port,
            fingerprint,
            file,
            line,
        } => {
            let name = known_hosts::lookup_name(host, *port);
            list.fail(
                "host key",
                format!(
                    "{name} presented {fingerprint}, but {}:{line} holds another key: \
                     possibly a man-in-the-middle attack, or a reinstalled server",
                    file.display()
                ),
                format!(
                    "only if the change is legitimate: ssh-keygen -R '{name}' -f {}, then \
                     ssh-keyscan -p {port} {host} >> {known_hosts_file}",
                    file.display()
                ),
            )
        }
        SshError::HostKeyRevoked {
            fingerprint,
            file,
            line,
            ..
        } => list.fail(
            "host key",
            format!("{fingerprint} is revoked ({}:{line})", file.display()),
            "the server's key was revoked on purpose: ask its administrator for the new one"
                .into(),
        ),
        SshError::Auth { user, tried, .. } => {
            list.pass(
                "host key",
                format!(
                    "matches known_hosts for {}",
                    known_hosts::lookup_name(&dest.hostname, dest.port)
                ),
            )?;
            let tried = if tried.is_empty() {
                "no usable key: none in ssh-agent, no unencrypted identity file".to_string()
            } else {
                format!("tried {}", tried.join(", "))
            };
            list.fail(
                "authentication",
                format!("{user}@{} refused every identity ({tried})", dest.hostname),
                format!(
                    "check the login name {user:?} (User in ~/.ssh/config, or USER@ in the \
                     host entry) and that your public key is in ~{user}/.ssh/authorized_keys \
                     on the server (ssh-copy-id -p {} {user}@{}); a key with a passphrase must \
                     be in ssh-agent (ssh-add): hoardcc never prompts",
                    dest.port, dest.hostname
                ),
            )
        }
        SshError::Timeout {
            what: "authentication",
            ..
        } => {
            list.pass("host key", "matches known_hosts".into())?;
            list.fail(
                "authentication",
                err.to_string(),
                "a stuck ssh-agent? check `ssh-add -l`; or raise connect_timeout_secs".into(),
            )
        }
        _ => list.fail(
            "host key",
            err.to_string(),
            format!("try `ssh -v {alias} true` to see where the connection stops"),
        ),
    }
}

/// The lane did not open: say which part of the route failed.
fn route_failed(
    list: &mut Checklist<'_>,
    err: &TransportError,
    dest: &Destination,
    command: Option<&str>,
) -> Result<(), Stop> {
    let alias = &dest.alias;
    if let TransportError::Proto(proto::Error::Version { .. }) = err {
        list.pass("route", "the server answered".into())?;
        return list.fail(
            "server version",
            err.to_string(),
            format!("install this hoardcc version on the server: hoardcc install-server @{alias}"),
        );
    }
    let what = match command {
        Some(c) if lane::is_hoardcc_command(c) => format!("exec `{c} serve`"),
        Some(c) => format!("exec `{c} --inetd`"),
        None => "the hoardcc subsystem".to_string(),
    };
    let fix = match (err, command) {
        (TransportError::Ssh(SshError::ExecRefused { .. }), _) => format!(
            "sshd on {alias} refuses commands for this account (ForceCommand or a \
             restrict,command= key?): use the subsystem or the key's own command"
        ),
        (TransportError::Ssh(SshError::SessionLimit { .. }), _) => {
            format!("sshd on {alias} allows no more sessions: raise MaxSessions in its sshd_config")
        }
        (TransportError::Proto(proto::Error::Garbage { .. }), _) => format!(
            "something prints to stdout when a shell starts on {alias} (~/.bashrc, \
             ~/.profile): make it quiet for non-interactive shells"
        ),
        (_, Some(c)) => format!(
            "is {c} installed on {alias}? check with `ssh {alias} {c} --version`, or \
             install it: hoardcc install-server @{alias}"
        ),
        (_, None) => format!(
            "the Subsystem line in {alias}'s sshd_config must name an existing hoardcc: \
             `Subsystem hoardcc /usr/bin/hoardcc serve`"
        ),
    };
    list.fail("route", format!("{what} failed: {err}"), fix)
}

/// Which entries to check: `HOST` found in the configured list (as written, by key or by
/// alias), else parsed as an entry; every remote entry of the list without `HOST`.
fn targets(arg: Option<&str>, list: &HostList, configured: Option<&HostList>) -> Vec<HostSpec> {
    let Some(arg) = arg else {
        return list
            .hosts
            .iter()
            .filter(|h| !h.is_local())
            .cloned()
            .collect();
    };
    let matches = |h: &&HostSpec| {
        h.token == arg
            || h.key() == arg
            || matches!(&h.kind, HostKind::Ssh { host, .. } if host == arg || format!("@{host}") == arg)
    };
    if let Some(found) = configured.and_then(|c| c.hosts.iter().find(matches)) {
        return vec![found.clone()];
    }
    list.hosts.clone()
}

/// `hoardcc doctor`.
pub fn main(args: DoctorArgs) -> std::process::ExitCode {
    // A HOST that is in the configured list is checked as written there.
    let named: Vec<String> = args.host.iter().cloned().collect();
    let farm = match load_farm(&named) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("hoardcc doctor: {e}");
            return e.exit_code().into();
        }
    };
    if args.host.is_some() && farm.list.hosts.len() != 1 {
        eprintln!("hoardcc doctor: give one host");
        return ExitCode::BadArguments.into();
    }
    let targets = targets(args.host.as_deref(), &farm.list, farm.configured.as_ref());
    if targets.is_empty() {
        println!("only localhost is listed: nothing to check");
        return std::process::ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hoardcc doctor: cannot start a runtime: {e}");
            return ExitCode::DistccFailed.into();
        }
    };
    // A one-line compile needs no five-minute io_timeout: a stuck server is reported
    // within a minute.
    let mut settings = farm.settings.clone();
    settings.io_timeout = settings.io_timeout.min(DOCTOR_IO_TIMEOUT);
    let mut all_usable = true;
    for (i, spec) in targets.iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!("{} ({})", spec.token, spec.key());
        let mut emit = |s: &Step| {
            use std::io::Write;
            println!("  {}", s.line());
            let _ = std::io::stdout().flush();
        };
        let d = runtime.block_on(diagnose(spec, &settings, &mut emit));
        if spec.is_local() {
            println!("  ✓ localhost: compiles on this machine");
        } else if d.usable() {
            println!("{} is usable", spec.token);
        } else {
            println!("{} is NOT usable", spec.token);
            all_usable = false;
        }
    }
    runtime.shutdown_timeout(Duration::from_millis(500));
    if all_usable {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(EXIT_UNUSABLE)
    }
}

mod compile;
use compile::{check_compile, check_compilers, DOCTOR_IO_TIMEOUT};

#[cfg(test)]
mod tests;
