//! Stage: classify (option table). One static table, sorted by option name, saying for each
//! gcc/clang option how it takes its operand ([`Form`]) and what it means for distribution
//! ([`Kind`]). [`super::classify`] walks argv with [`lookup`]; options not in the table are
//! ordinary flags that go to both the local preprocessor and the remote compiler, if
//! [`super::policy`] allows them. This table only routes options and names a clearer
//! reason for keeping some local; what may reach a server is decided by the policy alone
//! (`policy::tests::client_table_agrees_with_the_policy` keeps the two consistent).
//! Modelled on sccache's `gcc.rs` `ARGS` table; the sortedness test sits next to it.

/// How an option takes its operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// Exactly the name, no operand (`-c`).
    Flag,
    /// The name followed by an attached value, possibly empty (`-Wp,…`, `-std=…`, `-fdump-…`).
    Prefix,
    /// Exactly the name; the operand is the next argument (`-Xlinker X`).
    Separate,
    /// Either attached (`-Ifoo`) or the next argument (`-I foo`). For `--long` names an attached
    /// value starts with `=` (`--sysroot=dir`).
    Either,
}

/// Why an option keeps the whole compile on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LocalKind {
    /// Asks the driver for information (`--version`, `-print-*`, `-v`).
    Info,
    /// `-save-temps*`: intermediate files would land on the server.
    SaveTemps,
    /// `-march=native` and friends: would probe the server's CPU.
    Native,
    /// Profiling/coverage: reads or writes profile files.
    Profile,
    /// `-fsyntax-only`: no object to bring back.
    SyntaxOnly,
    /// Writes an extra file we would not bring back (`-fdump-*`, `-fstack-usage`, …).
    AuxOutput,
    /// Runs or loads other programs (`-fplugin`, `-specs`, `-B`, `-wrapper`, `-Xclang`).
    Toolchain,
    /// Reads a file named in the option (sanitizer lists, …) that the server does not have.
    ReadsFile,
    /// Uses a precompiled header file.
    Pch,
    /// An option the server refuses and we have no rewrite for (`-Xassembler`).
    Unsupported,
}

/// What an option means for classification and argv rewriting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An ordinary option with an operand: goes to both the local cpp and the remote compile.
    Common,
    /// Preprocessor-only: local cpp gets it, the remote compile does not (`-D`, `-I`, `-include`).
    Cpp,
    /// No effect on a `-c` compile and harmful for `-E` output (`-P`, `-C`): dropped everywhere.
    Ignore,
    /// Linker-only: kept for the local cpp (so the driver's warnings match), dropped remotely.
    Linker,
    /// `-c`.
    Compile,
    /// `-S`.
    Assemble,
    /// `-E`.
    Preprocess,
    /// `-o`.
    Output,
    /// `-x LANG`.
    Lang,
    /// `-g…`: tracks whether debug info is on and whether it is split (`-gsplit-dwarf`).
    Debug,
    /// `-M`, `-MM`: dependency output only, no object.
    DepOnly,
    /// `-MD`, `-MMD`: dependencies as a side effect of compiling.
    DepMake,
    /// `-MF FILE`.
    DepFile,
    /// `-MT T`, `-MQ T`.
    DepTarget,
    /// `-Wa,…`: checked piece by piece for listing/dependency outputs.
    AsmPass,
    /// `-fopt-info…`: to stderr it is an ordinary option; `-fopt-info…=FILE` writes FILE,
    /// which stays on the server, so that form keeps the compile local.
    OptInfo,
    /// `-flto`, `-flto=…`, `-fno-lto`: tracked for [`COMBINATIONS`] (the last one wins).
    Lto,
    /// The compile must stay local.
    Local(LocalKind),
}

/// One row of the table.
#[derive(Debug)]
pub(crate) struct ArgSpec {
    /// The option name as it appears on the command line (including dashes).
    pub name: &'static str,
    /// How it takes its operand.
    pub form: Form,
    /// What it means.
    pub kind: Kind,
}

use Form::*;
use Kind::*;
use LocalKind::*;

const fn a(name: &'static str, form: Form, kind: Kind) -> ArgSpec {
    ArgSpec { name, form, kind }
}

