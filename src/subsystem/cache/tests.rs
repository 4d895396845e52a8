//! Unit tests of the result cache: the key changes with every part it covers, entries
//! round-trip through the store, only clean results are kept, and the probe works on
//! the real compiler.

use std::ffi::OsString;

use super::*;
use crate::proto::msg::ContextFile;

fn compiler() -> ServerCompiler {
    ServerCompiler {
        invoked: PathBuf::from("/usr/bin/gcc"),
        path: PathBuf::from("/usr/bin/x86_64-linux-gnu-gcc-12"),
        size: 1000,
        mtime: (1_700_000_000, 5),
        version: "12.2.0".into(),
        machine: "x86_64-linux-gnu".into(),
        configured: "Configured with: ../src/configure --prefix=/usr\nThread model: posix".into(),
    }
}

fn job() -> Job {
    Job {
        id: 1,
        header: JobHeader {
            compiler: "gcc".into(),
            args: vec!["-O2".into(), "-g".into()],
            assemble_only: false,
            cwd: "/home/u/src".into(),
            source_name: "a.c".into(),
            output_name: "a.o".into(),
            extra_outputs: vec![],
        },
        source_kind: SourceKind::DirectivesOnly,
        source: Input::Whole(Blob::pack(b"int main(void) { return 0; }\n")),
        context: vec![ContextFile {
            name: "a.h".into(),
            data: Input::Whole(Blob::pack(b"#define A 1\n")),
        }],
        env: vec![("LANG".into(), "C.UTF-8".into())],
        compiler_id: None,
        cache: true,
    }
}

const PATH: &str = "/usr/bin:/bin";

fn key_of(c: &ServerCompiler, path: &str, j: &Job) -> Key {
    key(c, &OsString::from(path), j, 1 << 20).unwrap()
}

#[test]
fn the_key_is_stable_and_ignores_the_job_id_and_flag() {
    let base = key_of(&compiler(), PATH, &job());
    assert_eq!(key_of(&compiler(), PATH, &job()), base);
    let mut j = job();
    j.id = 99;
    j.cache = false;
    assert_eq!(
        key_of(&compiler(), PATH, &j),
        base,
        "id and flag are not content"
    );
}

