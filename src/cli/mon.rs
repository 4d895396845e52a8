//! `hoardcc mon [--once]`: the live view of the running mux, in the spirit of
//! distccmon-text. It subscribes to the mux's reports (`MuxRequest::Watch`, answered by
//! `mux::conn`) and redraws when one arrives; the only timer redraws the elapsed times
//! between reports. `--once` prints one plain-text frame and exits, for scripts.
//! Neighbours: `cli` (the other small commands), `wrapper::mux_client` (the socket
//! client), `proto::status` (the report).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::paths::Paths;
use crate::proto::status::{JobState, StatusReport};
use crate::wrapper::mux_client::{connect_existing, MuxClientError};

/// How often elapsed times are redrawn between reports.
const TICK: Duration = Duration::from_secs(1);
/// Pause before looking for a mux again when none runs (or it went away).
const RECONNECT: Duration = Duration::from_secs(1);

/// What one line of a frame is, for its style in the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Title,
    Heading,
    Row,
    Note,
    Failure,
}

/// `n` bytes, short: `512 B`, `12.0 KiB`, `3.4 MiB`.
fn bytes(n: u64) -> String {
    match n {
        0 => "-".to_string(),
        n if n < 1024 => format!("{n} B"),
        n if n < 1024 * 1024 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0)),
    }
}

/// `secs` as `4.2s`, `3m07s` or `2h05m`.
fn elapsed(secs: f64) -> String {
    let s = secs.max(0.0);
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!(
            "{}h{:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        )
    }
}

/// The lines of one frame for report `r`, received `age` ago (elapsed times and backoff
/// move on by that much).
fn frame_lines(r: &StatusReport, age: Duration) -> Vec<(Kind, String)> {
    let age_s = age.as_secs_f64();
    let waiting = r
        .jobs
        .iter()
        .filter(|j| j.state == JobState::Waiting)
        .count();
    let mut out = vec![(
        Kind::Title,
        format!(
            "hoardcc mon: mux {} (pid {}), up {}: {} wrapper(s), {} job(s), {} waiting, {} local",
            r.version,
            r.pid,
            elapsed(r.uptime_secs as f64 + age_s),
            r.wrappers,
            r.jobs_in_flight.max(r.jobs.len() as u32),
            waiting,
            r.local_running
        ),
    )];
    out.push((Kind::Note, String::new()));
    out.push((
        Kind::Heading,
        format!(
            "{:<30} {:>5} {:>4} {:>4} {:>5} {:>5} {:>5} {:>5} {:>6} {:>6} {:>8}",
            "HOST",
            "SLOTS",
            "USED",
            "FREE",
            "CONNS",
            "LANES",
            "OK",
            "FAIL",
            "BUSY",
            "CACHE",
            "BACKOFF"
        ),
    ));
    if r.hosts.is_empty() {
        out.push((Kind::Note, "(no hosts yet)".to_string()));
    }
    for h in &r.hosts {
        let slots = h.effective_slots();
        let backoff = h
            .backoff_remaining_ms
            .map(|ms| (ms as f64 / 1000.0 - age_s).ceil())
            .filter(|s| *s > 0.0)
            .map_or("-".to_string(), |s| format!("{s}s"));
        out.push((
            Kind::Row,
            format!(
                "{:<30} {:>5} {:>4} {:>4} {:>5} {:>5} {:>5} {:>5} {:>6} {:>6} {:>8}",
                h.host,
                slots,
                h.running,
                slots.saturating_sub(h.running),
                h.connections,
                h.lanes,
                h.jobs_ok,
                h.jobs_failed,
                h.jobs_busy,
                h.cache_hits,
                backoff
            ),
        ));
        if h.jobs_resent > 0 {
            out.push((
                Kind::Note,
                format!("    resent after a lost lane: {} job(s)", h.jobs_resent),
            ));
        }
        if let Some(e) = &h.last_error {
            out.push((Kind::Failure, format!("    last error: {e}")));
        }
    }
    out.push((Kind::Note, String::new()));
    out.push((
        Kind::Heading,
        format!(
            "{:<13} {:<30} {:>8} {:>10} {:>10}  {}",
            "STATE", "HOST", "ELAPSED", "SENT", "RECEIVED", "FILE"
        ),
    ));
    if r.jobs.is_empty() {
        out.push((Kind::Note, "(no jobs)".to_string()));
    }
    for j in &r.jobs {
        out.push((
            Kind::Row,
            format!(
                "{:<13} {:<30} {:>8} {:>10} {:>10}  {}",
                j.state.name(),
                j.host.as_deref().unwrap_or("-"),
                elapsed(j.total_secs + age_s),
                bytes(j.bytes_sent),
                bytes(j.bytes_received),
                j.file
            ),
        ));
    }
    let hidden = (r.jobs_in_flight as usize).saturating_sub(r.jobs.len());
    if hidden > 0 {
        out.push((Kind::Note, format!("(and {hidden} more)")));
    }
    if !r.failures.is_empty() {
        out.push((Kind::Note, String::new()));
        out.push((Kind::Heading, "RECENT FAILURES".to_string()));
        for f in &r.failures {
            out.push((
                Kind::Failure,
                format!(
                    "{:>8} ago  {}  {}: {}",
                    elapsed(f.secs_ago as f64 + age_s),
                    f.host.as_deref().unwrap_or("-"),
                    if f.file.is_empty() { "-" } else { &f.file },
                    f.reason
                ),
            ));
        }
    }
    out
}

