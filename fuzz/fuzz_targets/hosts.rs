//! Fuzz target `hosts`: the host-list grammar (`hosts::parse`), fed `DISTCC_HOSTS` values and
//! hosts files.
//!
//! Properties: no panic; every parsed host has at least one slot and a non-empty key; a list
//! rendered back from its tokens (as the wrapper hands it to the mux) parses to the same list;
//! `ordered` is a permutation of the hosts that are not down, the same for the same seed.
#![no_main]

use hoardcc::hosts::{self, HostList};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(list) = hosts::parse(&text) else {
        return;
    };
    for h in &list.hosts {
        assert!(h.slots >= 1, "{h:?}");
        assert!(!h.key().is_empty(), "{h:?}");
        assert!(
            !h.token.is_empty() && !h.token.contains(char::is_whitespace),
            "{h:?}"
        );
    }
    let again = hosts::parse(&render(&list)).expect("a rendered host list parses");
    assert_eq!(again, list);
    let seed = data
        .iter()
        .fold(0u64, |a, &b| a.rotate_left(5) ^ u64::from(b));
    let ordered = list.ordered(seed);
    assert_eq!(ordered, list.ordered(seed));
    let mut got: Vec<String> = ordered.iter().map(|h| h.token.clone()).collect();
    let mut want: Vec<String> = list
        .hosts
        .iter()
        .filter(|h| !h.down)
        .map(|h| h.token.clone())
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
});

/// The list in the grammar again, as `wrapper::host_list_text` writes it for the mux.
fn render(list: &HostList) -> String {
    let mut parts: Vec<String> = list.hosts.iter().map(|h| h.token.clone()).collect();
    if list.randomize {
        parts.push("--randomize".into());
    }
    if let Some(n) = list.local_slots {
        parts.push(format!("--localslots={n}"));
    }
    parts.join(" ")
}
