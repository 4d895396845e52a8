//! Red team (issue 7): what a holder of a compile-only key — installed as
//! `restrict,command="<hoardcc> serve"` in the real sshd's `authorized_keys` — can make the
//! server do. Each attack speaks the native protocol (or stock distcc's) on the stdin and
//! stdout of `ssh -T hoardtest-forced`, with the crate's own encoders, and every test asserts
//! both halves: the request was refused or contained (a `Refused`/error, or a compile that
//! fails), and nothing was run, read or written (no marker file exists, the secret planted in
//! the server user's home appears in no reply, no file appeared in that home). Every wait has
//! a timeout. Harness: [`crate::support::attack`]. Classes 0–6 are here; 7 in
//! [`slots`], 8–9 in [`admission`], 10–11 (through the real wrapper) in [`client`].
//!
//! On an unfixed server (commit 168dc12) every test but `forced_key_runs_only_serve` fails,
//! each for its attack (marker created, secret returned, hang, disk or memory used), except
//! `idle_lane_is_closed` and `compiler_resource_limits`, whose `server.toml` settings
//! (`idle_timeout_secs`, `frame_timeout_secs`, `max_memory_mib`, `max_file_size_mib`) that
//! server does not know yet.
//!
//! | test | class | proves |
//! |---|---|---|
//! | `forced_key_runs_only_serve` | 0 | the key gives no shell, whatever command the client asks for |
//! | `native_options_that_run_programs` | 1 | `-fmodule-mapper=\|sh`, `-fplugin=`, `-wrapper`, `-B`, `-specs=` run nothing |
//! | `distcc_options_that_run_programs` | 1 | the same (and `--for-assembler`) over the stock distcc protocol |
//! | `aliases_of_refused_options` | 2 | `--prefix=./` + a client `specs`, `--for-assembler=`, `-Wa,-adhln=/abs`, `--specs=` |
//! | `options_that_carry_options` | 3 | `-fcompare-debug=-fplugin=…`, `-Xclang -load`, clang `--config` (when clang exists) |
//! | `names_that_become_options` | 4 | `source_name`, `output_name`, `extra_outputs`, context names `-fplugin=…` / `@file` |
//! | `source_cannot_read_server_files` | 5 | `.incbin`, directives-only `#include "/abs"`, `-E` leak nothing |
//! | `compiler_environment_is_cleared` | 6 | `SetEnv`/`Subsystem` variables do not reach the compiler |
//! | `client_locale_cannot_load_a_catalog` | 6 | `LANGUAGE=../../../proc/self/cwd/xx`, odd `LC_ALL` load no client catalog |
//! | `default_slot_dir_squatters_do_not_block` | 7 | FIFO / 0755 dir / symlink / held flock in the server's default slot dir |
//! | `slot_dir_override_squatters_do_not_hang` | 7 | FIFO / held flock in a shared `HOARDCC_SLOT_DIR`: hello, answer and EOF in bounded time |
//! | `no_work_before_admission` | 8 | a 1 GiB LZ4 claim and 100 000 context files cost no memory or disk while the host is full |
//! | `idle_lane_is_closed` | 8 | a lane that sends nothing after the hello is closed after the idle timeout |
//! | `compiler_resource_limits` | 8 | `#include "/dev/zero"` and `.space 1<<30` stop in bounded time and disk |
//! | `distcc_jobs_take_a_slot` | 9 | a stock-distcc job does not compile while the host-wide slots are full |
//! | `distcc_compiler_dies_with_its_client` | 9 | a stock-distcc compile is killed when its client disconnects |
//! | `security_sigkilled_compilers_do_not_fail_make` | 10 | `make -j4` through the wrapper survives SIGKILLed server compilers, same objects |
//! | `hostile_server_escapes_are_neutralised` | 11 | a server's terminal escapes are not replayed (SGR colour is) |
//! | `hostile_server_non_elf_object_is_not_installed` | 11 | a non-ELF `.o` from a server is refused; the local compile's object is installed |

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use hoardcc::proto::msg::{Blob, Message, SourceKind};
use tempfile::TempDir;

use crate::support::attack::{
    contains, context, job, mo_catalog, refused_or_failed, Incoming, Target,
};
use crate::support::{run_with_timeout, SshdOptions};

