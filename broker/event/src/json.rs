//! The CloudEvents JSON event format 1.0.2 (`cloudevents/formats/json-format.md`), single
//! events (§3) and batches (§4).
//!
//! Decoding keeps what the model promises to keep: attribute order, extension types (string,
//! boolean, integer) and, for JSON data, the exact text of the `data` value as it appeared in the
//! input (inner whitespace included). Decoding never panics, whatever the bytes.
//!
//! Encoding writes the JSON text directly rather than through `serde_json::Value`, so JSON data
//! is embedded verbatim and large numbers inside it keep their digits.

use std::borrow::Cow;
use std::fmt;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use bytes::Bytes;
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::EventError;
use crate::model::{first_duplicate, AttrValue, Data, DataForm, Event};

/// Member name for data that is a JSON value or a string (JSON format §3.1.1).
const DATA: &str = "data";
/// Member name for binary data, base64-encoded (JSON format §3.1.1).
const DATA_BASE64: &str = "data_base64";

/// Standard-alphabet base64 that accepts input with or without `=` padding: producers differ,
/// and the padding carries no information.
const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Whether a content type declares JSON-formatted data (JSON format §3.1.1): its media type,
/// stripped of parameters and compared case-insensitively, has the form `*/json` (so
/// `application/json` and `text/json`) or `*/*+json` (such as `application/vnd.foo+json`).
pub fn is_json_content_type(content_type: &str) -> bool {
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    let Some((ty, subtype)) = media_type.split_once('/') else {
        return false;
    };
    // Compare bytes: slicing a `str` at a fixed offset could split a multi-byte character.
    let subtype = subtype.as_bytes();
    let has_json_suffix =
        subtype.len() > b"+json".len() && subtype[subtype.len() - b"+json".len()..].eq_ignore_ascii_case(b"+json");
    !ty.is_empty() && (subtype.eq_ignore_ascii_case(b"json") || has_json_suffix)
}

/// Whether a content type declares text that is not JSON: `text/*`, `application/xml`, any
/// `*/*+xml`, or any type with a `charset` parameter (RFC 2046 §4.1.2 gives `charset` to text
/// only). Such data, when it is UTF-8, goes in the JSON format as a string (JSON format §3.1.1),
/// so that an SDK hands its subscriber a string, not bytes.
pub fn is_text_content_type(content_type: &str) -> bool {
    if is_json_content_type(content_type) {
        return false;
    }
    let mut parts = content_type.split(';');
    let media_type = parts.next().unwrap_or_default().trim();
    let has_charset = parts.any(|parameter| {
        parameter.split_once('=').is_some_and(|(name, _)| name.trim().eq_ignore_ascii_case("charset"))
    });
    let Some((ty, subtype)) = media_type.split_once('/') else {
        return false;
    };
    let subtype = subtype.as_bytes();
    let has_xml_suffix =
        subtype.len() > b"+xml".len() && subtype[subtype.len() - b"+xml".len()..].eq_ignore_ascii_case(b"+xml");
    has_charset
        || ty.eq_ignore_ascii_case("text")
        || (ty.eq_ignore_ascii_case("application") && subtype.eq_ignore_ascii_case(b"xml"))
        || has_xml_suffix
}

/// Decodes one event in the JSON format (JSON format §3): a JSON object whose members are the
/// context attributes, plus `data` or `data_base64`.
///
/// Rules beyond plain validation ([`Event::new`]):
/// - a member repeated in the object is an error (serde would silently keep the last one);
/// - a `null` attribute is treated as absent (§2.2); `"data": null` is an explicit null JSON
///   payload (§3.1.1), kept as JSON data with the text `null`;
/// - extension values may be strings, booleans or integers in the 32-bit range (core spec §3.3);
///   floats, larger integers, objects and arrays are rejected;
/// - `data` and `data_base64` together are an error (§3.1.1).
pub fn decode_event(bytes: &[u8]) -> Result<Event, EventError> {
    match serde_json::from_slice::<RawEvent<'_>>(bytes) {
        Ok(raw) => raw.into_event(),
        Err(e) => Err(EventError::Malformed(e.to_string())),
    }
}

/// Decodes a JSON batch (JSON format §4): an array of events in the JSON format.
///
/// An empty array yields no events. One invalid event fails the whole batch, and the error
/// names its zero-based index ([`EventError::InBatch`]): a producer must not have to guess which
/// of its events were accepted.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<Event>, EventError> {
    decode_batch_at_most(bytes, usize::MAX)
}

