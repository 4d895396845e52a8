//! Stage: wrapper, the last step: apply a remote result. What a server sends is checked
//! before it is used: every output must be one the job asked for, once, within
//! [`MAX_OUTPUT`] bytes, and look like what the compile makes (an ELF object for `-c`,
//! NUL-free text for `-S`); anything else is refused and the wrapper compiles locally. Each
//! output that is (or will be) a regular file goes to a temp file in its target directory
//! and is renamed into place, so a reader never sees a partial `.o` (GNU as and clang also
//! replace the file rather than write into it). An output that is not a regular file
//! (`/dev/null`, a FIFO), or whose directory we may not create files in, is opened and
//! written in place, the way the compiler writes it; [`local_reason`] sends the cases the
//! compiler itself refuses or fails on (no such directory, output = input, unwritable) to a
//! local compile before anything is distributed, so the user sees the compiler's own
//! message. stdout and stderr are replayed through [`sanitize`] (SGR colour and gcc's OSC 8
//! links kept, every other terminal control dropped), in single writes so parallel jobs
//! don't interleave mid-line. Neighbours: `wrapper` (hands over the
//! `proto::msg::JobResult`, unpacked once), `mux::lane` (where it came from).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::proto::msg::JobResult;

/// Most bytes of one output file from a server.
pub const MAX_OUTPUT: u64 = 512 << 20;
/// Most bytes of all output files of one job together.
pub const MAX_OUTPUTS_TOTAL: u64 = 1 << 30;
/// Most bytes of stdout (and, separately, of stderr) replayed from a server.
pub const MAX_REPLAY: usize = 64 << 20;

/// Why a server's outputs were refused (the wrapper then compiles locally).
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("the server returned an output we did not ask for: {0}")]
    Unexpected(String),
    #[error("the server returned {0} twice")]
    Duplicate(String),
    #[error("the server did not return {0}")]
    Missing(String),
    #[error("the server's {name} is {len} bytes, more than the {max} allowed")]
    TooLarge { name: String, len: u64, max: u64 },
    #[error("the server's {name} is not {expected}")]
    Malformed {
        name: String,
        expected: &'static str,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a job's outputs must be.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    /// The main output (`-o`), required when the compile succeeded.
    pub main: &'a str,
    /// Optional further outputs (`.dwo`), ELF objects.
    pub extra: &'a [String],
    /// `-S`: the main output is assembly text, not an object.
    pub assemble_only: bool,
}

/// An object file: an ELF header (magic, a known class, byte order and version), or LLVM
/// bitcode, raw or in its wrapper (what clang's `-flto` writes for `-c`).
fn is_object(data: &[u8]) -> bool {
    let elf = data.len() >= 52
        && data.starts_with(b"\x7fELF")
        && matches!(data[4], 1 | 2)
        && matches!(data[5], 1 | 2)
        && data[6] == 1;
    let bitcode = data.len() >= 8
        && (data.starts_with(b"BC\xc0\xde") || data.starts_with(b"\xde\xc0\x17\x0b"));
    elf || bitcode
}

/// Checks every output of `done` against `wanted` (names, count, sizes, contents).
///
/// # Errors
/// The first [`OutputError`] found; nothing is written.
pub fn check(done: &JobResult, wanted: Wanted<'_>) -> Result<(), OutputError> {
    check_within(done, wanted, (MAX_OUTPUT, MAX_OUTPUTS_TOTAL))
}

/// [`check`] with the (per file, total) size bounds given.
fn check_within(
    done: &JobResult,
    wanted: Wanted<'_>,
    (max_one, max_total): (u64, u64),
) -> Result<(), OutputError> {
    if done.exit_code == 0 && !done.outputs.iter().any(|o| o.name == wanted.main) {
        return Err(OutputError::Missing(wanted.main.to_string()));
    }
    let mut total = 0u64;
    for (i, o) in done.outputs.iter().enumerate() {
        let name = &o.name;
        let is_main = *name == wanted.main;
        if !is_main && !wanted.extra.iter().any(|w| w == name) {
            return Err(OutputError::Unexpected(name.clone()));
        }
        if done.outputs[..i].iter().any(|p| p.name == *name) {
            return Err(OutputError::Duplicate(name.clone()));
        }
        let data = o.data.raw_bytes().ok_or_else(|| OutputError::Malformed {
            name: name.clone(),
            expected: "unpacked data",
        })?;
        let len = data.len() as u64;
        total += len;
        for (len, max) in [(len, max_one), (total, max_total)] {
            if len > max {
                return Err(OutputError::TooLarge {
                    name: name.clone(),
                    len,
                    max,
                });
            }
        }
        let (ok, expected) = if is_main && wanted.assemble_only {
            (!data.contains(&0), "assembly text")
        } else {
            (is_object(data), "an ELF object (or LLVM bitcode)")
        };
        if !ok {
            return Err(OutputError::Malformed {
                name: name.clone(),
                expected,
            });
        }
    }
    Ok(())
}

