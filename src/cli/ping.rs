//! `hoardcc ping [HOST…]`: distcc's missing `--ping`. Every host of the host list (or the
//! hosts named, in host-list syntax) is reached at once, each within one deadline, with the
//! lane code the mux itself uses (`mux::lane::Lane` over `mux::ssh`, no mux needed), and
//! reported on one line: reachable or not, the route, the server's version, slots and load
//! (its hello), the round trip of a `Ping` on the lane, and which of this machine's
//! compilers the server has (`cli::compilers`). `--json` prints the same report
//! for scripts; `--hosts-ok` prints only the usable entries, ready for `HOARDCC_HOSTS`.
//! Neighbours: `main` (dispatch), `hosts` and `config` (the list and settings),
//! `mux::lane` (the probe), `cli::doctor` (shares [`load_farm`]).

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use super::compilers::{self, CompilerMatch, LocalCompiler};
use crate::config::{Config, ConfigError};
use crate::exit::ExitCode;
use crate::hosts::{self, HostList, HostSpec, HostsError};
use crate::mux::lane::{Lane, Route, TransportError};
use crate::mux::ssh::{SshError, SshSettings};
use crate::paths::Paths;

/// Default for `--timeout`.
pub const DEFAULT_TIMEOUT_SECS: f64 = 5.0;
/// Bound on `--timeout` (a ping that waits longer is not a ping).
const MAX_TIMEOUT_SECS: f64 = 600.0;
/// Bound on the error text kept per host.
const MAX_ERROR_TEXT: usize = 600;
/// Exit status when a host is not usable (like ping(8) without an answer).
pub const EXIT_UNUSABLE: u8 = 1;

/// `hoardcc ping` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct PingArgs {
    /// Hosts to ping, in host-list syntax (`@buildbox`, `user@host:/path/hoardcc`,
    /// `host:3632`); the whole host list when none is given.
    #[arg(value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Deadline for each host, in seconds: connect, handshake and round trip together.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_TIMEOUT_SECS, value_parser = parse_timeout)]
    pub timeout: f64,
    /// Print the report as JSON.
    #[arg(long, conflicts_with = "hosts_ok")]
    pub json: bool,
    /// Print only the usable host entries, space-separated, ready for HOARDCC_HOSTS.
    #[arg(long)]
    pub hosts_ok: bool,
}

