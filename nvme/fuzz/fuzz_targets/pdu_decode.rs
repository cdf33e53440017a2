//! NVMe/TCP PDU stream decoding under every limit set; the body lives in
//! `pollux_nvme::fuzzing` so unit tests run it too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pollux_nvme::fuzzing::pdu_decode(data);
});
