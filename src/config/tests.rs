//! Tests of `config`: parsing, merging, the environment's precedence and every
//! documented default and bound.

use super::*;
use crate::paths::test_env::env_of;

fn no_env() -> impl Fn(&str) -> Option<String> {
    env_of(&[])
}

#[test]
fn defaults() {
    let c = Config::from_parts(None, &no_env()).unwrap();
    assert_eq!(c, Config::default());
    assert!(c.fallback);
    assert_eq!(c.backoff, Duration::from_secs(60));
    assert_eq!(c.ssh.connect_timeout, Duration::from_secs(10));
    assert_eq!(c.ssh.keepalive_interval, Duration::from_secs(15));
    assert_eq!(c.ssh.keepalive_max, 3);
    assert_eq!(c.ssh.io_timeout, Duration::from_secs(300));
    assert!(c.server.compilers.is_empty());
    assert!(c.server.default_compilers);
    assert_eq!(c.server.compile_timeout, Duration::from_secs(1200));
    assert_eq!(c.server.max_jobs, None);
    assert_eq!(c.server.tmpdir, None);
    assert_eq!(c.server.heartbeat, Duration::from_secs(5));
    assert_eq!(c.server.admission.max_job_bytes, 256 << 20);
    assert_eq!(c.server.admission.max_context_files, 4096);
    assert_eq!(c.server.admission.idle_timeout, Duration::from_secs(300));
    assert_eq!(c.server.sandbox, SandboxMode::Landlock);
    assert!(c.server.sandbox_paths.is_empty());
    assert_eq!(c.server.max_memory, Some(8 << 30));
    assert_eq!(c.server.max_file_size, Some(1 << 30));
    assert_eq!(c.server.max_open_files, 256);
    assert!(c.server.cache);
    assert_eq!(c.server.cache_dir, None);
    assert_eq!(c.server.cache_bytes, 1 << 30);
    assert_eq!(c.mux.idle_timeout, Duration::from_secs(600));
    assert_eq!(c.mux.channels_per_connection, 8);
    assert_eq!(c.hosts, None);
    // An empty file is the defaults too.
    assert_eq!(Config::from_parts(Some(""), &no_env()).unwrap(), c);
}

const FULL: &str = r#"
    hosts = "@a/8 @b"
    fallback = false
    backoff_secs = 0
    [ssh]
    connect_timeout_secs = 3
    keepalive_interval_secs = 7
    keepalive_max = 5
    io_timeout_secs = 90
    [server]
    compilers = ["arm-none-eabi-gcc", "x86_64-w64-mingw32-gcc"]
    default_compilers = false
    compile_timeout_secs = 60
    max_jobs = 12
    tmpdir = "/var/tmp/hc"
    heartbeat_secs = 2
    max_job_mib = 32
    max_context_files = 100
    max_extra_outputs = 2
    max_queued_mib = 8
    idle_timeout_secs = 90
    frame_timeout_secs = 7
    slot_wait_secs = 0
    sandbox = "off"
    sandbox_paths = ["/opt/sysroot"]
    max_memory_mib = 2048
    max_file_size_mib = 0
    max_open_files = 64
    cache = false
    cache_dir = "/var/cache/hc"
    cache_mib = 20
    [mux]
    idle_timeout_secs = 30
    channels_per_connection = 4
"#;

