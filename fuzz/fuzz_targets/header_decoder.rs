//! Generation headers: decode, and re-encode round trip of anything that decodes.
//! See `mailstore::internals::fuzzing::header_decoder`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mailstore::internals::fuzzing::header_decoder(data);
});
