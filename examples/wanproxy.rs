//! Bench support, not part of hoardcc: the WAN link of `bench/wan.sh`. One userspace
//! proxy per target (`host:port`) on a random loopback port, each adding a one-way delay,
//! a bandwidth cap per direction shared by all of its connections, and (with
//! `--connect-rtt`) one round trip charged per new TCP connection. The proxy is the test
//! support's (tests/support/proxy.rs, included here with `#[path]`), so the benchmark's
//! link and the tests' are one piece of code.
//!
//! ```text
//! wanproxy [--delay-ms 25] [--mbit 20] [--connect-rtt] TARGET...
//! ```
//! Prints the listening ports (one line, in target order), then answers each `stats` line
//! on stdin with `UP DOWN CONNECTIONS`: bytes delivered towards the targets, bytes
//! delivered back, and connections accepted, summed over the proxies since the start.
//! Exits on `quit` or at the end of stdin.

use std::io::{BufRead, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

#[path = "../tests/support/proxy.rs"]
#[allow(dead_code)]
mod proxy;

use proxy::Proxy;

struct Options {
    delay: Duration,
    bytes_per_sec: Option<u64>,
    connect_rtt: bool,
    targets: Vec<SocketAddr>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        delay: Duration::from_millis(25),
        bytes_per_sec: Some(20_000_000 / 8),
        connect_rtt: false,
        targets: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a number"))
        };
        match a.as_str() {
            "--delay-ms" => o.delay = Duration::from_millis(value("--delay-ms")?),
            // 0 = no cap.
            "--mbit" => o.bytes_per_sec = Some(value("--mbit")? * 1_000_000 / 8).filter(|b| *b > 0),
            "--connect-rtt" => o.connect_rtt = true,
            t => {
                let addr = t
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| format!("not a host:port: {t}"))?;
                o.targets.push(addr);
            }
        }
    }
    if o.targets.is_empty() {
        return Err("no target".into());
    }
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let o = match parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("wanproxy: {e}\nusage: wanproxy [--delay-ms N] [--mbit N] [--connect-rtt] HOST:PORT...");
            return ExitCode::from(2);
        }
    };
    let proxies: Vec<Proxy> = o
        .targets
        .iter()
        .map(|t| {
            let p = Proxy::start(*t);
            p.set_delay(o.delay);
            p.set_link_bandwidth(o.bytes_per_sec);
            if o.connect_rtt {
                p.set_connect_delay(o.delay * 2);
            }
            p
        })
        .collect();
    let ports: Vec<String> = proxies.iter().map(|p| p.port().to_string()).collect();
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{}", ports.join(" "))
        .and_then(|()| out.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        match line.trim() {
            "stats" => {
                let up: u64 = proxies.iter().map(Proxy::bytes_up).sum();
                let down: u64 = proxies.iter().map(Proxy::bytes_down).sum();
                let conns: usize = proxies.iter().map(Proxy::connections_accepted).sum();
                if writeln!(out, "{up} {down} {conns}")
                    .and_then(|()| out.flush())
                    .is_err()
                {
                    break;
                }
            }
            "quit" => break,
            "" => {}
            other => eprintln!("wanproxy: unknown command {other:?}"),
        }
    }
    drop(proxies);
    ExitCode::SUCCESS
}
