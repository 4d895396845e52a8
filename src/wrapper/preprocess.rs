//! Stage: wrapper, local preprocessing: run the compiler's preprocessor locally, with the
//! user's own flags, capturing the output in memory. For our own servers the output is
//! directives-only (includes resolved, macros kept), so the server compiles it as source
//! and `-g` objects come out byte-identical; for stock distccd it is a classic `.i`.
//! Neighbours: `args` (builds the argv), `wrapper` (sends the result through
//! `wrapper::mux_client`, or `wrapper::direct`), `subsystem::job` (stages it on the server).

use std::path::Path;
use std::process::{Command, Stdio};

use crate::args::{CompileJob, CppStyle, Family};

/// What the local preprocessor produced. It printed no diagnostics of the source: a
/// preprocessor with something to say ends the job's distribution
/// ([`PreprocessError::Diagnostics`]).
pub struct Preprocessed {
    pub source: Vec<u8>,
    /// clang's driver warnings about the command line (`clang: warning: -Wl,…: 'linker'
    /// input unused`), which clang alone prints before it compiles: replayed first.
    pub driver_notes: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error("cannot run {compiler}: {source}")]
    Spawn {
        compiler: String,
        source: std::io::Error,
    },
    /// The preprocessor itself failed: the user's error (missing header, `#error`).
    #[error("preprocessor exited with {code}")]
    Failed { code: i32, stderr: Vec<u8> },
    /// The preprocessor printed diagnostics (`#warning`, `#pragma message`, a macro
    /// redefined, gcc's JSON document with something in it). The compiler alone prints
    /// them among its own, in source order (gcc's C front end, which lexes as it parses)
    /// and counted in one `N warnings generated.` line (clang); clang's
    /// `-frewrite-includes` text also keeps `#warning`, so the server would print it
    /// again. Printing the preprocessor's first and the server's after cannot read the
    /// same, so such a compile runs locally.
    #[error("the preprocessor printed diagnostics, which must interleave with the compiler's")]
    Diagnostics,
}

/// Run `real_compiler` to preprocess `job` in `style`.
pub fn run(
    real_compiler: &Path,
    job: &CompileJob,
    style: CppStyle,
    guard_env: (&str, &str),
) -> Result<Preprocessed, PreprocessError> {
    let out = Command::new(real_compiler)
        .args(job.preprocess_args(style))
        .env(guard_env.0, guard_env.1)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| PreprocessError::Spawn {
            compiler: real_compiler.display().to_string(),
            source,
        })?;
    if !out.status.success() {
        let code = crate::wrapper::local::exit_code_of(out.status);
        return Err(PreprocessError::Failed {
            code,
            stderr: out.stderr,
        });
    }
    let source = match style {
        CppStyle::DirectivesOnly => strip_builtin_section(out.stdout),
        CppStyle::Classic => out.stdout,
    };
    let (driver_notes, rest) = match job.family {
        Family::Clang => split_driver_notes(&out.stderr),
        Family::Gcc => (&[][..], &out.stderr[..]),
    };
    let quiet = if json_diagnostics(&job.compile_args) {
        json_is_empty(rest)
    } else {
        rest.is_empty()
    };
    if !quiet {
        return Err(PreprocessError::Diagnostics);
    }
    Ok(Preprocessed {
        source,
        driver_notes: driver_notes.to_vec(),
    })
}

/// The leading lines of clang's stderr that its driver printed about the command line
/// (`clang: warning: …`, `clang++: warning: …`), and the rest.
fn split_driver_notes(stderr: &[u8]) -> (&[u8], &[u8]) {
    let mut end = 0;
    for line in stderr[..].split_inclusive(|&b| b == b'\n') {
        let driver = line
            .windows(b": warning: ".len())
            .position(|w| w == b": warning: ")
            .is_some_and(|at| {
                let who = &line[..at];
                who.starts_with(b"clang")
                    && !who.contains(&b'/')
                    && !who.contains(&b':')
                    && !who.contains(&b' ')
            });
        if !driver || !line.ends_with(b"\n") {
            break;
        }
        end += line.len();
    }
    stderr.split_at(end)
}

/// Whether the last `-fdiagnostics-format=` in `args` prints JSON to stderr (gcc's
/// `json`, and `json-stderr` from gcc 13).
pub fn json_diagnostics(args: &[String]) -> bool {
    args.iter()
        .rev()
        .find_map(|a| a.strip_prefix("-fdiagnostics-format="))
        .is_some_and(|v| v == "json" || v == "json-stderr")
}

/// With JSON diagnostics, the preprocessor prints a document of its own (`[]` when it has
/// nothing to say) and so does the server's compiler; gcc alone prints one. An empty
/// document is dropped.
fn json_is_empty(stderr: &[u8]) -> bool {
    let text = stderr.trim_ascii();
    text.is_empty() || text == b"[]"
}

