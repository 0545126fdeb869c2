//! A GitHub webhook delivery turned into a CloudEvent, following Knative's GitHubSource
//! (`knative-extensions/eventing-github`, `pkg/common/events.go`).
//!
//! A delivery goes through, in this order:
//! 1. the signature: `X-Hub-Signature-256` must be the HMAC-SHA256 of the raw body with the
//!    source's secret, checked before anything else is read (401);
//! 2. the headers `X-GitHub-Event` and `X-GitHub-Delivery` (400);
//! 3. the event name: one not in the source's `eventTypes` (a `ping` included) is answered 200
//!    and dropped, so that GitHub does not retry it;
//! 4. the body: `application/json`, or GitHub's `application/x-www-form-urlencoded` form whose
//!    `payload` field holds the JSON (415 for other media types, 400 for a payload that is not a
//!    JSON object); all of it is checked, but only the members the mapping reads are built;
//! 5. the mapping: `type` `dev.knative.source.github.<event>`, `source` the repository's URL,
//!    `id` the delivery, `subject` and extensions from two tables, `SUBJECTS` (event name →
//!    which field) and `EXTENSIONS` (extension → which field, on which events).
//!
//! Unlike Knative, which re-encodes the payload it parsed, the data is the payload's bytes
//! exactly as GitHub sent them.
//!
//! Pure code: no I/O, and no input makes it panic (`fuzz/fuzz_targets/github_webhook.rs`).

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;

use bytes::Bytes;
use http::header::{HeaderName, CONTENT_TYPE};
use ring::hmac;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use switchyard_event::model::SPEC_VERSION;
use switchyard_event::{AttrValue, Data, DataForm, Event};
use url::form_urlencoded;

use crate::{Receipt, Webhook, WebhookError};

/// Knative's event type prefix; the GitHub event name follows.
const TYPE_PREFIX: &str = "dev.knative.source.github.";

/// Where GitHub-style repository URLs start: `source` is this and `owner/repository`.
const SOURCE_PREFIX: &str = "https://github.com/";

const SIGNATURE_PREFIX: &[u8] = b"sha256=";

/// The repository an event is about, `owner/repository`: the `source` names it.
const FULL_NAME: &str = "/repository/full_name";

/// The two media types GitHub sends, as the webhook's "Content type" setting names them.
const JSON: &str = "application/json";
const FORM: &str = "application/x-www-form-urlencoded";

/// A header GitHub sets on every delivery.
struct GitHubHeader {
    name: HeaderName,
    /// As GitHub's documentation spells it, for messages.
    shown: &'static str,
    /// What GitHub puts in it, for messages.
    holds: &'static str,
}

const SIGNATURE: GitHubHeader = GitHubHeader {
    name: HeaderName::from_static("x-hub-signature-256"),
    shown: "X-Hub-Signature-256",
    holds: "the HMAC-SHA256 of the body with the webhook secret",
};
const EVENT: GitHubHeader =
    GitHubHeader { name: HeaderName::from_static("x-github-event"), shown: "X-GitHub-Event", holds: "the event name" };
const DELIVERY: GitHubHeader = GitHubHeader {
    name: HeaderName::from_static("x-github-delivery"),
    shown: "X-GitHub-Delivery",
    holds: "the delivery id",
};

