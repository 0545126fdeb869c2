//! Every HTTP error as RFC 9457 `application/problem+json`. 4xx bodies tell the client what to
//! fix; 5xx bodies say "internal error" and the detail goes to the log.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    detail: String,
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

/// An RFC 9457 problem: the body of every error answer (`application/problem+json`).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(examples(json!({
    "type": "about:blank",
    "title": "Not Found",
    "status": 404,
    "detail": "broker 'default/b' does not exist"
})))]
pub(crate) struct Problem<'a> {
    /// Always `about:blank`: the status says what kind of problem it is.
    #[serde(rename = "type")]
    ty: &'static str,
    /// The status's reason phrase.
    title: &'a str,
    /// The HTTP status code.
    status: u16,
    /// What went wrong and, for a 4xx, what to fix (a 5xx says only "internal error").
    detail: &'a str,
}

impl ApiError {
    /// An answer with this status and a detail for the client.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> ApiError {
        ApiError { status, detail: detail.into(), headers: Vec::new() }
    }

    /// 400.
    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, detail)
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, detail)
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(detail: impl Into<String>, retry_after_secs: u32) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, detail)
            .with_header(header::RETRY_AFTER, HeaderValue::from(retry_after_secs))
    }

    /// 500: the detail is logged, the client sees "internal error".
    pub fn internal(error: impl std::fmt::Display) -> ApiError {
        tracing::error!(%error, "internal error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> ApiError {
        self.headers.push((name, value));
        self
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = Problem {
            ty: "about:blank",
            title: self.status.canonical_reason().unwrap_or("error"),
            status: self.status.as_u16(),
            detail: &self.detail,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        response
    }
}
