//! Knative Brokers of Switchyard's class and their Triggers, reconciled into this node's
//! declarations, with Knative's status written back.
//!
//! Knative picks a broker's implementation by its `eventing.knative.dev/broker.class`
//! annotation; each class's controller reconciles only its own brokers and the triggers naming
//! them (knative.dev/eventing `pkg/apis/eventing/v1/broker_types.go`). Here:
//!
//! - Two watches (Brokers and Triggers, every namespace) keep a copy of what the API server
//!   holds. After a watch fails, it lists again from scratch after a backoff (an API server that
//!   comes back with other data, or an older resource version, is seen as it is), and
//!   meanwhile nothing is reconciled: what is declared keeps running as it was.
//! - One node reconciles: the holder of the class's Lease (`lease.rs`). A pass makes the
//!   declarations of every Broker of the class and every Trigger naming one of them match the
//!   Kubernetes objects, deletes the declarations it made whose objects are gone (also those
//!   deleted while Switchyard was down), and writes each object's status when it differs. A
//!   pass runs on every change seen, and every few seconds (statuses follow the engine).
//! - Declarations made here carry the annotation [`MANAGED_BY`]` = `[`MANAGED_BY_KUBERNETES`]
//!   in their stored metadata, which is how they are told apart from those declared through
//!   Switchyard's own API: those are never changed or deleted here, and a Kubernetes object of
//!   the same name says so in its status instead.
//!
//! Knative's `EventPolicy` objects are not reconciled: Switchyard has no access control yet, so
//! a broker's `EventPoliciesReady` says every sender is accepted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::watcher;
use kube::Api;
use serde_json::{json, Map, Value};
use switchyard_engine::{ControlError, Declaration, Engine, Kind};
use switchyard_log::backoff::ExponentialBackoff;
use switchyard_log::supervise;
use switchyard_meta::resources::{now_rfc3339, Metadata, API_VERSION};
use switchyard_meta::status::{knative, Condition};
use tokio::sync::{watch, Notify};

use crate::lease::{self, Elector};

/// The annotation naming a Knative broker's class.
pub const CLASS_ANNOTATION: &str = "eventing.knative.dev/broker.class";
/// The annotation, in a declaration's stored metadata, saying who made it.
pub const MANAGED_BY: &str = "switchyard.dev/managed-by";
/// [`MANAGED_BY`]'s value on declarations reconciled from Kubernetes objects.
pub const MANAGED_BY_KUBERNETES: &str = "kubernetes";
/// `kubectl apply`'s copy of the whole object: not part of what is declared.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// 1 while both watches (Brokers, Triggers) are listed and running, 0 while either retries.
pub const CONNECTED: &str = "switchyard_kubernetes_connected";
/// Failed watches of the API server, by `resource` (`brokers`, `triggers`); each is retried
/// with backoff.
pub const WATCH_ERRORS: &str = "switchyard_kubernetes_watch_errors_total";
/// Reconciliations that failed, by `kind` (`broker`, `trigger`) and `step` (`declare`,
/// `delete`, `status`); retried on the next pass.
pub const RECONCILE_ERRORS: &str = "switchyard_kubernetes_reconcile_errors_total";

/// 1 on the node that holds the class's Lease (and so reconciles), 0 on the others.
pub const LEADING: &str = "switchyard_kubernetes_broker_class_leader";

/// How often a pass runs when nothing is seen to change: statuses follow the engine's.
const RESYNC_INTERVAL: Duration = Duration::from_secs(2);

/// What the reconciler needs to know of this node.
#[derive(Debug, Clone)]
pub struct BrokerClass {
    /// The `eventing.knative.dev/broker.class` value reconciled here.
    pub class: String,
    /// Where this node serves ingest (`http://host:port`), for the brokers' addresses.
    pub base_url: String,
}

