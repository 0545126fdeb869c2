//! The HTTP surface, one module per resource: ingest (`/{namespace}/{broker}`), brokers,
//! triggers, sources and their webhooks, KafkaSinks and their address, dead letters, filters, and operations (health,
//! readiness, metrics, the OpenAPI document). Handlers decode requests and encode answers; what
//! they mean is the engine's.

mod brokers;
mod dead_letters;
mod declarations;
mod event_policies;
mod filters;
mod identity;
mod ingest;
mod kafka_sinks;
mod operations;
mod sources;
mod this_node;

pub(crate) use this_node::NodeAddresses;
mod triggers;

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use switchyard_engine::Engine;
use utoipa::OpenApi;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::problem::ApiError;
use ingest::ingest_endpoint;

/// What every handler shares.
pub struct AppState {
    /// The engine.
    pub engine: Arc<Engine>,
    /// The URL clients reach this server at, for `status.address.url`.
    pub base_url: String,
    /// The largest batch request body (and webhook request body).
    pub max_batch_bytes: usize,
    /// The largest request body of the REST API (`http.max_api_body_bytes`): the HTTP server
    /// holds those routes to it before their handlers read.
    pub max_api_body_bytes: usize,
    /// Authentication, authorization and the browser guards, in front of every route.
    pub guard: Arc<crate::auth::Guard>,
    /// Signs identified deliveries' tokens; its key and discovery document are published.
    pub issuer: Arc<switchyard_dispatcher::identity::Issuer>,
}

/// Which kind of route a request is for, as the HTTP server's limits see it (before routing):
/// the route table below decides, this only mirrors its shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    /// `GET /healthz`, `/readyz`, `/metrics`: exempt from the concurrency limit, so that a
    /// node at its limit is not taken for a dead one.
    Operations,
    /// `/{namespace}/{broker}` (and every method but GET on `/v1/{broker}`), and a KafkaSink's
    /// address `/kafkasinks/{namespace}/{name}`: held to `max_batch_bytes`, and to
    /// `max_event_bytes` by content mode in the handler.
    Ingest,
    /// `/webhooks/…`: held to `max_batch_bytes` (checked by the handler once the source is
    /// known).
    Webhook,
    /// Everything else: the REST API, held to `http.max_api_body_bytes`.
    Api,
}

/// The request's `Content-Length` (hyper has already refused one that is malformed or given
/// twice with different values).
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// A request's body up to `limit` bytes: refused with `too_large` from its `Content-Length`
/// before anything is read, or as soon as a chunked body grows past the limit.
pub(crate) async fn read_within(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    too_large: impl Fn() -> ApiError,
) -> Result<Bytes, ApiError> {
    if content_length(headers).is_some_and(|length| u64::try_from(limit).is_ok_and(|limit| length > limit)) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|_| too_large())
}

impl RouteClass {
    /// The class of a request for `path` with `method`.
    pub fn of(method: &Method, path: &str) -> RouteClass {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match segments.as_slice() {
            ["healthz" | "readyz" | "metrics"] if method == Method::GET || method == Method::HEAD => {
                RouteClass::Operations
            }
            ["webhooks", ..] => RouteClass::Webhook,
            // Not a namespace: a DNS label cannot start with a dot.
            [".well-known", _] => RouteClass::Api,
            ["kafkasinks", _, _] => RouteClass::Ingest,
            // `GET /v1/{sources}` lists sources; any other method there is ingest (see [`api`]).
            ["v1", _] if method == Method::GET => RouteClass::Api,
            [namespace, broker] if !namespace.is_empty() && !broker.is_empty() => RouteClass::Ingest,
            _ => RouteClass::Api,
        }
    }
}

/// The whole HTTP API: the routes of [`api`], and a problem+json 404 for any other path.
pub fn router(state: Arc<AppState>) -> Router {
    let (router, _) = api().split_for_parts();
    let guard = state.guard.clone();
    router
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|method: Method| async move {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, format!("method {method} is not allowed on this path"))
        })
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(guard, crate::auth::guard))
}

/// [`router`] for the main listener when the admin API has a listener of its own (`admin`):
/// its routes are answered 404 here, saying where they are. Ingest, webhooks, KafkaSinks'
/// addresses, the probes and metrics, the OpenAPI document and the identity documents stay.
pub fn without_admin_api(router: Router, admin: std::net::SocketAddr) -> Router {
    router.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| async move {
            if is_admin_api(request.method(), request.uri().path()) {
                return ApiError::not_found(format!(
                    "the admin API is served on the admin listener ({admin}, admin_listen), not on this one"
                ))
                .into_response();
            }
            next.run(request).await
        },
    ))
}

