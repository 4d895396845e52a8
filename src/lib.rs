//! hoardcc: a distributed C/C++ compiler that makes SSH the fast path.
//!
//! ```text
//! cc -c foo.c ─► wrapper ─► args::classify ─► wrapper::preprocess (local cpp)
//!            ─► mux (host choice, hoarded russh connections, lanes)
//!            ─► sshd ─► `hoardcc serve` (subsystem) ─► compiler ─► outputs
//!            ◄─ wrapper::outputs (atomic rename, stderr replay, exit status)
//! ```
//!
//! Architecture. `main` picks the mode from argv and hands over to one stage:
//! - [`wrapper`]: the client pipeline for one compile (classify, local cpp, ask the mux
//!   through [`wrapper::mux_client`], write outputs, replay diagnostics, exit status);
//! - [`mux`]: the per-user daemon that hoards SSH connections, schedules jobs on hosts
//!   and runs them on lanes (the only code that knows russh);
//! - [`subsystem`]: `hoardcc serve` on the build server (admit, compile, answer);
//! - [`cli`]: the small `hoardcc hosts`, `status` and `mux --stop` commands, the live
//!   `mon` and the `stats` counters (both from the mux's socket), the setup
//!   commands `install-server` ([`cli::install`]) and `masquerade` ([`cli::masquerade`]),
//!   and the host checks `ping` and `doctor` (which open lanes themselves, with
//!   [`mux::lane`], to test the very path a job takes).
//!
//! Pure modules (no I/O): [`hosts`], [`args`], [`proto`], [`config`], [`paths`], [`exit`].
//! [`identity`] is shared support with I/O: it runs a compiler to learn who it is, for the
//! mux (the client's compiler) and the server (its own).
//!
//! The rule: the wrapper reaches a server only through the mux. The one named exception
//! is [`wrapper::direct`], the degraded path (`HOARDCC_MUX=0`, or no mux can be reached
//! or started) that opens one lane itself.

pub mod args;
pub mod cli;
pub mod config;
pub mod exit;
pub mod hosts;
pub mod identity;
pub mod mux;
pub mod paths;
pub mod proto;
pub mod subsystem;
pub mod wrapper;

#[cfg(test)]
mod test_util;
