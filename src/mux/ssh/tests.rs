//! Unit tests of the SSH client: error messages and classes, ProxyJump hops, refused
//! and silent servers, settings.

use super::config::parse_hop;
use super::*;
use crate::exit::ExitCode;
use russh::ChannelOpenFailure;

#[test]
fn unknown_host_key_message_names_host_fingerprint_and_fix() {
    let e = SshError::UnknownHostKey {
        host: "127.0.0.1".into(),
        port: 2222,
        key_type: "ssh-ed25519".into(),
        fingerprint: "SHA256:abc".into(),
    };
    let msg = e.to_string();
    assert!(msg.contains("[127.0.0.1]:2222"), "{msg}");
    assert!(msg.contains("ssh-ed25519 SHA256:abc"), "{msg}");
    assert!(
        msg.contains("ssh-keyscan -p 2222 -t ssh-ed25519 127.0.0.1 >> ~/.ssh/known_hosts"),
        "{msg}"
    );
    assert!(!e.is_transient());
    assert_eq!(e.exit_code(), ExitCode::SshFailed);
}

#[test]
fn changed_host_key_message_names_file_line_and_fix() {
    let e = SshError::HostKeyChanged {
        host: "build1".into(),
        port: 22,
        fingerprint: "SHA256:xyz".into(),
        file: PathBuf::from("/home/a/.ssh/known_hosts"),
        line: 7,
    };
    let msg = e.to_string();
    assert!(msg.contains("CHANGED"), "{msg}");
    assert!(msg.contains("/home/a/.ssh/known_hosts:7"), "{msg}");
    assert!(msg.contains("ssh-keygen -R 'build1'"), "{msg}");
    assert!(msg.contains("SHA256:xyz"), "{msg}");
}

#[test]
fn classification_and_exit_codes() {
    let t = SshError::Timeout {
        host: "h".into(),
        what: "TCP connect",
    };
    assert!(t.is_transient());
    assert_eq!(t.exit_code(), ExitCode::Timeout);
    let c = SshError::Connect {
        host: "h".into(),
        port: 22,
        source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
    };
    assert!(c.is_transient());
    assert_eq!(c.exit_code(), ExitCode::ConnectFailed);
    let s = SshError::from_russh(
        "h",
        russh::Error::ChannelOpenFailure(ChannelOpenFailure::ConnectFailed),
    );
    assert!(matches!(s, SshError::SessionLimit { .. }));
    assert!(s.is_transient());
    let a = SshError::Auth {
        host: "h".into(),
        user: "u".into(),
        tried: vec!["/k".into()],
    };
    assert!(!a.is_transient());
    assert_eq!(a.exit_code(), ExitCode::SshFailed);
    assert!(a.to_string().contains("/k"));
}

#[test]
fn proxy_jump_hops_parse() {
    assert_eq!(parse_hop("bastion"), Some((None, "bastion", None)));
    assert_eq!(
        parse_hop("ops@bastion:2222"),
        Some((Some("ops"), "bastion", Some(2222)))
    );
    assert_eq!(
        parse_hop("ssh://ops@b.example"),
        Some((Some("ops"), "b.example", None))
    );
    assert_eq!(parse_hop("[::1]:2200"), Some((None, "::1", Some(2200))));
    assert_eq!(parse_hop("host:notaport"), None);
    assert_eq!(parse_hop("@host"), None);
    assert_eq!(parse_hop(""), None);
}

