//! The sources framework as a user meets it: Knative YAML applied with the CLI, the REST API
//! of every kind, status (readiness, sink, webhook URL), validation errors.

use std::process::{Command, Output};

use reqwest::StatusCode;
use serde_json::json;
use switchyard_tests::{binary, Server};

fn cli(server: &Server, args: &[&str]) -> Output {
    Command::new(binary()).args(args).env("SWITCHYARD_SERVER", &server.url).output().expect("run cli")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

const YAML: &str = r#"apiVersion: sources.knative.dev/v1alpha1
kind: GitHubSource
metadata:
  name: repo-events
  namespace: ci
spec:
  ownerAndRepository: octo-org/hello
  eventTypes: [push, pull_request]
  accessToken:
    secretKeyRef: {name: unused, key: token}
  secretToken:
    value: s3cret
  sink:
    ref:
      apiVersion: eventing.knative.dev/v1
      kind: Broker
      name: default
---
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata:
  name: nightly
  namespace: ci
spec:
  schedule: "0 2 * * *"
  timezone: Europe/Paris
  contentType: application/json
  data: '{"job": "rebuild"}'
  sink:
    ref: {kind: Broker, name: default}
---
apiVersion: sources.knative.dev/v1beta1
kind: KafkaSource
metadata:
  name: orders
  namespace: ci
spec:
  bootstrapServers: ["127.0.0.1:1"]
  topics: [orders]
  consumerGroup: ci-orders
  initialOffset: earliest
  sink:
    uri: http://127.0.0.1:1/orders
"#;

#[tokio::test]
async fn knative_yaml_applies_and_every_kind_has_a_rest_api() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sources.yaml");
    std::fs::write(&file, YAML).unwrap();
    let output = cli(&server, &["apply", "-f", file.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(
        stdout(&output),
        "githubsource/ci/repo-events created\npingsource/ci/nightly created\nkafkasource/ci/orders created\n"
    );
    let output = cli(&server, &["apply", "-f", file.to_str().unwrap()]);
    assert!(stdout(&output).contains("pingsource/ci/nightly configured"), "{}", stdout(&output));

    // Not ready while the sink broker is missing; the webhook URL is there from the start.
    let (status, github) = server.get("/v1/namespaces/ci/githubsources/repo-events").await;
    assert_eq!(status, StatusCode::OK, "{github}");
    assert_eq!(github["apiVersion"], "sources.knative.dev/v1alpha1");
    assert_eq!(github["kind"], "GitHubSource");
    assert_eq!(github["spec"]["eventTypes"], json!(["push", "pull_request"]));
    assert_eq!(github["status"]["conditions"][0]["reason"], "SinkNotFound", "{github}");
    assert_eq!(github["status"]["webhookUrl"], format!("{}/webhooks/github/ci/repo-events", server.url));
    assert_eq!(github["status"]["sinkUri"], format!("{}/ci/default", server.url));
    server.broker("ci", "default").await;
    let (_, github) = server.get("/v1/namespaces/ci/githubsources/repo-events").await;
    assert_eq!(github["status"]["conditions"][0]["status"], "True", "{github}");
    let (_, ping) = server.get("/v1/namespaces/ci/pingsources/nightly").await;
    assert_eq!(ping["status"]["conditions"][0]["status"], "True", "{ping}");
    assert_eq!(ping["metadata"]["generation"], 1);
    let (_, kafka) = server.get("/v1/namespaces/ci/kafkasources/orders").await;
    assert_eq!(kafka["spec"]["topics"], json!(["orders"]));
    assert_eq!(kafka["status"]["sinkUri"], "http://127.0.0.1:1/orders");

    // Lists: one namespace, every namespace; the CLI's table.
    let (_, list) = server.get("/v1/namespaces/ci/pingsources").await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    let (_, all) = server.get("/v1/kafkasources").await;
    assert_eq!(all["items"][0]["metadata"]["name"], "orders");
    let output = cli(&server, &["get", "pingsources", "-n", "ci"]);
    let table = stdout(&output);
    assert!(table.starts_with("NAMESPACE") && table.contains("nightly") && table.contains("True"), "{table}");
    let output = cli(&server, &["get", "githubsource", "repo-events", "-n", "ci", "-o", "json"]);
    assert!(stdout(&output).contains("webhookUrl"), "{}", stdout(&output));

    // A replaced spec is a new generation.
    let (status, ping) = server
        .put(
            "/v1/namespaces/ci/pingsources/nightly",
            json!({"spec": {"schedule": "@daily", "sink": {"ref": {"kind": "Broker", "name": "default"}}}}),
        )
        .await;
    assert_eq!((status, ping["metadata"]["generation"].as_u64()), (StatusCode::OK, Some(2)), "{ping}");

    // Deleting, with the CLI and REST.
    let output = cli(&server, &["delete", "pingsource", "nightly", "-n", "ci"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(stdout(&output), "pingsource/ci/nightly deleted\n");
    let (status, _) = server.get("/v1/namespaces/ci/pingsources/nightly").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, deleted) = server.delete("/v1/namespaces/ci/kafkasources/orders").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(deleted["metadata"]["name"], "orders");
    let (status, _) = server.delete("/v1/namespaces/ci/kafkasources/orders").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_sources_are_refused_with_what_to_fix() {
    let server = Server::start().await;
    let sink = json!({"ref": {"kind": "Broker", "name": "default"}});
    let cases = [
        (
            "githubsources",
            json!({"spec": {"eventTypes": ["push"], "secretToken": {"value": "s"}, "sink": sink}}),
            "spec.ownerAndRepository",
        ),
        (
            "githubsources",
            json!({"spec": {"ownerAndRepository": "a/b", "eventTypes": ["push"], "secretToken": {"secretKeyRef": {"name": "s", "key": "k"}}, "sink": sink}}),
            "spec.secretToken.secretKeyRef",
        ),
        ("kafkasources", json!({"spec": {"bootstrapServers": ["k:9092"], "topics": [], "sink": sink}}), "spec.topics"),
        (
            "kafkasources",
            json!({"spec": {"bootstrapServers": ["k:9092"], "topics": ["t"], "initialOffset": "newest", "sink": sink}}),
            "spec.initialOffset",
        ),
        (
            "pingsources",
            json!({"spec": {"sink": {"ref": {"kind": "Broker", "name": "b", "namespace": "other"}}}}),
            "spec.sink.ref.namespace",
        ),
        (
            "pingsources",
            json!({"spec": {"sink": sink, "ceOverrides": {"extensions": {"type": "x"}}}}),
            "spec.ceOverrides.extensions.type",
        ),
        ("pingsources", json!({"apiVersion": "sources.knative.dev/v9", "spec": {"sink": sink}}), "apiVersion"),
        ("pingsources", json!({"metadata": {"name": "other"}, "spec": {"sink": sink}}), "metadata.name"),
    ];
    for (plural, body, field) in cases {
        let (status, problem) = server.put(&format!("/v1/namespaces/default/{plural}/s"), body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {problem}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(field), "{plural} {body}: {detail}");
    }
    let (status, problem) = server.put("/v1/namespaces/default/cronsources/s", json!({"spec": {}})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    assert!(problem["detail"].as_str().unwrap_or_default().contains("pingsources"), "{problem}");
    let (status, _) = server.get("/v1/namespaces/Bad_Name/pingsources").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let output = cli(&server, &["get", "cronsources"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("PingSource"));
}

#[tokio::test]
async fn sources_survive_a_restart() {
    let mut server = Server::start().await;
    server.broker("default", "b").await;
    let (status, _) = server
        .put(
            "/v1/namespaces/default/githubsources/g",
            json!({"spec": {"ownerAndRepository": "o/r", "eventTypes": ["push"], "secretToken": {"value": "s"}, "sink": {"ref": {"kind": "Broker", "name": "b"}}}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    server.restart().await;
    let (status, body) = server.get("/v1/namespaces/default/githubsources/g").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"]["conditions"][0]["status"], "True", "{body}");
    // Its webhook answers after the restart (a wrong signature, so 401, not 404).
    let response = reqwest::Client::new()
        .post(format!("{}/webhooks/github/default/g", server.url))
        .header("x-github-event", "push")
        .header("x-github-delivery", "d-1")
        .header("x-hub-signature-256", "sha256=00")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_sources_list_route_leaves_ingest_into_namespace_v1_alone() {
    let server = Server::start().await;
    server.broker("v1", "orders").await;
    assert_eq!(server.send_binary("v1", "orders", "1", "t", b"{}").await, StatusCode::ACCEPTED);
    let (status, problem) = server.get("/v1/orders").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    let (status, list) = server.get("/v1/pingsources").await;
    assert_eq!((status, list["items"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)), "{list}");
}

/// The example files apply as they are, every object in them valid.
#[tokio::test]
async fn the_example_files_apply() {
    let server = Server::start().await;
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    for name in ["shop.yaml", "sources.yaml", "queues.yaml"] {
        let file = examples.join(name);
        let output = cli(&server, &["apply", "-f", file.to_str().unwrap()]);
        assert!(output.status.success(), "{name}: {}", String::from_utf8_lossy(&output.stderr));
    }
    for path in [
        "/v1/namespaces/shop/natssources/orders",
        "/v1/namespaces/shop/rabbitmqsources/payments",
        "/v1/namespaces/shop/mqttsources/sensors",
        "/v1/namespaces/shop/redisstreamsources/audit",
    ] {
        let (status, body) = server.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
}
