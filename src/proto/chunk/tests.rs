use std::collections::HashSet;
use std::process::Command;

use proptest::prelude::*;

use super::markers::{normalise, restore, TAG};
use super::*;

fn roundtrip(text: &[u8]) -> (Vec<u8>, Markers) {
    let (n, m) = normalise(text);
    assert_eq!(
        restore(&n, &m),
        text,
        "restore(normalise(t)) != t for {:?}",
        String::from_utf8_lossy(text)
    );
    (n, m)
}

#[test]
fn main_source_and_cwd_markers_are_normalised() {
    let text = b"# 0 \"src/unit000.c\"\n# 1 \"/abs/cwd//\"\n# 1 \"src/unit000.c\"\n\
        # 1 \"inc/h.h\" 1\nint h;\n# 12 \"src/unit000.c\" 2\nint x; // src/unit000.c\n";
    let (n, m) = roundtrip(text);
    assert_eq!(m.main.as_deref(), Some(&b"src/unit000.c"[..]));
    assert_eq!(m.cwd.as_deref(), Some(&b"/abs/cwd//"[..]));
    let n = String::from_utf8(n).unwrap();
    assert_eq!(
        n,
        "# 0 \"<hoardcc>m\"\n# 1 \"<hoardcc>d\"\n# 0 \"<hoardcc>m\"\n# 1 \"inc/h.h\" 1\nint h;\n\
         # 0 \"<hoardcc>m\" 2\nint x; // src/unit000.c\n",
        "only marker names change (the main source's and the cwd's), and the main source's numbers"
    );
    assert_eq!(m.lines, [0, 1, 12]);
    // A main-source marker whose number would not print back the same keeps its name.
    let (n, m) = roundtrip(b"# 0 \"a.c\"\n# 012 \"a.c\" 2\n# 99999999999 \"a.c\"\n# 7 \"a.c\"\n");
    assert_eq!(
        n,
        b"# 0 \"<hoardcc>m\"\n# 012 \"a.c\" 2\n# 99999999999 \"a.c\"\n# 0 \"<hoardcc>m\"\n"
    );
    assert_eq!(m.lines, [0, 7]);
    // A peer's list that runs short leaves the rest at 0 (the server compiles that text;
    // it cannot be wrong for anyone else).
    let short = Markers {
        lines: vec![5],
        ..m.clone()
    };
    assert_eq!(
        restore(&n, &short),
        b"# 5 \"a.c\"\n# 012 \"a.c\" 2\n# 99999999999 \"a.c\"\n# 0 \"a.c\"\n"
    );
}

/// Units that include the same headers at other lines cut into the same chunks: the
/// one-line return to the main source between two includes, which runs on into the next
/// header's first chunk, carries no line number.
#[test]
fn the_main_source_line_numbers_do_not_reach_the_chunks() {
    let unit = |at: usize| {
        let mut t = b"# 0 \"src/u.c\"\n# 1 \"src/u.c\"\n".to_vec();
        for (h, line) in [("a", at), ("b", at + 1)] {
            t.extend(format!("# 1 \"/usr/include/{h}.h\" 1 3 4\n").into_bytes());
            t.extend((0..3000).flat_map(|i| format!("extern int {h}_{i};\n").into_bytes()));
            t.extend(format!("# {line} \"src/u.c\" 2\n").into_bytes());
        }
        t.extend(b"int main(void) { return 0; }\n");
        t
    };
    let (a, b) = (Cut::normalised(&unit(3)), Cut::normalised(&unit(40)));
    assert_eq!(a.recipe.chunks, b.recipe.chunks);
    assert_eq!(a.bytes, b.bytes);
    assert_ne!(a.recipe.markers, b.recipe.markers);
}

#[test]
fn two_units_read_the_same_once_normalised() {
    let unit = |name: &str| {
        format!(
            "# 0 \"{name}\"\n# 1 \"/p//\"\n# 1 \"{name}\"\n# 1 \"/usr/include/stdio.h\" 1 3 4\n\
             int printf(const char *, ...);\n# 2 \"{name}\" 2\nint main(void) {{ return 0; }}\n"
        )
        .into_bytes()
    };
    let (a, ma) = roundtrip(&unit("src/a.c"));
    let (b, mb) = roundtrip(&unit("src/bb.c"));
    assert_eq!(a, b);
    assert_ne!(ma, mb);
    assert_eq!(restore(&a, &mb), unit("src/bb.c"));
}

