//! Settings (support for every stage): the TOML config files located by [`crate::paths`],
//! merged with environment overrides into [`Config`], which the wrapper (fallback), the mux
//! (SSH timeouts, backoff, idle exit, channels) and the subsystem (compiler allow-list, limits)
//! read. The host list itself is parsed by [`crate::hosts`]; here it is only carried as text.
//!
//! Two levels: [`FileConfig`] is the file as written, in its own units, with every key
//! defaulted (`#[serde(default)]`; unknown keys rejected with the TOML error location), and
//! [`Config`] is the validated result. Several files merge as TOML tables before that one
//! deserialisation (later file's keys over earlier's, table by table), so a new key needs
//! only its field, its default and its line in [`FileConfig::resolve`].
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
//! strict = false                   # compilers must also have the client's binaries (blake3)
//! match_configured = true          # compare `-v` configuration lines, not only version+target
//! cache = true                     # the result cache (`HOARDCC_CACHE=0` on a client skips it)
//! cache_dir = "/var/cache/me"      # the store; default $XDG_CACHE_HOME/hoardcc
//! cache_mib = 1024                 # the store's size cap (chunks and results together)
//! [mux]
//! idle_timeout_secs = 600          # HOARDCC_IDLE_TIMEOUT
//! channels_per_connection = 8
//! ```
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::paths::{Paths, SYSTEM_SERVER_CONFIG};

mod file;
use file::parse_error;
pub use file::{merge_tables, parse_table, FileConfig, FileMux, FileServer, FileSsh};

impl FileConfig {
    /// Parse TOML text (errors carry the line and column).
    ///
    /// # Errors
    /// [`ConfigError::Parse`] (with `path: None`) carrying the TOML error and its location.
    pub fn parse(text: &str) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(parse_error)
    }

    /// Deserialise a (merged) table.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] for an unknown or mistyped key (without a line: tables that
    /// came from files were already checked by [`FileConfig::parse`]).
    pub fn from_table(table: toml::Table) -> Result<FileConfig, ConfigError> {
        table.try_into().map_err(parse_error)
    }

    /// Check every bound and convert to [`Config`] (no environment).
    ///
    /// # Errors
    /// [`ConfigError::Value`] naming the dotted key (without a path; callers add it).
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let FileConfig {
            hosts,
            fallback,
            backoff_secs,
            ssh,
            server: s,
            mux,
        } = self;
        Ok(Config {
            hosts,
            fallback,
            backoff: Duration::from_secs(backoff_secs),
            ssh: SshTimeouts {
                connect_timeout: positive_secs(
                    ssh.connect_timeout_secs,
                    "ssh.connect_timeout_secs",
                )?,
                keepalive_interval: positive_secs(
                    ssh.keepalive_interval_secs,
                    "ssh.keepalive_interval_secs",
                )?,
                keepalive_max: positive_count(ssh.keepalive_max, "ssh.keepalive_max")?,
                io_timeout: positive_secs(ssh.io_timeout_secs, "ssh.io_timeout_secs")?,
            },
            server: ServerSettings {
                admission: Admission {
                    max_job_bytes: admission_mib(s.max_job_mib, "server.max_job_mib")?,
                    max_context_files: positive_count(
                        s.max_context_files,
                        "server.max_context_files",
                    )?,
                    max_extra_outputs: s.max_extra_outputs,
                    max_queued_bytes: admission_mib(s.max_queued_mib, "server.max_queued_mib")?,
                    idle_timeout: positive_secs(s.idle_timeout_secs, "server.idle_timeout_secs")?,
                    frame_timeout: positive_secs(
                        s.frame_timeout_secs,
                        "server.frame_timeout_secs",
                    )?,
                    slot_wait: Duration::from_secs(s.slot_wait_secs),
                },
                compilers: s.compilers,
                default_compilers: s.default_compilers,
                compile_timeout: positive_secs(
                    s.compile_timeout_secs,
                    "server.compile_timeout_secs",
                )?,
                max_jobs: s
                    .max_jobs
                    .map(|n| positive_count(n, "server.max_jobs"))
                    .transpose()?,
                tmpdir: s.tmpdir,
                heartbeat: positive_secs(s.heartbeat_secs, "server.heartbeat_secs")?,
                sandbox: s.sandbox,
                sandbox_paths: sandbox_paths(s.sandbox_paths)?,
                max_memory: mib_limit(s.max_memory_mib, "server.max_memory_mib")?,
                max_file_size: mib_limit(s.max_file_size_mib, "server.max_file_size_mib")?,
                max_open_files: if s.max_open_files < MIN_OPEN_FILES {
                    return Err(value_error("server.max_open_files", "must be at least 16"));
                } else {
                    s.max_open_files
                },
                strict: s.strict,
                match_configured: s.match_configured,
                cache: s.cache,
                cache_dir: match s.cache_dir {
                    Some(d) if !d.is_absolute() => {
                        return Err(value_error("server.cache_dir", "must be an absolute path"))
                    }
                    d => d,
                },
                cache_bytes: match s.cache_mib {
                    1..=MAX_CACHE_MIB => s.cache_mib << 20,
                    _ => {
                        return Err(value_error(
                            "server.cache_mib",
                            "must be between 1 and 1048576 (MiB)",
                        ))
                    }
                },
            },
            mux: MuxSettings {
                idle_timeout: positive_secs(mux.idle_timeout_secs, "mux.idle_timeout_secs")?,
                channels_per_connection: positive_count(
                    mux.channels_per_connection,
                    "mux.channels_per_connection",
                )?,
            },
        })
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
    /// The `[ssh]` timeouts (mux); `mux::ssh::SshSettings` adds the process's paths to them.
    pub ssh: SshTimeouts,
    /// Server (subsystem) settings.
    pub server: ServerSettings,
    /// Mux daemon settings.
    pub mux: MuxSettings,
}

