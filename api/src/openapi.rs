//! The OpenAPI 3.1 document of the HTTP API, served at `GET /openapi.json`.
//!
//! Nothing here lists the endpoints. [`crate::routes::api`] registers every route together with
//! its `#[utoipa::path]` operation (utoipa-axum's `OpenApiRouter` and `routes!`), and both the
//! router that serves requests and [`document`] are split from that one builder: a route cannot
//! be served without being described, nor described without being served. Bodies are typed
//! structs deriving `ToSchema` where they are built. This module holds the frame (title,
//! version, tags), the path parameters, the CloudEvent itself (whose members are open-ended),
//! and the sources' specs, gathered from the registry of source kinds.

use std::sync::OnceLock;

use axum::http::{header, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::schema::{
    AdditionalProperties, KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, OpenApi, PartialSchema, ToSchema};

/// The frame of the document; [`crate::routes::api`] adds every path to it.
#[derive(OpenApi)]
#[openapi(
    // Referred to from the sources' answers, whose spec schema is gathered from the registry.
    components(schemas(switchyard_meta::status::SourceStatus)),
    info(
        title = "Switchyard",
        version = env!("CARGO_PKG_VERSION"),
        description = "A CloudEvents broker with a Knative-style REST API. Producers POST events to \
            `/{namespace}/{broker}`; triggers filter them and deliver each match to a subscriber. \
            Every error is an RFC 9457 `application/problem+json` body; a path that names no \
            endpoint is answered 404 with detail \"no such endpoint\", and a method an endpoint does \
            not serve is answered 405.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    tags(
        (name = "ingest", description = "Sending events to a broker (CloudEvents HTTP binding, all three content modes)."),
        (name = "brokers", description = "Broker resources (Knative `eventing.knative.dev/v1` Broker)."),
        (name = "triggers", description = "Trigger resources (Knative `eventing.knative.dev/v1` Trigger)."),
        (name = "dead letters", description = "Events a trigger could not deliver: inspect, redrive, delete."),
        (name = "sources", description = "Source resources (Knative `sources.knative.dev` kinds) and the webhook endpoint of webhook sources."),
        (name = "policies", description = "EventPolicy resources (Knative `eventing.knative.dev/v1alpha1` EventPolicy): which senders a namespace's brokers admit."),
        (name = "sinks", description = "KafkaSink resources (Knative `eventing.knative.dev/v1alpha1` KafkaSink) and the address that writes to their topic."),
        (name = "filters", description = "Trying filters and CESQL expressions without declaring a trigger."),
        (name = "identity", description = "The issuer and key of the OIDC tokens of identified deliveries (destinations with an `audience`)."),
        (name = "operations", description = "Health, readiness, metrics and this document."),
    )
)]
pub(crate) struct ApiDoc;

/// The whole document, split once from the same builder as the router.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(|| secured(crate::routes::api().split_for_parts().1))
}

/// The document with its security: the bearer scheme (a static token or an OIDC JWT, `[auth]`),
/// required by every operation [`crate::auth::required`] does not leave public, which may then
/// be answered 401 and 403; the public ones say they need nothing. Taken from the same rules the
/// middleware applies, so the two cannot disagree.
fn secured(mut document: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
    let mut bearer = Http::new(HttpAuthScheme::Bearer);
    bearer.description = Some(
        "A token of `[auth]` (a static token or an OIDC JWT of a configured issuer). Without authentication configured, a loopback node needs none."
            .to_owned(),
    );
    document
        .components
        .get_or_insert_with(Default::default)
        .add_security_scheme("bearer", SecurityScheme::Http(bearer));
    for (path, item) in document.paths.paths.iter_mut() {
        let operations = [
            (Method::GET, &mut item.get),
            (Method::PUT, &mut item.put),
            (Method::POST, &mut item.post),
            (Method::DELETE, &mut item.delete),
            (Method::OPTIONS, &mut item.options),
            (Method::HEAD, &mut item.head),
            (Method::PATCH, &mut item.patch),
        ];
        for (method, operation) in operations {
            let Some(operation) = operation else { continue };
            if crate::auth::required(&method, path, false) == crate::auth::Access::Public {
                operation.security = Some(vec![SecurityRequirement::default()]);
                continue;
            }
            operation.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
            let responses = &mut operation.responses.responses;
            for (status, response) in crate::problem::auth_responses() {
                responses.entry(status).or_insert(response);
            }
        }
    }
    document
}

