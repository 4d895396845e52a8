//! Settings (support for every stage): the TOML config files located by [`crate::paths`],
//! merged with environment overrides into [`Config`], which the wrapper (fallback), the mux
//! (SSH timeouts, backoff, idle exit, channels) and the subsystem (compiler allow-list, limits)
//! read. The host list itself is parsed by [`crate::hosts`]; here it is only carried as text.
//!
//! Two levels: [`RawConfig`] is exactly what the file says (every field optional, unknown keys
//! rejected with the TOML error location), and [`Config`] is the resolved result.
//! Precedence: environment beats file beats defaults. [`Config::from_parts`] is pure; [`load`]
//! and [`load_server`] only add the file reads.
//!
//! ```toml
//! hosts = "@build1/8 @build2/8"   # like DISTCC_HOSTS
//! fallback = true                  # HOARDCC_FALLBACK / DISTCC_FALLBACK
//! backoff_secs = 60                # DISTCC_BACKOFF_PERIOD, 0 = off
//! [ssh]
//! connect_timeout_secs = 10
//! keepalive_interval_secs = 15
//! keepalive_max = 3
//! io_timeout_secs = 300            # DISTCC_IO_TIMEOUT
//! [server]
//! compilers = ["arm-none-eabi-gcc"]
//! default_compilers = true
//! compile_timeout_secs = 1200
//! max_jobs = 16
//! tmpdir = "/var/tmp"
//! heartbeat_secs = 5
//! # admission limits (see `Admission`)
//! max_job_mib = 256                # source + context files of one job, decoded
//! max_context_files = 4096
//! max_extra_outputs = 16
//! max_queued_mib = 64              # jobs waiting on one lane, encoded
//! idle_timeout_secs = 300          # a lane with no job and no frame is closed
//! frame_timeout_secs = 60          # longest silence inside a frame
//! slot_wait_secs = 60              # stock distcc jobs wait this long for a slot
//! sandbox = "landlock"             # or "off" (see below)
//! sandbox_paths = ["/opt/sysroot"] # extra read+execute directories for the compiler
//! max_memory_mib = 8192            # address space of each compiler process, 0 = no limit
//! max_file_size_mib = 1024         # largest file a compiler may write, 0 = no limit
//! max_open_files = 256
//! [mux]
//! idle_timeout_secs = 600          # HOARDCC_IDLE_TIMEOUT
//! channels_per_connection = 8
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::paths::{Paths, SYSTEM_SERVER_CONFIG};

/// The config file as written: every field optional, unknown keys are errors.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Host list in `DISTCC_HOSTS` syntax.
    pub hosts: Option<String>,
    /// Compile locally when distribution fails.
    pub fallback: Option<bool>,
    /// Seconds a failed host is skipped; 0 disables backoff.
    pub backoff_secs: Option<u64>,
    /// `[ssh]` table.
    pub ssh: Option<RawSsh>,
    /// `[server]` table.
    pub server: Option<RawServer>,
    /// `[mux]` table.
    pub mux: Option<RawMux>,
}

/// The `[ssh]` table as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSsh {
    /// See [`SshSettings::connect_timeout`].
    pub connect_timeout_secs: Option<u64>,
    /// See [`SshSettings::keepalive_interval`].
    pub keepalive_interval_secs: Option<u64>,
    /// See [`SshSettings::keepalive_max`].
    pub keepalive_max: Option<u32>,
    /// See [`SshSettings::io_timeout`].
    pub io_timeout_secs: Option<u64>,
}

