//! The mux's status report, typed: what `hoardcc status` and `hoardcc mon` show. Pure
//! data. The mux builds it (`mux::status`), sends it as postcard in
//! `MuxReply::Status` (`proto::msg`), and the CLI (`cli`) prints it as a table, or as JSON
//! for `hoardcc status --json` (the only place this report becomes JSON).

use serde::{Deserialize, Serialize};

/// Everything `hoardcc status` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The mux's version string (see `mux::mux_version`).
    pub version: String,
    /// The daemon's process id.
    pub pid: u32,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    /// Wrapper connections open right now.
    pub wrappers: u32,
    /// Jobs waiting for a slot.
    pub queued: u32,
    /// Local compiles holding a local slot.
    pub local_running: u32,
    /// Every host the mux has seen.
    pub hosts: Vec<HostReport>,
    /// Jobs in flight.
    pub jobs: Vec<JobReport>,
}

/// One host's state and counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostReport {
    /// Host key, e.g. `user@host` or `host:3632`.
    pub host: String,
    /// Slot limit from the host list (`/N`).
    pub slots: u32,
    /// Slots the server advertised, once known.
    pub server_slots: Option<u32>,
    /// Jobs holding a slot on the host.
    pub running: u32,
    /// Live SSH connections.
    pub connections: u32,
    /// Open lanes.
    pub lanes: u32,
    /// Idle lanes.
    pub idle_lanes: u32,
    /// Lanes running a job.
    pub busy_lanes: u32,
    /// `native`, `distcc`, `distcc+lzo`, once known.
    pub wire: Option<String>,
    /// Jobs that ran (compiler errors included).
    pub jobs_ok: u64,
    /// Distribution failures.
    pub jobs_failed: u64,
    /// Busy answers.
    pub jobs_busy: u64,
    /// Mean job time.
    pub mean_ms: Option<u64>,
    /// Recent job time (EWMA), used for host choice.
    pub ewma_ms: Option<u64>,
    /// Time left in the host's backoff after a failure.
    pub backoff_remaining_ms: Option<u64>,
    /// The last connection or lane error.
    pub last_error: Option<String>,
}

impl HostReport {
    /// The slots the mux uses on this host: the host list's limit, or fewer when the
    /// server advertised fewer. `hoardcc status` and `hoardcc hosts` both show this.
    pub fn effective_slots(&self) -> u32 {
        self.server_slots
            .map_or(self.slots, |ss| ss.min(self.slots))
    }

    /// Why [`effective_slots`](Self::effective_slots) is below the host list's number.
    pub fn slots_note(&self) -> Option<String> {
        (self.effective_slots() < self.slots).then(|| {
            format!(
                "the server allows {}; the host list says {}",
                self.effective_slots(),
                self.slots
            )
        })
    }
}

/// One job in flight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobReport {
    /// The source file the wrapper named.
    pub file: String,
    /// `queued`, `reserved`, `running` or `local`.
    pub state: String,
    /// The host holding its slot, if remote.
    pub host: Option<String>,
    /// Seconds in the current state.
    pub secs: f64,
}

impl StatusReport {
    /// The JSON document of `hoardcc status --json`.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// Parse the JSON document back.
    ///
    /// # Errors
    /// The JSON error when `text` is not a status document.
    pub fn from_json(text: &str) -> Result<StatusReport, serde_json::Error> {
        serde_json::from_str(text)
    }
}

