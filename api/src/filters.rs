//! Trying filters without declaring a trigger: `POST /v1/filters/test` and
//! `POST /v1/cesql/evaluate`.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use switchyard_event::Event;
use switchyard_meta::resources::{validate_filters, AttributesFilter, SubscriptionsFilter};

use crate::controller::compile_filter;
use crate::problem::ApiError;

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
    #[schema(value_type = crate::openapi::CloudEvent)]
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
    #[schema(value_type = crate::openapi::CloudEvent)]
    event: Value,
}

async fn read_json<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| {
        ApiError::new(http::StatusCode::PAYLOAD_TOO_LARGE, format!("request body exceeds {MAX_BODY_BYTES} bytes"))
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
}

fn event_from(value: &Value) -> Result<Event, ApiError> {
    switchyard_event::json::from_value(value).map_err(|e| ApiError::bad_request(format!("invalid field 'event': {e}")))
}

/// `{"filter"?, "filters"?, "event"}` → `{"matched", "errors"}`, with a trigger's semantics:
/// a non-empty `filters` overrides `filter`.
#[utoipa::path(
    post,
    path = "/v1/filters/test",
    tag = "filters",
    summary = "Try a trigger filter on an event",
    request_body = FilterTest,
    responses(
        (status = 200, description = "Whether the event passes, and the evaluation errors met.", body = crate::openapi::schemas::FilterTestResult),
        (status = 400, description = "Malformed body, invalid filter (with the position of a CESQL or JSONPath error) or invalid event.", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than 1 MiB.", body = crate::problem::Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn test_filter(body: Body) -> Result<Response, ApiError> {
    let request: FilterTest = read_json(body).await?;
    validate_filters(request.filter.as_ref(), &request.filters, "")
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let event = event_from(&request.event)?;
    let filter = compile_filter(request.filter.as_ref(), &request.filters).map_err(ApiError::bad_request)?;
    let (matched, errors) = filter.explain(&event);
    Ok(Json(json!({ "matched": matched, "errors": errors })).into_response())
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
        (status = 200, description = "The value, or the parse or evaluation error (fail-fast): always 200 for a well-formed request.", body = crate::openapi::schemas::CesqlResult),
        (status = 400, description = "Malformed body or invalid event.", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than 1 MiB.", body = crate::problem::Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn evaluate_cesql(body: Body) -> Result<Response, ApiError> {
    let request: CesqlEvaluate = read_json(body).await?;
    let event = event_from(&request.event)?;
    let answer = match switchyard_cesql::parse(&request.expression) {
        Err(error) => json!({ "result": null, "error": { "kind": "parse", "message": error.to_string() } }),
        Ok(expression) => match expression.evaluate(&event) {
            Ok(value) => json!({ "result": cesql_json(&value), "error": null }),
            Err(error) => json!({ "result": null, "error": { "kind": error.kind.as_str(), "message": error.message } }),
        },
    };
    Ok(Json(answer).into_response())
}

fn cesql_json(value: &switchyard_cesql::Value) -> Value {
    match value {
        switchyard_cesql::Value::Boolean(b) => json!(b),
        switchyard_cesql::Value::Integer(i) => json!(i),
        switchyard_cesql::Value::String(s) => json!(s),
    }
}
