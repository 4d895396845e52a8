//! Line-marker normalisation, pure: before directives-only text is cut into chunks, the
//! names that differ between translation units for no reason are taken out of its line
//! markers, so a header's text reads the same in every unit that includes it; the server
//! puts them back exactly before it compiles. Neighbours: `proto::chunk` (cuts the
//! normalised text), `wrapper` (normalises), `subsystem::job` (restores).
//!
//! Two names are taken out:
//! - the main source's, in `# 1 "src/unit000.c"`, `# 12 "src/unit000.c" 2`: the marker
//!   after each `#include` of the main file names it, and so lands inside the chunk that
//!   holds the end of every header the main file includes;
//! - gcc's working-directory marker `# 1 "/abs/cwd//"` (written with `-g`).
//!
//! The line numbers of the main source's markers differ between units too (each file
//! includes its headers at other lines), and the marker after an `#include` sits right
//! before the next header's text; so they are taken out as well, into
//! [`Markers::lines`], and written as `0`.
//!
//! Only marker lines (`# DIGITS "NAME"…`) are touched: their quoted name, and the number
//! of those naming the main source. The map is one-to-one: a marker name that already
//! begins with [`TAG`] is escaped, and a main-source marker whose number does not print
//! back the same (leading zeros, past `u32`) keeps its name, so
//! `restore(normalise(t)) == t` for every byte string `t`.

use serde::{Deserialize, Serialize};

/// Prefix of the names normalisation writes. `<` cannot start a name gcc or clang writes
/// for a real file, except its own `<built-in>` and `<command-line>`.
pub const TAG: &[u8] = b"<hoardcc>";
/// Suffix after [`TAG`] for the main source.
const MAIN: u8 = b'm';
/// Suffix after [`TAG`] for the working directory.
const CWD: u8 = b'd';
/// Suffix after [`TAG`] marking a name that itself began with [`TAG`].
const ESCAPED: u8 = b'e';
/// Bound on a name normalisation learns (a marker name longer than this is left alone).
pub const MAX_MARKER_NAME: usize = 4096;

/// What [`restore`] needs: the names [`normalise`] took out, as the markers spelled them
/// (escapes included).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Markers {
    /// The main source's name: the first marker's, unless it names a `<…>` pseudo-file
    /// or a directory.
    pub main: Option<Vec<u8>>,
    /// gcc's working-directory marker name (ends in `//`).
    pub cwd: Option<Vec<u8>>,
    /// The line numbers of the main source's markers, in order (written as `0`).
    pub lines: Vec<u32>,
}

/// Most main-source markers one text may have lifted numbers for (a peer's recipe is
/// checked): one per line of a 256 MiB text of the shortest markers.
pub const MAX_MAIN_MARKERS: usize = 16 << 20;

impl Markers {
    /// Whether both names are within [`MAX_MARKER_NAME`] (a peer's recipe is checked).
    pub fn is_bounded(&self) -> bool {
        self.lines.len() <= MAX_MAIN_MARKERS
            && [&self.main, &self.cwd]
                .iter()
                .all(|n| n.as_ref().is_none_or(|n| n.len() <= MAX_MARKER_NAME))
    }

    fn replacement(&self, suffix: u8) -> Option<&[u8]> {
        match suffix {
            MAIN => self.main.as_deref(),
            CWD => self.cwd.as_deref(),
            _ => None,
        }
    }
}

/// The quoted name of a line marker: `# DIGITS "NAME"REST` with `REST` free of quotes.
/// Returns the byte range of NAME within `line` (no newline in `line`).
fn marker_name(line: &[u8]) -> Option<(usize, usize)> {
    let rest = line.strip_prefix(b"# ")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || rest.get(digits..digits + 2) != Some(b" \"") {
        return None;
    }
    let start = 2 + digits + 2;
    let end = line.iter().rposition(|&b| b == b'"')?;
    (end >= start).then_some((start, end))
}

