//! Compiler identity, pure data and decisions: what a compiler *is* ([`CompilerId`]: its
//! version, target and configuration, and optionally a hash of its binaries), the parsing
//! of what `-dumpfullversion`, `-dumpmachine` and `-v` print ([`parse_probe`]), whether two
//! identities are the same compiler ([`CompilerId::mismatch`]), and which names a server
//! tries for a client's compiler ([`candidate_names`]). No processes here: `identity`
//! runs the compilers, `subsystem::compilers` picks the server's, `mux` carries the
//! client's in the `Job`. Neighbours: `proto::msg` (the `Job` carries a `CompilerId`;
//! `Message::Compilers` lists [`OfferedCompiler`]s).
//!
//! distcc's FAQ says the version cannot be checked because compilers "which report the
//! same version number can have different behaviours": hence the configuration line, and
//! the binary hash of `strict` servers.

use serde::{Deserialize, Serialize};

/// Longest text kept of any identity field (a `Configured with:` line is ~2 KiB).
pub const MAX_ID_FIELD: usize = 8192;
/// Most compilers one `Message::Compilers` lists.
pub const MAX_OFFERED: usize = 64;

/// What a compiler is, as far as the objects it makes go.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CompilerId {
    /// Full version, e.g. `12.2.0` (`-dumpfullversion`, else the `-v` version line).
    pub version: String,
    /// Target triple, e.g. `x86_64-linux-gnu` (`-dumpmachine`, else `Target:`).
    pub target: String,
    /// The configuration lines of `-v`: gcc's `Configured with: …` and `Thread model: …`;
    /// clang's version line (vendor and version) and `Thread model: …` (its
    /// `InstalledDir:` depends on how it was invoked, so it is left out). One per line.
    pub configured: String,
    /// blake3 (hex) over the driver, `cc1`, `cc1plus` and `as` binaries, when computed
    /// (clients always compute it; a `strict` server compares it).
    pub binaries: Option<String>,
}

impl CompilerId {
    /// `12.2.0 (x86_64-linux-gnu)`, for messages.
    pub fn label(&self) -> String {
        format!("{} ({})", self.version, self.target)
    }

    /// True for a clang (its version line names clang).
    pub fn is_clang(&self) -> bool {
        self.configured
            .lines()
            .next()
            .is_some_and(|l| l.contains("clang version"))
    }

    /// Why `self` (a compiler here) is not the `wanted` one, or `None` if it is: the same
    /// version and target, and as `rule` asks the same configuration and binaries.
    pub fn mismatch(&self, wanted: &CompilerId, rule: Rule) -> Option<Mismatch> {
        if self.version != wanted.version || self.target != wanted.target {
            Some(Mismatch::Version)
        } else if rule.configured && self.configured != wanted.configured {
            Some(Mismatch::Configuration)
        } else if rule.binaries && (self.binaries.is_none() || self.binaries != wanted.binaries) {
            Some(Mismatch::Binaries)
        } else {
            None
        }
    }

    /// Whether every field is within [`MAX_ID_FIELD`] bytes (a server checks a client's
    /// before building names from it).
    pub fn is_bounded(&self) -> bool {
        [&self.version, &self.target, &self.configured]
            .iter()
            .all(|f| f.len() <= MAX_ID_FIELD)
            && self.binaries.as_ref().is_none_or(|b| b.len() <= 128)
    }

    /// Every field cut to [`MAX_ID_FIELD`] bytes (at a character boundary).
    pub fn bounded(mut self) -> CompilerId {
        for f in [&mut self.version, &mut self.target, &mut self.configured] {
            truncate(f, MAX_ID_FIELD);
        }
        if let Some(b) = &mut self.binaries {
            truncate(b, 128);
        }
        self
    }
}

/// What must be equal besides version and target (`[server] match_configured`, `strict`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The configuration lines.
    pub configured: bool,
    /// The binary hashes.
    pub binaries: bool,
}

impl Rule {
    /// Version, target and configuration (the server default).
    pub const DEFAULT: Rule = Rule {
        configured: true,
        binaries: false,
    };
    /// Everything, binaries included (`strict`).
    pub const STRICT: Rule = Rule {
        configured: true,
        binaries: true,
    };
}

/// How a compiler differs from the one asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    /// Another version or target.
    Version,
    /// The same version and target, configured differently.
    Configuration,
    /// The same configuration, other binaries (`strict`).
    Binaries,
}

impl Mismatch {
    /// The words after "here is 12.2.0 (x86_64-linux-gnu)" in a refusal.
    pub fn note(self) -> &'static str {
        match self {
            Mismatch::Version => "",
            Mismatch::Configuration => ", configured differently",
            Mismatch::Binaries => ", with other binaries (strict)",
        }
    }
}

