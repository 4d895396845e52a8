//! Stage: server execution, containment of the compiler: what a compiler started for a client
//! may touch. Three layers, all applied to the compiler child only (never to
//! `hoardcc serve` itself):
//!
//! - **Landlock** ([`SandboxMode::Landlock`], the default): read and execute on the
//!   system directories (`/usr`, `/lib*`, `/bin`, `/sbin`), a few named files in `/etc`,
//!   `/proc` and `/sys` that the dynamic loader, glibc and the compiler drivers read,
//!   the resolved compiler's own install prefix, and the admin's `sandbox_paths`; read
//!   and write (no execute, no symlinks, FIFOs or device nodes) on the job directory
//!   only; read-write on `/dev/null`, read on `/dev/urandom`. Every access right the
//!   kernel's ABI knows is handled, so everything else is denied: `$HOME`, `/tmp`, other
//!   users' files, TCP `bind`/`connect` (ABI 4), and from ABI 6 abstract Unix sockets
//!   and signals to processes outside the sandbox. A kernel below ABI 4 (Linux 6.7) gets
//!   every job refused with a reason, so the client compiles locally; never a silent
//!   unsandboxed compile.
//! - **Resource limits**: address space, file size, open files, CPU time (from the
//!   compile timeout) and core size 0, set whatever the mode.
//! - **A cleared environment** ([`compiler_env`]): `PATH`, `TMPDIR` (the job directory)
//!   and client locale variables whose values pass a strict pattern.
//!
//! Async-signal safety: the ruleset is built and filled in the parent, before `fork`
//! (opening paths and allocating there is fine); only its file descriptor travels into
//! the child, where [`Armed::apply`] makes nothing but raw system calls (`setrlimit`,
//! `prctl(PR_SET_NO_NEW_PRIVS)`, `landlock_restrict_self`). The landlock crate's own
//! `restrict_self` is not called in the child because it builds status values whose
//! allocation-freedom the crate does not promise. The ruleset fd is close-on-exec.
//!
//! Neighbours: `subsystem::job` and `subsystem::distccd` (ask [`Sandbox::check`], build
//! the [`Containment`] and the environment of each command), `subsystem::exec` (arms it
//! before the spawn and applies it in `pre_exec`), `config` ([`ServerSettings`]).

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, Scope, ABI,
};
use nix::sys::resource::{getrlimit, setrlimit, Resource};

use crate::config::{SandboxMode, ServerSettings};

/// The oldest Landlock ABI [`SandboxMode::Landlock`] accepts: 4 (Linux 6.7) is the first
/// that can deny TCP, and the first three (files, `rename` across directories,
/// `truncate`) come with it.
pub const MIN_ABI: i32 = 4;
/// The ABI that added scoping of abstract Unix sockets and signals (Linux 6.12).
pub const SCOPE_ABI: i32 = 6;

/// Directories a compiler's PATH always ends with.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Directories the compiler may read and execute below, on every host.
const SYSTEM_DIRS: [&str; 7] = [
    "/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin",
];
/// Single files (or small directories) the dynamic loader, glibc's locale code and the
/// compiler drivers read (clang reads the distribution files to pick its defaults).
const SYSTEM_READ: [&str; 14] = [
    "/etc/ld.so.cache",
    "/etc/ld.so.preload",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/locale.alias",
    "/etc/localtime",
    "/etc/os-release",
    "/etc/lsb-release",
    "/etc/debian_version",
    "/etc/redhat-release",
    "/etc/system-release",
    "/proc/cpuinfo",
    "/sys/devices/system/cpu",
    "/dev/urandom",
];

/// Why a compiler cannot be contained as configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SandboxError {
    /// The kernel offers no Landlock, or too old a one: every job is refused.
    #[error(
        "this server cannot sandbox its compiler ({reason}), so it runs no remote \
         compiles; its admin may set `sandbox = \"off\"` in server.toml"
    )]
    Unavailable {
        /// What the probe found.
        reason: String,
    },
    /// Building the ruleset for one job failed (a path could not be opened, the kernel
    /// refused a rule).
    #[error("building the compiler sandbox: {0}")]
    Ruleset(String),
}