#[test]
fn no_hit_when_anything_the_result_depends_on_differs() {
    let base = key_of(&compiler(), PATH, &job());
    let mut variants: Vec<(&str, Key)> = Vec::new();
    let mut with = |what: &'static str, c: ServerCompiler, path: &str, edit: &dyn Fn(&mut Job)| {
        let mut j = job();
        edit(&mut j);
        variants.push((what, key_of(&c, path, &j)));
    };
    let same = |_: &mut Job| {};
    with("a flag", compiler(), PATH, &|j| {
        j.header.args[0] = "-O1".into()
    });
    with("one more flag", compiler(), PATH, &|j| {
        j.header.args.push("-Wall".into())
    });
    // Two lists that join to the same text must differ.
    with("flag boundaries", compiler(), PATH, &|j| {
        j.header.args = vec!["-O2-g".into()]
    });
    with("-S", compiler(), PATH, &|j| j.header.assemble_only = true);
    with("the cwd", compiler(), PATH, &|j| {
        j.header.cwd = "/home/u/src2".into()
    });
    with("the source name", compiler(), PATH, &|j| {
        j.header.source_name = "b.c".into()
    });
    with("the output name", compiler(), PATH, &|j| {
        j.header.output_name = "b.o".into()
    });
    with("an extra output", compiler(), PATH, &|j| {
        j.header.extra_outputs.push("a.dwo".into())
    });
    with("the compiler name", compiler(), PATH, &|j| {
        j.header.compiler = "cc".into()
    });
    with("the source kind", compiler(), PATH, &|j| {
        j.source_kind = SourceKind::Preprocessed
    });
    with("the locale", compiler(), PATH, &|j| {
        j.env[0].1 = "de_DE.UTF-8".into()
    });
    with("one byte of source", compiler(), PATH, &|j| {
        j.source = Input::Whole(Blob::pack(b"int main(void) { return 1; }\n"))
    });
    with("one byte of a context file", compiler(), PATH, &|j| {
        j.context[0].data = Input::Whole(Blob::pack(b"#define A 2\n"))
    });
    with("a context file's name", compiler(), PATH, &|j| {
        j.context[0].name = "b.h".into()
    });
    with("one context file more", compiler(), PATH, &|j| {
        j.context.push(ContextFile {
            name: "c.h".into(),
            data: Input::Whole(Blob::empty()),
        })
    });
    with(
        "the server's PATH",
        compiler(),
        "/opt/bin:/usr/bin:/bin",
        &same,
    );
    for (what, edit) in [
        (
            "the compiler's path",
            &(|c: &mut ServerCompiler| c.path = "/usr/bin/gcc-12".into())
                as &dyn Fn(&mut ServerCompiler),
        ),
        ("the compiler's name", &|c| c.invoked = "/usr/bin/cc".into()),
        ("the compiler's size", &|c| c.size += 1),
        ("the compiler's mtime", &|c| c.mtime.1 += 1),
        ("the compiler's version", &|c| c.version = "12.3.0".into()),
        ("the compiler's target", &|c| {
            c.machine = "aarch64-linux-gnu".into()
        }),
        ("the compiler's configuration", &|c| {
            c.configured.push_str(" --enable-x")
        }),
    ] {
        let mut c = compiler();
        edit(&mut c);
        with(what, c, PATH, &same);
    }
    for (what, k) in &variants {
        assert_ne!(*k, base, "{what} must change the key");
    }
    let mut all: Vec<Key> = variants.iter().map(|(_, k)| *k).collect();
    all.sort_by_key(|k| k.0);
    all.dedup();
    assert_eq!(all.len(), variants.len(), "every variant has its own key");
}

#[test]
fn the_key_covers_the_text_not_its_encoding() {
    let text = b"int x;\n".repeat(512);
    let mut packed = job();
    packed.source = Input::Whole(Blob::pack(&text));
    let mut raw = job();
    raw.source = Input::Whole(Blob::raw(text.clone()));
    assert!(matches!(
        packed.source,
        Input::Whole(Blob {
            codec: crate::proto::msg::Codec::Lz4,
            ..
        })
    ));
    assert_eq!(
        key_of(&compiler(), PATH, &packed),
        key_of(&compiler(), PATH, &raw)
    );
}

#[test]
fn time_macros_and_undecodable_input_make_a_job_uncacheable() {
    let path = OsString::from(PATH);
    for (m, text) in [
        ("__DATE__", "const char *d = __DATE__;\n"),
        ("__TIME__", "#define T __TIME__\n"),
        ("__TIMESTAMP__", "puts(__TIMESTAMP__);\n"),
    ] {
        let mut j = job();
        j.source = Input::Whole(Blob::pack(text.as_bytes()));
        assert_eq!(
            key(&compiler(), &path, &j, 1 << 20),
            Err(Uncacheable::TimeMacro(m))
        );
    }
    // The limit counts source and context together.
    let mut j = job();
    j.source = Input::Whole(Blob::raw(vec![b' '; 1000]));
    j.context[0].data = Input::Whole(Blob::raw(vec![b' '; 1000]));
    assert!(key(&compiler(), &path, &j, 2000).is_ok());
    assert!(matches!(
        key(&compiler(), &path, &j, 1999),
        Err(Uncacheable::Input(_))
    ));
    let mut bad = job();
    bad.source = Input::Whole(Blob {
        codec: crate::proto::msg::Codec::Lz4,
        raw_len: 100,
        data: vec![0xff; 10],
    });
    assert!(matches!(
        key(&compiler(), &path, &bad, 1 << 20),
        Err(Uncacheable::Input(_))
    ));
}

