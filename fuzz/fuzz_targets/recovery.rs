//! Recovery over an arbitrary image of generation 1's records: mount in both recovery modes, then `check`.
//! See `mailstore::internals::fuzzing::recovery`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mailstore::internals::fuzzing::recovery(data);
});