#[test]
fn clang_rewrite_includes_markers() {
    let text = b"# 1 \"src/a.c\"\n#if 0 /* expanded by -frewrite-includes */\n#include <stdio.h>\n\
        #endif /* expanded by -frewrite-includes */\n# 1 \"src/a.c\"\n# 1 \"/usr/include/stdio.h\" 1 3 4\n\
        int x;\n# 2 \"src/a.c\" 2\n";
    let (n, m) = roundtrip(text);
    assert_eq!(m.main.as_deref(), Some(&b"src/a.c"[..]));
    assert_eq!(m.cwd, None);
    assert!(!n.windows(7).any(|w| w == b"src/a.c"));
}

#[test]
fn names_that_already_hold_the_tag_are_escaped() {
    let text = b"# 0 \"a.c\"\n# 3 \"<hoardcc>m\" 2\n# 4 \"<hoardcc>e<hoardcc>d\"\n# 5 \"<hoardcc>\"\n# 6 \"<hoardcc>x\" 1\n";
    let (n, _) = roundtrip(text);
    let n = String::from_utf8(n).unwrap();
    assert!(n.contains("# 3 \"<hoardcc>e<hoardcc>m\" 2\n"), "{n}");
    assert!(n.contains("# 5 \"<hoardcc>e<hoardcc>\"\n"), "{n}");
    // A main source whose own name starts with the tag.
    roundtrip(b"# 0 \"<hoardcc>m\"\n# 1 \"<hoardcc>d\"\n# 1 \"<hoardcc>m\"\n");
    roundtrip(b"# 0 \"<hoardcc>e<hoardcc>m\"\n# 1 \"<hoardcc>m\"\n");
}

#[test]
fn odd_lines_are_left_alone() {
    for text in [
        &b""[..],
        b"\n\n",
        b"# 1 \"a.c\"",
        b"# 1 \"a.c\" 2\r\n# 2 \"a.c\"\r\n",
        b"#  1 \"a.c\"\n# x \"a.c\"\n#1 \"a.c\"\n# 1 a.c\n# 1 \"\n",
        b"# 1 \"//\"\n# 2 \"\"\n# 3 \"a\\\"b.c\"\n",
        b"# 0 \"a\\\"q.c\"\n# 1 \"a\\\"q.c\" 2\n",
        b"int x;\n# 1 \"a.c\"\n",
    ] {
        roundtrip(text);
    }
    // A quote inside the main name (escaped by gcc as \") is part of the name.
    let (n, m) = roundtrip(b"# 0 \"a\\\"q.c\"\n# 1 \"a\\\"q.c\" 2\n");
    assert_eq!(m.main.as_deref(), Some(&b"a\\\"q.c"[..]));
    assert_eq!(n, b"# 0 \"<hoardcc>m\"\n# 0 \"<hoardcc>m\" 2\n");
}