/// The document as JSON text, as served.
pub fn document_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| document().to_json().expect("the OpenAPI document serialises"))
}

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    summary = "This OpenAPI document",
    responses((status = 200, description = "The OpenAPI 3.1 document of every endpoint.", body = Object, content_type = "application/json")),
)]
pub(crate) async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], document_json()).into_response()
}

// ---- path parameters ----

/// `{namespace}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // described, never built: axum extracts the path as a tuple
pub(crate) struct NamespacePath {
    /// The namespace (a DNS-1123 label).
    namespace: String,
}

/// `{namespace}/…/{name}` of a broker or trigger.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // described, never built: axum extracts the path as a tuple
pub(crate) struct ResourcePath {
    /// The namespace (a DNS-1123 label).
    namespace: String,
    /// The resource name (a DNS-1123 label).
    name: String,
}

/// `{namespace}/triggers/{name}/deadletters/{id}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // described, never built: axum extracts the path as a tuple
pub(crate) struct DeadLetterPath {
    /// The trigger's namespace.
    namespace: String,
    /// The trigger's name.
    name: String,
    /// The dead letter's id (ids of one trigger sort in the order entries were stored).
    id: String,
}

/// `/{namespace}/{broker}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // described, never built: axum extracts the path as a tuple
pub(crate) struct IngestPath {
    /// The broker's namespace.
    namespace: String,
    /// The broker's name.
    broker: String,
}

/// The binary-mode context attributes: every `ce-*` header is one attribute (values
/// percent-encoded per the HTTP binding; raw values are tolerated). Required in binary mode
/// (`ce-specversion`, `ce-id`, `ce-source`, `ce-type`), absent in structured and batch mode.
#[derive(IntoParams)]
#[into_params(parameter_in = Header, rename_all = "kebab-case")]
#[allow(dead_code)] // described, never built: ingest decodes the headers itself
pub(crate) struct BinaryModeHeaders {
    /// Binary mode: the CloudEvents spec version, `1.0`.
    #[param(value_type = String, required = false)]
    ce_specversion: Option<String>,
    /// Binary mode: the event id.
    #[param(value_type = String, required = false)]
    ce_id: Option<String>,
    /// Binary mode: the event source (a URI reference).
    #[param(value_type = String, required = false)]
    ce_source: Option<String>,
    /// Binary mode: the event type.
    #[param(value_type = String, required = false)]
    ce_type: Option<String>,
    /// Binary mode, optional: the subject.
    #[param(value_type = String, required = false)]
    ce_subject: Option<String>,
    /// Binary mode, optional: the time (RFC 3339).
    #[param(value_type = String, required = false)]
    ce_time: Option<String>,
    /// Binary mode, optional: the data schema (an absolute URI).
    #[param(value_type = String, required = false)]
    ce_dataschema: Option<String>,
}

/// A path parameter whose values are a closed list known at run time.
fn choice_parameter(name: &str, description: &str, choices: Vec<&'static str>) -> utoipa::openapi::path::Parameter {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(utoipa::openapi::Required::True)
        .description(Some(description))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String).enum_values(Some(choices))))
        .build()
}

fn label_parameter(name: &str, description: &str) -> utoipa::openapi::path::Parameter {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(utoipa::openapi::Required::True)
        .description(Some(description))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .build()
}

fn source_kinds_parameter() -> utoipa::openapi::path::Parameter {
    let plurals = switchyard_engine::Kind::sources().map(switchyard_engine::Kind::plural).collect();
    choice_parameter("sources", "The source kind, plural and lower case as in Kubernetes.", plurals)
}

