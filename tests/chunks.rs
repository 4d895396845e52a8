//! The chunk path through the real sshd and gcc (issue 10 item 1): the wrapper cuts the
//! directives-only text into content-defined chunks, the mux sends a server only the
//! chunks it is not known to hold, the server rebuilds the text from its per-user store.
//! Objects stay byte-identical to local gcc's, `-g` included; a second build after
//! editing every source sends a fraction of the first's bytes (counted at the proxy, at
//! 50 ms RTT); a store emptied between builds is refilled through `Missing`; a corrupted
//! chunk file is detected, asked for again, and the build is still correct. What the mux
//! sent is also read from `hoardcc status --json` (`hosts[].chunks`).
//!
//! Neighbours: tests/support (the sshd fixture, the proxy); src/proto/chunk (cutting),
//! src/mux/upload.rs and src/mux/lane.rs (the client side), src/subsystem/chunks.rs and
//! src/subsystem/store.rs (the server side).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hoardcc::mux::status::{ChunkCounters, StatusReport};
use tempfile::TempDir;

use crate::support::{hoardcc_bin, run_with_timeout, wait_until, Proxy, Sshd, SshdOptions};

const T: Duration = Duration::from_secs(180);

/// Translation units per build: several, sharing libc headers and one user header.
pub(crate) const UNITS: usize = 6;

/// A project of [`UNITS`] C sources and one header, built in place.
pub(crate) struct Work {
    dir: TempDir,
}

/// A second user header (through `common.h`): with two, the mux lists them in a context
/// manifest. `-DWARN_EXTRA -Wall` makes gcc warn at a line of it.
const EXTRA: &str = "#ifndef EXTRA_H\n#define EXTRA_H\n#ifdef WARN_EXTRA\n\
    static int unused_extra(void) { return 1; }\n#endif\n#endif\n";

const HEADER: &str =
    "#ifndef COMMON_H\n#define COMMON_H\n#include <stddef.h>\n#include \"extra.h\"\n\
    #define SQ(x) ((x) * (x))\nstruct pair { long key; double value; };\n\
    static inline long mix(long a, long b) { return a * 31 + b; }\n#endif\n";

impl Work {
    pub(crate) fn new() -> Work {
        let dir = tempfile::Builder::new()
            .prefix("hoardcc-chunks-")
            .tempdir()
            .expect("work dir");
        std::fs::write(dir.path().join("common.h"), HEADER).unwrap();
        std::fs::write(dir.path().join("extra.h"), EXTRA).unwrap();
        let w = Work { dir };
        for i in 0..UNITS {
            w.write_unit(i, 0);
        }
        w
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    fn source(i: usize) -> String {
        format!("u{i}.c")
    }

    fn object(i: usize) -> String {
        format!("u{i}.o")
    }

    /// Unit `i` at edit `edit`: the same includes, a body that differs per unit and per
    /// edit (one line more each time).
    fn write_unit(&self, i: usize, edit: usize) {
        let mut text = format!(
            "#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n#include \"common.h\"\n\n\
             static int cmp{i}(const void *a, const void *b)\n{{\n    const struct pair *x = a, *y = b;\n    \
             return (x->key > y->key) - (x->key < y->key);\n}}\n\n\
             long sum{i}(struct pair *p, size_t n)\n{{\n    long s = {i};\n    qsort(p, n, sizeof *p, cmp{i});\n    \
             for (size_t k = 0; k < n; k++)\n        s = mix(s, SQ(p[k].key));\n    \
             printf(\"%ld\\n\", s);\n    return s + (long)strlen(\"u{i}\");\n}}\n"
        );
        for e in 0..edit {
            text.push_str(&format!("int edit{i}_{e}(int x) {{ return x + {e}; }}\n"));
        }
        std::fs::write(self.path().join(Self::source(i)), text).unwrap();
    }

    pub(crate) fn edit_every_unit(&self, edit: usize) {
        for i in 0..UNITS {
            self.write_unit(i, edit);
        }
    }

    /// Local gcc's object of every unit with `flags` (built in place, then set aside).
    pub(crate) fn local_objects(&self, flags: &[&str]) -> Vec<Vec<u8>> {
        (0..UNITS)
            .map(|i| {
                let (src, obj) = (Self::source(i), Self::object(i));
                let out = run_with_timeout(
                    Command::new("gcc")
                        .current_dir(self.path())
                        .args(flags)
                        .args(["-c", &src, "-o", &obj]),
                    T,
                    "local gcc",
                );
                assert!(out.status.success(), "local gcc: {out:?}");
                let data = std::fs::read(self.path().join(&obj)).unwrap();
                std::fs::remove_file(self.path().join(&obj)).unwrap();
                data
            })
            .collect()
    }
}

/// A client of the fixture, building [`Work`] through the mux on `hosts`.
pub(crate) struct Client<'a> {
    pub(crate) sshd: &'a Sshd,
    pub(crate) hosts: String,
}

