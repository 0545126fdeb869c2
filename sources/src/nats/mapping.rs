//! A NATS message as a CloudEvent. A message that is a CloudEvent in the NATS protocol binding
//! (cloudevents/spec `nats-protocol-binding.md`: structured mode, a `content-type` of
//! `application/cloudevents+json`; binary mode, attributes as `ce-` headers, §3.1.3 since
//! 1.0.2) passes through unchanged; any other is wrapped ([`Plain`]). Pure code: never panics,
//! whatever the message holds.

use bytes::Bytes;
use switchyard_event::headers::CONTENT_TYPE;

use crate::message::{is_cloudevents_media_type, printable, MessageEvent, Plain};

/// The type of a wrapped message.
pub const EVENT_TYPE: &str = "dev.switchyard.nats.message";
/// The prefix of the binary-mode attribute headers (NATS binding §3.1.3).
pub const ATTRIBUTE_PREFIX: &str = "ce-";
/// The prefix of the extensions that carry a wrapped message's headers.
const HEADER_EXTENSION_PREFIX: &str = "natsheader";

/// Where a message came from: its identity depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin<'a> {
    /// A core NATS subscription: no redelivery exists, so the wrapped event gets a fresh id.
    Core,
    /// A JetStream stream, at a stream sequence: the same for every delivery of the message.
    JetStream {
        /// The stream.
        stream: &'a str,
        /// The message's stream sequence.
        sequence: u64,
        /// When the server stored it, milliseconds since the Unix epoch.
        published_ms: Option<i64>,
    },
}

/// The parts of a message the mapping reads.
#[derive(Debug, Clone, Copy)]
pub struct MessageParts<'a> {
    /// The subject it was published to.
    pub subject: &'a str,
    /// Its headers, one entry per value, in the order the client gave them.
    pub headers: &'a [(String, Vec<u8>)],
    /// The payload (empty: no data).
    pub payload: &'a Bytes,
    /// Where it came from.
    pub origin: Origin<'a>,
}

/// The event a message of NatsSource `namespace/name` stands for.
///
/// A wrapped message gets `type` [`EVENT_TYPE`], `source`
/// `/apis/v1/namespaces/<ns>/natssources/<name>`, `subject` the NATS subject it was published
/// to, `id` `<stream>:<stream sequence>` from JetStream (the same on every redelivery) or a
/// fresh UUID from a core subscription (core NATS never redelivers), `time` when JetStream
/// stored it, `datacontenttype` its `Content-Type` header, every other header as an extension
/// `natsheader<name>` (lower-cased, letters and digits only; several values joined with `,`),
/// and the payload as the data, byte for byte (an empty payload is no data).
///
/// A `Nats-Msg-Id` header is not the id: it only has to be unique within the stream's
/// duplicate window, and a core message that has one may still be published twice. It travels
/// as the extension `natsheadernatsmsgid`.
pub fn message_event(namespace: &str, name: &str, message: MessageParts<'_>) -> MessageEvent {
    let payload = (!message.payload.is_empty()).then(|| message.payload.clone());
    let headers = message.headers.iter().map(|(name, value)| (name.as_str(), Some(value.as_slice())));
    let decoded = switchyard_event::headers::decode(headers, ATTRIBUTE_PREFIX, payload.clone());
    MessageEvent::of(decoded, claims_to_be_a_cloudevent(message.headers), || plain(namespace, name, message, payload))
}

/// Whether the message says it is a CloudEvent: a binary-mode `ce-specversion` header, or a
/// structured-mode content type.
fn claims_to_be_a_cloudevent(headers: &[(String, Vec<u8>)]) -> bool {
    headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("ce-specversion")
            || (name.eq_ignore_ascii_case(CONTENT_TYPE) && is_cloudevents_media_type(value))
    })
}

