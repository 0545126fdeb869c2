//! The HTTP delivery client: one attempt is one HTTP POST of an event to a subscriber (or a
//! dead-letter sink, or a source's sink URI).
//!
//! Every attempt is a span of the event's trace when the event carries one (its Distributed
//! Tracing extension): the request has a W3C `traceparent` header with the event's trace id and
//! a fresh span id, and the finished span goes to the [`SpanSink`], if there is one.
//!
//! Every attempt goes through the outbound guard ([`crate::outbound`]): names are resolved by
//! its resolver, literal addresses are checked here, and in strict mode an answer from an
//! internal address gives back its status only.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use switchyard_event::http::HeaderEncoding;
use switchyard_event::tracecontext::{Span, SpanId, SpanKind, SpanSink, SpanValue, TraceContext, TraceId};
use switchyard_event::Event;
use url::Url;

use crate::ca_certs::{CaCerts, CaClients};
use crate::identity::{Identity, Issuer};
use crate::outbound::{self, OutboundPolicy, Refused};
use crate::plan::Format;
use crate::retry::Failure;
use crate::signing::Signer;
use crate::this_node;

/// How much of a failed answer's body is kept (Knative's `knativeerrordata` keeps 1024).
const ERROR_BODY_PREFIX: usize = 1024;
/// Bytes of an answer read so the connection can be reused; more is dropped.
const MAX_DRAINED_BODY: usize = 4 << 20;
/// A trigger's refused attempts are logged at most once in this long.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Triggers remembered for [`REFUSAL_LOG_INTERVAL`] before the stale ones are forgotten.
const REFUSAL_LOG_TRIGGERS: usize = 4096;

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
    /// Signs every attempt (Standard Webhooks), if the trigger asks for it.
    pub signer: Option<Arc<Signer>>,
    /// Sends `Authorization: Bearer <token>` for this identity, if the destination has an
    /// `audience` ([`crate::identity`]); it replaces the basic credentials of a URL's userinfo.
    pub identity: Option<Identity>,
    /// CA certificates its TLS connections trust besides the built-in roots (`CACerts`).
    pub ca_certs: Option<CaCerts>,
    /// Who sends: the subject a delivery to this node itself is admitted as
    /// ([`crate::this_node`]).
    pub sender: Arc<str>,
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
    guard: Arc<Guard>,
    spans: Option<Arc<dyn SpanSink>>,
    /// The largest reply event read from an answer: the brokers' event size limit, so a larger
    /// reply is refused as any larger event is.
    max_reply_bytes: usize,
    /// How binary mode writes string attributes where the target does not say.
    header_encoding: HeaderEncoding,
    /// Signs the tokens of targets with an identity.
    issuer: Option<Arc<Issuer>>,
}

impl std::fmt::Debug for DeliveryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryClient").field("client", &self.client).field("spans", &self.spans.is_some()).finish()
    }
}

/// The outbound policy as the client applies it: a client per namespace that has an
/// allow-list of its own (its resolver judges for that namespace), and when each trigger's
/// refusals were last logged.
struct Guard {
    policy: Arc<OutboundPolicy>,
    by_namespace: HashMap<String, reqwest::Client>,
    logged: Mutex<HashMap<String, Instant>>,
    /// The clients of targets with `CACerts`, built at their first attempt.
    ca_clients: CaClients,
}

impl DeliveryClient {
    /// A client with keep-alive pooling, HTTP/2 where the subscriber offers it (ALPN), TLS
    /// verified, and no redirects followed (a redirect is an answer, not a delivery). Replies
    /// are read up to `max_reply_bytes`. Guarded by the process's outbound policy
    /// ([`outbound::installed`]).
    pub fn new(max_reply_bytes: usize) -> Result<DeliveryClient, reqwest::Error> {
        DeliveryClient::guarded(max_reply_bytes, outbound::installed())
    }

