//! MqttSource end to end against the real Mosquitto of `deploy/mosquitto/local.sh` (the broker's
//! log may be the embedded one or Kafka): plain messages are wrapped, CloudEvents in the MQTT
//! binding (5.0 binary and structured, 3.1.1 structured) pass through, messages are acknowledged
//! only once their events are durable (a `kill -9` mid-stream loses none, and messages published
//! while the node is down wait in its persistent session), and a server outage is survived with
//! `Ready=False` and the reason meanwhile.

use std::collections::BTreeSet;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::{json, Value};
use switchyard_tests::{by_id, free_port, fresh, Received, Server, Subscriber};

const WAIT: Duration = Duration::from_secs(45);
const DEFAULT_ADDRESS: &str = "127.0.0.1:11883";

/// Runs `local.sh <command>` for the instance on `port` in `dir` (the shared one when `None`);
/// returns what it printed.
fn local_sh(command: &str, port: u16, dir: Option<&std::path::Path>) -> String {
    let mut env = vec![("MQTT_PORT", port.to_string())];
    if let Some(dir) = dir {
        env.push(("MQTT_DIR", dir.display().to_string()));
    }
    switchyard_tests::local_sh("mosquitto", command, &env)
}

/// The shared Mosquitto: `$SWITCHYARD_TEST_MQTT` (default `127.0.0.1:11883`), started with the
/// script's `up` when it does not answer.
fn mqtt_address() -> String {
    static ADDRESS: OnceLock<String> = OnceLock::new();
    ADDRESS
        .get_or_init(|| {
            let address = std::env::var("SWITCHYARD_TEST_MQTT").unwrap_or_else(|_| DEFAULT_ADDRESS.to_owned());
            if std::net::TcpStream::connect(&address).is_err() {
                let port = address.rsplit_once(':').and_then(|(_, port)| port.parse().ok()).expect("host:port");
                return local_sh("up", port, None);
            }
            address
        })
        .clone()
}

/// A Mosquitto of the test's own on a free port, to stop and start; deleted when dropped.
struct PrivateMqtt {
    port: u16,
    dir: tempfile::TempDir,
}

impl PrivateMqtt {
    fn start() -> PrivateMqtt {
        let private = PrivateMqtt { port: free_port(), dir: tempfile::tempdir().expect("tempdir") };
        private.up();
        private
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn up(&self) {
        local_sh("up", self.port, Some(self.dir.path()));
    }

    fn stop(&self) {
        local_sh("stop", self.port, Some(self.dir.path()));
    }
}

impl Drop for PrivateMqtt {
    fn drop(&mut self) {
        let env = [("MQTT_PORT", self.port.to_string()), ("MQTT_DIR", self.dir.path().display().to_string())];
        switchyard_tests::local_sh_down("mosquitto", &env);
    }
}

/// One message to publish.
#[derive(Clone, Default)]
struct Message {
    topic: String,
    content_type: Option<String>,
    user_properties: Vec<(String, String)>,
    payload: Vec<u8>,
}

fn message(topic: &str, payload: impl Into<Vec<u8>>) -> Message {
    Message { topic: topic.to_owned(), payload: payload.into(), ..Message::default() }
}

/// Publishes `messages` at QoS 1 over MQTT 5 and returns once the server acknowledged them all.
async fn publish(address: &str, messages: Vec<Message>) {
    let (host, port) = address.rsplit_once(':').expect("host:port");
    let mut options = MqttOptions::new(fresh("publisher"), host, port.parse().expect("port"));
    options.set_max_packet_size(Some(1 << 20));
    let (client, mut event_loop) = AsyncClient::new(options, 100);
    let count = messages.len();
    let publisher = tokio::spawn(async move {
        for message in messages {
            let properties = PublishProperties {
                content_type: message.content_type,
                user_properties: message.user_properties,
                ..PublishProperties::default()
            };
            client
                .publish_with_properties(message.topic, QoS::AtLeastOnce, false, message.payload, properties)
                .await
                .expect("publish");
        }
        client
    });
    let deadline = Instant::now() + WAIT;
    let mut acknowledged = 0;
    while acknowledged < count {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, event_loop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acknowledged += 1,
            Ok(Ok(_)) => {}
            Ok(Err(error)) => panic!("publishing to {address}: {error}"),
            Err(_) => panic!("{acknowledged} of {count} messages acknowledged by {address} after {WAIT:?}"),
        }
    }
    let client = publisher.await.expect("publisher");
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), event_loop.poll()).await;
}