/// The `[server]` table as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// See [`ServerSettings::compilers`].
    pub compilers: Option<Vec<String>>,
    /// See [`ServerSettings::default_compilers`].
    pub default_compilers: Option<bool>,
    /// See [`ServerSettings::compile_timeout`].
    pub compile_timeout_secs: Option<u64>,
    /// See [`ServerSettings::max_jobs`].
    pub max_jobs: Option<u32>,
    /// See [`ServerSettings::tmpdir`].
    pub tmpdir: Option<PathBuf>,
    /// See [`ServerSettings::heartbeat`].
    pub heartbeat_secs: Option<u64>,
    // Admission limits: see [`Admission`].
    /// See [`Admission::max_job_bytes`] (MiB).
    pub max_job_mib: Option<u64>,
    /// See [`Admission::max_context_files`].
    pub max_context_files: Option<u32>,
    /// See [`Admission::max_extra_outputs`].
    pub max_extra_outputs: Option<u32>,
    /// See [`Admission::max_queued_bytes`] (MiB).
    pub max_queued_mib: Option<u64>,
    /// See [`Admission::idle_timeout`].
    pub idle_timeout_secs: Option<u64>,
    /// See [`Admission::frame_timeout`].
    pub frame_timeout_secs: Option<u64>,
    /// See [`Admission::slot_wait`].
    pub slot_wait_secs: Option<u64>,
    /// See [`ServerSettings::sandbox`].
    pub sandbox: Option<SandboxMode>,
    /// See [`ServerSettings::sandbox_paths`].
    pub sandbox_paths: Option<Vec<PathBuf>>,
    /// See [`ServerSettings::max_memory`] (MiB, 0 = no limit).
    pub max_memory_mib: Option<u64>,
    /// See [`ServerSettings::max_file_size`] (MiB, 0 = no limit).
    pub max_file_size_mib: Option<u64>,
    /// See [`ServerSettings::max_open_files`].
    pub max_open_files: Option<u32>,
}

/// The `[mux]` table as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMux {
    /// See [`MuxSettings::idle_timeout`].
    pub idle_timeout_secs: Option<u64>,
    /// See [`MuxSettings::channels_per_connection`].
    pub channels_per_connection: Option<u32>,
}

/// `later` wins where it says something.
fn pick<T>(earlier: Option<T>, later: Option<T>) -> Option<T> {
    later.or(earlier)
}

/// Merge two optional tables field by field.
fn merge_table<T>(earlier: Option<T>, later: Option<T>, merge: fn(T, T) -> T) -> Option<T> {
    match (earlier, later) {
        (Some(a), Some(b)) => Some(merge(a, b)),
        (a, b) => b.or(a),
    }
}

impl RawConfig {
    /// Parse TOML text.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] (with `path: None`) carrying the TOML error and its location.
    pub fn parse(text: &str) -> Result<RawConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: None,
            message: e.to_string(),
        })
    }

    /// Overlay `later` on `self`: each field `later` sets wins (lists are replaced, not joined).
    pub fn merge(self, later: RawConfig) -> RawConfig {
        RawConfig {
            hosts: pick(self.hosts, later.hosts),
            fallback: pick(self.fallback, later.fallback),
            backoff_secs: pick(self.backoff_secs, later.backoff_secs),
            ssh: merge_table(self.ssh, later.ssh, |a, b| RawSsh {
                connect_timeout_secs: pick(a.connect_timeout_secs, b.connect_timeout_secs),
                keepalive_interval_secs: pick(a.keepalive_interval_secs, b.keepalive_interval_secs),
                keepalive_max: pick(a.keepalive_max, b.keepalive_max),
                io_timeout_secs: pick(a.io_timeout_secs, b.io_timeout_secs),
            }),
            server: merge_table(self.server, later.server, |a, b| RawServer {
                compilers: pick(a.compilers, b.compilers),
                default_compilers: pick(a.default_compilers, b.default_compilers),
                compile_timeout_secs: pick(a.compile_timeout_secs, b.compile_timeout_secs),
                max_jobs: pick(a.max_jobs, b.max_jobs),
                tmpdir: pick(a.tmpdir, b.tmpdir),
                heartbeat_secs: pick(a.heartbeat_secs, b.heartbeat_secs),
                max_job_mib: pick(a.max_job_mib, b.max_job_mib),
                max_context_files: pick(a.max_context_files, b.max_context_files),
                max_extra_outputs: pick(a.max_extra_outputs, b.max_extra_outputs),
                max_queued_mib: pick(a.max_queued_mib, b.max_queued_mib),
                idle_timeout_secs: pick(a.idle_timeout_secs, b.idle_timeout_secs),
                frame_timeout_secs: pick(a.frame_timeout_secs, b.frame_timeout_secs),
                slot_wait_secs: pick(a.slot_wait_secs, b.slot_wait_secs),
                sandbox: pick(a.sandbox, b.sandbox),
                sandbox_paths: pick(a.sandbox_paths, b.sandbox_paths),
                max_memory_mib: pick(a.max_memory_mib, b.max_memory_mib),
                max_file_size_mib: pick(a.max_file_size_mib, b.max_file_size_mib),
                max_open_files: pick(a.max_open_files, b.max_open_files),
            }),
            mux: merge_table(self.mux, later.mux, |a, b| RawMux {
                idle_timeout_secs: pick(a.idle_timeout_secs, b.idle_timeout_secs),
                channels_per_connection: pick(a.channels_per_connection, b.channels_per_connection),
            }),
        }
    }
}

