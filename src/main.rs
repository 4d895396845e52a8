//! The multi-call binary: chooses the mode from argv[0] and argv[1], then hands over to
//! `wrapper::main`, `subsystem::main` (also for `distccd --inetd`) or `cli` (`hosts`,
//! `status`, `mux --stop`, `install-server`, `masquerade`, `ping`, `doctor`; `completions`
//! is here, as it needs the clap command tree). The compiler's argv never goes through
//! clap; only hoardcc's own subcommands and flags do. It also sets up logging, once, with
//! the chosen mode's defaults ([`init_logging`]).

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use hoardcc::{cli, mux, subsystem, wrapper};

/// Words that are hoardcc subcommands rather than a compiler name.
const SUBCOMMANDS: &[&str] = &[
    "serve",
    "hosts",
    "mux",
    "status",
    "mon",
    "stats",
    "install-server",
    "masquerade",
    "completions",
    "ping",
    "doctor",
    "help",
];

#[derive(Parser)]
#[command(
    name = "hoardcc",
    version,
    about = "A distributed C/C++ compiler that makes SSH the fast path",
    override_usage = "hoardcc COMPILER [ARGS...]\n       hoardcc serve [--inetd | --check [--json]]\n       hoardcc mux [--foreground | --stop]\n       hoardcc status [--json]\n       hoardcc mon [--once]\n       hoardcc stats [--json] [--zero]\n       hoardcc hosts\n       hoardcc ping [HOST...] [--timeout SECS] [--json | --hosts-ok]\n       hoardcc doctor [HOST]\n       hoardcc install-server @HOST [--force] [--forced-command [--key FILE]]\n       hoardcc masquerade DIR\n       hoardcc completions bash|zsh|fish\n       gcc|g++|cc|c++|clang|clang++ [ARGS...]   (through a symlink to hoardcc)",
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
        /// Do not serve: check the config, sandbox, job and slot directories, and list the
        /// compilers this server offers (name, path, version, target). Exit 0 when usable.
        #[arg(long, conflicts_with = "inetd")]
        check: bool,
        /// With --check: print the report as JSON.
        #[arg(long, requires = "check")]
        json: bool,
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
    /// Watch the running mux live: hosts (slots, connections, lanes, backoff, BUSY and
    /// cache counts), each job's state, host, elapsed time and bytes, recent failures.
    Mon {
        /// Print one plain-text frame and exit (for scripts; no terminal needed).
        #[arg(long)]
        once: bool,
    },
    /// Counters kept across mux restarts: jobs remote, local, fallen back and from cache,
    /// per host; bytes; remote compile time against the estimated local time.
    Stats {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Reset every counter to zero (then print them).
        #[arg(long)]
        zero: bool,
    },
    /// Reach each host (all of the host list, or those named) and report one line per host:
    /// route, server version, slots and load, round trip. Exit 0 only if every host is usable.
    Ping(cli::ping::PingArgs),
    /// Check a host step by step (ssh config, DNS, TCP, host key, authentication, route,
    /// server version, a real compile), each with ✓ or ✗ and a fix.
    Doctor(cli::doctor::DoctorArgs),
    /// Copy this binary to ~/.local/bin/hoardcc on a build server over ssh (no root, no
    /// scp), check that it runs and what it offers, and print the host entry to use.
    InstallServer {
        /// The server, as in the host list: @HOST or USER@HOST (optionally /N slots).
        host: String,
        /// Replace a different hoardcc already installed there.
        #[arg(long)]
        force: bool,
        /// Instead of a login route, authorise a compile-only key in the server's
        /// ~/.ssh/authorized_keys (restrict,command="…/hoardcc serve").
        #[arg(long)]
        forced_command: bool,
        /// The compile-only key (a .pub, or a private key); default ~/.ssh/hoardcc-HOST,
        /// generated when missing.
        #[arg(long, value_name = "FILE", requires = "forced_command")]
        key: Option<PathBuf>,
    },
    /// Make DIR a masquerade directory: symlinks named after the compilers on PATH (gcc,
    /// g++, cc, c++, clang, clang++, gcc-N …) pointing to hoardcc; prints the PATH line.
    Masquerade {
        /// The directory to create or update.
        dir: PathBuf,
    },
    /// Print a shell completion script for hoardcc.
    Completions {
        /// The shell.
        shell: CompletionShell,
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

    if base == "distccd" {
        let opts = match subsystem::parse_distccd_args(&argv) {
            Ok(o) => o,
            Err(msg) => {
                eprintln!("distccd (hoardcc): {msg}");
                return hoardcc::exit::ExitCode::BadArguments.into();
            }
        };
        init_logging(LogMode::Server {
            file: opts.log_file,
        });
        return subsystem::main(subsystem::ServeArgs { inetd: true });
    }
    if wrapper::masquerade::is_masquerade_name(&base) {
        init_logging(LogMode::Client);
        return wrapper::main(argv0, argv[1..].to_vec());
    }
    match argv.get(1) {
        Some(first) if !first.starts_with('-') && !SUBCOMMANDS.contains(&first.as_str()) => {
            init_logging(LogMode::Client);
            return wrapper::main(first.clone(), argv[2..].to_vec());
        }
        None => {
            eprintln!("hoardcc: usage: hoardcc COMPILER [ARGS...]   (hoardcc --help for more)");
            return hoardcc::exit::ExitCode::BadArguments.into();
        }
        _ => {}
    }
    let cli = Cli::parse_from(&argv);
    init_logging(match cli.command {
        Some(Command::Serve { check: true, .. }) => LogMode::Client,
        Some(Command::Serve { .. }) => LogMode::Server { file: None },
        None if cli.inetd => LogMode::Server { file: None },
        Some(Command::Mux { stop: false, .. }) => LogMode::Mux,
        _ => LogMode::Client,
    });
    match cli.command {
        Some(Command::Serve {
            check: true, json, ..
        }) => subsystem::check::main(json),
        Some(Command::Serve { inetd, .. }) => subsystem::main(subsystem::ServeArgs {
            inetd: inetd || cli.inetd,
        }),
        Some(Command::Hosts) => cli::hosts_main(),
        Some(Command::Mux { stop: true, .. }) => cli::stop_main(),
        Some(Command::Mux { foreground, .. }) => mux::main(mux::MuxArgs {
            foreground,
            stop: false,
        }),
        Some(Command::Status { json }) => cli::status_main(json),
        Some(Command::Mon { once }) => cli::mon::mon_main(once),
        Some(Command::Stats { json, zero }) => cli::stats::stats_main(json, zero),
        Some(Command::Ping(args)) => cli::ping::main(args),
        Some(Command::Doctor(args)) => cli::doctor::main(args),
        Some(Command::InstallServer {
            host,
            force,
            forced_command,
            key,
        }) => cli::install::install_main(cli::install::InstallArgs {
            host,
            force,
            forced_command,
            key,
        }),
        Some(Command::Masquerade { dir }) => cli::masquerade::masquerade_main(&dir),
        Some(Command::Completions { shell }) => {
            completions(shell, &mut std::io::stdout());
            std::process::ExitCode::SUCCESS
        }
        None if cli.inetd => subsystem::main(subsystem::ServeArgs { inetd: true }),
        None if cli.show_hosts => cli::status_main(false),
        None => {
            eprintln!("hoardcc: usage: hoardcc COMPILER [ARGS...]   (hoardcc --help for more)");
            hoardcc::exit::ExitCode::BadArguments.into()
        }
    }
}

