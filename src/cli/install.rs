//! `hoardcc install-server @HOST [--force] [--forced-command [--key FILE]]`: set up a build
//! server from the laptop, without root. Over one ssh connection made by `mux::ssh` (known
//! hosts checked, agent or identity keys, as for compile jobs) it probes the server, copies
//! this binary to `~/.local/bin/hoardcc` on an exec channel (written to a temp file next to
//! it, hash-checked, run once, then renamed: never half a binary in place), checks that it
//! runs there, asks it which compilers it offers (`serve --check`), opens one real lane on
//! the new route, and prints the host entry to use. With `--forced-command` it instead adds
//! a `restrict,command="…/hoardcc serve"` line for a compile-only key to the server's
//! `~/.ssh/authorized_keys` (SECURITY.md route 2) and prints the `~/.ssh/config` block.
//!
//! Idempotent: the same binary (same SHA-256 on both sides) is left alone, a different one
//! is refused unless `--force`; the authorized_keys line is added once.
//!
//! Remote commands run through the server user's login shell, which may be sh, bash, zsh,
//! fish or csh: each is one `sh -c '…'` line whose script and arguments hold no single
//! quote, backslash or newline, so every one of those shells passes them through intact
//! ([`remote_command`]). Neighbours: `main` (dispatch), `mux::ssh` (connection and
//! [`crate::mux::ssh::ExecOutput`]), `mux::lane` (the route check), `hosts` (the entry's
//! grammar).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::hosts::{self, HostKind, HostSpec};
use crate::mux::lane::{expected_wire, Lane};
use crate::mux::ssh::{config::destination, Connection, Destination, SshError, SshSettings};
use crate::proto::msg::Wire;

mod key;
mod scripts;
#[cfg(test)]
mod tests;

pub use key::{load_or_create_key, CompileKey};
pub use scripts::{remote_command, Probe};

/// Where the binary goes, relative to the server user's home.
pub const REMOTE_DIR: &str = ".local/bin";
/// The remote path as a host entry writes it (expanded by the remote login shell).
pub const REMOTE_BIN: &str = "~/.local/bin/hoardcc";
/// Bound on what one remote command may print (per stream).
const OUTPUT_LIMIT: usize = 1 << 20;
/// Deadline of a short remote command (probe, version, check, authorize).
const SHORT_DEADLINE: Duration = Duration::from_secs(60);
/// The upload's deadline grows with the binary's size at this slowest accepted rate.
const MIN_UPLOAD_RATE: u64 = 256 << 10;

/// The command line of `install-server`.
#[derive(Debug, Clone)]
pub struct InstallArgs {
    /// `@HOST`, `USER@HOST` (optionally `/N`): where to install.
    pub host: String,
    /// Replace a different hoardcc already installed there.
    pub force: bool,
    /// Add a compile-only key's `restrict,command=` line instead of printing a login route.
    pub forced_command: bool,
    /// The key to authorise with `forced_command` (a `.pub` file or a private key with its
    /// `.pub` beside it); default `~/.ssh/hoardcc-<host>`, generated when missing.
    pub key: Option<PathBuf>,
}

