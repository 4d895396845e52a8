//! The single integration-test binary (Cargo.toml `[[test]] integration`, `autotests = false`):
//! one `mod` per test file, each with a one-line purpose.

// Fixtures: private sshd, stock distccd, C/C++ projects, process helpers.
mod support;
// Tests of the fixtures themselves (sshd login, config, host-key change, stock distcc over TCP).
mod fixture;
// End to end through the real sshd and gcc; stock distcc interop both ways; fallbacks.
mod e2e;
// Drop-in exactness over the real sshd: caret lines, clang -g, -flto -g, side files, JSON (issue 8).
mod fidelity;
// SSH client layer (mux::ssh) against the private sshd.
mod ssh;
// The mux against the real sshd: lane reuse, MaxSessions, auto-spawn, make hang, BUSY, idle exit.
mod mux;
// Local users against the compile slots: FIFOs, symlinks, held locks, squatted dirs.
mod slots;
// Faults mid-job: server killed, sshd restarted, connection cut or frozen through a proxy.
mod faults;
// Jobs stay remote through a blip: a cut or frozen link mid-upload resends on the same host.
mod blip;
// Server compilers SIGKILLed under make -j4 (whole group, or cc1 alone); hostile server output.
mod server_faults;
// Red team: a compile-only `restrict,command=` key against the real sshd (issue 7).
mod security;
// Drop-in exactness (issue 8): masquerade next to ccache, -o /dev/null, output = input.
mod dropin;
// Drop-in exactness: one table of invocations run as `CC …` and `hoardcc CC …` (issue 8).
mod conformance;
// Logging per mode (set up once in main.rs): distccd --log-file, serve's stderr.
mod logging;
// Real build tools: CMake + Ninja launcher, ccache with CCACHE_PREFIX, masquerade next to ccache.
mod tools;
// The right compiler, or none (issue 11): identity matching, mismatch blocks, serve --check.
mod identity;
// The server's result cache: a rebuild after make clean hits, identical; HOARDCC_CACHE=0 and cache = false miss.
mod cache;
// The chunk path (issue 10 item 1): identical objects, a rebuild sends little, Missing refills, corruption.
mod chunks;
// Delta packs (issue 10): a rebuild's edits go LZ4'd against the last sent chunks; an emptied store resends plain.
mod delta;
// The live monitor (`hoardcc mon` in tmux, `mon --once`) and `hoardcc stats` (issue 11).
mod mon;
// Setup commands: install-server into the fixture user's home (plain and --forced-command), masquerade DIR.
mod install;
// `hoardcc ping`: JSON report, exit status, --hosts-ok, deadlines (issue 11).
mod ping;
// `hoardcc doctor`: each failure's ✗ line and fix (issue 11).
mod doctor;
