//! Stage: classify and server admission (the option policy). One allow-list of compile
//! options that are known to be safe on a build server, with the syntax of each value
//! checked: optimisation levels, debug forms, warnings, language and standard, macros,
//! prefix maps, `--param`, and `-f`/`-m` flags from explicit lists (`lists`). Anything
//! else is refused. Both ends use it, so they cannot drift: the server refuses a job whose
//! arguments fail [`check_server_args`], and `args::classify` keeps a compile local
//! (`LocalReason::NotAllowed`) when its remote arguments would fail. File names that
//! travel with a job go through [`check_name`]. Pure and panic-free on any input.
//! Neighbours: `args::classify` and `args::distcc` (callers), `subsystem::job` and
//! `subsystem::distccd` (the server's refusals).

mod lists;

use std::fmt;

/// Most arguments one compile may carry.
pub const MAX_ARGS: usize = 4096;
/// Longest single argument, in bytes (a long `-D` value fits).
pub const MAX_ARG_LEN: usize = 16 * 1024;
/// Longest file name, in bytes (Linux's `PATH_MAX`).
pub const MAX_NAME_LEN: usize = 4096;
/// How much of a refused argument a [`Refusal`] keeps.
const SHOWN_LEN: usize = 200;

/// Why an argument or a name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The option is not on the allow-list.
    NotAllowed,
    /// The option is allowed, but not with this value.
    BadValue,
    /// The option needs a value and none follows.
    MissingValue,
    /// A bare word where an option was expected: the server takes one input, its own.
    ExtraInput,
    /// Too many arguments, or one too long.
    TooLong,
    /// A NUL or control character.
    BadCharacter,
    /// A file name that could be read as an option (`-…`, `@…`).
    LooksLikeOption,
    /// An empty file name.
    Empty,
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Why::NotAllowed => "is not on the server's option allow-list",
            Why::BadValue => "has a value the server's option allow-list does not accept",
            Why::MissingValue => "is missing its value",
            Why::ExtraInput => "is an extra input; the server compiles only the job's source",
            Why::TooLong => "is too long (or one argument too many)",
            Why::BadCharacter => "holds a NUL or control character",
            Why::LooksLikeOption => "is a file name that starts with '-' or '@'",
            Why::Empty => "is an empty file name",
        })
    }
}

/// A refused argument or name: which one, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{option:?} {why}")]
pub struct Refusal {
    /// The argument (or name) refused, cut to a few hundred bytes.
    pub option: String,
    /// Why.
    pub why: Why,
}

impl Refusal {
    /// A refusal of `option` (kept to its first few hundred bytes).
    pub fn new(option: &str, why: Why) -> Refusal {
        let mut end = option.len().min(SHOWN_LEN);
        while !option.is_char_boundary(end) {
            end -= 1;
        }
        Refusal {
            option: option[..end].to_string(),
            why,
        }
    }
}

/// The syntax a value must have.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Rule {
    /// A decimal number (at most 9 digits).
    Int,
    /// Numbers separated by `:` or `,` (`-falign-functions=32:24:8`).
    Ints,
    /// A number or one of these words (`-flto=auto`, `-flto=8`).
    IntOr(&'static [&'static str]),
    /// One of these words (sorted).
    OneOf(&'static [&'static str]),
    /// One word of `[A-Za-z0-9_.+-]`, not starting with `-`, never `native`: no path can
    /// be spelt, and no option of the server's CPU.
    Word,
    /// Words as [`Rule::Word`] joined by `,` or `:` (sanitizer lists, `-mfpmath=sse,387`).
    Words,
    /// A character set from [`lists::CHARSETS`], in any case.
    Charset,
    /// Any text without control characters. Only for values the compiler never opens
    /// (prefix maps, macro definitions, strings to match).
    Text,
}

