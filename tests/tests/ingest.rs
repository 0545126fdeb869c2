//! Every answer of the ingest endpoint, through the real binary.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use switchyard_tests::{Server, Subscriber};

async fn problem(response: reqwest::Response) -> (StatusCode, String, Value) {
    let status = response.status();
    let content_type =
        response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, content_type, body)
}

async fn setup() -> (Server, Subscriber, reqwest::Client, String) {
    let server = Server::start_with(&["--config", &write_config()]).await;
    server.broker("default", "b").await;
    let subscriber = Subscriber::start().await;
    server.trigger("default", "all", json!({"broker": "b", "subscriber": {"uri": subscriber.url}})).await;
    let url = format!("{}/default/b", server.url);
    (server, subscriber, reqwest::Client::new(), url)
}

/// A small event size limit keeps the 413 test light.
fn write_config() -> String {
    let path = std::env::temp_dir().join(format!("switchyard-ingest-{}.toml", std::process::id()));
    std::fs::write(&path, "max_event_bytes = 4096\nmax_batch_bytes = 65536\n").unwrap();
    path.to_string_lossy().into_owned()
}

#[tokio::test]
async fn accepted_in_every_mode_and_stamped_with_arrival_time() {
    let (_server, subscriber, client, url) = setup().await;
    let binary = client
        .post(&url)
        .header("ce-specversion", "1.0")
        .header("ce-id", "b-1")
        .header("ce-type", "t")
        .header("ce-source", "/s")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(binary.status(), StatusCode::ACCEPTED);
    let structured = client
        .post(&url)
        .header("content-type", "application/cloudevents+json; charset=utf-8")
        .body(r#"{"specversion":"1.0","id":"s-1","type":"t","source":"/s","data":{"a":1}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(structured.status(), StatusCode::ACCEPTED);
    let batch = client
        .post(&url)
        .header("content-type", "application/cloudevents-batch+json")
        .body(r#"[{"specversion":"1.0","id":"x-1","type":"t","source":"/s"},{"specversion":"1.0","id":"x-2","type":"t","source":"/s"}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(batch.status(), StatusCode::ACCEPTED);
    let received = subscriber.wait_for(4, Duration::from_secs(10)).await;
    let ids = subscriber.ids();
    assert_eq!(ids.into_iter().collect::<Vec<_>>(), ["b-1", "s-1", "x-1", "x-2"]);
    for r in received {
        let arrival = r.header("ce-knativearrivaltime").expect("arrival time stamped");
        assert!(arrival.ends_with('Z') && arrival.contains('T'), "{arrival}");
    }
}

#[tokio::test]
async fn invalid_events_are_400_problems_naming_the_attribute() {
    let (server, subscriber, client, url) = setup().await;
    type Headers = Vec<(&'static str, &'static str)>;
    let cases: Vec<(Headers, &str, &str)> = vec![
        (vec![("ce-specversion", "1.0"), ("ce-type", "t"), ("ce-source", "/s")], "", "'id'"),
        (vec![("ce-specversion", "0.3"), ("ce-id", "1"), ("ce-type", "t"), ("ce-source", "/s")], "", "specversion"),
        (vec![("ce-id", "1"), ("ce-type", "t"), ("ce-source", "/s")], "", "specversion"),
        (
            vec![("ce-specversion", "1.0"), ("ce-id", "1"), ("ce-type", "t"), ("ce-source", "/s"), ("ce-time", "noon")],
            "",
            "time",
        ),
        (
            vec![("ce-specversion", "1.0"), ("ce-id", "1"), ("ce-type", "t"), ("ce-source", "/s"), ("ce-my_ext", "x")],
            "",
            "my_ext",
        ),
        (
            vec![("content-type", "application/cloudevents+json")],
            r#"{"specversion":"1.0","id":"1","type":"t"}"#,
            "'source'",
        ),
        (
            vec![("content-type", "application/cloudevents+json")],
            r#"{"specversion":"1.0","id":"1","type":"t","source":"/s","ext":1.5}"#,
            "ext",
        ),
        (vec![("content-type", "application/cloudevents+json")], r#"{"specversion":"1.0","#, "malformed"),
    ];
    for (headers, body, needle) in cases {
        let mut request = client.post(&url).body(body);
        for (name, value) in &headers {
            request = request.header(*name, *value);
        }
        let (status, content_type, problem) = problem(request.send().await.unwrap()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{headers:?}");
        assert_eq!(content_type, "application/problem+json");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(needle), "{headers:?} {body}: {detail}");
        assert_eq!(problem["status"], 400);
    }
    // Nothing to wait for if nothing reached the log: ingest times every append it makes,
    // accepted or not, and no refused request made one. (The trigger's backlog would not
    // prove it: a trigger that has read nothing yet shows 0.)
    let appends = server.metric("switchyard_log_append_duration_seconds_count", &[]).await;
    assert_eq!(appends.unwrap_or(0.0), 0.0, "a refused request reached the log");
    assert!(subscriber.received().is_empty());
}

#[tokio::test]
async fn batch_is_all_or_nothing() {
    let (server, subscriber, client, url) = setup().await;
    let batch = json!([
        {"specversion":"1.0","id":"ok-1","type":"t","source":"/s"},
        {"specversion":"1.0","id":"bad","type":"t"},
    ]);
    let response = client
        .post(&url)
        .header("content-type", "application/cloudevents-batch+json")
        .json(&batch)
        .send()
        .await
        .unwrap();
    let (status, _, problem) = problem(response).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(problem["detail"].as_str().unwrap().contains("event 1"), "{problem}");
    assert_eq!(server.send_binary("default", "b", "after", "t", b"{}").await, StatusCode::ACCEPTED);
    subscriber.wait_for(1, Duration::from_secs(10)).await;
    // The log holds "after" alone: one append, that of the accepted request (ingest times every
    // append it makes, accepted or not). And the trigger is past it, so a duplicate would have
    // arrived.
    let appends = server.metric("switchyard_log_append_duration_seconds_count", &[]).await;
    assert_eq!(appends, Some(1.0), "the refused batch reached the log");
    server.wait_until_drained("default", "all", Duration::from_secs(10)).await;
    assert_eq!(subscriber.ids().into_iter().collect::<Vec<_>>(), ["after"]);
}

#[tokio::test]
async fn unknown_broker_wrong_method_too_large_and_unsupported_format() {
    let (server, _subscriber, client, url) = setup().await;
    let response = client
        .post(format!("{}/default/nope", server.url))
        .header("ce-specversion", "1.0")
        .body("")
        .send()
        .await
        .unwrap();
    let (status, content_type, body) = problem(response).await;
    assert_eq!((status, content_type.as_str()), (StatusCode::NOT_FOUND, "application/problem+json"));
    assert!(body["detail"].as_str().unwrap().contains("default/nope"));

    for method in [reqwest::Method::GET, reqwest::Method::PUT, reqwest::Method::DELETE] {
        let response = client.request(method.clone(), &url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(response.headers()["allow"], "POST, OPTIONS");
    }

    let big = vec![b'x'; 5000];
    let response = client
        .post(&url)
        .header("ce-specversion", "1.0")
        .header("ce-id", "1")
        .header("ce-type", "t")
        .header("ce-source", "/s")
        .body(big)
        .send()
        .await
        .unwrap();
    let (status, _, body) = problem(response).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body["detail"].as_str().unwrap().contains("4096"));

    let big_in_batch = json!([{"specversion":"1.0","id":"1","type":"t","source":"/s","data":"x".repeat(5000)}]);
    let response = client
        .post(&url)
        .header("content-type", "application/cloudevents-batch+json")
        .json(&big_in_batch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);

    for content_type in ["application/cloudevents+xml", "application/cloudevents+avro; charset=utf-8"] {
        let response = client.post(&url).header("content-type", content_type).body("<e/>").send().await.unwrap();
        let (status, _, body) = problem(response).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{content_type}");
        assert!(body["detail"].as_str().unwrap().contains("cloudevents+"), "{body}");
    }
}

#[tokio::test]
async fn options_answers_the_webhook_handshake() {
    let (_server, _subscriber, client, url) = setup().await;
    let response = client
        .request(reqwest::Method::OPTIONS, &url)
        .header("WebHook-Request-Origin", "eventemitter.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["webhook-allowed-origin"], "eventemitter.example.com");
    assert_eq!(response.headers()["webhook-allowed-rate"], "*");
    assert_eq!(response.headers()["allow"], "POST, OPTIONS");
}

#[tokio::test]
async fn header_values_raw_or_percent_encoded_are_one_value_and_non_utf8_is_refused_by_name() {
    let (_server, subscriber, client, url) = setup().await;
    let send = |id: &'static str, subject: &'static [u8]| {
        client
            .post(&url)
            .header("ce-specversion", "1.0")
            .header("ce-id", id)
            .header("ce-type", "t")
            .header("ce-source", "/s")
            .header("ce-subject", reqwest::header::HeaderValue::from_bytes(subject).unwrap())
            .send()
    };
    // Raw UTF-8 (as sdk-go and the JavaScript SDK send it), percent-encoded (as the HTTP binding
    // says), and a '%' that starts no escape (kept as it is).
    for (id, subject) in
        [("raw", "café 100%".as_bytes()), ("encoded", b"caf%C3%A9%20100%25"), ("mixed", "café 100%25".as_bytes())]
    {
        assert_eq!(send(id, subject).await.unwrap().status(), StatusCode::ACCEPTED, "{id}");
    }
    let received = subscriber.wait_for(3, Duration::from_secs(15)).await;
    assert!(received.iter().all(|r| r.attribute("subject").as_deref() == Some("café 100%")), "{received:?}");

    // A byte that is not UTF-8, raw or escaped, is refused alike, naming the attribute.
    for (subject, says) in [(&b"caf\xe9"[..], "byte 0xE9 at offset 3"), (b"caf%E9", "'caf%E9' has percent-escapes")] {
        let (status, content_type, body) = problem(send("bad", subject).await.unwrap()).await;
        assert_eq!((status, content_type.as_str()), (StatusCode::BAD_REQUEST, "application/problem+json"));
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains("invalid attribute 'subject'") && detail.contains(says), "{detail}");
    }
}
