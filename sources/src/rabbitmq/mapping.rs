//! A RabbitMQ (AMQP 0-9-1) message as a CloudEvent: one that is a CloudEvent passes through
//! unchanged, any other is wrapped as Knative's RabbitmqSource wraps it. Pure code.
//!
//! # Which messages are CloudEvents
//!
//! Three header conventions carry attributes, tried in this order (header names matched
//! case-insensitively), with the `content_type` property (else a `content-type` header) as
//! `datacontenttype` in binary mode and as the event format in structured mode
//! (`application/cloudevents+json`):
//!
//! - the CloudEvents AMQP binding: application properties `cloudEvents_<attribute>`, or the
//!   older `cloudEvents:<attribute>` (AMQP 1.0, but AMQP 0-9-1 clients use the same names);
//! - Knative's RabbitMQ source adapter: `ce-<attribute>` headers;
//! - Knative's RabbitMQ broker: unprefixed headers (`specversion`, `id`, `type`, `source`, the
//!   extensions as their own names), recognised by a `specversion` header; as Knative reads
//!   them, headers starting with `x-` (RabbitMQ's own, such as `x-death`) are not attributes.
//!
//! A message with none of them, and no CloudEvents content type, is wrapped.

use bytes::Bytes;
use lapin::types::AMQPValue;

use crate::message::{content_id, is_cloudevents_media_type, printable, rfc3339_millis, MessageEvent, Plain};

/// `type` of a wrapped message, as Knative sets it.
pub const EVENT_TYPE: &str = "dev.knative.rabbitmq.event";
/// Prefix of the extensions carrying a wrapped message's headers.
pub const HEADER_EXTENSION_PREFIX: &str = "rabbitmqheader";

/// The CloudEvents AMQP binding's attribute prefix, and its older form.
const AMQP_PREFIX: &str = "cloudEvents_";
const AMQP_OLD_PREFIX: &str = "cloudEvents:";
/// Knative's source adapter's attribute prefix (its broker writes attributes unprefixed).
const KNATIVE_PREFIX: &str = "ce-";
const CONTENT_TYPE: &str = "content-type";

/// What a delivery carries, as the mapping needs it.
#[derive(Debug, Clone, Copy)]
pub struct MessageParts<'a> {
    /// The queue the message was consumed from.
    pub queue: &'a str,
    /// The exchange it was published to (empty: the default exchange).
    pub exchange: &'a str,
    /// Its routing key.
    pub routing_key: &'a str,
    /// The `message_id` property.
    pub message_id: Option<&'a str>,
    /// The `content_type` property.
    pub content_type: Option<&'a str>,
    /// The `timestamp` property, in seconds since the epoch.
    pub timestamp: Option<u64>,
    /// The `headers` table, each value as text ([`header_value`]); `None` for a value that has
    /// no text form (a nested table or array).
    pub headers: &'a [(String, Option<Vec<u8>>)],
    /// The body.
    pub body: &'a Bytes,
}

/// A header value as the bytes of its text: strings and byte arrays as they are, numbers,
/// booleans and timestamps (seconds) written out; `None` for nested tables and arrays, decimals
/// and void, which no attribute can hold.
pub fn header_value(value: &AMQPValue) -> Option<Vec<u8>> {
    let text = match value {
        AMQPValue::LongString(s) => return Some(s.as_bytes().to_vec()),
        AMQPValue::ShortString(s) => return Some(s.as_str().as_bytes().to_vec()),
        AMQPValue::ByteArray(bytes) => return Some(bytes.as_slice().to_vec()),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Float(n) => n.to_string(),
        AMQPValue::Double(n) => n.to_string(),
        AMQPValue::Timestamp(n) => n.to_string(),
        AMQPValue::DecimalValue(_) | AMQPValue::FieldArray(_) | AMQPValue::FieldTable(_) | AMQPValue::Void => {
            return None
        }
    };
    Some(text.into_bytes())
}

fn starts_with_ignore_case(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len() && name.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// The header convention a message uses, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Convention {
    Amqp,
    KnativeSource,
    KnativeBroker,
}

fn convention(headers: &[(String, Option<Vec<u8>>)]) -> Option<Convention> {
    let names = || headers.iter().map(|(name, _)| name.as_str());
    if names().any(|name| starts_with_ignore_case(name, AMQP_PREFIX) || starts_with_ignore_case(name, AMQP_OLD_PREFIX))
    {
        Some(Convention::Amqp)
    } else if names().any(|name| name.eq_ignore_ascii_case("ce-specversion")) {
        Some(Convention::KnativeSource)
    } else if names().any(|name| name.eq_ignore_ascii_case("specversion")) {
        Some(Convention::KnativeBroker)
    } else {
        None
    }
}

