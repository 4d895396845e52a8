//! The SSH end of the test pipeline: a private, real OpenSSH `sshd` on a random loopback port,
//! whose `hoardcc` subsystem is a copy of the binary under test, plus an isolated client HOME
//! (keys, `known_hosts`, `~/.ssh/config` alias `hoardtest`) for `hoardcc`, `ssh` and stock
//! `distcc` to connect with.
//!
//! Neighbours: [`super::process`] starts and stops the daemon; test modules (tests/e2e.rs and
//! others) run the wrapper/mux against it with [`Sshd::apply_env`].
//!
//! As root the login user is the system user `hoardtest` (shell `/bin/sh`, created on demand);
//! otherwise it is the current user.

use std::fmt::Write as _;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use tempfile::TempDir;

use super::process::{
    descendants, free_port, hoardcc_bin, read_from, run_with_timeout, Daemon, Started,
};

/// The `Host` alias written to the client's `~/.ssh/config`.
pub const ALIAS: &str = "hoardtest";

/// The `Host` alias that logs in with the compile-only key: `restrict,command="<serve>"` in
/// `authorized_keys`, the way `contrib/authorized_keys.example` installs a build key.
pub const FORCED_ALIAS: &str = "hoardtest-forced";

/// Name of the system user that logs in when the tests run as root.
pub const TEST_USER: &str = "hoardtest";

const SSHD: &str = "/usr/sbin/sshd";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const CMD_TIMEOUT: Duration = Duration::from_secs(30);
const PORT_ATTEMPTS: usize = 10;

/// Knobs for [`Sshd::start`].
#[derive(Debug, Clone)]
pub struct SshdOptions {
    /// Write `Subsystem hoardcc <bin_dir>/hoardcc serve` (default true).
    pub subsystem: bool,
    /// `MaxSessions N` (sshd's default, 10, when `None`).
    pub max_sessions: Option<u32>,
    /// Extra `sshd_config` lines, appended verbatim.
    pub extra: Vec<String>,
    /// Text of the server's `server.toml` (passed as `HOARDCC_SERVER_CONFIG`); `None` writes
    /// none, so the server uses its defaults.
    pub server_toml: Option<String>,
    /// Extra `KEY=VALUE` variables for `hoardcc serve`, set on the `Subsystem` line through
    /// `env` (e.g. a `PATH` with a slow `gcc` in front).
    pub server_env: Vec<(String, String)>,
    /// Run sshd (and so every `hoardcc serve`) in a private mount namespace with its own
    /// empty tmpfs on `/tmp` and `/run` (the fixture's files then live under `/var/tmp`), so
    /// a test may squat the server's default directories without touching the host's.
    /// The test reaches that `/tmp` through [`Sshd::server_path`].
    pub private_tmp: bool,
    /// `RLIMIT_AS` for sshd and everything it starts (a safety net for tests whose attack,
    /// on an unfixed server, would eat the machine's memory).
    pub address_space_limit: Option<u64>,
    /// A second `AuthorizedKeysFile` after the fixture's own (e.g. one that a test's
    /// server HOME holds, to check what `hoardcc install-server --forced-command` adds).
    pub extra_authorized_keys: Option<PathBuf>,
}

impl Default for SshdOptions {
    fn default() -> Self {
        SshdOptions {
            subsystem: true,
            max_sessions: None,
            extra: Vec::new(),
            server_toml: None,
            server_env: Vec::new(),
            private_tmp: false,
            address_space_limit: None,
            extra_authorized_keys: None,
        }
    }
}

/// A running private sshd plus the client-side files that reach it. Drop stops it and removes
/// its directories.
pub struct Sshd {
    daemon: Option<Daemon>,
    port: u16,
    login_user: String,
    opts: SshdOptions,
    client_home: PathBuf,
    bin_dir: PathBuf,
    /// Session processes of listeners stopped by [`Sshd::kill`]; killed on drop.
    orphans: Vec<i32>,
    // Layout under `root` (0755 so the login user can reach bin/ and server/):
    //   bin/hoardcc, bin/distccd -> hoardcc
    //   server/{sshd_config, ssh_host_ed25519_key[.pub], authorized_keys, sshd.pid, sshd.log}
    //   client/home/.ssh/{id_ed25519[.pub], known_hosts, config}, client/run (0700), client/config
    root: TempDir,
}

