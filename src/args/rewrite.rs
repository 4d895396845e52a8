//! Stage: classify → preprocess / compile (argv rewriting). Turns a classified [`CompileJob`]
//! into the argv for the local preprocessor ([`CompileJob::preprocess_args`]) and for a stock
//! distccd ([`CompileJob::distcc_argv`]), and re-validates on the server that a compile argv
//! cannot run other programs or touch files outside the job directory ([`check_server_args`]).
//! Neighbours: [`super::classify`] builds the job; `wrapper::preprocess` runs the cpp argv;
//! `subsystem::job` calls [`check_server_args`] (distcc's `strip.c` + `arg.c` on the server).

use super::language::{self, x_to_preprocessed};
use super::table::{PREFIX_MAPS, PROFILE_HARMLESS};
use super::{CompileJob, CppStyle, Family};

impl CompileJob {
    /// argv\[1..] to run `compiler` for local preprocessing to stdout.
    ///
    /// Holds every argument that can matter to the preprocessor (including `-std`, `-f*`, `-m*`,
    /// `-O`, `-g`, which change predefined macros), then `-E`, the directives-only switch for
    /// [`CppStyle::DirectivesOnly`] (`-fdirectives-only` for gcc, `-frewrite-includes` for
    /// clang), the dependency rewrites, and the source. No `-o` (output goes to stdout), no
    /// `-c`/`-S`.
    ///
    /// Dependency flags produce the `.d` a local compile would: for `-MD`/`-MMD` without `-MF`
    /// this adds `-MF <output stem>.d`, and when `-o` was given but no `-MT`/`-MQ`, `-MQ <output>`
    /// (gcc's driver spec: `%{MD:-MD %{!o:%b.d}%{o*:%.d%*}}` and `%{o*:-MQ %*}`). Without `-o`,
    /// cpp's own default target (`basename.o`) is already what the local compile writes, even
    /// for `-S`.
    pub fn preprocess_args(&self, style: CppStyle) -> Vec<String> {
        let mut argv = self.cpp_args.clone();
        argv.push("-E".into());
        if style == CppStyle::DirectivesOnly {
            argv.push(
                match self.family {
                    Family::Gcc => "-fdirectives-only",
                    Family::Clang => "-frewrite-includes",
                }
                .into(),
            );
        }
        if self.make_deps {
            if !self.dep_file_given {
                argv.push("-MF".into());
                argv.push(format!("{}.d", language::strip_suffix(&self.output)));
            }
            if !self.dep_target_given && self.output_given {
                argv.push("-MQ".into());
                argv.push(self.output.clone());
            }
        }
        if self.explicit_language {
            argv.push("-x".into());
            argv.push(self.language.x_name().into());
        }
        argv.push(self.source.clone());
        argv
    }

    /// The name of the preprocessed file: the source with its suffix replaced by the language's
    /// preprocessed suffix (`foo.c` → `foo.i`, `src/a.cpp` → `src/a.ii`, `.m` → `.mi`,
    /// `.mm` → `.mii`). The directory part is kept.
    pub fn preprocessed_name(&self) -> String {
        format!(
            "{}.{}",
            language::strip_suffix(&self.source),
            self.language.preprocessed_suffix()
        )
    }

    /// Full argv for a stock distccd: `[compiler, compile_args…, "-c"|"-S", preprocessed_name,
    /// "-o", output]`, with any `-x LANG` turned into the preprocessed language
    /// (`-x c++` → `-x c++-cpp-output`).
    pub fn distcc_argv(&self) -> Vec<String> {
        let mut argv = Vec::with_capacity(self.compile_args.len() + 5);
        argv.push(self.compiler.clone());
        let mut after_x = false;
        for arg in &self.compile_args {
            if after_x {
                argv.push(x_to_preprocessed(arg).unwrap_or(arg).to_string());
                after_x = false;
            } else {
                after_x = arg == "-x";
                argv.push(arg.clone());
            }
        }
        argv.push(if self.assemble_only { "-S" } else { "-c" }.into());
        argv.push(self.preprocessed_name());
        argv.push("-o".into());
        argv.push(self.output.clone());
        argv
    }
}

