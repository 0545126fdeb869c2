//! NatsSource end to end against a real NATS server (`deploy/nats/local.sh`, Debian's
//! `nats-server` with JetStream): plain messages are wrapped, CloudEvents in the NATS binding
//! (binary and structured) pass through, JetStream messages are acknowledged only once their
//! events are durable (a `kill -9` mid-stream loses none), core subjects are read at most once,
//! and a server outage shows as `NatsUnavailable` and is survived.
//!
//! The shared server is `$SWITCHYARD_TEST_NATS` (default `nats://127.0.0.1:14222`), started
//! with `deploy/nats/local.sh up` when it does not answer. The outage test runs a private
//! server on a free port, which it stops and starts, and deletes when done.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};
use switchyard_tests::{by_id, free_port, fresh, local_sh, local_sh_down, Server, Subscriber};

const WAIT: Duration = Duration::from_secs(45);

/// The shared server's URL, started if it does not answer.
async fn shared_nats() -> String {
    let url = std::env::var("SWITCHYARD_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:14222".to_owned());
    if async_nats::connect(&url).await.is_err() {
        let port = url.rsplit(':').next().unwrap_or("14222").trim_end_matches('/').to_owned();
        local_sh("nats", "up", &[("NATS_PORT", port)]);
    }
    url
}

/// A JetStream stream named `stream` on `subjects`, on the server at `url`.
async fn create_stream(url: &str, stream: &str, subjects: &[String]) -> jetstream::Context {
    let js = jetstream::new(async_nats::connect(url).await.expect("connect to nats"));
    js.create_stream(jetstream::stream::Config {
        name: stream.to_owned(),
        subjects: subjects.to_vec(),
        ..Default::default()
    })
    .await
    .expect("create stream");
    js
}

async fn nats_source(server: &Server, name: &str, spec: Value) {
    let (status, body) = server
        .put(
            &format!("/v1/namespaces/default/natssources/{name}"),
            json!({
                "apiVersion": "sources.switchyard.dev/v1alpha1",
                "kind": "NatsSource",
                "metadata": {"name": name, "namespace": "default"},
                "spec": spec,
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

fn sink(broker: &str) -> Value {
    json!({"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": broker}})
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(*name, *value);
    }
    headers
}

async fn publish(js: &jetstream::Context, subject: &str, headers: HeaderMap, payload: &'static [u8]) -> u64 {
    js.publish_with_headers(subject.to_owned(), headers, payload.into())
        .await
        .expect("publish")
        .await
        .expect("stored")
        .sequence
}

async fn wait_for_reason(server: &Server, path: &str, reason: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, body) = server.get(path).await;
        let condition = &body["status"]["conditions"][0];
        let matches = if reason == "Ready" { condition["status"] == "True" } else { condition["reason"] == reason };
        if matches {
            return body;
        }
        assert!(Instant::now() < deadline, "expected {reason}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn jetstream_messages_are_wrapped_and_cloudevents_pass_through() {
    let url = shared_nats().await;
    let (stream, prefix) = (fresh("ORDERS"), fresh("orders"));
    let js = create_stream(&url, &stream, &[format!("{prefix}.>")]).await;
    let server = Server::start().await;
    let subscriber = Subscriber::start().await;
    server.broker("default", "b").await;
    server.trigger("default", "all", json!({"broker": "b", "subscriber": {"uri": subscriber.url}})).await;

    let plain = publish(
        &js,
        &format!("{prefix}.eu.created"),
        headers(&[("Content-Type", "application/json"), ("X-Trace", "abc"), ("Nats-Msg-Id", "m-1")]),
        b"{\"sku\":\"A1\"}",
    )
    .await;
    let binary = publish(&js, &format!("{prefix}.raw"), HeaderMap::new(), &[0, 1, 2, 3]).await;
    publish(
        &js,
        &format!("{prefix}.ce"),
        headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "order-1"),
            ("ce-type", "order.created"),
            ("ce-source", "/shop"),
            ("ce-region", "eu"),
            ("content-type", "application/json"),
        ]),
        b"{\"n\":1}",
    )
    .await;
    publish(
        &js,
        &format!("{prefix}.ce"),
        headers(&[("content-type", "application/cloudevents+json")]),
        concat!(
            r#"{"specversion":"1.0","id":"order-2","type":"order.shipped","source":"/shop","#,
            r#""datacontenttype":"text/plain","data":"by boat"}"#
        )
        .as_bytes(),
    )
    .await;
    // Declared after the messages: the durable consumer starts at the stream's beginning.
    nats_source(
        &server,
        "orders",
        json!({"servers": [url], "subject": format!("{prefix}.>"), "jetstream": {"stream": stream}, "sink": sink("b")}),
    )
    .await;
    let received = subscriber.wait_for(4, WAIT).await;

    let wrapped = by_id(&received, &format!("{stream}:{plain}"));
    assert_eq!(wrapped.header("ce-type"), Some("dev.switchyard.nats.message"));
    assert_eq!(wrapped.attribute("source").as_deref(), Some("/apis/v1/namespaces/default/natssources/orders"));
    assert_eq!(wrapped.attribute("subject"), Some(format!("{prefix}.eu.created")));
    assert_eq!(wrapped.header("ce-natsheaderxtrace"), Some("abc"));
    assert_eq!(wrapped.header("ce-natsheadernatsmsgid"), Some("m-1"));
    assert_eq!(wrapped.header("content-type"), Some("application/json"));
    assert!(wrapped.header("ce-time").is_some_and(|t| t.ends_with('Z')), "when JetStream stored it");
    assert_eq!(&wrapped.body[..], b"{\"sku\":\"A1\"}");
    assert_eq!(&by_id(&received, &format!("{stream}:{binary}")).body[..], &[0, 1, 2, 3], "byte for byte");

    let binary_ce = by_id(&received, "order-1");
    assert_eq!(binary_ce.header("ce-type"), Some("order.created"));
    assert_eq!(binary_ce.header("ce-source"), Some("/shop"));
    assert_eq!(binary_ce.header("ce-region"), Some("eu"));
    assert_eq!(binary_ce.header("content-type"), Some("application/json"));
    assert!(binary_ce.header("ce-subject").is_none() && binary_ce.header("ce-natsheadercespecversion").is_none());
    assert_eq!(&binary_ce.body[..], b"{\"n\":1}");
    let structured = by_id(&received, "order-2");
    assert_eq!(structured.header("ce-type"), Some("order.shipped"));
    assert_eq!(structured.header("content-type"), Some("text/plain"));
    assert_eq!(&structured.body[..], b"by boat");

    let body = wait_for_reason(&server, "/v1/namespaces/default/natssources/orders", "Ready").await;
    assert_eq!(body["spec"]["jetstream"]["stream"], stream.as_str(), "{body}");
}

