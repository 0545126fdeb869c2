//! EventPolicies (Knative `eventing.knative.dev/v1alpha1` EventPolicy):
//! `/v1/namespaces/{namespace}/eventpolicies`. Which senders a namespace's brokers admit; see
//! `switchyard_meta::event_policy`, and `ingest.rs`, which enforces them.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use switchyard_engine::Kind;
use switchyard_meta::event_policy::{EventPolicySpec, EventPolicyStatus};
use switchyard_meta::resources::Submission;
use switchyard_meta::Resource;

use crate::openapi::{NamespacePath, ResourcePath};
use crate::problem::{ApiError, BadRequest, Internal, NotFound, QuotaExceeded, TooLarge, Unavailable};
use crate::routes::declarations::{self, List, Object};
use crate::routes::AppState;

#[utoipa::path(
    get,
    path = "/v1/eventpolicies",
    tag = "policies",
    summary = "List the EventPolicies of every namespace",
    responses((status = 200, description = "Every EventPolicy, with its status.", body = List<Resource<EventPolicySpec, EventPolicyStatus>>), Internal),
)]
pub(crate) async fn list_all_event_policies(
    State(state): State<Arc<AppState>>,
) -> Result<Json<List<Object>>, ApiError> {
    declarations::list(&state, Kind::EventPolicy, None)
}

#[utoipa::path(
    get,
    path = "/v1/namespaces/{namespace}/eventpolicies",
    tag = "policies",
    summary = "List the EventPolicies of a namespace",
    params(NamespacePath),
    responses((status = 200, description = "The namespace's EventPolicies, with their status.", body = List<Resource<EventPolicySpec, EventPolicyStatus>>), BadRequest, Internal),
)]
pub(crate) async fn list_event_policies(
    State(state): State<Arc<AppState>>,
    Path(namespace): Path<String>,
) -> Result<Json<List<Object>>, ApiError> {
    declarations::list(&state, Kind::EventPolicy, Some(&namespace))
}

#[utoipa::path(
    get,
    path = "/v1/namespaces/{namespace}/eventpolicies/{name}",
    tag = "policies",
    summary = "Get an EventPolicy",
    params(ResourcePath),
    responses((status = 200, description = "The EventPolicy, with the brokers it applies to now.", body = Resource<EventPolicySpec, EventPolicyStatus>), NotFound, Internal),
)]
pub(crate) async fn get_event_policy(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Json<Object>, ApiError> {
    declarations::get(&state, Kind::EventPolicy, &namespace, &name)
}

#[utoipa::path(
    put,
    path = "/v1/namespaces/{namespace}/eventpolicies/{name}",
    tag = "policies",
    summary = "Create or replace an EventPolicy",
    description = "A broker that one or more EventPolicies apply to (`spec.to`: brokers by `ref` or label `selector`; every broker of the namespace when empty) admits only requests whose sender's subject matches a `spec.from[].sub` of one of them (exact, or a prefix ending in `*`; a static token's subject is its name, an OIDC token's its `sub`), and only the events that pass that policy's `filters`; others are refused with 403.",
    params(ResourcePath),
    request_body = Submission<EventPolicySpec>,
    responses(
        (status = 200, description = "Replaced.", body = Resource<EventPolicySpec, EventPolicyStatus>),
        (status = 201, description = "Created.", body = Resource<EventPolicySpec, EventPolicyStatus>),
        BadRequest, QuotaExceeded, TooLarge, Unavailable, Internal,
    ),
)]
pub(crate) async fn put_event_policy(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
    body: Body,
) -> Result<(StatusCode, Json<Object>), ApiError> {
    declarations::put(&state, Kind::EventPolicy, &namespace, &name, body).await
}

#[utoipa::path(
    delete,
    path = "/v1/namespaces/{namespace}/eventpolicies/{name}",
    tag = "policies",
    summary = "Delete an EventPolicy",
    params(ResourcePath),
    responses((status = 200, description = "Deleted: the EventPolicy as it was (without status).", body = Resource<EventPolicySpec, EventPolicyStatus>), NotFound, Unavailable, Internal),
)]
pub(crate) async fn delete_event_policy(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Json<Object>, ApiError> {
    declarations::delete(&state, Kind::EventPolicy, &namespace, &name).await
}
