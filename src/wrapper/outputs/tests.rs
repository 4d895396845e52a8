//! Unit tests of `wrapper::outputs`: checks, atomic and in-place writing, output checks
//! that send a compile to the local compiler, and the terminal sanitizer.

use super::*;
use crate::proto::msg::{Blob, OutputFile};

fn done(outputs: Vec<(&str, &[u8])>) -> JobResult {
    JobResult {
        id: 0,
        exit_code: 0,
        stdout: Blob::empty(),
        stderr: Blob::empty(),
        outputs: outputs
            .into_iter()
            .map(|(n, d)| OutputFile {
                name: n.to_string(),
                data: Blob::raw(d.to_vec()),
            })
            .collect(),
        cached: false,
    }
}

/// A minimal 64-bit little-endian ELF header followed by `tag`.
fn elf(tag: &[u8]) -> Vec<u8> {
    let mut v = b"\x7fELF\x02\x01\x01".to_vec();
    v.resize(64, 0);
    v.extend_from_slice(tag);
    v
}

fn object<'a>(main: &'a str, extra: &'a [String]) -> Wanted<'a> {
    Wanted {
        main,
        extra,
        assemble_only: false,
    }
}

#[test]
fn writes_outputs_into_place_and_leaves_no_temp_files() {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir(t.path().join("obj")).unwrap();
    let (o, d) = (elf(b"OBJ"), elf(b"DWO"));
    write_all(
        t.path(),
        &done(vec![("obj/a.o", &o), ("obj/a.dwo", &d)]),
        object("obj/a.o", &["obj/a.dwo".into()]),
    )
    .unwrap();
    assert_eq!(std::fs::read(t.path().join("obj/a.o")).unwrap(), o);
    assert_eq!(std::fs::read(t.path().join("obj/a.dwo")).unwrap(), d);
    let left: Vec<_> = std::fs::read_dir(t.path().join("obj"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
}

#[test]
fn refuses_names_not_asked_for_and_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let o = elf(b"");
    for evil in ["../evil", "b.o", "/tmp/x.o", "a.o/", ""] {
        let err = write_all(
            t.path(),
            &done(vec![("a.o", &o), (evil, &o)]),
            object("a.o", &[]),
        )
        .unwrap_err();
        assert!(matches!(err, OutputError::Unexpected(_)), "{evil}: {err}");
    }
    assert!(
        !t.path().join("a.o").exists(),
        "nothing is renamed into place on error"
    );
}

#[test]
fn refuses_duplicates() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (elf(b"1"), elf(b"2"));
    let extra = ["a.dwo".to_string()];
    for outs in [
        vec![("a.o", &a), ("a.o", &b)],
        vec![("a.o", &a), ("a.dwo", &a), ("a.dwo", &b)],
    ] {
        let outs = outs.into_iter().map(|(n, d)| (n, &d[..])).collect();
        let err = write_all(t.path(), &done(outs), object("a.o", &extra)).unwrap_err();
        assert!(matches!(err, OutputError::Duplicate(_)), "{err}");
    }
    assert!(std::fs::read_dir(t.path()).unwrap().next().is_none());
}

#[test]
fn objects_must_be_elf_and_assembly_text() {
    let t = tempfile::tempdir().unwrap();
    let truncated = elf(b"")[..40].to_vec();
    let mut bad_class = elf(b"");
    bad_class[4] = 9;
    for bad in [
        &b""[..],
        b"#!/bin/sh\nrm -rf ~\n",
        b"\x7fELX\x02\x01\x01",
        &truncated,
        &bad_class,
        b"MZ\x90\x00",
    ] {
        let err = write_all(t.path(), &done(vec![("a.o", bad)]), object("a.o", &[])).unwrap_err();
        assert!(matches!(err, OutputError::Malformed { .. }), "{err}");
    }
    // clang -flto writes LLVM bitcode.
    for bitcode in [
        &b"BC\xc0\xde\x35\x14\x00\x00"[..],
        b"\xde\xc0\x17\x0b\0\0\0\0",
    ] {
        check(&done(vec![("a.o", bitcode)]), object("a.o", &[])).unwrap();
    }
    let err = check(&done(vec![("a.o", b"BC\xc0\xde")]), object("a.o", &[])).unwrap_err();
    assert!(matches!(err, OutputError::Malformed { .. }), "{err}");
    // The extra outputs (.dwo) are objects too.
    let o = elf(b"");
    let extra = ["a.dwo".to_string()];
    let err = write_all(
        t.path(),
        &done(vec![("a.o", &o), ("a.dwo", b"text")]),
        object("a.o", &extra),
    )
    .unwrap_err();
    assert!(matches!(err, OutputError::Malformed { .. }), "{err}");
    assert!(std::fs::read_dir(t.path()).unwrap().next().is_none());
    // -S: text without NUL.
    let asm = Wanted {
        main: "a.s",
        extra: &[],
        assemble_only: true,
    };
    write_all(t.path(), &done(vec![("a.s", b"\t.file \"a.c\"\n")]), asm).unwrap();
    let err = write_all(t.path(), &done(vec![("a.s", b"\t.text\0\n")]), asm).unwrap_err();
    assert!(matches!(err, OutputError::Malformed { .. }), "{err}");
}