/// What the `subject` of an event is.
#[derive(Debug, Clone, Copy)]
enum Subject {
    /// The string or number at a JSON pointer.
    At(&'static str),
    /// What follows the last `/` of the string at a JSON pointer: Knative's `lastPathPortion`,
    /// which keeps `6113728f27ae...000000000000` of a compare URL and `1#issuecomment-492700400`
    /// of a comment's.
    LastPathPortion(&'static str),
    /// The `field` of every element of the array at `array`, joined with `,`.
    Joined { array: &'static str, field: &'static str },
}

/// The `subject` of each GitHub event, sorted by event name (looked up by binary search).
///
/// The entries without a comment are Knative's (`SubjectAndExtensionsFromGitHubEvent` in
/// `pkg/common/events.go`); the others are event types Knative does not map, given by analogy
/// the stable identifier of the thing the event is about. An absent or empty value leaves the
/// event without a subject.
const SUBJECTS: &[(&str, Subject)] = {
    use Subject::{At, Joined, LastPathPortion};
    &[
        ("branch_protection_rule", At("/rule/id")), // the rule, like team → team.id
        ("check_run", At("/check_run/id")),
        ("check_suite", At("/check_suite/id")),
        ("code_scanning_alert", At("/alert/number")), // the alert's number in its repository
        ("commit_comment", LastPathPortion("/comment/html_url")),
        ("create", At("/ref_type")),
        ("delete", At("/ref_type")),
        ("dependabot_alert", At("/alert/number")),
        ("deploy_key", At("/key/id")),
        ("deployment", At("/deployment/id")),
        ("deployment_review", At("/workflow_run/id")), // the run waiting for the review
        ("deployment_status", At("/deployment/id")),
        ("discussion", At("/discussion/number")),  // like issues → issue.number
        ("discussion_comment", At("/comment/id")), // like pull_request_review_comment
        ("fork", At("/forkee/id")),
        ("github_app_authorization", At("/sender/login")), // the user who revoked the app
        ("gollum", Joined { array: "/pages", field: "/page_name" }),
        ("installation", At("/installation/id")),
        ("installation_repositories", At("/installation/id")),
        // The names GitHub Apps' events had before "installation" (Knative takes both).
        ("integration_installation", At("/installation/id")),
        ("integration_installation_repositories", At("/installation/id")),
        ("issue_comment", LastPathPortion("/comment/html_url")),
        ("issues", At("/issue/number")),
        ("label", At("/label/name")),
        ("marketplace_purchase", At("/marketplace_purchase/account/login")), // the purchasing account
        ("member", At("/member/id")),
        ("membership", At("/member/id")),
        ("merge_group", At("/merge_group/head_sha")), // the commit the checks run on
        ("meta", At("/hook_id")),                     // the deleted webhook, like ping
        ("milestone", At("/milestone/number")),
        ("org_block", At("/action")),
        ("organization", At("/action")),
        ("package", At("/package/id")),
        ("page_build", At("/id")),
        ("ping", At("/hook_id")),
        ("project", At("/action")),
        ("project_card", At("/action")),
        ("project_column", At("/action")),
        ("projects_v2_item", At("/projects_v2_item/id")),
        ("public", At("/repository/id")),
        ("pull_request", At("/pull_request/number")),
        ("pull_request_review", At("/review/id")),
        ("pull_request_review_comment", At("/comment/id")),
        ("pull_request_review_thread", At("/thread/node_id")), // a thread has no numeric id
        ("push", LastPathPortion("/compare")),
        ("registry_package", At("/registry_package/id")),
        ("release", At("/release/tag_name")),
        ("repository", At("/repository/id")),
        ("repository_dispatch", At("/action")), // the client's event_type, as GitHub sends it
        ("repository_import", At("/status")),   // the payload names nothing else
        ("repository_vulnerability_alert", At("/alert/id")),
        ("secret_scanning_alert", At("/alert/number")),
        ("security_advisory", At("/security_advisory/ghsa_id")),
        ("sponsorship", At("/sponsorship/node_id")), // a sponsorship has no numeric id
        ("star", At("/repository/id")),              // like watch
        ("status", At("/sha")),
        ("team", At("/team/id")),
        ("team_add", At("/repository/id")),
        ("watch", At("/repository/id")),
        ("workflow_dispatch", At("/workflow")), // the workflow file's path
        ("workflow_job", At("/workflow_job/id")),
        ("workflow_run", At("/workflow_run/id")),
    ]
};

/// Which events an extension is set on.
#[derive(Debug, Clone, Copy)]
enum On {
    Every,
    Only(&'static [&'static str]),
}

/// The attribute type of an extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A string or a number (as decimal text: GitHub ids exceed CloudEvents' 32-bit Integer).
    Text,
    /// An Integer when the number fits 32 bits, else as `Text`.
    Integer,
    /// A Boolean; any other JSON value is skipped.
    Bool,
}