mod admission;
mod client;
mod slots;

/// Bound on one job's answer.
const T: Duration = Duration::from_secs(60);
/// Bound on a hello, and on the server closing after EOF.
const SHORT: Duration = Duration::from_secs(10);
/// `nobody`: the other local user of the slot tests.
const NOBODY: u32 = 65534;

/// One attack's verdict: `None` if contained, else what went wrong.
fn verdict(
    t: &Target,
    what: &str,
    answer: &Incoming,
    evidence: &[u8],
    must_refuse: bool,
) -> Option<String> {
    let mut bad = Vec::new();
    if must_refuse && !refused_or_failed(answer) {
        bad.push("was compiled successfully instead of being refused".to_string());
    }
    let markers = t.markers_present();
    if !markers.is_empty() {
        bad.push(format!("ran a program on the server (markers {markers:?})"));
    }
    if contains(evidence, t.secret.as_bytes()) {
        bad.push("leaked the secret from the server user's home".into());
    }
    let home = t.home_changes();
    if !home.is_empty() {
        bad.push(format!("wrote into the server user's home: {home:?}"));
    }
    for m in &markers {
        let _ = std::fs::remove_file(t.marker(m));
    }
    (!bad.is_empty()).then(|| format!("{what}: {} (answer: {})", bad.join("; "), describe(answer)))
}

fn describe(a: &Incoming) -> String {
    match a {
        Incoming::Msg(Message::Result3(r)) => {
            let err = r.stderr.unpack(1 << 20).unwrap_or_default();
            format!(
                "Result exit {} stderr {:?}",
                r.exit_code,
                String::from_utf8_lossy(&err[..err.len().min(300)])
            )
        }
        Incoming::Msg(Message::Refused { reason, .. }) => format!("Refused {reason:?}"),
        Incoming::Msg(Message::ServerError { message, .. }) => format!("ServerError {message:?}"),
        Incoming::Broken(why) => format!("broken lane: {why}"),
        other => format!("{other:?}"),
    }
}

fn report(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} attack(s) not contained:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn target() -> Target {
    Target::start(SshdOptions::default())
}

/// An executable script `name` in a fresh world-readable directory.
fn script_dir(name: &str, text: &str) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("hoardcc-redteam-bin-")
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Context files of an attack: (name, bytes).
type Ctx<'a> = Vec<(&'a str, Vec<u8>)>;
/// An attack on the native path: (what, compiler, arguments, context files).
type NativeCase<'a> = (&'a str, &'a str, Vec<&'a str>, Ctx<'a>);

/// A spec file (for `-B`, `--prefix`, `-specs`) whose `invoke_as` runs `sh pwn.sh` instead
/// of the assembler.
const SPECS: &str = "*invoke_as:\n%{!S:-o %|.s |\nsh pwn.sh }\n\n";

/// Context files for a spec attack: the spec file `name` and the `pwn.sh` it runs.
fn specs_ctx<'a>(name: &'a str, specs: &str, pwn: &str) -> Ctx<'a> {
    vec![
        (name, specs.as_bytes().to_vec()),
        ("pwn.sh", pwn.as_bytes().to_vec()),
    ]
}

// ---------------------------------------------------------------------------------------
// 0. The key itself.

#[test]
fn forced_key_runs_only_serve() {
    let t = target();
    let mut failures = Vec::new();
    for remote in [
        vec![format!("sh -c '{}'", t.cmd_spaced("shell"))],
        vec!["-s".into(), "hoardcc".into()],
        vec![t.cmd_spaced("direct")],
    ] {
        let args: Vec<&str> = remote.iter().map(String::as_str).collect();
        let mut cmd = t.sshd.forced_ssh(&args);
        let out = run_with_timeout(&mut cmd, T, "ssh hoardtest-forced CMD");
        let mut evidence = out.stdout.clone();
        evidence.extend_from_slice(&out.stderr);
        failures.extend(verdict(
            &t,
            &format!("ssh forced {remote:?}"),
            &Incoming::Eof,
            &evidence,
            false,
        ));
    }
    report(failures);
}

// ---------------------------------------------------------------------------------------
// 1. Options that run programs.

