//! Sources (Knative `sources.knative.dev` kinds, one path segment per registered kind):
//! `/v1/namespaces/{namespace}/{sources}`, and the webhook endpoint of webhook sources,
//! `POST /webhooks/{webhook}/{namespace}/{name}`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use switchyard_meta::resources::Submission;
use switchyard_sources::{WebhookAnswer, WebhookError, WebhookFailure};

use switchyard_meta::status::SourceStatus;
use switchyard_meta::Resource;

use crate::openapi::{SourceKindPath, SourcePath, SourceSpec, WebhookPath};
use crate::problem::{ApiError, BadRequest, Internal, NotFound, TooLarge, Unavailable, UnsupportedMediaType};
use crate::routes::declarations::{self, kind, List, Object};
use crate::routes::{read_within, AppState};

#[utoipa::path(
    get,
    path = "/v1/{sources}",
    tag = "sources",
    summary = "List the sources of one kind in every namespace",
    params(SourceKindPath),
    responses((status = 200, description = "Every source of the kind, with its status.", body = List<Resource<SourceSpec, SourceStatus>>), NotFound, Internal),
)]
pub(crate) async fn list_all_sources(
    State(state): State<Arc<AppState>>,
    Path(plural): Path<String>,
) -> Result<Json<List<Object>>, ApiError> {
    declarations::list(&state, kind(&plural)?, None)
}

#[utoipa::path(
    get,
    path = "/v1/namespaces/{namespace}/{sources}",
    tag = "sources",
    summary = "List the sources of one kind in a namespace",
    params(crate::openapi::NamespacePath, SourceKindPath),
    responses((status = 200, description = "The namespace's sources of the kind, with their status.", body = List<Resource<SourceSpec, SourceStatus>>), BadRequest, NotFound, Internal),
)]
pub(crate) async fn list_sources(
    State(state): State<Arc<AppState>>,
    Path((namespace, plural)): Path<(String, String)>,
) -> Result<Json<List<Object>>, ApiError> {
    declarations::list(&state, kind(&plural)?, Some(&namespace))
}

#[utoipa::path(
    get,
    path = "/v1/namespaces/{namespace}/{sources}/{name}",
    tag = "sources",
    summary = "Get a source",
    params(SourcePath),
    responses((status = 200, description = "The source, with its status (`status.webhookUrl`: where a webhook source takes deliveries).", body = Resource<SourceSpec, SourceStatus>), NotFound, Internal),
)]
pub(crate) async fn get_source(
    State(state): State<Arc<AppState>>,
    Path((namespace, plural, name)): Path<(String, String, String)>,
) -> Result<Json<Object>, ApiError> {
    declarations::get(&state, kind(&plural)?, &namespace, &name)
}

#[utoipa::path(
    put,
    path = "/v1/namespaces/{namespace}/{sources}/{name}",
    tag = "sources",
    summary = "Create or replace a source",
    description = "Body `{\"spec\": …}` or a whole Knative object of the kind. `spec.sink` is a Broker of the namespace (`{\"ref\": {\"kind\": \"Broker\", \"name\": …}}`) or a `uri`.",
    params(SourcePath),
    request_body = Submission<SourceSpec>,
    responses(
        (status = 200, description = "Replaced.", body = Resource<SourceSpec, SourceStatus>),
        (status = 201, description = "Created.", body = Resource<SourceSpec, SourceStatus>),
        BadRequest, NotFound, TooLarge, Unavailable, Internal,
    ),
)]
pub(crate) async fn put_source(
    State(state): State<Arc<AppState>>,
    Path((namespace, plural, name)): Path<(String, String, String)>,
    body: Body,
) -> Result<(StatusCode, Json<Object>), ApiError> {
    declarations::put(&state, kind(&plural)?, &namespace, &name, body).await
}

#[utoipa::path(
    delete,
    path = "/v1/namespaces/{namespace}/{sources}/{name}",
    tag = "sources",
    summary = "Delete a source",
    description = "Stops it and forgets its progress (a PingSource's last tick, the delivery ids a webhook source took).",
    params(SourcePath),
    responses((status = 200, description = "Deleted: the source as it was (without status).", body = Resource<SourceSpec, SourceStatus>), NotFound, Unavailable, Internal),
)]
pub(crate) async fn delete_source(
    State(state): State<Arc<AppState>>,
    Path((namespace, plural, name)): Path<(String, String, String)>,
) -> Result<Json<Object>, ApiError> {
    declarations::delete(&state, kind(&plural)?, &namespace, &name).await
}

