//! Unit tests of the pool's lane opener: how much it opens, with which command, and how
//! it ends (nothing to do, or a host it cannot connect to) without leaving a waiter.

use super::*;

const WAIT: Duration = Duration::from_secs(10);

fn spec(kind: HostKind, slots: u32) -> HostSpec {
    HostSpec {
        kind,
        slots,
        lzo: false,
        down: false,
        token: "h".into(),
    }
}

fn ssh(command: Option<&str>) -> HostSpec {
    spec(
        HostKind::Ssh {
            user: None,
            host: "build1".into(),
            command: command.map(str::to_string),
        },
        4,
    )
}

fn tcp(slots: u32) -> HostSpec {
    spec(
        HostKind::Tcp {
            host: "build2".into(),
            port: 3632,
        },
        slots,
    )
}

fn pool() -> Pool {
    let settings = SshSettings {
        home: std::path::PathBuf::from("/nonexistent"),
        connect_timeout: WAIT,
        keepalive_interval: Duration::ZERO,
        keepalive_max: 3,
        io_timeout: WAIT,
        agent_socket: None,
        local_user: "nobody".into(),
    };
    Pool::new(
        settings,
        8,
        None,
        CancellationToken::new(),
        TaskTracker::new(),
    )
}

#[test]
fn batch_is_every_lane_needed_that_fits() {
    assert_eq!(batch_size(5, 8), 5);
    assert_eq!(batch_size(5, 2), 2);
    // A connection without room still gets one try (a refusal lowers its cap).
    assert_eq!(batch_size(5, 0), 1);
}

#[test]
fn lane_command_prefers_the_list_then_learned_distccd() {
    assert_eq!(
        lane_command(&ssh(Some("/opt/distccd --inetd")), true).as_deref(),
        Some("/opt/distccd --inetd")
    );
    assert_eq!(lane_command(&ssh(None), false), None);
    assert_eq!(
        lane_command(&ssh(None), true).as_deref(),
        Some(lane::DEFAULT_DISTCCD)
    );
}

#[tokio::test]
async fn opener_with_enough_lanes_stops_without_connecting() {
    let pool = pool();
    let hp = pool.host_pool(&tcp(2));
    hp.lanes.store(2, Ordering::SeqCst);
    hp.state().opener_running = true;
    tokio::time::timeout(WAIT, pool.opener(&hp))
        .await
        .expect("the opener returns when nothing is needed");
    let st = hp.state();
    assert!(!st.opener_running);
    assert!(st.last_connect.is_none(), "no connection was tried");
    assert_eq!(st.connections_made, 0);
}

#[tokio::test]
async fn opener_fails_every_waiter_when_it_cannot_connect() {
    let pool = pool();
    let hp = pool.host_pool(&tcp(1));
    let (tx1, rx1) = oneshot::channel();
    let (tx2, rx2) = oneshot::channel();
    {
        let mut st = hp.state();
        st.opener_running = true;
        st.waiters.push_back(tx1);
        st.waiters.push_back(tx2);
    }
    tokio::time::timeout(WAIT, pool.opener(&hp))
        .await
        .expect("the opener gives up");
    for rx in [rx1, rx2] {
        let got = rx.await.expect("the waiter is answered");
        let Err(e) = got else {
            panic!("a lane to a host the pool cannot reach");
        };
        assert_eq!(e.exit_code, ExitCode::BadHostspec);
        assert!(!e.transient);
        assert!(e.message.contains("build2:3632"), "{}", e.message);
    }
    let st = hp.state();
    assert!(!st.opener_running);
    assert!(st.waiters.is_empty());
    assert!(st
        .last_error
        .as_deref()
        .is_some_and(|m| m.contains("not an ssh host")));
}

#[test]
fn lane_target_comes_from_the_scheduler() {
    let sched = SchedHandle::new(Duration::from_secs(60));
    let pool = Pool::new(
        pool().inner.settings.clone(),
        8,
        Some(sched.clone()),
        CancellationToken::new(),
        TaskTracker::new(),
    );
    let spec = tcp(4);
    let hp = pool.host_pool(&spec);
    // Unknown to the scheduler: the list's `/N`.
    assert_eq!(pool.target(&hp), 4);
    let key = sched.with(|s| s.register(&spec));
    assert_eq!(pool.target(&hp), 4);
    // The server advertised fewer slots: the pool opens no more lanes than that.
    sched.with(|s| s.set_server_slots(&key, 2));
    assert_eq!(pool.target(&hp), 2);
}
