//! The outbound guard against the real binary: destinations judged at connect time, after DNS
//! resolution; always-refused literal addresses refused at declaration; no error body from an
//! internal address given back in strict mode.
//!
//! Every connection stays on loopback. The connect-time guard is exercised by configuring
//! loopback as refused (`[outbound] refuse`, or strict mode) and naming the subscriber
//! `localhost`, which the system resolver resolves to 127.0.0.1. The always-refused addresses
//! (link-local, cloud metadata, unspecified) only ever appear in declarations that are refused,
//! so nothing is ever sent to them.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use switchyard_tests::{binary, Answer, Server, Subscriber};

const WAIT: Duration = Duration::from_secs(15);
const REFUSED: &str = "switchyard_outbound_refused_total";

/// A server started with `config` as its configuration file.
async fn server_with(config: &str) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, config).expect("write config");
    let server = Server::start_with(&["--config", path.to_str().expect("utf-8 path")]).await;
    (server, dir)
}

/// The subscriber's URL by the name `localhost` (resolved by the system resolver).
fn by_name(subscriber: &Subscriber) -> String {
    format!("http://localhost:{}/", subscriber.address.port())
}

/// Retries spent fast, so a refused event reaches the dead-letter store in a moment.
fn quick(subscriber: &str) -> Value {
    json!({"broker": "b", "subscriber": {"uri": subscriber}, "delivery": {"retry": 1, "backoffDelay": "PT0.05S"}})
}