/// Why an install stopped, by phase.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The host argument is not one SSH host of the host-list grammar.
    #[error("{0}")]
    Target(String),
    /// Reading this binary (`/proc/self/exe`).
    #[error("cannot read this binary {path}: {source}")]
    ReadSelf {
        /// The path read.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Resolving or reaching the server, or running a command on it.
    #[error(transparent)]
    Ssh(#[from] SshError),
    /// A remote step failed; `stderr` is what the server said.
    #[error("{host}: {step} failed ({end}){}", colon_text(.stderr))]
    Remote {
        /// The server.
        host: String,
        /// Which step (`probe`, `upload`, …).
        step: &'static str,
        /// How the command ended.
        end: String,
        /// The remote stderr, trimmed.
        stderr: String,
    },
    /// The server is another OS or architecture than this binary is built for.
    #[error("{host} is {remote}, but this hoardcc is built for {local}: install a {remote} build of hoardcc there instead")]
    Platform {
        /// The server.
        host: String,
        /// `uname -sm` there, e.g. `Linux aarch64`.
        remote: String,
        /// This build's OS and architecture.
        local: String,
    },
    /// A different binary is already installed and `--force` was not given.
    #[error("{host}: ~/{REMOTE_DIR}/hoardcc is another build (sha256 {theirs}{}); this one is sha256 {ours}. Use --force to replace it", version_text(.version))]
    Different {
        /// The server.
        host: String,
        /// Its hash.
        theirs: String,
        /// What it says for `--version`.
        version: String,
        /// Ours.
        ours: String,
    },
    /// The uploaded binary does not run there (libc, architecture, noexec home …).
    #[error("{host}: the copied hoardcc does not run there (left as it was): {stderr}")]
    DoesNotRun {
        /// The server.
        host: String,
        /// Its stderr (e.g. `GLIBC_2.34 not found`, `Exec format error`).
        stderr: String,
    },
    /// `hoardcc serve --check` there says the server cannot take jobs (the lines marked ✗
    /// in its report, printed above, say why).
    #[error("{host}: installed, but `hoardcc serve --check` says this server cannot take jobs ({end}; see the ✗ lines above){}", colon_text(.stderr))]
    Unusable {
        /// The server.
        host: String,
        /// How the check ended.
        end: String,
        /// Its stderr.
        stderr: String,
    },
    /// The installed route did not answer as a hoardcc server.
    #[error("{host}: the route {entry} does not work: {reason}")]
    Route {
        /// The server.
        host: String,
        /// The host entry tried.
        entry: String,
        /// What went wrong.
        reason: String,
    },
    /// The compile-only key could not be read, made or written.
    #[error("compile-only key {path}: {reason}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// authorized_keys already lists the key, with other options.
    #[error("{host}: ~/.ssh/authorized_keys already lists this key with other options, which would win over a restricted line; remove that line first:\n  {line}")]
    KeyConflict {
        /// The server.
        host: String,
        /// The existing line(s).
        line: String,
    },
}

fn colon_text(s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!(": {s}")
    }
}

fn version_text(v: &str) -> String {
    if v.is_empty() {
        String::new()
    } else {
        format!(", `{v}`")
    }
}

/// The server named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `USER` from `USER@HOST`.
    pub user: Option<String>,
    /// The ssh alias or host name.
    pub host: String,
    /// `/N` when given.
    pub slots: Option<u32>,
}

impl Target {
    /// `[USER]@HOST`, as the host list writes it.
    pub fn ssh_token(&self) -> String {
        format!("{}@{}", self.user.as_deref().unwrap_or(""), self.host)
    }
}

/// Parse `@HOST`, `USER@HOST` or `HOST` (optionally `/N`) with the host-list grammar.
///
/// # Errors
/// [`InstallError::Target`] for anything but one SSH host without a `:COMMAND` or options.
pub fn parse_target(text: &str) -> Result<Target, InstallError> {
    let bad = |why: String| InstallError::Target(format!("bad host {text:?}: {why}"));
    let token = if text.contains('@') {
        text.to_string()
    } else {
        format!("@{text}")
    };
    if token.split_whitespace().count() != 1 {
        return Err(bad("give one host, e.g. @buildbox or user@buildbox".into()));
    }
    let list = hosts::parse(&token).map_err(|e| bad(e.to_string()))?;
    let [spec] = list.hosts.as_slice() else {
        return Err(bad("give one host, e.g. @buildbox or user@buildbox".into()));
    };
    let HostKind::Ssh {
        user,
        host,
        command,
    } = &spec.kind
    else {
        return Err(bad("not an SSH host".into()));
    };
    if command.is_some() || spec.lzo || spec.down {
        return Err(bad(
            "give the host alone (no :COMMAND or options); the command is what gets installed"
                .into(),
        ));
    }
    let explicit_slots = token.contains('/') || token.contains('=');
    Ok(Target {
        user: user.clone(),
        host: host.clone(),
        slots: explicit_slots.then_some(spec.slots),
    })
}

