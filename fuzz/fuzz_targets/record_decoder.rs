//! Record frames sealed for a fixed generation (GUID [0x5A; 16], generation 1, epoch 1), each payload decoded as a `KvOp`.
//! See `mailstore::internals::fuzzing::record_decoder`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mailstore::internals::fuzzing::record_decoder(data);
});
