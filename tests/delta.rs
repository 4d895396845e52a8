//! Delta packs through the real sshd and gcc (issue 10, "bytes, warm"): on a rebuild
//! after a one-line edit to every source, the mux sends each job's new chunks LZ4'd
//! against the chunks that source's last job sent (`Message::DeltaChunks`, to a server
//! whose hello says `chunk-delta`). Objects stay byte-identical to local gcc's; the
//! rebuild's chunk packs are a fraction of what the same rebuild sends with
//! `HOARDCC_CHUNK_DELTA=0`; and when the server's store lost the dictionary's chunks
//! the pack is dropped, answered `Missing`, and sent again plain, with correct objects.
//! A first build's later units go against the unit sent before them, and come out smaller.
//!
//! Neighbours: tests/chunks.rs (the project, the client and the store helpers used
//! here), tests/support (the sshd fixture); src/proto/chunk/delta.rs (the pack),
//! src/mux/recent.rs and src/mux/upload.rs (the client side), src/subsystem/chunks.rs
//! (the server side).

use std::time::Duration;

use hoardcc::mux::status::ChunkCounters;

use crate::chunks::{intact, same_objects, short_sessions, stored_chunks, Client, Work, UNITS};
use crate::support::{run_with_timeout, Sshd, SshdOptions};

const T: Duration = Duration::from_secs(180);

/// What one cold build, an edit of every unit and a rebuild counted, and whether the
/// objects were right.
struct Rebuild {
    cold: ChunkCounters,
    warm: ChunkCounters,
}

impl Rebuild {
    /// A counter of the rebuild alone.
    fn warm(&self, f: impl Fn(&ChunkCounters) -> u64) -> u64 {
        f(&self.warm) - f(&self.cold)
    }
}

/// On a fresh fixture: a cold build and a rebuild after one edit to every unit, through
/// a mux started with `HOARDCC_CHUNK_DELTA` = `delta`; both builds' objects are checked
/// against local gcc's.
fn cold_then_warm(delta: &str) -> Rebuild {
    let sshd = Sshd::start(SshdOptions::default());
    let client = Client {
        sshd: &sshd,
        hosts: "@hoardtest/2".into(),
    };
    let w = Work::new();
    // The mux reads the switch from its own environment: start it with the switch set
    // (the wrappers below find it running).
    let mut mux = client.hoardcc(w.path(), &["mux"]);
    mux.env("HOARDCC_CHUNK_DELTA", delta);
    let out = run_with_timeout(&mut mux, T, "hoardcc mux");
    assert!(out.status.success(), "hoardcc mux: {out:?}");
    let flags = ["-O2", "-g"];
    let local = w.local_objects(&flags);
    same_objects(&client.build(&w, &flags), &local, "first build");
    let cold = client.counters();
    w.edit_every_unit(1);
    let local = w.local_objects(&flags);
    same_objects(&client.build(&w, &flags), &local, "rebuild");
    let warm = client.counters();
    assert_eq!(warm.chunks_missing, 0, "the host held everything: {warm:?}");
    assert!(stored_chunks(&sshd).iter().all(|f| intact(f)));
    Rebuild { cold, warm }
}

/// The rebuild's packs go as deltas and are a fraction of the same rebuild's plain
/// packs. In the cold build the first unit has nothing to delta against; the later ones
/// go against the unit sent before them, and the cold packs come out smaller too.
#[test]
fn a_rebuild_sends_its_edits_as_deltas_far_below_plain_packs() {
    let on = cold_then_warm("1");
    assert!(
        on.cold.delta_packs < UNITS as u64,
        "the first unit has nothing to delta against: {:?}",
        on.cold
    );
    assert_eq!(
        on.warm(|c| c.delta_packs),
        UNITS as u64,
        "every rebuilt unit sent a delta: {:?}",
        on.warm
    );
    let off = cold_then_warm("0");
    assert_eq!(off.warm.delta_packs, 0, "{:?}", off.warm);
    assert!(
        on.cold.delta_packs > 0,
        "later units went against earlier ones: {:?}",
        on.cold
    );
    assert!(
        on.cold.pack_bytes < off.cold.pack_bytes,
        "cold packs {} bytes with deltas, {} plain",
        on.cold.pack_bytes,
        off.cold.pack_bytes
    );
    let (delta, plain) = (on.warm(|c| c.pack_bytes), off.warm(|c| c.pack_bytes));
    let (all_delta, all_plain) = (on.warm(|c| c.bytes_sent), off.warm(|c| c.bytes_sent));
    eprintln!(
        "{UNITS} units rebuilt: chunk packs {delta} bytes as deltas, {plain} plain \
         ({:.0}%); all frames {all_delta} against {all_plain} bytes",
        100.0 * delta as f64 / plain as f64
    );
    assert_eq!(
        on.warm(|c| c.chunks_sent),
        off.warm(|c| c.chunks_sent),
        "the same chunks either way"
    );
    assert!(
        delta * 2 < plain,
        "delta packs {delta} bytes, plain {plain}"
    );
    assert!(all_delta < all_plain, "{all_delta} vs {all_plain}");
}

/// The server's store loses every chunk between the builds: the rebuild's delta packs
/// name dictionary chunks the server no longer has, so it stores none of their chunks
/// and answers `Missing`; the mux sends them plain and the objects are right.
#[test]
fn a_delta_against_an_emptied_store_is_resent_plain() {
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
    client.empty_the_store();

    w.edit_every_unit(1);
    let local = w.local_objects(&flags);
    same_objects(
        &client.build(&w, &flags),
        &local,
        "rebuild on an emptied store",
    );
    let after = client.counters();
    assert_eq!(
        after.delta_packs - before.delta_packs,
        UNITS as u64,
        "the mux sent deltas, believing the host held their dictionaries: {after:?}"
    );
    assert!(
        after.chunks_missing > before.chunks_missing,
        "the server asked for the chunks: {after:?}"
    );
    let refilled = stored_chunks(&sshd);
    assert!(
        !refilled.is_empty() && refilled.iter().all(|f| intact(f)),
        "the store is refilled with intact chunks"
    );
}