/// One compiler a server offers (`hoardcc serve --check`, `Message::Compilers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferedCompiler {
    /// The name a job asks for (`gcc`, `gcc-12`, `x86_64-linux-gnu-g++`).
    pub name: String,
    /// Where it resolves on the server.
    pub path: String,
    /// What it is.
    pub id: CompilerId,
    /// Named in the server's `compilers` setting: a candidate for any job of the same
    /// tool (`gcc`, `g++` …), not only for its own name.
    pub extra: bool,
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// The outputs of the three probe commands.
#[derive(Debug, Clone, Default)]
pub struct ProbeOutput<'a> {
    /// stdout of `-dumpfullversion`, if it exited 0 (clang does not know it).
    pub dumpfullversion: Option<&'a str>,
    /// stdout of `-dumpversion`, if it exited 0 (only asked of compilers without
    /// `-dumpfullversion`).
    pub dumpversion: Option<&'a str>,
    /// stdout of `-dumpmachine`, if it exited 0.
    pub dumpmachine: Option<&'a str>,
    /// stderr (and stdout) of `-v`.
    pub verbose: &'a str,
}

/// Why probe output does not make an identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// No version anywhere (not a gcc or clang?).
    #[error("no version in its -dumpfullversion or -v output (not a gcc or clang?)")]
    NoVersion,
    /// No target anywhere.
    #[error("no target in its -dumpmachine or -v output")]
    NoTarget,
}

/// A dotted version (`12`, `12.2.0`, `14.0.6`): digits and dots, starting with a digit.
fn is_version(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_digit() || c == '.')
        && s.len() <= 32
}

fn dumped(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|v| is_version(v))
}

/// The identity in the probe output (without `binaries`).
///
/// # Errors
/// [`ParseError`] when the version or the target cannot be found.
pub fn parse_probe(out: &ProbeOutput<'_>) -> Result<CompilerId, ParseError> {
    let lines: Vec<&str> = out.verbose.lines().map(str::trim_end).collect();
    // "gcc version 12.2.0 (Debian 12.2.0-14)", "Debian clang version 14.0.6".
    let version_line = lines.iter().find(|l| {
        l.split_once(" version ")
            .is_some_and(|(_, rest)| rest.split_whitespace().next().is_some_and(is_version))
    });
    let from_line = version_line.and_then(|l| {
        let (_, rest) = l.split_once(" version ")?;
        rest.split_whitespace().next()
    });
    let version = dumped(out.dumpfullversion)
        .or(from_line)
        .or(dumped(out.dumpversion))
        .ok_or(ParseError::NoVersion)?;
    let field = |prefix: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(prefix).map(str::trim))
            .filter(|v| !v.is_empty())
    };
    let target = out
        .dumpmachine
        .map(str::trim)
        .filter(|t| !t.is_empty() && !t.contains(char::is_whitespace))
        .or(field("Target:"))
        .ok_or(ParseError::NoTarget)?;
    let mut configured = Vec::new();
    match lines.iter().find(|l| l.starts_with("Configured with:")) {
        Some(l) => configured.push(*l),
        // clang prints no configure line: its version line names vendor and version.
        None => configured.extend(version_line.copied()),
    }
    configured.extend(lines.iter().find(|l| l.starts_with("Thread model:")));
    Ok(CompilerId {
        version: version.to_string(),
        target: target.to_string(),
        configured: configured.join("\n"),
        binaries: None,
    }
    .bounded())
}

/// The tool a compiler name runs, without target prefix or version suffix:
/// `x86_64-linux-gnu-gcc-12` → `gcc`, `clang++-14` → `clang++`.
pub fn tool_of(name: &str) -> &str {
    let mut parts: Vec<&str> = name.split('-').collect();
    if parts.len() > 1 && parts.last().is_some_and(|v| is_version(v)) {
        parts.pop();
    }
    parts.last().copied().unwrap_or(name)
}

