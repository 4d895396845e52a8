//! The multi-call binary: chooses the mode from argv[0] and argv[1], then hands over to
//! `wrapper::main`, `subsystem::main` or `subsystem::distccd_main`. The compiler's argv
//! never goes through clap; only hoardcc's own subcommands and flags do.

use std::path::Path;

use clap::{Parser, Subcommand};
use hoardcc::{hosts, mux, paths::Paths, subsystem, wrapper};

/// Words that are hoardcc subcommands rather than a compiler name.
const SUBCOMMANDS: &[&str] = &["serve", "hosts", "mux", "status", "help"];

#[derive(Parser)]
#[command(
    name = "hoardcc",
    version,
    about = "A distributed C/C++ compiler that makes SSH the fast path",
    override_usage = "hoardcc COMPILER [ARGS...]\n       hoardcc serve [--inetd]\n       hoardcc mux [--foreground | --stop]\n       hoardcc status [--json]\n       hoardcc hosts\n       gcc|g++|cc|c++|clang|clang++ [ARGS...]   (through a symlink to hoardcc)",
    after_help = "Hosts come from HOARDCC_HOSTS, DISTCC_HOSTS, the config file, ~/.distcc/hosts or /etc/distcc/hosts.\n\
                  HOARDCC_FALLBACK=0 (or DISTCC_FALLBACK=0) turns the local fallback off. See hoardcc(1)."
)]
struct Cli {
    /// Serve one connection on stdin/stdout (same as `hoardcc serve`), for exec and forced-command setups.
    #[arg(long)]
    inetd: bool,
    /// Show hosts, connections, lanes and jobs of the running mux (same as `hoardcc status`).
    #[arg(long)]
    show_hosts: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// The server: speak hoardcc's protocol (or one stock distcc job) on stdin/stdout.
    /// sshd runs it from `Subsystem hoardcc /usr/bin/hoardcc serve`.
    Serve {
        /// Accepted for symmetry with `distccd --inetd`; serving stdin/stdout is the only mode.
        #[arg(long)]
        inetd: bool,
    },
    /// Print the host list hoardcc would use, and where it came from.
    Hosts,
    /// The per-user daemon that hoards ssh connections and schedules jobs. Wrappers start
    /// it on first use; it exits after being idle (10 minutes by default).
    Mux {
        /// Stay in the foreground (for a systemd user unit).
        #[arg(long)]
        foreground: bool,
        /// Stop the running mux and wait until it has exited.
        #[arg(long, conflicts_with = "foreground")]
        stop: bool,
    },
    /// Show hosts, connections, lanes, running and queued jobs, per-host counters and backoff.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> std::process::ExitCode {
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let argv0 = argv.first().cloned().unwrap_or_else(|| "hoardcc".into());
    let base = Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    init_tracing();

    if base == "distccd" {
        return subsystem::distccd_main(argv);
    }
    if wrapper::masquerade::is_masquerade_name(&base) {
        return wrapper::main(argv0, argv[1..].to_vec());
    }
    match argv.get(1) {
        Some(first) if !first.starts_with('-') && !SUBCOMMANDS.contains(&first.as_str()) => {
            return wrapper::main(first.clone(), argv[2..].to_vec());
        }
        None => {
            eprintln!("hoardcc: usage: hoardcc COMPILER [ARGS...]   (hoardcc --help for more)");
            return hoardcc::exit::ExitCode::BadArguments.into();
        }
        _ => {}
    }
    let cli = Cli::parse_from(&argv);
    match cli.command {
        Some(Command::Serve { inetd }) => subsystem::main(subsystem::ServeArgs {
            inetd: inetd || cli.inetd,
        }),
        Some(Command::Hosts) => show_hosts(),
        Some(Command::Mux { stop: true, .. }) => mux::client::stop_main(),
        Some(Command::Mux { foreground, .. }) => mux::main(mux::MuxArgs {
            foreground,
            stop: false,
        }),
        Some(Command::Status { json }) => mux::client::status_main(json),
        None if cli.inetd => subsystem::main(subsystem::ServeArgs { inetd: true }),
        None if cli.show_hosts => mux::client::status_main(false),
        None => {
            eprintln!("hoardcc: usage: hoardcc COMPILER [ARGS...]   (hoardcc --help for more)");
            hoardcc::exit::ExitCode::BadArguments.into()
        }
    }
}

fn show_hosts() -> std::process::ExitCode {
    let env = |k: &str| std::env::var(k).ok();
    let paths = Paths::from_env(&env);
    let config = match hoardcc::config::load(&paths, &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hoardcc: error: {e}");
            return hoardcc::exit::ExitCode::BadArguments.into();
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
            let status = mux::client::running_status(&paths);
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
            hoardcc::exit::ExitCode::NoHosts.into()
        }
        Err(e) => {
            eprintln!("hoardcc: error: {e}");
            hoardcc::exit::ExitCode::BadHostspec.into()
        }
    }
}

/// Logs go to stderr only (stdout is the protocol in `serve`). HOARDCC_LOG sets the filter.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOARDCC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .try_init();
}
