//! The HTTP surface: broker ingest (`/{namespace}/{broker}`), the REST API (`/v1/…`) and health.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Serialize;
use switchyard_event::tracecontext::{self, TraceContext};
use switchyard_event::{Event, EventError};
use switchyard_log::{EventLog, LogError};
use switchyard_meta::resources::{parse_broker, parse_trigger, validate_dns_label};
use switchyard_meta::store::Upsert;
use switchyard_meta::ValidationError;

use utoipa::OpenApi;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::controller::{ControlError, Controller};
use crate::openapi::schemas::{
    Broker, BrokerList, BrokerRequest, DeadLetter, DeadLetterPage, Purged, Trigger, TriggerList, TriggerRequest,
};
use crate::openapi::{
    BinaryModeHeaders, CloudEvent, DeadLetterPath, EventData, HandshakeHeaders, IngestPath, NamespacePath, ResourcePath,
};
use crate::problem::{ApiError, Problem};

/// Limits on what ingest accepts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest event (a binary or structured request body, or one event of a batch).
    pub max_event_bytes: usize,
    /// The largest batch request body.
    pub max_batch_bytes: usize,
}

/// Largest REST request body.
const MAX_RESOURCE_BYTES: usize = 1 << 20;

/// What every handler shares.
pub struct AppState {
    /// Declarations and their application.
    pub controller: Arc<Controller>,
    /// The event log.
    pub log: Arc<dyn EventLog>,
    /// Ingest limits.
    pub limits: Limits,
    /// The URL clients reach this server at, for `status.address.url`.
    pub base_url: String,
    /// Set at SIGTERM: ingest refuses new events while deliveries drain.
    pub stopping: std::sync::atomic::AtomicBool,
    /// Where ingest spans go when OTLP export is configured.
    pub spans: Option<Arc<dyn switchyard_event::tracecontext::SpanSink>>,
}

/// The whole HTTP API: the routes of [`api`], and a problem+json 404 for any other path.
pub fn router(state: Arc<AppState>) -> Router {
    let (router, _) = api().split_for_parts();
    router
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|method: Method| async move {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, format!("method {method} is not allowed on this path"))
        })
        .with_state(state)
}

/// Every endpoint, each registered together with its OpenAPI operation (its `#[utoipa::path]`):
/// [`router`] serves these routes and `GET /openapi.json` ([`crate::openapi::document`])
/// describes them, both split from this one builder, so the two cannot differ. Add an endpoint
/// only as `.routes(routes!(handler))` with a `#[utoipa::path]` on the handler: a plain
/// `.route(…)` would serve it undocumented (the `openapi` tests refuse that).
pub fn api() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics_endpoint))
        .routes(routes!(crate::openapi::openapi_json))
        .routes(routes!(crate::filters::test_filter))
        .routes(routes!(crate::filters::evaluate_cesql))
        .routes(routes!(list_all_brokers))
        .routes(routes!(list_all_triggers))
        .routes(routes!(list_brokers))
        .routes(routes!(get_broker, put_broker, delete_broker))
        .routes(routes!(list_triggers))
        .routes(routes!(get_trigger, put_trigger, delete_trigger))
        .routes(routes!(list_dead_letters, purge_dead_letters))
        .routes(routes!(redrive_dead_letters))
        .routes(routes!(get_dead_letter, delete_dead_letter))
        // `/v1/{sources}` has the shape of an ingest path too: every method but GET is ingest
        // into namespace `v1`, as it was before sources had a list there.
        .routes(routes!(crate::sources::list_all_sources).map(|methods| methods.fallback(v1_ingest)))
        .routes(routes!(crate::sources::list_sources))
        .routes(routes!(crate::sources::get_source, crate::sources::put_source, crate::sources::delete_source))
        .routes(routes!(crate::sources::receive_webhook))
        // Any other method on the ingest path: 405 with `Allow: POST, OPTIONS`.
        .routes(routes!(ingest_post, ingest_options).map(|methods| methods.fallback(ingest_endpoint)))
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    summary = "Liveness",
    responses((status = 200, description = "The process is up.", body = String, content_type = "text/plain", example = "ok")),
)]
async fn healthz() -> &'static str {
    "ok"
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    summary = "Readiness",
    responses((status = 200, description = "Brokers and triggers are up and the API serves.", body = String, content_type = "text/plain", example = "ok")),
)]
async fn readyz() -> &'static str {
    "ok"
}

