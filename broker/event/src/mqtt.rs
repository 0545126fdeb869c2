//! The CloudEvents MQTT protocol binding 1.0.2 (`cloudevents/bindings/mqtt-protocol-binding.md`):
//! MQTT 5.0's binary (§3.1) and structured (§3.2) content modes, and MQTT 3.1.1's structured
//! mode, the only one it has (§1.3, §3).
//!
//! Pure code, like the rest of the crate: a PUBLISH message is plain data (its Content Type
//! property, its User Properties and its payload), and the MQTT client that receives it lives in
//! the sources crate.
//!
//! # Reading a message
//!
//! - **MQTT 5.0** (§3): a Content Type starting with `application/cloudevents` selects structured
//!   mode; anything else binary mode, where the message is a CloudEvent when it has a
//!   `specversion` User Property. Binary mode maps the Content Type to `datacontenttype`
//!   (§3.1.1), every User Property to the attribute of the same name, unchanged (§3.1.3.1), and
//!   the payload to the data (§3.1.2).
//! - **MQTT 3.1.1** (§3, §3.2.1): always structured mode in the JSON format, the media type
//!   implied.
//! - A 5.0 message with neither a Content Type nor User Properties is read as 3.1.1 reads it:
//!   that is what a broker relays from a 3.1.1 publisher to a 5.0 subscriber, so a structured
//!   CloudEvent published over 3.1.1 still passes through a 5.0 source.
//!
//! MQTT has no null payload: an empty payload is an event without data.

use bytes::Bytes;

use crate::error::EventError;
use crate::http::{starts_with_ignore_ascii_case, STRUCTURED_MEDIA_TYPE};
use crate::json;
use crate::model::{validate_name, AttrValue, Data, DataForm, Event};

/// The Content Type of a structured-mode message in the JSON format (§3.2.1).
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json; charset=utf-8";

/// Prefix of every CloudEvents media type: a Content Type starting with it selects structured
/// mode (§3).
const CLOUDEVENTS_MEDIA_TYPE_PREFIX: &str = "application/cloudevents";

/// The MQTT protocol version a message came over: it decides which content modes exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqttVersion {
    /// MQTT 3.1.1: no properties, structured mode only.
    V3_1_1,
    /// MQTT 5.0: Content Type and User Properties, binary and structured modes.
    V5,
}

/// A PUBLISH message as the binding sees it. The topic is not part of the event (§3.1.4: it is
/// chosen by the client).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MqttMessage {
    /// The Content Type property (MQTT 5.0 only).
    pub content_type: Option<String>,
    /// The User Properties, in order, repeats kept (MQTT 5.0 only).
    pub user_properties: Vec<(String, String)>,
    /// The payload.
    pub payload: Bytes,
}

impl MqttMessage {
    /// Decodes the event this message carries (see [`decode`]).
    pub fn decode(&self, version: MqttVersion) -> Result<Event, EventError> {
        decode(version, self.content_type.as_deref(), &self.user_properties, &self.payload)
    }
}

/// The event as an MQTT 5.0 binary-mode message (§3.1): `datacontenttype` as the Content Type
/// (§3.1.1), every other attribute as a User Property of its name holding its canonical string
/// (§3.1.3), in attribute order, and the data bytes as the payload (§3.1.2; empty without data).
///
/// Binary mode carries every attribute as a string, so an extension's type does not survive it;
/// nor does an event whose `datacontenttype` is itself a CloudEvents media type (it would read
/// as structured mode): use [`encode_structured`] for those.
pub fn encode_binary(event: &Event) -> MqttMessage {
    let mut message = MqttMessage::default();
    for (name, value) in event.attributes() {
        let text = value.to_canonical_string().into_owned();
        if name == "datacontenttype" {
            message.content_type = Some(text);
        } else {
            message.user_properties.push((name.clone(), text));
        }
    }
    message.payload = event.data().map(|data| data.bytes.clone()).unwrap_or_default();
    message
}

/// The event as a structured-mode message in the JSON format (§3.2): Content Type
/// [`STRUCTURED_CONTENT_TYPE`] and the JSON-format event as the payload. Over MQTT 3.1.1, send
/// the payload alone (the media type is implied, §3.2.1).
pub fn encode_structured(event: &Event) -> MqttMessage {
    MqttMessage {
        content_type: Some(STRUCTURED_CONTENT_TYPE.to_owned()),
        user_properties: Vec::new(),
        payload: Bytes::from(json::encode_event(event)),
    }
}

