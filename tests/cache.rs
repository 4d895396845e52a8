//! The server's result cache through the real sshd and gcc (issue 10 item 2): after
//! `make clean`, a rebuild is answered from the cache with identical objects and
//! identical diagnostics, logged as `remote-cached` and counted apart in `hoardcc
//! status`; `HOARDCC_CACHE=0` on the client and `cache = false` on the server each give
//! no hit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::{hoardcc_bin, run_with_timeout, Sshd, SshdOptions};

const T: Duration = Duration::from_secs(180);

/// Three translation units sharing a header; two of them warn under `-Wall`.
const FILES: [(&str, &str); 5] = [
    (
        "shapes.h",
        "#ifndef SHAPES_H\n#define SHAPES_H\n#define SQ(x) ((x) * (x))\n\
         static inline int area(int w, int h) { return w * h; }\nint perimeter(int, int);\n\
         int squares(int);\n#endif\n",
    ),
    (
        "main.c",
        "#include <stdio.h>\n#include \"shapes.h\"\n\nint main(void)\n{\n    int unused_here;\n    \
         printf(\"%d %d %d\\n\", area(2, 3), perimeter(2, 3), squares(4));\n    return 0;\n}\n",
    ),
    (
        "perimeter.c",
        "#include \"shapes.h\"\n\nint perimeter(int w, int h)\n{\n    return 2 * (w + h);\n}\n",
    ),
    (
        "squares.c",
        "#include \"shapes.h\"\n\nint squares(int n)\n{\n    int s = 0, i;\n    \
         for (i = 1; i <= n; i++)\n        s += SQ(i);\n    if (s = 30)\n        return s;\n    \
         return s;\n}\n",
    ),
    (
        "Makefile",
        "OBJS = main.o perimeter.o squares.o\n\
         all: prog\n\
         prog: $(OBJS)\n\t$(LD_CC) $(OBJS) -o prog\n\
         %.o: %.c shapes.h\n\t$(CC) -O2 -g -Wall -c $< -o $@\n\
         clean:\n\trm -f $(OBJS) prog\n",
    ),
];
const OBJECTS: [&str; 3] = ["main.o", "perimeter.o", "squares.o"];

/// A project directory and the fixture it builds against.
struct Build<'a> {
    sshd: &'a Sshd,
    dir: tempfile::TempDir,
}

