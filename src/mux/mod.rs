//! Stage: connections. The only code that knows russh. In this issue the wrapper calls
//! [`transport`] in-process; the per-user mux daemon (pooled connections, lanes,
//! scheduler) serves the same boundary. Neighbours: `wrapper` (caller), `proto`
//! (what travels), `subsystem` (the other end).

pub mod daemon;
pub mod known_hosts;
pub mod pool;
pub mod scheduler;
pub mod ssh;
pub mod ssh_config;
pub mod status;
pub mod transport;
