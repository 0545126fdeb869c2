//! `GET /openapi.json` against the real binary: the document is well formed, and every operation
//! it describes is served. For every path and method in the document a real request is sent (with
//! a declared broker, trigger and dead letter in the path); the answer must be one of the statuses
//! the document lists for that operation, never the router's "no such endpoint" fallback nor 405,
//! and its body must match the documented media type and schema.
//!
//! The other direction (nothing is served undocumented) holds by construction: the router and
//! the document are split from one `OpenApiRouter` (see `api/src/openapi.rs` and its tests).

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use reqwest::Method;
use serde_json::{json, Map, Value};
use switchyard_tests::{Server, Subscriber};

const NAMESPACE: &str = "default";
const BROKER: &str = "b";
const TRIGGER: &str = "t";
const EVENT_TYPE: &str = "openapi.test";
const SOURCE: &str = "gh";
const KAFKA_SINK: &str = "k";
const WEBHOOK_SECRET: &str = "openapi-secret";

/// An EventPolicy for a broker that does not exist, so that it refuses none of the requests
/// the test sends.
fn event_policy_spec() -> Value {
    json!({"to": [{"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "elsewhere"}}],
           "from": [{"sub": "openapi"}]})
}

/// A KafkaSink on the test Kafka, whose topic it creates.
fn kafka_sink_spec() -> Value {
    static TOPIC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let topic = TOPIC.get_or_init(|| format!("openapi-{}", uuid::Uuid::new_v4().simple()));
    json!({"topic": topic, "bootstrapServers": [switchyard_tests::kafka_bootstrap()], "numPartitions": 1, "replicationFactor": 1})
}

fn source_spec() -> Value {
    json!({
        "ownerAndRepository": "o/r",
        "eventTypes": ["push"],
        "secretToken": {"value": WEBHOOK_SECRET},
        "sink": {"ref": {"kind": "Broker", "name": BROKER}},
    })
}

fn signature(body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, WEBHOOK_SECRET.as_bytes());
    let hex: String = ring::hmac::sign(&key, body).as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn event(id: &str) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": "/openapi",
        "type": EVENT_TYPE,
        "datacontenttype": "application/json",
        "data": {"n": 1},
    })
}

fn trigger_spec(subscriber: &str) -> Value {
    json!({
        "broker": BROKER,
        "filter": {"attributes": {"type": EVENT_TYPE}},
        "filters": [{"any": [{"prefix": {"source": "/"}}, {"not": {"exact": {"subject": "x"}}}]}],
        "subscriber": {"uri": subscriber},
        "delivery": {"retry": 0},
    })
}

/// A `$ref` resolved in the document.
fn resolve<'d>(document: &'d Value, reference: &str) -> &'d Value {
    let name = reference.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("unexpected $ref {reference}"));
    let schema = &document["components"]["schemas"][name];
    assert!(!schema.is_null(), "$ref {reference} names no component");
    schema
}

fn collect_refs<'v>(value: &'v Value, found: &mut Vec<&'v str>) {
    match value {
        Value::Object(object) => {
            if let Some(Value::String(target)) = object.get("$ref") {
                found.push(target);
            }
            object.values().for_each(|v| collect_refs(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, found)),
        _ => {}
    }
}

fn type_matches(name: &str, value: &Value) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        other => panic!("unknown schema type {other}"),
    }
}

