//! The conformance table: the directory layout every row starts from, and the rows, each one
//! compiler invocation that [`super`] runs as `CC …` and as `hoardcc CC …` and compares.
//!
//! Neighbours: tests/conformance.rs (the harness); README "What runs where" (the Remote and
//! Local expectations); issue 8 (the cases named there are marked "issue 8").
//!
//! `{dir}` in an argument is replaced by the row's absolute working directory.

/// Which drivers a row runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drivers {
    /// gcc, g++ and clang.
    All,
    /// gcc and g++ only (GNU-only options).
    Gnu,
    /// gcc and clang (C-only sources).
    C,
    /// clang only.
    Clang,
}

/// Where README says the job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Where {
    /// One job, distributed (`remote` in the job log).
    Remote,
    /// Compiled here on purpose (`local` in the job log, never a fallback); holds why.
    Local(&'static str),
}

/// One invocation.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: &'static str,
    pub args: &'static [&'static str],
    pub expect: Where,
    /// A different expectation under clang.
    pub clang: Option<Where>,
    pub drivers: Drivers,
    /// Files added to (or replacing files of) [`LAYOUT`] for this row.
    pub files: Vec<(&'static str, &'static str)>,
    /// Compiler runs (the real compiler, same driver) that prepare the layout, in both copies.
    pub pre: Vec<&'static [&'static str]>,
    /// Suffixes of outputs whose bytes the compiler alone does not reproduce (time stamps,
    /// random stamps): only their presence, type and mode are compared. `.gch`/`.pch` always.
    pub loose: Vec<&'static str>,
}

impl Row {
    pub fn expect_for(&self, cc: &str) -> Where {
        match self.clang {
            Some(w) if cc.contains("clang") => w,
            _ => self.expect,
        }
    }

    pub fn runs_under(&self, cc: &str) -> bool {
        let clang = cc.contains("clang");
        let cxx = cc.ends_with("++");
        match self.drivers {
            Drivers::All => true,
            Drivers::Gnu => !clang,
            Drivers::C => !cxx,
            Drivers::Clang => clang,
        }
    }

    fn only(mut self, d: Drivers) -> Row {
        self.drivers = d;
        self
    }

    fn clang(mut self, w: Where) -> Row {
        self.clang = Some(w);
        self
    }

    fn file(mut self, path: &'static str, text: &'static str) -> Row {
        self.files.push((path, text));
        self
    }

    fn pre(mut self, args: &'static [&'static str]) -> Row {
        self.pre.push(args);
        self
    }

    fn loose(mut self, suffix: &'static str) -> Row {
        self.loose.push(suffix);
        self
    }

    /// Whether the bytes of `path` are left out of the comparison.
    pub fn is_loose(&self, path: &str) -> bool {
        [".gch", ".pch"]
            .iter()
            .chain(self.loose.iter())
            .any(|s| path.ends_with(s))
    }
}