#[tokio::test]
async fn core_subjects_are_read_at_most_once_with_fresh_ids() {
    let url = shared_nats().await;
    let prefix = fresh("core");
    let client = async_nats::connect(&url).await.expect("connect to nats");
    let server = Server::start().await;
    let subscriber = Subscriber::start().await;
    server.broker("default", "b").await;
    server.trigger("default", "all", json!({"broker": "b", "subscriber": {"uri": subscriber.url}})).await;
    nats_source(
        &server,
        "core",
        json!({"servers": [url], "subject": format!("{prefix}.*"), "queueGroup": "q", "sink": sink("b")}),
    )
    .await;
    // Core NATS keeps nothing for a subscriber that is not there yet: probe until one arrives.
    let deadline = Instant::now() + WAIT;
    while subscriber.received().is_empty() {
        assert!(Instant::now() < deadline, "the source never subscribed: {}", server.log());
        client.publish(format!("{prefix}.probe"), "probe".into()).await.expect("publish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = subscriber.received().len();
    client
        .publish_with_headers(format!("{prefix}.hello"), headers(&[("X-Trace", "abc")]), "hello".into())
        .await
        .expect("publish");
    client
        .publish_with_headers(
            format!("{prefix}.ce"),
            headers(&[("ce-specversion", "1.0"), ("ce-id", "core-1"), ("ce-type", "t"), ("ce-source", "/s")]),
            "event".into(),
        )
        .await
        .expect("publish");
    client.flush().await.expect("flush");
    let received = subscriber.wait_for(before + 2, WAIT).await;
    let hello = received.iter().find(|r| &r.body[..] == b"hello").expect("the plain message");
    assert_eq!(hello.header("ce-type"), Some("dev.switchyard.nats.message"));
    assert_eq!(hello.attribute("subject"), Some(format!("{prefix}.hello")));
    assert_eq!(hello.header("ce-natsheaderxtrace"), Some("abc"));
    assert!(hello.header("ce-id").is_some_and(|id| id.len() == 36), "a fresh UUID: {hello:?}");
    assert_eq!(&by_id(&received, "core-1").body[..], b"event");
    let source = wait_for_reason(&server, "/v1/namespaces/default/natssources/core", "Ready").await;
    // Ready, and says what it is not.
    let condition = &source["status"]["conditions"][0];
    assert_eq!(condition["reason"], "AtMostOnce", "{source}");
    assert!(condition["message"].as_str().is_some_and(|m| m.contains("spec.jetstream")), "{source}");
}

#[tokio::test]
async fn a_kill_mid_stream_loses_no_jetstream_message() {
    let url = shared_nats().await;
    let (stream, prefix) = (fresh("STREAM"), fresh("stream"));
    let js = create_stream(&url, &stream, &[format!("{prefix}.>")]).await;
    let mut server = Server::start().await;
    let subscriber = Subscriber::start().await;
    server.broker("default", "b").await;
    server.trigger("default", "all", json!({"broker": "b", "subscriber": {"uri": subscriber.url}})).await;
    // A short ackWait: what was in flight at the kill is redelivered soon after the restart.
    let spec = json!({"servers": [url], "subject": format!("{prefix}.>"), "sink": sink("b"),
                      "jetstream": {"stream": stream, "ackWait": "PT2S", "maxAckPending": 50}});
    nats_source(&server, "stream", spec).await;
    let mut expected = BTreeSet::new();
    let publish_numbered = |from: usize, n: usize| {
        let (js, prefix) = (js.clone(), prefix.clone());
        async move {
            let mut acks = Vec::new();
            for i in from..from + n {
                acks.push(
                    js.publish(format!("{prefix}.n{}", i % 7), format!("message {i}").into()).await.expect("publish"),
                );
            }
            let mut ids = BTreeSet::new();
            for ack in acks {
                ids.insert(ack.await.expect("stored").sequence);
            }
            ids
        }
    };
    expected.extend(publish_numbered(0, 300).await);
    // Mid-stream: some messages are taken, some are not, some are in flight.
    subscriber.wait_for(30, WAIT).await;
    server.kill9();
    eprintln!("killed with {} of 300 events at the subscriber", subscriber.ids().len());
    expected.extend(publish_numbered(300, 100).await);
    server.restart().await;
    let expected: BTreeSet<String> = expected.into_iter().map(|sequence| format!("{stream}:{sequence}")).collect();
    assert_eq!(expected.len(), 400);
    subscriber.wait_for_ids(&expected, &server).await;
}

#[tokio::test]
async fn a_missing_stream_is_said_and_waited_for() {
    let url = shared_nats().await;
    let (stream, prefix) = (fresh("LATER"), fresh("later"));
    let server = Server::start().await;
    let subscriber = Subscriber::start().await;
    server.broker("default", "b").await;
    server.trigger("default", "all", json!({"broker": "b", "subscriber": {"uri": subscriber.url}})).await;
    let spec = json!({"servers": [url], "subject": format!("{prefix}.>"), "sink": sink("b"),
                      "jetstream": {"stream": stream, "durable": "reader"}});
    nats_source(&server, "later", spec).await;
    let body = wait_for_reason(&server, "/v1/namespaces/default/natssources/later", "StreamNotFound").await;
    assert!(body["status"]["conditions"][0]["message"].as_str().is_some_and(|m| m.contains(&stream)), "{body}");
    let js = create_stream(&url, &stream, &[format!("{prefix}.>")]).await;
    let sequence = publish(&js, &format!("{prefix}.x"), HeaderMap::new(), b"x").await;
    subscriber.wait_for_ids(&BTreeSet::from([format!("{stream}:{sequence}")]), &server).await;
    wait_for_reason(&server, "/v1/namespaces/default/natssources/later", "Ready").await;
    // Invalid specs are refused with the field named.
    let (status, body) = server
        .put(
            "/v1/namespaces/default/natssources/bad",
            json!({"spec": {"servers": [url], "subject": "a..b", "sink": sink("b")}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("spec.subject"), "{body}");
}

/// A private NATS server on a free port, deleted (with its data) when dropped.
struct PrivateNats {
    env: Vec<(&'static str, String)>,
    url: String,
}

impl PrivateNats {
    fn start() -> PrivateNats {
        let port = free_port();
        let dir = std::env::temp_dir().join(fresh("switchyard-nats-private"));
        let env = vec![("NATS_PORT", port.to_string()), ("NATS_DIR", dir.display().to_string())];
        let url = local_sh("nats", "up", &env);
        PrivateNats { env, url }
    }

    fn stop(&self) {
        local_sh("nats", "stop", &self.env);
    }

    fn up(&self) {
        local_sh("nats", "up", &self.env);
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        local_sh_down("nats", &self.env);
    }
}

#[tokio::test]
async fn a_server_outage_is_shown_and_survived() {
    let nats = PrivateNats::start();
    let (stream, prefix) = (fresh("OUTAGE"), fresh("outage"));
    let js = create_stream(&nats.url, &stream, &[format!("{prefix}.>")]).await;
    let server = Server::start().await;
    let subscriber = Subscriber::start().await;
    server.broker("default", "b").await;
    server.trigger("default", "all", json!({"broker": "b", "subscriber": {"uri": subscriber.url}})).await;
    let spec = json!({"servers": [nats.url], "subject": format!("{prefix}.>"), "sink": sink("b"),
                      "jetstream": {"stream": stream}});
    nats_source(&server, "outage", spec).await;
    let before = publish(&js, &format!("{prefix}.a"), HeaderMap::new(), b"before").await;
    subscriber.wait_for_ids(&BTreeSet::from([format!("{stream}:{before}")]), &server).await;
    drop(js);

    nats.stop();
    let path = "/v1/namespaces/default/natssources/outage";
    let body = wait_for_reason(&server, path, "NatsUnavailable").await;
    assert_eq!(body["status"]["conditions"][0]["status"], "False", "{body}");
    nats.up();
    // The stream survived (its data was kept); messages published after the return arrive.
    let js = jetstream::new(async_nats::connect(&nats.url).await.expect("connect to nats"));
    let after = publish(&js, &format!("{prefix}.b"), HeaderMap::new(), b"after").await;
    subscriber.wait_for_ids(&BTreeSet::from([format!("{stream}:{after}")]), &server).await;
    wait_for_reason(&server, path, "Ready").await;
}