    /// [`DeliveryClient::new`] guarded by `policy`.
    pub fn guarded(max_reply_bytes: usize, policy: Arc<OutboundPolicy>) -> Result<DeliveryClient, reqwest::Error> {
        let client = build_client(&policy, None, None)?;
        let by_namespace = policy
            .namespaces()
            .keys()
            .map(|namespace| Ok((namespace.clone(), build_client(&policy, Some(namespace), None)?)))
            .collect::<Result<_, reqwest::Error>>()?;
        let guard =
            Arc::new(Guard { policy, by_namespace, logged: Mutex::default(), ca_clients: CaClients::default() });
        Ok(DeliveryClient {
            client,
            guard,
            spans: None,
            max_reply_bytes,
            header_encoding: HeaderEncoding::default(),
            issuer: None,
        })
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

    /// Signs the tokens of targets with an identity with `issuer`; without one, an attempt to
    /// such a target fails.
    pub fn with_issuer(mut self, issuer: Arc<Issuer>) -> DeliveryClient {
        self.issuer = Some(issuer);
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
            return self.post(target, event, HeaderMap::new(), attempt).await;
        };
        let span_id = SpanId::random();
        let start = SystemTime::now();
        let result = self.post(target, event, trace.child_headers(span_id), attempt).await;
        if let Some(spans) = &self.spans {
            spans.record(attempt_span(&trace, span_id, start, target, event, attempt, &result));
        }
        result
    }

    async fn post(
        &self,
        target: &Target,
        event: &Event,
        trace_headers: HeaderMap,
        attempt: Attempt<'_>,
    ) -> Result<Answer, Failure> {
        if let Some(delivered) = to_this_node(target, event).await {
            return delivered;
        }
        self.check_literal(target).map_err(|refused| self.refused(target, attempt, &refused))?;
        let encoding = target.header_encoding.unwrap_or(self.header_encoding);
        let (mut headers, body) = encode(target.format, encoding, event);
        headers.extend(trace_headers);
        if let Some(signer) = &target.signer {
            headers.extend(signer.headers(event, &body, SystemTime::now()));
        }
        if let Some(identity) = &target.identity {
            // Inserted over whatever the URL's userinfo would send: reqwest turns userinfo into
            // a basic `Authorization` header that `headers` below replaces.
            headers.insert(http::header::AUTHORIZATION, self.bearer(identity)?);
        }
        headers.insert("prefer", HeaderValue::from_static("reply"));
        if let Ok(namespace) = HeaderValue::from_str(&target.namespace) {
            headers.insert("kn-namespace", namespace);
        }
        let ca_client;
        let client = match &target.ca_certs {
            None => self.guard.by_namespace.get(&target.namespace).unwrap_or(&self.client),
            Some(ca_certs) => {
                ca_client = self.ca_client(ca_certs, &target.namespace).map_err(transport_failure)?;
                &ca_client
            }
        };
        let request = client.post(target.url.clone()).headers(headers).body(body).timeout(target.timeout);
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(error) => match refusal(&error) {
                Some(refused) => return Err(self.refused(target, attempt, refused)),
                None => return Err(transport_failure(error)),
            },
        };
        let status = response.status();
        // A 2xx body may be a reply event (kept whole, up to the limit); a failure's body only
        // matters for its first bytes (`knativeerrordata`), and is not given back at all when
        // it could tell the declaring user what an internal service says.
        let keep = match status.is_success() {
            true => self.max_reply_bytes,
            false if self.hides_error_body(response.remote_addr()) => 0,
            false => ERROR_BODY_PREFIX,
        };
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
            Ok(Answer { status, headers: std::mem::take(response.headers_mut()), body: Bytes::from(kept), truncated })
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

impl DeliveryClient {
    /// A URL whose host is a literal address never reaches the resolver (hyper connects to it
    /// directly), so it is judged here. This node's own listener is exempt.
    fn check_literal(&self, target: &Target) -> Result<(), Refused> {
        let Some(ip) = outbound::literal_ip(&target.url) else { return Ok(()) };
        let port = target.url.port_or_known_default().unwrap_or(0);
        if outbound::is_this_node(ip, port) {
            return Ok(());
        }
        self.guard.policy.check(ip, Some(&target.namespace)).map_err(|refusal| Refused {
            host: ip.to_string(),
            resolved: false,
            addresses: vec![(ip, refusal)],
        })
    }

    /// In strict mode, whether an error answer from `remote` must not give its body back: it
    /// came from an internal address (allow-listed, or no connection would have been made), or
    /// from an address that is not known.
    fn hides_error_body(&self, remote: Option<SocketAddr>) -> bool {
        self.guard.policy.refuses_private() && remote.is_none_or(|remote| outbound::classify(remote.ip()).is_some())
    }