/// An extension attribute taken from the payload.
#[derive(Debug, Clone, Copy)]
struct Extension {
    name: &'static str,
    on: On,
    /// JSON pointers, tried in order: the first present and non-empty value is taken.
    from: &'static [&'static str],
    kind: Kind,
}

/// Every extension, in the order they are set: the generic ones Knative sets on most events
/// (here on every event that has the field), then Knative's per-event ones
/// (`pkg/common/events.go`). Absent, null or empty values are skipped, and so are strings with
/// a control character, which a CloudEvent cannot carry: a delivery is never refused for one.
const EXTENSIONS: &[Extension] = {
    use Kind::{Bool, Integer, Text};
    use On::{Every, Only};
    const fn extension(name: &'static str, on: On, from: &'static [&'static str], kind: Kind) -> Extension {
        Extension { name, on, from, kind }
    }
    &[
        // An organisation's events (membership, organization, …) have no repository.
        extension("owner", Every, &["/repository/owner/login", "/organization/login"], Text),
        extension("repository", Every, &["/repository/name"], Text),
        extension("sender", Every, &["/sender/login"], Text),
        extension("action", Every, &["/action"], Text),
        extension("installation", Every, &["/installation/id"], Text),
        extension("ref", Only(&["create", "delete", "push"]), &["/ref"], Text),
        extension("label", Only(&["issues", "label", "pull_request"]), &["/label/name"], Text),
        extension("assignee", Only(&["issues", "pull_request"]), &["/assignee/login"], Text),
        extension("number", Only(&["pull_request"]), &["/number"], Integer),
        extension("review", Only(&["pull_request_review"]), &["/review/state"], Text),
        extension("pusher", Only(&["push"]), &["/pusher/name"], Text),
        extension("created", Only(&["push"]), &["/created"], Bool),
        extension("deleted", Only(&["push"]), &["/deleted"], Bool),
        extension("forced", Only(&["push"]), &["/forced"], Bool),
        extension("release", Only(&["release"]), &["/release/name"], Text),
        extension("state", Only(&["status"]), &["/state"], Text),
        extension("name", Only(&["status"]), &["/name"], Text),
        extension("context", Only(&["status"]), &["/context"], Text),
        extension("scope", Only(&["membership"]), &["/scope"], Text),
    ]
};

/// What a GitHubSource checks and maps a delivery with.
pub struct GitHubWebhook {
    key: hmac::Key,
    event_types: BTreeSet<String>,
    owner_and_repository: String,
}

impl GitHubWebhook {
    /// A receiver that verifies `X-Hub-Signature-256` with `secret`, takes the GitHub events
    /// named in `event_types`, and names events without a repository after
    /// `owner_and_repository`.
    pub fn new(secret: Vec<u8>, event_types: BTreeSet<String>, owner_and_repository: String) -> GitHubWebhook {
        GitHubWebhook { key: hmac::Key::new(hmac::HMAC_SHA256, &secret), event_types, owner_and_repository }
    }

    fn verify_signature(&self, headers: &http::HeaderMap, body: &[u8]) -> Result<(), WebhookError> {
        let Some(value) = headers.get(&SIGNATURE.name) else {
            return Err(WebhookError::Unauthorized(format!(
                "missing {} header: sign the payload with the source's secret",
                SIGNATURE.shown
            )));
        };
        let value = value.as_bytes();
        let Some(hex) = value.strip_prefix(SIGNATURE_PREFIX) else {
            return Err(WebhookError::Unauthorized(format!(
                "{} '{}' does not start with 'sha256=': it must hold {}",
                SIGNATURE.shown,
                shown(value),
                SIGNATURE.holds
            )));
        };
        let Some(digest) = decode_digest(hex) else {
            return Err(WebhookError::Unauthorized(format!(
                "{} '{}' is not 'sha256=' followed by 64 hex digits",
                SIGNATURE.shown,
                shown(value)
            )));
        };
        // Constant time: a comparison that stops at the first wrong byte would tell an attacker
        // how much of a forged signature is right.
        hmac::verify(&self.key, body, &digest).map_err(|_| {
            WebhookError::Unauthorized(format!(
                "{} does not match the payload: sign the raw body with the source's secret",
                SIGNATURE.shown
            ))
        })
    }

    /// The CloudEvent of a delivery whose event this source takes.
    fn event(&self, event_name: &str, delivery: &str, payload: &Value, data: Bytes) -> Result<Event, WebhookError> {
        let string = |value: &str| AttrValue::String(value.to_owned());
        let repository = payload.pointer(FULL_NAME).and_then(Value::as_str).filter(|name| is_text(name));
        let mut attributes = Vec::with_capacity(6 + EXTENSIONS.len());
        attributes.push(("specversion".to_owned(), string(SPEC_VERSION)));
        attributes.push(("id".to_owned(), string(delivery)));
        attributes.push((
            "source".to_owned(),
            AttrValue::String(format!("{SOURCE_PREFIX}{}", repository.unwrap_or(&self.owner_and_repository))),
        ));
        attributes.push(("type".to_owned(), AttrValue::String(format!("{TYPE_PREFIX}{event_name}"))));
        if let Some(subject) = subject(event_name, payload) {
            attributes.push(("subject".to_owned(), AttrValue::String(subject)));
        }
        attributes.push(("datacontenttype".to_owned(), string(JSON)));
        for extension in EXTENSIONS.iter().filter(|extension| extension.is_on(event_name)) {
            if let Some(value) = extension.value(payload) {
                attributes.push((extension.name.to_owned(), value));
            }
        }
        Event::new(attributes, Some(Data { form: DataForm::Json, bytes: data })).map_err(|error| {
            WebhookError::BadRequest(format!("the delivery does not make a valid CloudEvent: {error}"))
        })
    }
}

impl Webhook for GitHubWebhook {
    fn receive(&self, headers: &http::HeaderMap, body: &Bytes) -> Result<Receipt, WebhookError> {
        // Nothing unauthenticated is read, not even the event name.
        self.verify_signature(headers, body)?;
        let event_name = required(headers, &EVENT)?;
        let delivery = required(headers, &DELIVERY)?;
        if !self.event_types.contains(event_name) {
            // GitHub pings a webhook when it is created; answered 200 so that it shows as working.
            let why = if event_name == "ping" {
                "ping received".to_owned()
            } else {
                format!("GitHub event '{event_name}' is not in this source's eventTypes")
            };
            return Ok(Receipt::Ignored(why));
        }
        let data = payload(headers, body)?;
        let payload = parse(&data, &wanted(event_name))?;
        Ok(Receipt::Events(vec![self.event(event_name, delivery, &payload, data)?]))
    }
}

impl Extension {
    fn is_on(&self, event_name: &str) -> bool {
        match self.on {
            On::Every => true,
            On::Only(events) => events.contains(&event_name),
        }
    }

    fn value(&self, payload: &Value) -> Option<AttrValue> {
        self.from.iter().find_map(|pointer| {
            let value = payload.pointer(pointer)?;
            match (self.kind, value) {
                (Kind::Bool, Value::Bool(b)) => Some(AttrValue::Bool(*b)),
                (Kind::Bool, _) => None,
                (Kind::Integer, Value::Number(n)) => match n.as_i64().and_then(|n| i32::try_from(n).ok()) {
                    Some(n) => Some(AttrValue::Integer(n)),
                    None => text(value).map(AttrValue::String),
                },
                (Kind::Integer | Kind::Text, _) => text(value).map(AttrValue::String),
            }
        })
    }
}

impl Subject {
    /// What the rule reads: its pointer, or the whole array whose elements it joins.
    fn pointer(self) -> &'static str {
        match self {
            Subject::At(pointer) | Subject::LastPathPortion(pointer) => pointer,
            Subject::Joined { array, .. } => array,
        }
    }

    /// The rule of `event_name` in `SUBJECTS`.
    fn of(event_name: &str) -> Option<Subject> {
        let at = SUBJECTS.binary_search_by(|(name, _)| name.cmp(&event_name)).ok()?;
        SUBJECTS.get(at).map(|(_, rule)| *rule)
    }
}