/// The names a server tries, in order, for a client's compiler `name` that is `id`: the
/// name itself, then versioned names (`gcc-12`, `gcc-12.2`, `gcc-12.2.0`), each also with
/// the target prefix (`x86_64-linux-gnu-gcc-12`); for `cc`/`c++` the family's own names
/// (`gcc`/`g++`, or `clang`/`clang++`). No duplicates; the caller checks each against its
/// allow-list.
pub fn candidate_names(name: &str, id: &CompilerId) -> Vec<String> {
    let tool = tool_of(name);
    let mut tools = vec![tool.to_string()];
    match (tool, id.is_clang()) {
        ("cc", false) => tools.push("gcc".into()),
        ("c++", false) => tools.push("g++".into()),
        ("cc", true) => tools.push("clang".into()),
        ("c++", true) => tools.push("clang++".into()),
        _ => {}
    }
    let parts: Vec<&str> = id.version.split('.').collect();
    let versions: Vec<String> = (1..=parts.len().min(3))
        .map(|n| parts[..n].join("."))
        .collect();
    let mut out = vec![name.to_string()];
    let mut push = |n: String| {
        if !out.contains(&n) {
            out.push(n);
        }
    };
    for t in &tools {
        push(t.clone());
        for v in &versions {
            push(format!("{t}-{v}"));
        }
    }
    if !id.target.is_empty() && !id.target.contains(['/', '\0']) {
        for t in &tools {
            push(format!("{}-{t}", id.target));
            for v in &versions {
                push(format!("{}-{t}-{v}", id.target));
            }
        }
    }
    out
}

