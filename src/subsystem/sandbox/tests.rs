//! Tests of the compiler sandbox: the locale and environment filter, the choice of
//! toolchain directories, the refusal when the kernel lacks Landlock (with an injected
//! probe), and live runs of gcc and of a hostile stand-in "compiler" under Landlock and
//! the resource limits. Each live attack also runs once without the sandbox, to show
//! that it works there (so the test could fail).

use std::io::ErrorKind;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::*;
use crate::proto::distcc::DistccRequest;
use crate::proto::msg::{Blob, Input, Job, JobHeader, SourceKind};
use crate::subsystem::exec::{self, CompileCommand, Finished};
use crate::subsystem::job::{self, AllowList, PrepareError};

const SECRET: &str = "hoardcc-test-secret-0x5ec7e7";

fn settings() -> ServerSettings {
    ServerSettings {
        compile_timeout: Duration::from_secs(120),
        ..ServerSettings::default()
    }
}

/// The real sandbox, or `None` (with a loud line) on a kernel without Landlock ABI 4.
fn live(settings: &ServerSettings) -> Option<Sandbox> {
    let sandbox = Sandbox::new(settings);
    match sandbox.check() {
        Ok(()) => Some(sandbox),
        Err(e) => {
            eprintln!("SKIPPED: no usable Landlock on this kernel ({e})");
            None
        }
    }
}

fn unsandboxed() -> Sandbox {
    let mut s = settings();
    s.sandbox = SandboxMode::Off;
    Sandbox::new(&s)
}

/// A secret file in a directory of its own, outside every allowed path.
fn secret() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("id_ed25519");
    std::fs::write(&path, SECRET).unwrap();
    (dir, path)
}

async fn run(cmd: &CompileCommand) -> Finished {
    exec::run(cmd, Duration::from_secs(120), &CancellationToken::new())
        .await
        .unwrap()
}