#[test]
fn native_options_that_run_programs() {
    let t = target();
    let evil = t.evil_so("plugin");
    let specs = SPECS.to_string();
    let pwn = t.cmd_spaced("specs");
    let mapper = format!("-fmodule-mapper=|sh -c {}", t.cmd("mapper"));
    let mapper2 = format!("-fmodule-mapper=|/bin/sh -c {}", t.cmd("mapper2"));
    let wrapper = format!("sh,-c,{}", t.cmd("wrapper"));
    let src = "int f(void) { return 1; }\n";
    let cases: Vec<NativeCase> = vec![
        (
            "module mapper |sh",
            "g++",
            vec!["-fmodules-ts", &mapper],
            vec![],
        ),
        (
            "module mapper |/bin/sh",
            "g++",
            vec!["-fmodules-ts", &mapper2],
            vec![],
        ),
        (
            "-fplugin=./evil.so",
            "gcc",
            vec!["-fplugin=./evil.so"],
            vec![("evil.so", evil.clone())],
        ),
        (
            "-fplugin evil.so (abs via cwd)",
            "gcc",
            vec!["-fplugin=evil.so"],
            vec![("evil.so", evil.clone())],
        ),
        ("-wrapper", "gcc", vec!["-wrapper", &wrapper], vec![]),
        (
            "-B./",
            "gcc",
            vec!["-B./"],
            specs_ctx("specs", &specs, &pwn),
        ),
        (
            "-B .",
            "gcc",
            vec!["-B", "."],
            specs_ctx("specs", &specs, &pwn),
        ),
        (
            "-specs=./s",
            "gcc",
            vec!["-specs=./s"],
            specs_ctx("s", &specs, &pwn),
        ),
    ];
    let mut failures = Vec::new();
    for (what, cc, args, ctx) in cases {
        let mut j = job(cc, &args, src);
        j.context = ctx.iter().map(|(n, d)| context(n, d)).collect();
        let (answer, evidence) = t.run_job(j, T);
        failures.extend(verdict(&t, what, &answer, &evidence, true));
    }
    report(failures);
}

#[test]
fn distcc_options_that_run_programs() {
    let t = target();
    let mapper = format!("-fmodule-mapper=|sh -c {}", t.cmd("mapper"));
    let compare = format!("-fcompare-debug={mapper}");
    let listing = format!("--for-assembler=-adhln={}", t.marker("listing").display());
    let listing2 = format!("-Wa,-adhln={}", t.marker("listing2").display());
    let wrapper = format!("sh,-c,{}", t.cmd("wrapper"));
    let cases: Vec<(&str, Vec<&str>)> = vec![
        (
            "mapper",
            vec!["g++", "-fmodules-ts", &mapper, "-c", "x.cpp", "-o", "x.o"],
        ),
        (
            "gcc -x c++ mapper",
            vec![
                "gcc",
                "-x",
                "c++",
                "-fmodules-ts",
                &mapper,
                "-c",
                "x.c",
                "-o",
                "x.o",
            ],
        ),
        (
            "-fcompare-debug= mapper",
            vec!["g++", "-fmodules-ts", &compare, "-c", "x.cpp", "-o", "x.o"],
        ),
        (
            "for-assembler",
            vec!["gcc", &listing, "-c", "x.c", "-o", "x.o"],
        ),
        (
            "-Wa,-adhln",
            vec!["gcc", &listing2, "-c", "x.c", "-o", "x.o"],
        ),
        (
            "-wrapper",
            vec!["gcc", "-wrapper", &wrapper, "-c", "x.c", "-o", "x.o"],
        ),
        ("-B/tmp", vec!["gcc", "-B/tmp/", "-c", "x.c", "-o", "x.o"]),
    ];
    let mut failures = Vec::new();
    for (what, argv) in cases {
        let out = t.run_distcc(&argv, b"int x;\nasm(\"# listed\");\n", T);
        let answer = match &out.response {
            Some(r) if r.status == 0 => {
                Incoming::Msg(Message::Result3(hoardcc::proto::msg::JobResult {
                    id: 1,
                    exit_code: 0,
                    stdout: Blob::empty(),
                    stderr: Blob::raw(r.stderr.clone()),
                    outputs: vec![],
                    cached: false,
                }))
            }
            Some(_) => Incoming::Eof,
            None => Incoming::Broken("no complete distcc response".into()),
        };
        failures.extend(verdict(
            &t,
            &format!("distcc {what}"),
            &answer,
            &out.evidence,
            true,
        ));
    }
    report(failures);
}