/// [`decode_batch`] of at most `max_events` events: past that, the rest of the array is only
/// counted (nothing is kept of it), and the batch is refused with
/// [`EventError::TooManyEvents`], so a body of many tiny events costs one scan, not a decode.
pub fn decode_batch_at_most(bytes: &[u8], max_events: usize) -> Result<Vec<Event>, EventError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed = BatchSeed { max_events }.deserialize(&mut deserializer).and_then(|batch| {
        deserializer.end()?;
        Ok(batch)
    });
    let raw = match parsed {
        Ok(RawBatch::Array(events)) => events,
        Ok(RawBatch::TooMany { count }) => return Err(EventError::TooManyEvents { count, limit: max_events }),
        Ok(RawBatch::NotArray(kind)) => {
            return Err(EventError::Malformed(format!("a batch must be a JSON array, found {kind}")))
        }
        Err(e) => return Err(EventError::Malformed(e.to_string())),
    };
    raw.into_iter()
        .enumerate()
        .map(|(index, event)| event.into_event().map_err(|error| EventError::InBatch { index, error: Box::new(error) }))
        .collect()
}

/// Decodes an event already parsed into a [`serde_json::Value`], for callers that hold one.
///
/// Same rules as [`decode_event`], with two losses inherent to `Value`: repeated members cannot
/// be detected (the map kept only one), and JSON data is re-serialized compactly rather than
/// kept as its original text.
pub fn from_value(value: &Value) -> Result<Event, EventError> {
    let Value::Object(object) = value else {
        return Err(not_an_object(json_kind(value)));
    };
    let mut raw = RawEvent::default();
    for (name, member) in object {
        if name == DATA {
            // Serializing a `Value` cannot fail: its keys are strings.
            let text = serde_json::to_string(member).map_err(|e| EventError::Malformed(e.to_string()))?;
            raw.data.push(Cow::Owned(text));
        } else {
            raw.members.push((name.clone(), member.clone()));
        }
    }
    raw.into_event()
}

/// The JSON-format text of `event` (JSON format §3).
///
/// Attributes come in stored order with their types. Data is written as:
/// - JSON data: its text verbatim as `data`, unless the bytes are not valid JSON, or are a JSON
///   string under a non-JSON content type (a decoder would read that back as text and drop the
///   quotes); those go as `data_base64` so the bytes survive;
/// - text data (a JSON string, or UTF-8 bytes under a textual content type however they
///   arrived, [`DataForm::of_bytes`]): a JSON string as `data` when the content type is
///   present and not JSON (the only case a decoder reads back as text); otherwise, or when the
///   bytes are not UTF-8, `data_base64`;
/// - other bytes: `data_base64`.
///
/// So `decode_event(&encode_event(e)) == e` for every event the decoders produce. The one
/// loss is whitespace around a JSON payload (e.g. a trailing newline of a binary-mode body): it
/// is embedded verbatim, but JSON cannot tell it apart from the object's own whitespace.
pub fn encode_event(event: &Event) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + event.data().map_or(0, |d| d.bytes.len() * 4 / 3));
    encode_into(event, &mut out);
    out
}

/// The JSON batch text of `events` (JSON format §4): an array of [`encode_event`] texts.
pub fn encode_batch(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + events.len() * 256);
    out.push(b'[');
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        encode_into(event, &mut out);
    }
    out.push(b']');
    out
}

/// Appends the JSON-format text of `event` to `out` (see [`encode_event`]).
pub fn encode_into(event: &Event, out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (name, value)) in event.attributes().iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_json_string(out, name);
        out.push(b':');
        match value {
            AttrValue::String(s) => push_json_string(out, s),
            AttrValue::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            AttrValue::Integer(n) => out.extend_from_slice(n.to_string().as_bytes()),
        }
    }
    if let Some(data) = event.data() {
        if !event.attributes().is_empty() {
            out.push(b',');
        }
        match data_member(data, event.datacontenttype()) {
            DataMember::Json(text) => {
                push_json_string(out, DATA);
                out.push(b':');
                out.extend_from_slice(text.as_bytes());
            }
            DataMember::Text(text) => {
                push_json_string(out, DATA);
                out.push(b':');
                push_json_string(out, text);
            }
            DataMember::Base64 => {
                push_json_string(out, DATA_BASE64);
                out.push(b':');
                out.push(b'"');
                out.extend_from_slice(STANDARD.encode(&data.bytes).as_bytes());
                out.push(b'"');
            }
        }
    }
    out.push(b'}');
}

