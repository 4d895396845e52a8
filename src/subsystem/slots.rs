//! Stage: server admission, the server slots: one limit on concurrent compiles shared by the
//! `hoardcc serve` processes that use the same slot directory (each lane is its own
//! process, so the limit must live outside them). These server slots (the client's own
//! per-host limit is the mux's host slots, `mux::scheduler`) are lock files `slot-0 …
//! slot-(N-1)` taken with non-blocking `flock`: a held lock frees itself when its
//! process dies, so a crashed server never leaks a slot. All slots held → the job is
//! answered `Busy` at once (the client's scheduler tries another host); stock distcc
//! jobs poll for a bounded time instead (`subsystem::distccd`). Neighbours:
//! `subsystem::session` and `subsystem::distccd` (call [`try_acquire`] per job),
//! `subsystem` ([`current_load`] for the hello), `subsystem::exec` (runs while the
//! [`ServerSlot`] is held).
//!
//! Which directory ([`slot_dir_from_env`]), and so who shares the limit:
//! 1. `$HOARDCC_SLOT_DIR` (tests, unusual hosts), as given;
//! 2. [`SHARED_SLOT_DIR`] (`/run/hoardcc`) when an admin made it (root-owned, sticky if
//!    others may write; `contrib/hoardcc.tmpfiles.conf`): the limit is host-wide;
//! 3. otherwise a directory of this user only, so the limit is per user:
//!    `$XDG_RUNTIME_DIR/hoardcc-slots` (or `/run/user/<uid>/…`), else
//!    `/tmp/hoardcc-slots-<uid>`, else (that name squatted by someone else)
//!    `~/.cache/hoardcc/slots-<host>`.
//!
//! Nothing here ever blocks on a file another user controls: directories and slot files
//! are opened with `O_NOFOLLOW` (slot files also `O_NONBLOCK`, so a FIFO opens at once),
//! checked with `fstat`, and locked with `LOCK_NB` only. A slot file that is not a
//! regular file (or, in a private directory, not ours) is never locked: in a private
//! directory it is replaced, in a shared one it counts as held. So in `/run/hoardcc`
//! another local user can still hold or squat slots and make this host answer `Busy`
//! (the admin chose to share it); they cannot hang a server or raise the limit.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::{Uid, UnlinkatFlags};

/// The directory an admin provisions for a host-wide limit shared by all users.
pub const SHARED_SLOT_DIR: &str = "/run/hoardcc";
/// Environment variable naming the slot directory outright (tests, unusual hosts).
pub const SLOT_DIR_ENV: &str = "HOARDCC_SLOT_DIR";

/// Why no slot could be examined (not "all busy": that is `Ok(None)`).
#[derive(Debug, thiserror::Error)]
pub enum ServerSlotError {
    /// The slot directory could not be created or opened, or is not a directory.
    #[error("slot directory {dir}: {source}")]
    Dir { dir: PathBuf, source: io::Error },
    /// The directory belongs to another user, or others may replace its files.
    #[error("slot directory {dir} is unsafe: {why}")]
    Unsafe { dir: PathBuf, why: String },
}

/// A held compile slot; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct ServerSlot {
    /// Which slot (`slot-<index>`).
    pub index: u32,
    /// The lock; dropping it unlocks and closes the file.
    _lock: Flock<File>,
}

/// Who may put files into a slot directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Only this user: every slot file must be ours, and a bad one is replaced.
    Private,
    /// Other users too (sticky): slot files of any owner are used, bad ones count as held.
    Shared,
}

/// The host-wide limit: `max_jobs` if set (and non-zero), else the CPU count.
pub fn host_limit(max_jobs: Option<u32>) -> u32 {
    match max_jobs {
        Some(n) if n > 0 => n,
        _ => std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
    }
}

/// The slot directory for this process: see the module docs for the order.
pub fn slot_dir_from_env() -> PathBuf {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(dir) = env(SLOT_DIR_ENV) {
        return PathBuf::from(dir);
    }
    choose_slot_dir(
        Uid::current(),
        &env,
        Path::new(SHARED_SLOT_DIR),
        Path::new("/tmp"),
        &super::hostname(),
    )
}

