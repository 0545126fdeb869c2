//! RabbitmqSource end to end against the real RabbitMQ of `deploy/rabbitmq/local.sh` (the
//! broker's log may be the embedded one or Kafka): plain messages are wrapped as Knative wraps
//! them, CloudEvents pass through in every header convention and in structured mode, messages
//! are acknowledged only once their events are durable (a `kill -9` mid-stream loses none), and
//! RabbitMQ going away and coming back is survived with the right status.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use reqwest::StatusCode;
use serde_json::{json, Value};
use switchyard_tests::{by_id, free_port, fresh, local_sh, local_sh_down, Server, Subscriber};

const WAIT: Duration = Duration::from_secs(45);
const DEFAULT_URI: &str = "amqp://guest:guest@127.0.0.1:15673/%2f";

/// The shared RabbitMQ: `$SWITCHYARD_TEST_RABBITMQ`, started with `local.sh up` when it does not
/// answer (once per test binary).
async fn shared_uri() -> String {
    static STARTED: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    STARTED
        .get_or_init(|| async {
            let uri = std::env::var("SWITCHYARD_TEST_RABBITMQ").unwrap_or_else(|_| DEFAULT_URI.to_owned());
            if Connection::connect(&uri, ConnectionProperties::default()).await.is_err() {
                tokio::task::spawn_blocking(|| local_sh("rabbitmq", "up", &[])).await.unwrap();
            }
            uri
        })
        .await
        .clone()
}

/// A channel with publisher confirms: a publish returns once RabbitMQ has the message.
async fn channel(uri: &str) -> (Connection, Channel) {
    let connection = Connection::connect(uri, ConnectionProperties::default()).await.expect("connect to rabbitmq");
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    (connection, channel)
}

async fn publish(channel: &Channel, exchange: &str, routing_key: &str, body: &[u8], properties: BasicProperties) {
    let confirm = channel
        .basic_publish(exchange.into(), routing_key.into(), BasicPublishOptions::default(), body, properties)
        .await
        .unwrap();
    assert!(confirm.await.unwrap().is_ack(), "rabbitmq took the message");
}

