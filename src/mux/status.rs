//! Stage: mux reporting — the document behind `hoardcc status`. The daemon builds a
//! [`StatusReport`] (a typed report, `proto::status`) here from the scheduler
//! (`mux::scheduler`), the pool (`mux::pool`) and the job table (`mux::listener`);
//! `mux::conn` sends it as postcard in `MuxReply::Status`; the client
//! (`cli::status_main`) prints it as the text table of [`render_text`], or as JSON
//! (`--json`, the only place JSON appears).

use tokio::time::Instant;

use crate::mux::lane::Wire;
use crate::mux::listener::Daemon;
use crate::mux::mux_version;
pub use crate::proto::status::{
    ChunkCounters, FailureReport, HostReport, JobReport, JobState, MismatchReport, StatusReport,
};

fn opt<T: std::fmt::Display>(v: &Option<T>, suffix: &str) -> String {
    match v {
        Some(v) => format!("{v}{suffix}"),
        None => "-".to_string(),
    }
}

/// The text table of `hoardcc status`.
pub fn render_text(r: &StatusReport) -> String {
    let mut s = format!(
        "hoardcc mux {} (pid {}), up {}s: {} wrapper(s), {} queued, {} local\n",
        r.version, r.pid, r.uptime_secs, r.wrappers, r.queued, r.local_running
    );
    if r.hosts.is_empty() {
        s.push_str("no hosts yet\n");
    } else {
        s.push_str(&format!(
            "{:<28} {:>5} {:>7} {:>5} {:>9} {:>6} {:>6} {:>6} {:>6} {:>8} {:>8}  {}\n",
            "HOST",
            "SLOTS",
            "RUNNING",
            "CONNS",
            "LANES I/B",
            "OK",
            "CACHED",
            "FAILED",
            "BUSY",
            "MEAN",
            "BACKOFF",
            "WIRE"
        ));
        for h in &r.hosts {
            let slots = h.effective_slots().to_string();
            s.push_str(&format!(
                "{:<28} {:>5} {:>7} {:>5} {:>9} {:>6} {:>6} {:>6} {:>6} {:>8} {:>8}  {}\n",
                h.host,
                slots,
                h.running,
                h.connections,
                format!("{}/{}", h.idle_lanes, h.busy_lanes),
                h.jobs_ok,
                h.cache_hits,
                h.jobs_failed,
                h.jobs_busy,
                opt(&h.mean_ms, "ms"),
                opt(&h.backoff_remaining_ms.map(|ms| ms.div_ceil(1000)), "s"),
                h.wire.as_deref().unwrap_or("-"),
            ));
            if let Some(n) = h.slots_note() {
                s.push_str(&format!("    slots: {n}\n"));
            }
            if h.jobs_resent > 0 {
                s.push_str(&format!(
                    "    resent after a lost lane: {} job(s)\n",
                    h.jobs_resent
                ));
            }
            let c = &h.chunks;
            if c.chunked_jobs > 0 {
                s.push_str(&format!(
                    "    uploads: {:.1} MiB in all ({:.1} MiB of chunk packs, {} as deltas); {} chunked job(s), {} chunk(s) sent, {} asked for again, {} known there\n",
                    c.bytes_sent as f64 / f64::from(1u32 << 20),
                    c.pack_bytes as f64 / f64::from(1u32 << 20),
                    c.delta_packs,
                    c.chunked_jobs,
                    c.chunks_sent,
                    c.chunks_missing,
                    c.chunks_known
                ));
            }
            if let Some(e) = &h.last_error {
                s.push_str(&format!("    last error: {e}\n"));
            }
            for m in &h.mismatched {
                s.push_str(&format!(
                    "    mismatch: {} not sent here ({}s): {}\n",
                    m.compiler, m.remaining_secs, m.reason
                ));
            }
        }
    }
    if !r.jobs.is_empty() {
        s.push_str("\nJOBS\n");
        for j in &r.jobs {
            s.push_str(&format!(
                "  {:<9} {:<28} {:>7.1}s  {}\n",
                j.state,
                j.host.as_deref().unwrap_or("-"),
                j.secs,
                j.file
            ));
        }
    }
    s
}

impl Daemon {
    /// The report `hoardcc status` shows, from the scheduler, the pool and the job table.
    pub(crate) fn status(&self) -> StatusReport {
        let now = Instant::now();
        let pool = self.pool.status();
        let chunk_counters = |key: &str| {
            let all = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
            all.get(key)
                .map(|c| crate::mux::upload::lock(c).counters)
                .unwrap_or_default()
        };
        let (hosts, queued, local_running) = self.sched.peek(|s| {
            let hosts: Vec<HostReport> = s
                .hosts()
                .map(|(key, h)| {
                    let p = pool.iter().find(|p| &p.host == key);
                    let lanes = p.map_or(0, |p| p.lanes);
                    let idle = p.map_or(0, |p| p.idle);
                    HostReport {
                        host: key.clone(),
                        slots: h.spec.slots,
                        server_slots: h.server_slots,
                        running: h.running,
                        connections: p.map_or(0, |p| p.connections),
                        lanes,
                        idle_lanes: idle,
                        busy_lanes: lanes.saturating_sub(idle),
                        wire: p.and_then(|p| p.wire).map(|w| wire_name(w).to_string()),
                        jobs_ok: h.jobs_ok,
                        jobs_failed: h.jobs_failed,
                        jobs_busy: h.jobs_busy,
                        jobs_resent: h.jobs_resent,
                        cache_hits: self.monitor.cache_hits(key),
                        chunks: chunk_counters(key),
                        mean_ms: h.mean_ms(),
                        ewma_ms: h.ewma_ms.map(|m| m as u64),
                        backoff_remaining_ms: h
                            .backoff_until
                            .filter(|t| *t > now)
                            .map(|t| (t - now).as_millis() as u64),
                        last_error: p.and_then(|p| p.last_error.clone()),
                        mismatched: mismatched(h, now),
                    }
                })
                .collect();
            (hosts, s.queued() as u32, s.local_running())
        });
        let (jobs, jobs_in_flight) = self.monitor.jobs_report(now);
        StatusReport {
            version: mux_version(),
            pid: std::process::id(),
            uptime_secs: (now - self.started).as_secs(),
            wrappers: self.activity.count(),
            queued,
            local_running,
            hosts,
            jobs,
            jobs_in_flight,
            failures: self.monitor.failures_report(now),
        }
    }
}

