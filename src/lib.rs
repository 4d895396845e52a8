//! hoardcc: a distributed C/C++ compiler that makes SSH the fast path.
//!
//! ```text
//! cc -c foo.c ─► wrapper ─► args::classify ─► wrapper::preprocess (local cpp)
//!            ─► mux (host choice, hoarded russh connections, lanes)
//!            ─► sshd ─► `hoardcc serve` (subsystem) ─► compiler ─► outputs
//!            ◄─ wrapper::outputs (atomic rename, stderr replay, exit status)
//! ```
//!
//! Pure modules (no I/O): [`hosts`], [`args`], [`proto`], [`config`], [`paths`], [`exit`].
//! Stages with I/O: [`wrapper`] (client), [`mux`] (connections and scheduling),
//! [`subsystem`] (server).

pub mod args;
pub mod cli;
pub mod config;
pub mod exit;
pub mod hosts;
pub mod mux;
pub mod paths;
pub mod proto;
pub mod subsystem;
pub mod wrapper;
