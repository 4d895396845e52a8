//! Stage: lane, its route — [`Route`] says how an open lane reaches its server (the
//! `hoardcc` subsystem, an exec command, or a stock distccd over ssh or TCP), as
//! `Lane::open` and `Lane::on_connection` found it, for `hoardcc ping` and `doctor`.
//! Neighbours: `mux::lane` (sets it), `cli::ping` and `cli::doctor` (report it).

/// How a lane reaches its server (shown by `hoardcc ping` and `hoardcc doctor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The `hoardcc` sshd subsystem.
    Subsystem,
    /// `COMMAND serve` on an ssh exec channel (`@host:/path/to/hoardcc`).
    Exec {
        /// The command as the host entry names it.
        command: String,
    },
    /// A stock `distccd --inetd` on an ssh exec channel.
    DistccdSsh {
        /// The program run (`distccd` unless the host entry names one).
        command: String,
        /// True when `@host` named no command and sshd refused the `hoardcc` subsystem,
        /// so the lane fell back to `distccd`.
        subsystem_refused: bool,
    },
    /// A stock distccd over plain TCP.
    DistccdTcp,
}

impl Route {
    /// A short name: `subsystem`, `exec`, `distccd-ssh` or `distccd-tcp`.
    pub fn name(&self) -> &'static str {
        match self {
            Route::Subsystem => "subsystem",
            Route::Exec { .. } => "exec",
            Route::DistccdSsh { .. } => "distccd-ssh",
            Route::DistccdTcp => "distccd-tcp",
        }
    }
}