/// The Landlock ABI the running kernel offers (0 = none: not built, not enabled at
/// boot, or blocked by a seccomp filter).
pub fn kernel_abi() -> i32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: the documented version query: no ruleset attribute, size 0.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    i32::try_from(v).unwrap_or(0).max(0)
}

/// Resource limits for one compiler process (each child gets its own budget).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// `RLIMIT_AS`, bytes.
    pub address_space: Option<u64>,
    /// `RLIMIT_FSIZE`, bytes.
    pub file_size: Option<u64>,
    /// `RLIMIT_NOFILE`.
    pub open_files: Option<u64>,
    /// `RLIMIT_CPU`, seconds: the soft limit (SIGXCPU); SIGKILL follows 5 s later.
    pub cpu_secs: Option<u64>,
}

impl Limits {
    /// The limits `settings` ask for; CPU time is the compile timeout rounded up (the
    /// wall-clock timeout normally ends a compile first; this also catches a process
    /// that left the group).
    pub fn from_settings(settings: &ServerSettings) -> Limits {
        let t = settings.compile_timeout;
        Limits {
            address_space: settings.max_memory,
            file_size: settings.max_file_size,
            open_files: Some(settings.max_open_files.into()),
            cpu_secs: Some(t.as_secs() + u64::from(t.subsec_nanos() > 0)),
        }
    }
}

/// How this server contains compilers: decided once per session from the settings and
/// the kernel probe.
#[derive(Debug, Clone)]
pub struct Sandbox {
    mode: SandboxMode,
    abi: i32,
    extra_paths: Vec<PathBuf>,
    limits: Limits,
    home: Option<PathBuf>,
}

impl Sandbox {
    /// The sandbox `settings` ask for, on this kernel, for this process's `$HOME`.
    pub fn new(settings: &ServerSettings) -> Sandbox {
        let sandbox = Sandbox::with_probe(
            settings,
            kernel_abi(),
            std::env::var_os("HOME").map(PathBuf::from),
        );
        match (sandbox.mode, sandbox.check()) {
            (SandboxMode::Off, _) => tracing::info!("compiler sandbox off (sandbox = \"off\")"),
            (_, Err(e)) => tracing::warn!("{e}"),
            (_, Ok(())) if sandbox.abi < SCOPE_ABI => tracing::info!(
                "Landlock ABI {}: abstract Unix sockets and signals are not scoped",
                sandbox.abi
            ),
            _ => tracing::debug!("compiler sandbox: Landlock ABI {}", sandbox.abi),
        }
        sandbox
    }

    /// [`Sandbox::new`] with the kernel's ABI and the home directory given (for tests).
    pub fn with_probe(settings: &ServerSettings, abi: i32, home: Option<PathBuf>) -> Sandbox {
        Sandbox {
            mode: settings.sandbox,
            abi,
            extra_paths: settings.sandbox_paths.clone(),
            limits: Limits::from_settings(settings),
            home: home.filter(|h| h.is_absolute()),
        }
    }

    /// Whether jobs may run at all.
    ///
    /// # Errors
    /// [`SandboxError::Unavailable`] when the mode is Landlock and the kernel offers less
    /// than [`MIN_ABI`].
    pub fn check(&self) -> Result<(), SandboxError> {
        match self.mode {
            SandboxMode::Off => Ok(()),
            SandboxMode::Landlock if self.abi >= MIN_ABI => Ok(()),
            SandboxMode::Landlock => Err(SandboxError::Unavailable {
                reason: if self.abi == 0 {
                    "the kernel offers no Landlock".into()
                } else {
                    format!(
                        "the kernel offers Landlock ABI {}, {MIN_ABI} or later is needed",
                        self.abi
                    )
                },
            }),
        }
    }

    /// The containment of one compile whose job directory is `job_dir`. Call
    /// [`Sandbox::check`] first: in Landlock mode this assumes it passed.
    pub fn containment(&self, job_dir: &Path) -> Containment {
        let landlock = (self.mode == SandboxMode::Landlock).then(|| LandlockPolicy {
            abi: self.abi,
            extra_paths: self.extra_paths.clone(),
            job_dir: job_dir.to_path_buf(),
            home: self.home.clone(),
        });
        Containment {
            landlock,
            limits: self.limits,
        }
    }
}

