//! The mux (`hoardcc mux`) against the private real sshd: lane reuse, `MaxSessions`,
//! concurrent auto-spawn, the make hang, BUSY, idle exit and heartbeats.
