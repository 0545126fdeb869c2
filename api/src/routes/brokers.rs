//! Brokers (Knative `eventing.knative.dev/v1` Broker): `/v1/namespaces/{namespace}/brokers`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use switchyard_engine::Kind;
use switchyard_meta::resources::{BrokerSpec, Submission};

use switchyard_meta::status::BrokerStatus;
use switchyard_meta::Resource;

use crate::openapi::{NamespacePath, ResourcePath};
use crate::problem::{ApiError, BadRequest, Internal, NotFound, QuotaExceeded, TooLarge, Unavailable};
use crate::routes::declarations::{self, List, Object};
use crate::routes::AppState;

#[utoipa::path(
    get,
    path = "/v1/brokers",
    tag = "brokers",
    summary = "List the brokers of every namespace",
    responses((status = 200, description = "Every broker, with its status.", body = List<Resource<BrokerSpec, BrokerStatus>>), Internal),
)]
pub(crate) async fn list_all_brokers(State(state): State<Arc<AppState>>) -> Result<Json<List<Object>>, ApiError> {
    declarations::list(&state, Kind::Broker, None)
}

#[utoipa::path(
    get,
    path = "/v1/namespaces/{namespace}/brokers",
    tag = "brokers",
    summary = "List the brokers of a namespace",
    description = "Each with its status: `status.address.url` is the broker's ingest URL.",
    params(NamespacePath),
    responses((status = 200, description = "The namespace's brokers, with their status.", body = List<Resource<BrokerSpec, BrokerStatus>>), BadRequest, Internal),
)]
pub(crate) async fn list_brokers(
    State(state): State<Arc<AppState>>,
    Path(namespace): Path<String>,
) -> Result<Json<List<Object>>, ApiError> {
    declarations::list(&state, Kind::Broker, Some(&namespace))
}

#[utoipa::path(
    get,
    path = "/v1/namespaces/{namespace}/brokers/{name}",
    tag = "brokers",
    summary = "Get a broker",
    params(ResourcePath),
    responses((status = 200, description = "The broker, with its status; `status.address.url` is its ingest URL.", body = Resource<BrokerSpec, BrokerStatus>), NotFound, Internal),
)]
pub(crate) async fn get_broker(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Json<Object>, ApiError> {
    declarations::get(&state, Kind::Broker, &namespace, &name)
}

#[utoipa::path(
    put,
    path = "/v1/namespaces/{namespace}/brokers/{name}",
    tag = "brokers",
    summary = "Create or replace a broker",
    description = "Answered once the broker takes events on this node.",
    params(ResourcePath),
    request_body = Submission<BrokerSpec>,
    responses(
        (status = 200, description = "Replaced.", body = Resource<BrokerSpec, BrokerStatus>),
        (status = 201, description = "Created.", body = Resource<BrokerSpec, BrokerStatus>),
        BadRequest, QuotaExceeded, TooLarge, Unavailable, Internal,
    ),
)]
pub(crate) async fn put_broker(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
    body: Body,
) -> Result<(StatusCode, Json<Object>), ApiError> {
    declarations::put(&state, Kind::Broker, &namespace, &name, body).await
}

#[utoipa::path(
    delete,
    path = "/v1/namespaces/{namespace}/brokers/{name}",
    tag = "brokers",
    summary = "Delete a broker and its events",
    description = "Its triggers stay declared, not ready, until a broker of that name exists again (as in Knative).",
    params(ResourcePath),
    responses((status = 200, description = "Deleted: the broker as it was (without status).", body = Resource<BrokerSpec, BrokerStatus>), NotFound, Unavailable, Internal),
)]
pub(crate) async fn delete_broker(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Json<Object>, ApiError> {
    declarations::delete(&state, Kind::Broker, &namespace, &name).await
}
