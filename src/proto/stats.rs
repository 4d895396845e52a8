//! The counters behind `hoardcc stats`: pure data that survives mux restarts. The mux
//! counts (`mux::stats`) and keeps them in `<state_dir>/stats.json`; it answers
//! `MuxRequest::Stats` with them (`proto::msg`); the CLI (`cli::stats`) prints them.
//!
//! The local time the remote jobs would have taken is estimated per job: the mean
//! wall time of the local compiles the wrappers timed (jobs the mux sent local, and
//! fallbacks), times the number of remote jobs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Most hosts counted one by one; later ones are counted under [`OTHER_HOSTS`].
pub const MAX_HOSTS: usize = 256;
/// The key that counts hosts past [`MAX_HOSTS`].
pub const OTHER_HOSTS: &str = "(other hosts)";

/// Everything `hoardcc stats` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    /// Unix time (seconds) counting started: the first count, or the last `--zero`.
    pub since_unix: u64,
    /// Jobs that ran remotely (compiler errors included).
    pub jobs_remote: u64,
    /// Jobs the mux sent to a local slot.
    pub jobs_local: u64,
    /// Jobs that failed to distribute and fell back to a local compile.
    pub jobs_fallback: u64,
    /// Jobs answered from a server's result cache (the result says `cached`; counted in
    /// `jobs_remote` too).
    pub jobs_cache_hit: u64,
    /// Bytes of job frames sent to servers.
    pub bytes_sent: u64,
    /// Bytes of result frames received from servers.
    pub bytes_received: u64,
    /// Wall time of the remote jobs, from the wrapper's `Run` to the result, in ms.
    pub remote_ms: u64,
    /// Local compiles the wrappers timed (local slots and fallbacks).
    pub local_timed: u64,
    /// Their total wall time, in ms.
    pub local_ms: u64,
    /// Per host (at most [`MAX_HOSTS`], then [`OTHER_HOSTS`]).
    pub hosts: BTreeMap<String, HostStats>,
}

/// One host's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HostStats {
    /// Jobs that ran on it.
    pub jobs_remote: u64,
    /// Jobs that last failed on it and fell back to a local compile.
    pub jobs_fallback: u64,
    /// Jobs answered from its result cache (as [`Stats::jobs_cache_hit`]).
    pub jobs_cache_hit: u64,
    /// Busy answers.
    pub jobs_busy: u64,
    /// Bytes sent to it.
    pub bytes_sent: u64,
    /// Bytes received from it.
    pub bytes_received: u64,
    /// Wall time of its remote jobs, in ms.
    pub remote_ms: u64,
}

impl Stats {
    /// The counters of `host`, created (within the bound) on first use.
    pub fn host_mut(&mut self, host: &str) -> &mut HostStats {
        let key = if self.hosts.contains_key(host) || self.hosts.len() < MAX_HOSTS {
            host
        } else {
            OTHER_HOSTS
        };
        self.hosts.entry(key.to_string()).or_default()
    }

    /// Mean wall time of one timed local compile, in ms.
    pub fn local_ms_per_job(&self) -> Option<u64> {
        self.local_ms.checked_div(self.local_timed)
    }

    /// What the remote jobs would have taken locally, one after another: their count
    /// times [`Stats::local_ms_per_job`]. `None` until a local compile was timed.
    pub fn estimated_local_ms(&self) -> Option<u64> {
        self.local_ms_per_job()
            .map(|per| per.saturating_mul(self.jobs_remote))
    }

    /// The JSON document of `hoardcc stats --json` (and of the stats file).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// Parse the JSON document back.
    ///
    /// # Errors
    /// The JSON error when `text` is not a stats document.
    pub fn from_json(text: &str) -> Result<Stats, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_is_per_timed_local_job() {
        let mut s = Stats {
            jobs_remote: 10,
            ..Stats::default()
        };
        assert_eq!(s.estimated_local_ms(), None);
        s.local_timed = 4;
        s.local_ms = 2000;
        assert_eq!(s.local_ms_per_job(), Some(500));
        assert_eq!(s.estimated_local_ms(), Some(5000));
    }

    #[test]
    fn hosts_are_bounded() {
        let mut s = Stats::default();
        for i in 0..MAX_HOSTS + 10 {
            s.host_mut(&format!("h{i}")).jobs_remote += 1;
        }
        assert_eq!(s.hosts.len(), MAX_HOSTS + 1);
        assert_eq!(s.hosts[OTHER_HOSTS].jobs_remote, 10);
        // A host already counted keeps its own entry.
        s.host_mut("h0").jobs_remote += 1;
        assert_eq!(s.hosts["h0"].jobs_remote, 2);
    }

    #[test]
    fn json_round_trips_and_tolerates_missing_fields() {
        let mut s = Stats {
            jobs_remote: 3,
            ..Stats::default()
        };
        s.host_mut("me@b").bytes_sent = 7;
        assert_eq!(Stats::from_json(&s.to_json()).unwrap(), s);
        let old = Stats::from_json("{\"jobs_local\": 2}").unwrap();
        assert_eq!(old.jobs_local, 2);
    }
}
