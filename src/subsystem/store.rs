//! Server stage, the per-user store of `hoardcc serve`: content-addressed chunks of job
//! input (the chunk path) and keyed entries (the result cache, `subsystem::cache`) in
//! one directory, `$XDG_CACHE_HOME/hoardcc/` by default (`[server] cache_dir`), under
//! one size cap (`cache_mib`, default 1 GiB) with least-recently-used eviction.
//! Written by `hoardcc serve` itself, never by the compilers it runs (they are
//! sandboxed away from it). Neighbours: `subsystem::session` (opens it per process),
//! `subsystem::cache`, the chunk path in `subsystem::job`, `proto::chunk_id`.
//!
//! Layout, below the directory (0700, owned by the user, never a symlink):
//!
//! ```text
//! chunks/ab/ab12…(64 hex)   a chunk's bytes, named by their blake3 id
//! results/cd/cd34…          a keyed entry: MAGIC, blake3(payload), payload
//! usage                     total bytes found by the last scan (text)
//! lock                      flock held by the process that scans
//! ```
//!
//! Safe under several `hoardcc serve` processes of one user at once:
//! - every file is written to a temporary file in its final directory (0600) and renamed
//!   into place, so a reader sees a whole file or none;
//! - every read is checked (a chunk against its id, an entry against its own hash), and a
//!   file that fails is deleted and reported missing: a torn or corrupted file is never
//!   used, and the caller asks for the data again;
//! - recency is the file's mtime, set on every use (atime is often off or lazy);
//! - the cap is kept without a scan per write: each process keeps a running estimate
//!   (the last scan's total plus what it wrote since) and rescans, under the lock, when
//!   the estimate passes the cap or it has written a sixteenth of the cap since its last
//!   scan. A scan deletes the least recently used files until the total is at most 7/8 of
//!   the cap. With N writers at once the store may pass the cap by at most about N/16 of
//!   it between scans.
//!
//! Every method does blocking file I/O on small files; callers on the current-thread
//! runtime call them directly, as they do `job::stage`.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use nix::fcntl::{Flock, FlockArg};

use crate::proto::chunk_id::ChunkId;

/// Default size cap: 1 GiB (`[server] cache_mib = 1024`).
pub const DEFAULT_CAP: u64 = 1 << 30;
/// The largest file the store reads back, whatever the cap (the frame limit is far below).
pub const MAX_ENTRY: u64 = 1 << 30;
/// First bytes of a keyed entry (format version 1).
const ENTRY_MAGIC: &[u8; 8] = b"hoardcE1";
/// Bytes in front of a keyed entry's payload: the magic and the payload's blake3 hash.
const ENTRY_HEADER: usize = 8 + 32;
/// Prefix of temporary files (never a valid id, so a scan tells them apart).
const TEMP_PREFIX: &str = ".tmp";
/// A temporary file this old was left by a killed process: a scan removes it.
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// Why the store cannot be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory cannot be created, or is refused (a symlink, another owner, open to
    /// group or others).
    #[error("cannot use the store directory: {0}")]
    Open(io::Error),
    /// `put` was given bytes that are not the chunk the id names.
    #[error("the data does not match chunk id {0}")]
    IdMismatch(ChunkId),
    /// One entry larger than the whole cap (or than [`MAX_ENTRY`]).
    #[error("{len} bytes do not fit in a store capped at {cap} bytes")]
    TooLarge {
        /// The entry's size.
        len: u64,
        /// The store's cap.
        cap: u64,
    },
    /// Writing a file failed (disk full, permissions).
    #[error("writing {}: {error}", path.display())]
    Write {
        /// The file (or its directory).
        path: PathBuf,
        /// The failure.
        error: io::Error,
    },
}

/// The two kinds of file in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `chunks/`: named by the blake3 of the file's bytes.
    Chunk,
    /// `results/`: named by a caller's key; the file carries its own hash.
    Keyed,
}

