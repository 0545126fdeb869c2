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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterTest {
    #[serde(default)]
    filter: Option<AttributesFilter>,
    #[serde(default)]
    filters: Vec<SubscriptionsFilter>,
    event: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CesqlEvaluate {
    expression: String,
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