#[test]
fn chunks_end_where_the_main_source_includes_and_resumes() {
    let header = |name: &str, n: usize| {
        let mut t = format!("# 1 \"{name}\" 1 3 4\n").into_bytes();
        t.extend(
            (0..n)
                .flat_map(|i| format!("extern int {name}_{i};\n").into_bytes())
                .map(|b| if b == b'/' { b'_' } else { b }),
        );
        t
    };
    let unit = |body: &str| {
        let mut t = b"# 0 \"src/u.c\"\n# 1 \"src/u.c\"\n".to_vec();
        t.extend(header("/usr/include/a.h", 3000));
        t.extend(b"# 2 \"src/u.c\" 2\n");
        t.extend(header("/usr/include/b.h", 3000));
        t.extend(b"# 3 \"src/u.c\" 2\n");
        t.extend(body.as_bytes());
        t
    };
    let a = Cut::normalised(&unit("int main(void) { return 0; }\n"));
    let (n, _) = normalise(&unit("int main(void) { return 0; }\n"));
    let at = markers::include_boundaries(&n);
    let starts: Vec<&[u8]> = at.iter().map(|&i| &n[i..i + 13]).collect();
    assert_eq!(
        starts,
        [
            &b"# 1 \"/usr/inc"[..],
            b"# 0 \"<hoardcc",
            b"# 1 \"/usr/inc",
            b"# 0 \"<hoardcc"
        ],
        "into each header and back"
    );
    // A boundary is a chunk end unless the piece before it is short (the prefix, and the
    // one-line return between the two includes), which runs on.
    let mut ends = Vec::new();
    let mut pos = 0;
    for c in &a.recipe.chunks {
        pos += c.len as usize;
        ends.push(pos);
    }
    assert!(
        ends.contains(&at[1]) && ends.contains(&at[3]),
        "{at:?} in {ends:?}"
    );
    assert!(
        !ends.contains(&at[0]) && !ends.contains(&at[2]),
        "{at:?} in {ends:?}"
    );
    // An edit of the main source's body changes its last chunk only.
    let b = Cut::normalised(&unit("int main(void) { return 1; }\n"));
    let old: HashSet<_> = a.recipe.chunks.iter().map(|c| c.id).collect();
    let new: Vec<_> = b.chunks().filter(|(c, _)| !old.contains(&c.id)).collect();
    assert_eq!(new.len(), 1);
    assert!(new[0].1.len() < 100, "{} bytes", new[0].1.len());
    // A piece shorter than MIN_CHUNK runs on to the next boundary.
    let refs = cut_at(&[7u8; 10_000], &[100, 5000]);
    assert_eq!(refs.iter().map(|c| c.len).sum::<u32>(), 10_000);
    assert_eq!(refs[0].len, 5000);
}

/// Lines that are likely to matter: markers naming the main source, the cwd, tagged
/// names, quotes; and arbitrary bytes.
fn line() -> impl Strategy<Value = Vec<u8>> {
    let name = prop_oneof![
        Just(b"src/a.c".to_vec()),
        Just(b"/w//".to_vec()),
        Just(TAG.to_vec()),
        Just([TAG, b"m"].concat()),
        Just([TAG, b"d"].concat()),
        Just([TAG, b"e"].concat()),
        Just([TAG, b"e", TAG, b"m"].concat()),
        Just(b"a\"b".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..12),
    ];
    prop_oneof![
        (
            0u32..40,
            name,
            prop_oneof![
                Just(&b""[..]),
                Just(&b" 1"[..]),
                Just(&b" 2"[..]),
                Just(&b" 1 3 4"[..]),
                Just(&b"\""[..])
            ]
        )
            .prop_map(|(n, name, flags)| [
                format!("# {n} \"").as_bytes(),
                &name,
                b"\"",
                flags
            ]
            .concat()),
        proptest::collection::vec(any::<u8>(), 0..20),
    ]
}

proptest! {
    #[test]
    fn restore_inverts_normalise_on_marker_text(
        lines in proptest::collection::vec(line(), 0..12),
        last_newline in any::<bool>(),
    ) {
        let mut text = lines.join(&b'\n');
        if last_newline {
            text.push(b'\n');
        }
        let (n, m) = normalise(&text);
        prop_assert_eq!(restore(&n, &m), text);
    }

    #[test]
    fn restore_inverts_normalise_on_any_bytes(text in proptest::collection::vec(any::<u8>(), 0..300)) {
        let (n, m) = normalise(&text);
        prop_assert_eq!(restore(&n, &m), text);
    }

    #[test]
    fn chunks_cover_the_text(text in proptest::collection::vec(any::<u8>(), 0..40_000)) {
        let cut = Cut::plain(text.clone());
        cut.recipe.check().unwrap();
        let joined: Vec<u8> = cut.chunks().flat_map(|(_, b)| b.to_vec()).collect();
        prop_assert_eq!(&joined, &text);
        let store: std::collections::HashMap<_, _> =
            cut.chunks().map(|(c, b)| (c.id, b.to_vec())).collect();
        prop_assert_eq!(cut.recipe.assemble(|id| store.get(id).cloned()).unwrap(), text);
    }
}