fn result(exit_code: i32) -> JobResult {
    JobResult {
        id: 7,
        exit_code,
        stdout: Blob::pack(b""),
        stderr: Blob::pack(b"a.c:1:5: warning: unused variable 'x'\n"),
        outputs: vec![OutputFile {
            name: "a.o".into(),
            data: Blob::pack(&[0x7f, b'E', b'L', b'F', 1, 2, 3]),
        }],
        cached: false,
    }
}

#[test]
fn a_clean_result_round_trips_with_the_new_id_and_the_cached_mark() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s"), 1 << 20).unwrap();
    let k = key_of(&compiler(), PATH, &job());
    assert!(lookup(&store, &k, 1).is_none());
    assert!(record(&store, &k, &result(0)).unwrap());
    let hit = lookup(&store, &k, 42).unwrap();
    assert_eq!(
        hit,
        JobResult {
            id: 42,
            cached: true,
            ..result(0)
        }
    );
    // Another key: nothing.
    let mut j = job();
    j.header.cwd = "/elsewhere".into();
    assert!(lookup(&store, &key_of(&compiler(), PATH, &j), 1).is_none());
}

#[test]
fn errors_cached_answers_and_oversized_results_are_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s"), 64 << 10).unwrap();
    let k = key_of(&compiler(), PATH, &job());
    assert!(!record(&store, &k, &result(1)).unwrap(), "a compile error");
    let mut hit = result(0);
    hit.cached = true;
    assert!(!record(&store, &k, &hit).unwrap(), "already from the cache");
    let mut big = result(0);
    big.outputs[0].data = Blob::raw(vec![1; 9 << 10]);
    assert!(
        !record(&store, &k, &big).unwrap(),
        "over an eighth of the cap"
    );
    assert!(lookup(&store, &k, 1).is_none());
}

#[test]
fn an_entry_that_does_not_decode_is_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s"), 1 << 20).unwrap();
    let k = Key([3; 32]);
    store
        .put_keyed(&k.0, b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff")
        .unwrap();
    assert!(lookup(&store, &k, 1).is_none());
}

