//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>) and the CloudEvents Distributed
//! Tracing extension (`extensions/distributed-tracing.md`), so that one trace spans producer →
//! broker → subscriber.
//!
//! Two records of trace context meet at the broker, and they are kept apart on purpose:
//! - the event's `traceparent`/`tracestate` **extension attributes** name the trace the event
//!   was created in. The extension spec says a multi-hop transmission MUST carry the starting
//!   trace there, and MUST NOT carry each hop's, so the broker never rewrites them; it only adds
//!   them when the producer sent none ("middleware … could eventually add a Distributed Tracing
//!   Extension if the source didn't include any"), from the ingest request's headers;
//! - the HTTP **`traceparent`/`tracestate` headers** describe one hop. Every request the broker
//!   sends carries a child of the event's context: the same trace id, a fresh parent id (the
//!   broker's span for that request).
//!
//! Pure code like the rest of the crate; the only impurity is [`SpanId::random`].

use std::fmt;
use std::time::SystemTime;

use http::{HeaderMap, HeaderValue};

use crate::model::{AttrValue, Event};

/// The extension attribute, and the HTTP header, holding the W3C `traceparent`.
pub const TRACEPARENT: &str = "traceparent";
/// The extension attribute, and the HTTP header, holding the W3C `tracestate`.
pub const TRACESTATE: &str = "tracestate";

/// W3C trace-flags `sampled` bit (§3.2.2.5.1).
pub const FLAG_SAMPLED: u8 = 0x01;
/// Trace Context Level 2 `random-trace-id` bit: the trace id was generated randomly.
pub const FLAG_RANDOM: u8 = 0x02;

/// The length of a version-00 `traceparent`: `2 + 1 + 32 + 1 + 16 + 1 + 2`.
const VERSION_00_LEN: usize = 55;

/// Why a `traceparent` value was rejected. The W3C rule is to ignore such a value (restart the
/// trace), never to fail the request, so this only ever reaches logs and tests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid traceparent '{value}': {reason}")]
pub struct TraceParentError {
    /// The rejected value (its first 64 characters).
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A W3C trace-id: 16 bytes, not all zero (§3.2.2.3).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId([u8; 16]);

/// A W3C parent-id, which is a span id: 8 bytes, not all zero (§3.2.2.4).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId([u8; 8]);

impl TraceId {
    /// The id, unless it is all zeros (invalid).
    pub fn from_bytes(bytes: [u8; 16]) -> Option<TraceId> {
        (bytes != [0; 16]).then_some(TraceId(bytes))
    }

    /// The 16 bytes.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0
    }
}

impl SpanId {
    /// The id, unless it is all zeros (invalid).
    pub fn from_bytes(bytes: [u8; 8]) -> Option<SpanId> {
        (bytes != [0; 8]).then_some(SpanId(bytes))
    }

    /// The 8 bytes.
    pub fn to_bytes(self) -> [u8; 8] {
        self.0
    }

    /// A fresh random span id. Trace Context Level 2 §"considerations for span-id generation":
    /// random, and never derived from anything about the request.
    pub fn random() -> SpanId {
        loop {
            if let Some(id) = SpanId::from_bytes(fastrand::u64(..).to_be_bytes()) {
                return id;
            }
        }
    }
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

impl fmt::Display for TraceId {
    /// Lower-case hex, as in `traceparent` and OTLP/JSON.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl fmt::Display for SpanId {
    /// Lower-case hex, as in `traceparent` and OTLP/JSON.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

/// A parsed `traceparent`: `00-<trace-id>-<parent-id>-<trace-flags>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: TraceId,
    parent_id: SpanId,
    flags: u8,
}

impl TraceParent {
    /// A version-00 trace parent.
    pub fn new(trace_id: TraceId, parent_id: SpanId, flags: u8) -> TraceParent {
        TraceParent { trace_id, parent_id, flags }
    }

