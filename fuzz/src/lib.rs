//! Helpers shared by the `cargo fuzz` targets in `fuzz_targets/` (stage: testing, beside every
//! pure parser of the pipeline: `proto`, `hosts`, `args`, `wrapper::preprocess`).
//!
//! - [`block_on`] drives the async readers of `proto` over an in-memory input;
//! - [`policy`] names the option-policy functions the `policy` target calls, so that moving to
//!   a new policy is a one-line change there;
//! - [`seeds`] builds realistic seed inputs with the crate's own encoders; every target writes
//!   them when `HOARDCC_FUZZ_SEEDS=<dir>` is set (see `fuzz/README.md`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::io::Write;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

pub mod seeds;

/// The largest single allocation a target may make: 64 MiB. Inputs are a few KiB, and every
/// length on the wire is bounded before anything is allocated for it, so more than this means
/// a length claim was believed. This is the `-malloc_limit_mb=64` check, kept in every build
/// (libFuzzer only enforces that flag under a sanitizer).
pub const MAX_ALLOC: usize = 64 << 20;

/// The allocator of every target: the system one, aborting (a crash libFuzzer records, with
/// the input) on any single allocation above [`MAX_ALLOC`].
pub struct CappedAlloc;

// SAFETY: every call is forwarded unchanged to `System`, or the process aborts first.
unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check_size(layout.size());
        // SAFETY: the caller's contract is forwarded unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check_size(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check_size(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn check_size(size: usize) {
    if size > MAX_ALLOC {
        // No formatting: that could allocate, inside the allocator.
        let _ =
            std::io::stderr().write_all(b"hoardcc-fuzz: one allocation above MAX_ALLOC (64 MiB)\n");
        std::process::abort();
    }
}

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

/// Runs `fut` to completion on this thread. The readers fuzzed here only read from a
/// `&[u8]` and write to a `Vec<u8>`, which are always ready, so the future must finish on its
/// first poll: a `Pending` means it waits on something that will never come, and that is a bug
/// worth a crash.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a reader over an in-memory buffer returned Pending"),
    }
}

/// The option policy under test. Swap the body of one function when the policy moves.
pub mod policy {
    use std::path::Path;

    use hoardcc::args::{ArgsError, Classified, DistccPlan, PlanError};

    /// The server's check of a compile argv (refuse or accept, with one line naming why).
    pub fn server_check(args: &[String]) -> Result<(), String> {
        hoardcc::args::check_server_args(args).map_err(|r| r.to_string())
    }

    /// The server's check of a name that travels with a job (source, output, context file).
    pub fn name_check(name: &str) -> Result<(), String> {
        hoardcc::args::check_name(name).map_err(|r| r.to_string())
    }

    /// The client's classification of a full command line (`args` is argv\[1..]).
    pub fn client_classify(compiler: &str, args: &[String]) -> Result<Classified, ArgsError> {
        // `@file` arguments are removed by the target, so no file is ever read here.
        hoardcc::args::classify(compiler, args, Path::new("/nonexistent/hoardcc-fuzz"))
    }

    /// The server's reading of a stock distcc client's argv (compiler first).
    pub fn distcc_plan(argv: &[String]) -> Result<DistccPlan, PlanError> {
        hoardcc::args::distcc_plan(argv)
    }
}

/// Writes `seeds` into the directory named by `HOARDCC_FUZZ_SEEDS` (if set) and exits; called
/// from each target's `init`, so seeds come from the very code being fuzzed.
pub fn write_seeds_if_asked(seeds: impl FnOnce() -> Vec<(String, Vec<u8>)>) {
    let Some(dir) = std::env::var_os("HOARDCC_FUZZ_SEEDS") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("create the seed directory");
    let all = seeds();
    for (name, bytes) in &all {
        std::fs::write(dir.join(name), bytes).expect("write a seed");
    }
    eprintln!("wrote {} seeds to {}", all.len(), dir.display());
    std::process::exit(0);
}