/// Starts reconciling; runs until the handle is aborted.
pub fn start(client: kube::Client, engine: Arc<Engine>, settings: BrokerClass) -> tokio::task::JoinHandle<()> {
    describe_metrics();
    metrics::gauge!(CONNECTED).set(0.0);
    metrics::gauge!(LEADING).set(0.0);
    tokio::spawn(async move {
        // A panic (a bug) restarts the whole reconciler from a fresh list, after a wait; what
        // is declared keeps running meanwhile.
        let mut backoff = supervise::restart_backoff();
        loop {
            let ended = supervise::catch_panic(run(client.clone(), engine.clone(), settings.clone())).await;
            let message = ended.err().unwrap_or_else(|| "it returned".to_owned());
            let delay = backoff.next_delay();
            tracing::error!(panic = %message, restart_in = ?delay, "the knative broker-class reconciler panicked");
            tokio::time::sleep(delay).await;
        }
    })
}

fn describe_metrics() {
    metrics::describe_gauge!(
        CONNECTED,
        "1 while the watches of Knative Brokers and Triggers on the Kubernetes API server run, 0 while they retry."
    );
    metrics::describe_counter!(
        WATCH_ERRORS,
        "Failed watches of the Kubernetes API server, by resource; retried with backoff."
    );
    metrics::describe_counter!(
        RECONCILE_ERRORS,
        "Knative objects whose reconciliation failed, by kind and step; retried on the next pass."
    );
}

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("eventing.knative.dev", "v1", kind), plural)
}

/// Every part runs inside this one future, so that aborting its task stops them all.
async fn run(client: kube::Client, engine: Arc<Engine>, settings: BrokerClass) {
    let brokers = Arc::new(Watched::new("brokers", resource("Broker", "brokers")));
    let triggers = Arc::new(Watched::new("triggers", resource("Trigger", "triggers")));
    let changed = Arc::new(Notify::new());
    let (leading, mut is_leading) = watch::channel(false);
    let elector =
        Elector::new(Api::default_namespaced(client.clone()), lease::lease_name(&settings.class), lease::identity());
    tracing::info!(class = %settings.class, address = %settings.base_url, "reconciling knative brokers of this class");
    let mut reconciler = Reconciler {
        client: client.clone(),
        engine,
        settings,
        brokers: brokers.clone(),
        triggers: triggers.clone(),
        written: HashMap::new(),
    };
    let reconcile = {
        let changed = changed.clone();
        async move {
            loop {
                tokio::select! {
                    _ = changed.notified() => {}
                    _ = tokio::time::sleep(RESYNC_INTERVAL) => {}
                    _ = is_leading.changed() => {}
                }
                let up = reconciler.brokers.synced() && reconciler.triggers.synced();
                if *is_leading.borrow() && up {
                    reconciler.pass().await;
                }
            }
        }
    };
    let both = [brokers.clone(), triggers.clone()];
    tokio::join!(
        watch_objects(client.clone(), brokers, both.clone(), changed.clone()),
        watch_objects(client, triggers, both, changed),
        elector.run(leading),
        reconcile,
    );
}

/// What one watch has seen: the objects by `(namespace, name)`, and whether it is listed and
/// running.
struct Watched {
    resource: &'static str,
    api_resource: ApiResource,
    objects: Mutex<BTreeMap<(String, String), DynamicObject>>,
    synced: AtomicBool,
}

impl Watched {
    fn new(resource: &'static str, api_resource: ApiResource) -> Watched {
        Watched { resource, api_resource, objects: Mutex::default(), synced: AtomicBool::new(false) }
    }

    fn synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
    }

    fn snapshot(&self) -> Vec<DynamicObject> {
        self.objects.lock().map(|objects| objects.values().cloned().collect()).unwrap_or_default()
    }

    fn with_objects(&self, change: impl FnOnce(&mut BTreeMap<(String, String), DynamicObject>)) {
        if let Ok(mut objects) = self.objects.lock() {
            change(&mut objects);
        }
    }
}

fn object_key(object: &DynamicObject) -> (String, String) {
    (object.metadata.namespace.clone().unwrap_or_default(), object.metadata.name.clone().unwrap_or_default())
}