    /// Parses a `traceparent` value by the W3C rules (§3.2.2, and §3.2.4 for versions above
    /// 00): lower-case hex only, version `ff` forbidden, trace-id and parent-id not all zeros,
    /// version 00 exactly 55 characters. A higher version is read through its first 55
    /// characters (which must be followed by the end or a `-`), keeping only the `sampled` flag,
    /// since nothing may be assumed about the other flags or fields of an unknown version.
    /// Surrounding spaces and tabs (HTTP optional whitespace) are ignored.
    pub fn parse(value: &str) -> Result<TraceParent, TraceParentError> {
        let error = |reason| TraceParentError { value: value.chars().take(64).collect(), reason };
        let text = value.trim_matches([' ', '\t']).as_bytes();
        let version = match text {
            [a, b, b'-', ..] => {
                hex_byte(*a, *b).ok_or_else(|| error("the version is not two lower-case hex digits"))?
            }
            _ => return Err(error("it does not start with a two-digit version and '-'")),
        };
        if version == 0xff {
            return Err(error("version ff is forbidden"));
        }
        if text.len() < VERSION_00_LEN {
            return Err(error("it is shorter than 55 characters"));
        }
        if version == 0 && text.len() != VERSION_00_LEN {
            return Err(error("a version 00 value is exactly 55 characters"));
        }
        if text.len() > VERSION_00_LEN && text[VERSION_00_LEN] != b'-' {
            return Err(error("the flags are not followed by '-' or the end"));
        }
        if text[35] != b'-' || text[52] != b'-' {
            return Err(error("the fields are not separated by '-'"));
        }
        let trace_id =
            hex_array::<16>(&text[3..35]).ok_or_else(|| error("the trace-id is not 32 lower-case hex digits"))?;
        let trace_id = TraceId::from_bytes(trace_id).ok_or_else(|| error("the trace-id is all zeros"))?;
        let parent_id =
            hex_array::<8>(&text[36..52]).ok_or_else(|| error("the parent-id is not 16 lower-case hex digits"))?;
        let parent_id = SpanId::from_bytes(parent_id).ok_or_else(|| error("the parent-id is all zeros"))?;
        let flags =
            hex_byte(text[53], text[54]).ok_or_else(|| error("the trace-flags are not two lower-case hex digits"))?;
        let flags = if version == 0 { flags } else { flags & FLAG_SAMPLED };
        Ok(TraceParent { trace_id, parent_id, flags })
    }

    /// The trace.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// The caller's span.
    pub fn parent_id(&self) -> SpanId {
        self.parent_id
    }

    /// The trace-flags byte.
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the caller may have recorded its span.
    pub fn sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }

    /// The `traceparent` for a request made from a new span of this trace: same trace id, a
    /// fresh random parent id. This is the "update parent-id" mutation of §3.5; the `sampled`
    /// and Level 2 `random` flags carry over (we make no sampling decision), and flags this
    /// version does not define are cleared, since vendors "MUST set those to zero".
    pub fn child(&self) -> TraceParent {
        self.with_parent_id(SpanId::random())
    }

    /// [`TraceParent::child`] with a given span id.
    pub fn with_parent_id(&self, parent_id: SpanId) -> TraceParent {
        TraceParent { trace_id: self.trace_id, parent_id, flags: self.flags & (FLAG_SAMPLED | FLAG_RANDOM) }
    }
}

impl fmt::Display for TraceParent {
    /// Always version 00: a higher version is downgraded when re-sent (§3.5).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{}-{}-{:02x}", self.trace_id, self.parent_id, self.flags)
    }
}

impl std::str::FromStr for TraceParent {
    type Err = TraceParentError;

    fn from_str(value: &str) -> Result<TraceParent, TraceParentError> {
        TraceParent::parse(value)
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    // HEXDIGLC: upper-case hex is not valid in a traceparent.
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn hex_byte(high: u8, low: u8) -> Option<u8> {
    Some((hex_digit(high)? << 4) | hex_digit(low)?)
}

fn hex_array<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    let mut out = [0; N];
    if text.len() != 2 * N {
        return None;
    }
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = hex_byte(pair[0], pair[1])?;
    }
    Some(out)
}

