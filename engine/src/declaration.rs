//! Every kind that can be declared — Broker, Trigger, each source kind — behind one type, so
//! the controller, the REST API and the CLI treat them alike: one registry ([`Kind::all`]), one
//! parse-and-check per kind ([`Declaration::parse`]), one key format.

use std::collections::BTreeMap;
use std::sync::RwLock;

use switchyard_dispatcher::ca_certs::compile_ca_certs;
use switchyard_dispatcher::plan::compile_audience;
use switchyard_dispatcher::{DeliveryPolicy, TriggerPlan};
use switchyard_meta::event_policy::{self, parse_event_policy, EventPolicy};
use switchyard_meta::kafka_sink::{self, parse_kafka_sink, KafkaSink};
use switchyard_meta::resources::{parse_broker, parse_trigger, validate_dns_label, Destination};
use switchyard_meta::{Broker, Source, Trigger, Upsert, ValidationError};
use switchyard_sources::{Declared, Sink, SourceKind};

use crate::{kafka_sinks, references};

/// A kind of declaration.
#[derive(Clone, Copy)]
pub enum Kind {
    /// Knative's Broker.
    Broker,
    /// Knative's Trigger.
    Trigger,
    /// A source kind.
    Source(&'static dyn SourceKind),
    /// Knative's KafkaSink.
    KafkaSink,
    /// Knative's EventPolicy.
    EventPolicy,
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl PartialEq for Kind {
    fn eq(&self, other: &Kind) -> bool {
        self.name() == other.name()
    }
}

impl Kind {
    /// Every kind, in the order the API lists them: brokers, triggers, the sources, then the
    /// sinks.
    pub fn all() -> impl Iterator<Item = Kind> {
        [Kind::Broker, Kind::Trigger]
            .into_iter()
            .chain(switchyard_sources::kinds().iter().map(|&k| Kind::Source(k)))
            .chain([Kind::KafkaSink, Kind::EventPolicy])
    }

    /// The source kinds.
    pub fn sources() -> impl Iterator<Item = Kind> {
        switchyard_sources::kinds().iter().map(|&kind| Kind::Source(kind))
    }

    /// The Knative kind name, e.g. `PingSource`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Broker => "Broker",
            Kind::Trigger => "Trigger",
            Kind::Source(kind) => kind.kind(),
            Kind::KafkaSink => kafka_sink::KIND,
            Kind::EventPolicy => event_policy::KIND,
        }
    }

    /// The REST path segment, e.g. `pingsources`.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Broker => "brokers",
            Kind::Trigger => "triggers",
            Kind::Source(kind) => kind.plural(),
            Kind::KafkaSink => "kafkasinks",
            Kind::EventPolicy => "eventpolicies",
        }
    }

    /// The kind whose REST path segment is `plural`.
    pub fn by_plural(plural: &str) -> Option<Kind> {
        Kind::all().find(|kind| kind.plural() == plural)
    }

    /// The kind named `name` in a declaration key (lower case, `pingsource`), or by its Knative
    /// name in any case.
    pub fn by_name(name: &str) -> Option<Kind> {
        Kind::all().find(|kind| kind.name().eq_ignore_ascii_case(name))
    }

    /// A declaration's key, `<kind>/<namespace>/<name>` with the kind in lower case: what the
    /// declaration log is keyed by.
    pub fn key(self, namespace: &str, name: &str) -> String {
        format!("{}/{namespace}/{name}", self.name().to_ascii_lowercase())
    }

    /// The prefix of the keys of this kind in `namespace`, or in every namespace.
    fn prefix(self, namespace: Option<&str>) -> String {
        let kind = self.name().to_ascii_lowercase();
        match namespace {
            Some(namespace) => format!("{kind}/{namespace}/"),
            None => format!("{kind}/"),
        }
    }
}

/// A declared resource, of any kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Declaration {
    /// A Broker.
    Broker(Broker),
    /// A Trigger.
    Trigger(Trigger),
    /// A source, with its kind.
    Source(SourceDeclaration),
    /// A KafkaSink.
    KafkaSink(KafkaSink),
    /// An EventPolicy.
    EventPolicy(EventPolicy),
}

