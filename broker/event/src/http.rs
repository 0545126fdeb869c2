//! The CloudEvents HTTP protocol binding 1.0.2 (`cloudevents/bindings/http-protocol-binding.md`):
//! binary (§3.1), structured (§3.2) and batched (§3.3) content modes.
//!
//! Only the message parts live here (headers and body); the server owns the I/O and maps
//! [`EventError::UnsupportedFormat`] to `415 Unsupported Media Type`, other errors to `400`.

use std::borrow::Cow;
use std::fmt::Write as _;

use ::http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use bytes::Bytes;
use percent_encoding::{percent_decode, utf8_percent_encode, AsciiSet, CONTROLS};

use crate::error::EventError;
use crate::json;
use crate::model::{AttrValue, Data, DataForm, Event};

/// Media type of a structured-mode message in the JSON format (JSON format §3).
pub const STRUCTURED_MEDIA_TYPE: &str = "application/cloudevents+json";
/// Media type of a batched-mode message in the JSON batch format (JSON format §4).
pub const BATCH_MEDIA_TYPE: &str = "application/cloudevents-batch+json";
/// Prefix shared by every structured-mode media type (§3: it selects structured mode).
const CLOUDEVENTS_MEDIA_TYPE_PREFIX: &str = "application/cloudevents";
/// Prefix of binary-mode attribute headers (§3.1.3.1).
const HEADER_PREFIX: &str = "ce-";

/// §3.1.3.2: space, double-quote, percent and everything outside printable ASCII
/// (`percent_encoding` always encodes non-ASCII bytes; `CONTROLS` adds U+0000–U+001F and U+007F).
const HEADER_VALUE_ENCODE_SET: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'%');

/// How binary-mode string attributes are written into `ce-` headers (`delivery.headerEncoding`).
///
/// Both are lossless for a receiver that percent-decodes (§3.1.3.2, as Switchyard's ingest and
/// the Python SDK's new API do). They differ in what a receiver that never decodes sees (sdk-go,
/// so Knative's broker, and the JavaScript SDK).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeaderEncoding {
    /// Printable ASCII and UTF-8 written raw, as HTTP field values allow (RFC 9110 §5.5) and
    /// as Knative's broker, sdk-go and the JavaScript SDK write them; `%XX` only for what a
    /// header cannot carry or a decoder would misread (see [`encode_header_value`]). The
    /// default: what a team moving from Knative sees today.
    #[default]
    Compatible,
    /// The HTTP binding's rule (§3.1.3.2): space, `"`, `%` and every byte outside printable
    /// ASCII as `%XX`.
    Percent,
}

impl HeaderEncoding {
    /// Every encoding.
    pub const ALL: [HeaderEncoding; 2] = [HeaderEncoding::Compatible, HeaderEncoding::Percent];

    /// The encoding a name selects.
    pub fn from_name(name: &str) -> Option<HeaderEncoding> {
        Self::ALL.into_iter().find(|encoding| encoding.name() == name)
    }

    /// Its name in declarations and configuration.
    pub fn name(self) -> &'static str {
        match self {
            HeaderEncoding::Compatible => "compatible",
            HeaderEncoding::Percent => "percent",
        }
    }
}

/// How a request carries its events (§3), from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentMode {
    /// Attributes in `ce-` headers, data as the body (§3.1).
    Binary,
    /// One event in the JSON format as the body (§3.2).
    Structured,
    /// A JSON batch as the body (§3.3).
    Batched,
}

/// The content mode a `Content-Type` value selects, or [`EventError::UnsupportedFormat`] for a
/// CloudEvents format other than JSON (e.g. `application/cloudevents+xml`).
///
/// The media type is compared without parameters and case-insensitively. The batch type is
/// checked first because it also starts with `application/cloudevents`.
pub fn content_mode(content_type: Option<&HeaderValue>) -> Result<ContentMode, EventError> {
    let Some(content_type) = content_type else {
        return Ok(ContentMode::Binary);
    };
    // A non-UTF-8 value cannot name a CloudEvents format; it is a binary-mode data type.
    let Ok(text) = std::str::from_utf8(content_type.as_bytes()) else {
        return Ok(ContentMode::Binary);
    };
    let media_type = text.split(';').next().unwrap_or_default().trim();
    if media_type.eq_ignore_ascii_case(BATCH_MEDIA_TYPE) {
        Ok(ContentMode::Batched)
    } else if media_type.eq_ignore_ascii_case(STRUCTURED_MEDIA_TYPE) {
        Ok(ContentMode::Structured)
    } else if starts_with_ignore_ascii_case(media_type, CLOUDEVENTS_MEDIA_TYPE_PREFIX) {
        Err(EventError::UnsupportedFormat(text.to_owned()))
    } else {
        Ok(ContentMode::Binary)
    }
}

