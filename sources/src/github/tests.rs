//! Tests of the GitHub webhook receiver ([`super`]). The fixtures in `testdata/` are octokit's
//! webhook payload examples (MIT, `testdata/LICENSE`); the expected events are written by hand
//! from the fixtures, not computed by the code under test.

use std::path::{Path, PathBuf};

use http::header::{HeaderValue, CONTENT_TYPE};
use http::HeaderMap;

use super::*;

const SECRET: &[u8] = b"It's a Secret to Everybody";
const DELIVERY_ID: &str = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
const OWNER_AND_REPOSITORY: &str = "octo/hello";

fn webhook(event_types: &[&str]) -> GitHubWebhook {
    let event_types = event_types.iter().map(|name| (*name).to_owned()).collect();
    GitHubWebhook::new(SECRET.to_vec(), event_types, OWNER_AND_REPOSITORY.to_owned())
}

fn signature(secret: &[u8], body: &[u8]) -> String {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), body);
    let hex: String = tag.as_ref().iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256={hex}")
}

/// The headers GitHub sends with `body`, signed with [`SECRET`].
fn headers(event: &str, content_type: Option<&str>, body: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("x-hub-signature-256", HeaderValue::from_str(&signature(SECRET, body)).unwrap());
    headers.insert("x-github-event", HeaderValue::from_str(event).unwrap());
    headers.insert("x-github-delivery", HeaderValue::from_static(DELIVERY_ID));
    if let Some(content_type) = content_type {
        headers.insert(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
    }
    headers
}

fn form(payload: &[u8]) -> Vec<u8> {
    let payload = std::str::from_utf8(payload).expect("payloads are UTF-8");
    form_urlencoded::Serializer::new(String::new()).append_pair("payload", payload).finish().into_bytes()
}

/// Receives `body` as a JSON delivery of `event`, signed, on a source that takes `event`.
fn receive_json(event: &str, body: &[u8]) -> Result<Receipt, WebhookError> {
    webhook(&[event]).receive(&headers(event, Some("application/json"), body), &Bytes::copy_from_slice(body))
}

fn one_event(receipt: Result<Receipt, WebhookError>) -> Event {
    match receipt {
        Ok(Receipt::Events(mut events)) if events.len() == 1 => events.remove(0),
        other => panic!("expected one event, got {other:?}"),
    }
}

fn unauthorized(receipt: Result<Receipt, WebhookError>) -> String {
    match receipt {
        Err(WebhookError::Unauthorized(message)) => message,
        other => panic!("expected 401, got {other:?}"),
    }
}

fn bad_request(receipt: Result<Receipt, WebhookError>) -> String {
    match receipt {
        Err(WebhookError::BadRequest(message)) => message,
        other => panic!("expected 400, got {other:?}"),
    }
}

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/github/testdata").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const PING: &[u8] = br#"{"zen":"Keep it logically awesome.","hook_id":42,"repository":{"full_name":"a/b"}}"#;

#[test]
fn a_signature_computed_as_github_documents_it_is_accepted() {
    // GitHub's own example ("Validating webhook deliveries"): this secret, this body, this
    // digest. The body is no JSON, so the delivery fails after the signature, not at it.
    let body = Bytes::from_static(b"Hello, World!");
    let digest = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    for signature in [format!("sha256={digest}"), format!("sha256={}", digest.to_uppercase())] {
        let mut headers = headers("push", None, &body);
        headers.insert("x-hub-signature-256", HeaderValue::from_str(&signature).unwrap());
        let message = bad_request(webhook(&["push"]).receive(&headers, &body));
        assert!(message.starts_with("missing Content-Type header"), "{message}");
    }
}

#[test]
fn a_correctly_signed_delivery_is_accepted() {
    let event = one_event(receive_json("ping", PING));
    assert_eq!(event.ty(), "dev.knative.source.github.ping");
}

#[test]
fn a_missing_malformed_or_wrong_signature_is_unauthorized() {
    let body = Bytes::from_static(PING);
    let receiver = webhook(&["ping"]);
    let with_signature = |value: &str| {
        let mut headers = headers("ping", Some("application/json"), &body);
        headers.insert("x-hub-signature-256", HeaderValue::from_str(value).unwrap());
        headers
    };

    let mut missing = headers("ping", Some("application/json"), &body);
    missing.remove("x-hub-signature-256");
    let message = unauthorized(receiver.receive(&missing, &body));
    assert_eq!(message, "missing X-Hub-Signature-256 header: sign the payload with the source's secret");

    let right = signature(SECRET, &body);
    let cases = [
        (signature(b"another secret", &body), "X-Hub-Signature-256 does not match the payload"),
        (signature(SECRET, b"another body"), "X-Hub-Signature-256 does not match the payload"),
        (format!("sha1={}", &right[7..47]), "X-Hub-Signature-256 'sha1="),
        (right.to_uppercase(), "X-Hub-Signature-256 'SHA256="),
        (right[7..].to_owned(), "does not start with 'sha256='"),
        (right[..right.len() - 1].to_owned(), "is not 'sha256=' followed by 64 hex digits"),
        (format!("{right}0"), "is not 'sha256=' followed by 64 hex digits"),
        (format!("{}g", &right[..right.len() - 1]), "is not 'sha256=' followed by 64 hex digits"),
        ("sha256=".to_owned(), "is not 'sha256=' followed by 64 hex digits"),
        (String::new(), "does not start with 'sha256='"),
    ];
    for (value, expected) in cases {
        let message = unauthorized(receiver.receive(&with_signature(&value), &body));
        assert!(message.contains(expected), "{value}: {message}");
    }
}

#[test]
fn the_signature_is_checked_before_anything_else() {
    // No event name, no delivery id, a body that is no JSON: the answer is still 401.
    let mut headers = HeaderMap::new();
    headers.insert("x-hub-signature-256", HeaderValue::from_str(&signature(b"wrong", b"x")).unwrap());
    unauthorized(webhook(&["push"]).receive(&headers, &Bytes::from_static(b"x")));
}

#[test]
fn missing_github_headers_are_bad_requests() {
    let body = Bytes::from_static(PING);
    let receiver = webhook(&["ping"]);
    for (header, expected) in [
        ("x-github-event", "missing X-GitHub-Event header: GitHub sends the event name in it"),
        ("x-github-delivery", "missing X-GitHub-Delivery header: GitHub sends the delivery id in it"),
    ] {
        let mut missing = headers("ping", Some("application/json"), &body);
        missing.remove(header);
        assert_eq!(bad_request(receiver.receive(&missing, &body)), expected);
        let mut empty = headers("ping", Some("application/json"), &body);
        empty.insert(header, HeaderValue::from_static(""));
        assert_eq!(bad_request(receiver.receive(&empty, &body)), expected);
    }
    let mut not_ascii = headers("ping", Some("application/json"), &body);
    not_ascii.insert("x-github-delivery", HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap());
    assert_eq!(
        bad_request(receiver.receive(&not_ascii, &body)),
        "X-GitHub-Delivery 'café' is not ASCII: it holds the delivery id"
    );
}

#[test]
fn events_not_taken_are_ignored_before_the_body_is_read() {
    let body = Bytes::from_static(b"not even json");
    let receiver = webhook(&["push"]);
    let receipt = receiver.receive(&headers("issues", Some("text/plain"), &body), &body);
    assert_eq!(receipt, Ok(Receipt::Ignored("GitHub event 'issues' is not in this source's eventTypes".to_owned())));
    let receipt = receiver.receive(&headers("ping", Some("application/json"), &body), &body);
    assert_eq!(receipt, Ok(Receipt::Ignored("ping received".to_owned())));
}

#[test]
fn a_ping_is_an_event_when_the_source_takes_it() {
    let event = one_event(receive_json("ping", PING));
    let attributes = [
        ("specversion", AttrValue::String("1.0".to_owned())),
        ("id", AttrValue::String(DELIVERY_ID.to_owned())),
        ("source", AttrValue::String("https://github.com/a/b".to_owned())),
        ("type", AttrValue::String("dev.knative.source.github.ping".to_owned())),
        ("subject", AttrValue::String("42".to_owned())),
        ("datacontenttype", AttrValue::String("application/json".to_owned())),
    ];
    assert_eq!(event.attributes(), attributes.map(|(name, value)| (name.to_owned(), value)));
}

#[test]
fn json_and_form_bodies_give_the_same_event_with_the_payload_bytes_as_sent() {
    // Odd spacing and key order: re-serialising would change both.
    let payload: &[u8] = b"{ \"zen\" : \"caf\xc3\xa9 & 100% = ok\",\n  \"hook_id\":7 ,\"a\":[ ] }";
    let receiver = webhook(&["ping"]);
    let json = one_event(receive_json("ping", payload));
    let form_body = form(payload);
    let form = one_event(
        receiver
            .receive(&headers("ping", Some("application/x-www-form-urlencoded"), &form_body), &Bytes::from(form_body)),
    );
    assert_eq!(json, form);
    assert_eq!(json.data(), Some(&Data { form: DataForm::Json, bytes: Bytes::from_static(payload) }));
    assert_eq!(json.get_str("subject"), Some("7"));
}

#[test]
fn media_types_are_read_case_insensitively_without_parameters() {
    let body = Bytes::from_static(PING);
    let receiver = webhook(&["ping"]);
    for content_type in ["Application/JSON; charset=utf-8", " application/json ;", "application/json"] {
        one_event(receiver.receive(&headers("ping", Some(content_type), &body), &body));
    }
    let form_body = Bytes::from(form(PING));
    let content_type = "APPLICATION/X-WWW-FORM-URLENCODED; charset=UTF-8";
    one_event(receiver.receive(&headers("ping", Some(content_type), &form_body), &form_body));
}

#[test]
fn without_content_type_a_json_object_is_read_as_json() {
    let receiver = webhook(&["ping"]);
    let body = Bytes::from([b" \r\n\t".as_slice(), PING].concat());
    let event = one_event(receiver.receive(&headers("ping", None, &body), &body));
    assert_eq!(event.data().map(|data| &data.bytes), Some(&body));
    let body = Bytes::from(form(PING));
    let message = bad_request(receiver.receive(&headers("ping", None, &body), &body));
    assert_eq!(
        message,
        "missing Content-Type header, and the body is not a JSON object: send application/json or application/x-www-form-urlencoded"
    );
}

#[test]
fn other_media_types_are_unsupported() {
    let body = Bytes::from_static(PING);
    let receipt = webhook(&["ping"]).receive(&headers("ping", Some("text/plain; charset=utf-8"), &body), &body);
    assert_eq!(
        receipt,
        Err(WebhookError::UnsupportedMediaType(
            "unsupported Content-Type 'text/plain': GitHub webhooks send application/json or application/x-www-form-urlencoded"
                .to_owned()
        ))
    );
}

#[test]
fn a_form_needs_exactly_one_payload_field() {
    let receiver = webhook(&["ping"]);
    let cases: [(&[u8], &str); 3] = [
        (
            b"zen=hi&hook_id=1",
            "the application/x-www-form-urlencoded body has no 'payload' field: GitHub sends the JSON payload in it",
        ),
        (b"", "the application/x-www-form-urlencoded body has no 'payload' field: GitHub sends the JSON payload in it"),
        (
            b"payload=%7B%7D&payload=%7B%7D",
            "the application/x-www-form-urlencoded body has more than one 'payload' field",
        ),
    ];
    for (body, expected) in cases {
        let body = Bytes::from_static(body);
        let message =
            bad_request(receiver.receive(&headers("ping", Some("application/x-www-form-urlencoded"), &body), &body));
        assert_eq!(message, expected);
    }
}

#[test]
fn a_payload_must_be_a_json_object() {
    let receiver = webhook(&["ping"]);
    let cases: [(&str, &[u8], &str); 5] = [
        ("application/json", b"{\"zen\":", "the payload is not JSON: EOF while parsing"),
        ("application/json", b"[1, 2]", "the payload is an array, not a JSON object"),
        ("application/json", b"\"zen\"", "the payload is a string, not a JSON object"),
        ("application/json", b"{} {}", "the payload is not JSON: trailing characters"),
        ("application/x-www-form-urlencoded", b"payload=nope", "the payload is not JSON: expected ident"),
    ];
    for (content_type, body, expected) in cases {
        let body = Bytes::from_static(body);
        let message = bad_request(receiver.receive(&headers("ping", Some(content_type), &body), &body));
        assert!(message.starts_with(expected), "{message}");
    }
}

#[test]
fn a_payload_is_checked_whole_though_only_what_is_mapped_is_kept() {
    let receiver = webhook(&["ping"]);
    let cases: [(&[u8], &str); 3] = [
        (
            b"{\"zen\":\"\xff\",\"hook_id\":1}",
            "the payload is not UTF-8: invalid utf-8 sequence of 1 bytes from index 8",
        ),
        (b"{\"zen\":[1,,2],\"hook_id\":1}", "the payload is not JSON: expected value at line 1 column 11"),
        (b"{\"zen\":{\"a\":\"\t\"},\"hook_id\":1}", "the payload is not JSON: control character"),
    ];
    for (body, expected) in cases {
        let body = Bytes::from_static(body);
        let message = bad_request(receiver.receive(&headers("ping", Some("application/json"), &body), &body));
        assert!(message.starts_with(expected), "{message}");
    }
}

#[test]
fn deep_nesting_is_skipped_or_refused_never_a_stack_overflow() {
    let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    // Skipped members are skipped without recursion, at any depth.
    let body = format!(r#"{{"zen":{},"hook_id":1}}"#, nested(100_000));
    assert_eq!(one_event(receive_json("ping", body.as_bytes())).get_str("subject"), Some("1"));
    // Kept members are parsed whole, within serde_json's recursion limit.
    let body = format!(r#"{{"hook_id":{}}}"#, nested(1_000));
    let message = bad_request(receive_json("ping", body.as_bytes()));
    assert!(message.starts_with("the payload is not JSON: recursion limit exceeded"), "{message}");
}

/// What `parse` keeps of `payload` reads as the whole payload does, at every pointer the mapping
/// of `event_name` reads.
fn assert_parsed_as_whole(event_name: &str, payload: &[u8], at: &str) {
    let whole: Value = serde_json::from_slice(payload).unwrap();
    let wanted = wanted(event_name);
    let parsed = parse(payload, &wanted).unwrap();
    for pointer in &wanted {
        assert_eq!(parsed.pointer(pointer), whole.pointer(pointer), "{at}: {pointer}");
    }
}

#[test]
fn parsing_keeps_what_the_mapping_reads() {
    let cases: [(&str, &[u8]); 6] = [
        // The last of duplicate members counts, as in `serde_json::Value`.
        ("ping", br#"{"hook_id":1,"hook_id":2}"#),
        ("ping", br#"{"repository":{"full_name":"a/b"},"repository":"x"}"#),
        // Escaped keys; keys that start like wanted ones.
        ("ping", br#"{"hook_id":5,"hook_idx":6,"repository/full_name":"c/d"}"#),
        ("push", br#"{"created":true,"forced":null,"sender":{"login":{"deep":[1,{"x":2}]}},"pusher":[{"name":"a"}]}"#),
        ("gollum", br#"{"pages":[{"page_name":"A"},{"page_name":"B","x":[]},{"title":"C"}]}"#),
        ("issues", br#"{"issue":{"number":1e3},"label":{"name":"bug","color":"f00"},"assignee":null}"#),
    ];
    for (event_name, payload) in cases {
        assert_parsed_as_whole(event_name, payload, event_name);
    }
    let event = one_event(receive_json("gollum", cases[4].1));
    assert_eq!(event.get_str("subject"), Some("A,B"));
}

#[test]
fn the_source_falls_back_to_the_declared_repository() {
    let event = one_event(receive_json("ping", br#"{"hook_id":1}"#));
    assert_eq!(event.source(), "https://github.com/octo/hello");
    let event = one_event(receive_json("ping", br#"{"hook_id":1,"repository":{"full_name":"bad\u0000name"}}"#));
    assert_eq!(event.source(), "https://github.com/octo/hello");
}

#[test]
fn values_an_attribute_cannot_hold_are_skipped_not_refused() {
    // A control character in the sender's login and in the subject; an empty action; a null
    // installation; a label that is no object.
    let body = br#"{"number":1,"pull_request":{"number":"1\n2"},"sender":{"login":"a\u0007b"},"action":"","installation":null,"label":"bug"}"#;
    let event = one_event(receive_json("pull_request", body));
    let names: Vec<&str> = event.attributes().iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["specversion", "id", "source", "type", "datacontenttype", "number"]);
}

#[test]
fn numbers_beyond_32_bits_stay_text() {
    let event =
        one_event(receive_json("pull_request", br#"{"number":3000000000,"pull_request":{"number":3000000000}}"#));
    assert_eq!(event.get_str("subject"), Some("3000000000"));
    assert_eq!(event.get("number"), Some(&AttrValue::String("3000000000".to_owned())));
    let event = one_event(receive_json("pull_request", br#"{"number":-7}"#));
    assert_eq!(event.get("number"), Some(&AttrValue::Integer(-7)));
}

#[test]
fn an_invalid_event_is_a_bad_request_not_a_panic() {
    // A tab is a valid header character but no valid attribute character.
    let body = Bytes::from_static(PING);
    let mut headers = headers("ping", Some("application/json"), &body);
    headers.insert("x-github-delivery", HeaderValue::from_static("a\tb"));
    let message = bad_request(webhook(&["ping"]).receive(&headers, &body));
    assert_eq!(
        message,
        "the delivery does not make a valid CloudEvent: invalid attribute 'id': contains a control character"
    );
}

#[test]
fn the_tables_are_well_formed() {
    // `subject` looks events up by binary search.
    for pair in SUBJECTS.windows(2) {
        assert!(pair[0].0 < pair[1].0, "SUBJECTS is not sorted at '{}'", pair[1].0);
    }
    for (i, extension) in EXTENSIONS.iter().enumerate() {
        switchyard_event::model::validate_name(extension.name).unwrap();
        assert!(EXTENSIONS[..i].iter().all(|earlier| earlier.name != extension.name), "{} twice", extension.name);
        if let On::Only(events) = extension.on {
            for event in events {
                assert!(SUBJECTS.iter().any(|(name, _)| name == event), "{}: unknown event '{event}'", extension.name);
            }
        }
    }
}

/// What one fixture must map to, besides `specversion`, `id`, `type` and `datacontenttype`.
struct Expected {
    fixture: &'static str,
    event: &'static str,
    source: &'static str,
    subject: &'static str,
    extensions: &'static [(&'static str, Ext)],
}

/// An expected extension value.
enum Ext {
    S(&'static str),
    B(bool),
    I(i32),
}

#[test]
fn fixtures_map_as_knative_maps_them() {
    use Ext::{B, I, S};
    let hello_world = "https://github.com/Codertocat/Hello-World";
    let cases = [
        Expected {
            fixture: "push.with-installation.json",
            event: "push",
            source: hello_world,
            subject: "6113728f27ae...000000000000",
            extensions: &[
                ("owner", S("Codertocat")),
                ("repository", S("Hello-World")),
                ("sender", S("Codertocat")),
                ("installation", S("1")),
                ("ref", S("refs/tags/simple-tag")),
                ("pusher", S("Codertocat")),
                ("created", B(false)),
                ("deleted", B(true)),
                ("forced", B(false)),
            ],
        },
        Expected {
            fixture: "pull_request.labeled.json",
            event: "pull_request",
            source: hello_world,
            subject: "2",
            extensions: &[
                ("owner", S("Codertocat")),
                ("repository", S("Hello-World")),
                ("sender", S("Codertocat")),
                ("action", S("labeled")),
                ("installation", S("1")),
                ("label", S("bug")),
                ("number", I(2)),
            ],
        },
        Expected {
            fixture: "issues.assigned.json",
            event: "issues",
            source: hello_world,
            subject: "1",
            extensions: &[
                ("owner", S("Codertocat")),
                ("repository", S("Hello-World")),
                ("sender", S("Codertocat")),
                ("action", S("assigned")),
                ("assignee", S("Codertocat")),
            ],
        },
        Expected {
            fixture: "issue_comment.created.json",
            event: "issue_comment",
            source: hello_world,
            subject: "1#issuecomment-492700400",
            extensions: &[
                ("owner", S("Codertocat")),
                ("repository", S("Hello-World")),
                ("sender", S("Codertocat")),
                ("action", S("created")),
            ],
        },
        Expected {
            fixture: "ping.json",
            event: "ping",
            source: "https://github.com/Octocoders/Hello-World",
            subject: "109948940",
            extensions: &[("owner", S("Octocoders")), ("repository", S("Hello-World")), ("sender", S("Codertocat"))],
        },
        Expected {
            // An organisation's webhook: no repository, so the declared one, and the owner
            // from the organisation.
            fixture: "ping.with-organization.json",
            event: "ping",
            source: "https://github.com/octo/hello",
            subject: "109948940",
            extensions: &[("owner", S("Octocoders")), ("sender", S("Codertocat"))],
        },
        Expected {
            fixture: "create.json",
            event: "create",
            source: hello_world,
            subject: "tag",
            extensions: &[
                ("owner", S("Codertocat")),
                ("repository", S("Hello-World")),
                ("sender", S("Codertocat")),
                ("ref", S("simple-tag")),
            ],
        },
        Expected {
            // The release's name is "": no `release` extension.
            fixture: "release.published.json",
            event: "release",
            source: hello_world,
            subject: "0.0.1",
            extensions: &[
                ("owner", S("Codertocat")),
                ("repository", S("Hello-World")),
                ("sender", S("Codertocat")),
                ("action", S("published")),
            ],
        },
        Expected {
            fixture: "status.json",
            event: "status",
            source: hello_world,
            subject: "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
            extensions: &[
                ("owner", S("Codertocat")),
                ("repository", S("Hello-World")),
                ("sender", S("Codertocat")),
                ("state", S("success")),
                ("name", S("Codertocat/Hello-World")),
                ("context", S("default")),
            ],
        },
        Expected {
            fixture: "workflow_run.completed.json",
            event: "workflow_run",
            source: "https://github.com/octo-org/octo-repo",
            subject: "289782451",
            extensions: &[
                ("owner", S("octo-org")),
                ("repository", S("octo-repo")),
                ("sender", S("Codertocat")),
                ("action", S("completed")),
            ],
        },
        Expected {
            fixture: "installation.created.json",
            event: "installation",
            source: "https://github.com/octo/hello",
            subject: "957387",
            extensions: &[("sender", S("Codertocat")), ("action", S("created")), ("installation", S("957387"))],
        },
        Expected {
            fixture: "gollum.json",
            event: "gollum",
            source: hello_world,
            subject: "Home",
            extensions: &[("owner", S("Codertocat")), ("repository", S("Hello-World")), ("sender", S("rachmari"))],
        },
    ];
    for case in cases {
        let payload = fixture(case.fixture);
        assert_parsed_as_whole(case.event, &payload, case.fixture);
        let event = one_event(receive_json(case.event, &payload));
        let mut expected = vec![
            ("specversion".to_owned(), AttrValue::String("1.0".to_owned())),
            ("id".to_owned(), AttrValue::String(DELIVERY_ID.to_owned())),
            ("source".to_owned(), AttrValue::String(case.source.to_owned())),
            ("type".to_owned(), AttrValue::String(format!("dev.knative.source.github.{}", case.event))),
            ("subject".to_owned(), AttrValue::String(case.subject.to_owned())),
            ("datacontenttype".to_owned(), AttrValue::String("application/json".to_owned())),
        ];
        expected.extend(case.extensions.iter().map(|(name, value)| {
            let value = match value {
                S(s) => AttrValue::String((*s).to_owned()),
                B(b) => AttrValue::Bool(*b),
                I(i) => AttrValue::Integer(*i),
            };
            ((*name).to_owned(), value)
        }));
        assert_eq!(event.attributes(), expected, "{}", case.fixture);
        assert_eq!(event.data(), Some(&Data { form: DataForm::Json, bytes: Bytes::from(payload) }), "{}", case.fixture);
    }
}

/// octokit's examples, all 60 event types, when the shared reference folder is there; the
/// crate's tests must pass without it.
fn reference_payloads() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference/github-webhooks/payloads");
    path.is_dir().then_some(path)
}

#[test]
fn every_reference_payload_makes_one_event_with_a_subject() {
    let Some(root) = reference_payloads() else { return };
    let mut event_types = 0;
    let mut payloads = 0;
    for folder in std::fs::read_dir(&root).unwrap() {
        let folder = folder.unwrap().path();
        let event_name = folder.file_name().unwrap().to_str().unwrap().to_owned();
        let receiver = webhook(&[&event_name]);
        event_types += 1;
        for file in std::fs::read_dir(&folder).unwrap() {
            let file = file.unwrap().path();
            let payload = std::fs::read(&file).unwrap();
            let at = file.display().to_string();
            assert_parsed_as_whole(&event_name, &payload, &at);
            let json = one_event(receive_json(&event_name, &payload));
            let form_body = form(&payload);
            let form = one_event(receiver.receive(
                &headers(&event_name, Some("application/x-www-form-urlencoded"), &form_body),
                &Bytes::from(form_body),
            ));
            assert_eq!(json, form, "{at}");
            assert_eq!(json.data(), Some(&Data { form: DataForm::Json, bytes: Bytes::from(payload) }), "{at}");
            assert_eq!(json.ty(), format!("dev.knative.source.github.{event_name}"), "{at}");
            assert_eq!(json.id(), DELIVERY_ID, "{at}");
            assert!(json.source().starts_with("https://github.com/"), "{at}");
            assert!(json.get_str("subject").is_some_and(|subject| !subject.is_empty()), "{at}: no subject");
            payloads += 1;
        }
    }
    // The folder holds 273 examples of 60 event types; fewer means it was not read.
    assert!(event_types >= 60 && payloads >= 273, "{event_types} event types, {payloads} payloads");
}