/// A declared source.
#[derive(Clone)]
pub struct SourceDeclaration {
    /// Its kind.
    pub kind: &'static dyn SourceKind,
    /// The resource, its spec in the kind's canonical form.
    pub source: Source,
}

impl std::fmt::Debug for SourceDeclaration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceDeclaration").field("kind", &self.kind.kind()).field("source", &self.source).finish()
    }
}

impl PartialEq for SourceDeclaration {
    fn eq(&self, other: &SourceDeclaration) -> bool {
        self.kind.kind() == other.kind.kind() && self.source == other.source
    }
}

/// A stored declaration that this version cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read the stored declaration '{key}': {reason}")]
pub struct Unreadable {
    /// Its key.
    pub key: String,
    /// Why.
    pub reason: String,
}

impl Declaration {
    /// Parses a submitted declaration of `kind` for `namespace/name` and checks every field,
    /// compiling what runs (a trigger's plan, a broker's delivery policy, a source's spec) the
    /// same way it is compiled when it is applied: what is accepted here is exactly what runs.
    /// As on a server without a Kubernetes API server: a `ref` to anything but Switchyard's own
    /// objects is refused.
    pub fn parse(kind: Kind, namespace: &str, name: &str, body: &[u8]) -> Result<Declaration, ValidationError> {
        Declaration::check(kind, namespace, name, body, false)
    }

    /// [`Declaration::parse`] on a server that has a Kubernetes API server (`kubernetes`) to
    /// resolve a `ref` to any object with an address (a Knative Service, a Broker of another
    /// class, a CRD instance), or none, which refuses them naming the field.
    pub fn check(
        kind: Kind,
        namespace: &str,
        name: &str,
        body: &[u8],
        kubernetes: bool,
    ) -> Result<Declaration, ValidationError> {
        let address = references::checked_address(kubernetes);
        match kind {
            Kind::Broker => {
                let broker = parse_broker(namespace, name, body)?;
                let delivery = references::delivery_with_address(
                    broker.spec.delivery.as_ref(),
                    "spec.delivery",
                    namespace,
                    &address,
                )?;
                DeliveryPolicy::compile(delivery.as_ref(), "spec.delivery")?;
                Ok(Declaration::Broker(broker))
            }
            Kind::Trigger => {
                let trigger = parse_trigger(namespace, name, body)?;
                // Compiled as it will run: with its KafkaSinks at an address of this server, and
                // the objects it names at theirs.
                let local = kafka_sinks::resolve_references(&trigger.spec, namespace, "http://127.0.0.1")?;
                let (resolved, _) = references::with_addresses(&local, None, namespace, &|_, e| address(e))?;
                TriggerPlan::compile(&resolved, None)?;
                Ok(Declaration::Trigger(trigger))
            }
            Kind::KafkaSink => {
                let sink = parse_kafka_sink(namespace, name, body)?;
                kafka_sinks::check_topic(&sink)?;
                switchyard_dispatcher::outbound::check_kafka_sink(&sink.spec.bootstrap_servers(), &sink.spec.topic)?;
                Ok(Declaration::KafkaSink(sink))
            }
            Kind::EventPolicy => {
                let policy = parse_event_policy(namespace, name, body)?;
                // Compiled as admission will run it.
                switchyard_dispatcher::Filter::compile(None, &policy.spec.filters, "spec.")?;
                Ok(Declaration::EventPolicy(policy))
            }
            Kind::Source(kind) => {
                let source = switchyard_sources::parse_source(kind, namespace, name, body)?;
                if !kubernetes {
                    if let Ok(Declared { sink: Sink::Object { reference, .. }, .. }) = Declared::new(kind, &source) {
                        return Err(ValidationError::field(
                            "spec.sink.ref",
                            format!(
                                "'{}' objects are resolved through a Kubernetes API server, and this server has none (serve --kubeconfig): use a 'Broker' or 'KafkaSink', or give a 'uri'",
                                reference.kind
                            ),
                        ));
                    }
                }
                if let Ok(Declared { sink, http, .. }) = Declared::new(kind, &source) {
                    if let Sink::Uri(uri) = sink {
                        switchyard_dispatcher::outbound::check_declared("spec.sink.uri", &uri)?;
                    }
                    // Checked as a trigger's destination's are.
                    let destination =
                        Destination { audience: http.audience, ca_certs: http.ca_certs, ..Destination::default() };
                    compile_audience(&destination, "spec.sink")?;
                    compile_ca_certs(&destination, "spec.sink")?;
                }
                if kind.kind() == "KafkaSource" {
                    switchyard_dispatcher::outbound::check_kafka_source(&source.spec)?;
                }
                Ok(Declaration::Source(SourceDeclaration { kind, source }))
            }
        }
    }

