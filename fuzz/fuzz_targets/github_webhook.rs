//! Untrusted GitHub webhook deliveries to a GitHubSource: a control byte, then `name: value`
//! header lines, a blank line, and the body. The control byte's low bit signs the body
//! correctly (else only a signature the input brings can pass, which it cannot forge), so that
//! the fuzzer gets past the signature to the decoding and the mapping; its next bit makes the
//! source take the event the input names (else only `push` and `ping`).
//!
//! Receiving must never panic; an unsigned delivery is never accepted; and an accepted
//! delivery is one event whose data is the payload exactly: the body, or for a form its decoded
//! `payload` field.
#![no_main]

#[path = "common/http_input.rs"]
mod http_input;

use std::collections::BTreeSet;

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use ring::hmac;
use switchyard_sources::github::GitHubWebhook;
use switchyard_sources::{Receipt, Webhook, WebhookError};

const SECRET: &[u8] = b"fuzz secret";

fn signature(body: &[u8]) -> String {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, SECRET), body);
    let hex: String = tag.as_ref().iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256={hex}")
}

/// The payload the receiver must have taken from `body`, by the same reading of `Content-Type`.
fn expected_payload(headers: &HeaderMap, body: &[u8]) -> Vec<u8> {
    let media_type = headers.get(http::header::CONTENT_TYPE).map(|value| {
        let value = value.as_bytes();
        value.split(|&b| b == b';').next().unwrap_or_default().trim_ascii().to_ascii_lowercase()
    });
    if media_type.as_deref() == Some(b"application/x-www-form-urlencoded".as_slice()) {
        let payload = url::form_urlencoded::parse(body).find(|(name, _)| name == "payload");
        payload.map(|(_, value)| value.into_owned().into_bytes()).expect("an accepted form has a payload")
    } else {
        body.to_vec()
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, input)) = input.split_first() else { return };
    let (mut headers, body) = http_input::headers_and_body(input);
    let signed = signature(&body);
    if control & 1 == 1 {
        headers.insert("x-hub-signature-256", HeaderValue::from_str(&signed).expect("hex is a header value"));
    }
    let event_name = headers.get("x-github-event").and_then(|value| value.to_str().ok()).unwrap_or_default().to_owned();
    let mut event_types: BTreeSet<String> = ["push".to_owned(), "ping".to_owned()].into();
    if control & 2 == 2 {
        event_types.insert(event_name.clone());
    }
    let webhook = GitHubWebhook::new(SECRET.to_vec(), event_types, "octo/hello".to_owned());

    let receipt = webhook.receive(&headers, &body);
    let correctly_signed = headers.get("x-hub-signature-256").is_some_and(|value| {
        value.as_bytes().strip_prefix(b"sha256=").is_some_and(|hex| hex.eq_ignore_ascii_case(&signed.as_bytes()[7..]))
    });
    if !correctly_signed {
        assert!(matches!(receipt, Err(WebhookError::Unauthorized(_))), "an unsigned delivery got {receipt:?}");
        return;
    }
    let Ok(Receipt::Events(events)) = receipt else { return };
    assert_eq!(events.len(), 1, "a delivery is one event");
    let event = &events[0];
    assert_eq!(event.ty(), format!("dev.knative.source.github.{event_name}"));
    assert_eq!(Some(event.id()), headers.get("x-github-delivery").and_then(|value| value.to_str().ok()));
    let data = event.data().expect("an event carries the payload");
    assert_eq!(data.bytes, expected_payload(&headers, &body), "the data is the payload as sent");
});
