//! Host list: the `DISTCC_HOSTS` grammar, parsed into [`HostList`] (pipeline stage "host",
//! between [`crate::config`]/[`crate::paths`], which say where the list comes from, and
//! `mux::scheduler`, which picks a host per job). Pure: no network, and file reads only through
//! the closure handed to [`resolve`].
//!
//! The grammar matches distcc's `hosts.c` and `man/distcc.1`:
//!
//! ```text
//! HOSTLIST   = { HOSTSPEC | WHITESPACE | COMMENT }         COMMENT = "#" … end of line
//! HOSTSPEC   = LOCAL_HOST | SSH_HOST | TCP_HOST | OLDSTYLE_TCP_HOST | GLOBAL_OPTION | ZEROCONF
//! LOCAL_HOST = "localhost" [LIMIT] [OPTIONS] | "--localslots=" INT | "--localslots_cpp=" INT
//! SSH_HOST   = [USER] "@" HOSTNAME [LIMIT] [":" COMMAND] [OPTIONS]   (any token with "@")
//! TCP_HOST   = HOSTID [":" PORT] [LIMIT] [OPTIONS]                   (default port 3632)
//! OLDSTYLE_TCP_HOST = HOSTID [LIMIT] [":" PORT] [OPTIONS]
//! HOSTID     = HOSTNAME | IPV4 | "[" IPV6 "]"                        LIMIT = ("/" | "=") INT
//! OPTIONS    = { "," OPTION }     OPTION = "lzo" | "down" | "cpp" (refused) | "auth[=NAME]" (refused)
//! GLOBAL_OPTION = "--randomize"   ZEROCONF = "+zeroconf" (refused)
//! ```
//!
//! Defaults follow distcc: 4 slots per remote host, 2 for `localhost`. An SSH `:COMMAND` is the
//! remote daemon command, never a port (use `~/.ssh/config` for ports). hoardcc always
//! preprocesses locally, so pump mode (`,cpp`) is refused with a message rather than ignored.

use std::fmt;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

/// Default TCP port of a distcc daemon (`DISTCC_DEFAULT_PORT` in distcc's `distcc.h`).
pub const DEFAULT_PORT: u16 = 3632;
/// Default slot limit of a remote host (distcc `hosts.c`: `n_slots = 4`).
pub const DEFAULT_REMOTE_SLOTS: u32 = 4;
/// Default slot limit of `localhost` (distcc `dcc_parse_localhost`).
pub const DEFAULT_LOCAL_SLOTS: u32 = 2;
/// The system-wide host file, read last.
pub const SYSTEM_HOSTS_FILE: &str = "/etc/distcc/hosts";

/// How a host is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKind {
    /// `localhost`: compile on this machine, no daemon.
    Local,
    /// A plain distcc daemon over TCP. `host` is a name or address; IPv6 without brackets.
    Tcp {
        /// Host name, IPv4 address, or IPv6 address (without the brackets).
        host: String,
        /// TCP port, [`DEFAULT_PORT`] unless given.
        port: u16,
    },
    /// A host reached over SSH (the hoardcc fast path).
    Ssh {
        /// Login name from `USER@`, or `None` for `@host` (ssh config / current user decides).
        user: Option<String>,
        /// Host name as written; resolved through `~/.ssh/config` by the mux.
        host: String,
        /// Remote daemon command from `:COMMAND`, if given.
        command: Option<String>,
    },
}

/// One parsed host entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    /// Where and how to connect.
    pub kind: HostKind,
    /// Maximum concurrent jobs this client sends to the host (`/N`).
    pub slots: u32,
    /// `,lzo`: compress with LZO on the wire.
    pub lzo: bool,
    /// `,down`: listed but marked down; never used by [`HostList::ordered`].
    pub down: bool,
    /// The token as written in the host list, for messages.
    pub token: String,
}

impl HostSpec {
    /// True for `localhost` entries (compile locally).
    pub fn is_local(&self) -> bool {
        matches!(self.kind, HostKind::Local)
    }

    /// True for SSH entries (any token containing `@`).
    pub fn is_ssh(&self) -> bool {
        matches!(self.kind, HostKind::Ssh { .. })
    }