/// `gcc -c src.c -o out.o` in `dir` under `sandbox`'s containment of `dir`.
fn gcc(sandbox: &Sandbox, dir: &Path, source: &str) -> CompileCommand {
    std::fs::write(dir.join("src.c"), source).unwrap();
    CompileCommand {
        program: "/usr/bin/gcc".into(),
        args: ["-c", "src.c", "-o", "out.o"].map(OsString::from).to_vec(),
        cwd: dir.to_path_buf(),
        env: compiler_env(OsStr::new("/usr/bin:/bin"), dir, []),
        containment: sandbox.containment(dir),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn locale_names() {
    for ok in [
        "C",
        "POSIX",
        "C.UTF-8",
        "C.utf8",
        "en",
        "en_US",
        "en_US.UTF-8",
        "de_DE@euro",
        "sr_RS.UTF-8@latin",
        "pt_BR.ISO-8859-1",
        "zh_CN.GB18030",
        "ca_ES.utf8@valencia",
        "es_419.UTF-8",
    ] {
        assert!(is_locale_name(ok), "{ok} should pass");
    }
    for bad in [
        "",
        "../../../proc/self/cwd/xx",
        "/usr/share/locale/de",
        "de/../../x",
        "en_US.UTF-8/../x",
        "en..US",
        "en US",
        "en_US.",
        "en_US.UTF-8@",
        "_US",
        "%n%n%n",
        "en_US:de",
        "de\n",
        "en_US.UTF-8@latin@x",
        &"a".repeat(100),
    ] {
        assert!(!is_locale_name(bad), "{bad:?} should fail");
    }
    assert!(is_language_list("de"));
    assert!(is_language_list("pt_BR:pt:en_GB.UTF-8"));
    for bad in [
        "",
        ":",
        "de::en",
        "de:../../x",
        "de:/tmp/x",
        &"de:".repeat(40),
    ] {
        assert!(!is_language_list(bad), "{bad:?} should fail");
    }
}

#[test]
fn compiler_env_keeps_only_path_tmpdir_and_checked_locales() {
    let env = compiler_env(
        OsStr::new("relative/bin::/opt/cross/bin:/usr/bin"),
        Path::new("/tmp/job"),
        [
            ("LANG", "de_DE.UTF-8"),
            ("LANGUAGE", "../../../proc/self/cwd/xx"),
            ("LC_MESSAGES", "/tmp/evil"),
            ("LC_ALL", "C"),
            ("LC_ALL", "fr_FR.UTF-8"),
            ("LC_EVIL", "C"),
            ("LD_PRELOAD", "/tmp/x.so"),
            ("GCC_EXEC_PREFIX", "./"),
            ("COMPILER_PATH", "."),
            ("HOME", "/home/u"),
            ("PATH", "."),
            ("TMPDIR", "/home/u"),
        ],
    );
    let env: Vec<(String, String)> = env
        .into_iter()
        .map(|(k, v)| (k.into_string().unwrap(), v.into_string().unwrap()))
        .collect();
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        env,
        pairs(&[
            ("PATH", "/opt/cross/bin:/usr/bin:/usr/local/bin:/bin"),
            ("TMPDIR", "/tmp/job"),
            ("LANG", "de_DE.UTF-8"),
            ("LC_ALL", "fr_FR.UTF-8"),
        ])
    );
    assert_eq!(safe_path(OsStr::new("")), OsString::from(DEFAULT_PATH));
    assert!(is_allowed_locale("LANGUAGE", "de:en"));
    assert!(!is_allowed_locale("LANGUAGE", "de:.."));
}

#[test]
fn toolchain_prefix_but_never_home_or_the_jobs() {
    let job = Path::new("/srv/jobs/hoardcc-job-1");
    let home = Some(Path::new("/home/u"));
    let t = |p: &str| toolchain_paths(Path::new(p), home, job);
    assert_eq!(t("/opt/gcc-13/bin/gcc"), [PathBuf::from("/opt/gcc-13")]);
    assert_eq!(t("/opt/gcc-13/gcc"), [PathBuf::from("/opt/gcc-13")]);
    assert_eq!(t("/usr/bin/gcc"), [PathBuf::from("/usr")]);
    // A compiler in ~/bin opens ~/bin, not the home directory.
    assert_eq!(t("/home/u/bin/gcc"), [PathBuf::from("/home/u/bin")]);
    assert_eq!(t("/home/u/gcc"), [PathBuf::from("/home/u/gcc")]);
    assert_eq!(
        t("/home/u/tools/arm/bin/gcc"),
        [PathBuf::from("/home/u/tools/arm")]
    );
    // In /bin (whose parent is /) or next to the jobs: the directory or the file only.
    // (`/bin` may be a link to `/usr/bin`, which adds `/usr`.)
    assert_eq!(t("/bin/gcc")[0], PathBuf::from("/bin"));
    assert_eq!(t("/srv/bin/gcc"), [PathBuf::from("/srv/bin")]);
    assert_eq!(t("/srv/jobs/gcc"), [PathBuf::from("/srv/jobs/gcc")]);
    assert_eq!(t("/gcc"), [PathBuf::from("/gcc")]);

    // A symlink opens both its own directory and the real prefix.
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("gcc-13/bin");
    std::fs::create_dir_all(&real).unwrap();
    std::fs::write(real.join("gcc"), "").unwrap();
    let links = tmp.path().join("links");
    std::fs::create_dir(&links).unwrap();
    std::os::unix::fs::symlink(real.join("gcc"), links.join("cc")).unwrap();
    let canon = tmp.path().canonicalize().unwrap();
    assert_eq!(
        toolchain_paths(&links.join("cc"), home, job),
        [links.clone(), canon.join("gcc-13")]
    );
}

#[test]
fn limits_follow_the_settings() {
    let mut s = settings();
    s.compile_timeout = Duration::from_millis(1500);
    s.max_memory = Some(1 << 30);
    s.max_file_size = None;
    s.max_open_files = 64;
    assert_eq!(
        Limits::from_settings(&s),
        Limits {
            address_space: Some(1 << 30),
            file_size: None,
            open_files: Some(64),
            cpu_secs: Some(2),
        }
    );
}

#[test]
fn too_old_or_no_landlock_refuses_unless_off() {
    let s = settings();
    let none = Sandbox::with_probe(&s, 0, None).check().unwrap_err();
    assert!(matches!(none, SandboxError::Unavailable { .. }));
    let msg = none.to_string();
    assert!(msg.contains("no Landlock"), "{msg}");
    assert!(msg.contains("sandbox = \"off\""), "{msg}");
    let old = Sandbox::with_probe(&s, 3, None).check().unwrap_err();
    assert!(old.to_string().contains("ABI 3"), "{old}");
    assert!(Sandbox::with_probe(&s, MIN_ABI, None).check().is_ok());
    assert!(Sandbox::with_probe(&s, 7, None)
        .containment(Path::new("/tmp/j"))
        .is_sandboxed());

    let mut off = settings();
    off.sandbox = SandboxMode::Off;
    let sandbox = Sandbox::with_probe(&off, 0, None);
    assert!(sandbox.check().is_ok());
    assert!(!sandbox.containment(Path::new("/tmp/j")).is_sandboxed());
}

fn native_job(source: &str, env: Vec<(String, String)>) -> Job {
    Job {
        id: 1,
        header: JobHeader {
            compiler: "gcc".into(),
            args: vec!["-O2".into()],
            assemble_only: false,
            cwd: "/home/u/proj".into(),
            source_name: "a.c".into(),
            output_name: "a.o".into(),
            extra_outputs: vec![],
        },
        source_kind: SourceKind::DirectivesOnly,
        source: Input::Whole(Blob::pack(source.as_bytes())),
        context: vec![],
        env,
        compiler_id: None,
        cache: false,
    }
}

#[test]
fn native_jobs_are_refused_without_landlock() {
    let tmp = tempfile::tempdir().unwrap();
    let allow = AllowList::new(true, vec![], None);
    let s = settings();
    let job = native_job("int x;\n", vec![]);
    match job::prepare(
        &job,
        &allow,
        Some(tmp.path()),
        &crate::config::Admission::default(),
        &Sandbox::with_probe(&s, 0, None),
    ) {
        Err(PrepareError::Refused(reason)) => {
            assert!(reason.contains("cannot sandbox"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Nothing was staged for the refused job.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);

    let mut off = settings();
    off.sandbox = SandboxMode::Off;
    let prepared = job::prepare(
        &job,
        &allow,
        Some(tmp.path()),
        &crate::config::Admission::default(),
        &Sandbox::with_probe(&off, 0, None),
    )
    .unwrap();
    assert!(!prepared.command.containment.is_sandboxed());
}

#[tokio::test]
async fn distcc_jobs_are_refused_without_landlock() {
    let allow = AllowList::new(true, vec![], None);
    let req = DistccRequest {
        version: 1,
        argv: ["gcc", "-c", "a.c", "-o", "a.o"].map(String::from).to_vec(),
        doti: b"int x;\n".to_vec(),
    };
    let sandbox = Sandbox::with_probe(&settings(), 0, None);
    let slots = tempfile::tempdir().unwrap();
    let (mut input, _client) = tokio::io::duplex(64);
    let resp = crate::subsystem::distccd::run_request(
        &req,
        &mut input,
        &allow,
        &settings(),
        slots.path(),
        &sandbox,
    )
    .await
    .expect("a refusal is answered");
    assert_ne!(resp.status, 0);
    assert!(resp.doto.is_empty());
    assert!(
        text(&resp.stderr).contains("cannot sandbox"),
        "{}",
        text(&resp.stderr)
    );
}

#[tokio::test]
async fn incbin_of_a_secret_fails_under_the_sandbox() {
    let (_s, secret) = secret();
    let source = format!("asm(\".incbin \\\"{}\\\"\");\n", secret.display());
    // Without the sandbox the attack works: the secret lands in the object.
    let open = tempfile::tempdir().unwrap();
    let f = run(&gcc(&unsandboxed(), open.path(), &source)).await;
    assert_eq!(f.exit_code, 0, "{}", text(&f.stderr));
    let obj = std::fs::read(open.path().join("out.o")).unwrap();
    assert!(obj.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()));

    let Some(sandbox) = live(&settings()) else {
        return;
    };
    let job = tempfile::tempdir().unwrap();
    let f = run(&gcc(&sandbox, job.path(), &source)).await;
    assert_ne!(
        f.exit_code,
        0,
        "the sandboxed gcc read {}",
        secret.display()
    );
    assert!(!job.path().join("out.o").exists());
    assert!(!text(&f.stderr).contains(SECRET));
}

#[tokio::test]
async fn incbin_of_a_secret_fails_in_a_stock_distcc_job() {
    let (_s, secret) = secret();
    let allow = AllowList::new(true, vec![], None);
    let req = DistccRequest {
        version: 1,
        argv: ["gcc", "-c", "a.c", "-o", "a.o"].map(String::from).to_vec(),
        doti: format!("asm(\".incbin \\\"{}\\\"\");\n", secret.display()).into_bytes(),
    };
    let distcc = |sandbox: Sandbox| {
        let (req, allow) = (&req, &allow);
        async move {
            // The client stays connected (its end is held) while the job runs.
            let (mut input, _client) = tokio::io::duplex(64);
            let slots = tempfile::tempdir().unwrap();
            crate::subsystem::distccd::run_request(
                req,
                &mut input,
                allow,
                &settings(),
                slots.path(),
                &sandbox,
            )
            .await
            .expect("the client is still there")
        }
    };
    let resp = distcc(unsandboxed()).await;
    assert_eq!(resp.status, 0, "{}", text(&resp.stderr));
    assert!(resp
        .doto
        .windows(SECRET.len())
        .any(|w| w == SECRET.as_bytes()));

    let Some(sandbox) = live(&settings()) else {
        return;
    };
    let resp = distcc(sandbox).await;
    assert_ne!(resp.status, 0);
    assert!(resp.doto.is_empty());
}

#[tokio::test]
async fn include_of_an_absolute_secret_fails_in_a_native_job() {
    let (_s, secret) = secret();
    let source = format!("#include \"{}\"\nint x;\n", secret.display());
    let allow = AllowList::new(true, vec![], None);
    // The secret is not C: including it is an error either way, but only without the
    // sandbox does gcc get to read (and quote) it.
    let tmp = tempfile::tempdir().unwrap();
    let job = native_job(&source, vec![]);
    let p = job::prepare(
        &job,
        &allow,
        Some(tmp.path()),
        &Default::default(),
        &unsandboxed(),
    )
    .unwrap();
    let f = run(&p.command).await;
    assert!(text(&f.stderr).contains(SECRET), "{}", text(&f.stderr));

    let Some(sandbox) = live(&settings()) else {
        return;
    };
    let p = job::prepare(
        &job,
        &allow,
        Some(tmp.path()),
        &Default::default(),
        &sandbox,
    )
    .unwrap();
    assert!(p.command.containment.is_sandboxed());
    let f = run(&p.command).await;
    let err = text(&f.stderr);
    assert_ne!(f.exit_code, 0);
    assert!(!err.contains(SECRET), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
}

#[tokio::test]
async fn a_normal_compile_works_and_matches_an_unsandboxed_one() {
    let Some(sandbox) = live(&settings()) else {
        return;
    };
    let source = "#include <stdio.h>\nint main(void) { puts(\"hi\"); return 0; }\n";
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut sandboxed = gcc(&sandbox, a.path(), source);
    let mut open = gcc(&unsandboxed(), b.path(), source);
    for cmd in [&mut sandboxed, &mut open] {
        // The same command line and the same directory name for both.
        cmd.args.insert(0, "-g".into());
        cmd.args.insert(
            0,
            format!("-fdebug-prefix-map={}=.", cmd.cwd.display()).into(),
        );
    }
    let f = run(&sandboxed).await;
    assert_eq!(f.exit_code, 0, "{}", text(&f.stderr));
    assert_eq!(run(&open).await.exit_code, 0);
    assert_eq!(
        std::fs::read(a.path().join("out.o")).unwrap(),
        std::fs::read(b.path().join("out.o")).unwrap()
    );
}

/// A C helper that connects to 127.0.0.1:`argv[1]` and says `CONNECTED`.
const CONNECT_C: &str = r#"
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
int main(int argc, char **argv) {
    struct sockaddr_in a = {0};
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0 || argc < 2) { perror("socket"); return 2; }
    a.sin_family = AF_INET;
    a.sin_port = htons(atoi(argv[1]));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) { perror("connect"); return 1; }
    puts("CONNECTED");
    return 0;
}
"#;

/// A stand-in compiler that tries everything a hijacked compiler would.
struct Evil {
    _dir: tempfile::TempDir,
    program: PathBuf,
    _secret_dir: tempfile::TempDir,
    marker: PathBuf,
    listener: TcpListener,
}

impl Evil {
    fn new() -> Evil {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let c = dir.path().join("connect.c");
        std::fs::write(&c, CONNECT_C).unwrap();
        let st = std::process::Command::new("/usr/bin/gcc")
            .arg(&c)
            .arg("-o")
            .arg(bin.join("tcpconnect"))
            .status()
            .unwrap();
        assert!(st.success());
        let (secret_dir, secret) = secret();
        let marker = secret_dir.path().join("marker");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        let script = format!(
            "#!/bin/sh\n\
             cat '{secret}'\n\
             echo pwned > '{marker}' && echo WROTE-OUTSIDE\n\
             ls '{home}' >/dev/null && echo HOME-READABLE\n\
             '{bin}/tcpconnect' {port}\n\
             kill -0 {me} && echo SIGNALLED-OUTSIDE\n\
             echo inside > \"$TMPDIR/inside\" && echo WROTE-INSIDE\n\
             cp /bin/true \"$TMPDIR/t\" && \"$TMPDIR/t\" && echo EXEC-IN-JOB\n\
             ln -s '{secret}' \"$TMPDIR/link\" && echo SYMLINK\n\
             mkfifo \"$TMPDIR/fifo\" && echo FIFO\n\
             ln '{secret}' \"$TMPDIR/hard\" && echo HARDLINK\n\
             exit 0\n",
            secret = secret.display(),
            marker = marker.display(),
            bin = bin.display(),
            port = listener.local_addr().unwrap().port(),
            me = std::process::id(),
        );
        let program = bin.join("evilcc");
        std::fs::write(&program, script).unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        Evil {
            _dir: dir,
            program,
            _secret_dir: secret_dir,
            marker,
            listener,
        }
    }

    async fn run(&self, sandbox: &Sandbox) -> (String, bool) {
        let job = tempfile::tempdir().unwrap();
        let cmd = CompileCommand {
            program: self.program.clone(),
            args: vec![],
            cwd: job.path().to_path_buf(),
            env: compiler_env(OsStr::new("/usr/bin:/bin"), job.path(), []),
            containment: sandbox.containment(job.path()),
        };
        let f = run(&cmd).await;
        assert_eq!(f.exit_code, 0, "{}", text(&f.stderr));
        eprintln!("stand-in compiler's stderr:\n{}", text(&f.stderr));
        let accepted = match self.listener.accept() {
            Ok(_) => true,
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            Err(e) => panic!("accept: {e}"),
        };
        (text(&f.stdout), accepted)
    }
}

#[tokio::test]
async fn a_hijacked_compiler_reads_writes_connects_and_signals_nothing_outside() {
    let evil = Evil::new();
    // Unsandboxed, every attempt succeeds.
    let (out, accepted) = evil.run(&unsandboxed()).await;
    for word in [
        SECRET,
        "WROTE-OUTSIDE",
        "HOME-READABLE",
        "CONNECTED",
        "SIGNALLED-OUTSIDE",
        "EXEC-IN-JOB",
        "SYMLINK",
        "FIFO",
        "HARDLINK",
    ] {
        assert!(
            out.contains(word),
            "{word} missing without the sandbox: {out}"
        );
    }
    assert!(accepted);
    std::fs::remove_file(&evil.marker).unwrap();

    let Some(sandbox) = live(&settings()) else {
        return;
    };
    let (out, accepted) = evil.run(&sandbox).await;
    for word in [
        SECRET,
        "WROTE-OUTSIDE",
        "HOME-READABLE",
        "CONNECTED",
        "EXEC-IN-JOB",
        "SYMLINK",
        "FIFO",
        "HARDLINK",
    ] {
        assert!(!out.contains(word), "{word} under the sandbox: {out}");
    }
    if kernel_abi() >= SCOPE_ABI {
        assert!(!out.contains("SIGNALLED-OUTSIDE"), "{out}");
    }
    assert!(
        out.contains("WROTE-INSIDE"),
        "the job directory must stay writable: {out}"
    );
    assert!(!accepted, "the sandboxed compiler reached the listener");
    assert!(!evil.marker.exists());
}

#[tokio::test]
async fn environment_is_cleared() {
    let Some(sandbox) = live(&settings()) else {
        return;
    };
    let job = tempfile::tempdir().unwrap();
    let cmd = CompileCommand {
        program: "/usr/bin/env".into(),
        args: vec![],
        cwd: job.path().to_path_buf(),
        env: compiler_env(
            OsStr::new("/usr/bin"),
            job.path(),
            [("LANG", "C.UTF-8"), ("HOME", "/x")],
        ),
        containment: sandbox.containment(job.path()),
    };
    let f = run(&cmd).await;
    let mut names: Vec<String> = text(&f.stdout)
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.to_owned()))
        .collect();
    names.sort();
    assert_eq!(names, ["LANG", "PATH", "TMPDIR"]);
}