/// Drop the `# 0 "<built-in>"` section (the compiler's predefined macros) from
/// directives-only output; the server's compiler predefines them itself, and keeping them
/// makes every compile warn `"__STDC__" redefined`. The `<command-line>` section (the
/// user's -D/-U) is kept.
pub fn strip_builtin_section(text: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut skipping = false;
    // In the top level of `<command-line>`, the user's -D/-U appear as #define/#undef;
    // they are dropped here and passed as options instead (see `command_line_macros`),
    // so `-g3` macro tables record them as a local compile does.
    let mut in_command_line = false;
    let mut depth = 0usize;
    for line in text.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b"# ") && is_linemarker(line) {
            if line_names(line, b"<built-in>") {
                skipping = true;
                continue;
            }
            skipping = false;
            let flags = marker_flags(line);
            if flags.contains(&b'1') {
                depth += 1;
            } else if flags.contains(&b'2') {
                depth = depth.saturating_sub(1);
            }
            if depth == 0 {
                in_command_line = line_names(line, b"<command-line>");
            }
        } else if in_command_line
            && depth == 0
            && (line.starts_with(b"#define ") || line.starts_with(b"#undef "))
        {
            continue;
        }
        if !skipping {
            out.extend_from_slice(line);
        }
    }
    out
}

/// The flags after a line marker's file name (`1` enter, `2` return, `3` system, `4` extern C).
fn marker_flags(line: &[u8]) -> Vec<u8> {
    let after = line
        .iter()
        .rposition(|&b| b == b'"')
        .map_or(&line[..0], |i| &line[i + 1..]);
    after.iter().copied().filter(u8::is_ascii_digit).collect()
}

/// The `-D`/`-U` options of a preprocessor argv, in order, as separate-or-joined words.
pub fn command_line_macros(cpp_args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = cpp_args.iter();
    while let Some(a) = it.next() {
        if a == "-D" || a == "-U" {
            if let Some(v) = it.next() {
                out.push(format!("{a}{v}"));
            }
        } else if (a.starts_with("-D") || a.starts_with("-U")) && a.len() > 2 {
            out.push(a.clone());
        }
    }
    out
}

/// Total size of context files sent with one job; past it, diagnostics may quote less.
const MAX_CONTEXT_BYTES: usize = 8 << 20;