/// A trace context: a valid `traceparent` and the `tracestate` that goes with it.
///
/// `tracestate` is passed through as received, not parsed: the broker adds no entry of its own,
/// and the W3C rule for a service that does not is to propagate the value unchanged (§3.3, §3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// The parent.
    pub traceparent: TraceParent,
    /// Vendor state, verbatim (multiple header fields joined with `,`); `None` when absent or
    /// empty.
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// The event's own trace context: its Distributed Tracing extension, when `traceparent` is
    /// a valid string. A missing or invalid one means the event carries no trace (its
    /// `tracestate` is then ignored too: W3C §3.3, "if the vendor failed to parse traceparent,
    /// it MUST NOT attempt to parse tracestate").
    pub fn from_event(event: &Event) -> Option<TraceContext> {
        let traceparent = TraceParent::parse(event.get_str(TRACEPARENT)?).ok()?;
        let tracestate = event.get_str(TRACESTATE).filter(|s| !s.trim().is_empty()).map(str::to_owned);
        Some(TraceContext { traceparent, tracestate })
    }

    /// An HTTP request's trace context: exactly one valid `traceparent` header (several are
    /// ambiguous, so they count as none), and every `tracestate` field combined in order with
    /// `,` (W3C §3.3.1.1, RFC 7230 §3.2.2). `None` when there is no valid `traceparent`.
    pub fn from_headers(headers: &HeaderMap) -> Option<TraceContext> {
        let mut values = headers.get_all(TRACEPARENT).iter();
        let (Some(value), None) = (values.next(), values.next()) else { return None };
        let traceparent = TraceParent::parse(value.to_str().ok()?).ok()?;
        let mut fields = Vec::new();
        for field in headers.get_all(TRACESTATE) {
            match field.to_str() {
                Ok(text) if !text.trim().is_empty() => fields.push(text.trim()),
                Ok(_) => {}
                // An unreadable tracestate is dropped; it never costs the traceparent (§3.3).
                Err(_) => return Some(TraceContext { traceparent, tracestate: None }),
            }
        }
        let tracestate = (!fields.is_empty()).then(|| fields.join(","));
        Some(TraceContext { traceparent, tracestate })
    }

    /// This context as the headers of one outgoing request made from a new span: a child
    /// `traceparent` with the span id `span`, and the `tracestate` unchanged.
    pub fn child_headers(&self, span: SpanId) -> HeaderMap {
        let mut headers = HeaderMap::with_capacity(2);
        let traceparent = self.traceparent.with_parent_id(span).to_string();
        if let Ok(value) = HeaderValue::from_str(&traceparent) {
            headers.insert(TRACEPARENT, value);
        }
        if let Some(Ok(value)) = self.tracestate.as_deref().map(HeaderValue::from_str) {
            headers.insert(TRACESTATE, value);
        }
        headers
    }
}

/// Ingest: gives an event that carries no Distributed Tracing extension the trace context of
/// the request that brought it, so the trace is kept with the event in the log. An event that
/// has a `traceparent` attribute keeps it, valid or not: it is the producer's own record, and
/// the extension spec forbids replacing the starting trace with a later hop's. `tracestate` is
/// added only beside an adopted `traceparent`, and never replaces one the event has.
///
/// Returns whether the event adopted the request's context.
pub fn adopt_request_context(event: &mut Event, request: &TraceContext) -> bool {
    if event.get(TRACEPARENT).is_some() {
        return false;
    }
    let traceparent = AttrValue::String(request.traceparent.to_string());
    if event.set_extension(TRACEPARENT, traceparent).is_err() {
        return false;
    }
    if let Some(tracestate) = &request.tracestate {
        if event.get(TRACESTATE).is_none() {
            // A value the model refuses (a control character) is dropped alone (§3.3).
            let _ = event.set_extension(TRACESTATE, AttrValue::String(tracestate.clone()));
        }
    }
    true
}

/// The parent of the broker's ingest span for an event: the request's `traceparent` header when
/// it belongs to the event's trace (the producer's HTTP client span, which may be a child of the
/// span that created the event), otherwise the event's own context.
pub fn ingest_parent(event: &TraceContext, request: Option<&TraceContext>) -> TraceParent {
    match request {
        Some(request) if request.traceparent.trace_id() == event.traceparent.trace_id() => request.traceparent,
        _ => event.traceparent,
    }
}

/// What kind of operation a span describes (the OTLP `SpanKind` values the broker uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// Handling a request: ingest.
    Server,
    /// Making a request: a delivery attempt.
    Client,
}

/// A span attribute value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpanValue {
    /// Text.
    String(String),
    /// A whole number.
    Int(i64),
}

