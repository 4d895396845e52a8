//! Stage: classify. Decides from a gcc/clang command line whether a compile can be distributed
//! ([`Classified::Remote`] with a [`CompileJob`]) or must run here ([`Classified::Local`] with a
//! [`LocalReason`]), after expanding `@file` response files like gcc's libiberty does.
//! Shared by both ends, like distcc's `arg.c`: the wrapper classifies and builds the local
//! preprocess and remote compile argv (see `args::rewrite`); both ends hold the remote argv to
//! one option allow-list, [`policy`] (the server with [`check_server_args`], stock distcc
//! command lines through [`distcc_plan`]). Pure: no processes; only response-file
//! expansion reads files.
//! Neighbours: `wrapper::masquerade` (before), `wrapper::preprocess` / `wrapper::local` (after).

mod distcc;
mod language;
pub mod policy;
mod rewrite;
mod table;

use std::fmt;
use std::path::{Path, PathBuf};

pub use distcc::{distcc_plan, extension, preprocessed_extension, DistccPlan, PlanError};
pub use language::Language;
pub use policy::{check_name, check_server_args, Refusal};

use language::InputKind;
use table::{Kind, LocalKind, Value, When};

/// The compiler drivers hoardcc knows; [`is_compiler_name`] adds their target-prefixed and
/// versioned variants. The server's default allow-list and the wrapper's masquerade
/// names both follow it.
pub const COMPILER_NAMES: [&str; 6] = ["gcc", "g++", "cc", "c++", "clang", "clang++"];

/// Whether `name` (a file name, not a path) names a C/C++ compiler driver: `^([a-z0-9_]+-)*(gcc|g\+\+|cc|c\+\+|clang|clang\+\+)(-[0-9.]+)?$`,
/// e.g. `gcc`, `gcc-12`, `x86_64-linux-gnu-gcc-12`, `clang++-16`.
pub fn is_compiler_name(name: &str) -> bool {
    let matches_base = |s: &str| {
        COMPILER_NAMES.iter().any(|base| {
            if s == *base {
                return true;
            }
            let Some(prefix) = s.strip_suffix(base).and_then(|p| p.strip_suffix('-')) else {
                return false;
            };
            prefix.split('-').all(|seg| {
                !seg.is_empty()
                    && seg
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            })
        })
    };
    if matches_base(name) {
        return true;
    }
    match name.rsplit_once('-') {
        Some((rest, version))
            if !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit() || b == b'.') =>
        {
            matches_base(rest)
        }
        _ => false,
    }
}

/// Which compiler driver we are imitating; decides the directives-only preprocessor switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// gcc (and anything not named clang): `-fdirectives-only`.
    Gcc,
    /// clang: `-frewrite-includes`.
    Clang,
}

impl Family {
    /// The family of a compiler from its name: a basename containing `clang` is clang.
    pub fn from_compiler(compiler: &str) -> Family {
        if language::basename(compiler).contains("clang") {
            Family::Clang
        } else {
            Family::Gcc
        }
    }
}

/// How the local preprocessor runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CppStyle {
    /// Resolve includes but keep macros unexpanded (byte-identical `-g` objects).
    DirectivesOnly,
    /// Classic `-E` (what a stock distccd expects).
    Classic,
}

/// The outcome of [`classify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classified {
    /// A single-source compile we can preprocess here and compile elsewhere.
    Remote(CompileJob),
    /// Run the real compiler locally, for this reason.
    Local(LocalReason),
}