impl Sshd {
    /// Generates keys, writes the configs, starts sshd on a free loopback port and waits until
    /// `ssh -F <config> hoardtest true` succeeds.
    ///
    /// # Panics
    /// Panics (with sshd's log) if sshd cannot be started or the login does not work.
    pub fn start(opts: SshdOptions) -> Sshd {
        let login_user = login_user();
        let mut builder = tempfile::Builder::new();
        builder.prefix("hoardcc-sshd-");
        let root = if opts.private_tmp {
            builder.tempdir_in("/var/tmp")
        } else {
            builder.tempdir()
        }
        .expect("create sshd fixture dir");
        chmod(root.path(), 0o755);
        let mut sshd = Sshd {
            daemon: None,
            port: 0,
            login_user,
            opts,
            client_home: root.path().join("client/home"),
            bin_dir: root.path().join("bin"),
            orphans: Vec::new(),
            root,
        };
        sshd.prepare_dirs();
        sshd.launch_on_new_port();
        sshd.write_client_config();
        sshd.write_known_hosts();
        sshd.check_login();
        sshd
    }

    /// The loopback port sshd listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `Host` alias of this server in the client's `~/.ssh/config` (`"hoardtest"`).
    pub fn alias(&self) -> &str {
        ALIAS
    }

    /// The user the client logs in as (`hoardtest` as root, else the current user).
    pub fn login_user(&self) -> &str {
        &self.login_user
    }

    /// The client's HOME: `.ssh/{id_ed25519, known_hosts, config}` live here.
    pub fn client_home(&self) -> &Path {
        &self.client_home
    }

    /// Directory holding the copied `hoardcc` and the `distccd` symlink to it.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The copied `hoardcc` binary that sshd's subsystem runs.
    pub fn server_hoardcc(&self) -> PathBuf {
        self.bin_dir().join("hoardcc")
    }

    /// `<bin_dir>/distccd`, a symlink to the copied `hoardcc` (for `DISTCC_HOSTS=@hoardtest:<this>`).
    pub fn server_distccd(&self) -> PathBuf {
        self.bin_dir().join("distccd")
    }

    /// The client's `~/.ssh/config`.
    pub fn ssh_config_path(&self) -> PathBuf {
        self.client_home().join(".ssh/config")
    }

    /// The client's `~/.ssh/known_hosts`.
    pub fn known_hosts_path(&self) -> PathBuf {
        self.client_home().join(".ssh/known_hosts")
    }

    /// The client's private key `~/.ssh/id_ed25519` (authorised on the server).
    pub fn client_key_path(&self) -> PathBuf {
        self.client_home().join(".ssh/id_ed25519")
    }

    /// The compile-only key `~/.ssh/id_forced`: authorised as
    /// `restrict,command="<serve_command>"`, whatever the client asks to run.
    pub fn forced_key_path(&self) -> PathBuf {
        self.client_home().join(".ssh/id_forced")
    }

    /// A `Command` for `ssh -T -F <config> hoardtest-forced <remote...>` with
    /// [`Sshd::apply_env`] applied: whatever `remote` says, sshd runs the forced `serve`.
    pub fn forced_ssh(&self, remote: &[&str]) -> Command {
        let argv = self.ssh_command();
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .arg("-T")
            .arg(FORCED_ALIAS)
            .args(remote);
        self.apply_env(&mut cmd);
        cmd
    }

    /// The login user's home directory on the server (from the password database).
    pub fn login_home(&self) -> PathBuf {
        nix::unistd::User::from_name(&self.login_user)
            .ok()
            .flatten()
            .map(|u| u.dir)
            .expect("login user has a passwd entry")
    }