/// Every JSON pointer the mapping of `event_name` reads: what parsing keeps of the payload.
fn wanted(event_name: &str) -> Vec<&'static str> {
    let mut pointers = vec![FULL_NAME];
    pointers.extend(Subject::of(event_name).map(Subject::pointer));
    for extension in EXTENSIONS.iter().filter(|extension| extension.is_on(event_name)) {
        pointers.extend_from_slice(extension.from);
    }
    pointers
}

/// The event's `subject` by `SUBJECTS`; `None` for an event name not in the table, or an
/// absent or empty value.
fn subject(event_name: &str, payload: &Value) -> Option<String> {
    let subject = match Subject::of(event_name)? {
        Subject::At(pointer) => text(payload.pointer(pointer)?)?,
        Subject::LastPathPortion(pointer) => {
            let url = payload.pointer(pointer)?.as_str()?;
            url.rsplit_once('/').map(|(_, last)| last.to_owned())?
        }
        Subject::Joined { array, field } => {
            let elements = payload.pointer(array)?.as_array()?;
            let parts: Vec<String> = elements.iter().filter_map(|element| text(element.pointer(field)?)).collect();
            parts.join(",")
        }
    };
    Some(subject).filter(|subject| is_text(subject))
}

/// A JSON string or number as attribute text; `None` for other values, and for strings that an
/// attribute cannot hold (empty, or with a control character).
fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if is_text(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Whether `Event::new` takes this as a non-empty attribute string.
fn is_text(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(char::is_control)
}

/// The value of a header GitHub always sends: present, non-empty, ASCII.
fn required<'h>(headers: &'h http::HeaderMap, header: &GitHubHeader) -> Result<&'h str, WebhookError> {
    let value = headers.get(&header.name).map(|value| value.as_bytes()).filter(|value| !value.is_empty());
    let Some(value) = value else {
        return Err(WebhookError::BadRequest(format!(
            "missing {} header: GitHub sends {} in it",
            header.shown, header.holds
        )));
    };
    std::str::from_utf8(value).ok().filter(|value| value.is_ascii()).ok_or_else(|| {
        WebhookError::BadRequest(format!("{} '{}' is not ASCII: it holds {}", header.shown, shown(value), header.holds))
    })
}