async fn wait_for_dead_letter(server: &Server, namespace: &str, trigger: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = server.get(&format!("/v1/namespaces/{namespace}/triggers/{trigger}/deadletters")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if let Some(entry) = body["items"].as_array().and_then(|items| items.first()) {
            return entry.clone();
        }
        assert!(Instant::now() < deadline, "{namespace}/{trigger}: the event was never dead-lettered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn refused_count(server: &Server, reason: &str) -> f64 {
    server.metric(REFUSED, &[("reason", reason)]).await.unwrap_or(0.0)
}

#[tokio::test]
async fn a_name_resolving_to_a_refused_range_is_refused_at_connect_time_and_dead_lettered() {
    let (server, _dir) = server_with("[outbound]\nrefuse = [\"127.0.0.0/8\"]\n").await;
    server.broker("default", "b").await;
    let subscriber = Subscriber::start().await;
    // Accepted at declaration: where a name resolves is known only when connecting.
    server.trigger("default", "t", quick(&by_name(&subscriber))).await;
    assert_eq!(server.send_binary("default", "b", "e-1", "t", b"{}").await, StatusCode::ACCEPTED);
    let entry = wait_for_dead_letter(&server, "default", "t").await;
    let error = entry["lastError"].as_str().unwrap_or_default();
    assert!(
        error.contains(
            "refused by the outbound guard: 'localhost' resolves only to 127.0.0.1 (configured refused range)"
        ),
        "{entry}"
    );
    assert!(entry.get("lastStatus").is_none_or(Value::is_null), "{entry}");
    assert!(subscriber.received().is_empty(), "the refused subscriber was reached");
    // Both attempts counted.
    assert!(refused_count(&server, "configured refused range").await >= 2.0, "{}", server.metrics().await);
    assert!(server.log().contains("refused by the outbound guard"), "no warning logged");
}

#[tokio::test]
async fn a_literal_loopback_subscriber_is_accepted_but_refused_at_attempt_time() {
    let (server, _dir) = server_with("[outbound]\nrefuse_private = true\n").await;
    server.broker("default", "b").await;
    let subscriber = Subscriber::start().await;
    // Loopback is not always refused, so the declaration stands.
    server.trigger("default", "t", quick(&subscriber.url)).await;
    assert_eq!(server.send_binary("default", "b", "e-1", "t", b"{}").await, StatusCode::ACCEPTED);
    let entry = wait_for_dead_letter(&server, "default", "t").await;
    let error = entry["lastError"].as_str().unwrap_or_default();
    assert!(error.contains("refused by the outbound guard: '127.0.0.1' is a loopback address"), "{entry}");
    assert!(subscriber.received().is_empty(), "the refused subscriber was reached");
    assert!(refused_count(&server, "loopback").await >= 2.0, "{}", server.metrics().await);
}

#[tokio::test]
async fn a_namespace_allow_list_delivers_for_that_namespace_only() {
    let config = "[outbound]\nrefuse = [\"127.0.0.0/8\"]\n[outbound.namespaces.team-a]\nallow = [\"127.0.0.1/32\"]\n";
    let (server, _dir) = server_with(config).await;
    let subscriber = Subscriber::start().await;
    for namespace in ["team-a", "team-b"] {
        server.broker(namespace, "b").await;
        server.trigger(namespace, "by-name", quick(&by_name(&subscriber))).await;
        server.trigger(namespace, "literal", quick(&subscriber.url)).await;
        assert_eq!(
            server.send_binary(namespace, "b", &format!("{namespace}-1"), "t", b"{}").await,
            StatusCode::ACCEPTED
        );
    }
    for trigger in ["by-name", "literal"] {
        let entry = wait_for_dead_letter(&server, "team-b", trigger).await;
        assert!(entry["lastError"].as_str().is_some_and(|e| e.contains("outbound guard")), "{entry}");
    }
    // Team-b's attempts are over (both dead-lettered). The deliveries themselves are awaited:
    // on Kafka a trigger's backlog reads 0 until its group member has been given partitions.
    let received = subscriber.wait_for(2, WAIT).await;
    let ids: Vec<_> = received.iter().filter_map(|r| r.header("ce-id")).collect();
    assert_eq!(ids, ["team-a-1", "team-a-1"], "team-a delivers by name and by address; team-b never");
    for trigger in ["by-name", "literal"] {
        let (_, body) = server.get(&format!("/v1/namespaces/team-a/triggers/{trigger}/deadletters")).await;
        assert_eq!(body["items"], json!([]), "{trigger}: {body}");
    }
}

#[tokio::test]
async fn in_strict_mode_an_internal_answer_reaches_the_dead_letter_sink_as_its_status_only() {
    let (server, _dir) = server_with("[outbound]\nrefuse_private = true\nallow = [\"127.0.0.1/32\"]\n").await;
    server.broker("default", "b").await;
    let secret = "internal-service-secret-token";
    let subscriber = Subscriber::start().await;
    subscriber.always(Answer::status(StatusCode::FORBIDDEN).body(format!("forbidden: {secret}")));
    let sink = Subscriber::start().await;
    server
        .trigger(
            "default",
            "t",
            json!({"broker": "b", "subscriber": {"uri": subscriber.url},
                "delivery": {"retry": 0, "deadLetterSink": {"uri": sink.url}}}),
        )
        .await;
    assert_eq!(server.send_binary("default", "b", "e-1", "t", b"{}").await, StatusCode::ACCEPTED);
    let received = sink.wait_for(1, WAIT).await.remove(0);
    assert_eq!(subscriber.received().len(), 1, "the allow-listed subscriber was reached");
    assert_eq!(received.header("ce-knativeerrorcode"), Some("403"));
    assert_eq!(received.header("ce-knativeerrordata"), None, "the internal answer's body was given back");
    let everything = format!("{:?} {:?}", received.headers, received.body);
    assert!(!everything.contains(secret), "{everything}");
}

#[tokio::test]
async fn always_refused_literal_addresses_are_refused_at_declaration_naming_the_field() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    let forbidden = [
        ("http://169.254.169.254/latest/meta-data", "cloud metadata"),
        ("http://[fe80::1]/", "link-local"),
        ("http://0.0.0.0:1/", "unspecified"),
        ("http://[::ffff:169.254.169.254]/", "cloud metadata"),
    ];
    for (uri, what) in forbidden {
        let declarations = [
            ("triggers/t", json!({"spec": {"broker": "b", "subscriber": {"uri": uri}}}), "spec.subscriber.uri"),
            (
                "triggers/t",
                json!({"spec": {"broker": "b", "subscriber": {"uri": "http://127.0.0.1:9/"},
                    "delivery": {"deadLetterSink": {"uri": uri}}}}),
                "spec.delivery.deadLetterSink.uri",
            ),
            (
                "brokers/b2",
                json!({"spec": {"delivery": {"deadLetterSink": {"uri": uri}}}}),
                "spec.delivery.deadLetterSink.uri",
            ),
            (
                "pingsources/p",
                json!({"spec": {"schedule": "* * * * * *", "data": "x", "sink": {"uri": uri}}}),
                "spec.sink.uri",
            ),
        ];
        for (path, body, field) in declarations {
            let (status, answer) = server.put(&format!("/v1/namespaces/default/{path}"), body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {uri}: {answer}");
            let text = answer.to_string();
            assert!(
                text.contains(field) && text.contains(what) && text.contains("[outbound] allow"),
                "{path} {uri}: {text}"
            );
        }
    }
    for path in ["triggers/t", "brokers/b2", "pingsources/p"] {
        let (status, _) = server.get(&format!("/v1/namespaces/default/{path}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path} was stored");
    }
}

#[test]
fn outbound_config_is_checked_at_start_and_printed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("[outbound]\nrefuse = [\"127.0.0.0/33\"]\n", "outbound.refuse", "'127.0.0.0/33'"),
        ("[outbound]\nallow = [\"localhost\"]\n", "outbound.allow", "'localhost'"),
        ("[outbound.namespaces.team-a]\nallow = [\"10.0.0/8\"]\n", "outbound.namespaces", "'10.0.0/8'"),
        ("[outbound]\nkafka_clusters = [\"kafka\"]\n", "outbound.kafka_clusters", "'kafka'"),
        ("[outbound]\nkafka_group_prefix = \"a b\"\n", "outbound.kafka_group_prefix", "'a b'"),
    ];
    for (config, key, quoted) in cases {
        let path: PathBuf = dir.path().join("switchyard.toml");
        std::fs::write(&path, config).expect("write config");
        let output = Command::new(binary())
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--config"])
            .arg(&path)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .output()
            .expect("run serve");
        assert!(!output.status.success(), "serve started with {config}");
        let error = String::from_utf8_lossy(&output.stderr);
        assert!(error.contains(key) && error.contains(quoted), "{config}: {error}");
    }
    let path = dir.path().join("valid.toml");
    std::fs::write(
        &path,
        "[outbound]\nallow = [\"10.1.0.0/16\"]\n[outbound.namespaces.team-a]\nallow = [\"127.0.0.1\"]\n",
    )
    .expect("write config");
    let output = Command::new(binary())
        .args(["config", "print", "--config"])
        .arg(&path)
        .env("SWITCHYARD_OUTBOUND_REFUSE_PRIVATE", "true")
        .output()
        .expect("run config print");
    let printed = String::from_utf8_lossy(&output.stdout);
    for line in [
        "[outbound]",
        "refuse_private = true",
        "allow = [\"10.1.0.0/16\"]",
        "[outbound.namespaces.team-a]",
        "allow = [\"127.0.0.1/32\"]",
    ] {
        assert!(printed.lines().any(|l| l == line), "missing {line:?} in:\n{printed}");
    }
    let output = Command::new(binary())
        .args(["config", "print"])
        .env("SWITCHYARD_OUTBOUND_REFUSE_PRIVATE", "maybe")
        .output()
        .expect("run config print");
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && error.contains("SWITCHYARD_OUTBOUND_REFUSE_PRIVATE"), "{error}");
}

