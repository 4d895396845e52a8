//! The stock-distcc end of the interop tests: Debian's `/usr/bin/distccd` over TCP on a random
//! loopback port, so stock `distcc` (and hoardcc's TCP compatibility) has a real server to talk to.
//!
//! Neighbours: [`super::process`] runs the daemon; tests/fixture.rs proves it with stock `distcc`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use super::process::{free_port, read_from, Daemon, Started};

const DISTCCD: &str = "/usr/bin/distccd";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const PORT_ATTEMPTS: usize = 10;

/// A running stock `distccd --daemon --no-detach` on `127.0.0.1:port`. Drop kills it (and its
/// preforked children) and removes its directory.
pub struct Distccd {
    daemon: Option<Daemon>,
    port: u16,
    dir: TempDir,
}

impl Distccd {
    /// Starts distccd (`--allow 127.0.0.1 --jobs 4 --log-level info`) and waits for its
    /// "preforking daemon started" log line.
    ///
    /// # Panics
    /// Panics (with the log) if distccd cannot start.
    pub fn start() -> Distccd {
        Self::start_with_args(&[])
    }

    /// Like [`Distccd::start`], with extra distccd arguments appended.
    pub fn start_with_args(extra: &[&str]) -> Distccd {
        let dir = tempfile::Builder::new()
            .prefix("hoardcc-distccd-")
            .tempdir()
            .expect("create distccd fixture dir");
        let mut me = Distccd {
            daemon: None,
            port: 0,
            dir,
        };
        let log = me.log_path();
        for _ in 0..PORT_ATTEMPTS {
            me.port = free_port();
            let mut cmd = Command::new(DISTCCD);
            cmd.args(["--daemon", "--no-detach", "--listen", "127.0.0.1", "--port"])
                .arg(me.port.to_string())
                .args([
                    "--allow",
                    "127.0.0.1",
                    "--log-stderr",
                    "--log-level",
                    "info",
                ])
                .args(["--jobs", "4"]);
            if !whitelist_has_gcc() {
                // distccd 3.3+ only runs compilers that have a masquerade link in
                // /usr/lib/distcc (update-distcc-symlinks); without them, disable the check.
                cmd.arg("--enable-tcp-insecure");
            }
            cmd.args(extra);
            for (k, _) in std::env::vars_os() {
                if k.to_str().is_some_and(|k| k.starts_with("DISTCC_")) {
                    cmd.env_remove(k);
                }
            }
            cmd.env("HOME", me.dir.path()).current_dir(me.dir.path());
            match Daemon::start(
                cmd,
                &log,
                "preforking daemon started",
                START_TIMEOUT,
                "distccd",
            ) {
                Started::Ready(d) => {
                    me.daemon = Some(d);
                    return me;
                }
                Started::PortInUse => continue,
            }
        }
        panic!(
            "distccd: no free port after {PORT_ATTEMPTS} attempts; log:\n{}",
            me.log()
        );
    }

    /// The TCP port distccd listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, a DISTCC_HOSTS entry for this server.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Everything distccd logged so far (`--log-stderr --log-level info`).
    pub fn log(&self) -> String {
        read_from(&self.log_path(), 0)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("distccd.log")
    }
}

impl Drop for Distccd {
    fn drop(&mut self) {
        // Daemon's Drop kills the process group (main + preforked children).
        self.daemon.take();
    }
}

/// Whether distccd's compiler whitelist (`/usr/lib/distcc/*`) allows gcc, g++, cc and c++.
fn whitelist_has_gcc() -> bool {
    ["gcc", "g++", "cc", "c++"]
        .iter()
        .all(|c| Path::new("/usr/lib/distcc").join(c).exists())
}
