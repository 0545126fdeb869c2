//! The HTTP delivery client: one attempt is one HTTP POST of an event to a subscriber (or a
//! dead-letter sink, or a source's sink URI).
//!
//! Every attempt is a span of the event's trace when the event carries one (its Distributed
//! Tracing extension): the request has a W3C `traceparent` header with the event's trace id and
//! a fresh span id, and the finished span goes to the [`SpanSink`], if there is one.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use switchyard_event::http::HeaderEncoding;
use switchyard_event::tracecontext::{Span, SpanId, SpanKind, SpanSink, SpanValue, TraceContext, TraceId};
use switchyard_event::Event;
use url::Url;

use crate::plan::Format;
use crate::retry::Failure;

/// How much of a failed answer's body is kept (Knative's `knativeerrordata` keeps 1024).
const ERROR_BODY_PREFIX: usize = 1024;
/// Bytes of an answer read so the connection can be reused; more is dropped.
const MAX_DRAINED_BODY: usize = 4 << 20;

/// Where and how one trigger delivers.
#[derive(Debug, Clone)]
pub struct Target {
    /// The subscriber.
    pub url: Url,
    /// Binary or structured.
    pub format: Format,
    /// How binary mode writes string attributes; `None` is the client's default.
    pub header_encoding: Option<HeaderEncoding>,
    /// Sent as `Kn-Namespace` (Knative data-plane contract).
    pub namespace: String,
    /// Per-attempt timeout.
    pub timeout: Duration,
}

/// What one attempt is part of, for its trace span.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// The trigger, as `namespace/name`.
    pub trigger: &'a str,
    /// 1 for the first attempt at this target.
    pub number: u32,
    /// Whether the target is the trigger's dead-letter sink rather than its subscriber.
    pub dead_letter: bool,
}

/// Sends events over a pooled HTTP client.
#[derive(Clone)]
pub struct DeliveryClient {
    client: reqwest::Client,
    spans: Option<Arc<dyn SpanSink>>,
    /// The largest reply event read from an answer: the brokers' event size limit, so a larger
    /// reply is refused as any larger event is.
    max_reply_bytes: usize,
    /// How binary mode writes string attributes where the target does not say.
    header_encoding: HeaderEncoding,
}

impl std::fmt::Debug for DeliveryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryClient").field("client", &self.client).field("spans", &self.spans.is_some()).finish()
    }
}

