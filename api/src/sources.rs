//! Sources in the binary: where their events go ([`BinarySinks`]: the brokers' log, as ingest
//! appends, or the delivery HTTP client), their REST API
//! (`/v1/namespaces/{namespace}/{sources}/{name}`, one path segment per registered kind) and
//! the webhook endpoint (`POST /webhooks/{webhook}/{namespace}/{name}`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use switchyard_dispatcher::sender::Attempt;
use switchyard_dispatcher::{Format, Sender, Target};
use switchyard_event::Event;
use switchyard_log::{EventLog, LogError};
use switchyard_meta::store::Source;
use switchyard_sources::{
    kind_by_plural, SinkError, Sinks, SourceKind, SourceRef, WebhookAnswer, WebhookError, WebhookFailure,
};

use crate::controller::Brokers;
use crate::openapi::{SourceKindPath, SourcePath, WebhookPath};
use crate::problem::{ApiError, Problem};
use crate::server::{checked_namespace, control_error, read_body, upsert_status, validation_error, AppState, List};

/// How long one POST to a sink URI may take.
const SINK_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest webhook request body (GitHub caps payloads at 25 MB).
const MAX_WEBHOOK_BYTES: usize = 25 << 20;

/// Sources' sinks in this binary: a broker's topic in the event log, appended to as ingest
/// appends (arrival time and hop budget stamped), or an HTTP endpoint reached with the
/// dispatcher's client.
pub struct BinarySinks {
    brokers: Arc<Brokers>,
    log: Arc<dyn EventLog>,
    sender: Sender,
}

impl BinarySinks {
    /// Sinks over these brokers, this log and this HTTP client.
    pub fn new(brokers: Arc<Brokers>, log: Arc<dyn EventLog>, sender: Sender) -> BinarySinks {
        BinarySinks { brokers, log, sender }
    }
}

#[async_trait]
impl Sinks for BinarySinks {
    async fn append(&self, namespace: &str, broker: &str, mut events: Vec<Event>) -> Result<(), SinkError> {
        let unknown = || SinkError::UnknownBroker(format!("{namespace}/{broker}"));
        let topic = self.brokers.topic(namespace, broker).ok_or_else(unknown)?;
        let arrival = switchyard_event::knative::now_rfc3339();
        for event in &mut events {
            switchyard_event::knative::stamp_ingress(event, &arrival);
        }
        let started = std::time::Instant::now();
        let appended = self.log.append(&topic, &events).await;
        crate::metrics::appended(started.elapsed());
        match appended {
            Ok(()) => Ok(()),
            Err(LogError::UnknownTopic(_)) => Err(unknown()),
            Err(error) => {
                Err(SinkError::Unavailable(format!("broker '{namespace}/{broker}' cannot take events: {error}")))
            }
        }
    }

    async fn post(&self, source: &SourceRef, uri: &url::Url, events: Vec<Event>) -> Result<(), SinkError> {
        let target = Target {
            url: uri.clone(),
            format: Format::Binary,
            namespace: source.namespace.clone(),
            timeout: SINK_TIMEOUT,
        };
        let origin = source.to_string();
        for event in &events {
            let attempt = Attempt { trigger: &origin, number: 1, dead_letter: false };
            self.sender
                .send(&target, event, attempt)
                .await
                .map_err(|failure| SinkError::Unavailable(format!("sink '{uri}' did not take the event: {failure}")))?;
        }
        Ok(())
    }

    fn broker_exists(&self, namespace: &str, broker: &str) -> bool {
        self.brokers.topic(namespace, broker).is_some()
    }
}

// ---- REST ----

fn kind(plural: &str) -> Result<&'static dyn SourceKind, ApiError> {
    kind_by_plural(plural).ok_or_else(|| {
        let known: Vec<&str> = switchyard_sources::kinds().iter().map(|kind| kind.plural()).collect();
        ApiError::not_found(format!("no such resource kind '{plural}' (sources: {})", known.join(", ")))
    })
}

