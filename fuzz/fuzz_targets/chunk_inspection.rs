//! See `mailstore::internals::fuzzing::chunk_inspection`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mailstore::internals::fuzzing::chunk_inspection(data);
});