/// Calls `each(line)` for every line of `text` that may be a line marker (it starts with
/// `# `), without its `\n`, and `copy(span)` for the text between them, in order: the
/// spans and lines (with their `\n`s) make up `text`. memchr finds the candidates, so the
/// long runs of ordinary lines cost one copy.
fn for_each_marker(text: &[u8], mut copy: impl FnMut(&[u8]), mut each: impl FnMut(&[u8])) {
    let mut at = 0;
    let mut starts = memchr::memmem::find_iter(text, b"\n# ").map(|i| i + 1);
    let mut next = if text.starts_with(b"# ") {
        Some(0)
    } else {
        starts.next()
    };
    while let Some(line_start) = next {
        copy(&text[at..line_start]);
        let line_end =
            memchr::memchr(b'\n', &text[line_start..]).map_or(text.len(), |i| line_start + i);
        each(&text[line_start..line_end]);
        at = line_end;
        // The next candidate starts after this line (its `\n` is copied with the span).
        next = starts.by_ref().find(|&s| s > line_end);
    }
    copy(&text[at..]);
}

/// Where normalised text changes between the main source and anything else: the offsets
/// of the marker lines that leave the main source (for a header it includes, or gcc's
/// `<built-in>` and `<command-line>` sections) and of those that return to it. Cutting there too (`proto::chunk::cut_at`) keeps each
/// header's text in chunks of its own, the same in every unit that includes it, and the
/// main source's own text (what an edit changes) in small chunks apart.
pub fn include_boundaries(text: &[u8]) -> Vec<usize> {
    let main = [TAG, &[MAIN]].concat();
    let base = text.as_ptr() as usize;
    let mut out = Vec::new();
    let mut in_main = false;
    for_each_marker(
        text,
        |_| {},
        |line| {
            let Some((s, e)) = marker_name(line) else {
                return;
            };
            let is_main = line[s..e] == main[..];
            let at = line.as_ptr() as usize - base;
            if at > 0 && in_main != is_main {
                out.push(at);
            }
            in_main = is_main;
        },
    );
    out
}

/// The spans of normalised `text` that are the main source's own text (from a marker
/// naming it to the next marker), those of at least `min` bytes, in order.
pub fn main_spans(text: &[u8], min: usize) -> Vec<std::ops::Range<usize>> {
    let main = [TAG, &[MAIN]].concat();
    let base = text.as_ptr() as usize;
    let mut out = Vec::new();
    let mut open: Option<usize> = None;
    let close = |open: &mut Option<usize>, end: usize, out: &mut Vec<std::ops::Range<usize>>| {
        if let Some(start) = open.take() {
            if end - start >= min {
                out.push(start..end);
            }
        }
    };
    for_each_marker(
        text,
        |_| {},
        |line| {
            let Some((s, e)) = marker_name(line) else {
                return;
            };
            let at = line.as_ptr() as usize - base;
            close(&mut open, at, &mut out);
            if line[s..e] == main[..] {
                open = Some(at);
            }
        },
    );
    close(&mut open, text.len(), &mut out);
    out
}

/// How many leading markers [`learn`] reads: gcc writes the working directory's second.
const LEARN_MARKERS: usize = 4;
/// How many leading lines [`learn`] reads at most (markers come first in cpp output).
const MAX_LEARN_LINES: usize = 64;

/// The names to take out of `text`: the first marker's (the main source, as gcc and
/// clang both begin with it once the `<built-in>` section is gone), and the first one
/// ending in `//` among the first few (the working directory).
fn learn(text: &[u8]) -> Markers {
    let mut markers = Markers::default();
    let mut seen = 0;
    for line in text.split(|&b| b == b'\n').take(MAX_LEARN_LINES) {
        let Some((s, e)) = marker_name(line) else {
            continue;
        };
        let name = &line[s..e];
        if name.len() <= MAX_MARKER_NAME {
            if name.ends_with(b"//") {
                markers.cwd.get_or_insert_with(|| name.to_vec());
            } else if seen == 0 && !name.starts_with(b"<") && !name.is_empty() {
                markers.main = Some(name.to_vec());
            }
        }
        seen += 1;
        if seen == LEARN_MARKERS || markers.cwd.is_some() {
            break;
        }
    }
    markers
}

