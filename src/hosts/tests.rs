//! Unit tests of `hosts`: the grammar, the sources in order, `ordered` and `pick_weighted`.

use super::*;
use crate::paths::test_env::env_of;
use std::collections::HashMap;

fn tcp(host: &str, port: u16) -> HostKind {
    HostKind::Tcp {
        host: host.to_string(),
        port,
    }
}

fn ssh(user: Option<&str>, host: &str, command: Option<&str>) -> HostKind {
    HostKind::Ssh {
        user: user.map(str::to_string),
        host: host.to_string(),
        command: command.map(str::to_string),
    }
}

/// (kind, slots, lzo, down) per host, for compact expectations.
type Expect = Vec<(HostKind, u32, bool, bool)>;

fn summary(list: &HostList) -> Expect {
    list.hosts
        .iter()
        .map(|h| (h.kind.clone(), h.slots, h.lzo, h.down))
        .collect()
}

#[test]
fn grammar_table_ok() {
    let local = HostKind::Local;
    let cases: Vec<(&str, Expect)> = vec![
        ("", vec![]),
        ("   \n\t ", vec![]),
        ("# only a comment", vec![]),
        ("localhost", vec![(local.clone(), 2, false, false)]),
        ("localhost/3", vec![(local.clone(), 3, false, false)]),
        ("localhost=5", vec![(local.clone(), 5, false, false)]),
        ("localhost/1,down", vec![(local.clone(), 1, false, true)]),
        ("box", vec![(tcp("box", 3632), 4, false, false)]),
        ("box:4000", vec![(tcp("box", 4000), 4, false, false)]),
        ("box/8", vec![(tcp("box", 3632), 8, false, false)]),
        ("box=8", vec![(tcp("box", 3632), 8, false, false)]),
        ("box:4000/8", vec![(tcp("box", 4000), 8, false, false)]),
        ("box/8:4000", vec![(tcp("box", 4000), 8, false, false)]),
        ("box:4000/8,lzo", vec![(tcp("box", 4000), 8, true, false)]),
        ("box,lzo", vec![(tcp("box", 3632), 4, true, false)]),
        ("box,down", vec![(tcp("box", 3632), 4, false, true)]),
        ("box,lzo,down", vec![(tcp("box", 3632), 4, true, true)]),
        (
            "10.0.0.7:3633",
            vec![(tcp("10.0.0.7", 3633), 4, false, false)],
        ),
        (
            "build-01.example.com/16",
            vec![(tcp("build-01.example.com", 3632), 16, false, false)],
        ),
        (
            "localhost:3632",
            vec![(tcp("localhost", 3632), 4, false, false)],
        ),
        ("[::1]", vec![(tcp("::1", 3632), 4, false, false)]),
        ("[::1]:4000", vec![(tcp("::1", 4000), 4, false, false)]),
        (
            "[2001:db8::5]:4000/6,lzo",
            vec![(tcp("2001:db8::5", 4000), 6, true, false)],
        ),
        (
            "[fe80::1%eth0]/2",
            vec![(tcp("fe80::1%eth0", 3632), 2, false, false)],
        ),
        (
            "alice@box",
            vec![(ssh(Some("alice"), "box", None), 4, false, false)],
        ),
        ("@box", vec![(ssh(None, "box", None), 4, false, false)]),
        ("@box/10", vec![(ssh(None, "box", None), 10, false, false)]),
        ("@box=10", vec![(ssh(None, "box", None), 10, false, false)]),
        (
            "bob@box/3:/opt/distcc/bin/distccd",
            vec![(
                ssh(Some("bob"), "box", Some("/opt/distcc/bin/distccd")),
                3,
                false,
                false,
            )],
        ),
        (
            "bob@box:distccd,lzo",
            vec![(ssh(Some("bob"), "box", Some("distccd")), 4, true, false)],
        ),
        (
            "bob@box/2,lzo,down",
            vec![(ssh(Some("bob"), "box", None), 2, true, true)],
        ),
        (
            "@10.1.2.3",
            vec![(ssh(None, "10.1.2.3", None), 4, false, false)],
        ),
        (
            "localhost/2 a b:99 @c",
            vec![
                (local.clone(), 2, false, false),
                (tcp("a", 3632), 4, false, false),
                (tcp("b", 99), 4, false, false),
                (ssh(None, "c", None), 4, false, false),
            ],
        ),
        (
            "a # comment @b\n  c/2 # more\n#whole line\n@d",
            vec![
                (tcp("a", 3632), 4, false, false),
                (tcp("c", 3632), 2, false, false),
                (ssh(None, "d", None), 4, false, false),
            ],
        ),
        (
            "a#comment-glued b\nc",
            vec![
                (tcp("a", 3632), 4, false, false),
                (tcp("c", 3632), 4, false, false),
            ],
        ),
        ("--randomize a", vec![(tcp("a", 3632), 4, false, false)]),
        (
            "--localslots=3 --localslots_cpp=9 @a",
            vec![(ssh(None, "a", None), 4, false, false)],
        ),
    ];
    for (input, expect) in cases {
        let list = parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(summary(&list), expect, "input {input:?}");
    }
}