/// Watches one resource for ever. Each failure is logged, counted, and retried with backoff by
/// listing again from scratch: the copy kept meanwhile is the last one listed, replaced whole
/// once the new list is complete.
async fn watch_objects(client: kube::Client, watched: Arc<Watched>, all: [Arc<Watched>; 2], changed: Arc<Notify>) {
    let api: Api<DynamicObject> = Api::all_with(client, &watched.api_resource);
    let what = watched.resource;
    let mut backoff = ExponentialBackoff::new(Duration::from_millis(250), Duration::from_secs(30));
    let mut ever_synced = false;
    loop {
        let mut stream = std::pin::pin!(watcher(api.clone(), watcher::Config::default()));
        let mut listing: Option<BTreeMap<(String, String), DynamicObject>> = None;
        let error = loop {
            match stream.next().await {
                Some(Ok(watcher::Event::Init)) => listing = Some(BTreeMap::new()),
                Some(Ok(watcher::Event::InitApply(object))) => {
                    if let Some(listing) = listing.as_mut() {
                        listing.insert(object_key(&object), object);
                    }
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    let listed = listing.take().unwrap_or_default();
                    let count = listed.len();
                    watched.with_objects(|objects| *objects = listed);
                    watched.synced.store(true, Ordering::SeqCst);
                    backoff = ExponentialBackoff::new(Duration::from_millis(250), Duration::from_secs(30));
                    if ever_synced {
                        tracing::info!(
                            resource = what,
                            count,
                            "kubernetes API server reachable again: watching knative {what}, reconciling"
                        );
                    } else {
                        tracing::info!(resource = what, count, "watching knative {what}");
                    }
                    ever_synced = true;
                    set_connected(&all);
                    changed.notify_one();
                }
                Some(Ok(watcher::Event::Apply(object))) => {
                    watched.with_objects(|objects| {
                        objects.insert(object_key(&object), object);
                    });
                    changed.notify_one();
                }
                Some(Ok(watcher::Event::Delete(object))) => {
                    watched.with_objects(|objects| {
                        objects.remove(&object_key(&object));
                    });
                    changed.notify_one();
                }
                Some(Err(error)) => break error.to_string(),
                None => break "the watch ended".to_owned(),
            }
        };
        metrics::counter!(WATCH_ERRORS, "resource" => what).increment(1);
        let delay = backoff.next_delay();
        if watched.synced.swap(false, Ordering::SeqCst) || !ever_synced {
            tracing::warn!(
                resource = what,
                %error,
                retry_in = ?delay,
                "cannot watch knative {what} on the kubernetes API server: retrying with backoff; \
                 what is declared keeps running, nothing is reconciled meanwhile"
            );
        } else {
            tracing::debug!(resource = what, %error, retry_in = ?delay, "watch failed again");
        }
        set_connected(&all);
        tokio::time::sleep(delay).await;
    }
}

fn set_connected(all: &[Arc<Watched>; 2]) {
    let up = all.iter().all(|watched| watched.synced());
    metrics::gauge!(CONNECTED).set(if up { 1.0 } else { 0.0 });
}

/// Why an object is not (or not as declared) in Switchyard: a condition's reason and message.
#[derive(Debug, Clone, PartialEq)]
struct Refusal {
    reason: &'static str,
    message: String,
}

