//! A Redis stream entry as a CloudEvent. Redis has no CloudEvents binding, so Switchyard
//! recognises two layouts (documented in the README) and wraps everything else as Knative's
//! RedisStreamSource does (`eventing-redis`, `adapter.toEvent`). Pure code: never panics,
//! whatever the entry holds.
//!
//! - **Binary mode**: an entry with a field `ce_specversion` holds one attribute per field
//!   `ce_<name>`, `datacontenttype` in the field `content-type`, and the data, byte for byte,
//!   in the field `data` (the Kafka binding's layout, with fields for headers). Other fields
//!   are ignored.
//! - **Structured mode**: without `ce_specversion`, the field `data` holds a JSON-format
//!   CloudEvent when the field `content-type` says `application/cloudevents+json`, or when
//!   there is no `content-type` and `data` is a JSON object with a `specversion` member
//!   (what Dapr's Redis pub/sub writes: the envelope in `data`). Other fields are ignored.
//!
//! An entry that claims one of these (a `ce_specversion` field, a CloudEvents `content-type`,
//! a `data` object with `specversion`) but is not a valid CloudEvent is wrapped like any
//! other entry, and counted.

use bytes::Bytes;
use switchyard_event::EventError;

use crate::message::{is_cloudevents_media_type, rfc3339_millis, MessageEvent, Plain};

/// The type of a wrapped entry (Knative's `RedisStreamSourceEventType`).
pub const EVENT_TYPE: &str = "dev.knative.sources.redisstream";
/// The field holding the data (binary mode) or the event (structured mode).
const DATA_FIELD: &str = "data";
/// The field holding `datacontenttype` (binary mode) or the event format (structured mode).
const CONTENT_TYPE_FIELD: &str = "content-type";
/// Prefix of the fields holding attributes in binary mode.
const ATTRIBUTE_PREFIX: &str = "ce_";

/// One entry of a stream: its ID and its field-value pairs, in order, as the server sent them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The entry ID, `<milliseconds>-<sequence>`.
    pub id: String,
    /// The field-value pairs (a field may appear more than once: Redis keeps what XADD got).
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields.iter().find(|(field, _)| field.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| v.as_slice())
    }

    fn count(&self, name: &str) -> usize {
        self.fields.iter().filter(|(field, _)| field.eq_ignore_ascii_case(name.as_bytes())).count()
    }
}

/// The event entry `entry` of the stream read by a source stands for; `source` is the
/// `source` attribute of wrapped entries ([`event_source`]).
///
/// A wrapped entry gets `type` [`EVENT_TYPE`], `source` `source`, `id` the entry ID (the same
/// for every delivery of the entry), `time` the entry ID's milliseconds, `datacontenttype`
/// `application/json` and as data the JSON array of the entry's fields and values in order,
/// `["field1","value1","field2","value2"]`, as Knative lays it out (bytes that are not UTF-8
/// become U+FFFD in the JSON text, as in Knative).
pub fn entry_event(source: &str, entry: &Entry) -> MessageEvent {
    let (decoded, claims) = decode(entry);
    MessageEvent::of(decoded, claims, || wrap(source, entry))
}

/// The `source` of a wrapped entry, as Knative makes it: `<address>/<stream>`, with any user
/// name and password taken out of the address (it is shown in every event).
pub fn event_source(address: &url::Url, stream: &str) -> String {
    let mut address = address.clone();
    // Only URLs that cannot have credentials refuse these; a parsed redis:// URL can.
    let _ = address.set_username("");
    let _ = address.set_password(None);
    format!("{}/{stream}", address.as_str().trim_end_matches('/'))
}

