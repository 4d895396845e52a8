//! Fuzz target `policy`: the option policy, on both sides: the server's check of a compile
//! argv and of names, its reading of a stock distcc argv, and the client's classification of a
//! full command line. The functions are named in `hoardcc_fuzz::policy`, so a new policy is
//! swapped in there.
//!
//! Input: one byte choosing the compiler name, then arguments separated by NUL bytes
//! (arguments starting with `@` are dropped, so no response file is read).
//!
//! Properties: no panic; a refusal is one line; whatever the client would send remotely the
//! server accepts, arguments and names (the two sides do not drift); a stock distcc plan holds
//! only allowed arguments and names; a remote job's derived command lines build.
#![no_main]

use hoardcc::args::{Classified, CppStyle};
use hoardcc_fuzz::policy::{client_classify, distcc_plan, name_check, server_check};
use libfuzzer_sys::fuzz_target;

const COMPILERS: &[&str] = &[
    "gcc",
    "g++",
    "cc",
    "c++",
    "clang",
    "clang++",
    "x86_64-linux-gnu-gcc-12",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let compiler = COMPILERS[usize::from(pick) % COMPILERS.len()];
    let args: Vec<String> = rest
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .filter(|a| !a.starts_with('@'))
        .collect();
    if let Err(msg) = server_check(&args) {
        assert!(
            !msg.is_empty() && !msg.contains('\n'),
            "refusal is not one line: {msg:?}"
        );
    }
    let mut argv = vec![compiler.to_string()];
    argv.extend(args.iter().cloned());
    if let Ok(plan) = distcc_plan(&argv) {
        if let Err(msg) = server_check(&plan.args) {
            panic!(
                "a distcc plan holds refused arguments {:?}: {msg}",
                plan.args
            );
        }
        assert_eq!(name_check(&plan.input), Ok(()), "{plan:?}");
        if let Some(o) = &plan.output {
            assert_eq!(name_check(o), Ok(()), "{plan:?}");
        }
    }
    let Ok(Classified::Remote(job)) = client_classify(compiler, &args) else {
        return;
    };
    if let Err(msg) = server_check(&job.compile_args) {
        panic!(
            "the client sends {:?}, the server refuses it: {msg}",
            job.compile_args
        );
    }
    assert!(
        args.contains(&job.source),
        "source {:?} is not an argument",
        job.source
    );
    assert!(!job.output.is_empty() && job.output != "-");
    let _ = job.preprocess_args(CppStyle::DirectivesOnly);
    let _ = job.preprocess_args(CppStyle::Classic);
    let _ = job.preprocessed_name();
    let _ = job.distcc_argv();
});