/// `/v1/{sources}`: the source kinds this build registers.
pub(crate) struct SourceKindPath;

impl IntoParams for SourceKindPath {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        vec![source_kinds_parameter()]
    }
}

/// `{namespace}/{sources}/{name}` of a source.
pub(crate) struct SourcePath;

impl IntoParams for SourcePath {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        vec![
            label_parameter("namespace", "The namespace (a DNS-1123 label)."),
            source_kinds_parameter(),
            label_parameter("name", "The source name (a DNS-1123 label)."),
        ]
    }
}

/// `/webhooks/{webhook}/{namespace}/{name}`.
pub(crate) struct WebhookPath;

impl IntoParams for WebhookPath {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        let paths = switchyard_sources::kinds().iter().filter_map(|kind| kind.webhook_path()).collect();
        vec![
            choice_parameter("webhook", "The kind of webhook source (`github`: a GitHubSource).", paths),
            label_parameter("namespace", "The source's namespace."),
            label_parameter("name", "The source's name."),
        ]
    }
}

/// The webhook abuse-protection handshake's request header.
#[derive(IntoParams)]
#[into_params(parameter_in = Header, rename_all = "kebab-case")]
#[allow(dead_code)] // described, never built: the handshake reads the header itself
pub(crate) struct HandshakeHeaders {
    /// The origin that wants to deliver; echoed in `WebHook-Allowed-Origin` (`*` when absent).
    #[param(value_type = String, required = false)]
    webhook_request_origin: Option<String>,
}

// ---- schemas of bodies built as JSON values ----

/// A CloudEvent in the JSON event format (`application/cloudevents+json`): the four required
/// context attributes, the optional ones, extensions as further members (string, boolean or
/// integer), and the data as `data` (JSON or text) or `data_base64` (binary).
pub(crate) struct CloudEvent;

impl PartialSchema for CloudEvent {
    fn schema() -> RefOr<Schema> {
        let string = |description: &str| ObjectBuilder::new().schema_type(Type::String).description(Some(description));
        let extension = OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::String))
            .item(ObjectBuilder::new().schema_type(Type::Boolean))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32))),
            )
            .description(Some("An extension attribute: string, boolean or integer."));
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "A CloudEvent in the JSON event format. Extensions are further members whose values are strings, \
                 booleans or integers.",
            ))
            .property("specversion", string("The CloudEvents spec version: `1.0`.").examples(["1.0"]))
            .required("specversion")
            .property("id", string("Identifies the event; unique per source."))
            .required("id")
            .property("source", string("The event's source (a URI reference)."))
            .required("source")
            .property("type", string("The event type."))
            .required("type")
            .property("datacontenttype", string("Media type of `data`."))
            .property("dataschema", string("Schema of `data` (an absolute URI)."))
            .property("subject", string("The subject within the source."))
            .property(
                "time",
                string("When it happened (RFC 3339).").format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
            )
            .property("data", ObjectBuilder::new().description(Some("The data: any JSON value (JSON or text data).")))
            .property("data_base64", string("Binary data, base64-encoded."))
            .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(Schema::OneOf(extension.build())))))
            .examples([serde_json::json!({
                "specversion": "1.0",
                "id": "1",
                "source": "/web",
                "type": "order.created",
                "datacontenttype": "application/json",
                "data": {"sku": "A1"}
            })])
            .into()
    }
}

impl ToSchema for CloudEvent {}

/// The data of a binary-mode event: the request body, any media type.
pub(crate) struct EventData;

impl PartialSchema for EventData {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .description(Some("The event data, in the media type given by `Content-Type` (`datacontenttype`)."))
            .into()
    }
}

impl ToSchema for EventData {}

/// A source's spec: one of the registered kinds' specs, which the path's `{sources}` picks.
pub(crate) struct SourceSpec;