#[test]
fn sizes_are_bounded() {
    // Small bounds for the test; `check` uses MAX_OUTPUT and MAX_OUTPUTS_TOTAL.
    let bounds = (100, 250);
    let mut big = elf(b"");
    big.resize(101, 0);
    let err = check_within(&done(vec![("a.o", &big)]), object("a.o", &[]), bounds).unwrap_err();
    assert!(
        matches!(
            err,
            OutputError::TooLarge {
                len: 101,
                max: 100,
                ..
            }
        ),
        "{err}"
    );
    big.truncate(100);
    check_within(&done(vec![("a.o", &big)]), object("a.o", &[]), bounds).unwrap();
    let extra = ["a.dwo".to_string(), "b.dwo".to_string()];
    let three = done(vec![("a.o", &big), ("a.dwo", &big), ("b.dwo", &big)]);
    let err = check_within(&three, object("a.o", &extra), bounds).unwrap_err();
    assert!(
        matches!(&err, OutputError::TooLarge { name, len: 300, max: 250 } if name == "b.dwo"),
        "{err}"
    );
}

#[test]
fn missing_main_output_is_an_error() {
    let t = tempfile::tempdir().unwrap();
    assert!(matches!(
        write_all(t.path(), &done(vec![]), object("a.o", &[])),
        Err(OutputError::Missing(_))
    ));
}

#[test]
fn existing_output_is_replaced_whole() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("a.o"), b"old old old").unwrap();
    let o = elf(b"new");
    write_all(t.path(), &done(vec![("a.o", &o)]), object("a.o", &[])).unwrap();
    assert_eq!(std::fs::read(t.path().join("a.o")).unwrap(), o);
}

/// A FIFO stays a FIFO: the output is written into it (as the compiler would), not
/// renamed over it.
#[test]
fn a_fifo_output_is_written_in_place() {
    use std::io::Read;
    let t = tempfile::tempdir().unwrap();
    let fifo = t.path().join("a.o");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            std::fs::File::open(fifo)
                .unwrap()
                .read_to_end(&mut got)
                .unwrap();
            got
        })
    };
    let o = elf(b"through the pipe");
    write_all(t.path(), &done(vec![("a.o", &o)]), object("a.o", &[])).unwrap();
    assert_eq!(reader.join().unwrap(), o);
    let m = std::fs::symlink_metadata(&fifo).unwrap();
    assert!(
        std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type()),
        "{m:?}"
    );
    assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
}

/// A regular output reached through a symlink is replaced (GNU as unlinks it too).
/// (`/dev/null` itself is tested in a private mount namespace, tests/dropin.rs.)
#[test]
fn symlinks_are_replaced() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("target.o"), b"old").unwrap();
    std::os::unix::fs::symlink("target.o", t.path().join("a.o")).unwrap();
    let o = elf(b"new");
    write_all(t.path(), &done(vec![("a.o", &o)]), object("a.o", &[])).unwrap();
    assert!(std::fs::symlink_metadata(t.path().join("a.o"))
        .unwrap()
        .is_file());
    assert_eq!(std::fs::read(t.path().join("target.o")).unwrap(), b"old");
}

