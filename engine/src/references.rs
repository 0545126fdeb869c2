//! Destinations given as a `ref` (Knative's `Destination.ref`, a `KReference`): a trigger's
//! `subscriber` and dead-letter sink (its own, or its broker's that it inherits), a broker's
//! dead-letter sink.
//!
//! A `ref` to a KafkaSink is Switchyard's own and resolves here, to the sink's address on this
//! node (`kafka_sinks`). A `ref` to anything else — a Knative Service, a Broker, any object with
//! `status.address.url` — is an [`External`]: only an API server knows its address, so it is
//! accepted only when the server has one (`Clients::addresses`), and it is resolved there when
//! the trigger starts and again whenever the resolver says an address may have changed. A `uri`
//! given with a `ref` is a path relative to the resolved address, as in Knative.

use switchyard_log::addresses::ObjectRef;
use switchyard_meta::kafka_sink::kafka_sink_name;
use switchyard_meta::resources::{DeliverySpec, Destination, TriggerSpec};
use switchyard_meta::ValidationError;
use switchyard_sources::Sink;

/// The fields of a destination's `ref` (Knative's `KReference`) that Switchyard reads.
const REFERENCE_FIELDS: [&str; 4] = ["apiVersion", "kind", "name", "namespace"];

/// Which destination of a trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Role {
    /// `spec.subscriber`.
    Subscriber,
    /// `spec.delivery.deadLetterSink`, the trigger's own or its broker's.
    DeadLetterSink,
}

/// A destination naming an object only an API server knows the address of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct External {
    /// The destination's field (`spec.subscriber`), for messages.
    pub(crate) field: String,
    /// The object, its namespace defaulted to the referrer's.
    pub(crate) object: ObjectRef,
    /// The destination's `uri`, relative to the object's address.
    pub(crate) path: Option<String>,
}

impl External {
    /// The destination's address once the object's is `resolved`.
    pub(crate) fn address(&self, resolved: &str) -> Result<String, String> {
        Sink::address(resolved, self.path.as_deref())
    }

    /// What a server without an API server answers for this reference.
    pub(crate) fn needs_kubernetes(&self) -> ValidationError {
        ValidationError::field(
            &format!("{}.ref", self.field),
            format!(
                "'{}' objects are resolved through a Kubernetes API server, and this server has none (serve --kubeconfig): give the address as 'uri', or name a KafkaSink",
                self.object.kind
            ),
        )
    }
}

/// The destination's `ref` if it names an object other than a KafkaSink; checks its fields and
/// its `uri`. `field` names the destination (`spec.subscriber`); `namespace` is the referrer's.
pub(crate) fn external(
    destination: &Destination,
    field: &str,
    namespace: &str,
) -> Result<Option<External>, ValidationError> {
    let Some(reference) = destination.r#ref.as_ref() else { return Ok(None) };
    let ref_field = format!("{field}.ref");
    if kafka_sink_name(reference, &ref_field, namespace)?.is_some() {
        return Ok(None);
    }
    let Some(fields) = reference.as_object() else {
        return Err(ValidationError::field(&ref_field, "must be an object: {apiVersion, kind, name}".to_owned()));
    };
    if let Some(other) = fields.keys().find(|key| !REFERENCE_FIELDS.contains(&key.as_str())) {
        return Err(ValidationError::field(
            &format!("{ref_field}.{other}"),
            "is not supported: a reference gives apiVersion, kind, name and namespace".to_owned(),
        ));
    }
    let text = |key: &str| -> Result<String, ValidationError> {
        match fields.get(key).map(|value| value.as_str()) {
            Some(Some(value)) if !value.is_empty() => Ok(value.to_owned()),
            Some(Some(_)) | None => {
                Err(ValidationError::field(&format!("{ref_field}.{key}"), "is required".to_owned()))
            }
            Some(None) => Err(ValidationError::field(&format!("{ref_field}.{key}"), "must be a string".to_owned())),
        }
    };
    let kind = text("kind")?;
    let api_version = text("apiVersion")?;
    let name = text("name")?;
    check_object_name(&format!("{ref_field}.name"), &name)?;
    if let Some(other) = fields.get("namespace").and_then(|value| value.as_str()).filter(|other| *other != namespace) {
        return Err(ValidationError::field(
            &format!("{ref_field}.namespace"),
            format!("'{other}' is not the namespace '{namespace}': a reference names an object of its own namespace"),
        ));
    }
    let object = ObjectRef { api_version, kind, namespace: namespace.to_owned(), name };
    let external = External { field: field.to_owned(), object, path: destination.uri.clone() };
    // The `uri` must be relative; checked against any address.
    external
        .address("http://example.invalid/")
        .map_err(|message| ValidationError::field(&format!("{field}.uri"), message))?;
    Ok(Some(external))
}