/// The payload bytes of the body, by its media type.
fn payload(headers: &http::HeaderMap, body: &Bytes) -> Result<Bytes, WebhookError> {
    // `; charset=utf-8` and other parameters do not change how the body is read.
    let media_type = headers
        .get(CONTENT_TYPE)
        .map(|value| value.as_bytes().split(|&b| b == b';').next().unwrap_or_default().trim_ascii())
        .filter(|media_type| !media_type.is_empty());
    match media_type {
        // Some senders omit the header; a JSON object cannot be mistaken for a form.
        None if body.trim_ascii_start().starts_with(b"{") => Ok(body.clone()),
        None => Err(WebhookError::BadRequest(format!(
            "missing Content-Type header, and the body is not a JSON object: send {JSON} or {FORM}"
        ))),
        Some(media_type) if media_type.eq_ignore_ascii_case(JSON.as_bytes()) => Ok(body.clone()),
        Some(media_type) if media_type.eq_ignore_ascii_case(FORM.as_bytes()) => form_payload(body),
        Some(media_type) => Err(WebhookError::UnsupportedMediaType(format!(
            "unsupported Content-Type '{}': GitHub webhooks send {JSON} or {FORM}",
            shown(media_type)
        ))),
    }
}

/// The payload, which must be a JSON object, as a `Value` holding only the members on the way to
/// `wanted` (see `Pruned`).
fn parse(data: &[u8], wanted: &[&str]) -> Result<Value, WebhookError> {
    // Skipped strings are checked as JSON, not as UTF-8: check the whole payload once.
    std::str::from_utf8(data)
        .map_err(|error| WebhookError::BadRequest(format!("the payload is not UTF-8: {error}")))?;
    let mut deserializer = serde_json::Deserializer::from_slice(data);
    let payload = Pruned { pointers: wanted }
        .deserialize(&mut deserializer)
        .and_then(|payload| deserializer.end().map(|()| payload))
        .map_err(|error| WebhookError::BadRequest(format!("the payload is not JSON: {error}")))?;
    let kind = match payload {
        Value::Object(_) => return Ok(payload),
        Value::Array(_) => "an array",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        Value::Null => "null",
    };
    Err(WebhookError::BadRequest(format!("the payload is {kind}, not a JSON object")))
}

