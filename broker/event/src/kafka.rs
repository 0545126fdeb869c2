//! The CloudEvents Kafka protocol binding 1.0.2 (`cloudevents/bindings/kafka-protocol-binding.md`):
//! binary (§3.2) and structured (§3.3) content modes, and the `partitionkey` key mapping (§3.1).
//! The binding has no batch mode (§1.3).
//!
//! Pure code, like the rest of the crate: a record is plain data ([`KafkaRecord`]), and the Kafka
//! client that sends and receives it lives in the log backend.
//!
//! # Fidelity
//!
//! Binary mode carries every attribute as a UTF-8 string (§3.2.3), so an extension's type and
//! the form of the data would be lost on the way through Kafka. [`encode_binary`] therefore adds
//! one private header, [`TYPES_HEADER`], only when needed: it lists the non-string extensions
//! (`count=integer,flag=boolean`) and, when a binary-mode reader would guess the data form
//! wrong, the form (`data=text`; `data` can never be an attribute name, core spec §3.1.1).
//! [`decode`] applies it, so `decode(encode_binary(e)) == e` for every valid event, while any
//! other consumer sees an ordinary, conformant binary-mode record with canonical string values
//! and ignores the header.

use bytes::Bytes;

use crate::error::EventError;
use crate::json;
use crate::model::{AttrValue, DataForm, Event};

/// Prefix of the binary-mode attribute headers (§3.2.3.1).
pub const HEADER_PREFIX: &str = "ce_";
/// The header carrying `datacontenttype` in binary mode (§3.2.1) and the event format in
/// structured mode (§3.3.1).
pub const CONTENT_TYPE: &str = crate::headers::CONTENT_TYPE;
/// Switchyard's private header restoring what binary mode cannot carry: the types of non-string
/// extensions and, when it cannot be inferred, the data form (see the module documentation).
/// Other consumers ignore it.
pub const TYPES_HEADER: &str = "switchyard_types";
/// The `content-type` of a structured-mode record in the JSON format (§3.3.1).
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json; charset=utf-8";
/// The attribute the key mapping reads (§3.1; the Partitioning extension).
pub const PARTITION_KEY: &str = "partitionkey";

/// A Kafka record as the binding sees it: key, headers in order, and value. `None` is Kafka's
/// null (a null key, or a value-less record: binary mode's event without data, §3.2.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KafkaRecord {
    /// The record key: the `partitionkey` attribute's canonical string, when the event has one.
    pub key: Option<Vec<u8>>,
    /// Header names and values, in order (Kafka keeps both order and repeats).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The record value.
    pub value: Option<Bytes>,
}

impl KafkaRecord {
    /// Decodes the event this record carries (see [`decode`]).
    pub fn decode(&self) -> Result<Event, EventError> {
        let headers = self.headers.iter().map(|(name, value)| (name.as_str(), Some(value.as_slice())));
        decode(headers, self.key.as_deref(), self.value.clone())
    }
}

/// The record key the default key mapper gives `event` (§3.1): its `partitionkey` attribute's
/// canonical string as UTF-8, as-is, or none.
pub fn partition_key(event: &Event) -> Option<Vec<u8>> {
    event.get(PARTITION_KEY).map(|value| value.to_canonical_string().as_bytes().to_vec())
}

