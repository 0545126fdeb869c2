//! KafkaSinks (Knative `eventing.knative.dev/v1alpha1` KafkaSink):
//! `/v1/namespaces/{namespace}/kafkasinks`, and each sink's address,
//! `POST /kafkasinks/{namespace}/{name}`, which writes the events it is sent to the sink's topic
//! and answers 202 only once Kafka acknowledged them (`acks=all`) — what a trigger whose
//! subscriber names a KafkaSink delivers to, as Knative's triggers deliver to a KafkaSink's
//! address.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use switchyard_engine::{KafkaSinkError, Kind};
use switchyard_event::http::ContentMode;
use switchyard_event::limits::LimitExceeded;
use switchyard_event::{Event, EventError};
use switchyard_meta::kafka_sink::{KafkaSinkSpec, KafkaSinkStatus};
use switchyard_meta::resources::Submission;
use switchyard_meta::Resource;

use crate::openapi::{BinaryModeHeaders, CloudEvent, EventData, NamespacePath, ResourcePath};
use crate::problem::{
    ApiError, BadRequest, Internal, NotFound, QuotaExceeded, TooLarge, Unavailable, UnsupportedMediaType,
};
use crate::routes::declarations::{self, List, Object};
use crate::routes::ingest::event_error;
use crate::routes::{read_within, AppState};

/// How long a write to Kafka may take before the sender is answered 503: within a trigger's
/// default attempt timeout, so that a delivery fails as itself and not as a timeout.
const WRITE_TIMEOUT: Duration = Duration::from_secs(25);

#[utoipa::path(
    get,
    path = "/v1/kafkasinks",
    tag = "sinks",
    summary = "List the KafkaSinks of every namespace",
    responses((status = 200, description = "Every KafkaSink, with its status.", body = List<Resource<KafkaSinkSpec, KafkaSinkStatus>>), Internal),
)]
pub(crate) async fn list_all_kafka_sinks(State(state): State<Arc<AppState>>) -> Result<Json<List<Object>>, ApiError> {
    declarations::list(&state, Kind::KafkaSink, None)
}

#[utoipa::path(
    get,
    path = "/v1/namespaces/{namespace}/kafkasinks",
    tag = "sinks",
    summary = "List the KafkaSinks of a namespace",
    params(NamespacePath),
    responses((status = 200, description = "The namespace's KafkaSinks, with their status.", body = List<Resource<KafkaSinkSpec, KafkaSinkStatus>>), BadRequest, Internal),
)]
pub(crate) async fn list_kafka_sinks(
    State(state): State<Arc<AppState>>,
    Path(namespace): Path<String>,
) -> Result<Json<List<Object>>, ApiError> {
    declarations::list(&state, Kind::KafkaSink, Some(&namespace))
}

#[utoipa::path(
    get,
    path = "/v1/namespaces/{namespace}/kafkasinks/{name}",
    tag = "sinks",
    summary = "Get a KafkaSink",
    params(ResourcePath),
    responses((status = 200, description = "The KafkaSink, with its status; `status.address.url` is where events are written to its topic.", body = Resource<KafkaSinkSpec, KafkaSinkStatus>), NotFound, Internal),
)]
pub(crate) async fn get_kafka_sink(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Json<Object>, ApiError> {
    declarations::get(&state, Kind::KafkaSink, &namespace, &name)
}

#[utoipa::path(
    put,
    path = "/v1/namespaces/{namespace}/kafkasinks/{name}",
    tag = "sinks",
    summary = "Create or replace a KafkaSink",
    description = "With `numPartitions` and `replicationFactor` the topic is created if missing; without both it must exist (status `TopicNotPresent` until it does). A trigger's `subscriber.ref` (or `delivery.deadLetterSink.ref`), or a source's `sink.ref`, names it: `{\"apiVersion\": \"eventing.knative.dev/v1alpha1\", \"kind\": \"KafkaSink\", \"name\": …}`.",
    params(ResourcePath),
    request_body = Submission<KafkaSinkSpec>,
    responses(
        (status = 200, description = "Replaced.", body = Resource<KafkaSinkSpec, KafkaSinkStatus>),
        (status = 201, description = "Created.", body = Resource<KafkaSinkSpec, KafkaSinkStatus>),
        BadRequest, QuotaExceeded, TooLarge, Unavailable, Internal,
    ),
)]
pub(crate) async fn put_kafka_sink(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
    body: Body,
) -> Result<(StatusCode, Json<Object>), ApiError> {
    declarations::put(&state, Kind::KafkaSink, &namespace, &name, body).await
}

