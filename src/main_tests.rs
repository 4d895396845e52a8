//! Tests of the binary's command tree: shell completions name every subcommand.

use super::*;

#[test]
fn completions_name_every_subcommand() {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    assert!(subs.len() >= 7, "{subs:?}");
    for shell in [
        CompletionShell::Bash,
        CompletionShell::Zsh,
        CompletionShell::Fish,
    ] {
        let mut out = Vec::new();
        completions(shell, &mut out);
        let text = String::from_utf8(out).unwrap();
        for s in &subs {
            assert!(text.contains(s.as_str()), "{shell:?} completion lacks {s}");
        }
    }
}

/// Man page text with roff escapes undone enough to search: `\-` → `-`, font changes
/// dropped, quotes removed.
fn man_text(path: &str) -> String {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    let raw = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {full}: {e}"));
    let mut t = raw.replace("\\-", "-");
    for esc in ["\\fB", "\\fI", "\\fR", "\\fP", "\\(dq", "\""] {
        t = t.replace(esc, "");
    }
    // `.B hoardcc mux` and `.BI "hoardcc mux " X` both read as words.
    t.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every subcommand (`hoardcc NAME`) and every long flag of `cmd` and its subcommands,
/// with where it belongs, e.g. `("--json", "hoardcc status")`.
fn command_tree(cmd: &clap::Command, path: &str, out: &mut Vec<(String, String)>) {
    for arg in cmd.get_arguments() {
        let auto = matches!(arg.get_id().as_str(), "help" | "version");
        if let Some(long) = arg.get_long() {
            if !auto || path == "hoardcc" {
                out.push((format!("--{long}"), path.to_string()));
            }
        }
    }
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        let sub_path = format!("{path} {}", sub.get_name());
        out.push((sub_path.clone(), path.to_string()));
        command_tree(sub, &sub_path, out);
    }
}

/// man/hoardcc.1 names every subcommand and long flag of `--help`; man/hoardcc-serve.8
/// names every flag of `hoardcc serve`.
#[test]
fn man_pages_name_every_subcommand_and_flag() {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    cmd.build();
    let mut tree = Vec::new();
    command_tree(&cmd, "hoardcc", &mut tree);
    assert!(
        tree.iter().any(|(w, _)| w == "hoardcc install-server"),
        "{tree:?}"
    );
    assert!(tree
        .iter()
        .any(|(w, p)| w == "--forced-command" && p == "hoardcc install-server"));

    let page = man_text("man/hoardcc.1");
    let missing: Vec<String> = tree
        .iter()
        .filter(|(word, _)| !page.contains(word.as_str()))
        .map(|(word, of)| {
            if word.starts_with("--") {
                format!("{word} (a flag of `{of}`)")
            } else {
                format!("`{word}` (a subcommand)")
            }
        })
        .collect();
    assert!(
        missing.is_empty(),
        "man/hoardcc.1 does not mention: {}. Add each to SYNOPSIS and describe it (roff: write `-` as `\\-`).",
        missing.join(", ")
    );

    let serve_page = man_text("man/hoardcc-serve.8");
    let serve_missing: Vec<&String> = tree
        .iter()
        .filter(|(_, of)| of == "hoardcc serve")
        .map(|(word, _)| word)
        .filter(|word| !serve_page.contains(word.as_str()))
        .collect();
    assert!(
        serve_missing.is_empty(),
        "man/hoardcc-serve.8 does not mention these flags of `hoardcc serve`: {serve_missing:?}"
    );
}

/// The completion scripts the Debian package installs, checked in under
/// contrib/completions/. They must equal what `hoardcc completions` prints; with
/// `HOARDCC_BLESS=1` this test rewrites them instead.
#[test]
fn checked_in_completions_are_current() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/completions");
    let bless = std::env::var_os("HOARDCC_BLESS").is_some_and(|v| v == "1");
    let mut stale = Vec::new();
    for (shell, file) in [
        (CompletionShell::Bash, "hoardcc.bash"),
        (CompletionShell::Zsh, "_hoardcc"),
        (CompletionShell::Fish, "hoardcc.fish"),
    ] {
        let mut want = Vec::new();
        completions(shell, &mut want);
        let path = std::path::Path::new(dir).join(file);
        if bless {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(&path, &want).unwrap();
        } else if std::fs::read(&path).ok().as_deref() != Some(want.as_slice()) {
            stale.push(format!("contrib/completions/{file}"));
        }
    }
    assert!(
        stale.is_empty(),
        "out of date: {stale:?}; regenerate with `HOARDCC_BLESS=1 cargo test --bin hoardcc checked_in_completions`"
    );
}

/// Cargo.toml's `[package.metadata.deb]` assets exist (the release binary aside), and
/// cover the man pages, the completions and the systemd user unit.
#[test]
fn deb_assets_exist() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest: toml::Table = std::fs::read_to_string(root.join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let assets = manifest["package"]["metadata"]["deb"]["assets"]
        .as_array()
        .expect("[package.metadata.deb] assets");
    let sources: Vec<&str> = assets
        .iter()
        .map(|a| a.as_array().unwrap()[0].as_str().unwrap())
        .collect();
    for s in &sources {
        if !s.starts_with("target/") {
            assert!(root.join(s).is_file(), "deb asset {s} does not exist");
        }
    }
    let man: Vec<String> = std::fs::read_dir(root.join("man"))
        .unwrap()
        .map(|e| format!("man/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    for want in man.iter().map(String::as_str).chain([
        "contrib/completions/hoardcc.bash",
        "contrib/completions/_hoardcc",
        "contrib/completions/hoardcc.fish",
        "contrib/hoardcc-mux.service",
    ]) {
        assert!(sources.contains(&want), "{want} is not in the deb assets");
    }
}
