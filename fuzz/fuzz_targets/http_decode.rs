//! Untrusted HTTP requests at ingest: `name: value` header lines, a blank line, then the body.
//! Decoding must never panic, and whatever it accepts must survive delivery in both modes.
#![no_main]

#[path = "common/http_input.rs"]
mod http_input;

use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use switchyard_event::http::{decode_request, encode_binary, encode_structured, HeaderEncoding};
use switchyard_event::Event;

fn canonical(event: &Event) -> Vec<(String, String)> {
    event.attributes().iter().map(|(n, v)| (n.clone(), v.to_canonical_string().into_owned())).collect()
}

fuzz_target!(|input: &[u8]| {
    let (headers, body) = http_input::headers_and_body(input);
    let Ok(events) = decode_request(&headers, body) else { return };
    for event in events {
        for encoding in HeaderEncoding::ALL {
            let (binary_headers, binary_body) = encode_binary(&event, encoding);
            let delivered = decode_request(&binary_headers, binary_body).expect("binary delivery decodes");
            assert_eq!(canonical(&delivered[0]), canonical(&event));
            assert_eq!(delivered[0].data().map(|d| &d.bytes), event.data().map(|d| &d.bytes));
        }
        let (content_type, structured_body) = encode_structured(&event);
        let mut structured_headers = HeaderMap::new();
        structured_headers.insert(http::header::CONTENT_TYPE, content_type);
        let delivered = decode_request(&structured_headers, structured_body).expect("structured delivery decodes");
        assert_eq!(canonical(&delivered[0]), canonical(&event));
        assert_eq!(delivered[0].data().map(|d| &d.bytes), event.data().map(|d| &d.bytes));
    }
});