/// Whether `topic` is a name Kafka accepts as a topic (and not a librdkafka subscription
/// pattern, which starts with `^`): 1 to 249 ASCII letters, digits, `.`, `_` and `-`, other
/// than `.` and `..`.
pub fn valid_topic_name(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The event as a binary-mode record (§3.2).
///
/// - Every attribute becomes a `ce_<name>` header holding its canonical string as UTF-8
///   (§3.2.3; Kafka headers are bytes, so nothing is percent-encoded as in HTTP), in attribute
///   order; `datacontenttype` becomes the `content-type` header instead, at its place (§3.2.1).
///   `partitionkey` stays an attribute as well as becoming the key: a key mapper must not modify
///   the event (§3.1).
/// - The value is the data bytes unchanged, and null without data (§3.2.2).
/// - [`TYPES_HEADER`] comes last, only when an extension is not a string or the data form would
///   be inferred wrong.
pub fn encode_binary(event: &Event) -> KafkaRecord {
    let mut headers = Vec::with_capacity(event.attributes().len() + 1);
    let mut types = Vec::new();
    for (name, value) in event.attributes() {
        let text = value.to_canonical_string().into_owned().into_bytes();
        if name == "datacontenttype" {
            headers.push((CONTENT_TYPE.to_owned(), text));
            continue;
        }
        match value {
            AttrValue::String(_) => {}
            AttrValue::Bool(_) => types.push(format!("{name}=boolean")),
            AttrValue::Integer(_) => types.push(format!("{name}=integer")),
        }
        headers.push((format!("{HEADER_PREFIX}{name}"), text));
    }
    if let Some(data) = event.data() {
        if DataForm::infer(event.datacontenttype(), &data.bytes) != data.form {
            types.push(format!("data={}", form_name(data.form)));
        }
    }
    if !types.is_empty() {
        headers.push((TYPES_HEADER.to_owned(), types.join(",").into_bytes()));
    }
    KafkaRecord { key: partition_key(event), headers, value: event.data().map(|d| d.bytes.clone()) }
}

/// The event as a structured-mode record in the JSON format (§3.3): `content-type`
/// [`STRUCTURED_CONTENT_TYPE`], the JSON-format event as the value ([`json::encode_event`]), and
/// the same key as binary mode.
pub fn encode_structured(event: &Event) -> KafkaRecord {
    KafkaRecord {
        key: partition_key(event),
        headers: vec![(CONTENT_TYPE.to_owned(), STRUCTURED_CONTENT_TYPE.as_bytes().to_vec())],
        value: Some(Bytes::from(json::encode_event(event))),
    }
}

/// Decodes the event a Kafka record carries, in the content mode its `content-type` header
/// selects (§3): a value starting with `application/cloudevents` (case-insensitively) is
/// structured mode, anything else (or no header) binary mode; a record with a `ce_specversion`
/// header is binary mode whatever its content type.
///
/// - Structured mode: only the JSON format (`application/cloudevents+json`) is understood; the
///   value is decoded with [`json::decode_event`] and every other header is ignored (the value is
///   authoritative). Other formats, and the batch media type (the Kafka binding has no batch
///   mode, §1.3), are [`EventError::UnsupportedFormat`].
/// - Binary mode: each `ce_` header (prefix matched case-insensitively, the rest taken as the
///   attribute name) is an attribute whose value is the header's UTF-8 text; `content-type` (name
///   matched case-insensitively) is `datacontenttype`; a present value is the data, in the form
///   [`DataForm::infer`] gives it, and a null value means no data (§3.2.2). Then
///   [`TYPES_HEADER`], if present, restores extension types and the data form.
///
/// This is [`crate::headers::decode`] with the prefix `ce_`.
///
/// The key is not consulted: the key mapping must not modify the event (§3.1), so a record key
/// never becomes a `partitionkey` attribute; an event that has one carries it as a header.
///
/// A header listed twice is a duplicate attribute; a `ce_` header without a value or with a
/// value that is not UTF-8 is an error naming the attribute. Never panics, whatever the input.
pub fn decode<'a>(
    headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    _key: Option<&[u8]>,
    value: Option<Bytes>,
) -> Result<Event, EventError> {
    crate::headers::decode(headers, HEADER_PREFIX, value)
}