struct Reconciler {
    client: kube::Client,
    engine: Arc<Engine>,
    settings: BrokerClass,
    brokers: Arc<Watched>,
    triggers: Arc<Watched>,
    /// The status last written to each object, with the resource version it was written over:
    /// not written again until the watch shows the object changed.
    written: HashMap<(&'static str, String, String), (Option<String>, Value)>,
}

impl Reconciler {
    /// Makes Switchyard's declarations match the Brokers of the class and their Triggers, and
    /// their statuses match Switchyard's.
    async fn pass(&mut self) {
        let class = self.settings.class.as_str();
        let brokers: BTreeMap<(String, String), DynamicObject> = self
            .brokers
            .snapshot()
            .into_iter()
            .filter(|broker| broker_class(broker) == Some(class) && broker.metadata.deletion_timestamp.is_none())
            .map(|broker| (object_key(&broker), broker))
            .collect();
        let triggers: BTreeMap<(String, String), DynamicObject> = self
            .triggers
            .snapshot()
            .into_iter()
            .filter(|trigger| trigger.metadata.deletion_timestamp.is_none())
            .filter(|trigger| {
                let (namespace, _) = object_key(trigger);
                trigger_broker(trigger).is_some_and(|broker| brokers.contains_key(&(namespace, broker.to_owned())))
            })
            .map(|trigger| (object_key(&trigger), trigger))
            .collect();
        // Triggers are deleted before their brokers, brokers declared before their triggers.
        self.delete_unwanted(Kind::Trigger, &triggers).await;
        self.delete_unwanted(Kind::Broker, &brokers).await;
        for broker in brokers.values() {
            self.reconcile(Kind::Broker, broker).await;
        }
        for trigger in triggers.values() {
            self.reconcile(Kind::Trigger, trigger).await;
        }
        let live: BTreeSet<(&'static str, String, String)> = brokers
            .keys()
            .map(|(namespace, name)| ("broker", namespace.clone(), name.clone()))
            .chain(triggers.keys().map(|(namespace, name)| ("trigger", namespace.clone(), name.clone())))
            .collect();
        self.written.retain(|key, _| live.contains(key));
    }

    /// Deletes the declarations made from Kubernetes objects that are not wanted any more.
    async fn delete_unwanted(&self, kind: Kind, wanted: &BTreeMap<(String, String), DynamicObject>) {
        let controller = self.engine.controller();
        for declaration in controller.list(kind, None) {
            if !managed_here(&declaration) {
                continue;
            }
            let (namespace, name) = declaration.names();
            if wanted.contains_key(&(namespace.to_owned(), name.to_owned())) {
                continue;
            }
            match controller.delete(kind, namespace, name).await {
                Ok(_) => tracing::info!(
                    kind = kind.name(),
                    namespace,
                    name,
                    "deleted: its kubernetes object is gone, or no longer of this broker class"
                ),
                Err(error) => {
                    metrics::counter!(RECONCILE_ERRORS, "kind" => kind_label(kind), "step" => "delete").increment(1);
                    tracing::warn!(kind = kind.name(), namespace, name, %error, "cannot delete; retried on the next pass");
                }
            }
        }
    }

    /// Declares one object (when its declaration differs), then writes its status.
    async fn reconcile(&mut self, kind: Kind, object: &DynamicObject) {
        let (namespace, name) = object_key(object);
        let refusal = self.declare(kind, &namespace, &name, object).await;
        let status = match kind {
            Kind::Broker => self.broker_status(object, &namespace, &name, refusal.as_ref()),
            _ => self.trigger_status(object, &namespace, &name, refusal.as_ref()),
        };
        self.write_status(kind, object, status).await;
    }

    /// Makes the declaration of `object` match it; `Some` when it could not.
    async fn declare(&self, kind: Kind, namespace: &str, name: &str, object: &DynamicObject) -> Option<Refusal> {
        let controller = self.engine.controller();
        let existing = controller.get(kind, namespace, name);
        if let Some(existing) = &existing {
            if !managed_here(existing) {
                return Some(Refusal {
                    reason: "DeclaredElsewhere",
                    message: format!(
                        "{} '{namespace}/{name}' is already declared through switchyard's own API; \
                         delete it there and this object is reconciled",
                        kind.name().to_ascii_lowercase()
                    ),
                });
            }
        }
        let body = declaration_body(kind, object);
        // Checked as the controller checks it on this node, which has an API server (this runs
        // only with one): a `ref` to a Knative Service or any other addressable is accepted.
        let desired = match Declaration::check(kind, namespace, name, &body, true) {
            Ok(desired) => desired,
            Err(error) => return Some(Refusal { reason: "InvalidSpec", message: error.to_string() }),
        };
        if existing.as_ref().is_some_and(|existing| same_declaration(existing, &desired)) {
            return None;
        }
        match controller.put(kind, namespace, name, &body).await {
            Ok((_, upsert)) => {
                tracing::info!(kind = kind.name(), namespace, name, ?upsert, "declared from its kubernetes object");
                None
            }
            // Stored: the engine's status says why it does not run yet, and it is retried.
            Err(ControlError::NotActive { .. }) => None,
            Err(ControlError::Invalid(error)) => Some(Refusal { reason: "InvalidSpec", message: error.to_string() }),
            Err(ControlError::QuotaExceeded(message)) => Some(Refusal { reason: "QuotaExceeded", message }),
            Err(error) => {
                metrics::counter!(RECONCILE_ERRORS, "kind" => kind_label(kind), "step" => "declare").increment(1);
                tracing::warn!(kind = kind.name(), namespace, name, %error, "cannot declare; retried on the next pass");
                Some(Refusal { reason: "DeclarationFailed", message: error.to_string() })
            }
        }
    }

    /// A Broker's status in Knative's shape (`BrokerStatus`, knative.dev/eventing
    /// `pkg/apis/eventing/v1/broker_types.go` and `broker_lifecycle.go`).
    fn broker_status(&self, object: &DynamicObject, namespace: &str, name: &str, refusal: Option<&Refusal>) -> Value {
        let controller = self.engine.controller();
        let declared = match controller.get(Kind::Broker, namespace, name) {
            Some(Declaration::Broker(broker)) if refusal.is_none_or(|r| r.reason != "DeclaredElsewhere") => {
                Some(broker)
            }
            _ => None,
        };
        let mut conditions = Vec::new();
        let mut address = Value::Null;
        let mut policies = Vec::new();
        let engine_ready = match &declared {
            Some(broker) => {
                let status = controller.broker_status(broker, &self.settings.base_url);
                policies = status.policies;
                // Knative's duck `Addressable`: its `name` is the URL's scheme.
                let scheme = status.address.url.split(':').next().unwrap_or("http").to_owned();
                address = json!({"name": scheme, "url": status.address.url});
                status.conditions.into_iter().find(|c| c.ty == "Ready").unwrap_or_else(Condition::ready)
            }
            None => Condition::not_ready("NotDeclared", format!("broker '{namespace}/{name}' is not declared")),
        };
        let ready = match refusal {
            Some(refusal) => Condition::not_ready(refusal.reason, refusal.message.clone()),
            None => engine_ready,
        };
        conditions.push(named("IngressReady", &ready));
        conditions.push(named("FilterReady", &ready));
        conditions.push(match address.is_null() {
            true => Condition::not_ready("NoAddress", "the broker takes no events here yet".to_owned()),
            false => Condition::ready(),
        });
        if let Some(addressable) = conditions.last_mut() {
            addressable.ty = "Addressable".to_owned();
        }
        let dead_letter_uri = dead_letter_uri(object);
        conditions.push(dead_letter_condition(object));
        // Knative's reasons (`broker_lifecycle.go`): the policies Switchyard enforces are its own
        // EventPolicy declarations (REST or `switchyard apply -f`), listed in `status.policies`.
        conditions.push(Condition {
            ty: "EventPoliciesReady".to_owned(),
            status: "True".to_owned(),
            reason: Some(
                if policies.is_empty() { "DefaultAuthorizationMode" } else { "EventPoliciesReady" }.to_owned(),
            ),
            message: Some(match policies.is_empty() {
                true => "no EventPolicy applies: every sender authentication admits may send".to_owned(),
                false => format!("{} EventPolicies apply", policies.len()),
            }),
        });
        // Knative's living condition set: `Ready` is true when every other condition is.
        let ready = match conditions.iter().find(|c| c.status != "True") {
            Some(failing) => named("Ready", failing),
            None => Condition::ready(),
        };
        conditions.push(ready);
        json!({
            "observedGeneration": object.metadata.generation,
            "address": address,
            "addresses": if address.is_null() { Value::Null } else { json!([address]) },
            "deadLetterSinkUri": dead_letter_uri,
            "policies": if policies.is_empty() { Value::Null } else { json!(policies) },
            "conditions": knative_conditions(conditions),
        })
    }

    /// A Trigger's status in Knative's shape (`TriggerStatus`, knative.dev/eventing
    /// `pkg/apis/eventing/v1/trigger_types.go` and `trigger_lifecycle.go`).
    fn trigger_status(&self, object: &DynamicObject, namespace: &str, name: &str, refusal: Option<&Refusal>) -> Value {
        let controller = self.engine.controller();
        let declared = match controller.get(Kind::Trigger, namespace, name) {
            Some(Declaration::Trigger(trigger)) if refusal.is_none_or(|r| r.reason != "DeclaredElsewhere") => {
                Some(trigger)
            }
            _ => None,
        };
        // `BrokerReady` follows the broker's own `Ready` in Switchyard.
        let broker = trigger_broker(object).unwrap_or_default();
        let broker_ready = match controller.get(Kind::Broker, namespace, broker) {
            Some(Declaration::Broker(declared)) => controller
                .broker_status(&declared, &self.settings.base_url)
                .conditions
                .into_iter()
                .find(|c| c.ty == "Ready")
                .unwrap_or_else(Condition::ready),
            _ => Condition::not_ready("BrokerDoesNotExist", format!("broker '{namespace}/{broker}' is not declared")),
        };
        let mut broker_condition = named("BrokerReady", &broker_ready);
        let mut subscriber = Condition::ready();
        let mut subscription = Condition::ready();
        let mut dead_letter = dead_letter_condition(object);
        let mut subscriber_uri = Value::Null;
        match (refusal, &declared) {
            (Some(refusal), _) => subscription = Condition::not_ready(refusal.reason, refusal.message.clone()),
            (None, None) => {
                subscription =
                    Condition::not_ready("NotDeclared", format!("trigger '{namespace}/{name}' is not declared"))
            }
            (None, Some(trigger)) => {
                let status = controller.trigger_status(trigger);
                subscriber_uri = status.subscriber_uri.map_or(Value::Null, Value::String);
                let mut problem = None;
                for condition in status.conditions {
                    match condition.ty.as_str() {
                        knative::SUBSCRIBER_RESOLVED => subscriber = condition,
                        knative::DEAD_LETTER_SINK_RESOLVED => dead_letter = condition,
                        "Ready" if condition.status != "True" => problem = Some(condition),
                        _ => {}
                    }
                }
                // The engine's `Ready` names its first problem: one that its `SubscriberResolved`
                // or `DeadLetterSinkResolved` (taken above) shows stays there; the others go under
                // the Knative condition they are about.
                if let Some(problem) = problem {
                    match problem.reason.as_deref() {
                        Some(
                            knative::SUBSCRIBER_UNRESOLVED
                            | knative::DEAD_LETTER_SINK_UNRESOLVED
                            | "SubscriberNotResolved",
                        ) => {}
                        Some("BrokerDoesNotExist") => broker_condition = named("BrokerReady", &problem),
                        _ => subscription = problem,
                    }
                }
            }
        }
        let mut conditions = vec![
            broker_condition,
            named("SubscriberResolved", &subscriber),
            named("SubscriptionReady", &subscription),
            Condition { ty: "DependencyReady".to_owned(), status: "True".to_owned(), reason: None, message: None },
            dead_letter,
        ];
        let ready = match conditions.iter().find(|c| c.status != "True") {
            Some(failing) => named("Ready", failing),
            None => Condition::ready(),
        };
        conditions.push(ready);
        json!({
            "observedGeneration": object.metadata.generation,
            "subscriberUri": subscriber_uri,
            "deadLetterSinkUri": dead_letter_uri(object),
            "conditions": knative_conditions(conditions),
        })
    }

    /// Writes `status` over the object's when they differ (`lastTransitionTime` kept where a
    /// condition did not change), through the status subresource.
    async fn write_status(&mut self, kind: Kind, object: &DynamicObject, mut status: Value) {
        let (namespace, name) = object_key(object);
        let current = object.data.get("status").cloned().unwrap_or(Value::Null);
        keep_transition_times(&mut status, current.get("conditions"));
        let Some(fields) = status.as_object() else { return };
        let differs = fields.iter().any(|(field, value)| current.get(field).unwrap_or(&Value::Null) != value);
        if !differs {
            return;
        }
        let key = (kind_label(kind), namespace.clone(), name.clone());
        let version = object.metadata.resource_version.clone();
        if self.written.get(&key) == Some(&(version.clone(), status.clone())) {
            // Written over this very version: the watch has not shown the result yet.
            return;
        }
        let watched = match kind {
            Kind::Broker => &self.brokers,
            _ => &self.triggers,
        };
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &namespace, &watched.api_resource);
        // A merge patch: `null` removes a field this writer set before and no longer has.
        match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await {
            Ok(_) => {
                tracing::debug!(kind = kind.name(), namespace, name, "status written");
                self.written.insert(key, (version, status));
            }
            Err(kube::Error::Api(error)) if error.code == 404 => {}
            Err(error) => {
                metrics::counter!(RECONCILE_ERRORS, "kind" => kind_label(kind), "step" => "status").increment(1);
                tracing::warn!(kind = kind.name(), namespace, name, %error, "cannot write status; retried on the next pass");
            }
        }
    }
}

fn kind_label(kind: Kind) -> &'static str {
    match kind {
        Kind::Broker => "broker",
        _ => "trigger",
    }
}