impl DeliveryClient {
    /// A client with keep-alive pooling, HTTP/2 where the subscriber offers it (ALPN), TLS
    /// verified, and no redirects followed (a redirect is an answer, not a delivery). Replies
    /// are read up to `max_reply_bytes`.
    pub fn new(max_reply_bytes: usize) -> Result<DeliveryClient, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            // Enough idle keep-alive connections per subscriber for busy triggers, without
            // keeping one for every attempt ever in flight across thousands of triggers.
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(DeliveryClient { client, spans: None, max_reply_bytes, header_encoding: HeaderEncoding::default() })
    }

    /// The largest reply event read from an answer.
    pub fn max_reply_bytes(&self) -> usize {
        self.max_reply_bytes
    }

    /// Reports every traced attempt to `spans` once it is finished.
    pub fn with_spans(mut self, spans: Arc<dyn SpanSink>) -> DeliveryClient {
        self.spans = Some(spans);
        self
    }

    /// Writes binary-mode string attributes in `encoding` for targets that do not choose
    /// (the server's `header_encoding` setting).
    pub fn with_header_encoding(mut self, encoding: HeaderEncoding) -> DeliveryClient {
        self.header_encoding = encoding;
        self
    }

    /// One attempt. `Ok` with the answer on a 2xx; a failure otherwise.
    ///
    /// An event with a valid `traceparent` extension is sent with a `traceparent` header that
    /// continues its trace from a new span (the broker's, for this attempt) and its `tracestate`.
    /// The extension itself goes out unchanged: it records where the event started (CloudEvents
    /// Distributed Tracing extension: it "MUST NOT carry trace information of each individual
    /// hop"). An event without one is sent without trace headers: there is no trace to continue,
    /// and a new trace per attempt would scatter the retries of one event over unrelated traces.
    pub async fn send(&self, target: &Target, event: &Event, attempt: Attempt<'_>) -> Result<Answer, Failure> {
        let Some(trace) = TraceContext::from_event(event) else {
            return self.post(target, event, HeaderMap::new()).await;
        };
        let span_id = SpanId::random();
        let start = SystemTime::now();
        let result = self.post(target, event, trace.child_headers(span_id)).await;
        if let Some(spans) = &self.spans {
            spans.record(attempt_span(&trace, span_id, start, target, event, attempt, &result));
        }
        result
    }

    async fn post(&self, target: &Target, event: &Event, trace_headers: HeaderMap) -> Result<Answer, Failure> {
        let encoding = target.header_encoding.unwrap_or(self.header_encoding);
        let (mut headers, body) = encode(target.format, encoding, event);
        headers.extend(trace_headers);
        headers.insert("prefer", HeaderValue::from_static("reply"));
        if let Ok(namespace) = HeaderValue::from_str(&target.namespace) {
            headers.insert("kn-namespace", namespace);
        }
        let request = self.client.post(target.url.clone()).headers(headers).body(body).timeout(target.timeout);
        let mut response = request.send().await.map_err(transport_failure)?;
        let status = response.status();
        // A 2xx body may be a reply event (kept whole, up to the limit); a failure's body only
        // matters for its first bytes (`knativeerrordata`).
        let keep = if status.is_success() { self.max_reply_bytes } else { ERROR_BODY_PREFIX };
        let mut kept = Vec::new();
        let mut truncated = false;
        let mut read = 0;
        while read < MAX_DRAINED_BODY {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    read += chunk.len();
                    let room = keep.saturating_sub(kept.len());
                    truncated |= chunk.len() > room;
                    kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) => break,
                Err(e) if status.is_success() => return Err(transport_failure(e)),
                Err(_) => break,
            }
        }
        if status.is_success() {
            Ok(Answer { status, headers: response.headers().clone(), body: Bytes::from(kept), truncated })
        } else {
            Err(Failure {
                status: Some(status),
                error: None,
                retry_after: response.headers().get(http::header::RETRY_AFTER).cloned(),
                body_prefix: Bytes::from(kept),
            })
        }
    }
}

/// The finished span of one traced attempt: a client span of the event's trace, a child of the
/// span that created the event (the `traceparent` extension). The broker's ingest span is its
/// sibling: nothing but the event links the two, and the event is never rewritten.
fn attempt_span(
    trace: &TraceContext,
    span_id: SpanId,
    start: SystemTime,
    target: &Target,
    event: &Event,
    attempt: Attempt<'_>,
    result: &Result<Answer, Failure>,
) -> Span {
    let mut url = target.url.clone();
    // OpenTelemetry `url.full` must not carry credentials.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let mut attributes = vec![
        ("switchyard.trigger", SpanValue::String(attempt.trigger.to_owned())),
        ("switchyard.attempt", SpanValue::Int(attempt.number.into())),
        ("http.request.method", SpanValue::String("POST".to_owned())),
        ("url.full", SpanValue::String(url.to_string())),
    ];
    let status = match result {
        Ok(answer) => Some(answer.status),
        Err(failure) => failure.status,
    };
    if let Some(status) = status {
        attributes.push(("http.response.status_code", SpanValue::Int(status.as_u16().into())));
    }
    attributes.extend(Span::event_attributes(event));
    Span {
        trace_id: trace.traceparent.trace_id(),
        span_id,
        parent_span_id: trace.traceparent.parent_id(),
        tracestate: trace.tracestate.clone(),
        flags: trace.traceparent.with_parent_id(span_id).flags(),
        name: if attempt.dead_letter { "dead-letter" } else { "deliver" },
        kind: SpanKind::Client,
        start,
        end: SystemTime::now(),
        attributes,
        error: result.as_ref().err().map(ToString::to_string),
    }
}

/// The event's trace id as a log field (`trace_id = sender::trace_id(event)`): recorded only
/// when the event carries a valid trace context, so a failure in the logs can be found in the
/// trace and back.
pub fn trace_id(event: &Event) -> Option<tracing::field::DisplayValue<TraceId>> {
    TraceContext::from_event(event).map(|trace| tracing::field::display(trace.traceparent.trace_id()))
}

