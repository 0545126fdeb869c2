//! `Destination.ref`s resolved through the API server, the way Knative's resolver does it
//! (knative.dev/pkg `resolver/addressable_resolver.go`): the object's `status.addresses[0].url`,
//! else its `status.address.url`; a core `v1` `Service` is special-cased to its cluster DNS name.
//!
//! Every `(apiVersion, kind, namespace)` asked about gets one watch (a kube-rs reflector over
//! `Api<DynamicObject>`, the plural found through discovery), kept for as long as the resolver
//! lives: answers come from its cache, and every change it sees bumps [`Addresses::changes`], so
//! that whoever holds an address resolves again. While the API server cannot be reached the
//! cache keeps answering what it last saw (a subscriber keeps receiving); a kind the API server
//! does not know (its CRD not installed yet) is looked up again at most every
//! [`DISCOVERY_RETRY`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use kube::api::{Api, DynamicObject, GroupVersionKind};
use kube::discovery::{ApiResource, Scope};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use switchyard_log::addresses::{Addresses, ObjectRef};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// How long a discovery request (finding a kind's plural) may take.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long after a failed discovery the next resolve asks again instead of repeating the error.
const DISCOVERY_RETRY: Duration = Duration::from_secs(2);
/// How long the resolve that starts a watch waits for its first list.
const FIRST_LIST_WAIT: Duration = Duration::from_secs(5);
/// How long a watch fails (or, after failing, says nothing) before it starts over with a list.
const RELIST_AFTER: Duration = Duration::from_secs(10);
/// The pause before that list.
const RELIST_PAUSE: Duration = Duration::from_secs(1);

/// What is watched: objects of one kind in one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct WatchKey {
    api_version: String,
    kind: String,
    namespace: String,
}

impl WatchKey {
    fn of(reference: &ObjectRef) -> WatchKey {
        WatchKey {
            api_version: reference.api_version.clone(),
            kind: reference.kind.clone(),
            namespace: reference.namespace.clone(),
        }
    }
}

/// One watch, or why there is none yet.
enum Slot {
    Watching(Watching),
    Failed { at: Instant, message: String },
}

struct Watching {
    resource: ApiResource,
    store: Store<DynamicObject>,
    /// Whether the store holds a complete list (set once, at the first list's end).
    listed: Arc<AtomicBool>,
    /// The watch's last error while it has not recovered, for messages.
    error: Arc<Mutex<Option<String>>>,
}

/// Resolves references through an API server.
pub struct KubeAddresses {
    client: kube::Client,
    changes: Arc<watch::Sender<u64>>,
    slots: Mutex<HashMap<WatchKey, Arc<tokio::sync::Mutex<Option<Slot>>>>>,
    /// The watches' tasks, ended with the resolver.
    tasks: Mutex<Vec<AbortHandle>>,
}

impl KubeAddresses {
    /// A resolver asking `client`'s API server.
    pub fn new(client: kube::Client) -> KubeAddresses {
        KubeAddresses {
            client,
            changes: Arc::new(watch::channel(0).0),
            slots: Mutex::default(),
            tasks: Mutex::default(),
        }
    }