/// A webhook delivery taken.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct WebhookAccepted {
    /// The ids of the events it carried.
    ids: Vec<String>,
    /// How many of them had been taken before and were not sent again.
    duplicates: usize,
}

/// A webhook delivery with nothing to send.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct WebhookIgnored {
    /// Why (e.g. the event type is not in the source's `eventTypes`).
    ignored: String,
}

/// Receive a webhook delivery.
///
/// The source checks the request (for GitHub: `X-Hub-Signature-256` over the raw body with the
/// source's secret, `X-GitHub-Event`, `X-GitHub-Delivery`), turns it into events and answers
/// 202 once they are durable in its sink. A delivery whose event id the source already took is
/// answered 202 and not sent again; one that arrives while the same id is being sent waits for
/// that outcome and gets the same answer.
///
/// The source is looked up (404, or 503 when it is not ready) and a declared `Content-Length`
/// over `max_batch_bytes` refused (413) before any of the body is read; a streamed body is cut
/// off at the same limit (413).
#[utoipa::path(
    post,
    path = "/webhooks/{webhook}/{namespace}/{name}",
    tag = "sources",
    params(WebhookPath),
    request_body(description = "The sender's payload (GitHub: `application/json`, or `application/x-www-form-urlencoded` with `payload=`).", content((Object = "application/json"))),
    responses(
        (status = 202, description = "Durable in the sink (or taken before).", body = WebhookAccepted),
        (status = 200, description = "Nothing to send (an event type the source does not take, a ping); answered so that the sender does not retry.", body = WebhookIgnored),
        (status = 401, description = "Missing or wrong signature.", body = crate::problem::Problem, content_type = "application/problem+json"),
        BadRequest, NotFound, TooLarge, UnsupportedMediaType, Unavailable,
    ),
)]
pub(crate) async fn receive_webhook(
    State(state): State<Arc<AppState>>,
    Path((webhook, namespace, name)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // Nothing of the body is read before the source is known and the declared length fits: a
    // request for no source, or one over the limit, costs no more than its headers.
    let target = state.engine.sources().webhook_target(&webhook, &namespace, &name).map_err(failure)?;
    if state.engine.admission().is_stopping() {
        return Err(ApiError::unavailable("the broker is shutting down; retry later", 5));
    }
    // The payload becomes an event's data, held to the event limit by admission; a form body
    // carries it encoded, so the request may be larger: up to the batch limit. A streamed
    // (chunked) body is cut off at the same limit.
    let limit = state.max_batch_bytes;
    let too_large =
        || ApiError::too_large(format!("the request body exceeds the limit of {limit} bytes (max_batch_bytes)"));
    let body = read_within(&headers, body, limit, too_large).await?;
    match state.engine.sources().receive(&target, &headers, &body).await {
        Ok(WebhookAnswer::Accepted { ids, duplicates }) => {
            Ok((StatusCode::ACCEPTED, Json(WebhookAccepted { ids, duplicates })).into_response())
        }
        Ok(WebhookAnswer::Ignored(ignored)) => Ok(Json(WebhookIgnored { ignored }).into_response()),
        Err(refused) => Err(failure(refused)),
    }
}

/// The answer to a webhook request that failed.
fn failure(failure: WebhookFailure) -> ApiError {
    match failure {
        WebhookFailure::NotFound(detail) => ApiError::not_found(detail),
        WebhookFailure::Refused(refused) => {
            let status = match &refused {
                WebhookError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
                WebhookError::BadRequest(_) => StatusCode::BAD_REQUEST,
                WebhookError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            };
            ApiError::new(status, refused.to_string())
        }
        WebhookFailure::Limit(limit) => ApiError::too_large(limit.to_string()),
        WebhookFailure::NotReady(detail) => ApiError::unavailable(detail, 30),
        WebhookFailure::Unavailable(detail) => ApiError::unavailable(detail, 5),
    }
}