#[tokio::test]
async fn unparseable_proxy_jump_is_refused_clearly() {
    let dest = Destination {
        alias: "inner".into(),
        hostname: "inner".into(),
        port: 22,
        user: "u".into(),
        identity_files: vec![],
        proxy_jump: Some("bastion:99999".into()),
        user_known_hosts: vec![],
        identities_only: false,
        server_alive_interval: None,
        server_alive_count_max: None,
    };
    let settings = test_settings(PathBuf::from("/nonexistent"));
    let err = Connection::connect(&dest, &settings).await.unwrap_err();
    assert!(
        matches!(err, SshError::ProxyJumpUnsupported { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("bastion:99999"));
}

#[tokio::test]
async fn refused_tcp_connect_is_connect_error() {
    let refused = crate::test_util::RefusedPort::new();
    let port = refused.port();
    let dest = Destination {
        alias: "x".into(),
        hostname: "127.0.0.1".into(),
        port,
        user: "u".into(),
        identity_files: vec![],
        proxy_jump: None,
        user_known_hosts: vec![],
        identities_only: false,
        server_alive_interval: None,
        server_alive_count_max: None,
    };
    let err = Connection::connect(&dest, &test_settings(PathBuf::from("/nonexistent")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, SshError::Connect { port: p, .. } if p == port),
        "{err:?}"
    );
}

#[tokio::test]
async fn silent_server_times_out_in_key_exchange() {
    // A listener that accepts but never speaks SSH.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // The accepted socket is kept in the task's output until `hold` is dropped.
    let hold = tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) });
    let dest = Destination {
        alias: "x".into(),
        hostname: "127.0.0.1".into(),
        port,
        user: "u".into(),
        identity_files: vec![],
        proxy_jump: None,
        user_known_hosts: vec![],
        identities_only: false,
        server_alive_interval: None,
        server_alive_count_max: None,
    };
    let mut settings = test_settings(PathBuf::from("/nonexistent"));
    settings.connect_timeout = Duration::from_millis(300);
    let err = Connection::connect(&dest, &settings).await.unwrap_err();
    assert!(
        matches!(
            err,
            SshError::Timeout {
                what: "key exchange",
                ..
            }
        ),
        "{err:?}"
    );
    drop(hold);
}

#[test]
fn settings_from_config_and_env() {
    let cfg = crate::config::Config::default();
    let env = |k: &str| match k {
        "SSH_AUTH_SOCK" => Some("/tmp/agent.sock".to_string()),
        "USER" => Some(String::new()),
        "LOGNAME" => Some("logname-user".to_string()),
        _ => None,
    };
    let s = SshSettings::from_config(&cfg, &env, PathBuf::from("/home/x"));
    assert_eq!(s.home, PathBuf::from("/home/x"));
    assert_eq!(s.agent_socket, Some(PathBuf::from("/tmp/agent.sock")));
    assert_eq!(s.local_user, "logname-user");
    assert_eq!(s.connect_timeout, cfg.ssh.connect_timeout);
    assert_eq!(s.io_timeout, cfg.ssh.io_timeout);
    assert_eq!(s.keepalive_max, cfg.ssh.keepalive_max as usize);
    let none = SshSettings::from_config(&cfg, &|_| None, PathBuf::from("/h"));
    assert_eq!(none.agent_socket, None);
    assert!(!none.local_user.is_empty());
}

#[test]
fn keepalive_from_the_ssh_config_beats_the_settings() {
    let settings = test_settings(PathBuf::from("/h"));
    let mut dest = Destination {
        alias: "x".into(),
        hostname: "x".into(),
        port: 22,
        user: "u".into(),
        identity_files: vec![],
        proxy_jump: None,
        user_known_hosts: vec![],
        identities_only: false,
        server_alive_interval: None,
        server_alive_count_max: None,
    };
    let k = Keepalive::for_destination(&dest, &settings);
    assert_eq!(
        k,
        Keepalive {
            interval: Duration::from_secs(15),
            max: 3
        }
    );
    let c = client_config(k);
    assert_eq!(c.keepalive_interval, Some(Duration::from_secs(15)));
    assert_eq!(c.keepalive_max, 3);
    dest.server_alive_interval = Some(Duration::from_secs(2));
    dest.server_alive_count_max = Some(5);
    let k = Keepalive::for_destination(&dest, &settings);
    assert_eq!(
        k,
        Keepalive {
            interval: Duration::from_secs(2),
            max: 5
        }
    );
    let c = client_config(k);
    assert_eq!(c.keepalive_interval, Some(Duration::from_secs(2)));
    assert_eq!(c.keepalive_max, 5);
    // ServerAliveInterval 0 turns keepalives off, as in OpenSSH.
    dest.server_alive_interval = Some(Duration::ZERO);
    let c = client_config(Keepalive::for_destination(&dest, &settings));
    assert_eq!(c.keepalive_interval, None);
}

fn test_settings(home: PathBuf) -> SshSettings {
    SshSettings {
        home,
        connect_timeout: Duration::from_secs(5),
        keepalive_interval: Duration::from_secs(15),
        keepalive_max: 3,
        io_timeout: Duration::from_secs(5),
        agent_socket: None,
        local_user: "u".into(),
    }
}
