//! GitHubSource end to end: real GitHub webhook payloads, signed as GitHub signs them, posted to
//! a real server in JSON and in form encoding, delivered by a trigger to a real subscriber
//! with Knative's type, source, subject and id and the payload's exact bytes.
//!
//! The payloads are every example in `../shared/reference/github-webhooks/payloads` (273 of 60
//! event types) when that folder exists, and the fixtures kept in
//! `sources/src/github/testdata` otherwise.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use switchyard_tests::{Answer, Received, Server, Subscriber};

const WAIT: Duration = Duration::from_secs(60);
const SECRET: &str = "It's a Secret to Everybody";
const OWNER_AND_REPOSITORY: &str = "octo-org/fallback";

/// A payload and the event name GitHub sends it with.
struct Payload {
    event: String,
    file: PathBuf,
    bytes: Vec<u8>,
}

fn shared_payloads() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference/github-webhooks/payloads");
    dir.is_dir().then_some(dir)
}

/// Every shared payload (`<event>/<file>.json`), or the repository's fixtures
/// (`<event>[.<action>].json`).
fn payloads() -> Vec<Payload> {
    let mut payloads = Vec::new();
    if let Some(dir) = shared_payloads() {
        for event_dir in std::fs::read_dir(&dir).unwrap() {
            let event_dir = event_dir.unwrap().path();
            let event = event_dir.file_name().unwrap().to_string_lossy().into_owned();
            for file in std::fs::read_dir(&event_dir).unwrap() {
                let file = file.unwrap().path();
                if file.extension().is_some_and(|e| e == "json") {
                    payloads.push(Payload { event: event.clone(), bytes: std::fs::read(&file).unwrap(), file });
                }
            }
        }
    } else {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sources/src/github/testdata");
        for file in std::fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            if file.extension().is_some_and(|e| e == "json") {
                let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
                let event = stem.split('.').next().unwrap().to_owned();
                payloads.push(Payload { event, bytes: std::fs::read(&file).unwrap(), file });
            }
        }
    }
    payloads.sort_by(|a, b| a.file.cmp(&b.file));
    assert!(!payloads.is_empty());
    payloads
}

fn signature(body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn form(payload: &[u8]) -> Vec<u8> {
    let mut body = b"payload=".to_vec();
    for &byte in payload {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => body.push(byte),
            b' ' => body.push(b'+'),
            _ => body.extend_from_slice(format!("%{byte:02X}").as_bytes()),
        }
    }
    body
}

