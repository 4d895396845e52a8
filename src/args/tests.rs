//! Tests for [`super::classify`], the argv rewrites and response files: one table of gcc/clang
//! command lines with their expected outcome, then focused tests for each rewrite.

use super::*;
use proptest::prelude::*;

fn argv(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

fn run(compiler: &str, line: &str) -> Classified {
    classify(compiler, &argv(line), Path::new("/nonexistent-cwd")).expect("no response files")
}

fn remote(compiler: &str, line: &str) -> CompileJob {
    match run(compiler, line) {
        Classified::Remote(job) => job,
        Classified::Local(r) => panic!("{line:?}: expected Remote, got Local({r:?})"),
    }
}

/// Expected outcome of one table row.
enum Want {
    /// Remote with this source and output.
    R(&'static str, &'static str),
    /// Local with a reason whose `Debug` starts with this variant name.
    L(&'static str),
}
use Want::{L, R};

#[rustfmt::skip]
const CASES: &[(&str, Want)] = &[
    // Plain compiles and output naming.
    ("-c foo.c", R("foo.c", "foo.o")),
    ("foo.c -c", R("foo.c", "foo.o")),
    ("-c foo.c -o foo.o", R("foo.c", "foo.o")),
    ("-c src/foo.c", R("src/foo.c", "foo.o")),
    ("-c src/foo.c -o obj/foo.o", R("src/foo.c", "obj/foo.o")),
    ("-c -ofoo.o foo.c", R("foo.c", "foo.o")),
    ("-c foo.c -o a.o -o b.o", R("foo.c", "b.o")),
    ("-c foo.c --output out.o", R("foo.c", "out.o")),
    ("-c foo.c --output=out.o", R("foo.c", "out.o")),
    ("-S foo.c", R("foo.c", "foo.s")),
    ("-S foo.c -o out.s", R("foo.c", "out.s")),
    ("-S -c foo.c", R("foo.c", "foo.s")),
    ("-c d.x/foo", L("NotSource")),
    // Suffixes.
    ("-c foo.cc", R("foo.cc", "foo.o")),
    ("-c foo.cpp", R("foo.cpp", "foo.o")),
    ("-c foo.cxx", R("foo.cxx", "foo.o")),
    ("-c foo.c++", R("foo.c++", "foo.o")),
    ("-c foo.C", R("foo.C", "foo.o")),
    ("-c foo.cp", R("foo.cp", "foo.o")),
    ("-c foo.CPP", R("foo.CPP", "foo.o")),
    ("-c foo.m", R("foo.m", "foo.o")),
    ("-c foo.mm", R("foo.mm", "foo.o")),
    ("-c foo.M", R("foo.M", "foo.o")),
    ("-c foo.tar.c", R("foo.tar.c", "foo.tar.o")),
    // -x.
    ("-c -x c foo.txt", R("foo.txt", "foo.o")),
    ("-c -xc++ foo.h", R("foo.h", "foo.o")),
    ("-c -x c++ foo.c -x none", R("foo.c", "foo.o")),
    ("-c -x none foo.c", R("foo.c", "foo.o")),
    ("-c -x objective-c foo.x", R("foo.x", "foo.o")),
    ("-c -x objective-c++ foo.x", R("foo.x", "foo.o")),
    ("-c -x c foo", R("foo", "foo.o")),
    // Operands of options are never sources.
    ("-c -I inc foo.c", R("foo.c", "foo.o")),
    ("-c -Iinc foo.c", R("foo.c", "foo.o")),
    ("-c -I inc -I /usr/include foo.c", R("foo.c", "foo.o")),
    ("-c -D FOO foo.c", R("foo.c", "foo.o")),
    ("-c -DFOO=1 foo.c", R("foo.c", "foo.o")),
    ("-c -U FOO foo.c", R("foo.c", "foo.o")),
    ("-c -include config.h foo.c", R("foo.c", "foo.o")),
    ("-c -imacros m.h foo.c", R("foo.c", "foo.o")),
    ("-c -isystem sys foo.c", R("foo.c", "foo.o")),
    ("-c -iquote q foo.c", R("foo.c", "foo.o")),
    ("-c -idirafter d foo.c", R("foo.c", "foo.o")),
    ("-c -iprefix p foo.c", R("foo.c", "foo.o")),
    ("-c -iwithprefix p foo.c", R("foo.c", "foo.o")),
    ("-c -iwithprefixbefore p foo.c", R("foo.c", "foo.o")),
    ("-c -A system=linux foo.c", R("foo.c", "foo.o")),
    ("-c -F frameworks foo.m", R("foo.m", "foo.o")),
    ("-c -MD foo.c", R("foo.c", "foo.o")),
    ("-c -MMD -MF foo.d foo.c", R("foo.c", "foo.o")),
    ("-c -MD -MFfoo.d foo.c", R("foo.c", "foo.o")),
    ("-c -MD -MT tgt.o foo.c", R("foo.c", "foo.o")),
    ("-c -MD -MQ tgt.o foo.c", R("foo.c", "foo.o")),
    ("-c -MD -MP -MG foo.c", R("foo.c", "foo.o")),
    ("-c -Wp,-MD,foo.d foo.c", R("foo.c", "foo.o")),
    ("-c -Xpreprocessor -DX foo.c", R("foo.c", "foo.o")),
    ("-c -Xpreprocessor bar.c foo.c", R("foo.c", "foo.o")),
    ("-c -Xlinker foo.c bar.c", R("bar.c", "bar.o")),
    ("-c -Wl,-rpath,x foo.c", R("foo.c", "foo.o")),
    ("-c -lm foo.c", R("foo.c", "foo.o")),
    ("-c -l m foo.c", R("foo.c", "foo.o")),
    ("-c -L lib foo.c", R("foo.c", "foo.o")),
    ("-c -u sym foo.c", R("foo.c", "foo.o")),
    ("-c -framework Cocoa foo.m", R("foo.m", "foo.o")),
    ("-c -fuse-ld=/usr/bin/ld.gold foo.c", R("foo.c", "foo.o")),
    ("-c --sysroot=/opt/sys foo.c", R("foo.c", "foo.o")),
    ("-c --sysroot /opt/sys foo.c", R("foo.c", "foo.o")),
    ("-c -isysroot /sdk foo.c", R("foo.c", "foo.o")),
    ("-c -target x86_64-linux-gnu foo.c", R("foo.c", "foo.o")),
    ("-c -arch arm64 foo.c", R("foo.c", "foo.o")),
    ("-c -mllvm -inline-threshold=100 foo.c", R("foo.c", "foo.o")),
    ("-c --param max-inline-insns-single=10 foo.c", R("foo.c", "foo.o")),
    ("-c --param=max-inline-insns-single=10 foo.c", R("foo.c", "foo.o")),
    // Ordinary compile flags.
    ("-c -O2 -g -Wall -std=c99 foo.c", R("foo.c", "foo.o")),
    ("-c -gsplit-dwarf -g foo.c -o obj/foo.o", R("foo.c", "obj/foo.o")),
    ("-c -march=haswell -mtune=generic foo.c", R("foo.c", "foo.o")),
    ("-c -fPIC -fno-strict-aliasing foo.c", R("foo.c", "foo.o")),
    ("-c -frecord-gcc-switches foo.c", R("foo.c", "foo.o")),
    ("-c -ftime-report foo.c", R("foo.c", "foo.o")),
    ("-c -fdebug-prefix-map=/a=/b foo.c", R("foo.c", "foo.o")),
    ("-c -ffile-prefix-map=/a=. foo.c", R("foo.c", "foo.o")),
    ("-c -pthread foo.c", R("foo.c", "foo.o")),
    ("-c -P -C -CC -H foo.c", R("foo.c", "foo.o")),
    ("-c -nostdinc -nostdinc++ -undef foo.c", R("foo.c", "foo.o")),
    ("-c -fprofile-update=atomic foo.c", R("foo.c", "foo.o")),
    ("-c -fno-profile-arcs foo.c", R("foo.c", "foo.o")),
    ("-c -Wa,--noexecstack foo.c", R("foo.c", "foo.o")),
    ("-c -o foo.o -MF deps/foo.d -MMD foo.c", R("foo.c", "foo.o")),
    ("-c -g0 foo.c", R("foo.c", "foo.o")),
    ("-c -Werror -pedantic -w foo.c", R("foo.c", "foo.o")),
    ("-c -fsanitize=address,undefined foo.c", R("foo.c", "foo.o")),
    ("-c -fopenmp -fstack-protector-strong foo.c", R("foo.c", "foo.o")),
    ("-c -std=gnu++17 foo.cpp -o foo.o -fPIC -DNDEBUG -I../include", R("foo.cpp", "foo.o")),
    ("-c -pipe -static -shared -s foo.c", R("foo.c", "foo.o")),
    // Not a compile.
    ("foo.c", L("Linking")),
    ("foo.c -o foo", L("Linking")),
    ("foo.o bar.o -o prog", L("Linking")),
    ("-fsyntax-only foo.c", L("SyntaxOnly")),
    ("foo.h", L("PrecompiledHeader")),
    ("-x c-header foo.c -o foo.gch", L("PrecompiledHeader")),
    ("foo.hpp bar.c", L("Linking")),
    ("", L("Linking")),
    ("-E foo.c", L("PreprocessOnly")),
    ("-E -c foo.c", L("PreprocessOnly")),
    ("-M foo.c", L("DependenciesOnly")),
    ("-MM foo.c", L("DependenciesOnly")),
    ("-M -c foo.c", L("DependenciesOnly")),
    // Inputs.
    ("-c foo.c bar.c", L("MultipleInputs")),
    ("-c foo.c bar.o", L("MultipleInputs")),
    ("-c", L("NoSource")),
    ("-c -I inc", L("NoSource")),
    ("-c -", L("Stdin")),
    ("-c -x c -", L("Stdin")),
    ("-c - foo.c", L("Stdin")),
    ("-c foo.s", L("Assembler")),
    ("-c foo.S", L("Assembler")),
    ("-c foo.sx", L("Assembler")),
    ("-c -x assembler foo.c", L("Assembler")),
    ("-c -x assembler-with-cpp foo.asm", L("Assembler")),
    ("-c foo.i", L("Preprocessed")),
    ("-c foo.ii", L("Preprocessed")),
    ("-c foo.mi", L("Preprocessed")),
    ("-c -x cpp-output foo.c", L("Preprocessed")),
    ("-c foo.h", L("PrecompiledHeader")),
    ("-c foo.hpp", L("PrecompiledHeader")),
    ("-c -x c-header foo.c", L("PrecompiledHeader")),
    ("-c -x c++-header foo.h", L("PrecompiledHeader")),
    ("-c -x fortran foo.f", L("UnknownLanguage")),
    ("-c -x ada foo.c", L("UnknownLanguage")),
    ("-c -x cuda", L("UnknownLanguage")),
    ("-c foo.o", L("NotSource")),
    ("-c foo.f90", L("NotSource")),
    ("-c foo", L("NotSource")),
    ("-c foo.c -o -", L("OutputToStdout")),
    // Options that keep the compile local.
    ("-c foo.c -save-temps", L("SaveTemps")),
    ("-c foo.c -save-temps=obj", L("SaveTemps")),
    ("-c -Wa,-adhln=foo.lst foo.c", L("AssemblerListing")),
    ("-c -Wa,-g,-al foo.c", L("AssemblerListing")),
    ("-c -Wa,--MD,x.d foo.c", L("AssemblerListing")),
    ("-c -march=native foo.c", L("NativeCpu")),
    ("-c -mtune=native foo.c", L("NativeCpu")),
    ("-c -mcpu=native foo.c", L("NativeCpu")),
    ("-c -fprofile-generate foo.c", L("Profile")),
    ("-c -fprofile-generate=dir foo.c", L("Profile")),
    ("-c -fprofile-arcs foo.c", L("Profile")),
    ("-c --coverage foo.c", L("Profile")),
    ("-c -ftest-coverage foo.c", L("Profile")),
    ("-c -fprofile-use foo.c", L("Profile")),
    ("-c -fprofile-use=x.profdata foo.c", L("Profile")),
    ("-c -fauto-profile foo.c", L("Profile")),
    ("-c -fauto-profile=x.afdo foo.c", L("Profile")),
    ("-c -fcreate-profile foo.c", L("Profile")),
    ("-c -fprofile-instr-generate foo.c", L("Profile")),
    ("-c -fprofile-list=l.txt foo.c", L("Profile")),
    ("-c -fsyntax-only foo.c", L("SyntaxOnly")),
    ("-c -fdump-tree-all foo.c", L("ExtraOutput")),
    ("-c -fdump-rtl-expand foo.c", L("ExtraOutput")),
    ("-c -fstack-usage foo.c", L("ExtraOutput")),
    ("-c -aux-info proto.h foo.c", L("ExtraOutput")),
    ("-c -MJ cdb.json foo.c", L("ExtraOutput")),
    ("-c -fplugin=x.so foo.c", L("Toolchain")),
    ("-c -fplugin-arg-x-y=z foo.c", L("Toolchain")),
    ("-c -specs=x.specs foo.c", L("Toolchain")),
    ("-c --specs=x.specs foo.c", L("Toolchain")),
    ("-c -B/opt/bin foo.c", L("Toolchain")),
    ("-c -B /opt/bin foo.c", L("Toolchain")),
    ("-c -wrapper gdb,--args foo.c", L("Toolchain")),
    ("-c -Xclang -load -Xclang x.so foo.c", L("Toolchain")),
    ("-c -fpass-plugin=p.so foo.c", L("Toolchain")),
    ("-c -fsanitize-ignorelist=x.txt foo.c", L("ReadsFile")),
    ("-c -fsanitize-blacklist=x.txt foo.c", L("ReadsFile")),
    ("-c -include-pch x.pch foo.c", L("UsesPch")),
    ("-c -Xassembler -a foo.c", L("ServerRefuses")),
    ("-c -Wa,-o,x.o foo.c", L("NotAllowed")),
    ("-c -fcrash-diagnostics-dir=/tmp/x foo.c", L("NotAllowed")),
    ("-c -mllvm -some-file=../x foo.c", L("NotAllowed")),
    // The allow-list (issue 7): attacks stay local, naming the option.
    ("-c -fmodules-ts -fmodule-mapper=|sh foo.cc", L("NotAllowed")),
    ("-c --prefix=./ foo.c", L("NotAllowed")),
    ("-c --for-assembler=@rsp foo.c", L("NotAllowed")),
    ("-c -fcompare-debug=-fplugin=./evil.so foo.c", L("NotAllowed")),
    ("-c --config=./f foo.c", L("NotAllowed")),
    ("-c -D-fplugin=x foo.c", L("NotAllowed")),
    ("-c -D -fplugin=x foo.c", L("NotAllowed")),
    ("-c -mllvm -info-output-file=/tmp/x foo.c", L("NotAllowed")),
    ("-c -ftime-trace foo.c", L("ExtraOutput")),
    // Options that write side files (issue 8): the file would stay on the server.
    ("-c -fopt-info-all=opt.txt foo.c", L("ExtraOutput")),
    ("-c -fopt-info-vec=opt.txt foo.c", L("ExtraOutput")),
    ("-c -fopt-info-vec-missed=opt.txt foo.c", L("ExtraOutput")),
    ("-c -fopt-info-vec-missed foo.c", R("foo.c", "foo.o")),
    ("-c -fcallgraph-info foo.c", L("ExtraOutput")),
    ("-c -fcallgraph-info=su,da foo.c", L("ExtraOutput")),
    ("-c -fsave-optimization-record foo.c", L("ExtraOutput")),
    ("-c -fsave-optimization-record=yaml foo.c", L("ExtraOutput")),
    ("-c -foptimization-record-file=x.yaml foo.c", L("ExtraOutput")),
    ("-c -ftime-trace=t.json foo.c", L("ExtraOutput")),
    ("-c -fproc-stat-report=s.csv foo.c", L("ExtraOutput")),
    ("-c -save-stats foo.c", L("ExtraOutput")),
    ("-c -save-stats=obj foo.c", L("ExtraOutput")),
    ("-c --save-stats=cwd foo.c", L("ExtraOutput")),
    ("-c -fdump-ipa-all foo.c", L("ExtraOutput")),
    ("-c -fdump-final-insns=x foo.c", L("ExtraOutput")),
    ("-c -fdiagnostics-format=sarif-file foo.c", L("ExtraOutput")),
    ("-c -fdiagnostics-format=json-file foo.c", L("ExtraOutput")),
    ("-c -fdiagnostics-format=json foo.c", R("foo.c", "foo.o")),
    ("-c -fdeps-format=p1689r5 foo.cc", L("ExtraOutput")),
    ("-c -fno-stack-usage foo.c", R("foo.c", "foo.o")),
    ("-c -da foo.c", L("NotAllowed")),
    // Combinations whose remote result would differ (issue 8).
    ("-c -flto -g foo.c", L("WouldDiffer")),
    ("-c -g -flto=auto foo.c", L("WouldDiffer")),
    ("-c -flto foo.c", L("WouldDiffer")),
    ("-c -flto=thin foo.c", L("WouldDiffer")),
    ("-c -std=c11 -pedantic foo.c", L("WouldDiffer")),
    ("-c -Wpedantic foo.c", L("WouldDiffer")),
    ("-c -pedantic-errors foo.c", L("WouldDiffer")),
    ("-c --pedantic foo.c", L("NotAllowed")),
    ("-c -Werror=pedantic foo.c", L("WouldDiffer")),
    ("-c -Wno-pedantic -pedantic foo.c", L("WouldDiffer")),
    ("-c -pedantic -Wno-pedantic foo.c", R("foo.c", "foo.o")),
    ("-c -pedantic-errors -w foo.c", R("foo.c", "foo.o")),
    ("-c -fno-lto -flto foo.c", L("WouldDiffer")),
    ("-c -flto -fno-lto -g foo.c", R("foo.c", "foo.o")),
    ("-c -fno-lto foo.c", R("foo.c", "foo.o")),
    ("-c -flto-partition=one -g foo.c", R("foo.c", "foo.o")),
    ("-c -ffat-lto-objects foo.c", R("foo.c", "foo.o")),
    ("-c -fsome-new-flag foo.c", L("NotAllowed")),
    ("-c -Wl foo.c", L("NotAllowed")),
    ("-c @foo.c", L("BadName")),
    ("-c foo.c -o -x.o", L("BadName")),
    ("-c foo.c -o @x.o", L("BadName")),
    // Driver information.
    ("--help", L("Info")),
    ("--help=warnings", L("Info")),
    ("-v", L("Info")),
    ("-v -c foo.c", L("Info")),
    ("--version", L("Info")),
    ("-dumpversion", L("Info")),
    ("-dumpmachine", L("Info")),
    ("-print-search-dirs", L("Info")),
    ("-print-prog-name=cc1", L("Info")),
    ("-### -c foo.c", L("Info")),
    // Missing operands.
    ("-c foo.c -o", L("MissingOperand")),
    ("-c foo.c -I", L("MissingOperand")),
    ("-c foo.c -x", L("MissingOperand")),
    ("-c foo.c -Xlinker", L("MissingOperand")),
];

#[test]
fn classification_table() {
    // Every reason is covered by at least one row (a new variant needs its cases).
    const REASONS: &[&str] = &[
        "Linking",
        "PreprocessOnly",
        "DependenciesOnly",
        "Info",
        "MissingOperand",
        "NoSource",
        "Stdin",
        "MultipleInputs",
        "Assembler",
        "Preprocessed",
        "PrecompiledHeader",
        "UnknownLanguage",
        "NotSource",
        "OutputToStdout",
        "SaveTemps",
        "AssemblerListing",
        "NativeCpu",
        "Profile",
        "SyntaxOnly",
        "ExtraOutput",
        "Toolchain",
        "ReadsFile",
        "UsesPch",
        "ServerRefuses",
        "NotAllowed",
        "BadName",
        "WouldDiffer",
    ];
    for name in REASONS {
        assert!(
            CASES.iter().any(|(_, w)| matches!(w, L(n) if n == name)),
            "no case for LocalReason::{name}"
        );
    }
    let mut failures = Vec::new();
    for (line, want) in CASES {
        let got = run("gcc", line);
        let ok = match (want, &got) {
            (R(src, out), Classified::Remote(job)) => job.source == *src && job.output == *out,
            (L(name), Classified::Local(reason)) => {
                let variant = format!("{reason:?}");
                let variant = variant.split('(').next().unwrap_or_default();
                assert!(REASONS.contains(&variant), "{variant} missing from REASONS");
                variant == *name
            }
            _ => false,
        };
        if !ok {
            let want = match want {
                R(s, o) => format!("Remote({s} → {o})"),
                L(n) => format!("Local({n})"),
            };
            failures.push(format!("{line:?}: want {want}, got {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// clang accepts the line markers of its own rewritten text under -pedantic: remote.
#[test]
fn clang_pedantic_compiles_remotely() {
    remote("clang", "-c -std=c11 -pedantic -Wall foo.c");
    remote("clang++", "-c -pedantic-errors foo.cc");
}

/// clang's DWARF 5 line table cannot be reproduced remotely; DWARF 4, and no debug info,
/// can (issue 8).
#[test]
fn clang_dwarf5_debug_stays_local() {
    for line in [
        "-c -g foo.c",
        "-c -O2 -g foo.c",
        "-c -gdwarf-5 foo.c",
        "-c -gline-tables-only foo.c",
        "-c -gdwarf-4 -gdwarf-5 foo.c",
        "-c -g -fdebug-default-version=5 foo.c",
    ] {
        for cc in ["clang", "clang++-14", "x86_64-linux-gnu-clang"] {
            match run(cc, line) {
                Classified::Local(LocalReason::WouldDiffer(why)) => {
                    assert!(why.contains("DWARF 5"), "{why}")
                }
                other => panic!("{cc} {line}: {other:?}"),
            }
        }
    }
    for line in [
        "-c -O2 foo.c",
        "-c -g -gdwarf-4 foo.c",
        "-c -gdwarf-4 foo.c",
        "-c -g -fdebug-default-version=4 foo.c",
        "-c -g -g0 foo.c",
    ] {
        remote("clang", line);
    }
    // gcc's DWARF 5 objects match.
    remote("gcc", "-c -g foo.c");
    remote("gcc", "-c -gdwarf-5 foo.c");
}

#[test]
fn remote_jobs_pass_the_server_check() {
    for (line, want) in CASES {
        if let (R(..), Classified::Remote(job)) = (want, run("gcc", line)) {
            assert_eq!(check_server_args(&job.compile_args), Ok(()), "{line}");
        }
    }
}

#[test]
fn family_from_compiler_name() {
    assert_eq!(Family::from_compiler("gcc"), Family::Gcc);
    assert_eq!(
        Family::from_compiler("/usr/bin/x86_64-linux-gnu-g++-12"),
        Family::Gcc
    );
    assert_eq!(Family::from_compiler("clang++"), Family::Clang);
    assert_eq!(
        Family::from_compiler("/usr/lib/llvm-15/bin/clang"),
        Family::Clang
    );
    assert_eq!(Family::from_compiler("cc"), Family::Gcc);
}

#[test]
fn job_fields() {
    let job = remote(
        "gcc",
        "-c -O2 -g -DX -Iinc -include c.h -MD -MF d.d -Wall -Wp,-DY -std=c99 -Wl,-z,now -lm \
         -P -x c foo.x -o out.o",
    );
    assert_eq!(job.compiler, "gcc");
    assert_eq!(job.family, Family::Gcc);
    assert_eq!(job.language, Language::C);
    assert_eq!(job.compile_args, argv("-O2 -g -Wall -std=c99 -x c"));
    assert!(job.debug);
    assert!(!job.assemble_only);
    assert!(job.extra_outputs.is_empty());

    let job = remote("clang++", "-c foo.cc -O1");
    assert_eq!(job.family, Family::Clang);
    assert_eq!(job.language, Language::Cxx);
    assert!(!job.debug);
    assert_eq!(remote("gcc", "-c a.m").language, Language::ObjC);
    assert_eq!(remote("gcc", "-c a.mm").language, Language::ObjCxx);
    assert!(remote("gcc", "-S a.c").assemble_only);
}

#[test]
fn debug_tracking() {
    let cases = [
        ("-c a.c", false),
        ("-c a.c -g", true),
        ("-c a.c -g3", true),
        ("-c a.c -ggdb", true),
        ("-c a.c -gdwarf-4", true),
        ("-c a.c -g -g0", false),
        ("-c a.c -g0 -g2", true),
        ("-c a.c -gsplit-dwarf", false),
        ("-c a.c -gz", false),
        ("-c a.c -g -gno-column-info", true),
        ("-c a.c -gline-tables-only", true),
    ];
    for (line, want) in cases {
        assert_eq!(remote("gcc", line).debug, want, "{line}");
    }
}

#[test]
fn split_dwarf_outputs() {
    let job = remote("gcc", "-c -g -gsplit-dwarf src/foo.c -o obj/foo.o");
    assert_eq!(job.extra_outputs, vec!["obj/foo.dwo".to_string()]);
    let job = remote("gcc", "-c -g -gsplit-dwarf src/foo.c");
    assert_eq!(job.extra_outputs, vec!["foo.dwo".to_string()]);
    // gcc 12 writes the .dwo even without -g (measured); clang only with debug info.
    assert_eq!(
        remote("gcc", "-c -gsplit-dwarf a.c").extra_outputs,
        vec!["a.dwo".to_string()]
    );
    assert!(remote("clang", "-c -gsplit-dwarf a.c")
        .extra_outputs
        .is_empty());
    assert_eq!(
        remote("clang", "-c -g -gdwarf-4 -gsplit-dwarf a.c").extra_outputs,
        vec!["a.dwo".to_string()]
    );
    assert!(remote("clang", "-c -g -gdwarf-4 -gsplit-dwarf=single a.c")
        .extra_outputs
        .is_empty());
    // -S never writes a .dwo (the assembler splits it).
    assert!(remote("gcc", "-S -g -gsplit-dwarf a.c")
        .extra_outputs
        .is_empty());
}

fn cpp(compiler: &str, line: &str, style: CppStyle) -> Vec<String> {
    remote(compiler, line).preprocess_args(style)
}

#[test]
fn preprocess_args_basic() {
    assert_eq!(
        cpp("gcc", "-c -O2 -DX -I inc foo.c -o foo.o", CppStyle::Classic),
        argv("-O2 -DX -I inc -E foo.c")
    );
    assert_eq!(
        cpp("gcc", "-c -g foo.c", CppStyle::DirectivesOnly),
        argv("-g -E -fdirectives-only foo.c")
    );
    assert_eq!(
        cpp("clang", "-c -gdwarf-4 foo.c", CppStyle::DirectivesOnly),
        argv("-gdwarf-4 -E -frewrite-includes foo.c")
    );
    // -x goes right before the source; linker options stay for the driver's warnings;
    // -P/-C never reach cpp (they would drop line markers / keep comments).
    assert_eq!(
        cpp(
            "gcc",
            "-c -x c++ -lm -P foo.inc -x none -Wl,-z",
            CppStyle::Classic
        ),
        argv("-lm -Wl,-z -E -x c++ foo.inc")
    );
    assert_eq!(
        cpp(
            "gcc",
            "-c -Xpreprocessor -DX -isystem s -Wa,-g foo.c",
            CppStyle::Classic
        ),
        argv("-Xpreprocessor -DX -isystem s -E foo.c")
    );
}

#[test]
fn preprocess_args_dependency_rewrites() {
    let c = CppStyle::Classic;
    // -MD without -o: gcc writes basename.d with cpp's default target (basename.o).
    assert_eq!(
        cpp("gcc", "-c -MD src/foo.c", c),
        argv("-MD -E -MF foo.d src/foo.c")
    );
    // -MD with -o: the -o path with its suffix replaced by .d, target quoted from -o.
    assert_eq!(
        cpp("gcc", "-c -MD src/foo.c -o obj/foo.o", c),
        argv("-MD -E -MF obj/foo.d -MQ obj/foo.o src/foo.c")
    );
    assert_eq!(
        cpp("gcc", "-c -MD foo.c -o d/x.obj.o", c),
        argv("-MD -E -MF d/x.obj.d -MQ d/x.obj.o foo.c")
    );
    assert_eq!(
        cpp("gcc", "-c -MD foo.c -o d.x/foo", c),
        argv("-MD -E -MF d.x/foo.d -MQ d.x/foo foo.c")
    );
    // -MMD -MF: the file stays, only the target is added.
    assert_eq!(
        cpp("gcc", "-c -MMD -MF deps/foo.d foo.c -o foo.o", c),
        argv("-MMD -MF deps/foo.d -E -MQ foo.o foo.c")
    );
    // -MT present: no -MQ.
    assert_eq!(
        cpp("gcc", "-c -MD -MT tgt foo.c -o x.o", c),
        argv("-MD -MT tgt -E -MF x.d foo.c")
    );
    assert_eq!(
        cpp("gcc", "-c -MD -MQ tgt -MFx.d -MP foo.c -o x.o", c),
        argv("-MD -MQ tgt -MFx.d -MP -E foo.c")
    );
    // -Wp,-MD,file passes through untouched: gcc's cc1 reads it itself.
    assert_eq!(
        cpp("gcc", "-c -Wp,-MMD,.foo.d foo.c -o x.o", c),
        argv("-Wp,-MMD,.foo.d -E foo.c")
    );
    // clang's driver reads -Wp,-MMD,file as -MMD -MF file and names the target after -o
    // (the kernel's `-Wp,-MMD,dir/.x.o.d -o dir/x.o`).
    assert_eq!(
        cpp("clang", "-c -Wp,-MMD,deps/.foo.o.d foo.c -o deps/foo.o", c),
        argv("-Wp,-MMD,deps/.foo.o.d -E -MQ deps/foo.o foo.c")
    );
    assert_eq!(
        cpp("clang", "-c -Wp,-MD foo.c -o obj/foo.o", c),
        argv("-Wp,-MD -E -MF obj/foo.d -MQ obj/foo.o foo.c")
    );
    assert_eq!(
        cpp("clang", "-c -Wp,-MD,x.d foo.c", c),
        argv("-Wp,-MD,x.d -E foo.c")
    );
    assert_eq!(
        cpp("clang", "-c -Wp,-DX foo.c -o x.o", c),
        argv("-Wp,-DX -E foo.c")
    );
    // -S without -o: deps to foo.d, target left to cpp (foo.o, as gcc does).
    assert_eq!(
        cpp("gcc", "-S -MD foo.c", c),
        argv("-MD -E -MF foo.d foo.c")
    );
    // No deps requested: nothing added.
    assert_eq!(cpp("gcc", "-c foo.c -o x.o", c), argv("-E foo.c"));
}

#[test]
fn preprocessed_names() {
    let cases = [
        ("-c foo.c", "foo.i"),
        ("-c src/a.cpp", "src/a.ii"),
        ("-c a.cc", "a.ii"),
        ("-c a.cxx", "a.ii"),
        ("-c a.C", "a.ii"),
        ("-c a.c++", "a.ii"),
        ("-c b.m", "b.mi"),
        ("-c c.mm", "c.mii"),
        ("-c c.M", "c.mii"),
        ("-c -x c foo", "foo.i"),
        ("-c -x c++ d.x/foo", "d.x/foo.ii"),
        ("-c -x c++ foo.c", "foo.ii"),
    ];
    for (line, want) in cases {
        assert_eq!(remote("gcc", line).preprocessed_name(), want, "{line}");
    }
}

#[test]
fn distcc_argvs() {
    assert_eq!(
        remote("gcc", "-c -O2 -DX -Iinc foo.c -o foo.o").distcc_argv(),
        argv("gcc -O2 -c foo.i -o foo.o")
    );
    assert_eq!(
        remote("g++", "-S -g -std=c++17 -x c++ src/a.h -MD").distcc_argv(),
        argv("g++ -g -std=c++17 -x c++-cpp-output -S src/a.ii -o a.s")
    );
    assert_eq!(
        remote("gcc", "-c -x objective-c a.x").distcc_argv(),
        argv("gcc -x objective-c-cpp-output -c a.mi -o a.o")
    );
    assert_eq!(
        remote("clang", "-c -Wa,--noexecstack -fPIC src/b.c -o obj/b.o").distcc_argv(),
        argv("clang -Wa,--noexecstack -fPIC -c src/b.i -o obj/b.o")
    );
}

#[test]
fn reasons_display() {
    let reasons = [
        LocalReason::Linking,
        LocalReason::MultipleInputs(2),
        LocalReason::Toolchain("-fplugin=x".into()),
        LocalReason::ServerRefuses("refusing \"-o\"".into()),
    ];
    for r in reasons {
        let s = r.to_string();
        assert!(!s.is_empty());
    }
    assert_eq!(LocalReason::MultipleInputs(3).to_string(), "3 input files");
    let line = LocalReason::NotAllowed("-fplugin=x.so".into()).to_string();
    assert!(
        line.contains("-fplugin=x.so") && line.contains("allow-list"),
        "{line}"
    );
    assert!(LocalReason::NativeCpu("-march=native".into())
        .to_string()
        .contains("-march=native"));
}

// ---- response files ----

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn response_file_quoting() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "r",
        "-c  'a b.c'\t\"x\\\"y\" back\\ slash\n'it''s' \"\" 'in\\'side' -DX=\"1 2\"\r\n",
    );
    let got = expand_response_files(&argv("-O2 @r -g"), dir.path()).unwrap();
    assert_eq!(
        got,
        vec![
            "-O2",
            "-c",
            "a b.c",
            "x\"y",
            "back slash",
            "its",
            "",
            "in'side",
            "-DX=1 2",
            "-g"
        ]
    );
}

#[test]
fn response_file_nesting_and_missing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    write(dir.path(), "outer", "-c @sub/inner @missing.rsp");
    // Nested names are relative to cwd, as in gcc's libiberty.
    write(dir.path(), "sub/inner", "foo.c -o foo.o");
    let got = expand_response_files(&argv("@outer -Wall @nope @"), dir.path()).unwrap();
    assert_eq!(got, argv("-c foo.c -o foo.o @missing.rsp -Wall @nope @"));

    // Whitespace-only files give no arguments.
    write(dir.path(), "blank", " \n\t ");
    assert_eq!(
        expand_response_files(&argv("a @blank b"), dir.path()).unwrap(),
        argv("a b")
    );

    // classify expands them; a missing one stays a (non-source) input, as in gcc.
    write(dir.path(), "cc", "-O2 @sub/inner");
    match classify("gcc", &argv("-c @cc"), dir.path()).unwrap() {
        Classified::Remote(job) => assert_eq!(job.source, "foo.c"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        classify("gcc", &argv("@outer"), dir.path()).unwrap(),
        Classified::Local(LocalReason::MultipleInputs(2))
    ));
}

#[test]
fn response_file_errors() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "loop", "-c @loop");
    match expand_response_files(&argv("@loop"), dir.path()) {
        Err(ArgsError::ResponseFilesTooDeep { path }) => assert!(path.ends_with("loop")),
        other => panic!("{other:?}"),
    }
    std::fs::create_dir(dir.path().join("d")).unwrap();
    assert!(matches!(
        expand_response_files(&argv("@d"), dir.path()),
        Err(ArgsError::ResponseFileIsDirectory { .. })
    ));
    std::fs::write(dir.path().join("bin"), [0xff, 0xfe, b' ']).unwrap();
    let err = expand_response_files(&argv("@bin"), dir.path()).unwrap_err();
    assert!(matches!(err, ArgsError::ResponseFileNotUtf8 { .. }));
    assert!(err.to_string().contains("bin"));
    assert!(classify("gcc", &argv("-c @loop"), dir.path()).is_err());
}

// ---- robustness ----

fn token() -> impl Strategy<Value = String> {
    let known = prop::sample::select(vec![
        "-c",
        "-S",
        "-E",
        "-o",
        "-x",
        "c",
        "c++",
        "none",
        "-I",
        "-D",
        "-MD",
        "-MF",
        "-MT",
        "-MQ",
        "-M",
        "-g",
        "-gsplit-dwarf",
        "-Wp,-MD,x.d",
        "-Wa,-a",
        "-Xlinker",
        "-Xclang",
        "-",
        "foo.c",
        "a.cpp",
        "b.s",
        "x.i",
        "dir/",
        "@x",
        "@",
        "-include",
        "--sysroot",
        "--sysroot=",
        "-o-",
        "-x",
        "-fprofile-",
        "-march=native",
        "é.c",
        "-é",
        "",
    ])
    .prop_map(str::to_string);
    prop_oneof![known, ".{0,12}", "-[a-zA-Z,=+.-]{0,10}"]
}

proptest! {
    #[test]
    fn classify_never_panics(args in prop::collection::vec(token(), 0..12)) {
        let dir = tempfile::tempdir().unwrap();
        for compiler in ["gcc", "clang"] {
            if let Ok(Classified::Remote(job)) = classify(compiler, &args, dir.path()) {
                let _ = job.preprocess_args(CppStyle::DirectivesOnly);
                let _ = job.preprocess_args(CppStyle::Classic);
                let _ = job.preprocessed_name();
                let argv = job.distcc_argv();
                prop_assert!(argv.len() >= 5);
                prop_assert!(check_server_args(&job.compile_args).is_ok());
            }
        }
        let _ = check_server_args(&args);
    }
}

#[test]
fn empty_output_name_compiles_locally() {
    // Regression (fuzz target `policy`): `-o ''` was distributed with an empty output name
    // (gcc itself refuses it: "output filename may not be empty"); `check_name` keeps it local.
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["-c", "a.c", "-o", ""][..],
        &["-c", "a.c", "--output="],
        &["-S", "-oa.s", "-o", "", "a.c"],
    ] {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            classify("gcc", &args, dir.path()).unwrap(),
            Classified::Local(LocalReason::BadName(String::new())),
            "{args:?}"
        );
    }
}
