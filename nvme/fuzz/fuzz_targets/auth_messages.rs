//! In-band authentication messages (AUTH_Negotiate, DH-HMAC-CHAP
//! Challenge/Reply/Success1/Success2, AUTH_Failure), DHHC-1 secrets and
//! DH public values; the body lives in `pollux_nvme::fuzzing`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pollux_nvme::fuzzing::auth_messages(data);
});