/// Option prefixes the server refuses, with the reason it gives.
const REFUSED: &[(&str, &str)] = &[
    ("--coverage", "writes profile files"),
    ("--output", "the server names outputs itself"),
    ("--specs", "loads a spec file"),
    ("--sysroot", "reads headers from a server path"),
    ("--wrapper", "runs another program"),
    ("-B", "changes where the driver finds programs"),
    ("-F", "adds a header search path"),
    ("-I", "adds a header search path"),
    ("-M", "writes dependency output"),
    ("-Wl,", "passes options to the linker"),
    ("-Wp,", "passes options to the preprocessor"),
    ("-Xassembler", "passes options to the assembler"),
    ("-Xclang", "may load compiler plugins"),
    ("-Xlinker", "passes options to the linker"),
    ("-Xpreprocessor", "passes options to the preprocessor"),
    ("-aux-info", "writes an extra file"),
    ("-cxx-isystem", "adds a header search path"),
    ("-fauto-profile", "reads profile files"),
    ("-fbranch-probabilities", "reads profile files"),
    ("-fcreate-profile", "writes profile files"),
    ("-fcs-profile-generate", "writes profile files"),
    ("-fdump-", "writes dump files"),
    ("-fpass-plugin", "loads a compiler plugin"),
    ("-fplugin", "loads a compiler plugin"),
    ("-fprofile-", "reads or writes profile files"),
    ("-fsanitize-blacklist=", "reads a file"),
    ("-fsanitize-coverage-allowlist=", "reads a file"),
    ("-fsanitize-coverage-blocklist=", "reads a file"),
    ("-fsanitize-coverage-ignorelist=", "reads a file"),
    ("-fsanitize-ignorelist=", "reads a file"),
    ("-ftest-coverage", "writes profile files"),
    ("-fxray-always-instrument=", "reads a file"),
    ("-fxray-attr-list=", "reads a file"),
    ("-fxray-never-instrument=", "reads a file"),
    ("-idirafter", "adds a header search path"),
    ("-iframework", "adds a header search path"),
    ("-imacros", "reads a header"),
    ("-include", "reads a header"),
    ("-iplugindir", "loads compiler plugins"),
    ("-iprefix", "adds a header search path"),
    ("-iquote", "adds a header search path"),
    ("-isysroot", "reads headers from a server path"),
    ("-isystem", "adds a header search path"),
    ("-ivfsoverlay", "reads a file"),
    ("-iwithprefix", "adds a header search path"),
    ("-load", "loads a plugin"),
    ("-march=native", "would target the server's CPU"),
    ("-mcpu=native", "would target the server's CPU"),
    ("-mtune=native", "would target the server's CPU"),
    ("-o", "the server names outputs itself"),
    ("-save-temps", "writes intermediate files"),
    ("-specs", "loads a spec file"),
    ("-wrapper", "runs another program"),
    ("@", "reads a response file"),
];

/// True if `s`, taken as a path, is absolute or climbs with a `..` component.
fn leaves_job_dir(s: &str) -> bool {
    s.starts_with('/') || s.split('/').any(|c| c == "..")
}

/// The reason a single `-Wa,` piece is refused, if it is.
fn refused_asm_piece(piece: &str) -> Option<&'static str> {
    if piece.starts_with("-a") {
        Some("writes an assembler listing")
    } else if piece.starts_with("--MD") {
        Some("writes assembler dependencies")
    } else if piece.starts_with("-o") {
        Some("names the assembler output")
    } else if piece.starts_with('@') {
        Some("reads an assembler response file")
    } else {
        None
    }
}