/// Decodes the events an HTTP request carries, in whichever content mode its `Content-Type`
/// selects (see [`content_mode`]).
///
/// Binary mode (§3.1): every `ce-` header is an attribute named by the rest of the header name
/// (header names are case-insensitive, so lower-cased), its value percent-decoded
/// (see [`decode_header_value`]); `Content-Type` is `datacontenttype`; a non-empty body is the
/// data, in the form [`DataForm::infer`] gives it. Headers cannot tell types apart, so every
/// attribute is an [`AttrValue::String`]. A request without `ce-specversion` is reported as
/// missing it first: it is most likely not a CloudEvent at all.
///
/// Structured and batched modes decode the body with [`json::decode_event`] and
/// [`json::decode_batch`]; `ce-` headers are ignored there (§3.2.3 makes the body
/// authoritative).
pub fn decode_request(headers: &HeaderMap, body: Bytes) -> Result<Vec<Event>, EventError> {
    decode_request_at_most(headers, body, usize::MAX)
}

/// [`decode_request`] where a batch may carry at most `max_batch_events` events (see
/// [`json::decode_batch_at_most`]).
pub fn decode_request_at_most(
    headers: &HeaderMap,
    body: Bytes,
    max_batch_events: usize,
) -> Result<Vec<Event>, EventError> {
    match content_mode(headers.get(CONTENT_TYPE))? {
        ContentMode::Binary => decode_binary(headers, body).map(|event| vec![event]),
        ContentMode::Structured => json::decode_event(&body).map(|event| vec![event]),
        ContentMode::Batched => json::decode_batch_at_most(&body, max_batch_events),
    }
}

fn decode_binary(headers: &HeaderMap, body: Bytes) -> Result<Event, EventError> {
    let mut attributes = Vec::with_capacity(headers.len());
    let mut has_specversion = false;
    // `HeaderMap` iterates in insertion order, with repeated values next to each other, so the
    // attribute order follows the request as closely as the map allows.
    for (name, value) in headers {
        let attribute = if name == CONTENT_TYPE {
            // §3.1.1; not percent-encoded: it is an ordinary HTTP header.
            let text = std::str::from_utf8(value.as_bytes())
                .map_err(|_| invalid("datacontenttype", "the content-type header is not valid utf-8"))?;
            ("datacontenttype".to_owned(), text.to_owned())
        } else if let Some(attribute) = name.as_str().strip_prefix(HEADER_PREFIX) {
            if attribute.is_empty() {
                return Err(EventError::Malformed(format!("header '{}' names no attribute", name.as_str())));
            }
            has_specversion |= attribute == "specversion";
            (attribute.to_owned(), decode_header_value(attribute, value)?)
        } else {
            continue;
        };
        attributes.push((attribute.0, AttrValue::String(attribute.1)));
    }
    if !has_specversion {
        return Err(EventError::MissingAttribute("specversion"));
    }
    // Repeated headers (a `ce-` header twice, or `Content-Type` with `ce-datacontenttype`,
    // which §3.1.1 forbids) surface as duplicate attributes from `Event::new`.
    let data = if body.is_empty() {
        None
    } else {
        let content_type = attributes.iter().find(|(n, _)| n == "datacontenttype").and_then(|(_, v)| v.as_str());
        Some(Data { form: DataForm::infer(content_type, &body), bytes: body })
    };
    Event::new(attributes, data)
}

/// Decodes a binary-mode attribute header value (§3.1.3.2).
///
/// - A value that is entirely an RFC 7230 §3.2.6 quoted-string is unquoted first, as §3.1.3.2
///   requires for compatibility with producers predating the percent-encoding rule; a value
///   that only looks quoted (an unescaped `"` inside, a dangling `\`) is kept as it is.
/// - Each `%XX` (two hex digits) is decoded. A `%` not followed by two hex digits is not an
///   escape and stays literal (`100%` stays `100%`): SDKs that never encode (sdk-go, the
///   JavaScript SDK) send such values raw.
/// - Raw non-ASCII bytes (obs-text) are taken as UTF-8, as those SDKs send them.
///
/// The value must be UTF-8 text both before and after decoding: a raw byte that is not UTF-8
/// and an escape that decodes to one (`%FF`) are refused alike, with an error naming
/// `attribute`, since an attribute is a Unicode string (core spec §3.3) and guessing a charset
/// would change the value.
pub fn decode_header_value(attribute: &str, value: &HeaderValue) -> Result<String, EventError> {
    let raw = std::str::from_utf8(value.as_bytes()).map_err(|e| {
        let bad = value.as_bytes()[e.valid_up_to()];
        invalid(
            attribute,
            &format!(
                "the header value has byte 0x{bad:02X} at offset {}, which is not utf-8: send the text as utf-8, \
                 raw or percent-encoded",
                e.valid_up_to()
            ),
        )
    })?;
    let unquoted = unquote(raw);
    let text = unquoted.as_deref().unwrap_or(raw);
    if !text.contains('%') {
        return Ok(text.to_owned());
    }
    match percent_decode(text.as_bytes()).decode_utf8() {
        Ok(decoded) => Ok(decoded.into_owned()),
        Err(_) => Err(invalid(
            attribute,
            &format!(
                "'{text}' has percent-escapes that decode to bytes that are not utf-8: escape the utf-8 bytes of \
                 the text ('é' is '%C3%A9'), and write a literal '%' as '%25'"
            ),
        )),
    }
}