impl Rule {
    fn accepts(self, v: &str) -> bool {
        let word = |w: &str| {
            !w.is_empty()
                && !w.starts_with('-')
                && w != "native"
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.+-".contains(&b))
        };
        let int = |w: &str| !w.is_empty() && w.len() <= 9 && w.bytes().all(|b| b.is_ascii_digit());
        match self {
            Rule::Int => int(v),
            Rule::Ints => v.split([':', ',']).all(int),
            Rule::IntOr(words) => int(v) || words.binary_search(&v).is_ok(),
            Rule::OneOf(words) => words.binary_search(&v).is_ok(),
            Rule::Word => word(v),
            Rule::Words => v.split([',', ':']).all(word),
            Rule::Charset => {
                v.len() <= 32
                    && lists::CHARSETS
                        .binary_search(&v.to_ascii_uppercase().as_str())
                        .is_ok()
            }
            Rule::Text => !v.chars().any(char::is_control),
        }
    }
}

/// How an entry of [`OPTIONS`] takes its value, and how that value is checked.
#[derive(Debug, Clone, Copy)]
enum Check {
    /// Exactly the name, nothing attached, no operand.
    Flag,
    /// The name with a value attached (possibly empty), checked by the function.
    Joined(fn(&str) -> bool),
    /// Exactly the name; the next argument is the value.
    Separate(fn(&str) -> bool),
    /// Attached or the next argument (`-DX`, `-D X`).
    Either(fn(&str) -> bool),
    /// A family with its own lists (`-f…`, `-m…`, `-g…`, `-W…`): says whether the name
    /// is unknown ([`Why::NotAllowed`]) or only its value is wrong ([`Why::BadValue`]).
    Family(fn(&str) -> Result<(), Why>),
}

/// The allow-list proper, sorted by name. An argument matches the longest name that it
/// equals or (for `Joined`/`Either`) starts with.
static OPTIONS: &[(&str, Check)] = &[
    ("--param", Check::Separate(param)),
    ("--param=", Check::Joined(param)),
    ("--target=", Check::Joined(word)),
    ("-D", Check::Either(macro_def)),
    ("-O", Check::Joined(opt_level)),
    ("-Qn", Check::Flag),
    ("-Qunused-arguments", Check::Flag),
    ("-Qy", Check::Flag),
    ("-U", Check::Either(macro_name)),
    ("-W", Check::Family(warning)),
    ("-Wa,", Check::Joined(asm_pieces)),
    ("-ansi", Check::Flag),
    ("-arch", Check::Separate(word)),
    ("-f", Check::Family(f_flag)),
    ("-g", Check::Family(debug)),
    ("-integrated-as", Check::Flag),
    ("-m", Check::Family(m_flag)),
    ("-mllvm", Check::Separate(mllvm)),
    ("-no-integrated-as", Check::Flag),
    ("-nostdinc", Check::Flag),
    ("-nostdinc++", Check::Flag),
    ("-p", Check::Flag),
    ("-pedantic", Check::Flag),
    ("-pedantic-errors", Check::Flag),
    ("-pg", Check::Flag),
    ("-pipe", Check::Flag),
    ("-pthread", Check::Flag),
    ("-std=", Check::Joined(standard)),
    ("-target", Check::Separate(word)),
    ("-trigraphs", Check::Flag),
    ("-undef", Check::Flag),
    ("-w", Check::Flag),
    ("-x", Check::Either(language)),
];

fn word(v: &str) -> bool {
    Rule::Word.accepts(v)
}

fn param(v: &str) -> bool {
    let Some((name, value)) = v.split_once('=') else {
        return false;
    };
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && word(value)
}

/// A macro definition `NAME`, `NAME=TEXT` or `NAME(ARGS)=TEXT`: the name must start like
/// an identifier (never `-` or `@`); the text is never opened.
fn macro_def(v: &str) -> bool {
    let name_end = v.find(['=', '(']).unwrap_or(v.len());
    macro_name(&v[..name_end]) && Rule::Text.accepts(v)
}

fn macro_name(v: &str) -> bool {
    let mut chars = v.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$' || !c.is_ascii());
    first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$' || !c.is_ascii())
}

/// `-O`, `-O0`…`-O99`, `-Os`, `-Oz`, `-Og`, `-Ofast`.
fn opt_level(v: &str) -> bool {
    matches!(v, "" | "s" | "z" | "g" | "fast")
        || (v.len() <= 2 && v.bytes().all(|b| b.is_ascii_digit()) && !v.is_empty())
}