/// Pseudo-random text with line structure, deterministic.
fn text(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let alphabet = b"abcdefgh ijkl(mnop);\n{}#*";
        out.push(alphabet[(x % alphabet.len() as u64) as usize]);
    }
    out
}

#[test]
fn chunk_sizes_are_bounded_and_ids_are_blake3() {
    let data = text(1 << 20, 7);
    let cut = Cut::plain(data.clone());
    let n = cut.recipe.chunks.len();
    assert!(
        n > 1 << 20 >> 14 && n < 1 << 20 >> 11,
        "{n} chunks of 1 MiB"
    );
    for (i, (c, b)) in cut.chunks().enumerate() {
        assert!(c.len <= MAX_CHUNK);
        assert!(c.len >= MIN_CHUNK || i == n - 1);
        assert_eq!(c.id.0, *blake3::hash(b).as_bytes());
    }
    assert_eq!(Cut::plain(data).recipe, cut.recipe, "deterministic");
}

#[test]
fn an_edit_changes_few_chunks() {
    let a = text(256 << 10, 3);
    let mut b = a.clone();
    b[100_000] ^= 1;
    let ia: HashSet<_> = cut(&a).into_iter().map(|c| c.id).collect();
    let new = cut(&b).into_iter().filter(|c| !ia.contains(&c.id)).count();
    assert!(
        (1..=3).contains(&new),
        "{new} new chunks after one byte changed"
    );
}

#[test]
fn recipes_from_a_peer_are_bounded() {
    let good = Cut::normalised(b"# 0 \"a.c\"\nint x;\n").recipe;
    good.check().unwrap();
    let mut r = good.clone();
    r.len += 1;
    assert!(matches!(r.check(), Err(ChunkError::Length { .. })));
    let mut r = good.clone();
    r.chunks = vec![ChunkRef {
        id: ChunkId([0; 32]),
        len: MAX_CHUNK + 1,
    }];
    r.len = u64::from(MAX_CHUNK) + 1;
    assert!(matches!(
        r.check(),
        Err(ChunkError::TooLarge { what: "chunk", .. })
    ));
    let mut r = good.clone();
    r.chunks = vec![
        ChunkRef {
            id: ChunkId([0; 32]),
            len: 0
        };
        MAX_RECIPE_CHUNKS + 1
    ];
    r.len = 0;
    assert!(matches!(
        r.check(),
        Err(ChunkError::TooLarge {
            what: "recipe chunks",
            ..
        })
    ));
    let mut r = good.clone();
    r.markers = Some(Markers {
        main: Some(vec![b'a'; markers::MAX_MARKER_NAME + 1]),
        cwd: None,
        lines: vec![],
    });
    assert!(r.check().is_err());
    let mut r = good.clone();
    r.markers = Some(Markers {
        main: None,
        cwd: None,
        lines: vec![1; markers::MAX_MAIN_MARKERS + 1],
    });
    assert!(matches!(
        r.check(),
        Err(ChunkError::TooLarge {
            what: "main-source markers",
            ..
        })
    ));
}

#[test]
fn assemble_names_each_missing_chunk_once_and_checks_lengths() {
    let data = text(100_000, 9);
    let mut cut = Cut::plain(data);
    let have: std::collections::HashMap<_, _> = cut
        .chunks()
        .skip(1)
        .map(|(c, b)| (c.id, b.to_vec()))
        .collect();
    // The same chunk twice in a recipe (a text that repeats).
    let first = cut.recipe.chunks[0];
    cut.recipe.chunks.push(first);
    cut.recipe.len += u64::from(first.len);
    cut.recipe.check().unwrap();
    match cut.recipe.assemble(|id| have.get(id).cloned()) {
        Err(ChunkError::Missing(ids)) => assert_eq!(ids, vec![first.id]),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        cut.recipe.assemble(|_| Some(vec![0; 3])),
        Err(ChunkError::Length { .. })
    ));
}

