//! cargo-fuzz target for the math verifier: arbitrary bytes, split at the first newline into a
//! gold answer and a response, must never panic, hang or allocate without bound, and the
//! verdict must be deterministic. Run: `cargo +nightly fuzz run verify` (seeds in
//! `fuzz/seeds/`: `cargo +nightly fuzz run verify fuzz/corpus/verify fuzz/seeds`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (gold, response) = text.split_once('\n').unwrap_or(("42", &text));
    let v = tbrm_verify::verify(gold, response);
    assert!(!v.reason.is_empty());
    let again = tbrm_verify::verify(gold, response);
    // Only the wall-clock backstop may differ between runs (a sanitizer build on a loaded
    // machine can be descheduled past it); everything else is deterministic.
    let timed_out = |r: &str| r.contains("time budget");
    if !timed_out(&v.reason) && !timed_out(&again.reason) {
        assert_eq!(v, again, "non-deterministic verdict");
    }
});