/// Why a command line runs locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalReason {
    /// No `-c` or `-S`: the driver links.
    Linking,
    /// `-E`: preprocessing only.
    PreprocessOnly,
    /// `-M`/`-MM`: dependency output only.
    DependenciesOnly,
    /// Driver information requests (`--version`, `-v`, `-print-*`, …); holds the option.
    Info(String),
    /// An option is missing its operand; holds the option (gcc will report the error).
    MissingOperand(String),
    /// No input file.
    NoSource,
    /// Input from stdin (`-`).
    Stdin,
    /// More than one input file; holds how many.
    MultipleInputs(usize),
    /// Assembler input (`.s`, `.S`, `.sx`, `-x assembler*`); holds the input.
    Assembler(String),
    /// Already preprocessed input (`.i`, `.ii`, `-x cpp-output`); holds the input.
    Preprocessed(String),
    /// A header or `-x *-header`: building a precompiled header; holds the input.
    PrecompiledHeader(String),
    /// `-x` with a language we do not distribute; holds the language.
    UnknownLanguage(String),
    /// An input that is not a source file (an object, a library, …); holds it.
    NotSource(String),
    /// `-o -`: object to stdout.
    OutputToStdout,
    /// `-save-temps*`.
    SaveTemps(String),
    /// `-Wa,-a*` listings or `-Wa,--MD`; holds the option.
    AssemblerListing(String),
    /// `-march=native` and friends; holds the option.
    NativeCpu(String),
    /// Profiling or coverage files would be read or written on the server; holds the option.
    Profile(String),
    /// `-fsyntax-only`.
    SyntaxOnly,
    /// Writes an extra file we would not bring back (`-fdump-*`, `-fstack-usage`, …).
    ExtraOutput(String),
    /// Runs or loads other programs (`-fplugin`, `-specs`, `-B`, `-wrapper`, `-Xclang`).
    Toolchain(String),
    /// Reads a file named in the option that the server does not have.
    ReadsFile(String),
    /// Uses a precompiled header file (`-include-pch`); holds the option.
    UsesPch(String),
    /// The server would refuse the compile argv; holds its message.
    ServerRefuses(String),
    /// An option (or option with its value) outside the server allow-list ([`policy`]).
    NotAllowed(String),
    /// A source or output name a server would refuse ([`check_name`]); holds the name.
    BadName(String),
    /// Options the server accepts one by one, whose combination would give a different
    /// result remotely (a row of the option table's `COMBINATIONS`); holds the reason.
    WouldDiffer(&'static str),
}

impl fmt::Display for LocalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use LocalReason::*;
        match self {
            Linking => write!(f, "linking (no -c or -S)"),
            PreprocessOnly => write!(f, "preprocessing only (-E)"),
            DependenciesOnly => write!(f, "dependency output only (-M/-MM)"),
            Info(o) => write!(f, "driver information request {o}"),
            MissingOperand(o) => write!(f, "option {o} is missing its argument"),
            NoSource => write!(f, "no input file"),
            Stdin => write!(f, "input from stdin"),
            MultipleInputs(n) => write!(f, "{n} input files"),
            Assembler(i) => write!(f, "assembler input {i}"),
            Preprocessed(i) => write!(f, "already preprocessed input {i}"),
            PrecompiledHeader(i) => write!(f, "precompiled header {i}"),
            UnknownLanguage(l) => write!(f, "language {l} is not distributed"),
            NotSource(i) => write!(f, "{i} is not a C/C++/Objective-C source"),
            OutputToStdout => write!(f, "output to stdout"),
            SaveTemps(o) => write!(f, "{o} keeps intermediate files"),
            AssemblerListing(o) => write!(f, "{o} writes assembler output files"),
            NativeCpu(o) => write!(f, "{o} depends on this machine's CPU"),
            Profile(o) => write!(f, "{o} uses profile files"),
            SyntaxOnly => write!(f, "syntax check only"),
            ExtraOutput(o) => write!(f, "{o} writes extra output files"),
            Toolchain(o) => write!(f, "{o} runs or loads other programs"),
            ReadsFile(o) => write!(f, "{o} reads a local file"),
            UsesPch(o) => write!(f, "{o} uses a precompiled header"),
            ServerRefuses(m) => write!(f, "server would refuse: {m}"),
            NotAllowed(o) => write!(f, "{o} is not on the build servers' option allow-list"),
            BadName(n) => write!(f, "file name {n:?} could be read as an option"),
            WouldDiffer(why) => f.write_str(why),
        }
    }
}