/// Checks `value` against a JSON Schema of the document (the subset utoipa writes: `$ref`,
/// `type`, `oneOf`, `enum`, `properties`, `required`, `additionalProperties`, `items`,
/// `minimum`, `maximum`).
fn check(document: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(reference) = schema["$ref"].as_str() {
        return check(document, resolve(document, reference), value, at);
    }
    if let Some(choices) = schema["oneOf"].as_array() {
        let matching = choices.iter().filter(|choice| check(document, choice, value, at).is_ok()).count();
        if matching != 1 {
            return Err(format!("{at}: {value} matches {matching} of the oneOf choices, not exactly one"));
        }
    }
    match &schema["type"] {
        Value::String(name) if !type_matches(name, value) => return Err(format!("{at}: {value} is not {name}")),
        Value::Array(names) if !names.iter().any(|n| type_matches(n.as_str().unwrap_or_default(), value)) => {
            return Err(format!("{at}: {value} is none of {names:?}"))
        }
        _ => {}
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            return Err(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    if let Some(number) = value.as_f64() {
        if schema["minimum"].as_f64().is_some_and(|min| number < min)
            || schema["maximum"].as_f64().is_some_and(|max| number > max)
        {
            return Err(format!("{at}: {value} is out of range"));
        }
    }
    if let Value::Object(object) = value {
        for required in schema["required"].as_array().into_iter().flatten() {
            let required = required.as_str().unwrap_or_default();
            if !object.contains_key(required) {
                return Err(format!("{at}: required member '{required}' is missing"));
            }
        }
        let properties = schema["properties"].as_object();
        for (name, member) in object {
            let at = format!("{at}.{name}");
            match properties.and_then(|p| p.get(name)) {
                Some(property) => check(document, property, member, &at)?,
                None => match &schema["additionalProperties"] {
                    Value::Bool(false) => return Err(format!("{at}: not in the schema")),
                    extra @ Value::Object(_) => check(document, extra, member, &at)?,
                    _ => {}
                },
            }
        }
    }
    if let (Value::Array(items), Some(item_schema)) = (value, schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            check(document, item_schema, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// The media type without parameters.
fn media_type(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or_default().trim()
}

/// One request of the sweep.
struct Request {
    content_type: Option<&'static str>,
    headers: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
}

impl Request {
    fn empty() -> Request {
        Request { content_type: None, headers: Vec::new(), body: None }
    }

    fn json(content_type: &'static str, body: Value) -> Request {
        Request { content_type: Some(content_type), headers: Vec::new(), body: Some(body.to_string().into_bytes()) }
    }
}

/// The requests to send for an operation: a valid one per documented request media type. An
/// operation that takes a body needs a sample here.
fn requests_for(operation_id: &str, operation: &Value, subscriber: &str, redrive_id: &str) -> Vec<Request> {
    let sample = match operation_id {
        "put_broker" => Some(json!({"spec": {"delivery": {"retry": 0}}})),
        "put_trigger" => Some(json!({"spec": trigger_spec(subscriber)})),
        "test_filter" => Some(json!({"filters": [{"cesql": "type = 'openapi.test'"}], "event": event("f")})),
        "evaluate_cesql" => Some(json!({"expression": "type LIKE 'openapi.%'", "event": event("c")})),
        "redrive_dead_letters" => Some(json!({"ids": [redrive_id]})),
        "put_source" => Some(json!({"spec": source_spec()})),
        "put_kafka_sink" => Some(json!({"spec": kafka_sink_spec()})),
        "put_event_policy" => Some(json!({"spec": event_policy_spec()})),
        _ => None,
    };
    let Some(content) = operation["requestBody"]["content"].as_object() else {
        return vec![Request::empty()];
    };
    if operation_id == "receive_webhook" {
        let body = br#"{"ref":"refs/heads/main","repository":{"full_name":"o/r"}}"#.to_vec();
        let headers = vec![
            ("x-github-event", "push".to_owned()),
            ("x-github-delivery", "openapi-1".to_owned()),
            ("x-hub-signature-256", signature(&body)),
        ];
        return vec![Request { content_type: Some("application/json"), headers, body: Some(body) }];
    }
    if operation_id == "ingest_post" || operation_id == "write_to_kafka_sink" {
        return content
            .keys()
            .map(|media_type| match media_type.as_str() {
                "application/cloudevents+json" => Request::json("application/cloudevents+json", event("structured")),
                "application/cloudevents-batch+json" => {
                    Request::json("application/cloudevents-batch+json", json!([event("batch-1"), event("batch-2")]))
                }
                "*/*" => Request {
                    content_type: Some("application/json"),
                    headers: [
                        ("ce-specversion", "1.0"),
                        ("ce-id", "binary"),
                        ("ce-source", "/openapi"),
                        ("ce-type", EVENT_TYPE),
                    ]
                    .map(|(name, value)| (name, value.to_owned()))
                    .to_vec(),
                    body: Some(br#"{"n":1}"#.to_vec()),
                },
                other => panic!("no sample ingest request for media type {other}: add one to tests/tests/openapi.rs"),
            })
            .collect();
    }
    let sample = sample.unwrap_or_else(|| {
        panic!("operation {operation_id} takes a request body: add a sample to requests_for in tests/tests/openapi.rs")
    });
    assert!(content.contains_key("application/json"), "{operation_id}: a JSON request body is expected: {content:?}");
    vec![Request::json("application/json", sample)]
}

/// Fills the path template with the declared resources.
fn concrete_path(template: &str, dead_letter_id: &str) -> String {
    let name = if template.contains("/brokers/{name}") {
        BROKER
    } else if template.contains("kafkasinks/") {
        KAFKA_SINK
    } else if template.contains("{sources}") || template.contains("{webhook}") {
        SOURCE
    } else {
        TRIGGER
    };
    template
        .replace("{namespace}", NAMESPACE)
        .replace("{broker}", BROKER)
        .replace("{sources}", "githubsources")
        .replace("{webhook}", "github")
        .replace("{name}", name)
        .replace("{id}", dead_letter_id)
}

async fn dead_letter_ids(server: &Server, at_least: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = server.get(&format!("/v1/namespaces/{NAMESPACE}/triggers/{TRIGGER}/deadletters")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let ids: Vec<String> = body["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["id"].as_str().map(str::to_owned))
            .collect();
        if ids.len() >= at_least {
            return ids;
        }
        assert!(Instant::now() < deadline, "expected {at_least} dead letters, got {body}; log: {}", server.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn every_documented_operation_is_served_with_a_documented_answer() {
    let server = Server::start().await;
    let client = reqwest::Client::new();

    // The document itself.
    let response = client.get(format!("{}/openapi.json", server.url)).send().await.expect("get /openapi.json");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert_eq!(media_type(content_type), "application/json");
    let document: Value = response.json().await.expect("the document is JSON");
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["info"]["title"], "Switchyard");
    assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"));
    let mut refs = Vec::new();
    collect_refs(&document, &mut refs);
    for reference in refs {
        resolve(&document, reference);
    }

    // Something behind every path parameter: a broker, a trigger whose subscriber refuses
    // everything (400, not retryable), and so two dead letters: one for `{id}`, one to redrive.
    let subscriber = Subscriber::start().await;
    subscriber.always(StatusCode::BAD_REQUEST);
    server.broker(NAMESPACE, BROKER).await;
    server.trigger(NAMESPACE, TRIGGER, trigger_spec(&subscriber.url)).await;
    let (status, body) =
        server.put(&format!("/v1/namespaces/{NAMESPACE}/githubsources/{SOURCE}"), json!({"spec": source_spec()})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = server
        .put(&format!("/v1/namespaces/{NAMESPACE}/kafkasinks/{KAFKA_SINK}"), json!({"spec": kafka_sink_spec()}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = server
        .put(&format!("/v1/namespaces/{NAMESPACE}/eventpolicies/{TRIGGER}"), json!({"spec": event_policy_spec()}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let status = server.send_batch(NAMESPACE, BROKER, &[event("first"), event("second")]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let ids = dead_letter_ids(&server, 2).await;
    let (dead_letter_id, redrive_id) = (ids[0].clone(), ids[1].clone());

    // Every operation: deletions last, deepest path first, so the others find what they name.
    let mut operations: Vec<(String, Method, Value)> = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            if method == "parameters" {
                continue;
            }
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            operations.push((path.clone(), method, operation.clone()));
        }
    }
    operations.sort_by_key(|(path, method, _)| (*method == Method::DELETE, std::cmp::Reverse(path.len())));
    let mut exercised = Vec::new();
    for (template, method, operation) in &operations {
        let operation_id = operation["operationId"].as_str().expect("operationId");
        let path = concrete_path(template, &dead_letter_id);
        for request in requests_for(operation_id, operation, &subscriber.url, &redrive_id) {
            let mut builder = client.request(method.clone(), format!("{}{path}", server.url));
            if let Some(content_type) = request.content_type {
                builder = builder.header("content-type", content_type);
            }
            for (name, value) in &request.headers {
                builder = builder.header(*name, value);
            }
            if let Some(body) = request.body {
                builder = builder.body(body);
            }
            let response = builder.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response.bytes().await.expect("body");
            let text = String::from_utf8_lossy(&body);
            let what = format!("{method} {path} ({operation_id}) answered {status} {text}");
            let json_body: Option<Value> = serde_json::from_slice(&body).ok();
            assert!(
                !(status == 404 && json_body.as_ref().is_some_and(|b| b["detail"] == "no such endpoint")),
                "documented but not routed: {what}"
            );
            assert_ne!(status, 405, "documented but the router refuses the method: {what}");
            let documented = &operation["responses"][status.to_string()];
            assert!(documented.is_object(), "{what}: status {status} is not documented for this operation");
            assert!((200..300).contains(&status), "{what}: expected success with the declared resources");
            for name in documented["headers"].as_object().into_iter().flatten().map(|(name, _)| name) {
                assert!(headers.contains_key(name.as_str()), "{what}: documented header {name} is missing");
            }
            match documented["content"].as_object() {
                None => assert!(body.is_empty(), "{what}: no content is documented"),
                Some(content) => {
                    let actual = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
                    let (_, media) = content
                        .iter()
                        .find(|(documented, _)| media_type(documented) == media_type(actual))
                        .unwrap_or_else(|| panic!("{what}: content type {actual} is not among {:?}", content.keys()));
                    if media_type(actual).ends_with("json") {
                        let value = json_body.unwrap_or_else(|| panic!("{what}: not JSON"));
                        if let Err(error) = check(&document, &media["schema"], &value, "body") {
                            panic!("{what}: does not match the documented schema: {error}");
                        }
                    }
                }
            }
            exercised.push(format!("{method} {template} -> {status}"));
        }
    }
    assert!(exercised.len() >= operations.len(), "{exercised:?}");

    // Control: the checks above do notice a route the router lacks or a method it refuses.
    let (status, body) = server.get("/v1/namespaces/default/nothing/here/at/all").await;
    assert_eq!((status, body["detail"].as_str()), (StatusCode::NOT_FOUND, Some("no such endpoint")));
    let response = client.patch(format!("{}/v1/brokers", server.url)).send().await.expect("patch");
    assert_eq!(response.status().as_u16(), 405);
}

/// Every error answer is `application/problem+json`, as documented.
#[tokio::test]
async fn documented_errors_are_problem_json() {
    let server = Server::start().await;
    let client = reqwest::Client::new();
    let document: Value =
        client.get(format!("{}/openapi.json", server.url)).send().await.expect("get").json().await.expect("json");
    let problem = json!({"$ref": "#/components/schemas/Problem"});
    let cases: [(Method, &str, Option<&str>, &str, u16); 5] = [
        (Method::GET, "/v1/namespaces/default/brokers/nope", None, "get_broker", 404),
        (Method::PUT, "/v1/namespaces/default/brokers/b", Some(r#"{"spec":{"nope":1}}"#), "put_broker", 400),
        (Method::GET, "/v1/namespaces/Not_A_Label/triggers", None, "list_triggers", 400),
        (Method::POST, "/default/nope", Some("{}"), "ingest_post", 404),
        (Method::GET, "/v1/namespaces/default/triggers/nope/deadletters", None, "list_dead_letters", 404),
    ];
    for (method, path, body, operation_id, expected) in cases {
        let mut request = client.request(method.clone(), format!("{}{path}", server.url));
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body);
        }
        let response = request.send().await.expect("send");
        assert_eq!(response.status().as_u16(), expected, "{method} {path}");
        let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert_eq!(content_type, "application/problem+json", "{method} {path}");
        let value: Value = response.json().await.expect("json");
        check(&document, &problem, &value, "body").unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let operation = document["paths"]
            .as_object()
            .expect("paths")
            .values()
            .flat_map(|item| item.as_object().into_iter().flat_map(Map::values))
            .find(|op| op["operationId"] == operation_id)
            .unwrap_or_else(|| panic!("no operation {operation_id}"));
        assert!(
            operation["responses"][expected.to_string()].is_object(),
            "{operation_id} does not document {expected}"
        );
    }
}
