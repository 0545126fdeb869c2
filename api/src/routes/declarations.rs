//! The CRUD handlers every declared kind shares — brokers, triggers, each source kind, KafkaSinks — as
//! generic functions over the engine's [`Kind`]. Each route module only names its paths and
//! documents them.

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use switchyard_engine::{check_namespace, Declaration, Kind};
use switchyard_meta::kafka_sink::{KafkaSinkSpec, KafkaSinkStatus};
use switchyard_meta::resources::{BrokerSpec, TriggerSpec};
use switchyard_meta::status::{BrokerStatus, SourceStatus, TriggerStatus};
use switchyard_meta::{Resource, Upsert};

use crate::problem::ApiError;
use crate::routes::AppState;

/// A declaration as the API answers it: the resource, and (but for a DELETE) the status this
/// node observes. Routes document each variant as `Resource<Spec, Status>` (a source's spec as
/// one of the registered kinds' specs: `crate::openapi::SourceSpec`).
#[derive(Serialize)]
#[serde(untagged)]
pub(crate) enum Object {
    Broker(Resource<BrokerSpec, BrokerStatus>),
    Trigger(Resource<TriggerSpec, TriggerStatus>),
    Source(Resource<serde_json::Value, SourceStatus>),
    KafkaSink(Resource<KafkaSinkSpec, KafkaSinkStatus>),
}

/// Resources of one kind.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(bound = "T: utoipa::ToSchema")]
pub(crate) struct List<T> {
    /// The resources, sorted by namespace and name.
    pub(crate) items: Vec<T>,
}

/// The declaration with its status.
fn with_status(state: &AppState, declaration: Declaration) -> Object {
    let controller = state.engine.controller();
    match declaration {
        Declaration::Broker(broker) => {
            let status = controller.broker_status(&broker, &state.base_url);
            Object::Broker(broker.with_status(status))
        }
        Declaration::Trigger(trigger) => {
            let status = controller.trigger_status(&trigger);
            Object::Trigger(trigger.with_status(status))
        }
        Declaration::Source(source) => {
            let status = controller.source_status(&source, &state.base_url);
            Object::Source(source.source.with_status(status))
        }
        Declaration::KafkaSink(sink) => {
            let status = controller.kafka_sink_status(&sink, &state.base_url);
            Object::KafkaSink(sink.with_status(status))
        }
    }
}

/// The declaration as it was declared (the answer to a DELETE).
fn without_status(declaration: Declaration) -> Object {
    match declaration {
        Declaration::Broker(broker) => Object::Broker(broker.unobserved()),
        Declaration::Trigger(trigger) => Object::Trigger(trigger.unobserved()),
        Declaration::Source(source) => Object::Source(source.source.unobserved()),
        Declaration::KafkaSink(sink) => Object::KafkaSink(sink.unobserved()),
    }
}

fn not_found(kind: Kind, namespace: &str, name: &str) -> ApiError {
    let what = match kind {
        Kind::Broker | Kind::Trigger => kind.name().to_ascii_lowercase(),
        Kind::Source(_) | Kind::KafkaSink => kind.name().to_owned(),
    };
    ApiError::not_found(format!("{what} '{namespace}/{name}' does not exist"))
}

/// A declared kind named by its REST path segment (`pingsources`).
pub(crate) fn kind(plural: &str) -> Result<Kind, ApiError> {
    Kind::by_plural(plural).ok_or_else(|| {
        let known: Vec<&str> = Kind::sources().map(Kind::plural).collect();
        ApiError::not_found(format!("no such resource kind '{plural}' (sources: {})", known.join(", ")))
    })
}

/// A REST request's body, up to `http.max_api_body_bytes` (the server refused a longer
/// `Content-Length` before the handler ran; this cuts a chunked body off at the same limit).
pub(crate) async fn read_body(state: &AppState, body: Body) -> Result<Bytes, ApiError> {
    let limit = state.max_api_body_bytes;
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::too_large(format!("the request body exceeds the limit of {limit} bytes (http.max_api_body_bytes)"))
    })
}

/// `GET …/{plural}/{name}`.
pub(crate) fn get(state: &AppState, kind: Kind, namespace: &str, name: &str) -> Result<Json<Object>, ApiError> {
    let declaration = state.engine.controller().get(kind, namespace, name);
    let declaration = declaration.ok_or_else(|| not_found(kind, namespace, name))?;
    Ok(Json(with_status(state, declaration)))
}

/// `GET …/{plural}` of a namespace (checked) or of every namespace.
pub(crate) fn list(state: &AppState, kind: Kind, namespace: Option<&str>) -> Result<Json<List<Object>>, ApiError> {
    if let Some(namespace) = namespace {
        check_namespace(namespace)?;
    }
    let declarations = state.engine.controller().list(kind, namespace);
    Ok(Json(List { items: declarations.into_iter().map(|d| with_status(state, d)).collect() }))
}

/// `PUT …/{plural}/{name}`: 201 created or 200 replaced.
pub(crate) async fn put(
    state: &AppState,
    kind: Kind,
    namespace: &str,
    name: &str,
    body: Body,
) -> Result<(StatusCode, Json<Object>), ApiError> {
    let body = read_body(state, body).await?;
    let (declaration, upsert) = state.engine.controller().put(kind, namespace, name, &body).await?;
    let status = match upsert {
        Upsert::Created => StatusCode::CREATED,
        Upsert::Replaced => StatusCode::OK,
    };
    Ok((status, Json(with_status(state, declaration))))
}

/// `DELETE …/{plural}/{name}`: the resource as it was.
pub(crate) async fn delete(
    state: &AppState,
    kind: Kind,
    namespace: &str,
    name: &str,
) -> Result<Json<Object>, ApiError> {
    let deleted = state.engine.controller().delete(kind, namespace, name).await?;
    let deleted = deleted.ok_or_else(|| not_found(kind, namespace, name))?;
    Ok(Json(without_status(deleted)))
}