/// Decodes the event a message received over `version` carries (see the module documentation
/// for how the content mode is chosen).
///
/// - Structured mode: only the JSON format is understood; the payload is decoded with
///   [`json::decode_event`], and User Properties are ignored (structured mode MAY repeat the
///   attributes there, §3.2.3: the payload is authoritative). Another CloudEvents format, or the
///   batch media type, is [`EventError::UnsupportedFormat`] (a receiver MAY then forward the
///   message as it is, §3).
/// - Binary mode: each User Property whose name is a valid attribute name (lower-case letters
///   and digits) is that attribute, its value the text (§3.1.3); other User Properties cannot
///   be attributes and are left to the application. A User Property named twice is a duplicate
///   attribute. The Content Type is `datacontenttype` (§3.1.1), and when present it wins over a
///   `datacontenttype` User Property (the spec's own example, §3.1.4, carries both); a non-empty
///   payload is the data, in the form [`DataForm::infer`] gives it.
/// - A message that is neither (no `specversion` User Property, or over 3.1.1 a payload that is
///   not a JSON object naming `"specversion"`) is [`EventError::MissingAttribute`]
///   `specversion`: not a CloudEvent at all.
///
/// Never panics, whatever the input.
pub fn decode(
    version: MqttVersion,
    content_type: Option<&str>,
    user_properties: &[(String, String)],
    payload: &Bytes,
) -> Result<Event, EventError> {
    match version {
        MqttVersion::V3_1_1 => decode_implied_json(payload),
        MqttVersion::V5 => {
            if let Some(content_type) = content_type {
                let media_type = content_type.split(';').next().unwrap_or_default().trim();
                if starts_with_ignore_ascii_case(media_type, CLOUDEVENTS_MEDIA_TYPE_PREFIX) {
                    if !media_type.eq_ignore_ascii_case(STRUCTURED_MEDIA_TYPE) {
                        return Err(EventError::UnsupportedFormat(content_type.to_owned()));
                    }
                    return json::decode_event(payload);
                }
            }
            if user_properties.iter().any(|(name, _)| name == "specversion") {
                return decode_binary(content_type, user_properties, payload);
            }
            if content_type.is_none() && user_properties.is_empty() {
                return decode_implied_json(payload);
            }
            Err(EventError::MissingAttribute("specversion"))
        }
    }
}

/// Whether the message says it is a CloudEvent (so that one that does not decode is reported as
/// an invalid CloudEvent rather than a plain message): over MQTT 5.0 a CloudEvents Content Type
/// or a `specversion` User Property; over 3.1.1 (and for a 5.0 message without properties) a
/// payload that looks like a JSON-format event.
pub fn claims_to_be_a_cloudevent(
    version: MqttVersion,
    content_type: Option<&str>,
    user_properties: &[(String, String)],
    payload: &[u8],
) -> bool {
    match version {
        MqttVersion::V3_1_1 => looks_like_json_event(payload),
        MqttVersion::V5 => {
            content_type.is_some_and(|c| starts_with_ignore_ascii_case(c.trim_start(), CLOUDEVENTS_MEDIA_TYPE_PREFIX))
                || user_properties.iter().any(|(name, _)| name == "specversion")
                || (content_type.is_none() && user_properties.is_empty() && looks_like_json_event(payload))
        }
    }
}

/// Structured mode with the JSON format implied (MQTT 3.1.1, §3.2.1). A payload that cannot be
/// one (not a JSON object, or not naming `"specversion"`) is not parsed: plain telemetry is the
/// common case, and it is not a CloudEvent that failed to decode.
fn decode_implied_json(payload: &[u8]) -> Result<Event, EventError> {
    if !looks_like_json_event(payload) {
        return Err(EventError::MissingAttribute("specversion"));
    }
    json::decode_event(payload)
}

/// Whether the payload may be a JSON-format event: a JSON object naming `"specversion"`.
fn looks_like_json_event(payload: &[u8]) -> bool {
    const MEMBER: &[u8] = b"\"specversion\"";
    payload.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
        && payload.windows(MEMBER.len()).any(|window| window == MEMBER)
}

