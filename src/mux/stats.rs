//! Stage: mux counters — the [`Stats`] of `hoardcc stats`, counted as jobs end
//! (`mux::job`, `mux::conn`) and kept in `<state_dir>/stats.json` so they survive mux
//! restarts. The file is written atomically (a temporary file in the same directory,
//! then a rename), at most once per [`DEBOUNCE`] while jobs run, and on exit.
//! Neighbours: `proto::stats` (the counters), `mux::listener` (starts the writer),
//! `cli::stats` (reads the file when no mux runs).

use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::proto::stats::Stats;

/// Longest the file lags behind the counters while jobs run.
pub const DEBOUNCE: Duration = Duration::from_secs(2);
/// Largest stats file read back (it holds at most `proto::stats::MAX_HOSTS` hosts).
const MAX_FILE: u64 = 4 << 20;

/// Reading or writing the stats file.
#[derive(Debug, thiserror::Error)]
pub enum StatsFileError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The file is not a stats document.
    #[error("{path}: not a stats file: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The error.
        source: serde_json::Error,
    },
    /// The file is larger than any stats file hoardcc writes.
    #[error("{0}: too large for a stats file")]
    TooLarge(PathBuf),
}

/// The stats file under `state_dir`.
pub fn stats_file(state_dir: &Path) -> PathBuf {
    state_dir.join("stats.json")
}

/// Read the stats file; a missing file is all zeros.
///
/// # Errors
/// The file exists but cannot be read or parsed.
pub fn read_file(path: &Path) -> Result<Stats, StatsFileError> {
    let io_err = |source| StatsFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Stats::default()),
        Err(e) => return Err(io_err(e)),
    };
    if meta.len() > MAX_FILE {
        return Err(StatsFileError::TooLarge(path.to_path_buf()));
    }
    let text = std::fs::read_to_string(path).map_err(io_err)?;
    Stats::from_json(&text).map_err(|source| StatsFileError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// Write `stats` to `path` atomically, creating its directory (mode 0700) if needed.
///
/// # Errors
/// The directory or the file cannot be written.
pub fn write_file(path: &Path, stats: &Stats) -> Result<(), StatsFileError> {
    let io_err = |source| StatsFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".stats.")
        .tempfile_in(dir)
        .map_err(io_err)?;
    tmp.write_all(stats.to_json().as_bytes()).map_err(io_err)?;
    tmp.write_all(b"\n").map_err(io_err)?;
    tmp.persist(path).map_err(|e| io_err(e.error))?;
    Ok(())
}

/// Unix time now, in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The mux's counters and where they are kept.
pub(crate) struct StatsBook {
    stats: Mutex<Stats>,
    /// `None`: counted in memory only (unit tests).
    path: Option<PathBuf>,
    dirty: Notify,
}

impl StatsBook {
    /// The counters kept in `path` (read back now; an unreadable file starts from zero
    /// with a warning), or in memory only.
    pub(crate) fn load(path: Option<PathBuf>) -> StatsBook {
        let stats = match &path {
            Some(p) => read_file(p).unwrap_or_else(|e| {
                tracing::warn!("stats: {e}; counting from zero");
                Stats::default()
            }),
            None => Stats::default(),
        };
        StatsBook {
            stats: Mutex::new(stats),
            path,
            dirty: Notify::new(),
        }
    }

    /// Change the counters; the writer saves them within [`DEBOUNCE`].
    pub(crate) fn update(&self, f: impl FnOnce(&mut Stats)) {
        let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        if s.since_unix == 0 {
            s.since_unix = unix_now();
        }
        f(&mut s);
        drop(s);
        self.dirty.notify_one();
    }

    /// The counters now.
    pub(crate) fn snapshot(&self) -> Stats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reset every counter and save at once.
    pub(crate) fn zero(&self) {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner()) = Stats {
            since_unix: unix_now(),
            ..Stats::default()
        };
        self.save();
    }

    /// Write the file now (errors are logged: counters are not worth failing a job for).
    /// Nothing is written when even the directory above the state directory is gone
    /// (the home it was in was removed under the running mux): the mux does not bring a
    /// deleted tree back to life to leave a counters file in it.
    pub(crate) fn save(&self) {
        let Some(path) = &self.path else { return };
        let above = path.parent().and_then(Path::parent);
        if above.is_some_and(|d| !d.is_dir()) {
            tracing::debug!("stats: {} is gone: not saving", path.display());
            return;
        }
        let stats = self.snapshot();
        if let Err(e) = write_file(path, &stats) {
            tracing::warn!("stats: {e}");
        }
    }

    /// Save after each burst of changes (at most once per [`DEBOUNCE`]) until `shutdown`,
    /// then once more.
    pub(crate) async fn writer(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = self.dirty.notified() => {}
                _ = shutdown.cancelled() => break,
            }
            tokio::select! {
                _ = tokio::time::sleep(DEBOUNCE) => {}
                _ = shutdown.cancelled() => break,
            }
            // A few KiB written once per burst: not worth a blocking thread.
            self.save();
        }
        self.save();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_round_trips_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = stats_file(&dir.path().join("state"));
        assert_eq!(read_file(&path).unwrap(), Stats::default());
        let book = StatsBook::load(Some(path.clone()));
        book.update(|s| {
            s.jobs_remote += 2;
            s.host_mut("me@b").jobs_remote += 2;
        });
        book.save();
        let back = read_file(&path).unwrap();
        assert_eq!(back.jobs_remote, 2);
        assert!(back.since_unix > 0);
        // No temporary file is left next to it.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["stats.json"]);
        // A new book (a restarted mux) starts from the file.
        let again = StatsBook::load(Some(path.clone()));
        assert_eq!(again.snapshot(), back);
        again.zero();
        assert_eq!(read_file(&path).unwrap().jobs_remote, 0);
        std::fs::write(&path, "not json").unwrap();
        assert!(matches!(
            read_file(&path),
            Err(StatsFileError::Parse { .. })
        ));
    }

    #[test]
    fn a_removed_home_is_not_brought_back() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let path = stats_file(&home.join(".local/state/hoardcc"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let book = StatsBook::load(Some(path.clone()));
        book.update(|s| s.jobs_remote += 1);
        book.save();
        assert_eq!(read_file(&path).unwrap().jobs_remote, 1);
        std::fs::remove_dir_all(&home).unwrap();
        book.save();
        assert!(
            !home.exists(),
            "the mux's last save recreated a removed home"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_writer_debounces_and_saves_on_exit() {
        let dir = tempfile::tempdir().unwrap();
        let path = stats_file(dir.path());
        let book = Arc::new(StatsBook::load(Some(path.clone())));
        let stop = CancellationToken::new();
        let task = tokio::spawn(book.clone().writer(stop.clone()));
        book.update(|s| s.jobs_local += 1);
        tokio::task::yield_now().await;
        assert!(!path.exists(), "not on every change");
        tokio::time::sleep(DEBOUNCE / 2).await;
        assert!(!path.exists(), "not before the debounce");
        tokio::time::sleep(DEBOUNCE).await;
        assert_eq!(read_file(&path).unwrap().jobs_local, 1);
        book.update(|s| s.jobs_local += 1);
        stop.cancel();
        task.await.unwrap();
        assert_eq!(read_file(&path).unwrap().jobs_local, 2);
    }
}