/// A Kubernetes object name: a DNS-1123 subdomain.
fn check_object_name(field: &str, name: &str) -> Result<(), ValidationError> {
    let label = |label: &str| {
        !label.is_empty()
            && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    match name.len() <= 253 && name.split('.').all(label) {
        true => Ok(()),
        false => Err(ValidationError::field(
            field,
            format!("'{name}' is not a Kubernetes object name (lower-case letters, digits, '-' and '.')"),
        )),
    }
}

/// The delivery a trigger runs with: its own, else its broker's (Knative replaces it as a whole).
pub(crate) fn effective_delivery<'a>(
    spec: &'a TriggerSpec,
    inherited: Option<&'a DeliverySpec>,
) -> Option<&'a DeliverySpec> {
    spec.delivery.as_ref().or(inherited)
}

/// The object references of a trigger, by role: its subscriber, and the dead-letter sink of the
/// delivery it runs with.
pub(crate) fn trigger_externals(
    spec: &TriggerSpec,
    inherited: Option<&DeliverySpec>,
    namespace: &str,
) -> Result<Vec<(Role, External)>, ValidationError> {
    let mut found = Vec::new();
    if let Some(external) = external(&spec.subscriber, "spec.subscriber", namespace)? {
        found.push((Role::Subscriber, external));
    }
    let dead_letter = effective_delivery(spec, inherited).and_then(|delivery| delivery.dead_letter_sink.as_ref());
    if let Some(sink) = dead_letter {
        if let Some(external) = external(sink, "spec.delivery.deadLetterSink", namespace)? {
            found.push((Role::DeadLetterSink, external));
        }
    }
    Ok(found)
}

/// The object reference of a delivery's dead-letter sink, if it has one (a broker's).
pub(crate) fn delivery_external(
    delivery: Option<&DeliverySpec>,
    field: &str,
    namespace: &str,
) -> Result<Option<External>, ValidationError> {
    match delivery.and_then(|delivery| delivery.dead_letter_sink.as_ref()) {
        Some(sink) => external(sink, &format!("{field}.deadLetterSink"), namespace),
        None => Ok(None),
    }
}

/// A destination with an object reference replaced by `address` (the object's address with
/// its `uri` joined), so that it compiles like any `uri`.
fn replaced(destination: &mut Destination, address: String) {
    destination.uri = Some(address);
    destination.r#ref = None;
}

