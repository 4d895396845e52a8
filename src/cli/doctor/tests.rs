//! Unit tests of `cli::doctor`: the step lines, the skip rule, the HOST lookup.

use super::*;
use crate::hosts;

#[test]
fn lines_and_skips() {
    let mut seen = Vec::new();
    let mut emit = |s: &Step| seen.push(s.line());
    let mut list = Checklist {
        names: SSH_STEPS,
        next: 0,
        steps: Vec::new(),
        emit: &mut emit,
    };
    assert!(list.pass("ssh config", "HostName h".into()).is_ok());
    assert!(list.warn("DNS", "slow".into(), "nothing".into()).is_ok());
    assert!(list
        .fail::<()>("TCP connect", "refused".into(), "start sshd".into())
        .is_err());
    list.skip_rest();
    let steps = list.steps.clone();
    drop(list);
    assert_eq!(seen[0], "✓ ssh config: HostName h");
    assert_eq!(seen[1], "✗ DNS: slow — fix: nothing");
    assert_eq!(seen[2], "✗ TCP connect: refused — fix: start sshd");
    assert_eq!(seen[3], "- host key: skipped");
    assert_eq!(seen.len(), SSH_STEPS.len());
    let d = Diagnosis {
        entry: "@h".into(),
        steps,
    };
    assert!(!d.usable());
}

#[test]
fn host_argument_lookup() {
    let configured = hosts::parse("localhost @a bob@b:/opt/hoardcc 10.0.0.1:3632/8").unwrap();
    let by = |arg: &str| {
        let named = hosts::parse(arg).unwrap();
        targets(Some(arg), &named, Some(&configured))
    };
    assert_eq!(by("@a")[0].token, "@a");
    assert_eq!(by("bob@b")[0].token, "bob@b:/opt/hoardcc");
    assert_eq!(by("10.0.0.1:3632")[0].token, "10.0.0.1:3632/8");
    // Not in the list: checked as written.
    assert_eq!(by("@c")[0].token, "@c");
    // Without HOST: every remote entry.
    let all = targets(None, &configured, Some(&configured));
    assert_eq!(all.len(), 3);
}

#[tokio::test]
async fn dead_tcp_port_stops_at_connect() {
    let refused = crate::test_util::RefusedPort::new();
    let spec = hosts::parse(&format!("127.0.0.1:{}", refused.port()))
        .unwrap()
        .hosts[0]
        .clone();
    let settings = SshSettings {
        home: "/nonexistent".into(),
        connect_timeout: Duration::from_secs(5),
        keepalive_interval: Duration::ZERO,
        keepalive_max: 3,
        io_timeout: Duration::from_secs(5),
        agent_socket: None,
        local_user: "nobody".into(),
    };
    let d = diagnose(&spec, &settings, &mut |_| {}).await;
    assert!(!d.usable());
    let names: Vec<_> = d.steps.iter().map(|s| (s.name.as_str(), s.mark)).collect();
    assert_eq!(
        names,
        vec![
            ("DNS", Mark::Pass),
            ("TCP connect", Mark::Fail { fatal: true }),
            ("route", Mark::Skipped),
            ("compile", Mark::Skipped),
        ]
    );
    assert!(d.steps[1].fix.as_deref().unwrap().contains("distccd"));
}
