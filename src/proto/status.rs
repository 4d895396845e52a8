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
    /// Jobs in flight (at most [`MAX_JOBS_SHOWN`]; `jobs_in_flight` counts them all).
    pub jobs: Vec<JobReport>,
    /// Every job in flight, shown or not.
    #[serde(default)]
    pub jobs_in_flight: u32,
    /// The most recent failures, newest first (at most [`MAX_FAILURES`]).
    #[serde(default)]
    pub failures: Vec<FailureReport>,
}

/// Most jobs one report lists (the rest are counted in `jobs_in_flight`).
pub const MAX_JOBS_SHOWN: usize = 256;
/// Most recent failures the mux keeps and reports.
pub const MAX_FAILURES: usize = 16;
/// Longest one-line reason of a failure, in characters.
pub const MAX_REASON: usize = 200;

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
    /// Jobs sent again on the host after their lane died mid-job (a blip).
    #[serde(default)]
    pub jobs_resent: u64,
    /// Jobs answered from the server's result cache (the result says `cached`).
    #[serde(default)]
    pub cache_hits: u64,
    /// What the chunk path sent this host.
    #[serde(default)]
    pub chunks: ChunkCounters,
    /// Mean job time.
    pub mean_ms: Option<u64>,
    /// Recent job time (EWMA), used for host choice.
    pub ewma_ms: Option<u64>,
    /// Time left in the host's backoff after a failure.
    pub backoff_remaining_ms: Option<u64>,
    /// The last connection or lane error.
    pub last_error: Option<String>,
    /// Client compilers this host has no match for (not sent there for a while).
    #[serde(default)]
    pub mismatched: Vec<MismatchReport>,
}

/// A compiler blocked on a host: the server has none with its identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MismatchReport {
    /// The client's compiler: `gcc 12.2.0 (x86_64-linux-gnu)`.
    pub compiler: String,
    /// The server's refusal, naming both versions.
    pub reason: String,
    /// Seconds until the host is tried again for it.
    pub remaining_secs: u64,
}

/// What the mux counts per host about uploads (`mux::upload`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkCounters {
    /// Bytes of job frames written to the host (jobs and chunk packs, as encoded).
    pub bytes_sent: u64,
    /// Jobs sent with chunked input.
    pub chunked_jobs: u64,
    /// Chunks sent (each time it was sent).
    pub chunks_sent: u64,
    /// Chunks the host asked for with `Missing`.
    pub chunks_missing: u64,
    /// Chunk ids the mux believes the host holds now.
    pub chunks_known: u64,
    /// Packs sent LZ4'd against chunks the host holds (`Message::DeltaChunks`).
    #[serde(default)]
    pub delta_packs: u64,
    /// Bytes of chunk-pack frames (plain and delta) among `bytes_sent`.
    #[serde(default)]
    pub pack_bytes: u64,
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

/// Where one job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// In the mux's queue for a slot (remote or local), or for a retry's.
    Waiting,
    /// A remote slot is held; the wrapper is running the preprocessor.
    Preprocessing,
    /// The mux is getting a lane and sending the job on it.
    Sending,
    /// The job is on the server; the compiler runs.
    Compiling,
    /// The result is coming back.
    Receiving,
    /// Its lane died mid-job: it waits for the same host to answer again, to be sent
    /// again there.
    Resending,
    /// The wrapper compiles locally: a local slot, or a fallback after a failure.
    Local,
}

impl JobState {
    /// The lowercase name `hoardcc status` and `mon` show.
    pub fn name(self) -> &'static str {
        match self {
            JobState::Waiting => "waiting",
            JobState::Preprocessing => "preprocessing",
            JobState::Sending => "sending",
            JobState::Compiling => "compiling",
            JobState::Receiving => "receiving",
            JobState::Resending => "resending",
            JobState::Local => "local",
        }
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One job in flight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobReport {
    /// The source file the wrapper named.
    pub file: String,
    /// Where the job is.
    pub state: JobState,
    /// The host holding its slot, if remote.
    pub host: Option<String>,
    /// Seconds in the current state.
    pub secs: f64,
    /// Seconds since the wrapper asked for a slot.
    #[serde(default)]
    pub total_secs: f64,
    /// Bytes sent to servers for this job (the job frames, every attempt).
    #[serde(default)]
    pub bytes_sent: u64,
    /// Bytes received from servers for this job (the result frames).
    #[serde(default)]
    pub bytes_received: u64,
}

/// One recent failure: a failed attempt (retried or not) or a job the wrapper had to
/// compile locally.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureReport {
    /// Seconds since it happened (at the time of the report).
    pub secs_ago: u64,
    /// The source file.
    pub file: String,
    /// The host it failed on, if one was chosen.
    pub host: Option<String>,
    /// One line, at most [`MAX_REASON`] characters.
    pub reason: String,
}

/// `text` as one printable line of at most [`MAX_REASON`] characters.
pub fn one_line(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let line = line.trim();
    if line.chars().count() > MAX_REASON {
        let mut cut: String = line.chars().take(MAX_REASON - 1).collect();
        cut.push('…');
        cut
    } else {
        line.to_string()
    }
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
