//! Stage: classify → preprocess / compile (argv rewriting). Turns a classified [`CompileJob`]
//! into the argv for the local preprocessor ([`CompileJob::preprocess_args`]) and for a stock
//! distccd ([`CompileJob::distcc_argv`]), like distcc's `strip.c`. What a server accepts is
//! decided by [`super::policy`]. Neighbours: [`super::classify`] builds the job;
//! `wrapper::preprocess` runs the cpp argv; `mux::lane` sends the distcc argv.

use super::language::{self, x_to_preprocessed};
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