/// A successful (2xx) answer.
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: http::StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, up to the reply size limit.
    pub body: Bytes,
    /// Whether the body was longer than the reply limit.
    pub truncated: bool,
}

fn encode(format: Format, encoding: HeaderEncoding, event: &Event) -> (HeaderMap, Bytes) {
    match format {
        Format::Binary => switchyard_event::http::encode_binary(event, encoding),
        Format::Json => {
            let (content_type, body) = switchyard_event::http::encode_structured(event);
            let mut headers = HeaderMap::new();
            headers.insert(http::header::CONTENT_TYPE, content_type);
            (headers, body)
        }
    }
}

fn transport_failure(error: reqwest::Error) -> Failure {
    let error = if error.is_timeout() { Failure::TIMED_OUT.to_owned() } else { error_chain(&error) };
    Failure { status: None, error: Some(error), retry_after: None, body_prefix: Bytes::new() }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use switchyard_event::{AttrValue, Data, DataForm, Event};
    use tokio::time::Instant;

    use super::*;
    use crate::testing::{client, event, Reply, Subscriber};

    fn target(url: Url, format: Format) -> Target {
        Target {
            url,
            format,
            header_encoding: None,
            namespace: "team-a".to_owned(),
            timeout: Duration::from_secs(3600),
        }
    }

    const ATTEMPT: Attempt<'static> = Attempt { trigger: "ns/t", number: 1, dead_letter: false };

    /// An event with JSON data and typed extensions, which only structured mode keeps typed.
    fn json_event() -> Event {
        let string = |s: &str| AttrValue::String(s.to_owned());
        let attributes = vec![
            ("specversion".to_owned(), string("1.0")),
            ("id".to_owned(), string("e-1")),
            ("source".to_owned(), string("/s")),
            ("type".to_owned(), string("t")),
            ("datacontenttype".to_owned(), string("application/json")),
            ("subject".to_owned(), string("héllo wörld")),
            ("count".to_owned(), AttrValue::Integer(3)),
        ];
        let data = Data { form: DataForm::Json, bytes: br#"{"a":[1,2]}"#.as_slice().into() };
        Event::new(attributes, Some(data)).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn binary_mode_sends_attributes_as_ce_headers_and_data_as_the_body() {
        let subscriber = Subscriber::accepting().await;
        let sent = json_event();
        let answer = client().send(&target(subscriber.url("/in"), Format::Binary), &sent, ATTEMPT).await.unwrap();
        assert_eq!(answer.status, http::StatusCode::OK);
        let received = subscriber.at("/in");
        let request = &received[0];
        assert_eq!(request.method, http::Method::POST);
        assert_eq!(request.header("ce-id"), Some("e-1"));
        assert_eq!(request.header("ce-specversion"), Some("1.0"));
        assert_eq!(request.header("ce-count"), Some("3"));
        // By default UTF-8 goes raw, as Knative's broker writes it.
        assert_eq!(request.header("ce-subject"), Some("héllo wörld"));
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(request.header("ce-datacontenttype"), None);
        assert_eq!(&request.body[..], br#"{"a":[1,2]}"#);
        // Knative's data-plane contract.
        assert_eq!(request.header("prefer"), Some("reply"));
        assert_eq!(request.header("kn-namespace"), Some("team-a"));
        assert_eq!(request.event.as_ref().map(Event::id), Some("e-1"));

        // The HTTP binding's percent-encoding (§3.1.3.2), chosen by the target or the client.
        let percent =
            Target { header_encoding: Some(HeaderEncoding::Percent), ..target(subscriber.url("/p"), Format::Binary) };
        client().send(&percent, &sent, ATTEMPT).await.unwrap();
        let by_client = client().with_header_encoding(HeaderEncoding::Percent);
        by_client.send(&target(subscriber.url("/p"), Format::Binary), &sent, ATTEMPT).await.unwrap();
        for request in subscriber.at("/p") {
            assert_eq!(request.header("ce-subject"), Some("h%C3%A9llo%20w%C3%B6rld"));
            assert_eq!(request.event.as_ref().map(|e| e.get_str("subject")), Some(Some("héllo wörld")));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn structured_mode_sends_the_whole_event_as_cloudevents_json() {
        let subscriber = Subscriber::accepting().await;
        let sent = json_event();
        client().send(&target(subscriber.url("/in"), Format::Json), &sent, ATTEMPT).await.unwrap();
        let request = &subscriber.at("/in")[0];
        assert_eq!(request.header("content-type"), Some("application/cloudevents+json; charset=utf-8"));
        assert!(!request.headers.keys().any(|name| name.as_str().starts_with("ce-")), "{:?}", request.headers);
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["id"], "e-1");
        assert_eq!(body["count"], 3, "typed in JSON");
        assert_eq!(body["data"], serde_json::json!({"a": [1, 2]}));
        assert_eq!(request.event.as_ref(), Some(&sent), "decodes to the very event");
        assert_eq!((request.header("prefer"), request.header("kn-namespace")), (Some("reply"), Some("team-a")));
    }

    #[tokio::test(start_paused = true)]
    async fn redirects_are_answers_and_are_not_followed() {
        let subscriber = Subscriber::start(|r| match r.path.as_str() {
            "/moved" => Reply::status(307).header("location", "/elsewhere"),
            _ => Reply::ok(),
        })
        .await;
        let failure =
            client().send(&target(subscriber.url("/moved"), Format::Binary), &event("e"), ATTEMPT).await.unwrap_err();
        assert_eq!(failure.status, Some(http::StatusCode::TEMPORARY_REDIRECT));
        assert!(!failure.is_retryable());
        assert!(subscriber.at("/elsewhere").is_empty(), "the redirect was followed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_reply_body_over_the_limit_is_cut_and_marked_truncated() {
        let subscriber =
            Subscriber::start(|r| Reply::ok().body(vec![b'x'; r.header("ce-id").unwrap().parse().unwrap()])).await;
        let client = DeliveryClient::new(100).unwrap();
        let to = target(subscriber.url("/"), Format::Binary);
        let exact = client.send(&to, &event("100"), ATTEMPT).await.unwrap();
        assert_eq!((exact.body.len(), exact.truncated), (100, false));
        let over = client.send(&to, &event("101"), ATTEMPT).await.unwrap();
        assert_eq!((over.body.len(), over.truncated), (100, true));
        let far_over = client.send(&to, &event("100000"), ATTEMPT).await.unwrap();
        assert_eq!((far_over.body.len(), far_over.truncated), (100, true));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_answer_keeps_its_first_kilobyte_and_its_retry_after() {
        let body: Vec<u8> = (0..5000u32).map(|i| (i % 256) as u8).collect();
        let answer = body.clone();
        let subscriber =
            Subscriber::start(move |_| Reply::status(503).header("retry-after", "7").body(answer.clone())).await;
        let failure =
            client().send(&target(subscriber.url("/"), Format::Binary), &event("e"), ATTEMPT).await.unwrap_err();
        assert_eq!(failure.status, Some(http::StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(failure.retry_after, Some(HeaderValue::from_static("7")));
        assert_eq!(&failure.body_prefix[..], &body[..ERROR_BODY_PREFIX]);
        assert_eq!(failure.error, None);
        assert_eq!(failure.to_string(), "subscriber answered 503 Service Unavailable");
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_without_an_answer_in_time_fails_as_timed_out() {
        let subscriber = Subscriber::start(|_| Reply::ok().after(Duration::from_secs(600))).await;
        let to = Target { timeout: Duration::from_secs(2), ..target(subscriber.url("/"), Format::Binary) };
        let started = Instant::now();
        let failure = client().send(&to, &event("e"), ATTEMPT).await.unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert!(failure.is_timeout(), "{failure:?}");
        assert_eq!(failure.error.as_deref(), Some(Failure::TIMED_OUT));
        assert!(failure.is_retryable());
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_connection_is_a_transport_failure_not_a_timeout() {
        // A port nobody listens on (bound, then freed).
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let to = target(format!("http://{closed}/").parse().unwrap(), Format::Binary);
        let failure = client().send(&to, &event("e"), ATTEMPT).await.unwrap_err();
        assert_eq!(failure.status, None);
        assert!(!failure.is_timeout() && failure.is_retryable(), "{failure:?}");
        assert!(failure.error.as_deref().is_some_and(|e| !e.is_empty()), "{failure:?}");
    }
}