/// The option table, sorted by name (byte order). Keep it sorted: [`lookup`] binary-searches it.
pub(crate) static ARGS: &[ArgSpec] = &[
    a("-###", Flag, Local(Info)),
    a("--coverage", Flag, Local(Profile)),
    a("--help", Prefix, Local(Info)),
    a("--output", Either, Output),
    a("--param", Either, Common),
    a("--save-stats", Prefix, Local(AuxOutput)),
    a("--specs", Either, Local(Toolchain)),
    a("--sysroot", Either, Cpp),
    a("--target-help", Flag, Local(Info)),
    a("--version", Flag, Local(Info)),
    a("-A", Either, Cpp),
    a("-B", Either, Local(Toolchain)),
    a("-C", Flag, Ignore),
    a("-CC", Flag, Ignore),
    a("-D", Either, Cpp),
    a("-E", Flag, Preprocess),
    a("-F", Either, Cpp),
    a("-H", Flag, Cpp),
    a("-I", Either, Cpp),
    a("-L", Either, Linker),
    a("-M", Flag, DepOnly),
    a("-MD", Flag, DepMake),
    a("-MF", Either, DepFile),
    a("-MG", Flag, Cpp),
    a("-MJ", Either, Local(AuxOutput)),
    a("-MM", Flag, DepOnly),
    a("-MMD", Flag, DepMake),
    a("-MP", Flag, Cpp),
    a("-MQ", Either, DepTarget),
    a("-MT", Either, DepTarget),
    a("-P", Flag, Ignore),
    a("-S", Flag, Assemble),
    a("-T", Either, Linker),
    a("-U", Either, Cpp),
    a("-Wa,", Prefix, AsmPass),
    a("-Wl,", Prefix, Linker),
    a("-Wp,", Prefix, Cpp),
    a("-Xassembler", Separate, Local(Unsupported)),
    a("-Xclang", Separate, Local(Toolchain)),
    a("-Xlinker", Separate, Linker),
    a("-Xpreprocessor", Separate, Cpp),
    a("-arch", Separate, Common),
    a("-aux-info", Separate, Local(AuxOutput)),
    a("-c", Flag, Compile),
    a("-cxx-isystem", Either, Cpp),
    a("-dumpbase", Separate, Local(AuxOutput)),
    a("-dumpbase-ext", Separate, Local(AuxOutput)),
    a("-dumpdir", Separate, Local(AuxOutput)),
    a("-dumpfullversion", Flag, Local(Info)),
    a("-dumpmachine", Flag, Local(Info)),
    a("-dumpspecs", Flag, Local(Info)),
    a("-dumpversion", Flag, Local(Info)),
    a("-e", Either, Linker),
    a("-fauto-profile", Prefix, Local(Profile)),
    a("-fbranch-probabilities", Flag, Local(Profile)),
    a("-fcallgraph-info", Prefix, Local(AuxOutput)),
    a("-fcreate-profile", Prefix, Local(Profile)),
    a("-fcs-profile-generate", Prefix, Local(Profile)),
    a("-fdeps-", Prefix, Local(AuxOutput)),
    a("-fdiagnostics-format=json-file", Flag, Local(AuxOutput)),
    a("-fdiagnostics-format=sarif-file", Flag, Local(AuxOutput)),
    a("-fdump-", Prefix, Local(AuxOutput)),
    a("-flto", Flag, Lto),
    a("-flto=", Prefix, Lto),
    a("-fno-lto", Flag, Lto),
    a("-fopt-info", Prefix, OptInfo),
    a("-foptimization-record-file=", Prefix, Local(AuxOutput)),
    a("-fpass-plugin=", Prefix, Local(Toolchain)),
    a("-fplugin", Prefix, Local(Toolchain)),
    a("-fproc-stat-report", Prefix, Local(AuxOutput)),
    a("-fprofile-", Prefix, Local(Profile)),
    a("-framework", Separate, Linker),
    a("-fsanitize-blacklist=", Prefix, Local(ReadsFile)),
    a("-fsanitize-coverage-allowlist=", Prefix, Local(ReadsFile)),
    a("-fsanitize-coverage-blocklist=", Prefix, Local(ReadsFile)),
    a("-fsanitize-coverage-ignorelist=", Prefix, Local(ReadsFile)),
    a("-fsanitize-ignorelist=", Prefix, Local(ReadsFile)),
    a("-fsave-optimization-record", Prefix, Local(AuxOutput)),
    a("-fstack-usage", Flag, Local(AuxOutput)),
    a("-fsyntax-only", Flag, Local(SyntaxOnly)),
    a("-ftest-coverage", Flag, Local(Profile)),
    a("-ftime-trace", Prefix, Local(AuxOutput)),
    a("-fuse-ld=", Prefix, Linker),
    a("-fxray-always-instrument=", Prefix, Local(ReadsFile)),
    a("-fxray-attr-list=", Prefix, Local(ReadsFile)),
    a("-fxray-never-instrument=", Prefix, Local(ReadsFile)),
    a("-g", Prefix, Debug),
    a("-idirafter", Either, Cpp),
    a("-iframework", Either, Cpp),
    a("-imacros", Either, Cpp),
    a("-imultiarch", Either, Cpp),
    a("-imultilib", Either, Cpp),
    a("-include", Either, Cpp),
    a("-include-pch", Separate, Local(Pch)),
    a("-iplugindir=", Prefix, Local(Toolchain)),
    a("-iprefix", Either, Cpp),
    a("-iquote", Either, Cpp),
    a("-isysroot", Either, Cpp),
    a("-isystem", Either, Cpp),
    a("-isystem-after", Either, Cpp),
    a("-ivfsoverlay", Either, Cpp),
    a("-iwithprefix", Either, Cpp),
    a("-iwithprefixbefore", Either, Cpp),
    a("-l", Either, Linker),
    a("-march=native", Flag, Local(Native)),
    a("-mcpu=native", Flag, Local(Native)),
    a("-mllvm", Separate, Common),
    a("-mtune=native", Flag, Local(Native)),
    a("-no-pie", Flag, Linker),
    a("-nodefaultlibs", Flag, Linker),
    a("-nostartfiles", Flag, Linker),
    a("-nostdinc", Flag, Cpp),
    a("-nostdinc++", Flag, Cpp),
    a("-nostdlib", Flag, Linker),
    a("-nostdlibinc", Flag, Cpp),
    a("-o", Either, Output),
    a("-pie", Flag, Linker),
    a("-print-", Prefix, Local(Info)),
    a("-rdynamic", Flag, Linker),
    a("-remap", Flag, Cpp),
    a("-s", Flag, Linker),
    a("-save-stats", Prefix, Local(AuxOutput)),
    a("-save-temps", Prefix, Local(SaveTemps)),
    a("-shared", Flag, Linker),
    a("-shared-libgcc", Flag, Linker),
    a("-specs", Either, Local(Toolchain)),
    a("-static", Flag, Linker),
    a("-static-libgcc", Flag, Linker),
    a("-static-libstdc++", Flag, Linker),
    a("-static-pie", Flag, Linker),
    a("-target", Separate, Common),
    a("-traditional-cpp", Flag, Cpp),
    a("-u", Either, Linker),
    a("-undef", Flag, Cpp),
    a("-v", Flag, Local(Info)),
    a("-wrapper", Separate, Local(Toolchain)),
    a("-x", Either, Lang),
    a("-z", Either, Linker),
];

