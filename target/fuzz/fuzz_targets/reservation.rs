//! Fuzzes a namespace's reservations (`pollux_target::nvmf`'s
//! `reservation`, the daemon's own code): a hostile ptpl file, then
//! Register / Acquire / Release commands with hostile fields and keys from
//! three hosts. Nothing may panic; the body checks the state's invariants
//! after every command.
//!
//! Run: `cd target/fuzz && cargo +nightly fuzz run reservation`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pollux_target::nvmf::fuzzing::reservation(data);
});