#[test]
fn assemble_restores_markers() {
    let text = b"# 0 \"src/q.c\"\n# 1 \"/cwd//\"\n# 1 \"src/q.c\"\nint q;\n".to_vec();
    let cut = Cut::normalised(&text);
    assert_ne!(cut.bytes, text);
    let have: std::collections::HashMap<_, _> =
        cut.chunks().map(|(c, b)| (c.id, b.to_vec())).collect();
    assert_eq!(
        cut.recipe.assemble(|id| have.get(id).cloned()).unwrap(),
        text
    );
}

#[test]
fn packs_carry_chunks_and_drop_corrupt_ones() {
    let cut = Cut::plain(text(30_000, 5).repeat(2));
    let pack = ChunkPack::pack(cut.chunks());
    assert_eq!(pack.data.codec, crate::proto::msg::Codec::Lz4);
    let got = pack.unpack().unwrap();
    assert!(got.corrupt.is_empty());
    assert_eq!(got.good.len(), cut.recipe.chunks.len());
    for ((id, bytes), (c, b)) in got.good.iter().zip(cut.chunks()) {
        assert_eq!((*id, &bytes[..]), (c.id, b));
    }
    // One chunk's id does not match its bytes.
    let mut bad = ChunkPack::pack(cut.chunks());
    bad.chunks[1].id = ChunkId([7; 32]);
    let got = bad.unpack().unwrap();
    assert_eq!(got.corrupt, vec![ChunkId([7; 32])]);
    assert_eq!(got.good.len(), cut.recipe.chunks.len() - 1);
    // Lengths that do not add up, a lying blob.
    let mut bad = ChunkPack::pack(cut.chunks());
    bad.chunks[0].len -= 1;
    assert!(matches!(bad.unpack(), Err(ChunkError::Length { .. })));
    let mut bad = ChunkPack::pack(cut.chunks());
    bad.data.data.truncate(10);
    assert!(bad.unpack().is_err());
    assert!(ChunkPack::empty().unpack().unwrap().good.is_empty());
}

/// Micro check: normalising, cutting and hashing 1 MiB of directives-only text (repeated
/// real gcc output) stays cheap. Prints the time; the bound is loose (debug build, shared
/// CPU).
#[test]
fn chunking_a_megabyte_is_cheap() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("m.c"),
        "#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\nint m;\n",
    )
    .unwrap();
    let out = Command::new("gcc")
        .args(["-g", "-E", "-fdirectives-only", "m.c"])
        .current_dir(dir.path())
        .output()
        .expect("gcc");
    assert!(out.status.success());
    let mut big = Vec::new();
    while big.len() < 1 << 20 {
        big.extend_from_slice(&out.stdout);
    }
    big.truncate(1 << 20);
    let start = std::time::Instant::now();
    let rounds = 10;
    for _ in 0..rounds {
        std::hint::black_box(Cut::normalised(&big));
    }
    let per = start.elapsed() / rounds;
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(cut(&big));
    }
    let cut_only = start.elapsed() / rounds;
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(markers::normalise(&big));
    }
    let normalise_only = start.elapsed() / rounds;
    eprintln!(
        "normalise + cut + hash of 1 MiB: {per:?} (cut + hash alone: {cut_only:?}, normalise alone: {normalise_only:?})"
    );
    assert!(per < std::time::Duration::from_millis(400), "{per:?}");
}

