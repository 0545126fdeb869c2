//! The CRUD handlers every declared kind shares — brokers, triggers, each source kind, KafkaSinks — as
//! generic functions over the engine's [`Kind`]. Each route module only names its paths and
//! documents them.

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use switchyard_engine::{check_namespace, Declaration, Kind};
use switchyard_meta::event_policy::{EventPolicySpec, EventPolicyStatus};
use switchyard_meta::kafka_sink::{KafkaSinkSpec, KafkaSinkStatus};
use switchyard_meta::resources::{BrokerSpec, TriggerSpec};
use switchyard_meta::status::{BrokerStatus, SourceStatus, TriggerStatus};
use switchyard_meta::{Resource, Upsert, REDACTED};

use crate::problem::ApiError;
use crate::routes::AppState;

/// A declaration as the API answers it: the resource, and (but for a DELETE) the status this
/// node observes, with every secret redacted ([`switchyard_meta::secret::redact`]). Routes
/// document each variant as `Resource<Spec, Status>` (a source's spec as one of the registered
/// kinds' specs: `crate::openapi::SourceSpec`).
pub(crate) struct Object(Unredacted);

impl Serialize for Object {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut value = serde_json::to_value(&self.0).map_err(serde::ser::Error::custom)?;
        switchyard_meta::secret::redact(&mut value);
        value.serialize(serializer)
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum Unredacted {
    Broker(Resource<BrokerSpec, BrokerStatus>),
    Trigger(Resource<TriggerSpec, TriggerStatus>),
    Source(Resource<serde_json::Value, SourceStatus>),
    KafkaSink(Resource<KafkaSinkSpec, KafkaSinkStatus>),
    EventPolicy(Resource<EventPolicySpec, EventPolicyStatus>),
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
    Object(match declaration {
        Declaration::Broker(broker) => {
            let status = controller.broker_status(&broker, &state.base_url);
            Unredacted::Broker(broker.with_status(status))
        }
        Declaration::Trigger(trigger) => {
            let status = controller.trigger_status(&trigger);
            Unredacted::Trigger(trigger.with_status(status))
        }
        Declaration::Source(source) => {
            let status = controller.source_status(&source, &state.base_url);
            Unredacted::Source(source.source.with_status(status))
        }
        Declaration::KafkaSink(sink) => {
            let status = controller.kafka_sink_status(&sink, &state.base_url);
            Unredacted::KafkaSink(sink.with_status(status))
        }
        Declaration::EventPolicy(policy) => {
            let status = controller.event_policy_status(&policy);
            Unredacted::EventPolicy(policy.with_status(status))
        }
    })
}

/// The declaration as it was declared (the answer to a DELETE).
fn without_status(declaration: Declaration) -> Object {
    Object(unobserved(declaration))
}

fn unobserved(declaration: Declaration) -> Unredacted {
    match declaration {
        Declaration::Broker(broker) => Unredacted::Broker(broker.unobserved()),
        Declaration::Trigger(trigger) => Unredacted::Trigger(trigger.unobserved()),
        Declaration::Source(source) => Unredacted::Source(source.source.unobserved()),
        Declaration::KafkaSink(sink) => Unredacted::KafkaSink(sink.unobserved()),
        Declaration::EventPolicy(policy) => Unredacted::EventPolicy(policy.unobserved()),
    }
}

/// `body` with what reads redacted put back from the declaration it replaces, if it has any
/// redacted value (a GET edited and submitted again).
fn restore_redacted(state: &AppState, kind: Kind, namespace: &str, name: &str, body: Bytes) -> Result<Bytes, ApiError> {
    let marked = |marker: &[u8]| body.windows(marker.len()).any(|window| window == marker);
    if !marked(REDACTED.as_bytes()) && !marked(b"%3Credacted%3E") {
        return Ok(body);
    }
    // Not JSON (or not a redacted one): the controller refuses it with its usual words.
    let Ok(mut submitted) = serde_json::from_slice::<serde_json::Value>(&body) else { return Ok(body) };
    let stored = state
        .engine
        .controller()
        .get(kind, namespace, name)
        .map(|declaration| serde_json::to_value(unobserved(declaration)))
        .transpose()
        .map_err(ApiError::internal)?;
    // Only the spec is stored; the rest of a read (status, server-set metadata) is not taken.
    if let Some(spec) = submitted.get_mut("spec") {
        let stored_spec = stored.as_ref().and_then(|stored| stored.get("spec"));
        switchyard_meta::secret::restore(spec, stored_spec, "spec")
            .map_err(|error| ApiError::bad_request(error.to_string()))?;
    }
    serde_json::to_vec(&submitted).map(Bytes::from).map_err(ApiError::internal)
}

fn not_found(kind: Kind, namespace: &str, name: &str) -> ApiError {
    let what = match kind {
        Kind::Broker | Kind::Trigger => kind.name().to_ascii_lowercase(),
        Kind::Source(_) | Kind::KafkaSink | Kind::EventPolicy => kind.name().to_owned(),
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
    let body = restore_redacted(state, kind, namespace, name, read_body(state, body).await?)?;
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
