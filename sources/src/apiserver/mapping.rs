//! ApiServerSource's events, exactly as Knative's adapter builds them
//! (`knative.dev/eventing/pkg/adapter/apiserver/events/events.go`):
//!
//! | attribute | value |
//! |---|---|
//! | `type` | `dev.knative.apiserver.{ref,resource}.{add,update,delete}` |
//! | `source` | the API server's URL (`https://127.0.0.1:16443` for the local one) |
//! | `subject` | `/apis/<apiVersion>/namespaces/<namespace>/<plural>/<name>` (Knative's `createSelfLink`) |
//! | `kind`, `name`, `namespace`, `apiversion` | the object's (extensions) |
//! | `datacontenttype` | `application/json` |
//! | data | Reference mode: `{"kind","namespace","name","apiVersion"}`; Resource mode: the object |
//! | `time` | when the change was seen (Knative's client sets it at sending) |
//!
//! The id is Switchyard's: Knative sends a random UUID; here it is derived from the source, the
//! object's uid and resource version and the event type, so that an event sent again after a
//! crash carries the same id.

use bytes::Bytes;
use serde::Serialize;
use switchyard_event::{AttrValue, Data, DataForm, Event, EventError};

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It appeared (created, or now matching the selector).
    Add,
    /// It changed.
    Update,
    /// It went away (deleted, or no longer matching the selector).
    Delete,
}

impl Change {
    fn verb(self) -> &'static str {
        match self {
            Change::Add => "add",
            Change::Update => "update",
            Change::Delete => "delete",
        }
    }

    /// The event type in `mode` (`resource`: Resource mode).
    pub fn event_type(self, resource: bool) -> String {
        format!("dev.knative.apiserver.{}.{}", if resource { "resource" } else { "ref" }, self.verb())
    }
}

/// An object as an event names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectId<'a> {
    /// `v1`, `apps/v1`.
    pub api_version: &'a str,
    /// `ConfigMap`.
    pub kind: &'a str,
    /// The object's name.
    pub name: &'a str,
    /// Its namespace; empty for a cluster-scoped object.
    pub namespace: &'a str,
    /// Its uid.
    pub uid: &'a str,
    /// The resource version the event is about.
    pub resource_version: &'a str,
}

/// Knative's Reference-mode data: a `corev1.ObjectReference` as Go marshals it (fields in that
/// struct's order, empty ones left out).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ObjectReference<'a> {
    kind: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    namespace: &'a str,
    name: &'a str,
    api_version: &'a str,
}

/// Knative's `createSelfLink`: the plural is guessed from the kind as Kubernetes'
/// `meta.UnsafeGuessKindToResource` does (not discovered), and an `apiVersion` with a `.` but
/// no `/` gets `/versionUnknown`. A cluster-scoped object keeps the empty `namespaces//`.
pub fn subject(api_version: &str, kind: &str, namespace: &str, name: &str) -> String {
    let version = if api_version.contains('.') && !api_version.contains('/') {
        format!("{api_version}/versionUnknown")
    } else {
        api_version.to_owned()
    };
    format!("/apis/{version}/namespaces/{namespace}/{}/{name}", guess_plural(kind))
}

/// `meta.UnsafeGuessKindToResource`: lower case; `endpoints` stays; `…s` → `…ses`; `…y` →
/// `…ies`; otherwise `…s`.
fn guess_plural(kind: &str) -> String {
    let singular = kind.to_lowercase();
    if singular.is_empty() || singular.ends_with("endpoints") {
        return singular;
    }
    if singular.ends_with('s') {
        return format!("{singular}es");
    }
    if let Some(stem) = singular.strip_suffix('y') {
        return format!("{stem}ies");
    }
    format!("{singular}s")
}

/// The id of the event for `change` of `object` sent by the source with uid `source_uid`:
/// a UUID (v8) from a SHA-256 of them, the same every time the same change is sent.
pub fn event_id(source_uid: &str, object: &ObjectId<'_>, change: Change) -> String {
    let key = format!("{source_uid}/{}/{}/{}", object.uid, object.resource_version, change.verb());
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest.as_ref()[..16]);
    uuid::Uuid::new_v8(bytes).to_string()
}

/// The event for `change` of `object`; `whole` is the object (Resource mode) or `None`
/// (Reference mode); `time` is RFC 3339.
pub fn event(
    source: &str,
    source_uid: &str,
    object: &ObjectId<'_>,
    change: Change,
    whole: Option<&serde_json::Value>,
    time: &str,
) -> Result<Event, EventError> {
    let data = match whole {
        Some(whole) => go_json(whole),
        None => {
            let reference = ObjectReference {
                kind: object.kind,
                namespace: object.namespace,
                name: object.name,
                api_version: object.api_version,
            };
            serde_json::to_vec(&reference).unwrap_or_default()
        }
    };
    let string = |value: &str| AttrValue::String(value.to_owned());
    let attributes = vec![
        ("specversion".to_owned(), string("1.0")),
        ("id".to_owned(), AttrValue::String(event_id(source_uid, object, change))),
        ("source".to_owned(), string(source)),
        ("type".to_owned(), AttrValue::String(change.event_type(whole.is_some()))),
        (
            "subject".to_owned(),
            AttrValue::String(subject(object.api_version, object.kind, object.namespace, object.name)),
        ),
        ("time".to_owned(), string(time)),
        ("datacontenttype".to_owned(), string("application/json")),
        ("kind".to_owned(), string(object.kind)),
        ("apiversion".to_owned(), string(object.api_version)),
        ("name".to_owned(), string(object.name)),
        ("namespace".to_owned(), string(object.namespace)),
    ];
    Event::new(attributes, Some(Data { form: DataForm::Json, bytes: Bytes::from(data) }))
}

