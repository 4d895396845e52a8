//! The `hoardcc hosts`, `hoardcc status [--json]` and `hoardcc mux --stop` commands:
//! small bodies that `main` dispatches to; `mon`, `stats`, `install-server` and
//! `masquerade` are in submodules of the same names. They read the host list (`hosts`, `config`)
//! and ask a running mux over the wrapper's socket client (`wrapper::mux_client`), never
//! starting one. The host checks live in [`ping`] and [`doctor`]. Neighbours: `main`
//! (caller), `wrapper::mux_client`, `mux::status` (the report and its text table).

pub mod install;
pub mod masquerade;
pub mod mon;
pub mod stats;

use std::path::Path;
use std::time::Instant;

pub mod compilers;
pub mod doctor;
pub mod ping;

use crate::hosts;
use crate::mux::status::render_text;
use crate::paths::Paths;
use crate::wrapper::mux_client::{
    self, connect_existing, wait_process_gone, wait_socket_gone, MuxClientError, STOP_DEADLINE,
};

/// `hoardcc hosts`: the host list hoardcc would use, where it came from, and (when a mux
/// runs) the slots it uses per host.
pub fn hosts_main() -> std::process::ExitCode {
    let env = |k: &str| std::env::var(k).ok();
    let paths = Paths::from_env(&env);
    let config = match crate::config::load(&paths, &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hoardcc: error: {e}");
            return crate::exit::ExitCode::BadArguments.into();
        }
    };
    let file = paths.config_file();
    let read = |p: &Path| std::fs::read_to_string(p).ok();
    match hosts::resolve(
        &env,
        config.hosts.as_deref().map(|h| (h, file.as_path())),
        paths.home.as_deref(),
        &read,
    ) {
        Ok(Some((list, source))) => {
            println!("# from {source:?}");
            // A running mux knows what each server allows: show the slots it uses, as
            // `hoardcc status` does.
            let status = mux_client::running_status(&paths);
            for h in &list.hosts {
                let report = status.as_ref().and_then(|r| {
                    r.hosts
                        .iter()
                        .find(|r| r.host == h.key() && r.slots == h.slots)
                });
                let slots = report.map_or(h.slots, |r| r.effective_slots());
                let note = report
                    .and_then(|r| r.slots_note())
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default();
                println!(
                    "{}\t{slots} slots{}{}{note}",
                    h.key(),
                    if h.lzo { ",lzo" } else { "" },
                    if h.down { " (down)" } else { "" }
                );
            }
            std::process::ExitCode::SUCCESS
        }
        Ok(None) => {
            eprintln!("hoardcc: no hosts are set (HOARDCC_HOSTS, DISTCC_HOSTS, config file, ~/.distcc/hosts, /etc/distcc/hosts)");
            crate::exit::ExitCode::NoHosts.into()
        }
        Err(e) => {
            eprintln!("hoardcc: error: {e}");
            crate::exit::ExitCode::BadHostspec.into()
        }
    }
}

fn env_paths() -> Paths {
    Paths::from_env(&|k: &str| std::env::var(k).ok())
}

/// `hoardcc status [--json]`: print the running mux's hosts, connections, lanes, jobs and
/// per-host counters. Without a mux it says so (exit 0: nothing is wrong).
pub fn status_main(json: bool) -> std::process::ExitCode {
    let paths = env_paths();
    let result = connect_existing(&paths).and_then(|mut c| c.status());
    match result {
        Ok(report) => {
            if json {
                println!("{}", report.to_json());
            } else {
                print!("{}", render_text(&report));
            }
            std::process::ExitCode::SUCCESS
        }
        Err(MuxClientError::NotRunning(p)) => {
            if json {
                println!("{{\"running\": false}}");
            } else {
                println!("no mux running ({})", p.display());
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hoardcc status: {e}");
            crate::exit::ExitCode::ConnectFailed.into()
        }
    }
}

/// `hoardcc mux --stop`: ask the running mux to exit and wait until its socket is gone.
pub fn stop_main() -> std::process::ExitCode {
    let paths = env_paths();
    let stopped = connect_existing(&paths).and_then(|mut c| {
        let pid = c.status().ok().map(|r| r.pid);
        c.stop().map(|()| pid)
    });
    match stopped {
        Ok(pid) => {
            let deadline = Instant::now() + STOP_DEADLINE;
            let gone = wait_socket_gone(&paths.mux_socket(), deadline)
                && pid.is_none_or(|p| wait_process_gone(p, deadline));
            if gone {
                eprintln!("hoardcc mux: stopped");
            } else {
                eprintln!("hoardcc mux: asked to stop; it is still running");
            }
            std::process::ExitCode::SUCCESS
        }
        Err(MuxClientError::NotRunning(_)) => {
            eprintln!("hoardcc mux: not running");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hoardcc mux --stop: {e}");
            crate::exit::ExitCode::ConnectFailed.into()
        }
    }
}