/// Declares MqttSource `name` on `topics` and returns once it is subscribed: the status cannot
/// say so before the source has run, so a probe topic is subscribed as well, and probes are
/// published to it until one arrives (tests leave them out with [`events`]).
async fn mqtt_source(
    server: &Server,
    subscriber: &Subscriber,
    name: &str,
    address: &str,
    topics: &[&str],
    extra: Value,
) {
    let probe = fresh(&format!("{PROBE}/{name}"));
    let mut filters: Vec<&str> = topics.to_vec();
    filters.push(&probe);
    let mut spec = json!({
        "address": format!("mqtt://{address}"),
        "topics": filters,
        "clientId": fresh(&format!("switchyard-test-{name}")),
        "sink": {"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "b"}},
    });
    for (field, value) in extra.as_object().into_iter().flatten() {
        spec[field] = value.clone();
    }
    let (status, body) = server
        .put(
            &format!("/v1/namespaces/default/mqttsources/{name}"),
            json!({
                "apiVersion": "sources.switchyard.dev/v1alpha1",
                "kind": "MqttSource",
                "metadata": {"name": name, "namespace": "default"},
                "spec": spec,
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Subscribed: only from now on does the server keep messages for the source.
    let deadline = Instant::now() + WAIT;
    while !subscriber.received().iter().any(|r| r.attribute("subject").as_deref() == Some(probe.as_str())) {
        assert!(Instant::now() < deadline, "source {name} never subscribed; log: {}", server.log());
        publish(address, vec![message(&probe, "probe")]).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_for_condition(server, name, "True", None).await;
}

/// Topics under this prefix are the probes of [`mqtt_source`].
const PROBE: &str = "switchyard-probe";

/// What the subscriber received, probes left out.
fn events(subscriber: &Subscriber) -> Vec<Received> {
    subscriber
        .received()
        .into_iter()
        .filter(|r| !r.attribute("subject").is_some_and(|subject| subject.starts_with(PROBE)))
        .collect()
}

/// Waits until at least `count` events (probes left out) arrived.
async fn wait_for_events(subscriber: &Subscriber, count: usize) -> Vec<Received> {
    let deadline = Instant::now() + WAIT;
    loop {
        let received = events(subscriber);
        if received.len() >= count {
            return received;
        }
        assert!(Instant::now() < deadline, "expected {count} events, got {} after {WAIT:?}", received.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the source's Ready condition has `status` (and `reason`, when given).
async fn wait_for_condition(server: &Server, name: &str, status: &str, reason: Option<&str>) -> Value {
    let path = format!("/v1/namespaces/default/mqttsources/{name}");
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, body) = server.get(&path).await;
        let condition = &body["status"]["conditions"][0];
        if condition["status"] == status && reason.is_none_or(|reason| condition["reason"] == reason) {
            return body;
        }
        assert!(Instant::now() < deadline, "expected Ready={status} {reason:?}: {body}\nlog: {}", server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn setup() -> (Server, Subscriber) {
    let server = Server::start().await;
    let subscriber = Subscriber::start().await;
    server.broker("default", "b").await;
    server.trigger("default", "all", json!({"broker": "b", "subscriber": {"uri": subscriber.url}})).await;
    (server, subscriber)
}

fn by_subject<'a>(received: &'a [Received], subject: &str) -> &'a Received {
    received
        .iter()
        .find(|r| r.attribute("subject").as_deref() == Some(subject))
        .unwrap_or_else(|| panic!("no event about {subject} in {received:?}"))
}

#[tokio::test]
async fn plain_messages_are_wrapped_and_cloudevents_pass_through() {
    let address = mqtt_address();
    let (server, subscriber) = setup().await;
    let prefix = fresh("home");
    let filters = [format!("{prefix}/+/temperature"), format!("{prefix}/events/#")];
    mqtt_source(&server, &subscriber, "home", &address, &[&filters[0], &filters[1]], json!({})).await;

    let plain_topic = format!("{prefix}/kitchen/temperature");
    let bytes_topic = format!("{prefix}/hall/temperature");
    let events = format!("{prefix}/events/orders");
    let structured = json!({"specversion": "1.0", "id": "order-2", "type": "order.shipped", "source": "/shop",
                            "datacontenttype": "text/plain", "data": "by boat", "region": "eu"});
    publish(
        &address,
        vec![
            Message {
                content_type: Some("application/json".to_owned()),
                user_properties: vec![("Unit".to_owned(), "C".to_owned())],
                ..message(&plain_topic, "{\"celsius\":21.5}")
            },
            message(&bytes_topic, [0u8, 1, 2, 255]),
            // MQTT 5 binary mode: attributes as User Properties, datacontenttype as Content Type.
            Message {
                content_type: Some("application/json".to_owned()),
                user_properties: [
                    ("specversion", "1.0"),
                    ("id", "order-1"),
                    ("type", "order.created"),
                    ("source", "/shop"),
                    ("region", "eu"),
                ]
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .to_vec(),
                ..message(&events, "{\"n\":1}")
            },
            // Structured mode.
            Message {
                content_type: Some("application/cloudevents+json; charset=utf-8".to_owned()),
                ..message(&events, structured.to_string())
            },
        ],
    )
    .await;
    let received = wait_for_events(&subscriber, 4).await;

    let plain = by_subject(&received, &plain_topic);
    assert_eq!(plain.header("ce-type"), Some("dev.switchyard.mqtt.message"));
    assert_eq!(plain.attribute("source").as_deref(), Some("/apis/v1/namespaces/default/mqttsources/home"));
    assert!(plain.header("ce-id").is_some_and(|id| id.starts_with("sha256:")), "{plain:?}");
    assert_eq!(plain.header("ce-mqttpropertyunit"), Some("C"));
    assert_eq!(plain.header("content-type"), Some("application/json"));
    assert_eq!(&plain.body[..], b"{\"celsius\":21.5}");
    let bytes = by_subject(&received, &bytes_topic);
    assert_eq!(&bytes.body[..], &[0, 1, 2, 255], "the payload, byte for byte");

    let binary_ce = by_id(&received, "order-1");
    assert_eq!(binary_ce.header("ce-type"), Some("order.created"));
    assert_eq!(binary_ce.header("ce-source"), Some("/shop"));
    assert_eq!(binary_ce.header("ce-region"), Some("eu"));
    assert_eq!(binary_ce.header("content-type"), Some("application/json"));
    assert!(binary_ce.header("ce-subject").is_none(), "a CloudEvent is not wrapped");
    assert_eq!(&binary_ce.body[..], b"{\"n\":1}");
    let structured_ce = by_id(&received, "order-2");
    assert_eq!(structured_ce.header("ce-type"), Some("order.shipped"));
    assert_eq!(structured_ce.header("ce-region"), Some("eu"));
    assert_eq!(structured_ce.header("content-type"), Some("text/plain"));
    assert_eq!(&structured_ce.body[..], b"by boat");

    let (_, body) = server.get("/v1/namespaces/default/mqttsources/home").await;
    assert_eq!(body["status"]["conditions"][0]["status"], "True", "{body}");
    let sent = server.metric("switchyard_source_events_total", &[("kind", "MqttSource"), ("outcome", "sent")]).await;
    assert!(sent.is_some_and(|sent| sent >= 5.0), "4 events and a probe at least: {sent:?}");
}

#[tokio::test]
async fn mqtt_3_sources_take_structured_cloudevents_and_wrap_the_rest() {
    let address = mqtt_address();
    let (server, subscriber) = setup().await;
    let topic = fresh("legacy");
    mqtt_source(&server, &subscriber, "legacy", &address, &[&topic], json!({"protocolVersion": 3})).await;
    let event = json!({"specversion": "1.0", "id": "v3-1", "type": "reading", "source": "/plant", "data": {"v": 1}});
    // Published without properties: what a 3.1.1 publisher sends.
    publish(&address, vec![message(&topic, event.to_string()), message(&topic, "21.5")]).await;
    let received = wait_for_events(&subscriber, 2).await;
    let structured = by_id(&received, "v3-1");
    assert_eq!(structured.header("ce-type"), Some("reading"));
    assert_eq!(&structured.body[..], b"{\"v\":1}");
    let plain = by_subject(&received, &topic);
    assert_eq!(plain.header("ce-type"), Some("dev.switchyard.mqtt.message"));
    assert_eq!(&plain.body[..], b"21.5");
}

fn numbered(topic: &str, from: usize, n: usize) -> Vec<Message> {
    (from..from + n).map(|i| message(topic, format!("message {i}"))).collect()
}

async fn wait_for_bodies(subscriber: &Subscriber, expected: &BTreeSet<String>, server: &Server) {
    let deadline = Instant::now() + WAIT;
    loop {
        let bodies: BTreeSet<String> =
            events(subscriber).iter().map(|r| String::from_utf8_lossy(&r.body).into_owned()).collect();
        let missing: Vec<&String> = expected.difference(&bodies).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} messages never delivered, e.g. {:?}; log: {}",
            missing.len(),
            expected.len(),
            &missing[..missing.len().min(5)],
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_kill_mid_stream_loses_no_message_and_messages_wait_in_the_session() {
    let address = mqtt_address();
    let (mut server, subscriber) = setup().await;
    let topic = fresh("stream");
    mqtt_source(&server, &subscriber, "stream", &address, &[&topic], json!({"receiveMaximum": 20})).await;
    let expected: BTreeSet<String> = (0..400).map(|i| format!("message {i}")).collect();
    publish(&address, numbered(&topic, 0, 300)).await;
    // Mid-stream: some messages are taken, some are not, some are in flight.
    wait_for_events(&subscriber, 30).await;
    server.kill9();
    // Published while the node is down: queued in the source's persistent session.
    publish(&address, numbered(&topic, 300, 100)).await;
    server.restart().await;
    wait_for_bodies(&subscriber, &expected, &server).await;
    // A redelivered message is the same event: its id says so.
    let received = events(&subscriber);
    let ids: BTreeSet<&str> = received.iter().filter_map(|r| r.header("ce-id")).collect();
    assert_eq!(ids.len(), expected.len(), "one id per message, however often it was delivered");
}

#[tokio::test]
async fn a_server_outage_is_survived_with_the_reason_in_the_status() {
    let mqtt = PrivateMqtt::start();
    let (server, subscriber) = setup().await;
    let topic = fresh("outage");
    mqtt_source(&server, &subscriber, "outage", &mqtt.address(), &[&topic], json!({})).await;
    publish(&mqtt.address(), vec![message(&topic, "before")]).await;
    wait_for_events(&subscriber, 1).await;

    mqtt.stop();
    let body = wait_for_condition(&server, "outage", "False", Some("MqttUnavailable")).await;
    assert!(body["status"]["conditions"][0]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    mqtt.up();
    // The server kept the session: the source is back without subscribing again.
    wait_for_condition(&server, "outage", "True", None).await;
    publish(&mqtt.address(), vec![message(&topic, "after")]).await;
    let expected: BTreeSet<String> = ["before", "after"].map(str::to_owned).into();
    wait_for_bodies(&subscriber, &expected, &server).await;
    let (_, body) = server.get("/v1/namespaces/default/mqttsources/outage").await;
    assert_eq!(body["status"]["conditions"][0]["status"], "True", "{body}");
}

#[tokio::test]
async fn invalid_specs_are_refused_naming_the_field() {
    let server = Server::start().await;
    for (spec, field) in [
        (json!({"address": "mqtt://127.0.0.1:1883", "topics": ["a/#/b"]}), "spec.topics[0]"),
        (json!({"address": "mqtts://127.0.0.1:8883", "topics": ["a"]}), "spec.address"),
        (json!({"address": "127.0.0.1:1883", "topics": ["a"], "qos": 2}), "spec.qos"),
        (json!({"address": "127.0.0.1:1883", "topics": ["a"], "prefetch": 2}), "prefetch"),
    ] {
        let mut spec = spec;
        spec["sink"] = json!({"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "b"}});
        let (status, body) = server.put("/v1/namespaces/default/mqttsources/bad", json!({"spec": spec})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body.to_string().contains(field), "{field}: {body}");
    }
}