#[test]
fn outputs_the_compiler_must_handle_itself() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    std::fs::write(d.join("same.c"), b"int x;\n").unwrap();
    std::fs::hard_link(d.join("same.c"), d.join("link.c")).unwrap();
    std::fs::create_dir(d.join("sub")).unwrap();
    let reason = |src: &str, out: &str| local_reason(d, src, [out]);
    assert_eq!(reason("same.c", "a.o"), None);
    assert_eq!(reason("same.c", "sub/a.o"), None);
    assert_eq!(reason("same.c", "/dev/null"), None);
    // gcc accepts `-x c /dev/null -o /dev/null` (kernel flag probes); a server
    // refuses an output named like its source, so such probes stay local.
    assert!(reason("/dev/null", "/dev/null").is_some());
    for (src, out) in [
        ("same.c", "same.c"),
        ("same.c", "./same.c"),
        ("./same.c", "sub/../same.c"),
        ("link.c", "same.c"),
    ] {
        let r = reason(src, out).unwrap_or_else(|| panic!("{src} -o {out}"));
        assert!(r.contains("is the input file"), "{r}");
    }
    let r = reason("same.c", "nodir/a.o").unwrap();
    assert!(r.contains("does not exist"), "{r}");
    let r = reason("same.c", "same.c/a.o").unwrap();
    assert!(r.contains("does not exist"), "{r}");
    let r = reason("same.c", "sub").unwrap();
    assert!(r.contains("is a directory"), "{r}");
    // The main output is not the only one checked.
    assert!(local_reason(d, "same.c", ["a.o", "nodir/a.dwo"]).is_some());
}

