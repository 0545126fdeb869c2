//! One way in: the same event over a limit is refused with the same words whichever way it comes
//! — a producer's request, a source (a KafkaSource record that is the event, a GitHub webhook
//! delivery carrying it), a subscriber's reply, and the reply to a redriven dead letter.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{json, Value};
use switchyard_tests::{create_topic, kafka_bootstrap, produce, Answer, Server, Subscriber};

const MAX_EVENT_BYTES: usize = 4096;
const MAX_EVENT_ATTRIBUTES: usize = 16;
const MAX_BATCH_EVENTS: usize = 5;
/// With the four required attributes and `datacontenttype` (from `content-type`): 17 as sent,
/// 19 once the broker stamps `knativearrivaltime` and `knativebrokerttl`.
const EXTENSIONS: usize = 12;

/// What every way in must answer for an event with too many attributes.
fn too_many_attributes() -> String {
    format!(
        "the event has {} attributes with the broker's own, above the limit of {MAX_EVENT_ATTRIBUTES} (max_event_attributes)",
        4 + EXTENSIONS + 1 + 2
    )
}

/// What every way in must answer for an event larger than the limit.
fn too_large() -> String {
    format!("the event exceeds the limit of {MAX_EVENT_BYTES} bytes (max_event_bytes)")
}

async fn server() -> Server {
    Server::start_with_env(&[
        ("SWITCHYARD_MAX_EVENT_BYTES", &MAX_EVENT_BYTES.to_string()),
        ("SWITCHYARD_MAX_EVENT_ATTRIBUTES", &MAX_EVENT_ATTRIBUTES.to_string()),
        ("SWITCHYARD_MAX_BATCH_EVENTS", &MAX_BATCH_EVENTS.to_string()),
    ])
    .await
}

/// The event's attributes as binary-mode headers (HTTP and Kafka bindings alike, by prefix).
fn crowded_attributes(id: &str) -> Vec<(String, String)> {
    let mut attributes = vec![
        ("specversion".to_owned(), "1.0".to_owned()),
        ("id".to_owned(), id.to_owned()),
        ("source".to_owned(), "/admission".to_owned()),
        ("type".to_owned(), "crowded".to_owned()),
    ];
    attributes.extend((0..EXTENSIONS).map(|i| (format!("x{i}"), "v".to_owned())));
    attributes
}

/// A reply in binary mode carrying `attributes` and `data`.
fn reply(attributes: &[(String, String)], data: Vec<u8>) -> Answer {
    let mut answer = Answer::status(StatusCode::OK).header("content-type", "application/octet-stream").body(data);
    for (name, value) in attributes {
        answer = answer.header(leak(format!("ce-{name}")), value.clone());
    }
    answer
}

fn leak(name: String) -> &'static str {
    Box::leak(name.into_boxed_str())
}

/// Events refused entry by `origin` for `reason`, so far.
async fn refused(server: &Server, origin: &str, reason: &str) -> f64 {
    let labels = [("origin", origin), ("reason", reason)];
    server.metric("switchyard_admission_refused_events_total", &labels).await.unwrap_or(0.0)
}

/// Polls until `probe` finds something (for at most 30 s).
async fn poll<T, F: std::future::Future<Output = Option<T>>>(what: &str, probe: impl Fn() -> F) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ingest(server: &Server, attributes: &[(String, String)], data: Vec<u8>) -> (StatusCode, String) {
    let mut request = reqwest::Client::new().post(format!("{}/default/b", server.url));
    for (name, value) in attributes {
        request = request.header(format!("ce-{name}"), value);
    }
    let response = request.header("content-type", "application/octet-stream").body(data).send().await.expect("post");
    let status = response.status();
    let body = response.bytes().await.expect("body");
    let problem: Value = serde_json::from_slice(&body).unwrap_or_default();
    (status, problem["detail"].as_str().unwrap_or_default().to_owned())
}

/// Through a reply, then the redrive of the dead letter it leaves: the refusal is the reason
/// the delivery failed, and a redrive is refused the same way.
async fn through_a_reply_and_its_redrive(server: &Server, answer: Answer, reason: &str, expected: &str) {
    let subscriber = Subscriber::start().await;
    subscriber.always(answer);
    let trigger = format!("t-{reason}").replace('_', "-");
    server
        .trigger(
            "default",
            &trigger,
            json!({"broker": "b", "filter": {"attributes": {"type": reason}}, "subscriber": {"uri": subscriber.url}, "delivery": {"retry": 0}}),
        )
        .await;
    let ok = [("specversion", "1.0"), ("id", "ask"), ("source", "/admission"), ("type", reason)];
    let ok: Vec<(String, String)> = ok.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
    assert_eq!(ingest(server, &ok, b"{}".to_vec()).await.0, StatusCode::ACCEPTED);
    let path = format!("/v1/namespaces/default/triggers/{trigger}/deadletters");
    let entry = poll("the reply's refusal dead-letters the event", || async {
        let (_, page) = server.get(&path).await;
        Some(page["items"][0].clone()).filter(|entry| !entry.is_null())
    })
    .await;
    let last_error = entry["lastError"].as_str().unwrap_or_default();
    assert_eq!(last_error, format!("reply refused: {expected}"), "{entry}");
    let before = refused(server, "redrive", reason).await;
    let response = reqwest::Client::new()
        .post(format!("{}{path}/redrive", server.url))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("redrive");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    poll("the redrive's reply is refused", || async {
        (refused(server, "redrive", reason).await > before).then_some(())
    })
    .await;
    let (_, page) = server.get(&path).await;
    assert_eq!(page["items"][0]["id"], entry["id"], "a refused redrive keeps the dead letter");
}