#[cfg(test)]
mod main_tests;

/// The shells `hoardcc completions` writes for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

/// Write the completion script for `shell` (`hoardcc completions SHELL`).
fn completions(shell: CompletionShell, out: &mut dyn std::io::Write) {
    use clap::CommandFactory;
    let shell = match shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut Cli::command(), "hoardcc", out);
}

/// The log defaults of one mode.
enum LogMode {
    /// The wrapper and the short CLI commands: warnings on stderr.
    Client,
    /// The mux daemon: `info` on stderr, which the daemon points at `mux.log` when it
    /// detaches (the writer opens fd 2 on every line, so that redirection is followed).
    Mux,
    /// `hoardcc serve` and `distccd --inetd`: warnings on stderr (stdout is the protocol),
    /// or into `--log-file F` when distccd is given one.
    Server {
        /// `distccd --log-file F`.
        file: Option<PathBuf>,
    },
}

/// The one place logging is set up. `HOARDCC_LOG` (an `EnvFilter`) replaces the mode's
/// default level.
fn init_logging(mode: LogMode) {
    use std::io::IsTerminal;
    let default = match mode {
        LogMode::Mux => "info",
        LogMode::Client | LogMode::Server { .. } => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOARDCC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let file = match &mode {
        LogMode::Server { file: Some(path) } => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| eprintln!("hoardcc: cannot open log file {}: {e}", path.display()))
            .ok(),
        _ => None,
    };
    let ansi = !matches!(mode, LogMode::Mux) && std::io::stderr().is_terminal();
    // Nothing else installs a subscriber, so this cannot fail; if it did, logs are lost,
    // not the job.
    let _ = match file {
        Some(f) => builder
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(f))
            .try_init(),
        None => builder
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .try_init(),
    };
}
