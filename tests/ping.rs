//! `hoardcc ping` against the private real sshd: a good host on the subsystem and on the
//! exec route next to a dead port (the JSON report parsed and asserted, the exit status,
//! `--hosts-ok`), named hosts replacing the list, the deadline holding for a server that
//! accepts TCP and never speaks, and this machine's compilers matched (or not) on the server.
//!
//! Neighbours: tests/support (the sshd fixture); src/cli/ping.rs.

use std::io::Write as _;
use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{free_port, hoardcc_bin, run_with_timeout, Sshd, SshdOptions};

/// Upper bound for one `hoardcc ping` run.
const T: Duration = Duration::from_secs(60);

fn ping(sshd: &Sshd, hosts: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(hoardcc_bin());
    sshd.apply_env(&mut cmd);
    cmd.env("HOARDCC_HOSTS", hosts).arg("ping").args(args);
    let out = run_with_timeout(&mut cmd, T, "hoardcc ping");
    // Shown when a test fails (and with --nocapture).
    eprintln!(
        "$ hoardcc ping {args:?} ({})\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

#[test]
fn good_hosts_and_a_dead_port() {
    let sshd = Sshd::start(SshdOptions::default());
    let dead = free_port();
    let exec = format!("@{}:{}", sshd.alias(), sshd.server_hoardcc().display());
    let hosts = format!("@{} {exec} 127.0.0.1:{dead}", sshd.alias());

    let out = ping(&sshd, &hosts, &["--json", "--timeout", "10"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a dead host fails the ping: {out:?}"
    );
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("ping --json is JSON ({e}): {}", text(&out.stdout)));
    assert_eq!(doc["timeout_secs"], 10.0);
    assert_eq!(
        (doc["checked"].as_u64(), doc["usable"].as_u64()),
        (Some(3), Some(2))
    );
    let hosts = doc["hosts"].as_array().expect("hosts array");
    assert_eq!(hosts.len(), 3, "{doc}");

    let sub = &hosts[0];
    assert_eq!(sub["entry"], format!("@{}", sshd.alias()));
    assert_eq!(sub["usable"], true, "{sub}");
    assert_eq!(sub["reachable"], true);
    assert_eq!(sub["route"], "subsystem");
    let agent = sub["server"].as_str().expect("server agent");
    assert!(
        agent.starts_with(&format!("hoardcc {} on ", env!("CARGO_PKG_VERSION"))),
        "{agent}"
    );
    assert!(sub["protocol"].as_u64().unwrap() >= 2, "{sub}");
    assert!(sub["slots"].as_u64().unwrap() >= 1, "{sub}");
    assert_eq!(sub["load"], 0, "{sub}");
    let rtt = sub["rtt_ms"].as_f64().expect("a round trip on the lane");
    assert!(rtt > 0.0 && rtt < 10_000.0, "{sub}");
    assert!(sub["connect_ms"].as_f64().unwrap() >= rtt, "{sub}");
    assert_eq!(sub["error"], Value::Null);

    let ex = &hosts[1];
    assert_eq!(ex["usable"], true, "{ex}");
    assert_eq!(ex["route"], "exec");
    assert_eq!(ex["command"], sshd.server_hoardcc().display().to_string());
    assert!(ex["rtt_ms"].as_f64().is_some(), "{ex}");

    let gone = &hosts[2];
    assert_eq!(gone["host"], format!("127.0.0.1:{dead}"));
    assert_eq!(gone["usable"], false);
    assert_eq!(gone["reachable"], false);
    assert_eq!(gone["route"], Value::Null);
    let err = gone["error"].as_str().expect("why");
    assert!(
        err.contains("cannot connect") && err.contains("refused"),
        "{err}"
    );

    // Only the usable entries, as written, ready for HOARDCC_HOSTS.
    let all = format!("@{} {exec} 127.0.0.1:{dead}", sshd.alias());
    let out = ping(&sshd, &all, &["--hosts-ok"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(text(&out.stdout), format!("@{} {exec}\n", sshd.alias()));

    // Text: one line per host, in list order.
    let out = ping(&sshd, &all, &[]);
    let lines: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[0].contains(" ok ") && lines[0].contains("subsystem"),
        "{lines:?}"
    );
    assert!(
        lines[0].contains("slots ") && lines[0].contains("rtt "),
        "{lines:?}"
    );
    assert!(lines[2].contains("UNREACHABLE"), "{lines:?}");
}

#[test]
fn named_hosts_replace_the_list() {
    let sshd = Sshd::start(SshdOptions::default());
    let dead = free_port();
    // The list has a dead host; naming only the good one pings only that.
    let listed = format!("127.0.0.1:{dead}");
    let named = format!("@{}", sshd.alias());
    let out = ping(&sshd, &listed, &[&named]);
    assert!(out.status.success(), "{out:?}");
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.starts_with(&named) && stdout.contains(" ok "),
        "{stdout}"
    );
    // Bad host-list syntax is the distcc "bad host spec" status.
    let out = ping(&sshd, &listed, &["@host,cpp"]);
    assert_eq!(out.status.code(), Some(106), "{out:?}");
    assert!(text(&out.stderr).contains("pump mode"), "{out:?}");
}

#[test]
fn silent_hosts_end_at_the_deadline_together() {
    let sshd = Sshd::start(SshdOptions::default());
    // Two ssh aliases whose "server" accepts TCP and never sends a banner.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    let hold = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().take(2) {
            held.push(s);
        }
        std::thread::sleep(Duration::from_secs(8));
    });
    let mut config = std::fs::OpenOptions::new()
        .append(true)
        .open(sshd.ssh_config_path())
        .expect("open ssh config");
    for alias in ["silent1", "silent2"] {
        write!(config, "{}", sshd.client_host_block(alias, port)).unwrap();
    }
    drop(config);
    let start = Instant::now();
    let out = ping(
        &sshd,
        &format!("@silent1 @silent2 @{}", sshd.alias()),
        &["--json", "--timeout", "2"],
    );
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // Concurrent: both silent hosts wait out the same 2 s, not 2 s each.
    assert!(took < Duration::from_millis(3900), "took {took:?}");
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    for h in &doc["hosts"].as_array().unwrap()[..2] {
        assert_eq!(h["usable"], false, "{h}");
        // TCP connected, the ssh banner never came.
        assert_eq!(h["reachable"], true, "{h}");
        assert!(h["error"].as_str().unwrap().contains("timed out"), "{h}");
    }
    assert_eq!(doc["hosts"][2]["usable"], true, "{doc}");
    drop(hold);
}