impl Client<'_> {
    pub(crate) fn hoardcc(&self, dir: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(hoardcc_bin());
        self.sshd.apply_env(&mut cmd);
        cmd.current_dir(dir)
            .env("HOARDCC_HOSTS", &self.hosts)
            .env("HOARDCC_IDLE_TIMEOUT", "120")
            .env("HOARDCC_FALLBACK", "0")
            .args(args);
        cmd
    }

    /// Every unit through hoardcc, one after another; returns the objects. With
    /// fallback off a job that is not distributed fails the test.
    pub(crate) fn build(&self, w: &Work, flags: &[&str]) -> Vec<Vec<u8>> {
        let log = w.path().join("joblog");
        let _ = std::fs::remove_file(&log);
        let objects = (0..UNITS)
            .map(|i| {
                let (src, obj) = (Work::source(i), Work::object(i));
                let mut args = vec!["gcc"];
                args.extend_from_slice(flags);
                args.extend(["-c", &src, "-o", &obj]);
                let mut cmd = self.hoardcc(w.path(), &args);
                cmd.env("HOARDCC_JOBLOG", &log);
                let out = run_with_timeout(&mut cmd, T, "hoardcc gcc");
                assert!(
                    out.status.success() && out.stderr.is_empty(),
                    "hoardcc gcc {src}: {out:?}"
                );
                let data = std::fs::read(w.path().join(&obj)).unwrap();
                std::fs::remove_file(w.path().join(&obj)).unwrap();
                data
            })
            .collect();
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        assert_eq!(log.lines().count(), UNITS, "job log: {log}");
        assert!(
            log.lines().all(|l| l.starts_with("remote\t")),
            "job log: {log}"
        );
        objects
    }

    /// The one host's upload counters, from `hoardcc status --json`.
    pub(crate) fn counters(&self) -> ChunkCounters {
        self.status().hosts[0].chunks
    }

    fn status(&self) -> StatusReport {
        let dir = std::env::temp_dir();
        let out = run_with_timeout(&mut self.hoardcc(&dir, &["status", "--json"]), T, "status");
        assert!(out.status.success(), "hoardcc status: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let report =
            StatusReport::from_json(&text).unwrap_or_else(|e| panic!("status --json: {e}\n{text}"));
        assert_eq!(report.hosts.len(), 1, "{text}");
        report
    }

    /// Ends the server's sessions ([`Client::await_sessions_ended`]), then deletes every
    /// chunk file of its store, which must hold some.
    pub(crate) fn empty_the_store(&self) {
        let stored = stored_chunks(self.sshd);
        assert!(!stored.is_empty());
        self.await_sessions_ended();
        for f in &stored {
            std::fs::remove_file(f).unwrap();
        }
        assert!(stored_chunks(self.sshd).is_empty());
    }

    /// Waits until the server has ended every lane of the mux (an sshd started with
    /// [`short_sessions`]): the next build runs in new sessions, which know only the
    /// shared store (a session keeps the chunks it used at hand), while the mux still
    /// believes the host holds what it sent.
    pub(crate) fn await_sessions_ended(&self) {
        wait_until(T, "the server to end the idle lanes", || {
            self.status().hosts[0].lanes == 0
        });
    }
}