/// The message's content type: the property, else a `content-type` header; never empty.
fn content_type<'a>(parts: &MessageParts<'a>) -> Option<&'a str> {
    parts.content_type.filter(|c| !c.is_empty()).or_else(|| {
        parts
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(CONTENT_TYPE))
            .and_then(|(_, value)| std::str::from_utf8(value.as_deref()?).ok())
            .filter(|c| !c.is_empty())
    })
}

/// The event a message of RabbitmqSource `namespace/name` stands for. Never panics, whatever the
/// message holds.
///
/// A wrapped message gets `type` [`EVENT_TYPE`], `source`
/// `/apis/v1/namespaces/<ns>/rabbitmqsources/<name>#<queue>`, `id` its `message_id` property
/// when it has one (as Knative), else `sha256:` of the queue, exchange, routing key and body
/// ([`content_id`]: the same for every redelivery, so identical messages published to the same
/// exchange with the same routing key share an id — a producer tells them apart by setting
/// `message_id`), `subject` the id (as Knative), `time` the `timestamp` property,
/// `datacontenttype` the content type, the extensions `rabbitmqexchange` and
/// `rabbitmqroutingkey` (when not empty), every header as an extension `rabbitmqheader<name>`
/// ([`Plain`]'s rules), and the body as the data, byte for byte (none when empty).
pub fn message_event(namespace: &str, name: &str, parts: MessageParts<'_>) -> MessageEvent {
    let content_type = content_type(&parts);
    let convention = convention(parts.headers);
    let claims = convention.is_some() || content_type.is_some_and(|c| is_cloudevents_media_type(c.as_bytes()));
    let decoded = decode(&parts, convention, content_type);
    MessageEvent::of(decoded, claims, || wrap(namespace, name, &parts, content_type))
}

fn decode(
    parts: &MessageParts<'_>,
    convention: Option<Convention>,
    content_type: Option<&str>,
) -> Result<switchyard_event::Event, switchyard_event::EventError> {
    // Every convention is read by the one prefixed-header decoder: attribute headers renamed to
    // `ce-<attribute>`, the content type given once as `content-type`.
    let mut headers: Vec<(String, Option<&[u8]>)> = Vec::with_capacity(parts.headers.len() + 1);
    for (header, value) in parts.headers {
        if header.eq_ignore_ascii_case(CONTENT_TYPE) {
            continue;
        }
        let attribute = match convention {
            Some(Convention::Amqp) => [AMQP_PREFIX, AMQP_OLD_PREFIX]
                .into_iter()
                .find(|prefix| starts_with_ignore_case(header, prefix))
                .and_then(|prefix| header.get(prefix.len()..)),
            Some(Convention::KnativeSource) => {
                starts_with_ignore_case(header, KNATIVE_PREFIX).then(|| header.get(KNATIVE_PREFIX.len()..)).flatten()
            }
            Some(Convention::KnativeBroker) if starts_with_ignore_case(header, "x-") => None,
            Some(Convention::KnativeBroker) => Some(if starts_with_ignore_case(header, KNATIVE_PREFIX) {
                header.get(KNATIVE_PREFIX.len()..).unwrap_or_default()
            } else {
                header.as_str()
            }),
            None => None,
        };
        if let Some(attribute) = attribute {
            // Attribute names are lower case; the decoder checks the rest.
            headers.push((format!("{KNATIVE_PREFIX}{}", attribute.to_ascii_lowercase()), value.as_deref()));
        }
    }
    if let Some(content_type) = content_type {
        headers.push((CONTENT_TYPE.to_owned(), Some(content_type.as_bytes())));
    }
    let payload = (!parts.body.is_empty()).then(|| parts.body.clone());
    switchyard_event::headers::decode(headers.iter().map(|(n, v)| (n.as_str(), *v)), KNATIVE_PREFIX, payload)
}

fn wrap(namespace: &str, name: &str, parts: &MessageParts<'_>, content_type: Option<&str>) -> Plain {
    let id = match parts.message_id.filter(|id| !id.is_empty()) {
        Some(id) => id.to_owned(),
        None => {
            content_id(&[parts.queue.as_bytes(), parts.exchange.as_bytes(), parts.routing_key.as_bytes(), parts.body])
        }
    };
    let mut extensions = Vec::new();
    for (extension, value) in [("rabbitmqexchange", parts.exchange), ("rabbitmqroutingkey", parts.routing_key)] {
        if let Some(value) = printable(value.as_bytes()).filter(|value| !value.is_empty()) {
            extensions.push((extension.to_owned(), value.to_owned()));
        }
    }
    Plain {
        event_type: EVENT_TYPE.to_owned(),
        source: format!("/apis/v1/namespaces/{namespace}/rabbitmqsources/{name}#{}", parts.queue),
        subject: Some(id.clone()),
        id,
        time: parts.timestamp.and_then(|s| i64::try_from(s).ok()?.checked_mul(1000)).and_then(rfc3339_millis),
        content_type: content_type.map(str::to_owned),
        extension_prefix: HEADER_EXTENSION_PREFIX,
        headers: parts
            .headers
            .iter()
            .filter(|(header, _)| !header.eq_ignore_ascii_case(CONTENT_TYPE))
            .filter_map(|(header, value)| Some((header.clone(), value.clone()?)))
            .collect(),
        extensions,
        payload: (!parts.body.is_empty()).then(|| parts.body.clone()),
    }
}