fn broker_class(broker: &DynamicObject) -> Option<&str> {
    broker.metadata.annotations.as_ref()?.get(CLASS_ANNOTATION).map(String::as_str)
}

fn trigger_broker(trigger: &DynamicObject) -> Option<&str> {
    trigger.data.get("spec")?.get("broker")?.as_str()
}

fn dead_letter_sink(object: &DynamicObject) -> Option<&Value> {
    object.data.get("spec")?.get("delivery")?.get("deadLetterSink")
}

fn dead_letter_uri(object: &DynamicObject) -> Value {
    dead_letter_sink(object).and_then(|sink| sink.get("uri")).cloned().unwrap_or(Value::Null)
}

/// Knative's `DeadLetterSinkResolved`: true when none is configured (with that reason), or when
/// one is; a `ref` that cannot be resolved shows in the trigger's own status.
fn dead_letter_condition(object: &DynamicObject) -> Condition {
    let mut condition = match dead_letter_sink(object) {
        Some(_) => Condition::ready(),
        None => {
            Condition::ready_because("DeadLetterSinkNotConfigured", "No dead letter sink is configured.".to_owned())
        }
    };
    condition.ty = "DeadLetterSinkResolved".to_owned();
    condition
}

/// `condition` under another type.
fn named(ty: &str, condition: &Condition) -> Condition {
    Condition { ty: ty.to_owned(), ..condition.clone() }
}

