//! The ssh side of the [`Proxy`]: a `~/.ssh/config` alias (and `known_hosts` line) that
//! makes a host list entry reach the private sshd of [`super::sshd`] through the proxy.
//! Kept apart from `proxy.rs`, which depends on nothing else of the test support (the WAN
//! benchmark's examples/wanproxy.rs includes it).

use std::fmt::Write as _;
use std::io::Write;

use super::proxy::Proxy;
use super::sshd::Sshd;

/// The `Host` alias [`Proxy::alias_for`] adds to the client's `~/.ssh/config`.
pub const PROXY_ALIAS: &str = "hoardtest-proxy";

impl Proxy {
    /// Adds a `Host hoardtest-proxy` block to `sshd`'s client `~/.ssh/config` (same user,
    /// key and known_hosts as the `hoardtest` alias, port = this proxy) and trusts sshd's
    /// host key under `[127.0.0.1]:<proxy port>` in the client's `known_hosts` (the mux has
    /// no HostKeyAlias). Returns the alias, for a host list like `@hoardtest-proxy/4`.
    ///
    /// # Panics
    /// Panics if the files cannot be written.
    pub fn alias_for(&self, sshd: &Sshd) -> String {
        self.alias_with(sshd, &[])
    }

    /// [`Proxy::alias_for`] with `extra` lines (`Key value`) added to the alias's block,
    /// e.g. `ServerAliveInterval 2`.
    ///
    /// # Panics
    /// Panics if the files cannot be written.
    pub fn alias_with(&self, sshd: &Sshd, extra: &[&str]) -> String {
        let mut c = format!("\n{}", sshd.client_host_block(PROXY_ALIAS, self.port()));
        for line in extra {
            let _ = writeln!(c, "    {line}");
        }
        append(&sshd.ssh_config_path(), &c);
        let line = format!("[127.0.0.1]:{} {}\n", self.port(), sshd.host_public_key());
        append(&sshd.known_hosts_path(), &line);
        PROXY_ALIAS.to_string()
    }
}

fn append(path: &std::path::Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("append to {}: {e}", path.display()));
}
