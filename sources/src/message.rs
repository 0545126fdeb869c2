//! What the message-queue sources (NATS, RabbitMQ, MQTT, Redis Streams) share: a message that
//! is a CloudEvent in its protocol's binding passes through unchanged, any other is wrapped
//! ([`Plain`]); a message no event can carry is counted and skipped, never a panic
//! ([`BadMessages`]); the server is reached again with backoff while the source says why it is
//! not ready ([`connect`]); and in-flight messages are bounded ([`max_in_flight`]).
//!
//! The promise every one of them keeps (the crate's invariant): a message is acknowledged to
//! its server only after [`RunContext::deliver`] returned, that is once its event is durable in
//! the sink. A crash in between redelivers it.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use ring::digest;
use switchyard_event::{AttrValue, Data, DataForm, Event, EventError};
use switchyard_log::backoff::ExponentialBackoff;
use switchyard_meta::ValidationError;

use crate::runtime::{RunContext, Stopped};
use crate::NotReady;

/// The first and the longest wait between attempts to reach a server that went away.
pub(crate) const RECONNECT_FIRST: Duration = Duration::from_millis(500);
pub(crate) const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// Messages a source holds unacknowledged when its spec does not say (prefetch, max ack
/// pending, receive maximum, claim count).
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 100;
/// The most a spec may ask for: memory per source stays bounded.
pub const MAX_IN_FLIGHT: u32 = 10_000;
/// The media types of CloudEvents formats (structured mode).
pub(crate) const CLOUDEVENTS_MEDIA_TYPE_PREFIX: &str = "application/cloudevents";

/// The bound on in-flight messages a spec field gives: [`DEFAULT_MAX_IN_FLIGHT`] when absent,
/// 1 to [`MAX_IN_FLIGHT`] otherwise.
pub(crate) fn max_in_flight(field: &str, value: Option<i64>) -> Result<u32, ValidationError> {
    match value {
        None => Ok(DEFAULT_MAX_IN_FLIGHT),
        Some(n) if (1..=i64::from(MAX_IN_FLIGHT)).contains(&n) => Ok(n as u32),
        Some(n) => Err(ValidationError::field(field, format!("'{n}' is not between 1 and {MAX_IN_FLIGHT}"))),
    }
}

/// What a message became.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageEvent {
    /// A CloudEvent in the protocol's binding (binary or structured mode): passed through
    /// unchanged.
    CloudEvent(Event),
    /// A plain message, wrapped.
    Wrapped(Event),
    /// A message that claims to be a CloudEvent but is not a valid one: wrapped like a plain
    /// message (as Knative's sources do), so nothing is lost; `error` says why it is not one.
    WrappedInvalid {
        /// The wrapped message.
        event: Event,
        /// Why the message is not a valid CloudEvent.
        error: EventError,
    },
    /// A message no event can carry, not even wrapped: skipped, with why.
    Unmappable(EventError),
}

impl MessageEvent {
    /// What a message is: `decoded` (its binding's decoder's answer) when it is a CloudEvent,
    /// otherwise `plain` wrapped; `claims` says whether the message said it is a CloudEvent
    /// (an attribute header, a CloudEvents content type).
    pub fn of(decoded: Result<Event, EventError>, claims: bool, plain: impl FnOnce() -> Plain) -> MessageEvent {
        let error = match decoded {
            Ok(event) => return MessageEvent::CloudEvent(event),
            Err(error) => error,
        };
        match plain().wrap() {
            Ok(event) if claims => MessageEvent::WrappedInvalid { event, error },
            Ok(event) => MessageEvent::Wrapped(event),
            Err(error) => MessageEvent::Unmappable(error),
        }
    }

    /// The event to send, if any.
    pub fn into_event(self) -> Option<Event> {
        match self {
            MessageEvent::CloudEvent(event)
            | MessageEvent::Wrapped(event)
            | MessageEvent::WrappedInvalid { event, .. } => Some(event),
            MessageEvent::Unmappable(_) => None,
        }
    }
}

