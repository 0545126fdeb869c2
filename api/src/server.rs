//! The HTTP surface: broker ingest (`/{namespace}/{broker}`), the REST API (`/v1/…`) and health.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde::Serialize;
use switchyard_event::{Event, EventError};
use switchyard_log::{EventLog, LogError};
use switchyard_meta::resources::{parse_broker, parse_trigger, validate_dns_label};
use switchyard_meta::store::Upsert;
use switchyard_meta::ValidationError;

use crate::controller::{ControlError, Controller};
use crate::problem::ApiError;

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
    pub controller: Controller,
    /// The event log.
    pub log: Arc<dyn EventLog>,
    /// Ingest limits.
    pub limits: Limits,
    /// The URL clients reach this server at, for `status.address.url`.
    pub base_url: String,
    /// Set at SIGTERM: ingest refuses new events while deliveries drain.
    pub stopping: std::sync::atomic::AtomicBool,
}

/// The whole HTTP API.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/v1/filters/test", post(crate::filters::test_filter))
        .route("/v1/cesql/evaluate", post(crate::filters::evaluate_cesql))
        .route("/v1/brokers", get(list_brokers))
        .route("/v1/triggers", get(list_triggers))
        .route("/v1/namespaces/{namespace}/brokers", get(list_brokers))
        .route("/v1/namespaces/{namespace}/brokers/{name}", get(get_broker).put(put_broker).delete(delete_broker))
        .route("/v1/namespaces/{namespace}/triggers", get(list_triggers))
        .route("/v1/namespaces/{namespace}/triggers/{name}", get(get_trigger).put(put_trigger).delete(delete_trigger))
        .route(
            "/v1/namespaces/{namespace}/triggers/{name}/deadletters",
            get(list_dead_letters).delete(purge_dead_letters),
        )
        .route("/v1/namespaces/{namespace}/triggers/{name}/deadletters/redrive", post(redrive_dead_letters))
        .route(
            "/v1/namespaces/{namespace}/triggers/{name}/deadletters/{id}",
            get(get_dead_letter).delete(delete_dead_letter),
        )
        .route("/{namespace}/{broker}", any(ingest_endpoint))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .with_state(state)
}

// ---- ingest ----

async fn ingest_endpoint(
    State(state): State<Arc<AppState>>,
    Path((namespace, broker)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    match method {
        Method::POST => ingest(&state, &namespace, &broker, &headers, body).await,
        Method::OPTIONS => Ok(webhook_handshake(&headers)),
        _ => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} is not allowed: send events with POST"),
        )
        .with_header(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"))),
    }
}

async fn ingest(
    state: &AppState,
    namespace: &str,
    broker: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
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
    for event in &mut events {
        switchyard_event::knative::stamp_ingress(event, &arrival);
    }
    match state.log.append(&topic, &events).await {
        Ok(()) => Ok(StatusCode::ACCEPTED.into_response()),
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
struct List<T> {
    items: Vec<T>,
}

async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_RESOURCE_BYTES).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds the limit of {MAX_RESOURCE_BYTES} bytes"),
        )
    })
}

fn validation_error(error: ValidationError) -> ApiError {
    ApiError::bad_request(error.to_string())
}

fn control_error(error: ControlError) -> ApiError {
    match error {
        ControlError::Log(error) => log_error(error),
        _ => ApiError::internal(error),
    }
}

fn checked_namespace(namespace: Option<Path<String>>) -> Result<Option<String>, ApiError> {
    let namespace = namespace.map(|Path(namespace)| namespace);
    if let Some(namespace) = &namespace {
        validate_dns_label("namespace", namespace).map_err(validation_error)?;
    }
    Ok(namespace)
}

fn upsert_status(upsert: Upsert) -> StatusCode {
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

/// `GET /v1/brokers` (every namespace) and `GET /v1/namespaces/{namespace}/brokers`.
async fn list_brokers(
    State(state): State<Arc<AppState>>,
    namespace: Option<Path<String>>,
) -> Result<Response, ApiError> {
    let namespace = checked_namespace(namespace)?;
    let brokers = state.controller.store().list_brokers(namespace.as_deref()).map_err(ApiError::internal)?;
    let items = brokers.into_iter().map(|b| with_broker_status(&state, b)).collect();
    Ok(Json(List { items }).into_response())
}

async fn get_broker(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let broker = state.controller.store().get_broker(&namespace, &name).map_err(ApiError::internal)?;
    let broker = broker.ok_or_else(|| ApiError::not_found(format!("broker '{namespace}/{name}' does not exist")))?;
    Ok(Json(with_broker_status(&state, broker)).into_response())
}

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

async fn delete_broker(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let broker = state.controller.delete_broker(&namespace, &name).await.map_err(control_error)?;
    let broker = broker.ok_or_else(|| ApiError::not_found(format!("broker '{namespace}/{name}' does not exist")))?;
    Ok(Json(broker).into_response())
}

/// `GET /v1/triggers` (every namespace) and `GET /v1/namespaces/{namespace}/triggers`.
async fn list_triggers(
    State(state): State<Arc<AppState>>,
    namespace: Option<Path<String>>,
) -> Result<Response, ApiError> {
    let namespace = checked_namespace(namespace)?;
    let triggers = state.controller.store().list_triggers(namespace.as_deref()).map_err(ApiError::internal)?;
    let items = triggers.into_iter().map(|t| with_trigger_status(&state, t)).collect();
    Ok(Json(List { items }).into_response())
}

async fn get_trigger(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let trigger = state.controller.store().get_trigger(&namespace, &name).map_err(ApiError::internal)?;
    let trigger = trigger.ok_or_else(|| ApiError::not_found(format!("trigger '{namespace}/{name}' does not exist")))?;
    Ok(Json(with_trigger_status(&state, trigger)).into_response())
}

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

#[derive(serde::Deserialize)]
struct DeadLetterQuery {
    limit: Option<String>,
    after: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RedriveRequest {
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

async fn purge_dead_letters(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let scope = dead_letter_scope(&state, &namespace, &name)?;
    let purged = state.log.dead_letters().purge(&scope).await.map_err(log_error)?;
    Ok(Json(serde_json::json!({ "purged": purged })).into_response())
}