    /// A refused attempt: counted, logged at most once a minute per trigger (or source), and
    /// failed as a transport error, so it is retried and dead-lettered like a refused
    /// connection.
    fn refused(&self, target: &Target, attempt: Attempt<'_>, refused: &Refused) -> Failure {
        metrics::counter!(outbound::OUTBOUND_REFUSED, "reason" => refused.reason()).increment(1);
        if self.log_now(attempt.trigger) {
            let mut url = target.url.clone();
            let _ = url.set_username("");
            let _ = url.set_password(None);
            tracing::warn!(
                trigger = attempt.trigger,
                %url,
                reason = refused.reason(),
                "{refused}; the attempt failed (logged at most once a minute per trigger)"
            );
        }
        Failure { status: None, error: Some(refused.to_string()), retry_after: None, body_prefix: Bytes::new() }
    }

    /// The bearer token for `identity`; a failed attempt when there is no key to sign with.
    fn bearer(&self, identity: &Identity) -> Result<HeaderValue, Failure> {
        let failed =
            |error: String| Failure { status: None, error: Some(error), retry_after: None, body_prefix: Bytes::new() };
        let issuer = self.issuer.as_ref().ok_or_else(|| {
            failed(format!("no OIDC signing key to send a token for audience '{}'", identity.audience))
        })?;
        issuer.bearer(identity, SystemTime::now()).map_err(|error| failed(error.to_string()))
    }

    /// The client of a target with `CACerts`: one per bundle (and per namespace with an
    /// allow-list of its own), through the same outbound guard as the others.
    fn ca_client(&self, ca_certs: &CaCerts, namespace: &str) -> Result<reqwest::Client, reqwest::Error> {
        let own = self.guard.by_namespace.contains_key(namespace).then_some(namespace);
        self.guard.ca_clients.get(ca_certs, own, || build_client(&self.guard.policy, own, Some(ca_certs)))
    }

    fn log_now(&self, trigger: &str) -> bool {
        let now = Instant::now();
        let mut logged = self.guard.logged.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if logged.get(trigger).is_some_and(|last| now.duration_since(*last) < REFUSAL_LOG_INTERVAL) {
            return false;
        }
        if logged.len() >= REFUSAL_LOG_TRIGGERS {
            logged.retain(|_, last| now.duration_since(*last) < REFUSAL_LOG_INTERVAL);
        }
        logged.insert(trigger.to_owned(), now);
        true
    }
}

/// The client every attempt of `namespace` (or of a namespace without an allow-list of its
/// own, for `None`) goes through; with `ca_certs`, the one of the targets with that bundle.
fn build_client(
    policy: &Arc<OutboundPolicy>,
    namespace: Option<&str>,
    ca_certs: Option<&CaCerts>,
) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(60))
        // Enough idle keep-alive connections per subscriber for busy triggers, without
        // keeping one for every attempt ever in flight across thousands of triggers.
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10));
    for certificate in ca_certs.map(CaCerts::certificates).unwrap_or_default() {
        builder = builder.add_root_certificate(reqwest::Certificate::from_der(certificate)?);
    }
    outbound::guard(builder, policy.clone(), namespace.map(str::to_owned)).build()
}

/// A delivery to an address this node serves in-process ([`this_node`]); `None` for any
/// other. Answered as the HTTP route would: 202, or the route's status with its message.
async fn to_this_node(target: &Target, event: &Event) -> Option<Result<Answer, Failure>> {
    let ip = outbound::literal_ip(&target.url)?;
    if !outbound::is_this_node(ip, target.url.port_or_known_default()?) {
        return None;
    }
    let node = this_node::installed()?;
    let delivered = node.deliver(target.url.path(), &target.namespace, &target.sender, event).await?;
    Some(match delivered {
        Ok(()) => Ok(Answer {
            status: http::StatusCode::ACCEPTED,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            truncated: false,
        }),
        Err(refusal) => Err(Failure {
            status: Some(refusal.status),
            error: None,
            retry_after: None,
            body_prefix: Bytes::from(refusal.message),
        }),
    })
}