/// The content of an RFC 7230 §3.2.6 quoted-string spanning the whole value, with `\`-escapes
/// resolved; `None` when the value is not exactly one well-formed quoted-string.
fn unquote(value: &str) -> Option<String> {
    let inner = value.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// An attribute value as a binary-mode header value, in `encoding`. The result is always a
/// valid header value.
///
/// [`HeaderEncoding::Percent`] (§3.1.3.2): space, `"`, `%` and every byte outside printable
/// ASCII (U+0021–U+007E) become `%XX` of their UTF-8 bytes, upper case.
///
/// [`HeaderEncoding::Compatible`]: everything raw except what would not survive:
/// - control characters (U+0000–U+001F, U+007F), which a header cannot carry;
/// - a space at either end, which HTTP strips (RFC 9110 §5.5);
/// - a `%` followed by two hex digits, which a decoder would read as an escape (`%41` goes as
///   `%2541`; `100%` stays `100%`);
/// - the opening `"` of a value that starts and ends with one, which a decoder would unquote
///   (§3.1.3.2).
///
/// So a decoding receiver reads back exactly the value, and one that does not decode reads it
/// exactly unless it holds one of those.
pub fn encode_header_value(value: &str, encoding: HeaderEncoding) -> Cow<'_, str> {
    match encoding {
        HeaderEncoding::Percent => utf8_percent_encode(value, HEADER_VALUE_ENCODE_SET).into(),
        HeaderEncoding::Compatible => encode_compatible(value),
    }
}

fn encode_compatible(value: &str) -> Cow<'_, str> {
    let bytes = value.as_bytes();
    let last = bytes.len().saturating_sub(1);
    let looks_quoted = bytes.len() >= 2 && bytes[0] == b'"' && bytes[last] == b'"';
    let must_escape = |i: usize, b: u8| match b {
        b if b.is_ascii_control() => true,
        b' ' => i == 0 || i == last,
        // Escaping a later byte writes `%`, never a hex digit, so looking at the raw bytes is
        // enough to know whether this `%` would be read as an escape.
        b'%' => bytes.get(i + 1..i + 3).is_some_and(|pair| pair.iter().all(u8::is_ascii_hexdigit)),
        b'"' => i == 0 && looks_quoted,
        _ => false,
    };
    if !bytes.iter().enumerate().any(|(i, &b)| must_escape(i, b)) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for (i, c) in value.char_indices() {
        // Every byte that may need escaping is ASCII, so a whole char is either kept or escaped.
        if c.is_ascii() && must_escape(i, c as u8) {
            let _ = write!(out, "%{:02X}", c as u8);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The event as a binary-mode message (§3.1): headers and body.
///
/// Every attribute becomes a `ce-<name>` header holding its canonical string form, written in
/// `encoding` ([`encode_header_value`]); `datacontenttype` becomes `Content-Type` instead
/// (absent when the event has none). The body is the data bytes unchanged, empty without data.
///
/// Events built through [`Event::new`] always encode fully. An attribute that cannot be put in a
/// header at all (possible only for unvalidated events, such as a corrupted stored record whose
/// attribute name is not a header token) is left out rather than panicking.
pub fn encode_binary(event: &Event, encoding: HeaderEncoding) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::with_capacity(event.attributes().len());
    for (name, value) in event.attributes() {
        let value = value.to_canonical_string();
        if name == "datacontenttype" {
            // Not percent-encoded (§3.1.1 maps it to the ordinary HTTP header).
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.append(CONTENT_TYPE, value);
            }
            continue;
        }
        let header = binary_header_name(name);
        // `from_bytes`: compatible values hold raw UTF-8, which `from_str` refuses.
        let value = HeaderValue::from_bytes(encode_header_value(&value, encoding).as_bytes());
        if let (Ok(header), Ok(value)) = (header, value) {
            headers.append(header, value);
        }
    }
    let body = event.data().map(|d| d.bytes.clone()).unwrap_or_default();
    (headers, body)
}

