//! Signed deliveries (`spec.signing`, Standard Webhooks): what real subscribers receive is
//! verified by the independent reference libraries — Python `standardwebhooks` and npm
//! `standardwebhooks` for `v1` (HMAC-SHA256), Node's own Ed25519 for `v1a`, which neither
//! library verifies — installed by `tests/interop/setup.sh` under
//! `~/.cache/switchyard/standardwebhooks`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use reqwest::StatusCode;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{json, Value};
use switchyard_tests::{Received, Server, Subscriber};

const WAIT: Duration = Duration::from_secs(20);
/// An HMAC secret of 32 bytes.
const WHSEC: &str = "whsec_c3dpdGNoeWFyZCBzaWduZWQgZGVsaXZlcmllcyAzMmI=";
/// An Ed25519 seed.
const SEED: [u8; 32] = *b"switchyard ed25519 test seed 32b";

fn whsk() -> String {
    format!("whsk_{}", STANDARD.encode(SEED))
}

/// The public key of [`SEED`], computed here, independently of the server.
fn whpk() -> String {
    let pair = Ed25519KeyPair::from_seed_unchecked(&SEED).expect("a seed");
    format!("whpk_{}", STANDARD.encode(pair.public_key().as_ref()))
}

fn cache() -> PathBuf {
    let home = std::env::var("HOME").expect("HOME");
    Path::new(&home).join(".cache/switchyard/standardwebhooks")
}

fn verifiers() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/standardwebhooks")
}