/// Whether a request is for the admin API: the REST resources and tools under `/v1/`.
fn is_admin_api(method: &Method, path: &str) -> bool {
    path.starts_with("/v1/") && RouteClass::of(method, path) == RouteClass::Api
}

/// Every endpoint, each registered together with its OpenAPI operation (its `#[utoipa::path]`):
/// [`router`] serves these routes and `GET /openapi.json` ([`crate::openapi::document`])
/// describes them, both split from this one builder, so the two cannot differ. Add an endpoint
/// only as `.routes(routes!(handler))` with a `#[utoipa::path]` on the handler: a plain
/// `.route(…)` would serve it undocumented (the `openapi` tests refuse that).
pub fn api() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .routes(routes!(operations::healthz))
        .routes(routes!(operations::readyz))
        .routes(routes!(operations::metrics_endpoint))
        .routes(routes!(crate::openapi::openapi_json))
        .routes(routes!(identity::openid_configuration))
        .routes(routes!(identity::jwks))
        .routes(routes!(filters::test_filter))
        .routes(routes!(filters::evaluate_cesql))
        .routes(routes!(brokers::list_all_brokers))
        .routes(routes!(triggers::list_all_triggers))
        .routes(routes!(brokers::list_brokers))
        .routes(routes!(brokers::get_broker, brokers::put_broker, brokers::delete_broker))
        .routes(routes!(triggers::list_triggers))
        .routes(routes!(triggers::get_trigger, triggers::put_trigger, triggers::delete_trigger))
        .routes(routes!(dead_letters::list_dead_letters, dead_letters::purge_dead_letters))
        .routes(routes!(dead_letters::redrive_dead_letters))
        .routes(routes!(dead_letters::get_dead_letter, dead_letters::delete_dead_letter))
        // `/v1/{sources}` has the shape of an ingest path too: every method but GET is ingest
        // into namespace `v1`, as it was before sources had a list there.
        .routes(routes!(sources::list_all_sources).map(|methods| methods.fallback(ingest::v1_ingest)))
        .routes(routes!(sources::list_sources))
        .routes(routes!(sources::get_source, sources::put_source, sources::delete_source))
        .routes(routes!(sources::receive_webhook))
        .routes(routes!(kafka_sinks::list_all_kafka_sinks))
        .routes(routes!(kafka_sinks::list_kafka_sinks))
        .routes(routes!(kafka_sinks::get_kafka_sink, kafka_sinks::put_kafka_sink, kafka_sinks::delete_kafka_sink))
        .routes(routes!(kafka_sinks::write_to_kafka_sink))
        .routes(routes!(event_policies::list_all_event_policies))
        .routes(routes!(event_policies::list_event_policies))
        .routes(routes!(
            event_policies::get_event_policy,
            event_policies::put_event_policy,
            event_policies::delete_event_policy
        ))
        // Any other method on the ingest path: 405 with `Allow: POST, OPTIONS`.
        .routes(routes!(ingest::ingest_post, ingest::ingest_options).map(|methods| methods.fallback(ingest_endpoint)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_classed_by_the_route_they_are_for() {
        let class = |method: Method, path: &str| RouteClass::of(&method, path);
        assert_eq!(class(Method::GET, "/healthz"), RouteClass::Operations);
        assert_eq!(class(Method::GET, "/readyz"), RouteClass::Operations);
        assert_eq!(class(Method::GET, "/metrics"), RouteClass::Operations);
        assert_eq!(class(Method::POST, "/healthz"), RouteClass::Api);
        assert_eq!(class(Method::POST, "/default/orders"), RouteClass::Ingest);
        assert_eq!(class(Method::POST, "/v1/orders"), RouteClass::Ingest);
        assert_eq!(class(Method::GET, "/v1/pingsources"), RouteClass::Api);
        assert_eq!(class(Method::POST, "/webhooks/github/default/repo"), RouteClass::Webhook);
        assert_eq!(class(Method::POST, "/kafkasinks/default/out"), RouteClass::Ingest);
        assert_eq!(class(Method::PUT, "/v1/namespaces/default/brokers/b"), RouteClass::Api);
        assert_eq!(class(Method::POST, "/v1/filters/test"), RouteClass::Api);
        assert_eq!(class(Method::POST, "/v1/cesql/evaluate"), RouteClass::Api);
        assert_eq!(class(Method::POST, "/default/"), RouteClass::Api);
        assert_eq!(class(Method::POST, "/"), RouteClass::Api);
        assert_eq!(class(Method::GET, "/.well-known/openid-configuration"), RouteClass::Api);
        assert_eq!(class(Method::GET, "/.well-known/jwks.json"), RouteClass::Api);
    }
}