#[test]
fn every_file_field_applies() {
    let c = Config::from_parts(Some(FULL), &no_env()).unwrap();
    assert_eq!(c.hosts.as_deref(), Some("@a/8 @b"));
    assert!(!c.fallback);
    assert_eq!(c.backoff, Duration::ZERO);
    assert_eq!(c.ssh.connect_timeout, Duration::from_secs(3));
    assert_eq!(c.ssh.keepalive_interval, Duration::from_secs(7));
    assert_eq!(c.ssh.keepalive_max, 5);
    assert_eq!(c.ssh.io_timeout, Duration::from_secs(90));
    assert_eq!(
        c.server.compilers,
        ["arm-none-eabi-gcc", "x86_64-w64-mingw32-gcc"]
    );
    assert!(!c.server.default_compilers);
    assert_eq!(c.server.compile_timeout, Duration::from_secs(60));
    assert_eq!(c.server.max_jobs, Some(12));
    assert_eq!(c.server.tmpdir, Some(PathBuf::from("/var/tmp/hc")));
    assert_eq!(c.server.heartbeat, Duration::from_secs(2));
    assert_eq!(
        c.server.admission,
        Admission {
            max_job_bytes: 32 << 20,
            max_context_files: 100,
            max_extra_outputs: 2,
            max_queued_bytes: 8 << 20,
            idle_timeout: Duration::from_secs(90),
            frame_timeout: Duration::from_secs(7),
            slot_wait: Duration::ZERO,
        }
    );
    assert_eq!(c.server.sandbox, SandboxMode::Off);
    assert_eq!(c.server.sandbox_paths, [PathBuf::from("/opt/sysroot")]);
    assert_eq!(c.server.max_memory, Some(2048 << 20));
    assert_eq!(c.server.max_file_size, None, "0 = no limit");
    assert_eq!(c.server.max_open_files, 64);
    assert!(!c.server.cache);
    assert_eq!(c.server.cache_dir, Some(PathBuf::from("/var/cache/hc")));
    assert_eq!(c.server.cache_bytes, 20 << 20);
    assert_eq!(c.mux.idle_timeout, Duration::from_secs(30));
    assert_eq!(c.mux.channels_per_connection, 4);
}

#[test]
fn env_beats_file_beats_default() {
    let file = "fallback = true\nbackoff_secs = 10\n[ssh]\nio_timeout_secs = 50\n[mux]\nidle_timeout_secs = 40\n";
    let env = env_of(&[
        ("DISTCC_FALLBACK", "0"),
        ("DISTCC_IO_TIMEOUT", "77"),
        ("DISTCC_BACKOFF_PERIOD", "0"),
        ("HOARDCC_IDLE_TIMEOUT", "5"),
    ]);
    let c = Config::from_parts(Some(file), &env).unwrap();
    assert!(!c.fallback);
    assert_eq!(c.ssh.io_timeout, Duration::from_secs(77));
    assert_eq!(c.backoff, Duration::ZERO);
    assert_eq!(c.mux.idle_timeout, Duration::from_secs(5));

    // Without env the file applies.
    let c = Config::from_parts(Some(file), &no_env()).unwrap();
    assert!(c.fallback);
    assert_eq!(c.backoff, Duration::from_secs(10));
    assert_eq!(c.ssh.io_timeout, Duration::from_secs(50));
    assert_eq!(c.mux.idle_timeout, Duration::from_secs(40));
}

#[test]
fn fallback_variables() {
    let fb = |vars: &[(&str, &str)], file: Option<&str>| {
        Config::from_parts(file, &env_of(vars)).unwrap().fallback
    };
    assert!(!fb(&[("DISTCC_FALLBACK", "0")], None));
    assert!(fb(&[("DISTCC_FALLBACK", "1")], Some("fallback = false")));
    assert!(fb(&[("DISTCC_FALLBACK", "yes")], None));
    assert!(fb(&[("DISTCC_FALLBACK", "")], None));
    // HOARDCC_ wins over DISTCC_ in both directions.
    assert!(fb(
        &[("HOARDCC_FALLBACK", "1"), ("DISTCC_FALLBACK", "0")],
        None
    ));
    assert!(!fb(
        &[("HOARDCC_FALLBACK", "0"), ("DISTCC_FALLBACK", "1")],
        None
    ));
}

#[test]
fn bad_env_values_name_the_variable() {
    let cases = [
        ("DISTCC_IO_TIMEOUT", "soon"),
        ("DISTCC_IO_TIMEOUT", "0"),
        ("DISTCC_IO_TIMEOUT", "-5"),
        ("DISTCC_BACKOFF_PERIOD", "1.5"),
        ("HOARDCC_IDLE_TIMEOUT", "0"),
        ("HOARDCC_IDLE_TIMEOUT", "10m"),
    ];
    for (var, value) in cases {
        let err = Config::from_parts(None, &env_of(&[(var, value)])).unwrap_err();
        assert!(
            matches!(err, ConfigError::Env { var: v, .. } if v == var),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(var) && msg.contains(value), "{msg}");
    }
    // Blank means unset.
    let c = Config::from_parts(None, &env_of(&[("DISTCC_IO_TIMEOUT", " ")])).unwrap();
    assert_eq!(c.ssh.io_timeout, Duration::from_secs(300));
    // Surrounding spaces are fine.
    let c = Config::from_parts(None, &env_of(&[("DISTCC_IO_TIMEOUT", " 12 ")])).unwrap();
    assert_eq!(c.ssh.io_timeout, Duration::from_secs(12));
}

