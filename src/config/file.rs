//! Settings, the first level: the config file as written ([`FileConfig`] and its tables,
//! in the file's own units, every key defaulted here and nowhere else) and the merge of
//! several files as TOML tables before the one deserialisation. Neighbours: `config` (the
//! second level: [`FileConfig::resolve`] validates this into `Config`), `config::keys`
//! (derives the key list from these structs for the man page check).

use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, SandboxMode};

/// The config file as written, in the file's units; a missing key takes its default here
/// (the only place defaults are written), an unknown key is an error.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// Host list in `DISTCC_HOSTS` syntax.
    pub hosts: Option<String>,
    /// Compile locally when distribution fails.
    pub fallback: bool,
    /// Seconds a failed host is skipped; 0 disables backoff.
    pub backoff_secs: u64,
    /// `[ssh]` table.
    pub ssh: FileSsh,
    /// `[server]` table.
    pub server: FileServer,
    /// `[mux]` table.
    pub mux: FileMux,
}

/// The `[ssh]` table as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileSsh {
    /// See [`SshTimeouts::connect_timeout`](super::SshTimeouts::connect_timeout).
    pub connect_timeout_secs: u64,
    /// See [`SshTimeouts::keepalive_interval`](super::SshTimeouts::keepalive_interval).
    pub keepalive_interval_secs: u64,
    /// See [`SshTimeouts::keepalive_max`](super::SshTimeouts::keepalive_max).
    pub keepalive_max: u32,
    /// See [`SshTimeouts::io_timeout`](super::SshTimeouts::io_timeout).
    pub io_timeout_secs: u64,
}

/// The `[server]` table as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileServer {
    /// See [`ServerSettings::compilers`](super::ServerSettings::compilers).
    pub compilers: Vec<String>,
    /// See [`ServerSettings::default_compilers`](super::ServerSettings::default_compilers).
    pub default_compilers: bool,
    /// See [`ServerSettings::compile_timeout`](super::ServerSettings::compile_timeout).
    pub compile_timeout_secs: u64,
    /// See [`ServerSettings::max_jobs`](super::ServerSettings::max_jobs).
    pub max_jobs: Option<u32>,
    /// See [`ServerSettings::tmpdir`](super::ServerSettings::tmpdir).
    pub tmpdir: Option<PathBuf>,
    /// See [`ServerSettings::heartbeat`](super::ServerSettings::heartbeat).
    pub heartbeat_secs: u64,
    // Admission limits: see [`Admission`].
    /// See [`Admission::max_job_bytes`](super::Admission::max_job_bytes) (MiB).
    pub max_job_mib: u64,
    /// See [`Admission::max_context_files`](super::Admission::max_context_files).
    pub max_context_files: u32,
    /// See [`Admission::max_extra_outputs`](super::Admission::max_extra_outputs).
    pub max_extra_outputs: u32,
    /// See [`Admission::max_queued_bytes`](super::Admission::max_queued_bytes) (MiB).
    pub max_queued_mib: u64,
    /// See [`Admission::idle_timeout`](super::Admission::idle_timeout).
    pub idle_timeout_secs: u64,
    /// See [`Admission::frame_timeout`](super::Admission::frame_timeout).
    pub frame_timeout_secs: u64,
    /// See [`Admission::slot_wait`](super::Admission::slot_wait).
    pub slot_wait_secs: u64,
    /// See [`ServerSettings::sandbox`](super::ServerSettings::sandbox).
    pub sandbox: SandboxMode,
    /// See [`ServerSettings::sandbox_paths`](super::ServerSettings::sandbox_paths).
    pub sandbox_paths: Vec<PathBuf>,
    /// See [`ServerSettings::max_memory`](super::ServerSettings::max_memory) (MiB, 0 = no limit).
    pub max_memory_mib: u64,
    /// See [`ServerSettings::max_file_size`](super::ServerSettings::max_file_size) (MiB, 0 = no limit).
    pub max_file_size_mib: u64,
    /// See [`ServerSettings::max_open_files`](super::ServerSettings::max_open_files).
    pub max_open_files: u32,
    /// See [`ServerSettings::strict`](super::ServerSettings::strict).
    pub strict: bool,
    /// See [`ServerSettings::match_configured`](super::ServerSettings::match_configured).
    pub match_configured: bool,
    /// See [`ServerSettings::cache`](super::ServerSettings::cache).
    pub cache: bool,
    /// See [`ServerSettings::cache_dir`](super::ServerSettings::cache_dir).
    pub cache_dir: Option<PathBuf>,
    /// See [`ServerSettings::cache_bytes`](super::ServerSettings::cache_bytes) (MiB).
    pub cache_mib: u64,
}

/// The `[mux]` table as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileMux {
    /// See [`MuxSettings::idle_timeout`](super::MuxSettings::idle_timeout).
    pub idle_timeout_secs: u64,
    /// See [`MuxSettings::channels_per_connection`](super::MuxSettings::channels_per_connection).
    pub channels_per_connection: u32,
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            hosts: None,
            fallback: true,
            backoff_secs: 60,
            ssh: FileSsh::default(),
            server: FileServer::default(),
            mux: FileMux::default(),
        }
    }
}

impl Default for FileSsh {
    fn default() -> Self {
        FileSsh {
            connect_timeout_secs: 10,
            keepalive_interval_secs: 15,
            keepalive_max: 3,
            io_timeout_secs: 300,
        }
    }
}

impl Default for FileServer {
    fn default() -> Self {
        FileServer {
            compilers: Vec::new(),
            default_compilers: true,
            compile_timeout_secs: 20 * 60,
            max_jobs: None,
            tmpdir: None,
            heartbeat_secs: 5,
            max_job_mib: 256,
            max_context_files: 4096,
            max_extra_outputs: 16,
            max_queued_mib: 64,
            idle_timeout_secs: 300,
            frame_timeout_secs: 60,
            slot_wait_secs: 60,
            sandbox: SandboxMode::Landlock,
            sandbox_paths: Vec::new(),
            max_memory_mib: 8192,
            max_file_size_mib: 1024,
            max_open_files: 256,
            strict: false,
            match_configured: true,
            cache: true,
            cache_dir: None,
            cache_mib: 1024,
        }
    }
}

impl Default for FileMux {
    fn default() -> Self {
        FileMux {
            idle_timeout_secs: 600,
            channels_per_connection: 8,
        }
    }
}

/// Parse one file's text as a TOML table (for [`merge_tables`]).
///
/// # Errors
/// [`ConfigError::Parse`] (with `path: None`) carrying the TOML error and its location.
pub fn parse_table(text: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(parse_error)
}

/// Overlay `later` on `earlier`, table by table: a key `later` sets wins, except that two
/// tables under the same key are merged the same way (lists are replaced, not joined).
pub fn merge_tables(mut earlier: toml::Table, later: toml::Table) -> toml::Table {
    for (key, value) in later {
        match (earlier.get_mut(&key), value) {
            (Some(toml::Value::Table(old)), toml::Value::Table(new)) => {
                let old = std::mem::take(old);
                earlier.insert(key, toml::Value::Table(merge_tables(old, new)));
            }
            (_, value) => {
                earlier.insert(key, value);
            }
        }
    }
    earlier
}

pub(super) fn parse_error(e: impl std::fmt::Display) -> ConfigError {
    ConfigError::Parse {
        path: None,
        message: e.to_string(),
    }
}