/// A distributable compile of one source file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileJob {
    /// The compiler as invoked (argv\[0] for the real compiler).
    pub compiler: String,
    /// gcc or clang, from the compiler name.
    pub family: Family,
    /// The source language (from `-x` or the suffix).
    pub language: Language,
    /// The source file, as on the command line.
    pub source: String,
    /// The `-o` value, or the default: basename of the source with `.o` (`.s` for `-S`).
    pub output: String,
    /// `-S`: the output is assembler text.
    pub assemble_only: bool,
    /// Further files the compile writes next to the output (the `.dwo` for `-gsplit-dwarf`).
    pub extra_outputs: Vec<String>,
    /// Compile-only arguments: no preprocessor options, no source, no `-o`, no `-c`/`-S`.
    /// A `-x LANG` (if the language came from `-x`) is the last pair.
    pub compile_args: Vec<String>,
    /// Whether debug info is on (any `-g` other than `-g0` in effect).
    pub debug: bool,
    /// Arguments for the local preprocessor, in order, without source, `-o`, `-c`/`-S`, `-x`.
    cpp_args: Vec<String>,
    /// The language came from `-x` (so it must be repeated before the source).
    explicit_language: bool,
    /// `-MD` or `-MMD` given.
    make_deps: bool,
    /// `-MF` given.
    dep_file_given: bool,
    /// `-MT` or `-MQ` given.
    dep_target_given: bool,
    /// `-o` given (rather than defaulted).
    output_given: bool,
}

/// Errors while reading the command line.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    /// A response file exists but could not be read.
    #[error("cannot read response file {path}: {source}")]
    ResponseFileUnreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A response file names a directory.
    #[error("response file {path} is a directory")]
    ResponseFileIsDirectory {
        /// The directory.
        path: PathBuf,
    },
    /// A response file is not UTF-8.
    #[error("response file {path} is not valid UTF-8")]
    ResponseFileNotUtf8 {
        /// The file.
        path: PathBuf,
    },
    /// Response files nest deeper than [`MAX_RESPONSE_DEPTH`] (or loop).
    #[error("response files nested deeper than {MAX_RESPONSE_DEPTH} at {path}")]
    ResponseFilesTooDeep {
        /// The file at which the limit was hit.
        path: PathBuf,
    },
    /// More than [`MAX_RESPONSE_FILES`] response files in one command line.
    #[error("more than {MAX_RESPONSE_FILES} response files")]
    TooManyResponseFiles,
}

/// How deeply `@file`s may include each other.
pub const MAX_RESPONSE_DEPTH: usize = 32;
/// How many `@file`s one command line may expand (libiberty's limit is 2000).
pub const MAX_RESPONSE_FILES: usize = 2000;

/// Expand `@file` response files in `args` (argv\[1..]), relative to `cwd`.
///
/// Follows gcc's libiberty `expandargv`/`buildargv`: whitespace separates arguments, single and
/// double quotes group, a backslash escapes the next character (also inside quotes), nested
/// `@file`s expand too (relative to `cwd`, as in gcc), and a file that does not exist is passed
/// through as the literal `@file` argument.
///
/// # Errors
/// [`ArgsError`] for files that exist but cannot be read, directories, non-UTF-8 contents, and
/// nesting deeper than [`MAX_RESPONSE_DEPTH`] or more than [`MAX_RESPONSE_FILES`] files.
pub fn expand_response_files(args: &[String], cwd: &Path) -> Result<Vec<String>, ArgsError> {
    let mut out = Vec::with_capacity(args.len());
    let mut files = 0;
    expand_into(args, cwd, 0, &mut files, &mut out)?;
    Ok(out)
}