// ---- ingest ----

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
        (status = 400, description = "Invalid event or malformed body; the detail names the attribute.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such broker.", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "An event above the event limit (default 1 MiB), or a batch body above the batch limit (default 10 MiB).", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "A structured format other than JSON.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Storage cannot accept now, or the server is stopping; `Retry-After` says when to retry.", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error (the detail is in the server log).", body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn ingest_post(
    state: State<Arc<AppState>>,
    path: Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    ingest_endpoint(state, path, method, headers, body).await
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
async fn ingest_options(
    state: State<Arc<AppState>>,
    path: Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    ingest_endpoint(state, path, method, headers, body).await
}

async fn ingest_endpoint(
    State(state): State<Arc<AppState>>,
    Path((namespace, broker)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let answer = match method {
        Method::POST => ingest(&state, &namespace, &broker, &headers, body).await,
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
async fn v1_ingest(
    state: State<Arc<AppState>>,
    Path(broker): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    ingest_endpoint(state, Path(("v1".to_owned(), broker)), method, headers, body).await
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics",
    responses((status = 200, description = "Every metric in the Prometheus text exposition format.", body = String, content_type = "text/plain; version=0.0.4; charset=utf-8")),
)]
async fn metrics_endpoint(State(state): State<Arc<AppState>>) -> Response {
    let text = crate::metrics::render(&state.controller.backlogs().await);
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))], text)
        .into_response()
}

async fn ingest(
    state: &AppState,
    namespace: &str,
    broker: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = std::time::SystemTime::now();
    if state.stopping.load(std::sync::atomic::Ordering::Acquire) {
        return Err(ApiError::unavailable("the broker is shutting down; retry against another instance or later", 5));
    }
    let topic = state
        .controller
        .broker_topic(namespace, broker)
        .ok_or_else(|| ApiError::not_found(format!("broker '{namespace}/{broker}' does not exist")))?;
    let mode = switchyard_event::http::content_mode(headers.get(header::CONTENT_TYPE)).map_err(event_error)?;
    let is_batch = mode == switchyard_event::http::ContentMode::Batched;
    let limit = if is_batch { state.limits.max_batch_bytes } else { state.limits.max_event_bytes };
    let body = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("request body exceeds the limit of {limit} bytes"))
    })?;
    let body_bytes = body.len();
    let mut events = switchyard_event::http::decode_request(headers, body).map_err(event_error)?;
    if is_batch {
        if let Some((i, size)) =
            events.iter().map(approximate_size).enumerate().find(|(_, size)| *size > state.limits.max_event_bytes)
        {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "event {i} of the batch is {size} bytes, above the limit of {} bytes",
                    state.limits.max_event_bytes
                ),
            ));
        }
    }
    let arrival = switchyard_event::knative::now_rfc3339();
    // W3C Trace Context: an invalid `traceparent` header is ignored, never an error.
    let request_trace = TraceContext::from_headers(headers);
    for event in &mut events {
        switchyard_event::knative::stamp_ingress(event, &arrival);
        if let Some(context) = &request_trace {
            tracecontext::adopt_request_context(event, context);
        }
    }
    let append_started = std::time::Instant::now();
    let appended = state.log.append(&topic, &events).await;
    crate::metrics::appended(append_started.elapsed());
    if let Some(spans) = &state.spans {
        let error = appended.as_ref().err().map(ToString::to_string);
        let key = format!("{namespace}/{broker}");
        let ended = std::time::SystemTime::now();
        for span in tracecontext::ingest_spans(&key, &events, request_trace.as_ref(), started, ended, error.as_deref())
        {
            spans.record(span);
        }
    }
    match appended {
        Ok(()) => {
            crate::metrics::ingested(mode, events.len(), body_bytes);
            Ok(StatusCode::ACCEPTED.into_response())
        }
        Err(LogError::UnknownTopic(_)) => {
            Err(ApiError::not_found(format!("broker '{namespace}/{broker}' does not exist")))
        }
        Err(error @ (LogError::Unavailable(_) | LogError::Io(_) | LogError::Closed)) => {
            tracing::warn!(broker = %format!("{namespace}/{broker}"), %error, "ingest refused: storage cannot accept");
            Err(ApiError::unavailable("storage cannot accept events right now; retry later", 1))
        }
        Err(error) => Err(ApiError::internal(error)),
    }
}