/// Resolved settings: defaults, then the file, then the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Host list text from the config file (`DISTCC_HOSTS` syntax); `hosts::resolve` decides
    /// whether it is used (environment variables come first).
    pub hosts: Option<String>,
    /// Compile locally when distribution fails (default true; `HOARDCC_FALLBACK`,
    /// `DISTCC_FALLBACK`: "0" turns it off).
    pub fallback: bool,
    /// How long a failed host is skipped (default 60 s, `DISTCC_BACKOFF_PERIOD`; zero = off).
    pub backoff: Duration,
    /// SSH connection settings (mux).
    pub ssh: SshSettings,
    /// Server (subsystem) settings.
    pub server: ServerSettings,
    /// Mux daemon settings.
    pub mux: MuxSettings,
}

/// SSH connection settings used by the mux.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshSettings {
    /// TCP connect + SSH handshake + auth limit (default 10 s).
    pub connect_timeout: Duration,
    /// Interval of SSH keepalive pings on idle connections (default 15 s).
    pub keepalive_interval: Duration,
    /// Unanswered keepalives before the connection is dropped (default 3).
    pub keepalive_max: u32,
    /// Longest silence on a job's channel before it fails (default 300 s, `DISTCC_IO_TIMEOUT`).
    /// Server heartbeats count as traffic, so long compiles do not hit it.
    pub io_timeout: Duration,
}

/// Settings of `hoardcc serve` (the SSH subsystem).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// Extra compiler names allowed in addition to the default allow-list.
    pub compilers: Vec<String>,
    /// Whether the built-in allow-list (gcc, g++, cc, c++, clang, clang++ …) applies (default true).
    pub default_compilers: bool,
    /// Longest a single compile may run before it is killed (default 20 min).
    pub compile_timeout: Duration,
    /// Concurrent compiles per slot directory (`subsystem::slots`): host-wide where an admin
    /// provisions `/run/hoardcc`, else per user; `None` = the CPU count.
    pub max_jobs: Option<u32>,
    /// Where job work directories go; `None` = the system temp dir.
    pub tmpdir: Option<PathBuf>,
    /// Progress heartbeat interval while a compile runs (default 5 s).
    pub heartbeat: Duration,
    /// What a client may make the server hold, and for how long.
    pub admission: Admission,
    /// How the compiler is contained (default [`SandboxMode::Landlock`]).
    pub sandbox: SandboxMode,
    /// Extra directories the sandboxed compiler may read and execute (a sysroot, a
    /// toolchain whose helpers live outside its own prefix).
    pub sandbox_paths: Vec<PathBuf>,
    /// Address space of each compiler process in bytes (`RLIMIT_AS`; default 8 GiB,
    /// `None` = no limit).
    pub max_memory: Option<u64>,
    /// Largest file a compiler process may write in bytes (`RLIMIT_FSIZE`; default 1 GiB,
    /// `None` = no limit).
    pub max_file_size: Option<u64>,
    /// Open files per compiler process (`RLIMIT_NOFILE`; default 256).
    pub max_open_files: u32,
}

