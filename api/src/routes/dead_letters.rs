//! A trigger's dead letters: `/v1/namespaces/{namespace}/triggers/{name}/deadletters` —
//! inspect, redrive, delete.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use switchyard_dispatcher::{dead_letter_scope, Redrive};
use switchyard_engine::Kind;

use crate::openapi::{CloudEvent, DeadLetterPath, ResourcePath};
use crate::problem::{ApiError, BadRequest, Conflict, Internal, NotFound, TooLarge, Unavailable};
use crate::routes::declarations::read_body;
use crate::routes::AppState;

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

/// An event a trigger could not deliver.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeadLetter {
    /// Assigned by the store.
    id: String,
    /// The original event, unchanged, in the JSON event format.
    #[schema(value_type = CloudEvent)]
    event: serde_json::Value,
    /// Why it was dead-lettered (e.g. `retries exhausted`).
    reason: String,
    /// Delivery attempts made.
    attempts: u32,
    /// The last HTTP status received, if any.
    #[schema(required)]
    last_status: Option<u16>,
    /// The last transport error, if the last attempt got no answer.
    #[schema(required)]
    last_error: Option<String>,
    /// When it was stored (RFC 3339, UTC).
    dead_lettered_at: String,
}

impl From<switchyard_log::DeadLetter> for DeadLetter {
    fn from(entry: switchyard_log::DeadLetter) -> DeadLetter {
        DeadLetter {
            event: switchyard_event::json::to_value(&entry.event),
            id: entry.id,
            reason: entry.reason,
            attempts: entry.attempts,
            last_status: entry.last_status,
            last_error: entry.last_error,
            dead_lettered_at: entry.dead_lettered_at,
        }
    }
}

/// A page of dead letters, oldest first.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct DeadLetterPage {
    /// The entries.
    items: Vec<DeadLetter>,
    /// The `after` of the next page; null on the last page.
    #[schema(required)]
    next: Option<String>,
}

/// The answer to a purge.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Purged {
    /// How many dead letters were removed.
    purged: u64,
}

/// The trigger must exist; its dead letters are its scope in the store.
fn scope(state: &AppState, namespace: &str, name: &str) -> Result<String, ApiError> {
    state
        .engine
        .controller()
        .get(Kind::Trigger, namespace, name)
        .ok_or_else(|| ApiError::not_found(format!("trigger '{namespace}/{name}' does not exist")))?;
    Ok(dead_letter_scope(namespace, name))
}

fn no_such_entry(id: &str, scope: &str) -> ApiError {
    ApiError::not_found(format!("dead letter '{id}' of trigger '{scope}' does not exist"))
}

#[utoipa::path(
    get,
    path = "/v1/namespaces/{namespace}/triggers/{name}/deadletters",
    tag = "dead letters",
    summary = "List a trigger's dead letters",
    params(ResourcePath, DeadLetterQuery),
    responses((status = 200, description = "A page of dead letters, oldest first.", body = DeadLetterPage), BadRequest, NotFound, Unavailable, Internal),
)]
pub(crate) async fn list_dead_letters(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Json<DeadLetterPage>, ApiError> {
    let scope = scope(&state, &namespace, &name)?;
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
    let entries = state.engine.dead_letters().list(&scope, query.after.as_deref(), limit).await?;
    let next = (entries.len() == limit).then(|| entries.last().map(|e| e.id.clone())).flatten();
    Ok(Json(DeadLetterPage { items: entries.into_iter().map(DeadLetter::from).collect(), next }))
}

#[utoipa::path(
    get,
    path = "/v1/namespaces/{namespace}/triggers/{name}/deadletters/{id}",
    tag = "dead letters",
    summary = "Get a dead letter",
    params(DeadLetterPath),
    responses((status = 200, description = "The dead letter.", body = DeadLetter), NotFound, Unavailable, Internal),
)]
pub(crate) async fn get_dead_letter(
    State(state): State<Arc<AppState>>,
    Path((namespace, name, id)): Path<(String, String, String)>,
) -> Result<Json<DeadLetter>, ApiError> {
    let scope = scope(&state, &namespace, &name)?;
    let entry = state.engine.dead_letters().get(&scope, &id).await?;
    Ok(Json(entry.ok_or_else(|| no_such_entry(&id, &scope))?.into()))
}

#[utoipa::path(
    post,
    path = "/v1/namespaces/{namespace}/triggers/{name}/deadletters/redrive",
    tag = "dead letters",
    summary = "Redeliver dead letters",
    description = "Redelivers with the trigger's current subscriber and delivery policy, page by page; an entry is removed once delivered. A reply to a redriven event enters the broker as any event does.",
    params(ResourcePath),
    request_body(content = Option<RedriveRequest>, description = "`{\"ids\": [...]}`, or empty for all.", content_type = "application/json"),
    responses((status = 202, description = "Redelivery started."), BadRequest, NotFound, Conflict, TooLarge, Unavailable, Internal),
)]
pub(crate) async fn redrive_dead_letters(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let scope = scope(&state, &namespace, &name)?;
    let body = read_body(&state, body).await?;
    let request: RedriveRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RedriveRequest { ids: None }
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))?
    };
    let selection = match request.ids {
        None => Redrive::All,
        Some(ids) => {
            for id in &ids {
                if state.engine.dead_letters().get(&scope, id).await?.is_none() {
                    return Err(no_such_entry(id, &scope));
                }
            }
            Redrive::Ids(ids)
        }
    };
    if !state.engine.controller().redrive(&namespace, &name, selection).await {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("trigger '{scope}' is not ready (its broker does not exist): nothing can be redelivered now"),
        ));
    }
    Ok(StatusCode::ACCEPTED)
}

#[utoipa::path(
    delete,
    path = "/v1/namespaces/{namespace}/triggers/{name}/deadletters/{id}",
    tag = "dead letters",
    summary = "Delete a dead letter",
    params(DeadLetterPath),
    responses((status = 204, description = "Deleted."), NotFound, Unavailable, Internal),
)]
pub(crate) async fn delete_dead_letter(
    State(state): State<Arc<AppState>>,
    Path((namespace, name, id)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let scope = scope(&state, &namespace, &name)?;
    if !state.engine.dead_letters().remove(&scope, &id).await? {
        return Err(no_such_entry(&id, &scope));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    delete,
    path = "/v1/namespaces/{namespace}/triggers/{name}/deadletters",
    tag = "dead letters",
    summary = "Delete every dead letter of a trigger",
    params(ResourcePath),
    responses((status = 200, description = "How many were deleted.", body = Purged), NotFound, Unavailable, Internal),
)]
pub(crate) async fn purge_dead_letters(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Json<Purged>, ApiError> {
    let scope = scope(&state, &namespace, &name)?;
    let purged = state.engine.dead_letters().purge(&scope).await?;
    Ok(Json(Purged { purged }))
}