fn parse_timeout(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= MAX_TIMEOUT_SECS => Ok(v),
        Ok(_) => Err(format!(
            "must be more than 0 and at most {MAX_TIMEOUT_SECS}"
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Why `ping` or `doctor` could not even start.
#[derive(Debug, thiserror::Error)]
pub enum FarmError {
    /// The hoardcc config is broken.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A host list (the configured one, or the hosts named) does not parse.
    #[error("{0}")]
    Hosts(#[from] HostsError),
    /// No host list is set anywhere.
    #[error("no hosts are set (HOARDCC_HOSTS, DISTCC_HOSTS, config file, ~/.distcc/hosts, /etc/distcc/hosts)")]
    NoHosts,
}

impl FarmError {
    /// The distcc exit code for this failure.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            FarmError::Config(_) => ExitCode::BadArguments,
            FarmError::Hosts(_) => ExitCode::BadHostspec,
            FarmError::NoHosts => ExitCode::NoHosts,
        }
    }
}

/// The hosts to check and how to reach them, from the environment and config files.
pub struct Farm {
    /// The hosts to check: those named, else the configured host list.
    pub list: HostList,
    /// The configured host list, when there is one (`doctor` looks names up in it).
    pub configured: Option<HostList>,
    /// SSH settings, as the mux would use them.
    pub settings: SshSettings,
    /// The loaded config.
    pub config: Config,
}

/// Load config and host list the way the wrapper does. `named` (host-list syntax, joined
/// by spaces) replaces the configured list when not empty.
///
/// # Errors
/// [`FarmError`] for a broken config, an unparsable list, or no list at all.
pub fn load_farm(named: &[String]) -> Result<Farm, FarmError> {
    let env = |k: &str| std::env::var(k).ok();
    let paths = Paths::from_env(&env);
    let config = crate::config::load(&paths, &env)?;
    let file = paths.config_file();
    let read = |p: &Path| std::fs::read_to_string(p).ok();
    let configured = hosts::resolve(
        &env,
        config.hosts.as_deref().map(|h| (h, file.as_path())),
        paths.home.as_deref(),
        &read,
    );
    let list = if named.is_empty() {
        None
    } else {
        Some(hosts::parse(&named.join(" "))?)
    };
    let configured = match (configured, &list) {
        (Ok(c), _) => c.map(|(l, _)| l),
        // A broken configured list does not matter when hosts are named.
        (Err(_), Some(_)) => None,
        (Err(e), None) => return Err(e.into()),
    };
    let list = match list.or_else(|| configured.clone()) {
        Some(l) if !l.is_empty() => l,
        _ => return Err(FarmError::NoHosts),
    };
    let home = paths.home.clone().unwrap_or_else(|| PathBuf::from("/"));
    let settings = SshSettings::from_config(&config, &env, home);
    Ok(Farm {
        list,
        configured,
        settings,
        config,
    })
}

/// What `ping` found out about one host entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostPing {
    /// The entry as written in the host list.
    pub entry: String,
    /// The host's key (`user@host`, `host:port`, `localhost`).
    pub host: String,
    /// Jobs can be sent there (or, for `localhost`, run here).
    pub usable: bool,
    /// A connection to the server was made (false when DNS, TCP or the deadline failed).
    pub reachable: bool,
    /// `,down` in the host list: not probed, and not counted against the exit status.
    pub down: bool,
    /// `subsystem`, `exec`, `distccd-ssh`, `distccd-tcp` or `local`; absent when no lane
    /// was opened.
    pub route: Option<String>,
    /// The command the lane runs on the server (exec and distccd-ssh routes).
    pub command: Option<String>,
    /// True when `@host` fell back to `distccd` because sshd has no `hoardcc` subsystem.
    pub subsystem_refused: bool,
    /// The server's agent string (`hoardcc 0.1.0 on NAME`); hoardcc servers only.
    pub server: Option<String>,
    /// The negotiated protocol version; hoardcc servers only.
    pub protocol: Option<u32>,
    /// Concurrent compiles the server's slot directory allows; hoardcc servers only.
    pub slots: Option<u32>,
    /// Compiles holding a slot there now; hoardcc servers only.
    pub load: Option<u32>,
    /// Milliseconds to open the lane (connection, authentication, channel, hellos).
    pub connect_ms: Option<f64>,
    /// Milliseconds for a `Ping`/`Pong` on the open lane; hoardcc servers only.
    pub rtt_ms: Option<f64>,
    /// Each local compiler (`cc`, `gcc`, … found on PATH) against the server's: which
    /// server compiler has its identity, or why none. Absent when the server cannot list
    /// its compilers (stock distccd, an older hoardcc) or this machine's did not finish
    /// probing within the deadline.
    pub compilers: Option<Vec<CompilerMatch>>,
    /// Why the host is not usable.
    pub error: Option<String>,
}

impl HostPing {
    fn new(spec: &HostSpec) -> HostPing {
        HostPing {
            entry: spec.token.clone(),
            host: spec.key(),
            usable: false,
            reachable: false,
            down: spec.down,
            route: None,
            command: None,
            subsystem_refused: false,
            server: None,
            protocol: None,
            slots: None,
            load: None,
            connect_ms: None,
            rtt_ms: None,
            compilers: None,
            error: None,
        }
    }

    fn failed(mut self, reachable: bool, error: String) -> HostPing {
        self.reachable = reachable;
        self.error = Some(error.chars().take(MAX_ERROR_TEXT).collect());
        self
    }
}

/// The whole `ping` report (`--json` prints this).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PingReport {
    /// The per-host deadline, in seconds.
    pub timeout_secs: f64,
    /// Host entries checked (`,down` ones excluded).
    pub checked: usize,
    /// How many of those are usable.
    pub usable: usize,
    /// One entry per host of the list, in list order.
    pub hosts: Vec<HostPing>,
}

