//! Untrusted Kafka records read by a KafkaSource (any producer can write to its topics): a first
//! line `topic|partition|offset|timestamp_ms|key` (a field that is not a number is 0, or no
//! timestamp; no `|key`: a null key), then `name:value` header lines (a line without `:` is a
//! header with a null value), then, after a blank line, the value (no blank line: a null value).
//!
//! The mapping must never panic. A record that is a CloudEvent passes through; any other is
//! wrapped with the record's coordinates and value, flagged as invalid exactly when it claims
//! to be a CloudEvent; only a record no event can carry (a topic Kafka would not name, more
//! headers than an event has attributes) is skipped. Whatever becomes an event survives the
//! Kafka binding's binary mode, as the broker's log stores it.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use switchyard_event::kafka::{encode_binary, valid_topic_name};
use switchyard_sources::kafka::{record_event, RecordEvent, RecordParts, EVENT_TYPE};

fn claims_to_be_a_cloudevent(headers: &[(String, Option<Vec<u8>>)]) -> bool {
    headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("ce_specversion")
            || (name.eq_ignore_ascii_case("content-type")
                && value.as_deref().is_some_and(|v| v.to_ascii_lowercase().starts_with(b"application/cloudevents")))
    })
}

fuzz_target!(|input: &[u8]| {
    let (first, rest) = match input.iter().position(|&b| b == b'\n') {
        Some(at) => (&input[..at], &input[at + 1..]),
        None => (input, &[][..]),
    };
    let mut fields = first.splitn(5, |&b| b == b'|');
    let text = |field: Option<&[u8]>| String::from_utf8_lossy(field.unwrap_or_default()).into_owned();
    let topic = text(fields.next());
    let partition = text(fields.next()).parse::<i32>().unwrap_or(0);
    let offset = text(fields.next()).parse::<i64>().unwrap_or(0);
    let timestamp_ms = text(fields.next()).parse::<i64>().ok();
    let key = fields.next();

    let split = rest.windows(2).position(|w| w == b"\n\n");
    let (head, value) = match split {
        Some(at) => (&rest[..at], Some(Bytes::copy_from_slice(&rest[at + 2..]))),
        None => (rest, None),
    };
    let mut headers: Vec<(String, Option<Vec<u8>>)> = Vec::new();
    for line in head.split(|&b| b == b'\n').filter(|line| !line.is_empty()) {
        // rdkafka hands header names over as `&str`.
        match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let Ok(name) = std::str::from_utf8(&line[..colon]) else { continue };
                headers.push((name.to_owned(), Some(line[colon + 1..].to_vec())));
            }
            None => {
                let Ok(name) = std::str::from_utf8(line) else { continue };
                headers.push((name.to_owned(), None));
            }
        }
    }

    let record =
        RecordParts { topic: &topic, partition, offset, timestamp_ms, key, headers: &headers, value: value.as_ref() };
    let (event, invalid) = match record_event("fuzz", "records", record) {
        RecordEvent::CloudEvent(event) => {
            let stored = encode_binary(&event);
            assert_eq!(stored.decode().expect("a binary-mode record of a passed-through event decodes"), event);
            return;
        }
        RecordEvent::Wrapped(event) => (event, false),
        RecordEvent::WrappedInvalid { event, .. } => (event, true),
        RecordEvent::Unmappable(error) => {
            assert!(
                !valid_topic_name(&topic) || headers.len() > 60_000,
                "a record of topic '{topic}' skipped: {error}"
            );
            return;
        }
    };
    assert_eq!(
        invalid,
        claims_to_be_a_cloudevent(&headers),
        "flagged invalid exactly when it claims to be a CloudEvent"
    );
    assert_eq!(event.ty(), EVENT_TYPE);
    assert_eq!(event.id(), format!("partition:{partition}/offset:{offset}"));
    assert_eq!(event.data().map(|data| data.bytes.clone()), value, "the value, byte for byte");
    assert!(event
        .datacontenttype()
        .is_none_or(|content_type| !content_type.is_empty() && !content_type.starts_with("application/cloudevents")));
    let stored = encode_binary(&event);
    assert_eq!(stored.decode().expect("a binary-mode record of a wrapped record decodes"), event);
});