/// Conditions as Knative writes them: sorted by type, `Ready` included.
fn knative_conditions(mut conditions: Vec<Condition>) -> Value {
    conditions.sort_by(|a, b| a.ty.cmp(&b.ty));
    Value::Array(
        conditions
            .into_iter()
            .map(|condition| {
                let mut value = json!({"type": condition.ty, "status": condition.status});
                if let Some(reason) = condition.reason {
                    value["reason"] = Value::String(reason);
                }
                if let Some(message) = condition.message {
                    value["message"] = Value::String(message);
                }
                value
            })
            .collect(),
    )
}

/// Each condition's `lastTransitionTime`: the current one's when its status did not change,
/// now when it did.
fn keep_transition_times(status: &mut Value, current: Option<&Value>) {
    let now = now_rfc3339();
    let Some(conditions) = status.get_mut("conditions").and_then(Value::as_array_mut) else { return };
    for condition in conditions {
        let previous = current.and_then(Value::as_array).and_then(|current| {
            current
                .iter()
                .find(|c| c.get("type") == condition.get("type") && c.get("status") == condition.get("status"))
        });
        let time =
            previous.and_then(|c| c.get("lastTransitionTime")).cloned().unwrap_or_else(|| Value::String(now.clone()));
        condition["lastTransitionTime"] = time;
    }
}

