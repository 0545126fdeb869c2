//! A Kafka record as a CloudEvent, as Knative's KafkaSource makes it
//! (`eventing-kafka-broker`, `InvalidCloudEventInterceptor`): a record that already is a
//! CloudEvent in the Kafka protocol binding (binary or structured mode) passes through
//! unchanged; any other is wrapped, including one that claims to be a CloudEvent but is not a
//! valid one (Knative wraps those too; the source counts them). A record no event can carry is
//! skipped, never a panic: the source goes on with the next one. Pure code.

use base64::Engine as _;
use bytes::Bytes;
use switchyard_event::{AttrValue, Data, Event, EventError};

use crate::message::{
    extension_suffix, is_cloudevents_media_type, printable, rfc3339_millis, Extensions, CLOUDEVENTS_MEDIA_TYPE_PREFIX,
};

/// The type of a wrapped record (Knative's `KafkaEventType`).
pub const EVENT_TYPE: &str = "dev.knative.kafka.event";
/// Prefix of the extensions that carry a wrapped record's headers.
const HEADER_EXTENSION_PREFIX: &str = "kafkaheader";

/// The parts of a record the mapping reads.
#[derive(Debug, Clone, Copy)]
pub struct RecordParts<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// The record timestamp, milliseconds since the Unix epoch.
    pub timestamp_ms: Option<i64>,
    /// The key.
    pub key: Option<&'a [u8]>,
    /// The headers, in order.
    pub headers: &'a [(String, Option<Vec<u8>>)],
    /// The value.
    pub value: Option<&'a Bytes>,
}

/// What a record became: passed through (a CloudEvent in the Kafka binding, binary or structured
/// mode), wrapped as Knative wraps it, wrapped though it claims to be a CloudEvent (a
/// `ce_specversion` header, or an `application/cloudevents…` content type) but is not a valid
/// one (as Knative's KafkaSource does, so the partition moves on), or skipped because no event
/// can carry it (a topic name with a control character, more headers than an event has
/// attributes).
pub use crate::message::MessageEvent as RecordEvent;

/// The event a record of KafkaSource `namespace/name` stands for. Never panics, whatever the
/// record holds.
///
/// A wrapped record gets `id` `partition:<p>/offset:<o>`, `source`
/// `/apis/v1/namespaces/<ns>/kafkasources/<name>#<topic>`, `type` [`EVENT_TYPE`], `subject`
/// `partition:<p>#<o>`, `time` the record timestamp, `datacontenttype` its `content-type`
/// header (lower-cased, as Knative does; left out when empty, and carried as the extension
/// `kafkaheadercontenttype` when it names a CloudEvents format the value is not in), the key as both `key` and
/// `partitionkey` (so one key's events stay in order on the broker), every other header as an
/// extension `kafkaheader<name>` (the name lower-cased, keeping only letters and digits; of
/// headers that give the same name, the last wins), and the value as the data, byte for byte.
/// A key that is not printable UTF-8 is carried as its base64; a header whose value is null or
/// not printable UTF-8 is left out.
pub fn record_event(namespace: &str, name: &str, record: RecordParts<'_>) -> RecordEvent {
    let headers = record.headers.iter().map(|(name, value)| (name.as_str(), value.as_deref()));
    let not_a_cloudevent = match switchyard_event::kafka::decode(headers, record.key, record.value.cloned()) {
        Ok(event) => return RecordEvent::CloudEvent(event),
        Err(error) => error,
    };
    match wrap(namespace, name, record) {
        Ok(event) if claims_to_be_a_cloudevent(record.headers) => {
            RecordEvent::WrappedInvalid { event, error: not_a_cloudevent }
        }
        Ok(event) => RecordEvent::Wrapped(event),
        Err(error) => RecordEvent::Unmappable(error),
    }
}

/// Whether the record says it is a CloudEvent: a binary-mode `ce_specversion` header, or a
/// structured-mode content type.
fn claims_to_be_a_cloudevent(headers: &[(String, Option<Vec<u8>>)]) -> bool {
    headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("ce_specversion")
            || (name.eq_ignore_ascii_case(switchyard_event::kafka::CONTENT_TYPE)
                && value.as_deref().is_some_and(is_cloudevents_media_type))
    })
}

