//! Trying filters without declaring a trigger: `POST /v1/filters/test` and
//! `POST /v1/cesql/evaluate`.

use axum::body::Body;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchyard_dispatcher::Filter;
use switchyard_event::Event;
use switchyard_meta::resources::{AttributesFilter, SubscriptionsFilter};

use crate::openapi::CloudEvent;
use crate::problem::{ApiError, BadRequest, TooLarge};

/// Largest request body.
const MAX_BODY_BYTES: usize = 1 << 20;

/// A filter to try on an event, with a trigger's semantics.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilterTest {
    /// Knative attribute filter.
    #[serde(default)]
    filter: Option<AttributesFilter>,
    /// Subscriptions-API filters; a non-empty list overrides `filter`.
    #[serde(default)]
    filters: Vec<SubscriptionsFilter>,
    /// The event, in the JSON event format.
    #[schema(value_type = CloudEvent)]
    event: Value,
}

/// A CESQL expression to evaluate on an event.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CesqlEvaluate {
    /// A CESQL v1.0 expression.
    #[schema(examples("type LIKE 'order.%'"))]
    expression: String,
    /// The event, in the JSON event format.
    #[schema(value_type = CloudEvent)]
    event: Value,
}

/// The answer of `POST /v1/filters/test`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct FilterTestResult {
    /// Whether the event passes, with a trigger's semantics.
    matched: bool,
    /// Evaluation errors met on the way (e.g. a CESQL error, which counts as no match).
    errors: Vec<String>,
}

/// The answer of `POST /v1/cesql/evaluate`: exactly one of `result` and `error` is non-null.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct CesqlResult {
    /// The value of the expression.
    #[schema(required)]
    result: Option<CesqlValue>,
    /// Why there is no value.
    #[schema(required)]
    error: Option<CesqlError>,
}

/// A CESQL value.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub(crate) enum CesqlValue {
    /// Boolean.
    Boolean(bool),
    /// Integer (32-bit).
    Integer(i32),
    /// String.
    String(String),
}

impl From<switchyard_cesql::Value> for CesqlValue {
    fn from(value: switchyard_cesql::Value) -> CesqlValue {
        match value {
            switchyard_cesql::Value::Boolean(b) => CesqlValue::Boolean(b),
            switchyard_cesql::Value::Integer(i) => CesqlValue::Integer(i),
            switchyard_cesql::Value::String(s) => CesqlValue::String(s),
        }
    }
}

/// A CESQL error (the TCK's error types).
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct CesqlError {
    /// `parse`, `math`, `cast`, `missingAttribute`, `missingFunction`, `functionEvaluation` or
    /// `generic`.
    #[schema(value_type = CesqlErrorKind)]
    kind: &'static str,
    /// What went wrong, with the position for a parse error.
    message: String,
}

/// The kind of a CESQL error.
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // described: the kinds are `switchyard_cesql::ErrorKind::as_str`
pub(crate) enum CesqlErrorKind {
    /// The expression does not parse.
    Parse,
    /// Arithmetic (e.g. division by zero).
    Math,
    /// A value cannot be cast.
    Cast,
    /// The event has no such attribute.
    MissingAttribute,
    /// No such function.
    MissingFunction,
    /// A function failed.
    FunctionEvaluation,
    /// Anything else.
    Generic,
}

async fn read_json<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::too_large(format!("request body exceeds {MAX_BODY_BYTES} bytes")))?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
}

fn event_from(value: &Value) -> Result<Event, ApiError> {
    switchyard_event::json::from_value(value).map_err(|e| ApiError::bad_request(format!("invalid field 'event': {e}")))
}

/// `{"filter"?, "filters"?, "event"}` → `{"matched", "errors"}`, with a trigger's semantics:
/// a non-empty `filters` overrides `filter`. The filter is compiled as a trigger's is.
#[utoipa::path(
    post,
    path = "/v1/filters/test",
    tag = "filters",
    summary = "Try a trigger filter on an event",
    request_body = FilterTest,
    responses(
        (status = 200, description = "Whether the event passes, and the evaluation errors met.", body = FilterTestResult),
        BadRequest, TooLarge,
    ),
)]
pub(crate) async fn test_filter(body: Body) -> Result<Json<FilterTestResult>, ApiError> {
    let request: FilterTest = read_json(body).await?;
    let filter = Filter::compile(request.filter.as_ref(), &request.filters, "")?;
    let event = event_from(&request.event)?;
    let (matched, errors) = filter.explain(&event);
    Ok(Json(FilterTestResult { matched, errors }))
}

/// `{"expression", "event"}` → `{"result", "error"}`, evaluated fail-fast. Always 200 for a
/// well-formed request: a parse error is an answer, with kind `parse`.
#[utoipa::path(
    post,
    path = "/v1/cesql/evaluate",
    tag = "filters",
    summary = "Evaluate a CESQL expression on an event",
    request_body = CesqlEvaluate,
    responses(
        (status = 200, description = "The value, or the parse or evaluation error (fail-fast): always 200 for a well-formed request.", body = CesqlResult),
        BadRequest, TooLarge,
    ),
)]
pub(crate) async fn evaluate_cesql(body: Body) -> Result<Json<CesqlResult>, ApiError> {
    let request: CesqlEvaluate = read_json(body).await?;
    let event = event_from(&request.event)?;
    let answer = match switchyard_cesql::parse(&request.expression) {
        Err(error) => {
            CesqlResult { result: None, error: Some(CesqlError { kind: "parse", message: error.to_string() }) }
        }
        Ok(expression) => match expression.evaluate(&event) {
            Ok(value) => CesqlResult { result: Some(value.into()), error: None },
            Err(error) => CesqlResult {
                result: None,
                error: Some(CesqlError { kind: error.kind.as_str(), message: error.message }),
            },
        },
    };
    Ok(Json(answer))
}