/// `[server] sandbox`: how `hoardcc serve` contains the compilers it runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    /// Landlock (Linux 6.7 or later, ABI 4): the compiler reads and executes only system
    /// and toolchain directories, writes only its job directory, and has no TCP. A kernel
    /// without it gets every job refused (the client compiles locally), never an
    /// unsandboxed compile.
    #[default]
    Landlock,
    /// No Landlock: only the cleared environment and the resource limits apply. For
    /// servers whose every key holder may run commands anyway.
    Off,
}

/// Limits checked before a job gets a slot or any work (`[server]` keys in MiB / seconds).
/// A job over a size or count limit is refused (the client compiles it locally).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// Most bytes of one job's source and context files together, as decoded (default
    /// 256 MiB, `max_job_mib`). The claimed sizes are checked before anything is decoded.
    pub max_job_bytes: u64,
    /// Most context files (the user's headers, for diagnostics) in one job (default 4096).
    pub max_context_files: u32,
    /// Most extra outputs (`.dwo`, `.su` …) one job may ask back (default 16).
    pub max_extra_outputs: u32,
    /// Most bytes (as received) of jobs queued on one lane behind the running one (default
    /// 64 MiB, `max_queued_mib`); a job beyond it is answered `Busy`.
    pub max_queued_bytes: u64,
    /// A lane with no job running or queued and no frame arriving for this long is closed
    /// (default 300 s). The mux drops a lane the moment its server closes it, and runs a
    /// job again on a fresh lane if its hoarded one went stale, so no job fails by it.
    pub idle_timeout: Duration,
    /// Longest silence in the middle of a frame before the lane is dropped (default 60 s).
    pub frame_timeout: Duration,
    /// How long a stock distcc job waits for a free slot before it is answered "busy"
    /// (exit 114, the client compiles locally); 0 answers at once (default 60 s).
    pub slot_wait: Duration,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            max_job_bytes: 256 << 20,
            max_context_files: 4096,
            max_extra_outputs: 16,
            max_queued_bytes: 64 << 20,
            idle_timeout: Duration::from_secs(300),
            frame_timeout: Duration::from_secs(60),
            slot_wait: Duration::from_secs(60),
        }
    }
}

/// Largest MiB value accepted for the size limits (the frame limit is 256 MiB anyway).
const MAX_MIB: u64 = 4096;

/// Settings of the mux daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MuxSettings {
    /// Exit after this long without jobs (default 600 s, `HOARDCC_IDLE_TIMEOUT`).
    pub idle_timeout: Duration,
    /// Session channels opened per SSH connection before another connection is made (default 8,
    /// below OpenSSH's `MaxSessions 10`).
    pub channels_per_connection: u32,
}

impl Default for SshSettings {
    fn default() -> Self {
        SshSettings {
            connect_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(15),
            keepalive_max: 3,
            io_timeout: Duration::from_secs(300),
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            compilers: Vec::new(),
            default_compilers: true,
            compile_timeout: Duration::from_secs(20 * 60),
            max_jobs: None,
            tmpdir: None,
            heartbeat: Duration::from_secs(5),
            admission: Admission::default(),
            sandbox: SandboxMode::Landlock,
            sandbox_paths: Vec::new(),
            max_memory: Some(8 << 30),
            max_file_size: Some(1 << 30),
            max_open_files: 256,
        }
    }
}

impl Default for MuxSettings {
    fn default() -> Self {
        MuxSettings {
            idle_timeout: Duration::from_secs(600),
            channels_per_connection: 8,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hosts: None,
            fallback: true,
            backoff: Duration::from_secs(60),
            ssh: SshSettings::default(),
            server: ServerSettings::default(),
            mux: MuxSettings::default(),
        }
    }
}