/// The event as a [`serde_json::Value`] object, with the member choices of [`encode_event`].
///
/// `Value` cannot hold raw JSON text, so JSON data is parsed: its whitespace is lost and numbers
/// beyond `f64` precision are rounded. Use [`encode_event`] where the bytes matter.
pub fn to_value(event: &Event) -> Value {
    let mut object = Map::with_capacity(event.attributes().len() + 1);
    for (name, value) in event.attributes() {
        let value = match value {
            AttrValue::String(s) => Value::String(s.clone()),
            AttrValue::Bool(b) => Value::Bool(*b),
            AttrValue::Integer(n) => Value::from(*n),
        };
        object.insert(name.clone(), value);
    }
    if let Some(data) = event.data() {
        let member = match data_member(data, event.datacontenttype()) {
            DataMember::Json(text) => serde_json::from_str::<Value>(text).ok().map(|v| (DATA, v)),
            DataMember::Text(text) => Some((DATA, Value::String(text.to_owned()))),
            DataMember::Base64 => None,
        };
        let (name, value) = member.unwrap_or_else(|| (DATA_BASE64, Value::String(STANDARD.encode(&data.bytes))));
        object.insert(name.to_owned(), value);
    }
    Value::Object(object)
}

/// How a payload is written, chosen so that decoding gives the same bytes back.
enum DataMember<'a> {
    /// `data` holding this JSON text verbatim.
    Json(&'a str),
    /// `data` holding this text as a JSON string.
    Text(&'a str),
    /// `data_base64`.
    Base64,
}

fn data_member<'a>(data: &'a Data, content_type: Option<&str>) -> DataMember<'a> {
    // Bytes stored before text was told apart on the way in are told apart here.
    let form = match data.form {
        DataForm::Binary => DataForm::of_bytes(content_type, &data.bytes),
        form => form,
    };
    // JSON format §3.1.2: an absent content type means `application/json`.
    let json_content = content_type.is_none_or(is_json_content_type);
    let Ok(text) = std::str::from_utf8(&data.bytes) else {
        return DataMember::Base64;
    };
    match form {
        DataForm::Json => {
            // serde_json does not check UTF-8 while skipping strings, hence `from_str` on the
            // already-checked text.
            let is_json = serde_json::from_str::<IgnoredAny>(text).is_ok();
            // Under a non-JSON content type a JSON string would be read back as text.
            let read_back_as_text = !json_content && text.trim_start().starts_with('"');
            if is_json && !read_back_as_text {
                DataMember::Json(text)
            } else {
                DataMember::Base64
            }
        }
        DataForm::Text if !json_content => DataMember::Text(text),
        DataForm::Text | DataForm::Binary => DataMember::Base64,
    }
}

/// Appends `s` as a JSON string. Written by hand so encoding has no error path to handle.
fn push_json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(s.len() + 2);
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// One event object as parsed, before validation: members in input order, with `data` kept as
/// its raw text. Anything else than an object is recorded rather than failed on, so that a batch
/// can report which element was wrong.
#[derive(Default)]
struct RawEvent<'a> {
    members: Vec<(String, Value)>,
    /// Every `data` member seen: more than one is a duplicate.
    data: Vec<Cow<'a, str>>,
    /// What the value was when it was not an object.
    not_object: Option<&'static str>,
}

impl RawEvent<'_> {
    fn into_event(self) -> Result<Event, EventError> {
        if let Some(kind) = self.not_object {
            return Err(not_an_object(kind));
        }
        if self.data.len() > 1 {
            return Err(EventError::DuplicateAttribute(DATA.to_owned()));
        }
        if let Some((name, _)) = first_duplicate(&self.members, |(n, _)| n.as_str()) {
            return Err(EventError::DuplicateAttribute(name.clone()));
        }
        let mut attributes = Vec::with_capacity(self.members.len());
        let mut data_base64 = None;
        for (name, value) in self.members {
            if name == DATA_BASE64 {
                match value {
                    Value::Null => {}
                    Value::String(s) => data_base64 = Some(s),
                    other => {
                        return Err(invalid(
                            DATA_BASE64,
                            format!("must be a base64 string, found {}", json_kind(&other)),
                        ))
                    }
                }
            } else if let Some(value) = attr_value(&name, value)? {
                attributes.push((name, value));
            }
        }
        let data_text = self.data.into_iter().next();
        let content_type = attributes.iter().find(|(n, _)| n == "datacontenttype").and_then(|(_, v)| v.as_str());
        let data = match (data_text, data_base64) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    DATA_BASE64,
                    "cannot be present together with 'data' (json format §3.1.1)".to_owned(),
                ))
            }
            (None, None) => None,
            (None, Some(encoded)) => match BASE64_LENIENT.decode(encoded.as_bytes()) {
                Ok(bytes) => Some(Data { form: DataForm::of_bytes(content_type, &bytes), bytes: Bytes::from(bytes) }),
                Err(e) => {
                    return Err(invalid(DATA_BASE64, format!("is not valid base64 ({e})")));
                }
            },
            (Some(text), None) => Some(data_from_text(&text, content_type)?),
        };
        Event::new(attributes, data)
    }
}