    /// Stable key identifying the host: `"user@host"` (or `"host"` without a user) for SSH,
    /// `"host:port"` (`"[v6]:port"` for IPv6) for TCP, `"localhost"` for local.
    pub fn key(&self) -> String {
        match &self.kind {
            HostKind::Local => "localhost".to_string(),
            HostKind::Tcp { host, port } if host.contains(':') => format!("[{host}]:{port}"),
            HostKind::Tcp { host, port } => format!("{host}:{port}"),
            HostKind::Ssh {
                user: Some(user),
                host,
                ..
            } => format!("{user}@{host}"),
            HostKind::Ssh {
                user: None, host, ..
            } => host.clone(),
        }
    }
}

/// A parsed host list with its global options.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostList {
    /// Hosts in the order written, including `,down` ones.
    pub hosts: Vec<HostSpec>,
    /// `--randomize`: shuffle the hosts once per process.
    pub randomize: bool,
    /// `--localslots=N`: how many local compiles may run at once, if given.
    pub local_slots: Option<u32>,
}

impl HostList {
    /// Hosts in use order: shuffled with `seed` if `randomize`, else as written; `,down` hosts
    /// are excluded. The same seed always gives the same order.
    pub fn ordered(&self, seed: u64) -> Vec<HostSpec> {
        let mut hosts: Vec<HostSpec> = self.hosts.iter().filter(|h| !h.down).cloned().collect();
        if self.randomize {
            // Fisher–Yates with a splitmix64 stream: deterministic per seed, no extra crate.
            let mut state = seed;
            for i in (1..hosts.len()).rev() {
                let j = (splitmix64(&mut state) % (i as u64 + 1)) as usize;
                hosts.swap(i, j);
            }
        }
        hosts
    }

    /// One host for a lone job, in proportion to each host's slots over
    /// [`ordered`](Self::ordered)`(seed)`, so parallel processes with different seeds
    /// spread over the list. `None` when the pick is a `localhost` slot (or no host is up).
    pub fn pick_weighted(&self, seed: u64) -> Option<HostSpec> {
        let ordered = self.ordered(seed);
        let total: u64 = ordered.iter().map(|h| u64::from(h.slots.max(1))).sum();
        let mut state = seed;
        let mut pick = splitmix64(&mut state) % total.max(1);
        for h in ordered {
            let w = u64::from(h.slots.max(1));
            if pick < w {
                return if h.is_local() { None } else { Some(h) };
            }
            pick -= w;
        }
        None
    }