/// Server options whose sessions end after a second without a job
/// ([`Client::await_sessions_ended`]).
pub(crate) fn short_sessions() -> SshdOptions {
    SshdOptions {
        server_toml: Some("[server]\nidle_timeout_secs = 1\n".into()),
        ..SshdOptions::default()
    }
}

impl Client<'_> {}

impl Drop for Client<'_> {
    fn drop(&mut self) {
        let dir = std::env::temp_dir();
        let _ = run_with_timeout(&mut self.hoardcc(&dir, &["mux", "--stop"]), T, "mux --stop");
    }
}

/// The chunk files in the server's store.
pub(crate) fn stored_chunks(sshd: &Sshd) -> Vec<PathBuf> {
    let dir = sshd.server_cache_dir().join("chunks");
    let Ok(fans) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = fans
        .flatten()
        .filter_map(|f| std::fs::read_dir(f.path()).ok())
        .flat_map(|d| d.flatten().map(|e| e.path()))
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    files
}

/// Whether a chunk file holds the bytes its name (the hex blake3) promises.
pub(crate) fn intact(path: &Path) -> bool {
    let data = std::fs::read(path).unwrap();
    blake3::hash(&data).to_hex().as_str() == path.file_name().unwrap().to_string_lossy()
}

pub(crate) fn same_objects(remote: &[Vec<u8>], local: &[Vec<u8>], what: &str) {
    for (i, (r, l)) in remote.iter().zip(local).enumerate() {
        assert!(
            r == l,
            "{what}: u{i}.o differs from local gcc's ({} vs {} bytes)",
            r.len(),
            l.len()
        );
    }
}

/// A warning at a line of a header the context manifest lists reads exactly as local
/// gcc's (the server quoted the header's text), and the object is the same.
#[test]
fn a_warning_in_a_listed_header_reads_as_local() {
    let sshd = Sshd::start(SshdOptions::default());
    let client = Client {
        sshd: &sshd,
        hosts: format!("@{}/2", sshd.alias()),
    };
    let w = Work::new();
    let args = [
        "-O2",
        "-g",
        "-Wall",
        "-DWARN_EXTRA",
        "-c",
        "u0.c",
        "-o",
        "u0.o",
    ];
    let local = run_with_timeout(
        Command::new("gcc").current_dir(w.path()).args(args),
        T,
        "local gcc",
    );
    assert!(local.status.success(), "{local:?}");
    let want = String::from_utf8_lossy(&local.stderr).into_owned();
    assert!(want.contains("extra.h:4"), "a warning in extra.h: {want}");
    let object = std::fs::read(w.path().join("u0.o")).unwrap();
    std::fs::remove_file(w.path().join("u0.o")).unwrap();
    let mut gcc = vec!["gcc"];
    gcc.extend(args);
    let log = w.path().join("joblog");
    let mut cmd = client.hoardcc(w.path(), &gcc);
    cmd.env("HOARDCC_JOBLOG", &log);
    let out = run_with_timeout(&mut cmd, T, "hoardcc gcc");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), want);
    assert!(std::fs::read(w.path().join("u0.o")).unwrap() == object);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.starts_with("remote\t"), "job log: {log}");
}

