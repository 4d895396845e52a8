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