#[test]
fn unknown_key_reported_with_location() {
    let err = Config::from_parts(Some("[ssh]\nconect_timeout_secs = 3\n"), &no_env()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
    assert!(msg.contains("conect_timeout_secs"), "{msg}");
    assert!(msg.contains("line 2"), "{msg}");

    let msg = Config::from_parts(Some("hostz = \"a\""), &no_env())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("hostz"), "{msg}");
}

#[test]
fn wrong_types_and_values_rejected() {
    let msg = Config::from_parts(Some("fallback = \"no\""), &no_env())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("fallback"), "{msg}");
    let msg = Config::from_parts(Some("[mux]\nidle_timeout_secs = -1"), &no_env())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("idle_timeout_secs"), "{msg}");
    // Only the two documented sandbox modes parse.
    let msg = Config::from_parts(Some("[server]\nsandbox = \"namespaces\""), &no_env())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("sandbox") && msg.contains("landlock"), "{msg}");
    for (text, key) in [
        (
            "[ssh]\nconnect_timeout_secs = 0",
            "ssh.connect_timeout_secs",
        ),
        (
            "[mux]\nchannels_per_connection = 0",
            "mux.channels_per_connection",
        ),
        ("[server]\nmax_jobs = 0", "server.max_jobs"),
        ("[server]\nheartbeat_secs = 0", "server.heartbeat_secs"),
        (
            "[server]\nidle_timeout_secs = 0",
            "server.idle_timeout_secs",
        ),
        ("[server]\nmax_job_mib = 0", "server.max_job_mib"),
        ("[server]\nmax_queued_mib = 5000", "server.max_queued_mib"),
        (
            "[server]\nmax_context_files = 0",
            "server.max_context_files",
        ),
        (
            "[server]\nframe_timeout_secs = 0",
            "server.frame_timeout_secs",
        ),
        ("[server]\nmax_open_files = 3", "server.max_open_files"),
        (
            "[server]\nmax_memory_mib = 18446744073709551615",
            "server.max_memory_mib",
        ),
        (
            "[server]\nsandbox_paths = [\"opt/x\"]",
            "server.sandbox_paths",
        ),
        ("[server]\ncache_dir = \"rel\"", "server.cache_dir"),
        ("[server]\ncache_mib = 0", "server.cache_mib"),
        ("[server]\ncache_mib = 2000000", "server.cache_mib"),
    ] {
        let err = Config::from_parts(Some(text), &no_env()).unwrap_err();
        assert!(
            matches!(err, ConfigError::Value { key: k, .. } if k == key),
            "{text}: {err:?}"
        );
    }
}

#[test]
fn merge_later_wins_per_field() {
    let a = parse_table(
        "backoff_secs = 1\n[server]\ncompilers = [\"a\"]\nmax_jobs = 2\n[ssh]\nkeepalive_max = 9",
    )
    .unwrap();
    let b = parse_table("[server]\nmax_jobs = 3\n[mux]\nchannels_per_connection = 2").unwrap();
    let m = FileConfig::from_table(merge_tables(a, b)).unwrap();
    assert_eq!(m.backoff_secs, 1);
    assert_eq!(m.server.compilers, vec!["a".to_string()]);
    assert_eq!(m.server.max_jobs, Some(3));
    assert_eq!(m.ssh.keepalive_max, 9);
    assert_eq!(m.mux.channels_per_connection, 2);
}

fn paths_in(dir: &Path) -> Paths {
    Paths {
        home: Some(dir.to_path_buf()),
        config_dir: dir.join("cfg"),
        runtime_dir: dir.join("run"),
        state_dir: dir.join("state"),
        cache_dir: dir.join("cache"),
    }
}

#[test]
fn load_missing_file_is_defaults_and_env_applies() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = paths_in(tmp.path());
    assert_eq!(load(&paths, &no_env()).unwrap(), Config::default());
    let c = load(&paths, &env_of(&[("DISTCC_BACKOFF_PERIOD", "9")])).unwrap();
    assert_eq!(c.backoff, Duration::from_secs(9));
}