#[utoipa::path(
    delete,
    path = "/v1/namespaces/{namespace}/kafkasinks/{name}",
    tag = "sinks",
    summary = "Delete a KafkaSink",
    description = "Its topic and the records in it stay: they are the cluster's.",
    params(ResourcePath),
    responses((status = 200, description = "Deleted: the KafkaSink as it was (without status).", body = Resource<KafkaSinkSpec, KafkaSinkStatus>), NotFound, Unavailable, Internal),
)]
pub(crate) async fn delete_kafka_sink(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Json<Object>, ApiError> {
    declarations::delete(&state, Kind::KafkaSink, &namespace, &name).await
}

/// Write events to a KafkaSink's topic.
///
/// Binary, structured or batch mode (CloudEvents HTTP binding), as ingest takes them; each
/// event becomes one record in the sink's content mode (Kafka binding), and the answer is 202
/// only once Kafka acknowledged every one (`acks=all`).
#[utoipa::path(
    post,
    path = "/kafkasinks/{namespace}/{name}",
    tag = "sinks",
    params(ResourcePath, BinaryModeHeaders),
    request_body(
        description = "As for ingest: binary mode (any media type but the two below), one structured event, or a batch.",
        content(
            (CloudEvent = "application/cloudevents+json"),
            (Vec<CloudEvent> = "application/cloudevents-batch+json"),
            (EventData = "*/*"),
        ),
    ),
    responses(
        (status = 202, description = "Every event is in the topic."),
        BadRequest, NotFound, TooLarge, UnsupportedMediaType, Unavailable, Internal,
    ),
)]
pub(crate) async fn write_to_kafka_sink(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // Refused before the body is read.
    if state.engine.controller().get(Kind::KafkaSink, &namespace, &name).is_none() {
        return Err(ApiError::not_found(format!("kafkasink '{namespace}/{name}' does not exist")));
    }
    let limits = state.engine.admission().limits();
    let mode = switchyard_event::http::content_mode(headers.get(header::CONTENT_TYPE)).map_err(event_error)?;
    let (limit, setting) = match mode {
        ContentMode::Batched => (state.max_batch_bytes, "max_batch_bytes"),
        ContentMode::Binary | ContentMode::Structured => (limits.max_event_bytes, "max_event_bytes"),
    };
    let too_large = || ApiError::too_large(format!("the request body exceeds the limit of {limit} bytes ({setting})"));
    let body = read_within(&headers, body, limit, too_large).await?;
    let events =
        switchyard_event::http::decode_request_at_most(&headers, body, limits.max_batch_events).map_err(|error| {
            match error {
                EventError::TooManyEvents { count, limit } => {
                    ApiError::too_large(LimitExceeded::TooManyEvents { count, limit }.to_string())
                }
                error => event_error(error),
            }
        })?;
    limits.check_received(&events).map_err(|limit| ApiError::too_large(limit.to_string()))?;
    write(&state, &namespace, &name, &events).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// Writes `events` to KafkaSink `namespace/name`, failing as its HTTP address answers.
pub(crate) async fn write(state: &AppState, namespace: &str, name: &str, events: &[Event]) -> Result<(), ApiError> {
    match state.engine.kafka_sinks().write(namespace, name, events, WRITE_TIMEOUT).await {
        Ok(()) => Ok(()),
        Err(KafkaSinkError::NotFound(_)) => {
            Err(ApiError::not_found(format!("kafkasink '{namespace}/{name}' does not exist")))
        }
        Err(KafkaSinkError::Refused(why)) => Err(ApiError::bad_request(why)),
        Err(KafkaSinkError::Unavailable(why)) => Err(ApiError::unavailable(why, 1)),
    }
}