/// The client's `gcc` says it is 99.1.0: ping names the mismatch, and a host that has
/// nothing matching this machine's compilers is not usable.
#[test]
fn matched_and_mismatched_compilers() {
    use std::os::unix::fs::PermissionsExt;
    let sshd = Sshd::start(SshdOptions::default());
    let shim = tempfile::tempdir().unwrap();
    let gcc = shim.path().join("gcc");
    std::fs::write(
        &gcc,
        "#!/bin/sh\ncase \"$1\" in -dumpfullversion) echo 99.1.0; exit 0;; esac\nexec /usr/bin/gcc \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&gcc, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = |path: String| {
        let mut cmd = Command::new(hoardcc_bin());
        sshd.apply_env(&mut cmd);
        cmd.env("HOARDCC_HOSTS", format!("@{}", sshd.alias()))
            .env("PATH", &path)
            .args(["ping", "--json", "--timeout", "20"]);
        let out = run_with_timeout(&mut cmd, T, "hoardcc ping");
        eprintln!(
            "$ PATH={path} hoardcc ping --json ({})\n{}",
            out.status,
            text(&out.stdout)
        );
        let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        (out.status.code(), doc["hosts"][0].clone())
    };
    let (code, host) = run(format!(
        "{}:/usr/local/bin:/usr/bin:/bin",
        shim.path().display()
    ));
    assert_eq!(code, Some(0), "{host}");
    let list = host["compilers"].as_array().expect("compilers listed");
    let by = |name: &str| {
        list.iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {host}"))
    };
    let cc = by("cc");
    assert_eq!(cc["server"], "cc", "{cc}");
    assert!(
        cc["local"]
            .as_str()
            .unwrap()
            .ends_with("(x86_64-linux-gnu)"),
        "{cc}"
    );
    let g = by("gcc");
    assert_eq!(g["local"], "99.1.0 (x86_64-linux-gnu)");
    assert_eq!(g["server"], Value::Null);
    assert!(
        g["mismatch"]
            .as_str()
            .unwrap()
            .starts_with("no compiler on the server matches gcc 99.1.0"),
        "{g}"
    );

    let (code, host) = run(shim.path().display().to_string());
    assert_eq!(code, Some(1), "{host}");
    assert_eq!(host["usable"], false);
    assert_eq!(host["reachable"], true);
    assert_eq!(host["compilers"].as_array().unwrap().len(), 1, "{host}");
    assert_eq!(
        host["error"],
        "no compiler of this machine has its match on the server"
    );
}