#[tokio::test]
async fn a_kafka_source_may_name_only_the_listed_clusters() {
    let (server, _dir) = server_with("[outbound]\nkafka_clusters = [\"127.0.0.1:19092\"]\n").await;
    server.broker("default", "b").await;
    let spec = |servers: Value| {
        json!({"spec": {"bootstrapServers": servers, "topics": ["orders"],
            "sink": {"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "b"}}}})
    };
    let (status, body) =
        server.put("/v1/namespaces/default/kafkasources/k", spec(json!(["127.0.0.1:19092,127.0.0.1:19093"]))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let text = body.to_string();
    assert!(text.contains("spec.bootstrapServers") && text.contains("'127.0.0.1:19093'"), "{text}");
    let (status, body) = server.put("/v1/namespaces/default/kafkasources/k", spec(json!(["127.0.0.1:19092"]))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    server.delete("/v1/namespaces/default/kafkasources/k").await;
    // KafkaSinks too.
    let sink = |servers: &str| json!({"spec": {"topic": "out", "bootstrapServers": [servers]}});
    let (status, body) = server.put("/v1/namespaces/default/kafkasinks/s", sink("127.0.0.1:19093")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("spec.bootstrapServers"), "{body}");
}

/// On the Kafka backend, its own topics (its brokers') and consumer groups (its triggers') are
/// off limits to KafkaSources and KafkaSinks: reading or writing them would reach another
/// namespace's broker past authentication and EventPolicies, and joining a trigger's group
/// would commit its offsets.
#[tokio::test]
async fn kafka_sources_and_sinks_may_not_name_the_kafka_backends_own_topics_and_groups() {
    let cluster = switchyard_tests::fresh_cluster();
    let server = Server::start_node(&cluster).await;
    server.broker("default", "b").await;
    let own = format!("{cluster}.default.b");
    let bootstrap = switchyard_tests::kafka_bootstrap();
    let sink_ref = json!({"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "b"}});
    for (path, body, field) in [
        (
            "/v1/namespaces/default/kafkasources/read",
            json!({"spec": {"bootstrapServers": [bootstrap], "topics": [own], "sink": sink_ref}}),
            "spec.topics[0]",
        ),
        (
            "/v1/namespaces/default/kafkasources/join",
            json!({"spec": {"bootstrapServers": [bootstrap], "topics": ["elsewhere"], "consumerGroup": format!("{cluster}.default.t"), "sink": sink_ref}}),
            "spec.consumerGroup",
        ),
        (
            "/v1/namespaces/default/kafkasinks/write",
            json!({"spec": {"bootstrapServers": [bootstrap], "topic": own}}),
            "spec.topic",
        ),
    ] {
        let (status, answer) = server.put(path, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {answer}");
        let detail = answer["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(field) && detail.contains("this server's own Kafka names"), "{path}: {answer}");
    }
}