fn event_error(error: EventError) -> ApiError {
    match error {
        EventError::UnsupportedFormat(_) => ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, error.to_string()),
        _ => ApiError::bad_request(error.to_string()),
    }
}

fn approximate_size(event: &Event) -> usize {
    let attributes: usize = event.attributes().iter().map(|(n, v)| n.len() + v.to_canonical_string().len()).sum();
    attributes + event.data().map_or(0, |d| d.bytes.len())
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

// ---- REST ----

#[derive(Serialize)]
pub(crate) struct List<T> {
    pub(crate) items: Vec<T>,
}

pub(crate) async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_RESOURCE_BYTES).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds the limit of {MAX_RESOURCE_BYTES} bytes"),
        )
    })
}

pub(crate) fn validation_error(error: ValidationError) -> ApiError {
    ApiError::bad_request(error.to_string())
}

pub(crate) fn control_error(error: ControlError) -> ApiError {
    match error {
        ControlError::Log(error) => log_error(error),
        _ => ApiError::internal(error),
    }
}

pub(crate) fn checked_namespace(namespace: Option<Path<String>>) -> Result<Option<String>, ApiError> {
    let namespace = namespace.map(|Path(namespace)| namespace);
    if let Some(namespace) = &namespace {
        validate_dns_label("namespace", namespace).map_err(validation_error)?;
    }
    Ok(namespace)
}

pub(crate) fn upsert_status(upsert: Upsert) -> StatusCode {
    match upsert {
        Upsert::Created => StatusCode::CREATED,
        Upsert::Replaced => StatusCode::OK,
    }
}

fn with_broker_status(state: &AppState, mut broker: switchyard_meta::Broker) -> switchyard_meta::Broker {
    broker.status = state.controller.broker_status(&broker, &state.base_url);
    broker
}

fn with_trigger_status(state: &AppState, mut trigger: switchyard_meta::Trigger) -> switchyard_meta::Trigger {
    trigger.status = state.controller.trigger_status(&trigger);
    trigger
}