/// `value` as Go's `encoding/json` writes an unstructured object: object keys sorted, compact,
/// and `<`, `>`, `&`, U+2028, U+2029 escaped (they occur only inside strings, so replacing them
/// in the text is exact).
pub fn go_json(value: &serde_json::Value) -> Vec<u8> {
    let text = serde_json::to_string(&sorted(value)).unwrap_or_default();
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => escaped.push_str("\\u003c"),
            '>' => escaped.push_str("\\u003e"),
            '&' => escaped.push_str("\\u0026"),
            '\u{2028}' => escaped.push_str("\\u2028"),
            '\u{2029}' => escaped.push_str("\\u2029"),
            c => escaped.push(c),
        }
    }
    escaped.into_bytes()
}

/// A copy of `value` with every object's keys in order (the workspace's `serde_json` keeps
/// insertion order).
fn sorted(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<(&String, &serde_json::Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k.clone(), sorted(v))).collect())
        }
        serde_json::Value::Array(items) => serde_json::Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_map() -> ObjectId<'static> {
        ObjectId {
            api_version: "v1",
            kind: "ConfigMap",
            name: "settings",
            namespace: "shop",
            uid: "0b6a5f5e-1111-2222-3333-444455556666",
            resource_version: "42",
        }
    }

    #[test]
    fn subjects_are_knatives_self_links() {
        assert_eq!(subject("v1", "ConfigMap", "ns", "cm"), "/apis/v1/namespaces/ns/configmaps/cm");
        assert_eq!(subject("apps/v1", "Deployment", "ns", "d"), "/apis/apps/v1/namespaces/ns/deployments/d");
        assert_eq!(subject("events.k8s.io/v1", "Event", "ns", "e"), "/apis/events.k8s.io/v1/namespaces/ns/events/e");
        assert_eq!(subject("v1", "Endpoints", "ns", "e"), "/apis/v1/namespaces/ns/endpoints/e");
        assert_eq!(subject("v1", "Ingress", "ns", "i"), "/apis/v1/namespaces/ns/ingresses/i");
        assert_eq!(subject("v1", "NetworkPolicy", "ns", "p"), "/apis/v1/namespaces/ns/networkpolicies/p");
        assert_eq!(subject("v1", "Namespace", "", "shop"), "/apis/v1/namespaces//namespaces/shop");
        assert_eq!(
            subject("example.com", "Widget", "ns", "w"),
            "/apis/example.com/versionUnknown/namespaces/ns/widgets/w"
        );
    }

    #[test]
    fn reference_events_carry_knatives_attributes_and_reference() {
        let event =
            event("https://127.0.0.1:16443", "src-uid", &config_map(), Change::Add, None, "2026-12-04T18:00:00Z")
                .unwrap();
        assert_eq!(event.ty(), "dev.knative.apiserver.ref.add");
        assert_eq!(event.source(), "https://127.0.0.1:16443");
        assert_eq!(event.get_str("subject"), Some("/apis/v1/namespaces/shop/configmaps/settings"));
        for (name, value) in [("kind", "ConfigMap"), ("apiversion", "v1"), ("name", "settings"), ("namespace", "shop")]
        {
            assert_eq!(event.get_str(name), Some(value), "{name}");
        }
        assert_eq!(event.datacontenttype(), Some("application/json"));
        assert_eq!(
            event.data().unwrap().bytes.as_ref(),
            br#"{"kind":"ConfigMap","namespace":"shop","name":"settings","apiVersion":"v1"}"#
        );
        let cluster = ObjectId { kind: "Namespace", namespace: "", name: "shop", ..config_map() };
        let event = super::event("s", "u", &cluster, Change::Delete, None, "2026-12-04T18:00:00Z").unwrap();
        assert_eq!(event.ty(), "dev.knative.apiserver.ref.delete");
        assert_eq!(event.data().unwrap().bytes.as_ref(), br#"{"kind":"Namespace","name":"shop","apiVersion":"v1"}"#);
        assert_eq!(event.get_str("namespace"), Some(""));
    }

    #[test]
    fn resource_events_carry_the_object_as_go_writes_it() {
        let object = serde_json::json!({
            "metadata": {"name": "settings", "namespace": "shop"},
            "kind": "ConfigMap", "apiVersion": "v1",
            "data": {"z": "<a & b>", "a": "1"},
        });
        let event = event("s", "u", &config_map(), Change::Update, Some(&object), "2026-12-04T18:00:00Z").unwrap();
        assert_eq!(event.ty(), "dev.knative.apiserver.resource.update");
        assert_eq!(
            std::str::from_utf8(&event.data().unwrap().bytes).unwrap(),
            concat!(
                r#"{"apiVersion":"v1","data":{"a":"1","z":"\u003ca \u0026 b\u003e"},"kind":"ConfigMap","#,
                r#""metadata":{"name":"settings","namespace":"shop"}}"#
            )
        );
    }

    #[test]
    fn ids_are_the_same_for_the_same_change_only() {
        let object = config_map();
        let id = event_id("src", &object, Change::Add);
        assert_eq!(id, event_id("src", &object, Change::Add));
        assert_ne!(id, event_id("other-source", &object, Change::Add));
        assert_ne!(id, event_id("src", &object, Change::Update));
        assert_ne!(id, event_id("src", &ObjectId { resource_version: "43", ..object.clone() }, Change::Add));
        assert!(uuid::Uuid::parse_str(&id).is_ok());
    }
}