fn decode_binary(
    content_type: Option<&str>,
    user_properties: &[(String, String)],
    payload: &Bytes,
) -> Result<Event, EventError> {
    let mut attributes = Vec::with_capacity(user_properties.len() + 1);
    for (name, value) in user_properties {
        if validate_name(name).is_err() || (name == "datacontenttype" && content_type.is_some()) {
            continue;
        }
        attributes.push((name.clone(), AttrValue::String(value.clone())));
    }
    if let Some(content_type) = content_type {
        attributes.push(("datacontenttype".to_owned(), AttrValue::String(content_type.to_owned())));
    }
    let data = (!payload.is_empty()).then(|| {
        let content_type = attributes.iter().find(|(n, _)| n == "datacontenttype").and_then(|(_, v)| v.as_str());
        Data { form: DataForm::infer(content_type, payload), bytes: payload.clone() }
    });
    Event::new(attributes, data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{arb_event, invalid_cases, required, s};
    use proptest::prelude::*;

    type Properties = Vec<(String, String)>;

    fn props(pairs: &[(&str, &str)]) -> Properties {
        pairs.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect()
    }

    fn event(extra: &[(&str, &str)], data: Option<(DataForm, &'static [u8])>) -> Event {
        let mut attributes = required();
        attributes.extend(extra.iter().map(|(n, v)| ((*n).to_owned(), s(v))));
        Event::new(attributes, data.map(|(form, bytes)| Data { form, bytes: Bytes::from_static(bytes) })).unwrap()
    }

    #[test]
    fn binary_mode_spec_example() {
        // §3.1.4: `datacontenttype` as the Content Type and, as the example shows, also as a
        // User Property; every other attribute as a User Property.
        let user_properties = props(&[
            ("specversion", "1.0"),
            ("type", "com.example.someevent"),
            ("time", "2018-04-05T03:56:24Z"),
            ("id", "1234-1234-1234"),
            ("source", "/mycontext/subcontext"),
            ("datacontenttype", "application/json; charset=utf-8"),
        ]);
        let payload = Bytes::from_static(b"{\"a\":1}");
        let decoded =
            decode(MqttVersion::V5, Some("application/json; charset=utf-8"), &user_properties, &payload).unwrap();
        assert_eq!(decoded.ty(), "com.example.someevent");
        assert_eq!(decoded.id(), "1234-1234-1234");
        assert_eq!(decoded.get_str("time"), Some("2018-04-05T03:56:24Z"));
        assert_eq!(decoded.datacontenttype(), Some("application/json; charset=utf-8"));
        assert_eq!(decoded.data(), Some(&Data { form: DataForm::Json, bytes: payload }));
    }

    #[test]
    fn binary_mode_round_trips_string_events() {
        for original in [
            event(&[("subject", "s"), ("region", "eu")], Some((DataForm::Binary, b"\x00\x01raw"))),
            event(&[("datacontenttype", "text/plain")], Some((DataForm::Text, b"hello"))),
            event(&[("datacontenttype", "application/json")], Some((DataForm::Json, b"{\"n\":1}"))),
            event(&[("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")], None),
        ] {
            let message = encode_binary(&original);
            assert!(message.user_properties.iter().all(|(n, _)| n != "datacontenttype"));
            assert_eq!(message.content_type.as_deref(), original.datacontenttype());
            assert_eq!(message.decode(MqttVersion::V5), Ok(original.clone()));
            assert!(claims_to_be_a_cloudevent(
                MqttVersion::V5,
                message.content_type.as_deref(),
                &message.user_properties,
                &message.payload
            ));
        }
    }

    #[test]
    fn the_content_type_wins_and_other_user_properties_are_left_to_the_application() {
        let user_properties = props(&[
            ("specversion", "1.0"),
            ("id", "1"),
            ("source", "/s"),
            ("type", "t"),
            ("datacontenttype", "text/plain"),
            ("X-Trace", "abc"),
            ("", "empty"),
        ]);
        let decoded = decode(MqttVersion::V5, Some("application/xml"), &user_properties, &Bytes::new()).unwrap();
        assert_eq!(decoded.datacontenttype(), Some("application/xml"));
        assert!(decoded.get("xtrace").is_none() && decoded.attributes().len() == 5);
        assert!(decoded.data().is_none(), "an empty payload is no data");
        // Without a Content Type, the User Property says it.
        let decoded = decode(MqttVersion::V5, None, &user_properties, &Bytes::from_static(b"hi")).unwrap();
        assert_eq!(decoded.datacontenttype(), Some("text/plain"));
        assert_eq!(decoded.data().map(|d| d.form), Some(DataForm::Text));
    }

    #[test]
    fn structured_mode_in_both_versions() {
        let original =
            event(&[("datacontenttype", "application/json"), ("region", "eu")], Some((DataForm::Json, b"[1]")));
        let message = encode_structured(&original);
        assert_eq!(message.decode(MqttVersion::V5), Ok(original.clone()));
        // The payload is authoritative: User Properties repeating attributes are ignored (§3.2.3).
        let with_properties = MqttMessage { user_properties: props(&[("id", "other")]), ..message.clone() };
        assert_eq!(with_properties.decode(MqttVersion::V5), Ok(original.clone()));
        // MQTT 3.1.1: the media type is implied (§3.2.1).
        assert_eq!(decode(MqttVersion::V3_1_1, None, &[], &message.payload), Ok(original.clone()));
        // A 5.0 message without properties, as a broker relays it from a 3.1.1 publisher.
        assert_eq!(decode(MqttVersion::V5, None, &[], &message.payload), Ok(original));
        assert!(claims_to_be_a_cloudevent(MqttVersion::V3_1_1, None, &[], &message.payload));
    }

    #[test]
    fn plain_messages_are_not_cloudevents() {
        let cases: [(MqttVersion, Option<&str>, Properties, &[u8]); 5] = [
            (MqttVersion::V5, None, vec![], b"21.5"),
            (MqttVersion::V5, Some("application/json"), vec![], b"{\"specversion\":\"1.0\"}"),
            (MqttVersion::V5, None, props(&[("unit", "C")]), b"{\"t\":21}"),
            (MqttVersion::V3_1_1, None, vec![], b"{\"t\":21}"),
            (MqttVersion::V3_1_1, None, vec![], b"[\"specversion\"]"),
        ];
        for (version, content_type, user_properties, payload) in cases {
            let payload = Bytes::from_static(payload);
            assert_eq!(
                decode(version, content_type, &user_properties, &payload),
                Err(EventError::MissingAttribute("specversion")),
                "{payload:?}"
            );
            assert!(!claims_to_be_a_cloudevent(version, content_type, &user_properties, &payload), "{payload:?}");
        }
    }

    #[test]
    fn invalid_cloudevents_say_why() {
        let payload = Bytes::from_static(b"x");
        for case in invalid_cases() {
            let user_properties: Vec<(String, String)> =
                case.attributes.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect();
            // User Properties that are not attribute names are the application's, not errors.
            let names_valid = user_properties.iter().all(|(n, _)| validate_name(n).is_ok());
            if !names_valid || !user_properties.iter().any(|(n, _)| n == "specversion") {
                continue;
            }
            let error = decode(MqttVersion::V5, None, &user_properties, &payload).expect_err(case.expected);
            assert!(error.to_string().contains(case.expected), "{error} vs {}", case.expected);
        }
        let twice = props(&[("specversion", "1.0"), ("id", "1"), ("id", "2"), ("source", "/s"), ("type", "t")]);
        assert!(decode(MqttVersion::V5, None, &twice, &payload).unwrap_err().to_string().contains("duplicate"));
        for (content_type, expected) in [
            ("application/cloudevents+avro", "unsupported event format"),
            ("Application/CloudEvents-Batch+JSON", "unsupported event format"),
            ("application/cloudevents+json", "malformed"),
        ] {
            let error = decode(MqttVersion::V5, Some(content_type), &[], &Bytes::from_static(b"{nope")).unwrap_err();
            assert!(error.to_string().contains(expected), "{content_type}: {error}");
            assert!(claims_to_be_a_cloudevent(MqttVersion::V5, Some(content_type), &[], b"{nope"));
        }
        let error = decode(MqttVersion::V3_1_1, None, &[], &Bytes::from_static(b"{\"specversion\":\"2.0\"}"));
        assert!(error.is_err());
    }

    proptest! {
        #[test]
        fn structured_mode_round_trips_any_event(event in arb_event()) {
            let message = encode_structured(&event);
            prop_assert_eq!(message.decode(MqttVersion::V5), Ok(event.clone()));
            prop_assert_eq!(decode(MqttVersion::V3_1_1, None, &[], &message.payload), Ok(event));
        }

        #[test]
        fn decoding_never_panics(
            content_type in proptest::option::of(".{0,40}"),
            user_properties in proptest::collection::vec(("[a-z]{0,12}", ".{0,20}"), 0..8),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let payload = Bytes::from(payload);
            for version in [MqttVersion::V3_1_1, MqttVersion::V5] {
                let _ = decode(version, content_type.as_deref(), &user_properties, &payload);
                let _ = claims_to_be_a_cloudevent(version, content_type.as_deref(), &user_properties, &payload);
            }
        }
    }
}