/// The files whose text the server needs to quote source lines in diagnostics exactly as
/// a local compile would: the main source and every non-system file named in the line
/// markers of directives-only output (flag 3 marks system headers, which the server has).
/// Names are as the markers give them; `read` returns a file's bytes (relative to cwd).
pub fn context_files(
    main: &str,
    preprocessed: &[u8],
    read: &dyn Fn(&str) -> Option<Vec<u8>>,
) -> Vec<(String, Vec<u8>)> {
    let mut names: Vec<String> = vec![main.to_string()];
    for line in preprocessed.split(|&b| b == b'\n') {
        if !(line.starts_with(b"# ") && is_linemarker(line)) {
            continue;
        }
        let Some(open) = line.iter().position(|&b| b == b'"') else {
            continue;
        };
        let Some(len) = line[open + 1..].iter().position(|&b| b == b'"') else {
            continue;
        };
        let name = &line[open + 1..open + 1 + len];
        let flags = &line[open + 2 + len..];
        if name.is_empty()
            || name.starts_with(b"<")
            || name.contains(&b'\\')
            || name.ends_with(b"/")
            || flags.split(|&b| b == b' ').any(|f| f == b"3")
        {
            continue;
        }
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        // A server refuses names it could read as options (`args::check_name`).
        if crate::args::check_name(name).is_err() {
            continue;
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    let mut total = 0;
    let mut out = Vec::new();
    for name in names {
        if let Some(data) = read(&name) {
            total += data.len();
            if total > MAX_CONTEXT_BYTES {
                break;
            }
            out.push((name, data));
        }
    }
    out
}

/// Locale variables passed to the remote compiler, so its diagnostics read like ours.
pub fn locale_env(env: &dyn Fn(&str) -> Option<String>) -> Vec<(String, String)> {
    ["LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_MESSAGES"]
        .iter()
        .filter_map(|k| env(k).map(|v| (k.to_string(), v)))
        .collect()
}

fn is_linemarker(line: &[u8]) -> bool {
    let rest = &line[2..];
    rest.first().is_some_and(|b| b.is_ascii_digit())
}

fn line_names(line: &[u8], name: &[u8]) -> bool {
    is_linemarker(line)
        && line
            .windows(name.len() + 2)
            .any(|w| w[0] == b'"' && &w[1..=name.len()] == name && w[name.len() + 1] == b'"')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_only_the_builtin_section() {
        let input = b"# 0 \"foo.c\"\n# 0 \"/home/u/p//\"\n# 0 \"<built-in>\"\n#define __STDC__ 1\n#define __GNUC__ 12\n# 0 \"<command-line>\"\n#define FOO 1\n# 1 \"/usr/include/stdc-predef.h\" 1 3 4\n#define X 2\n# 0 \"<command-line>\" 2\n# 1 \"foo.c\"\nint x = FOO;\n";
        let out = strip_builtin_section(input.to_vec());
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("__STDC__"), "{text}");
        assert!(!text.contains("<built-in>"), "{text}");
        assert!(
            !text.contains("#define FOO 1"),
            "command-line macros travel as -D: {text}"
        );
        assert!(
            text.contains("#define X 2"),
            "macros of included files stay: {text}"
        );
        assert!(text.contains("# 0 \"/home/u/p//\""));
        assert!(text.contains("int x = FOO;"));
        assert!(text.starts_with("# 0 \"foo.c\"\n"));
    }

    #[test]
    fn context_files_are_the_main_source_and_user_headers() {
        let pp = b"# 0 \"src/a.c\"\n# 0 \"/home/u/p//\"\n# 1 \"/usr/include/stdio.h\" 1 3 4\n# 1 \"inc/geom.h\" 1\n# 2 \"src/a.c\" 2\nint x;\n";
        let read = |n: &str| Some(n.as_bytes().to_vec());
        let got: Vec<String> = context_files("src/a.c", pp, &read)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(got, vec!["src/a.c".to_string(), "inc/geom.h".to_string()]);
        let none = |_: &str| None;
        assert!(context_files("src/a.c", pp, &none).is_empty());
    }

    #[test]
    fn macros_from_the_command_line() {
        let a: Vec<String> = [
            "-O2", "-DA=1", "-D", "B", "-UC", "-U", "D", "-I", "inc", "-Dx",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            command_line_macros(&a),
            vec!["-DA=1", "-DB", "-UC", "-UD", "-Dx"]
        );
    }

    #[test]
    fn json_diagnostics_lose_the_empty_cpp_document() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(json_diagnostics(&a(&["-fdiagnostics-format=json"])));
        assert!(json_diagnostics(&a(&[
            "-fdiagnostics-format=text",
            "-fdiagnostics-format=json-stderr"
        ])));
        assert!(!json_diagnostics(&a(&[
            "-fdiagnostics-format=json",
            "-fdiagnostics-format=text"
        ])));
        assert!(!json_diagnostics(&a(&["-Wall"])));
        assert!(json_is_empty(b"[]\n"));
        assert!(json_is_empty(b""));
        assert!(!json_is_empty(b"[{\"kind\": \"warning\"}]\n"));
    }

    #[test]
    fn clang_driver_notes_are_split_from_source_diagnostics() {
        let both =
            b"clang: warning: -Wl,-z: 'linker' input unused [-Wunused-command-line-argument]\n\
            clang++: warning: argument unused during compilation: '-L/x'\n\
            a.c:1:2: warning: hi [-W#warnings]\n#warning hi\n ^\n1 warning generated.\n";
        let (notes, rest) = split_driver_notes(both);
        assert_eq!(notes.split(|&b| b == b'\n').count(), 3);
        assert!(rest.starts_with(b"a.c:1:2: warning: hi"));
        let only = b"clang: warning: -lm: 'linker' input unused\n";
        assert_eq!(split_driver_notes(only), (&only[..], &b""[..]));
        // A source's diagnostic first, or a file named like clang: nothing is a note.
        for text in [
            &b"a.c:1:2: warning: x\nclang: warning: y\n"[..],
            b"clang.c:1: warning: x\n",
        ] {
            assert_eq!(split_driver_notes(text).0, b"");
        }
    }

    #[test]
    fn leaves_text_without_builtins_alone() {
        let input = b"# 1 \"a.c\"\nint main(void) { return 0; }\n".to_vec();
        assert_eq!(strip_builtin_section(input.clone()), input);
    }

    #[test]
    fn real_gcc_output_loses_builtins_and_keeps_user_macros() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(
            t.path().join("m.c"),
            "#include <stddef.h>\nint v = FOO + (int)sizeof(size_t);\n",
        )
        .unwrap();
        let out = Command::new("gcc")
            .args(["-E", "-fdirectives-only", "-DFOO=3", "m.c"])
            .current_dir(t.path())
            .output()
            .expect("gcc");
        assert!(out.status.success());
        let text = String::from_utf8(strip_builtin_section(out.stdout)).unwrap();
        assert!(!text.contains("#define __GNUC__"), "builtins left in");
        assert!(!text.contains("#define FOO 3"));
        assert!(text.contains("int v = FOO"));
    }
}
