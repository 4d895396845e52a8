//! Unit tests of `install-server`'s pure parts: the target and host entry grammar, the
//! remote scripts' quoting, the probe's parsing, the authorized_keys line, the platform
//! check and the key files.

use super::scripts::{self, arch_compatible, authorized_line, is_safe, Probe};
use super::*;

#[test]
fn targets_parse_with_the_host_list_grammar() {
    let t = parse_target("@buildbox").unwrap();
    assert_eq!(
        (t.user.as_deref(), t.host.as_str(), t.slots),
        (None, "buildbox", None)
    );
    let t = parse_target("alice@buildbox/8").unwrap();
    assert_eq!(
        (t.user.as_deref(), t.host.as_str(), t.slots),
        (Some("alice"), "buildbox", Some(8))
    );
    let t = parse_target("buildbox").unwrap();
    assert_eq!(t.ssh_token(), "@buildbox");
    for bad in [
        "@box:/usr/bin/hoardcc",
        "@box,lzo",
        "@a @b",
        "@",
        "box:3632",
        "",
    ] {
        assert!(parse_target(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn the_host_entry_parses_back_to_the_exec_route() {
    let (entry, spec) = host_entry(&parse_target("alice@buildbox/8").unwrap()).unwrap();
    assert_eq!(entry, "alice@buildbox/8:~/.local/bin/hoardcc");
    assert_eq!(spec.slots, 8);
    assert_eq!(expected_wire(&spec), Wire::Native);
    let (entry, spec) = host_entry(&parse_target("@buildbox").unwrap()).unwrap();
    assert_eq!(entry, "@buildbox:~/.local/bin/hoardcc");
    assert_eq!(spec.key(), "buildbox");
    assert!(matches!(
        spec.kind,
        HostKind::Ssh { command: Some(ref c), .. } if c == REMOTE_BIN
    ));
}

#[test]
fn scripts_survive_any_login_shell() {
    for s in [
        scripts::PROBE,
        scripts::UPLOAD,
        scripts::VERSION,
        scripts::CHECK,
        scripts::AUTHORIZE,
    ] {
        assert!(is_safe(s), "{s}");
        assert!(!s.contains('\n'));
    }
    let cmd = remote_command("echo \"$1\"", &["a b", "c"]);
    assert_eq!(cmd, "sh -c 'echo \"$1\"' hoardcc-install 'a b' 'c'");
    assert!(std::panic::catch_unwind(|| remote_command("true", &["it's"])).is_err());
}

/// The scripts really run under sh: a fake HOME, a fake binary, both outcomes.
#[test]
fn upload_and_authorize_scripts_run_under_sh() {
    let home = tempfile::tempdir().unwrap();
    let sh = |script: &str, args: &[&str], input: &[u8]| {
        use std::io::Write;
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("hoardcc-install")
            .args(args)
            .env("HOME", home.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    };
    let fake = b"#!/bin/sh\necho hoardcc 9.9.9\n";
    let hash = sha256_hex(fake);
    let size = fake.len().to_string();
    let probe = Probe::parse(&String::from_utf8_lossy(
        &sh(scripts::PROBE, &[], b"").stdout,
    ));
    assert!(!probe.exists);
    assert_eq!(probe.home, home.path().display().to_string());
    let out = sh(scripts::UPLOAD, &["t1", &hash, &probe.hasher, &size], fake);
    assert!(out.status.success(), "{out:?}");
    let bin = home.path().join(".local/bin/hoardcc");
    assert!(bin.exists());
    let probe = Probe::parse(&String::from_utf8_lossy(
        &sh(scripts::PROBE, &[], b"").stdout,
    ));
    assert!(probe.exists);
    assert_eq!(probe.version.as_deref(), Some("hoardcc 9.9.9"));
    if !probe.hasher.is_empty() {
        assert_eq!(probe.hash.as_deref(), Some(hash.as_str()));
    }
    // A binary that cannot run is refused with its stderr, and leaves nothing behind.
    let broken = b"#!/nonexistent/interpreter\n";
    let out = sh(
        scripts::UPLOAD,
        &[
            "t2",
            &sha256_hex(broken),
            &probe.hasher,
            &broken.len().to_string(),
        ],
        broken,
    );
    assert_eq!(
        out.status.code(),
        Some(scripts::EXIT_DOES_NOT_RUN as i32),
        "{out:?}"
    );
    assert!(!String::from_utf8_lossy(&out.stderr).trim().is_empty());
    assert_eq!(std::fs::read(&bin).unwrap(), fake, "the old binary stays");
    let left: Vec<_> = std::fs::read_dir(home.path().join(".local/bin"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    // A short copy is refused.
    let out = sh(scripts::UPLOAD, &["t3", &hash, &probe.hasher, "9999"], fake);
    assert!(!out.status.success());

    // authorized_keys: added once, kept, then a conflict for the same key elsewhere.
    let ak = home.path().join(".ssh/authorized_keys");
    std::fs::create_dir_all(ak.parent().unwrap()).unwrap();
    std::fs::write(&ak, "ssh-ed25519 AAAAother other@x").unwrap(); // no final newline
    let line = authorized_line(
        &home.path().display().to_string(),
        "ssh-ed25519 AAAAC3NzaKEY",
    )
    .unwrap();
    for want in ["authorized=added", "authorized=present"] {
        let out = sh(scripts::AUTHORIZE, &[&line, "AAAAC3NzaKEY", "s"], b"");
        assert!(out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains(want));
    }
    let text = std::fs::read_to_string(&ak).unwrap();
    assert_eq!(text, format!("ssh-ed25519 AAAAother other@x\n{line}\n"));
    let out = sh(scripts::AUTHORIZE, &["restrict x", "AAAAother", "s"], b"");
    assert_eq!(out.status.code(), Some(scripts::EXIT_KEY_CONFLICT as i32));
    assert!(String::from_utf8_lossy(&out.stderr).contains("other@x"));
}

#[test]
fn probe_output_is_parsed_and_checked() {
    let p = Probe::parse(
        "home=/home/u\nos=Linux\narch=x86_64\nhasher=sha256sum\nexists=yes\nhash=ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789\nversion=hoardcc 0.1.0\n",
    );
    assert_eq!(p.home, "/home/u");
    assert_eq!(p.hash.as_deref().map(str::len), Some(64));
    assert_eq!(p.existing_hash(), p.hash.as_deref());
    let p = Probe::parse("hasher=rm -rf /\nexists=yes\nhash=nothex\n");
    assert_eq!(p.hasher, "", "only the two known hashers travel back");
    assert_eq!(p.hash, None);
    assert!(p.existing_hash().unwrap().starts_with("unknown"));
    assert_eq!(Probe::parse("exists=no\n").existing_hash(), None);
}

#[test]
fn platforms_are_compared_by_architecture() {
    assert!(arch_compatible("x86_64", "x86_64"));
    assert!(arch_compatible("x86_64", "amd64"));
    assert!(arch_compatible("aarch64", "arm64"));
    assert!(arch_compatible("x86", "x86_64"));
    assert!(arch_compatible("x86_64", ""));
    assert!(arch_compatible("x86_64", "weird9000"));
    assert!(!arch_compatible("x86_64", "aarch64"));
    assert!(!arch_compatible("aarch64", "x86_64"));
    assert!(!arch_compatible("x86_64", "i686"));
}

#[test]
fn the_authorized_line_is_restricted_and_forced() {
    let l = authorized_line("/home/u/", "ssh-ed25519 AAAAC3Nza hoardcc").unwrap();
    assert_eq!(
        l,
        "restrict,command=\"/home/u/.local/bin/hoardcc serve\" ssh-ed25519 AAAAC3Nza hoardcc-compile-only"
    );
    for home in ["relative", "/home/a b", "/home/\"q", "/home/it's"] {
        assert!(authorized_line(home, "ssh-ed25519 AAAA").is_err(), "{home}");
    }
    assert!(authorized_line("/h", "ssh-ed25519").is_err());
    assert!(authorized_line("/h", "ssh-ed25519 AA'AA").is_err());
}

#[test]
fn a_key_is_generated_once_then_reused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hoardcc-box");
    let first = load_or_create_key(&path, "box").unwrap();
    assert!(first.created);
    assert!(first.public.starts_with("ssh-ed25519 "));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let again = load_or_create_key(&path, "box").unwrap();
    assert!(!again.created);
    assert_eq!(again.public, first.public);
    assert_eq!(again.blob(), first.blob());
    // Named by its .pub, or as a private key whose .pub is gone.
    let by_pub = load_or_create_key(&dir.path().join("hoardcc-box.pub"), "box").unwrap();
    assert_eq!(
        (by_pub.private, by_pub.public),
        (path.clone(), first.public.clone())
    );
    std::fs::remove_file(dir.path().join("hoardcc-box.pub")).unwrap();
    let by_private = load_or_create_key(&path, "box").unwrap();
    assert_eq!(by_private.public, first.public);
    assert!(load_or_create_key(&dir.path().join("missing.pub"), "box").is_err());
}

#[test]
fn the_ssh_config_block_uses_only_the_compile_key() {
    let dest = Destination {
        alias: "box".into(),
        hostname: "10.0.0.5".into(),
        port: 2222,
        user: "builder".into(),
        identity_files: vec![],
        proxy_jump: Some("gw".into()),
        user_known_hosts: vec![],
        identities_only: false,
        server_alive_interval: None,
        server_alive_count_max: None,
    };
    let block = ssh_config_block("box-hoardcc", &dest, Path::new("/k/hoardcc-box"));
    assert_eq!(
        block,
        "Host box-hoardcc\n    HostName 10.0.0.5\n    Port 2222\n    User builder\n    IdentityFile /k/hoardcc-box\n    IdentitiesOnly yes\n    ProxyJump gw\n"
    );
}
