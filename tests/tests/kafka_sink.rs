//! KafkaSink end to end against the real Kafka of `deploy/kafka/local.sh` (whatever the
//! broker's log): a trigger whose subscriber names a KafkaSink writes each event to the topic in
//! the Kafka binding (binary or structured), read back here by a plain consumer; the sink's
//! address takes events directly; a source's `sink.ref` may name one; a missing topic or sink
//! shows in the status, and deliveries that cannot be written follow the trigger's retry and
//! dead-letter policy.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use switchyard_tests::{consume, create_topic, fresh, kafka_bootstrap, produce, Server};

const WAIT: Duration = Duration::from_secs(45);

async fn kafka_sink(server: &Server, name: &str, spec: Value) -> (StatusCode, Value) {
    server
        .put(
            &format!("/v1/namespaces/default/kafkasinks/{name}"),
            json!({"apiVersion": "eventing.knative.dev/v1alpha1", "kind": "KafkaSink",
                   "metadata": {"name": name, "namespace": "default"}, "spec": spec}),
        )
        .await
}

fn sink_ref(name: &str) -> Value {
    json!({"ref": {"apiVersion": "eventing.knative.dev/v1alpha1", "kind": "KafkaSink", "name": name}})
}

fn event(id: &str) -> Value {
    json!({"specversion": "1.0", "id": id, "type": "order.created", "source": "/shop", "partitionkey": "customer-7",
           "datacontenttype": "application/json", "data": {"n": id}})
}

fn header<'a>(record: &'a Value, name: &str) -> Option<&'a str> {
    record["headers"].as_array()?.iter().find(|h| h[0] == name)?[1].as_str()
}

/// Polls `path` until `ready(status)` or the deadline.
async fn wait_for_status(server: &Server, path: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, body) = server.get(path).await;
        if ready(&body["status"]) {
            return body;
        }
        assert!(Instant::now() < deadline, "{path} never reached the expected status: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn reason(status: &Value) -> Option<&str> {
    status["conditions"][0]["reason"].as_str()
}

