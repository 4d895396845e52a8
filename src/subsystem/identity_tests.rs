//! Tests of `hoardcc serve` picking compilers by identity, over in-memory pipes: a job
//! with the client's identity runs on the matching compiler, not on the one that only
//! shares its name; no match is `Mismatch` (or `Refused` to a client without the
//! "compilers" cap) naming both versions; `ListCompilers` is answered.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::tests::{job, lane, options, settings};
use super::*;
use crate::identity::{probe, ProbeOptions};
use crate::proto::msg::{CompilerId, Message};

/// `dir/<name>`: runs the real gcc, saying `version` to `-dumpfullversion` if given, and
/// appending a line to `dir/<name>.ran` for each compile.
fn shim(dir: &Path, name: &str, version: Option<&str>) {
    let lie = version
        .map(|v| format!("case \"$1\" in -dumpfullversion) echo {v}; exit 0;; esac\n"))
        .unwrap_or_default();
    let script = format!(
        "#!/bin/sh\n{lie}for a in \"$@\"; do [ \"$a\" = -c ] && echo x >> {dir}/{name}.ran; done\n\
         exec /usr/bin/gcc \"$@\"\n",
        dir = dir.display()
    );
    let p = dir.join(name);
    std::fs::write(&p, script).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn ran(dir: &Path, name: &str) -> usize {
    std::fs::read_to_string(dir.join(format!("{name}.ran")))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

async fn real_gcc() -> CompilerId {
    probe(Path::new("/usr/bin/gcc"), &ProbeOptions::default())
        .await
        .expect("probe the real gcc")
}

#[tokio::test]
async fn the_job_runs_on_the_compiler_with_its_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let id = real_gcc().await;
    let major = id.version.split('.').next().unwrap().to_string();
    shim(&bin, "gcc", Some("99.1.0"));
    shim(&bin, &format!("gcc-{major}"), None);
    let mut settings = settings(tmp.path());
    settings.sandbox = crate::config::SandboxMode::Off;
    let mut opts = options(tmp.path());
    opts.search_path = Some(format!("{}:/usr/bin:/bin", bin.display()).into());
    let (mut c, sr, sw) = lane();
    let cwd = tmp.path().join("src");
    std::fs::create_dir(&cwd).unwrap();
    let client = async {
        c.hello_with(&["compilers"]).await;
        let mut j = job(1, "gcc", &cwd, "a.c", b"int f(void) { return 1; }\n");
        j.compiler_id = Some(id.clone());
        c.send(&Message::Job3(j)).await;
        match c.answer().await {
            Message::Result3(r) => assert_eq!(r.exit_code, 0, "{r:?}"),
            other => panic!("{other:?}"),
        }
        // Another version: none here.
        let mut j = job(2, "gcc", &cwd, "a.c", b"int f(void) { return 1; }\n");
        let mut other = id.clone();
        other.version = "7.5.0".into();
        j.compiler_id = Some(other);
        c.send(&Message::Job3(j)).await;
        match c.answer().await {
            Message::Mismatch { id: 2, reason } => assert_eq!(
                reason,
                format!(
                    "no compiler matching gcc 7.5.0 ({t}); gcc here is 99.1.0 ({t})",
                    t = id.target
                )
            ),
            other => panic!("{other:?}"),
        }
        // Without an identity the name decides, as before.
        c.send(&Message::Job3(job(3, "gcc", &cwd, "a.c", b"int g;\n")))
            .await;
        assert!(matches!(c.answer().await, Message::Result3(_)));
        // Declared once on the lane, the identity holds for later jobs that carry none.
        c.send(&Message::Identity {
            compiler: "gcc".into(),
            id: id.clone(),
        })
        .await;
        c.send(&Message::Job3(job(
            4, "gcc", &cwd, "a.c", b"int h;
",
        )))
        .await;
        assert!(matches!(c.answer().await, Message::Result3(_)));
        c.send(&Message::ListCompilers).await;
        match c.answer().await {
            Message::Compilers { list } => {
                let gcc = list.iter().find(|o| o.name == "gcc").expect("gcc listed");
                assert_eq!(gcc.id.version, "99.1.0");
                assert_eq!(gcc.path, bin.join("gcc").display().to_string());
                let honest = list
                    .iter()
                    .find(|o| o.name == format!("gcc-{major}"))
                    .expect("gcc-MAJOR listed");
                assert_eq!(honest.id, id);
            }
            other => panic!("{other:?}"),
        }
        c.hang_up();
    };
    let (served, ()) = tokio::join!(serve_with(sr, sw, &settings, &opts), client);
    served.unwrap();
    assert_eq!(ran(&bin, &format!("gcc-{major}")), 2, "jobs 1 and 4");
    assert_eq!(ran(&bin, "gcc"), 1, "only the job without an identity");
}

#[tokio::test]
async fn declared_identities_are_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let settings = settings(tmp.path());
    let opts = options(tmp.path());
    let (mut c, sr, sw) = lane();
    let id = real_gcc().await;
    let client = async {
        c.hello_with(&["compilers", "identity"]).await;
        for n in 0..=crate::proto::msg::MAX_DECLARED_IDENTITIES {
            c.send(&Message::Identity {
                compiler: format!("gcc-{n}"),
                id: id.clone(),
            })
            .await;
        }
        c.hang_up();
    };
    let (served, ()) = tokio::join!(serve_with(sr, sw, &settings, &opts), client);
    let e = served.expect_err("one identity too many ends the session");
    assert!(e.to_string().contains("identities"), "{e}");
}

#[tokio::test]
async fn an_older_client_is_refused_instead() {
    let tmp = tempfile::tempdir().unwrap();
    let settings = settings(tmp.path());
    let opts = options(tmp.path());
    let (mut c, sr, sw) = lane();
    let cwd = tmp.path().join("src");
    let id = real_gcc().await;
    let client = async {
        c.hello_with(&["lz4"]).await;
        let mut j = job(1, "gcc", &cwd, "a.c", b"int x;\n");
        j.compiler_id = Some(CompilerId {
            version: "1.2.3".into(),
            ..id.clone()
        });
        c.send(&Message::Job3(j)).await;
        match c.answer().await {
            Message::Refused { id: 1, reason } => {
                assert!(
                    reason.starts_with("no compiler matching gcc 1.2.3 ("),
                    "{reason}"
                );
                assert!(
                    reason.contains(&format!("gcc here is {}", id.label())),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        // An identity too long to build names from.
        let mut j = job(2, "gcc", &cwd, "a.c", b"int x;\n");
        j.compiler_id = Some(CompilerId {
            version: "9".repeat(100_000),
            ..id.clone()
        });
        c.send(&Message::Job3(j)).await;
        match c.answer().await {
            Message::Refused { id: 2, reason } => assert!(reason.contains("too long"), "{reason}"),
            other => panic!("{other:?}"),
        }
        c.hang_up();
    };
    let (served, ()) = tokio::join!(serve_with(sr, sw, &settings, &opts), client);
    served.unwrap();
}