#[tokio::test]
async fn the_probe_reads_the_real_compiler_once_per_session() {
    let path = OsString::from(crate::subsystem::sandbox::DEFAULT_PATH);
    let Some(gcc) = crate::subsystem::job::find_on_path("gcc", &path) else {
        eprintln!("SKIPPED: no gcc on {path:?}");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let compilers = || {
        let allow = crate::subsystem::job::AllowList::new(true, vec![], Some(path.clone()));
        crate::subsystem::compilers::Compilers::new(
            allow,
            crate::proto::identity::Rule {
                configured: true,
                binaries: false,
            },
        )
    };
    let session = compilers();
    let a = server_compiler(&gcc, &session).await.expect("gcc probes");
    assert!(a.version.chars().next().unwrap().is_ascii_digit(), "{a:?}");
    assert!(a.machine.contains('-'), "{a:?}");
    assert_eq!(
        a.path,
        std::fs::canonicalize(&gcc).unwrap(),
        "symlinks resolved"
    );
    // The identity is the one the session picks compilers with.
    let id = session.identity(&gcc).await.unwrap();
    assert_eq!(
        (&a.version, &a.machine, &a.configured),
        (&id.version, &id.target, &id.configured)
    );
    // Through a symlink of its own: the same binary, run under another name (which a
    // clang takes its target from), so an identity of its own.
    std::os::unix::fs::symlink(&gcc, dir.path().join("cc-link")).unwrap();
    let c = server_compiler(&dir.path().join("cc-link"), &session)
        .await
        .unwrap();
    assert_eq!((&c.path, c.size, c.mtime), (&a.path, a.size, a.mtime));
    assert_ne!(c.invoked, a.invoked);
    // A compiler is probed once per session: a key and the pick share the probe.
    let runs = dir.path().join("runs");
    let fake = dir.path().join("fakecc");
    let script = format!("#!/bin/sh\necho \"$1\" >> {}\nexit 1\n", runs.display());
    std::fs::write(&fake, script).unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    assert!(server_compiler(&fake, &session).await.is_none());
    let probed = std::fs::read_to_string(&runs).unwrap();
    assert!(probed.contains("-dumpmachine"), "{probed}");
    assert!(server_compiler(&fake, &session).await.is_none());
    assert!(session.identity(&fake).await.is_err());
    assert_eq!(
        std::fs::read_to_string(&runs).unwrap(),
        probed,
        "one probe per session"
    );
    assert!(server_compiler(&fake, &compilers()).await.is_none());
    assert_ne!(
        std::fs::read_to_string(&runs).unwrap(),
        probed,
        "a new session probes"
    );
    assert!(server_compiler(Path::new("/bin/false"), &session)
        .await
        .is_none());
    assert!(server_compiler(Path::new("/nonexistent/cc"), &session)
        .await
        .is_none());
}

/// A whole session over in-memory pipes with the real gcc (the helpers of
/// `subsystem::tests`): the repeated job is answered from the cache while the only
/// compile slot is held elsewhere, so the hit needed no slot; a job that may not use the
/// cache, or differs in a flag, must compile and so is answered `Busy`.
#[tokio::test]
async fn a_session_answers_a_repeated_job_from_the_cache_without_a_slot() {
    use crate::proto::compress::MAX_BLOB;
    use crate::proto::msg::Message;
    use crate::subsystem::tests::{
        expect_result, job as lane_job, lane, options, project, settings,
    };
    use crate::subsystem::{serve_with, slots};

    for server_cache in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let (proj, source, reference) = project(tmp.path());
        let mut settings = settings(tmp.path());
        settings.max_jobs = Some(1);
        settings.cache = server_cache;
        let mut opts = options(tmp.path());
        opts.cache_dir = Some(tmp.path().join("store"));
        let (mut c, sr, sw) = lane();
        let slot_dir = opts.slot_dir.clone();
        let client = async {
            c.hello().await;
            let mut j = lane_job(1, "gcc", &proj, "src/foo.c", &source);
            j.header.args.push("-Wall".into());
            j.cache = true;
            c.send(&Message::Job3(j.clone())).await;
            let first = expect_result(c.answer().await, 1);
            assert_eq!(first.exit_code, 0);
            assert!(!first.cached);
            // -Wall adds no warning to foo.c: the object is the local one.
            assert!(first.outputs[0].data.unpack(MAX_BLOB).unwrap() == reference);

            let held = slots::try_acquire(&slot_dir, 1).unwrap().expect("the slot");
            j.id = 2;
            c.send(&Message::Job3(j.clone())).await;
            if server_cache {
                let hit = expect_result(c.answer().await, 2);
                assert!(hit.cached);
                assert_eq!(
                    JobResult {
                        id: 1,
                        cached: false,
                        ..hit
                    },
                    first,
                    "the same answer"
                );
            } else {
                assert_eq!(c.answer().await, Message::Busy { id: 2 }, "cache = false");
            }
            let mut no_cache = j.clone();
            no_cache.id = 3;
            no_cache.cache = false;
            c.send(&Message::Job3(no_cache)).await;
            assert_eq!(
                c.answer().await,
                Message::Busy { id: 3 },
                "Job.cache = false"
            );
            let mut other_flag = j.clone();
            other_flag.id = 4;
            other_flag.header.args.push("-O1".into());
            c.send(&Message::Job3(other_flag)).await;
            assert_eq!(c.answer().await, Message::Busy { id: 4 }, "another flag");
            drop(held);
            c.hang_up();
        };
        let (served, ()) = tokio::join!(serve_with(sr, sw, &settings, &opts), client);
        served.unwrap();
        let entries = std::fs::read_dir(tmp.path().join("store/results"))
            .map_or(0, |fans| fans.flatten().count());
        assert_eq!(entries, usize::from(server_cache), "cache = {server_cache}");
    }
}
