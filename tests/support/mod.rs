//! Test fixtures for the integration binary: a private real OpenSSH sshd on a random loopback
//! port ([`Sshd`]), a stock TCP distccd ([`Distccd`]), small C/C++ projects ([`Project`]),
//! process helpers (timeouts, free ports, deadline polling) and a fault-injecting TCP proxy
//! ([`Proxy`]), and the attacker's side of the security tests ([`attack`]).
//!
//! Everything here is blocking std code; tokio tests call it directly (or from
//! `spawn_blocking`) and isolate a `tokio::process::Command` with
//! `sshd.apply_env(cmd.as_std_mut())`.

pub mod attack;
mod distccd;
mod process;
mod project;
mod proxy;
mod proxy_alias;
mod sshd;

pub use distccd::Distccd;
pub use process::{descendants, free_port, hoardcc_bin, processes, run_with_timeout, wait_until};
pub use project::Project;
pub use proxy::Proxy;
pub use sshd::{removed_env_keys, Sshd, SshdOptions, ALIAS, TEST_USER};