// ---------------------------------------------------------------------------------------
// 2. Aliases of refused options.

#[test]
fn aliases_of_refused_options() {
    let t = target();
    let pwn = t.cmd_spaced("specs");
    let asrsp = format!("-adhln={}\n", t.marker("listing-rsp").display());
    let l1 = format!("--for-assembler=-adhln={}", t.marker("listing1").display());
    let l2 = format!("-adhln={}", t.marker("listing2").display());
    let l3 = format!("-Wa,-adhln={}", t.marker("listing3").display());
    let l4 = format!(
        "-Wa,--listing-lhs-width=1,-ahl={}",
        t.marker("listing4").display()
    );
    let src = "int f(void) { return 1; }\nasm(\"# listed text\");\n";
    let with_specs = |n: &'static str| specs_ctx(n, SPECS, &pwn);
    let cases: Vec<(&str, Vec<&str>, Ctx)> = vec![
        (
            "--prefix=./ + specs",
            vec!["--prefix=./"],
            with_specs("specs"),
        ),
        (
            "--prefix ./ + specs",
            vec!["--prefix", "./"],
            with_specs("specs"),
        ),
        ("--specs=./s", vec!["--specs=./s"], with_specs("s")),
        ("--specs ./s", vec!["--specs", "./s"], with_specs("s")),
        ("--for-assembler=-adhln=/abs", vec![&l1], vec![]),
        (
            "--for-assembler -adhln=/abs",
            vec!["--for-assembler", &l2],
            vec![],
        ),
        ("-Wa,-adhln=/abs", vec![&l3], vec![]),
        ("-Wa,...,-ahl=/abs", vec![&l4], vec![]),
        (
            "--for-assembler=@rsp",
            vec!["--for-assembler=@asrsp"],
            vec![("asrsp", asrsp.clone().into_bytes())],
        ),
        (
            "--for-assembler @rsp",
            vec!["--for-assembler", "@asrsp"],
            vec![("asrsp", asrsp.clone().into_bytes())],
        ),
        (
            "-Wa,@rsp",
            vec!["-Wa,@asrsp"],
            vec![("asrsp", asrsp.clone().into_bytes())],
        ),
    ];
    let mut failures = Vec::new();
    for (what, args, ctx) in cases {
        let mut j = job("gcc", &args, src);
        j.context = ctx.iter().map(|(n, d)| context(n, d)).collect();
        let (answer, evidence) = t.run_job(j, T);
        failures.extend(verdict(&t, what, &answer, &evidence, true));
    }
    report(failures);
}

// ---------------------------------------------------------------------------------------
// 3. Options that carry options.

#[test]
fn options_that_carry_options() {
    let t = target();
    let evil = t.evil_so("carried");
    let mut cases: Vec<(&str, &str, Vec<String>, Ctx)> = vec![
        (
            "-fcompare-debug=-fplugin=./evil.so",
            "gcc",
            vec!["-fcompare-debug=-fplugin=./evil.so".into()],
            vec![("evil.so", evil.clone())],
        ),
        (
            "-fcompare-debug=-fplugin=evil.so",
            "gcc",
            vec!["-fcompare-debug=-fplugin=evil.so".into()],
            vec![("evil.so", evil.clone())],
        ),
        (
            "-Xclang -load",
            "gcc",
            vec![
                "-Xclang".into(),
                "-load".into(),
                "-Xclang".into(),
                "./evil.so".into(),
            ],
            vec![("evil.so", evil.clone())],
        ),
    ];
    if crate::support::attack::on_path("clang") {
        let cfg = "-fplugin=./evil.so\n-Xclang -load -Xclang ./evil.so\n".to_string();
        cases.push((
            "clang --config ./f",
            "clang",
            vec!["--config".into(), "./f".into()],
            vec![("f", cfg.into_bytes()), ("evil.so", evil.clone())],
        ));
        cases.push((
            "clang --config=./f",
            "clang",
            vec!["--config=./f".into()],
            vec![
                ("f", b"-fplugin=./evil.so\n".to_vec()),
                ("evil.so", evil.clone()),
            ],
        ));
    } else {
        eprintln!("no clang on this machine: the clang --config cases are skipped");
    }
    let mut failures = Vec::new();
    for (what, cc, args, ctx) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut j = job(cc, &args, "int f(void) { return 1; }\n");
        j.context = ctx.iter().map(|(n, d)| context(n, d)).collect();
        let (answer, evidence) = t.run_job(j, T);
        failures.extend(verdict(&t, what, &answer, &evidence, true));
    }
    report(failures);
}