/// After `-W`: nothing (`-W`), or `[no-]NAME[=VALUE]` with NAME of two or more letters,
/// digits and `+_.-`, VALUE of words. A comma right after the name (`-Wa,`, `-Wl,`, `-Wp,`) never
/// passes: those pass options to other programs.
fn warning(v: &str) -> Result<(), Why> {
    if v.is_empty() {
        return Ok(());
    }
    let (name, value) = match v.split_once('=') {
        Some((n, val)) => (n, Some(val)),
        None => (v, None),
    };
    let base = name.strip_prefix("no-").unwrap_or(name);
    let name_ok = base.len() >= 2
        && base
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && !base.ends_with('-')
        && base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+_.-".contains(&b));
    if !name_ok {
        return Err(Why::NotAllowed);
    }
    if value.is_none_or(|val| val.is_empty() || Rule::Words.accepts(val)) {
        Ok(())
    } else {
        Err(Why::BadValue)
    }
}

/// `-Wa,` pieces, each from [`lists::ASM_PIECES`].
fn asm_pieces(v: &str) -> bool {
    v.split(',')
        .all(|p| lists::ASM_PIECES.binary_search(&p).is_ok())
}

fn standard(v: &str) -> bool {
    lists::STANDARDS.binary_search(&v).is_ok()
}

fn language(v: &str) -> bool {
    lists::LANGUAGES.binary_search(&v).is_ok()
}

fn mllvm(v: &str) -> bool {
    lists::MLLVM
        .iter()
        .any(|(prefix, rule)| v.strip_prefix(prefix).is_some_and(|val| rule.accepts(val)))
}

/// Looks `name` up in a sorted `(name, rule)` list and checks `value` with the rule.
fn valued(list: &[(&str, Rule)], name: &str, value: &str) -> Result<(), Why> {
    match list.binary_search_by(|(n, _)| n.cmp(&name)) {
        Ok(i) if list[i].1.accepts(value) => Ok(()),
        Ok(_) => Err(Why::BadValue),
        Err(_) => Err(Why::NotAllowed),
    }
}

fn verdict(allowed: bool) -> Result<(), Why> {
    if allowed {
        Ok(())
    } else {
        Err(Why::NotAllowed)
    }
}

/// After `-g`.
fn debug(v: &str) -> Result<(), Why> {
    let whole = format!("-g{v}");
    if lists::G_FLAGS.binary_search(&whole.as_str()).is_ok() {
        return Ok(());
    }
    match whole.split_once('=') {
        Some((name, value)) => valued(lists::G_VALUES, name, value),
        None => Err(Why::NotAllowed),
    }
}

/// After `-f`: `NAME`/`no-NAME` from the flag list, `no-NAME` from the negative-only list,
/// `NAME=VALUE` from the valued list, or a family member (`no-builtin-memcpy`).
fn f_flag(v: &str) -> Result<(), Why> {
    if let Some((name, value)) = v.split_once('=') {
        return valued(lists::F_VALUES, name, value);
    }
    let base = v.strip_prefix("no-");
    if lists::F_FLAGS.binary_search(&v).is_ok()
        || base.is_some_and(|b| {
            lists::F_FLAGS.binary_search(&b).is_ok()
                || lists::F_NEGATIVE_ONLY.binary_search(&b).is_ok()
        })
    {
        return Ok(());
    }
    verdict(lists::F_FAMILIES.iter().any(|family| {
        v.strip_prefix(family).is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
    }))
}

/// After `-m`: `NAME`/`no-NAME` from the flag list or `NAME=VALUE` from the valued list.
fn m_flag(v: &str) -> Result<(), Why> {
    if let Some((name, value)) = v.split_once('=') {
        return valued(lists::M_VALUES, name, value);
    }
    let base = v.strip_prefix("no-").unwrap_or(v);
    verdict(lists::M_FLAGS.binary_search(&base).is_ok() || lists::M_FLAGS.binary_search(&v).is_ok())
}