#[tokio::test]
async fn an_event_with_too_many_attributes_is_refused_the_same_way_in_each_way_in() {
    let server = server().await;
    server.broker("default", "b").await;
    let expected = too_many_attributes();

    // A producer's request.
    let (status, detail) = ingest(&server, &crowded_attributes("ingest"), b"x".to_vec()).await;
    assert_eq!((status, detail.as_str()), (StatusCode::PAYLOAD_TOO_LARGE, expected.as_str()));

    // A source: a Kafka record that is the same event (binary mode) passes through a
    // KafkaSource unchanged, and is refused; the source shows why and goes on.
    let topic = format!("admission-{}", uuid::Uuid::new_v4().simple());
    create_topic(&topic, 1);
    let (status, body) = server
        .put(
            "/v1/namespaces/default/kafkasources/k",
            json!({"spec": {"bootstrapServers": [kafka_bootstrap()], "topics": [topic], "initialOffset": "earliest",
                            "sink": {"ref": {"kind": "Broker", "name": "b"}}}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let headers: Vec<Value> = crowded_attributes("from-kafka")
        .into_iter()
        .map(|(name, value)| json!([format!("ce_{name}"), value]))
        .chain([json!(["content-type", "application/octet-stream"])])
        .collect();
    produce(&topic, &[json!({"value": "x", "headers": headers})]);
    let message = poll("the KafkaSource reports the refusal", || async {
        let (_, source) = server.get("/v1/namespaces/default/kafkasources/k").await;
        let condition = &source["status"]["conditions"][0];
        (condition["reason"] == "EventRefused").then(|| condition["message"].as_str().unwrap_or_default().to_owned())
    })
    .await;
    assert_eq!(message, format!("event 'from-kafka' was refused and dropped: {expected}"));
    assert_eq!(refused(&server, "source", "too_many_attributes").await, 1.0);

    // A reply, and the reply to its redrive.
    let answer = reply(&crowded_attributes("reply"), b"x".to_vec());
    through_a_reply_and_its_redrive(&server, answer, "too_many_attributes", &expected).await;
}

#[tokio::test]
async fn an_event_over_the_size_limit_is_refused_the_same_way_in_each_way_in() {
    let server = server().await;
    server.broker("default", "b").await;
    let expected = too_large();
    let data = vec![b'x'; MAX_EVENT_BYTES + 1];

    let small: Vec<(String, String)> = crowded_attributes("ingest").into_iter().take(4).collect();
    let (status, detail) = ingest(&server, &small, data.clone()).await;
    assert_eq!((status, detail.as_str()), (StatusCode::PAYLOAD_TOO_LARGE, expected.as_str()));

    // A source: a GitHub webhook delivery whose payload (the event's data) is over the limit.
    let (status, body) = server
        .put(
            "/v1/namespaces/default/githubsources/gh",
            json!({"spec": {"ownerAndRepository": "o/r", "eventTypes": ["push"], "secretToken": {"value": "s3cret"},
                            "sink": {"ref": {"kind": "Broker", "name": "b"}}}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let payload =
        json!({"ref": "refs/heads/main", "repository": {"full_name": "o/r"}, "padding": "x".repeat(MAX_EVENT_BYTES)});
    let payload = payload.to_string().into_bytes();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"s3cret");
    let signature: String = ring::hmac::sign(&key, &payload).as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let response = reqwest::Client::new()
        .post(format!("{}/webhooks/github/default/gh", server.url))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", "big-1")
        .header("x-hub-signature-256", format!("sha256={signature}"))
        .body(payload)
        .send()
        .await
        .expect("webhook");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let problem: Value = response.json().await.expect("problem+json");
    assert_eq!(problem["detail"], expected.as_str(), "{problem}");

    let answer = reply(&small, data);
    through_a_reply_and_its_redrive(&server, answer, "too_large", &expected).await;
}

#[tokio::test]
async fn a_batch_over_the_events_limit_is_refused_whole_naming_the_limit() {
    let server = server().await;
    server.broker("default", "b").await;
    let event = |i: usize| json!({"specversion": "1.0", "id": format!("e{i}"), "type": "t", "source": "/batch"});
    let too_many: Vec<Value> = (0..=MAX_BATCH_EVENTS).map(event).collect();
    let response = reqwest::Client::new()
        .post(format!("{}/default/b", server.url))
        .header("content-type", "application/cloudevents-batch+json")
        .json(&too_many)
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let problem: Value = response.json().await.expect("problem+json");
    let expected = format!(
        "the batch has {} events, above the limit of {MAX_BATCH_EVENTS} (max_batch_events): send it in smaller batches",
        MAX_BATCH_EVENTS + 1
    );
    assert_eq!(problem["detail"], expected.as_str(), "{problem}");
    assert_eq!(refused(&server, "ingest", "too_many_events").await, (MAX_BATCH_EVENTS + 1) as f64);
    let just_enough: Vec<Value> = (0..MAX_BATCH_EVENTS).map(event).collect();
    assert_eq!(server.send_batch("default", "b", &just_enough).await, StatusCode::ACCEPTED);
}
