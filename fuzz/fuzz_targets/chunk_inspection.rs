//! See `mailstore::fuzzing::chunk_inspection`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mailstore::fuzzing::chunk_inspection(data);
});