/// The Landlock part of a [`Containment`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct LandlockPolicy {
    abi: i32,
    extra_paths: Vec<PathBuf>,
    job_dir: PathBuf,
    home: Option<PathBuf>,
}

/// What one compile runs under. The default is limits off and no Landlock (core dumps
/// are off whatever this says).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Containment {
    landlock: Option<LandlockPolicy>,
    limits: Limits,
}

impl Containment {
    /// Only the given limits, no Landlock (tests of the limits alone).
    #[cfg(test)]
    pub fn limits_only(limits: Limits) -> Containment {
        Containment {
            landlock: None,
            limits,
        }
    }

    /// Whether Landlock applies (what the tests check of a built containment).
    #[cfg(test)]
    pub fn is_sandboxed(&self) -> bool {
        self.landlock.is_some()
    }

    /// Prepares everything for `program`'s child in the parent: the filled ruleset and
    /// the limits clamped to what this process may set.
    ///
    /// # Errors
    /// [`SandboxError::Ruleset`] when the ruleset cannot be built.
    pub fn arm(&self, program: &Path) -> Result<Armed, SandboxError> {
        let ruleset = match &self.landlock {
            Some(policy) => Some(build_ruleset(policy, program)?),
            None => None,
        };
        let l = &self.limits;
        let wanted = [
            (Resource::RLIMIT_CORE, Some((0, 0))),
            (Resource::RLIMIT_AS, l.address_space.map(|b| (b, b))),
            (Resource::RLIMIT_FSIZE, l.file_size.map(|b| (b, b))),
            (Resource::RLIMIT_NOFILE, l.open_files.map(|n| (n, n))),
            (
                Resource::RLIMIT_CPU,
                l.cpu_secs.map(|s| (s, s.saturating_add(5))),
            ),
        ];
        let mut rlimits = Vec::with_capacity(wanted.len());
        for (resource, want) in wanted {
            let Some((soft, hard)) = want else { continue };
            // Never above the current hard limit: raising it would fail (EPERM) unless
            // we are privileged, and a lower one set by the admin stays.
            let (_, cur_hard) = getrlimit(resource)
                .map_err(|e| SandboxError::Ruleset(format!("getrlimit: {e}")))?;
            rlimits.push((resource, soft.min(cur_hard), hard.min(cur_hard)));
        }
        Ok(Armed { ruleset, rlimits })
    }
}

/// A [`Containment`] ready for one child.
#[derive(Debug)]
pub struct Armed {
    ruleset: Option<OwnedFd>,
    rlimits: Vec<(Resource, u64, u64)>,
}