impl PingReport {
    /// True when every checked host is usable (the exit status is then 0).
    pub fn all_usable(&self) -> bool {
        self.checked == self.usable
    }
}

/// Failures that happen before the server could have been reached: no connection was made.
fn unreachable(e: &TransportError) -> bool {
    match e {
        TransportError::TcpConnect { .. } | TransportError::Timeout("TCP connect") => true,
        TransportError::Ssh(s) => matches!(
            s,
            SshError::Config(_)
                | SshError::Connect { .. }
                | SshError::ProxyJumpUnsupported { .. }
                | SshError::Timeout {
                    what: "TCP connect",
                    ..
                }
        ),
        _ => false,
    }
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

/// This machine's compilers, probed once for every host, starting at once in the
/// background (a host's task waits for them only once its lane is open).
#[derive(Clone)]
pub struct Locals {
    cell: Arc<OnceCell<Vec<LocalCompiler>>>,
    path: Option<OsString>,
}

impl Locals {
    /// Start probing the compilers on `path` (the local `PATH`). Needs a runtime.
    pub fn start(path: Option<OsString>) -> Locals {
        let locals = Locals {
            cell: Arc::new(OnceCell::new()),
            path,
        };
        let early = locals.clone();
        tokio::spawn(async move {
            early.get().await;
        });
        locals
    }

    async fn get(&self) -> &[LocalCompiler] {
        self.cell
            .get_or_init(|| compilers::local_compilers(self.path.as_deref()))
            .await
    }
}

/// Reach one host within `deadline`: open a lane as the mux would, ping it, and (with
/// `locals`) match this machine's compilers against the server's.
pub async fn probe(
    spec: &HostSpec,
    settings: &SshSettings,
    deadline: Duration,
    locals: Option<&Locals>,
) -> HostPing {
    let out = HostPing::new(spec);
    if spec.is_local() {
        return HostPing {
            usable: true,
            reachable: true,
            route: Some("local".into()),
            ..out
        };
    }
    if spec.down {
        return out.failed(false, "marked down in the host list (,down)".into());
    }
    let start = Instant::now();
    let give_up = tokio::time::Instant::now() + deadline;
    let opened = tokio::time::timeout_at(give_up, Lane::open(spec, settings)).await;
    let mut lane = match opened {
        Err(_) => return out.failed(false, format!("no answer within {deadline:?}")),
        Ok(Err(e)) => return out.failed(!unreachable(&e), e.to_string()),
        Ok(Ok(lane)) => lane,
    };
    let mut out = HostPing {
        reachable: true,
        connect_ms: Some(millis(start.elapsed())),
        ..out
    };
    describe_route(&mut out, &lane);
    if lane.reusable() {
        let left = give_up.saturating_duration_since(tokio::time::Instant::now());
        match lane.ping(left).await {
            Ok(rtt) => out.rtt_ms = Some(millis(rtt)),
            Err(e) => return out.failed(true, format!("ping on the lane: {e}")),
        }
    }
    if let Some(locals) = locals {
        let left = give_up.saturating_duration_since(tokio::time::Instant::now());
        match lane.compilers(left).await {
            Ok(Some(offered)) => {
                if let Ok(here) = tokio::time::timeout_at(give_up, locals.get()).await {
                    let matches = compilers::match_all(here, &offered);
                    let none = !matches.is_empty() && !matches.iter().any(|m| m.matched());
                    out.compilers = Some(matches);
                    if none {
                        return out.failed(
                            true,
                            "no compiler of this machine has its match on the server".into(),
                        );
                    }
                }
            }
            Ok(None) => {}
            Err(e) => return out.failed(true, format!("asking for the server's compilers: {e}")),
        }
    }
    out.usable = true;
    drop(lane);
    out
}

/// Fill in what the open lane says about its server.
fn describe_route(out: &mut HostPing, lane: &Lane) {
    out.route = Some(lane.route().name().into());
    match lane.route() {
        Route::Exec { command } => out.command = Some(command.clone()),
        Route::DistccdSsh {
            command,
            subsystem_refused,
        } => {
            out.command = Some(command.clone());
            out.subsystem_refused = *subsystem_refused;
        }
        Route::Subsystem | Route::DistccdTcp => {}
    }
    if let Some(h) = &lane.server_hello {
        out.server = Some(h.agent.chars().take(MAX_ERROR_TEXT).collect());
        out.protocol = Some(lane.version());
        out.slots = Some(h.slots);
        out.load = Some(h.load);
    }
}

/// Ping every host of `list` at once, each within `deadline`; results in list order.
pub async fn ping_all(
    list: &HostList,
    settings: &SshSettings,
    deadline: Duration,
    locals: Option<Locals>,
) -> PingReport {
    let mut settings = settings.clone();
    // Nothing inside may wait longer than the whole deadline; the inner bounds end a
    // little earlier, so a host that stalls is reported with the step it stalled in.
    let inner = deadline.saturating_sub((deadline / 10).min(Duration::from_millis(200)));
    settings.connect_timeout = settings.connect_timeout.min(inner);
    settings.io_timeout = settings.io_timeout.min(inner);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, spec) in list.hosts.iter().cloned().enumerate() {
        let settings = settings.clone();
        let locals = locals.clone();
        tasks.spawn(async move {
            let ping = probe(&spec, &settings, deadline, locals.as_ref()).await;
            (i, ping)
        });
    }
    let mut found: Vec<Option<HostPing>> = vec![None; list.hosts.len()];
    while let Some(joined) = tasks.join_next().await {
        if let Ok((i, ping)) = joined {
            found[i] = Some(ping);
        }
    }
    let hosts: Vec<HostPing> = found
        .into_iter()
        .zip(&list.hosts)
        .map(|(p, spec)| {
            p.unwrap_or_else(|| HostPing::new(spec).failed(false, "the probe panicked".into()))
        })
        .collect();
    let checked = hosts.iter().filter(|h| !h.down).count();
    let usable = hosts.iter().filter(|h| !h.down && h.usable).count();
    PingReport {
        timeout_secs: deadline.as_secs_f64(),
        checked,
        usable,
        hosts,
    }
}

