//! Ingest: `POST /{namespace}/{broker}` in the three content modes of the CloudEvents HTTP
//! binding, and the webhook abuse-protection handshake. The request is decoded here; what
//! enters the broker is the engine's admission's call.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use switchyard_dispatcher::Filter;
use switchyard_event::http::ContentMode;
use switchyard_event::limits::LimitExceeded;
use switchyard_event::tracecontext::TraceContext;
use switchyard_event::{Event, EventError};
use switchyard_log::{Admit, Origin};

use crate::auth::{Principal, Sender};
use crate::openapi::{BinaryModeHeaders, CloudEvent, EventData, HandshakeHeaders, IngestPath};
use crate::problem::{ApiError, BadRequest, Internal, NotFound, TooLarge, Unavailable, UnsupportedMediaType};
use crate::routes::{read_within, AppState};

/// Send events to a broker.
///
/// The three content modes of the CloudEvents HTTP binding: binary (`ce-*` headers, the body is
/// the data), structured (`application/cloudevents+json`) and batch
/// (`application/cloudevents-batch+json`, all or nothing). Every event gets a
/// `knativearrivaltime` extension. Any method other than POST and OPTIONS is answered 405
/// (problem+json) with `Allow: POST, OPTIONS`.
#[utoipa::path(
    post,
    path = "/{namespace}/{broker}",
    tag = "ingest",
    params(IngestPath, BinaryModeHeaders),
    request_body(
        description = "Binary mode: the event data in any media type other than the two below, with the attributes in `ce-*` headers. Structured mode: one event. Batch mode: an array of events.",
        content(
            (CloudEvent = "application/cloudevents+json"),
            (Vec<CloudEvent> = "application/cloudevents-batch+json"),
            (EventData = "*/*"),
        ),
    ),
    responses(
        (status = 202, description = "The event (or the whole batch) is durable in the log."),
        BadRequest, NotFound, TooLarge, UnsupportedMediaType, Unavailable, Internal,
    ),
)]
pub(crate) async fn ingest_post(
    state: State<Arc<AppState>>,
    path: Path<(String, String)>,
    sender: Option<Extension<Sender>>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    ingest_endpoint(state, path, sender, method, headers, body).await
}

/// CloudEvents webhook abuse-protection handshake.
///
/// Any origin may deliver, at any rate (CloudEvents HTTP Webhook §4.1). Answered whether or not
/// the broker exists.
#[utoipa::path(
    options,
    path = "/{namespace}/{broker}",
    tag = "ingest",
    params(IngestPath, HandshakeHeaders),
    responses(
        (status = 200, description = "Delivery is allowed.", headers(
            ("WebHook-Allowed-Origin" = String, description = "The requesting origin, or `*`."),
            ("WebHook-Allowed-Rate" = String, description = "`*`: no rate limit."),
            ("Allow" = String, description = "`POST, OPTIONS`."),
        )),
    ),
)]
pub(crate) async fn ingest_options(
    state: State<Arc<AppState>>,
    path: Path<(String, String)>,
    sender: Option<Extension<Sender>>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    ingest_endpoint(state, path, sender, method, headers, body).await
}

/// Every method on the ingest path: POST ingests, OPTIONS shakes hands, the rest are 405.
pub(crate) async fn ingest_endpoint(
    State(state): State<Arc<AppState>>,
    Path((namespace, broker)): Path<(String, String)>,
    sender: Option<Extension<Sender>>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let sender = sender.and_then(|Extension(Sender(principal))| principal);
    let answer = match method {
        Method::POST => ingest(&state, &namespace, &broker, sender.as_ref(), &headers, body).await,
        Method::OPTIONS => return Ok(webhook_handshake(&headers)),
        _ => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} is not allowed: send events with POST"),
        )
        .with_header(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"))),
    };
    let status = answer.as_ref().map_or_else(ApiError::status, Response::status);
    crate::metrics::ingest_answered(status, started.elapsed());
    answer
}

/// Ingest into a broker of namespace `v1`, whose path `/v1/{broker}` the sources' list route
/// shares.
pub(crate) async fn v1_ingest(
    state: State<Arc<AppState>>,
    Path(broker): Path<String>,
    sender: Option<Extension<Sender>>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    ingest_endpoint(state, Path(("v1".to_owned(), broker)), sender, method, headers, body).await
}

