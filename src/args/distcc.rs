//! Stage: server admission for stock distcc clients (the argv parser). Takes apart the
//! command line a stock distcc client sends (`gcc -O2 -c x.i -o x.o`, after its own
//! `strip.c` removed preprocessor options) into the compiler, the compile arguments, the
//! one input and the mode, and holds it to the same option policy as native jobs
//! ([`super::policy`]): `-E`, a second `-o`, a second input and every option outside the
//! allow-list are refused. Pure and panic-free on any input. Neighbours:
//! `subsystem::distccd` (runs the plan), [`super::policy`].

use super::policy::{self, Refusal, Why};

/// A distcc command line taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistccPlan {
    /// argv\[0\] as the client sent it.
    pub compiler: String,
    /// The arguments without the input, `-o`, `-c`/`-S`; all allowed by the policy.
    pub args: Vec<String>,
    /// The input file name (client side).
    pub input: String,
    /// The `-o` value, if given (the server writes its own output file either way).
    pub output: Option<String>,
    /// `-S` (assembly) rather than `-c`.
    pub assemble_only: bool,
}

/// Why a distcc command line is not served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// No argv at all.
    #[error("empty distcc command line")]
    Empty,
    /// Neither `-c` nor `-S`: the client asked for a link or a preprocess.
    #[error("distcc job without -c or -S")]
    NotCompile,
    /// No input file.
    #[error("no source file in the distcc command line")]
    NoSource,
    /// The one input is not a file distcc compiles.
    #[error("{0:?} is not a source file distcc compiles")]
    NotSource(String),
    /// An option, name or operand the policy refuses (`-E`, a second `-o`, …).
    #[error("argument refused: {0}")]
    Refused(#[from] Refusal),
}

/// Extensions of files distcc compiles remotely (distcc `dcc_is_source`).
const SOURCE_EXTENSIONS: [&str; 17] = [
    "c", "i", "ii", "mi", "mii", "cc", "cpp", "cxx", "cp", "c++", "C", "CC", "CPP", "CXX", "m",
    "mm", "M",
];

/// The extension of the last component of `name`, if any.
pub fn extension(name: &str) -> Option<&str> {
    let base = name.rsplit('/').next().unwrap_or(name);
    base.rsplit_once('.')
        .map(|(_, e)| e)
        .filter(|e| !e.is_empty())
}

/// The preprocessed extension for an input's extension (distcc `dcc_preproc_exten`).
pub fn preprocessed_extension(ext: &str) -> &'static str {
    match ext {
        "c" | "i" => "i",
        "m" | "mi" => "mi",
        "mm" | "M" | "mii" => "mii",
        _ => "ii",
    }
}