/// JSON format §3.1.2: under a JSON content type (or none) `data` is a JSON value, kept as its
/// text; under any other content type a string is the payload text itself, and other values
/// are kept as JSON since there is no better reading of them.
fn data_from_text(text: &str, content_type: Option<&str>) -> Result<Data, EventError> {
    let json_content = content_type.is_none_or(is_json_content_type);
    if !json_content && text.starts_with('"') {
        let unescaped = serde_json::from_str::<String>(text).map_err(|e| invalid(DATA, e.to_string()))?;
        return Ok(Data { form: DataForm::Text, bytes: Bytes::from(unescaped) });
    }
    Ok(Data { form: DataForm::Json, bytes: Bytes::copy_from_slice(text.as_bytes()) })
}

/// JSON format §2.2: strings, booleans and integers map to the CloudEvents types; `null` means
/// the attribute is absent.
fn attr_value(name: &str, value: Value) -> Result<Option<AttrValue>, EventError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(AttrValue::String(s))),
        Value::Bool(b) => Ok(Some(AttrValue::Bool(b))),
        Value::Number(n) => match n.as_i64() {
            Some(i) => match i32::try_from(i) {
                Ok(i) => Ok(Some(AttrValue::Integer(i))),
                Err(_) => Err(invalid(name, format!("value {n} is outside the 32-bit integer range"))),
            },
            None if n.is_u64() => Err(invalid(name, format!("value {n} is outside the 32-bit integer range"))),
            None => Err(invalid(name, format!("value {n} is not a string, boolean or integer"))),
        },
        other => Err(invalid(name, format!("must be a string, boolean or integer, found {}", json_kind(&other)))),
    }
}

fn invalid(name: &str, reason: String) -> EventError {
    EventError::InvalidAttribute { name: name.to_owned(), reason }
}

fn not_an_object(kind: &str) -> EventError {
    EventError::Malformed(format!("an event must be a JSON object, found {kind}"))
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl<'de> Deserialize<'de> for RawEvent<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawEventVisitor)
    }
}

struct RawEventVisitor;

impl RawEventVisitor {
    fn not_object<'a>(kind: &'static str) -> RawEvent<'a> {
        RawEvent { not_object: Some(kind), ..RawEvent::default() }
    }
}

