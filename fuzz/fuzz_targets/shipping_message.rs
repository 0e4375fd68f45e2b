//! See `mailstore::internals::fuzzing::shipping_message`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mailstore::internals::fuzzing::shipping_message(data);
});