/// The dedup between two translation units on real directives-only output: with the line
/// markers normalised, the second unit shares all but a small part of its text with the
/// first, and far more than without (`--nocapture` prints the figures).
#[test]
fn dedup_between_units() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::create_dir(p.join("src")).unwrap();
    std::fs::write(p.join("src/gen.h"), "#ifndef GEN_H\n#define GEN_H\n#include <stddef.h>\nstruct gen_pair { long key; double value; };\n#endif\n").unwrap();
    let c_unit = |i: usize| {
        format!("#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n#include \"gen.h\"\n\
                 long gen_sum_{i}(const long *v, size_t n) {{ long s = {i}; for (size_t k = 0; k < n; k++) s += v[k]; return s; }}\n")
    };
    let cxx_unit = |i: usize| {
        format!("#include <vector>\n#include <map>\n#include <string>\n#include <algorithm>\n#include <iostream>\n\
                 #include <unordered_map>\n#include <memory>\nint f{i}(std::vector<int> v) {{ std::sort(v.begin(), v.end()); return v.size() + {i}; }}\n")
    };
    for (lang, compiler, ext, unit) in [
        (
            "C (libc headers)",
            "gcc",
            "c",
            &c_unit as &dyn Fn(usize) -> String,
        ),
        ("C++ (STL headers)", "g++", "cc", &cxx_unit),
    ] {
        let mut pre = Vec::new();
        for i in 0..2 {
            let name = format!("src/unit{i:03}.{ext}");
            std::fs::write(p.join(&name), unit(i)).unwrap();
            let out = Command::new(compiler)
                .args(["-g", "-O2", "-E", "-fdirectives-only", &name])
                .current_dir(p)
                .output()
                .unwrap();
            assert!(out.status.success());
            pre.push(crate::wrapper::preprocess::strip_builtin_section(
                out.stdout,
            ));
        }
        let mut new_share = [0.0f64; 2];
        for normalised in [false, true] {
            let cuts: Vec<Cut> = pre
                .iter()
                .map(|t| {
                    if normalised {
                        Cut::normalised(t)
                    } else {
                        Cut::plain(t.clone())
                    }
                })
                .collect();
            let held: HashSet<_> = cuts[0].recipe.chunks.iter().map(|c| c.id).collect();
            let new: Vec<_> = cuts[1]
                .chunks()
                .filter(|(c, _)| !held.contains(&c.id))
                .collect();
            let new_bytes: usize = new.iter().map(|(_, b)| b.len()).sum();
            let lz4 = ChunkPack::pack(new.iter().copied()).data.data.len();
            let ids = cuts[1].recipe.chunks.len() * 36;
            eprintln!(
                "{lang}, normalised={normalised}: unit 1 is {} bytes in {} chunks; {} new chunks, {new_bytes} bytes \
                 ({:.1}%), {lz4} bytes LZ4'd + {ids} bytes of recipe ({:.2}% of the text)",
                cuts[1].bytes.len(),
                cuts[1].recipe.chunks.len(),
                new.len(),
                100.0 * new_bytes as f64 / cuts[1].bytes.len() as f64,
                100.0 * (lz4 + ids) as f64 / cuts[1].bytes.len() as f64,
            );
            new_share[usize::from(normalised)] = new_bytes as f64 / cuts[1].bytes.len() as f64;
        }
        let [plain, normalised] = new_share;
        assert!(
            normalised < 0.05,
            "{lang}: {:.1}% of the second unit is new",
            100.0 * normalised
        );
        assert!(
            normalised < plain,
            "{lang}: normalising did not help ({normalised} vs {plain})"
        );
    }
}

