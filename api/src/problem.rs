//! Every HTTP error as RFC 9457 `application/problem+json`. 4xx bodies tell the client what to
//! fix; 5xx bodies say "internal error" and the detail goes to the log. The error answers an
//! operation documents come from the sets here, so each is written once.

use std::collections::BTreeMap;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use switchyard_engine::ControlError;
use switchyard_log::{LogError, Refusal};
use utoipa::openapi::{RefOr, ResponseBuilder};

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

    /// 413.
    pub fn too_large(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, detail)
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

    /// What it says.
    pub fn detail(&self) -> &str {
        &self.detail
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

impl From<LogError> for ApiError {
    fn from(error: LogError) -> ApiError {
        match error {
            LogError::Unavailable(_) => ApiError::unavailable(error.to_string(), 1),
            _ => ApiError::internal(error),
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(error: ControlError) -> ApiError {
        match error {
            ControlError::Invalid(invalid) => ApiError::bad_request(invalid.to_string()),
            ControlError::Log(error) => error.into(),
            // Kubernetes answers a create beyond a ResourceQuota the same way.
            quota @ ControlError::QuotaExceeded(_) => ApiError::new(StatusCode::FORBIDDEN, quota.to_string()),
            not_active @ ControlError::NotActive { .. } => ApiError::unavailable(not_active.to_string(), 5),
        }
    }
}

impl From<switchyard_meta::ValidationError> for ApiError {
    fn from(error: switchyard_meta::ValidationError) -> ApiError {
        ApiError::bad_request(error.to_string())
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> ApiError {
        match refusal {
            Refusal::Stopping => ApiError::unavailable(refusal.to_string(), 5),
            Refusal::UnknownBroker(_) => ApiError::not_found(refusal.to_string()),
            Refusal::Limit(limit) => ApiError::too_large(limit.to_string()),
            Refusal::Unavailable(_) => ApiError::unavailable(refusal.to_string(), 1),
        }
    }
}

/// One documented error answer: a status and what it means, with a problem+json body.
fn problem_response(status: u16, description: &str) -> (String, RefOr<utoipa::openapi::Response>) {
    let response = ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name("Problem"))))
                .build(),
        )
        .build();
    (status.to_string(), RefOr::T(response))
}

/// The answers of an operation that needs a token: 401 and 403.
pub(crate) fn auth_responses() -> [(String, RefOr<utoipa::openapi::Response>); 2] {
    [
        problem_response(
            401,
            "No valid token (`WWW-Authenticate: Bearer` says why: missing, unknown, expired, wrong audience…).",
        ),
        problem_response(
            403,
            "The token's role does not reach this namespace, broker or action; or the broker's EventPolicies do not admit the sender or the event; or a change came with a foreign `Origin`.",
        ),
    ]
}

/// Declares a documented error answer: a type to list in an operation's `responses(…)`.
macro_rules! error_response {
    ($(#[$doc:meta])* $name:ident, $status:literal, $description:literal) => {
        $(#[$doc])*
        pub(crate) struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
                BTreeMap::from([problem_response($status, $description)])
            }
        }
    };
}

error_response!(
    /// 400: a malformed body, or a field, name or query value that is not valid.
    BadRequest,
    400,
    "Invalid body, name, field or query; the detail names what to fix (a CESQL or JSONPath error with its position)."
);
error_response!(
    /// 403: a create beyond the namespace's quota.
    QuotaExceeded,
    403,
    "The namespace already holds its quota of this kind (brokers, triggers or sources); the detail names the quota's setting."
);
error_response!(
    /// 404: what the path names does not exist.
    NotFound,
    404,
    "What the path names does not exist; the detail says which."
);
error_response!(
    /// 409: the trigger cannot do it now.
    Conflict,
    409,
    "The trigger is not running (its broker does not exist): nothing can be redelivered now."
);
error_response!(
    /// 413: a body over its limit.
    TooLarge,
    413,
    "The body, or an event in it, is over its limit; the detail names the limit's setting."
);
error_response!(
    /// 415: a media type that is not read here.
    UnsupportedMediaType,
    415,
    "A body in a media type this endpoint does not read."
);
error_response!(
    /// 503: not now.
    Unavailable,
    503,
    "Storage cannot answer now, the node is stopping, or a declaration is stored but not active yet; `Retry-After` says when to retry."
);
error_response!(
    /// 500: a bug or an unexpected failure; the detail is in the server log.
    Internal,
    500,
    "Internal error (the detail is in the server log)."
);