/// `ce-{attribute}`. Every delivery writes these, so the attributes most events carry have
/// their names ready, which costs no allocation.
fn binary_header_name(attribute: &str) -> Result<HeaderName, http::header::InvalidHeaderName> {
    Ok(match attribute {
        "id" => HeaderName::from_static("ce-id"),
        "source" => HeaderName::from_static("ce-source"),
        "specversion" => HeaderName::from_static("ce-specversion"),
        "type" => HeaderName::from_static("ce-type"),
        "subject" => HeaderName::from_static("ce-subject"),
        "time" => HeaderName::from_static("ce-time"),
        "dataschema" => HeaderName::from_static("ce-dataschema"),
        "traceparent" => HeaderName::from_static("ce-traceparent"),
        "tracestate" => HeaderName::from_static("ce-tracestate"),
        "knativearrivaltime" => HeaderName::from_static("ce-knativearrivaltime"),
        "knativebrokerttl" => HeaderName::from_static("ce-knativebrokerttl"),
        "partitionkey" => HeaderName::from_static("ce-partitionkey"),
        _ => {
            let mut name = String::with_capacity(HEADER_PREFIX.len() + attribute.len());
            name.push_str(HEADER_PREFIX);
            name.push_str(attribute);
            return HeaderName::from_bytes(name.as_bytes());
        }
    })
}

/// The `Content-Type` of a structured-mode message in the JSON format.
pub fn structured_content_type() -> HeaderValue {
    HeaderValue::from_static("application/cloudevents+json; charset=utf-8")
}

/// The `Content-Type` of a batched-mode message in the JSON batch format.
pub fn batch_content_type() -> HeaderValue {
    HeaderValue::from_static("application/cloudevents-batch+json; charset=utf-8")
}

/// The event as a structured-mode message (§3.2): the `Content-Type`
/// (`application/cloudevents+json; charset=utf-8`) and the JSON-format body
/// ([`json::encode_event`]).
pub fn encode_structured(event: &Event) -> (HeaderValue, Bytes) {
    (structured_content_type(), Bytes::from(json::encode_event(event)))
}

/// The events as a batched-mode message (§3.3): the `Content-Type`
/// (`application/cloudevents-batch+json; charset=utf-8`) and the JSON batch body.
pub fn encode_batch(events: &[Event]) -> (HeaderValue, Bytes) {
    (batch_content_type(), Bytes::from(json::encode_batch(events)))
}

pub(crate) fn starts_with_ignore_ascii_case(text: &str, prefix: &str) -> bool {
    text.as_bytes().get(..prefix.len()).is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
}

