//! Triggers (Knative `eventing.knative.dev/v1` Trigger): `/v1/namespaces/{namespace}/triggers`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use switchyard_engine::Kind;
use switchyard_meta::resources::{Submission, TriggerSpec};

use switchyard_meta::status::TriggerStatus;
use switchyard_meta::Resource;

use crate::openapi::{NamespacePath, ResourcePath};
use crate::problem::{ApiError, BadRequest, Internal, NotFound, QuotaExceeded, TooLarge, Unavailable};
use crate::routes::declarations::{self, List, Object};
use crate::routes::AppState;

#[utoipa::path(
    get,
    path = "/v1/triggers",
    tag = "triggers",
    summary = "List the triggers of every namespace",
    responses((status = 200, description = "Every trigger, with its status.", body = List<Resource<TriggerSpec, TriggerStatus>>), Internal),
)]
pub(crate) async fn list_all_triggers(State(state): State<Arc<AppState>>) -> Result<Json<List<Object>>, ApiError> {
    declarations::list(&state, Kind::Trigger, None)
}

#[utoipa::path(
    get,
    path = "/v1/namespaces/{namespace}/triggers",
    tag = "triggers",
    summary = "List the triggers of a namespace",
    description = "Each with its status: `Ready=False`, reason `BrokerDoesNotExist`, while its broker is missing.",
    params(NamespacePath),
    responses((status = 200, description = "The namespace's triggers, with their status.", body = List<Resource<TriggerSpec, TriggerStatus>>), BadRequest, Internal),
)]
pub(crate) async fn list_triggers(
    State(state): State<Arc<AppState>>,
    Path(namespace): Path<String>,
) -> Result<Json<List<Object>>, ApiError> {
    declarations::list(&state, Kind::Trigger, Some(&namespace))
}

#[utoipa::path(
    get,
    path = "/v1/namespaces/{namespace}/triggers/{name}",
    tag = "triggers",
    summary = "Get a trigger",
    params(ResourcePath),
    responses((status = 200, description = "The trigger, with its status (`Ready=False`, reason `BrokerDoesNotExist`, while its broker is missing).", body = Resource<TriggerSpec, TriggerStatus>), NotFound, Internal),
)]
pub(crate) async fn get_trigger(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Json<Object>, ApiError> {
    declarations::get(&state, Kind::Trigger, &namespace, &name)
}

#[utoipa::path(
    put,
    path = "/v1/namespaces/{namespace}/triggers/{name}",
    tag = "triggers",
    summary = "Create or replace a trigger",
    description = "Answered once the trigger runs on this node: its group exists, so it receives every event appended after the answer. A trigger whose broker does not exist is stored and reported not ready; it starts when the broker is created.",
    params(ResourcePath),
    request_body = Submission<TriggerSpec>,
    responses(
        (status = 200, description = "Replaced.", body = Resource<TriggerSpec, TriggerStatus>),
        (status = 201, description = "Created.", body = Resource<TriggerSpec, TriggerStatus>),
        BadRequest, QuotaExceeded, TooLarge, Unavailable, Internal,
    ),
)]
pub(crate) async fn put_trigger(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
    body: Body,
) -> Result<(StatusCode, Json<Object>), ApiError> {
    declarations::put(&state, Kind::Trigger, &namespace, &name, body).await
}

#[utoipa::path(
    delete,
    path = "/v1/namespaces/{namespace}/triggers/{name}",
    tag = "triggers",
    summary = "Delete a trigger",
    description = "Stops it, forgets its progress and deletes its dead letters (a new trigger of the same name starts clean).",
    params(ResourcePath),
    responses((status = 200, description = "Deleted: the trigger as it was (without status).", body = Resource<TriggerSpec, TriggerStatus>), NotFound, Unavailable, Internal),
)]
pub(crate) async fn delete_trigger(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Json<Object>, ApiError> {
    declarations::delete(&state, Kind::Trigger, &namespace, &name).await
}