/// The entry read as a CloudEvent, and whether it claims to be one.
fn decode(entry: &Entry) -> (Result<switchyard_event::Event, EventError>, bool) {
    let binary = entry.field("ce_specversion").is_some();
    let content_type = entry.field(CONTENT_TYPE_FIELD);
    let data = entry.field(DATA_FIELD);
    if entry.count(DATA_FIELD) > 1 {
        let claims = binary || content_type.is_some_and(is_cloudevents_media_type);
        return (Err(EventError::Malformed(format!("the field '{DATA_FIELD}' appears more than once"))), claims);
    }
    if binary || content_type.is_some_and(is_cloudevents_media_type) {
        // Field names that are not UTF-8 cannot be attributes; the decoder ignores fields
        // without the prefix, so leaving them out changes nothing.
        let headers = entry
            .fields
            .iter()
            .filter(|(field, _)| !field.eq_ignore_ascii_case(DATA_FIELD.as_bytes()))
            .filter_map(|(field, value)| Some((std::str::from_utf8(field).ok()?, Some(value.as_slice()))));
        let payload = data.map(Bytes::copy_from_slice);
        return (switchyard_event::headers::decode(headers, ATTRIBUTE_PREFIX, payload), true);
    }
    // Dapr's layout: the JSON envelope alone in `data`.
    if content_type.is_none() {
        if let Some(object) = data.and_then(|bytes| serde_json::from_slice::<serde_json::Value>(bytes).ok()) {
            if object.get("specversion").is_some() {
                return (switchyard_event::json::from_value(&object), true);
            }
        }
    }
    (Err(EventError::MissingAttribute("specversion")), false)
}

fn wrap(source: &str, entry: &Entry) -> Plain {
    let values: Vec<String> = entry
        .fields
        .iter()
        .flat_map(|(field, value)| [field, value])
        .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
        .collect();
    // A Vec of strings always serializes.
    let data = serde_json::to_vec(&values).unwrap_or_default();
    Plain {
        event_type: EVENT_TYPE.to_owned(),
        source: source.to_owned(),
        id: entry.id.clone(),
        time: entry_millis(&entry.id).and_then(rfc3339_millis),
        content_type: Some("application/json".to_owned()),
        extension_prefix: "redisfield",
        payload: Some(Bytes::from(data)),
        ..Plain::default()
    }
}

/// The milliseconds part of an entry ID (the server's clock when the entry was added, unless
/// the producer chose the ID).
fn entry_millis(id: &str) -> Option<i64> {
    id.split_once('-').map_or(id, |(millis, _)| millis).parse().ok()
}

#[cfg(test)]
mod tests {
    use switchyard_event::{AttrValue, Data, DataForm, Event};

    use super::*;

    const SOURCE: &str = "redis://127.0.0.1:6379/orders";

    type Field<'a> = (&'a str, &'a [u8]);

    fn entry(fields: &[(&str, &[u8])]) -> Entry {
        Entry {
            id: "1764583200123-7".to_owned(),
            fields: fields.iter().map(|(f, v)| (f.as_bytes().to_vec(), v.to_vec())).collect(),
        }
    }

    fn wrapped(event: MessageEvent) -> Event {
        match event {
            MessageEvent::Wrapped(event) => event,
            other => panic!("expected a wrapped entry, got {other:?}"),
        }
    }

    fn passed_through(event: MessageEvent) -> Event {
        match event {
            MessageEvent::CloudEvent(event) => event,
            other => panic!("expected a CloudEvent, got {other:?}"),
        }
    }