impl Kind {
    const ALL: [Kind; 2] = [Kind::Chunk, Kind::Keyed];

    fn dir(self) -> &'static str {
        match self {
            Kind::Chunk => "chunks",
            Kind::Keyed => "results",
        }
    }
}

/// What one process knows of the store's size.
#[derive(Debug)]
struct Accounting {
    /// Bytes believed to be in the store: the last scan's total (ours, or the one read
    /// from `usage` at open) plus what this process wrote since, minus what it deleted.
    estimate: u64,
    /// Bytes this process wrote since its last scan.
    since_scan: u64,
    /// No `usage` file was found at open: scan on the first write.
    unknown: bool,
}

/// An open store (see the module docs). `Sync`: one per process, shared by its jobs.
#[derive(Debug)]
pub struct Store {
    /// The store's directory.
    dir: PathBuf,
    /// The size cap in bytes.
    cap: u64,
    /// The running size estimate; also serialises this process's scans.
    acct: Mutex<Accounting>,
}

impl Store {
    /// Opens (creating it 0700 if needed) the store in `dir`, capped at `cap` bytes.
    ///
    /// # Errors
    /// [`StoreError::Open`] if the directory cannot be created, or exists as a symlink,
    /// a non-directory, another user's directory, or with group/other permissions.
    pub fn open(dir: &Path, cap: u64) -> Result<Store, StoreError> {
        crate::paths::ensure_private_dir(dir).map_err(StoreError::Open)?;
        let last = read_usage(&dir.join("usage"));
        Ok(Store {
            dir: dir.to_path_buf(),
            cap: cap.max(1),
            acct: Mutex::new(Accounting {
                estimate: last.unwrap_or(0),
                since_scan: 0,
                unknown: last.is_none(),
            }),
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The size cap in bytes.
    pub fn cap(&self) -> u64 {
        self.cap
    }

    /// This process's estimate of the bytes in the store (exact after [`Store::scan`]).
    pub fn estimated_size(&self) -> u64 {
        self.lock_acct().estimate
    }

    /// The file of chunk `id` (for tests and tools; the store owns it).
    pub fn chunk_path(&self, id: &ChunkId) -> PathBuf {
        self.path(Kind::Chunk, &id.0)
    }

    /// The file of the keyed entry `key`.
    pub fn keyed_path(&self, key: &[u8; 32]) -> PathBuf {
        self.path(Kind::Keyed, key)
    }

    fn path(&self, kind: Kind, name: &[u8; 32]) -> PathBuf {
        let hex = ChunkId(*name).to_hex();
        self.dir.join(kind.dir()).join(&hex[..2]).join(hex)
    }

    /// Whether chunk `id` is stored (and marks it used). A hint: the file is not read,
    /// and may be evicted or found corrupt before a [`Store::get`], which is the
    /// authority.
    pub fn has(&self, id: &ChunkId) -> bool {
        let path = self.chunk_path(id);
        match File::open(&path) {
            Ok(file) => {
                touch(&file);
                file.metadata().map(|m| m.is_file()).unwrap_or(false)
            }
            Err(_) => false,
        }
    }

    /// Chunk `id`'s bytes, checked against the id (and marked used). A file that does
    /// not match (torn, corrupted, tampered) is deleted and reported missing.
    pub fn get(&self, id: &ChunkId) -> Option<Vec<u8>> {
        let path = self.chunk_path(id);
        let data = self.read(&path)?;
        if id.matches(&data) {
            return Some(data);
        }
        tracing::warn!("store: chunk {id} is corrupt: deleting it");
        self.discard(&path, data.len() as u64);
        None
    }

    /// Stores chunk `id` (a no-op, besides marking it used, if it is already there).
    ///
    /// # Errors
    /// [`StoreError::IdMismatch`] if `data` is not what `id` names (nothing is written),
    /// [`StoreError::TooLarge`], [`StoreError::Write`].
    pub fn put(&self, id: &ChunkId, data: &[u8]) -> Result<(), StoreError> {
        self.check_size(data.len())?;
        if !id.matches(data) {
            return Err(StoreError::IdMismatch(*id));
        }
        let path = self.chunk_path(id);
        if let Ok(file) = File::open(&path) {
            // Same name, same content (or a corruption the next `get` catches).
            if file.metadata().is_ok_and(|m| m.is_file()) {
                touch(&file);
                return Ok(());
            }
        }
        self.write(&path, &[data])
    }

    /// The payload of the keyed entry `key`, checked against the hash stored with it (and
    /// marked used). A file that fails the check is deleted and reported missing.
    pub fn get_keyed(&self, key: &[u8; 32]) -> Option<Vec<u8>> {
        let path = self.keyed_path(key);
        let mut data = self.read(&path)?;
        let whole = data.len() >= ENTRY_HEADER
            && &data[..8] == ENTRY_MAGIC
            && ChunkId(data[8..ENTRY_HEADER].try_into().expect("32 bytes"))
                .matches(&data[ENTRY_HEADER..]);
        if !whole {
            tracing::warn!("store: entry {} is corrupt: deleting it", ChunkId(*key));
            self.discard(&path, data.len() as u64);
            return None;
        }
        data.drain(..ENTRY_HEADER);
        Some(data)
    }

    /// Stores `payload` under `key`, replacing any entry there.
    ///
    /// # Errors
    /// [`StoreError::TooLarge`], [`StoreError::Write`].
    pub fn put_keyed(&self, key: &[u8; 32], payload: &[u8]) -> Result<(), StoreError> {
        self.check_size(payload.len().saturating_add(ENTRY_HEADER))?;
        let hash = ChunkId::of(payload);
        self.write(&self.keyed_path(key), &[ENTRY_MAGIC, &hash.0, payload])
    }

    fn check_size(&self, len: usize) -> Result<(), StoreError> {
        let len = len as u64;
        if len > self.cap || len > MAX_ENTRY {
            return Err(StoreError::TooLarge { len, cap: self.cap });
        }
        Ok(())
    }

    fn lock_acct(&self) -> std::sync::MutexGuard<'_, Accounting> {
        // The accounting is plain numbers: a panic elsewhere cannot leave it unusable.
        self.acct.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads a file of the store, bounded; marks it used. `None` if absent or unreadable.
    fn read(&self, path: &Path) -> Option<Vec<u8>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!("store: cannot open {}: {e}", path.display());
                return None;
            }
        };
        let max = self.cap.min(MAX_ENTRY);
        let len = file.metadata().ok().filter(|m| m.is_file())?.len();
        if len > max {
            tracing::warn!("store: {} is {len} bytes: deleting it", path.display());
            self.discard(path, len);
            return None;
        }
        let mut data = Vec::with_capacity(len as usize);
        if let Err(e) = (&file).take(max + 1).read_to_end(&mut data) {
            tracing::warn!("store: reading {}: {e}", path.display());
            return None;
        }
        touch(&file);
        Some(data)
    }