/// Errors from reading, parsing or resolving settings.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A config file exists but cannot be read.
    #[error("cannot read config file {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error (its text is already part of this message).
        error: std::io::Error,
    },
    /// Invalid TOML or an unknown/mistyped key; the message carries line, column and key.
    #[error("invalid config{}: {message}", path_suffix(path))]
    Parse {
        /// The file, when known.
        path: Option<PathBuf>,
        /// The TOML error text.
        message: String,
    },
    /// A value that parses but is not allowed (e.g. a zero timeout).
    #[error("invalid config{}: `{key}` {problem}", path_suffix(path))]
    Value {
        /// The file, when known.
        path: Option<PathBuf>,
        /// The key, dotted (`ssh.connect_timeout_secs`).
        key: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
    /// An environment variable with a bad value.
    #[error("bad value {value:?} for environment variable {var}: {problem}")]
    Env {
        /// The variable name.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        problem: &'static str,
    },
}

fn path_suffix(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => format!(" {}", p.display()),
        None => String::new(),
    }
}

impl ConfigError {
    /// Attach the file path to a parse or value error.
    fn at(self, file: &Path) -> ConfigError {
        match self {
            ConfigError::Parse {
                path: None,
                message,
            } => ConfigError::Parse {
                path: Some(file.to_path_buf()),
                message,
            },
            ConfigError::Value {
                path: None,
                key,
                problem,
            } => ConfigError::Value {
                path: Some(file.to_path_buf()),
                key,
                problem,
            },
            other => other,
        }
    }
}

const POSITIVE: &str = "must be a positive number of seconds";

/// A positive duration from the file.
fn positive_secs(
    value: Option<u64>,
    key: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(0) => Err(ConfigError::Value {
            path: None,
            key,
            problem: POSITIVE,
        }),
        Some(s) => Ok(Duration::from_secs(s)),
    }
}

/// The `[server]` admission keys over `d`.
fn admission(server: &RawServer, d: &Admission) -> Result<Admission, ConfigError> {
    let mib = |v: Option<u64>, key, default: u64| match v {
        None => Ok(default),
        Some(n) if (1..=MAX_MIB).contains(&n) => Ok(n << 20),
        Some(_) => Err(ConfigError::Value {
            path: None,
            key,
            problem: "must be between 1 and 4096 (MiB)",
        }),
    };
    let idle = positive_secs(
        server.idle_timeout_secs,
        "server.idle_timeout_secs",
        d.idle_timeout,
    )?;
    Ok(Admission {
        max_job_bytes: mib(server.max_job_mib, "server.max_job_mib", d.max_job_bytes)?,
        max_context_files: positive_count(
            server.max_context_files,
            "server.max_context_files",
            d.max_context_files,
        )?,
        max_extra_outputs: server.max_extra_outputs.unwrap_or(d.max_extra_outputs),
        max_queued_bytes: mib(
            server.max_queued_mib,
            "server.max_queued_mib",
            d.max_queued_bytes,
        )?,
        idle_timeout: idle,
        frame_timeout: positive_secs(
            server.frame_timeout_secs,
            "server.frame_timeout_secs",
            d.frame_timeout,
        )?,
        slot_wait: server
            .slot_wait_secs
            .map(Duration::from_secs)
            .unwrap_or(d.slot_wait),
    })
}

fn positive_count(value: Option<u32>, key: &'static str, default: u32) -> Result<u32, ConfigError> {
    match value {
        None => Ok(default),
        Some(0) => Err(ConfigError::Value {
            path: None,
            key,
            problem: "must be at least 1",
        }),
        Some(n) => Ok(n),
    }
}

/// Fewest open files a compiler may be limited to (the driver, its pipes, the source,
/// the output and a temporary need a handful; below this compiles fail mysteriously).
const MIN_OPEN_FILES: u32 = 16;

/// A size limit given in MiB: 0 = no limit; too large to count in bytes is an error.
fn mib_limit(
    value: Option<u64>,
    key: &'static str,
    default: Option<u64>,
) -> Result<Option<u64>, ConfigError> {
    match value {
        None => Ok(default),
        Some(0) => Ok(None),
        Some(mib) => mib
            .checked_mul(1 << 20)
            .map(Some)
            .ok_or(ConfigError::Value {
                path: None,
                key,
                problem: "is too large",
            }),
    }
}

