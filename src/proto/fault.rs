//! Server faults, pure: telling a compile that *failed* (the user's error, reported as the
//! job's status) from a compiler that did not finish on its own terms (killed by a
//! signal: the OOM killer, an admin's `kill -9`, an rlimit; or a driver reporting that a
//! sub-program such as `cc1` died, or an internal compiler error). A fault is never
//! the job's exit status: the client retries once, then compiles locally, where a
//! deterministic ICE simply reproduces. Used on both ends: `subsystem` classifies what
//! its compiler did, `mux::lane` classifies what a stock distccd or an older
//! hoardcc server reported. Neighbours: `proto::msg` (carries [`Fault`] in
//! `Message::Fault`), `proto::distcc` (wait statuses).

use serde::{Deserialize, Serialize};

/// Longest [`Fault::program`] and [`Fault::detail`] kept (characters).
pub const MAX_FAULT_TEXT: usize = 200;

/// A compiler that did not finish on its own terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// The program that died: the driver (`gcc`) or the sub-program the driver names
    /// (`cc1`, `cc1plus`, `as`).
    pub program: String,
    /// The signal, when known (0: not known, e.g. only its name was printed).
    pub signal: i32,
    /// What the compiler said about it (one line, at most [`MAX_FAULT_TEXT`]), or empty.
    pub detail: String,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.signal, self.detail.is_empty()) {
            (0, true) => write!(f, "{} killed by a signal", self.program),
            (0, false) => write!(f, "{}: {}", self.program, self.detail),
            (n, _) => write!(f, "{} killed by signal {n}", self.program),
        }
    }
}

/// How the compiler process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it.
    Signalled(i32),
}

impl Ended {
    /// From a raw wait status (`W_EXITCODE`-style, as stock distcc's `STAT` carries).
    pub fn from_wait_status(status: i32) -> Ended {
        match status & 0x7f {
            0 => Ended::Exited((status >> 8) & 0xff),
            // 0x7f is "stopped", which a reaped child never is; treat it as a signal.
            0x7f => Ended::Signalled((status >> 8) & 0xff),
            sig => Ended::Signalled(sig),
        }
    }

    /// From a protocol-1 `JobResult::exit_code`, which is 128 + signal for a killed
    /// compiler. (A compiler that exits 129–192 by itself is treated as killed; gcc and
    /// clang never do.)
    pub fn from_v1_exit_code(code: i32) -> Ended {
        if (129..=128 + 64).contains(&code) {
            Ended::Signalled(code - 128)
        } else {
            Ended::Exited(code)
        }
    }
}

/// Phrases a driver prints when one of its programs died (gcc 4–14, clang 3–18), each
/// followed by `(program NAME)` (gcc ≤ 6) or preceded by the signal's name and followed
/// by `terminated program NAME` (gcc ≥ 7).
const TERMINATED: &str = " signal terminated program ";
const CLANG_SIGNAL: &str = "frontend command failed due to signal";
const ICE: &str = "internal compiler error";
/// Memory exhaustion in gcc's allocator: a server limit, not the source's fault.
const OUT_OF_MEMORY: [&str; 2] = ["out of memory allocating ", "virtual memory exhausted"];

/// Classifies a finished compile. `driver` names the program that was run (its base
/// name is used). `None`: the compile ran to its own end (success or the user's error).
pub fn classify(ended: Ended, stderr: &[u8], driver: &str) -> Option<Fault> {
    let driver = driver.rsplit('/').next().unwrap_or(driver);
    match ended {
        Ended::Signalled(sig) => Some(Fault {
            program: clip(driver),
            signal: sig,
            detail: String::new(),
        }),
        Ended::Exited(0) => None,
        Ended::Exited(_) => from_stderr(stderr, driver),
    }
}

/// The fault a failed compile's stderr reports, if any (looked for line by line; the
/// diagnostics of a large failed compile are only scanned up to a bound).
fn from_stderr(stderr: &[u8], driver: &str) -> Option<Fault> {
    const SCAN: usize = 1 << 20;
    let text = String::from_utf8_lossy(&stderr[..stderr.len().min(SCAN)]);
    for line in text.lines() {
        if let Some(at) = line.find(TERMINATED) {
            // "gcc: fatal error: Killed signal terminated program cc1"
            // Its base name: under `-wrapper` gcc names the wrapper's path.
            let program = line[at + TERMINATED.len()..]
                .split_whitespace()
                .next()
                .map_or(driver, |p| p.rsplit('/').next().unwrap_or(p));
            let name = line[..at].rsplit(": ").next().unwrap_or("").trim();
            return Some(fault(program, signal_number(name), line));
        }
        if let Some(at) = line.find("(program ") {
            // gcc ≤ 6: "gcc: internal compiler error: Killed (program cc1)"
            if line.contains(ICE) {
                let program = line[at + "(program ".len()..].trim_end_matches(')').trim();
                let name = line[..at].rsplit(": ").next().unwrap_or("").trim();
                return Some(fault(program, signal_number(name), line));
            }
        }
        if line.contains(CLANG_SIGNAL) {
            return Some(fault(&format!("{driver} -cc1"), 0, line));
        }
        if line.contains(ICE) || OUT_OF_MEMORY.iter().any(|p| line.contains(p)) {
            // "<built-in>: internal compiler error: Segmentation fault", or
            // "cc1: out of memory allocating 65536 bytes after a total of …"
            let program = line.split(':').next().filter(|p| is_program_name(p));
            return Some(fault(program.unwrap_or(driver), 0, line));
        }
    }
    None
}

fn fault(program: &str, signal: i32, line: &str) -> Fault {
    Fault {
        program: clip(program),
        signal,
        detail: clip(line.trim()),
    }
}