/// The default choice with its inputs explicit (tests point `shared` and `tmp`
/// elsewhere): `shared` if an admin made it and we may use it, else our runtime
/// directory, else `<tmp>/hoardcc-slots-<uid>` unless another user squats it, else
/// under `$HOME`.
pub fn choose_slot_dir(
    uid: Uid,
    env: &dyn Fn(&str) -> Option<OsString>,
    shared: &Path,
    tmp: &Path,
    host: &str,
) -> PathBuf {
    if shared_dir_usable(shared) {
        return shared.to_path_buf();
    }
    let runtime = env("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain(std::iter::once(PathBuf::from(format!("/run/user/{uid}"))));
    for dir in runtime {
        if private_dir_ok(&dir, uid) {
            return dir.join("hoardcc-slots");
        }
    }
    let tmp_dir = tmp.join(format!("hoardcc-slots-{uid}"));
    match std::fs::symlink_metadata(&tmp_dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return tmp_dir,
        Ok(m) if m.is_dir() && m.uid() == uid.as_raw() && sticky_if_shared(m.mode()) => {
            return tmp_dir
        }
        _ => tracing::warn!(
            "{} is not a directory of ours (another user made it?); using one under $HOME",
            tmp_dir.display()
        ),
    }
    let home = env("HOME").map(PathBuf::from).unwrap_or(tmp_dir);
    home.join(".cache/hoardcc").join(format!("slots-{host}"))
}

/// `/run/hoardcc`-style: a real directory owned by root, sticky if others may write,
/// that we may create files in.
fn shared_dir_usable(dir: &Path) -> bool {
    let Ok(m) = std::fs::symlink_metadata(dir) else {
        return false;
    };
    if !m.is_dir() || m.uid() != 0 || !sticky_if_shared(m.mode()) {
        if m.is_dir() {
            tracing::warn!(
                "{} is not root-owned and sticky; not sharing slots through it",
                dir.display()
            );
        }
        return false;
    }
    nix::unistd::access(
        dir,
        nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
    )
    .is_ok()
}

/// A real directory of ours that nobody else can enter.
fn private_dir_ok(dir: &Path, uid: Uid) -> bool {
    std::fs::symlink_metadata(dir)
        .is_ok_and(|m| m.is_dir() && m.uid() == uid.as_raw() && m.mode() & 0o077 == 0)
}

/// Group or other may write → the sticky bit must stop them replacing our files.
fn sticky_if_shared(mode: u32) -> bool {
    mode & 0o022 == 0 || mode & 0o1000 != 0
}

/// Opens `dir` without following a symlink, creating it (0700, with parents) if missing,
/// and decides its [`Scope`].
///
/// # Errors
/// [`ServerSlotError::Dir`] if it cannot be made or opened; [`ServerSlotError::Unsafe`] if it is
/// another user's (other than root's) or others may write it without the sticky bit.
pub fn open_dir(dir: &Path) -> Result<(OwnedFd, Scope), ServerSlotError> {
    let err = |source| ServerSlotError::Dir {
        dir: dir.to_path_buf(),
        source,
    };
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = match nix::fcntl::open(dir, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => {
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent).map_err(err)?;
            }
            match nix::unistd::mkdir(dir, Mode::S_IRWXU) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(err(e.into())),
            }
            nix::fcntl::open(dir, flags, Mode::empty()).map_err(|e| err(e.into()))?
        }
        Err(e) => return Err(err(e.into())),
    };
    let st = nix::sys::stat::fstat(&fd).map_err(|e| err(e.into()))?;
    let me = Uid::current().as_raw();
    let unsafe_dir = |why: String| ServerSlotError::Unsafe {
        dir: dir.to_path_buf(),
        why,
    };
    if st.st_uid != me && st.st_uid != 0 {
        return Err(unsafe_dir(format!("owned by uid {}", st.st_uid)));
    }
    if !sticky_if_shared(st.st_mode) {
        return Err(unsafe_dir(format!(
            "mode {:o}: others may write it and it is not sticky",
            st.st_mode & 0o7777
        )));
    }
    let scope = if st.st_uid == me && st.st_mode & 0o077 == 0 {
        Scope::Private
    } else {
        Scope::Shared
    };
    Ok((fd, scope))
}

/// What one slot file is.
enum Probe {
    /// Missing (and not created).
    Missing,
    /// A regular file we may lock.
    Usable(File),
    /// Something we must not lock: not a regular file, not ours in a private directory,
    /// unreadable, a symlink.
    Unusable(String),
}

fn slot_name(index: u32) -> String {
    format!("slot-{index}")
}

