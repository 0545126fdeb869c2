//! The event as Switchyard keeps it: every attribute in ingest order with the type it arrived
//! with, and the data bytes exactly as received.

use bytes::Bytes;

use crate::error::EventError;
use crate::json;

/// The only CloudEvents version Switchyard accepts (core spec 1.0.2 still says `1.0`).
pub const SPEC_VERSION: &str = "1.0";

/// Context attributes defined by the core specification (§3.1 required, §3.1.1 optional).
pub const REQUIRED_ATTRIBUTES: [&str; 4] = ["id", "source", "specversion", "type"];
/// Optional context attributes defined by the core specification (§3.2).
pub const OPTIONAL_ATTRIBUTES: [&str; 4] = ["datacontenttype", "dataschema", "subject", "time"];

/// An attribute value with the type it was received with.
///
/// Only JSON can tell a boolean or an integer from a string, so binary-mode extensions are
/// always `String`; a JSON-format extension keeps its JSON type (core spec §3.3, JSON format
/// §2.2), so an event ingested in structured mode and delivered in structured mode is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AttrValue {
    /// A string, URI, URI-reference or timestamp, kept as its original text.
    String(String),
    /// A CloudEvents Boolean.
    Bool(bool),
    /// A CloudEvents Integer (32-bit signed, core spec §3.3).
    Integer(i32),
}

impl AttrValue {
    /// The canonical string form (core spec §3.3, "canonical string representation").
    pub fn to_canonical_string(&self) -> std::borrow::Cow<'_, str> {
        match self {
            AttrValue::String(s) => std::borrow::Cow::Borrowed(s),
            AttrValue::Bool(b) => std::borrow::Cow::Borrowed(if *b { "true" } else { "false" }),
            AttrValue::Integer(i) => std::borrow::Cow::Owned(i.to_string()),
        }
    }

    /// The value when it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            AttrValue::String(s) => Some(s),
            _ => None,
        }
    }
}

/// How the data was represented when it arrived, so that it can be represented the same way
/// when delivered (JSON format §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataForm {
    /// A JSON value; the bytes are its JSON text as received.
    Json,
    /// Text: JSON format `data` holding a string under a non-JSON content type, or a body in
    /// UTF-8 under a textual content type ([`DataForm::infer`]); the bytes are the UTF-8 text.
    Text,
    /// Opaque bytes: a body or JSON format `data_base64` that is neither JSON nor text
    /// ([`DataForm::of_bytes`]).
    Binary,
}

/// The event payload: the exact bytes, and how they were represented.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Data {
    /// How the payload arrived.
    pub form: DataForm,
    /// The payload bytes, unchanged.
    pub bytes: Bytes,
}

impl DataForm {
    /// The form of a payload that arrives as bare bytes with its content type (an HTTP
    /// binary-mode body, a Kafka record value): JSON when the content type is JSON and the bytes
    /// parse as JSON; text when the content type is textual ([`json::is_text_content_type`]) and
    /// the bytes are UTF-8, so the JSON format can carry it as a string (JSON format §3.1.1);
    /// opaque bytes otherwise.
    pub fn infer(content_type: Option<&str>, bytes: &[u8]) -> DataForm {
        let is_json = content_type.is_some_and(json::is_json_content_type)
            // UTF-8 is checked apart: serde_json does not check it inside strings it skips.
            && std::str::from_utf8(bytes).is_ok_and(|text| serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok());
        if is_json {
            DataForm::Json
        } else {
            DataForm::of_bytes(content_type, bytes)
        }
    }

    /// The form of bytes that are not JSON data (a JSON format `data_base64`, or a body that is
    /// not JSON): text when the content type is textual and the bytes are UTF-8, opaque bytes
    /// otherwise. So text is text however it arrived, and every encoder writes it the same way.
    pub fn of_bytes(content_type: Option<&str>, bytes: &[u8]) -> DataForm {
        if content_type.is_some_and(json::is_text_content_type) && std::str::from_utf8(bytes).is_ok() {
            DataForm::Text
        } else {
            DataForm::Binary
        }
    }
}

/// A validated CloudEvent.
///
/// Attributes keep the order in which they arrived; names are unique.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Event {
    attributes: Vec<(String, AttrValue)>,
    data: Option<Data>,
}

impl Event {
    /// Validates attributes and data against CloudEvents 1.0.2 and builds the event.
    ///
    /// Checks: required attributes present and non-empty; `specversion` is `1.0`; attribute
    /// names are `[a-z0-9]+` and not `data`; no duplicates; the spec-defined attributes have
    /// string values of the right shape (`time` is RFC 3339, `dataschema` an absolute URI);
    /// strings contain no control characters.
    pub fn new(attributes: Vec<(String, AttrValue)>, data: Option<Data>) -> Result<Event, EventError> {
        validate_attributes(&attributes)?;
        Ok(Event { attributes, data })
    }