/// A finished span of the broker's own work on an event, ready for export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// The event's trace.
    pub trace_id: TraceId,
    /// This span (the parent-id of the `traceparent` the broker sent, for a delivery).
    pub span_id: SpanId,
    /// The span it is a child of.
    pub parent_span_id: SpanId,
    /// The trace's `tracestate`, if any.
    pub tracestate: Option<String>,
    /// The trace-flags the span was made under.
    pub flags: u8,
    /// The operation (low cardinality: `ingest`, `deliver`, `dead-letter`).
    pub name: &'static str,
    /// Server or client.
    pub kind: SpanKind,
    /// When it started.
    pub start: SystemTime,
    /// When it ended.
    pub end: SystemTime,
    /// Attributes, OpenTelemetry semantic-convention names where one exists.
    pub attributes: Vec<(&'static str, SpanValue)>,
    /// Why the operation failed; `None` when it succeeded.
    pub error: Option<String>,
}

impl Span {
    /// The CloudEvents semantic-convention attributes of an event (OpenTelemetry
    /// `cloudevents.*`).
    pub fn event_attributes(event: &Event) -> Vec<(&'static str, SpanValue)> {
        let text = |s: &str| SpanValue::String(s.to_owned());
        let mut attributes = vec![
            ("cloudevents.event_id", text(event.id())),
            ("cloudevents.event_source", text(event.source())),
            ("cloudevents.event_type", text(event.ty())),
        ];
        if let Some(subject) = event.get_str("subject") {
            attributes.push(("cloudevents.event_subject", text(subject)));
        }
        attributes
    }
}

/// The broker's ingest spans for one request: a server span per distinct trace context among
/// the events (usually one: a single event, or a batch from one producer span), parented by
/// [`ingest_parent`]. Events without trace context get none. `error` says why the request
/// failed, if it did.
pub fn ingest_spans(
    broker: &str,
    events: &[Event],
    request: Option<&TraceContext>,
    start: SystemTime,
    end: SystemTime,
    error: Option<&str>,
) -> Vec<Span> {
    let mut spans: Vec<(TraceParent, Option<String>, Vec<&Event>)> = Vec::new();
    for event in events {
        let Some(context) = TraceContext::from_event(event) else { continue };
        let parent = ingest_parent(&context, request);
        match spans.iter_mut().find(|(p, _, _)| *p == parent) {
            Some((_, _, members)) => members.push(event),
            None => spans.push((parent, context.tracestate, vec![event])),
        }
    }
    spans
        .into_iter()
        .map(|(parent, tracestate, members)| {
            let mut attributes = vec![
                ("switchyard.broker", SpanValue::String(broker.to_owned())),
                ("switchyard.events", SpanValue::Int(members.len() as i64)),
                ("http.request.method", SpanValue::String("POST".to_owned())),
            ];
            if let [event] = members[..] {
                attributes.extend(Span::event_attributes(event));
            }
            let span_id = SpanId::random();
            Span {
                trace_id: parent.trace_id(),
                span_id,
                parent_span_id: parent.parent_id(),
                tracestate,
                flags: parent.with_parent_id(span_id).flags(),
                name: "ingest",
                kind: SpanKind::Server,
                start,
                end,
                attributes,
                error: error.map(str::to_owned),
            }
        })
        .collect()
}

/// Where finished spans go (the exporter, when one is configured). Called on the hot path, so
/// an implementation must not block: queue the span, or drop it.
pub trait SpanSink: Send + Sync {
    /// Takes one finished span.
    fn record(&self, span: Span);
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use proptest::prelude::*;

    use super::*;
    use crate::testing::required;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn event() -> Event {
        Event::new(required(), None).unwrap()
    }

    #[test]
    fn a_valid_traceparent_parses_and_formats_back_unchanged() {
        let parsed = TraceParent::parse(VALID).unwrap();
        assert_eq!(parsed.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.parent_id().to_string(), "00f067aa0ba902b7");
        assert_eq!(parsed.flags(), 1);
        assert!(parsed.sampled());
        assert_eq!(parsed.to_string(), VALID);
        assert_eq!(TraceParent::parse(&format!(" \t{VALID} ")).unwrap(), parsed, "optional whitespace");
        assert!(!TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap().sampled());
    }