/// The `[ssh]` table resolved: the mux's connection timeouts and keepalive. The mux turns
/// them, with its home directory and agent, into `mux::ssh::SshSettings`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTimeouts {
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
    /// Where job work directories go; `None` = `hoardcc serve`'s default
    /// (`subsystem::workdir::default_tmpdir`: a tmpfs `/dev/shm`, else the system temp
    /// dir).
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
    /// A job's compiler must also have the same binaries (blake3 of the driver, `cc1`,
    /// `cc1plus` and `as`) as the client's, not only the same version, target and
    /// configuration (default false).
    pub strict: bool,
    /// Compare the compilers' `-v` configuration lines (`Configured with:`, `Thread
    /// model:`, clang's vendor line), not only version and target (default true).
    pub match_configured: bool,
    /// Whether results are cached (default true): a job whose compiler, arguments,
    /// directory, environment and input match an earlier clean compile is answered from
    /// the store without compiling. The chunk store is used either way.
    pub cache: bool,
    /// The per-user store of chunks and results; `None` = `$XDG_CACHE_HOME/hoardcc`, else
    /// `~/.cache/hoardcc` ([`crate::paths::Paths::cache_dir`]).
    pub cache_dir: Option<PathBuf>,
    /// The store's size cap in bytes, chunks and results together (default 1 GiB,
    /// `cache_mib`); least recently used files go first.
    pub cache_bytes: u64,
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

/// Largest MiB value accepted for the size limits (the frame limit is 256 MiB anyway).
const MAX_MIB: u64 = 4096;
/// Largest store cap accepted: 1 TiB.
const MAX_CACHE_MIB: u64 = 1 << 20;

/// Settings of the mux daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MuxSettings {
    /// Exit after this long without jobs (default 600 s, `HOARDCC_IDLE_TIMEOUT`).
    pub idle_timeout: Duration,
    /// Session channels opened per SSH connection before another connection is made (default 8,
    /// below OpenSSH's `MaxSessions 10`).
    pub channels_per_connection: u32,
}

impl Default for Config {
    /// The defaults of [`FileConfig`], resolved.
    fn default() -> Self {
        FileConfig::default()
            .resolve()
            .expect("the built-in defaults are within every bound")
    }
}

impl Default for SshTimeouts {
    fn default() -> Self {
        Config::default().ssh
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Config::default().server
    }
}

impl Default for Admission {
    fn default() -> Self {
        Config::default().server.admission
    }
}

