//! Server stage 8a, admission: one limit on concurrent compiles shared by every
//! `hoardcc serve` process of every user on the host (each lane is its own process, so
//! the limit must live outside them). Slots are lock files `slot-0 … slot-(N-1)` in a
//! shared sticky directory, taken with non-blocking `flock`: a held lock frees itself
//! when its process dies, so a crashed server never leaks a slot. All slots held →
//! the job is answered `Busy` at once (no waiting, no polling; the client's scheduler
//! tries another host). Neighbours: `subsystem` (calls [`try_acquire`] per job and
//! [`current_load`] for the hello), `subsystem::exec` (runs while the [`Slot`] is held).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Default shared slot directory.
pub const DEFAULT_SLOT_DIR: &str = "/tmp/hoardcc-slots";
/// Environment variable overriding [`DEFAULT_SLOT_DIR`] (tests, unusual hosts).
pub const SLOT_DIR_ENV: &str = "HOARDCC_SLOT_DIR";

/// Why no slot could be examined (not "all busy": that is `Ok(None)`).
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    /// The slot directory could not be created or is not a directory.
    #[error("slot directory {dir}: {source}")]
    Dir { dir: PathBuf, source: io::Error },
}

/// A held compile slot; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct Slot {
    /// Which slot (`slot-<index>`).
    pub index: u32,
    /// The lock; dropping it unlocks and closes the file.
    _lock: Flock<File>,
}

/// The slot directory from the environment: `$HOARDCC_SLOT_DIR` or [`DEFAULT_SLOT_DIR`].
pub fn slot_dir_from_env() -> PathBuf {
    std::env::var_os(SLOT_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SLOT_DIR))
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

/// Creates the shared directory (mode 01777, so every user can add slot files but
/// not remove others') if it does not exist yet.
///
/// # Errors
/// [`SlotError::Dir`] if it cannot be created or exists as something else.
pub fn ensure_dir(dir: &Path) -> Result<(), SlotError> {
    let err = |source| SlotError::Dir {
        dir: dir.to_path_buf(),
        source,
    };
    match std::fs::create_dir(dir) {
        Ok(()) => {
            // chmod is not subject to the umask, unlike mkdir's mode.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777)).map_err(err)?;
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(err(e)),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(err)?;
    if !meta.is_dir() {
        return Err(err(io::Error::other("not a directory")));
    }
    Ok(())
}

/// Opens (creating, readable by all) `slot-<index>`. Read-only is enough for `flock`,
/// so a slot file another user created stays usable. Never follows a symlink.
fn open_slot(dir: &Path, index: u32) -> io::Result<File> {
    let path = dir.join(format!("slot-{index}"));
    let file = OpenOptions::new()
        .read(true)
        .write(false)
        .create(false)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&path);
    match file {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // O_CREAT needs write or append access in std's OpenOptions; use append,
            // which never truncates and is harmless on an empty lock file.
            let f = OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .mode(0o666)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&path)?;
            // The umask may have narrowed the mode; other users only need to read.
            let _ = f.set_permissions(std::fs::Permissions::from_mode(0o644));
            Ok(f)
        }
        Err(e) => Err(e),
    }
}

/// Tries to take one of `limit` slots in `dir`, lowest first, without blocking.
/// `Ok(None)` when all are held. A slot file that cannot be opened (e.g. another user
/// made it unreadable) counts as held.
///
/// # Errors
/// [`SlotError::Dir`] when the directory is unusable.
pub fn try_acquire(dir: &Path, limit: u32) -> Result<Option<Slot>, SlotError> {
    ensure_dir(dir)?;
    for index in 0..limit {
        let file = match open_slot(dir, index) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!("slot file {}/slot-{index}: {e}", dir.display());
                continue;
            }
        };
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(Some(Slot { index, _lock: lock })),
            Err((_, Errno::EWOULDBLOCK)) => continue,
            Err((_, e)) => {
                tracing::warn!("flock {}/slot-{index}: {e}", dir.display());
                continue;
            }
        }
    }
    Ok(None)
}

/// How many slots in `dir` are held right now (by any process, this one included),
/// found by trying each existing `slot-<n>` file. 0 if the directory is missing.
pub fn current_load(dir: &Path) -> u32 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut held = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(index) = name
            .to_str()
            .and_then(|n| n.strip_prefix("slot-"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(file) = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(dir.join(format!("slot-{index}")))
        else {
            continue;
        };
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => drop(lock),
            Err((_, Errno::EWOULDBLOCK)) => held += 1,
            Err(_) => {}
        }
    }
    held
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_lowest_free_slot_and_reports_busy_when_full() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("slots");
        let a = try_acquire(&dir, 2).unwrap().expect("slot 0 free");
        assert_eq!(a.index, 0);
        let b = try_acquire(&dir, 2).unwrap().expect("slot 1 free");
        assert_eq!(b.index, 1);
        assert!(try_acquire(&dir, 2).unwrap().is_none(), "all held → None");
        assert_eq!(current_load(&dir), 2);
        drop(a);
        assert_eq!(current_load(&dir), 1);
        let c = try_acquire(&dir, 2).unwrap().expect("slot 0 freed");
        assert_eq!(c.index, 0);
        drop((b, c));
        assert_eq!(current_load(&dir), 0);
    }

    #[test]
    fn directory_is_sticky_and_world_writable() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("slots");
        ensure_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o1777);
        ensure_dir(&dir).unwrap();
    }

    #[test]
    fn unusable_directory_is_an_error_and_missing_one_has_no_load() {
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("plain");
        std::fs::write(&file, b"").unwrap();
        assert!(try_acquire(&file, 1).is_err());
        assert_eq!(current_load(&t.path().join("missing")), 0);
    }

    #[test]
    fn host_limit_defaults_to_cpus() {
        assert_eq!(host_limit(Some(3)), 3);
        assert!(host_limit(None) >= 1);
        assert_eq!(host_limit(Some(0)), host_limit(None));
    }
}