impl Armed {
    /// Applies the limits and restricts the calling process with the ruleset. Meant for
    /// the child between `fork` and `exec`: it only makes system calls, no allocation,
    /// no locks.
    ///
    /// # Errors
    /// The failing call's OS error (the spawn then fails with it).
    pub fn apply(&self) -> io::Result<()> {
        for &(resource, soft, hard) in &self.rlimits {
            setrlimit(resource, soft, hard).map_err(io::Error::from)?;
        }
        if let Some(fd) = &self.ruleset {
            nix::sys::prctl::set_no_new_privs().map_err(io::Error::from)?;
            // SAFETY: a plain system call on a ruleset fd we own; flags 0.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_landlock_restrict_self,
                    fd.as_raw_fd(),
                    0 as libc::c_uint,
                )
            };
            if r != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// Whether `dir` is `/`, or holds (or is) `other`.
fn holds(dir: &Path, other: &Path) -> bool {
    dir.parent().is_none() || other.starts_with(dir)
}

/// What of the compiler's installation to open for reading and executing: its prefix
/// (the parent of a `bin` directory) so `lib/gcc/…` and `libexec/…` are found, else its
/// directory, else the file alone, whichever first neither is `/` nor holds the home
/// directory or the job directory (a compiler in `~/bin` opens `~/bin`, not `~`; one in
/// the directory that holds the jobs does not open the other jobs). Both the path as
/// resolved and its canonical form count (a symlink `/opt/bin/cc` → `/opt/gcc/bin/gcc`).
fn toolchain_paths(program: &Path, home: Option<&Path>, job_dir: &Path) -> Vec<PathBuf> {
    let canon = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let home = home.map(canon);
    let job_dir = canon(job_dir);
    let safe = |p: &Path| !holds(p, &job_dir) && !home.as_deref().is_some_and(|h| holds(p, h));
    let mut out: Vec<PathBuf> = Vec::new();
    for exe in [program.to_path_buf(), canon(program)] {
        let dir = exe.parent().map(Path::to_path_buf);
        let prefix = dir
            .as_deref()
            .filter(|d| d.file_name() == Some(OsStr::new("bin")))
            .and_then(Path::parent)
            .map(Path::to_path_buf);
        let pick = [prefix, dir, Some(exe.clone())]
            .into_iter()
            .flatten()
            .find(|p| safe(p));
        if let Some(p) = pick.filter(|p| !out.contains(p)) {
            out.push(p);
        }
    }
    out
}

fn ruleset_error(e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Ruleset(e.to_string())
}

/// Builds and fills the ruleset in the calling (parent) process; returns its fd.
fn build_ruleset(p: &LandlockPolicy, program: &Path) -> Result<OwnedFd, SandboxError> {
    let abi = ABI::from(p.abi);
    let all = AccessFs::from_all(abi);
    let read_exec = AccessFs::from_read(abi);
    let read = read_exec & !AccessFs::Execute;
    // The job directory: files and directories in it, renames within it; no execute,
    // no symlinks (an output symlinked to a secret), no FIFOs (an output that blocks
    // the server's read), no sockets or device nodes.
    let job = all
        & (AccessFs::ReadFile
            | AccessFs::ReadDir
            | AccessFs::WriteFile
            | AccessFs::RemoveFile
            | AccessFs::RemoveDir
            | AccessFs::MakeReg
            | AccessFs::MakeDir
            | AccessFs::Refer
            | AccessFs::Truncate);
    let dev_null =
        all & (AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate | AccessFs::IoctlDev);

    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(all)
        .map_err(ruleset_error)?;
    if p.abi >= MIN_ABI {
        // Handled with no rule: no TCP bind or connect at all.
        ruleset = ruleset
            .handle_access(AccessNet::from_all(abi))
            .map_err(ruleset_error)?;
    }
    if p.abi >= SCOPE_ABI {
        ruleset = ruleset.scope(Scope::from_all(abi)).map_err(ruleset_error)?;
    }
    let mut created = ruleset.create().map_err(ruleset_error)?;

    let mut rules: Vec<(PathBuf, BitFlags<AccessFs>)> = Vec::new();
    rules.extend(SYSTEM_DIRS.iter().map(|d| (PathBuf::from(d), read_exec)));
    rules.extend(SYSTEM_READ.iter().map(|f| (PathBuf::from(f), read)));
    rules.extend(p.extra_paths.iter().map(|d| (d.clone(), read_exec)));
    rules.extend(
        toolchain_paths(program, p.home.as_deref(), &p.job_dir)
            .into_iter()
            .map(|d| (d, read_exec)),
    );
    rules.push(("/dev/null".into(), dev_null));
    rules.push((p.job_dir.clone(), job));
    for (path, access) in rules {
        let fd = match PathFd::new(&path) {
            Ok(fd) => fd,
            // Hosts differ (no /lib32, no /etc/lsb-release): absent paths are skipped.
            Err(_) if !path.exists() => continue,
            Err(e) => return Err(ruleset_error(format!("{}: {e}", path.display()))),
        };
        // Directory-only rights on a file are an error for the kernel.
        let access = if path.is_dir() {
            access
        } else {
            access & AccessFs::from_file(abi)
        };
        created = created
            .add_rule(PathBeneath::new(fd, access))
            .map_err(|e| ruleset_error(format!("{}: {e}", path.display())))?;
    }
    Option::<OwnedFd>::from(created)
        .ok_or_else(|| ruleset_error("the kernel gave no ruleset (Landlock missing?)"))
}

/// Locale variables a client may pass to the compiler.
pub const LOCALE_VARS: [&str; 15] = [
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_ADDRESS",
    "LC_COLLATE",
    "LC_CTYPE",
    "LC_IDENTIFICATION",
    "LC_MEASUREMENT",
    "LC_MESSAGES",
    "LC_MONETARY",
    "LC_NAME",
    "LC_NUMERIC",
    "LC_PAPER",
    "LC_TELEPHONE",
    "LC_TIME",
];

/// Longest locale value kept (real ones are under 30 bytes).
const MAX_LOCALE_LEN: usize = 64;
/// Most entries in a `LANGUAGE` list.
const MAX_LANGUAGES: usize = 16;

/// `C`, `POSIX`, or `language[_territory][.codeset][@modifier]` with ASCII letters,
/// digits, and `-`/`_` inside the codeset: `en_US.UTF-8`, `sr_RS.UTF-8@latin`, `C.utf8`.
/// Anything with `/`, `..` or other punctuation (glibc takes those as paths) fails.
pub fn is_locale_name(v: &str) -> bool {
    fn run(s: &str, max: usize, ok: fn(u8) -> bool) -> bool {
        !s.is_empty() && s.len() <= max && s.bytes().all(ok)
    }
    if v.len() > MAX_LOCALE_LEN {
        return false;
    }
    let (v, modifier) = match v.split_once('@') {
        Some((a, m)) => (a, Some(m)),
        None => (v, None),
    };
    let (v, codeset) = match v.split_once('.') {
        Some((a, c)) => (a, Some(c)),
        None => (v, None),
    };
    let (language, territory) = match v.split_once('_') {
        Some((a, t)) => (a, Some(t)),
        None => (v, None),
    };
    let alpha = |b: u8| b.is_ascii_alphabetic();
    let alnum = |b: u8| b.is_ascii_alphanumeric();
    run(language, 8, alpha)
        && territory.is_none_or(|t| run(t, 3, alnum))
        && codeset.is_none_or(|c| {
            run(c, 20, |b| {
                b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
            })
        })
        && modifier.is_none_or(|m| run(m, 16, alnum))
}

/// A `LANGUAGE` value: a colon-separated list of [`is_locale_name`]s.
pub fn is_language_list(v: &str) -> bool {
    v.len() <= MAX_LOCALE_LEN * 2
        && v.split(':').count() <= MAX_LANGUAGES
        && v.split(':').all(is_locale_name)
}

/// Whether the client's `name=value` may reach the compiler.
pub fn is_allowed_locale(name: &str, value: &str) -> bool {
    LOCALE_VARS.contains(&name)
        && if name == "LANGUAGE" {
            is_language_list(value)
        } else {
            is_locale_name(value)
        }
}

/// The absolute entries of `search_path` (a relative or empty entry would search the
/// job directory, whose files the client wrote), then those of [`DEFAULT_PATH`] it
/// lacks (so a driver or script finds the basic tools whatever the server's PATH).
pub fn safe_path(search_path: &OsStr) -> OsString {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let defaults = std::env::split_paths(OsStr::new(DEFAULT_PATH));
    for dir in std::env::split_paths(search_path).chain(defaults) {
        if dir.is_absolute() && !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    std::env::join_paths(dirs).unwrap_or_else(|_| DEFAULT_PATH.into())
}

/// The compiler's whole environment: `PATH` (the server's search path, the one the
/// compiler itself was found on, so the driver finds its `as` the same way),
/// `TMPDIR` = the job directory, and the client's locale variables that pass
/// [`is_allowed_locale`] (the last of a repeated name wins).
pub fn compiler_env<'a>(
    search_path: &OsStr,
    job_dir: &Path,
    client: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = vec![
        ("PATH".into(), safe_path(search_path)),
        ("TMPDIR".into(), job_dir.as_os_str().to_owned()),
    ];
    for (k, v) in client {
        if !is_allowed_locale(k, v) {
            continue;
        }
        env.retain(|(name, _)| name != k);
        env.push((k.into(), v.into()));
    }
    env
}

#[cfg(test)]
mod tests;