/// A host's live compiler blocks, sorted by compiler.
fn mismatched(h: &crate::mux::scheduler::HostState, now: Instant) -> Vec<MismatchReport> {
    let mut out: Vec<MismatchReport> = h
        .blocked
        .iter()
        .filter(|(_, b)| b.until > now)
        .map(|(k, b)| MismatchReport {
            compiler: k.label(),
            reason: b.reason.clone(),
            remaining_secs: (b.until - now).as_secs(),
        })
        .collect();
    out.sort_by(|a, b| a.compiler.cmp(&b.compiler));
    out
}

fn wire_name(w: Wire) -> &'static str {
    match w {
        Wire::Native => "native",
        Wire::Distcc { lzo: false } => "distcc",
        Wire::Distcc { lzo: true } => "distcc+lzo",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StatusReport {
        StatusReport {
            version: "0.1.0+p1".into(),
            pid: 42,
            uptime_secs: 7,
            wrappers: 2,
            queued: 1,
            local_running: 0,
            hosts: vec![HostReport {
                host: "me@build1".into(),
                slots: 8,
                server_slots: Some(4),
                running: 2,
                connections: 1,
                lanes: 4,
                idle_lanes: 2,
                busy_lanes: 2,
                wire: Some("native".into()),
                jobs_ok: 10,
                jobs_failed: 1,
                jobs_busy: 0,
                jobs_resent: 2,
                cache_hits: 3,
                chunks: ChunkCounters {
                    bytes_sent: 3 << 20,
                    chunked_jobs: 9,
                    chunks_sent: 40,
                    chunks_missing: 2,
                    chunks_known: 38,
                    delta_packs: 1,
                    pack_bytes: 1 << 20,
                },
                mean_ms: Some(850),
                ewma_ms: Some(800),
                backoff_remaining_ms: Some(1500),
                last_error: Some("boom".into()),
                mismatched: vec![MismatchReport {
                    compiler: "gcc 12.2.0 (x86_64-linux-gnu)".into(),
                    reason: "no compiler matching gcc 12.2.0 (x86_64-linux-gnu); \
                             gcc here is 13.1.0 (x86_64-linux-gnu)"
                        .into(),
                    remaining_secs: 590,
                }],
            }],
            jobs: vec![JobReport {
                file: "foo.c".into(),
                state: JobState::Compiling,
                host: Some("me@build1".into()),
                secs: 0.5,
                total_secs: 1.5,
                bytes_sent: 1234,
                bytes_received: 0,
            }],
            jobs_in_flight: 1,
            failures: vec![FailureReport {
                secs_ago: 3,
                file: "bar.c".into(),
                host: Some("me@build1".into()),
                reason: "connection reset (retrying)".into(),
            }],
        }
    }

    /// The report travels as postcard in `MuxReply::Status`, typed, with no JSON inside.
    #[test]
    fn the_reply_is_typed_postcard() {
        use crate::proto::frame::{decode, encode};
        use crate::proto::msg::MuxReply;
        let r = sample();
        let bytes = encode(&MuxReply::Status(Box::new(r.clone())));
        assert!(!String::from_utf8_lossy(&bytes).contains("\"host\""));
        match decode::<MuxReply>(&bytes).unwrap() {
            MuxReply::Status(got) => assert_eq!(*got, r),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn json_round_trips() {
        let r = sample();
        assert_eq!(StatusReport::from_json(&r.to_json()).unwrap(), r);
        assert!(r.to_json().contains("\"backoff_remaining_ms\": 1500"));
        assert!(r.to_json().contains("\"state\": \"compiling\""));
    }

    #[test]
    fn text_shows_hosts_lanes_and_jobs() {
        let t = render_text(&sample());
        let line = t.lines().find(|l| l.starts_with("me@build1")).unwrap();
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            cols,
            [
                "me@build1",
                "4",
                "2",
                "1",
                "2/2",
                "10",
                "3",
                "1",
                "0",
                "850ms",
                "2s",
                "native"
            ]
        );
        assert!(t.contains("last error: boom"));
        assert!(t.contains(
            "    mismatch: gcc 12.2.0 (x86_64-linux-gnu) not sent here (590s): no compiler matching"
        ));
        assert!(t.contains("resent after a lost lane: 2 job(s)"));
        assert!(
            t.contains(
                "uploads: 3.0 MiB in all (1.0 MiB of chunk packs, 1 as deltas); 9 chunked job(s), 40 chunk(s) sent, 2 asked for again, 38 known there"
            ),
            "{t}"
        );
        assert!(t.contains("compiling") && t.contains("foo.c"));
    }
}