/// Runs both reference verifiers on `deliveries`: every `whsec` must verify each with the
/// Python and npm libraries, every `whpk` with Node's Ed25519.
fn verify_with_reference_libraries(deliveries: &[&Received], whsec: &[&str], whpk: &[String]) {
    let deliveries: Vec<Value> = deliveries
        .iter()
        .map(|received| {
            let header = |name: &str| received.header(name).unwrap_or_else(|| panic!("no {name} in {received:?}"));
            json!({
                "headers": {
                    "webhook-id": header("webhook-id"),
                    "webhook-timestamp": header("webhook-timestamp"),
                    "webhook-signature": header("webhook-signature"),
                },
                "body": STANDARD.encode(&received.body),
            })
        })
        .collect();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("deliveries.json");
    std::fs::write(&file, json!({"whsec": whsec, "whpk": whpk, "deliveries": deliveries}).to_string()).unwrap();
    let python = cache().join("venv/bin/python");
    let node_modules = cache().join("js/node_modules");
    for mut command in [
        {
            let mut c = Command::new(&python);
            c.arg(verifiers().join("verify.py")).arg(&file);
            c
        },
        {
            let mut c = Command::new("node");
            c.arg(verifiers().join("verify.cjs")).arg(&node_modules).arg(&file);
            c
        },
    ] {
        let output = command
            .output()
            .unwrap_or_else(|e| panic!("{command:?} runs (tests/interop/setup.sh installs the verifiers): {e}"));
        assert!(
            output.status.success(),
            "{command:?} refused the deliveries: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

async fn send(server: &Server, broker: &str, id: &str, data: &str) {
    let status = reqwest::Client::new()
        .post(format!("{}/default/{broker}", server.url))
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-type", "signed.test")
        .header("ce-source", "/signed")
        .header("content-type", "application/json")
        .body(data.to_owned())
        .send()
        .await
        .expect("send")
        .status();
    assert_eq!(status, StatusCode::ACCEPTED);
}

async fn trigger_status(server: &Server, name: &str) -> Value {
    let (status, body) = server.get(&format!("/v1/namespaces/default/triggers/{name}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["status"].clone()
}

/// Polls the trigger's `Ready` condition until it has `reason`; returns its message.
async fn wait_for_reason(server: &Server, name: &str, reason: &str) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = trigger_status(server, name).await;
        let ready = &status["conditions"][0];
        if ready["reason"] == reason {
            assert_eq!(ready["status"], "False", "{status}");
            return ready["message"].as_str().unwrap_or_default().to_owned();
        }
        assert!(tokio::time::Instant::now() < deadline, "{name} never had reason {reason}: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn signatures(received: &Received) -> Vec<&str> {
    received.header("webhook-signature").expect("webhook-signature").split(' ').collect()
}

#[tokio::test]
async fn deliveries_are_verified_by_the_reference_libraries_in_both_modes() {
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("signing.key");
    std::fs::write(&key_file, format!("{}\n", whsk())).unwrap();
    let server = Server::start().await;
    server.broker("default", "b").await;
    let binary = Subscriber::start().await;
    let structured = Subscriber::start().await;
    let unsigned = Subscriber::start().await;
    let signing = json!({"secrets": [{"value": WHSEC}, {"file": key_file.display().to_string()}]});
    server
        .trigger("default", "binary", json!({"broker": "b", "subscriber": {"uri": binary.url}, "signing": signing}))
        .await;
    server
        .trigger(
            "default",
            "structured",
            json!({"broker": "b", "subscriber": {"uri": structured.url}, "signing": signing, "delivery": {"format": "json"}}),
        )
        .await;
    server.trigger("default", "unsigned", json!({"broker": "b", "subscriber": {"uri": unsigned.url}})).await;

    for (id, data) in [("1", r#"{"n":1}"#), ("2", r#"{"text":"é ünïcode"}"#), ("3", "[]")] {
        send(&server, "b", id, data).await;
    }
    let binary = binary.wait_for(3, WAIT).await;
    let structured = structured.wait_for(3, WAIT).await;
    let unsigned = unsigned.wait_for(3, WAIT).await;

    for received in binary.iter().chain(&structured) {
        let signatures = signatures(received);
        assert!(
            signatures.len() == 2 && signatures[0].starts_with("v1,") && signatures[1].starts_with("v1a,"),
            "one signature per secret, in the declared order: {signatures:?}"
        );
    }
    let binary_ids: Vec<&str> = binary.iter().filter_map(|r| r.header("webhook-id")).collect();
    let mut distinct = binary_ids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "one webhook-id per event: {binary_ids:?}");
    // Structured mode signs the whole event, binary mode its data; the event's id is the same.
    for received in &structured {
        let event: Value = serde_json::from_slice(&received.body).unwrap();
        let twin = binary.iter().find(|b| b.header("ce-id") == event["id"].as_str()).expect("the same event");
        assert_eq!(received.header("webhook-id"), twin.header("webhook-id"));
    }
    for received in &unsigned {
        let webhook: Vec<_> = received.headers.keys().filter(|name| name.as_str().starts_with("webhook-")).collect();
        assert!(webhook.is_empty(), "a trigger without signing sent {webhook:?}");
    }

    let status = trigger_status(&server, "binary").await;
    assert_eq!(status["signing"]["publicKeys"], json!([whpk()]), "{status}");
    assert!(trigger_status(&server, "unsigned").await.get("signing").is_none());
    let (_, stored) = server.get("/v1/namespaces/default/triggers/binary").await;
    assert!(!stored.to_string().contains("whsk_"), "the file's key never shows: {stored}");

    let all: Vec<&Received> = binary.iter().chain(&structured).collect();
    verify_with_reference_libraries(&all, &[WHSEC], &[whpk()]);
}

#[tokio::test]
async fn a_retry_keeps_the_webhook_id_and_is_signed_afresh_and_the_dead_letter_sink_is_signed() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    let flaky = Subscriber::start_answering(vec![StatusCode::INTERNAL_SERVER_ERROR, StatusCode::OK]).await;
    let failing = Subscriber::start().await;
    failing.always(StatusCode::SERVICE_UNAVAILABLE);
    let dead_letters = Subscriber::start().await;
    let signing = json!({"secrets": [{"value": WHSEC}]});
    // Linear from 1 s: the retry is at least a second later, so its timestamp differs.
    let retrying = json!({"retry": 3, "backoffPolicy": "linear", "backoffDelay": "PT1S"});
    server
        .trigger(
            "default",
            "flaky",
            json!({"broker": "b", "subscriber": {"uri": flaky.url}, "signing": signing, "delivery": retrying}),
        )
        .await;
    let to_dead_letters = json!({"retry": 0, "deadLetterSink": {"uri": dead_letters.url}});
    server
        .trigger(
            "default",
            "failing",
            json!({"broker": "b", "subscriber": {"uri": failing.url}, "signing": signing, "delivery": to_dead_letters}),
        )
        .await;
    send(&server, "b", "r1", r#"{"retry":true}"#).await;

    let attempts = flaky.wait_for(2, WAIT).await;
    let (first, retry) = (&attempts[0], &attempts[1]);
    assert_eq!(first.header("webhook-id"), retry.header("webhook-id"), "a retry keeps the webhook-id");
    let timestamp = |r: &Received| r.header("webhook-timestamp").unwrap().parse::<u64>().unwrap();
    assert!(timestamp(retry) > timestamp(first), "the retry carries its own time");
    assert_ne!(first.header("webhook-signature"), retry.header("webhook-signature"));

    let dead = dead_letters.wait_for(1, WAIT).await;
    let failed = failing.received();
    assert_eq!(dead[0].header("webhook-id"), failed[0].header("webhook-id"), "the same event, the same id");
    verify_with_reference_libraries(&[first, retry, &dead[0], &failed[0]], &[WHSEC], &[]);
}

#[tokio::test]
async fn malformed_signing_declarations_are_refused_naming_the_field() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    let path = "/v1/namespaces/default/triggers/bad";
    let secret_in_wrong_format = "hunter2-not-a-webhook-secret";
    for (signing, field) in [
        (json!({"secrets": [{"value": WHSEC}, {"value": secret_in_wrong_format}]}), "spec.signing.secrets[1].value"),
        (json!({"secrets": [{"value": "whsec_c2hvcnQ="}]}), "spec.signing.secrets[0].value"),
        (json!({"secrets": []}), "spec.signing.secrets"),
        (json!({"secrets": vec![json!({"env": "K"}); 9]}), "spec.signing.secrets"),
        (json!({"secrets": [{"env": "K", "file": "/k"}]}), "spec.signing.secrets[0]"),
        (json!({"secret": [{"env": "K"}]}), "secret"),
    ] {
        let spec = json!({"broker": "b", "subscriber": {"uri": "http://127.0.0.1:9/"}, "signing": signing});
        let (status, body) = server.put(path, json!({"spec": spec})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{signing}: {body}");
        let text = body.to_string();
        assert!(text.contains(field), "{signing}: {body}");
        assert!(!text.contains(secret_in_wrong_format), "the secret is never quoted: {body}");
    }
    let (status, _) = server.get(path).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_unreadable_secret_holds_the_events_until_it_can_be_read() {
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("later.key");
    let server = Server::start().await;
    server.broker("default", "b").await;
    let subscriber = Subscriber::start().await;

    // A variable the server does not have: not ready, and the write says it is not active.
    let unset = json!({"broker": "b", "subscriber": {"uri": subscriber.url},
        "signing": {"secrets": [{"env": "SWITCHYARD_TEST_UNSET_SIGNING_KEY"}]}});
    let (status, body) = server.put("/v1/namespaces/default/triggers/env", json!({"spec": unset})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let message = wait_for_reason(&server, "env", "SecretNotFound").await;
    assert!(message.contains("SWITCHYARD_TEST_UNSET_SIGNING_KEY"), "{message}");
    assert_eq!(trigger_status(&server, "env").await["signing"]["publicKeys"], json!([]));

    // A file not written yet, then written wrong, then right: the trigger runs without a new
    // write, and the event sent meanwhile waited in the log.
    let later = json!({"broker": "b", "subscriber": {"uri": subscriber.url},
        "signing": {"secrets": [{"file": key_file.display().to_string()}]}});
    let (status, body) = server.put("/v1/namespaces/default/triggers/file", json!({"spec": later})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let message = wait_for_reason(&server, "file", "SecretNotFound").await;
    assert!(message.contains(&key_file.display().to_string()), "{message}");
    send(&server, "b", "waited", r#"{"waited":true}"#).await;
    std::fs::write(&key_file, "whsk_dG9vIHNob3J0").unwrap();
    let message = wait_for_reason(&server, "file", "InvalidSecret").await;
    assert!(message.contains(&key_file.display().to_string()) && !message.contains("dG9vIHNob3J0"), "{message}");
    assert!(subscriber.received().is_empty(), "nothing is sent unsigned");
    std::fs::write(&key_file, whsk()).unwrap();

    let received = subscriber.wait_for(1, WAIT).await;
    assert_eq!(received[0].header("ce-id"), Some("waited"));
    let ready = trigger_status(&server, "file").await;
    assert_eq!(ready["conditions"][0]["status"], "True", "{ready}");
    assert_eq!(ready["signing"]["publicKeys"], json!([whpk()]), "{ready}");
    verify_with_reference_libraries(&[&received[0]], &[], &[whpk()]);
    // The trigger on the unset variable still holds its copy of the event.
    assert_eq!(subscriber.received().len(), 1, "the env trigger delivered: {:?}", subscriber.received());
}