/// The guard's refusal, when that is why the request could not be sent.
fn refusal(error: &reqwest::Error) -> Option<&Refused> {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<Refused>() {
            return Some(refused);
        }
        source = cause.source();
    }
    None
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
    // Without the URL, which may carry credentials; the dead letter says where it was going.
    let error = if error.is_timeout() { Failure::TIMED_OUT.to_owned() } else { error_chain(&error.without_url()) };
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
            signer: None,
            identity: None,
            ca_certs: None,
            sender: Arc::from("system:switchyard:trigger:team-a:t"),
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

    fn policy(policy: OutboundPolicy) -> DeliveryClient {
        DeliveryClient::guarded(1 << 20, Arc::new(policy)).unwrap()
    }

    fn cidr(text: &str) -> ipnet::IpNet {
        outbound::parse_cidr(text).unwrap()
    }

    /// The subscriber's URL by the name `localhost`, which the system resolver resolves.
    fn by_name(subscriber: &Subscriber, path: &str) -> Url {
        let mut url = subscriber.url(path);
        url.set_host(Some("localhost")).unwrap();
        url
    }

    // Real time: the guard's resolver asks the system resolver on a blocking thread.
    #[tokio::test]
    async fn a_refused_literal_address_fails_the_attempt_without_connecting() {
        let subscriber = Subscriber::accepting().await;
        let refusing = policy(OutboundPolicy::default().refuse(cidr("127.0.0.0/8")));
        let failure =
            refusing.send(&target(subscriber.url("/"), Format::Binary), &event("e"), ATTEMPT).await.unwrap_err();
        assert_eq!(
            failure.error.as_deref(),
            Some("refused by the outbound guard: '127.0.0.1' is in a range [outbound] refuse lists")
        );
        assert!(failure.is_retryable() && failure.status.is_none(), "{failure:?}");
        assert!(subscriber.at("/").is_empty(), "the refused address was reached");
    }

    #[tokio::test]
    async fn a_name_resolving_only_to_refused_addresses_is_refused_at_connect_time() {
        let subscriber = Subscriber::accepting().await;
        let strict = policy(OutboundPolicy::new(true));
        let failure = strict.send(&target(by_name(&subscriber, "/"), Format::Binary), &event("e"), ATTEMPT).await;
        let error = failure.unwrap_err().error.unwrap();
        assert!(
            error.starts_with("refused by the outbound guard: 'localhost' resolves only to 127.0.0.1 (loopback)"),
            "{error}"
        );
        assert!(subscriber.at("/").is_empty(), "the refused address was reached");
        // The default policy delivers to the same name.
        let lenient = policy(OutboundPolicy::default());
        lenient.send(&target(by_name(&subscriber, "/"), Format::Binary), &event("e"), ATTEMPT).await.unwrap();
        assert_eq!(subscriber.at("/").len(), 1);
    }

    #[tokio::test]
    async fn a_namespace_allow_list_admits_that_namespace_only() {
        let subscriber = Subscriber::accepting().await;
        let client = policy(OutboundPolicy::new(true).allow_in("team-a", cidr("127.0.0.1/32")));
        for url in [subscriber.url("/"), by_name(&subscriber, "/")] {
            client.send(&target(url.clone(), Format::Binary), &event("e"), ATTEMPT).await.expect("team-a delivers");
            let other = Target { namespace: "team-b".to_owned(), ..target(url, Format::Binary) };
            let failure = client.send(&other, &event("e"), ATTEMPT).await.unwrap_err();
            assert!(failure.error.as_deref().is_some_and(|e| e.contains("outbound guard")), "{failure:?}");
        }
        assert_eq!(subscriber.at("/").len(), 2);
    }

    #[tokio::test]
    async fn in_strict_mode_an_internal_answer_gives_its_status_only() {
        let subscriber = Subscriber::start(|_| Reply::status(403).body(b"internal secret".to_vec())).await;
        let strict = policy(OutboundPolicy::new(true).allow(cidr("127.0.0.1")));
        let failure =
            strict.send(&target(subscriber.url("/"), Format::Binary), &event("e"), ATTEMPT).await.unwrap_err();
        assert_eq!(failure.status, Some(http::StatusCode::FORBIDDEN));
        assert!(failure.body_prefix.is_empty(), "{failure:?}");
        assert_eq!(failure.to_string(), "subscriber answered 403 Forbidden");
        let lenient = policy(OutboundPolicy::default());
        let failure =
            lenient.send(&target(subscriber.url("/"), Format::Binary), &event("e"), ATTEMPT).await.unwrap_err();
        assert_eq!(&failure.body_prefix[..], b"internal secret");
    }

    #[tokio::test]
    async fn this_nodes_own_listener_is_not_refused() {
        // Stands for the node's listener: what a trigger's KafkaSink address points at.
        let node = Subscriber::accepting().await;
        let address: SocketAddr = format!("127.0.0.1:{}", node.url("/").port().unwrap()).parse().unwrap();
        outbound::serving_at(address);
        let strict = policy(OutboundPolicy::new(true));
        strict.send(&target(node.url("/kafkasinks/ns/out"), Format::Binary), &event("e"), ATTEMPT).await.unwrap();
        assert_eq!(node.at("/kafkasinks/ns/out").len(), 1);
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
