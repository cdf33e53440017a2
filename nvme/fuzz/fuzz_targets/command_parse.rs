//! SQE, Fabrics, Connect data, Identify / Get Log Page / Features /
//! reservation fields, admin data structures, the ANA log and the
//! Reservation Status structure; the body lives in `pollux_nvme::fuzzing`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pollux_nvme::fuzzing::command_parse(data);
});