// ---------------------------------------------------------------------------------------
// 4. Names that become options.

#[test]
fn names_that_become_options() {
    let t = target();
    let evil = t.evil_so("named");
    let rsp = format!("-wrapper sh,-c,{} x.c\n", t.cmd("rsp"));
    let src = b"int f(void) { return 1; }\n".to_vec();
    let mut failures = Vec::new();
    let base = |kind: SourceKind| {
        let mut j = job("gcc", &[], "int f(void) { return 1; }\n");
        j.source_kind = kind;
        j.header.source_name = "a.i".into();
        j
    };
    // source_name as an option, with a bare extra input in the arguments.
    let mut j = base(SourceKind::Preprocessed);
    j.header.source_name = "-fplugin=./evil.so".into();
    j.header.args = vec!["x.c".into()];
    j.context = vec![context("evil.so", &evil), context("x.c", &src)];
    let (a, e) = t.run_job(j, T);
    failures.extend(verdict(&t, "source_name -fplugin=./evil.so", &a, &e, true));
    // source_name as a response file.
    let mut j = base(SourceKind::Preprocessed);
    j.header.source_name = "@rsp".into();
    j.context = vec![context("rsp", rsp.as_bytes()), context("x.c", &src)];
    let (a, e) = t.run_job(j, T);
    failures.extend(verdict(&t, "source_name @rsp", &a, &e, true));
    // The same names in a directives-only job.
    let mut j = base(SourceKind::DirectivesOnly);
    j.header.source_name = "-fplugin=./evil.so".into();
    j.context = vec![context("evil.so", &evil)];
    let (a, e) = t.run_job(j, T);
    failures.extend(verdict(
        &t,
        "directives-only source_name -fplugin=",
        &a,
        &e,
        true,
    ));
    // output_name, extra_outputs and context names.
    for (what, f) in [
        ("output_name -fplugin=", 0),
        ("output_name @file", 1),
        ("extra_outputs -fplugin=", 2),
        ("extra_outputs @file", 3),
        ("context name -fplugin=", 4),
        ("context name @file", 5),
    ] {
        let mut j = base(SourceKind::Preprocessed);
        j.context = vec![context("evil.so", &evil)];
        match f {
            0 => j.header.output_name = "-fplugin=./evil.so".into(),
            1 => j.header.output_name = "@evil.so".into(),
            2 => j.header.extra_outputs = vec!["-fplugin=./evil.so".into()],
            3 => j.header.extra_outputs = vec!["@evil.so".into()],
            4 => j.context.push(context("-fplugin=./evil.so", &evil)),
            _ => j.context.push(context("@rsp", rsp.as_bytes())),
        }
        let (a, e) = t.run_job(j, T);
        failures.extend(verdict(&t, what, &a, &e, true));
    }
    report(failures);
}

// ---------------------------------------------------------------------------------------
// 5. The source reads files.

#[test]
fn source_cannot_read_server_files() {
    let t = target();
    let secret = t.secret_path.display().to_string();
    let via_proc = format!("/proc/self/root{secret}");
    let cases: Vec<(&str, Vec<&str>, String)> = vec![
        (
            "asm .incbin /abs",
            vec![],
            format!("asm(\".incbin \\\"{secret}\\\"\");\n"),
        ),
        (
            "asm .incbin /proc/self/root",
            vec![],
            format!("asm(\".incbin \\\"{via_proc}\\\"\");\n"),
        ),
        (
            "#include \"/abs\"",
            vec![],
            format!("#include \"{secret}\"\nint x;\n"),
        ),
        (
            "#include </proc/self/root/abs>",
            vec![],
            format!("#include <{via_proc}>\nint x;\n"),
        ),
        (
            "-E with #include",
            vec!["-E"],
            format!("#include \"{secret}\"\n"),
        ),
    ];
    let mut failures = Vec::new();
    for (what, args, src) in cases {
        let (answer, evidence) = t.run_job(job("gcc", &args, &src), T);
        failures.extend(verdict(&t, what, &answer, &evidence, true));
    }
    report(failures);
}