#[test]
fn grammar_table_errors() {
    let cases: &[(&str, &str)] = &[
        (
            "a b foo:bar",
            r#"bad host spec "foo:bar" (token 3, byte 4): port is not a number"#,
        ),
        ("foo:", "port is not a number"),
        ("foo:12ab", "port is not a number"),
        ("foo:0", "out of range"),
        ("foo:65536", "out of range"),
        ("foo:1:2", "IPv6 addresses must be written in brackets"),
        ("fe80::1", "IPv6 addresses must be written in brackets"),
        ("foo/x", "slot limit is not a number"),
        ("foo/", "slot limit is not a number"),
        ("foo/0", "slot limit must be at least 1"),
        ("foo/2/3", "slot limit given twice"),
        ("foo:1/2:3", "port given twice"),
        (":4000", "empty host name"),
        ("/4", "empty host name"),
        ("[::1", "missing ']'"),
        ("[nope]:4000", "is not an IPv6 address"),
        ("[::1]x", "unexpected \"x\""),
        (
            "foo,cpp,lzo",
            "pump mode is not supported: hoardcc preprocesses locally; drop ',cpp'",
        ),
        ("@foo,cpp", "pump mode is not supported"),
        ("foo,auth", "',auth') is not supported"),
        ("foo,auth=gss", "',auth') is not supported"),
        ("foo,zip", "unknown option \"zip\""),
        ("foo,", "unknown option \"\""),
        ("+zeroconf", "zeroconf host discovery is not supported"),
        ("--frobnicate", "unknown global option"),
        ("--localslots=x", "not a positive number"),
        ("--localslots=0", "not a positive number"),
        ("--localslots_cpp=", "not a positive number"),
        ("alice@", "empty host name"),
        ("alice@[::1]", "cannot be an IPv6 literal"),
        ("@box:", "empty remote command"),
        ("@box:cmd/4", "\"@box:cmd/4\""), // no error: command keeps the '/'
        ("@box/4/5", "slot limit given twice"),
        ("localhost/2:3632", "localhost takes no port"),
        ("localhost,cpp", "pump mode"),
        ("a\nb\n  bad:x", "(token 3, byte 6)"),
        ("ho$t", "invalid character '$' in host name"),
        ("@h!", "invalid character '!'"),
    ];
    for (input, want) in cases {
        match parse(input) {
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(want),
                    "input {input:?}: {msg:?} lacks {want:?}"
                );
            }
            Ok(list) if *input == "@box:cmd/4" => assert_eq!(
                list.hosts[0].kind,
                ssh(None, "box", Some("cmd/4")),
                "command keeps slashes"
            ),
            Ok(list) => panic!("input {input:?} parsed: {list:?}"),
        }
    }
}