/// The usable entries as a host list (global options kept), for `HOARDCC_HOSTS`.
pub fn hosts_ok_line(list: &HostList, report: &PingReport) -> String {
    let mut parts: Vec<String> = Vec::new();
    if list.randomize {
        parts.push("--randomize".into());
    }
    if let Some(n) = list.local_slots {
        parts.push(format!("--localslots={n}"));
    }
    parts.extend(
        report
            .hosts
            .iter()
            .filter(|h| h.usable && !h.down)
            .map(|h| h.entry.clone()),
    );
    parts.join(" ")
}

/// One aligned line per host.
pub fn render_text(report: &PingReport) -> String {
    let width = report
        .hosts
        .iter()
        .map(|h| h.entry.chars().count())
        .max()
        .unwrap_or(0);
    let mut s = String::new();
    for h in &report.hosts {
        let state = if h.down {
            "down"
        } else if h.usable {
            "ok"
        } else if h.reachable {
            "FAILED"
        } else {
            "UNREACHABLE"
        };
        let _ = write!(s, "{:width$}  {state:<11}", h.entry);
        if let Some(route) = &h.route {
            let _ = write!(s, "  {route}");
            if let Some(c) = &h.command {
                let _ = write!(s, " ({c})");
            }
            if h.subsystem_refused {
                s.push_str(" [no hoardcc subsystem]");
            }
        }
        if let Some(server) = &h.server {
            let _ = write!(s, "  {server}");
        }
        if let (Some(slots), Some(load)) = (h.slots, h.load) {
            let _ = write!(s, "  slots {slots} load {load}");
        }
        if let Some(list) = h.compilers.as_ref().filter(|l| !l.is_empty()) {
            let shown: Vec<String> = list.iter().map(CompilerMatch::short).collect();
            let _ = write!(s, "  compilers {}", shown.join(" "));
        }
        if let Some(rtt) = h.rtt_ms {
            let _ = write!(s, "  rtt {rtt} ms");
        }
        if let Some(c) = h.connect_ms {
            let _ = write!(s, "  connect {c} ms");
        }
        if let Some(e) = &h.error {
            let _ = write!(s, "  {e}");
        }
        s.push('\n');
    }
    s
}

