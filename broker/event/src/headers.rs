//! The bindings whose messages carry attributes as prefixed headers next to a payload — Kafka
//! (`ce_`, Kafka binding §3.2.3), NATS (`ce-`, NATS binding §3.1.3 of 1.0.2), AMQP
//! (`cloudEvents_`, AMQP binding §3.1.3) — all read the same way, with the prefix as the only
//! difference: a `content-type` that is a CloudEvents media type selects structured mode, and
//! otherwise each prefixed header is an attribute and the payload the data.
//!
//! Pure code: the clients that carry these messages live in the log backend and the sources.

use bytes::Bytes;

use crate::error::EventError;
use crate::http::{invalid, starts_with_ignore_ascii_case, STRUCTURED_MEDIA_TYPE};
use crate::json;
use crate::kafka::TYPES_HEADER;
use crate::model::{AttrValue, Data, DataForm, Event};

/// The header carrying `datacontenttype` in binary mode and the event format in structured
/// mode (matched case-insensitively).
pub const CONTENT_TYPE: &str = "content-type";

/// Prefix of every CloudEvents media type: a `content-type` starting with it selects structured
/// mode.
const CLOUDEVENTS_MEDIA_TYPE_PREFIX: &str = "application/cloudevents";

/// Decodes the event a message carries, given its headers (a header may have no value), the
/// binding's attribute `prefix`, and its payload (`None`: none at all). The content mode is
/// the one its `content-type` header selects:
///
/// - a value starting with `application/cloudevents` (case-insensitively) is structured mode,
///   unless a `{prefix}specversion` header says binary mode (a structured-mode message carries
///   no attribute headers, so an event whose `datacontenttype` is itself a CloudEvents media
///   type still reads back). Only the JSON format is understood; the payload is decoded with
///   [`json::decode_event`] and every other header is ignored. Other formats, and the batch
///   media type, are [`EventError::UnsupportedFormat`].
/// - Binary mode: each header starting with `prefix` (matched case-insensitively, the rest
///   taken as the attribute name) is an attribute whose value is the header's UTF-8 text;
///   `content-type` is `datacontenttype`; a payload is the data, in the form
///   [`DataForm::infer`] gives it. Then [`TYPES_HEADER`], if present, restores extension types
///   and the data form. Other headers are ignored.
///
/// A header listed twice is a duplicate attribute; an attribute header without a value or with
/// a value that is not UTF-8 is an error naming the attribute; a message without
/// `{prefix}specversion` is [`EventError::MissingAttribute`]. Never panics, whatever the input.
pub fn decode<'a>(
    headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    prefix: &str,
    value: Option<Bytes>,
) -> Result<Event, EventError> {
    let headers: Vec<(&str, Option<&[u8]>)> = headers.into_iter().collect();
    let content_type = headers.iter().find(|(name, _)| name.eq_ignore_ascii_case(CONTENT_TYPE)).map(|(_, v)| *v);
    // A binary-mode event whose `datacontenttype` is itself a CloudEvents media type has a
    // `content-type` that reads as structured mode; its `ce_specversion` header settles it
    // (a structured-mode record carries no `ce_` headers, §3.3), so every event the encoder
    // writes reads back (found by the kafka_record fuzz target).
    let specversion = format!("{prefix}specversion");
    let binary = headers.iter().any(|(name, _)| name.eq_ignore_ascii_case(&specversion));
    if let (Some(Some(content_type)), false) = (content_type, binary) {
        if let Ok(text) = std::str::from_utf8(content_type) {
            let media_type = text.split(';').next().unwrap_or_default().trim();
            if starts_with_ignore_ascii_case(media_type, CLOUDEVENTS_MEDIA_TYPE_PREFIX) {
                if !media_type.eq_ignore_ascii_case(STRUCTURED_MEDIA_TYPE) {
                    return Err(EventError::UnsupportedFormat(text.to_owned()));
                }
                let value = value
                    .ok_or_else(|| EventError::Malformed("a structured-mode message has no payload".to_owned()))?;
                return json::decode_event(&value);
            }
        }
    }
    decode_binary(&headers, prefix, value)
}