    fn slot(&self, key: &WatchKey) -> Arc<tokio::sync::Mutex<Option<Slot>>> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(slots.entry(key.clone()).or_default())
    }

    /// Finds the kind's resource through discovery and starts watching it.
    async fn start_watch(&self, key: &WatchKey) -> Result<Watching, String> {
        let (group, version) = match key.api_version.split_once('/') {
            Some((group, version)) => (group, version),
            None => ("", key.api_version.as_str()),
        };
        let gvk = GroupVersionKind::gvk(group, version, &key.kind);
        let found = tokio::time::timeout(DISCOVERY_TIMEOUT, kube::discovery::pinned_kind(&self.client, &gvk)).await;
        let (resource, capabilities) = match found {
            Ok(Ok(found)) => found,
            Ok(Err(error)) => {
                return Err(format!(
                    "the API server does not serve kind '{}' of '{}': {error}",
                    key.kind, key.api_version
                ))
            }
            Err(_) => {
                return Err(format!(
                    "the API server did not say within {DISCOVERY_TIMEOUT:?} whether it serves kind '{}' of '{}'",
                    key.kind, key.api_version
                ))
            }
        };
        let api: Api<DynamicObject> = match capabilities.scope {
            Scope::Namespaced => Api::namespaced_with(self.client.clone(), &key.namespace, &resource),
            Scope::Cluster => Api::all_with(self.client.clone(), &resource),
        };
        let mut writer = reflector::store::Writer::new(resource.clone());
        let store = writer.as_reader();
        let listed: Arc<AtomicBool> = Arc::default();
        let error: Arc<Mutex<Option<String>>> = Arc::default();
        let (changes, watched_error, watched_listed, what) = (
            Arc::clone(&self.changes),
            Arc::clone(&error),
            Arc::clone(&listed),
            format!("{} in '{}'", resource.plural, key.namespace),
        );
        tracing::info!(watch = %what, api_version = %key.api_version, "watching addressable objects");
        let task = tokio::spawn(async move {
            // The store outlives each watch: it keeps answering what was last seen while a new
            // watch lists again, and the list replaces it whole once complete.
            loop {
                let stream = watcher(api.clone(), watcher::Config::default()).default_backoff();
                futures_util::pin_mut!(stream);
                let mut failing_since: Option<Instant> = None;
                loop {
                    // While failing, a watch that says nothing at all may hang at a resource
                    // version the server does not have (its storage was replaced): start over.
                    let next = match failing_since {
                        None => stream.next().await,
                        Some(since) => match tokio::time::timeout_at(since + RELIST_AFTER, stream.next()).await {
                            Ok(next) => next,
                            Err(_) => break,
                        },
                    };
                    let Some(event) = next else { break };
                    match event {
                        Ok(event) => {
                            failing_since = None;
                            writer.apply_watcher_event(&event);
                            if !matches!(
                                event,
                                watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone
                            ) {
                                continue;
                            }
                            if matches!(event, watcher::Event::InitDone) {
                                watched_listed.store(true, Ordering::Release);
                            }
                            if let Some(error) = watched_error.lock().unwrap_or_else(PoisonError::into_inner).take() {
                                tracing::info!(watch = %what, %error, "the watch of addressable objects recovered");
                            }
                            changes.send_modify(|version| *version = version.wrapping_add(1));
                        }
                        Err(error) => {
                            let mut last = watched_error.lock().unwrap_or_else(PoisonError::into_inner);
                            if last.is_none() {
                                tracing::warn!(watch = %what, %error, "the watch of addressable objects failed; retrying");
                            }
                            *last = Some(error.to_string());
                            // A watch resumed at a resource version the server no longer (or
                            // not yet) serves can fail forever: after a while, start over with
                            // a list.
                            if failing_since.get_or_insert_with(Instant::now).elapsed() >= RELIST_AFTER {
                                break;
                            }
                        }
                    }
                }
                tokio::time::sleep(RELIST_PAUSE).await;
            }
        });
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner).push(task.abort_handle());
        Ok(Watching { resource, store, listed, error })
    }

    /// The address of `reference` from the watch's cache.
    fn lookup(watching: &Watching, reference: &ObjectRef) -> Result<String, String> {
        let Some(object) = watching.store.get(
            &reflector::ObjectRef::new_with(&reference.name, watching.resource.clone()).within(&reference.namespace),
        ) else {
            let ready = watching.listed.load(Ordering::Acquire);
            let error = watching.error.lock().unwrap_or_else(PoisonError::into_inner).clone();
            return Err(match (ready, error) {
                (true, None) => format!("{reference} does not exist"),
                (true, Some(error)) => {
                    format!("{reference} did not exist when last seen; the API server cannot be reached now: {error}")
                }
                (false, error) => {
                    format!(
                        "cannot list the {} of namespace '{}' yet: {}",
                        watching.resource.plural,
                        reference.namespace,
                        error.as_deref().unwrap_or("no answer from the API server")
                    )
                }
            });
        };
        address_of(&object, reference)
    }
}

impl Drop for KubeAddresses {
    fn drop(&mut self) {
        for task in self.tasks.get_mut().unwrap_or_else(PoisonError::into_inner).iter() {
            task.abort();
        }
    }
}