fn expand_into(
    args: &[String],
    cwd: &Path,
    depth: usize,
    files: &mut usize,
    out: &mut Vec<String>,
) -> Result<(), ArgsError> {
    for arg in args {
        // `@` alone names no file: gcc's stat("") fails and the argument stays.
        let Some(name) = arg.strip_prefix('@').filter(|n| !n.is_empty()) else {
            out.push(arg.clone());
            continue;
        };
        let path = cwd.join(name);
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                out.push(arg.clone());
                continue;
            }
            Err(source) => return Err(ArgsError::ResponseFileUnreadable { path, source }),
        };
        if meta.is_dir() {
            return Err(ArgsError::ResponseFileIsDirectory { path });
        }
        if depth >= MAX_RESPONSE_DEPTH {
            return Err(ArgsError::ResponseFilesTooDeep { path });
        }
        *files += 1;
        if *files > MAX_RESPONSE_FILES {
            return Err(ArgsError::TooManyResponseFiles);
        }
        let bytes = std::fs::read(&path).map_err(|source| ArgsError::ResponseFileUnreadable {
            path: path.clone(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|_| ArgsError::ResponseFileNotUtf8 { path })?;
        expand_into(&split_response_text(&text), cwd, depth + 1, files, out)?;
    }
    Ok(())
}

/// Split response-file text into arguments like libiberty's `buildargv`.
fn split_response_text(text: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| is_response_space(*c)) {
            chars.next();
        }
        if chars.peek().is_none() {
            return args;
        }
        let (mut squote, mut dquote, mut escaped) = (false, false, false);
        let mut arg = String::new();
        while let Some(&c) = chars.peek() {
            if is_response_space(c) && !squote && !dquote && !escaped {
                break;
            }
            chars.next();
            if escaped {
                escaped = false;
                arg.push(c);
            } else if c == '\\' {
                escaped = true;
            } else if squote {
                if c == '\'' {
                    squote = false;
                } else {
                    arg.push(c);
                }
            } else if dquote {
                if c == '"' {
                    dquote = false;
                } else {
                    arg.push(c);
                }
            } else if c == '\'' {
                squote = true;
            } else if c == '"' {
                dquote = true;
            } else {
                arg.push(c);
            }
        }
        args.push(arg);
    }
}

/// libiberty's `ISSPACE`: space, tab, newline, vertical tab, form feed, carriage return.
fn is_response_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// Classify a compiler command line. `args` is argv\[1..] as the user gave it; response files
/// are expanded first (relative to `cwd`). Never panics.
///
/// # Errors
/// Only response-file errors ([`ArgsError`]); every other oddity is a [`LocalReason`].
pub fn classify(compiler: &str, args: &[String], cwd: &Path) -> Result<Classified, ArgsError> {
    let args = expand_response_files(args, cwd)?;
    Ok(classify_expanded(compiler, &args))
}

/// One input operand with what it is (the wire's file bytes are `proto::msg::Input`).
struct Operand {
    name: String,
    kind: InputKind,
    from_x: bool,
}

/// Everything [`classify_expanded`] learns in one pass over argv.
#[derive(Default)]
struct Scan {
    compile: bool,
    assemble: bool,
    preprocess: bool,
    deps_only: bool,
    info: Option<String>,
    missing: Option<String>,
    option_reason: Option<LocalReason>,
    output: Option<String>,
    inputs: Vec<Operand>,
    cpp_args: Vec<String>,
    compile_args: Vec<String>,
    make_deps: bool,
    dep_file: bool,
    dep_target: bool,
    /// `-Wp,-MD[,FILE]` or `-Wp,-MMD[,FILE]`: clang's driver reads it as `-MD`/`-MMD`
    /// (with `-MF FILE` when it has exactly one file) and names the target after `-o`;
    /// gcc hands it to cc1 as is. Holds whether a file was given.
    wp_make_deps: Option<bool>,
    debug: bool,
    split_dwarf: bool,
    lto: bool,
}

impl Scan {
    fn local(&mut self, reason: LocalReason) {
        self.option_reason.get_or_insert(reason);
    }
}