    /// Deletes a file found bad and takes it off the estimate.
    fn discard(&self, path: &Path, len: u64) {
        if fs::remove_file(path).is_ok() {
            let mut acct = self.lock_acct();
            acct.estimate = acct.estimate.saturating_sub(len);
        }
    }

    /// Writes `parts` to `path` atomically (temporary file in the same directory, then
    /// rename), then keeps the cap.
    fn write(&self, path: &Path, parts: &[&[u8]]) -> Result<(), StoreError> {
        let dir = path.parent().expect("store paths have a parent");
        let failed = |error| StoreError::Write {
            path: path.to_path_buf(),
            error,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(failed)?;
        // tempfile creates the file 0600.
        let mut tmp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(dir)
            .map_err(failed)?;
        for part in parts {
            tmp.write_all(part).map_err(failed)?;
        }
        // The kernel stamps writes with a coarse clock; the LRU order wants a fine one.
        touch(tmp.as_file());
        tmp.persist(path).map_err(|e| failed(e.error))?;
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let mut acct = self.lock_acct();
        acct.estimate = acct.estimate.saturating_add(len);
        acct.since_scan = acct.since_scan.saturating_add(len);
        if acct.unknown || acct.estimate > self.cap || acct.since_scan >= self.scan_every() {
            if let Err(e) = self.scan_locked(&mut acct) {
                tracing::warn!("store: scanning {}: {e}", self.dir.display());
            }
        }
        Ok(())
    }

    /// Bytes a process writes between two scans.
    fn scan_every(&self) -> u64 {
        (self.cap / 16).max(1)
    }

    /// Counts every file, deletes the least recently used ones while the total is over
    /// the cap (down to 7/8 of it), and records the total in `usage`. Skipped (returning
    /// the estimate) while another process scans.
    ///
    /// # Errors
    /// Reading the directories or taking the lock failed.
    pub fn scan(&self) -> io::Result<u64> {
        let mut acct = self.lock_acct();
        self.scan_locked(&mut acct)?;
        Ok(acct.estimate)
    }

    fn scan_locked(&self, acct: &mut Accounting) -> io::Result<()> {
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join("lock"))?;
        let _lock = match Flock::lock(lock, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                // Another process is scanning: its total will count our files.
                acct.since_scan = 0;
                return Ok(());
            }
            Err((_, e)) => return Err(e.into()),
        };
        let now = SystemTime::now();
        let mut files = Vec::new();
        let mut total = 0u64;
        for kind in Kind::ALL {
            let top = self.dir.join(kind.dir());
            let fans = match fs::read_dir(&top) {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for fan in fans.flatten() {
                let Ok(entries) = fs::read_dir(fan.path()) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let Ok(meta) = entry.metadata() else {
                        continue; // gone since the listing
                    };
                    if !meta.is_file() {
                        continue;
                    }
                    let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                    if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                        let age = now.duration_since(mtime).unwrap_or_default();
                        if age > STALE_TEMP && fs::remove_file(entry.path()).is_ok() {
                            continue;
                        }
                        total += meta.len();
                        continue;
                    }
                    total += meta.len();
                    files.push((mtime, meta.ino(), meta.len(), entry.path()));
                }
            }
        }
        if total > self.cap {
            let low = self.cap - self.cap / 8;
            files.sort_unstable();
            for (_, _, len, path) in files {
                if total <= low {
                    break;
                }
                match fs::remove_file(&path) {
                    Ok(()) => total -= len,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => total -= len,
                    Err(e) => tracing::warn!("store: cannot evict {}: {e}", path.display()),
                }
            }
        }
        write_usage(&self.dir, total);
        acct.estimate = total;
        acct.since_scan = 0;
        acct.unknown = false;
        Ok(())
    }
}

/// Marks a file used now (its mtime is the LRU clock). Best effort: a store file that
/// cannot be touched is merely evicted sooner.
fn touch(file: &File) {
    let _ = file.set_modified(SystemTime::now());
}

/// The total the last scan recorded, if any.
fn read_usage(path: &Path) -> Option<u64> {
    let mut text = String::new();
    File::open(path)
        .ok()?
        .take(32)
        .read_to_string(&mut text)
        .ok()?;
    text.trim().parse().ok()
}

/// Records a scan's total (atomically; a failure only costs an early scan later).
fn write_usage(dir: &Path, total: u64) {
    let write = || -> io::Result<()> {
        let mut tmp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(dir)?;
        writeln!(tmp, "{total}")?;
        tmp.persist(dir.join("usage")).map_err(|e| e.error)?;
        Ok(())
    };
    if let Err(e) = write() {
        tracing::warn!("store: cannot record usage in {}: {e}", dir.display());
    }
}

#[cfg(test)]
mod tests;
