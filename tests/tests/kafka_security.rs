//! Kafka clients over TLS and SASL, end to end against the SASL_PLAINTEXT and SSL listeners of
//! `deploy/kafka/local.sh` (its PLAINTEXT port + 2 and + 3; user `switchyard`, password
//! `switchyard-secret`; the CA in `$KAFKA_DIR/tls/ca.pem`): KafkaSources reading with
//! credentials from the environment, inline and from files, a wrong password shown in the
//! status, a KafkaSink writing over SASL, and the Kafka log backend itself over SASL and TLS.
//! Records are produced and read back here through the PLAINTEXT listener: the same broker.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use switchyard_tests::{consume, create_topic, fresh, fresh_cluster, kafka_bootstrap, produce, Server, Subscriber};

const WAIT: Duration = Duration::from_secs(45);
const USER: &str = "switchyard";
const PASSWORD: &str = "switchyard-secret";

/// The PLAINTEXT listener's port, from which local.sh derives the others.
fn base_port() -> u16 {
    let bootstrap = kafka_bootstrap();
    let port = bootstrap.rsplit_once(':').and_then(|(_, port)| port.parse().ok());
    port.unwrap_or_else(|| panic!("SWITCHYARD_TEST_KAFKA '{bootstrap}' is not host:port"))
}

/// The SASL_PLAINTEXT listener.
fn sasl_bootstrap() -> String {
    format!("127.0.0.1:{}", base_port() + 2)
}

/// The SSL listener.
fn tls_bootstrap() -> String {
    format!("127.0.0.1:{}", base_port() + 3)
}

/// A file local.sh generated beside its CA (`ca.pem`, `client.pem`, `client.key`).
fn tls_file(name: &str) -> String {
    let dir = std::env::var("KAFKA_DIR")
        .map_or_else(|_| PathBuf::from(format!("/tmp/switchyard-kafka-{}", base_port())), PathBuf::from);
    let path = dir.join("tls").join(name);
    assert!(path.is_file(), "{} is missing: run deploy/kafka/local.sh up", path.display());
    path.display().to_string()
}

fn source_path(name: &str) -> String {
    format!("/v1/namespaces/default/kafkasources/{name}")
}