    #[test]
    fn malformed_traceparents_are_rejected_as_the_w3c_spec_says() {
        let cases = [
            ("", "start"),
            ("00", "start"),
            ("0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "start"),
            ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "version ff"),
            ("0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "version"),
            ("0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "version"),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", "exactly 55"),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1", "shorter"),
            ("00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01", "separated"),
            ("00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "start"),
            ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "trace-id"),
            ("00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", "trace-id"),
            ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", "all zeros"),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01", "parent-id"),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "all zeros"),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x", "trace-flags"),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-AB", "trace-flags"),
            ("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.what", "followed by"),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\u{e9}", "exactly 55"),
        ];
        for (value, reason) in cases {
            let error = TraceParent::parse(value).expect_err(value);
            assert!(error.to_string().contains(reason), "{value:?}: {error}");
            assert!(error.to_string().starts_with("invalid traceparent '"), "{error}");
        }
    }

    #[test]
    fn a_higher_version_is_read_through_its_first_fields_and_downgraded() {
        let parsed =
            TraceParent::parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-what-the-future").unwrap();
        assert_eq!(parsed.flags(), FLAG_SAMPLED, "only the sampled flag of an unknown version is read");
        assert_eq!(parsed.to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let exact = TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert_eq!(exact.to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
    }

    #[test]
    fn a_child_keeps_the_trace_and_known_flags_with_a_fresh_parent() {
        let parent = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff").unwrap();
        let child = parent.child();
        assert_eq!(child.trace_id(), parent.trace_id());
        assert_ne!(child.parent_id(), parent.parent_id());
        assert_ne!(child.parent_id(), parent.child().parent_id());
        assert_eq!(child.flags(), FLAG_SAMPLED | FLAG_RANDOM, "undefined flags are cleared");
    }

    #[test]
    fn request_context_comes_from_exactly_one_valid_header_with_combined_tracestate() {
        let mut headers = HeaderMap::new();
        assert_eq!(TraceContext::from_headers(&headers), None);
        headers.insert("Traceparent", HeaderValue::from_static(VALID));
        headers.append("tracestate", HeaderValue::from_static("rojo=00f067aa0ba902b7"));
        headers.append("tracestate", HeaderValue::from_static(" "));
        headers.append("tracestate", HeaderValue::from_static("congo=t61rcWkgMzE"));
        let context = TraceContext::from_headers(&headers).unwrap();
        assert_eq!(context.traceparent.to_string(), VALID);
        assert_eq!(context.tracestate.as_deref(), Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"));
        headers.append("traceparent", HeaderValue::from_static(VALID));
        assert_eq!(TraceContext::from_headers(&headers), None, "two traceparent headers are ambiguous");
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_static("00-xyz"));
        headers.insert("tracestate", HeaderValue::from_static("rojo=1"));
        assert_eq!(TraceContext::from_headers(&headers), None);
    }

    #[test]
    fn an_event_without_the_extension_adopts_the_request_context_and_one_with_it_keeps_its_own() {
        let mut request = HeaderMap::new();
        request.insert("traceparent", HeaderValue::from_static(VALID));
        request.insert("tracestate", HeaderValue::from_static("congo=t61rcWkgMzE"));
        let request = TraceContext::from_headers(&request).unwrap();

        let mut plain = event();
        assert!(adopt_request_context(&mut plain, &request));
        assert_eq!(plain.get_str(TRACEPARENT), Some(VALID));
        assert_eq!(plain.get_str(TRACESTATE), Some("congo=t61rcWkgMzE"));
        assert_eq!(TraceContext::from_event(&plain), Some(request.clone()));

        let own = "00-0af7651916cd43dd8448eb211c80319c-b9c7c989f97918e1-01";
        let mut traced = event();
        traced.set_extension(TRACEPARENT, AttrValue::String(own.into())).unwrap();
        assert!(!adopt_request_context(&mut traced, &request));
        assert_eq!(traced.get_str(TRACEPARENT), Some(own));
        assert_eq!(traced.get(TRACESTATE), None);

        let mut invalid = event();
        invalid.set_extension(TRACEPARENT, AttrValue::String("junk".into())).unwrap();
        assert!(!adopt_request_context(&mut invalid, &request), "the producer's attribute is its own");
        assert_eq!(invalid.get_str(TRACEPARENT), Some("junk"));
        assert_eq!(TraceContext::from_event(&invalid), None);

        let mut typed = event();
        typed.set_extension(TRACEPARENT, AttrValue::Integer(7)).unwrap();
        assert_eq!(TraceContext::from_event(&typed), None);
    }

    #[test]
    fn child_headers_carry_the_trace_with_a_new_parent_and_the_state_unchanged() {
        let context = TraceContext {
            traceparent: TraceParent::parse(VALID).unwrap(),
            tracestate: Some("congo=t61rcWkgMzE".into()),
        };
        let span = SpanId::from_bytes([1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        let headers = context.child_headers(span);
        assert_eq!(headers["traceparent"], "00-4bf92f3577b34da6a3ce929d0e0e4736-0102030405060708-01");
        assert_eq!(headers["tracestate"], "congo=t61rcWkgMzE");
    }

    #[test]
    fn the_ingest_span_hangs_from_the_request_header_only_within_the_events_trace() {
        let event = TraceContext { traceparent: TraceParent::parse(VALID).unwrap(), tracestate: None };
        let same_trace = TraceContext {
            traceparent: TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-b9c7c989f97918e1-01").unwrap(),
            tracestate: None,
        };
        let other_trace = TraceContext {
            traceparent: TraceParent::parse("00-0af7651916cd43dd8448eb211c80319c-b9c7c989f97918e1-01").unwrap(),
            tracestate: None,
        };
        assert_eq!(ingest_parent(&event, None), event.traceparent);
        assert_eq!(ingest_parent(&event, Some(&same_trace)), same_trace.traceparent);
        assert_eq!(ingest_parent(&event, Some(&other_trace)), event.traceparent);
    }

    #[test]
    fn ingest_spans_group_events_by_trace_context_and_skip_untraced_ones() {
        let with = |id: &str, traceparent: Option<&str>| {
            let mut event = event();
            event.set_extension("sequence", AttrValue::String(id.into())).unwrap();
            if let Some(traceparent) = traceparent {
                event.set_extension(TRACEPARENT, AttrValue::String(traceparent.into())).unwrap();
            }
            event
        };
        let other = "00-0af7651916cd43dd8448eb211c80319c-b9c7c989f97918e1-00";
        let events = [with("1", Some(VALID)), with("2", None), with("3", Some(other)), with("4", Some(VALID))];
        let now = SystemTime::now();
        let spans = ingest_spans("ns/b", &events, None, now, now, Some("storage cannot accept"));
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(spans[0].parent_span_id.to_string(), "00f067aa0ba902b7");
        assert!(spans[0].attributes.contains(&("switchyard.events", SpanValue::Int(2))));
        assert_eq!(spans[1].trace_id.to_string(), "0af7651916cd43dd8448eb211c80319c");
        assert!(spans[1].attributes.contains(&("cloudevents.event_id", SpanValue::String("id-1".into()))));
        assert_eq!((spans[1].kind, spans[1].name), (SpanKind::Server, "ingest"));
        assert_eq!(spans[1].error.as_deref(), Some("storage cannot accept"));
        assert_ne!(spans[0].span_id, spans[1].span_id);
        assert!(ingest_spans("ns/b", &events[1..2], None, now, now, None).is_empty());
    }

    fn arb_traceparent() -> impl Strategy<Value = TraceParent> {
        (any::<[u8; 16]>(), any::<[u8; 8]>(), any::<u8>()).prop_filter_map("ids are not all zeros", |(t, p, f)| {
            Some(TraceParent::new(TraceId::from_bytes(t)?, SpanId::from_bytes(p)?, f))
        })
    }

    proptest! {
        #[test]
        fn formatting_then_parsing_is_the_identity(traceparent in arb_traceparent()) {
            let text = traceparent.to_string();
            prop_assert_eq!(text.len(), VERSION_00_LEN);
            prop_assert_eq!(TraceParent::parse(&text), Ok(traceparent));
        }

        #[test]
        fn whatever_parses_formats_back_to_the_same_version_00_text(text in "[0-9a-f-]{0,60}|00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}") {
            if let Ok(parsed) = TraceParent::parse(&text) {
                if text.starts_with("00") {
                    prop_assert_eq!(parsed.to_string(), text);
                }
                prop_assert_eq!(TraceParent::parse(&parsed.to_string()), Ok(parsed));
            }
        }

        #[test]
        fn parsing_never_panics(text in "\\PC{0,80}") {
            let _ = TraceParent::parse(&text);
        }
    }
}