/// Update debug state for one `-g…` option (gcc ≥ 11 rules: `-gsplit-dwarf`, `-gz`, `-gno-*`
/// and the other modifiers do not turn debug info on by themselves).
fn scan_debug(scan: &mut Scan, arg: &str) {
    const MODIFIERS: &[&str] = &[
        "-gas-loc",
        "-gcolumn-info",
        "-gdescribe-dies",
        "-gdwarf32",
        "-gdwarf64",
        "-gembed-source",
        "-ggnu-pubnames",
        "-ginline-points",
        "-ginternal-reset-location-views",
        "-gno-",
        "-gpubnames",
        "-grecord-",
        "-gsimple-template-names",
        "-gstatement-frontiers",
        "-gstrict-dwarf",
        "-gvariable-location-views",
        "-gz",
    ];
    match arg {
        "-gsplit-dwarf" | "-gsplit-dwarf=split" => scan.split_dwarf = true,
        "-gsplit-dwarf=single" | "-gno-split-dwarf" => scan.split_dwarf = false,
        "-g0" | "-ggdb0" | "-gline-tables-only0" => scan.debug = false,
        "-gtoggle" => scan.debug = !scan.debug,
        _ if MODIFIERS.iter().any(|m| arg.starts_with(m)) => {}
        _ => scan.debug = true,
    }
}

fn local_reason_for(kind: LocalKind, arg: &str) -> LocalReason {
    let arg = arg.to_string();
    match kind {
        LocalKind::Info => LocalReason::Info(arg),
        LocalKind::SaveTemps => LocalReason::SaveTemps(arg),
        LocalKind::Native => LocalReason::NativeCpu(arg),
        LocalKind::Profile => LocalReason::Profile(arg),
        LocalKind::SyntaxOnly => LocalReason::SyntaxOnly,
        LocalKind::AuxOutput => LocalReason::ExtraOutput(arg),
        LocalKind::Toolchain => LocalReason::Toolchain(arg),
        LocalKind::ReadsFile => LocalReason::ReadsFile(arg),
        LocalKind::Pch => LocalReason::UsesPch(arg),
        LocalKind::Unsupported => LocalReason::ServerRefuses(format!("{arg} is not supported")),
    }
}

fn classify_expanded(compiler: &str, args: &[String]) -> Classified {
    let mut scan = Scan::default();
    let mut x_lang: Option<InputKind> = None;
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "-" {
            scan.inputs.push(Operand {
                name: arg.clone(),
                kind: InputKind::Other,
                from_x: false,
            });
            continue;
        }
        if !arg.starts_with('-') {
            let (kind, from_x) = match &x_lang {
                Some(k) => (k.clone(), true),
                None => (language::input_kind_from_name(arg), false),
            };
            scan.inputs.push(Operand {
                name: arg.clone(),
                kind,
                from_x,
            });
            continue;
        }
        let (spec, kind, value) = match table::lookup(arg) {
            Some((spec, value)) => (spec, spec.kind, value),
            None => {
                scan.cpp_args.push(arg.clone());
                scan.compile_args.push(arg.clone());
                continue;
            }
        };
        // The tokens of this option and its operand value.
        let (tokens, operand): (Vec<String>, String) = match value {
            Value::None => (vec![arg.clone()], String::new()),
            Value::Inline(v) => (vec![arg.clone()], v.to_string()),
            Value::Next => match args.get(i) {
                Some(next) => {
                    i += 1;
                    (vec![arg.clone(), next.clone()], next.clone())
                }
                None => {
                    scan.missing.get_or_insert_with(|| arg.clone());
                    continue;
                }
            },
        };
        match kind {
            Kind::Common => {
                scan.cpp_args.extend(tokens.iter().cloned());
                scan.compile_args.extend(tokens);
            }
            Kind::Cpp if spec.name == "-D" || spec.name == "-U" => {
                // Native jobs carry the macros to the server (joined, as here).
                let joined = format!("{}{operand}", spec.name);
                if policy::check_arg(&joined).is_err() {
                    scan.local(LocalReason::NotAllowed(joined));
                }
                scan.cpp_args.extend(tokens);
            }
            Kind::Cpp if spec.name == "-Wp," => {
                let pieces: Vec<&str> = operand.split(',').collect();
                if matches!(pieces[0], "-MD" | "-MMD") {
                    scan.wp_make_deps = Some(pieces.len() == 2);
                }
                scan.cpp_args.extend(tokens);
            }
            Kind::Cpp | Kind::Linker => scan.cpp_args.extend(tokens),
            Kind::Ignore => {}
            Kind::Compile => scan.compile = true,
            Kind::Assemble => scan.assemble = true,
            Kind::Preprocess => scan.preprocess = true,
            Kind::Output => scan.output = Some(operand),
            Kind::Lang => {
                x_lang = language::input_kind_from_x(&operand);
                if let Some(InputKind::UnknownLanguage(l)) = &x_lang {
                    scan.local(LocalReason::UnknownLanguage(l.clone()));
                }
            }
            Kind::Debug => {
                scan_debug(&mut scan, arg);
                scan.cpp_args.extend(tokens.iter().cloned());
                scan.compile_args.extend(tokens);
            }
            Kind::DepOnly => scan.deps_only = true,
            Kind::DepMake => {
                scan.make_deps = true;
                scan.cpp_args.extend(tokens);
            }
            Kind::DepFile => {
                scan.dep_file = true;
                scan.cpp_args.extend(tokens);
            }
            Kind::DepTarget => {
                scan.dep_target = true;
                scan.cpp_args.extend(tokens);
            }
            Kind::AsmPass => {
                for piece in operand.split(',') {
                    if piece.starts_with("-a") || piece.starts_with("--MD") {
                        scan.local(LocalReason::AssemblerListing(arg.clone()));
                    }
                }
                scan.compile_args.extend(tokens);
            }
            Kind::OptInfo if operand.contains('=') => {
                scan.local(LocalReason::ExtraOutput(arg.clone()));
            }
            Kind::OptInfo | Kind::Lto => {
                if kind == Kind::Lto {
                    scan.lto = arg != "-fno-lto";
                }
                scan.cpp_args.extend(tokens.iter().cloned());
                scan.compile_args.extend(tokens);
            }
            Kind::Local(LocalKind::Info) => {
                scan.info.get_or_insert_with(|| arg.clone());
            }
            Kind::Local(LocalKind::Profile)
                if table::PROFILE_HARMLESS.iter().any(|p| arg.starts_with(p)) =>
            {
                scan.cpp_args.extend(tokens.iter().cloned());
                scan.compile_args.extend(tokens);
            }
            Kind::Local(kind) => scan.local(local_reason_for(kind, arg)),
        }
    }
    decide(compiler, scan)
}