impl PartialSchema for SourceSpec {
    fn schema() -> RefOr<Schema> {
        let mut one_of = OneOfBuilder::new().description(Some("The spec of the kind the path names."));
        for kind in switchyard_sources::kinds() {
            let spec = kind.spec_schema();
            one_of = one_of.item(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(spec.name)));
        }
        one_of.into()
    }
}

impl ToSchema for SourceSpec {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        for kind in switchyard_sources::kinds() {
            let spec = kind.spec_schema();
            schemas.push((spec.name, spec.schema));
            schemas.extend(spec.components);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn document_value() -> Value {
        serde_json::from_str(document_json()).expect("the served document is JSON")
    }

    /// Every `(path, method, operation)` of the document.
    fn operations(document: &Value) -> Vec<(String, String, Value)> {
        let paths = document["paths"].as_object().expect("paths");
        let mut operations = Vec::new();
        for (path, item) in paths {
            for (method, operation) in item.as_object().expect("path item") {
                if method != "parameters" {
                    operations.push((path.clone(), method.clone(), operation.clone()));
                }
            }
        }
        operations
    }

    fn refs<'v>(value: &'v Value, found: &mut Vec<&'v str>) {
        match value {
            Value::Object(object) => {
                if let Some(Value::String(target)) = object.get("$ref") {
                    found.push(target);
                }
                object.values().for_each(|v| refs(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
            _ => {}
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_and_every_reference_resolves() {
        let document = document_value();
        assert_eq!(document["openapi"], "3.1.0");
        assert_eq!(document["info"]["title"], "Switchyard");
        assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"));
        assert!(document["paths"].as_object().is_some_and(|p| !p.is_empty()), "no paths");
        let schemas = document["components"]["schemas"].as_object().expect("component schemas");
        let mut found = Vec::new();
        refs(&document, &mut found);
        assert!(!found.is_empty());
        for target in found {
            let name =
                target.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("unexpected $ref {target}"));
            assert!(schemas.contains_key(name), "$ref {target} names no component");
        }
    }

    #[test]
    fn every_operation_has_an_id_a_tag_and_problem_json_errors() {
        let document = document_value();
        let mut ids = std::collections::BTreeSet::new();
        for (path, method, operation) in operations(&document) {
            let id = operation["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path}: no operationId"));
            assert!(ids.insert(id.to_owned()), "{method} {path}: operationId {id} is used twice");
            assert!(operation["tags"].as_array().is_some_and(|t| !t.is_empty()), "{method} {path}: no tag");
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                if parameter["in"] == "path" {
                    let name = parameter["name"].as_str().expect("parameter name");
                    assert!(
                        path.contains(&format!("{{{name}}}")),
                        "{method} {path}: path parameter {name} is not in the path"
                    );
                }
            }
            let responses = operation["responses"].as_object().expect("responses");
            assert!(responses.keys().any(|s| s.starts_with('2')), "{method} {path}: no success answer");
            for (status, response) in responses {
                if status.as_str() >= "400" {
                    let content = response["content"].as_object().expect("error content");
                    assert_eq!(content.len(), 1, "{method} {path} {status}: {content:?}");
                    assert_eq!(
                        content["application/problem+json"]["schema"]["$ref"], "#/components/schemas/Problem",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }

    /// The document is split from the same builder as the router (`routes::api`), so a route is
    /// in the document exactly when it is served.
    #[test]
    fn operations_that_need_a_token_say_so_and_may_be_answered_401_and_403() {
        let document = document_value();
        assert_eq!(document["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
        let mut public = Vec::new();
        for (path, method, operation) in operations(&document) {
            let security = &operation["security"];
            if security == &serde_json::json!([{}]) {
                public.push(format!("{method} {path}"));
                continue;
            }
            assert_eq!(security, &serde_json::json!([{"bearer": []}]), "{method} {path}");
            for status in ["401", "403"] {
                assert!(operation["responses"][status].is_object(), "{method} {path} lacks {status}");
            }
        }
        for expected in ["get /healthz", "get /readyz", "get /openapi.json", "get /.well-known/jwks.json"] {
            assert!(public.iter().any(|p| p == expected), "{expected} is not public: {public:?}");
        }
        assert!(!public.iter().any(|p| p.contains("/v1/namespaces") || p.ends_with("{broker}")), "{public:?}");
    }

    #[test]
    fn the_served_document_is_the_routers() {
        let (_, from_builder) = crate::routes::api().split_for_parts();
        let served = document_value();
        assert_eq!(served, serde_json::to_value(secured(from_builder)).expect("serialises"));
        let mut served_paths: Vec<_> = served["paths"].as_object().expect("paths").keys().cloned().collect();
        served_paths.sort();
        for expected in [
            "/healthz",
            "/readyz",
            "/metrics",
            "/openapi.json",
            "/v1/brokers",
            "/v1/triggers",
            "/v1/filters/test",
            "/v1/cesql/evaluate",
            "/v1/namespaces/{namespace}/brokers",
            "/v1/namespaces/{namespace}/brokers/{name}",
            "/v1/namespaces/{namespace}/triggers",
            "/v1/namespaces/{namespace}/triggers/{name}",
            "/v1/namespaces/{namespace}/triggers/{name}/deadletters",
            "/v1/namespaces/{namespace}/triggers/{name}/deadletters/redrive",
            "/v1/namespaces/{namespace}/triggers/{name}/deadletters/{id}",
            "/{namespace}/{broker}",
        ] {
            assert!(served_paths.iter().any(|p| p == expected), "{expected} is not documented: {served_paths:?}");
        }
    }

    /// The other half of the guarantee: the router is `routes::api()` plus a fallback, and
    /// routes enter `api()` only through `.routes(routes!(…))`, which documents them. A plain
    /// axum registration in the files that build and serve the router would serve an
    /// undocumented endpoint; this refuses it.
    #[test]
    fn routes_are_registered_only_together_with_their_operation() {
        let forbidden = [
            [".route", "("].concat(),
            [".route_service", "("].concat(),
            [".nest", "("].concat(),
            [".nest_service", "("].concat(),
            [".merge", "("].concat(),
            ["Router", "::new"].concat(),
            ["axum::routing", "::"].concat(),
        ];
        let files = [
            ("routes/mod.rs", include_str!("routes/mod.rs")),
            ("routes/ingest.rs", include_str!("routes/ingest.rs")),
            ("routes/brokers.rs", include_str!("routes/brokers.rs")),
            ("routes/triggers.rs", include_str!("routes/triggers.rs")),
            ("routes/sources.rs", include_str!("routes/sources.rs")),
            ("routes/dead_letters.rs", include_str!("routes/dead_letters.rs")),
            ("routes/filters.rs", include_str!("routes/filters.rs")),
            ("routes/operations.rs", include_str!("routes/operations.rs")),
            ("serve.rs", include_str!("serve.rs")),
        ];
        for (file, source) in files {
            let code: Vec<&str> = source.lines().filter(|line| !line.trim_start().starts_with("//")).collect();
            for line in code {
                for call in &forbidden {
                    assert!(
                        !line.contains(call.as_str()),
                        "api/src/{file} registers a route outside `routes::api()`'s `.routes(routes!(…))` \
                         ({line:?}): give the handler a #[utoipa::path] and add it with `.routes(routes!(handler))`, \
                         so that /openapi.json describes it"
                    );
                }
            }
        }
        let api = include_str!("routes/mod.rs");
        let start = api.find("pub fn api()").expect("routes::api");
        let body = &api[start..start + api[start..].find("\n}\n").expect("end of api()")];
        let registrations = body.matches(".routes(routes!(").count();
        let statements = body.lines().filter(|l| l.trim_start().starts_with('.')).count();
        assert_eq!(registrations, statements, "routes::api() must only call .routes(routes!(…)):\n{body}");
    }
}