/// The plain-text frame of `hoardcc mon --once`.
pub fn render_frame(r: &StatusReport) -> String {
    let mut s = String::new();
    for (_, line) in frame_lines(r, Duration::ZERO) {
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

/// `hoardcc mon [--once]`.
pub fn mon_main(once: bool) -> std::process::ExitCode {
    let paths = Paths::from_env(&|k: &str| std::env::var(k).ok());
    if once {
        // The first report of a subscription: a watcher is not counted as a wrapper, so
        // the frame shows the build alone.
        let first = connect_existing(&paths)
            .and_then(|c| c.watch())
            .and_then(|mut w| w.next_report());
        return match first {
            Ok(Some(r)) => {
                print!("{}", render_frame(&r));
                std::process::ExitCode::SUCCESS
            }
            Ok(None) => {
                println!("the mux exited");
                std::process::ExitCode::SUCCESS
            }
            Err(MuxClientError::NotRunning(p)) => {
                println!("no mux running ({})", p.display());
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("hoardcc mon: {e}");
                crate::exit::ExitCode::ConnectFailed.into()
            }
        };
    }
    match live(&paths) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hoardcc mon: {e}");
            crate::exit::ExitCode::IoError.into()
        }
    }
}

/// What wakes the live view.
enum Wake {
    /// A new report from the mux.
    Report(StatusReport),
    /// No mux to watch (why).
    NoMux(String),
    /// A key or a resize.
    Input(Event),
}