/// Whether `when` holds for a compile by `family` with these remote arguments.
fn combination_holds(when: When, family: Family, debug: bool, lto: bool, args: &[String]) -> bool {
    match when {
        When::ClangDwarf5 => family == Family::Clang && debug && dwarf_version(args) >= 5,
        When::Lto => lto,
        When::GccPedantic => family == Family::Gcc && gcc_pedantic(args),
    }
}

/// Whether gcc prints pedantic warnings for `args`: the last pedantic switch turns them on
/// and no `-w` silences every warning.
fn gcc_pedantic(args: &[String]) -> bool {
    let on = |a: &str| {
        matches!(
            a,
            "-pedantic"
                | "--pedantic"
                | "-Wpedantic"
                | "-pedantic-errors"
                | "--pedantic-errors"
                | "-Werror=pedantic"
        )
    };
    let last = args
        .iter()
        .rev()
        .find(|a| on(a) || a.as_str() == "-Wno-pedantic");
    last.is_some_and(|a| on(a)) && !args.iter().any(|a| a == "-w")
}

/// The DWARF version clang uses for `args`: the last `-gdwarf-N`, else the last
/// `-fdebug-default-version=N`, else 5 (clang 14's default; older clangs default to 4,
/// and assuming 5 only keeps more compiles local).
fn dwarf_version(args: &[String]) -> u32 {
    let last = |prefix: &str| {
        args.iter()
            .rev()
            .find_map(|a| a.strip_prefix(prefix)?.parse::<u32>().ok())
    };
    last("-gdwarf-")
        .or_else(|| last("-fdebug-default-version="))
        .unwrap_or(5)
}