/// Checks every output of `done` ([`check`]) and writes them atomically: nothing is
/// renamed into place unless every file was written to its temp file.
///
/// # Errors
/// [`OutputError`]: a refused output (nothing written), or a write failure.
pub fn write_all(cwd: &Path, done: &JobResult, wanted: Wanted<'_>) -> Result<(), OutputError> {
    check(done, wanted)?;
    let mask = current_umask();
    let mut staged = Vec::with_capacity(done.outputs.len());
    let mut in_place = Vec::new();
    for o in &done.outputs {
        let (name, data) = (&o.name, o.data.raw_bytes().unwrap_or_default());
        let path = cwd.join(name);
        let dir = dir_of(cwd, &path);
        let werr = |source| OutputError::Write {
            path: path.clone(),
            source,
        };
        if writes_in_place(&path, dir) {
            in_place.push((path, data));
            continue;
        }
        let mut tmp = tempfile::Builder::new()
            .prefix(".hoardcc-")
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(werr)?;
        tmp.write_all(data).map_err(werr)?;
        // tempfile creates 0600; give the file the mode the compiler would have (0666 & ~umask).
        std::fs::set_permissions(
            tmp.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o666 & !mask),
        )
        .map_err(werr)?;
        staged.push((tmp, path));
    }
    for (path, data) in in_place {
        write_in_place(&path, data).map_err(|source| OutputError::Write { path, source })?;
    }
    for (tmp, path) in staged {
        tmp.persist(&path).map_err(|e| OutputError::Write {
            path: path.clone(),
            source: e.error,
        })?;
    }
    Ok(())
}

/// The directory `path` (under `cwd`) is created in.
fn dir_of<'a>(cwd: &'a Path, path: &'a Path) -> &'a Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(cwd)
}

fn may_write(p: &Path) -> bool {
    nix::unistd::access(p, nix::unistd::AccessFlags::W_OK).is_ok()
}

/// True when `path` must be written where it is rather than replaced by a rename: it is
/// there and not a regular file or a symlink (a device, a FIFO), or its directory takes
/// no new files (then the compiler, too, truncates and writes the file it finds).
fn writes_in_place(path: &Path, dir: &Path) -> bool {
    match std::fs::symlink_metadata(path) {
        Ok(m) => {
            let t = m.file_type();
            !(t.is_file() || t.is_symlink()) || !may_write(dir)
        }
        Err(_) => false,
    }
}

/// Open the existing `path` for writing (following symlinks, creating nothing), truncate
/// it when it is a regular file, and write `data`.
fn write_in_place(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    if f.metadata()?.is_file() {
        f.set_len(0)?;
    }
    f.write_all(data)?;
    f.flush()
}

/// Why `outputs` (names under `cwd`) of a compile of `source` must be left to the
/// compiler run locally, if they must: the output's directory does not exist, an output
/// is the source file itself (compared by device and inode, not by spelling; also
/// `-x c /dev/null -o /dev/null`, which gcc accepts but a server refuses), or an
/// output cannot be written (an existing file we may not write, a new one in a directory
/// we may not create it in, a directory). gcc reports each of these itself, at once.
pub fn local_reason<'a>(
    cwd: &Path,
    source: &str,
    outputs: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let src = std::fs::metadata(cwd.join(source)).ok();
    for name in outputs {
        let path = cwd.join(name);
        let dir = dir_of(cwd, &path);
        if !std::fs::metadata(dir).is_ok_and(|m| m.is_dir()) {
            return Some(format!("the directory of output {name} does not exist"));
        }
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => return Some(format!("output {name} is a directory")),
            Ok(m)
                if src
                    .as_ref()
                    .is_some_and(|s| (s.dev(), s.ino()) == (m.dev(), m.ino())) =>
            {
                return Some(format!("output {name} is the input file"));
            }
            Ok(_) if !may_write(&path) => return Some(format!("output {name} is not writable")),
            Ok(_) => {}
            Err(_) if !may_write(dir) => {
                return Some(format!("cannot create output {name} in its directory"))
            }
            Err(_) => {}
        }
    }
    None
}