async fn kafka_source(server: &Server, name: &str, bootstrap: &str, topic: &str, net: Value) -> (StatusCode, Value) {
    server
        .put(
            &source_path(name),
            json!({
                "apiVersion": "sources.knative.dev/v1beta1",
                "kind": "KafkaSource",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {
                    "bootstrapServers": [bootstrap],
                    "topics": [topic],
                    "consumerGroup": fresh("switchyard-test"),
                    "initialOffset": "earliest",
                    "net": net,
                    "sink": {"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "b"}},
                },
            }),
        )
        .await
}

/// A server whose KafkaSources may read the credentials from its environment, with broker `b`
/// and a trigger to a subscriber.
async fn server_with_subscriber() -> (Server, Subscriber) {
    let server = Server::start_with_env(&[("TEST_KAFKA_USER", USER), ("TEST_KAFKA_PASSWORD", PASSWORD)]).await;
    let subscriber = Subscriber::start().await;
    server.broker("default", "b").await;
    server.trigger("default", "all", json!({"broker": "b", "subscriber": {"uri": subscriber.url}})).await;
    (server, subscriber)
}

/// Produces `n` records to `topic` through the PLAINTEXT listener; returns their event ids.
fn produce_records(topic: &str, n: usize) -> Vec<String> {
    let records: Vec<Value> = (0..n).map(|i| json!({"value": format!("record {i}")})).collect();
    produce(topic, &records).into_iter().map(|(p, o)| format!("partition:{p}/offset:{o}")).collect()
}

async fn wait_for_ids(subscriber: &Subscriber, server: &Server, ids: &[String]) {
    subscriber.wait_for_ids(&ids.iter().cloned().collect(), server).await;
}

#[tokio::test]
async fn kafka_sources_read_over_sasl_with_credentials_from_the_environment_or_inline() {
    let topic = fresh("sasl");
    create_topic(&topic, 1);
    let (server, subscriber) = server_with_subscriber().await;
    let from_env = json!({"sasl": {"enable": true, "user": {"env": "TEST_KAFKA_USER"}, "password": {"env": "TEST_KAFKA_PASSWORD"}}});
    let (status, body) = kafka_source(&server, "plain", &sasl_bootstrap(), &topic, from_env).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let inline = json!({"sasl": {"enable": true, "user": {"value": USER}, "password": {"value": PASSWORD},
                                 "type": {"value": "SCRAM-SHA-256"}}});
    let (status, body) = kafka_source(&server, "scram", &sasl_bootstrap(), &topic, inline).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let ids = produce_records(&topic, 3);
    // Each source reads the records with its own group: every one arrives twice.
    let received = subscriber.wait_for(2 * ids.len(), WAIT).await;
    for id in &ids {
        assert_eq!(received.iter().filter(|r| r.attribute("id").as_deref() == Some(id.as_str())).count(), 2, "{id}");
    }

    let (_, body) = server.get(&source_path("scram")).await;
    assert_eq!(body["spec"]["net"]["sasl"]["password"]["value"], "<redacted>", "{body}");
    assert_eq!(body["spec"]["net"]["sasl"]["type"]["value"], "SCRAM-SHA-256", "{body}");
    assert!(!body.to_string().contains(PASSWORD), "{body}");
    assert_eq!(body["status"]["conditions"][0]["status"], "True", "{body}");
    // Read, edited and submitted again, the source keeps its password.
    let mut resubmitted = body.clone();
    resubmitted.as_object_mut().unwrap().remove("status");
    let (status, body) = server.put(&source_path("scram"), resubmitted).await;
    assert!(status.is_success(), "{body}");
    let (_, body) = server.get(&source_path("plain")).await;
    assert_eq!(body["spec"]["net"]["sasl"]["password"]["env"], "TEST_KAFKA_PASSWORD", "{body}");
}

#[tokio::test]
async fn a_wrong_password_shows_in_the_status_and_delivers_nothing() {
    let topic = fresh("sasl-wrong");
    create_topic(&topic, 1);
    let (server, subscriber) = server_with_subscriber().await;
    let ids = produce_records(&topic, 2);
    let wrong = json!({"sasl": {"enable": true, "user": {"value": USER}, "password": {"value": "not-the-password"}}});
    let (status, body) = kafka_source(&server, "wrong", &sasl_bootstrap(), &topic, wrong).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let deadline = Instant::now() + WAIT;
    let condition = loop {
        let (_, body) = server.get(&source_path("wrong")).await;
        let condition = body["status"]["conditions"][0].clone();
        if condition["status"] == "False"
            && condition["message"].as_str().is_some_and(|m| m.contains("authentication failed"))
        {
            break condition;
        }
        assert!(Instant::now() < deadline, "no authentication failure in the status: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(condition["reason"], "KafkaUnavailable", "{condition}");
    assert!(!condition.to_string().contains("not-the-password"), "{condition}");
    assert!(subscriber.received().is_empty(), "delivered with a wrong password");

    // The records were there all along: with the right password they arrive.
    let right = json!({"sasl": {"enable": true, "user": {"value": USER}, "password": {"value": PASSWORD}}});
    let (status, body) = kafka_source(&server, "wrong", &sasl_bootstrap(), &topic, right).await;
    assert!(status.is_success(), "{body}");
    wait_for_ids(&subscriber, &server, &ids).await;
}

#[tokio::test]
async fn a_missing_password_file_shows_in_the_status_and_is_read_again_until_it_is_there() {
    let topic = fresh("sasl-file");
    create_topic(&topic, 1);
    let (server, subscriber) = server_with_subscriber().await;
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("kafka-password");
    let net = json!({"sasl": {"enable": true, "user": {"value": USER},
                              "password": {"file": password_file.display().to_string()}}});
    let (status, body) = kafka_source(&server, "from-file", &sasl_bootstrap(), &topic, net).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, body) = server.get(&source_path("from-file")).await;
        let condition = &body["status"]["conditions"][0];
        if condition["reason"] == "SecretNotFound" {
            let message = condition["message"].as_str().unwrap_or_default();
            assert!(message.contains("kafka-password") && message.contains("spec.net.sasl.password"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "no SecretNotFound in the status: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ids = produce_records(&topic, 2);
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    wait_for_ids(&subscriber, &server, &ids).await;
}

#[tokio::test]
async fn bad_net_settings_are_refused_naming_the_field() {
    let server = Server::start().await;
    let refused = [
        (
            json!({"sasl": {"enable": true, "user": {"value": USER}, "password": {"secretKeyRef": {"name": "kafka", "key": "password"}}}}),
            "spec.net.sasl.password.secretKeyRef",
        ),
        (json!({"sasl": {"enable": true, "user": {"value": USER}}}), "spec.net.sasl.password"),
        (
            json!({"sasl": {"enable": true, "user": {"value": USER}, "password": {"value": PASSWORD}, "type": {"value": "GSSAPI"}}}),
            "spec.net.sasl.type.value",
        ),
        (json!({"tls": {"enable": true, "caCert": {"value": "not a certificate"}}}), "spec.net.tls.caCert.value"),
    ];
    for (net, field) in refused {
        let (status, body) = kafka_source(&server, "refused", &sasl_bootstrap(), "t", net.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{net}: {body}");
        assert!(body.to_string().contains(field), "{net}: {body}");
    }
}

#[tokio::test]
async fn a_kafka_source_reads_over_tls_with_the_ca_and_a_client_certificate_from_files() {
    let topic = fresh("tls");
    create_topic(&topic, 1);
    let (server, subscriber) = server_with_subscriber().await;
    let net = json!({"tls": {"enable": true, "caCert": {"file": tls_file("ca.pem")},
                             "cert": {"file": tls_file("client.pem")}, "key": {"file": tls_file("client.key")}}});
    let (status, body) = kafka_source(&server, "tls", &tls_bootstrap(), &topic, net).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let ids = produce_records(&topic, 3);
    wait_for_ids(&subscriber, &server, &ids).await;
    let (_, body) = server.get(&source_path("tls")).await;
    assert_eq!(body["status"]["conditions"][0]["status"], "True", "{body}");
}

#[tokio::test]
async fn a_kafka_sink_writes_over_sasl_and_refuses_knatives_auth_reference() {
    let topic = fresh("sink-sasl");
    create_topic(&topic, 1);
    let (server, _subscriber) = server_with_subscriber().await;
    let sink = |spec: Value| {
        json!({"apiVersion": "eventing.knative.dev/v1alpha1", "kind": "KafkaSink",
               "metadata": {"name": "secure", "namespace": "default"}, "spec": spec})
    };
    let (status, body) = server
        .put(
            "/v1/namespaces/default/kafkasinks/secure",
            sink(json!({"topic": topic, "bootstrapServers": [sasl_bootstrap()], "auth": {"secret": {"ref": {"name": "kafka"}}}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("spec.net"), "{body}");

    let net = json!({"sasl": {"enable": true, "user": {"env": "TEST_KAFKA_USER"}, "password": {"env": "TEST_KAFKA_PASSWORD"},
                              "type": {"value": "SCRAM-SHA-256"}}});
    let (status, body) = server
        .put(
            "/v1/namespaces/default/kafkasinks/secure",
            sink(json!({"topic": topic, "bootstrapServers": [sasl_bootstrap()], "contentMode": "binary", "net": net})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"]["conditions"][0]["status"], "True", "{body}");
    server
        .trigger(
            "default",
            "to-sink",
            json!({"broker": "b", "subscriber": {"ref": {
        "apiVersion": "eventing.knative.dev/v1alpha1", "kind": "KafkaSink", "name": "secure"}}}),
        )
        .await;
    let event = json!({"specversion": "1.0", "id": "secure-1", "type": "order.created", "source": "/shop",
                       "datacontenttype": "application/json", "data": {"n": 1}});
    assert_eq!(server.send_batch("default", "b", &[event]).await, StatusCode::ACCEPTED);
    let records = consume(&topic, 1);
    let id = records[0]["headers"].as_array().and_then(|h| h.iter().find(|h| h[0] == "ce_id")).map(|h| h[1].clone());
    assert_eq!(id, Some(json!("secure-1")), "{records:?}");
}

#[tokio::test]
async fn the_log_backend_ingests_and_delivers_over_sasl_and_over_tls() {
    let ca = tls_file("ca.pem");
    let settings: [(String, Vec<(&str, &str)>); 2] = [
        (
            sasl_bootstrap(),
            vec![
                ("SWITCHYARD_KAFKA_SECURITY_PROTOCOL", "sasl_plaintext"),
                ("SWITCHYARD_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256"),
                ("SWITCHYARD_KAFKA_SASL_USERNAME", USER),
                ("SWITCHYARD_KAFKA_SASL_PASSWORD", PASSWORD),
            ],
        ),
        (tls_bootstrap(), vec![("SWITCHYARD_KAFKA_SECURITY_PROTOCOL", "ssl"), ("SWITCHYARD_KAFKA_SSL_CA_FILE", &ca)]),
    ];
    for (bootstrap, env) in settings {
        let server = Server::start_node_on_with_env(&bootstrap, &fresh_cluster(), &env).await;
        let subscriber = Subscriber::start().await;
        server.broker("default", "b").await;
        server.trigger("default", "all", json!({"broker": "b", "subscriber": {"uri": subscriber.url}})).await;
        let event = json!({"specversion": "1.0", "id": "over-security", "type": "t", "source": "/s"});
        assert_eq!(server.send_batch("default", "b", &[event]).await, StatusCode::ACCEPTED, "{bootstrap}");
        let received = subscriber.wait_for(1, WAIT).await;
        assert_eq!(received[0].attribute("id").as_deref(), Some("over-security"), "{bootstrap}");
        assert!(!server.log().contains(PASSWORD), "the password is in the log: {bootstrap}");
    }
}
