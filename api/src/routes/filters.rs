//! Trying filters without declaring a trigger: `POST /v1/filters/test` and
//! `POST /v1/cesql/evaluate`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchyard_dispatcher::Filter;
use switchyard_event::Event;
use switchyard_meta::resources::{AttributesFilter, SubscriptionsFilter};

use crate::openapi::CloudEvent;
use crate::problem::{ApiError, BadRequest, TooLarge, Unavailable};
use crate::routes::declarations::read_body;
use crate::routes::AppState;

/// The longest a request may take to decode, compile and evaluate. The filters' own limits
/// and work budgets keep it to milliseconds; this bounds what they do not (decoding a 1 MiB
/// body and its data), on a blocking thread so that the async workers stay free.
const MAX_EVALUATION_TIME: Duration = Duration::from_secs(5);

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

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
}

/// Runs `work` on a blocking thread, within [`MAX_EVALUATION_TIME`].
async fn bounded<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::time::timeout(MAX_EVALUATION_TIME, tokio::task::spawn_blocking(work)).await {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => Err(ApiError::internal(panic)),
        Err(_) => Err(ApiError::unavailable(
            format!(
                "evaluating the filter took longer than {} s (filter test time limit)",
                MAX_EVALUATION_TIME.as_secs()
            ),
            1,
        )),
    }
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
        BadRequest, TooLarge, Unavailable,
    ),
)]
pub(crate) async fn test_filter(
    State(state): State<Arc<AppState>>,
    body: Body,
) -> Result<Json<FilterTestResult>, ApiError> {
    let bytes = read_body(&state, body).await?;
    bounded(move || {
        let request: FilterTest = parse_json(&bytes)?;
        let filter = Filter::compile(request.filter.as_ref(), &request.filters, "")?;
        let event = event_from(&request.event)?;
        let (matched, errors) = filter.explain(&event);
        Ok(Json(FilterTestResult { matched, errors }))
    })
    .await
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
        BadRequest, TooLarge, Unavailable,
    ),
)]
pub(crate) async fn evaluate_cesql(
    State(state): State<Arc<AppState>>,
    body: Body,
) -> Result<Json<CesqlResult>, ApiError> {
    let bytes = read_body(&state, body).await?;
    bounded(move || evaluate_cesql_request(&bytes)).await
}

fn evaluate_cesql_request(bytes: &[u8]) -> Result<Json<CesqlResult>, ApiError> {
    let request: CesqlEvaluate = parse_json(bytes)?;
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