/// `hoardcc ping`.
pub fn main(args: PingArgs) -> std::process::ExitCode {
    let farm = match load_farm(&args.hosts) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("hoardcc ping: {e}");
            return e.exit_code().into();
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hoardcc ping: cannot start a runtime: {e}");
            return ExitCode::DistccFailed.into();
        }
    };
    let deadline = Duration::from_secs_f64(args.timeout);
    let report = runtime.block_on(async {
        let locals = Locals::start(std::env::var_os("PATH"));
        ping_all(&farm.list, &farm.settings, deadline, Some(locals)).await
    });
    // Closing channels and connections spawns tasks: give them a moment, bounded.
    runtime.shutdown_timeout(Duration::from_millis(500));
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(doc) => println!("{doc}"),
            Err(e) => {
                eprintln!("hoardcc ping: {e}");
                return ExitCode::DistccFailed.into();
            }
        }
    } else if args.hosts_ok {
        println!("{}", hosts_ok_line(&farm.list, &report));
    } else {
        print!("{}", render_text(&report));
    }
    if report.all_usable() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(EXIT_UNUSABLE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> SshSettings {
        SshSettings {
            home: PathBuf::from("/nonexistent"),
            connect_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::ZERO,
            keepalive_max: 3,
            io_timeout: Duration::from_secs(10),
            agent_socket: None,
            local_user: "nobody".into(),
        }
    }

    #[test]
    fn timeout_flag_is_bounded() {
        assert_eq!(parse_timeout("2.5"), Ok(2.5));
        assert!(parse_timeout("0").is_err());
        assert!(parse_timeout("-1").is_err());
        assert!(parse_timeout("601").is_err());
        assert!(parse_timeout("soon").is_err());
    }

    #[tokio::test]
    async fn local_down_and_refused_hosts() {
        // A port nothing listens on, held for the test.
        let refused = crate::test_util::RefusedPort::new();
        let port = refused.port();
        let text = format!("--randomize localhost/2 127.0.0.1:{port} @gone,down");
        let list = hosts::parse(&text).unwrap();
        let report = ping_all(&list, &settings(), Duration::from_secs(5), None).await;
        assert_eq!(report.hosts.len(), 3);
        let local = &report.hosts[0];
        assert!(local.usable && local.reachable);
        assert_eq!(local.route.as_deref(), Some("local"));
        let dead = &report.hosts[1];
        assert!(!dead.usable && !dead.reachable, "{dead:?}");
        assert!(
            dead.error.as_deref().unwrap().contains("cannot connect"),
            "{dead:?}"
        );
        let down = &report.hosts[2];
        assert!(down.down && !down.usable);
        // The down host does not count; the dead one does.
        assert_eq!((report.checked, report.usable), (2, 1));
        assert!(!report.all_usable());
        assert_eq!(hosts_ok_line(&list, &report), "--randomize localhost/2");
        let text = render_text(&report);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("localhost/2 "), "{text}");
        assert!(lines[1].contains("UNREACHABLE"), "{text}");
        assert!(lines[2].contains("down"), "{text}");
        // The JSON round-trips.
        let doc = serde_json::to_string(&report).unwrap();
        assert_eq!(serde_json::from_str::<PingReport>(&doc).unwrap(), report);
    }

    #[tokio::test]
    async fn silent_server_hits_the_deadline() {
        // Accepts TCP, never speaks: the deadline, not the connect timeout, ends the probe.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join(".ssh")).unwrap();
        std::fs::write(
            home.path().join(".ssh/config"),
            format!("Host silent\n  HostName 127.0.0.1\n  Port {port}\n"),
        )
        .unwrap();
        let mut s = settings();
        s.home = home.path().to_path_buf();
        let list = hosts::parse("@silent").unwrap();
        let started = Instant::now();
        let report = ping_all(&list, &s, Duration::from_millis(700), None).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        let h = &report.hosts[0];
        // TCP connected; the ssh banner never came, and the inner bound says so.
        assert!(!h.usable && h.reachable, "{h:?}");
        assert!(h.error.as_deref().unwrap().contains("timed out"), "{h:?}");
        hold.abort();
    }
}