    /// Reads a declaration back from the declaration log.
    pub fn decode(key: &str, bytes: &[u8]) -> Result<Declaration, Unreadable> {
        let unreadable = |reason: String| Unreadable { key: key.to_owned(), reason };
        let kind = key.split('/').next().and_then(Kind::by_name);
        let kind = kind.ok_or_else(|| unreadable("unknown kind".to_owned()))?;
        let decoded = match kind {
            Kind::Broker => serde_json::from_slice(bytes).map(Declaration::Broker),
            Kind::Trigger => serde_json::from_slice(bytes).map(Declaration::Trigger),
            Kind::KafkaSink => serde_json::from_slice(bytes).map(Declaration::KafkaSink),
            Kind::EventPolicy => serde_json::from_slice(bytes).map(Declaration::EventPolicy),
            Kind::Source(kind) => {
                serde_json::from_slice(bytes).map(|source| Declaration::Source(SourceDeclaration { kind, source }))
            }
        };
        let declaration = decoded.map_err(|e| unreadable(e.to_string()))?;
        if declaration.key() != key {
            return Err(unreadable(format!("it names '{}'", declaration.key())));
        }
        Ok(declaration)
    }

    /// The declaration as stored in the declaration log.
    pub fn encode(&self) -> Vec<u8> {
        let encoded = match self {
            Declaration::Broker(broker) => serde_json::to_vec(broker),
            Declaration::Trigger(trigger) => serde_json::to_vec(trigger),
            Declaration::Source(source) => serde_json::to_vec(&source.source),
            Declaration::KafkaSink(sink) => serde_json::to_vec(sink),
            Declaration::EventPolicy(policy) => serde_json::to_vec(policy),
        };
        // Plain data with string keys: serialising cannot fail.
        encoded.unwrap_or_default()
    }

    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            Declaration::Broker(_) => Kind::Broker,
            Declaration::Trigger(_) => Kind::Trigger,
            Declaration::Source(source) => Kind::Source(source.kind),
            Declaration::KafkaSink(_) => Kind::KafkaSink,
            Declaration::EventPolicy(_) => Kind::EventPolicy,
        }
    }

    /// `(namespace, name)`.
    pub fn names(&self) -> (&str, &str) {
        match self {
            Declaration::Broker(broker) => broker.names(),
            Declaration::Trigger(trigger) => trigger.names(),
            Declaration::Source(source) => source.source.names(),
            Declaration::KafkaSink(sink) => sink.names(),
            Declaration::EventPolicy(policy) => policy.names(),
        }
    }

    /// Its key in the declaration log.
    pub fn key(&self) -> String {
        let (namespace, name) = self.names();
        self.kind().key(namespace, name)
    }

    /// As stored when it replaces `existing` (or is created): server-set metadata filled in.
    pub(crate) fn prepared(self, existing: Option<&Declaration>) -> (Declaration, Upsert) {
        match (self, existing) {
            (Declaration::Broker(new), Some(Declaration::Broker(old))) => {
                let (prepared, upsert) = new.prepared(Some(old));
                (Declaration::Broker(prepared), upsert)
            }
            (Declaration::Trigger(new), Some(Declaration::Trigger(old))) => {
                let (prepared, upsert) = new.prepared(Some(old));
                (Declaration::Trigger(prepared), upsert)
            }
            (Declaration::Source(new), Some(Declaration::Source(old))) => {
                let (source, upsert) = new.source.prepared(Some(&old.source));
                (Declaration::Source(SourceDeclaration { kind: new.kind, source }), upsert)
            }
            (Declaration::KafkaSink(new), Some(Declaration::KafkaSink(old))) => {
                let (prepared, upsert) = new.prepared(Some(old));
                (Declaration::KafkaSink(prepared), upsert)
            }
            (Declaration::EventPolicy(new), Some(Declaration::EventPolicy(old))) => {
                let (prepared, upsert) = new.prepared(Some(old));
                (Declaration::EventPolicy(prepared), upsert)
            }
            (Declaration::Broker(new), _) => {
                let (prepared, upsert) = new.prepared(None);
                (Declaration::Broker(prepared), upsert)
            }
            (Declaration::Trigger(new), _) => {
                let (prepared, upsert) = new.prepared(None);
                (Declaration::Trigger(prepared), upsert)
            }
            (Declaration::Source(new), _) => {
                let (source, upsert) = new.source.prepared(None);
                (Declaration::Source(SourceDeclaration { kind: new.kind, source }), upsert)
            }
            (Declaration::KafkaSink(new), _) => {
                let (prepared, upsert) = new.prepared(None);
                (Declaration::KafkaSink(prepared), upsert)
            }
            (Declaration::EventPolicy(new), _) => {
                let (prepared, upsert) = new.prepared(None);
                (Declaration::EventPolicy(prepared), upsert)
            }
        }
    }
}