impl<'de> Visitor<'de> for RawEventVisitor {
    type Value = RawEvent<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a CloudEvent JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut raw = RawEvent::default();
        while let Some(name) = map.next_key::<String>()? {
            if name == DATA {
                // Borrowed from the input: the exact text of the value, inner whitespace kept.
                let text: &'de RawValue = map.next_value()?;
                raw.data.push(Cow::Borrowed(text.get()));
            } else {
                raw.members.push((name, map.next_value()?));
            }
        }
        Ok(raw)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Self::not_object("an array"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Self::not_object("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Self::not_object("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Self::not_object("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Self::not_object("a number"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Self::not_object("a string"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Self::not_object("null"))
    }
}

/// A batch as parsed: the events, how many there were when too many, or what the document
/// was instead of an array.
enum RawBatch<'a> {
    Array(Vec<RawEvent<'a>>),
    TooMany { count: usize },
    NotArray(&'static str),
}

/// Parses a batch of at most `max_events` events.
struct BatchSeed {
    max_events: usize,
}

impl<'de> DeserializeSeed<'de> for BatchSeed {
    type Value = RawBatch<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BatchSeed {
    type Value = RawBatch<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of CloudEvents")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // The size hint comes from the input: cap it so a lie cannot reserve a huge buffer.
        let mut events = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024).min(self.max_events));
        while events.len() < self.max_events {
            match seq.next_element()? {
                Some(event) => events.push(event),
                None => return Ok(RawBatch::Array(events)),
            }
        }
        let mut count = events.len();
        while seq.next_element::<IgnoredAny>()?.is_some() {
            count += 1;
        }
        Ok(match count > self.max_events {
            true => RawBatch::TooMany { count },
            false => RawBatch::Array(events),
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(RawBatch::NotArray("an object"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(RawBatch::NotArray("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(RawBatch::NotArray("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(RawBatch::NotArray("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(RawBatch::NotArray("a number"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(RawBatch::NotArray("a string"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(RawBatch::NotArray("null"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{arb_event, invalid_cases, required, s};
    use proptest::prelude::*;

    fn event_json(attributes: &[(&str, &str)]) -> String {
        let object: Map<String, Value> = attributes.iter().map(|(n, v)| ((*n).to_owned(), Value::from(*v))).collect();
        Value::Object(object).to_string()
    }

    const VALID: &str = r#"{"specversion":"1.0","id":"1","source":"/s","type":"t"}"#;

    /// Decodes a JSON object body made of the required attributes plus `extra` members.
    fn decode_with(extra: &str) -> Result<Event, EventError> {
        decode_event(format!(r#"{{"specversion":"1.0","id":"1","source":"/s","type":"t"{extra}}}"#).as_bytes())
    }

    #[test]
    fn json_content_types() {
        let cases = [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("APPLICATION/JSON", true),
            ("Application/Json ; charset=UTF-8", true),
            ("text/json", true),
            ("application/vnd.foo+json", true),
            ("application/cloudevents+json", true),
            ("application/vnd.foo+JSON;v=2", true),
            ("text/plain", false),
            ("application/jsonx", false),
            ("application/json-seq", false),
            ("application/+json", false),
            ("/json", false),
            ("json", false),
            ("", false),
            ("application/xml", false),
            ("application/ü+json", true),
            ("application/é", false),
        ];
        for (content_type, expected) in cases {
            assert_eq!(is_json_content_type(content_type), expected, "{content_type}");
        }
    }

    #[test]
    fn spec_examples_decode_to_the_expected_data_forms() {
        // JSON format §3.2, one row per example: (extra members, form, bytes).
        let cases: [(&str, DataForm, &[u8]); 5] = [
            (
                r#","datacontenttype":"application/vnd.apache.thrift.binary","data_base64":"AAEC/w==""#,
                DataForm::Binary,
                &[0, 1, 2, 255],
            ),
            (
                r#","datacontenttype":"application/xml","data":"<much wow=\"xml\"/>""#,
                DataForm::Text,
                br#"<much wow="xml"/>"#,
            ),
            (
                r#","datacontenttype":"application/json","data":{ "appinfoA" : "abc",  "appinfoB" : 123 }"#,
                DataForm::Json,
                br#"{ "appinfoA" : "abc",  "appinfoB" : 123 }"#,
            ),
            (r#","data":"I'm just a string""#, DataForm::Json, br#""I'm just a string""#),
            (r#","data": null"#, DataForm::Json, b"null"),
        ];
        for (extra, form, bytes) in cases {
            let event = decode_with(extra).expect(extra);
            let data = event.data().expect(extra);
            assert_eq!((data.form, &data.bytes[..]), (form, bytes), "{extra}");
        }
    }

    #[test]
    fn data_is_classified_by_content_type_and_shape() {
        // (extra members, form, bytes)
        let cases: [(&str, DataForm, &[u8]); 12] = [
            (r#","data":{"a":[1,2.50,"x"]}"#, DataForm::Json, br#"{"a":[1,2.50,"x"]}"#),
            (
                r#","data":[ 1 ,
                2 ]"#,
                DataForm::Json,
                b"[ 1 ,\n                2 ]",
            ),
            (r#","data":12345678901234567890123"#, DataForm::Json, b"12345678901234567890123"),
            (r#","data":"a\u00e9\n""#, DataForm::Json, br#""a\u00e9\n""#),
            (r#","datacontenttype":"text/plain","data":"a\u00e9\n""#, DataForm::Text, "a\u{e9}\n".as_bytes()),
            (r#","datacontenttype":"text/plain","data":42"#, DataForm::Json, b"42"),
            (r#","datacontenttype":"text/plain","data":{"k":1}"#, DataForm::Json, br#"{"k":1}"#),
            (r#","datacontenttype":"text/json","data":"x""#, DataForm::Json, br#""x""#),
            (r#","data_base64":"aGk""#, DataForm::Binary, b"hi"),
            (r#","datacontenttype":"text/plain","data_base64":"aGk""#, DataForm::Text, b"hi"),
            (r#","datacontenttype":"text/plain","data_base64":"/w==""#, DataForm::Binary, b"\xff"),
            (r#","data_base64":"""#, DataForm::Binary, b""),
        ];
        for (extra, form, bytes) in cases {
            let event = decode_with(extra).expect(extra);
            let data = event.data().expect(extra);
            assert_eq!((data.form, &data.bytes[..]), (form, bytes), "{extra}");
        }
        assert_eq!(decode_with(r#","data_base64":null"#).unwrap().data(), None);
    }

    #[test]
    fn attributes_keep_order_and_types_and_null_means_absent() {
        let event =
            decode_with(r#","zeta":"z","alpha":true,"mid":-2147483648,"gone":null,"subject":null,"beta":2147483647"#)
                .unwrap();
        let mut expected = vec![
            ("specversion", s("1.0")),
            ("id", s("1")),
            ("source", s("/s")),
            ("type", s("t")),
            ("zeta", s("z")),
            ("alpha", AttrValue::Bool(true)),
            ("mid", AttrValue::Integer(i32::MIN)),
        ];
        expected.push(("beta", AttrValue::Integer(i32::MAX)));
        let actual: Vec<_> = event.attributes().iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
        assert_eq!(actual, expected);
    }

    #[test]
    fn invalid_events_are_rejected_in_single_and_batch_form() {
        for case in invalid_cases() {
            let body = event_json(&case.attributes);
            let err = decode_event(body.as_bytes()).expect_err(&body).to_string();
            assert!(err.contains(case.expected), "{body}: {err}");

            let batch = format!("[{VALID},{body}]");
            let err = decode_batch(batch.as_bytes()).expect_err(&batch).to_string();
            assert!(err.starts_with("event 1: ") && err.contains(case.expected), "{batch}: {err}");
        }
    }

    #[test]
    fn json_specific_invalid_events() {
        // (extra members, fragment of the error)
        let cases = [
            (r#","ext":1.5"#, "invalid attribute 'ext': value 1.5 is not"),
            (r#","ext":1e3"#, "invalid attribute 'ext'"),
            (r#","ext":2147483648"#, "invalid attribute 'ext': value 2147483648 is outside"),
            (r#","ext":-2147483649"#, "value -2147483649 is outside"),
            (r#","ext":18446744073709551615"#, "value 18446744073709551615 is outside"),
            (r#","ext":{"a":1}"#, "invalid attribute 'ext': must be a string, boolean or integer, found an object"),
            (r#","ext":[1]"#, "found an array"),
            (r#","subject":5"#, "invalid attribute 'subject': must be a string"),
            (r#","time":true"#, "invalid attribute 'time': must be a string"),
            (r#","datacontenttype":7,"data":1"#, "invalid attribute 'datacontenttype'"),
            (
                r#","data":1,"data_base64":"AA==""#,
                "invalid attribute 'data_base64': cannot be present together with 'data'",
            ),
            (r#","data_base64":"not base64!""#, "invalid attribute 'data_base64': is not valid base64"),
            (r#","data_base64":5"#, "invalid attribute 'data_base64': must be a base64 string, found a number"),
            (r#","id":"2""#, "duplicate attribute 'id'"),
            (r#","ext":null,"ext":"x""#, "duplicate attribute 'ext'"),
            (r#","data":1,"data":2"#, "duplicate attribute 'data'"),
            (r#","data_base64":"","data_base64":"""#, "duplicate attribute 'data_base64'"),
            (r#","Ext":"x""#, "invalid attribute name 'Ext'"),
            (r#","":"x""#, "invalid attribute name ''"),
        ];
        for (extra, expected) in cases {
            let err = decode_with(extra).expect_err(extra).to_string();
            assert!(err.contains(expected), "{extra}: {err}");
        }
        // Spec attributes given as numbers are not strings.
        let err = decode_event(br#"{"specversion":1.0,"id":"1","source":"/s","type":"t"}"#).unwrap_err();
        assert!(err.to_string().contains("'specversion'"), "{err}");
        let err = decode_event(br#"{"specversion":"1.0","id":1,"source":"/s","type":"t"}"#).unwrap_err();
        assert!(err.to_string().contains("invalid attribute 'id': must be a string"), "{err}");
    }

    #[test]
    fn malformed_documents() {
        let cases: [(&[u8], &str); 9] = [
            (b"", "malformed event"),
            (b"{", "malformed event"),
            (b"[]", "an event must be a JSON object, found an array"),
            (b"\"x\"", "found a string"),
            (b"null", "found null"),
            (b"{} {}", "trailing characters"),
            (b"{\"id\":\"\xff\"}", "malformed event"),
            (b"{\"id\":\"\x01\"}", "malformed event"),
            (b"{\"data\":\"\xff\"}", "malformed event"),
        ];
        for (bytes, expected) in cases {
            let err = decode_event(bytes).expect_err(expected).to_string();
            assert!(err.contains(expected), "{}: {err}", String::from_utf8_lossy(bytes));
        }
        // Nesting beyond serde_json's recursion limit is an error, not a stack overflow.
        let deep = format!(r#"{{"specversion":"1.0","data":{}1{}}}"#, "[".repeat(10_000), "]".repeat(10_000));
        assert!(decode_event(deep.as_bytes()).is_err());
    }

    #[test]
    fn a_batch_over_the_limit_is_counted_not_decoded() {
        let body = format!("[{VALID},{VALID},{VALID}]");
        assert_eq!(decode_batch_at_most(body.as_bytes(), 3).unwrap().len(), 3);
        // Elements past the limit are only counted: even invalid ones.
        let body = format!("[{VALID},{VALID},{{}},7]");
        let error = decode_batch_at_most(body.as_bytes(), 2).unwrap_err();
        assert_eq!(error, EventError::TooManyEvents { count: 4, limit: 2 });
        assert!(error.to_string().starts_with("the batch has 4 events, above the limit of 2 (max_batch_events)"));
        // Still the JSON rules: what follows the array, or a broken tail, is malformed.
        assert!(matches!(decode_batch_at_most(b"[] x", 2), Err(EventError::Malformed(_))));
        assert!(matches!(
            decode_batch_at_most(format!("[{VALID},{VALID},{VALID}").as_bytes(), 2),
            Err(EventError::Malformed(_))
        ));
    }

    #[test]
    fn batch_edge_cases() {
        assert_eq!(decode_batch(b"[]").unwrap(), vec![]);
        assert_eq!(decode_batch(b" [ ] ").unwrap(), vec![]);
        let cases: [(&str, &str); 7] = [
            (VALID, "malformed event: a batch must be a JSON array, found an object"),
            ("null", "found null"),
            ("3", "found a number"),
            ("[1]", "event 0: malformed event: an event must be a JSON object, found a number"),
            ("[[]]", "event 0: malformed event: an event must be a JSON object, found an array"),
            ("[{}, {}]", "event 0: missing required attribute"),
            ("[{},", "malformed event"),
        ];
        for (body, expected) in cases {
            let err = decode_batch(body.as_bytes()).expect_err(body).to_string();
            assert!(err.contains(expected), "{body}: {err}");
        }
        let missing_id = r#"{"specversion":"1.0","source":"/s","type":"t"}"#;
        let body = format!("[{VALID},{VALID},{VALID},{missing_id},{VALID}]");
        assert_eq!(decode_batch(body.as_bytes()).unwrap_err().to_string(), "event 3: missing required attribute 'id'");
        // Nested data of every JSON type inside one batch, raw text kept per element.
        let datas = [r#"{"a":{"b":[null,true]}}"#, r#"[1, "two", 3.0]"#, r#""s""#, "-0.5e-3", "null", "false"];
        let body = format!(
            "[{}]",
            datas
                .iter()
                .map(|d| format!(r#"{{"specversion":"1.0","id":"1","source":"/s","type":"t","data":{d}}}"#))
                .collect::<Vec<_>>()
                .join(",")
        );
        let events = decode_batch(body.as_bytes()).unwrap();
        let texts: Vec<_> = events.iter().map(|e| e.data().unwrap().bytes.clone()).collect();
        assert_eq!(texts, datas.iter().map(|d| Bytes::from(d.as_bytes())).collect::<Vec<_>>());
        // Duplicates inside a batch element are detected too.
        let dup = r#"[{"specversion":"1.0","id":"1","id":"2","source":"/s","type":"t"}]"#;
        assert_eq!(decode_batch(dup.as_bytes()).unwrap_err().to_string(), "event 0: duplicate attribute 'id'");
    }

    fn event_with(data: Option<Data>, content_type: Option<&str>) -> Event {
        let mut attributes = required();
        attributes.extend(content_type.map(|ct| ("datacontenttype".to_owned(), s(ct))));
        Event::new(attributes, data).unwrap()
    }

    #[test]
    fn encode_writes_attributes_in_order_with_types() {
        let mut event = event_with(None, None);
        event.set_extension("flag", AttrValue::Bool(false)).unwrap();
        event.set_extension("count", AttrValue::Integer(-7)).unwrap();
        event.set_extension("quote", s("a\"b\\c\u{1}é")).unwrap_err();
        event.set_extension("quote", s("a\"b\\c/é")).unwrap();
        assert_eq!(
            String::from_utf8(encode_event(&event)).unwrap(),
            r#"{"specversion":"1.0","id":"id-1","source":"/src","type":"com.example.t","flag":false,"count":-7,"quote":"a\"b\\c/é"}"#
        );
    }

    #[test]
    fn encode_picks_the_data_member_that_reads_back_the_same_bytes() {
        let data = |form, bytes: &'static [u8]| Some(Data { form, bytes: Bytes::from_static(bytes) });
        // (data, content type, expected tail of the encoding)
        let cases = [
            (data(DataForm::Json, b"{ \"a\" : 1 }"), None, r#","data":{ "a" : 1 }}"#),
            (data(DataForm::Json, b"\"s\""), Some("application/json"), r#","data":"s"}"#),
            (data(DataForm::Json, b"5"), Some("text/plain"), r#","data":5}"#),
            (data(DataForm::Json, b"\"s\""), Some("text/plain"), r#","data_base64":"InMi"}"#),
            (data(DataForm::Json, b"{not json"), None, r#","data_base64":"e25vdCBqc29u"}"#),
            (data(DataForm::Json, b"\"\xff\""), None, r#","data_base64":"Iv8i"}"#),
            (data(DataForm::Text, b"a\"\x01\n"), Some("text/plain"), r#","data":"a\"\u0001\n"}"#),
            (data(DataForm::Text, b"hi"), None, r#","data_base64":"aGk="}"#),
            (data(DataForm::Text, b"hi"), Some("application/json"), r#","data_base64":"aGk="}"#),
            (data(DataForm::Text, b"\xff"), Some("text/plain"), r#","data_base64":"/w=="}"#),
            (data(DataForm::Binary, b"{}"), Some("application/json"), r#","data_base64":"e30="}"#),
            (data(DataForm::Binary, b""), None, r#","data_base64":""}"#),
        ];
        for (data, content_type, tail) in cases {
            let event = event_with(data, content_type);
            let text = String::from_utf8(encode_event(&event)).unwrap();
            assert!(text.ends_with(tail), "{text}");
            // Bytes always survive, whatever the member.
            let back = decode_event(text.as_bytes()).unwrap();
            assert_eq!(back.data().map(|d| &d.bytes), event.data().map(|d| &d.bytes), "{text}");
        }
    }

    #[test]
    fn value_conversions() {
        let mut event = event_with(
            Some(Data { form: DataForm::Json, bytes: Bytes::from_static(br#"{"b":[1,2],"a":null}"#) }),
            Some("application/json"),
        );
        event.set_extension("n", AttrValue::Integer(3)).unwrap();
        let value = to_value(&event);
        assert_eq!(value["n"], Value::from(3));
        assert_eq!(value["data"]["b"][1], Value::from(2));
        assert_eq!(from_value(&value).unwrap(), event);
        assert_eq!(serde_json::to_vec(&value).unwrap(), encode_event(&event));

        let binary = event_with(Some(Data { form: DataForm::Binary, bytes: Bytes::from_static(b"\0") }), None);
        assert_eq!(to_value(&binary)["data_base64"], Value::from("AA=="));
        assert_eq!(from_value(&to_value(&binary)).unwrap(), binary);
        assert!(from_value(&Value::from(1)).unwrap_err().to_string().contains("found a number"));
    }

    #[test]
    fn batch_encoding() {
        assert_eq!(encode_batch(&[]), b"[]");
        let events = vec![event_with(None, None), event_with(None, Some("text/plain"))];
        assert_eq!(decode_batch(&encode_batch(&events)).unwrap(), events);
    }

    proptest! {
        #[test]
        fn json_roundtrip(event in arb_event()) {
            let text = encode_event(&event);
            prop_assert_eq!(decode_event(&text).unwrap(), event.clone());
            let via_value = from_value(&to_value(&event)).unwrap();
            prop_assert_eq!(via_value.attributes(), event.attributes());
        }

        #[test]
        fn batch_roundtrip(events in proptest::collection::vec(arb_event(), 0..4)) {
            prop_assert_eq!(decode_batch(&encode_batch(&events)).unwrap(), events);
        }

        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_event(&bytes);
            let _ = decode_batch(&bytes);
        }

        #[test]
        fn decoding_mutated_events_never_panics(event in arb_event(), at in any::<usize>(), byte in any::<u8>()) {
            let mut text = encode_event(&event);
            let at = at % text.len();
            text[at] = byte;
            let _ = decode_event(&text);
            let _ = decode_batch(&[b"[", &text[..], b"]"].concat());
        }
    }
}