/// The entry for `arg` and whether its value is attached: the longest name in
/// [`OPTIONS`] that `arg` equals, or starts with for forms that take an attached value.
fn lookup(arg: &str) -> Option<(&'static str, Check)> {
    let mut best: Option<(&'static str, Check)> = None;
    for &(name, check) in OPTIONS {
        let fits = match check {
            Check::Flag | Check::Separate(_) => arg == name,
            Check::Joined(_) | Check::Either(_) | Check::Family(_) => arg.starts_with(name),
        };
        if fits && best.is_none_or(|(b, _)| name.len() > b.len()) {
            best = Some((name, check));
        }
    }
    best
}

/// Checks one option at `args[0]` and says how many arguments it used (1, or 2 with a
/// separate value).
fn check_option(args: &[String]) -> Result<usize, Refusal> {
    let arg = args[0].as_str();
    let refuse = |why| Err(Refusal::new(arg, why));
    let Some((name, check)) = lookup(arg) else {
        return refuse(Why::NotAllowed);
    };
    let attached = &arg[name.len()..];
    let next = || args.get(1).map(String::as_str);
    match check {
        Check::Flag => Ok(1),
        Check::Family(check) => check(attached).map(|()| 1).or_else(refuse),
        Check::Joined(ok) => {
            if ok(attached) {
                Ok(1)
            } else if attached.is_empty() {
                refuse(Why::MissingValue)
            } else {
                refuse(Why::BadValue)
            }
        }
        Check::Either(ok) if !attached.is_empty() => {
            if ok(attached) {
                Ok(1)
            } else {
                refuse(Why::BadValue)
            }
        }
        Check::Separate(ok) | Check::Either(ok) => match next() {
            None => refuse(Why::MissingValue),
            Some(v) if ok(v) && check_text(v).is_ok() => Ok(2),
            Some(v) => Err(Refusal::new(&format!("{arg} {v}"), Why::BadValue)),
        },
    }
}

/// The length and character rules every argument obeys.
fn check_text(arg: &str) -> Result<(), Refusal> {
    if arg.len() > MAX_ARG_LEN {
        return Err(Refusal::new(arg, Why::TooLong));
    }
    if arg.contains('\0') {
        return Err(Refusal::new(arg, Why::BadCharacter));
    }
    Ok(())
}

/// Server side: accept `args` only if every one is an allowed option with a valid value
/// (separate values included). Bare words are refused: the server adds the one input
/// and the output itself. So are `-c`, `-S`, `-E`, `-o` and every `@file`: the server
/// adds the mode itself.
///
/// # Errors
/// A [`Refusal`] naming the first refused argument.
pub fn check_server_args(args: &[String]) -> Result<(), Refusal> {
    if args.len() > MAX_ARGS {
        return Err(Refusal::new(&args[MAX_ARGS], Why::TooLong));
    }
    let mut i = 0;
    while i < args.len() {
        i += check_one(&args[i..])?;
    }
    Ok(())
}

/// Checks the option at `args[0]` (which must exist) with its separate value, if it takes
/// one, and says how many arguments it used.
pub(crate) fn check_one(args: &[String]) -> Result<usize, Refusal> {
    let arg = &args[0];
    check_text(arg)?;
    if !arg.starts_with('-') || arg == "-" {
        return Err(Refusal::new(arg, Why::ExtraInput));
    }
    check_option(args)
}

/// Whether the single argument `arg` (no separate value) is on the allow-list.
///
/// # Errors
/// As [`check_server_args`] for a one-argument command line.
pub fn check_arg(arg: &str) -> Result<(), Refusal> {
    check_server_args(std::slice::from_ref(&arg.to_string()))
}

/// A file name that travels with a job (source, output, extra output, context file):
/// never empty, never starting with `-` or `@` (the compiler would read it as an option
/// or a response file), no NUL or control characters, at most [`MAX_NAME_LEN`] bytes.
///
/// # Errors
/// A [`Refusal`] naming the file.
pub fn check_name(name: &str) -> Result<(), Refusal> {
    let why = if name.is_empty() {
        Why::Empty
    } else if name.len() > MAX_NAME_LEN {
        Why::TooLong
    } else if name.starts_with('-') || name.starts_with('@') {
        Why::LooksLikeOption
    } else if name.chars().any(char::is_control) {
        Why::BadCharacter
    } else {
        return Ok(());
    };
    Err(Refusal::new(name, why))
}

#[cfg(test)]
mod tests;
