//! Checkpoint file images (slots at 0 and 4096): newest valid slot, and its round trip.
//! See `mailstore::internals::fuzzing::checkpoint_decoder`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mailstore::internals::fuzzing::checkpoint_decoder(data);
});
