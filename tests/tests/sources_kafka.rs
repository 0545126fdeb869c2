//! KafkaSource end to end against the real Kafka of `deploy/kafka/local.sh` (any cluster: the
//! broker's log may be the embedded one or Kafka): plain records are wrapped as Knative wraps
//! them, CloudEvents records pass through, offsets are committed only once the events are
//! durable, and a `kill -9` mid-stream loses no record.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use switchyard_tests::{by_id, create_topic, fresh, kafka_bootstrap, produce, Server, Subscriber};

const WAIT: Duration = Duration::from_secs(45);

async fn kafka_source(server: &Server, name: &str, topics: &[&str], broker: &str) {
    let (status, body) = server
        .put(
            &format!("/v1/namespaces/default/kafkasources/{name}"),
            json!({
                "apiVersion": "sources.knative.dev/v1beta1",
                "kind": "KafkaSource",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {
                    "bootstrapServers": [kafka_bootstrap()],
                    "topics": topics,
                    "consumerGroup": fresh("switchyard-test"),
                    "initialOffset": "earliest",
                    "sink": {"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": broker}},
                },
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn plain_records_are_wrapped_and_cloudevents_records_pass_through() {
    let topic = fresh("orders");
    create_topic(&topic, 3);
    let server = Server::start().await;
    let subscriber = Subscriber::start().await;
    server.broker("default", "b").await;
    server.trigger("default", "all", json!({"broker": "b", "subscriber": {"uri": subscriber.url}})).await;
    kafka_source(&server, "orders", &[&topic], "b").await;

    let offsets = produce(
        &topic,
        &[
            json!({"key": "customer-7", "value": "{\"sku\":\"A1\"}", "partition": 0,
                   "headers": [["content-type", "application/json"], ["X-Trace", "abc"]]}),
            json!({"value_base64": "AAECAw==", "partition": 1}),
            json!({"key": "order-1", "value": "{\"n\":1}", "partition": 2, "headers": [
                ["ce_specversion", "1.0"], ["ce_id", "order-1"], ["ce_type", "order.created"],
                ["ce_source", "/shop"], ["ce_region", "eu"], ["content-type", "application/json"]]}),
            json!({"value": json!({"specversion": "1.0", "id": "order-2", "type": "order.shipped", "source": "/shop",
                                   "datacontenttype": "text/plain", "data": "by boat"}).to_string(),
                   "partition": 2, "headers": [["content-type", "application/cloudevents+json"]]}),
        ],
    );
    let received = subscriber.wait_for(4, WAIT).await;

    let (partition, offset) = offsets[0];
    let plain = by_id(&received, &format!("partition:{partition}/offset:{offset}"));
    assert_eq!(plain.header("ce-type"), Some("dev.knative.kafka.event"));
    assert_eq!(plain.attribute("source"), Some(format!("/apis/v1/namespaces/default/kafkasources/orders#{topic}")));
    assert_eq!(plain.attribute("subject"), Some(format!("partition:{partition}#{offset}")));
    assert_eq!(plain.header("ce-key"), Some("customer-7"));
    assert_eq!(plain.header("ce-partitionkey"), Some("customer-7"));
    assert_eq!(plain.header("ce-kafkaheaderxtrace"), Some("abc"));
    assert_eq!(plain.header("content-type"), Some("application/json"));
    assert!(plain.header("ce-time").is_some_and(|t| t.ends_with('Z')), "the record timestamp");
    assert_eq!(&plain.body[..], b"{\"sku\":\"A1\"}");
    let (partition, offset) = offsets[1];
    let binary = by_id(&received, &format!("partition:{partition}/offset:{offset}"));
    assert_eq!(&binary.body[..], &[0, 1, 2, 3], "the value, byte for byte");
    assert!(binary.header("ce-key").is_none());

    let binary_ce = by_id(&received, "order-1");
    assert_eq!(binary_ce.header("ce-type"), Some("order.created"));
    assert_eq!(binary_ce.header("ce-region"), Some("eu"));
    assert!(binary_ce.header("ce-kafkaheaderceid").is_none(), "a CloudEvent is not wrapped");
    assert_eq!(&binary_ce.body[..], b"{\"n\":1}");
    let structured = by_id(&received, "order-2");
    assert_eq!(structured.header("ce-type"), Some("order.shipped"));
    assert_eq!(&structured.body[..], b"by boat");

    let (_, body) = server.get("/v1/namespaces/default/kafkasources/orders").await;
    assert_eq!(body["status"]["conditions"][0]["status"], "True", "{body}");
}

/// `n` records with distinct values, spread over the partitions; returns their event ids.
fn produce_numbered(topic: &str, from: usize, n: usize) -> BTreeSet<String> {
    let records: Vec<Value> =
        (from..from + n).map(|i| json!({"key": format!("k{}", i % 7), "value": format!("record {i}")})).collect();
    produce(topic, &records).into_iter().map(|(p, o)| format!("partition:{p}/offset:{o}")).collect()
}

#[tokio::test]
async fn a_kill_mid_stream_loses_no_record() {
    let topic = fresh("stream");
    create_topic(&topic, 3);
    let mut server = Server::start().await;
    let subscriber = Subscriber::start().await;
    server.broker("default", "b").await;
    server.trigger("default", "all", json!({"broker": "b", "subscriber": {"uri": subscriber.url}})).await;
    kafka_source(&server, "stream", &[&topic], "b").await;
    let mut expected = produce_numbered(&topic, 0, 300);
    // Mid-stream: some records are taken, some are not, some are in flight.
    subscriber.wait_for(30, WAIT).await;
    server.kill9();
    expected.extend(produce_numbered(&topic, 300, 100));
    server.restart().await;
    subscriber.wait_for_ids(&expected, &server).await;
}

async fn wait_for_reason(server: &Server, path: &str, reason: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, body) = server.get(path).await;
        if body["status"]["conditions"][0]["reason"] == reason {
            return;
        }
        assert!(Instant::now() < deadline, "expected {reason}: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn topics_may_come_later_and_records_wait_in_kafka_while_the_sink_is_missing() {
    let topic = fresh("later");
    let server = Server::start().await;
    let subscriber = Subscriber::start().await;
    server.broker("default", "b").await;
    server.trigger("default", "early", json!({"broker": "b", "subscriber": {"uri": subscriber.url}})).await;
    kafka_source(&server, "early", &[&topic], "b").await;
    wait_for_reason(&server, "/v1/namespaces/default/kafkasources/early", "TopicNotFound").await;
    create_topic(&topic, 2);
    let expected = produce_numbered(&topic, 0, 20);
    subscriber.wait_for_ids(&expected, &server).await;

    // A second source on the same records, whose broker does not exist yet: it reads them but
    // cannot send them, so it commits nothing, and they arrive once the broker exists. Its
    // trigger is declared first, so that it has every event the broker gets.
    let late = Subscriber::start().await;
    server.trigger("default", "late", json!({"broker": "later", "subscriber": {"uri": late.url}})).await;
    kafka_source(&server, "waits", &[&topic], "later").await;
    wait_for_reason(&server, "/v1/namespaces/default/kafkasources/waits", "SinkNotFound").await;
    // The status says so as soon as the broker is missing; the source has read records and
    // failed to send them once it logs that the sink does not take them.
    let deadline = Instant::now() + WAIT;
    while !server.log().lines().any(|l| l.contains("the sink does not take events") && l.contains("default/waits")) {
        assert!(Instant::now() < deadline, "the source never tried to send to the missing broker: {}", server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.broker("default", "later").await;
    late.wait_for_ids(&expected, &server).await;
}

#[tokio::test]
async fn bad_records_are_wrapped_or_skipped_and_counted_and_the_source_goes_on() {
    let topic = fresh("poison");
    create_topic(&topic, 1);
    let server = Server::start().await;
    let subscriber = Subscriber::start().await;
    server.broker("default", "b").await;
    server.trigger("default", "all", json!({"broker": "b", "subscriber": {"uri": subscriber.url}})).await;
    kafka_source(&server, "poison", &[&topic], "b").await;

    // Far more headers than an event has attributes: no event can carry the record.
    let many_headers: Vec<Value> = (0..70_000).map(|i| json!([format!("h{i}"), "v"])).collect();
    let offsets = produce(
        &topic,
        &[
            // An empty content type (this record used to panic the source, again after every
            // restart).
            json!({"value": "no type", "headers": [["content-type", ""]]}),
            // Records that claim to be CloudEvents but are not valid ones.
            json!({"value": "x", "headers": [["ce_specversion", "1.0"], ["ce_type", "t"]]}),
            json!({"value": "{nope", "headers": [["content-type", "application/cloudevents+json"]]}),
            json!({"value": "x", "headers": [["ce_specversion", "2.0"], ["ce_id", "a"], ["ce_source", "/s"], ["ce_type", "t"]]}),
            json!({"value": "x", "headers": [["ce_specversion", "1.0"], ["ce_id", "a"], ["ce_id", "b"], ["ce_source", "/s"], ["ce_type", "t"]]}),
            json!({"value": "too many", "headers": many_headers}),
            // Good records after them.
            json!({"value": "{\"ok\":true}", "headers": [["content-type", "application/json"]]}),
            json!({"value": "by boat", "headers": [["ce_specversion", "1.0"], ["ce_id", "good-1"], ["ce_source", "/shop"], ["ce_type", "t"]]}),
        ],
    );
    let id = |i: usize| format!("partition:{}/offset:{}", offsets[i].0, offsets[i].1);
    let mut expected: BTreeSet<String> = [0, 1, 2, 3, 4, 6].into_iter().map(id).collect();
    expected.insert("good-1".to_owned());
    subscriber.wait_for_ids(&expected, &server).await;
    let received = subscriber.received();
    assert!(!subscriber.ids().contains(&id(5)), "the record no event can carry is skipped");
    let empty = by_id(&received, &id(0));
    assert_eq!(empty.header("ce-type"), Some("dev.knative.kafka.event"));
    assert_eq!(&empty.body[..], b"no type");
    assert!(empty.header("content-type").is_none_or(|t| !t.is_empty()), "no empty content type: {empty:?}");
    let invalid = by_id(&received, &id(2));
    assert_eq!(invalid.header("ce-kafkaheadercontenttype"), Some("application/cloudevents+json"));
    assert_eq!(&invalid.body[..], b"{nope", "the record's value, as it was");
    assert_eq!(&by_id(&received, &id(6)).body[..], b"{\"ok\":true}");

    let count = |reason: &'static str| {
        let server = &server;
        async move { server.metric("switchyard_source_kafka_bad_records_total", &[("reason", reason)]).await.unwrap_or(0.0) }
    };
    assert_eq!(count("invalid_cloudevent").await, 4.0);
    assert_eq!(count("unmappable").await, 1.0);
    assert_eq!(
        server.metric("switchyard_task_panics_total", &[("task", "source")]).await.unwrap_or(0.0),
        0.0,
        "nothing panicked"
    );
    let (_, body) = server.get("/v1/namespaces/default/kafkasources/poison").await;
    assert_eq!(body["status"]["conditions"][0]["status"], "True", "{body}");
    let log = server.log();
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(log.matches("is not a valid CloudEvent").count(), 1, "logged once: {log}");
}