/// `sandbox_paths` must be absolute (a relative one would depend on the server's cwd).
fn sandbox_paths(value: Option<Vec<PathBuf>>) -> Result<Vec<PathBuf>, ConfigError> {
    let paths = value.unwrap_or_default();
    if paths.iter().any(|p| !p.is_absolute()) {
        return Err(ConfigError::Value {
            path: None,
            key: "server.sandbox_paths",
            problem: "must hold absolute paths",
        });
    }
    Ok(paths)
}

/// An environment variable holding seconds; unset or blank means "not set".
fn env_secs(
    env: &dyn Fn(&str) -> Option<String>,
    var: &'static str,
    allow_zero: bool,
) -> Result<Option<Duration>, ConfigError> {
    let Some(value) = env(var) else {
        return Ok(None);
    };
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    let bad = |problem| ConfigError::Env {
        var,
        value: value.clone(),
        problem,
    };
    let secs: u64 = trimmed
        .parse()
        .map_err(|_| bad("not a whole number of seconds"))?;
    if secs == 0 && !allow_zero {
        return Err(bad(POSITIVE));
    }
    Ok(Some(Duration::from_secs(secs)))
}

impl Config {
    /// Resolve settings from optional TOML text and the environment.
    ///
    /// # Errors
    /// [`ConfigError::Parse`]/[`ConfigError::Value`] for the file (without a path; [`load`] adds
    /// it), [`ConfigError::Env`] naming a bad environment variable.
    pub fn from_parts(
        file: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let raw = match file {
            Some(text) => RawConfig::parse(text)?,
            None => RawConfig::default(),
        };
        Config::from_raw(raw, env)
    }

    /// Resolve already-parsed file settings with the environment.
    ///
    /// # Errors
    /// As [`Config::from_parts`].
    pub fn from_raw(
        raw: RawConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let d = Config::default();
        let ssh = raw.ssh.unwrap_or_default();
        let server = raw.server.unwrap_or_default();
        let admission = admission(&server, &d.server.admission)?;
        let mux = raw.mux.unwrap_or_default();
        let mut config = Config {
            hosts: raw.hosts,
            fallback: raw.fallback.unwrap_or(d.fallback),
            backoff: raw
                .backoff_secs
                .map(Duration::from_secs)
                .unwrap_or(d.backoff),
            ssh: SshSettings {
                connect_timeout: positive_secs(
                    ssh.connect_timeout_secs,
                    "ssh.connect_timeout_secs",
                    d.ssh.connect_timeout,
                )?,
                keepalive_interval: positive_secs(
                    ssh.keepalive_interval_secs,
                    "ssh.keepalive_interval_secs",
                    d.ssh.keepalive_interval,
                )?,
                keepalive_max: positive_count(
                    ssh.keepalive_max,
                    "ssh.keepalive_max",
                    d.ssh.keepalive_max,
                )?,
                io_timeout: positive_secs(
                    ssh.io_timeout_secs,
                    "ssh.io_timeout_secs",
                    d.ssh.io_timeout,
                )?,
            },
            server: ServerSettings {
                compilers: server.compilers.unwrap_or_default(),
                default_compilers: server
                    .default_compilers
                    .unwrap_or(d.server.default_compilers),
                compile_timeout: positive_secs(
                    server.compile_timeout_secs,
                    "server.compile_timeout_secs",
                    d.server.compile_timeout,
                )?,
                max_jobs: match server.max_jobs {
                    None => None,
                    Some(n) => Some(positive_count(Some(n), "server.max_jobs", 1)?),
                },
                tmpdir: server.tmpdir,
                heartbeat: positive_secs(
                    server.heartbeat_secs,
                    "server.heartbeat_secs",
                    d.server.heartbeat,
                )?,
                admission,
                sandbox: server.sandbox.unwrap_or(d.server.sandbox),
                sandbox_paths: sandbox_paths(server.sandbox_paths)?,
                max_memory: mib_limit(
                    server.max_memory_mib,
                    "server.max_memory_mib",
                    d.server.max_memory,
                )?,
                max_file_size: mib_limit(
                    server.max_file_size_mib,
                    "server.max_file_size_mib",
                    d.server.max_file_size,
                )?,
                max_open_files: match server.max_open_files {
                    Some(n) if n < MIN_OPEN_FILES => {
                        return Err(ConfigError::Value {
                            path: None,
                            key: "server.max_open_files",
                            problem: "must be at least 16",
                        })
                    }
                    n => n.unwrap_or(d.server.max_open_files),
                },
            },
            mux: MuxSettings {
                idle_timeout: positive_secs(
                    mux.idle_timeout_secs,
                    "mux.idle_timeout_secs",
                    d.mux.idle_timeout,
                )?,
                channels_per_connection: positive_count(
                    mux.channels_per_connection,
                    "mux.channels_per_connection",
                    d.mux.channels_per_connection,
                )?,
            },
        };
        // distcc `dcc_getenv_bool`-style: "0" means off, anything else on. HOARDCC_ wins.
        if let Some(v) = env("HOARDCC_FALLBACK").or_else(|| env("DISTCC_FALLBACK")) {
            config.fallback = v.trim() != "0";
        }
        if let Some(t) = env_secs(env, "DISTCC_IO_TIMEOUT", false)? {
            config.ssh.io_timeout = t;
        }
        if let Some(t) = env_secs(env, "DISTCC_BACKOFF_PERIOD", true)? {
            config.backoff = t;
        }
        if let Some(t) = env_secs(env, "HOARDCC_IDLE_TIMEOUT", false)? {
            config.mux.idle_timeout = t;
        }
        Ok(config)
    }
}