/// A trigger's spec and inherited delivery with each object reference replaced by what
/// `address` gives for it (its resolved address; or, when a declaration is only checked, any
/// address, or the refusal of a server without an API server).
pub(crate) fn with_addresses(
    spec: &TriggerSpec,
    inherited: Option<&DeliverySpec>,
    namespace: &str,
    address: &dyn Fn(Role, &External) -> Result<String, ValidationError>,
) -> Result<(TriggerSpec, Option<DeliverySpec>), ValidationError> {
    let mut spec = spec.clone();
    let mut inherited = inherited.cloned();
    if let Some(external) = external(&spec.subscriber, "spec.subscriber", namespace)? {
        let resolved = address(Role::Subscriber, &external)?;
        replaced(&mut spec.subscriber, resolved);
    }
    let own = spec.delivery.is_some();
    let delivery = match own {
        true => spec.delivery.as_mut(),
        false => inherited.as_mut(),
    };
    if let Some(sink) = delivery.and_then(|delivery| delivery.dead_letter_sink.as_mut()) {
        if let Some(external) = external(sink, "spec.delivery.deadLetterSink", namespace)? {
            let resolved = address(Role::DeadLetterSink, &external)?;
            replaced(sink, resolved);
        }
    }
    Ok((spec, inherited))
}

/// A delivery (a broker's) with its dead-letter sink's object reference replaced likewise.
pub(crate) fn delivery_with_address(
    delivery: Option<&DeliverySpec>,
    field: &str,
    namespace: &str,
    address: &dyn Fn(&External) -> Result<String, ValidationError>,
) -> Result<Option<DeliverySpec>, ValidationError> {
    let mut delivery = delivery.cloned();
    if let Some(sink) = delivery.as_mut().and_then(|delivery| delivery.dead_letter_sink.as_mut()) {
        if let Some(external) = external(sink, &format!("{field}.deadLetterSink"), namespace)? {
            let resolved = address(&external)?;
            replaced(sink, resolved);
        }
    }
    Ok(delivery)
}

/// How a declaration is checked when it is written: with an API server to resolve object
/// references later (they stand for any address now), or without one (they are refused).
pub(crate) fn checked_address(kubernetes: bool) -> impl Fn(&External) -> Result<String, ValidationError> {
    move |external: &External| match kubernetes {
        true => external.address("http://127.0.0.1/").map_err(|m| ValidationError::field(&external.field, m)),
        false => Err(external.needs_kubernetes()),
    }
}

#[cfg(test)]
mod tests {
    use switchyard_meta::resources::parse_trigger;

    use super::*;

    fn spec(body: serde_json::Value) -> TriggerSpec {
        parse_trigger("ns", "t", body.to_string().as_bytes()).unwrap().spec
    }

    fn service(name: &str) -> serde_json::Value {
        serde_json::json!({"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": name})
    }

    #[test]
    fn uri_with_a_ref_is_resolved_against_the_address_as_knative_does() {
        // Go's URL.ResolveReference and RFC 3986 §5.2 agree on each of these.
        let cases = [
            ("http://shop.ns.example", None, "http://shop.ns.example"),
            ("http://shop.ns.example", Some("/orders"), "http://shop.ns.example/orders"),
            ("http://shop.ns.example", Some("orders"), "http://shop.ns.example/orders"),
            ("http://h.example/api/v1", Some("orders"), "http://h.example/api/orders"),
            ("http://h.example/api/v1/", Some("orders?x=1"), "http://h.example/api/v1/orders?x=1"),
            ("http://h.example/api/v1/", Some("../v2/"), "http://h.example/api/v2/"),
            ("http://h.example/api/", Some("/root"), "http://h.example/root"),
            ("https://h.example:8443/a", Some(""), "https://h.example:8443/a"),
        ];
        for (address, path, expected) in cases {
            assert_eq!(Sink::address(address, path).unwrap(), expected, "{address} + {path:?}");
        }
        let error = Sink::address("http://h.example/", Some("http://other.example/x")).unwrap_err();
        assert!(error.contains("'http://other.example/x' is absolute"), "{error}");
    }