fn plain(namespace: &str, name: &str, message: MessageParts<'_>, payload: Option<Bytes>) -> Plain {
    let (id, time) = match message.origin {
        Origin::Core => (uuid::Uuid::new_v4().to_string(), None),
        Origin::JetStream { stream, sequence, published_ms } => {
            (format!("{stream}:{sequence}"), published_ms.and_then(crate::message::rfc3339_millis))
        }
    };
    let content_type = message
        .headers
        .iter()
        .rfind(|(name, _)| name.eq_ignore_ascii_case(CONTENT_TYPE))
        .and_then(|(_, value)| printable(value))
        .map(str::to_owned);
    Plain {
        event_type: EVENT_TYPE.to_owned(),
        source: format!("/apis/v1/namespaces/{namespace}/natssources/{name}"),
        id,
        subject: Some(message.subject.to_owned()),
        time,
        content_type,
        extension_prefix: HEADER_EXTENSION_PREFIX,
        headers: joined_headers(message.headers),
        extensions: Vec::new(),
        payload,
    }
}

/// The headers other than `Content-Type`, one entry per name (NATS headers may repeat): the
/// values joined with `,` in order, as HTTP joins them.
fn joined_headers(headers: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    let mut joined: Vec<(String, Vec<u8>)> = Vec::new();
    let mut at: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (name, value) in headers {
        if name.eq_ignore_ascii_case(CONTENT_TYPE) {
            continue;
        }
        match at.get(name.as_str()) {
            Some(&index) => {
                if let Some((_, values)) = joined.get_mut(index) {
                    values.push(b',');
                    values.extend_from_slice(value);
                }
            }
            None => {
                at.insert(name, joined.len());
                joined.push((name.clone(), value.clone()));
            }
        }
    }
    joined
}

#[cfg(test)]
mod tests {
    use switchyard_event::{AttrValue, Data, DataForm, Event};

    use super::*;

    fn header(name: &str, value: &str) -> (String, Vec<u8>) {
        (name.to_owned(), value.as_bytes().to_vec())
    }

    fn jetstream<'a>(headers: &'a [(String, Vec<u8>)], payload: &'a Bytes) -> MessageParts<'a> {
        MessageParts {
            subject: "orders.eu.created",
            headers,
            payload,
            origin: Origin::JetStream { stream: "ORDERS", sequence: 42, published_ms: Some(1_764_583_200_123) },
        }
    }

    fn wrapped(event: MessageEvent) -> Event {
        match event {
            MessageEvent::Wrapped(event) => event,
            other => panic!("expected a wrapped message, got {other:?}"),
        }
    }

    #[test]
    fn plain_jetstream_messages_are_wrapped_with_a_stable_id() {
        let payload = Bytes::from_static(b"{\"sku\":\"A1\"}");
        let headers = [
            header("Content-Type", "Application/JSON"),
            header("X-Trace", "a"),
            header("X-Trace", "b"),
            header("Nats-Msg-Id", "m-7"),
        ];
        let event = wrapped(message_event("shop", "orders", jetstream(&headers, &payload)));
        assert_eq!(event.id(), "ORDERS:42");
        assert_eq!(event.ty(), EVENT_TYPE);
        assert_eq!(event.source(), "/apis/v1/namespaces/shop/natssources/orders");
        assert_eq!(event.get_str("subject"), Some("orders.eu.created"));
        assert_eq!(event.get_str("time"), Some("2025-12-01T10:00:00.123Z"));
        assert_eq!(event.datacontenttype(), Some("application/json"));
        assert_eq!(event.get_str("natsheaderxtrace"), Some("a,b"));
        assert_eq!(event.get_str("natsheadernatsmsgid"), Some("m-7"));
        assert!(event.get("natsheadercontenttype").is_none());
        assert_eq!(event.data().map(|d| (d.form, d.bytes.clone())), Some((DataForm::Json, payload.clone())));
        // A redelivery is the same event.
        assert_eq!(wrapped(message_event("shop", "orders", jetstream(&headers, &payload))), event);
    }

    #[test]
    fn core_messages_get_fresh_ids_and_empty_payloads_no_data() {
        let payload = Bytes::new();
        let message = MessageParts { origin: Origin::Core, ..jetstream(&[], &payload) };
        let first = wrapped(message_event("ns", "s", message));
        let second = wrapped(message_event("ns", "s", message));
        assert_ne!(first.id(), second.id());
        assert!(uuid::Uuid::parse_str(first.id()).is_ok());
        assert!(first.data().is_none() && first.get("time").is_none());
        let binary = Bytes::from_static(&[0, 159, 146, 150]);
        let event = wrapped(message_event("ns", "s", MessageParts { payload: &binary, ..message }));
        assert_eq!(event.data().map(|d| (d.form, d.bytes.clone())), Some((DataForm::Binary, binary)));
    }