/// A condition on the whole command line that keeps a compile local although the server
/// accepts each of its options: the remote result would differ from the compiler's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum When {
    /// clang with debug info in DWARF 5 (`-g` with clang 14's default, or `-gdwarf-5`).
    ClangDwarf5,
    /// Link-time optimisation in effect (`-flto…` not cancelled by a later `-fno-lto`).
    Lto,
    /// gcc with pedantic warnings in effect (`-pedantic`, `-Wpedantic`, `-pedantic-errors`,
    /// `-Werror=pedantic`, not cancelled by a later `-Wno-pedantic`) and not silenced by `-w`.
    GccPedantic,
}

/// One row of [`COMBINATIONS`]: the condition, and the reason the job log gives.
#[derive(Debug)]
pub(crate) struct Combination {
    pub when: When,
    pub reason: &'static str,
}

/// The combinations that run locally, checked in order after the options are scanned.
pub(crate) static COMBINATIONS: &[Combination] = &[
    Combination {
        when: When::ClangDwarf5,
        reason: "clang -g with DWARF 5: the line table records MD5 checksums of the \
                 original files, which the preprocessed text sent to a server cannot \
                 reproduce (-gdwarf-4 compiles remotely)",
    },
    Combination {
        when: When::Lto,
        reason: "-flto: the LTO bytecode records the compiler's working directory \
                 unmapped, so the link would name the server's job directory in debug \
                 info and in its diagnostics (the optimisation runs at link time, here)",
    },
    Combination {
        when: When::GccPedantic,
        reason: "gcc -pedantic: the server compiles the directives-only text, whose line \
                 markers (`# 1 \"a.c\"`) gcc -pedantic warns about (\"style of line directive \
                 is a GCC extension\"); -fpreprocessed, which accepts them, changes -g objects \
                 (DW_AT_producer records -fdirectives-only)",
    },
];

/// `-fprofile-*` options that neither read nor write profile files on their own.
pub(crate) const PROFILE_HARMLESS: &[&str] = &[
    "-fprofile-correction",
    "-fprofile-prefix-map=",
    "-fprofile-reorder-functions",
    "-fprofile-update=",
];

/// Where an option's operand is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    /// The option takes none.
    None,
    /// Attached to the option (for `--long=v` forms, without the `=`).
    Inline(&'a str),
    /// The next argument.
    Next,
}