    #[test]
    fn plain_entries_are_wrapped_as_knative_does() {
        let event = wrapped(entry_event(SOURCE, &entry(&[("sku", b"A1"), ("qty", b"2"), ("sku", b"B2")])));
        assert_eq!(event.id(), "1764583200123-7");
        assert_eq!(event.source(), SOURCE);
        assert_eq!(event.ty(), EVENT_TYPE);
        assert_eq!(event.get_str("time"), Some("2025-12-01T10:00:00.123Z"));
        assert_eq!(event.datacontenttype(), Some("application/json"));
        let data = event.data().unwrap();
        assert_eq!(data.form, DataForm::Json);
        assert_eq!(&data.bytes[..], br#"["sku","A1","qty","2","sku","B2"]"#);
    }

    #[test]
    fn bytes_that_are_not_text_and_odd_ids_never_fail() {
        let odd = Entry { id: "not-an-id".to_owned(), fields: vec![(vec![0xff], vec![0, 1, 0xfe])] };
        let event = wrapped(entry_event(SOURCE, &odd));
        assert_eq!(&event.data().unwrap().bytes[..], "[\"\u{fffd}\",\"\\u0000\\u0001\u{fffd}\"]".as_bytes());
        assert!(event.get("time").is_none());
        let empty = Entry { id: "99999999999999999999-0".to_owned(), fields: Vec::new() };
        assert_eq!(&wrapped(entry_event(SOURCE, &empty)).data().unwrap().bytes[..], b"[]");
        let bad_source = entry_event("bad\nsource", &entry(&[("a", b"b")]));
        assert!(matches!(bad_source, MessageEvent::Unmappable(_)), "{bad_source:?}");
    }

    fn original() -> Event {
        Event::new(
            vec![
                ("specversion".to_owned(), AttrValue::String("1.0".to_owned())),
                ("id".to_owned(), AttrValue::String("order-1".to_owned())),
                ("source".to_owned(), AttrValue::String("/shop".to_owned())),
                ("type".to_owned(), AttrValue::String("order.created".to_owned())),
                ("datacontenttype".to_owned(), AttrValue::String("text/plain".to_owned())),
                ("region".to_owned(), AttrValue::String("eu".to_owned())),
            ],
            Some(Data { form: DataForm::Text, bytes: Bytes::from_static(b"raw bytes") }),
        )
        .unwrap()
    }

    #[test]
    fn binary_mode_entries_pass_through() {
        let fields: [(&str, &[u8]); 8] = [
            ("ce_specversion", b"1.0"),
            ("ce_id", b"order-1"),
            ("ce_source", b"/shop"),
            ("ce_type", b"order.created"),
            ("content-type", b"text/plain"),
            ("ce_region", b"eu"),
            ("data", b"raw bytes"),
            ("ignored", b"x"),
        ];
        assert_eq!(passed_through(entry_event(SOURCE, &entry(&fields))), original());
    }

    #[test]
    fn structured_mode_entries_pass_through() {
        let json = switchyard_event::json::encode_event(&original());
        let with_content_type = entry(&[("content-type", b"application/cloudevents+json"), ("data", &json)]);
        assert_eq!(passed_through(entry_event(SOURCE, &with_content_type)), original());
        // Dapr: the envelope alone in `data`, other fields beside it ignored.
        let dapr = entry(&[("data", &json), ("traceparent", b"x")]);
        assert_eq!(passed_through(entry_event(SOURCE, &dapr)), original());
        // A JSON object without `specversion` is plain data.
        wrapped(entry_event(SOURCE, &entry(&[("data", br#"{"id":"1","type":"t"}"#)])));
        // So is a JSON object next to a content-type that is not a CloudEvents format.
        wrapped(entry_event(SOURCE, &entry(&[("content-type", b"application/json"), ("data", &json)])));
    }

    #[test]
    fn entries_that_claim_to_be_cloudevents_but_are_not_are_wrapped_with_why() {
        let cases: [(Vec<Field>, &str); 5] = [
            (vec![("ce_specversion", b"1.0"), ("ce_type", b"t")], "'id'"),
            (vec![("ce_specversion", b"1.0"), ("ce_id", b"1"), ("ce_id", b"2")], "duplicate"),
            (vec![("ce_specversion", b"1.0"), ("data", b"a"), ("data", b"b")], "more than once"),
            (vec![("content-type", b"application/cloudevents+json"), ("data", b"{")], ""),
            (vec![("data", br#"{"specversion":"1.0","id":"1"}"#)], "missing required attribute"),
        ];
        for (fields, why) in cases {
            let MessageEvent::WrappedInvalid { event, error } = entry_event(SOURCE, &entry(&fields)) else {
                panic!("{fields:?}: not wrapped as invalid")
            };
            assert_eq!(event.ty(), EVENT_TYPE, "{fields:?}");
            assert!(error.to_string().contains(why), "{fields:?}: {error}");
        }
    }

    #[test]
    fn event_sources_leave_credentials_out() {
        let address = url::Url::parse("redis://user:secret@redis.example:6379/").unwrap();
        assert_eq!(event_source(&address, "orders"), "redis://redis.example:6379/orders");
        let address = url::Url::parse("redis://127.0.0.1:6379/2").unwrap();
        assert_eq!(event_source(&address, "s"), "redis://127.0.0.1:6379/2/s");
    }
}