/// Splits a stock distcc argv into compiler, compile arguments, input and mode, checking
/// every argument against the option policy.
///
/// # Errors
/// [`PlanError`]: no argv, no `-c`/`-S`, no input or one that is not a source, and
/// [`PlanError::Refused`] for `-E`, a second `-o` or input, a name that could be read as
/// an option, and any option outside the allow-list.
pub fn distcc_plan(argv: &[String]) -> Result<DistccPlan, PlanError> {
    let (compiler, rest) = argv.split_first().ok_or(PlanError::Empty)?;
    if let Some(extra) = rest.get(policy::MAX_ARGS) {
        return Err(Refusal::new(extra, Why::TooLong).into());
    }
    let mut args = Vec::new();
    let mut input: Option<String> = None;
    let mut output: Option<String> = None;
    let (mut compile, mut assemble_only) = (false, false);
    let mut i = 0;
    while i < rest.len() {
        let arg = rest[i].as_str();
        i += 1;
        match arg {
            "-c" => compile = true,
            "-S" => assemble_only = true,
            _ if arg.starts_with("-o") => {
                let value = if arg == "-o" {
                    i += 1;
                    rest.get(i - 1).map(String::as_str)
                } else {
                    Some(&arg[2..])
                };
                let Some(value) = value else {
                    return Err(Refusal::new(arg, Why::MissingValue).into());
                };
                if output.is_some() {
                    return Err(Refusal::new(arg, Why::NotAllowed).into());
                }
                policy::check_name(value)?;
                output = Some(value.to_string());
            }
            _ if !arg.starts_with('-') || arg == "-" => {
                if input.is_some() {
                    return Err(Refusal::new(arg, Why::ExtraInput).into());
                }
                policy::check_name(arg)?;
                input = Some(arg.to_string());
            }
            _ => {
                // One option, with its separate value if it takes one.
                let taken = policy::check_one(&rest[i - 1..])?;
                args.extend_from_slice(&rest[i - 1..i - 1 + taken]);
                i += taken - 1;
            }
        }
    }
    if !compile && !assemble_only {
        return Err(PlanError::NotCompile);
    }
    let input = input.ok_or(PlanError::NoSource)?;
    if !extension(&input).is_some_and(|e| SOURCE_EXTENSIONS.contains(&e)) {
        return Err(PlanError::NotSource(input));
    }
    // The arguments as a whole (separate values in place) pass too.
    policy::check_server_args(&args)?;
    Ok(DistccPlan {
        compiler: compiler.clone(),
        args,
        input,
        output,
        assemble_only,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn plans_what_stock_clients_send() {
        let p = distcc_plan(&s("gcc -O2 -c src/foo.i -o foo.o -g")).unwrap();
        assert_eq!(p.compiler, "gcc");
        assert_eq!(p.input, "src/foo.i");
        assert_eq!(p.output.as_deref(), Some("foo.o"));
        assert_eq!(p.args, s("-O2 -g"));
        assert!(!p.assemble_only);
        let p = distcc_plan(&s("g++ -S x.ii -ox.s")).unwrap();
        assert_eq!(p.input, "x.ii");
        assert_eq!(p.output.as_deref(), Some("x.s"));
        assert!(p.args.is_empty() && p.assemble_only);
        let p = distcc_plan(&s("cc -x c++-cpp-output -D X -c a.ii -o b.o")).unwrap();
        assert_eq!(p.args, s("-x c++-cpp-output -D X"));
        assert_eq!(p.input, "a.ii");
        let p = distcc_plan(&s("cc -c a.i")).unwrap();
        assert_eq!(p.output, None);
    }

    #[test]
    fn refuses_what_a_server_must_not_run() {
        let refused = |line: &str| match distcc_plan(&s(line)) {
            Err(PlanError::Refused(r)) => r.option,
            other => panic!("{line:?}: {other:?}"),
        };
        assert_eq!(refused("gcc -E -c a.i -o a.o"), "-E");
        assert_eq!(refused("gcc -c a.i -o a.o -o /home/u/.profile"), "-o");
        assert_eq!(refused("gcc -c a.i -o a.o -o/x"), "-o/x");
        assert_eq!(refused("gcc -c a.i b.i -o a.o"), "b.i");
        assert_eq!(refused("gcc -c a.i -o a.o extra.o"), "extra.o");
        assert_eq!(refused("gcc -c @rsp -o a.o"), "@rsp");
        assert_eq!(refused("gcc -c a.i -o -fplugin=x.so"), "-fplugin=x.so");
        assert_eq!(refused("gcc -c a.i -o @x"), "@x");
        assert_eq!(refused("gcc -c a.i -o"), "-o");
        assert_eq!(
            refused("g++ -fmodules-ts -fmodule-mapper=|sh -c a.ii -o a.o"),
            "-fmodules-ts"
        );
        assert_eq!(refused("gcc --prefix=./ -c a.i -o a.o"), "--prefix=./");
        assert_eq!(refused("gcc -B . -c a.i -o a.o"), "-B");
        assert_eq!(
            refused("gcc --for-assembler=@rsp -c a.i -o a.o"),
            "--for-assembler=@rsp"
        );
        assert_eq!(
            refused("gcc -fcompare-debug=-fplugin=./evil.so -c a.i -o a.o"),
            "-fcompare-debug=-fplugin=./evil.so"
        );
        assert_eq!(refused("clang --config ./f -c a.i -o a.o"), "--config");
        assert_eq!(
            refused("gcc -fplugin=evil.so -c foo.c -o foo.o"),
            "-fplugin=evil.so"
        );
        assert_eq!(refused("gcc -D -fplugin=x -c a.i -o a.o"), "-D -fplugin=x");
        assert_eq!(refused("gcc -x assembler -c a.i -o a.o"), "-x assembler");
        assert_eq!(refused("gcc -c - -o a.o"), "-");
    }

    #[test]
    fn other_failures() {
        assert_eq!(distcc_plan(&[]), Err(PlanError::Empty));
        assert_eq!(distcc_plan(&s("gcc foo.c")), Err(PlanError::NotCompile));
        assert_eq!(distcc_plan(&s("gcc -c")), Err(PlanError::NoSource));
        assert_eq!(
            distcc_plan(&s("gcc -c foo.h")),
            Err(PlanError::NotSource("foo.h".into()))
        );
        // An output named like a source is not the input.
        assert_eq!(distcc_plan(&s("cc -c a.i -o b.c")).unwrap().input, "a.i");
    }

    proptest! {
        #[test]
        fn plans_never_panic_and_hold_only_allowed_arguments(
            argv in prop::collection::vec(
                prop_oneof![
                    prop::sample::select(vec![
                        "gcc", "-c", "-S", "-E", "-o", "a.i", "b.c", "-O2", "-D", "X", "-x",
                        "c", "-fplugin=x", "@r", "-", "-ox", "-g", "--param", "a=1",
                    ]).prop_map(str::to_string),
                    any::<String>(),
                ],
                0..10,
            )
        ) {
            if let Ok(p) = distcc_plan(&argv) {
                prop_assert!(policy::check_server_args(&p.args).is_ok());
                prop_assert!(policy::check_name(&p.input).is_ok());
                prop_assert!(p.output.as_deref().is_none_or(|o| policy::check_name(o).is_ok()));
                prop_assert!(!p.args.iter().any(|a| a == "-E" || a == "-c" || a == "-S"));
            }
        }
    }

    #[test]
    fn preprocessed_extensions() {
        assert_eq!(preprocessed_extension("c"), "i");
        assert_eq!(preprocessed_extension("cpp"), "ii");
        assert_eq!(preprocessed_extension("C"), "ii");
        assert_eq!(preprocessed_extension("m"), "mi");
        assert_eq!(preprocessed_extension("mm"), "mii");
        assert_eq!(preprocessed_extension("ii"), "ii");
        assert_eq!(extension("a.b/c"), None);
        assert_eq!(extension("x.tar.c"), Some("c"));
    }
}