async fn deliver(url: &str, event: &str, delivery: &str, content_type: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .header("x-hub-signature-256", signature(&body))
        .header("content-type", content_type)
        .header("user-agent", "GitHub-Hookshot/044aadd")
        .body(body)
        .send()
        .await
        .expect("post the delivery");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Knative's subject for the event types its GitHubSource maps (`pkg/common/events.go`): a JSON
/// pointer into the payload, and whether only the part after the last `/` is kept.
fn knative_subject(event: &str, payload: &Value) -> Option<String> {
    let (pointer, last_part) = match event {
        "check_run" => ("/check_run/id", false),
        "check_suite" => ("/check_suite/id", false),
        "commit_comment" | "issue_comment" => ("/comment/html_url", true),
        "create" | "delete" => ("/ref_type", false),
        "deployment" | "deployment_status" => ("/deployment/id", false),
        "fork" => ("/forkee/id", false),
        "installation" | "installation_repositories" => ("/installation/id", false),
        "issues" => ("/issue/number", false),
        "label" => ("/label/name", false),
        "member" | "membership" => ("/member/id", false),
        "milestone" => ("/milestone/number", false),
        "ping" => ("/hook_id", false),
        "pull_request" => ("/pull_request/number", false),
        "pull_request_review" => ("/review/id", false),
        "pull_request_review_comment" => ("/comment/id", false),
        "push" => ("/compare", true),
        "release" => ("/release/tag_name", false),
        "repository" | "public" | "watch" => ("/repository/id", false),
        "status" => ("/sha", false),
        "team" => ("/team/id", false),
        _ => return None,
    };
    let value = payload.pointer(pointer)?;
    let text = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
    Some(if last_part { text.rsplit('/').next().unwrap_or_default().to_owned() } else { text })
}

async fn github_source(server: &Server, event_types: &BTreeSet<String>) -> String {
    server.broker("default", "b").await;
    let (status, body) = server
        .put(
            "/v1/namespaces/default/githubsources/repo",
            json!({
                "apiVersion": "sources.knative.dev/v1alpha1",
                "kind": "GitHubSource",
                "metadata": {"name": "repo", "namespace": "default"},
                "spec": {
                    "ownerAndRepository": OWNER_AND_REPOSITORY,
                    "eventTypes": event_types,
                    "secretToken": {"value": SECRET},
                    "sink": {"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "b"}},
                },
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"]["conditions"][0]["status"], "True", "{body}");
    body["status"]["webhookUrl"].as_str().expect("status.webhookUrl").to_owned()
}

#[tokio::test]
async fn every_github_payload_arrives_with_knatives_attributes_and_its_exact_bytes() {
    let server = Server::start().await;
    let subscriber = Subscriber::start().await;
    let payloads = payloads();
    let event_types: BTreeSet<String> = payloads.iter().map(|p| p.event.clone()).collect();
    let url = github_source(&server, &event_types).await;
    server.trigger("default", "all", json!({"broker": "b", "subscriber": {"uri": subscriber.url}})).await;

    let mut expected: BTreeMap<String, &Payload> = BTreeMap::new();
    for (i, payload) in payloads.iter().enumerate() {
        for (mode, content_type, body) in [
            ("json", "application/json", payload.bytes.clone()),
            ("form", "application/x-www-form-urlencoded", form(&payload.bytes)),
        ] {
            let delivery = format!("{i:04}-{mode}-{}", uuid_like(i));
            let (status, answer) = deliver(&url, &payload.event, &delivery, content_type, body).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{} ({mode}): {answer}", payload.file.display());
            assert_eq!(answer["ids"], json!([delivery]));
            expected.insert(delivery, payload);
        }
    }
    let received = subscriber.wait_for(expected.len(), WAIT).await;
    let by_id: BTreeMap<&str, &Received> = received.iter().map(|r| (r.header("ce-id").unwrap(), r)).collect();
    assert_eq!(by_id.len(), expected.len(), "one event per delivery");
    for (delivery, payload) in &expected {
        let event = by_id.get(delivery.as_str()).unwrap_or_else(|| panic!("{delivery} not delivered"));
        let what = format!("{} ({delivery})", payload.file.display());
        let json: Value = serde_json::from_slice(&payload.bytes).unwrap();
        assert_eq!(
            event.header("ce-type"),
            Some(format!("dev.knative.source.github.{}", payload.event).as_str()),
            "{what}"
        );
        let repository = json.pointer("/repository/full_name").and_then(Value::as_str).unwrap_or(OWNER_AND_REPOSITORY);
        assert_eq!(event.attribute("source"), Some(format!("https://github.com/{repository}")), "{what}");
        let subject = event.attribute("subject");
        match knative_subject(&payload.event, &json) {
            Some(expected) => assert_eq!(subject, Some(expected), "{what}"),
            None => assert!(subject.is_some_and(|s| !s.is_empty()), "{what}: no subject"),
        }
        assert_eq!(event.header("content-type"), Some("application/json"), "{what}");
        assert_eq!(&event.body[..], &payload.bytes[..], "{what}: the data is the payload, byte for byte");
        if let Some(sender) = json.pointer("/sender/login").and_then(Value::as_str) {
            assert_eq!(event.attribute("sender").as_deref(), Some(sender), "{what}");
        }
        if let Some(action) = json.pointer("/action").and_then(Value::as_str).filter(|a| !a.is_empty()) {
            assert_eq!(event.attribute("action").as_deref(), Some(action), "{what}");
        }
    }
}

/// A stable, unique, UUID-shaped delivery id (GitHub's are UUIDs).
fn uuid_like(i: usize) -> String {
    format!("72d3162e-cc78-11e3-81ab-{i:012x}")
}

#[tokio::test]
async fn bad_deliveries_are_refused_and_duplicates_and_other_events_are_not_sent() {
    let server = Server::start().await;
    let subscriber = Subscriber::start().await;
    let url = github_source(&server, &BTreeSet::from(["push".to_owned()])).await;
    server.trigger("default", "all", json!({"broker": "b", "subscriber": {"uri": subscriber.url}})).await;
    let push = br#"{"ref":"refs/heads/main","compare":"https://github.com/o/r/compare/a...b","repository":{"name":"r","full_name":"o/r","owner":{"login":"o"}},"sender":{"login":"u"}}"#.to_vec();
    // Each case changes one header of a valid delivery (`None`: leaves it out).
    let push = push.as_slice();
    let cases = [
        ("x-hub-signature-256", None, push, StatusCode::UNAUTHORIZED, "X-Hub-Signature-256"),
        ("x-hub-signature-256", Some(signature(b"other")), push, StatusCode::UNAUTHORIZED, "does not match"),
        ("x-hub-signature-256", Some("sha1=0123".into()), push, StatusCode::UNAUTHORIZED, "sha256="),
        ("x-github-event", None, push, StatusCode::BAD_REQUEST, "X-GitHub-Event"),
        ("x-github-delivery", None, push, StatusCode::BAD_REQUEST, "X-GitHub-Delivery"),
        ("x-hub-signature-256", Some(signature(b"{nope")), b"{nope".as_slice(), StatusCode::BAD_REQUEST, "JSON"),
        ("content-type", Some("text/xml".into()), push, StatusCode::UNSUPPORTED_MEDIA_TYPE, "text/xml"),
    ];
    let client = reqwest::Client::new();
    for (changed, value, body, status, needle) in cases {
        let mut headers = vec![
            ("x-github-event", "push".to_owned()),
            ("x-github-delivery", "d1".to_owned()),
            ("x-hub-signature-256", signature(body)),
            ("content-type", "application/json".to_owned()),
        ];
        headers.retain(|(name, _)| *name != changed);
        headers.extend(value.map(|value| (changed, value)));
        let mut request = client.post(&url).body(body.to_vec());
        for (name, value) in &headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{headers:?}");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        let problem: Value = response.json().await.unwrap();
        assert!(problem["detail"].as_str().unwrap_or_default().contains(needle), "{headers:?}: {problem}");
    }

    // The same delivery twice (GitHub's "redeliver") is one event.
    for _ in 0..2 {
        let (status, answer) = deliver(&url, "push", "dup-1", "application/json", push.to_vec()).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    }
    let (_, answer) = deliver(&url, "push", "dup-1", "application/json", push.to_vec()).await;
    assert_eq!(answer["duplicates"], 1, "{answer}");
    // Events the source does not take, and pings, are answered 200 and not sent.
    let (status, answer) =
        deliver(&url, "issues", "other-1", "application/json", b"{\"action\":\"opened\"}".to_vec()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(answer["ignored"].as_str().unwrap_or_default().contains("issues"), "{answer}");
    let (status, _) = deliver(
        &url,
        "ping",
        "ping-1",
        "application/json",
        b"{\"zen\":\"Keep it logically awesome.\",\"hook_id\":1}".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // A source that does not exist.
    let (status, _) = deliver(
        &format!("{}/webhooks/github/default/nope", server.url),
        "push",
        "x",
        "application/json",
        push.to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    subscriber.wait_for(1, WAIT).await;
    // Every event the source put into the broker has arrived. The source answers a webhook
    // once its events are durable and counts them then, so with every request answered this
    // is all it will ever send; the trigger takes everything, once each (no restart here). A
    // count rather than the trigger's backlog: on Kafka an event wrongly sent for the ignored
    // deliveries would carry the fallback repository as its source, so another partition
    // than dup-1's, which the trigger may not have read from yet.
    let sent = server.metric("switchyard_source_events_total", &[("kind", "GitHubSource"), ("outcome", "sent")]).await;
    subscriber.wait_for(sent.unwrap_or(0.0) as usize, WAIT).await;
    assert_eq!(subscriber.ids(), BTreeSet::from(["dup-1".to_owned()]), "only the accepted push is delivered, once");
    let metrics = reqwest::get(format!("{}/metrics", server.url)).await.unwrap().text().await.unwrap();
    for outcome in ["sent", "duplicate", "ignored", "refused"] {
        assert!(
            metrics.contains(&format!(r#"switchyard_source_events_total{{kind="GitHubSource",outcome="{outcome}"}}"#)),
            "{outcome}: {metrics}"
        );
    }
}

#[tokio::test]
async fn a_secret_from_the_environment_and_a_missing_one() {
    let server = Server::start_with_env(&[("GITHUB_WEBHOOK_SECRET", SECRET)]).await;
    server.broker("default", "b").await;
    let subscriber = Subscriber::start().await;
    server.trigger("default", "all", json!({"broker": "b", "subscriber": {"uri": subscriber.url}})).await;
    for (name, env) in [("from-env", "GITHUB_WEBHOOK_SECRET"), ("missing", "NOT_SET_ANYWHERE")] {
        let (status, body) = server
            .put(
                &format!("/v1/namespaces/default/githubsources/{name}"),
                json!({"spec": {"ownerAndRepository": "o/r", "eventTypes": ["push"], "secretToken": {"env": env}, "sink": {"ref": {"kind": "Broker", "name": "b"}}}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (_, missing) = server.get("/v1/namespaces/default/githubsources/missing").await;
    assert_eq!(missing["status"]["conditions"][0]["reason"], "SecretNotFound", "{missing}");
    let body = b"{\"repository\":{\"full_name\":\"o/r\"}}".to_vec();
    let (status, _) = deliver(
        &format!("{}/webhooks/github/default/missing", server.url),
        "push",
        "m-1",
        "application/json",
        body.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, answer) =
        deliver(&format!("{}/webhooks/github/default/from-env", server.url), "push", "e-1", "application/json", body)
            .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    subscriber.wait_for(1, WAIT).await;
}

#[tokio::test]
async fn a_webhook_is_not_acknowledged_before_its_event_is_durable() {
    // No broker: the source cannot take the delivery, so GitHub is told to try again later
    // rather than told it was taken.
    let server = Server::start().await;
    let (status, body) = server
        .put(
            "/v1/namespaces/default/githubsources/repo",
            json!({"spec": {"ownerAndRepository": "o/r", "eventTypes": ["push"], "secretToken": {"value": SECRET}, "sink": {"ref": {"kind": "Broker", "name": "later"}}}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let url = format!("{}/webhooks/github/default/repo", server.url);
    let push = b"{\"repository\":{\"full_name\":\"o/r\"}}".to_vec();
    let (status, answer) = deliver(&url, "push", "early-1", "application/json", push.clone()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    // Once the broker exists, GitHub's redelivery of the same id is taken (it was not recorded).
    server.broker("default", "later").await;
    let subscriber = Subscriber::start().await;
    server.trigger("default", "all", json!({"broker": "later", "subscriber": {"uri": subscriber.url}})).await;
    let (status, answer) = deliver(&url, "push", "early-1", "application/json", push).await;
    assert_eq!((status, answer["duplicates"].as_u64()), (StatusCode::ACCEPTED, Some(0)), "{answer}");
    subscriber.wait_for(1, WAIT).await;
}

async fn github_source_to(server: &Server, name: &str, sink_uri: &str) -> String {
    let (status, body) = server
        .put(
            &format!("/v1/namespaces/default/githubsources/{name}"),
            json!({"spec": {"ownerAndRepository": "o/r", "eventTypes": ["push"], "secretToken": {"value": SECRET}, "sink": {"uri": sink_uri}}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["status"]["webhookUrl"].as_str().expect("status.webhookUrl").to_owned()
}

const PUSH: &[u8] = b"{\"repository\":{\"full_name\":\"o/r\"}}";

#[tokio::test]
async fn concurrent_redeliveries_of_one_id_are_sent_once() {
    // The sink answers after a second, so that every delivery arrives while the first is
    // being sent: without a reservation each would find the id not yet taken and send it.
    let server = Server::start().await;
    let sink = Subscriber::start().await;
    sink.always(Answer::status(StatusCode::OK).after(Duration::from_secs(1)));
    let url = github_source_to(&server, "slow", &sink.url).await;
    let deliveries: Vec<_> = (0..5)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { deliver(&url, "push", "same-1", "application/json", PUSH.to_vec()).await })
        })
        .collect();
    let mut answers = Vec::new();
    for delivery in deliveries {
        answers.push(delivery.await.expect("a delivery"));
    }
    for (status, answer) in &answers {
        assert_eq!(*status, StatusCode::ACCEPTED, "{answer}");
        assert_eq!(answer["ids"], json!(["same-1"]), "{answer}");
    }
    let mut duplicates: Vec<u64> = answers.iter().map(|(_, answer)| answer["duplicates"].as_u64().unwrap()).collect();
    duplicates.sort_unstable();
    assert_eq!(duplicates, [0, 1, 1, 1, 1], "one delivery sent it, the others were answered from its outcome");
    // Every delivery was answered after the sink took the event: it has all it will get.
    assert_eq!(sink.received().len(), 1, "the event reached the sink once");
    let duplicate =
        server.metric("switchyard_source_events_total", &[("kind", "GitHubSource"), ("outcome", "duplicate")]).await;
    assert_eq!(duplicate, Some(4.0));
}

#[tokio::test]
async fn a_failed_send_releases_the_id_for_the_next_redelivery() {
    let server = Server::start().await;
    let sink = Subscriber::start().await;
    sink.set_down(true);
    let url = github_source_to(&server, "down", &sink.url).await;
    // Two at once while the sink is down: the first fails after the webhook deadline, and the
    // other, waiting on it, gets the same answer rather than sending again.
    let (first, second) = tokio::join!(
        deliver(&url, "push", "retry-1", "application/json", PUSH.to_vec()),
        deliver(&url, "push", "retry-1", "application/json", PUSH.to_vec()),
    );
    assert_eq!((first.0, second.0), (StatusCode::SERVICE_UNAVAILABLE, StatusCode::SERVICE_UNAVAILABLE));
    assert!(sink.received().is_empty());
    // GitHub's redelivery once the sink is back is sent: the failure kept no reservation.
    sink.set_down(false);
    let (status, answer) = deliver(&url, "push", "retry-1", "application/json", PUSH.to_vec()).await;
    assert_eq!((status, answer["duplicates"].as_u64()), (StatusCode::ACCEPTED, Some(0)), "{answer}");
    assert_eq!(sink.ids(), BTreeSet::from(["retry-1".to_owned()]));
}

/// The head of a signed GitHub push delivery to `path`, with `framing` (a `content-length` or
/// `transfer-encoding` header).
fn delivery_head(server: &Server, path: &str, framing: &str) -> String {
    let address = server.url.trim_start_matches("http://");
    format!(
        "POST {path} HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\nx-github-event: push\r\n\
         x-github-delivery: big-1\r\nx-hub-signature-256: sha256={}\r\n{framing}\r\n\r\n",
        "0".repeat(64)
    )
}

/// Reads an answer (its head and problem body) from `stream`; the server may keep it open.
async fn read_answer(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> String {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
            let text = String::from_utf8_lossy(&answer);
            if text.contains("\r\n\r\n") && text.trim_end().ends_with('}') {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer: {}", String::from_utf8_lossy(&answer));
    String::from_utf8_lossy(&answer).into_owned()
}

/// Sends a request's head only, declaring `content_length` bytes, and reads the answer: the
/// server must answer without the body.
async fn head_only(server: &Server, path: &str, content_length: usize) -> String {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(server.url.trim_start_matches("http://")).await.expect("connect");
    let head = delivery_head(server, path, &format!("content-length: {content_length}"));
    stream.write_all(head.as_bytes()).await.expect("send the head");
    read_answer(&mut stream).await
}

#[tokio::test]
async fn a_webhook_body_is_not_read_for_an_unknown_source_or_over_the_limit() {
    let server = Server::start_with_env(&[("SWITCHYARD_MAX_BATCH_BYTES", "2097152")]).await;
    let sink = Subscriber::start().await;
    github_source_to(&server, "known", &sink.url).await;
    let declared = 20 << 20;

    // No source: 404 from the headers alone, whatever the declared length (the body is never
    // sent, so an answer at all shows it was not awaited).
    for length in [1 << 20, declared] {
        let answer = head_only(&server, "/webhooks/github/default/nope", length).await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{length}: {answer}");
        assert!(answer.contains("application/problem+json"), "{answer}");
        assert!(answer.contains("GitHubSource 'default/nope' does not exist"), "{answer}");
    }
    let answer = head_only(&server, "/webhooks/gitlab/default/known", 1 << 20).await;
    assert!(answer.starts_with("HTTP/1.1 404") && answer.contains("no webhook source kind 'gitlab'"), "{answer}");

    let answer = head_only(&server, "/webhooks/github/default/known", declared).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("2097152 bytes (max_batch_bytes)"), "{answer}");

    // A streamed body has no length to check first: it is cut off at the limit (64 KiB chunks,
    // 2.5 MiB in all, sent while the answer is awaited).
    let stream = tokio::net::TcpStream::connect(server.url.trim_start_matches("http://")).await.expect("connect");
    let (mut reading, mut writing) = stream.into_split();
    let head = delivery_head(&server, "/webhooks/github/default/known", "transfer-encoding: chunked");
    let sending = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        writing.write_all(head.as_bytes()).await?;
        let chunk = [format!("{:x}\r\n", 64 << 10).into_bytes(), vec![b' '; 64 << 10], b"\r\n".to_vec()].concat();
        for _ in 0..40 {
            writing.write_all(&chunk).await?;
        }
        writing.write_all(b"0\r\n\r\n").await
    });
    let answer = read_answer(&mut reading).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("2097152 bytes (max_batch_bytes)"), "{answer}");
    sending.abort();
    assert!(sink.received().is_empty());
    // The node still answers.
    let (status, _) = deliver(
        &format!("{}/webhooks/github/default/known", server.url),
        "push",
        "small-1",
        "application/json",
        PUSH.to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
}