#[test]
fn load_reads_file_and_names_it_in_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = paths_in(tmp.path());
    std::fs::create_dir_all(&paths.config_dir).unwrap();
    std::fs::write(
        paths.config_file(),
        "hosts = \"@x\"\n[mux]\nidle_timeout_secs = 9\n",
    )
    .unwrap();
    let c = load(&paths, &no_env()).unwrap();
    assert_eq!(c.hosts.as_deref(), Some("@x"));
    assert_eq!(c.mux.idle_timeout, Duration::from_secs(9));

    std::fs::write(paths.config_file(), "[mux]\nidle_timeout_secs = \"x\"\n").unwrap();
    let msg = load(&paths, &no_env()).unwrap_err().to_string();
    assert!(
        msg.contains(&paths.config_file().display().to_string()),
        "{msg}"
    );

    std::fs::write(paths.config_file(), "[mux]\nidle_timeout_secs = 0\n").unwrap();
    let msg = load(&paths, &no_env()).unwrap_err().to_string();
    assert!(
        msg.contains(&paths.config_file().display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("mux.idle_timeout_secs"), "{msg}");

    // A directory where the file should be: unreadable, error names the path.
    std::fs::remove_file(paths.config_file()).unwrap();
    std::fs::create_dir(paths.config_file()).unwrap();
    let err = load(&paths, &no_env()).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("config.toml"), "{err}");
}

#[test]
fn load_server_layers_system_then_user() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = paths_in(tmp.path());
    let system = tmp.path().join("etc-server.toml");
    std::fs::create_dir_all(&paths.config_dir).unwrap();

    // Neither file: defaults.
    let c = load_server_from(&system, &paths, &no_env()).unwrap();
    assert_eq!(c, Config::default());

    std::fs::write(
        &system,
        "[server]\ncompilers = [\"sys-gcc\"]\nmax_jobs = 4\ntmpdir = \"/sys\"\n",
    )
    .unwrap();
    let c = load_server_from(&system, &paths, &no_env()).unwrap();
    assert_eq!(c.server.compilers, ["sys-gcc"]);
    assert_eq!(c.server.max_jobs, Some(4));

    std::fs::write(paths.server_config_file(), "[server]\nmax_jobs = 2\n").unwrap();
    let c = load_server_from(&system, &paths, &no_env()).unwrap();
    assert_eq!(c.server.compilers, ["sys-gcc"], "kept from the system file");
    assert_eq!(c.server.max_jobs, Some(2), "user file wins");
    assert_eq!(c.server.tmpdir, Some(PathBuf::from("/sys")));

    // HOARDCC_SERVER_CONFIG replaces both.
    let named = tmp.path().join("named.toml");
    std::fs::write(&named, "[server]\nheartbeat_secs = 1\n").unwrap();
    let env = env_of(&[("HOARDCC_SERVER_CONFIG", named.to_str().unwrap())]);
    let c = load_server_from(&system, &paths, &env).unwrap();
    assert_eq!(c.server.heartbeat, Duration::from_secs(1));
    assert_eq!(c.server.max_jobs, None);
    assert!(c.server.compilers.is_empty());

    // A named file that does not exist is an error naming it.
    let missing = tmp.path().join("missing.toml");
    let env = env_of(&[("HOARDCC_SERVER_CONFIG", missing.to_str().unwrap())]);
    let msg = load_server_from(&system, &paths, &env)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("missing.toml"), "{msg}");
}

#[test]
fn load_server_error_names_the_bad_file() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = paths_in(tmp.path());
    let system = tmp.path().join("etc-server.toml");
    std::fs::create_dir_all(&paths.config_dir).unwrap();
    std::fs::write(&system, "[server]\nmax_jobs = 4\n").unwrap();
    std::fs::write(paths.server_config_file(), "[server]\nmax_job = 2\n").unwrap();
    let msg = load_server_from(&system, &paths, &no_env())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("server.toml") && msg.contains("max_job"),
        "{msg}"
    );

    std::fs::write(
        paths.server_config_file(),
        "[server]\ncompile_timeout_secs = 0\n",
    )
    .unwrap();
    let msg = load_server_from(&system, &paths, &no_env())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(&paths.server_config_file().display().to_string()),
        "{msg}"
    );
}
