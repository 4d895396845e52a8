//! Tests for the option policy: the lists are sorted, real-world flags pass, every class of
//! attack from issue 7 is refused in several spellings, the client's table agrees with the
//! policy, and (property) an accepted argv holds nothing outside the allow-list.

use super::*;
use crate::args::table::{self, Form, Kind, LocalKind};
use proptest::prelude::*;

fn argv(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

#[test]
fn lists_are_sorted_and_unique() {
    fn sorted(what: &str, names: &[&str]) {
        for pair in names.windows(2) {
            assert!(pair[0] < pair[1], "{what}: {:?} ≥ {:?}", pair[0], pair[1]);
        }
    }
    let names = |l: &[(&'static str, Rule)]| l.iter().map(|(n, _)| *n).collect::<Vec<_>>();
    sorted("F_FLAGS", lists::F_FLAGS);
    sorted("F_NEGATIVE_ONLY", lists::F_NEGATIVE_ONLY);
    sorted("F_VALUES", &names(lists::F_VALUES));
    sorted("F_FAMILIES", lists::F_FAMILIES);
    sorted("M_FLAGS", lists::M_FLAGS);
    sorted("M_VALUES", &names(lists::M_VALUES));
    sorted("G_FLAGS", lists::G_FLAGS);
    sorted("G_VALUES", &names(lists::G_VALUES));
    sorted("STANDARDS", lists::STANDARDS);
    sorted("LANGUAGES", lists::LANGUAGES);
    sorted("ASM_PIECES", lists::ASM_PIECES);
    sorted("CHARSETS", lists::CHARSETS);
    sorted("MLLVM", &names(lists::MLLVM));
    sorted(
        "OPTIONS",
        &OPTIONS.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
    );
    for list in [
        lists::F_VALUES,
        lists::M_VALUES,
        lists::G_VALUES,
        lists::MLLVM,
    ] {
        for (name, rule) in list {
            if let Rule::OneOf(words) | Rule::IntOr(words) = rule {
                sorted(name, words);
            }
        }
    }
    // No flag is both fully allowed and negative-only.
    for n in lists::F_NEGATIVE_ONLY {
        assert!(lists::F_FLAGS.binary_search(n).is_err(), "{n}");
    }
}

/// Real command lines' compile flags (Lua, zstd, CMake and autoconf defaults, the e2e
/// tests): every one must pass, each line as a whole.
const SAFE: &[&str] = &[
    "-O2 -g -Wall -Wextra -std=gnu99 -DLUA_COMPAT_5_3 -DLUA_USE_LINUX -fPIC",
    "-fno-strict-aliasing -fstack-protector-strong -D_FORTIFY_SOURCE=2 -fvisibility=hidden",
    "-ffunction-sections -fdata-sections -march=x86-64-v2 -flto -fsanitize=address",
    "-O3 -DNDEBUG -Wshadow -Wstrict-aliasing=1 -Wswitch-enum -Wdeclaration-after-statement",
    "-Wstrict-prototypes -Wundef -Wpointer-arith -Wvla -Wformat=2 -Winit-self -Wcast-qual",
    "-Wcast-align -Wwrite-strings -Wredundant-decls -Wmissing-prototypes -Wc++-compat",
    "-DXXH_NAMESPACE=ZSTD_ -DZSTD_MULTITHREAD -pthread -DZSTD_LEGACY_SUPPORT=5",
    "-O0 -g3 -ggdb -gdwarf-4 -gsplit-dwarf -gz=zlib -gno-column-info -gline-tables-only",
    "-Os -Oz -Og -Ofast -O -O1 -O3",
    "-std=c++17 -std=gnu++20 -std=c11 -std=c2x -std=iso9899:1999 -ansi -pedantic",
    "-pedantic-errors -Werror -Werror=format-security -Wno-error=unused -Wno-unused-parameter",
    "-Wframe-larger-than=2048 -Wimplicit-fallthrough=3 -Wbidi-chars=unpaired,ucn -W -w",
    "-fno-common -fno-omit-frame-pointer -fomit-frame-pointer -fwrapv -ftrapv -fno-exceptions",
    "-fno-rtti -fvisibility-inlines-hidden -fno-plt -fno-semantic-interposition -fpie -fPIE",
    "-fstack-clash-protection -fcf-protection=full -fcf-protection -ftrivial-auto-var-init=zero",
    "-fdiagnostics-color=always -fcolor-diagnostics -fno-diagnostics-show-caret -fmessage-length=0",
    "-fmax-errors=5 -ferror-limit=0 -ftemplate-backtrace-limit=0 -fno-caret-diagnostics",
    "-fdebug-prefix-map=/home/u/src=. -ffile-prefix-map=/a=/b -fmacro-prefix-map=/c=.",
    "-fprofile-update=atomic -fprofile-correction -fno-profile-arcs -fno-test-coverage",
    "-flto=auto -flto=8 -flto=thin -flto=jobserver -ffat-lto-objects -fno-fat-lto-objects",
    "-fsanitize=address,undefined -fno-sanitize-recover=all -fsanitize-trap=undefined",
    "-fno-sanitize=vptr -fsanitize-address-use-after-scope -fopenmp -fopenmp-simd",
    "-fno-builtin -fno-builtin-memcpy -ffreestanding -fno-math-errno -ffast-math -fno-fast-math",
    "-fexcess-precision=standard -ffp-contract=off -frecord-gcc-switches -ftime-report",
    "-fopt-info -fopt-info-vec-missed -funroll-loops -ftree-vectorize -fno-tree-vectorize",
    "-finput-charset=utf-8 -fexec-charset=UTF-8 -fwide-exec-charset=UTF-32LE -ftabstop=4 -fpermissive -fms-extensions",
    "-march=haswell -mtune=generic -mcpu=cortex-a72+crc -march=armv8-a+crypto -mabi=lp64",
    "-m64 -m32 -mx32 -msse4.2 -mavx2 -mfma -mno-avx512f -mno-red-zone -mcmodel=kernel",
    "-mfpmath=sse -mstackrealign -mgeneral-regs-only -mindirect-branch=thunk-extern",
    "-mfunction-return=thunk-extern -mindirect-branch-register -mthumb -mfloat-abi=hard",
    "-mbranch-protection=standard -mprefer-vector-width=256 -mpreferred-stack-boundary=4",
    "-Wa,--noexecstack -Wa,-mrelax-relocations=no -Wa,--noexecstack,--64 -Wa,-g",
    "--param max-inline-insns-single=100 --param=ssp-buffer-size=4 --param=l1-cache-size=32",
    "-x c -xc++ -x c++-cpp-output -x cpp-output -x objective-c",
    "-DPATH=/usr/share/x -D X -UX -U NDEBUG -DSTR=\"a\" -DF(x)=x -D_GNU_SOURCE -DA$B=1",
    "-pipe -pg -Qunused-arguments -target x86_64-linux-gnu --target=aarch64-linux-gnu -arch arm64",
    "-mllvm -inline-threshold=100 -mllvm -x86-asm-syntax=intel -nostdinc -undef -trigraphs",
    "-fno-modules -fno-stack-usage -fno-save-optimization-record -fno-auto-profile",
    // Linux kernel (x86_64 defconfig, gcc 12).
    "-nostdinc -fno-PIE -mno-sse -mno-mmx -mno-sse2 -mno-3dnow -mno-avx -mskip-rax-setup",
    "-mno-80387 -mno-fp-ret-in-387 -mpreferred-stack-boundary=3 -mcmodel=kernel -mno-red-zone",
    "-mindirect-branch=thunk-extern -mindirect-branch-register -mharden-sls=all -fno-jump-tables",
    "-fno-delete-null-pointer-checks -fno-allow-store-data-races -fno-stack-protector -pg",
    "-mrecord-mcount -mfentry -fcf-protection=none -falign-jumps=1 -fstrict-flex-arrays=3",
    "-fzero-call-used-regs=used-gpr -fno-strict-overflow -fconserve-stack -fno-ipa-sra",
    "-fpatchable-function-entry=16,16 -fsanitize=kernel-address --param asan-globals=1",
    "-DKBUILD_MODNAME=\"x\" -fno-var-tracking-assignments -fno-asynchronous-unwind-tables",
    // Distribution defaults (Debian, Fedora) and CMake / autoconf.
    "-g -O2 -ffile-prefix-map=/build/pkg-1.0=. -fstack-protector-strong -Wformat",
    "-Werror=format-security -fcf-protection -pipe -fexceptions -grecord-gcc-switches",
    "-fasynchronous-unwind-tables -fstack-clash-protection -m64 -mtune=generic",
    "-flto=auto -ffat-lto-objects -O3 -DNDEBUG -fPIC -fvisibility=hidden -std=gnu++17",
    "-fdiagnostics-color=always -Winvalid-pch -DHAVE_CONFIG_H -g -O2",
    // clang.
    "-fcolor-diagnostics -fno-limit-debug-info -fstandalone-debug -Wno-unused-command-line-argument",
    "-fno-spell-checking -fmacro-backtrace-limit=0 -fconstexpr-steps=1000000 -fno-rtti",
    "-ffile-compilation-dir=. -fdebug-compilation-dir=. -fsanitize=fuzzer-no-link",
];

#[test]
fn real_world_flags_pass() {
    let mut failures = Vec::new();
    for line in SAFE {
        if let Err(r) = check_server_args(&argv(line)) {
            failures.push(format!("{line:?}: {r}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Attacks and other things a server must not run, grouped by class, each spelt several
/// ways. Each entry is one command line; it must be refused as a whole, and the refusal
/// must name one of its arguments.
const REFUSED: &[(&str, &[&str])] = &[
    (
        "options that run programs",
        &[
            "-fmodules-ts -fmodule-mapper=|sh",
            "-fmodule-mapper=|sh -fmodules-ts",
            "-fmodule-mapper==|sh -c id",
            "-fmodules-ts",
            "-fplugin=./evil.so",
            "-fplugin=evil",
            "-fplugin-arg-evil-k=v",
            "-fpass-plugin=p.so",
            "-wrapper gdb,--args",
            "--wrapper=x",
            "-Xclang -load -Xclang x.so",
            "-load x.so",
            "-foffload=nvptx-none",
            "-foffload-options=-lm",
            "-fuse-ld=/tmp/ld",
            "-no-canonical-prefixes",
            "-fno-integrated-cc1 -Xclang -load",
        ],
    ),
    (
        "aliases the deny-list did not know",
        &[
            "--prefix=./",
            "--prefix ./",
            "--pref=./",
            "-B./",
            "-B .",
            "-Bprefix",
            "--for-assembler=@rsp",
            "--for-assembler @rsp",
            "--for-assem=-adhln=/home/u/.profile",
            "-Wa,@rsp",
            "-Wa,-adhln=/home/u/.profile",
            "-Wa,-a=x",
            "-Wa,--MD,x.d",
            "-Wa,-o,x.o",
            "-Wa,-I,/etc",
            "-Wa,--noexecstack,-a",
            "-Xassembler -a",
            "--for-linker=-rpath",
            "-Wl,-rpath,/x",
            "-Wp,-MD,x.d",
            "-Wp,-imacros,/etc/passwd",
            "-Xpreprocessor -include",
            "-Xlinker -T",
            "--specs=x",
            "-specs=x",
            "-specs x",
            "--include=/etc/passwd",
            "--include-directory=/etc",
            "--sysroot=/",
            "--imacros=x",
            "--output=x.o",
            "--language=assembler",
            "--std=c99",
            "--machine-arch=native",
            "--param=max-inline-insns=../x",
        ],
    ),
    (
        "options that carry options or files",
        &[
            "-fcompare-debug=-fplugin=./evil.so",
            "-fcompare-debug",
            "-fcompare-debug-second",
            "-fcompare-debug-not-overridden",
            "--config ./f",
            "--config=./f",
            "--config-system-dir=/",
            "-fdump-tree-all",
            "-fdump-rtl-expand=/tmp/x",
            "-fdump-final-insns=/tmp/x",
            "-fopt-info-all=/home/u/.profile",
            "-fopt-info=x",
            "-fprofile-generate",
            "-fprofile-use=/home/u/x",
            "-fprofile-arcs",
            "-fprofile-dir=/tmp",
            "-fauto-profile=x",
            "--coverage",
            "-ftest-coverage",
            "-fstack-usage",
            "-fcallgraph-info=su",
            "-ftime-trace",
            "-ftime-trace=/tmp/x",
            "-fsave-optimization-record",
            "-fcrash-diagnostics-dir=/tmp/x",
            "-fsanitize-blacklist=/etc/passwd",
            "-fsanitize-ignorelist=x",
            "-fbasic-block-sections=list=/etc/passwd",
            "-fdiagnostics-format=json-file",
            "-fdiagnostics-format=sarif-file",
            "-fmodule-file=x.pcm",
            "-fmodule-map-file=/etc/passwd",
            "-fmodules-cache-path=/tmp",
            "-fmodules",
            "-fexec-charset=ISO-2022-CN-EXT",
            "-finput-charset=../../x",
            "-fwide-exec-charset=/tmp/x",
            "-fxray-attr-list=x",
            "-finstrument-functions-exclude-file-list=a\nb",
            "-ivfsoverlay x.yaml",
            "-include /etc/passwd",
            "-imacros /etc/passwd",
            "-I/etc",
            "-isystem /etc",
            "-iquote .",
            "-MD",
            "-MF x.d",
            "-MMD",
            "-M",
            "-aux-info x",
            "-dumpbase x",
            "-dumpdir /tmp/",
            "-save-temps",
            "-save-temps=obj",
            "-dA",
            "-da",
            "-dD",
            "-mllvm -info-output-file=/tmp/x",
            "-mllvm -inline-threshold=../x",
            "-fprofile-instr-generate",
            "-march=native",
            "-mtune=native",
            "-mcpu=native",
            "-march=../../x",
            "-march=",
            "-march=/x",
            "-mllvm",
        ],
    ),
    (
        "modes, outputs and inputs the server sets itself",
        &[
            "-E",
            "-E -fdirectives-only",
            "-c",
            "-S",
            "-o x.o",
            "-ox.o",
            "-o/home/u/.profile",
            "foo.c",
            "-O2 foo.c",
            "/etc/passwd",
            "../x.c",
            "-",
            "@args.rsp",
            "@/etc/passwd",
            "-x assembler",
            "-x assembler-with-cpp",
            "-x c-header",
            "-xada",
            "-x",
            "-D",
            "-D -fplugin=x.so",
            "-D-fplugin=x.so",
            "-D@x",
            "-U -fplugin=x",
            "-D=1",
            "-DX=a\0b",
            "-std=c99x",
            "-std=../x",
            "-Ox",
            "-O999",
            "-gfoo",
            "-gz=/x",
            "-ggdb4",
            "-gmodules",
            "-W,a",
            "-Wl",
            "-Wa,",
            "-W-foo",
            "-Wno-",
            "-Wfoo=/x",
            "-f",
            "-fno-",
            "-fno-plugin",
            "-fvisibility=/x",
            "-fsanitize=../../x",
            "-flto=x/y",
            "-fno-builtin-",
            "-mno-",
            "-mfoo",
            "-m",
            "--param",
            "--param x",
            "--param=x=../y",
            "-target",
            "-target ../x",
            "-v",
            "-###",
            "--version",
            "-print-prog-name=cc1",
            "-Q",
            "-pie",
            "-shared",
            "-static",
            "-pthreads",
            "-p2",
            "",
        ],
    ),
];

#[test]
fn attacks_are_refused_in_every_spelling() {
    let mut failures = Vec::new();
    for (class, lines) in REFUSED {
        for line in *lines {
            let args: Vec<String> = if line.contains('\n') || line.contains('\0') {
                vec![line.to_string()]
            } else if line.is_empty() {
                vec![String::new()]
            } else {
                argv(line)
            };
            match check_server_args(&args) {
                Ok(()) => failures.push(format!("{class}: {line:?} was accepted")),
                Err(r) => {
                    let named = args.iter().any(|a| a.starts_with(r.option.as_str()))
                        || r.option.starts_with(args[0].as_str());
                    if !named {
                        failures.push(format!("{class}: {line:?}: {r} names no argument"));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every class keeps several spellings (issue 7: more than one each), and a spelling
    // pasted twice is one lost: each class has at least ten distinct ones.
    for (class, lines) in REFUSED {
        let distinct: std::collections::HashSet<&&str> = lines.iter().collect();
        assert!(
            distinct.len() == lines.len() && distinct.len() >= 10,
            "{class}: {} spellings, {} distinct",
            lines.len(),
            distinct.len()
        );
    }
}

#[test]
fn refusals_say_which_and_why() {
    let r = check_server_args(&argv("-O2 -fplugin=./evil.so -g")).unwrap_err();
    assert_eq!(r.option, "-fplugin=./evil.so");
    assert_eq!(r.why, Why::NotAllowed);
    assert!(r.to_string().contains("\"-fplugin=./evil.so\""), "{r}");
    let r = check_server_args(&argv("-march=native")).unwrap_err();
    assert_eq!((r.option.as_str(), r.why), ("-march=native", Why::BadValue));
    let r = check_server_args(&argv("-O2 foo.c")).unwrap_err();
    assert_eq!((r.option.as_str(), r.why), ("foo.c", Why::ExtraInput));
    let r = check_server_args(&argv("-x")).unwrap_err();
    assert_eq!(r.why, Why::MissingValue);
    let r = check_server_args(&argv("-D -fplugin=x")).unwrap_err();
    assert_eq!((r.option.as_str(), r.why), ("-D -fplugin=x", Why::BadValue));
    // Long arguments are refused and cut in the message.
    let long = format!("-D{}", "X".repeat(MAX_ARG_LEN));
    let r = check_arg(&long).unwrap_err();
    assert_eq!(r.why, Why::TooLong);
    assert!(r.option.len() <= SHOWN_LEN);
    let many = vec!["-O2".to_string(); MAX_ARGS + 1];
    assert_eq!(check_server_args(&many).unwrap_err().why, Why::TooLong);
    assert!(check_server_args(&many[..MAX_ARGS]).is_ok());
    // A refusal cut inside a multi-byte character stays valid UTF-8.
    let wide = format!("-fé{}", "é".repeat(300));
    assert!(check_arg(&wide).unwrap_err().option.len() <= SHOWN_LEN);
}

#[test]
fn names_that_could_be_options_are_refused() {
    for ok in [
        "foo.c",
        "src/foo.c",
        "/abs/foo.c",
        "../x/foo.o",
        "a-b.c",
        "x@y.c",
        "é.c",
        "dir/-x.c",
        ".hidden.c",
    ] {
        assert_eq!(check_name(ok), Ok(()), "{ok}");
    }
    let bad: &[(&str, Why)] = &[
        ("", Why::Empty),
        ("-fplugin=./evil.so", Why::LooksLikeOption),
        ("-o", Why::LooksLikeOption),
        ("--x.c", Why::LooksLikeOption),
        ("-", Why::LooksLikeOption),
        ("@rsp", Why::LooksLikeOption),
        ("@/etc/passwd", Why::LooksLikeOption),
        ("a\0b.c", Why::BadCharacter),
        ("a\nb.c", Why::BadCharacter),
        ("a\x1b[2J.c", Why::BadCharacter),
    ];
    for (name, why) in bad {
        assert_eq!(check_name(name).map_err(|r| r.why), Err(*why), "{name:?}");
    }
    let long = "a".repeat(MAX_NAME_LEN + 1);
    assert_eq!(check_name(&long).unwrap_err().why, Why::TooLong);
}

/// The client's table and the policy agree: every option the table keeps local for a
/// safety reason is refused by the policy, and every option it sends to the server as an
/// ordinary compile option with a sample value is accepted.
#[test]
fn client_table_agrees_with_the_policy() {
    for spec in table::ARGS {
        let sample = match spec.form {
            Form::Flag => vec![spec.name.to_string()],
            Form::Prefix => vec![format!("{}x", spec.name)],
            Form::Separate | Form::Either => vec![spec.name.to_string(), "x".into()],
        };
        match spec.kind {
            Kind::Local(LocalKind::Profile)
                if table::PROFILE_HARMLESS
                    .iter()
                    .any(|p| spec.name.starts_with(p)) => {}
            Kind::Local(_) | Kind::Output | Kind::Preprocess | Kind::Compile | Kind::Assemble => {
                assert!(
                    check_server_args(&sample).is_err(),
                    "{sample:?}: the table keeps it local, the policy accepts it"
                );
            }
            _ => {}
        }
    }
    // The table's `Common` options reach the server; with real values they pass.
    for line in [
        "--param max-inline-insns-single=10",
        "--param=max-inline-insns-single=10",
        "-arch arm64",
        "-target x86_64-linux-gnu",
        "-mllvm -inline-threshold=100",
    ] {
        assert_eq!(check_server_args(&argv(line)), Ok(()), "{line}");
    }
    for prefix in table::PROFILE_HARMLESS {
        let sample = if prefix.ends_with('=') {
            format!("{prefix}atomic")
        } else {
            prefix.to_string()
        };
        if *prefix == "-fprofile-prefix-map=" {
            assert_eq!(check_arg(&format!("{prefix}/a=/b")), Ok(()));
        } else {
            assert_eq!(check_arg(&sample), Ok(()), "{sample}");
        }
    }
}

// ---- property: nothing outside the allow-list gets through ----

/// Prefixes that must never appear in an accepted argv, whatever the spelling: written
/// independently of the lists, from the attack classes.
const NEVER: &[&str] = &[
    "--",
    "-B",
    "-E",
    "-I",
    "-L",
    "-M",
    "-Wl,",
    "-Wp,",
    "-X",
    "-c",
    "-fcompare-debug",
    "-fdump",
    "-fmodule",
    "-fplugin",
    "-fprofile-arcs",
    "-fprofile-gen",
    "-fprofile-use",
    "-fstack-usage",
    "-include",
    "-imacros",
    "-isystem",
    "-iquote",
    "-o",
    "-save-temps",
    "-specs",
    "-wrapper",
    "@",
];

fn token() -> impl Strategy<Value = String> {
    let known = prop::sample::select(vec![
        "-O2",
        "-g",
        "-Wall",
        "-fPIC",
        "-D",
        "X",
        "-DX=1",
        "-U",
        "-x",
        "c",
        "c++",
        "-c",
        "-E",
        "-o",
        "x.o",
        "-fplugin=x",
        "-fmodule-mapper=|sh",
        "--prefix=./",
        "-B./",
        "--param",
        "a=1",
        "-mllvm",
        "-inline-threshold=1",
        "-target",
        "x86_64",
        "-Wa,-g",
        "-Wa,-a",
        "-Wl,-z",
        "@r",
        "-fcompare-debug=-fplugin=x",
        "--config",
        "./f",
        "-march=",
        "native",
        "haswell",
        "-std=c99",
        "-fno-",
        "-fno-plugin",
        "-",
        "",
        "foo.c",
        "-I",
        "-include",
        "-f",
        "-m",
        "-W",
        "-Wno-",
        "-gz=",
        "zlib",
    ])
    .prop_map(str::to_string);
    prop_oneof![
        3 => known,
        1 => "-[a-zA-Z#=,.+/@|-]{0,14}",
        1 => "-[fmWg][a-z0-9=,.+/-]{0,14}",
        1 => "[a-z./@|-]{0,8}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn accepted_argvs_hold_only_allowed_options(args in prop::collection::vec(token(), 0..10)) {
        if check_server_args(&args).is_ok() {
            let mut i = 0;
            while i < args.len() {
                let arg = &args[i];
                // Every argument is an allowed option on its own (or with its value)...
                let used = check_option(&args[i..]);
                prop_assert!(used.is_ok(), "{arg:?} in {args:?}");
                // ...and never one of the forbidden spellings.
                let exempt = ["--param", "--param=", "--target="]
                    .iter()
                    .any(|e| arg == e || (e.ends_with('=') && arg.starts_with(e)));
                prop_assert!(
                    exempt || !NEVER.iter().any(|n| arg.starts_with(n)),
                    "{arg:?} accepted in {args:?}"
                );
                prop_assert!(arg.starts_with('-') && !arg.contains('\0'));
                prop_assert!(!arg.ends_with("native"));
                i += used.unwrap_or(1);
            }
        }
    }

    #[test]
    fn checks_never_panic(args in prop::collection::vec(any::<String>(), 0..6)) {
        let _ = check_server_args(&args);
        for a in &args {
            let _ = check_name(a);
            let _ = check_arg(a);
        }
    }
}
