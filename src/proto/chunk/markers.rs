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
//! Only marker lines (`# DIGITS "NAME"…`) are touched, and only their quoted name. The
//! map is one-to-one: a marker name that already begins with [`TAG`] is escaped, so
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
}

impl Markers {
    /// Whether both names are within [`MAX_MARKER_NAME`] (a peer's recipe is checked).
    pub fn is_bounded(&self) -> bool {
        [&self.main, &self.cwd]
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

/// Calls `each(line)` for every line of `text`, each without its `\n`, then
/// `newline(has_newline)`: the last line may lack one.
fn for_each_line(text: &[u8], mut each: impl FnMut(&[u8], bool)) {
    let mut rest = text;
    while !rest.is_empty() {
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                each(&rest[..i], true);
                rest = &rest[i + 1..];
            }
            None => {
                each(rest, false);
                rest = &[];
            }
        }
    }
}

/// How many leading markers [`learn`] reads: gcc writes the working directory's second.
const LEARN_MARKERS: usize = 4;

/// The names to take out of `text`: the first marker's (the main source, as gcc and
/// clang both begin with it once the `<built-in>` section is gone), and the first one
/// ending in `//` among the first few (the working directory).
fn learn(text: &[u8]) -> Markers {
    let mut markers = Markers::default();
    let mut seen = 0;
    for line in text.split(|&b| b == b'\n') {
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
    for_each_line(text, |line, newline| {
        match marker_name(line) {
            Some((s, e)) => {
                let name = &line[s..e];
                out.extend_from_slice(&line[..s]);
                if markers.main.as_deref() == Some(name) {
                    out.extend_from_slice(TAG);
                    out.push(MAIN);
                } else if markers.cwd.as_deref() == Some(name) {
                    out.extend_from_slice(TAG);
                    out.push(CWD);
                } else if name.starts_with(TAG) {
                    out.extend_from_slice(TAG);
                    out.push(ESCAPED);
                    out.extend_from_slice(name);
                } else {
                    out.extend_from_slice(name);
                }
                out.extend_from_slice(&line[e..]);
            }
            None => out.extend_from_slice(line),
        }
        if newline {
            out.push(b'\n');
        }
    });
    (out, markers)
}

/// The exact inverse of [`normalise`]: puts `markers`' names back. A [`TAG`]-name with
/// no replacement (which `normalise` never writes) is left as it is.
pub fn restore(text: &[u8], markers: &Markers) -> Vec<u8> {
    let grow = markers.main.as_ref().map_or(0, Vec::len) + markers.cwd.as_ref().map_or(0, Vec::len);
    let mut out = Vec::with_capacity(text.len() + 64 * grow.min(1024));
    for_each_line(text, |line, newline| {
        match marker_name(line) {
            Some((s, e)) if line[s..e].starts_with(TAG) => {
                let name = &line[s..e];
                let tail = &name[TAG.len()..];
                out.extend_from_slice(&line[..s]);
                match tail {
                    [suffix] if markers.replacement(*suffix).is_some() => {
                        out.extend_from_slice(markers.replacement(*suffix).unwrap_or_default());
                    }
                    [ESCAPED, escaped @ ..] if escaped.starts_with(TAG) => {
                        out.extend_from_slice(escaped);
                    }
                    _ => out.extend_from_slice(name),
                }
                out.extend_from_slice(&line[e..]);
            }
            _ => out.extend_from_slice(line),
        }
        if newline {
            out.push(b'\n');
        }
    });
    out
}