/// A message that is not a CloudEvent, as the event that wraps it.
#[derive(Debug, Clone, Default)]
pub struct Plain {
    /// `type`, e.g. `dev.knative.rabbitmq.event`.
    pub event_type: String,
    /// `source`, e.g. `/apis/v1/namespaces/default/rabbitmqsources/orders#orders-queue`.
    pub source: String,
    /// `id`: the same for every delivery of the same message, so a redelivery is recognisable.
    pub id: String,
    /// `subject`, if any.
    pub subject: Option<String>,
    /// `time` in RFC 3339, if the message has one.
    pub time: Option<String>,
    /// The message's content type: `datacontenttype` (lower-cased; left out when empty, and
    /// carried as the extension `{extension_prefix}contenttype` when it names a CloudEvents
    /// format the payload is not in).
    pub content_type: Option<String>,
    /// The prefix of the extensions carrying the message's headers, e.g. `natsheader`.
    pub extension_prefix: &'static str,
    /// The message's headers (or properties) as extensions `{extension_prefix}{name}`: the name
    /// lower-cased, keeping only letters and digits; of headers that give the same name, the
    /// last wins; a value that is not printable UTF-8 is left out.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Extensions set as given (names already valid), after the headers.
    pub extensions: Vec<(String, String)>,
    /// The payload, byte for byte; `None` for no data.
    pub payload: Option<Bytes>,
}

impl Plain {
    /// The wrapping event. Checked, not assumed: names and values come from the message, and
    /// the headers may be more than an event holds.
    pub fn wrap(self) -> Result<Event, EventError> {
        let text = AttrValue::String;
        let mut attributes = vec![
            ("specversion".to_owned(), text("1.0".to_owned())),
            ("id".to_owned(), text(self.id)),
            ("source".to_owned(), text(self.source)),
            ("type".to_owned(), text(self.event_type)),
        ];
        if let Some(subject) = self.subject {
            attributes.push(("subject".to_owned(), text(subject)));
        }
        if let Some(time) = self.time {
            attributes.push(("time".to_owned(), text(time)));
        }
        let mut content_type =
            self.content_type.filter(|content_type| !content_type.is_empty()).map(|c| c.to_ascii_lowercase());
        // A CloudEvents format's media type is not what the payload is (it did not decode as
        // one), and an event carrying it would read as structured mode wherever a binding
        // stores it.
        let claimed_format = content_type.take_if(|c| c.starts_with(CLOUDEVENTS_MEDIA_TYPE_PREFIX));
        if let Some(content_type) = &content_type {
            attributes.push(("datacontenttype".to_owned(), text(content_type.clone())));
        }
        let data = self.payload.map(|bytes| Data { form: DataForm::infer(content_type.as_deref(), &bytes), bytes });
        let mut extensions = Extensions::default();
        if let Some(claimed_format) = claimed_format {
            extensions.set(format!("{}contenttype", self.extension_prefix), claimed_format);
        }
        for (header, value) in &self.headers {
            let Some(value) = printable(value) else { continue };
            extensions.set(format!("{}{}", self.extension_prefix, extension_suffix(header)), value.to_owned());
        }
        for (name, value) in self.extensions {
            extensions.set(name, value);
        }
        attributes.extend(extensions.attributes.into_iter().map(|(name, value)| (name, text(value))));
        Event::new(attributes, data)
    }
}

/// A header name as an extension name's suffix: lower-cased, only letters and digits.
pub(crate) fn extension_suffix(header: &str) -> String {
    header.chars().map(|c| c.to_ascii_lowercase()).filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit()).collect()
}

/// Extensions by name, in the order each name was first set, a later value replacing an earlier
/// one in its place, in linear time: a message may carry many thousands of headers.
#[derive(Default)]
pub(crate) struct Extensions {
    pub(crate) attributes: Vec<(String, String)>,
    positions: HashMap<String, usize>,
}