#[tokio::test]
async fn dev_zero_include_is_stopped_by_the_sandbox_and_by_the_memory_limit() {
    let source = "#include \"/dev/zero\"\n";
    // The address-space limit alone (no Landlock) stops it within a bounded time.
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = gcc(&unsandboxed(), dir.path(), source);
    cmd.containment = Containment::limits_only(Limits {
        address_space: Some(512 << 20),
        ..Limits::default()
    });
    let started = Instant::now();
    let f = run(&cmd).await;
    assert_ne!(f.exit_code, 0);
    assert!(started.elapsed() < Duration::from_secs(60));
    let err = text(&f.stderr);
    assert!(err.contains("memory"), "{err}");

    let Some(sandbox) = live(&settings()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let f = run(&gcc(&sandbox, dir.path(), source)).await;
    assert_ne!(f.exit_code, 0);
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(
        text(&f.stderr).contains("Permission denied"),
        "{}",
        text(&f.stderr)
    );
}

#[tokio::test]
async fn space_beyond_the_file_size_limit_fails() {
    let mut s = settings();
    s.max_file_size = Some(1 << 20);
    let Some(sandbox) = live(&s) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let f = run(&gcc(&sandbox, dir.path(), "asm(\".space 4<<20\");\n")).await;
    assert_ne!(f.exit_code, 0, "a 4 MiB object under a 1 MiB limit");
    // Under the limit the same source compiles.
    s.max_file_size = Some(16 << 20);
    let sandbox = live(&s).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let f = run(&gcc(&sandbox, dir.path(), "asm(\".space 4<<20\");\n")).await;
    assert_eq!(f.exit_code, 0, "{}", text(&f.stderr));
    assert!(std::fs::metadata(dir.path().join("out.o")).unwrap().len() >= 4 << 20);
}

#[tokio::test]
async fn limits_reach_the_compiler() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        address_space: Some(3 << 30),
        file_size: Some(5 << 20),
        open_files: Some(77),
        cpu_secs: Some(42),
    };
    let cmd = CompileCommand {
        program: "/bin/cat".into(),
        args: vec!["/proc/self/limits".into()],
        cwd: dir.path().to_path_buf(),
        env: vec![],
        containment: Containment::limits_only(limits),
    };
    let out = text(&run(&cmd).await.stdout);
    let row = |name: &str| -> Vec<String> {
        let line = out.lines().find(|l| l.starts_with(name)).unwrap();
        line[name.len()..]
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(row("Max cpu time")[..2], ["42", "47"]);
    assert_eq!(row("Max file size")[..2], ["5242880", "5242880"]);
    assert_eq!(row("Max open files")[..2], ["77", "77"]);
    assert_eq!(row("Max address space")[..2], ["3221225472", "3221225472"]);
    assert_eq!(row("Max core file size")[..2], ["0", "0"]);
}