/// Whether a declaration was made here, from a Kubernetes object.
fn managed_here(declaration: &Declaration) -> bool {
    metadata(declaration)
        .is_some_and(|m| m.annotations.get(MANAGED_BY).map(String::as_str) == Some(MANAGED_BY_KUBERNETES))
}

fn metadata(declaration: &Declaration) -> Option<&Metadata> {
    match declaration {
        Declaration::Broker(broker) => Some(&broker.metadata),
        Declaration::Trigger(trigger) => Some(&trigger.metadata),
        _ => None,
    }
}

/// Whether a stored declaration already says what `desired` says (the server-set metadata
/// aside).
fn same_declaration(existing: &Declaration, desired: &Declaration) -> bool {
    let same_spec = match (existing, desired) {
        (Declaration::Broker(a), Declaration::Broker(b)) => a.spec == b.spec,
        (Declaration::Trigger(a), Declaration::Trigger(b)) => a.spec == b.spec,
        _ => false,
    };
    same_spec
        && metadata(existing).map(|m| (&m.labels, &m.annotations))
            == metadata(desired).map(|m| (&m.labels, &m.annotations))
}

/// The body declared for a Kubernetes object: Knative's own shape, as `switchyard apply -f`
/// would PUT it, with the server-set metadata left out and [`MANAGED_BY`] added.
fn declaration_body(kind: Kind, object: &DynamicObject) -> Vec<u8> {
    let mut annotations = object.metadata.annotations.clone().unwrap_or_default();
    annotations.remove(LAST_APPLIED);
    annotations.insert(MANAGED_BY.to_owned(), MANAGED_BY_KUBERNETES.to_owned());
    let mut metadata = Map::new();
    metadata.insert("name".to_owned(), json!(object.metadata.name));
    metadata.insert("namespace".to_owned(), json!(object.metadata.namespace));
    if let Some(labels) = &object.metadata.labels {
        metadata.insert("labels".to_owned(), json!(labels));
    }
    metadata.insert("annotations".to_owned(), json!(annotations));
    let body = json!({
        "apiVersion": API_VERSION,
        "kind": kind.name(),
        "metadata": metadata,
        "spec": object.data.get("spec").cloned().unwrap_or_else(|| json!({})),
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(kind: &str, annotations: Value, spec: Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "eventing.knative.dev/v1",
            "kind": kind,
            "metadata": {"name": "b", "namespace": "ns", "annotations": annotations, "generation": 3,
                         "resourceVersion": "42", "uid": "u"},
            "spec": spec,
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        }))
        .expect("object")
    }

    #[test]
    fn the_declared_body_is_knatives_shape_marked_as_made_here() {
        let broker = object(
            "Broker",
            json!({CLASS_ANNOTATION: "Switchyard", LAST_APPLIED: "{}", "team": "a"}),
            json!({"delivery": {"retry": 2}}),
        );
        let body = declaration_body(Kind::Broker, &broker);
        let declaration = Declaration::parse(Kind::Broker, "ns", "b", &body).expect("parses");
        assert!(managed_here(&declaration));
        let metadata = metadata(&declaration).expect("metadata");
        assert_eq!(metadata.annotations.get(CLASS_ANNOTATION).map(String::as_str), Some("Switchyard"));
        assert!(!metadata.annotations.contains_key(LAST_APPLIED), "kubectl's copy is not declared");
        assert_eq!(broker_class(&broker), Some("Switchyard"));
    }

    #[test]
    fn a_declaration_is_the_same_when_spec_labels_and_annotations_are() {
        let spec = json!({"broker": "b", "subscriber": {"uri": "http://127.0.0.1:9/"}});
        let trigger = object("Trigger", json!({}), spec.clone());
        let declared = |object: &DynamicObject| {
            Declaration::parse(Kind::Trigger, "ns", "b", &declaration_body(Kind::Trigger, object)).expect("parses")
        };
        assert!(same_declaration(&declared(&trigger), &declared(&trigger)));
        let mut changed = spec;
        changed["filter"] = json!({"attributes": {"type": "x"}});
        assert!(!same_declaration(&declared(&trigger), &declared(&object("Trigger", json!({}), changed))));
        assert!(!same_declaration(
            &declared(&trigger),
            &declared(&object("Trigger", json!({"a": "b"}), trigger.data["spec"].clone()))
        ));
    }

    #[test]
    fn transition_times_are_kept_while_a_condition_holds() {
        let current = json!([{"type": "Ready", "status": "True", "lastTransitionTime": "2020-01-01T00:00:00Z"},
                             {"type": "Addressable", "status": "False", "lastTransitionTime": "2020-01-01T00:00:00Z"}]);
        let mut status =
            json!({"conditions": [{"type": "Ready", "status": "True"}, {"type": "Addressable", "status": "True"}]});
        keep_transition_times(&mut status, Some(&current));
        assert_eq!(status["conditions"][0]["lastTransitionTime"], "2020-01-01T00:00:00Z");
        assert_ne!(status["conditions"][1]["lastTransitionTime"], "2020-01-01T00:00:00Z");
    }

    #[test]
    fn conditions_are_sorted_by_type() {
        let conditions = knative_conditions(vec![Condition::ready(), named("Addressable", &Condition::ready())]);
        assert_eq!(conditions[0]["type"], "Addressable");
        assert_eq!(conditions[1]["type"], "Ready");
    }
}
