//! Log records read back from disk (possibly damaged): decoding never panics, and a record
//! that decodes re-encodes to the same bytes.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use switchyard_event::storage::{decode, encode};

fuzz_target!(|input: &[u8]| {
    let bytes = Bytes::copy_from_slice(input);
    if let Ok(event) = decode(&bytes) {
        assert_eq!(encode(&event).expect("a decoded event re-encodes"), input);
    }
});