/// Opens `slot-<index>` relative to `dir` without ever blocking or following a link
/// (`O_NONBLOCK`: a FIFO opens at once; `O_NOFOLLOW`: a symlink fails), creating it if
/// `create` and it is missing, and checks it with `fstat`.
fn probe(dir: &OwnedFd, scope: Scope, index: u32, create: bool) -> Probe {
    let name = slot_name(index);
    let base = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    // Never O_CREAT on an existing file: `fs.protected_regular` refuses that for other
    // users' files in sticky directories, and it is not needed.
    let mut opened = nix::fcntl::openat(dir, name.as_str(), base, Mode::empty());
    if matches!(opened, Err(Errno::ENOENT)) && create {
        let mode = match scope {
            Scope::Private => Mode::from_bits_truncate(0o600),
            Scope::Shared => Mode::from_bits_truncate(0o644),
        };
        opened = match nix::fcntl::openat(
            dir,
            name.as_str(),
            base | OFlag::O_CREAT | OFlag::O_EXCL,
            mode,
        ) {
            Ok(fd) => {
                // The umask may have narrowed it; in a shared directory others only
                // need to read it to lock it.
                let _ = nix::sys::stat::fchmod(&fd, mode);
                Ok(fd)
            }
            Err(Errno::EEXIST) => nix::fcntl::openat(dir, name.as_str(), base, Mode::empty()),
            Err(e) => Err(e),
        };
    }
    let fd = match opened {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Probe::Missing,
        Err(Errno::ELOOP) => return Probe::Unusable("a symbolic link".into()),
        Err(e) => return Probe::Unusable(e.desc().to_owned()),
    };
    let st = match nix::sys::stat::fstat(&fd) {
        Ok(st) => st,
        Err(e) => return Probe::Unusable(e.desc().to_owned()),
    };
    if st.st_mode & nix::libc::S_IFMT != nix::libc::S_IFREG {
        return Probe::Unusable("not a regular file".into());
    }
    if scope == Scope::Private && st.st_uid != Uid::current().as_raw() {
        return Probe::Unusable(format!("owned by uid {}", st.st_uid));
    }
    Probe::Usable(File::from(fd))
}

/// Tries to take one of `limit` slots in `dir`, lowest first, without blocking.
/// `Ok(None)` when all are held. A slot file that must not be locked counts as held in
/// a shared directory; in a private one it is removed and made afresh.
///
/// # Errors
/// [`ServerSlotError`] when the directory is unusable.
pub fn try_acquire(dir: &Path, limit: u32) -> Result<Option<ServerSlot>, ServerSlotError> {
    let (dfd, scope) = open_dir(dir)?;
    for index in 0..limit {
        let mut probed = probe(&dfd, scope, index, true);
        if let (Probe::Unusable(why), Scope::Private) = (&probed, scope) {
            tracing::warn!(
                "slot file {}/slot-{index}: {why}; replacing it",
                dir.display()
            );
            let _ =
                nix::unistd::unlinkat(&dfd, slot_name(index).as_str(), UnlinkatFlags::NoRemoveDir);
            probed = probe(&dfd, scope, index, true);
        }
        let file = match probed {
            Probe::Usable(f) => f,
            Probe::Missing => continue,
            Probe::Unusable(why) => {
                tracing::warn!(
                    "slot file {}/slot-{index}: {why}; counted as held",
                    dir.display()
                );
                continue;
            }
        };
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(Some(ServerSlot { index, _lock: lock })),
            Err((_, Errno::EWOULDBLOCK)) => continue,
            Err((_, e)) => {
                tracing::warn!("flock {}/slot-{index}: {e}", dir.display());
                continue;
            }
        }
    }
    Ok(None)
}

/// How many of the `limit` slots in `dir` are held right now (by any process, this one
/// included; a slot file that must not be locked counts as held). Never creates or
/// blocks; 0 if the directory is missing or unusable.
pub fn current_load(dir: &Path, limit: u32) -> u32 {
    let Ok((dfd, scope)) = open_dir_existing(dir) else {
        return 0;
    };
    let mut held = 0;
    for index in 0..limit {
        match probe(&dfd, scope, index, false) {
            Probe::Missing => {}
            Probe::Unusable(_) => held += 1,
            Probe::Usable(file) => match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => drop(lock),
                Err((_, Errno::EWOULDBLOCK)) => held += 1,
                Err(_) => {}
            },
        }
    }
    held
}

/// [`open_dir`] without creating anything.
fn open_dir_existing(dir: &Path) -> Result<(OwnedFd, Scope), ServerSlotError> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => open_dir(dir),
        Ok(_) => Err(ServerSlotError::Dir {
            dir: dir.to_path_buf(),
            source: io::Error::other("not a directory"),
        }),
        Err(source) => Err(ServerSlotError::Dir {
            dir: dir.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests;