pub(crate) fn invalid(name: &str, reason: &str) -> EventError {
    EventError::InvalidAttribute { name: name.to_owned(), reason: reason.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{arb_event, invalid_cases, required, s};
    use proptest::prelude::*;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_bytes(value).unwrap());
        }
        map
    }

    fn binary_headers(attributes: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in attributes {
            let name = HeaderName::from_bytes(format!("ce-{name}").as_bytes()).unwrap();
            map.append(
                name,
                HeaderValue::from_bytes(encode_header_value(value, HeaderEncoding::Percent).as_bytes()).unwrap(),
            );
        }
        map
    }

    fn with_content_type(content_type: &str) -> HeaderMap {
        headers(&[("content-type", content_type.as_bytes())])
    }

    const VALID: &[(&str, &str)] = &[("specversion", "1.0"), ("id", "1"), ("source", "/s"), ("type", "t")];

    #[test]
    fn percent_encoding_follows_the_spec_examples() {
        // (attribute value, header value): §3.1.3.2 and its example, both directions.
        let cases = [
            ("Euro \u{20AC} \u{1F600}", "Euro%20%E2%82%AC%20%F0%9F%98%80"),
            ("plain", "plain"),
            ("", ""),
            ("a b", "a%20b"),
            ("say \"hi\"", "say%20%22hi%22"),
            ("100%", "100%25"),
            ("%41", "%2541"),
            ("\u{7f}\u{80}\u{9f}", "%7F%C2%80%C2%9F"),
            ("Grüße", "Gr%C3%BC%C3%9Fe"),
            ("/path?q=1&r=a+b#frag", "/path?q=1&r=a+b#frag"),
            ("!#$&'()*+,-./:;<=>?@[\\]^_`{|}~", "!#$&'()*+,-./:;<=>?@[\\]^_`{|}~"),
        ];
        for (value, encoded) in cases {
            assert_eq!(encode_header_value(value, HeaderEncoding::Percent), encoded, "{value}");
            let header = HeaderValue::from_str(encoded).unwrap();
            assert_eq!(decode_header_value("x", &header).unwrap(), value, "{encoded}");
        }
    }

    #[test]
    fn compatible_encoding_escapes_only_what_would_not_survive() {
        // (attribute value, header value): what a receiver that never decodes sees.
        let cases = [
            ("New York", "New York"),
            ("say \"hi\"", "say \"hi\""),
            ("café Grüße 😀", "café Grüße 😀"),
            ("100% off", "100% off"),
            ("50%", "50%"),
            ("%zz", "%zz"),
            ("not %41", "not %2541"),
            ("%25", "%2525"),
            ("%0\n", "%0%0A"),
            ("tab\there\u{7f}", "tab%09here%7F"),
            (" padded ", "%20padded%20"),
            (" ", "%20"),
            ("\"quoted\"", "%22quoted\""),
            ("\"", "\""),
            ("a\"b\"", "a\"b\""),
            ("", ""),
        ];
        for (value, encoded) in cases {
            assert_eq!(encode_header_value(value, HeaderEncoding::Compatible), encoded, "{value}");
            let header = HeaderValue::from_bytes(encoded.as_bytes()).unwrap();
            assert_eq!(decode_header_value("x", &header).unwrap(), value, "{encoded}");
        }
    }

    proptest! {
        #[test]
        fn both_header_encodings_round_trip_through_the_decoder(value in any::<String>()) {
            for encoding in HeaderEncoding::ALL {
                let encoded = encode_header_value(&value, encoding);
                let header = HeaderValue::from_bytes(encoded.as_bytes()).expect("a valid header value");
                prop_assert_eq!(decode_header_value("x", &header).unwrap(), value.clone());
            }
        }
    }

    #[test]
    fn percent_decoding_keeps_stray_percents_and_refuses_non_utf8() {
        // (raw header bytes, decoded value)
        let cases: [(&[u8], &str); 12] = [
            (b"100%", "100%"),
            (b"%zz", "%zz"),
            (b"%4", "%4"),
            (b"50%25 off %", "50% off %"),
            (b"%e2%82%ac", "\u{20AC}"),
            (b"%E2%82%Ac", "\u{20AC}"),
            ("Grüße €".as_bytes(), "Grüße €"), // raw UTF-8 (obs-text)
            ("Gr%C3%BC%C3%9Fe €".as_bytes(), "Grüße €"),
            (b"\"quoted value\"", "quoted value"), // RFC 7230 quoted-string, §3.1.3.2
            (b"\"a\\\"b\\\\c\"", "a\"b\\c"),
            (b"\"a\"b\"", "\"a\"b\""), // not one quoted-string: kept
            (b"\"50%25\"", "50%"),
        ];
        for (raw, expected) in cases {
            let header = HeaderValue::from_bytes(raw).unwrap();
            assert_eq!(decode_header_value("x", &header).unwrap(), expected, "{}", String::from_utf8_lossy(raw));
        }
        let not_utf8 = HeaderValue::from_bytes(b"caf\xe9").unwrap();
        assert_eq!(
            decode_header_value("ext", &not_utf8).unwrap_err().to_string(),
            "invalid attribute 'ext': the header value has byte 0xE9 at offset 3, which is not utf-8: send the \
             text as utf-8, raw or percent-encoded"
        );
        for escaped in ["caf%E9", "%C0%A0", "%FF and %41"] {
            let error = decode_header_value("subject", &HeaderValue::from_str(escaped).unwrap()).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!(
                    "invalid attribute 'subject': '{escaped}' has percent-escapes that decode to bytes that are not \
                     utf-8: escape the utf-8 bytes of the text ('é' is '%C3%A9'), and write a literal '%' as '%25'"
                )
            );
        }
    }

    #[test]
    fn content_mode_detection() {
        use ContentMode::*;
        // (content type, mode; None = unsupported format)
        let cases = [
            ("application/cloudevents+json", Some(Structured)),
            ("application/cloudevents+json; charset=utf-8", Some(Structured)),
            ("Application/CloudEvents+JSON ; charset=UTF-8", Some(Structured)),
            ("application/cloudevents-batch+json", Some(Batched)),
            ("application/cloudevents-batch+json; charset=utf-8", Some(Batched)),
            ("APPLICATION/CLOUDEVENTS-BATCH+JSON", Some(Batched)),
            ("application/cloudevents+xml", None),
            ("application/cloudevents+avro", None),
            ("application/cloudevents", None),
            ("application/cloudevents; charset=utf-8", None),
            ("application/cloudevents-batch+xml", None),
            ("application/cloudevents-batch", None),
            ("application/cloudevents+jsonx", None),
            ("application/json", Some(Binary)),
            ("text/plain", Some(Binary)),
            ("application/octet-stream", Some(Binary)),
            ("", Some(Binary)),
        ];
        for (content_type, expected) in cases {
            let header = HeaderValue::from_str(content_type).unwrap();
            match (content_mode(Some(&header)), expected) {
                (Ok(mode), Some(expected)) => assert_eq!(mode, expected, "{content_type}"),
                (Err(EventError::UnsupportedFormat(ct)), None) => assert_eq!(ct, content_type),
                (other, _) => panic!("{content_type}: {other:?}"),
            }
        }
        assert_eq!(content_mode(None), Ok(Binary));
        let err = decode_request(&with_content_type("application/cloudevents+xml"), Bytes::new()).unwrap_err();
        assert_eq!(err, EventError::UnsupportedFormat("application/cloudevents+xml".to_owned()));
    }

    #[test]
    fn binary_mode_spec_example() {
        let map = headers(&[
            ("ce-specversion", b"1.0"),
            ("ce-type", b"com.example.someevent"),
            ("ce-time", b"2018-04-05T03:56:24Z"),
            ("ce-id", b"1234-1234-1234"),
            ("ce-source", b"/mycontext/subcontext"),
            ("CE-ComExampleOtherValue", b"5"),
            ("content-type", b"application/json; charset=utf-8"),
            ("content-length", b"16"),
            ("host", b"webhook.example.com"),
        ]);
        let body = Bytes::from_static(b"{\n  \"a\" : 1 }\n");
        let events = decode_request(&map, body.clone()).unwrap();
        let [event] = &events[..] else { panic!("{events:?}") };
        let attributes: Vec<_> = event.attributes().iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
        assert_eq!(
            attributes,
            [
                ("specversion", s("1.0")),
                ("type", s("com.example.someevent")),
                ("time", s("2018-04-05T03:56:24Z")),
                ("id", s("1234-1234-1234")),
                ("source", s("/mycontext/subcontext")),
                ("comexampleothervalue", s("5")), // headers carry no types
                ("datacontenttype", s("application/json; charset=utf-8")),
            ]
        );
        assert_eq!(event.data(), Some(&Data { form: DataForm::Json, bytes: body }));
    }

    #[test]
    fn binary_mode_data_forms() {
        // (content type, body, expected data form; None = no data)
        let cases: [(Option<&str>, &[u8], Option<DataForm>); 15] = [
            (Some("application/json"), b"{\"a\":1}", Some(DataForm::Json)),
            (Some("application/vnd.x+json"), b" [1, 2] ", Some(DataForm::Json)),
            (Some("text/json"), b"\"s\"", Some(DataForm::Json)),
            (Some("application/json"), b"{not json", Some(DataForm::Binary)),
            (Some("application/json"), b"\"\xff\"", Some(DataForm::Binary)),
            (Some("application/json; charset=utf-8"), b"{not json", Some(DataForm::Binary)),
            (Some("text/plain"), b"{\"a\":1}", Some(DataForm::Text)),
            (Some("text/plain"), b"caf\xe9", Some(DataForm::Binary)),
            (Some("application/xml"), b"<a/>", Some(DataForm::Text)),
            (Some("application/atom+xml"), b"<feed/>", Some(DataForm::Text)),
            (Some("application/x-custom; charset=UTF-8"), b"line", Some(DataForm::Text)),
            (Some("application/octet-stream"), b"line", Some(DataForm::Binary)),
            (None, b"{\"a\":1}", Some(DataForm::Binary)),
            (Some("application/json"), b"", None),
            (None, b"", None),
        ];
        for (content_type, body, expected) in cases {
            let mut map = binary_headers(VALID);
            if let Some(ct) = content_type {
                map.insert(CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            }
            let events = decode_request(&map, Bytes::copy_from_slice(body)).unwrap();
            let data = events[0].data();
            assert_eq!(data.map(|d| d.form), expected, "{content_type:?} {body:?}");
            assert_eq!(data.map_or(&b""[..], |d| &d.bytes[..]), body);
        }
    }

    #[test]
    fn invalid_events_are_rejected_in_every_mode() {
        for case in invalid_cases() {
            // Binary mode.
            let map = binary_headers(&case.attributes);
            let err = decode_request(&map, Bytes::new()).expect_err(case.expected).to_string();
            assert!(err.contains(case.expected), "binary {:?}: {err}", case.attributes);

            let object: serde_json::Map<String, serde_json::Value> =
                case.attributes.iter().map(|(n, v)| ((*n).to_owned(), (*v).into())).collect();
            let body = serde_json::Value::Object(object).to_string();
            // Structured mode.
            let map = with_content_type("application/cloudevents+json; charset=utf-8");
            let err = decode_request(&map, Bytes::from(body.clone())).expect_err(&body).to_string();
            assert!(err.contains(case.expected), "structured {body}: {err}");
            // Batched mode, as the second element.
            let (_, valid) = encode_structured(&Event::new(required(), None).unwrap());
            let batch = format!("[{},{body}]", String::from_utf8_lossy(&valid));
            let map = with_content_type("application/cloudevents-batch+json");
            let err = decode_request(&map, Bytes::from(batch.clone())).expect_err(&batch).to_string();
            assert!(err.starts_with("event 1: ") && err.contains(case.expected), "batch {batch}: {err}");
        }
    }

    #[test]
    fn binary_mode_header_errors() {
        let valid: Vec<(&str, &[u8])> = VALID.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
        let with = |extra: &[(&'static str, &'static [u8])]| {
            let mut pairs: Vec<(String, &[u8])> = valid.iter().map(|(n, v)| (format!("ce-{n}"), *v)).collect();
            pairs.extend(extra.iter().map(|(n, v)| ((*n).to_owned(), *v)));
            let pairs: Vec<(&str, &[u8])> = pairs.iter().map(|(n, v)| (n.as_str(), *v)).collect();
            headers(&pairs)
        };
        // (extra headers, error fragment)
        type Headers = [(&'static str, &'static [u8])];
        let cases: [(&Headers, &str); 8] = [
            (&[("ce-", b"x")], "header 'ce-' names no attribute"),
            (&[("ce-id", b"2")], "duplicate attribute 'id'"),
            (&[("ce-ext", b"a"), ("CE-EXT", b"b")], "duplicate attribute 'ext'"),
            (
                &[("content-type", b"text/plain"), ("ce-datacontenttype", b"text/plain")],
                "duplicate attribute 'datacontenttype'",
            ),
            (&[("ce-data", b"x")], "invalid attribute name 'data'"),
            (&[("ce-ext", b"caf\xe9")], "invalid attribute 'ext': the header value has byte 0xE9 at offset 3"),
            (&[("ce-subject", b"caf%E9")], "invalid attribute 'subject': 'caf%E9' has percent-escapes"),
            (&[("ce-time", b"2018-04-05")], "invalid attribute 'time'"),
        ];
        for (extra, expected) in cases {
            let err = decode_request(&with(extra), Bytes::new()).expect_err(expected).to_string();
            assert!(err.contains(expected), "{expected}: {err}");
        }
        // Without ce-specversion the request is reported as missing it, whatever else is absent.
        let err = decode_request(&with_content_type("application/json"), Bytes::from_static(b"{}")).unwrap_err();
        assert_eq!(err, EventError::MissingAttribute("specversion"));
        assert_eq!(
            decode_request(&HeaderMap::new(), Bytes::new()).unwrap_err(),
            EventError::MissingAttribute("specversion")
        );
        // Non-ASCII that is UTF-8 is accepted raw (obs-text).
        let events = decode_request(&with(&[("ce-ext", "Grüße".as_bytes())]), Bytes::new()).unwrap();
        assert_eq!(events[0].get_str("ext"), Some("Grüße"));
    }

    #[test]
    fn textual_bodies_go_out_in_structured_and_batch_mode_as_json_strings() {
        // (content type, body, the `data`/`data_base64` member written)
        let cases: [(&str, &[u8], &str); 5] = [
            ("text/plain; charset=utf-8", "café \"q\"\n".as_bytes(), r#""data":"café \"q\"\n""#),
            ("application/xml", b"<a x=\"1\"/>", r#""data":"<a x=\"1\"/>""#),
            ("application/json", b"{\"a\": 1}", r#""data":{"a": 1}"#),
            ("text/plain", b"caf\xe9", r#""data_base64":"Y2Fm6Q==""#),
            ("image/png", b"png", r#""data_base64":"cG5n""#),
        ];
        for (content_type, body, member) in cases {
            let mut map = binary_headers(VALID);
            map.insert(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
            let event = decode_request(&map, Bytes::copy_from_slice(body)).unwrap().remove(0);
            let (_, structured) = encode_structured(&event);
            let (_, batch) = encode_batch(std::slice::from_ref(&event));
            for text in [structured, batch] {
                assert!(String::from_utf8_lossy(&text).contains(member), "{content_type}: {text:?}");
            }
            let (content_type, structured) = encode_structured(&event);
            let decoded = decode_request(&headers(&[("content-type", content_type.as_bytes())]), structured).unwrap();
            assert_eq!(decoded[0].data().map(|d| &d.bytes[..]), Some(body));
        }
    }

    #[test]
    fn encode_binary_maps_attributes_to_headers() {
        let mut attributes = required();
        attributes.push(("datacontenttype".into(), s("application/json")));
        attributes.push(("subject".into(), s("Euro \u{20AC}")));
        let mut event =
            Event::new(attributes, Some(Data { form: DataForm::Json, bytes: Bytes::from_static(b"[1]") })).unwrap();
        event.set_extension("flag", AttrValue::Bool(true)).unwrap();
        event.set_extension("count", AttrValue::Integer(-3)).unwrap();
        let (map, body) = encode_binary(&event, HeaderEncoding::Percent);
        let pairs: Vec<_> = map.iter().map(|(n, v)| (n.as_str(), v.to_str().unwrap())).collect();
        assert_eq!(
            pairs,
            [
                ("ce-specversion", "1.0"),
                ("ce-id", "id-1"),
                ("ce-source", "/src"),
                ("ce-type", "com.example.t"),
                ("content-type", "application/json"),
                ("ce-subject", "Euro%20%E2%82%AC"),
                ("ce-flag", "true"),
                ("ce-count", "-3"),
            ]
        );
        assert_eq!(&body[..], b"[1]");
        let (map, _) = encode_binary(&event, HeaderEncoding::Compatible);
        assert_eq!(map["ce-subject"].as_bytes(), "Euro \u{20AC}".as_bytes());

        let (map, body) = encode_binary(&Event::new(required(), None).unwrap(), HeaderEncoding::Compatible);
        assert!(map.get(CONTENT_TYPE).is_none());
        assert!(body.is_empty());
    }

    #[test]
    fn structured_and_batch_encoding() {
        let event = Event::new(required(), None).unwrap();
        let (content_type, body) = encode_structured(&event);
        assert_eq!(content_type, "application/cloudevents+json; charset=utf-8");
        let map = headers(&[("content-type", content_type.as_bytes())]);
        assert_eq!(decode_request(&map, body).unwrap(), vec![event.clone()]);

        let (content_type, body) = encode_batch(&[event.clone(), event.clone()]);
        let map = headers(&[("content-type", content_type.as_bytes())]);
        assert_eq!(decode_request(&map, body).unwrap(), vec![event.clone(), event]);
        let (content_type, body) = encode_batch(&[]);
        let map = headers(&[("content-type", content_type.as_bytes())]);
        assert_eq!(decode_request(&map, body).unwrap(), vec![]);
    }

    proptest! {
        #[test]
        fn binary_roundtrip_keeps_canonical_values_and_data_bytes(event in arb_event(), percent: bool) {
            let encoding = if percent { HeaderEncoding::Percent } else { HeaderEncoding::Compatible };
            let (map, body) = encode_binary(&event, encoding);
            let decoded = decode_request(&map, body).unwrap();
            prop_assert_eq!(decoded.len(), 1);
            let canonical = |e: &Event| -> Vec<(String, String)> {
                e.attributes().iter().map(|(n, v)| (n.clone(), v.to_canonical_string().into_owned())).collect()
            };
            prop_assert_eq!(canonical(&decoded[0]), canonical(&event));
            let bytes = |e: &Event| e.data().map(|d| d.bytes.clone()).unwrap_or_default();
            prop_assert_eq!(bytes(&decoded[0]), bytes(&event));
        }

        #[test]
        fn structured_roundtrip_is_exact(event in arb_event()) {
            let (content_type, body) = encode_structured(&event);
            let mut map = HeaderMap::new();
            map.insert(CONTENT_TYPE, content_type);
            prop_assert_eq!(decode_request(&map, body).unwrap(), vec![event]);
        }

        #[test]
        fn header_decoding_never_panics(
            value in proptest::collection::vec(any::<u8>(), 0..40),
            body in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                let _ = decode_header_value("x", &value);
                let mut map = binary_headers(VALID);
                map.insert(CONTENT_TYPE, value.clone());
                map.insert(HeaderName::from_static("ce-ext"), value);
                let _ = decode_request(&map, Bytes::from(body));
            }
        }
    }
}
