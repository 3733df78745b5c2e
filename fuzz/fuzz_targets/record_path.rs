//! Any bytes through ingest's transform and the sink's leak guard, under the default
//! policy: no panic, no hang, no unbounded allocation (libFuzzer's limits, set by
//! `scripts/fuzz.sh`), and every invariant of `pseudopipe_fuzz::invariants`.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use pseudopipe_fuzz::Subject;

static SUBJECT: LazyLock<Subject> = LazyLock::new(Subject::default);

fuzz_target!(|input: &[u8]| {
    if let Err(violation) = SUBJECT.check(input) {
        panic!("{violation}");
    }
});
