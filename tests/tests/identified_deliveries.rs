//! Identified deliveries (`audience` on a destination): the tokens real subscribers receive are
//! verified by PyJWT, a JWT library nobody here wrote, which finds the key the standard way,
//! through the server's own OpenID discovery document. PyJWT is installed by
//! `tests/interop/setup.sh` under `~/.cache/switchyard/pyjwt`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use switchyard_tests::{Received, Server, Subscriber};

const WAIT: Duration = Duration::from_secs(20);
const AUDIENCE: &str = "orders-service";

fn python() -> PathBuf {
    let home = std::env::var("HOME").expect("HOME");
    Path::new(&home).join(".cache/switchyard/pyjwt/venv/bin/python")
}

fn verifier() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/oidc/verify.py")
}

/// The bearer token of each delivery.
fn tokens(received: &[Received]) -> Vec<String> {
    received
        .iter()
        .map(|delivery| {
            let header = delivery.header("authorization").unwrap_or_else(|| panic!("no Authorization in {delivery:?}"));
            header.strip_prefix("Bearer ").unwrap_or_else(|| panic!("not a bearer token: {header}")).to_owned()
        })
        .collect()
}

/// Verifies `tokens` with PyJWT for `audience`, the key set found from `issuer`'s discovery
/// document; the claims of each.
fn verify_with_pyjwt(issuer: &str, audience: &str, tokens: &[String]) -> Vec<Value> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("tokens.json");
    std::fs::write(&file, json!(tokens).to_string()).expect("write the tokens");
    let mut command = Command::new(python());
    command.arg(verifier()).arg(issuer).arg(audience).arg(&file);
    let output =
        command.output().unwrap_or_else(|e| panic!("{command:?} runs (tests/interop/setup.sh installs PyJWT): {e}"));
    assert!(
        output.status.success(),
        "PyJWT refused the tokens: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let claims: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("claims as json"))
        .collect();
    assert_eq!(claims.len(), tokens.len(), "one line of claims per token");
    claims
}

async fn send(server: &Server, id: &str) {
    let status = server.send_binary("default", "orders", id, "order.created", b"{}").await;
    assert!(status.is_success(), "send {id}: {status}");
}

#[tokio::test]
async fn deliveries_to_an_audience_carry_tokens_pyjwt_verifies_across_a_restart() {
    let mut server = Server::start().await;
    let identified = Subscriber::start().await;
    let plain = Subscriber::start().await;
    let failing = Subscriber::start_answering(vec![StatusCode::INTERNAL_SERVER_ERROR; 4]).await;
    let dead_letters = Subscriber::start().await;
    server.broker("default", "orders").await;
    server
        .trigger(
            "default",
            "identified",
            json!({"broker": "orders", "subscriber": {"uri": identified.url, "audience": AUDIENCE}}),
        )
        .await;
    server.trigger("default", "plain", json!({"broker": "orders", "subscriber": {"uri": plain.url}})).await;
    server
        .trigger(
            "default",
            "failing",
            json!({
                "broker": "orders",
                "filter": {"attributes": {"id": "e-1"}},
                "subscriber": {"uri": failing.url},
                "delivery": {"retry": 0, "deadLetterSink": {"uri": dead_letters.url, "audience": "dead-letters"}},
            }),
        )
        .await;

    // A bad audience is refused, naming the field.
    let empty = json!({"spec": {"broker": "orders", "subscriber": {"uri": plain.url, "audience": ""}}});
    let (status, body) = server.put("/v1/namespaces/default/triggers/bad", empty).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("spec.subscriber.audience"), "{body}");

    for id in ["e-1", "e-2", "e-3"] {
        send(&server, id).await;
    }
    let before = tokens(&identified.wait_for(3, WAIT).await);
    assert!(before.iter().all(|token| token == &before[0]), "one token, reused while fresh");
    for delivery in plain.wait_for(3, WAIT).await {
        assert_eq!(delivery.header("authorization"), None, "no audience, no token: {delivery:?}");
    }

    let claims = verify_with_pyjwt(&server.url, AUDIENCE, &before);
    assert_eq!(claims[0]["iss"], server.url);
    assert_eq!(claims[0]["sub"], "system:switchyard:trigger:default:identified");
    assert_eq!(claims[0]["aud"], AUDIENCE);
    assert_eq!(claims[0]["exp"].as_u64().zip(claims[0]["iat"].as_u64()).map(|(exp, iat)| exp - iat), Some(600));

    // The dead-letter sink is sent a token for its own audience, naming the same trigger.
    let dead_lettered = tokens(&dead_letters.wait_for(1, WAIT).await);
    let claims = verify_with_pyjwt(&server.url, "dead-letters", &dead_lettered);
    assert_eq!(claims[0]["sub"], "system:switchyard:trigger:default:failing");

    // The key is kept: after a restart the tokens signed before still verify with the key set
    // the server publishes, and so do the new ones.
    server.restart().await;
    send(&server, "e-4").await;
    let after = tokens(&identified.wait_for(4, WAIT).await);
    verify_with_pyjwt(&server.url, AUDIENCE, &after);
    server.assert_healthy().await;
}

#[tokio::test]
async fn the_discovery_document_and_key_set_need_no_token_where_the_api_does() {
    let token = "identified-deliveries-admin-token";
    let hash: String = ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let server = Server::start_with_args_and_env(
        &[],
        &[("SWITCHYARD_AUTH_TOKENS", &format!("name=ops sha256={hash} role=admin"))],
    )
    .await;
    let client = reqwest::Client::new();
    let listing = client.get(format!("{}/v1/namespaces/default/brokers", server.url)).send().await.expect("get");
    assert_eq!(listing.status(), StatusCode::UNAUTHORIZED, "the API needs a token");

    let get = |path: &'static str| {
        let request = client.get(format!("{}{path}", server.url));
        async move {
            let answer = request.send().await.expect("get");
            assert_eq!(answer.status(), StatusCode::OK, "{path}");
            answer.json::<Value>().await.expect("json")
        }
    };
    let discovery = get("/.well-known/openid-configuration").await;
    assert_eq!(discovery["issuer"], server.url);
    assert_eq!(discovery["jwks_uri"], format!("{}/.well-known/jwks.json", server.url));
    assert_eq!(discovery["id_token_signing_alg_values_supported"], json!(["ES256"]));
    let jwks = get("/.well-known/jwks.json").await;
    let key = &jwks["keys"][0];
    assert_eq!(
        (&key["kty"], &key["crv"], &key["alg"], &key["use"]),
        (&json!("EC"), &json!("P-256"), &json!("ES256"), &json!("sig"))
    );
    assert!(key["kid"].as_str().is_some_and(|kid| !kid.is_empty()), "{jwks}");
    server.assert_healthy().await;
}

/// A source's HTTP sink with an `audience` gets a token too, with the source as its subject.
#[tokio::test]
async fn a_sources_sink_with_an_audience_gets_tokens_naming_the_source() {
    let server = Server::start().await;
    let subscriber = Subscriber::start().await;
    let (status, body) = server
        .put(
            "/v1/namespaces/default/pingsources/tick",
            json!({"spec": {"schedule": "* * * * * *", "data": "{}",
                            "sink": {"uri": subscriber.url, "audience": "tick-receiver"}}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let received = subscriber.wait_for(1, WAIT).await;
    let claims = verify_with_pyjwt(&server.url, "tick-receiver", &tokens(&received[..1]));
    assert_eq!(claims[0]["sub"], "system:switchyard:source:pingsource:default:tick", "{claims:?}");
}
