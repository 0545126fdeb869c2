//! Untrusted Kafka records on a broker topic (any producer can write there): `name:value`
//! header lines (a line without `:` is a header with a null value), then, after a blank line,
//! the value (no blank line: a null value). Decoding must never panic, and whatever it accepts
//! must come back exactly through a binary-mode record, and decode again from a structured one.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use switchyard_event::kafka::{decode, encode_binary, encode_structured};
use switchyard_event::Event;

fn canonical(event: &Event) -> Vec<(String, String)> {
    event.attributes().iter().map(|(n, v)| (n.clone(), v.to_canonical_string().into_owned())).collect()
}

fuzz_target!(|input: &[u8]| {
    let split = input.windows(2).position(|w| w == b"\n\n");
    let (head, value) = match split {
        Some(at) => (&input[..at], Some(Bytes::copy_from_slice(&input[at + 2..]))),
        None => (input, None),
    };
    let mut headers: Vec<(String, Option<&[u8]>)> = Vec::new();
    for line in head.split(|&b| b == b'\n') {
        // rdkafka hands header names over as `&str`.
        match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let Ok(name) = std::str::from_utf8(&line[..colon]) else { continue };
                headers.push((name.to_owned(), Some(&line[colon + 1..])));
            }
            None => {
                let Ok(name) = std::str::from_utf8(line) else { continue };
                headers.push((name.to_owned(), None));
            }
        }
    }
    let Ok(event) = decode(headers.iter().map(|(n, v)| (n.as_str(), *v)), None, value) else { return };
    let stored = encode_binary(&event);
    assert_eq!(stored.decode().expect("a binary-mode record of a decoded event decodes"), event);
    let structured = encode_structured(&event).decode().expect("a structured record of a decoded event decodes");
    assert_eq!(canonical(&structured), canonical(&event));
});