    #[test]
    fn object_references_are_found_checked_and_replaced() {
        let body = serde_json::json!({"spec": {
            "broker": "b",
            "subscriber": {"ref": service("shop"), "uri": "/orders"},
            "delivery": {"deadLetterSink": {"ref": {"apiVersion": "eventing.knative.dev/v1alpha1", "kind": "KafkaSink", "name": "dead"}}}
        }});
        let declared = spec(body);
        let found = trigger_externals(&declared, None, "ns").unwrap();
        assert_eq!(found.len(), 1, "a KafkaSink is not an object reference: {found:?}");
        let (role, external) = &found[0];
        assert_eq!(*role, Role::Subscriber);
        assert_eq!(external.object.to_string(), "Service ns/shop (serving.knative.dev/v1)");
        assert_eq!(external.path.as_deref(), Some("/orders"));
        let address = |_: Role, external: &External| Ok(external.address("http://127.0.0.11:8080/base/").unwrap());
        let (resolved, _) = with_addresses(&declared, None, "ns", &address).unwrap();
        assert_eq!(resolved.subscriber.uri.as_deref(), Some("http://127.0.0.11:8080/orders"));
        assert_eq!(resolved.subscriber.r#ref, None);
        let refused = with_addresses(&declared, None, "ns", &|_, external| Err(external.needs_kubernetes()));
        let error = refused.unwrap_err().to_string();
        assert!(error.contains("spec.subscriber.ref") && error.contains("'Service'"), "{error}");
    }

    #[test]
    fn an_inherited_dead_letter_sink_is_the_triggers_unless_it_has_its_own_delivery() {
        let broker: DeliverySpec =
            serde_json::from_value(serde_json::json!({"deadLetterSink": {"ref": service("dead")}})).unwrap();
        let inheriting =
            spec(serde_json::json!({"spec": {"broker": "b", "subscriber": {"uri": "http://127.0.0.1:1/"}}}));
        let found = trigger_externals(&inheriting, Some(&broker), "ns").unwrap();
        assert_eq!(
            found.iter().map(|(role, e)| (*role, e.object.name.as_str())).collect::<Vec<_>>(),
            [(Role::DeadLetterSink, "dead")]
        );
        let own = spec(
            serde_json::json!({"spec": {"broker": "b", "subscriber": {"uri": "http://127.0.0.1:1/"}, "delivery": {"retry": 1}}}),
        );
        assert!(
            trigger_externals(&own, Some(&broker), "ns").unwrap().is_empty(),
            "its own delivery replaces the broker's"
        );
        let (_, delivery) =
            with_addresses(&inheriting, Some(&broker), "ns", &|_, _| Ok("http://127.0.0.12/".to_owned())).unwrap();
        let sink = delivery.unwrap().dead_letter_sink.unwrap();
        assert_eq!((sink.uri.as_deref(), sink.r#ref), (Some("http://127.0.0.12/"), None));
    }

    #[test]
    fn bad_references_name_the_field() {
        let cases = [
            (serde_json::json!({"ref": {"kind": "Service", "name": "s"}}), "spec.subscriber.ref.apiVersion"),
            (serde_json::json!({"ref": {"apiVersion": "v1", "name": "s"}}), "spec.subscriber.ref.kind"),
            (
                serde_json::json!({"ref": {"apiVersion": "v1", "kind": "Service", "name": "S_"}}),
                "spec.subscriber.ref.name",
            ),
            (
                serde_json::json!({"ref": {"apiVersion": "v1", "kind": "Service", "name": "s", "namespace": "other"}}),
                "spec.subscriber.ref.namespace",
            ),
            (
                serde_json::json!({"ref": {"apiVersion": "v1", "kind": "Service", "name": "s", "address": "x"}}),
                "spec.subscriber.ref.address",
            ),
            (serde_json::json!({"ref": service("s"), "uri": "http://elsewhere.example/"}), "spec.subscriber.uri"),
        ];
        for (subscriber, field) in cases {
            let declared = spec(serde_json::json!({"spec": {"broker": "b", "subscriber": subscriber}}));
            let error = trigger_externals(&declared, None, "ns").expect_err(&subscriber.to_string());
            let ValidationError::Field { field: actual, .. } = &error else { panic!("{subscriber}: {error}") };
            assert_eq!(actual, field, "{subscriber}: {error}");
        }
    }
}