/// The host entry for `target` reached through the installed binary:
/// `[USER]@HOST[/N]:~/.local/bin/hoardcc`. Checked against the host-list parser and the
/// mux's route choice: it must parse back to the same host, with the installed command,
/// on hoardcc's own protocol (an exec channel running `… serve`).
///
/// # Errors
/// [`InstallError::Target`] if the entry would not be used as intended.
pub fn host_entry(target: &Target) -> Result<(String, HostSpec), InstallError> {
    let slots = target.slots.map(|n| format!("/{n}")).unwrap_or_default();
    let entry = format!("{}{slots}:{REMOTE_BIN}", target.ssh_token());
    let wrong = |why: &str| InstallError::Target(format!("host entry {entry:?} {why}"));
    let list = hosts::parse(&entry).map_err(|e| wrong(&e.to_string()))?;
    let [spec] = list.hosts.as_slice() else {
        return Err(wrong("is not one host"));
    };
    match &spec.kind {
        HostKind::Ssh {
            user,
            host,
            command: Some(c),
        } if *user == target.user && *host == target.host && c == REMOTE_BIN => {}
        _ => return Err(wrong("does not parse back to the same host and command")),
    }
    if expected_wire(spec) != Wire::Native {
        return Err(wrong("would not run hoardcc's own protocol"));
    }
    Ok((entry.clone(), spec.clone()))
}

/// `hoardcc install-server`: run it and report; the exit code says how it went.
pub fn install_main(args: InstallArgs) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hoardcc install-server: cannot start a runtime: {e}");
            return crate::exit::ExitCode::DistccFailed.into();
        }
    };
    match runtime.block_on(install(&args, &mut std::io::stdout())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hoardcc install-server: error: {e}");
            match e {
                InstallError::Target(_) | InstallError::Key { .. } => {
                    crate::exit::ExitCode::BadArguments.into()
                }
                InstallError::Ssh(_) => crate::exit::ExitCode::ConnectFailed.into(),
                _ => crate::exit::ExitCode::DistccFailed.into(),
            }
        }
    }
}

/// SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(&Sha256::digest(bytes))
}