/// After a failed compile, do with the existing main output `name` (under `cwd`) what the
/// compiler alone does. gcc's driver deletes the outputs of the commands it ran when one
/// fails, if they are regular files (following a symlink, whose link it removes): with
/// `-S` or `-pipe` that includes `-o` (cc1 or the piped assembler was given it), with a
/// plain `-c` it does not (the assembler never started). clang's driver always removes its
/// result file when it is a regular file it may write. A device such as `/dev/null`
/// stays; so do further outputs (`.dwo`).
pub fn after_failure(cwd: &Path, name: &str, family: crate::args::Family, gcc_deletes: bool) {
    let path = cwd.join(name);
    let regular = std::fs::metadata(&path).is_ok_and(|m| m.is_file());
    let delete = match family {
        crate::args::Family::Gcc => regular && gcc_deletes,
        crate::args::Family::Clang => regular && may_write(&path),
    };
    if delete {
        let _ = std::fs::remove_file(&path);
    }
}

fn current_umask() -> u32 {
    use nix::sys::stat::{umask, Mode};
    let old = umask(Mode::from_bits_truncate(0o022));
    umask(old);
    old.bits()
}

/// Write a server's `bytes` to stdout or stderr, [`sanitize`]d and bounded by
/// [`MAX_REPLAY`], in one write call.
pub fn replay(to_stderr: bool, bytes: &[u8]) {
    replay_local(to_stderr, &sanitize(&bytes[..bytes.len().min(MAX_REPLAY)]));
}

/// Write our own (trusted) `bytes` as they are, in one write call.
pub fn replay_local(to_stderr: bool, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let _ = if to_stderr {
        std::io::stderr().lock().write_all(bytes)
    } else {
        std::io::stdout().lock().write_all(bytes)
    };
}

const ESC: u8 = 0x1b;
const BEL: u8 = 0x07;
/// Longest SGR parameter string kept (gcc's are a few bytes: `01;31`).
const MAX_SGR_PARAMS: usize = 32;
/// Longest OSC 8 link target kept.
const MAX_URL: usize = 2048;
/// Longest OSC 8 parameter string kept (`id=…`).
const MAX_LINK_PARAMS: usize = 64;

/// Makes a server's diagnostics safe for the user's terminal. Kept: text (UTF-8, or
/// other bytes from 0xA0 up, for non-UTF-8 locales), `\n`, `\t`, `\r` before `\n`, SGR
/// colour (`ESC [ digits;… m`, what `-fdiagnostics-color` emits, and the `ESC [ K` gcc
/// puts after it), and OSC 8 hyperlinks (`ESC ] 8 ; ; URL ST`, what gcc 12's
/// `-fdiagnostics-urls` emits) whose target is a printable http(s)/file URL. Dropped:
/// every other escape or control sequence whole (title changes, screen clears, cursor
/// moves, DCS/APC strings, C1 controls, also in their UTF-8 form) and every other control
/// byte (a bare `\r` could hide text by rewriting a line).
pub fn sanitize(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &bytes[i..];
        let b = rest[0];
        let (keep, len) = match b {
            ESC => match kept_escape(rest) {
                Some(n) => (true, n),
                None => (false, escape_len(rest)),
            },
            b'\n' | b'\t' => (true, 1),
            b'\r' => (rest.get(1) == Some(&b'\n'), 1),
            0x00..=0x1f | 0x7f => (false, 1),
            0x20..=0x7e => (true, 1),
            _ => utf8_char(rest),
        };
        if keep {
            out.extend_from_slice(&rest[..len]);
        }
        i += len;
    }
    out
}