impl<'a> Build<'a> {
    fn new(sshd: &'a Sshd) -> Build<'a> {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in FILES {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        Build { sshd, dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn joblog(&self) -> PathBuf {
        self.path().join("joblog")
    }

    fn hoardcc(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(hoardcc_bin());
        self.sshd.apply_env(&mut cmd);
        cmd.current_dir(self.path())
            .env("HOARDCC_HOSTS", "@hoardtest/2")
            .env("HOARDCC_IDLE_TIMEOUT", "60")
            .args(args);
        cmd
    }

    /// `make -s` (one job at a time, so stderr comes in a fixed order) with
    /// `CC="hoardcc gcc"`; `cache_off` sets `HOARDCC_CACHE=0`. Returns make's output.
    fn make(&self, target: &str, cache_off: bool) -> Output {
        let mut cmd = Command::new("make");
        self.sshd.apply_env(&mut cmd);
        if !cache_off {
            cmd.env_remove("HOARDCC_CACHE");
        }
        cmd.current_dir(self.path())
            .args(["-s", target])
            .arg(format!("CC={} gcc", hoardcc_bin().display()))
            .arg("LD_CC=gcc")
            .env("HOARDCC_HOSTS", "@hoardtest/2")
            .env("HOARDCC_IDLE_TIMEOUT", "60")
            .env("HOARDCC_FALLBACK", "0")
            .env("HOARDCC_JOBLOG", self.joblog());
        if cache_off {
            cmd.env("HOARDCC_CACHE", "0");
        }
        let out = run_with_timeout(&mut cmd, T, "make");
        assert!(
            out.status.success(),
            "make {target} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn objects(&self) -> Vec<Vec<u8>> {
        OBJECTS
            .iter()
            .map(|o| std::fs::read(self.path().join(o)).unwrap_or_else(|e| panic!("{o}: {e}")))
            .collect()
    }

    /// The job log's first column for each compile, then the log is emptied.
    fn take_kinds(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.joblog()).unwrap_or_default();
        let _ = std::fs::remove_file(self.joblog());
        text.lines()
            .map(|l| l.split('\t').next().unwrap_or("").to_string())
            .collect()
    }

    /// `hoardcc status --json`, as JSON.
    fn status(&self) -> serde_json::Value {
        let out = run_with_timeout(&mut self.hoardcc(&["status", "--json"]), T, "status");
        assert!(out.status.success(), "hoardcc status: {out:?}");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "status --json: {e}: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Result entries in the server's store.
    fn stored_results(&self) -> usize {
        let dir = self.sshd.server_cache_dir().join("results");
        let Ok(fans) = std::fs::read_dir(dir) else {
            return 0;
        };
        fans.flatten()
            .map(|f| std::fs::read_dir(f.path()).map_or(0, |d| d.count()))
            .sum()
    }
}

impl Drop for Build<'_> {
    fn drop(&mut self) {
        let _ = run_with_timeout(&mut self.hoardcc(&["mux", "--stop"]), T, "mux --stop");
    }
}

fn cache_fixture(server_toml: Option<&str>) -> Sshd {
    Sshd::start(SshdOptions {
        result_cache: true,
        server_toml: server_toml.map(str::to_string),
        ..SshdOptions::default()
    })
}

#[test]
fn a_rebuild_after_make_clean_is_served_from_the_cache() {
    let sshd = cache_fixture(None);
    let b = Build::new(&sshd);
    let first = b.make("all", false);
    assert_eq!(b.take_kinds(), ["remote"; 3], "the first build compiles");
    let objects = b.objects();
    let diagnostics = String::from_utf8(first.stderr.clone()).unwrap();
    assert!(
        diagnostics.contains("unused variable")
            && diagnostics.contains("unused_here")
            && diagnostics.contains("suggest parentheses"),
        "the warnings: {diagnostics}"
    );
    assert_eq!(b.stored_results(), 3, "three clean compiles stored");

    b.make("clean", false);
    assert!(!b.path().join("main.o").exists());
    let second = b.make("all", false);
    assert_eq!(b.take_kinds(), ["remote-cached"; 3], "the rebuild hits");
    assert!(
        b.objects() == objects,
        "objects identical to the compiled ones"
    );
    assert_eq!(
        String::from_utf8_lossy(&second.stderr),
        diagnostics,
        "identical diagnostics"
    );
    assert_eq!(second.stdout, first.stdout);
    let run = run_with_timeout(&mut Command::new(b.path().join("prog")), T, "prog");
    assert_eq!(String::from_utf8_lossy(&run.stdout), "6 10 30\n");

    // Counted apart from compiles in `hoardcc status`.
    let status = b.status();
    let host = &status["hosts"][0];
    assert_eq!(host["jobs_ok"], 3, "{status:#}");
    assert_eq!(host["cache_hits"], 3, "{status:#}");

    // An edit misses (and is compiled); the untouched units still hit.
    let squares = std::fs::read_to_string(b.path().join("squares.c")).unwrap();
    std::fs::write(
        b.path().join("squares.c"),
        squares.replace("s = 0", "s = 0 "),
    )
    .unwrap();
    b.make("clean", false);
    b.make("all", false);
    let mut kinds = b.take_kinds();
    kinds.sort();
    assert_eq!(kinds, ["remote", "remote-cached", "remote-cached"]);
}

#[test]
fn hoardcc_cache_0_on_the_client_gives_no_hit() {
    let sshd = cache_fixture(None);
    let b = Build::new(&sshd);
    b.make("all", false);
    assert_eq!(b.take_kinds(), ["remote"; 3]);
    let objects = b.objects();
    b.make("clean", false);
    b.make("all", true);
    assert_eq!(
        b.take_kinds(),
        ["remote"; 3],
        "HOARDCC_CACHE=0: compiled again"
    );
    assert!(b.objects() == objects);
    // And the cache is still there for a client that wants it.
    b.make("clean", false);
    b.make("all", false);
    assert_eq!(b.take_kinds(), ["remote-cached"; 3]);
}

#[test]
fn cache_false_on_the_server_gives_no_hit() {
    let sshd = cache_fixture(Some("[server]\ncache = false\n"));
    let b = Build::new(&sshd);
    b.make("all", false);
    assert_eq!(b.take_kinds(), ["remote"; 3]);
    b.make("clean", false);
    b.make("all", false);
    assert_eq!(
        b.take_kinds(),
        ["remote"; 3],
        "cache = false: compiled again"
    );
    assert_eq!(b.stored_results(), 0, "nothing stored");
}

#[test]
fn the_direct_path_gets_hits_too() {
    let sshd = cache_fixture(None);
    let b = Build::new(&sshd);
    let compile = || {
        let mut cmd = b.hoardcc(&["gcc", "-O2", "-Wall", "-c", "main.c", "-o", "main.o"]);
        cmd.env_remove("HOARDCC_CACHE")
            .env("HOARDCC_MUX", "0")
            .env("HOARDCC_FALLBACK", "0")
            .env("HOARDCC_JOBLOG", b.joblog());
        let out = run_with_timeout(&mut cmd, T, "hoardcc gcc (direct)");
        assert!(out.status.success(), "{out:?}");
        (out, std::fs::read(b.path().join("main.o")).unwrap())
    };
    let (first, object) = compile();
    std::fs::remove_file(b.path().join("main.o")).unwrap();
    let (second, again) = compile();
    assert_eq!(b.take_kinds(), ["remote", "remote-cached"]);
    assert!(again == object);
    assert_eq!(second.stderr, first.stderr);
    assert!(String::from_utf8_lossy(&first.stderr).contains("unused_here"));
}

#[test]
fn a_corrupted_result_entry_is_compiled_again_not_replayed() {
    let sshd = cache_fixture(None);
    let b = Build::new(&sshd);
    b.make("all", false);
    let objects = b.objects();
    assert_eq!(b.stored_results(), 3);
    // Flip one byte in the middle of every stored result.
    let results = sshd.server_cache_dir().join("results");
    for fan in std::fs::read_dir(&results).unwrap().flatten() {
        for entry in std::fs::read_dir(fan.path()).unwrap().flatten() {
            let mut bytes = std::fs::read(entry.path()).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x20;
            std::fs::write(entry.path(), bytes).unwrap();
        }
    }
    b.take_kinds();
    b.make("clean", false);
    b.make("all", false);
    assert_eq!(b.take_kinds(), ["remote"; 3], "corrupt entries are misses");
    assert!(b.objects() == objects);
    // Compiled again, so stored whole again.
    b.make("clean", false);
    b.make("all", false);
    assert_eq!(b.take_kinds(), ["remote-cached"; 3]);
    assert!(b.objects() == objects);
}