/// The whole install, writing its report to `out`.
///
/// # Errors
/// Any [`InstallError`]; nothing on the server changes after the first error.
pub async fn install(args: &InstallArgs, out: &mut dyn std::io::Write) -> Result<(), InstallError> {
    let target = parse_target(&args.host)?;
    let (entry, spec) = host_entry(&target)?;
    let env = |k: &str| std::env::var(k).ok();
    let paths = crate::paths::Paths::from_env(&env);
    let config = crate::config::load(&paths, &env)
        .map_err(|e| InstallError::Target(format!("config: {e}")))?;
    let home = paths.home.clone().unwrap_or_else(|| PathBuf::from("/"));
    let settings = SshSettings::from_config(&config, &env, home.clone());

    let exe = PathBuf::from("/proc/self/exe");
    let binary = std::fs::read(&exe).map_err(|source| InstallError::ReadSelf {
        path: exe.clone(),
        source,
    })?;
    let ours = sha256_hex(&binary);

    let dest = destination(&target.host, target.user.as_deref(), &settings)?;
    let conn = Connection::connect(&dest, &settings).await?;
    let host = format!("{}@{}", dest.user, target.host);
    let say = |out: &mut dyn std::io::Write, line: String| {
        let _ = writeln!(out, "{line}");
    };
    say(
        out,
        format!("connected to {host} ({}:{})", dest.hostname, dest.port),
    );

    // 1. What is there.
    let probe = run(
        &conn,
        &host,
        "probe",
        scripts::PROBE,
        &[],
        &[],
        SHORT_DEADLINE,
    )
    .await?;
    let probe = Probe::parse(&probe.stdout_text());
    check_platform(&host, &probe)?;

    // 2. The binary.
    let up_to_date = probe.hash.as_deref() == Some(ours.as_str());
    if up_to_date {
        say(
            out,
            format!(
                "~/{REMOTE_DIR}/hoardcc is up to date (sha256 {})",
                short(&ours)
            ),
        );
    } else {
        if let Some(theirs) = probe.existing_hash() {
            if !args.force {
                return Err(InstallError::Different {
                    host,
                    theirs: theirs.to_string(),
                    version: probe.version.clone().unwrap_or_default(),
                    ours,
                });
            }
        }
        let suffix = random_suffix();
        let size = binary.len().to_string();
        let upload_args = [
            suffix.as_str(),
            ours.as_str(),
            probe.hasher.as_str(),
            size.as_str(),
        ];
        let deadline = SHORT_DEADLINE + Duration::from_secs(binary.len() as u64 / MIN_UPLOAD_RATE);
        let done = conn
            .exec_capture(
                &remote_command(scripts::UPLOAD, &upload_args),
                &binary,
                OUTPUT_LIMIT,
                deadline,
            )
            .await?;
        if done.status == Some(scripts::EXIT_DOES_NOT_RUN) {
            return Err(InstallError::DoesNotRun {
                host,
                stderr: done.stderr_text(),
            });
        }
        if !done.success() {
            return Err(remote_failure(&host, "upload", &done));
        }
        let verb = if probe.exists {
            "replaced"
        } else {
            "installed"
        };
        say(
            out,
            format!(
                "{verb} ~/{REMOTE_DIR}/hoardcc ({} MiB, sha256 {}{})",
                binary.len() >> 20,
                short(&ours),
                if probe.hasher.is_empty() {
                    "; not re-hashed there: no sha256sum or shasum"
                } else {
                    ", checked there"
                }
            ),
        );
    }

    // 3. It runs there, and what it offers.
    let version = run(
        &conn,
        &host,
        "version check",
        scripts::VERSION,
        &[],
        &[],
        SHORT_DEADLINE,
    )
    .await
    .map_err(|e| match e {
        InstallError::Remote { host, stderr, .. } => InstallError::DoesNotRun { host, stderr },
        e => e,
    })?;
    say(out, format!("runs there: {}", version.stdout_text().trim()));
    let check = conn
        .exec_capture(
            &remote_command(scripts::CHECK, &[]),
            &[],
            OUTPUT_LIMIT,
            SHORT_DEADLINE,
        )
        .await?;
    let report: Vec<String> = check.stdout_text().lines().map(str::to_string).collect();
    if check.success() {
        say(out, "server check (hoardcc serve --check there):".into());
        for line in &report {
            say(out, format!("  {line}"));
        }
    } else if check.stderr_text().contains("unexpected argument") {
        // An older hoardcc (before `serve --check`): clap refuses the flag.
        say(
            out,
            "compilers offered: not known (this hoardcc has no `serve --check`)".into(),
        );
    } else {
        for line in &report {
            say(out, format!("  {line}"));
        }
        return Err(InstallError::Unusable {
            host,
            end: check.describe_end(),
            stderr: check.stderr_text(),
        });
    }

    // 4. The route, for real: one lane over the installed binary, hello answered.
    let command = REMOTE_BIN;
    let lane = Lane::on_connection(conn.clone(), &spec, Some(command), &settings)
        .await
        .map_err(|e| InstallError::Route {
            host: host.clone(),
            entry: entry.clone(),
            reason: e.to_string(),
        })?;
    let agent = lane
        .server_hello
        .as_ref()
        .map(|h| format!("{}, protocol {}", h.agent, h.version))
        .unwrap_or_default();
    drop(lane);
    say(
        out,
        format!("route checked: `{command} serve` answered ({agent})"),
    );

    if args.forced_command {
        authorize(args, &conn, &host, &target, &dest, &probe, &home, out).await?;
    } else {
        say(out, format!("host entry: {entry}"));
        say(
            out,
            format!("  e.g. export HOARDCC_HOSTS='{entry}'   (add /N after the host for N slots)"),
        );
    }
    conn.disconnect().await;
    Ok(())
}

