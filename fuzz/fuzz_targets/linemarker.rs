//! Fuzz target `linemarker`: the wrapper's reading of directives-only preprocessor output
//! (`wrapper::preprocess`): dropping the `<built-in>` section and the command-line macros
//! (`strip_builtin_section`), and picking the context files from the line markers
//! (`context_files`); and the chunk path's normalisation of line markers
//! (`proto::chunk::markers`).
//!
//! Input: the main source's name, a NUL byte, then the preprocessor output.
//!
//! Properties: no panic; stripping keeps a subsequence of the lines, leaves no `<built-in>`
//! marker, and is idempotent; context files are unique, start with the main source, are only
//! names the markers give, and never a `<...>` pseudo-file, a directory or a `\` name;
//! restoring normalised text gives the text back exactly, and the include boundaries are
//! ascending offsets of line starts within it.
#![no_main]

use hoardcc::proto::chunk::markers;
use hoardcc::wrapper::preprocess::{context_files, strip_builtin_section};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (main, text) = match data.iter().position(|&b| b == 0) {
        Some(i) => (
            String::from_utf8_lossy(&data[..i]).into_owned(),
            &data[i + 1..],
        ),
        None => ("src/a.c".to_string(), data),
    };
    let (normalised, names) = markers::normalise(text);
    assert_eq!(markers::restore(&normalised, &names), text, "restore(normalise(t)) != t");
    let cuts = markers::include_boundaries(&normalised);
    assert!(cuts.windows(2).all(|w| w[0] < w[1]));
    assert!(cuts.iter().all(|&c| c > 0 && normalised[c - 1] == b'\n'));
    let stripped = strip_builtin_section(text.to_vec());
    let mut input_lines = text.split_inclusive(|&b| b == b'\n');
    for line in stripped.split_inclusive(|&b| b == b'\n') {
        assert!(
            input_lines.any(|l| l == line),
            "line {:?} is not from the input in order",
            line.escape_ascii().to_string()
        );
        assert!(
            !(line.starts_with(b"# ")
                && line.get(2).is_some_and(u8::is_ascii_digit)
                && line.windows(12).any(|w| w == b"\"<built-in>\"")),
            "a <built-in> marker survived"
        );
    }
    assert_eq!(
        strip_builtin_section(stripped.clone()),
        stripped,
        "stripping twice differs"
    );

    // Names containing "gone" do not exist on the client.
    let read = |name: &str| (!name.contains("gone")).then(|| name.as_bytes().to_vec());
    let files = context_files(&main, text, &read);
    if !main.contains("gone") {
        assert_eq!(files.first().map(|f| f.0.as_str()), Some(main.as_str()));
    }
    let lossy = String::from_utf8_lossy(text);
    for (i, (name, bytes)) in files.iter().enumerate() {
        assert_eq!(bytes.as_slice(), name.as_bytes());
        assert!(files[..i].iter().all(|(n, _)| n != name), "{name:?} twice");
        if *name != main {
            assert!(
                !name.is_empty()
                    && !name.starts_with('<')
                    && !name.contains('\\')
                    && !name.ends_with('/'),
                "{name:?}"
            );
            let quoted = format!("\"{name}\"");
            assert!(lossy.contains(&quoted), "{name:?} is in no marker");
        }
    }
});