#[test]
fn a_failed_compile_keeps_or_removes_the_old_output_by_family() {
    use crate::args::Family;
    let t = tempfile::tempdir().unwrap();
    let p = |n: &str| t.path().join(n);
    std::fs::write(p("old.o"), "old").unwrap();
    after_failure(t.path(), "old.o", Family::Gcc, false);
    assert!(p("old.o").exists(), "gcc -c leaves the old output");
    after_failure(t.path(), "old.o", Family::Gcc, true);
    assert!(!p("old.o").exists(), "gcc -S (or -pipe) removes it");
    std::fs::write(p("old.o"), "old").unwrap();
    after_failure(t.path(), "old.o", Family::Clang, false);
    assert!(!p("old.o").exists(), "clang removes it");
    // A symlink to a regular file: the link goes, its target stays.
    std::fs::write(p("target.o"), "t").unwrap();
    std::os::unix::fs::symlink("target.o", p("link.o")).unwrap();
    after_failure(t.path(), "link.o", Family::Clang, false);
    assert!(std::fs::symlink_metadata(p("link.o")).is_err());
    assert!(p("target.o").exists());
    // Not a regular file (a FIFO stands in for /dev/null), or not there: nothing happens.
    nix::unistd::mkfifo(
        &p("fifo.o"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    after_failure(t.path(), "fifo.o", Family::Clang, false);
    after_failure(t.path(), "fifo.o", Family::Gcc, true);
    assert!(std::fs::symlink_metadata(p("fifo.o")).is_ok());
    after_failure(t.path(), "absent.o", Family::Clang, false);
}

fn clean(s: &[u8]) -> String {
    String::from_utf8_lossy(&sanitize(s)).into_owned()
}

#[test]
fn sgr_colour_and_gcc_links_are_kept() {
    // What gcc 12 prints with -fdiagnostics-color=always -fdiagnostics-urls=always.
    let gcc = "\x1b[01m\x1b[Ka.c:1:5:\x1b[m\x1b[K \x1b[01;35m\x1b[Kwarning: \x1b[m\x1b[Kunused \
               [\x1b[01;35m\x1b[K\x1b]8;;https://gcc.gnu.org/onlinedocs/gcc/Warning-Options.html#index-Wunused-variable\x1b\\-Wunused-variable\x1b]8;;\x1b\\\x1b[m\x1b[K]\n\
               \t| ‘x’ « é » 日本\r\n";
    assert_eq!(clean(gcc.as_bytes()), gcc);
    // The BEL-terminated form and an id parameter.
    let bel = "\x1b]8;id=w1;file:///usr/include/stdio.h\x07stdio.h\x1b]8;;\x07\n";
    assert_eq!(clean(bel.as_bytes()), bel);
    // ISO 8859-1 text from a non-UTF-8 locale.
    assert_eq!(sanitize(b"caf\xe9\n"), b"caf\xe9\n");
}

#[test]
fn other_controls_are_dropped() {
    let cases: &[(&[u8], &str)] = &[
        (b"\x1b]0;title\x07a.c: error\n", "a.c: error\n"),
        (b"\x1b]2;title\x1b\\x\n", "x\n"),
        (b"\x1b[2J\x1b[Hx\x1b[3;1Hy\x1b[?1049h\n", "xy\n"),
        (b"\x1b[6n\x1b[21t\x1b[0c", ""),
        (b"\x1b[2K\x1b[1K", ""),
        (b"\x1bc\x1b7\x1b8\x1b(0\x1b)B\x1b#8\x1bM", ""),
        (
            b"\x1bP+q544e\x1b\\\x1b_apc\x1b\\\x1b^pm\x1b\\\x1bXsos\x1b\\ok",
            "ok",
        ),
        (b"a\rb\x08\x07\x00\x7f\x0b\x0c\x1a\x1c\n", "ab\n"),
        // C1 controls: 8-bit and as UTF-8.
        (b"\x9b2J\x9d0;t\x07\xc2\x9b2J\xc2\x85z\n", "2J0;t2Jz\n"),
        // Colour that is not plain SGR, and overlong parameter strings.
        (b"\x1b[38:2:1:2:3mx\x1b[m", "x\x1b[m"),
    ];
    for (input, want) in cases {
        assert_eq!(clean(input), *want, "{}", input.escape_ascii());
    }
    let long = format!("\x1b[{}m", "1;".repeat(40));
    assert!(!clean(long.as_bytes()).contains('\x1b'));
}

#[test]
fn links_that_are_not_gcc_urls_are_dropped() {
    for bad in [
        &b"\x1b]8;;javascript:alert(1)\x1b\\x"[..],
        b"\x1b]8;;https://a b\x1b\\",
        b"\x1b]8;;https://a\x1b]0;t\x07\x1b\\",
        b"\x1b]8;p=\x1b[2J;https://a\x1b\\",
        b"\x1b]8;;https://a",
    ] {
        let out = sanitize(bad);
        assert!(
            !out.windows(2).any(|w| w == b"\x1b]"),
            "{} -> {}",
            bad.escape_ascii(),
            out.escape_ascii()
        );
    }
    let long = format!("\x1b]8;;https://{}\x1b\\", "a".repeat(MAX_URL));
    assert!(!sanitize(long.as_bytes()).contains(&0x1b));
}

#[test]
fn unterminated_strings_keep_the_text_visible() {
    assert_eq!(clean(b"\x1b]0;no end\nnext\n"), "0;no end\nnext\n");
    assert_eq!(clean(b"x\x1b"), "x");
    assert_eq!(clean(b"\x1b["), "");
    assert_eq!(clean(b"\x1b[12"), "12".get(2..).unwrap());
}

#[test]
fn no_escape_survives_any_input() {
    // Every kept ESC starts an SGR, `ESC [ K` or OSC 8 sequence: feed bytes that
    // mix sequence fragments and check what comes out.
    let pieces: [&[u8]; 12] = [
        b"\x1b",
        b"[",
        b"]",
        b"8;;",
        b"https://x",
        b"\x07",
        b"\\",
        b"m",
        b"2J",
        b"\r",
        b"\xc2",
        b"\x9b",
    ];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..20_000 {
        let mut input = Vec::new();
        for _ in 0..12 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            input.extend_from_slice(pieces[(seed % 12) as usize]);
        }
        let out = sanitize(&input);
        let mut i = 0;
        while i < out.len() {
            match out[i] {
                ESC => {
                    let n = kept_escape(&out[i..]).unwrap_or_else(|| {
                        panic!("{} -> {}", input.escape_ascii(), out.escape_ascii())
                    });
                    i += n;
                }
                b'\r' => {
                    assert_eq!(out.get(i + 1), Some(&b'\n'));
                    i += 1;
                }
                b => {
                    assert!(
                        b >= 0x20 && b != 0x7f && !(0x80..0xa0).contains(&b)
                            || b == b'\n'
                            || b == b'\t'
                            || b == 0xc2,
                        "{b:#x} in {}",
                        out.escape_ascii()
                    );
                    i += 1;
                }
            }
        }
        assert_eq!(sanitize(&out), out, "sanitize is idempotent");
    }
}