/// A non-ASCII character at the start of `s`: (keep, length). A C1 control (U+0080 to
/// U+009F) is dropped; a byte that starts no valid UTF-8 character is kept alone when it
/// is printable in ISO 8859 (0xA0 and up) and dropped otherwise (0x80–0x9F are the 8-bit
/// C1 controls, CSI among them).
fn utf8_char(s: &[u8]) -> (bool, usize) {
    let width = match s[0] {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => 0,
    };
    if width > 0 && s.len() >= width {
        if let Ok(text) = std::str::from_utf8(&s[..width]) {
            let c = text.chars().next().expect("one character");
            return (!c.is_control(), width);
        }
    }
    (s[0] >= 0xa0, 1)
}

/// The length of the SGR, `ESC [ K` or OSC 8 sequence at the start of `s`, if it is one
/// that is kept.
fn kept_escape(s: &[u8]) -> Option<usize> {
    match s.get(1)? {
        b'[' => {
            let params = s[2..]
                .iter()
                .take(MAX_SGR_PARAMS + 1)
                .take_while(|b| b.is_ascii_digit() || **b == b';')
                .count();
            let fin = *s.get(2 + params)?;
            (params <= MAX_SGR_PARAMS && (fin == b'm' || (fin == b'K' && params == 0)))
                .then_some(3 + params)
        }
        b']' => osc8_len(s),
        _ => None,
    }
}

/// `ESC ] 8 ; PARAMS ; URL ST` with ST = `ESC \` or BEL, PARAMS of `[A-Za-z0-9:=_-]`,
/// and URL empty (the end of a link) or a printable `http://`, `https://` or `file://`
/// URL.
fn osc8_len(s: &[u8]) -> Option<usize> {
    let body = s.strip_prefix(b"\x1b]8;")?;
    let params = body
        .iter()
        .take(MAX_LINK_PARAMS + 1)
        .take_while(|b| b.is_ascii_alphanumeric() || b":=_-".contains(b))
        .count();
    if params > MAX_LINK_PARAMS || body.get(params) != Some(&b';') {
        return None;
    }
    let url_start = params + 1;
    let url_len = body[url_start..]
        .iter()
        .take(MAX_URL + 1)
        .take_while(|b| (0x21..=0x7e).contains(*b))
        .count();
    if url_len > MAX_URL {
        return None;
    }
    let url = &body[url_start..url_start + url_len];
    let scheme_ok = url.is_empty()
        || [&b"https://"[..], b"http://", b"file://"]
            .iter()
            .any(|p| url.starts_with(p));
    // A printable ESC-free URL cannot contain ST's `ESC`; a `\` in it is only ST after ESC.
    let after = &body[url_start + url_len..];
    let st = if after.starts_with(&[ESC, b'\\']) {
        2
    } else if after.first() == Some(&BEL) {
        1
    } else {
        return None;
    };
    scheme_ok.then_some(4 + url_start + url_len + st)
}

/// The length of the (dropped) escape sequence at the start of `s`: a CSI sequence to
/// its final byte; an OSC, DCS, SOS, PM or APC string to its terminator (when it has
/// none, only `ESC` and the introducer go, and the rest stays visible as text); any other
/// `ESC` sequence through its final byte.
fn escape_len(s: &[u8]) -> usize {
    match s.get(1) {
        None => 1,
        Some(b'[') => {
            let body = s[2..]
                .iter()
                .take_while(|b| (0x20..=0x3f).contains(*b))
                .count();
            match s.get(2 + body) {
                Some(0x40..=0x7e) => 3 + body,
                _ => 2 + body,
            }
        }
        Some(b']' | b'P' | b'X' | b'^' | b'_') => {
            let osc = s[1] == b']';
            let end = s[2..].iter().enumerate().find_map(|(j, &b)| match b {
                BEL if osc => Some(j + 1),
                ESC if s.get(2 + j + 1) == Some(&b'\\') => Some(j + 2),
                _ => None,
            });
            end.map_or(2, |e| 2 + e)
        }
        Some(_) => {
            let inter = s[1..]
                .iter()
                .take_while(|b| (0x20..=0x2f).contains(*b))
                .count();
            match s.get(1 + inter) {
                Some(0x30..=0x7e) => 2 + inter,
                _ => 1 + inter,
            }
        }
    }
}

#[cfg(test)]
mod tests;