/// At 50 ms RTT through the proxy: identical `-g` objects through the chunk path, and a
/// rebuild after editing every source sends a small fraction of the first build's bytes.
#[test]
fn a_rebuild_after_editing_every_source_sends_a_fraction_of_the_bytes() {
    let sshd = Sshd::start(SshdOptions::default());
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], sshd.port())));
    proxy.set_delay(Duration::from_millis(25));
    let alias = proxy.alias_for(&sshd);
    let client = Client {
        sshd: &sshd,
        hosts: format!("@{alias}/2"),
    };
    let w = Work::new();
    let flags = ["-O2", "-g"];

    let local = w.local_objects(&flags);
    let up0 = proxy.bytes_up();
    let first = client.build(&w, &flags);
    let cold = proxy.bytes_up() - up0;
    same_objects(&first, &local, "first build");
    let c1 = client.counters();
    assert_eq!(c1.chunked_jobs, UNITS as u64, "{c1:?}");
    assert!(c1.chunks_sent > 0 && c1.chunks_known > 0, "{c1:?}");
    assert!(
        !stored_chunks(&sshd).is_empty(),
        "the server stored the chunks"
    );

    w.edit_every_unit(1);
    let local = w.local_objects(&flags);
    let up1 = proxy.bytes_up();
    let second = client.build(&w, &flags);
    let warm = proxy.bytes_up() - up1;
    same_objects(&second, &local, "rebuild");
    let c2 = client.counters();
    eprintln!(
        "{UNITS} units: first build sent {cold} bytes up, the rebuild {warm} ({:.1}%); \
         mux counted {} then {} bytes, {} then {} chunks",
        100.0 * warm as f64 / cold as f64,
        c1.bytes_sent,
        c2.bytes_sent - c1.bytes_sent,
        c1.chunks_sent,
        c2.chunks_sent - c1.chunks_sent
    );
    assert_eq!(
        c2.chunks_missing, 0,
        "the mux knew what the host holds: {c2:?}"
    );
    assert!(
        warm * 4 < cold,
        "the rebuild sent {warm} bytes, the first build {cold}"
    );
}

/// The server's store loses every chunk between two builds: the mux, which believes the
/// host holds them, sends none; the server answers `Missing`, gets them, stores them
/// again, and the objects are right.
#[test]
fn a_store_emptied_between_builds_is_refilled_through_missing() {
    let sshd = Sshd::start(short_sessions());
    let client = Client {
        sshd: &sshd,
        hosts: "@hoardtest/2".into(),
    };
    let w = Work::new();
    let flags = ["-O1", "-g"];
    let local = w.local_objects(&flags);
    same_objects(&client.build(&w, &flags), &local, "first build");
    let before = client.counters();
    assert_eq!(before.chunks_missing, 0, "{before:?}");
    client.empty_the_store();

    same_objects(
        &client.build(&w, &flags),
        &local,
        "build on an emptied store",
    );
    let after = client.counters();
    assert!(
        after.chunks_missing > 0,
        "the server asked for the chunks: {after:?}"
    );
    assert!(
        after.chunks_sent > before.chunks_sent,
        "and they were sent: {before:?} → {after:?}"
    );
    let refilled = stored_chunks(&sshd);
    assert!(!refilled.is_empty(), "the store is refilled");
    assert!(refilled.iter().all(|f| intact(f)));
}

/// Every chunk file on the server is corrupted (same length, one byte flipped): each is
/// detected when read, deleted, asked for again, and the objects are right.
#[test]
fn a_corrupted_chunk_is_detected_and_sent_again() {
    let sshd = Sshd::start(short_sessions());
    let client = Client {
        sshd: &sshd,
        hosts: "@hoardtest/2".into(),
    };
    let w = Work::new();
    let flags = ["-O2", "-g"];
    let local = w.local_objects(&flags);
    same_objects(&client.build(&w, &flags), &local, "first build");
    let stored = stored_chunks(&sshd);
    assert!(!stored.is_empty());
    client.await_sessions_ended();
    for f in &stored {
        let mut data = std::fs::read(f).unwrap();
        let mid = data.len() / 2;
        data[mid] ^= 0x20;
        std::fs::write(f, data).unwrap();
        assert!(!intact(f));
    }

    same_objects(
        &client.build(&w, &flags),
        &local,
        "build on a corrupted store",
    );
    let c = client.counters();
    assert!(
        c.chunks_missing > 0,
        "the corrupt chunks were asked for again: {c:?}"
    );
    let now = stored_chunks(&sshd);
    assert!(
        !now.is_empty() && now.iter().all(|f| intact(f)),
        "corrupt files replaced"
    );
}