// ---------------------------------------------------------------------------------------
// 6. Environment.

#[test]
fn compiler_environment_is_cleared() {
    let markers = tempfile::Builder::new()
        .prefix("hoardcc-envmark-")
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::set_permissions(markers.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let deps = markers.path().join("deps-from-subsystem-env");
    let sunpro = markers.path().join("deps-from-setenv");
    let t = Target::start(SshdOptions {
        server_env: vec![
            ("SOURCE_DATE_EPOCH".into(), "86400".into()),
            ("DEPENDENCIES_OUTPUT".into(), deps.display().to_string()),
        ],
        extra: vec![format!("SetEnv SUNPRO_DEPENDENCIES={}", sunpro.display())],
        ..SshdOptions::default()
    });
    let src = "const char when[] = __DATE__;\n";
    let (answer, evidence) = t.run_job(job("gcc", &[], src), T);
    let mut failures = Vec::new();
    failures.extend(verdict(&t, "__DATE__", &answer, &evidence, false));
    if contains(&evidence, b"Jan  2 1970") {
        failures
            .push("SOURCE_DATE_EPOCH from the server's environment reached the compiler".into());
    }
    for m in [&deps, &sunpro] {
        if m.exists() {
            failures.push(format!(
                "the compiler saw the server's environment: it wrote {}",
                m.display()
            ));
        }
    }
    report(failures);
}

#[test]
fn client_locale_cannot_load_a_catalog() {
    let t = target();
    let flag = format!("PWNED{}", t.token);
    let mo = mo_catalog(&[
        ("warning: ", &format!("{flag}: ")),
        ("%s", &format!("{flag}%s")),
    ]);
    let ctx = |dir: &str| {
        ["gcc-12", "gcc", "cpplib-12", "cpplib"]
            .iter()
            .map(|d| context(&format!("{dir}/LC_MESSAGES/{d}.mo"), &mo))
            .collect::<Vec<_>>()
    };
    type LocaleCase<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<LocaleCase> = vec![
        (
            "LANGUAGE=../../../proc/self/cwd/xx",
            vec![
                ("LC_ALL", "C.UTF-8"),
                ("LANGUAGE", "../../../proc/self/cwd/xx"),
            ],
            "xx",
        ),
        (
            "LANGUAGE list with a path",
            vec![
                ("LANG", "C.UTF-8"),
                ("LANGUAGE", "fr:../../../../proc/self/cwd/yy"),
            ],
            "yy",
        ),
        (
            "LC_MESSAGES + LANGUAGE path",
            vec![
                ("LC_MESSAGES", "C.UTF-8"),
                ("LANGUAGE", "../../../proc/self/cwd/zz"),
            ],
            "zz",
        ),
        (
            "odd LC_ALL",
            vec![
                ("LC_ALL", "../../../proc/self/cwd/ww"),
                ("LANGUAGE", "../../../proc/self/cwd/ww"),
            ],
            "ww",
        ),
        (
            "LC_ALL with a newline",
            vec![
                ("LC_ALL", "C.UTF-8\nLANGUAGE=../../../proc/self/cwd/vv"),
                ("LANGUAGE", "../../../proc/self/cwd/vv"),
            ],
            "vv",
        ),
    ];
    let mut failures = Vec::new();
    for (what, env, dir) in cases {
        let mut j = job("gcc", &[], "#warning hi\nint x;\n");
        j.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        j.context = ctx(dir);
        let (answer, evidence) = t.run_job(j, T);
        failures.extend(verdict(&t, what, &answer, &evidence, false));
        if contains(&evidence, flag.as_bytes()) {
            failures.push(format!(
                "{what}: the compiler printed the client's message catalog"
            ));
        }
        if matches!(answer, Incoming::Broken(_)) {
            failures.push(format!("{what}: no answer: {}", describe(&answer)));
        }
    }
    report(failures);
}