fn form_name(form: DataForm) -> &'static str {
    match form {
        DataForm::Json => "json",
        DataForm::Text => "text",
        DataForm::Binary => "binary",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Data;
    use crate::testing::{arb_event, invalid_cases, required, s};
    use proptest::prelude::*;

    fn header_pairs(record: &KafkaRecord) -> Vec<(&str, &str)> {
        record.headers.iter().map(|(n, v)| (n.as_str(), std::str::from_utf8(v).unwrap())).collect()
    }

    fn decode_pairs(pairs: &[(&str, &[u8])], value: Option<&[u8]>) -> Result<Event, EventError> {
        decode(pairs.iter().map(|(n, v)| (*n, Some(*v))), None, value.map(Bytes::copy_from_slice))
    }

    const VALID: &[(&str, &[u8])] =
        &[("ce_specversion", b"1.0"), ("ce_id", b"1"), ("ce_source", b"/s"), ("ce_type", b"t")];

    fn with(extra: &[(&'static str, &'static [u8])]) -> Vec<(&'static str, &'static [u8])> {
        VALID.iter().chain(extra).copied().collect()
    }

    #[test]
    fn topic_names_are_checked() {
        for good in ["orders", "a.b-c_d", &"x".repeat(249)] {
            assert!(valid_topic_name(good), "{good}");
        }
        for bad in ["", ".", "..", "^orders.*", "a b", "ä", &"x".repeat(250)] {
            assert!(!valid_topic_name(bad), "{bad}");
        }
    }

    #[test]
    fn binary_mode_spec_example() {
        // §3.2.5, with a key and data.
        let pairs: &[(&str, &[u8])] = &[
            ("ce_specversion", b"1.0"),
            ("ce_type", b"com.example.someevent"),
            ("ce_source", b"/mycontext/subcontext"),
            ("ce_id", b"1234-1234-1234"),
            ("ce_time", b"2018-04-05T03:56:24Z"),
            ("content-type", b"application/avro"),
            ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ];
        let event =
            decode(pairs.iter().map(|(n, v)| (*n, Some(*v))), Some(b"mykey"), Some(Bytes::from_static(b"\x02avro")))
                .unwrap();
        let attributes: Vec<_> = event.attributes().iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
        assert_eq!(
            attributes,
            [
                ("specversion", s("1.0")),
                ("type", s("com.example.someevent")),
                ("source", s("/mycontext/subcontext")),
                ("id", s("1234-1234-1234")),
                ("time", s("2018-04-05T03:56:24Z")),
                ("datacontenttype", s("application/avro")),
            ]
        );
        assert_eq!(event.data(), Some(&Data { form: DataForm::Binary, bytes: Bytes::from_static(b"\x02avro") }));
    }

    #[test]
    fn encode_binary_maps_attributes_to_headers_key_and_value() {
        let mut attributes = required();
        attributes.push(("datacontenttype".into(), s("application/json")));
        attributes.push(("subject".into(), s("Euro \u{20AC} \"quoted\" 100%")));
        attributes.push(("partitionkey".into(), s("order-42")));
        let mut event =
            Event::new(attributes, Some(Data { form: DataForm::Json, bytes: Bytes::from_static(b"[1]") })).unwrap();
        event.set_extension("flag", AttrValue::Bool(true)).unwrap();
        event.set_extension("count", AttrValue::Integer(-3)).unwrap();
        let record = encode_binary(&event);
        assert_eq!(
            header_pairs(&record),
            [
                ("ce_specversion", "1.0"),
                ("ce_id", "id-1"),
                ("ce_source", "/src"),
                ("ce_type", "com.example.t"),
                ("content-type", "application/json"),
                // Raw UTF-8: Kafka headers are bytes, nothing is percent-encoded.
                ("ce_subject", "Euro \u{20AC} \"quoted\" 100%"),
                ("ce_partitionkey", "order-42"),
                ("ce_flag", "true"),
                ("ce_count", "-3"),
                ("switchyard_types", "flag=boolean,count=integer"),
            ]
        );
        assert_eq!(record.key.as_deref(), Some(&b"order-42"[..]));
        assert_eq!(record.value.as_deref(), Some(&b"[1]"[..]));
        assert_eq!(record.decode().unwrap(), event);
    }

    #[test]
    fn an_event_without_data_is_a_record_without_value_and_only_strings_need_no_private_header() {
        let event = Event::new(required(), None).unwrap();
        let record = encode_binary(&event);
        assert_eq!(record.value, None);
        assert_eq!(record.key, None);
        assert!(record.headers.iter().all(|(n, _)| n.starts_with("ce_")), "{:?}", record.headers);
        assert_eq!(record.decode().unwrap(), event);

        // Empty data is not the same as no data: Kafka tells a null value from an empty one.
        let empty = Event::new(required(), Some(Data { form: DataForm::Binary, bytes: Bytes::new() })).unwrap();
        let record = encode_binary(&empty);
        assert_eq!(record.value, Some(Bytes::new()));
        assert_eq!(record.decode().unwrap(), empty);
    }

    #[test]
    fn non_string_partition_keys_map_to_their_canonical_string() {
        let mut event = Event::new(required(), None).unwrap();
        event.set_extension("partitionkey", AttrValue::Integer(7)).unwrap();
        let record = encode_binary(&event);
        assert_eq!(record.key.as_deref(), Some(&b"7"[..]));
        assert_eq!(encode_structured(&event).key.as_deref(), Some(&b"7"[..]));
        assert_eq!(record.decode().unwrap(), event);
    }

    #[test]
    fn data_forms_are_inferred_or_carried() {
        // (content type, form, bytes, whether the private header is needed)
        let cases: [(Option<&str>, DataForm, &[u8], bool); 8] = [
            (Some("application/json"), DataForm::Json, b"{\"a\": 1}\n", false),
            (Some("application/octet-stream"), DataForm::Binary, b"\x00\xff", false),
            (None, DataForm::Binary, b"{\"a\": 1}", false),
            (Some("text/plain"), DataForm::Text, "Grüße".as_bytes(), false),
            (Some("text/plain"), DataForm::Binary, "Grüße".as_bytes(), true),
            (Some("application/json"), DataForm::Binary, b"{\"a\": 1}", true),
            (Some("application/xml"), DataForm::Json, b"{\"a\": 1}", true),
            (Some("application/json"), DataForm::Json, b"{not json", true),
        ];
        for (content_type, form, bytes, needs_header) in cases {
            let mut attributes = required();
            attributes.extend(content_type.map(|ct| ("datacontenttype".to_owned(), s(ct))));
            let data = Data { form, bytes: Bytes::copy_from_slice(bytes) };
            let event = Event::new(attributes, Some(data)).unwrap();
            let record = encode_binary(&event);
            let header = record.headers.iter().find(|(n, _)| n == TYPES_HEADER);
            assert_eq!(header.is_some(), needs_header, "{content_type:?} {form:?}");
            assert_eq!(record.decode().unwrap(), event, "{content_type:?} {form:?}");
        }
    }

    #[test]
    fn structured_mode_is_recognised_and_only_json_is_understood() {
        let mut event = Event::new(required(), None).unwrap();
        event.set_extension("flag", AttrValue::Bool(false)).unwrap();
        let record = encode_structured(&event);
        assert_eq!(header_pairs(&record), [("content-type", STRUCTURED_CONTENT_TYPE)]);
        assert_eq!(record.decode().unwrap(), event);

        // Binary-mode headers beside a structured value are ignored (§3.3.3): the value wins.
        let mut both = record.clone();
        both.headers.push(("ce_id".to_owned(), b"other".to_vec()));
        assert_eq!(both.decode().unwrap().id(), "id-1");

        let value = record.value.clone();
        for content_type in ["APPLICATION/CLOUDEVENTS+JSON", "application/cloudevents+json ; charset=UTF-8"] {
            let headers = [(CONTENT_TYPE, Some(content_type.as_bytes()))];
            assert_eq!(decode(headers, None, value.clone()).unwrap(), event, "{content_type}");
        }
        for content_type in
            ["application/cloudevents+avro", "application/cloudevents-batch+json", "application/cloudevents"]
        {
            let headers = [(CONTENT_TYPE, Some(content_type.as_bytes()))];
            assert_eq!(
                decode(headers, None, value.clone()),
                Err(EventError::UnsupportedFormat(content_type.to_owned()))
            );
        }
        let headers = [(CONTENT_TYPE, Some(STRUCTURED_CONTENT_TYPE.as_bytes()))];
        let err = decode(headers, None, None).unwrap_err();
        assert!(err.to_string().contains("no payload"), "{err}");
    }

    #[test]
    fn invalid_events_are_rejected_in_both_modes() {
        for case in invalid_cases() {
            let names: Vec<String> = case.attributes.iter().map(|(n, _)| format!("ce_{n}")).collect();
            let headers = names.iter().zip(&case.attributes).map(|(n, (_, v))| (n.as_str(), Some(v.as_bytes())));
            let err = decode(headers, None, None).expect_err(case.expected).to_string();
            assert!(err.contains(case.expected), "binary {:?}: {err}", case.attributes);

            let object: serde_json::Map<String, serde_json::Value> =
                case.attributes.iter().map(|(n, v)| ((*n).to_owned(), (*v).into())).collect();
            let value = Bytes::from(serde_json::Value::Object(object).to_string());
            let headers = [(CONTENT_TYPE, Some(STRUCTURED_CONTENT_TYPE.as_bytes()))];
            let err = decode(headers, None, Some(value)).expect_err(case.expected).to_string();
            assert!(err.contains(case.expected), "structured {:?}: {err}", case.attributes);
        }
    }

    #[test]
    fn binary_mode_header_errors() {
        type Headers = [(&'static str, &'static [u8])];
        // (extra headers, error fragment)
        let cases: [(&Headers, &str); 16] = [
            (&[("ce_", b"x")], "header 'ce_' names no attribute"),
            (&[("ce_id", b"2")], "duplicate attribute 'id'"),
            (&[("content-type", b"text/plain"), ("ce_datacontenttype", b"text/plain")], "duplicate attribute"),
            (&[("ce_data", b"x")], "invalid attribute name 'data'"),
            (&[("ce_Ext", b"x")], "invalid attribute name 'Ext'"),
            (&[("ce_ext", b"caf\xe9")], "invalid attribute 'ext': the header value is not valid utf-8"),
            (&[("ce_time", b"2018-04-05")], "invalid attribute 'time'"),
            (&[("ce_ext", b"1"), ("switchyard_types", b"ext=float")], "unknown type 'float'"),
            (&[("ce_ext", b"1.5"), ("switchyard_types", b"ext=integer")], "'1.5' is not an integer"),
            (&[("ce_ext", b"+1"), ("switchyard_types", b"ext=integer")], "'+1' is not an integer"),
            (&[("ce_ext", b"TRUE"), ("switchyard_types", b"ext=boolean")], "'TRUE' is not a boolean"),
            (&[("switchyard_types", b"ext=boolean")], "which the record does not carry"),
            (&[("ce_ext", b"1"), ("switchyard_types", b"ext=integer,ext=integer")], "twice"),
            (&[("ce_ext", b"1"), ("switchyard_types", b"ext")], "without '='"),
            (&[("switchyard_types", b"data=text")], "no value"),
            (&[("ce_subject", b"2"), ("switchyard_types", b"subject=integer")], "invalid attribute 'subject'"),
        ];
        for (extra, expected) in cases {
            let err = decode_pairs(&with(extra), None).expect_err(expected).to_string();
            assert!(err.contains(expected), "{expected}: {err}");
        }
        let err = decode([("ce_specversion", Some(&b"1.0"[..])), ("ce_id", None)], None, None).unwrap_err();
        assert_eq!(err.to_string(), "invalid attribute 'id': the header has no value");
        // Without ce_specversion a record is reported as missing it, whatever else is absent.
        assert_eq!(
            decode_pairs(&[("content-type", b"application/json")], Some(b"{}")),
            Err(EventError::MissingAttribute("specversion"))
        );
        assert_eq!(decode([], None, None), Err(EventError::MissingAttribute("specversion")));
    }

    #[test]
    fn prefix_and_content_type_names_are_matched_case_insensitively() {
        let event = decode_pairs(
            &[
                ("CE_specversion", b"1.0"),
                ("Ce_id", b"1"),
                ("ce_source", b"/s"),
                ("ce_type", b"t"),
                ("Content-Type", b"application/json"),
            ],
            Some(b"{}"),
        )
        .unwrap();
        assert_eq!(event.datacontenttype(), Some("application/json"));
        assert_eq!(event.data().map(|d| d.form), Some(DataForm::Json));
    }

    #[test]
    fn a_binary_event_whose_data_is_itself_a_cloudevent_reads_back() {
        let mut attributes = required();
        attributes.push(("datacontenttype".to_owned(), AttrValue::String("application/cloudevents+json".into())));
        let data = Data { form: DataForm::Json, bytes: Bytes::from_static(br#"{"specversion":"1.0"}"#) };
        let event = Event::new(attributes, Some(data)).unwrap();
        assert_eq!(encode_binary(&event).decode().unwrap(), event);
    }

    proptest! {
        #[test]
        fn binary_roundtrip_is_exact(event in arb_event()) {
            let record = encode_binary(&event);
            prop_assert_eq!(record.decode().unwrap(), event);
        }

        #[test]
        fn structured_roundtrip_is_exact(event in arb_event()) {
            let record = encode_structured(&event);
            prop_assert_eq!(record.decode().unwrap(), event);
        }

        /// What a consumer that knows only the binding sees: every attribute as a `ce_` header (or
        /// `content-type`) with its canonical string, the data bytes as the value, the
        /// `partitionkey` as the key; and decoding without the private header keeps every
        /// canonical value.
        #[test]
        fn third_party_consumers_see_a_conformant_binary_record(event in arb_event()) {
            let record = encode_binary(&event);
            let public: Vec<(String, String)> = record
                .headers
                .iter()
                .filter(|(n, _)| n != TYPES_HEADER)
                .map(|(n, v)| {
                    let name = if n == CONTENT_TYPE { "datacontenttype".to_owned() } else { n["ce_".len()..].to_owned() };
                    (name, String::from_utf8(v.clone()).unwrap())
                })
                .collect();
            let canonical = |e: &Event| -> Vec<(String, String)> {
                e.attributes().iter().map(|(n, v)| (n.clone(), v.to_canonical_string().into_owned())).collect()
            };
            prop_assert_eq!(&public, &canonical(&event));
            prop_assert_eq!(record.value.clone(), event.data().map(|d| d.bytes.clone()));
            let key = event.get("partitionkey").map(|v| v.to_canonical_string().as_bytes().to_vec());
            prop_assert_eq!(record.key.clone(), key);
            let without_private = KafkaRecord {
                headers: record.headers.iter().filter(|(n, _)| n != TYPES_HEADER).cloned().collect(),
                ..record
            };
            let decoded = without_private.decode().unwrap();
            prop_assert_eq!(canonical(&decoded), canonical(&event));
            prop_assert_eq!(decoded.data().map(|d| d.bytes.clone()), event.data().map(|d| d.bytes.clone()));
        }

        #[test]
        fn decode_never_panics(
            headers in proptest::collection::vec(
                (prop_oneof![
                    Just("ce_specversion".to_owned()),
                    Just("ce_id".to_owned()),
                    Just("content-type".to_owned()),
                    Just(TYPES_HEADER.to_owned()),
                    "(ce_)?[a-zA-Z0-9_-]{0,6}",
                ], proptest::option::of(proptest::collection::vec(any::<u8>(), 0..24))),
                0..8,
            ),
            value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        ) {
            let _ = decode(
                headers.iter().map(|(n, v)| (n.as_str(), v.as_deref())),
                None,
                value.map(Bytes::from),
            );
        }
    }
}