#[tokio::test]
async fn triggers_write_to_kafka_sinks_in_both_content_modes() {
    let (binary_topic, structured_topic) = (fresh("sink-binary"), fresh("sink-structured"));
    create_topic(&binary_topic, 1);
    create_topic(&structured_topic, 1);
    let server = Server::start().await;
    server.broker("default", "b").await;
    let (status, body) = kafka_sink(
        &server,
        "binary",
        json!({"topic": binary_topic, "bootstrapServers": [kafka_bootstrap()], "contentMode": "binary"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"]["address"]["url"], format!("{}/kafkasinks/default/binary", server.url));
    assert_eq!(body["status"]["conditions"][0]["status"], "True", "{body}");
    let (status, body) =
        kafka_sink(&server, "structured", json!({"topic": structured_topic, "bootstrapServers": [kafka_bootstrap()]}))
            .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Ordered: one partitionkey's events reach the topic in log order.
    let ordered = json!({"ordering": "ordered"});
    server
        .trigger("default", "to-binary", json!({"broker": "b", "subscriber": sink_ref("binary"), "delivery": ordered}))
        .await;
    server.trigger("default", "to-structured", json!({"broker": "b", "subscriber": sink_ref("structured")})).await;
    let (_, trigger) = server.get("/v1/namespaces/default/triggers/to-binary").await;
    assert_eq!(trigger["status"]["subscriberUri"], format!("{}/kafkasinks/default/binary", server.url), "{trigger}");
    assert_eq!(trigger["spec"]["subscriber"], sink_ref("binary"), "the declaration is kept as declared");

    let events: Vec<Value> = (1..=3).map(|n| event(&format!("order-{n}"))).collect();
    assert_eq!(server.send_batch("default", "b", &events).await, StatusCode::ACCEPTED);

    let records = consume(&binary_topic, 3);
    let ids: Vec<&str> = records.iter().filter_map(|r| header(r, "ce_id")).collect();
    assert_eq!(ids, ["order-1", "order-2", "order-3"], "in order: {records:?}");
    let first = &records[0];
    assert_eq!(header(first, "ce_specversion"), Some("1.0"));
    assert_eq!(header(first, "ce_type"), Some("order.created"));
    assert_eq!(header(first, "content-type"), Some("application/json"));
    assert_eq!(first["key"], "customer-7", "the partitionkey is the record key (Kafka binding §3.1)");
    assert_eq!(serde_json::from_str::<Value>(first["value"].as_str().unwrap()).unwrap(), json!({"n": "order-1"}));

    let records = consume(&structured_topic, 3);
    assert_eq!(header(&records[0], "content-type"), Some("application/cloudevents+json; charset=utf-8"));
    let decoded: Vec<Value> =
        records.iter().map(|record| serde_json::from_str(record["value"].as_str().unwrap()).unwrap()).collect();
    let decoded = decoded.iter().find(|event| event["id"] == "order-1").expect("order-1 in the structured topic");
    assert_eq!(decoded["data"], json!({"n": "order-1"}));
    assert!(decoded["knativearrivaltime"].is_string(), "what the broker stamped travels on: {decoded}");
    assert_eq!(server.metric("switchyard_kafkasink_events_total", &[("outcome", "written")]).await, Some(6.0));
    server.assert_healthy().await;
}

#[tokio::test]
async fn the_address_takes_events_directly_and_refuses_what_it_cannot_write() {
    let topic = fresh("sink-direct");
    let server = Server::start().await;
    // numPartitions and replicationFactor: the topic is created, as Knative does.
    let spec =
        json!({"topic": topic, "bootstrapServers": [kafka_bootstrap()], "numPartitions": 2, "replicationFactor": 1});
    let (status, body) = kafka_sink(&server, "direct", spec).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let address = body["status"]["address"]["url"].as_str().unwrap().to_owned();
    let client = reqwest::Client::new();
    let response = client
        .post(&address)
        .header("ce-specversion", "1.0")
        .header("ce-id", "direct-1")
        .header("ce-type", "t")
        .header("ce-source", "/s")
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let record = &consume(&topic, 1)[0];
    let decoded: Value = serde_json::from_str(record["value"].as_str().unwrap()).unwrap();
    assert_eq!((decoded["id"].as_str(), decoded["data"].as_str()), (Some("direct-1"), Some("hello")));

    let response = client.post(format!("{}/kafkasinks/default/nowhere", server.url)).body("x").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(response.text().await.unwrap().contains("kafkasink 'default/nowhere' does not exist"));
    let response = client.post(&address).header("ce-specversion", "1.0").body("no id").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let (status, body) = kafka_sink(&server, "bad", json!({"topic": "a b", "bootstrapServers": ["x:1"]})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("spec.topic"), "{body}");
    let (status, body) =
        kafka_sink(&server, "bad", json!({"topic": "t", "bootstrapServers": ["x:1"], "contentMode": "avro"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("spec.contentMode"), "{body}");
    server.assert_healthy().await;
}

#[tokio::test]
async fn events_that_cannot_be_written_follow_the_triggers_dead_letter_policy() {
    let topic = fresh("sink-missing");
    let server = Server::start().await;
    server.broker("default", "b").await;
    // The topic does not exist, and without numPartitions the sink does not create it.
    let (status, body) =
        kafka_sink(&server, "missing", json!({"topic": topic, "bootstrapServers": [kafka_bootstrap()]})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "stored but not ready: {body}");
    let sink = wait_for_status(&server, "/v1/namespaces/default/kafkasinks/missing", |s| reason(s).is_some()).await;
    assert_eq!(reason(&sink["status"]), Some("TopicNotPresent"), "{sink}");

    // A trigger naming a sink that does not exist yet says so.
    server.trigger("default", "early", json!({"broker": "b", "subscriber": sink_ref("later")})).await;
    let (_, early) = server.get("/v1/namespaces/default/triggers/early").await;
    assert_eq!(reason(&early["status"]), Some("SubscriberNotResolved"), "{early}");

    let spec = json!({"broker": "b", "subscriber": sink_ref("missing"),
                      "delivery": {"retry": 1, "backoffDelay": "PT0.1S"}});
    server.trigger("default", "t", spec).await;
    assert_eq!(server.send_batch("default", "b", &[event("lost-1")]).await, StatusCode::ACCEPTED);
    let deadline = Instant::now() + WAIT;
    let letters = loop {
        let (_, body) = server.get("/v1/namespaces/default/triggers/t/deadletters").await;
        if body["items"].as_array().is_some_and(|items| !items.is_empty()) {
            break body;
        }
        assert!(Instant::now() < deadline, "no dead letter: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(letters["items"][0]["event"]["id"], "lost-1", "{letters}");
    assert_eq!(letters["items"][0]["lastStatus"], 503, "{letters}");

    // Once the topic exists the sink is ready, and a redrive writes the event.
    create_topic(&topic, 1);
    wait_for_status(&server, "/v1/namespaces/default/kafkasinks/missing", |s| s["conditions"][0]["status"] == "True")
        .await;
    let response = reqwest::Client::new()
        .post(format!("{}/v1/namespaces/default/triggers/t/deadletters/redrive", server.url))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let record = &consume(&topic, 1)[0];
    let decoded: Value = serde_json::from_str(record["value"].as_str().unwrap()).unwrap();
    assert_eq!(decoded["id"], "lost-1");
    server.assert_healthy().await;
}

#[tokio::test]
async fn a_sources_sink_ref_may_name_a_kafka_sink() {
    let (input, output) = (fresh("source-in"), fresh("source-out"));
    create_topic(&input, 1);
    create_topic(&output, 1);
    let server = Server::start().await;
    let (status, body) = kafka_sink(
        &server,
        "out",
        json!({"topic": output, "bootstrapServers": [kafka_bootstrap()], "contentMode": "binary"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = server
        .put(
            "/v1/namespaces/default/kafkasources/bridge",
            json!({"spec": {"bootstrapServers": [kafka_bootstrap()], "topics": [input], "initialOffset": "earliest",
                            "consumerGroup": fresh("bridge"), "sink": sink_ref("out")}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"]["sinkUri"], format!("{}/kafkasinks/default/out", server.url), "{body}");
    produce(&input, &[json!({"value": "plain", "headers": [["content-type", "text/plain"]]})]);
    let record = &consume(&output, 1)[0];
    assert_eq!(header(record, "ce_type"), Some("dev.knative.kafka.event"), "{record}");
    assert_eq!(record["value"], "plain");
    server.assert_healthy().await;
}

#[tokio::test]
async fn knative_yaml_with_a_kafka_sink_applies_with_the_cli() {
    let topic = fresh("sink-yaml");
    let server = Server::start().await;
    let yaml = format!(
        r#"apiVersion: eventing.knative.dev/v1alpha1
kind: KafkaSink
metadata:
  name: orders-out
  namespace: shop
spec:
  topic: {topic}
  bootstrapServers:
    - {bootstrap}
  contentMode: binary
  numPartitions: 1
  replicationFactor: 1
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: default
  namespace: shop
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: to-kafka
  namespace: shop
spec:
  broker: default
  subscriber:
    ref:
      apiVersion: eventing.knative.dev/v1alpha1
      kind: KafkaSink
      name: orders-out
"#,
        bootstrap = kafka_bootstrap()
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shop.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let cli = |args: &[&str]| {
        std::process::Command::new(switchyard_tests::binary())
            .args(args)
            .env("SWITCHYARD_SERVER", &server.url)
            .output()
            .expect("run the cli")
    };
    let output = cli(&["apply", "-f", file.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "kafkasink/shop/orders-out created\nbroker/shop/default created\ntrigger/shop/to-kafka created\n"
    );
    let table = String::from_utf8_lossy(&cli(&["get", "kafkasinks", "-n", "shop"]).stdout).into_owned();
    assert!(table.contains("orders-out") && table.contains(&topic), "{table}");
    assert_eq!(server.send_batch("shop", "default", &[event("yaml-1")]).await, StatusCode::ACCEPTED);
    assert_eq!(header(&consume(&topic, 1)[0], "ce_id"), Some("yaml-1"));
}