fn decode_binary(headers: &[(&str, Option<&[u8]>)], prefix: &str, value: Option<Bytes>) -> Result<Event, EventError> {
    let mut attributes = Vec::with_capacity(headers.len());
    let mut has_specversion = false;
    let mut types: Option<&[u8]> = None;
    for &(header, header_value) in headers {
        let name = if header.eq_ignore_ascii_case(CONTENT_TYPE) {
            "datacontenttype"
        } else if header.len() >= prefix.len()
            && header.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
        {
            let Some(name) = header.get(prefix.len()..) else { continue };
            if name.is_empty() {
                return Err(EventError::Malformed(format!("header '{header}' names no attribute")));
            }
            has_specversion |= name == "specversion";
            name
        } else if header == TYPES_HEADER {
            if types.is_some() {
                return Err(EventError::Malformed(format!("header '{TYPES_HEADER}' appears twice")));
            }
            types = Some(header_value.unwrap_or_default());
            continue;
        } else {
            continue;
        };
        let bytes = header_value.ok_or_else(|| invalid(name, "the header has no value"))?;
        let text = std::str::from_utf8(bytes).map_err(|_| invalid(name, "the header value is not valid utf-8"))?;
        attributes.push((name.to_owned(), AttrValue::String(text.to_owned())));
    }
    if !has_specversion {
        // Most likely not a CloudEvent at all: say so before anything else.
        return Err(EventError::MissingAttribute("specversion"));
    }
    let mut data = value.map(|bytes| {
        let content_type = attributes.iter().find(|(n, _)| n == "datacontenttype").and_then(|(_, v)| v.as_str());
        Data { form: DataForm::infer(content_type, &bytes), bytes }
    });
    if let Some(types) = types {
        apply_types(types, &mut attributes, &mut data)?;
    }
    Event::new(attributes, data)
}

/// Applies [`TYPES_HEADER`]: `name=boolean`, `name=integer` and `data=json|text|binary`,
/// comma-separated.
fn apply_types(
    header: &[u8],
    attributes: &mut [(String, AttrValue)],
    data: &mut Option<Data>,
) -> Result<(), EventError> {
    let header = std::str::from_utf8(header)
        .map_err(|_| EventError::Malformed(format!("header '{TYPES_HEADER}' is not valid utf-8")))?;
    for entry in header.split(',').filter(|entry| !entry.is_empty()) {
        let Some((name, kind)) = entry.split_once('=') else {
            return Err(EventError::Malformed(format!("header '{TYPES_HEADER}' has an entry without '=': '{entry}'")));
        };
        if name == "data" {
            let form = match kind {
                "json" => DataForm::Json,
                "text" => DataForm::Text,
                "binary" => DataForm::Binary,
                _ => {
                    return Err(EventError::Malformed(format!(
                        "header '{TYPES_HEADER}' names unknown data form '{kind}'"
                    )))
                }
            };
            let Some(data) = data.as_mut() else {
                return Err(EventError::Malformed(format!(
                    "header '{TYPES_HEADER}' gives a data form but the record has no value"
                )));
            };
            data.form = form;
            continue;
        }
        let Some((_, value)) = attributes.iter_mut().find(|(n, _)| n == name) else {
            return Err(EventError::Malformed(format!(
                "header '{TYPES_HEADER}' types attribute '{name}', which the record does not carry"
            )));
        };
        let AttrValue::String(text) = &*value else {
            return Err(EventError::Malformed(format!("header '{TYPES_HEADER}' types attribute '{name}' twice")));
        };
        *value = match kind {
            "boolean" => match text.as_str() {
                "true" => AttrValue::Bool(true),
                "false" => AttrValue::Bool(false),
                _ => return Err(invalid(name, &format!("'{text}' is not a boolean, as '{TYPES_HEADER}' says"))),
            },
            "integer" => match text.parse::<i32>() {
                // Only the canonical form, so one event has one record.
                Ok(n) if n.to_string() == *text => AttrValue::Integer(n),
                _ => return Err(invalid(name, &format!("'{text}' is not an integer, as '{TYPES_HEADER}' says"))),
            },
            _ => {
                return Err(EventError::Malformed(format!(
                    "header '{TYPES_HEADER}' gives attribute '{name}' unknown type '{kind}'"
                )))
            }
        };
    }
    Ok(())
}