/// Follow the mux's reports on a thread: connect, watch until the connection ends, and
/// look for a mux again after [`RECONNECT`].
fn spawn_reader(paths: Paths, tx: mpsc::Sender<Wake>) {
    std::thread::spawn(move || loop {
        let why = match connect_existing(&paths).and_then(|c| c.watch()) {
            Ok(mut w) => loop {
                match w.next_report() {
                    Ok(Some(r)) => {
                        if tx.send(Wake::Report(r)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => break "the mux exited".to_string(),
                    Err(e) => break e.to_string(),
                }
            },
            Err(MuxClientError::NotRunning(p)) => format!("no mux running ({})", p.display()),
            Err(e) => e.to_string(),
        };
        if tx.send(Wake::NoMux(why)).is_err() {
            return;
        }
        std::thread::sleep(RECONNECT);
    });
}

/// Keys and resizes, on a thread of their own.
fn spawn_input(tx: mpsc::Sender<Wake>) {
    std::thread::spawn(move || loop {
        match event::read() {
            Ok(e) => {
                if tx.send(Wake::Input(e)).is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    });
}

fn styled(kind: Kind, text: String) -> Line<'static> {
    let style = match kind {
        Kind::Title => Style::default().add_modifier(Modifier::BOLD),
        Kind::Heading => Style::default()
            .fg(Color::Cyan)
            .add_modifier(Modifier::BOLD),
        Kind::Row | Kind::Note => Style::default(),
        Kind::Failure => Style::default().fg(Color::Red),
    };
    Line::from(Span::styled(text, style))
}

/// The terminal view: redraw on each report, key and tick; `q`, Esc or Ctrl-C quits.
fn live(paths: &Paths) -> std::io::Result<()> {
    let (tx, rx) = mpsc::channel();
    spawn_reader(paths.clone(), tx.clone());
    spawn_input(tx);
    let mut terminal = ratatui::try_init()?;
    let mut last: Option<(StatusReport, Instant)> = None;
    let mut gone: Option<String> = Some("connecting to the mux".to_string());
    let result = loop {
        let lines: Vec<Line> = match (&last, &gone) {
            (Some((r, at)), g) => {
                let mut l: Vec<Line> = frame_lines(r, at.elapsed())
                    .into_iter()
                    .map(|(k, t)| styled(k, t))
                    .collect();
                if let Some(g) = g {
                    l.insert(
                        0,
                        styled(Kind::Failure, format!("({g}; waiting for a mux)")),
                    );
                }
                l
            }
            (None, g) => vec![styled(
                Kind::Note,
                format!("hoardcc mon: {}", g.as_deref().unwrap_or("waiting")),
            )],
        };
        let mut help = lines;
        help.push(Line::from(""));
        help.push(styled(Kind::Note, "q: quit".to_string()));
        if let Err(e) = terminal.draw(|f| f.render_widget(Paragraph::new(help), f.area())) {
            break Err(e);
        }
        match rx.recv_timeout(TICK) {
            Ok(Wake::Report(r)) => {
                last = Some((r, Instant::now()));
                gone = None;
            }
            Ok(Wake::NoMux(why)) => gone = Some(why),
            Ok(Wake::Input(Event::Key(k))) if k.kind == KeyEventKind::Press => {
                let ctrl_c =
                    k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                if ctrl_c || matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) {
                    break Ok(());
                }
            }
            Ok(Wake::Input(_)) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break Ok(()),
        }
    };
    ratatui::restore();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::status::{FailureReport, HostReport, JobReport};

    fn report() -> StatusReport {
        StatusReport {
            version: "0.1.0+p2".into(),
            pid: 7,
            uptime_secs: 65,
            wrappers: 2,
            queued: 0,
            local_running: 0,
            hosts: vec![HostReport {
                host: "me@build1".into(),
                slots: 4,
                server_slots: Some(2),
                running: 1,
                connections: 1,
                lanes: 2,
                idle_lanes: 1,
                busy_lanes: 1,
                wire: Some("native".into()),
                jobs_ok: 5,
                jobs_failed: 1,
                jobs_busy: 2,
                jobs_resent: 0,
                cache_hits: 0,
                mean_ms: Some(100),
                ewma_ms: Some(90),
                backoff_remaining_ms: Some(2500),
                last_error: None,
                mismatched: vec![],
            }],
            jobs: vec![JobReport {
                file: "src/a.c".into(),
                state: JobState::Compiling,
                host: Some("me@build1".into()),
                secs: 1.0,
                total_secs: 2.2,
                bytes_sent: 12 * 1024,
                bytes_received: 0,
            }],
            jobs_in_flight: 3,
            failures: vec![FailureReport {
                secs_ago: 4,
                file: "src/b.c".into(),
                host: Some("me@build1".into()),
                reason: "connection reset (retried)".into(),
            }],
        }
    }

    #[test]
    fn the_frame_shows_hosts_jobs_and_failures() {
        let t = render_frame(&report());
        let host: Vec<&str> = t
            .lines()
            .find(|l| l.starts_with("me@build1"))
            .unwrap()
            .split_whitespace()
            .collect();
        // slots are the server's 2; 1 used, 1 free; backoff rounds up.
        assert_eq!(
            host,
            [
                "me@build1",
                "2",
                "1",
                "1",
                "1",
                "2",
                "5",
                "1",
                "2",
                "0",
                "3s"
            ]
        );
        let job = t.lines().find(|l| l.starts_with("compiling")).unwrap();
        assert!(job.contains("me@build1") && job.contains("2.2s") && job.contains("12.0 KiB"));
        assert!(job.ends_with("src/a.c"), "{job}");
        assert!(t.contains("(and 2 more)"), "{t}");
        assert!(
            t.contains("4.0s ago  me@build1  src/b.c: connection reset (retried)"),
            "{t}"
        );
        assert!(t.lines().next().unwrap().contains("up 1m05s"), "{t}");
    }

    #[test]
    fn elapsed_times_move_on_between_reports() {
        let lines = frame_lines(&report(), Duration::from_secs(2));
        let job = lines
            .iter()
            .find(|(_, l)| l.starts_with("compiling"))
            .unwrap();
        assert!(job.1.contains("4.2s"), "{}", job.1);
        let host = lines
            .iter()
            .find(|(_, l)| l.starts_with("me@build1"))
            .unwrap();
        assert!(host.1.trim_end().ends_with("1s"), "{}", host.1);
        assert_eq!(bytes(0), "-");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
        assert_eq!(elapsed(7300.0), "2h01m");
    }
}