fn headers(pairs: &[(&str, &str)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in pairs {
        table.insert((*name).into(), AMQPValue::LongString(value.as_bytes().to_vec().into()));
    }
    table
}

async fn declare_queue(channel: &Channel, queue: &str) {
    let options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(queue.into(), options, FieldTable::default()).await.unwrap();
}

async fn rabbitmq_source(server: &Server, name: &str, uri: &str, config: Value, broker: &str) {
    let (status, body) = server
        .put(
            &format!("/v1/namespaces/default/rabbitmqsources/{name}"),
            json!({
                "apiVersion": "sources.knative.dev/v1alpha1",
                "kind": "RabbitmqSource",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {
                    "connection": {"uri": uri},
                    "rabbitmqResourcesConfig": config,
                    "sink": {"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": broker}},
                },
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

async fn wait_for_condition(server: &Server, name: &str, key: &str, expected: &str) {
    let path = format!("/v1/namespaces/default/rabbitmqsources/{name}");
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, body) = server.get(&path).await;
        if body["status"]["conditions"][0][key] == expected {
            return;
        }
        assert!(Instant::now() < deadline, "expected {key} {expected}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `queue` exists and has a consumer: the source has declared and bound it.
async fn wait_for_consumer(connection: &Connection, queue: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        // A passive declaration of a missing queue closes its channel: a fresh one each time.
        let channel = connection.create_channel().await.unwrap();
        let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        if let Ok(declared) = channel.queue_declare(queue.into(), options, FieldTable::default()).await {
            if declared.consumer_count() > 0 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the source never consumed queue {queue}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn plain_messages_are_wrapped_and_cloudevents_pass_through() {
    let uri = shared_uri().await;
    let (exchange, queue) = (fresh("shop"), fresh("orders"));
    let (connection, channel) = channel(&uri).await;
    channel
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let server = Server::start().await;
    let subscriber = Subscriber::start().await;
    server.broker("default", "b").await;
    server.trigger("default", "all", json!({"broker": "b", "subscriber": {"uri": subscriber.url}})).await;
    // The source declares the queue (classic) and binds it to the exchange for `order.*`.
    let config = json!({"queueName": queue, "exchangeName": exchange, "routingKey": "order.*", "queueType": "classic"});
    rabbitmq_source(&server, "orders", &uri, config, "b").await;
    wait_for_consumer(&connection, &queue).await;

    let json_type = || BasicProperties::default().with_content_type("application/json".into());
    publish(
        &channel,
        &exchange,
        "order.created",
        b"{\"sku\":\"A1\"}",
        json_type()
            .with_message_id("m-1".into())
            .with_headers(headers(&[("X-Trace", "abc")]))
            .with_timestamp(1_764_583_200),
    )
    .await;
    publish(&channel, &exchange, "order.raw", &[0, 1, 2, 3], BasicProperties::default()).await;
    publish(&channel, &exchange, "ignored.key", b"not bound", BasicProperties::default()).await;
    // Binary mode, the CloudEvents AMQP binding's names.
    let binding = [
        ("cloudEvents_specversion", "1.0"),
        ("cloudEvents_id", "order-1"),
        ("cloudEvents_type", "order.created"),
        ("cloudEvents_source", "/shop"),
        ("cloudEvents_region", "eu"),
    ];
    publish(&channel, &exchange, "order.ce", b"{\"n\":1}", json_type().with_headers(headers(&binding))).await;
    // Binary mode as Knative's RabbitMQ broker writes it: unprefixed headers.
    let knative =
        [("specversion", "1.0"), ("id", "order-2"), ("type", "order.paid"), ("source", "/shop"), ("tier", "gold")];
    publish(&channel, &exchange, "order.kn", b"{\"n\":2}", json_type().with_headers(headers(&knative))).await;
    // Structured mode.
    let structured = json!({"specversion": "1.0", "id": "order-3", "type": "order.shipped", "source": "/shop",
                            "datacontenttype": "text/plain", "data": "by boat"});
    publish(
        &channel,
        &exchange,
        "order.st",
        structured.to_string().as_bytes(),
        BasicProperties::default().with_content_type("application/cloudevents+json".into()),
    )
    .await;
    let known: BTreeSet<String> = ["m-1", "order-1", "order-2", "order-3"].map(str::to_owned).into();
    subscriber.wait_for_ids(&known, &server).await;
    let received = subscriber.wait_for(5, WAIT).await;

    let plain = by_id(&received, "m-1");
    assert_eq!(plain.header("ce-type"), Some("dev.knative.rabbitmq.event"));
    assert_eq!(plain.attribute("source"), Some(format!("/apis/v1/namespaces/default/rabbitmqsources/orders#{queue}")));
    assert_eq!(plain.header("ce-subject"), Some("m-1"));
    assert_eq!(plain.header("ce-rabbitmqheaderxtrace"), Some("abc"));
    assert_eq!(plain.header("ce-rabbitmqroutingkey"), Some("order.created"));
    assert_eq!(plain.attribute("rabbitmqexchange"), Some(exchange.clone()));
    assert_eq!(plain.header("ce-time"), Some("2025-12-01T10:00:00.000Z"));
    assert_eq!(plain.header("content-type"), Some("application/json"));
    assert_eq!(&plain.body[..], b"{\"sku\":\"A1\"}");
    let raw =
        received.iter().find(|r| r.header("ce-rabbitmqroutingkey") == Some("order.raw")).expect("the raw message");
    assert!(raw.header("ce-id").is_some_and(|id| id.starts_with("sha256:")), "{raw:?}");
    assert_eq!(&raw.body[..], &[0, 1, 2, 3], "the body, byte for byte");

    let binary_ce = by_id(&received, "order-1");
    assert_eq!(binary_ce.header("ce-type"), Some("order.created"));
    assert_eq!(binary_ce.header("ce-region"), Some("eu"));
    assert!(binary_ce.header("ce-rabbitmqroutingkey").is_none(), "a CloudEvent is not wrapped");
    assert_eq!(binary_ce.header("content-type"), Some("application/json"));
    assert_eq!(&binary_ce.body[..], b"{\"n\":1}");
    let knative = by_id(&received, "order-2");
    assert_eq!(knative.header("ce-type"), Some("order.paid"));
    assert_eq!(knative.header("ce-tier"), Some("gold"));
    assert_eq!(&knative.body[..], b"{\"n\":2}");
    let structured = by_id(&received, "order-3");
    assert_eq!(structured.header("ce-type"), Some("order.shipped"));
    assert_eq!(&structured.body[..], b"by boat");
    assert_eq!(received.len(), 5, "the unbound routing key is not consumed: {received:?}");

    let (_, body) = server.get("/v1/namespaces/default/rabbitmqsources/orders").await;
    assert_eq!(body["status"]["conditions"][0]["status"], "True", "{body}");
}

/// Publishes messages `from..from + n` (message ids `m-<i>`) to `queue`; returns their ids.
async fn publish_numbered(channel: &Channel, queue: &str, from: usize, n: usize) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for i in from..from + n {
        let id = format!("m-{i}");
        let properties = BasicProperties::default().with_message_id(id.as_str().into()).with_delivery_mode(2);
        publish(channel, "", queue, format!("message {i}").as_bytes(), properties).await;
        ids.insert(id);
    }
    ids
}

#[tokio::test]
async fn a_kill_mid_stream_loses_no_message() {
    let uri = shared_uri().await;
    let queue = fresh("stream");
    let (_connection, channel) = channel(&uri).await;
    declare_queue(&channel, &queue).await;
    let mut server = Server::start().await;
    let subscriber = Subscriber::start().await;
    server.broker("default", "b").await;
    server.trigger("default", "all", json!({"broker": "b", "subscriber": {"uri": subscriber.url}})).await;
    let config = json!({"queueName": queue, "predeclared": true, "parallelism": 20});
    rabbitmq_source(&server, "stream", &uri, config, "b").await;
    let mut expected = publish_numbered(&channel, &queue, 0, 300).await;
    // Mid-stream: some messages are taken, some are not, some are in flight.
    subscriber.wait_for(30, WAIT).await;
    server.kill9();
    expected.extend(publish_numbered(&channel, &queue, 300, 100).await);
    server.restart().await;
    subscriber.wait_for_ids(&expected, &server).await;
}

/// A RabbitMQ node of a test's own, stopped (data and all) when the test ends.
struct PrivateRabbitmq {
    env: Vec<(&'static str, String)>,
    uri: String,
    _dir: tempfile::TempDir,
}

impl PrivateRabbitmq {
    fn start() -> PrivateRabbitmq {
        let dir = tempfile::tempdir().unwrap();
        let env = vec![
            ("RABBITMQ_PORT", free_port().to_string()),
            ("RABBITMQ_DIST_PORT", free_port().to_string()),
            ("RABBITMQ_DIR", dir.path().join("rabbitmq").display().to_string()),
        ];
        let uri = local_sh("rabbitmq", "up", &env);
        PrivateRabbitmq { env, uri, _dir: dir }
    }

    fn stop(&self) {
        local_sh("rabbitmq", "stop", &self.env);
    }

    fn up(&self) {
        assert_eq!(local_sh("rabbitmq", "up", &self.env), self.uri);
    }
}

impl Drop for PrivateRabbitmq {
    fn drop(&mut self) {
        local_sh_down("rabbitmq", &self.env);
    }
}

#[tokio::test]
async fn rabbitmq_going_away_is_survived_with_the_right_status() {
    let rabbitmq = tokio::task::spawn_blocking(PrivateRabbitmq::start).await.unwrap();
    let queue = fresh("outage");
    let (connection, publisher) = channel(&rabbitmq.uri).await;
    declare_queue(&publisher, &queue).await;
    let server = Server::start().await;
    let subscriber = Subscriber::start().await;
    server.broker("default", "b").await;
    server.trigger("default", "all", json!({"broker": "b", "subscriber": {"uri": subscriber.url}})).await;
    let config = json!({"queueName": queue, "predeclared": true});
    rabbitmq_source(&server, "outage", &rabbitmq.uri, config, "b").await;
    let before = publish_numbered(&publisher, &queue, 0, 5).await;
    subscriber.wait_for_ids(&before, &server).await;
    drop(connection);

    let rabbitmq = tokio::task::spawn_blocking(move || {
        rabbitmq.stop();
        rabbitmq
    })
    .await
    .unwrap();
    wait_for_condition(&server, "outage", "reason", "RabbitmqUnavailable").await;
    let (_, body) = server.get("/v1/namespaces/default/rabbitmqsources/outage").await;
    assert_eq!(body["status"]["conditions"][0]["status"], "False", "{body}");

    let rabbitmq = tokio::task::spawn_blocking(move || {
        rabbitmq.up();
        rabbitmq
    })
    .await
    .unwrap();
    let (_connection, publisher) = channel(&rabbitmq.uri).await;
    let after = publish_numbered(&publisher, &queue, 5, 5).await;
    subscriber.wait_for_ids(&after, &server).await;
    wait_for_condition(&server, "outage", "status", "True").await;
    drop(rabbitmq);
}

/// The benchmark's baseline (`bench/mq/rabbitmq.sh`), not a test: publishes `BENCH_N` persistent
/// messages of `BENCH_SIZE` bytes to the durable classic queue `BENCH_QUEUE` of
/// `BENCH_RABBITMQ_URI` with publisher confirms (1000 outstanding), and prints the time it took.
#[tokio::test]
#[ignore = "run by bench/mq/rabbitmq.sh"]
async fn bench_publish() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let (uri, queue) = (var("BENCH_RABBITMQ_URI"), var("BENCH_QUEUE"));
    let n: usize = var("BENCH_N").parse().unwrap();
    let body = vec![b'x'; var("BENCH_SIZE").parse().unwrap()];
    let (_connection, channel) = channel(&uri).await;
    let options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), AMQPValue::LongString(b"classic".to_vec().into()));
    channel.queue_declare(queue.as_str().into(), options, arguments).await.unwrap();
    let start = Instant::now();
    let mut pending = Vec::with_capacity(1000);
    for i in 0..n {
        let properties = BasicProperties::default().with_delivery_mode(2);
        let confirm = channel
            .basic_publish("".into(), queue.as_str().into(), BasicPublishOptions::default(), &body, properties)
            .await
            .unwrap();
        pending.push(confirm);
        if pending.len() == 1000 || i + 1 == n {
            for confirm in pending.drain(..) {
                assert!(confirm.await.unwrap().is_ack());
            }
        }
    }
    println!("published {n} in {:.6} s", start.elapsed().as_secs_f64());
}