/// The compiler a server offering `offered` (its `Message::Compilers` list) would pick
/// for a job of `name` that is `wanted`, by the server's own order: [`candidate_names`],
/// then the server's `extra` compilers of the same tool. For `hoardcc ping` and
/// `doctor`, which ask before sending a job.
pub fn find_match<'a>(
    name: &str,
    wanted: &CompilerId,
    offered: &'a [OfferedCompiler],
    rule: Rule,
) -> Option<&'a OfferedCompiler> {
    let same = |o: &&OfferedCompiler| o.id.mismatch(wanted, rule).is_none();
    candidate_names(name, wanted)
        .iter()
        .find_map(|n| offered.iter().filter(|o| &o.name == n).find(same))
        .or_else(|| {
            let tool = tool_of(name);
            offered
                .iter()
                .filter(|o| o.extra && tool_of(&o.name) == tool)
                .find(same)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GCC_V: &str = "Using built-in specs.\nCOLLECT_GCC=gcc\nTarget: x86_64-linux-gnu\n\
Configured with: ../src/configure -v --with-pkgversion='Debian 12.2.0-14' --prefix=/usr\n\
Thread model: posix\nSupported LTO compression algorithms: zlib zstd\n\
gcc version 12.2.0 (Debian 12.2.0-14) \n";
    const CLANG_V: &str = "Debian clang version 14.0.6\nTarget: x86_64-pc-linux-gnu\n\
Thread model: posix\nInstalledDir: /usr/bin\nFound candidate GCC installation: /usr/lib/gcc/x86_64-linux-gnu/12\n";

    fn gcc() -> CompilerId {
        parse_probe(&ProbeOutput {
            dumpfullversion: Some("12.2.0\n"),
            dumpversion: None,
            dumpmachine: Some("x86_64-linux-gnu\n"),
            verbose: GCC_V,
        })
        .unwrap()
    }

    #[test]
    fn parses_gcc() {
        let id = gcc();
        assert_eq!(id.version, "12.2.0");
        assert_eq!(id.target, "x86_64-linux-gnu");
        assert_eq!(
            id.configured,
            "Configured with: ../src/configure -v --with-pkgversion='Debian 12.2.0-14' \
             --prefix=/usr\nThread model: posix"
        );
        assert!(!id.is_clang());
        assert_eq!(id.label(), "12.2.0 (x86_64-linux-gnu)");
    }

    #[test]
    fn parses_clang_without_dumpfullversion() {
        let id = parse_probe(&ProbeOutput {
            dumpfullversion: None,
            // Old clangs say 4.2.1 here: the -v line wins.
            dumpversion: Some("4.2.1"),
            dumpmachine: Some("x86_64-pc-linux-gnu"),
            verbose: CLANG_V,
        })
        .unwrap();
        assert_eq!(id.version, "14.0.6");
        assert_eq!(id.target, "x86_64-pc-linux-gnu");
        assert_eq!(
            id.configured,
            "Debian clang version 14.0.6\nThread model: posix"
        );
        assert!(id.is_clang());
    }

    #[test]
    fn falls_back_on_v_and_refuses_non_compilers() {
        let id = parse_probe(&ProbeOutput {
            dumpfullversion: Some("garbage here"),
            dumpversion: None,
            dumpmachine: None,
            verbose: GCC_V,
        })
        .unwrap();
        assert_eq!(
            (id.version.as_str(), id.target.as_str()),
            ("12.2.0", "x86_64-linux-gnu")
        );
        let none = ProbeOutput {
            verbose: "sh: 1: -v: not found\n",
            ..Default::default()
        };
        assert_eq!(parse_probe(&none), Err(ParseError::NoVersion));
        let no_target = ProbeOutput {
            dumpfullversion: Some("1.0"),
            verbose: "",
            ..Default::default()
        };
        assert_eq!(parse_probe(&no_target), Err(ParseError::NoTarget));
    }

    #[test]
    fn mismatch_names_the_difference() {
        let a = gcc();
        assert_eq!(a.mismatch(&a, Rule::DEFAULT), None);
        // Strict needs hashes on both sides, and equal ones.
        assert_eq!(a.mismatch(&a, Rule::STRICT), Some(Mismatch::Binaries));
        let mut hashed = a.clone();
        hashed.binaries = Some("ab".into());
        assert_eq!(hashed.mismatch(&hashed, Rule::STRICT), None);
        let mut other = hashed.clone();
        other.binaries = Some("cd".into());
        assert_eq!(other.mismatch(&hashed, Rule::DEFAULT), None);
        assert_eq!(
            other.mismatch(&hashed, Rule::STRICT),
            Some(Mismatch::Binaries)
        );
        let mut v13 = a.clone();
        v13.version = "13.1.0".into();
        assert_eq!(v13.mismatch(&a, Rule::DEFAULT), Some(Mismatch::Version));
        let mut conf = a.clone();
        conf.configured.push_str(" --enable-foo");
        assert_eq!(
            conf.mismatch(&a, Rule::DEFAULT),
            Some(Mismatch::Configuration)
        );
        let loose = Rule {
            configured: false,
            binaries: false,
        };
        assert_eq!(conf.mismatch(&a, loose), None);
    }

    #[test]
    fn candidates_try_versioned_and_prefixed_names() {
        let id = gcc();
        assert_eq!(
            candidate_names("gcc", &id),
            [
                "gcc",
                "gcc-12",
                "gcc-12.2",
                "gcc-12.2.0",
                "x86_64-linux-gnu-gcc",
                "x86_64-linux-gnu-gcc-12",
                "x86_64-linux-gnu-gcc-12.2",
                "x86_64-linux-gnu-gcc-12.2.0"
            ]
        );
        let cc = candidate_names("cc", &id);
        assert_eq!(&cc[..3], ["cc", "cc-12", "cc-12.2"]);
        assert!(cc.contains(&"gcc-12".to_string()));
        assert!(candidate_names("c++", &id).contains(&"x86_64-linux-gnu-g++-12".to_string()));
        // A versioned client name keeps its own name first.
        assert_eq!(candidate_names("gcc-12", &id)[..2], ["gcc-12", "gcc"]);
        assert_eq!(tool_of("x86_64-linux-gnu-gcc-12"), "gcc");
        assert_eq!(tool_of("clang++-14"), "clang++");
        assert_eq!(tool_of("gcc"), "gcc");
    }

    #[test]
    fn fields_are_bounded() {
        let id = CompilerId {
            version: "1".into(),
            target: "t".into(),
            configured: "é".repeat(MAX_ID_FIELD),
            binaries: None,
        }
        .bounded();
        assert!(id.configured.len() <= MAX_ID_FIELD);
        assert!(id.is_bounded());
        let long = CompilerId {
            version: "1".repeat(MAX_ID_FIELD + 1),
            ..id
        };
        assert!(!long.is_bounded());
    }

    #[test]
    fn find_match_follows_the_server_s_order() {
        let id = gcc();
        let mut v13 = id.clone();
        v13.version = "13.1.0".into();
        let offer = |name: &str, id: &CompilerId| OfferedCompiler {
            name: name.into(),
            path: format!("/usr/bin/{name}"),
            id: id.clone(),
            extra: name.starts_with("my-"),
        };
        let offered = vec![
            offer("gcc", &v13),
            offer("my-gcc", &id),
            offer("gcc-12", &id),
            offer("g++-12", &id),
        ];
        let m = find_match("gcc", &id, &offered, Rule::DEFAULT).unwrap();
        assert_eq!(m.name, "gcc-12");
        assert_eq!(
            find_match("gcc", &v13, &offered, Rule::DEFAULT)
                .unwrap()
                .name,
            "gcc"
        );
        let only_other = vec![offer("gcc", &v13), offer("my-gcc", &id)];
        assert_eq!(
            find_match("gcc", &id, &only_other, Rule::DEFAULT)
                .unwrap()
                .name,
            "my-gcc"
        );
        // A same-tool name the server does not list as extra is no candidate.
        let not_extra = vec![offer("gcc", &v13), offer("your-gcc", &id)];
        assert!(find_match("gcc", &id, &not_extra, Rule::DEFAULT).is_none());
        assert!(find_match("clang", &id, &offered, Rule::DEFAULT).is_none());
        assert!(find_match("gcc", &id, &offered, Rule::STRICT).is_none());
    }
}