impl Extensions {
    pub(crate) fn set(&mut self, name: String, value: String) {
        match self.positions.get(&name) {
            Some(&at) => {
                if let Some(slot) = self.attributes.get_mut(at) {
                    slot.1 = value;
                }
            }
            None => {
                self.positions.insert(name.clone(), self.attributes.len());
                self.attributes.push((name, value));
            }
        }
    }
}

/// The bytes as text, if they are UTF-8 without control characters (what an attribute may hold).
pub(crate) fn printable(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok().filter(|text| !text.chars().any(char::is_control))
}

/// Whether a content type names a CloudEvents format (structured mode).
pub(crate) fn is_cloudevents_media_type(content_type: &[u8]) -> bool {
    content_type.len() >= CLOUDEVENTS_MEDIA_TYPE_PREFIX.len()
        && content_type[..CLOUDEVENTS_MEDIA_TYPE_PREFIX.len()]
            .eq_ignore_ascii_case(CLOUDEVENTS_MEDIA_TYPE_PREFIX.as_bytes())
}

/// RFC 3339 in UTC with milliseconds; `None` for a time outside years 0 to 9999, which RFC 3339
/// cannot write.
pub(crate) fn rfc3339_millis(ms: i64) -> Option<String> {
    let time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    if !(0..=9999).contains(&time.year()) {
        return None;
    }
    time.format(&time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .ok()
}

/// An id for a message that has none of its own, the same for every delivery of the same
/// bytes: `sha256:` and the first 128 bits of the SHA-256 of `parts` (each length-prefixed, so
/// parts cannot run into each other), in hex. Two messages with the same parts get the same id:
/// sources document that a producer tells them apart by giving each its own message id.
pub fn content_id(parts: &[&[u8]]) -> String {
    let mut context = digest::Context::new(&digest::SHA256);
    for part in parts {
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part);
    }
    let digest = context.finish();
    let hex: String = digest.as_ref()[..16].iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256:{hex}")
}

/// What a run saw of messages that are not CloudEvents as they claim, or cannot be events at
/// all: counted in `switchyard_source_bad_messages_total{kind,reason}` and logged (the first of
/// each reason per run at `warn`, later ones at `debug`).
#[derive(Default)]
pub(crate) struct BadMessages {
    logged: BTreeSet<&'static str>,
}

impl BadMessages {
    /// The event `message` stands for, if any; counts and logs a bad one. `at` says where the
    /// message came from (a subject, a queue and delivery tag, a stream entry).
    pub(crate) fn event(&mut self, context: &RunContext, message: MessageEvent, at: &dyn Display) -> Option<Event> {
        let id = &context.source().id;
        let (reason, what, error, event) = match message {
            MessageEvent::CloudEvent(event) | MessageEvent::Wrapped(event) => return Some(event),
            MessageEvent::WrappedInvalid { event, error } => {
                ("invalid_cloudevent", "is not a valid CloudEvent; wrapped as a plain message", error, Some(event))
            }
            MessageEvent::Unmappable(error) => ("unmappable", "cannot be an event; skipped", error, None),
        };
        crate::metrics::bad_message(id.kind, reason);
        if self.logged.insert(reason) {
            tracing::warn!(source = %id, %at, %error, "message {what} (logged once per reason; counted in switchyard_source_bad_messages_total)");
        } else {
            tracing::debug!(source = %id, %at, %error, "message {what}");
        }
        event
    }
}

/// Connects with `connect` until it succeeds or the source is asked to stop, waiting with
/// backoff between attempts; meanwhile the source is `Ready=False` with `reason` and the error,
/// and each failed attempt is counted in `switchyard_source_reconnects_total{kind}`.
pub(crate) async fn connect<T, E, F, Fut>(
    context: &RunContext,
    reason: &'static str,
    mut connect: F,
) -> Result<T, Stopped>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut wait = ExponentialBackoff::new(RECONNECT_FIRST, RECONNECT_MAX);
    loop {
        let attempt = tokio::select! {
            attempt = connect() => attempt,
            () = context.stopped() => return Err(Stopped),
        };
        match attempt {
            Ok(connection) => return Ok(connection),
            Err(error) => {
                lost(context, reason, &error);
                context.sleep(wait.next_delay()).await?;
            }
        }
    }
}