    /// Process id of the listening sshd (inside its namespace when `private_tmp`).
    pub fn sshd_pid(&self) -> Option<i32> {
        self.daemon.as_ref().map(|d| d.pid().as_raw())
    }

    /// `path` as the server's processes see it: through `/proc/<sshd>/root` when sshd runs
    /// in a private mount namespace (`private_tmp`), else `path` itself.
    pub fn server_path(&self, path: &Path) -> PathBuf {
        match (self.opts.private_tmp, self.sshd_pid()) {
            (true, Some(pid)) => {
                Path::new(&format!("/proc/{pid}/root")).join(path.strip_prefix("/").unwrap_or(path))
            }
            _ => path.to_path_buf(),
        }
    }

    /// The `sshd_config` sshd was started with.
    pub fn config_path(&self) -> PathBuf {
        self.server_dir().join("sshd_config")
    }

    /// The text of the written `sshd_config`.
    pub fn config_text(&self) -> String {
        std::fs::read_to_string(self.config_path()).expect("read sshd_config")
    }

    /// The client's XDG_RUNTIME_DIR (0700), set by [`Sshd::apply_env`].
    pub fn runtime_dir(&self) -> PathBuf {
        self.root.path().join("client/run")
    }

    /// The client's XDG_CONFIG_HOME, set by [`Sshd::apply_env`].
    pub fn config_home(&self) -> PathBuf {
        self.root.path().join("client/config")
    }

    /// `["ssh", "-F", "<home>/.ssh/config"]`: OpenSSH's ssh ignores $HOME, so point it at the
    /// fixture's config explicitly.
    pub fn ssh_command(&self) -> Vec<String> {
        vec![
            "ssh".to_string(),
            "-F".to_string(),
            self.ssh_config_path().display().to_string(),
        ]
    }

    /// `"ssh -F <home>/.ssh/config"` for `DISTCC_SSH` (distcc splits it on spaces; the fixture
    /// path has none).
    pub fn distcc_ssh(&self) -> String {
        self.ssh_command().join(" ")
    }