/// A plausible program name at the start of a diagnostic (`cc1`, `cc1plus`, `gcc-12`),
/// not a file name (`foo.c`) or `<built-in>`.
fn is_program_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.contains('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_+".contains(&b))
}

/// Keeps printable characters only, at most [`MAX_FAULT_TEXT`] of them.
fn clip(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(MAX_FAULT_TEXT)
        .collect()
}

/// The number of a signal by the name `strsignal` gives it (C locale), or 0.
fn signal_number(name: &str) -> i32 {
    match name {
        "Hangup" => 1,
        "Interrupt" => 2,
        "Quit" => 3,
        "Illegal instruction" => 4,
        "Aborted" => 6,
        "Bus error" => 7,
        "Floating point exception" => 8,
        "Killed" => 9,
        "Segmentation fault" => 11,
        "Terminated" => 15,
        "CPU time limit exceeded" => 24,
        "File size limit exceeded" => 25,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(code: i32, stderr: &str) -> Option<Fault> {
        classify(Ended::Exited(code), stderr.as_bytes(), "/usr/bin/gcc")
    }

    #[test]
    fn a_signal_is_a_fault_of_the_driver() {
        let f = classify(Ended::Signalled(9), b"", "/usr/bin/gcc").unwrap();
        assert_eq!(f.program, "gcc");
        assert_eq!(f.signal, 9);
        assert_eq!(f.to_string(), "gcc killed by signal 9");
    }

    #[test]
    fn wait_statuses_and_v1_exit_codes() {
        assert_eq!(Ended::from_wait_status(0), Ended::Exited(0));
        assert_eq!(Ended::from_wait_status(0x100), Ended::Exited(1));
        assert_eq!(Ended::from_wait_status(9), Ended::Signalled(9));
        assert_eq!(Ended::from_wait_status(11 | 0x80), Ended::Signalled(11));
        assert_eq!(Ended::from_v1_exit_code(137), Ended::Signalled(9));
        assert_eq!(Ended::from_v1_exit_code(1), Ended::Exited(1));
        assert_eq!(Ended::from_v1_exit_code(128), Ended::Exited(128));
        assert_eq!(Ended::from_v1_exit_code(255), Ended::Exited(255));
    }

    #[test]
    fn gcc_reports_a_killed_cc1() {
        // gcc 12, cc1 SIGKILLed (what the OOM killer does).
        let f = exited(
            1,
            "gcc: fatal error: Killed signal terminated program cc1\ncompilation terminated.\n",
        )
        .unwrap();
        assert_eq!((f.program.as_str(), f.signal), ("cc1", 9));
        assert_eq!(f.to_string(), "cc1 killed by signal 9");
        // Another signal: an internal error, exit 4.
        let f = exited(
            4,
            "g++: internal compiler error: Segmentation fault signal terminated program cc1plus\n\
             Please submit a full bug report,\n",
        )
        .unwrap();
        assert_eq!((f.program.as_str(), f.signal), ("cc1plus", 11));
        // gcc ≤ 6.
        let f = exited(4, "gcc: internal compiler error: Killed (program cc1)\n").unwrap();
        assert_eq!((f.program.as_str(), f.signal), ("cc1", 9));
        // An unknown (or translated) signal name still counts, without a number.
        let f = exited(
            1,
            "gcc: fatal error: Killed signal terminated program /opt/w/cc1\n",
        )
        .unwrap();
        assert_eq!(f.program, "cc1");
        let f = exited(1, "gcc: fatal error: Fnord signal terminated program as\n").unwrap();
        assert_eq!((f.program.as_str(), f.signal), ("as", 0));
        assert!(f.to_string().starts_with("as: gcc: fatal error:"), "{f}");
    }

    #[test]
    fn internal_errors_and_memory_exhaustion_are_faults() {
        let f = exited(
            1,
            "<built-in>: internal compiler error: Segmentation fault\n0x7f ???\n",
        )
        .unwrap();
        assert_eq!((f.program.as_str(), f.signal), ("gcc", 0));
        let f = exited(
            1,
            "cc1: out of memory allocating 65536 bytes after a total of 1 bytes\n",
        )
        .unwrap();
        assert_eq!(f.program, "cc1");
        let f = classify(
            Ended::Exited(1),
            b"clang: error: unable to execute command: Killed\n\
              clang: error: clang frontend command failed due to signal (use -v to see invocation)\n",
            "clang",
        )
        .unwrap();
        assert_eq!(f.program, "clang -cc1");
    }

    #[test]
    fn user_errors_are_not_faults() {
        assert_eq!(exited(0, ""), None);
        assert_eq!(
            exited(1, "a.c:1:1: error: unknown type name 'x'\n    1 | x y;\n"),
            None
        );
        // A source line quoting the phrase is the user's text, not a driver's line...
        // but it can only appear after a real error, and a local compile settles it.
        assert_eq!(
            exited(0, "gcc: fatal error: Killed signal terminated program cc1"),
            None
        );
    }

    #[test]
    fn hostile_text_is_clipped_and_stripped() {
        let long = format!(
            "gcc: fatal error: Killed signal terminated program {}\x1b[2J\n",
            "x".repeat(5000)
        );
        let f = exited(1, &long).unwrap();
        assert!(f.program.chars().count() <= MAX_FAULT_TEXT);
        assert!(f.detail.chars().count() <= MAX_FAULT_TEXT);
        assert!(!f.detail.contains('\x1b'));
        let f = exited(
            1,
            "gcc: internal compiler error: \x07\x1b]0;t\x07 (program c\x1bc1)",
        )
        .unwrap();
        assert!(
            !f.program.contains('\x1b') && !f.detail.contains('\x07'),
            "{f:?}"
        );
    }
}