/// Parses JSON into a `Value` that holds only the members on the way to `pointers`; every other
/// member is checked as JSON and skipped, never built. Building the whole tree took three
/// quarters of the time of a delivery, and a payload can be 25 MB.
struct Pruned<'a> {
    /// What is wanted of this value, as JSON pointers relative to it.
    pointers: &'a [&'a str],
}

impl<'de> DeserializeSeed<'de> for Pruned<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Pruned<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(value.into())
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(value.into())
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(value.into())
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(value.into())
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(value.into())
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut elements: A) -> Result<Value, A::Error> {
        // No pointer of the tables goes through an array (`Subject::Joined` keeps it whole).
        while elements.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Value::Array(Vec::new()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        let mut below = Vec::new();
        while let Some(key) = members.next_key_seed(Key)? {
            below.clear();
            let mut whole = false;
            for pointer in self.pointers {
                match pointer.strip_prefix('/').and_then(|pointer| pointer.strip_prefix(&*key)) {
                    Some("") => whole = true,
                    Some(rest) if rest.starts_with('/') => below.push(rest),
                    _ => {}
                }
            }
            if whole {
                object.insert(key.into_owned(), members.next_value()?);
            } else if !below.is_empty() {
                object.insert(key.into_owned(), members.next_value_seed(Pruned { pointers: &below })?);
            } else {
                members.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Value::Object(object))
    }
}

/// An object's key, borrowed from the payload unless it has escapes: most keys are skipped, and
/// need no copy.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Cow<'de, str>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(key))
    }

    fn visit_str<E>(self, key: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(key.to_owned()))
    }

    fn visit_string<E>(self, key: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(key))
    }
}

/// The `payload` field of GitHub's form encoding, decoded.
fn form_payload(body: &[u8]) -> Result<Bytes, WebhookError> {
    let mut payloads = form_urlencoded::parse(body).filter(|(name, _)| name == "payload").map(|(_, value)| value);
    match (payloads.next(), payloads.next()) {
        (Some(payload), None) => Ok(Bytes::from(payload.into_owned())),
        (None, _) => Err(WebhookError::BadRequest(format!(
            "the {FORM} body has no 'payload' field: GitHub sends the JSON payload in it"
        ))),
        // Which one would GitHub have meant? Neither: it sends one.
        (Some(_), Some(_)) => {
            Err(WebhookError::BadRequest(format!("the {FORM} body has more than one 'payload' field")))
        }
    }
}

/// `sha256=`'s 64 hex digits (either case) as the 32 bytes of the digest.
fn decode_digest(hex: &[u8]) -> Option<[u8; 32]> {
    fn nibble(digit: u8) -> Option<u8> {
        match digit {
            b'0'..=b'9' => Some(digit - b'0'),
            b'a'..=b'f' => Some(digit - b'a' + 10),
            b'A'..=b'F' => Some(digit - b'A' + 10),
            _ => None,
        }
    }
    let mut digest = [0u8; 32];
    if hex.len() != 2 * digest.len() {
        return None;
    }
    for (byte, pair) in digest.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(digest)
}

/// Untrusted bytes quoted in a message: as text, and cut short, since a message that echoes a
/// megabyte helps nobody.
fn shown(bytes: &[u8]) -> String {
    const MAX: usize = 80;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]);
    let text: String = text.chars().map(|c| if c.is_control() { '\u{fffd}' } else { c }).collect();
    if bytes.len() > MAX {
        format!("{text}…")
    } else {
        text
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
