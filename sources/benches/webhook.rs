//! The cost of one GitHub webhook delivery in the GitHubSource: signature check, body decoding
//! and the mapping to a CloudEvent, for a 7.4 KB `push` payload (octokit's example) sent as
//! JSON and as GitHub's form encoding.
//!
//! Run: `cargo bench -p switchyard-sources --bench webhook -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http::{HeaderMap, HeaderValue};
use ring::hmac;
use switchyard_sources::github::GitHubWebhook;
use switchyard_sources::{Receipt, Webhook};

const SECRET: &[u8] = b"It's a Secret to Everybody";
const PUSH: &[u8] = include_bytes!("../src/github/testdata/push.with-installation.json");

/// A delivery as GitHub sends it: signed, with its event and delivery headers.
fn delivery(content_type: &'static str, body: Vec<u8>) -> (HeaderMap, Bytes) {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, SECRET), &body);
    let hex: String = tag.as_ref().iter().map(|byte| format!("{byte:02x}")).collect();
    let mut headers = HeaderMap::new();
    headers.insert("x-hub-signature-256", HeaderValue::from_str(&format!("sha256={hex}")).expect("hex"));
    headers.insert("x-github-event", HeaderValue::from_static("push"));
    headers.insert("x-github-delivery", HeaderValue::from_static("72d3162e-cc78-11e3-81ab-4c9367dc0958"));
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    (headers, Bytes::from(body))
}

fn benches(c: &mut Criterion) {
    let webhook = GitHubWebhook::new(SECRET.to_vec(), ["push".to_owned()].into(), "Codertocat/Hello-World".to_owned());
    let payload = std::str::from_utf8(PUSH).expect("the payload is UTF-8");
    let form = url::form_urlencoded::Serializer::new(String::new()).append_pair("payload", payload).finish();
    let deliveries = [
        ("push_7k_json", delivery("application/json", PUSH.to_vec())),
        ("push_7k_form", delivery("application/x-www-form-urlencoded", form.into_bytes())),
    ];

    let mut group = c.benchmark_group("github_webhook");
    group.throughput(Throughput::Elements(1));
    for (name, (headers, body)) in &deliveries {
        match webhook.receive(headers, body) {
            Ok(Receipt::Events(events)) if events.len() == 1 => {}
            other => panic!("{name}: the benchmark delivery must make one event, got {other:?}"),
        }
        group.bench_function(*name, |b| b.iter(|| webhook.receive(black_box(headers), black_box(body))));
    }
    group.finish();
}

criterion_group!(webhook, benches);
criterion_main!(webhook);