    /// Builds an event without validation. For decoding records that were validated on the
    /// way in (the storage codec).
    pub fn new_unchecked(attributes: Vec<(String, AttrValue)>, data: Option<Data>) -> Event {
        Event { attributes, data }
    }

    /// All attributes, in arrival order.
    pub fn attributes(&self) -> &[(String, AttrValue)] {
        &self.attributes
    }

    /// The attribute with this name (context attribute or extension).
    pub fn get(&self, name: &str) -> Option<&AttrValue> {
        self.attributes.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// A string-valued attribute (the spec-defined attributes are always strings).
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(AttrValue::as_str)
    }

    /// `id`.
    pub fn id(&self) -> &str {
        self.get_str("id").unwrap_or_default()
    }

    /// `type`.
    pub fn ty(&self) -> &str {
        self.get_str("type").unwrap_or_default()
    }

    /// `source`.
    pub fn source(&self) -> &str {
        self.get_str("source").unwrap_or_default()
    }

    /// `datacontenttype`, if set.
    pub fn datacontenttype(&self) -> Option<&str> {
        self.get_str("datacontenttype")
    }

    /// The payload, if any.
    pub fn data(&self) -> Option<&Data> {
        self.data.as_ref()
    }

    /// Sets an extension attribute, replacing its value in place if present, otherwise
    /// appending it. Spec-defined attributes cannot be set this way.
    pub fn set_extension(&mut self, name: &str, value: AttrValue) -> Result<(), EventError> {
        if REQUIRED_ATTRIBUTES.contains(&name) || OPTIONAL_ATTRIBUTES.contains(&name) {
            return Err(EventError::InvalidAttribute {
                name: name.to_owned(),
                reason: "is a context attribute, not an extension".to_owned(),
            });
        }
        validate_name(name)?;
        validate_value(name, &value)?;
        match self.attributes.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => *v = value,
            None => self.attributes.push((name.to_owned(), value)),
        }
        Ok(())
    }

    /// Removes an extension attribute, returning its value.
    pub fn remove_extension(&mut self, name: &str) -> Option<AttrValue> {
        if REQUIRED_ATTRIBUTES.contains(&name) || OPTIONAL_ATTRIBUTES.contains(&name) {
            return None;
        }
        let at = self.attributes.iter().position(|(n, _)| n == name)?;
        Some(self.attributes.remove(at).1)
    }
}

/// The most attributes an event may carry: the storage codec writes the count as a `u16`.
pub const MAX_ATTRIBUTES: usize = u16::MAX as usize;

fn validate_attributes(attributes: &[(String, AttrValue)]) -> Result<(), EventError> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(EventError::TooManyAttributes(attributes.len()));
    }
    for (name, value) in attributes {
        validate_name(name)?;
        validate_value(name, value)?;
    }
    if let Some((name, _)) = first_duplicate(attributes, |(n, _)| n.as_str()) {
        return Err(EventError::DuplicateAttribute(name.clone()));
    }
    for required in REQUIRED_ATTRIBUTES {
        if !attributes.iter().any(|(n, _)| n == required) {
            return Err(EventError::MissingAttribute(required));
        }
    }
    Ok(())
}

/// The first item whose name was already seen, in linear time: messages come from the network,
/// and a pairwise scan would let one request with many thousands of attributes burn seconds.
pub(crate) fn first_duplicate<T>(items: &[T], name: impl Fn(&T) -> &str) -> Option<&T> {
    // Below this size the pairwise scan is cheaper than hashing.
    const SMALL: usize = 16;
    if items.len() <= SMALL {
        return items
            .iter()
            .enumerate()
            .find(|(i, item)| items[..*i].iter().any(|earlier| name(earlier) == name(item)))
            .map(|(_, item)| item);
    }
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    items.iter().find(|item| !seen.insert(name(item)))
}

/// Core spec §3.1.1: names consist of lower-case ASCII letters or digits only.
pub fn validate_name(name: &str) -> Result<(), EventError> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
        return Err(EventError::InvalidName(name.to_owned()));
    }
    // `data` is reserved (core spec §3.1.1); `data_base64` is excluded by the character rule.
    if name == "data" {
        return Err(EventError::InvalidName(name.to_owned()));
    }
    Ok(())
}

