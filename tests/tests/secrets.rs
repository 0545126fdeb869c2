//! Secrets are write-only: no answer (PUT, GET, LIST, DELETE), log line or dead letter shows an
//! inline secret or a URL's password; a declaration read, edited and submitted again keeps
//! them; a secret can come from a file of the server. Where declarations are stored (the Kafka
//! backend's shared topic; the embedded store, given a key) inline secrets are sealed.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use switchyard_tests::{binary, consume, fresh_cluster, Server, Subscriber};

const SECRET: &str = "s3cret-webhook-token";
const PASSWORD: &str = "p4ssw0rd";

fn github_spec(secret_token: Value) -> Value {
    json!({"spec": {
        "ownerAndRepository": "acme/shop",
        "eventTypes": ["push"],
        "secretToken": secret_token,
        "sink": {"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "b"}},
    }})
}

fn assert_hidden(what: &str, text: &str) {
    assert!(!text.contains(SECRET) && !text.contains(PASSWORD), "{what} shows a secret: {text}");
}

/// A push delivery signed with `secret`, as GitHub sends it.
async fn push(webhook_url: &str, secret: &str, delivery: &str) -> StatusCode {
    let body = br#"{"ref":"refs/heads/main","repository":{"full_name":"acme/shop","html_url":"https://github.com/acme/shop"}}"#;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let hex: String = ring::hmac::sign(&key, body).as_ref().iter().map(|b| format!("{b:02x}")).collect();
    reqwest::Client::new()
        .post(webhook_url)
        .header("x-github-event", "push")
        .header("x-github-delivery", delivery)
        .header("x-hub-signature-256", format!("sha256={hex}"))
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .expect("post the delivery")
        .status()
}

#[tokio::test]
async fn no_answer_log_or_dead_letter_shows_a_secret_and_a_resubmission_keeps_them() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    let subscriber = Subscriber::start().await;
    let source_path = "/v1/namespaces/default/githubsources/repo";
    let (status, created) = server.put(source_path, github_spec(json!({"value": SECRET}))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["spec"]["secretToken"]["value"], "<redacted>", "{created}");
    let webhook_url = created["status"]["webhookUrl"].as_str().expect("webhookUrl").to_owned();

    // A subscriber URL with credentials, and a dead-letter sink that answers nothing useful.
    let with_password = subscriber.url.replacen("http://", &format!("http://ops:{PASSWORD}@"), 1);
    let trigger_path = "/v1/namespaces/default/triggers/t";
    let (status, trigger) =
        server.put(trigger_path, json!({"spec": {"broker": "b", "subscriber": {"uri": with_password}}})).await;
    assert_eq!(status, StatusCode::CREATED, "{trigger}");
    let shown = trigger["spec"]["subscriber"]["uri"].as_str().expect("uri");
    assert!(shown.contains("ops:%3Credacted%3E@"), "{shown}");

    for path in [
        source_path,
        "/v1/namespaces/default/githubsources",
        "/v1/githubsources",
        trigger_path,
        "/v1/namespaces/default/triggers",
        "/v1/triggers",
    ] {
        let (status, body) = server.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_hidden(path, &body.to_string());
    }

    // Read, edit, submit again: the stored secret and password are kept, not replaced by the
    // marker, so the webhook still verifies with the original secret and deliveries still go.
    let (_, mut source) = server.get(source_path).await;
    source["spec"]["eventTypes"] = json!(["push", "issues"]);
    let (status, replaced) = server.put(source_path, source).await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    assert_eq!(replaced["spec"]["eventTypes"], json!(["push", "issues"]));
    let (_, mut trigger) = server.get(trigger_path).await;
    trigger["spec"]["delivery"] = json!({"retry": 1});
    let (status, replaced) = server.put(trigger_path, trigger).await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    assert_eq!(push(&webhook_url, SECRET, "d-1").await, StatusCode::ACCEPTED);
    assert_eq!(push(&webhook_url, "<redacted>", "d-2").await, StatusCode::UNAUTHORIZED);
    let received = subscriber.wait_for(1, Duration::from_secs(15)).await;
    assert_eq!(
        received[0].header("authorization"),
        Some(format!("Basic {}", base64_of(&format!("ops:{PASSWORD}"))).as_str()),
        "the subscriber gets the credentials its URL names"
    );

    // The marker where nothing is stored to keep is refused, naming the field.
    let (status, problem) =
        server.put("/v1/namespaces/default/githubsources/new", github_spec(json!({"value": "<redacted>"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("spec.secretToken.value")), "{problem}");

    let (status, deleted) = server.delete(source_path).await;
    assert_eq!(status, StatusCode::OK);
    assert_hidden("the DELETE answer", &deleted.to_string());
    let (status, deleted) = server.delete(trigger_path).await;
    assert_eq!(status, StatusCode::OK);
    assert_hidden("the DELETE answer", &deleted.to_string());
    assert_hidden("the log", &server.log());
}

#[tokio::test]
async fn a_dead_letter_does_not_carry_the_subscribers_password() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    let subscriber = Subscriber::start_answering(vec![StatusCode::INTERNAL_SERVER_ERROR]).await;
    let sink = Subscriber::start().await;
    let with_password = subscriber.url.replacen("http://", &format!("http://ops:{PASSWORD}@"), 1);
    server
        .trigger(
            "default",
            "t",
            json!({"broker": "b", "subscriber": {"uri": with_password},
                   "delivery": {"retry": 0, "deadLetterSink": {"uri": sink.url}}}),
        )
        .await;
    assert_eq!(server.send_binary("default", "b", "e-1", "t", b"{}").await, StatusCode::ACCEPTED);
    let dead = sink.wait_for(1, Duration::from_secs(15)).await;
    let destination = dead[0].attribute("knativeerrordest").expect("knativeerrordest");
    assert!(destination.contains("ops:%3Credacted%3E@"), "{destination}");
    assert_hidden("the dead letter", &format!("{:?}", dead[0].headers));
}

#[tokio::test]
async fn a_webhook_secret_can_come_from_a_file_of_the_server() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("github-secret");
    std::fs::write(&file, format!("{SECRET}\n")).expect("write the secret");
    let path = "/v1/namespaces/default/githubsources/repo";
    let (status, body) = server.put(path, github_spec(json!({"file": file.display().to_string()}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["spec"]["secretToken"]["file"], file.display().to_string(), "a reference is shown as it is");
    let webhook_url = body["status"]["webhookUrl"].as_str().expect("webhookUrl").to_owned();
    assert_eq!(push(&webhook_url, SECRET, "d-1").await, StatusCode::ACCEPTED);

    let (status, problem) = server.put(path, github_spec(json!({"file": "relative/path"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("spec.secretToken.file")), "{problem}");
}

/// In the Kafka backend's declarations topic, which every node and anyone who may read it sees,
/// an inline secret and a URL's password are sealed; every node opens them with the key the
/// nodes agreed on without being given one.
#[tokio::test]
async fn the_shared_declarations_topic_holds_secrets_sealed_and_every_node_opens_them() {
    let cluster = fresh_cluster();
    let first = Server::start_node(&cluster).await;
    first.broker("default", "b").await;
    let subscriber = Subscriber::start().await;
    let (status, source) =
        first.put("/v1/namespaces/default/githubsources/repo", github_spec(json!({"value": SECRET}))).await;
    assert_eq!(status, StatusCode::CREATED, "{source}");
    let with_password = subscriber.url.replacen("http://", &format!("http://ops:{PASSWORD}@"), 1);
    first.trigger("default", "t", json!({"broker": "b", "subscriber": {"uri": with_password}})).await;

    let records = consume(&format!("{cluster}.config"), 3);
    let stored: String = records.iter().map(|record| record["value"].to_string()).collect();
    assert_hidden("the declarations topic", &stored);
    assert!(stored.contains("sealed.v1."), "{stored}");

    // Another node opens them: its webhook verifies with the secret, its deliveries carry the
    // password.
    let second = Server::start_node(&cluster).await;
    let webhook_url = source["status"]["webhookUrl"].as_str().expect("webhookUrl").replacen(&first.url, &second.url, 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while push(&webhook_url, SECRET, "d-1").await != StatusCode::ACCEPTED {
        assert!(std::time::Instant::now() < deadline, "the second node never verified the webhook: {}", second.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let received = subscriber.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(
        received[0].header("authorization"),
        Some(format!("Basic {}", base64_of(&format!("ops:{PASSWORD}"))).as_str())
    );
    assert_hidden("the first node's log", &first.log());
    assert_hidden("the second node's log", &second.log());
}

/// Given `[secrets]` a key, the embedded store seals them too; a key that is not 32 bytes of
/// base64 stops the start, saying so.
#[tokio::test]
async fn with_a_key_the_embedded_store_holds_secrets_sealed() {
    let key = base64_of("0123456789abcdef0123456789abcdef");
    let server = Server::start_with_env(&[("SWITCHYARD_SECRETS_KEY", &key)]).await;
    server.broker("default", "b").await;
    let (status, source) =
        server.put("/v1/namespaces/default/githubsources/repo", github_spec(json!({"value": SECRET}))).await;
    assert_eq!(status, StatusCode::CREATED, "{source}");
    let webhook_url = source["status"]["webhookUrl"].as_str().expect("webhookUrl").to_owned();
    assert_eq!(push(&webhook_url, SECRET, "d-1").await, StatusCode::ACCEPTED);
    if !switchyard_tests::on_kafka() {
        let stored = std::fs::read(server.data_dir().join("meta.redb")).expect("read meta.redb");
        assert!(!stored.windows(SECRET.len()).any(|window| window == SECRET.as_bytes()), "meta.redb holds the secret");
    }

    let data = tempfile::tempdir().expect("tempdir");
    let refused = std::process::Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .env("SWITCHYARD_SECRETS_KEY", base64_of("too short"))
        .output()
        .expect("run switchyard serve");
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("SWITCHYARD_SECRETS_KEY") && message.contains("32 bytes, not 9"), "{message}");
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}
