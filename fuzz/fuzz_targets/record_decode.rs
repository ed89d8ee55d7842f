//! Fuzzes the file store's record decoder: any bytes must decode to a record, "incomplete" or
//! "invalid", never panic; a decoded record's JSON fields must parse or fail cleanly. The input
//! is tried raw and wrapped in a frame with valid checksums, so the fuzzer also reaches the body
//! parser behind the CRCs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use userstate::store::file_record::{decode, Decoded};

fn check(bytes: &[u8]) {
    if let Decoded::Record { record, len } = decode(bytes) {
        assert!(len <= bytes.len());
        let _ = record.to_event();
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let len = (data.len() as u32).to_le_bytes();
    let mut framed = len.to_vec();
    framed.extend_from_slice(&crc32c::crc32c(&len).to_le_bytes());
    framed.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
    framed.extend_from_slice(data);
    check(&framed);
});