fn wrap(namespace: &str, name: &str, record: RecordParts<'_>) -> Result<Event, EventError> {
    let RecordParts { topic, partition, offset, .. } = record;
    let text = |value: String| AttrValue::String(value);
    let mut attributes = vec![
        ("specversion".to_owned(), text("1.0".to_owned())),
        ("id".to_owned(), text(format!("partition:{partition}/offset:{offset}"))),
        ("source".to_owned(), text(format!("/apis/v1/namespaces/{namespace}/kafkasources/{name}#{topic}"))),
        ("type".to_owned(), text(EVENT_TYPE.to_owned())),
        ("subject".to_owned(), text(format!("partition:{partition}#{offset}"))),
    ];
    if let Some(time) = record.timestamp_ms.and_then(rfc3339_millis) {
        attributes.push(("time".to_owned(), text(time)));
    }
    // An empty `content-type` says nothing, and `datacontenttype` may not be empty. A
    // CloudEvents format's media type is not what the value is (it did not decode as one), and
    // an event carrying it would be read as a structured-mode record wherever the Kafka binding
    // stores it: it travels as the extension `kafkaheadercontenttype` instead.
    let mut content_type = record
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(switchyard_event::kafka::CONTENT_TYPE))
        .and_then(|(_, value)| printable(value.as_deref()?))
        .filter(|content_type| !content_type.is_empty())
        .map(|content_type| content_type.to_ascii_lowercase());
    let claimed_format = content_type.take_if(|content_type| content_type.starts_with(CLOUDEVENTS_MEDIA_TYPE_PREFIX));
    if let Some(content_type) = &content_type {
        attributes.push(("datacontenttype".to_owned(), text(content_type.clone())));
    }
    let data = record.value.map(|bytes| Data {
        form: switchyard_event::DataForm::infer(content_type.as_deref(), bytes),
        bytes: bytes.clone(),
    });
    // Extensions are gathered apart, a later one replacing an earlier one of the same name in
    // its place, in linear time: a record may carry many thousands of headers.
    let mut extensions = Extensions::default();
    if let Some(key) = record.key {
        let key = printable(key).map_or_else(|| base64::engine::general_purpose::STANDARD.encode(key), str::to_owned);
        extensions.set("key".to_owned(), key.clone());
        extensions.set(switchyard_event::kafka::PARTITION_KEY.to_owned(), key);
    }
    if let Some(claimed_format) = claimed_format {
        extensions.set(format!("{HEADER_EXTENSION_PREFIX}contenttype"), claimed_format);
    }
    for (header, value) in record.headers {
        if header.eq_ignore_ascii_case(switchyard_event::kafka::CONTENT_TYPE) {
            continue;
        }
        let Some(value) = value.as_deref().and_then(printable) else { continue };
        extensions.set(format!("{HEADER_EXTENSION_PREFIX}{}", extension_suffix(header)), value.to_owned());
    }
    attributes.extend(extensions.attributes.into_iter().map(|(name, value)| (name, text(value))));
    // Checked, not assumed: the topic comes from the record, and the extensions may be more
    // than an event holds.
    Event::new(attributes, data)
}

#[cfg(test)]
mod tests {
    use switchyard_event::DataForm;

    use super::*;