    /// True when no host at all is listed (`,down` hosts count as listed).
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Where a host list came from (for messages and `--show-hosts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostSource {
    /// An environment variable, by name (`HOARDCC_HOSTS` or `DISTCC_HOSTS`).
    Env(String),
    /// The `hosts` setting of the hoardcc config file at this path.
    ConfigFile(PathBuf),
    /// A distcc-style hosts file (`~/.distcc/hosts`, `$DISTCC_DIR/hosts`, `/etc/distcc/hosts`).
    File(PathBuf),
}

impl fmt::Display for HostSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostSource::Env(var) => write!(f, "${var}"),
            HostSource::ConfigFile(path) => write!(f, "`hosts` in {}", path.display()),
            HostSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Why one host token was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecProblem {
    /// `:PORT` is not a decimal number.
    #[error("port is not a number: {0:?}")]
    PortNotNumber(String),
    /// `:PORT` is 0 or above 65535.
    #[error("port {0} is out of range 1-65535")]
    PortOutOfRange(String),
    /// `:PORT` given twice.
    #[error("port given twice")]
    DuplicatePort,
    /// `/N` is not a decimal number.
    #[error("slot limit is not a number: {0:?}")]
    SlotsNotNumber(String),
    /// `/0`.
    #[error("slot limit must be at least 1")]
    SlotsZero,
    /// `/N` given twice.
    #[error("slot limit given twice")]
    DuplicateSlots,
    /// Nothing before `:`, `/`, `,` (or after `@`).
    #[error("empty host name")]
    EmptyHost,
    /// A host name containing characters no host name has.
    #[error("invalid character {0:?} in host name")]
    BadHostChar(char),
    /// `[` without `]`.
    #[error("missing ']' after IPv6 address")]
    UnclosedBracket,
    /// Text in brackets that is not an IPv6 address.
    #[error("{0:?} is not an IPv6 address")]
    BadIpv6(String),
    /// An IPv6 address written without brackets.
    #[error("IPv6 addresses must be written in brackets, e.g. [::1] or [::1]:3632")]
    UnbracketedIpv6,
    /// `user@[v6]`: distcc's SSH syntax cannot carry an IPv6 literal.
    #[error(
        "an SSH host cannot be an IPv6 literal; add a `Host` alias with `HostName` in ~/.ssh/config"
    )]
    SshIpv6,
    /// `user@host:` with nothing after the colon.
    #[error("empty remote command after ':' (for an SSH host ':' names the remote command, not a port; set ports in ~/.ssh/config)")]
    EmptySshCommand,
    /// `localhost/N:PORT`.
    #[error("localhost takes no port (write 127.0.0.1:PORT for a TCP daemon on this machine)")]
    LocalhostPort,
    /// `,cpp`.
    #[error("pump mode is not supported: hoardcc preprocesses locally; drop ',cpp'")]
    PumpUnsupported,
    /// `,auth` / `,auth=NAME`.
    #[error(
        "GSS-API authentication (',auth') is not supported; use an SSH host (USER@HOST) instead"
    )]
    AuthUnsupported,
    /// An unknown `,OPTION`.
    #[error("unknown option {0:?} (known: lzo, down)")]
    UnknownOption(String),
    /// Characters left over after the host spec.
    #[error("unexpected {0:?} after host")]
    Trailing(String),
    /// `+zeroconf`.
    #[error("zeroconf host discovery is not supported; list the hosts explicitly")]
    Zeroconf,
    /// An unknown `--option`.
    #[error("unknown global option (known: --randomize, --localslots=N, --localslots_cpp=N)")]
    UnknownGlobalOption,
    /// `--localslots=` with a bad value.
    #[error("value is not a positive number: {0:?}")]
    BadCount(String),
}

/// Errors from parsing or locating a host list.
#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    /// One token of the list is malformed.
    #[error("bad host spec {token:?} (token {index}, byte {offset}): {problem}")]
    Parse {
        /// The offending token as written.
        token: String,
        /// 1-based token number in the list (comments excluded).
        index: usize,
        /// 0-based byte offset of the token in the text.
        offset: usize,
        /// What is wrong with it.
        problem: SpecProblem,
    },
    /// A parse error in a list found by [`resolve`], with where it came from.
    #[error("host list from {origin}: {error}")]
    InSource {
        /// The source the list was read from.
        origin: HostSource,
        /// The parse error (its text is already part of this message).
        error: Box<HostsError>,
    },
}

/// Parse a host list (the value of `DISTCC_HOSTS` or the text of a hosts file).
///
/// # Errors
/// [`HostsError::Parse`] for the first malformed token, naming it and its position.
pub fn parse(text: &str) -> Result<HostList, HostsError> {
    let mut list = HostList::default();
    let mut index = 0;
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        let content = match line.find('#') {
            Some(hash) => &line[..hash],
            None => line,
        };
        for (offset, token) in tokens(content) {
            index += 1;
            parse_token(token, &mut list).map_err(|problem| HostsError::Parse {
                token: token.to_string(),
                index,
                offset: line_start + offset,
                problem,
            })?;
        }
        line_start += line.len();
    }
    Ok(list)
}

/// Whitespace-separated tokens of `s` with their byte offsets.
fn tokens(s: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut rest = s;
    let mut pos = 0;
    std::iter::from_fn(move || {
        let trimmed = rest.trim_start();
        pos += rest.len() - trimmed.len();
        if trimmed.is_empty() {
            return None;
        }
        let end = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
        let start = pos;
        pos += end;
        rest = &trimmed[end..];
        Some((start, &trimmed[..end]))
    })
}

fn parse_token(token: &str, list: &mut HostList) -> Result<(), SpecProblem> {
    if token == "--randomize" {
        list.randomize = true;
        return Ok(());
    }
    if let Some(value) = token.strip_prefix("--localslots=") {
        list.local_slots = Some(parse_count(value)?);
        return Ok(());
    }
    if let Some(value) = token.strip_prefix("--localslots_cpp=") {
        // Accepted for distcc compatibility; hoardcc's local preprocessing is bounded by
        // `--localslots` and the mux, so the value only has to be valid.
        parse_count(value)?;
        return Ok(());
    }
    if token.starts_with("--") {
        return Err(SpecProblem::UnknownGlobalOption);
    }
    if token == "+zeroconf" {
        return Err(SpecProblem::Zeroconf);
    }
    let spec = if token.contains('@') {
        parse_ssh(token)?
    } else if is_localhost(token) {
        parse_local(token)?
    } else {
        parse_tcp(token)?
    };
    list.hosts.push(spec);
    Ok(())
}

fn parse_count(value: &str) -> Result<u32, SpecProblem> {
    match value.parse::<u32>() {
        Ok(n) if n >= 1 && value.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(SpecProblem::BadCount(value.to_string())),
    }
}

/// `localhost` exactly, or followed by a limit or options (`localhost:PORT` is a TCP host,
/// as in distcc).
fn is_localhost(token: &str) -> bool {
    match token.strip_prefix("localhost") {
        Some(rest) => rest.is_empty() || rest.starts_with(['/', '=', ',']),
        None => false,
    }
}

/// Split at the first of `stops`: (before, rest starting at the stop char).
fn split_at_any<'a>(s: &'a str, stops: &[char]) -> (&'a str, &'a str) {
    let end = s.find(stops).unwrap_or(s.len());
    s.split_at(end)
}

fn check_hostname(name: &str) -> Result<(), SpecProblem> {
    if name.is_empty() {
        return Err(SpecProblem::EmptyHost);
    }
    match name
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        Some(c) => Err(SpecProblem::BadHostChar(c)),
        None => Ok(()),
    }
}

/// Parse `/N` or `=N` at the start of `rest` (which starts with the sign); returns the rest.
fn parse_slots<'a>(rest: &'a str, slots: &mut Option<u32>) -> Result<&'a str, SpecProblem> {
    if slots.is_some() {
        return Err(SpecProblem::DuplicateSlots);
    }
    let (digits, rest) = split_at_any(&rest[1..], &[':', '/', '=', ',']);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SpecProblem::SlotsNotNumber(digits.to_string()));
    }
    let n: u32 = digits
        .parse()
        .map_err(|_| SpecProblem::SlotsNotNumber(digits.to_string()))?;
    if n == 0 {
        return Err(SpecProblem::SlotsZero);
    }
    *slots = Some(n);
    Ok(rest)
}

/// Parse `,opt,opt…` (the whole of `rest`, which is empty or starts with `,`).
fn parse_options(rest: &str, lzo: &mut bool, down: &mut bool) -> Result<(), SpecProblem> {
    if rest.is_empty() {
        return Ok(());
    }
    let Some(opts) = rest.strip_prefix(',') else {
        return Err(SpecProblem::Trailing(rest.to_string()));
    };
    for opt in opts.split(',') {
        match opt {
            "lzo" => *lzo = true,
            "down" => *down = true,
            "cpp" => return Err(SpecProblem::PumpUnsupported),
            o if o == "auth" || o.starts_with("auth=") => return Err(SpecProblem::AuthUnsupported),
            other => return Err(SpecProblem::UnknownOption(other.to_string())),
        }
    }
    Ok(())
}

fn parse_local(token: &str) -> Result<HostSpec, SpecProblem> {
    let mut rest = &token["localhost".len()..];
    let mut slots = None;
    if rest.starts_with(['/', '=']) {
        rest = parse_slots(rest, &mut slots)?;
    }
    if rest.starts_with(':') {
        return Err(SpecProblem::LocalhostPort);
    }
    if rest.starts_with(['/', '=']) {
        return Err(SpecProblem::DuplicateSlots);
    }
    let (mut lzo, mut down) = (false, false);
    parse_options(rest, &mut lzo, &mut down)?;
    Ok(HostSpec {
        kind: HostKind::Local,
        slots: slots.unwrap_or(DEFAULT_LOCAL_SLOTS),
        lzo,
        down,
        token: token.to_string(),
    })
}

fn parse_tcp(token: &str) -> Result<HostSpec, SpecProblem> {
    let (host, mut rest) = if let Some(inner) = token.strip_prefix('[') {
        let close = inner.find(']').ok_or(SpecProblem::UnclosedBracket)?;
        let addr = &inner[..close];
        // A zone index (`fe80::1%eth0`) is allowed after the address.
        let bare = addr.split('%').next().unwrap_or(addr);
        if bare.parse::<Ipv6Addr>().is_err() {
            return Err(SpecProblem::BadIpv6(addr.to_string()));
        }
        (addr.to_string(), &inner[close + 1..])
    } else {
        let (before_limit, _) = split_at_any(token, &['/', '=', ',']);
        if before_limit.matches(':').count() > 1 {
            return Err(SpecProblem::UnbracketedIpv6);
        }
        let (name, rest) = split_at_any(token, &[':', '/', '=', ',']);
        check_hostname(name)?;
        (name.to_string(), rest)
    };
    let mut port = None;
    let mut slots = None;
    loop {
        if rest.starts_with(':') {
            if port.is_some() {
                return Err(SpecProblem::DuplicatePort);
            }
            let (digits, after) = split_at_any(&rest[1..], &[':', '/', '=', ',']);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(SpecProblem::PortNotNumber(digits.to_string()));
            }
            match digits.parse::<u16>() {
                Ok(p) if p != 0 => port = Some(p),
                _ => return Err(SpecProblem::PortOutOfRange(digits.to_string())),
            }
            rest = after;
        } else if rest.starts_with(['/', '=']) {
            rest = parse_slots(rest, &mut slots)?;
        } else {
            break;
        }
    }
    let (mut lzo, mut down) = (false, false);
    parse_options(rest, &mut lzo, &mut down)?;
    Ok(HostSpec {
        kind: HostKind::Tcp {
            host,
            port: port.unwrap_or(DEFAULT_PORT),
        },
        slots: slots.unwrap_or(DEFAULT_REMOTE_SLOTS),
        lzo,
        down,
        token: token.to_string(),
    })
}

fn parse_ssh(token: &str) -> Result<HostSpec, SpecProblem> {
    let at = token.find('@').expect("caller checked for '@'");
    let user = &token[..at];
    if let Some(c) = user
        .chars()
        .find(|c| matches!(c, ':' | '/' | ',' | '[' | ']'))
    {
        return Err(SpecProblem::BadHostChar(c));
    }
    let after = &token[at + 1..];
    if after.starts_with('[') {
        return Err(SpecProblem::SshIpv6);
    }
    // distcc `dcc_parse_ssh_host`: the host name ends at '/', ':', ',' (or whitespace).
    let (host, mut rest) = split_at_any(after, &['/', '=', ':', ',']);
    check_hostname(host)?;
    let mut slots = None;
    if rest.starts_with(['/', '=']) {
        rest = parse_slots(rest, &mut slots)?;
    }
    let mut command = None;
    if let Some(cmd_and_opts) = rest.strip_prefix(':') {
        // The command is a path and may contain '/', so it runs to the options.
        let (cmd, opts) = split_at_any(cmd_and_opts, &[',']);
        if cmd.is_empty() {
            return Err(SpecProblem::EmptySshCommand);
        }
        command = Some(cmd.to_string());
        rest = opts;
    }
    if rest.starts_with(['/', '=']) {
        return Err(SpecProblem::DuplicateSlots);
    }
    let (mut lzo, mut down) = (false, false);
    parse_options(rest, &mut lzo, &mut down)?;
    Ok(HostSpec {
        kind: HostKind::Ssh {
            user: (!user.is_empty()).then(|| user.to_string()),
            host: host.to_string(),
            command,
        },
        slots: slots.unwrap_or(DEFAULT_REMOTE_SLOTS),
        lzo,
        down,
        token: token.to_string(),
    })
}

/// Find and parse the host list.
///
/// Sources in order: `HOARDCC_HOSTS`, `DISTCC_HOSTS`, the config file's `hosts` (passed in as
/// its text and the file's path), `$DISTCC_DIR/hosts` (or `~/.distcc/hosts` when `DISTCC_DIR` is
/// unset or empty), `/etc/distcc/hosts`. The first one present wins; an environment variable
/// set to an empty or blank value counts as present (and gives an empty list).
///
/// `env` reads an environment variable; `read_file` returns a file's text, or `None` when it
/// cannot be read (treated as absent).
///
/// # Errors
/// [`HostsError::InSource`] wrapping the parse error of the winning source.
pub fn resolve(
    env: &dyn Fn(&str) -> Option<String>,
    config_hosts: Option<(&str, &Path)>,
    home: Option<&Path>,
    read_file: &dyn Fn(&Path) -> Option<String>,
) -> Result<Option<(HostList, HostSource)>, HostsError> {
    let parse_from = |text: &str, origin: HostSource| match parse(text) {
        Ok(list) => Ok(Some((list, origin))),
        Err(e) => Err(HostsError::InSource {
            origin,
            error: Box::new(e),
        }),
    };
    for var in ["HOARDCC_HOSTS", "DISTCC_HOSTS"] {
        if let Some(value) = env(var) {
            return parse_from(&value, HostSource::Env(var.to_string()));
        }
    }
    if let Some((text, path)) = config_hosts {
        return parse_from(text, HostSource::ConfigFile(path.to_path_buf()));
    }
    let user_file = match env("DISTCC_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir).join("hosts")),
        None => home.map(|h| h.join(".distcc").join("hosts")),
    };
    for path in user_file
        .into_iter()
        .chain(std::iter::once(PathBuf::from(SYSTEM_HOSTS_FILE)))
    {
        if let Some(text) = read_file(&path) {
            return parse_from(&text, HostSource::File(path));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests;
