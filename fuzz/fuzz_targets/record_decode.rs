//! Fuzzes the file store's record decoder: any bytes must decode to a record, "incomplete" or
//! "invalid", never panic; a decoded record's JSON fields must parse or fail cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use userstate::store::file_record::{decode, Decoded};

fuzz_target!(|data: &[u8]| {
    if let Decoded::Record { record, len } = decode(data) {
        assert!(len <= data.len());
        let _ = record.to_event();
    }
});
