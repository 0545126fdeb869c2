//! Untrusted JSON-format events and batches: never a panic; what decodes re-encodes to the
//! same event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_event::json::{decode_batch, decode_event, encode_batch, encode_event};

fuzz_target!(|input: &[u8]| {
    if let Ok(event) = decode_event(input) {
        assert_eq!(decode_event(&encode_event(&event)).expect("re-decodes").attributes(), event.attributes());
    }
    if let Ok(events) = decode_batch(input) {
        let again = decode_batch(&encode_batch(&events)).expect("re-decodes");
        assert_eq!(again.len(), events.len());
    }
});
