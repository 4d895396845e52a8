//! `hoardcc stats [--json] [--zero]`: the counters that survive mux restarts. A running
//! mux answers with its live counters (`MuxRequest::Stats`); without one they are read
//! from the file it keeps (`mux::stats`, `<state_dir>/stats.json`). Neighbours: `cli`
//! (the other small commands), `proto::stats` (the counters).

use crate::mux::stats::{read_file, stats_file, unix_now, write_file};
use crate::paths::Paths;
use crate::proto::stats::Stats;
use crate::wrapper::mux_client::{connect_existing, MuxClientError};

fn ms(ms: u64) -> String {
    let s = ms as f64 / 1000.0;
    if ms < 1000 {
        format!("{ms} ms")
    } else if s < 120.0 {
        format!("{s:.1} s")
    } else if s < 7200.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

fn size(n: u64) -> String {
    match n {
        n if n < 1024 => format!("{n} B"),
        n if n < 1024 * 1024 => format!("{:.1} KiB", n as f64 / 1024.0),
        n if n < 1024 * 1024 * 1024 => format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0)),
        n => format!("{:.2} GiB", n as f64 / (1024.0 * 1024.0 * 1024.0)),
    }
}

/// The text of `hoardcc stats`.
pub fn render_text(s: &Stats, now_unix: u64) -> String {
    let mut t = String::new();
    let since = if s.since_unix == 0 {
        "nothing counted yet".to_string()
    } else {
        let ago = now_unix.saturating_sub(s.since_unix);
        format!("counting for {}", ms(ago.saturating_mul(1000)))
    };
    t.push_str(&format!("hoardcc stats ({since})\n"));
    t.push_str(&format!("jobs remote             {}\n", s.jobs_remote));
    t.push_str(&format!("jobs local              {}\n", s.jobs_local));
    t.push_str(&format!("jobs fallen back        {}\n", s.jobs_fallback));
    t.push_str(&format!("jobs from cache         {}\n", s.jobs_cache_hit));
    t.push_str(&format!("bytes sent              {}\n", size(s.bytes_sent)));
    t.push_str(&format!(
        "bytes received          {}\n",
        size(s.bytes_received)
    ));
    t.push_str(&format!("remote compile time     {}\n", ms(s.remote_ms)));
    match (s.local_ms_per_job(), s.estimated_local_ms()) {
        (Some(per), Some(est)) => {
            t.push_str(&format!(
                "local time, estimated   {} ({} local compiles timed, {} each)\n",
                ms(est),
                s.local_timed,
                ms(per)
            ));
        }
        _ => t.push_str("local time, estimated   - (no local compile timed yet)\n"),
    }
    if !s.hosts.is_empty() {
        t.push_str(&format!(
            "\n{:<30} {:>8} {:>8} {:>6} {:>6} {:>10} {:>10} {:>10}\n",
            "HOST", "REMOTE", "FELLBACK", "CACHE", "BUSY", "SENT", "RECEIVED", "TIME"
        ));
        for (host, h) in &s.hosts {
            t.push_str(&format!(
                "{:<30} {:>8} {:>8} {:>6} {:>6} {:>10} {:>10} {:>10}\n",
                host,
                h.jobs_remote,
                h.jobs_fallback,
                h.jobs_cache_hit,
                h.jobs_busy,
                size(h.bytes_sent),
                size(h.bytes_received),
                ms(h.remote_ms)
            ));
        }
    }
    t
}

/// The counters: the running mux's, else the file's; reset first when `zero`.
fn counters(paths: &Paths, zero: bool) -> Result<Stats, String> {
    match connect_existing(paths).and_then(|mut c| c.stats(zero)) {
        Ok(s) => Ok(s),
        Err(MuxClientError::NotRunning(_)) => {
            let file = stats_file(&paths.state_dir);
            if zero {
                let fresh = Stats {
                    since_unix: unix_now(),
                    ..Stats::default()
                };
                write_file(&file, &fresh).map_err(|e| e.to_string())?;
                return Ok(fresh);
            }
            read_file(&file).map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// `hoardcc stats [--json] [--zero]`.
pub fn stats_main(json: bool, zero: bool) -> std::process::ExitCode {
    let paths = Paths::from_env(&|k: &str| std::env::var(k).ok());
    match counters(&paths, zero) {
        Ok(s) if json => {
            println!("{}", s.to_json());
            std::process::ExitCode::SUCCESS
        }
        Ok(s) => {
            print!("{}", render_text(&s, unix_now()));
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hoardcc stats: {e}");
            crate::exit::ExitCode::IoError.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_shows_counters_estimate_and_hosts() {
        let mut s = Stats {
            since_unix: 1000,
            jobs_remote: 10,
            jobs_local: 2,
            jobs_fallback: 1,
            bytes_sent: 3 << 20,
            bytes_received: 2048,
            remote_ms: 4000,
            local_timed: 3,
            local_ms: 1500,
            ..Stats::default()
        };
        s.host_mut("me@b").jobs_remote = 10;
        let t = render_text(&s, 1060);
        assert!(t.contains("counting for 60.0 s"), "{t}");
        assert!(t.contains("jobs remote             10"), "{t}");
        assert!(t.contains("bytes sent              3.0 MiB"), "{t}");
        assert!(
            t.contains("local time, estimated   5.0 s (3 local compiles timed, 500 ms each)"),
            "{t}"
        );
        assert!(
            t.lines()
                .any(|l| l.starts_with("me@b") && l.contains(" 10 ")),
            "{t}"
        );
        let none = render_text(&Stats::default(), 5);
        assert!(none.contains("nothing counted yet") && none.contains("no local compile timed"));
    }
}