#[cfg(test)]
mod tests {
    use switchyard_event::{AttrValue, Data, DataForm, Event};

    use super::*;

    type Header = (String, Option<Vec<u8>>);

    fn header(name: &str, value: &str) -> Header {
        (name.to_owned(), Some(value.as_bytes().to_vec()))
    }

    fn parts<'a>(headers: &'a [Header], body: &'a Bytes) -> MessageParts<'a> {
        MessageParts {
            queue: "orders",
            exchange: "shop",
            routing_key: "order.created",
            message_id: None,
            content_type: None,
            timestamp: Some(1_764_583_200),
            headers,
            body,
        }
    }

    fn text(event: &Event, name: &str) -> Option<String> {
        event.get(name).map(|v| v.to_canonical_string().into_owned())
    }

    fn wrapped(mapped: MessageEvent) -> Event {
        match mapped {
            MessageEvent::Wrapped(event) => event,
            other => panic!("expected a wrapped message, got {other:?}"),
        }
    }

    /// The event passed through, as JSON (attribute order aside).
    fn passed_through(mapped: MessageEvent) -> serde_json::Value {
        match mapped {
            MessageEvent::CloudEvent(event) => switchyard_event::json::to_value(&event),
            other => panic!("expected a CloudEvent, got {other:?}"),
        }
    }

    #[test]
    fn plain_messages_are_wrapped_as_knative_does() {
        let body = Bytes::from_static(b"{\"sku\":\"A1\"}");
        let headers = [header("X-Trace", "abc"), ("nested".to_owned(), None)];
        let mut message = parts(&headers, &body);
        message.content_type = Some("Application/JSON");
        message.message_id = Some("m-7");
        let event = wrapped(message_event("shop", "orders-src", message));
        assert_eq!(event.id(), "m-7");
        assert_eq!(event.ty(), EVENT_TYPE);
        assert_eq!(event.source(), "/apis/v1/namespaces/shop/rabbitmqsources/orders-src#orders");
        assert_eq!(text(&event, "subject").as_deref(), Some("m-7"));
        assert_eq!(text(&event, "time").as_deref(), Some("2025-12-01T10:00:00.000Z"));
        assert_eq!(event.datacontenttype(), Some("application/json"));
        assert_eq!(text(&event, "rabbitmqheaderxtrace").as_deref(), Some("abc"));
        assert_eq!(text(&event, "rabbitmqexchange").as_deref(), Some("shop"));
        assert_eq!(text(&event, "rabbitmqroutingkey").as_deref(), Some("order.created"));
        assert!(event.get("rabbitmqheadernested").is_none());
        assert_eq!(event.data().map(|d| (d.form, d.bytes.clone())), Some((DataForm::Json, body)));
    }

    #[test]
    fn without_a_message_id_the_id_is_stable_and_depends_on_the_content() {
        let body = Bytes::from_static(&[0, 1, 2]);
        let first = wrapped(message_event("ns", "s", parts(&[], &body)));
        let again = wrapped(message_event("ns", "s", parts(&[], &body)));
        assert_eq!(first.id(), again.id(), "a redelivery is recognisable");
        assert!(first.id().starts_with("sha256:"));
        let other = Bytes::from_static(&[0, 1, 3]);
        assert_ne!(first.id(), wrapped(message_event("ns", "s", parts(&[], &other))).id());
        let mut elsewhere = parts(&[], &body);
        elsewhere.routing_key = "other";
        assert_ne!(first.id(), wrapped(message_event("ns", "s", elsewhere)).id());
        assert_eq!(first.data().map(|d| d.form), Some(DataForm::Binary));
        let empty = Bytes::new();
        let mut message = parts(&[], &empty);
        (message.exchange, message.routing_key, message.timestamp) = ("", "", None);
        let event = wrapped(message_event("ns", "s", message));
        assert!(event.data().is_none() && event.get("time").is_none() && event.get("rabbitmqexchange").is_none());
    }

    fn original() -> serde_json::Value {
        switchyard_event::json::to_value(&original_event())
    }