    fn original() -> Event {
        Event::new(
            vec![
                ("specversion".to_owned(), AttrValue::String("1.0".to_owned())),
                ("id".to_owned(), AttrValue::String("order-1".to_owned())),
                ("source".to_owned(), AttrValue::String("/shop".to_owned())),
                ("type".to_owned(), AttrValue::String("order.created".to_owned())),
                ("region".to_owned(), AttrValue::String("eu".to_owned())),
                ("datacontenttype".to_owned(), AttrValue::String("application/json".to_owned())),
            ],
            Some(Data { form: DataForm::Json, bytes: Bytes::from_static(b"{\"n\":1}") }),
        )
        .unwrap()
    }

    #[test]
    fn binary_mode_cloudevents_pass_through() {
        let payload = Bytes::from_static(b"{\"n\":1}");
        let headers = [
            header("ce-specversion", "1.0"),
            header("ce-id", "order-1"),
            header("ce-source", "/shop"),
            header("ce-type", "order.created"),
            header("ce-region", "eu"),
            header("content-type", "application/json"),
        ];
        let MessageEvent::CloudEvent(event) = message_event("ns", "s", jetstream(&headers, &payload)) else {
            panic!("a binary-mode CloudEvent passes through")
        };
        assert_eq!(event, original());
    }

    #[test]
    fn structured_mode_cloudevents_pass_through() {
        let payload = Bytes::from(switchyard_event::json::encode_event(&original()));
        let headers = [header("content-type", "application/cloudevents+json; charset=utf-8")];
        let MessageEvent::CloudEvent(event) = message_event("ns", "s", jetstream(&headers, &payload)) else {
            panic!("a structured-mode CloudEvent passes through")
        };
        assert_eq!(event, original());
    }

    #[test]
    fn messages_that_claim_to_be_cloudevents_but_are_not_are_wrapped_with_why() {
        let payload = Bytes::from_static(b"{nope");
        for headers in [
            vec![header("ce-specversion", "1.0"), header("ce-type", "t")],
            vec![header("Content-Type", "application/cloudevents+json")],
            vec![header("ce-specversion", "1.0"), header("ce-id", "a"), header("ce-id", "b")],
        ] {
            let MessageEvent::WrappedInvalid { event, .. } = message_event("ns", "s", jetstream(&headers, &payload))
            else {
                panic!("{headers:?}: wrapped as invalid")
            };
            assert_eq!(event.id(), "ORDERS:42");
            assert_eq!(event.data().map(|d| d.bytes.clone()), Some(payload.clone()));
        }
    }

    #[test]
    fn odd_messages_are_wrapped_or_skipped_never_a_panic() {
        let payload = Bytes::from_static(b"x");
        // Headers no attribute can hold are left out; the content type too.
        let headers = [("bin".to_owned(), vec![0xff]), ("content-type".to_owned(), vec![0xff, 0xfe])];
        let event = wrapped(message_event("ns", "s", jetstream(&headers, &payload)));
        assert!(event.get("natsheaderbin").is_none() && event.datacontenttype().is_none());
        // A subject with a control character, more headers than an event holds: skipped.
        let message = MessageParts { subject: "bad\u{7}", ..jetstream(&[], &payload) };
        assert!(matches!(message_event("ns", "s", message), MessageEvent::Unmappable(_)));
        let many: Vec<_> = (0..70_000).map(|i| header(&format!("h{i}"), "v")).collect();
        assert!(matches!(message_event("ns", "s", jetstream(&many, &payload)), MessageEvent::Unmappable(_)));
        // Times RFC 3339 cannot write are left out.
        let message = MessageParts {
            origin: Origin::JetStream { stream: "S", sequence: u64::MAX, published_ms: Some(i64::MIN) },
            ..jetstream(&[], &payload)
        };
        let event = wrapped(message_event("ns", "s", message));
        assert!(event.get("time").is_none());
        assert_eq!(event.id(), format!("S:{}", u64::MAX));
    }
}