/// Read a config file: `Ok(None)` when it does not exist.
fn read_raw(path: &Path) -> Result<Option<RawConfig>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => RawConfig::parse(&text).map(Some).map_err(|e| e.at(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            error,
        }),
    }
}

/// Load the client config: `paths.config_file()` if it exists (a missing file means defaults),
/// then environment overrides.
///
/// # Errors
/// [`ConfigError::Read`] / [`ConfigError::Parse`] / [`ConfigError::Value`] naming the file,
/// [`ConfigError::Env`] naming the variable.
pub fn load(paths: &Paths, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let path = paths.config_file();
    let raw = read_raw(&path)?.unwrap_or_default();
    Config::from_raw(raw, env).map_err(|e| e.at(&path))
}

/// Load the server config: `/etc/hoardcc/server.toml`, then the user's
/// `<config_dir>/server.toml` (later wins per field; missing files are skipped), or only the
/// file named by `HOARDCC_SERVER_CONFIG` (which must exist), then environment overrides.
///
/// # Errors
/// As [`load`].
pub fn load_server(
    paths: &Paths,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    load_server_from(Path::new(SYSTEM_SERVER_CONFIG), paths, env)
}

/// [`load_server`] with the system file location injected (for tests).
fn load_server_from(
    system_file: &Path,
    paths: &Paths,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let files = match env("HOARDCC_SERVER_CONFIG").filter(|v| !v.trim().is_empty()) {
        Some(named) => {
            let path = PathBuf::from(named);
            // Named explicitly, so a missing file is an error rather than "defaults".
            let raw = read_raw(&path)?.ok_or_else(|| ConfigError::Read {
                path: path.clone(),
                error: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "file named by HOARDCC_SERVER_CONFIG does not exist",
                ),
            })?;
            vec![(path, raw)]
        }
        None => {
            let mut files = Vec::new();
            for path in [system_file.to_path_buf(), paths.server_config_file()] {
                if let Some(raw) = read_raw(&path)? {
                    files.push((path, raw));
                }
            }
            files
        }
    };
    // Validate each file on its own first, so a bad value is reported with its file.
    let no_env = |_: &str| None;
    for (path, raw) in &files {
        Config::from_raw(raw.clone(), &no_env).map_err(|e| e.at(path))?;
    }
    let merged = files
        .into_iter()
        .fold(RawConfig::default(), |acc, (_, raw)| acc.merge(raw));
    Config::from_raw(merged, env)
}

#[cfg(test)]
mod tests;