#[test]
fn error_carries_position() {
    let err = parse("ok1 ok2\n   x/0").unwrap_err();
    match err {
        HostsError::Parse {
            token,
            index,
            offset,
            problem,
        } => {
            assert_eq!(token, "x/0");
            assert_eq!(index, 3);
            assert_eq!(offset, 11);
            assert_eq!(problem, SpecProblem::SlotsZero);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn global_options_recorded() {
    let list = parse("--randomize --localslots=6 a").unwrap();
    assert!(list.randomize);
    assert_eq!(list.local_slots, Some(6));
    let list = parse("a").unwrap();
    assert!(!list.randomize);
    assert_eq!(list.local_slots, None);
}

#[test]
fn token_and_keys() {
    let list = parse("alice@box/2 @box2 h:99 [::1]:5 localhost/3 h2").unwrap();
    let keys: Vec<String> = list.hosts.iter().map(HostSpec::key).collect();
    assert_eq!(
        keys,
        [
            "alice@box",
            "box2",
            "h:99",
            "[::1]:5",
            "localhost",
            "h2:3632"
        ]
    );
    assert_eq!(list.hosts[0].token, "alice@box/2");
    assert!(list.hosts[0].is_ssh() && !list.hosts[0].is_local());
    assert!(list.hosts[4].is_local() && !list.hosts[4].is_ssh());
    assert!(!list.hosts[2].is_ssh() && !list.hosts[2].is_local());
}

#[test]
fn ordered_excludes_down_and_keeps_order() {
    let list = parse("a b,down c d").unwrap();
    let names: Vec<String> = list.ordered(7).iter().map(|h| h.token.clone()).collect();
    assert_eq!(names, ["a", "c", "d"]);
    assert!(!list.is_empty());
    assert!(parse("# nothing").unwrap().is_empty());
    // All hosts down: listed, but nothing usable.
    let down = parse("a,down").unwrap();
    assert!(!down.is_empty());
    assert!(down.ordered(1).is_empty());
}

#[test]
fn ordered_randomize_is_seeded_permutation() {
    let list = parse("--randomize h1 h2 h3 h4 h5 h6 h7 h8 h9,down").unwrap();
    let order = |seed| -> Vec<String> { list.ordered(seed).into_iter().map(|h| h.token).collect() };
    assert_eq!(order(42), order(42), "same seed, same order");
    let mut sorted = order(42);
    sorted.sort();
    assert_eq!(sorted, ["h1", "h2", "h3", "h4", "h5", "h6", "h7", "h8"]);
    let distinct: std::collections::HashSet<Vec<String>> = (0..20).map(order).collect();
    assert!(distinct.len() > 1, "different seeds give different orders");
}

#[test]
fn pick_weighted_follows_the_slots_and_skips_localhost() {
    let list = parse("@a/3 @b/1 @c/4,down").unwrap();
    let mut count: HashMap<String, u32> = HashMap::new();
    for seed in 0..4000 {
        let h = list.pick_weighted(seed).expect("a remote host");
        assert_eq!(
            list.pick_weighted(seed),
            Some(h.clone()),
            "same seed, same host"
        );
        *count.entry(h.token).or_default() += 1;
    }
    assert_eq!(count.len(), 2, "{count:?}: a down host is never picked");
    let (a, b) = (count["@a/3"], count["@b/1"]);
    // 3000 : 1000 expected; splitmix64 keeps well inside these bounds.
    assert!((2700..3300).contains(&a) && a + b == 4000, "{count:?}");
    let half = parse("localhost/1 @a/1").unwrap();
    let local = (0..1000)
        .filter(|&s| half.pick_weighted(s).is_none())
        .count();
    assert!(
        (400..600).contains(&local),
        "{local} of 1000 picks were local"
    );
    assert_eq!(parse("@a,down").unwrap().pick_weighted(7), None);
}

fn files_of(files: &[(&str, &str)]) -> impl Fn(&Path) -> Option<String> {
    let map: HashMap<PathBuf, String> = files
        .iter()
        .map(|(k, v)| (PathBuf::from(k), v.to_string()))
        .collect();
    move |p| map.get(p).cloned()
}

fn resolved(
    vars: &[(&str, &str)],
    config: Option<(&str, &Path)>,
    files: &[(&str, &str)],
) -> Option<(Vec<String>, HostSource)> {
    let env = env_of(vars);
    let read = files_of(files);
    resolve(&env, config, Some(Path::new("/home/u")), &read)
        .unwrap()
        .map(|(list, src)| (list.hosts.into_iter().map(|h| h.token).collect(), src))
}

#[test]
fn resolve_precedence() {
    let cfg = Path::new("/home/u/.config/hoardcc/config.toml");
    let all_files = [
        ("/home/u/.distcc/hosts", "userfile"),
        ("/etc/distcc/hosts", "sysfile"),
        ("/dd/hosts", "distccdir"),
    ];
    let all_env = [("HOARDCC_HOSTS", "hh"), ("DISTCC_HOSTS", "dh")];

    let (h, s) = resolved(&all_env, Some(("cfg", cfg)), &all_files).unwrap();
    assert_eq!(
        (h, s),
        (vec!["hh".into()], HostSource::Env("HOARDCC_HOSTS".into()))
    );

    let (h, s) = resolved(&all_env[1..], Some(("cfg", cfg)), &all_files).unwrap();
    assert_eq!(
        (h, s),
        (vec!["dh".into()], HostSource::Env("DISTCC_HOSTS".into()))
    );

    let (h, s) = resolved(&[], Some(("cfg", cfg)), &all_files).unwrap();
    assert_eq!(
        (h, s),
        (vec!["cfg".into()], HostSource::ConfigFile(cfg.into()))
    );

    let (h, s) = resolved(&[], None, &all_files).unwrap();
    assert_eq!(
        (h, s),
        (
            vec!["userfile".into()],
            HostSource::File("/home/u/.distcc/hosts".into())
        )
    );

    let (h, s) = resolved(&[("DISTCC_DIR", "/dd")], None, &all_files).unwrap();
    assert_eq!(
        (h, s),
        (
            vec!["distccdir".into()],
            HostSource::File("/dd/hosts".into())
        )
    );

    // DISTCC_DIR set but its hosts file missing: falls through to /etc, not ~/.distcc.
    let (h, s) = resolved(&[("DISTCC_DIR", "/other")], None, &all_files).unwrap();
    assert_eq!(
        (h, s),
        (
            vec!["sysfile".into()],
            HostSource::File("/etc/distcc/hosts".into())
        )
    );

    let (h, s) = resolved(&[], None, &all_files[1..]).unwrap();
    assert_eq!(
        (h, s),
        (
            vec!["sysfile".into()],
            HostSource::File("/etc/distcc/hosts".into())
        )
    );

    assert_eq!(resolved(&[], None, &[]), None);
}

#[test]
fn resolve_blank_env_is_present_and_empty() {
    let (h, s) = resolved(
        &[("DISTCC_HOSTS", "  ")],
        None,
        &[("/etc/distcc/hosts", "x")],
    )
    .unwrap();
    assert!(h.is_empty());
    assert_eq!(s, HostSource::Env("DISTCC_HOSTS".into()));
    let (h, _) = resolved(&[("HOARDCC_HOSTS", ""), ("DISTCC_HOSTS", "a")], None, &[]).unwrap();
    assert!(h.is_empty());
}

#[test]
fn resolve_error_names_source() {
    let env = env_of(&[("DISTCC_HOSTS", "good bad:port")]);
    let err = resolve(&env, None, None, &files_of(&[])).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("$DISTCC_HOSTS"), "{msg}");
    assert!(msg.contains(r#""bad:port" (token 2"#), "{msg}");

    let env = env_of(&[]);
    let read = files_of(&[("/etc/distcc/hosts", "a\n+zeroconf\n")]);
    let msg = resolve(&env, None, None, &read).unwrap_err().to_string();
    assert!(
        msg.contains("/etc/distcc/hosts") && msg.contains("zeroconf"),
        "{msg}"
    );

    let cfg = Path::new("/c/config.toml");
    let msg = resolve(&env, Some(("x,cpp", cfg)), None, &read)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("/c/config.toml") && msg.contains("drop ',cpp'"),
        "{msg}"
    );
}

#[test]
fn resolve_without_home_skips_user_file() {
    let env = env_of(&[]);
    let read = files_of(&[("/home/u/.distcc/hosts", "u")]);
    assert!(resolve(&env, None, None, &read).unwrap().is_none());
}