/// Says the server went away (or refused): `Ready=False` with `reason` and the error, logged
/// once per reason, counted in `switchyard_source_reconnects_total{kind}`. The caller connects
/// again with [`connect`].
pub(crate) fn lost(context: &RunContext, reason: &'static str, error: &dyn Display) {
    let id = &context.source().id;
    let message = error.to_string();
    if context.problem_reason() != Some(reason) {
        tracing::warn!(source = %id, error = %message, "{reason}: connecting again with backoff");
    } else {
        tracing::debug!(source = %id, error = %message, "{reason}: connecting again with backoff");
    }
    crate::metrics::reconnect(id.kind);
    context.report(Some(NotReady { reason, message }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain() -> Plain {
        Plain {
            event_type: "dev.example.message".to_owned(),
            source: "/apis/v1/namespaces/default/examplesources/s#q".to_owned(),
            id: "m-1".to_owned(),
            extension_prefix: "exampleheader",
            payload: Some(Bytes::from_static(b"{\"a\":1}")),
            ..Plain::default()
        }
    }

    #[test]
    fn a_plain_message_is_wrapped_with_its_headers_as_extensions() {
        let mut message = plain();
        message.content_type = Some("Application/JSON".to_owned());
        message.headers = vec![
            ("X-Trace".to_owned(), b"abc".to_vec()),
            ("x_trace".to_owned(), b"def".to_vec()),
            ("binary".to_owned(), vec![0, 1]),
        ];
        message.extensions = vec![("partitionkey".to_owned(), "k".to_owned())];
        let event = message.wrap().unwrap();
        assert_eq!(event.id(), "m-1");
        assert_eq!(event.datacontenttype(), Some("application/json"));
        assert_eq!(event.get("exampleheaderxtrace").map(|v| v.to_canonical_string().into_owned()), Some("def".into()));
        assert_eq!(event.get("exampleheaderbinary"), None);
        assert_eq!(event.get("partitionkey").map(|v| v.to_canonical_string().into_owned()), Some("k".into()));
        assert_eq!(event.data().unwrap().bytes, Bytes::from_static(b"{\"a\":1}"));
    }

    #[test]
    fn a_cloudevents_content_type_that_did_not_decode_moves_to_an_extension() {
        let mut message = plain();
        message.content_type = Some("application/cloudevents+json".to_owned());
        let decoded = Err(EventError::MissingAttribute("id"));
        let MessageEvent::WrappedInvalid { event, .. } = MessageEvent::of(decoded, true, || message) else {
            panic!("not wrapped as invalid")
        };
        assert_eq!(event.datacontenttype(), None);
        assert!(event.get("exampleheadercontenttype").is_some());
    }

    #[test]
    fn an_unmappable_message_is_said_so() {
        let mut message = plain();
        message.source = String::new();
        let event = MessageEvent::of(Err(EventError::MissingAttribute("specversion")), false, || message);
        assert!(matches!(event, MessageEvent::Unmappable(_)), "{event:?}");
    }

    #[test]
    fn content_ids_are_stable_and_do_not_run_parts_together() {
        assert_eq!(content_id(&[b"q", b"body"]), content_id(&[b"q", b"body"]));
        assert_ne!(content_id(&[b"q", b"body"]), content_id(&[b"qb", b"ody"]));
        assert!(content_id(&[b""]).starts_with("sha256:"));
        assert_eq!(content_id(&[b""]).len(), "sha256:".len() + 32);
    }

    #[test]
    fn in_flight_bounds_are_checked() {
        assert_eq!(max_in_flight("spec.prefetch", None).unwrap(), DEFAULT_MAX_IN_FLIGHT);
        assert_eq!(max_in_flight("spec.prefetch", Some(1)).unwrap(), 1);
        assert!(max_in_flight("spec.prefetch", Some(0)).is_err());
        assert!(max_in_flight("spec.prefetch", Some(i64::from(MAX_IN_FLIGHT) + 1)).is_err());
    }
}
