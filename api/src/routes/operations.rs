//! Health, readiness and metrics.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

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
    responses((status = 200, description = "Brokers and triggers are up and the API serves.", body = String, content_type = "text/plain", example = "ok")),
)]
pub(crate) async fn readyz() -> &'static str {
    "ok"
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