/// `--forced-command`: authorise the compile-only key and print how to use it.
#[allow(clippy::too_many_arguments)]
async fn authorize(
    args: &InstallArgs,
    conn: &Connection,
    host: &str,
    target: &Target,
    dest: &Destination,
    probe: &Probe,
    home: &Path,
    out: &mut dyn std::io::Write,
) -> Result<(), InstallError> {
    let key_path = args
        .key
        .clone()
        .unwrap_or_else(|| home.join(".ssh").join(format!("hoardcc-{}", target.host)));
    let key = load_or_create_key(&key_path, &target.host)?;
    if key.created {
        let _ = writeln!(
            out,
            "generated the compile-only key {}",
            key.private.display()
        );
    }
    let line =
        scripts::authorized_line(&probe.home, &key.public).map_err(|reason| InstallError::Key {
            path: key.private.clone(),
            reason,
        })?;
    let blob = key.blob();
    let suffix = random_suffix();
    let done = conn
        .exec_capture(
            &remote_command(scripts::AUTHORIZE, &[line.as_str(), blob, suffix.as_str()]),
            &[],
            OUTPUT_LIMIT,
            SHORT_DEADLINE,
        )
        .await?;
    if done.status == Some(scripts::EXIT_KEY_CONFLICT) {
        return Err(InstallError::KeyConflict {
            host: host.to_string(),
            line: done.stderr_text(),
        });
    }
    if !done.success() {
        return Err(remote_failure(host, "authorized_keys update", &done));
    }
    let said = done.stdout_text();
    let state = if said.contains("authorized=present") {
        "already in"
    } else {
        "added to"
    };
    let _ = writeln!(
        out,
        "compile-only key {state} ~/.ssh/authorized_keys:\n  {line}"
    );
    let alias = format!("{}-hoardcc", target.host);
    let _ = writeln!(out, "add to ~/.ssh/config:");
    for l in ssh_config_block(&alias, dest, &key.private).lines() {
        let _ = writeln!(out, "  {l}");
    }
    let entry_target = Target {
        user: None,
        host: alias,
        slots: target.slots,
    };
    let (entry, _) = host_entry(&entry_target)?;
    let _ = writeln!(out, "host entry: {entry}");
    Ok(())
}

/// The `~/.ssh/config` block reaching `dest` with the compile-only key only.
pub fn ssh_config_block(alias: &str, dest: &Destination, key: &Path) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "Host {alias}");
    let _ = writeln!(c, "    HostName {}", dest.hostname);
    if dest.port != 22 {
        let _ = writeln!(c, "    Port {}", dest.port);
    }
    let _ = writeln!(c, "    User {}", dest.user);
    let _ = writeln!(c, "    IdentityFile {}", key.display());
    let _ = writeln!(c, "    IdentitiesOnly yes");
    if let Some(j) = &dest.proxy_jump {
        let _ = writeln!(c, "    ProxyJump {j}");
    }
    for f in &dest.user_known_hosts {
        let _ = writeln!(c, "    UserKnownHostsFile {}", f.display());
    }
    if let Some(i) = dest.server_alive_interval {
        let _ = writeln!(c, "    ServerAliveInterval {}", i.as_secs());
    }
    if let Some(n) = dest.server_alive_count_max {
        let _ = writeln!(c, "    ServerAliveCountMax {n}");
    }
    c
}

/// Run a short script; a non-zero exit is [`InstallError::Remote`].
async fn run(
    conn: &Connection,
    host: &str,
    step: &'static str,
    script: &str,
    args: &[&str],
    input: &[u8],
    deadline: Duration,
) -> Result<crate::mux::ssh::ExecOutput, InstallError> {
    let done = conn
        .exec_capture(&remote_command(script, args), input, OUTPUT_LIMIT, deadline)
        .await?;
    if done.success() {
        Ok(done)
    } else {
        Err(remote_failure(host, step, &done))
    }
}

fn remote_failure(
    host: &str,
    step: &'static str,
    done: &crate::mux::ssh::ExecOutput,
) -> InstallError {
    InstallError::Remote {
        host: host.to_string(),
        step,
        end: done.describe_end(),
        stderr: done.stderr_text(),
    }
}

/// Refuse a server this build cannot run on, before uploading anything.
fn check_platform(host: &str, probe: &Probe) -> Result<(), InstallError> {
    let local_os = if std::env::consts::OS == "linux" {
        "Linux"
    } else {
        std::env::consts::OS
    };
    let local = format!("{local_os} {}", std::env::consts::ARCH);
    let remote = format!("{} {}", probe.os, probe.arch);
    let same_os = probe.os.is_empty() || probe.os == local_os;
    if same_os && scripts::arch_compatible(std::env::consts::ARCH, &probe.arch) {
        Ok(())
    } else {
        Err(InstallError::Platform {
            host: host.to_string(),
            remote,
            local,
        })
    }
}

/// The first 12 hex digits, for messages.
fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// A temp-name suffix no other install picks: 8 random bytes in hex (the pid when the
/// kernel has no randomness to give).
fn random_suffix() -> String {
    let mut b = [0u8; 8];
    match rustix::rand::getrandom(&mut b[..], rustix::rand::GetRandomFlags::empty()) {
        Ok(8) => data_encoding::HEXLOWER.encode(&b),
        _ => format!("p{}", std::process::id()),
    }
}