/// Rewrites the main source's and the working directory's names in `text`'s line markers
/// to [`TAG`]-names; returns the new text and what [`restore`] needs to undo it.
pub fn normalise(text: &[u8]) -> (Vec<u8>, Markers) {
    let markers = learn(text);
    let mut out = Vec::with_capacity(text.len() + 64);
    let out_cell = std::cell::RefCell::new(&mut out);
    let lines = std::cell::RefCell::new(Vec::new());
    for_each_marker(
        text,
        |span| out_cell.borrow_mut().extend_from_slice(span),
        |line| {
            let mut out = out_cell.borrow_mut();
            let Some((s, e)) = marker_name(line) else {
                out.extend_from_slice(line);
                return;
            };
            let name = &line[s..e];
            let number = canonical_number(&line[2..s - 2]);
            if markers.main.as_deref() == Some(name) && number.is_some() {
                lines.borrow_mut().extend(number);
                out.extend_from_slice(b"# 0 \"");
                out.extend_from_slice(TAG);
                out.push(MAIN);
            } else if markers.main.as_deref() == Some(name) {
                out.extend_from_slice(&line[..e]);
            } else if markers.cwd.as_deref() == Some(name) {
                out.extend_from_slice(&line[..s]);
                out.extend_from_slice(TAG);
                out.push(CWD);
            } else if name.starts_with(TAG) {
                out.extend_from_slice(&line[..s]);
                out.extend_from_slice(TAG);
                out.push(ESCAPED);
                out.extend_from_slice(name);
            } else {
                out.extend_from_slice(&line[..e]);
            }
            out.extend_from_slice(&line[e..]);
        },
    );
    let mut markers = markers;
    markers.lines = lines.into_inner();
    (out, markers)
}

/// The marker's number, if it prints back as the same digits (no leading zero, fits a
/// `u32`).
fn canonical_number(digits: &[u8]) -> Option<u32> {
    let n: u32 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    (n.to_string().as_bytes() == digits).then_some(n)
}

/// The exact inverse of [`normalise`]: puts `markers`' names back. A [`TAG`]-name with
/// no replacement (which `normalise` never writes) is left as it is.
pub fn restore(text: &[u8], markers: &Markers) -> Vec<u8> {
    let grow = markers.main.as_ref().map_or(0, Vec::len) + markers.cwd.as_ref().map_or(0, Vec::len);
    let mut out = Vec::with_capacity(text.len() + 64 * grow.min(1024));
    let out_cell = std::cell::RefCell::new(&mut out);
    let mut lines = markers.lines.iter();
    let main = [TAG, &[MAIN]].concat();
    for_each_marker(
        text,
        |span| out_cell.borrow_mut().extend_from_slice(span),
        |line| {
            let mut out = out_cell.borrow_mut();
            let Some((s, e)) = marker_name(line).filter(|&(s, e)| line[s..e].starts_with(TAG))
            else {
                out.extend_from_slice(line);
                return;
            };
            let name = &line[s..e];
            // A lifted number comes back (a peer's short list leaves the rest at 0).
            let lifted = name == main.as_slice() && &line[..s] == b"# 0 \"";
            match lifted.then(|| lines.next()).flatten() {
                Some(n) => {
                    out.extend_from_slice(b"# ");
                    out.extend_from_slice(n.to_string().as_bytes());
                    out.extend_from_slice(b" \"");
                }
                None => out.extend_from_slice(&line[..s]),
            }
            match &name[TAG.len()..] {
                [ESCAPED, escaped @ ..] if escaped.starts_with(TAG) => {
                    out.extend_from_slice(escaped)
                }
                [suffix] => match markers.replacement(*suffix) {
                    Some(original) => out.extend_from_slice(original),
                    None => out.extend_from_slice(name),
                },
                _ => out.extend_from_slice(name),
            }
            out.extend_from_slice(&line[e..]);
        },
    );
    out
}
