//! Faults in the middle of jobs through the mux: the server killed, sshd restarted, the
//! connection cut or frozen by the proxy of [`crate::support::Proxy`]. Builds complete and
//! objects are correct.
