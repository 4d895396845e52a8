//! Tests of the SSH client layer (`hoardcc::mux::ssh`) against the private real OpenSSH sshd:
//! key-file authentication, refusal of unknown and changed host keys, exec round trips, a
//! refused subsystem that returns at once, and MaxSessions surfacing as `SessionLimit`.
//!
//! Neighbours: tests/support (the sshd fixture); src/mux/ssh/.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hoardcc::mux::ssh::config::{self as ssh_config, Destination};
use hoardcc::mux::ssh::{Connection, SshError, SshSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{free_port, Sshd, SshdOptions};

/// Upper bound for any single step in these tests.
const T: Duration = Duration::from_secs(30);

fn settings(home: &Path, login_user: &str) -> SshSettings {
    SshSettings {
        home: home.to_path_buf(),
        connect_timeout: Duration::from_secs(10),
        keepalive_interval: Duration::from_secs(15),
        keepalive_max: 3,
        io_timeout: T,
        agent_socket: None,
        local_user: login_user.to_string(),
    }
}

/// The fixture's alias resolved through its `~/.ssh/config`, as the mux would.
fn destination(sshd: &Sshd) -> Destination {
    let text = std::fs::read_to_string(sshd.ssh_config_path()).expect("read client config");
    ssh_config::resolve(
        sshd.alias(),
        None,
        Some(&text),
        sshd.client_home(),
        sshd.login_user(),
    )
    .expect("resolve fixture alias")
}

async fn connect(sshd: &Sshd) -> Result<Connection, SshError> {
    let dest = destination(sshd);
    let settings = settings(sshd.client_home(), sshd.login_user());
    tokio::time::timeout(T, Connection::connect(&dest, &settings))
        .await
        .expect("connect returns within its own timeout")
}

async fn read_all(mut stream: hoardcc::mux::ssh::Stream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(T, stream.read_to_end(&mut out))
        .await
        .expect("stream ends in time")
        .expect("read stream");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolves_fixture_alias_like_openssh() {
    let sshd = Sshd::start(SshdOptions::default());
    let dest = destination(&sshd);
    assert_eq!(dest.hostname, "127.0.0.1");
    assert_eq!(dest.port, sshd.port());
    assert_eq!(dest.user, sshd.login_user());
    assert_eq!(dest.identity_files, vec![sshd.client_key_path()]);
    assert_eq!(dest.user_known_hosts, vec![sshd.known_hosts_path()]);
    assert_eq!(dest.proxy_jump, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_file_auth_and_exec_round_trip() {
    let sshd = Sshd::start(SshdOptions::default());
    let conn = connect(&sshd).await.expect("connect + auth with key file");
    assert!(!conn.is_closed());
    assert_eq!(conn.destination().port, sshd.port());

    let out = read_all(conn.open_exec("echo hi").await.expect("exec echo")).await;
    assert_eq!(String::from_utf8_lossy(&out), "hi\n");

    // Data both ways on one channel: cat echoes what we send until our EOF.
    let mut cat = conn.open_exec("cat").await.expect("exec cat");
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let (mut rd, mut wr) = tokio::io::split(&mut cat);
    let writer = async {
        wr.write_all(&payload).await?;
        wr.shutdown().await
    };
    let mut echoed = Vec::new();
    let reader = rd.read_to_end(&mut echoed);
    let (w, r) = tokio::time::timeout(T, async { tokio::join!(writer, reader) })
        .await
        .expect("cat round trip in time");
    w.expect("write to cat");
    r.expect("read from cat");
    assert_eq!(echoed, payload);

    // The connection is reusable after channels end.
    let out = read_all(conn.open_exec("echo again").await.expect("exec again")).await;
    assert_eq!(String::from_utf8_lossy(&out), "again\n");

    conn.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_key_is_refused_with_fingerprint() {
    let sshd = Sshd::start(SshdOptions::default());
    std::fs::write(sshd.known_hosts_path(), "").expect("empty known_hosts");
    let err = connect(&sshd)
        .await
        .expect_err("unknown host key must be refused");
    match &err {
        SshError::UnknownHostKey {
            host,
            port,
            fingerprint,
            ..
        } => {
            assert_eq!(host, "127.0.0.1");
            assert_eq!(*port, sshd.port());
            assert_eq!(fingerprint, &sshd.host_key_fingerprint());
        }
        other => panic!("expected UnknownHostKey, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("[127.0.0.1]:{}", sshd.port())),
        "{msg}"
    );
    assert!(msg.contains(&sshd.host_key_fingerprint()), "{msg}");
    assert!(msg.contains("ssh-keyscan"), "{msg}");
    assert!(!err.is_transient());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_host_key_is_refused_loudly() {
    let mut sshd = Sshd::start(SshdOptions::default());
    sshd.replace_host_key();
    let err = connect(&sshd)
        .await
        .expect_err("changed host key must be refused");
    match &err {
        SshError::HostKeyChanged {
            host,
            port,
            fingerprint,
            file,
            line,
        } => {
            assert_eq!(host, "127.0.0.1");
            assert_eq!(*port, sshd.port());
            assert_eq!(fingerprint, &sshd.host_key_fingerprint());
            assert_eq!(file, &sshd.known_hosts_path());
            assert_eq!(*line, 1);
        }
        other => panic!("expected HostKeyChanged, got {other:?}"),
    }
    assert!(err.to_string().contains("ssh-keygen -R"), "{err}");

    // Trusting the new key again makes it work.
    sshd.write_known_hosts();
    connect(&sshd)
        .await
        .expect("connect after known_hosts update");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_usable_key_is_an_auth_error_without_prompting() {
    let sshd = Sshd::start(SshdOptions::default());
    // A home with only a passphrase-protected key: it must be skipped, never prompted for.
    let home = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(home.path().join(".ssh")).unwrap();
    let key: PathBuf = home.path().join(".ssh/id_ed25519");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "secret-pass", "-f"])
        .arg(&key)
        .status()
        .expect("run ssh-keygen");
    assert!(st.success());
    let mut dest = destination(&sshd);
    dest.identity_files.clear();
    let err = tokio::time::timeout(
        T,
        Connection::connect(&dest, &settings(home.path(), sshd.login_user())),
    )
    .await
    .expect("auth finishes in time")
    .expect_err("no usable key");
    match &err {
        SshError::Auth { user, tried, .. } => {
            assert_eq!(user, sshd.login_user());
            assert!(tried.is_empty(), "encrypted key must be skipped: {tried:?}");
        }
        other => panic!("expected Auth, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_subsystem_is_none_and_quick() {
    let sshd = Sshd::start(SshdOptions::default());
    let conn = connect(&sshd).await.expect("connect");
    let started = Instant::now();
    let r = conn
        .open_subsystem("nope")
        .await
        .expect("refusal is not an error");
    assert!(r.is_none());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refusal took {:?}",
        started.elapsed()
    );
    // The refused channel was closed: the connection still works.
    let out = read_all(conn.open_exec("echo ok").await.expect("exec after refusal")).await;
    assert_eq!(String::from_utf8_lossy(&out), "ok\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_subsystems_do_not_leak_session_slots() {
    let sshd = Sshd::start(SshdOptions::default());
    let conn = connect(&sshd).await.expect("connect");
    // More refusals than MaxSessions (10): each channel must be closed again.
    for i in 0..15 {
        match conn.open_subsystem("nope").await {
            Ok(None) => {}
            Ok(Some(_)) => panic!("attempt {i}: unknown subsystem accepted"),
            Err(e) => panic!("attempt {i}: {e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_channels_than_max_sessions_hit_session_limit() {
    let sshd = Sshd::start(SshdOptions::default());
    let conn = connect(&sshd).await.expect("connect");
    // `cat` keeps each channel open until we close it, so all 12 compete for 10 slots.
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let conn = conn.clone();
            tokio::spawn(async move { conn.open_exec("cat").await })
        })
        .collect();
    let mut open = Vec::new();
    let mut limited = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(stream) => open.push(stream),
            Err(SshError::SessionLimit { host }) => {
                assert_eq!(host, "127.0.0.1");
                limited += 1;
            }
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    }
    assert_eq!(open.len(), 10, "default MaxSessions is 10");
    assert_eq!(limited, 2);
    let e = SshError::SessionLimit {
        host: "127.0.0.1".into(),
    };
    assert!(e.is_transient());

    // Closing the streams frees the slots: a new channel opens once the server has
    // processed the CLOSEs (wait for that event, bounded).
    drop(open);
    let deadline = Instant::now() + T;
    loop {
        match conn.open_exec("echo freed").await {
            Ok(s) => {
                assert_eq!(String::from_utf8_lossy(&read_all(s).await), "freed\n");
                break;
            }
            Err(SshError::SessionLimit { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("slots not freed: {e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_jump_through_the_fixture_itself() {
    let sshd = Sshd::start(SshdOptions::default());
    // Jump via the `hoardtest` alias (resolved through ~/.ssh/config) to the same sshd.
    let mut dest = destination(&sshd);
    dest.proxy_jump = Some(sshd.alias().to_string());
    let conn = tokio::time::timeout(
        T,
        Connection::connect(&dest, &settings(sshd.client_home(), sshd.login_user())),
    )
    .await
    .expect("jump connect in time")
    .expect("connect through ProxyJump");
    let out = read_all(conn.open_exec("echo jumped").await.expect("exec via jump")).await;
    assert_eq!(String::from_utf8_lossy(&out), "jumped\n");
    // Logins: the fixture's own check, the jump and the tunnelled one.
    let log = sshd.log();
    assert!(
        log.matches("Accepted publickey").count() >= 3,
        "expected fixture check + jump + target logins:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_jump_to_a_closed_port_is_a_connect_error() {
    let sshd = Sshd::start(SshdOptions::default());
    let closed = free_port();
    let mut dest = destination(&sshd);
    dest.port = closed;
    dest.proxy_jump = Some(format!("{}@127.0.0.1:{}", sshd.login_user(), sshd.port()));
    let err = tokio::time::timeout(
        T,
        Connection::connect(&dest, &settings(sshd.client_home(), sshd.login_user())),
    )
    .await
    .expect("jump connect in time")
    .expect_err("target port is closed");
    assert!(
        matches!(&err, SshError::Connect { port, .. } if *port == closed),
        "{err:?}"
    );
}