    fn original_event() -> Event {
        Event::new(
            vec![
                ("specversion".to_owned(), AttrValue::String("1.0".to_owned())),
                ("id".to_owned(), AttrValue::String("order-1".to_owned())),
                ("source".to_owned(), AttrValue::String("/shop".to_owned())),
                ("type".to_owned(), AttrValue::String("order.created".to_owned())),
                ("datacontenttype".to_owned(), AttrValue::String("text/plain".to_owned())),
                ("region".to_owned(), AttrValue::String("eu".to_owned())),
            ],
            Some(Data { form: DataForm::Text, bytes: Bytes::from_static(b"by boat") }),
        )
        .unwrap()
    }

    #[test]
    fn every_binary_convention_passes_through() {
        let body = Bytes::from_static(b"by boat");
        let attributes = [("specversion", "1.0"), ("id", "order-1"), ("source", "/shop"), ("type", "order.created")];
        for prefix in ["cloudEvents_", "cloudEvents:", "CloudEvents_", "ce-", ""] {
            let mut headers: Vec<Header> =
                attributes.iter().map(|(name, value)| header(&format!("{prefix}{name}"), value)).collect();
            headers.push(header(&format!("{prefix}region"), "eu"));
            // RabbitMQ's own headers are never attributes; other conventions ignore them anyway.
            headers.push(("x-death".to_owned(), None));
            let mut message = parts(&headers, &body);
            message.content_type = Some("text/plain");
            let event = passed_through(message_event("ns", "s", message));
            assert_eq!(event, original(), "prefix '{prefix}'");
        }
        // Knative's broker also writes the content type as a header.
        let headers: Vec<Header> = attributes
            .iter()
            .map(|(name, value)| header(name, value))
            .chain([header("region", "eu"), header("content-type", "text/plain")])
            .collect();
        assert_eq!(passed_through(message_event("ns", "s", parts(&headers, &body))), original());
    }

    #[test]
    fn structured_messages_pass_through() {
        let body = Bytes::from(switchyard_event::json::encode_event(&original_event()));
        let mut message = parts(&[], &body);
        message.content_type = Some("application/cloudevents+json; charset=utf-8");
        assert_eq!(passed_through(message_event("ns", "s", message)), original());
    }

    #[test]
    fn messages_that_claim_to_be_cloudevents_but_are_not_are_wrapped_with_why() {
        let body = Bytes::from_static(b"{nope");
        let cases: [(Vec<Header>, Option<&str>); 4] = [
            (vec![header("cloudEvents_specversion", "1.0"), header("cloudEvents_type", "t")], None),
            (vec![header("ce-specversion", "1.0")], None),
            (vec![("specversion".to_owned(), Some(vec![0xff]))], None),
            (vec![], Some("application/cloudevents+json")),
        ];
        for (headers, content_type) in cases {
            let mut message = parts(&headers, &body);
            message.content_type = content_type;
            let MessageEvent::WrappedInvalid { event, .. } = message_event("ns", "s", message) else {
                panic!("{headers:?} is wrapped as invalid")
            };
            assert_eq!(event.ty(), EVENT_TYPE);
            assert_eq!(event.data().map(|d| d.bytes.clone()), Some(body.clone()));
        }
    }

    #[test]
    fn odd_messages_never_panic() {
        let body = Bytes::from_static(b"x");
        for timestamp in [Some(u64::MAX), Some(i64::MAX as u64), Some(253_402_300_800)] {
            let mut message = parts(&[], &body);
            message.timestamp = timestamp;
            assert!(wrapped(message_event("ns", "s", message)).get("time").is_none());
        }
        let headers: Vec<Header> = (0..70_000).map(|i| header(&format!("h{i}"), "v")).collect();
        assert!(matches!(message_event("ns", "s", parts(&headers, &body)), MessageEvent::Unmappable(_)));
        let mut message = parts(&[], &body);
        message.queue = "bad\nqueue";
        assert!(matches!(message_event("ns", "s", message), MessageEvent::Unmappable(_)));
        let headers = [header("cloudEvents_", "1.0"), header("ce-specversion", "1.0")];
        assert!(matches!(message_event("ns", "s", parts(&headers, &body)), MessageEvent::WrappedInvalid { .. }));
    }

    #[test]
    fn header_values_are_written_as_text() {
        assert_eq!(header_value(&AMQPValue::LongInt(-3)), Some(b"-3".to_vec()));
        assert_eq!(header_value(&AMQPValue::Boolean(true)), Some(b"true".to_vec()));
        assert_eq!(header_value(&AMQPValue::LongString(b"abc".to_vec().into())), Some(b"abc".to_vec()));
        assert_eq!(header_value(&AMQPValue::Void), None);
    }
}