/// A unit with three big headers and a main body: the headers' chunks become nodes, the
/// body's stay leaves; the grouped recipe assembles to the same text through the nodes.
#[test]
fn header_runs_become_nodes_that_assemble_to_the_same_text() {
    use super::node::{self, MAX_NODE_ENTRIES};
    let mut t = b"# 0 \"src/u.c\"\n# 1 \"/p//\"\n# 1 \"src/u.c\"\n".to_vec();
    for (h, line) in [("a", 2), ("b", 3), ("c", 4)] {
        t.extend(format!("# 1 \"/usr/include/{h}.h\" 1 3 4\n").into_bytes());
        t.extend((0..20_000).flat_map(|i| format!("extern int {h}_{i};\n").into_bytes()));
        t.extend(format!("# {line} \"src/u.c\" 2\n").into_bytes());
    }
    t.extend((0..2000).flat_map(|i| format!("int main_{i} = {i};\n").into_bytes()));
    let cut = Cut::normalised(&t);
    let g = node::group(&cut);
    g.recipe.check().unwrap();
    assert!(!g.nodes.is_empty());
    assert!(
        g.recipe.chunks.len() < cut.recipe.chunks.len() / 2,
        "{} entries",
        g.recipe.chunks.len()
    );
    // The body (main-source text) is in leaves, never in a node.
    let body_at = cut.bytes.len() - 2000 * 10;
    let mut at = 0;
    for (i, c) in cut.recipe.chunks.iter().enumerate() {
        let in_node = g.nodes.iter().any(|n| n.members.contains(&i));
        if at + c.len as usize > body_at {
            assert!(!in_node, "chunk {i} holds main text");
        }
        at += c.len as usize;
    }
    for n in &g.nodes {
        assert!(n.members.len() >= 2 && n.members.len() <= MAX_NODE_ENTRIES);
        assert_eq!(n.chunk.id, ChunkId::of(&n.bytes));
    }
    let mut store: std::collections::HashMap<ChunkId, Vec<u8>> =
        cut.chunks().map(|(c, b)| (c.id, b.to_vec())).collect();
    for n in &g.nodes {
        store.insert(n.chunk.id, n.bytes.clone());
    }
    assert_eq!(g.recipe.assemble(|id| store.get(id).cloned()).unwrap(), t);
    // A node missing is asked for; a node held whose chunks are not, its chunks.
    let node = g.nodes[0].chunk.id;
    let mut without = store.clone();
    without.remove(&node);
    match g.recipe.assemble(|id| without.get(id).cloned()) {
        Err(ChunkError::Missing(ids)) => assert_eq!(ids, [node]),
        other => panic!("{other:?}"),
    }
    let leaf = cut.recipe.chunks[g.nodes[0].members.start].id;
    let mut without = store.clone();
    without.remove(&leaf);
    match g.recipe.assemble(|id| without.get(id).cloned()) {
        Err(ChunkError::Missing(ids)) => assert_eq!(ids, [leaf]),
        other => panic!("{other:?}"),
    }
    // The same headers in another unit (other lines, another body) give the same nodes.
    let other = String::from_utf8(t.clone())
        .unwrap()
        .replace("# 3 \"src/u.c\" 2", "# 30 \"src/u.c\" 2")
        .replace("int main_1 = 1;", "int main_1 = 7;");
    let g2 = node::group(&Cut::normalised(other.as_bytes()));
    assert_eq!(
        g.nodes.iter().map(|n| n.chunk.id).collect::<Vec<_>>(),
        g2.nodes.iter().map(|n| n.chunk.id).collect::<Vec<_>>()
    );
}

#[test]
fn nodes_from_a_peer_are_checked() {
    use super::node::{decode, MAX_NODE_ENTRIES};
    let refs = vec![
        ChunkRef {
            id: ChunkId([1; 32]),
            len: 10
        };
        3
    ];
    let bytes = postcard::to_allocvec(&refs).unwrap();
    assert_eq!(decode(&bytes, 30).unwrap(), refs);
    assert!(matches!(decode(&bytes, 31), Err(ChunkError::Length { .. })));
    assert!(decode(b"\xff\xff\xff", 30).is_err(), "not a node");
    assert!(decode(&postcard::to_allocvec(&Vec::<ChunkRef>::new()).unwrap(), 0).is_err());
    let many = vec![refs[0]; MAX_NODE_ENTRIES + 1];
    let len = 10 * many.len() as u64;
    assert!(matches!(
        decode(&postcard::to_allocvec(&many).unwrap(), len),
        Err(ChunkError::TooLarge { .. })
    ));
    let big = vec![ChunkRef {
        id: ChunkId([1; 32]),
        len: MAX_CHUNK + 1,
    }];
    assert!(decode(
        &postcard::to_allocvec(&big).unwrap(),
        u64::from(MAX_CHUNK) + 1
    )
    .is_err());
    // In a recipe: node indices ascending and in range; only a node entry may be long.
    let long = ChunkRef {
        id: ChunkId([2; 32]),
        len: MAX_CHUNK * 2,
    };
    let mut r = Recipe {
        chunks: vec![long],
        len: u64::from(MAX_CHUNK) * 2,
        markers: None,
        nodes: vec![],
    };
    assert!(r.check().is_err(), "a leaf that long");
    r.nodes = vec![0];
    r.check().unwrap();
    r.nodes = vec![1];
    assert!(r.check().is_err(), "out of range");
    r.chunks.push(long);
    r.len *= 2;
    r.nodes = vec![1, 0];
    assert!(r.check().is_err(), "not ascending");
}