/// Server side: refuse any argument that would run another program or touch files outside the
/// job directory.
///
/// Refuses plugins, spec files, `-B`, wrappers, response files, `-o`, preprocessor and linker
/// options, profile and dump files, header search paths, assembler listings, and any operand or
/// `=` value that is an absolute path or has a `..` component. Path-prefix maps
/// (`-fdebug-prefix-map=` and friends) and macro definitions are exempt from the path rule:
/// their values are never opened.
///
/// # Errors
/// A message naming the first refused argument and why.
pub fn check_server_args(args: &[String]) -> Result<(), String> {
    for arg in args {
        let refuse = |why: &str| Err(format!("refusing argument {arg:?}: {why}"));
        if let Some((_, why)) = REFUSED.iter().find(|(p, _)| arg.starts_with(p)) {
            let harmless = arg.starts_with("-fprofile-")
                && PROFILE_HARMLESS.iter().any(|p| arg.starts_with(p));
            if !harmless {
                return refuse(why);
            }
        }
        if !arg.starts_with('-') || arg == "-" {
            if leaves_job_dir(arg) {
                return refuse("path outside the job directory");
            }
            continue;
        }
        if PREFIX_MAPS.iter().any(|p| arg.starts_with(p))
            || arg.starts_with("-D")
            || arg.starts_with("-U")
        {
            continue;
        }
        if let Some(list) = arg.strip_prefix("-Wa,") {
            for piece in list.split(',') {
                if let Some(why) = refused_asm_piece(piece) {
                    return refuse(why);
                }
                let outside = if piece.starts_with('-') {
                    piece.split('=').skip(1).any(leaves_job_dir)
                } else {
                    leaves_job_dir(piece)
                };
                if outside {
                    return refuse("path outside the job directory");
                }
            }
            continue;
        }
        if arg.split('=').skip(1).any(leaves_job_dir) {
            return refuse("path outside the job directory");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(args: &[&str]) -> Result<(), String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        check_server_args(&args)
    }

    #[test]
    fn server_args_table() {
        // (argv, allowed?, for refusals a word the message must contain)
        let cases: &[(&[&str], bool)] = &[
            (&["-O2", "-g", "-c", "foo.i"], true),
            (&["-std=c++17", "-Wall", "-Wextra", "-fPIC"], true),
            (&["-x", "c++", "-c", "src/a.cpp"], true),
            (&["-fdebug-prefix-map=/job/1=/home/u/src"], true),
            (
                &["-ffile-prefix-map=/a=/b", "-fmacro-prefix-map=/c=."],
                true,
            ),
            (&["-fprofile-update=atomic", "-fprofile-correction"], true),
            (&["-Wa,--noexecstack", "-Wa,-mrelax-relocations=no"], true),
            (
                &["--param=max-inline-insns-single=100", "--param", "a=1"],
                true,
            ),
            (&["-DPATH=/usr/share", "-UX"], true),
            (
                &["-march=haswell", "-mtune=generic", "-fsanitize=address"],
                true,
            ),
            (&["-mllvm", "-x86-asm-syntax=intel"], true),
            (&["-gsplit-dwarf", "-g3", "-gz=zlib"], true),
            (&["-fplugin=/x/p.so"], false),
            (&["-fplugin-arg-p-k=v"], false),
            (&["-fpass-plugin=p.so"], false),
            (&["-specs=my.specs"], false),
            (&["--specs=my.specs"], false),
            (&["-B/tmp/evil"], false),
            (&["-Bdir"], false),
            (&["-wrapper", "gdb,--args"], false),
            (&["--wrapper=x"], false),
            (&["@args.rsp"], false),
            (&["-o", "x.o"], false),
            (&["-ox.o"], false),
            (&["-Xclang", "-load"], false),
            (&["-load", "x.so"], false),
            (&["-fprofile-generate"], false),
            (&["-fprofile-use=prof"], false),
            (&["-fprofile-dir=d"], false),
            (&["-fprofile-arcs"], false),
            (&["-fauto-profile=x.afdo"], false),
            (&["-fcreate-profile"], false),
            (&["-fdump-tree-all"], false),
            (&["-save-temps=obj"], false),
            (&["-imacros", "m.h"], false),
            (&["-include", "c.h"], false),
            (&["-I/usr/include"], false),
            (&["-I", "inc"], false),
            (&["-iquote", "q"], false),
            (&["-isystem", "s"], false),
            (&["-idirafter", "d"], false),
            (&["-iprefix", "p"], false),
            (&["--sysroot=/"], false),
            (&["--sysroot", "s"], false),
            (&["-isysroot", "s"], false),
            (&["-MD"], false),
            (&["-MMD"], false),
            (&["-MF", "x.d"], false),
            (&["-MT", "t"], false),
            (&["-MQ", "t"], false),
            (&["-M"], false),
            (&["-MM"], false),
            (&["-Wp,-MD,x.d"], false),
            (&["-Wa,-adhln=list.txt"], false),
            (&["-Wa,-a"], false),
            (&["-Wa,--MD,x.d"], false),
            (&["-Wa,-o,x.o"], false),
            (&["-Wa,-I,/etc"], false),
            (&["-Xassembler", "-a"], false),
            (&["-Xlinker", "-rpath"], false),
            (&["-Wl,-rpath,/x"], false),
            (&["-fsanitize-blacklist=bl.txt"], false),
            (&["-fsanitize-ignorelist=il.txt"], false),
            (&["-fprofile-list=l.txt"], false),
            (&["/etc/passwd"], false),
            (&["../x.c"], false),
            (&["src/../../x.c"], false),
            (&["-fuse-ld=/usr/bin/ld"], false),
            (&["-fcrash-diagnostics-dir=../../x"], false),
            (&["-march=native"], false),
        ];
        assert!(cases.len() >= 20);
        for (argv, ok) in cases {
            let got = check(argv);
            assert_eq!(got.is_ok(), *ok, "{argv:?} → {got:?}");
            if let Err(msg) = got {
                // The message names the refused argument.
                assert!(
                    argv.iter().any(|a| msg.contains(&format!("{a:?}"))),
                    "{msg} does not name an argument of {argv:?}"
                );
            }
        }
    }

    #[test]
    fn refused_list_is_sorted() {
        assert!(REFUSED.windows(2).all(|p| p[0].0 < p[1].0));
    }
}