impl Default for MuxSettings {
    fn default() -> Self {
        Config::default().mux
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

fn value_error(key: &'static str, problem: &'static str) -> ConfigError {
    ConfigError::Value {
        path: None,
        key,
        problem,
    }
}

/// A positive duration from the file.
fn positive_secs(secs: u64, key: &'static str) -> Result<Duration, ConfigError> {
    match secs {
        0 => Err(value_error(key, POSITIVE)),
        s => Ok(Duration::from_secs(s)),
    }
}

fn positive_count(n: u32, key: &'static str) -> Result<u32, ConfigError> {
    match n {
        0 => Err(value_error(key, "must be at least 1")),
        n => Ok(n),
    }
}

/// An admission size limit in MiB, as bytes.
fn admission_mib(mib: u64, key: &'static str) -> Result<u64, ConfigError> {
    if (1..=MAX_MIB).contains(&mib) {
        Ok(mib << 20)
    } else {
        Err(value_error(key, "must be between 1 and 4096 (MiB)"))
    }
}

/// Fewest open files a compiler may be limited to (the driver, its pipes, the source,
/// the output and a temporary need a handful; below this compiles fail mysteriously).
const MIN_OPEN_FILES: u32 = 16;

/// A size limit given in MiB: 0 = no limit; too large to count in bytes is an error.
fn mib_limit(mib: u64, key: &'static str) -> Result<Option<u64>, ConfigError> {
    match mib {
        0 => Ok(None),
        mib => mib
            .checked_mul(1 << 20)
            .map(Some)
            .ok_or(value_error(key, "is too large")),
    }
}

/// `sandbox_paths` must be absolute (a relative one would depend on the server's cwd).
fn sandbox_paths(paths: Vec<PathBuf>) -> Result<Vec<PathBuf>, ConfigError> {
    if paths.iter().any(|p| !p.is_absolute()) {
        return Err(value_error(
            "server.sandbox_paths",
            "must hold absolute paths",
        ));
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
        let file = match file {
            Some(text) => FileConfig::parse(text)?,
            None => FileConfig::default(),
        };
        Config::from_file(file, env)
    }

    /// Validate already-parsed file settings, then apply the environment.
    ///
    /// # Errors
    /// As [`Config::from_parts`].
    pub fn from_file(
        file: FileConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut config = file.resolve()?;
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

/// Read and check one config file: `Ok(None)` when it does not exist, else its table.
/// Every parse and value error is reported here, with the file's path and the line.
fn read_file(path: &Path) -> Result<Option<toml::Table>, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(ConfigError::Read {
                path: path.to_path_buf(),
                error,
            })
        }
    };
    let checked = FileConfig::parse(&text).and_then(FileConfig::resolve);
    checked
        .and_then(|_| parse_table(&text))
        .map(Some)
        .map_err(|e| e.at(path))
}

/// Load the client config: `paths.config_file()` if it exists (a missing file means defaults),
/// then environment overrides.
///
/// # Errors
/// [`ConfigError::Read`] / [`ConfigError::Parse`] / [`ConfigError::Value`] naming the file,
/// [`ConfigError::Env`] naming the variable.
pub fn load(paths: &Paths, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let path = paths.config_file();
    let table = read_file(&path)?.unwrap_or_default();
    Config::from_file(FileConfig::from_table(table).map_err(|e| e.at(&path))?, env)
}

/// Load the server config: `/etc/hoardcc/server.toml`, then the user's
/// `<config_dir>/server.toml` (later wins per key, table by table; missing files are
/// skipped), or only the file named by `HOARDCC_SERVER_CONFIG` (which must exist), then
/// environment overrides.
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
    let tables = match env("HOARDCC_SERVER_CONFIG").filter(|v| !v.trim().is_empty()) {
        Some(named) => {
            let path = PathBuf::from(named);
            // Named explicitly, so a missing file is an error rather than "defaults".
            let table = read_file(&path)?.ok_or_else(|| ConfigError::Read {
                path: path.clone(),
                error: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "file named by HOARDCC_SERVER_CONFIG does not exist",
                ),
            })?;
            vec![table]
        }
        None => {
            let mut tables = Vec::new();
            for path in [system_file.to_path_buf(), paths.server_config_file()] {
                tables.extend(read_file(&path)?);
            }
            tables
        }
    };
    // Each file was checked on its own by `read_file`, so errors named their file.
    let merged = tables.into_iter().fold(toml::Table::new(), merge_tables);
    Config::from_file(FileConfig::from_table(merged)?, env)
}

#[cfg(test)]
mod keys;
#[cfg(test)]
mod tests;