    fn parts<'a>(
        headers: &'a [(String, Option<Vec<u8>>)],
        key: Option<&'a [u8]>,
        value: Option<&'a Bytes>,
    ) -> RecordParts<'a> {
        RecordParts {
            topic: "orders",
            partition: 2,
            offset: 41,
            timestamp_ms: Some(1_764_583_200_123),
            key,
            headers,
            value,
        }
    }

    type Header = (String, Option<Vec<u8>>);

    fn header(name: &str, value: &str) -> Header {
        (name.to_owned(), Some(value.as_bytes().to_vec()))
    }

    #[test]
    fn plain_records_are_wrapped_as_knative_does() {
        let value = Bytes::from_static(b"{\"sku\":\"A1\"}");
        let headers =
            [header("Content-Type", "Application/JSON"), header("X-Trace_Id", "abc"), ("empty".to_owned(), None)];
        let event = wrapped(record_event("shop", "orders-src", parts(&headers, Some(b"customer-7"), Some(&value))));
        let attribute = |name: &str| event.get(name).map(|v| v.to_canonical_string().into_owned());
        assert_eq!(event.id(), "partition:2/offset:41");
        assert_eq!(event.source(), "/apis/v1/namespaces/shop/kafkasources/orders-src#orders");
        assert_eq!(event.ty(), EVENT_TYPE);
        assert_eq!(attribute("subject").as_deref(), Some("partition:2#41"));
        assert_eq!(attribute("time").as_deref(), Some("2025-12-01T10:00:00.123Z"));
        assert_eq!(event.datacontenttype(), Some("application/json"));
        assert_eq!(attribute("key").as_deref(), Some("customer-7"));
        assert_eq!(attribute("partitionkey").as_deref(), Some("customer-7"));
        assert_eq!(attribute("kafkaheaderxtraceid").as_deref(), Some("abc"));
        assert!(event.get("kafkaheaderempty").is_none());
        assert_eq!(event.data().map(|d| (d.form, d.bytes.clone())), Some((DataForm::Json, value)));
    }

    #[test]
    fn keys_that_are_not_text_travel_as_base64_and_bad_headers_are_left_out() {
        let value = Bytes::from_static(&[0, 159, 146, 150]);
        let headers = [("bin".to_owned(), Some(vec![0xff, 0xfe])), header("ctl", "a\u{7}b")];
        let event = wrapped(record_event("ns", "s", parts(&headers, Some(&[0, 1, 2]), Some(&value))));
        assert_eq!(event.get_str("key"), Some("AAEC"));
        assert!(event.get("kafkaheaderbin").is_none() && event.get("kafkaheaderctl").is_none());
        assert_eq!(event.data().map(|d| d.form), Some(DataForm::Binary));
        assert!(event.datacontenttype().is_none());
        let no_value = wrapped(record_event("ns", "s", parts(&[], None, None)));
        assert!(no_value.data().is_none() && no_value.get("key").is_none());
    }

    #[test]
    fn cloudevents_records_pass_through_unchanged() {
        let original = Event::new(
            vec![
                ("specversion".to_owned(), AttrValue::String("1.0".to_owned())),
                ("id".to_owned(), AttrValue::String("order-1".to_owned())),
                ("source".to_owned(), AttrValue::String("/shop".to_owned())),
                ("type".to_owned(), AttrValue::String("order.created".to_owned())),
                ("region".to_owned(), AttrValue::String("eu".to_owned())),
            ],
            Some(Data { form: DataForm::Binary, bytes: Bytes::from_static(b"raw") }),
        )
        .unwrap();
        for record in
            [switchyard_event::kafka::encode_binary(&original), switchyard_event::kafka::encode_structured(&original)]
        {
            let headers: Vec<(String, Option<Vec<u8>>)> =
                record.headers.iter().map(|(n, v)| (n.clone(), Some(v.clone()))).collect();
            let RecordEvent::CloudEvent(event) =
                record_event("ns", "s", parts(&headers, record.key.as_deref(), record.value.as_ref()))
            else {
                panic!("a CloudEvents record passes through")
            };
            assert_eq!(event.id(), "order-1");
            assert_eq!(event.get_str("region"), Some("eu"));
            assert_eq!(event.data().map(|d| d.bytes.clone()), Some(Bytes::from_static(b"raw")));
        }
    }

    fn wrapped(mapped: RecordEvent) -> Event {
        match mapped {
            RecordEvent::Wrapped(event) => event,
            other => panic!("expected a wrapped record, got {other:?}"),
        }
    }

    fn wrapped_invalid(mapped: RecordEvent) -> (Event, EventError) {
        match mapped {
            RecordEvent::WrappedInvalid { event, error } => (event, error),
            other => panic!("expected an invalid CloudEvent wrapped, got {other:?}"),
        }
    }

    #[test]
    fn an_empty_or_unreadable_content_type_is_left_out() {
        let value = Bytes::from_static(b"payload");
        for content_type in [Some(b"".to_vec()), Some(vec![0xff, 0xfe]), Some(b"text/\x07plain".to_vec()), None] {
            let headers = [("content-type".to_owned(), content_type.clone()), header("x", "y")];
            let event = wrapped(record_event("ns", "s", parts(&headers, None, Some(&value))));
            assert!(event.datacontenttype().is_none(), "{content_type:?}");
            assert_eq!(event.get_str("kafkaheaderx"), Some("y"));
            assert_eq!(event.data().map(|d| d.bytes.clone()), Some(value.clone()));
        }
    }

    #[test]
    fn records_that_claim_to_be_cloudevents_but_are_not_are_wrapped_with_why() {
        let value = Bytes::from_static(b"{\"not\": \"an event\"}");
        let cases: [(Vec<Header>, &str); 6] = [
            (vec![header("ce_specversion", "1.0"), header("ce_type", "t")], "'id'"),
            (
                vec![
                    header("ce_specversion", "2.0"),
                    header("ce_id", "1"),
                    header("ce_source", "/s"),
                    header("ce_type", "t"),
                ],
                "specversion",
            ),
            (vec![header("ce_specversion", "1.0"), header("ce_id", "1"), header("ce_id", "2")], "duplicate"),
            (vec![("ce_specversion".to_owned(), Some(vec![0xff])), header("ce_id", "1")], "utf-8"),
            (vec![header("content-type", "application/cloudevents+json")], "missing required attribute"),
            (vec![header("Content-Type", "application/cloudevents-batch+json")], "unsupported"),
        ];
        for (headers, why) in cases {
            let (event, error) = wrapped_invalid(record_event("ns", "s", parts(&headers, Some(b"k"), Some(&value))));
            assert_eq!(event.ty(), EVENT_TYPE, "{headers:?}");
            // Stored in the Kafka binding's binary mode, it reads back as it was.
            assert_eq!(switchyard_event::kafka::encode_binary(&event).decode().as_ref(), Ok(&event), "{headers:?}");
            assert_eq!(event.data().map(|d| d.bytes.clone()), Some(value.clone()), "the record's value, as it was");
            assert!(error.to_string().contains(why), "{headers:?}: {error}");
        }
        let headers = [header("Content-Type", "Application/CloudEvents-Batch+JSON")];
        let (event, _) = wrapped_invalid(record_event("ns", "s", parts(&headers, None, Some(&value))));
        assert!(event.datacontenttype().is_none());
        assert_eq!(event.get_str("kafkaheadercontenttype"), Some("application/cloudevents-batch+json"));
        // `ce_specversion` without a value: wrapped, and the header (no value) is left out.
        let headers = [("ce_specversion".to_owned(), None)];
        let (event, _) = wrapped_invalid(record_event("ns", "s", parts(&headers, None, None)));
        assert!(event.get("kafkaheadercespecversion").is_none());
    }

    #[test]
    fn odd_records_are_wrapped_or_skipped_never_a_panic() {
        let value = Bytes::from_static(b"v");
        // Times outside what RFC 3339 writes, extreme partitions and offsets.
        for timestamp_ms in [Some(i64::MIN), Some(i64::MAX), Some(-62_167_219_200_001), Some(253_402_300_800_000), None]
        {
            let record =
                RecordParts { partition: i32::MIN, offset: i64::MAX, timestamp_ms, ..parts(&[], None, Some(&value)) };
            let event = wrapped(record_event("ns", "s", record));
            assert!(event.get("time").is_none(), "{timestamp_ms:?}");
        }
        // A huge key is carried (admission decides whether the event is too large).
        let key = vec![b'k'; 1 << 20];
        assert_eq!(
            wrapped(record_event("ns", "s", parts(&[], Some(&key), None))).get_str("key").map(str::len),
            Some(1 << 20)
        );
        // Many headers giving the same extension name: the last wins, in linear time.
        let headers: Vec<_> =
            (0..100_000).map(|i| header(if i % 2 == 0 { "X-A" } else { "x_a" }, &i.to_string())).collect();
        assert_eq!(
            wrapped(record_event("ns", "s", parts(&headers, None, None))).get_str("kafkaheaderxa"),
            Some("99999")
        );
        // More distinct headers than an event has attributes, and a topic no attribute can
        // hold: skipped, with why.
        let headers: Vec<_> = (0..70_000).map(|i| header(&format!("h{i}"), "v")).collect();
        let RecordEvent::Unmappable(error) = record_event("ns", "s", parts(&headers, None, None)) else {
            panic!("too many headers")
        };
        assert!(error.to_string().contains("too many attributes"), "{error}");
        let record = RecordParts { topic: "bad\ntopic", ..parts(&[], None, None) };
        assert!(matches!(record_event("ns", "s", record), RecordEvent::Unmappable(_)));
    }
}