    /// Variables [`Sshd::apply_env`] sets: HOME, XDG_RUNTIME_DIR, XDG_CONFIG_HOME.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("HOME".into(), self.client_home().display().to_string()),
            (
                "XDG_RUNTIME_DIR".into(),
                self.runtime_dir().display().to_string(),
            ),
            (
                "XDG_CONFIG_HOME".into(),
                self.config_home().display().to_string(),
            ),
        ]
    }

    /// Isolates `cmd` for this fixture: sets [`Sshd::env`], removes SSH_AUTH_SOCK, every
    /// `DISTCC_*` and `HOARDCC_*` variable, and XDG_CACHE_HOME/XDG_STATE_HOME/XDG_DATA_HOME (so
    /// they default under the fixture HOME). For `tokio::process::Command` pass `as_std_mut()`.
    pub fn apply_env(&self, cmd: &mut Command) {
        for key in removed_env_keys() {
            cmd.env_remove(key);
        }
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
    }

    /// A `Command` for `ssh -F <config> hoardtest <remote...>` with [`Sshd::apply_env`] applied.
    pub fn ssh(&self, remote: &[&str]) -> Command {
        let argv = self.ssh_command();
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).arg(ALIAS).args(remote);
        self.apply_env(&mut cmd);
        cmd
    }

    /// The server's private compile-slot directory (`HOARDCC_SLOT_DIR` of every `serve`), so
    /// fixtures do not share the default slot directory with each other.
    pub fn slot_dir(&self) -> PathBuf {
        self.server_dir().join("slots")
    }

    /// The command the `Subsystem` line runs: `/usr/bin/env HOARDCC_SLOT_DIR=… [HOARDCC_SERVER_CONFIG=…]
    /// [server_env…] <bin>/hoardcc serve`. Usable as an exec command too. With
    /// `server_env` holding `HOARDCC_SLOT_DIR=` (empty), the variable is left out, so the
    /// server uses its default slot directory.
    pub fn serve_command(&self) -> String {
        let default_slots = self
            .opts
            .server_env
            .iter()
            .any(|(k, v)| k == "HOARDCC_SLOT_DIR" && v.is_empty());
        let mut cmd = "/usr/bin/env".to_string();
        if !default_slots {
            let _ = write!(cmd, " HOARDCC_SLOT_DIR={}", self.slot_dir().display());
        }
        if self.opts.server_toml.is_some() {
            let _ = write!(
                cmd,
                " HOARDCC_SERVER_CONFIG={}",
                self.server_dir().join("server.toml").display()
            );
        }
        for (k, v) in &self.opts.server_env {
            if k == "HOARDCC_SLOT_DIR" && v.is_empty() {
                continue;
            }
            let _ = write!(cmd, " {k}={v}");
        }
        let _ = write!(cmd, " {} serve", self.server_hoardcc().display());
        cmd
    }

    /// SIGKILLs the listening sshd only; sessions already open keep their own processes
    /// (they are killed when the fixture is dropped).
    pub fn kill(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            // sshd's per-connection processes call setsid(), so they leave the listener's
            // process group: remember them as its descendants before it goes.
            self.orphans.extend(session_processes(d.pid().as_raw()));
            d.kill_main();
            // Forget it without killing its process group: open sessions must survive.
            std::mem::forget(d);
        }
    }

    /// SIGKILLs every open ssh connection's sshd processes (the listener stays up): the
    /// clients see their connections drop, as when a server reboots or a NAT forgets them.
    /// Returns how many processes were killed.
    pub fn drop_connections(&mut self) -> usize {
        let mut pids: Vec<i32> = std::mem::take(&mut self.orphans);
        if let Some(d) = &self.daemon {
            pids.extend(session_processes(d.pid().as_raw()));
        }
        for pid in &pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        pids.len()
    }

    /// Kills the listener (if running) and starts sshd again on the same port with the same keys.
    ///
    /// # Panics
    /// Panics if the port stays taken or sshd does not come up.
    pub fn restart(&mut self) {
        self.kill();
        self.write_sshd_config();
        let log = self.log_path();
        let mut last = String::new();
        for _ in 0..50 {
            match Daemon::start(
                self.sshd_command(),
                &log,
                &self.ready_line(),
                START_TIMEOUT,
                "sshd restart",
            ) {
                Started::Ready(d) => {
                    self.daemon = Some(d);
                    return;
                }
                Started::PortInUse => {
                    last = self.log();
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        panic!(
            "sshd restart: port {} stayed in use; log:\n{last}",
            self.port
        );
    }

    /// Everything sshd wrote to stderr (`-e`, LogLevel VERBOSE) across all starts.
    pub fn log(&self) -> String {
        read_from(&self.log_path(), 0)
    }

    /// The host key's public line, `ssh-ed25519 AAAA...` (without comment).
    pub fn host_public_key(&self) -> String {
        let text = std::fs::read_to_string(self.host_key_path().with_extension("pub"))
            .expect("read host key .pub");
        text.split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The host key's SHA256 fingerprint as `ssh-keygen -l` prints it, e.g. `SHA256:abc...`.
    pub fn host_key_fingerprint(&self) -> String {
        let out = run_with_timeout(
            Command::new("ssh-keygen")
                .args(["-l", "-E", "sha256", "-f"])
                .arg(self.host_key_path().with_extension("pub")),
            CMD_TIMEOUT,
            "ssh-keygen -l",
        );
        assert!(out.status.success(), "ssh-keygen -l failed: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("unexpected ssh-keygen -l output: {text}"))
            .to_string()
    }

    /// Generates a new host key and restarts sshd with it; `known_hosts` keeps the old key, so
    /// strict clients must now refuse the server.
    pub fn replace_host_key(&mut self) {
        self.kill();
        let key = self.host_key_path();
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(key.with_extension("pub"));
        keygen(&key);
        self.restart();
    }

    /// Rewrites the client's `known_hosts` to trust the server's current host key.
    pub fn write_known_hosts(&self) {
        let line = format!("[127.0.0.1]:{} {}\n", self.port, self.host_public_key());
        write_file(&self.known_hosts_path(), &line, 0o600);
    }

    fn server_dir(&self) -> PathBuf {
        self.root.path().join("server")
    }

    fn host_key_path(&self) -> PathBuf {
        self.server_dir().join("ssh_host_ed25519_key")
    }

    fn log_path(&self) -> PathBuf {
        self.server_dir().join("sshd.log")
    }

    fn ready_line(&self) -> String {
        format!("Server listening on 127.0.0.1 port {}.", self.port)
    }

    fn prepare_dirs(&self) {
        let r = self.root.path();
        for (dir, mode) in [
            ("bin", 0o755),
            ("server", 0o755),
            ("client", 0o755),
            ("client/home", 0o755),
            ("client/home/.ssh", 0o700),
            ("client/run", 0o700),
            ("client/config", 0o755),
        ] {
            let p = r.join(dir);
            std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
            chmod(&p, mode);
        }
        // The checkout may be unreadable for the login user (e.g. under /root): copy the binary.
        let bin = self.server_hoardcc();
        std::fs::copy(hoardcc_bin(), &bin).unwrap_or_else(|e| {
            panic!("copy {} to {}: {e}", hoardcc_bin().display(), bin.display())
        });
        chmod(&bin, 0o755);
        symlink("hoardcc", self.server_distccd()).expect("symlink distccd -> hoardcc");

        keygen(&self.host_key_path());
        keygen(&self.client_key_path());
        keygen(&self.forced_key_path());
        let client_pub = std::fs::read_to_string(self.client_key_path().with_extension("pub"))
            .expect("read client .pub");
        let forced_pub = std::fs::read_to_string(self.forced_key_path().with_extension("pub"))
            .expect("read forced .pub");
        // The compile-only key: sshd runs `serve` whatever the client asks for.
        let keys = format!(
            "{}\nrestrict,command=\"{}\" {}",
            client_pub.trim_end(),
            self.serve_command(),
            forced_pub
        );
        write_file(&self.server_dir().join("authorized_keys"), &keys, 0o644);
        // The login user (another uid when running as root) creates its slot files here.
        std::fs::create_dir_all(self.slot_dir()).expect("mkdir slots");
        chmod(&self.slot_dir(), 0o1777);
        if let Some(text) = &self.opts.server_toml {
            write_file(&self.server_dir().join("server.toml"), text, 0o644);
        }
        if nix::unistd::geteuid().is_root() {
            // Privilege separation directory, required by sshd when started as root.
            std::fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");
        }
    }

    fn sshd_command(&self) -> Command {
        let mut cmd = if self.opts.private_tmp {
            // A private mount namespace with empty /tmp and /run (sshd needs /run/sshd).
            let mut c = Command::new("unshare");
            c.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
                .arg(
                    "mount -t tmpfs -o mode=1777 tmpfs /tmp && \
                     mount -t tmpfs -o mode=755 tmpfs /run && mkdir -p /run/sshd && \
                     exec \"$@\"",
                )
                .arg("sh")
                .arg(SSHD);
            c
        } else {
            Command::new(SSHD)
        };
        cmd.arg("-D").arg("-e").arg("-f").arg(self.config_path());
        if let Some(limit) = self.opts.address_space_limit {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = nix::libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if nix::libc::setrlimit(nix::libc::RLIMIT_AS, &lim) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        cmd
    }

    fn write_sshd_config(&self) {
        let s = self.server_dir();
        let mut c = String::new();
        let mut line = |l: String| {
            c.push_str(&l);
            c.push('\n');
        };
        line(format!("Port {}", self.port));
        line("ListenAddress 127.0.0.1".into());
        line(format!("HostKey {}", self.host_key_path().display()));
        line(format!("PidFile {}", s.join("sshd.pid").display()));
        let extra_keys = self
            .opts
            .extra_authorized_keys
            .as_ref()
            .map(|p| format!(" {}", p.display()))
            .unwrap_or_default();
        line(format!(
            "AuthorizedKeysFile {}{extra_keys}",
            s.join("authorized_keys").display()
        ));
        line("UsePAM no".into());
        line("StrictModes no".into());
        line("PubkeyAuthentication yes".into());
        line("PasswordAuthentication no".into());
        line("KbdInteractiveAuthentication no".into());
        line("PermitRootLogin prohibit-password".into());
        line("PrintMotd no".into());
        line("LogLevel VERBOSE".into());
        if let Some(n) = self.opts.max_sessions {
            line(format!("MaxSessions {n}"));
        }
        if self.opts.subsystem {
            line(format!("Subsystem hoardcc {}", self.serve_command()));
        }
        if sshd_has_per_source_penalties() {
            // OpenSSH ≥ 9.8 would otherwise block 127.0.0.1 after tests that fail logins.
            line("PerSourcePenalties no".into());
        }
        for extra in &self.opts.extra {
            line(extra.clone());
        }
        write_file(&self.config_path(), &c, 0o644);
    }

    fn launch_on_new_port(&mut self) {
        let log = self.log_path();
        for _ in 0..PORT_ATTEMPTS {
            self.port = free_port();
            self.write_sshd_config();
            match Daemon::start(
                self.sshd_command(),
                &log,
                &self.ready_line(),
                START_TIMEOUT,
                "sshd",
            ) {
                Started::Ready(d) => {
                    self.daemon = Some(d);
                    return;
                }
                Started::PortInUse => continue,
            }
        }
        panic!(
            "sshd: no free port after {PORT_ATTEMPTS} attempts; log:\n{}",
            self.log()
        );
    }

    fn write_client_config(&self) {
        let mut c = self.client_host_block(ALIAS, self.port);
        c.push_str(&self.client_host_block(FORCED_ALIAS, self.port).replace(
            &format!("{}/.ssh/id_ed25519", self.client_home().display()),
            &self.forced_key_path().display().to_string(),
        ));
        write_file(&self.ssh_config_path(), &c, 0o600);
    }

    /// An `~/.ssh/config` block `Host <alias>` reaching this sshd's login user with the
    /// fixture's key and known_hosts on 127.0.0.1:`port` (sshd's own port, or a proxy's).
    pub fn client_host_block(&self, alias: &str, port: u16) -> String {
        let home = self.client_home();
        let mut c = String::new();
        let _ = writeln!(c, "Host {alias}");
        let _ = writeln!(c, "    HostName 127.0.0.1");
        let _ = writeln!(c, "    Port {port}");
        let _ = writeln!(c, "    User {}", self.login_user);
        let _ = writeln!(c, "    IdentityFile {}/.ssh/id_ed25519", home.display());
        let _ = writeln!(
            c,
            "    UserKnownHostsFile {}/.ssh/known_hosts",
            home.display()
        );
        let _ = writeln!(c, "    GlobalKnownHostsFile /dev/null");
        let _ = writeln!(c, "    StrictHostKeyChecking yes");
        let _ = writeln!(c, "    BatchMode yes");
        let _ = writeln!(c, "    IdentitiesOnly yes");
        let _ = writeln!(c, "    UpdateHostKeys no");
        let _ = writeln!(c, "    ConnectTimeout 10");
        c
    }

    fn check_login(&self) {
        let out = run_with_timeout(&mut self.ssh(&["true"]), CMD_TIMEOUT, "ssh hoardtest true");
        if !out.status.success() {
            panic!(
                "fixture login `ssh hoardtest true` failed ({}):\n{}\nsshd log:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // Daemon's Drop kills the process group; TempDir's Drop removes the directories.
        self.daemon.take();
        self.drop_connections();
    }
}

/// The sshd processes below listener `pid` (one monitor and one session process per
/// connection). Matching on the name leaves the users' own commands to notice the end of
/// their channels.
fn session_processes(pid: i32) -> Vec<i32> {
    descendants(pid, |p| p.comm == "sshd")
}

/// Environment variables [`Sshd::apply_env`] removes: SSH_AUTH_SOCK, XDG_CACHE_HOME,
/// XDG_STATE_HOME, XDG_DATA_HOME and every `DISTCC_*` / `HOARDCC_*` set in this process.
pub fn removed_env_keys() -> Vec<String> {
    let mut keys: Vec<String> = [
        "SSH_AUTH_SOCK",
        "XDG_CACHE_HOME",
        "XDG_STATE_HOME",
        "XDG_DATA_HOME",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    keys.extend(
        std::env::vars_os()
            .filter_map(|(k, _)| k.into_string().ok())
            .filter(|k| k.starts_with("DISTCC_") || k.starts_with("HOARDCC_")),
    );
    keys
}

/// The user sshd logs the client in as; as root, ensures `hoardtest` exists first.
fn login_user() -> String {
    static USER: OnceLock<String> = OnceLock::new();
    USER.get_or_init(|| {
        if nix::unistd::geteuid().is_root() {
            ensure_test_user();
            TEST_USER.to_string()
        } else {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.name)
                .expect("current user has a passwd entry")
        }
    })
    .clone()
}

fn user_exists(name: &str) -> bool {
    matches!(nix::unistd::User::from_name(name), Ok(Some(_)))
}

/// Creates the `hoardtest` user (shell /bin/sh, password field `*`) unless it exists, and
/// unlocks it if its password field starts with `!` (useradd's default): with `UsePAM no`,
/// sshd refuses locked accounts even for public-key logins. Tolerates another process doing
/// the same at the same time (useradd/usermod then fail on the lock file or the duplicate).
fn ensure_test_user() {
    let mut last = None;
    for _ in 0..20 {
        if user_exists(TEST_USER) && !test_user_locked() {
            return;
        }
        let mut cmd = if user_exists(TEST_USER) {
            let mut c = Command::new("usermod");
            c.args(["--password", "*", TEST_USER]);
            c
        } else {
            let mut c = Command::new("useradd");
            c.args([
                "--create-home",
                "--shell",
                "/bin/sh",
                "--password",
                "*",
                TEST_USER,
            ]);
            c
        };
        let out = run_with_timeout(&mut cmd, CMD_TIMEOUT, "useradd/usermod hoardtest");
        if !out.status.success() {
            last = Some(out);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    panic!("could not create an unlocked user {TEST_USER}: {last:?}");
}

/// Whether `/etc/shadow` marks `hoardtest` as locked (password field starting with `!`).
fn test_user_locked() -> bool {
    let shadow = std::fs::read_to_string("/etc/shadow").unwrap_or_default();
    shadow
        .lines()
        .filter_map(|l| l.split_once(':'))
        .any(|(name, rest)| name == TEST_USER && rest.starts_with('!'))
}

/// Whether this sshd accepts `PerSourcePenalties` (OpenSSH 9.8 and later).
fn sshd_has_per_source_penalties() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        // `sshd -V` prints e.g. "OpenSSH_9.2p1 Debian-2, OpenSSL ..." on stderr.
        let out = run_with_timeout(Command::new(SSHD).arg("-V"), CMD_TIMEOUT, "sshd -V");
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        parse_openssh_version(&text).is_some_and(|v| v >= (9, 8))
    })
}

/// `(major, minor)` from text containing `OpenSSH_9.2...`.
pub(crate) fn parse_openssh_version(text: &str) -> Option<(u32, u32)> {
    let rest = &text[text.find("OpenSSH_")? + "OpenSSH_".len()..];
    let mut nums = rest.split(|c: char| !c.is_ascii_digit());
    let major = nums.next()?.parse().ok()?;
    let minor = nums.next()?.parse().ok()?;
    Some((major, minor))
}

fn keygen(path: &Path) {
    let out = run_with_timeout(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "hoardcc-test", "-f"])
            .arg(path),
        CMD_TIMEOUT,
        "ssh-keygen",
    );
    assert!(
        out.status.success(),
        "ssh-keygen -f {} failed: {out:?}",
        path.display()
    );
    chmod(path, 0o600);
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {:o} {}: {e}", mode, path.display()));
}

fn write_file(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    chmod(path, mode);
}
