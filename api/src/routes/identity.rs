//! Identified deliveries' issuer: the OpenID discovery document and the key set that
//! subscribers verify the tokens of deliveries to destinations with an `audience` with
//! (`switchyard_dispatcher::identity`). Both are public: they hold nothing secret, and a
//! verifier has no token for this server.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::routes::AppState;

/// Verifiers fetch these on every unknown `kid`; an hour is what OpenID providers commonly
/// allow, and a key changes only with an operator's restart.
const CACHE_CONTROL: HeaderValue = HeaderValue::from_static("public, max-age=3600");

#[utoipa::path(
    get,
    path = "/.well-known/openid-configuration",
    tag = "identity",
    summary = "OpenID discovery document",
    description = "The OpenID Provider Metadata (OpenID Connect Discovery 1.0) of the issuer of identified \
        deliveries' tokens: `issuer` (their `iss`), `jwks_uri`, and `ES256` as their algorithm.",
    responses((status = 200, description = "The issuer's metadata.", body = Object, content_type = "application/json")),
)]
pub(crate) async fn openid_configuration(State(state): State<Arc<AppState>>) -> Response {
    json(state.issuer.discovery())
}

#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "identity",
    summary = "The token signing key set",
    description = "The JWK Set (RFC 7517) of the public key that signs identified deliveries' tokens: one \
        P-256 key, `use: sig`, `alg: ES256`, its `kid` the RFC 7638 thumbprint.",
    responses((status = 200, description = "The key set.", body = Object, content_type = "application/json")),
)]
pub(crate) async fn jwks(State(state): State<Arc<AppState>>) -> Response {
    json(state.issuer.jwks())
}

fn json(value: serde_json::Value) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json")), (header::CACHE_CONTROL, CACHE_CONTROL)],
        value.to_string(),
    )
        .into_response()
}
