//! Health, readiness and metrics.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::problem::ApiError;
use crate::routes::AppState;

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    summary = "Liveness",
    responses((status = 200, description = "The process is up.", body = String, content_type = "text/plain", example = "ok")),
)]
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    summary = "Readiness",
    responses(
        (status = 200, description = "Brokers and triggers are up and the API serves.", body = String, content_type = "text/plain", example = "ok"),
        (status = 503, description = "The node is stopping (from SIGTERM on, while deliveries drain): send it nothing new.", body = crate::problem::Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    // The HTTP server answers only once the engine has started, so the one time not to be
    // ready is the stop.
    if state.engine.admission().is_stopping() {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the node is stopping").into_response();
    }
    "ok".into_response()
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics",
    responses((status = 200, description = "Every metric in the Prometheus text exposition format.", body = String, content_type = "text/plain; version=0.0.4; charset=utf-8")),
)]
pub(crate) async fn metrics_endpoint(State(state): State<Arc<AppState>>) -> Response {
    let text = crate::metrics::render(&state.engine.backlogs().await);
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))], text)
        .into_response()
}