/// Find the table row for `arg`: the longest table name that `arg` equals (any form) or starts
/// with (only [`Form::Prefix`] and [`Form::Either`]). `None` for options not in the table.
pub(crate) fn lookup(arg: &str) -> Option<(&'static ArgSpec, Value<'_>)> {
    let mut end = arg.len();
    while end >= 2 {
        if arg.is_char_boundary(end) {
            let name = &arg[..end];
            if let Ok(i) = ARGS.binary_search_by(|s| s.name.cmp(name)) {
                let spec = &ARGS[i];
                let exact = end == arg.len();
                let value = match (spec.form, exact) {
                    (Flag, true) => Some(Value::None),
                    (Separate, true) | (Either, true) => Some(Value::Next),
                    (Prefix, _) => Some(Value::Inline(&arg[end..])),
                    (Either, false) => {
                        let rest = &arg[end..];
                        if spec.name.starts_with("--") {
                            // `--sysroot=dir`; `--sysrootdir` is not this option.
                            rest.strip_prefix('=').map(Value::Inline)
                        } else {
                            Some(Value::Inline(rest))
                        }
                    }
                    (Flag, false) | (Separate, false) => None,
                };
                if let Some(value) = value {
                    return Some((spec, value));
                }
            }
        }
        end -= 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        for pair in ARGS.windows(2) {
            assert!(
                pair[0].name < pair[1].name,
                "table out of order: {:?} must come after {:?}",
                pair[0].name,
                pair[1].name
            );
        }
    }

    #[test]
    fn harmless_lists_are_sorted() {
        assert!(PROFILE_HARMLESS.windows(2).all(|p| p[0] < p[1]));
    }

    fn found(arg: &str) -> Option<(&'static str, Value<'_>)> {
        lookup(arg).map(|(s, v)| (s.name, v))
    }

    #[test]
    fn lookup_forms() {
        let cases: &[(&str, Option<(&str, Value)>)] = &[
            ("-c", Some(("-c", Value::None))),
            ("-cfoo", None),
            ("-o", Some(("-o", Value::Next))),
            ("-ofoo.o", Some(("-o", Value::Inline("foo.o")))),
            ("-I", Some(("-I", Value::Next))),
            ("-Iinc", Some(("-I", Value::Inline("inc")))),
            ("-include", Some(("-include", Value::Next))),
            ("-includefoo.h", Some(("-include", Value::Inline("foo.h")))),
            ("-include-pch", Some(("-include-pch", Value::Next))),
            ("-isystem", Some(("-isystem", Value::Next))),
            ("-isystem-after", Some(("-isystem-after", Value::Next))),
            (
                "-iwithprefixbefore",
                Some(("-iwithprefixbefore", Value::Next)),
            ),
            (
                "-iwithprefixfoo",
                Some(("-iwithprefix", Value::Inline("foo"))),
            ),
            ("-MMD", Some(("-MMD", Value::None))),
            ("-MF", Some(("-MF", Value::Next))),
            ("-MFdeps.d", Some(("-MF", Value::Inline("deps.d")))),
            ("-Mfoo", None),
            ("-Wp,-MD,x.d", Some(("-Wp,", Value::Inline("-MD,x.d")))),
            ("-Wall", None),
            ("-Xlinker", Some(("-Xlinker", Value::Next))),
            ("-Xlinkerfoo", None),
            ("--sysroot", Some(("--sysroot", Value::Next))),
            ("--sysroot=/x", Some(("--sysroot", Value::Inline("/x")))),
            ("--sysrootx", None),
            ("-march=native", Some(("-march=native", Value::None))),
            ("-march=haswell", None),
            (
                "-fprofile-generate=dir",
                Some(("-fprofile-", Value::Inline("generate=dir"))),
            ),
            (
                "-fdump-tree-all",
                Some(("-fdump-", Value::Inline("tree-all"))),
            ),
            ("-gsplit-dwarf", Some(("-g", Value::Inline("split-dwarf")))),
            ("-x", Some(("-x", Value::Next))),
            ("-xc++", Some(("-x", Value::Inline("c++")))),
            (
                "-print-search-dirs",
                Some(("-print-", Value::Inline("search-dirs"))),
            ),
            (
                "-save-temps=obj",
                Some(("-save-temps", Value::Inline("=obj"))),
            ),
            ("-###", Some(("-###", Value::None))),
            ("-", None),
            ("", None),
            ("-é", None),
        ];
        for (arg, want) in cases {
            assert_eq!(&found(arg), want, "{arg:?}");
        }
    }
}