fn validate_value(name: &str, value: &AttrValue) -> Result<(), EventError> {
    let is_spec_defined = REQUIRED_ATTRIBUTES.contains(&name) || OPTIONAL_ATTRIBUTES.contains(&name);
    let text = match value {
        AttrValue::String(s) => s.as_str(),
        _ if is_spec_defined => {
            return Err(invalid(name, "must be a string"));
        }
        _ => return Ok(()),
    };
    // Core spec §3.3 String: "Sequence of allowable Unicode characters" — no control characters.
    if text.chars().any(char::is_control) {
        return Err(invalid(name, "contains a control character"));
    }
    match name {
        "specversion" if text != SPEC_VERSION => Err(EventError::UnsupportedSpecVersion(text.to_owned())),
        "id" | "source" | "type" | "subject" | "datacontenttype" if text.is_empty() => {
            Err(invalid(name, "must be a non-empty string"))
        }
        "dataschema" if !is_absolute_uri(text) => Err(invalid(name, "must be an absolute URI")),
        "time" if !is_rfc3339(text) => Err(invalid(name, "must be an RFC 3339 timestamp")),
        _ => Ok(()),
    }
}

fn invalid(name: &str, reason: &str) -> EventError {
    EventError::InvalidAttribute { name: name.to_owned(), reason: reason.to_owned() }
}

/// RFC 3986 §3.1: `scheme ":" …` where scheme is `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`.
fn is_absolute_uri(text: &str) -> bool {
    let Some((scheme, _)) = text.split_once(':') else {
        return false;
    };
    let mut bytes = scheme.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        && !text.contains(char::is_whitespace)
}

/// Core spec §3.3 Timestamp: RFC 3339 date-time.
pub fn is_rfc3339(text: &str) -> bool {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> AttrValue {
        AttrValue::String(v.to_owned())
    }

    fn minimal() -> Vec<(String, AttrValue)> {
        vec![
            ("specversion".into(), s("1.0")),
            ("id".into(), s("1")),
            ("source".into(), s("/src")),
            ("type".into(), s("t")),
        ]
    }

    #[test]
    fn minimal_event_is_valid() {
        let e = Event::new(minimal(), None).unwrap();
        assert_eq!(e.id(), "1");
        assert_eq!(e.ty(), "t");
        assert_eq!(e.source(), "/src");
    }

    #[test]
    fn invalid_events_are_rejected_with_the_attribute_named() {
        let cases: Vec<(&str, Vec<(String, AttrValue)>)> = vec![
            ("id", minimal().into_iter().filter(|(n, _)| n != "id").collect()),
            ("specversion", {
                let mut a = minimal();
                a[0].1 = s("0.3");
                a
            }),
            ("Upper", {
                let mut a = minimal();
                a.push(("Upper".into(), s("x")));
                a
            }),
            ("data", {
                let mut a = minimal();
                a.push(("data".into(), s("x")));
                a
            }),
            ("my_ext", {
                let mut a = minimal();
                a.push(("my_ext".into(), s("x")));
                a
            }),
            ("time", {
                let mut a = minimal();
                a.push(("time".into(), s("yesterday")));
                a
            }),
            ("dataschema", {
                let mut a = minimal();
                a.push(("dataschema".into(), s("/relative")));
                a
            }),
            ("type", {
                let mut a = minimal();
                a[3].1 = AttrValue::Integer(3);
                a
            }),
            ("source", {
                let mut a = minimal();
                a[2].1 = s("");
                a
            }),
            ("subject", {
                let mut a = minimal();
                a.push(("subject".into(), s("bad\u{7}bell")));
                a
            }),
            ("id", {
                let mut a = minimal();
                a.push(("id".into(), s("2")));
                a
            }),
        ];
        for (attribute, attrs) in cases {
            let err = Event::new(attrs, None).expect_err(attribute);
            assert!(err.to_string().contains(attribute), "{attribute}: {err}");
        }
    }

    #[test]
    fn time_keeps_its_offset_text() {
        let mut a = minimal();
        a.push(("time".into(), s("2024-05-01T10:00:00.5+02:00")));
        let e = Event::new(a, None).unwrap();
        assert_eq!(e.get_str("time"), Some("2024-05-01T10:00:00.5+02:00"));
    }

    #[test]
    fn set_extension_replaces_in_place() {
        let mut e = Event::new(minimal(), None).unwrap();
        e.set_extension("a", s("1")).unwrap();
        e.set_extension("b", AttrValue::Bool(true)).unwrap();
        e.set_extension("a", AttrValue::Integer(7)).unwrap();
        let names: Vec<_> = e.attributes().iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["specversion", "id", "source", "type", "a", "b"]);
        assert_eq!(e.get("a"), Some(&AttrValue::Integer(7)));
        assert!(e.set_extension("type", s("x")).is_err());
    }
}