/// This node's view of every declaration, as applied from the declaration log: what the REST
/// API reads. It is a cache of the log, never the truth. Declarations are kept as the log holds
/// them (their JSON) and decoded when read: a parsed Trigger costs several times its text,
/// which with thousands of triggers is most of an idle node's memory.
#[derive(Default)]
pub(crate) struct Catalog {
    by_key: RwLock<BTreeMap<String, Box<[u8]>>>,
}

impl Catalog {
    pub(crate) fn get(&self, key: &str) -> Option<Declaration> {
        let by_key = self.by_key.read().unwrap_or_else(|e| e.into_inner());
        by_key.get(key).and_then(|bytes| decoded(key, bytes))
    }

    /// Stores a declaration as its log entry `bytes` (which [`Declaration::decode`] read);
    /// returns the one it replaced.
    pub(crate) fn insert(&self, key: &str, bytes: &[u8]) -> Option<Declaration> {
        let mut by_key = self.by_key.write().unwrap_or_else(|e| e.into_inner());
        let previous = by_key.insert(key.to_owned(), bytes.into());
        previous.and_then(|bytes| decoded(key, &bytes))
    }

    pub(crate) fn remove(&self, key: &str) -> Option<Declaration> {
        let previous = self.by_key.write().unwrap_or_else(|e| e.into_inner()).remove(key);
        previous.and_then(|bytes| decoded(key, &bytes))
    }

    /// The declarations of `kind`, in `namespace` or every namespace, sorted by namespace and
    /// name.
    pub(crate) fn list(&self, kind: Kind, namespace: Option<&str>) -> Vec<Declaration> {
        let prefix = kind.prefix(namespace);
        let by_key = self.by_key.read().unwrap_or_else(|e| e.into_inner());
        by_key
            .range(prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(&prefix))
            .filter_map(|(key, bytes)| decoded(key, bytes))
            .collect()
    }

    /// How many declarations of `kind` `namespace` has (keys only: nothing is decoded).
    pub(crate) fn count(&self, kind: Kind, namespace: &str) -> usize {
        let prefix = kind.prefix(Some(namespace));
        let by_key = self.by_key.read().unwrap_or_else(|e| e.into_inner());
        by_key.range(prefix.clone()..).take_while(|(key, _)| key.starts_with(&prefix)).count()
    }