fn with_status(state: &AppState, kind: &'static dyn SourceKind, mut source: Source) -> Source {
    source.status = serde_json::to_value(state.controller.source_status(kind, &source, &state.base_url))
        .unwrap_or(serde_json::Value::Null);
    source
}

#[utoipa::path(
    get,
    path = "/v1/{sources}",
    tag = "sources",
    summary = "List the sources of one kind in every namespace",
    params(SourceKindPath),
    responses(
        (status = 200, description = "Every source of the kind, with its status.", body = crate::openapi::schemas::SourceList),
        (status = 404, description = "No such source kind.", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error (the detail is in the server log).", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn list_all_sources(
    State(state): State<Arc<AppState>>,
    Path(plural): Path<String>,
) -> Result<Response, ApiError> {
    list(&state, &plural, None)
}

#[utoipa::path(
    get,
    path = "/v1/namespaces/{namespace}/{sources}",
    tag = "sources",
    summary = "List the sources of one kind in a namespace",
    params(crate::openapi::NamespacePath, SourceKindPath),
    responses(
        (status = 200, description = "The namespace's sources of the kind, with their status.", body = crate::openapi::schemas::SourceList),
        (status = 400, description = "The namespace is not a DNS-1123 label.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such source kind.", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error (the detail is in the server log).", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn list_sources(
    State(state): State<Arc<AppState>>,
    Path((namespace, plural)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let namespace = checked_namespace(Some(Path(namespace)))?;
    list(&state, &plural, namespace.as_deref())
}

fn list(state: &AppState, plural: &str, namespace: Option<&str>) -> Result<Response, ApiError> {
    let kind = kind(plural)?;
    let sources = state.controller.store().list_sources(kind.kind(), namespace).map_err(ApiError::internal)?;
    let items: Vec<Source> = sources.into_iter().map(|source| with_status(state, kind, source)).collect();
    Ok(Json(List { items }).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/namespaces/{namespace}/{sources}/{name}",
    tag = "sources",
    summary = "Get a source",
    params(SourcePath),
    responses(
        (status = 200, description = "The source, with its status (`status.webhookUrl`: where a webhook source takes deliveries).", body = crate::openapi::schemas::Source),
        (status = 404, description = "No such source (or kind).", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error (the detail is in the server log).", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn get_source(
    State(state): State<Arc<AppState>>,
    Path((namespace, plural, name)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let kind = kind(&plural)?;
    let source = state.controller.store().get_source(kind.kind(), &namespace, &name).map_err(ApiError::internal)?;
    let source = source.ok_or_else(|| not_found(kind, &namespace, &name))?;
    Ok(Json(with_status(&state, kind, source)).into_response())
}

fn not_found(kind: &dyn SourceKind, namespace: &str, name: &str) -> ApiError {
    ApiError::not_found(format!("{} '{namespace}/{name}' does not exist", kind.kind()))
}

#[utoipa::path(
    put,
    path = "/v1/namespaces/{namespace}/{sources}/{name}",
    tag = "sources",
    summary = "Create or replace a source",
    description = "Body `{\"spec\": …}` or a whole Knative object of the kind (`GitHubSource`, `PingSource`, `KafkaSource`). `spec.sink` is a Broker of the namespace (`{\"ref\": {\"kind\": \"Broker\", \"name\": …}}`) or a `uri`.",
    params(SourcePath),
    request_body = crate::openapi::schemas::SourceRequest,
    responses(
        (status = 200, description = "Replaced.", body = crate::openapi::schemas::Source),
        (status = 201, description = "Created.", body = crate::openapi::schemas::Source),
        (status = 400, description = "Invalid name, body or field; the detail names the field.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such source kind.", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than 1 MiB.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Storage cannot answer now; `Retry-After` says when to retry.", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error (the detail is in the server log).", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn put_source(
    State(state): State<Arc<AppState>>,
    Path((namespace, plural, name)): Path<(String, String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let kind = kind(&plural)?;
    let body = read_body(body).await?;
    let source = switchyard_sources::parse_source(kind, &namespace, &name, &body).map_err(validation_error)?;
    let (source, upsert) = state.controller.put_source(kind, source).await.map_err(control_error)?;
    Ok((upsert_status(upsert), Json(with_status(&state, kind, source))).into_response())
}

#[utoipa::path(
    delete,
    path = "/v1/namespaces/{namespace}/{sources}/{name}",
    tag = "sources",
    summary = "Delete a source",
    description = "Stops it and forgets its progress (a PingSource's last tick, the delivery ids a webhook source took).",
    params(SourcePath),
    responses(
        (status = 200, description = "Deleted: the source as it was (without status).", body = crate::openapi::schemas::Source),
        (status = 404, description = "No such source (or kind).", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Storage cannot answer now; `Retry-After` says when to retry.", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error (the detail is in the server log).", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn delete_source(
    State(state): State<Arc<AppState>>,
    Path((namespace, plural, name)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let kind = kind(&plural)?;
    let source = state.controller.delete_source(kind, &namespace, &name).await.map_err(control_error)?;
    let source = source.ok_or_else(|| not_found(kind, &namespace, &name))?;
    Ok(Json(source).into_response())
}

// ---- webhooks ----

/// Receive a webhook delivery.
///
/// The source checks the request (for GitHub: `X-Hub-Signature-256` over the raw body with the
/// source's secret, `X-GitHub-Event`, `X-GitHub-Delivery`), turns it into events and answers
/// 202 once they are durable in its sink. A delivery whose event id the source already took is
/// answered 202 and not sent again.
#[utoipa::path(
    post,
    path = "/webhooks/{webhook}/{namespace}/{name}",
    tag = "sources",
    params(WebhookPath),
    request_body(description = "The sender's payload (GitHub: `application/json`, or `application/x-www-form-urlencoded` with `payload=`).", content((Object = "application/json"))),
    responses(
        (status = 202, description = "Durable in the sink (or taken before).", body = crate::openapi::schemas::WebhookAccepted),
        (status = 200, description = "Nothing to send (an event type the source does not take, a ping); answered so that the sender does not retry.", body = crate::openapi::schemas::WebhookIgnored),
        (status = 400, description = "A required header is missing, or the body is malformed.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong signature.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such source.", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than 25 MiB.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "A body in a media type the source does not read.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The source is not ready, or its sink did not take the events in time; `Retry-After` says when to retry.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn receive_webhook(
    State(state): State<Arc<AppState>>,
    Path((webhook, namespace, name)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = axum::body::to_bytes(body, MAX_WEBHOOK_BYTES).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds the limit of {MAX_WEBHOOK_BYTES} bytes"),
        )
    })?;
    if state.stopping.load(std::sync::atomic::Ordering::Acquire) {
        return Err(ApiError::unavailable("the broker is shutting down; retry later", 5));
    }
    match state.controller.sources().webhook(&webhook, &namespace, &name, &headers, &body).await {
        Ok(WebhookAnswer::Accepted { ids, duplicates }) => {
            Ok((StatusCode::ACCEPTED, Json(serde_json::json!({ "ids": ids, "duplicates": duplicates })))
                .into_response())
        }
        Ok(WebhookAnswer::Ignored(reason)) => Ok(Json(serde_json::json!({ "ignored": reason })).into_response()),
        Err(failure) => Err(match failure {
            WebhookFailure::NotFound(detail) => ApiError::not_found(detail),
            WebhookFailure::Refused(refused) => {
                let status = match &refused {
                    WebhookError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
                    WebhookError::BadRequest(_) => StatusCode::BAD_REQUEST,
                    WebhookError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                };
                ApiError::new(status, refused.to_string())
            }
            WebhookFailure::NotReady(detail) => ApiError::unavailable(detail, 30),
            WebhookFailure::Unavailable(detail) => ApiError::unavailable(detail, 5),
        }),
    }
}