#[utoipa::path(
    get,
    path = "/v1/brokers",
    tag = "brokers",
    summary = "List the brokers of every namespace",
    responses(
        (status = 200, description = "Every broker, with its status.", body = BrokerList),
        (status = 500, description = "Internal error (the detail is in the server log).", body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn list_all_brokers(state: State<Arc<AppState>>) -> Result<Response, ApiError> {
    list_brokers(state, None).await
}

/// `GET /v1/brokers` (every namespace) and `GET /v1/namespaces/{namespace}/brokers`.
#[utoipa::path(
    get,
    path = "/v1/namespaces/{namespace}/brokers",
    tag = "brokers",
    summary = "List the brokers of a namespace",
    description = "Each with its status: `status.address.url` is the broker's ingest URL.",
    params(NamespacePath),
    responses(
        (status = 200, description = "The namespace's brokers, with their status.", body = BrokerList),
        (status = 400, description = "The namespace is not a DNS-1123 label.", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error (the detail is in the server log).", body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn list_brokers(
    State(state): State<Arc<AppState>>,
    namespace: Option<Path<String>>,
) -> Result<Response, ApiError> {
    let namespace = checked_namespace(namespace)?;
    let brokers = state.controller.store().list_brokers(namespace.as_deref()).map_err(ApiError::internal)?;
    let items = brokers.into_iter().map(|b| with_broker_status(&state, b)).collect();
    Ok(Json(List { items }).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/namespaces/{namespace}/brokers/{name}",
    tag = "brokers",
    summary = "Get a broker",
    params(ResourcePath),
    responses(
        (status = 200, description = "The broker, with its status; `status.address.url` is its ingest URL.", body = Broker),
        (status = 404, description = "No such broker.", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error (the detail is in the server log).", body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn get_broker(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let broker = state.controller.store().get_broker(&namespace, &name).map_err(ApiError::internal)?;
    let broker = broker.ok_or_else(|| ApiError::not_found(format!("broker '{namespace}/{name}' does not exist")))?;
    Ok(Json(with_broker_status(&state, broker)).into_response())
}

#[utoipa::path(
    put,
    path = "/v1/namespaces/{namespace}/brokers/{name}",
    tag = "brokers",
    summary = "Create or replace a broker",
    params(ResourcePath),
    request_body = BrokerRequest,
    responses(
        (status = 200, description = "Replaced.", body = Broker),
        (status = 201, description = "Created.", body = Broker),
        (status = 400, description = "Invalid name, body or field; the detail names the field.", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than 1 MiB.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Storage cannot answer now; `Retry-After` says when to retry.", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error (the detail is in the server log).", body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn put_broker(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(body).await?;
    let broker = parse_broker(&namespace, &name, &body).map_err(validation_error)?;
    let (broker, upsert) = state.controller.put_broker(broker).await.map_err(control_error)?;
    Ok((upsert_status(upsert), Json(with_broker_status(&state, broker))).into_response())
}

#[utoipa::path(
    delete,
    path = "/v1/namespaces/{namespace}/brokers/{name}",
    tag = "brokers",
    summary = "Delete a broker and its events",
    params(ResourcePath),
    responses(
        (status = 200, description = "Deleted: the broker as it was (without status).", body = Broker),
        (status = 404, description = "No such broker.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Storage cannot answer now; `Retry-After` says when to retry.", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error (the detail is in the server log).", body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn delete_broker(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let broker = state.controller.delete_broker(&namespace, &name).await.map_err(control_error)?;
    let broker = broker.ok_or_else(|| ApiError::not_found(format!("broker '{namespace}/{name}' does not exist")))?;
    Ok(Json(broker).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/triggers",
    tag = "triggers",
    summary = "List the triggers of every namespace",
    responses(
        (status = 200, description = "Every trigger, with its status.", body = TriggerList),
        (status = 500, description = "Internal error (the detail is in the server log).", body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn list_all_triggers(state: State<Arc<AppState>>) -> Result<Response, ApiError> {
    list_triggers(state, None).await
}

/// `GET /v1/triggers` (every namespace) and `GET /v1/namespaces/{namespace}/triggers`.
#[utoipa::path(
    get,
    path = "/v1/namespaces/{namespace}/triggers",
    tag = "triggers",
    summary = "List the triggers of a namespace",
    description = "Each with its status: `Ready=False`, reason `BrokerDoesNotExist`, while its broker is missing.",
    params(NamespacePath),
    responses(
        (status = 200, description = "The namespace's triggers, with their status.", body = TriggerList),
        (status = 400, description = "The namespace is not a DNS-1123 label.", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error (the detail is in the server log).", body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn list_triggers(
    State(state): State<Arc<AppState>>,
    namespace: Option<Path<String>>,
) -> Result<Response, ApiError> {
    let namespace = checked_namespace(namespace)?;
    let triggers = state.controller.store().list_triggers(namespace.as_deref()).map_err(ApiError::internal)?;
    let items = triggers.into_iter().map(|t| with_trigger_status(&state, t)).collect();
    Ok(Json(List { items }).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/namespaces/{namespace}/triggers/{name}",
    tag = "triggers",
    summary = "Get a trigger",
    params(ResourcePath),
    responses(
        (status = 200, description = "The trigger, with its status (`Ready=False`, reason `BrokerDoesNotExist`, while its broker is missing).", body = Trigger),
        (status = 404, description = "No such trigger.", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error (the detail is in the server log).", body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn get_trigger(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let trigger = state.controller.store().get_trigger(&namespace, &name).map_err(ApiError::internal)?;
    let trigger = trigger.ok_or_else(|| ApiError::not_found(format!("trigger '{namespace}/{name}' does not exist")))?;
    Ok(Json(with_trigger_status(&state, trigger)).into_response())
}

#[utoipa::path(
    put,
    path = "/v1/namespaces/{namespace}/triggers/{name}",
    tag = "triggers",
    summary = "Create or replace a trigger",
    description = "A trigger whose broker does not exist is stored and reported not ready; it starts when the broker is created. A new trigger receives the events appended after its creation.",
    params(ResourcePath),
    request_body = TriggerRequest,
    responses(
        (status = 200, description = "Replaced.", body = Trigger),
        (status = 201, description = "Created.", body = Trigger),
        (status = 400, description = "Invalid name, body, field, filter (with the position of a CESQL or JSONPath error) or subscriber; the detail names the field.", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than 1 MiB.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Storage cannot answer now; `Retry-After` says when to retry.", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error (the detail is in the server log).", body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn put_trigger(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(body).await?;
    let trigger = parse_trigger(&namespace, &name, &body).map_err(validation_error)?;
    let (trigger, upsert) = state.controller.put_trigger(trigger).await.map_err(control_error)?;
    Ok((upsert_status(upsert), Json(with_trigger_status(&state, trigger))).into_response())
}

#[utoipa::path(
    delete,
    path = "/v1/namespaces/{namespace}/triggers/{name}",
    tag = "triggers",
    summary = "Delete a trigger",
    params(ResourcePath),
    responses(
        (status = 200, description = "Deleted: the trigger as it was (without status).", body = Trigger),
        (status = 404, description = "No such trigger.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Storage cannot answer now; `Retry-After` says when to retry.", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error (the detail is in the server log).", body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn delete_trigger(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let trigger = state.controller.delete_trigger(&namespace, &name).await.map_err(control_error)?;
    let trigger = trigger.ok_or_else(|| ApiError::not_found(format!("trigger '{namespace}/{name}' does not exist")))?;
    Ok(Json(trigger).into_response())
}

// ---- dead letters ----

/// Default and largest page of dead letters.
const DEAD_LETTER_PAGE: usize = 100;
const MAX_DEAD_LETTER_PAGE: usize = 1000;

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DeadLetterQuery {
    /// Page size, 1 to 1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// Start after this id: the `next` of the previous page.
    after: Option<String>,
}

/// Which dead letters to redeliver; an empty body (or no `ids`) means all of them.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RedriveRequest {
    /// Ids of the dead letters to redeliver; every one must exist.
    #[serde(default)]
    ids: Option<Vec<String>>,
}

fn dead_letter_json(entry: &switchyard_log::DeadLetter) -> serde_json::Value {
    serde_json::json!({
        "id": entry.id,
        "event": switchyard_event::json::to_value(&entry.event),
        "reason": entry.reason,
        "attempts": entry.attempts,
        "lastStatus": entry.last_status,
        "lastError": entry.last_error,
        "deadLetteredAt": entry.dead_lettered_at,
    })
}

/// The trigger must exist; its dead letters are its scope in the store.
fn dead_letter_scope(state: &AppState, namespace: &str, name: &str) -> Result<String, ApiError> {
    let trigger = state.controller.store().get_trigger(namespace, name).map_err(ApiError::internal)?;
    trigger.ok_or_else(|| ApiError::not_found(format!("trigger '{namespace}/{name}' does not exist")))?;
    Ok(switchyard_dispatcher::dead_letter_scope(namespace, name))
}

fn log_error(error: LogError) -> ApiError {
    match error {
        LogError::Unavailable(_) => ApiError::unavailable(error.to_string(), 1),
        _ => ApiError::internal(error),
    }
}

#[utoipa::path(
    get,
    path = "/v1/namespaces/{namespace}/triggers/{name}/deadletters",
    tag = "dead letters",
    summary = "List a trigger's dead letters",
    params(ResourcePath, DeadLetterQuery),
    responses(
        (status = 200, description = "A page of dead letters, oldest first.", body = DeadLetterPage),
        (status = 400, description = "Invalid query (e.g. `limit` out of range).", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such trigger.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Storage cannot answer now; `Retry-After` says when to retry.", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error (the detail is in the server log).", body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn list_dead_letters(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Response, ApiError> {
    let scope = dead_letter_scope(&state, &namespace, &name)?;
    let query: DeadLetterQuery = serde_urlencoded::from_str(query.as_deref().unwrap_or_default())
        .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
    let limit = match query.limit.as_deref() {
        None => DEAD_LETTER_PAGE,
        Some(text) => text.parse().ok().filter(|n| (1..=MAX_DEAD_LETTER_PAGE).contains(n)).ok_or_else(|| {
            ApiError::bad_request(format!(
                "invalid query 'limit': '{text}' is not a number from 1 to {MAX_DEAD_LETTER_PAGE}"
            ))
        })?,
    };
    let entries = state.log.dead_letters().list(&scope, query.after.as_deref(), limit).await.map_err(log_error)?;
    let next = (entries.len() == limit).then(|| entries.last().map(|e| e.id.clone())).flatten();
    let items: Vec<_> = entries.iter().map(dead_letter_json).collect();
    Ok(Json(serde_json::json!({ "items": items, "next": next })).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/namespaces/{namespace}/triggers/{name}/deadletters/{id}",
    tag = "dead letters",
    summary = "Get a dead letter",
    params(DeadLetterPath),
    responses(
        (status = 200, description = "The dead letter.", body = DeadLetter),
        (status = 404, description = "No such trigger, or no such dead letter.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Storage cannot answer now; `Retry-After` says when to retry.", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error (the detail is in the server log).", body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn get_dead_letter(
    State(state): State<Arc<AppState>>,
    Path((namespace, name, id)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let scope = dead_letter_scope(&state, &namespace, &name)?;
    let entry = state.log.dead_letters().get(&scope, &id).await.map_err(log_error)?;
    let entry =
        entry.ok_or_else(|| ApiError::not_found(format!("dead letter '{id}' of trigger '{scope}' does not exist")))?;
    Ok(Json(dead_letter_json(&entry)).into_response())
}

#[utoipa::path(
    post,
    path = "/v1/namespaces/{namespace}/triggers/{name}/deadletters/redrive",
    tag = "dead letters",
    summary = "Redeliver dead letters",
    description = "Redelivers with the trigger's current subscriber and delivery policy, page by page; an entry is removed once delivered.",
    params(ResourcePath),
    request_body(content = Option<RedriveRequest>, description = "`{\"ids\": [...]}`, or empty for all.", content_type = "application/json"),
    responses(
        (status = 202, description = "Redelivery started."),
        (status = 400, description = "Malformed body.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such trigger, or one of the ids does not exist.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The trigger is not ready (its broker does not exist).", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than 1 MiB.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Storage cannot answer now; `Retry-After` says when to retry.", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error (the detail is in the server log).", body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn redrive_dead_letters(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let scope = dead_letter_scope(&state, &namespace, &name)?;
    let body = read_body(body).await?;
    let request: RedriveRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RedriveRequest { ids: None }
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))?
    };
    let selection = match request.ids {
        None => switchyard_dispatcher::Redrive::All,
        Some(ids) => {
            for id in &ids {
                if state.log.dead_letters().get(&scope, id).await.map_err(log_error)?.is_none() {
                    return Err(ApiError::not_found(format!("dead letter '{id}' of trigger '{scope}' does not exist")));
                }
            }
            switchyard_dispatcher::Redrive::Ids(ids)
        }
    };
    if !state.controller.redrive(&namespace, &name, selection).await {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("trigger '{scope}' is not ready (its broker does not exist): nothing can be redelivered now"),
        ));
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

#[utoipa::path(
    delete,
    path = "/v1/namespaces/{namespace}/triggers/{name}/deadletters/{id}",
    tag = "dead letters",
    summary = "Delete a dead letter",
    params(DeadLetterPath),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "No such trigger, or no such dead letter.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Storage cannot answer now; `Retry-After` says when to retry.", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error (the detail is in the server log).", body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn delete_dead_letter(
    State(state): State<Arc<AppState>>,
    Path((namespace, name, id)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let scope = dead_letter_scope(&state, &namespace, &name)?;
    if !state.log.dead_letters().remove(&scope, &id).await.map_err(log_error)? {
        return Err(ApiError::not_found(format!("dead letter '{id}' of trigger '{scope}' does not exist")));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(
    delete,
    path = "/v1/namespaces/{namespace}/triggers/{name}/deadletters",
    tag = "dead letters",
    summary = "Delete every dead letter of a trigger",
    params(ResourcePath),
    responses(
        (status = 200, description = "How many were deleted.", body = Purged),
        (status = 404, description = "No such trigger.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Storage cannot answer now; `Retry-After` says when to retry.", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error (the detail is in the server log).", body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn purge_dead_letters(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let scope = dead_letter_scope(&state, &namespace, &name)?;
    let purged = state.log.dead_letters().purge(&scope).await.map_err(log_error)?;
    Ok(Json(serde_json::json!({ "purged": purged })).into_response())
}