    /// The triggers of broker `namespace/broker`.
    pub(crate) fn triggers_of(&self, namespace: &str, broker: &str) -> Vec<Trigger> {
        self.list(Kind::Trigger, Some(namespace))
            .into_iter()
            .filter_map(|declaration| match declaration {
                Declaration::Trigger(trigger) if trigger.spec.broker == broker => Some(trigger),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn broker(&self, namespace: &str, name: &str) -> Option<Broker> {
        match self.get(&Kind::Broker.key(namespace, name)) {
            Some(Declaration::Broker(broker)) => Some(broker),
            _ => None,
        }
    }
}

/// A stored entry, decoded. Only entries that decoded when applied are stored, so this fails
/// only if memory is corrupt: treated as absent.
fn decoded(key: &str, bytes: &[u8]) -> Option<Declaration> {
    Declaration::decode(key, bytes).ok()
}

/// Checks a namespace given in a path (a DNS-1123 label).
pub fn check_namespace(namespace: &str) -> Result<(), ValidationError> {
    validate_dns_label("namespace", namespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_keys_and_lookups() {
        let plurals: Vec<&str> = Kind::all().map(Kind::plural).collect();
        assert_eq!(&plurals[..2], ["brokers", "triggers"]);
        assert!(plurals.contains(&"pingsources"));
        assert_eq!(Kind::by_plural("kafkasources").map(Kind::name), Some("KafkaSource"));
        assert_eq!(Kind::by_name("pingsource").map(Kind::name), Some("PingSource"));
        assert_eq!(Kind::Source(switchyard_sources::kinds()[1]).key("ns", "p"), "pingsource/ns/p");
        assert_eq!(Kind::Broker.key("ns", "b"), "broker/ns/b");
    }

    #[test]
    fn declarations_round_trip_through_the_log_and_are_checked_on_the_way_in() {
        let body = br#"{"spec":{"broker":"b","subscriber":{"uri":"http://127.0.0.1:1/"}}}"#;
        let trigger = Declaration::parse(Kind::Trigger, "ns", "t", body).unwrap();
        let (prepared, upsert) = trigger.prepared(None);
        assert_eq!(upsert, Upsert::Created);
        let decoded = Declaration::decode("trigger/ns/t", &prepared.encode()).unwrap();
        assert_eq!(decoded, prepared);
        assert!(Declaration::decode("trigger/ns/other", &prepared.encode()).is_err());
        assert!(Declaration::decode("widget/ns/t", &prepared.encode()).is_err());
        let bad = br#"{"spec":{"broker":"b","subscriber":{"uri":"http://x/"},"filters":[{"cesql":"type ="}]}}"#;
        let error = Declaration::parse(Kind::Trigger, "ns", "t", bad).unwrap_err().to_string();
        assert!(error.contains("spec.filters[0]"), "{error}");
        let bad = br#"{"spec":{"delivery":{"retry":-1}}}"#;
        let error = Declaration::parse(Kind::Broker, "ns", "b", bad).unwrap_err().to_string();
        assert!(error.contains("spec.delivery.retry"), "{error}");
    }

    #[test]
    fn the_catalog_lists_by_kind_and_namespace() {
        let catalog = Catalog::default();
        let insert = |declaration: Declaration| {
            let declaration = declaration.prepared(None).0;
            catalog.insert(&declaration.key(), &declaration.encode());
        };
        for (ns, name) in [("a", "b1"), ("ab", "b2"), ("a", "b3")] {
            insert(Declaration::parse(Kind::Broker, ns, name, b"{}").unwrap());
        }
        let trigger = br#"{"spec":{"broker":"b1","subscriber":{"uri":"http://127.0.0.1:1/"}}}"#;
        insert(Declaration::parse(Kind::Trigger, "a", "t", trigger).unwrap());
        let names = |ds: Vec<Declaration>| ds.iter().map(|d| d.names().1.to_owned()).collect::<Vec<_>>();
        assert_eq!(names(catalog.list(Kind::Broker, Some("a"))), ["b1", "b3"]);
        assert_eq!(names(catalog.list(Kind::Broker, None)), ["b1", "b3", "b2"]);
        assert_eq!(catalog.triggers_of("a", "b1").len(), 1);
        assert!(catalog.triggers_of("a", "b3").is_empty());
        assert!(catalog.broker("ab", "b2").is_some());
    }
}