fn row(name: &'static str, args: &'static [&'static str], expect: Where) -> Row {
    Row {
        name,
        args,
        expect,
        clang: None,
        drivers: Drivers::All,
        files: Vec::new(),
        pre: Vec::new(),
        loose: Vec::new(),
    }
}

fn remote(name: &'static str, args: &'static [&'static str]) -> Row {
    row(name, args, Where::Remote)
}

fn local(name: &'static str, args: &'static [&'static str], why: &'static str) -> Row {
    row(name, args, Where::Local(why))
}

/// Every row starts from a fresh copy of these (a path ending in `/` is a directory; `@` in
/// front of the text makes a symbolic link to that target).
pub const LAYOUT: &[(&str, &str)] = &[
    (
        "util.h",
        "#ifndef UTIL_H\n#define UTIL_H\nstatic inline int util_add(int a, int b) { return a + b; }\n\
         int twice(int x);\nint util(int x);\n#endif\n",
    ),
    (
        "a.c",
        "#include \"util.h\"\nint twice(int x) { return x * 2; }\n\
         int answer(void) { return util_add(twice(20), 2); }\n",
    ),
    ("util.c", "#include \"util.h\"\nint util(int x) { return twice(x) + 1; }\n"),
    (
        "main.c",
        "#include <stdio.h>\n#include \"util.h\"\n\
         int main(void) { printf(\"%d\\n\", util(20)); return 0; }\n",
    ),
    (
        "warn.c",
        "#include <stdio.h>\nstatic int unused_fn(void) { return 1; }\n\
         int count(const char *s)\n{\n    int unused = 0;\n    int n;\n    for (n = 0; s[n]; n++)\n\
         \x20       ;\n    if (n = 3)\n        return -1;\n    return n;\n}\n",
    ),
    (
        "err.c",
        "int broken(int x)\n{\n    return x + undeclared_name;\n}\nint also(void) { return 1 }\n",
    ),
    ("cppwarn.c", "#warning \"this is a preprocessor warning\"\nint w(void) { return 0; }\n"),
    (
        "cppmix.c",
        "int f(void) { int u; return 0; }\n#warning \"late\"\nint g(void) { int v; return 0; }\n",
    ),
    ("missing.c", "#include \"no_such_header.h\"\nint m(void) { return 0; }\n"),
    (
        "vec.c",
        "void add(float *__restrict a, const float *__restrict b, int n)\n{\n\
         \x20   for (int i = 0; i < n; i++)\n        a[i] += b[i] * 2.0f;\n}\n",
    ),
    ("same.c", "int same(void) { return 5; }\n"),
    ("same-link.c", "@same.c"),
    ("asm.s", ".text\n.globl f\nf:\n\tret\n"),
    ("asm.S", "#define RET ret\n.text\n.globl g\ng:\n\tRET\n"),
    ("pch.h", "#include <stdio.h>\n#define PCH_VALUE 7\n"),
    ("usepch.c", "#include \"pch.h\"\nint p(void) { return PCH_VALUE; }\n"),
    ("dir with space/", ""),
    (
        "dir with space/sp.c",
        "int sp(void)\n{\n    int u;\n    return 1;\n}\n",
    ),
    ("ünï/", ""),
    ("ünï/ß.c", "int sz(void) { int v = 2; return v; }\n"),
    ("inc/", ""),
    ("inc/config.h", "#define FOO_DEFAULT 3\n"),
    ("incuser.c", "#include <config.h>\nint foo(void) { return FOO + FOO_DEFAULT; }\n"),
    (
        "tmpl.cpp",
        "#include <vector>\ntemplate <typename T> T sum(const std::vector<T> &v)\n\
         { T t{}; for (auto x : v) t += x; return t; }\nint total() { return sum(std::vector<int>{1, 2, 3}); }\n",
    ),
    ("link_err.c", "int missing(void);\nint main(void) { return missing(); }\n"),
    ("args.rsp", "-c a.c -o rsp.o -O1\n"),
    ("existing.o", "an object that was here before\n"),
    ("target.o", "the symlink's target\n"),
    ("sym.o", "@target.o"),
    ("CMakeFiles/", ""),
    ("CMakeFiles/t.dir/", ""),
    ("deps/", ""),
];

const CONFTEST_MAIN: &str =
    "/* confdefs.h */\n#define PACKAGE_NAME \"t\"\n#define HAVE_STDIO_H 1\n\
    /* end confdefs.h.  */\n#include <stdio.h>\nint\nmain (void)\n{\n\n  ;\n  return 0;\n}\n";
const CONFTEST_HEADER: &str = "/* confdefs.h */\n#define PACKAGE_NAME \"t\"\n\
    /* end confdefs.h.  */\n#include <no_such_header.h>\n";
const CONFTEST_FUNC: &str =
    "/* confdefs.h */\n#define PACKAGE_NAME \"t\"\n/* end confdefs.h.  */\n\
    #ifdef __cplusplus\nextern \"C\"\n#endif\nchar no_such_function ();\nint\nmain (void)\n{\n\
    return no_such_function ();\n  ;\n  return 0;\n}\n";
const CONFTEST_CHOKE: &str = "/* confdefs.h */\n/* end confdefs.h.  */\n\
    #if !defined __GNUC__\n#else\n choke me\n#endif\nint\nmain (void)\n{\n  ;\n  return 0;\n}\n";

/// clang 14's default `-g` is DWARF 5; its line table holds MD5 sums of the original
/// files, which a compile of the preprocessed text cannot reproduce (issue 8 #5).
const CLANG_DWARF5: Where =
    Where::Local("clang -g with DWARF 5: compiled here until the line table matches");
const LTO: &str = "-flto: the bytecode would name the server's job directory";
const CPP_FAILED: &str = "the local preprocessor failed: the compiler, run here, reports it";
const GCC_PEDANTIC: &str =
    "gcc -pedantic: the line markers of the directives-only text would draw warnings";
const CPP_SAID: &str = "the preprocessor printed diagnostics: they interleave with the compiler's";
const DEV_NULL_PROBE: &str = "the source is /dev/null (a device): left to the compiler";

/// The rows. Remote rows are `-c`/`-S` compiles of one source; Local rows say why.
pub fn rows() -> Vec<Row> {
    vec![
        // Plain compiles.
        remote("c", &["-c", "a.c"]),
        remote("c-o", &["-c", "a.c", "-o", "out.o"]),
        remote("o-before-c", &["-o", "out.o", "-c", "a.c"]),
        remote("O2", &["-O2", "-c", "a.c", "-o", "a.o"]),
        remote("Os-pipe", &["-Os", "-pipe", "-c", "util.c"]),
        remote(
            "defines",
            &["-DMSG=\"hello world\"", "-UNDEBUG", "-Dx=1", "-c", "a.c"],
        ),
        remote("include-dir", &["-Iinc", "-DFOO=2", "-c", "incuser.c"]),
        remote("output-abs", &["-c", "a.c", "-o", "{dir}/abs.o"]),
        remote("source-abs", &["-c", "{dir}/a.c", "-o", "a.o"]),
        remote("overwrite-existing", &["-c", "a.c", "-o", "existing.o"]),
        remote("output-symlink", &["-c", "a.c", "-o", "sym.o"]),
        remote("response-file", &["@args.rsp"]),
        remote("fPIC", &["-fPIC", "-O2", "-c", "util.c"]),
        // gcc -pedantic would warn about the line markers of the directives-only text.
        local(
            "std-pedantic",
            &["-std=c11", "-pedantic", "-Wall", "-c", "a.c"],
            GCC_PEDANTIC,
        )
        .clang(Where::Remote)
        .only(Drivers::C),
        local(
            "Wpedantic-g-warns",
            &["-Wpedantic", "-g", "-c", "warn.c", "-o", "warn.o"],
            GCC_PEDANTIC,
        )
        .clang(CLANG_DWARF5),
        local(
            "pedantic-errors",
            &["-std=c99", "-pedantic-errors", "-c", "a.c"],
            GCC_PEDANTIC,
        )
        .clang(Where::Remote),
        remote("pedantic-w", &["-pedantic-errors", "-w", "-c", "a.c"]),
        remote(
            "pedantic-then-no",
            &["-pedantic", "-Wno-pedantic", "-c", "a.c"],
        ),
        remote("cxx-template", &["-std=c++17", "-O2", "-c", "tmpl.cpp"]),
        // Debug info (issue 8 #5: clang's DWARF 5 line table).
        remote("g", &["-g", "-c", "a.c", "-o", "a.o"]).clang(CLANG_DWARF5),
        remote("O2-g", &["-O2", "-g", "-c", "util.c"]).clang(CLANG_DWARF5),
        remote("g3-O0", &["-g3", "-O0", "-c", "a.c"]).clang(CLANG_DWARF5),
        remote("gdwarf-4", &["-gdwarf-4", "-O2", "-c", "a.c"]),
        remote("gdwarf-5", &["-gdwarf-5", "-O2", "-c", "a.c"]).clang(CLANG_DWARF5),
        remote("g-abs-source", &["-g", "-c", "{dir}/a.c", "-o", "a.o"]).clang(CLANG_DWARF5),
        remote(
            "g-prefix-map",
            &["-g", "-fdebug-prefix-map={dir}=/src", "-c", "a.c"],
        )
        .clang(CLANG_DWARF5),
        remote(
            "gsplit-dwarf",
            &["-gsplit-dwarf", "-g", "-c", "a.c", "-o", "a.o"],
        )
        .clang(CLANG_DWARF5),
        remote("S", &["-S", "a.c"]),
        remote("S-o", &["-S", "-O2", "a.c", "-o", "out.s"]),
        remote("S-g", &["-S", "-g", "a.c"]).clang(CLANG_DWARF5),
        // LTO (issue 8 #6): the bytecode records the source's name and directory as the
        // server saw them (clang's `source_filename` is `.hoardcc-src/a.c`), which the link
        // would name. gcc's LTO section names are random without -frandom-seed.
        local(
            "flto",
            &["-flto", "-frandom-seed=1", "-O2", "-c", "a.c"],
            LTO,
        ),
        local(
            "flto-g",
            &["-flto", "-frandom-seed=1", "-g", "-O2", "-c", "a.c"],
            LTO,
        ),
        local(
            "flto-auto",
            &["-flto=auto", "-O2", "-c", "util.c", "-o", "u.o"],
            LTO,
        )
        .only(Drivers::Gnu)
        .loose(".o"),
        remote(
            "clang-gdwarf-4-abs",
            &["-g", "-gdwarf-4", "-Wall", "-c", "{dir}/warn.c"],
        )
        .only(Drivers::Clang),
        // -x forms.
        remote("x-c", &["-x", "c", "-c", "a.c", "-o", "x.o"]).only(Drivers::C),
        remote("x-c++", &["-x", "c++", "-c", "a.c", "-o", "x.o"]),
        remote("x-c-then-none", &["-x", "c", "-c", "a.c", "-x", "none"]).only(Drivers::C),
        local(
            "x-assembler",
            &["-x", "assembler", "-c", "asm.s", "-o", "asm.o"],
            "assembler input",
        ),
        local(
            "asm-S",
            &["-c", "asm.S"],
            "assembler input (preprocessed assembler)",
        ),
        // Warnings and errors, relative and absolute (issue 8 #4: absolute sources lost
        // their quoted source lines).
        remote("Wall", &["-Wall", "-Wextra", "-c", "warn.c"]),
        remote(
            "Werror",
            &["-Wall", "-Werror", "-c", "warn.c", "-o", "warn.o"],
        ),
        remote("Werror=", &["-Werror=unused-variable", "-c", "warn.c"]),
        remote("w", &["-w", "-Wall", "-c", "warn.c"]),
        remote("Wall-abs", &["-Wall", "-c", "{dir}/warn.c", "-o", "warn.o"]),
        remote(
            "Werror-abs",
            &["-Wall", "-Werror", "-c", "{dir}/warn.c", "-o", "warn.o"],
        ),
        remote("error", &["-c", "err.c"]),
        remote("error-abs", &["-c", "{dir}/err.c", "-o", "err.o"]),
        remote("error-fmax-errors", &["-fmax-errors=1", "-c", "err.c"]).only(Drivers::Gnu),
        remote("Wfatal-errors", &["-Wfatal-errors", "-c", "err.c"]),
        remote(
            "color-always",
            &["-fdiagnostics-color=always", "-Wall", "-c", "warn.c"],
        ),
        // Issue 8 #9: gcc -c leaves an existing output alone when the compile fails; gcc
        // -S or -pipe and clang delete it (a symlink: the link).
        remote(
            "error-with-existing-output",
            &["-c", "err.c", "-o", "existing.o"],
        ),
        remote(
            "error-with-existing-symlink",
            &["-c", "err.c", "-o", "sym.o"],
        ),
        remote("error-S-existing", &["-S", "err.c", "-o", "existing.o"]),
        remote(
            "error-pipe-existing",
            &["-pipe", "-c", "err.c", "-o", "existing.o"],
        ),
        // The preprocessor's own diagnostics interleave with the compiler's (and clang's
        // -frewrite-includes text keeps #warning): compiled here.
        local("cpp-warning", &["-c", "cppwarn.c"], CPP_SAID),
        local("cpp-warning-mixed", &["-Wall", "-c", "cppmix.c"], CPP_SAID),
        local("missing-header", &["-c", "missing.c"], CPP_FAILED),
        local("missing-source", &["-c", "nosuch.c"], CPP_FAILED),
        // Issue 8 #8: json diagnostics (gcc only; clang 14 has no json format).
        remote(
            "json-warning",
            &["-fdiagnostics-format=json", "-Wall", "-c", "warn.c"],
        )
        .only(Drivers::Gnu),
        remote("json-error", &["-fdiagnostics-format=json", "-c", "err.c"]).only(Drivers::Gnu),
        remote("json-clean", &["-fdiagnostics-format=json", "-c", "a.c"]).only(Drivers::Gnu),
        local(
            "json-cpp-warning",
            &["-fdiagnostics-format=json", "-c", "cppwarn.c"],
            "json diagnostics with a preprocessor diagnostic: gcc prints one JSON document",
        )
        .only(Drivers::Gnu),
        // Spaces and unicode in paths.
        remote(
            "space-dir",
            &[
                "-Wall",
                "-c",
                "dir with space/sp.c",
                "-o",
                "dir with space/sp.o",
            ],
        ),
        remote(
            "space-abs-g",
            &[
                "-g",
                "-Wall",
                "-c",
                "{dir}/dir with space/sp.c",
                "-o",
                "sp.o",
            ],
        )
        .clang(CLANG_DWARF5),
        remote("unicode", &["-c", "ünï/ß.c"]),
        remote("unicode-g-o", &["-g", "-c", "ünï/ß.c", "-o", "ünï/ß.o"]).clang(CLANG_DWARF5),
        // Dependency files: CMake, make, the kernel.
        remote(
            "cmake-MD-MT-MF",
            &[
                "-O2",
                "-g",
                "-DNDEBUG",
                "-MD",
                "-MT",
                "CMakeFiles/t.dir/a.c.o",
                "-MF",
                "CMakeFiles/t.dir/a.c.o.d",
                "-o",
                "CMakeFiles/t.dir/a.c.o",
                "-c",
                "{dir}/a.c",
            ],
        )
        .clang(CLANG_DWARF5),
        remote("MMD-MP", &["-MMD", "-MP", "-c", "a.c", "-o", "a.o"]),
        remote("MD-error", &["-MD", "-c", "err.c", "-o", "err.o"]),
        remote(
            "kernel-Wp-MMD",
            &["-Wp,-MMD,deps/.a.o.d", "-O2", "-c", "-o", "deps/a.o", "a.c"],
        ),
        // clang reads a bare -Wp,-MD as -MD: deps/a.d, target deps/a.o.
        remote("Wp-MD-no-file", &["-Wp,-MD", "-c", "-o", "deps/a.o", "a.c"]).only(Drivers::Clang),
        local(
            "M",
            &["-M", "a.c"],
            "dependency output only (-M without -c)",
        ),
        local(
            "MM-MF",
            &["-MM", "-MF", "a.dep", "a.c"],
            "dependency output only (-MM without -c)",
        ),
        // Autoconf conftests.
        remote("conftest-compile", &["-c", "-g", "-O2", "conftest.c"])
            .file("conftest.c", CONFTEST_MAIN)
            .clang(CLANG_DWARF5),
        remote("conftest-o", &["-c", "-o", "conftest.o", "conftest.c"])
            .file("conftest.c", CONFTEST_MAIN),
        local(
            "conftest-header-missing",
            &["-c", "-g", "-O2", "conftest.c"],
            CPP_FAILED,
        )
        .file("conftest.c", CONFTEST_HEADER),
        remote("conftest-choke-me", &["-c", "-g", "-O2", "conftest.c"])
            .file("conftest.c", CONFTEST_CHOKE)
            .clang(CLANG_DWARF5),
        local(
            "conftest-link",
            &["-o", "conftest", "-g", "-O2", "conftest.c"],
            "linking",
        )
        .file("conftest.c", CONFTEST_MAIN)
        .only(Drivers::C),
        local(
            "conftest-link-fails",
            &["-o", "conftest", "-g", "-O2", "conftest.c"],
            "linking",
        )
        .file("conftest.c", CONFTEST_FUNC),
        local(
            "conftest-E",
            &["-E", "conftest.c"],
            "preprocessing only (-E)",
        )
        .file("conftest.c", CONFTEST_HEADER),
        // Kernel cc-option probes and other /dev/null outputs (issue 8 #2): an output that
        // is not a regular file is written in place, as the compiler writes it; a probe
        // whose source is /dev/null too is left to the compiler.
        local(
            "cc-option",
            &[
                "-Werror",
                "-fno-strict-overflow",
                "-c",
                "-x",
                "c",
                "/dev/null",
                "-o",
                "/dev/null",
            ],
            DEV_NULL_PROBE,
        ),
        local(
            "cc-option-unknown",
            &[
                "-Werror",
                "-fno-such-option",
                "-c",
                "-x",
                "c",
                "/dev/null",
                "-o",
                "/dev/null",
            ],
            DEV_NULL_PROBE,
        ),
        local(
            "cc-disable-warning",
            &[
                "-Werror",
                "-Wunused-but-set-variable",
                "-S",
                "-x",
                "c",
                "/dev/null",
                "-o",
                "/dev/null",
            ],
            DEV_NULL_PROBE,
        ),
        remote("o-dev-null", &["-c", "a.c", "-o", "/dev/null"]),
        remote("S-o-dev-null", &["-S", "a.c", "-o", "/dev/null"]),
        remote(
            "Werror-o-dev-null",
            &["-O2", "-Werror", "-Wall", "-c", "warn.c", "-o", "/dev/null"],
        ),
        // Outputs gcc refuses or cannot write (issue 8 #3 and #9).
        local(
            "same-c",
            &["-c", "same.c", "-o", "same.c"],
            "output is the input: gcc refuses",
        ),
        local(
            "same-c-dot",
            &["-c", "same.c", "-o", "./same.c"],
            "output is the input (same inode)",
        ),
        local(
            "same-c-symlink",
            &["-c", "same.c", "-o", "same-link.c"],
            "output is the input (same inode)",
        ),
        local(
            "nodir",
            &["-c", "a.c", "-o", "nodir/a.o"],
            "the output directory does not exist",
        ),
        // Options that write side files (issue 8 #7).
        remote(
            "fopt-info-stderr",
            &["-O2", "-fopt-info-vec", "-c", "vec.c"],
        )
        .only(Drivers::Gnu),
        local(
            "fopt-info-all=",
            &["-O2", "-fopt-info-all=opt.txt", "-c", "vec.c"],
            "writes opt.txt",
        )
        .only(Drivers::Gnu),
        local(
            "fopt-info-vec=",
            &["-O3", "-fopt-info-vec=opt.txt", "-c", "vec.c"],
            "writes opt.txt",
        )
        .only(Drivers::Gnu),
        local(
            "fstack-usage",
            &["-fstack-usage", "-c", "a.c"],
            "writes a.su",
        )
        .only(Drivers::Gnu),
        local(
            "fcallgraph-info",
            &["-fcallgraph-info", "-c", "a.c"],
            "writes a.ci",
        )
        .only(Drivers::Gnu),
        local(
            "fdump-tree",
            &["-fdump-tree-original", "-c", "a.c"],
            "writes a.c.005t.original",
        )
        .only(Drivers::Gnu),
        local(
            "ftime-trace",
            &["-ftime-trace", "-c", "a.c"],
            "writes a.json",
        )
        .only(Drivers::Clang)
        .loose(".json"),
        local(
            "save-temps",
            &["-save-temps", "-c", "a.c"],
            "-save-temps keeps intermediate files",
        ),
        local("coverage", &["--coverage", "-c", "a.c"], "writes a.gcno")
            .loose(".gcno")
            .loose(".o"),
        local(
            "march-native",
            &["-march=native", "-O2", "-c", "a.c"],
            "depends on this machine's CPU",
        ),
        // Not compiles.
        local(
            "fsyntax-only",
            &["-fsyntax-only", "-Wall", "warn.c"],
            "syntax check only",
        ),
        local("E", &["-E", "a.c"], "preprocessing only (-E)"),
        local(
            "E-o",
            &["-E", "a.c", "-o", "a.i"],
            "preprocessing only (-E)",
        ),
        local(
            "dM-E",
            &["-dM", "-E", "-x", "c", "/dev/null"],
            "preprocessing only (-E)",
        ),
        local("S-stdout", &["-S", "a.c", "-o", "-"], "output to stdout"),
        local(
            "stdin",
            &["-x", "c", "-c", "-", "-o", "stdin.o"],
            "input from stdin",
        ),
        local("two-sources", &["-c", "a.c", "util.c"], "two input files"),
        local("no-input", &["-c"], "no input file"),
        local("version", &["--version"], "driver information request"),
        local(
            "dumpmachine",
            &["-dumpmachine"],
            "driver information request",
        ),
        local(
            "preprocessed-input",
            &["-c", "pre.i"],
            "already preprocessed input",
        )
        .only(Drivers::C)
        .pre(&["-E", "a.c", "-o", "pre.i"]),
        // Linking.
        local(
            "link-sources",
            &["main.c", "util.c", "a.c", "-o", "prog"],
            "linking",
        )
        .only(Drivers::C),
        local(
            "link-objects",
            &["main.o", "util.o", "a.o", "-o", "prog"],
            "linking",
        )
        .only(Drivers::C)
        .pre(&["-c", "main.c", "util.c", "a.c"]),
        local("link-error", &["link_err.c", "-o", "prog"], "linking"),
        // Precompiled headers.
        local(
            "gch-build",
            &["-x", "c-header", "pch.h", "-o", "pch.h.gch"],
            "precompiled header",
        )
        .only(Drivers::C),
        local("gch-build-plain", &["-c", "pch.h"], "precompiled header").only(Drivers::C),
        remote("gch-present", &["-c", "usepch.c", "-o", "usepch.o"])
            .only(Drivers::C)
            .pre(&["-x", "c-header", "pch.h", "-o", "pch.h.gch"]),
        local(
            "include-pch",
            &["-include-pch", "pch.h.pch", "-c", "usepch.c"],
            "uses a precompiled header",
        )
        .only(Drivers::Clang)
        .pre(&["-x", "c-header", "pch.h", "-o", "pch.h.pch"]),
        remote(
            "x-c-Wall",
            &["-Wall", "-x", "c", "-c", "vec.c", "-o", "vec.o"],
        )
        .only(Drivers::C),
        // clang's driver warns about linker inputs first ("'linker' input unused").
        remote("Wl-with-c", &["-Wl,--as-needed", "-c", "a.c"]),
        remote("l-with-c", &["-c", "warn.c", "-Wall", "-lm"]),
        local(
            "Wl-with-cpp-warning",
            &["-Wl,--as-needed", "-c", "cppwarn.c"],
            CPP_SAID,
        ),
    ]
}