#[async_trait]
impl Addresses for KubeAddresses {
    async fn resolve(&self, reference: &ObjectRef) -> Result<String, String> {
        let key = WatchKey::of(reference);
        let slot = self.slot(&key);
        let mut slot = slot.lock().await;
        let stale = match slot.as_ref() {
            None => true,
            Some(Slot::Failed { at, .. }) => at.elapsed() >= DISCOVERY_RETRY,
            Some(Slot::Watching(_)) => false,
        };
        if stale {
            match self.start_watch(&key).await {
                Ok(watching) => {
                    // The first list, so that the answer is not "does not exist" for an object
                    // that only has not been listed yet.
                    let _ = tokio::time::timeout(FIRST_LIST_WAIT, watching.store.wait_until_ready()).await;
                    *slot = Some(Slot::Watching(watching));
                }
                Err(message) => {
                    tracing::debug!(%reference, %message, "cannot watch a referenced kind");
                    *slot = Some(Slot::Failed { at: Instant::now(), message });
                }
            }
        }
        match slot.as_ref() {
            Some(Slot::Watching(watching)) => KubeAddresses::lookup(watching, reference),
            Some(Slot::Failed { message, .. }) => Err(message.clone()),
            None => Err(format!("{reference} is not resolved yet")),
        }
    }

    fn cached(&self, reference: &ObjectRef) -> Option<Result<String, String>> {
        let slot = self.slots.lock().unwrap_or_else(PoisonError::into_inner).get(&WatchKey::of(reference)).cloned()?;
        let slot = slot.try_lock().ok()?;
        match slot.as_ref()? {
            Slot::Watching(watching) => Some(KubeAddresses::lookup(watching, reference)),
            Slot::Failed { message, .. } => Some(Err(message.clone())),
        }
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

/// The address an object publishes, as Knative's `selectAddress` picks it: the first of
/// `status.addresses`, else `status.address`; its URL must be absolute with a host. A core
/// `v1` `Service` is addressed by its cluster DNS name, as Knative's resolver special-cases it.
fn address_of(object: &DynamicObject, reference: &ObjectRef) -> Result<String, String> {
    if reference.api_version == "v1" && reference.kind == "Service" {
        return Ok(format!("http://{}.{}.svc.cluster.local", reference.name, reference.namespace));
    }
    let status = object.data.get("status");
    let first = status.and_then(|status| status.pointer("/addresses/0/url"));
    let url = first.or_else(|| status.and_then(|status| status.pointer("/address/url")));
    let Some(url) = url.and_then(serde_json::Value::as_str).filter(|url| !url.is_empty()) else {
        return Err(format!("{reference} has no status.address.url"));
    };
    match url::Url::parse(url) {
        Ok(parsed)
            if matches!(parsed.scheme(), "http" | "https") && parsed.host_str().is_some_and(|h| !h.is_empty()) =>
        {
            Ok(url.to_owned())
        }
        _ => Err(format!("{reference} has status.address.url '{url}', which is not an absolute http(s) URL")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(api_version: &str, kind: &str) -> ObjectRef {
        ObjectRef { api_version: api_version.into(), kind: kind.into(), namespace: "ns".into(), name: "shop".into() }
    }

    fn object(status: serde_json::Value) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": "shop", "namespace": "ns"}, "status": status
        }))
        .unwrap()
    }

    #[test]
    fn the_address_is_picked_as_knative_picks_it() {
        let service = reference("serving.knative.dev/v1", "Service");
        let one = object(serde_json::json!({"address": {"url": "http://shop.ns.example"}}));
        assert_eq!(address_of(&one, &service).unwrap(), "http://shop.ns.example");
        let both = object(serde_json::json!({
            "address": {"url": "http://old.example"},
            "addresses": [{"name": "http", "url": "http://first.example/p"}, {"url": "http://second.example"}]
        }));
        assert_eq!(address_of(&both, &service).unwrap(), "http://first.example/p");
        let none = object(serde_json::json!({"conditions": []}));
        let error = address_of(&none, &service).unwrap_err();
        assert_eq!(error, "Service ns/shop (serving.knative.dev/v1) has no status.address.url");
        let relative = object(serde_json::json!({"address": {"url": "/only/a/path"}}));
        assert!(address_of(&relative, &service).unwrap_err().contains("'/only/a/path'"));
        let core = reference("v1", "Service");
        assert_eq!(address_of(&none, &core).unwrap(), "http://shop.ns.svc.cluster.local");
    }
}
