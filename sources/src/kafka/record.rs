//! A Kafka record as a CloudEvent, as Knative's KafkaSource makes it
//! (`eventing-kafka-broker`, `InvalidCloudEventInterceptor`): a record that already is a
//! CloudEvent in the Kafka protocol binding (binary or structured mode) passes through
//! unchanged; any other is wrapped. Pure code.

use base64::Engine as _;
use bytes::Bytes;
use switchyard_event::{AttrValue, Data, Event};

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

/// The event a record of KafkaSource `namespace/name` stands for.
///
/// A wrapped record gets `id` `partition:<p>/offset:<o>`, `source`
/// `/apis/v1/namespaces/<ns>/kafkasources/<name>#<topic>`, `type` [`EVENT_TYPE`], `subject`
/// `partition:<p>#<o>`, `time` the record timestamp, `datacontenttype` its `content-type`
/// header (lower-cased, as Knative does), the key as both `key` and `partitionkey` (so one
/// key's events stay in order on the broker), every other header as an extension
/// `kafkaheader<name>` (the name lower-cased, keeping only letters and digits), and the value
/// as the data, byte for byte. A key that is not printable UTF-8 is carried as its base64; a
/// header whose value is null or not printable UTF-8 is left out.
pub fn record_event(namespace: &str, name: &str, record: RecordParts<'_>) -> Event {
    let headers = record.headers.iter().map(|(name, value)| (name.as_str(), value.as_deref()));
    if let Ok(event) = switchyard_event::kafka::decode(headers, record.key, record.value.cloned()) {
        return event;
    }
    wrap(namespace, name, record)
}

fn wrap(namespace: &str, name: &str, record: RecordParts<'_>) -> Event {
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
    let content_type = record
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(switchyard_event::kafka::CONTENT_TYPE))
        .and_then(|(_, value)| printable(value.as_deref()?))
        .map(|content_type| content_type.to_ascii_lowercase());
    if let Some(content_type) = &content_type {
        attributes.push(("datacontenttype".to_owned(), text(content_type.clone())));
    }
    let data = record.value.map(|bytes| Data {
        form: switchyard_event::DataForm::infer(content_type.as_deref(), bytes),
        bytes: bytes.clone(),
    });
    // Valid by construction: fixed names, and text that is printable (`printable`, topic names
    // are `[a-zA-Z0-9._-]`, the time is formatted here).
    let mut event = Event::new(attributes, data).expect("a wrapped record is a valid event");
    if let Some(key) = record.key {
        let key = printable(key).map_or_else(|| base64::engine::general_purpose::STANDARD.encode(key), str::to_owned);
        for name in ["key", switchyard_event::kafka::PARTITION_KEY] {
            let _ = event.set_extension(name, text(key.clone()));
        }
    }
    for (header, value) in record.headers {
        if header.eq_ignore_ascii_case(switchyard_event::kafka::CONTENT_TYPE) {
            continue;
        }
        let Some(value) = value.as_deref().and_then(printable) else { continue };
        let suffix: String = header
            .chars()
            .map(|c| c.to_ascii_lowercase())
            .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            .collect();
        let _ = event.set_extension(&format!("{HEADER_EXTENSION_PREFIX}{suffix}"), text(value.to_owned()));
    }
    event
}

/// The bytes as text, if they are UTF-8 without control characters (what an attribute may hold).
fn printable(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok().filter(|text| !text.chars().any(char::is_control))
}

/// RFC 3339 in UTC with milliseconds, as Knative writes record times.
fn rfc3339_millis(ms: i64) -> Option<String> {
    let time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    time.format(&time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .ok()
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

    fn header(name: &str, value: &str) -> (String, Option<Vec<u8>>) {
        (name.to_owned(), Some(value.as_bytes().to_vec()))
    }

    #[test]
    fn plain_records_are_wrapped_as_knative_does() {
        let value = Bytes::from_static(b"{\"sku\":\"A1\"}");
        let headers =
            [header("Content-Type", "Application/JSON"), header("X-Trace_Id", "abc"), ("empty".to_owned(), None)];
        let event = record_event("shop", "orders-src", parts(&headers, Some(b"customer-7"), Some(&value)));
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
        let event = record_event("ns", "s", parts(&headers, Some(&[0, 1, 2]), Some(&value)));
        assert_eq!(event.get_str("key"), Some("AAEC"));
        assert!(event.get("kafkaheaderbin").is_none() && event.get("kafkaheaderctl").is_none());
        assert_eq!(event.data().map(|d| d.form), Some(DataForm::Binary));
        assert!(event.datacontenttype().is_none());
        let no_value = record_event("ns", "s", parts(&[], None, None));
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
            let event = record_event("ns", "s", parts(&headers, record.key.as_deref(), record.value.as_ref()));
            assert_eq!(event.id(), "order-1");
            assert_eq!(event.get_str("region"), Some("eu"));
            assert_eq!(event.data().map(|d| d.bytes.clone()), Some(Bytes::from_static(b"raw")));
        }
        // A record that claims to be a CloudEvent but is not a valid one is wrapped.
        let broken = [header("ce_specversion", "1.0"), header("ce_type", "t")];
        assert_eq!(record_event("ns", "s", parts(&broken, None, None)).ty(), EVENT_TYPE);
    }
}