/// Turn a finished scan into the outcome, in a fixed order of precedence: driver errors and
/// information requests, then the mode, then options, then the inputs.
fn decide(compiler: &str, mut scan: Scan) -> Classified {
    use Classified::Local;
    if let Some(o) = scan.info {
        return Local(LocalReason::Info(o));
    }
    if let Some(o) = scan.missing {
        return Local(LocalReason::MissingOperand(o));
    }
    if scan.preprocess {
        return Local(LocalReason::PreprocessOnly);
    }
    if scan.deps_only {
        return Local(LocalReason::DependenciesOnly);
    }
    if !scan.compile && !scan.assemble {
        // Without -c or -S the driver links, unless it only checks syntax or only
        // builds precompiled headers: say which, for the job log.
        if scan.option_reason == Some(LocalReason::SyntaxOnly) {
            return Local(LocalReason::SyntaxOnly);
        }
        let header = |i: &Operand| matches!(i.kind, InputKind::Header);
        if !scan.inputs.is_empty() && scan.inputs.iter().all(header) {
            return Local(LocalReason::PrecompiledHeader(scan.inputs[0].name.clone()));
        }
        return Local(LocalReason::Linking);
    }
    if let Some(reason) = scan.option_reason {
        return Local(reason);
    }
    let input = match scan.inputs.as_slice() {
        [] => return Local(LocalReason::NoSource),
        [one] => one,
        many => {
            if many.iter().any(|i| i.name == "-") {
                return Local(LocalReason::Stdin);
            }
            return Local(LocalReason::MultipleInputs(many.len()));
        }
    };
    if input.name == "-" {
        return Local(LocalReason::Stdin);
    }
    let language = match &input.kind {
        InputKind::Source(l) => *l,
        InputKind::Preprocessed => return Local(LocalReason::Preprocessed(input.name.clone())),
        InputKind::Assembler => return Local(LocalReason::Assembler(input.name.clone())),
        InputKind::Header => return Local(LocalReason::PrecompiledHeader(input.name.clone())),
        InputKind::UnknownLanguage(l) => return Local(LocalReason::UnknownLanguage(l.clone())),
        InputKind::Other => return Local(LocalReason::NotSource(input.name.clone())),
    };
    if scan.output.as_deref() == Some("-") {
        return Local(LocalReason::OutputToStdout);
    }
    let family = Family::from_compiler(compiler);
    if let (Family::Clang, Some(file)) = (family, scan.wp_make_deps) {
        scan.make_deps = true;
        scan.dep_file |= file;
    }
    let assemble_only = scan.assemble;
    let output_given = scan.output.is_some();
    let output = scan.output.unwrap_or_else(|| {
        let base = language::strip_suffix(language::basename(&input.name));
        format!("{base}.{}", if assemble_only { "s" } else { "o" })
    });
    let mut extra_outputs = Vec::new();
    // gcc 12 writes a .dwo for -gsplit-dwarf even without -g; clang only with debug info.
    if scan.split_dwarf && !assemble_only && (family == Family::Gcc || scan.debug) {
        extra_outputs.push(format!("{}.dwo", language::strip_suffix(&output)));
    }
    let mut compile_args = scan.compile_args;
    if input.from_x {
        compile_args.push("-x".into());
        compile_args.push(language.x_name().into());
    }
    if let Err(refusal) = check_server_args(&compile_args) {
        return Local(LocalReason::NotAllowed(refusal.option));
    }
    if let Some(row) = table::COMBINATIONS
        .iter()
        .find(|row| combination_holds(row.when, family, scan.debug, scan.lto, &compile_args))
    {
        return Local(LocalReason::WouldDiffer(row.reason));
    }
    let names = std::iter::once(&input.name)
        .chain(std::iter::once(&output))
        .chain(&extra_outputs);
    for name in names {
        if check_name(name).is_err() {
            return Local(LocalReason::BadName(name.clone()));
        }
    }
    Classified::Remote(CompileJob {
        compiler: compiler.to_string(),
        family,
        language,
        source: input.name.clone(),
        output,
        assemble_only,
        extra_outputs,
        compile_args,
        debug: scan.debug,
        cpp_args: scan.cpp_args,
        explicit_language: input.from_x,
        make_deps: scan.make_deps,
        dep_file_given: scan.dep_file,
        dep_target_given: scan.dep_target,
        output_given,
    })
}

#[cfg(test)]
mod tests;