async fn ingest(
    state: &AppState,
    namespace: &str,
    broker: &str,
    sender: Option<&Principal>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let received = SystemTime::now();
    let admission = state.engine.admission();
    let mode = switchyard_event::http::content_mode(headers.get(header::CONTENT_TYPE));
    // W3C Trace Context: an invalid `traceparent` header is ignored, never an error.
    let trace = TraceContext::from_headers(headers);
    let mut origin =
        Origin::Ingest { mode: *mode.as_ref().unwrap_or(&ContentMode::Binary), body_bytes: 0, trace, received };
    // Refused before the body is read: a stopping node, an unknown broker.
    admission.precheck(namespace, broker, &origin)?;
    let policy_filter = admitting_policies(state, namespace, broker, sender)?;
    let mode = mode.map_err(event_error)?;
    let limits = admission.limits();
    let batch_too_large = || {
        ApiError::too_large(format!(
            "the batch body exceeds the limit of {} bytes (max_batch_bytes)",
            state.max_batch_bytes
        ))
    };
    // A single event's body is held to the event limit (a batch's to the batch limit) by its
    // declared length before anything is read, and as it is read, with the same words admission
    // would use; a batch's events are judged one by one once decoded. Only the length limit
    // fails here: a body that stalled or broke off is answered by the HTTP server (408).
    let body = match mode {
        ContentMode::Batched => read_within(headers, body, state.max_batch_bytes, batch_too_large).await?,
        ContentMode::Binary | ContentMode::Structured => {
            let too_large = || {
                let limit = LimitExceeded::EventTooLarge { index: None, limit: limits.max_event_bytes };
                ApiError::from(admission.refuse(&origin, limit.into()))
            };
            read_within(headers, body, limits.max_event_bytes, too_large).await?
        }
    };
    if let Origin::Ingest { body_bytes, .. } = &mut origin {
        *body_bytes = body.len();
    }
    let events = match switchyard_event::http::decode_request_at_most(headers, body, limits.max_batch_events) {
        Ok(events) => events,
        // Counted as admission counts it, in its words.
        Err(EventError::TooManyEvents { count, limit }) => {
            let refusal = LimitExceeded::TooManyEvents { count, limit }.into();
            return Err(admission.refuse(&origin, refusal).into());
        }
        Err(error) => return Err(event_error(error)),
    };
    pass_policy_filter(policy_filter.as_ref(), &events, namespace, broker)?;
    admission.admit(namespace, broker, events, origin).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// An event that a trigger or source of this node delivers to a broker of its own namespace
/// ([`super::this_node`]), admitted as a producer's request from `sender` would be.
pub(crate) async fn admit_from_this_node(
    state: &AppState,
    namespace: &str,
    broker: &str,
    sender: &Principal,
    event: &Event,
) -> Result<(), ApiError> {
    let admission = state.engine.admission();
    let body_bytes = event.data().map_or(0, |data| data.bytes.len());
    let origin = Origin::Ingest { mode: ContentMode::Binary, body_bytes, trace: None, received: SystemTime::now() };
    admission.precheck(namespace, broker, &origin)?;
    let events = vec![event.clone()];
    pass_policy_filter(
        admitting_policies(state, namespace, broker, Some(sender))?.as_ref(),
        &events,
        namespace,
        broker,
    )?;
    admission.admit(namespace, broker, events, origin).await?;
    Ok(())
}

/// 403 unless every event passes the filters of the EventPolicies that admit its sender.
fn pass_policy_filter(
    filter: Option<&Filter>,
    events: &[Event],
    namespace: &str,
    broker: &str,
) -> Result<(), ApiError> {
    let Some(refused) = filter.and_then(|filter| events.iter().find(|event| !filter.matches(event))) else {
        return Ok(());
    };
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "event '{}' does not pass the filters of the EventPolicies that admit this sender to broker '{namespace}/{broker}'",
            refused.id()
        ),
    ))
}

/// Knative's EventPolicy semantics: a broker that no policy applies to admits every sender
/// authentication let in (`Ok(None)`); otherwise the sender's subject must match a `from` of
/// one of them (403 else, a request without identity included), and its events must pass the
/// filters of at least one of those: the filter returned.
fn admitting_policies(
    state: &AppState,
    namespace: &str,
    broker: &str,
    sender: Option<&Principal>,
) -> Result<Option<Filter>, ApiError> {
    let policies = state.engine.controller().event_policies(namespace, broker);
    if policies.is_empty() {
        return Ok(None);
    }
    let names = || policies.iter().map(|p| p.names().1).collect::<Vec<_>>().join(", ");
    let Some(sender) = sender else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "broker '{namespace}/{broker}' admits only the senders its EventPolicies name ({}), and this request has no identity: send a token ([auth])",
                names()
            ),
        ));
    };
    let admitting: Vec<_> = policies.iter().filter(|policy| policy.spec.admits(&sender.name)).collect();
    if admitting.is_empty() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "'{}' is not a sender the EventPolicies of broker '{namespace}/{broker}' admit ({})",
                sender.name,
                names()
            ),
        ));
    }
    // Checked when declared, so they compile.
    let filters = admitting
        .iter()
        .map(|policy| Filter::compile(None, &policy.spec.filters, "spec.").map_err(ApiError::internal))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Filter::AnyOf(filters)))
}

pub(crate) fn event_error(error: EventError) -> ApiError {
    match error {
        EventError::UnsupportedFormat(_) => ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, error.to_string()),
        _ => ApiError::bad_request(error.to_string()),
    }
}

/// CloudEvents HTTP Webhook §4.1: the abuse-protection handshake. Any origin may deliver, at
/// any rate.
fn webhook_handshake(headers: &HeaderMap) -> Response {
    let origin = headers.get("webhook-request-origin").cloned().unwrap_or(HeaderValue::from_static("*"));
    let mut response = StatusCode::OK.into_response();
    let out = response.headers_mut();
    out.insert("webhook-allowed-origin", origin);
    out.insert("webhook-allowed-rate", HeaderValue::from_static("*"));
    out.insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
    response
}
