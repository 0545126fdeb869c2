//! ApiServerSource (`sources.knative.dev/v1`): changes of Kubernetes objects — ConfigMaps,
//! core `Event`s, Deployments, any custom resource — as CloudEvents in Knative's shapes
//! ([`mapping`]), watched with kube-rs on the API server a `kubeconfig` names or the one `serve`
//! was given.
//!
//! **Each stream** is one resource (`apiVersion`, `kind`, label selector) in one namespace (the
//! source's own; those `namespaceSelector` selects, followed as namespaces come and go; or all
//! of them), watched by `kube::runtime::watcher`: a list, then a watch from its resource
//! version, listed again when the watch expires (410 Gone), retried with backoff while the API
//! server cannot be reached.
//!
//! **What was sent is remembered**: every object a stream has reported is recorded in the state
//! table (`apiserversource/<ns>/<name>/objects/<stream>/<uid>` → its resource version), after
//! the events are durable in the sink. A list — the first after a restart, on another node, or
//! after a watch expired — is compared with that record: an object not recorded is an `add`,
//! one with another resource version an `update`, a recorded one missing a `delete`; the others
//! send nothing. So a relist does not send every object again, and what happened while the
//! source was not watching (deleted, changed, created) is sent once it watches again. Knative's
//! adapter instead ignores its lists (its store's `Replace` does nothing): it sends nothing for
//! what changed while it was not watching, and forgets deletions that a relist reveals.
//!
//! **The first list of a stream is the baseline**: as in Knative, objects that exist when a
//! stream starts are not sent; the source is `Ready` once every stream has listed.
//!
//! **At least once**: a crash between the events being durable and their record sends them
//! again, with the same ids (derived from the object's uid and resource version,
//! [`mapping::event_id`]).

mod mapping;
mod spec;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::{BoxStream, SelectAll};
use futures_util::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams};
use kube::core::{ApiResource, DynamicResourceScope, GroupVersionKind};
use kube::runtime::{watcher, WatchStreamExt};
use serde::{Deserialize, Serialize};
use switchyard_event::Event;
use switchyard_log::backoff::ExponentialBackoff;
use switchyard_meta::ValidationError;

use crate::resource::{canonical, check_common, typed_spec, Declared};
use crate::runtime::{RunContext, Stopped};
use crate::{Activity, Behaviour, Clients, KubeCluster, NotReady, SourceKind};

pub use mapping::{event, event_id, go_json, subject, Change, ObjectId};
pub use spec::{
    ApiServerOwner, ApiServerResource, ApiServerSourceSpec, LabelSelector, LabelSelectorRequirement, REFERENCE,
    RESOURCE,
};

use spec::{Namespaces, Settings, Watched};

/// Lists after a stream's first (a watch that expired, or a reconnection that needed one),
/// by source kind.
pub const RELISTS: &str = "switchyard_source_apiserver_relists_total";
/// Errors listing or watching (the watcher retries with backoff).
pub const WATCH_ERRORS: &str = "switchyard_source_apiserver_watch_errors_total";

/// Events sent in one append, at most.
const BATCH: usize = 500;
/// State writes under way at once.
const STATE_WRITES: usize = 32;
/// How often a stream that failed is probed with a one-item list, so that the status clears
/// once the API server answers even when nothing changes.
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// The first and the longest wait before connecting or discovering again.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// The reason while the API server cannot be listed or watched.
const UNAVAILABLE: &str = "ApiServerUnavailable";

/// The ApiServerSource kind.
pub struct ApiServer;

impl SourceKind for ApiServer {
    fn kind(&self) -> &'static str {
        "ApiServerSource"
    }

    fn plural(&self) -> &'static str {
        "apiserversources"
    }

    fn api_versions(&self) -> &'static [&'static str] {
        &["sources.knative.dev/v1"]
    }

    fn validate(&self, spec: &serde_json::Value) -> Result<serde_json::Value, ValidationError> {
        let spec: ApiServerSourceSpec = typed_spec(spec)?;
        spec.settings()?;
        check_common(spec.sink.as_ref(), spec.ce_overrides.as_ref())?;
        Ok(canonical(&spec.defaulted()))
    }

    fn compile(&self, source: &Declared, clients: &Clients) -> Result<Behaviour, NotReady> {
        let invalid = |message: String| NotReady { reason: "InvalidSpec", message };
        let spec: ApiServerSourceSpec =
            serde_json::from_value(source.spec.clone()).map_err(|e| invalid(e.to_string()))?;
        let settings = spec.settings().map_err(|e| invalid(e.to_string()))?;
        // Which API server is known only here: the declaration is accepted either way (the
        // server may be started with --kubeconfig later), and the source says why it waits.
        let cluster = match (&settings.kubeconfig, &clients.kubernetes) {
            (Some(path), _) => Cluster::Kubeconfig(path.clone()),
            (None, Some(given)) => Cluster::Given(given.clone()),
            (None, None) => {
                return Err(NotReady {
                    reason: "KubernetesNotConfigured",
                    message: "no API server to watch: give spec.kubeconfig, or start the server with --kubeconfig \
                              (or [kubernetes] in its configuration)"
                        .to_owned(),
                })
            }
        };
        Ok(Behaviour::Active(Arc::new(Watcher { settings, cluster })))
    }

    #[cfg(feature = "openapi")]
    fn spec_schema(&self) -> crate::SpecSchema {
        crate::SpecSchema::of::<ApiServerSourceSpec>()
    }

    fn ready_note(&self, source: &Declared) -> Option<(&'static str, String)> {
        let account = source.spec.get("serviceAccountName").and_then(serde_json::Value::as_str)?;
        let message = format!(
            "serviceAccountName '{account}' is ignored: Switchyard watches with its own credentials \
             (spec.kubeconfig, or those the server was started with)"
        );
        Some(("ServiceAccountIgnored", message))
    }
}

/// Where the API server comes from.
enum Cluster {
    /// A kubeconfig file on this server.
    Kubeconfig(String),
    /// The one `serve` was given.
    Given(KubeCluster),
}

/// A running ApiServerSource.
struct Watcher {
    settings: Settings,
    cluster: Cluster,
}

#[async_trait]
impl Activity for Watcher {
    async fn run(&self, context: RunContext) {
        let _ = self.run_until_stopped(&context).await;
    }
}

impl Watcher {
    async fn run_until_stopped(&self, context: &RunContext) -> Result<(), Stopped> {
        let mut wait = ExponentialBackoff::new(RETRY_FIRST, RETRY_MAX);
        // Not ready until every stream has listed: objects that exist before are not sent.
        context.report(Some(NotReady {
            reason: "Listing",
            message: "connecting to the API server and listing the watched objects".to_owned(),
        }));
        loop {
            let prepared = match self.connect().await {
                Ok((client, url)) => self.resolve(&client).await.map(|resolved| (client, url, resolved)),
                Err(problem) => Err(problem),
            };
            let (client, url, resolved) = match prepared {
                Ok(prepared) => prepared,
                Err(problem) => {
                    if context.problem_reason() != Some(problem.reason) {
                        tracing::warn!(
                            source = %context.source().id, reason = problem.reason, message = %problem.message,
                            "apiserversource cannot start; retrying"
                        );
                    }
                    context.report(Some(problem));
                    context.sleep(wait.next_delay()).await?;
                    continue;
                }
            };
            let loaded = load(context).await?;
            let mut session = Session {
                context,
                settings: &self.settings,
                client,
                url,
                resources: resolved,
                streams: HashMap::new(),
                dormant: loaded,
                namespaces: NamespaceView::default(),
                generation: 0,
                events: Vec::new(),
                writes: Vec::new(),
            };
            return session.run().await;
        }
    }

    /// A client of the API server, and its URL (the events' `source`).
    async fn connect(&self) -> Result<(kube::Client, String), NotReady> {
        let path = match &self.cluster {
            Cluster::Given(cluster) => return Ok((cluster.client.clone(), cluster.url.clone())),
            Cluster::Kubeconfig(path) => path,
        };
        let unusable = |message: String| NotReady { reason: "KubeconfigInvalid", message };
        let file = kube::config::Kubeconfig::read_from(path).map_err(|error| match error {
            kube::config::KubeconfigError::ReadConfig(io, _) => unusable(format!("cannot read '{path}': {io}")),
            other => {
                // The details may quote the file; they go to the server's log only.
                tracing::warn!(path, error = %other, "an apiserversource's kubeconfig is not usable");
                unusable(format!("'{path}' is not a usable kubeconfig (the server's log says why)"))
            }
        })?;
        let config = kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|error| {
                tracing::warn!(path, %error, "an apiserversource's kubeconfig is not usable");
                unusable(format!("'{path}' is not a usable kubeconfig (the server's log says why)"))
            })?;
        let url = config.cluster_url.to_string().trim_end_matches('/').to_owned();
        let client = kube::Client::try_from(config).map_err(|e| unusable(format!("'{path}': {e}")))?;
        Ok((client, url))
    }

    /// Each resource's plural and scope, from the API server's discovery.
    async fn resolve(&self, client: &kube::Client) -> Result<Vec<Resolved>, NotReady> {
        let mut resolved = Vec::with_capacity(self.settings.resources.len());
        for watched in &self.settings.resources {
            let gvk = GroupVersionKind::gvk(&watched.group, &watched.version, &watched.kind);
            match kube::discovery::pinned_kind(client, &gvk).await {
                Ok((api_resource, capabilities)) => resolved.push(Resolved {
                    watched: watched.clone(),
                    namespaced: capabilities.scope == kube::discovery::Scope::Namespaced,
                    api_resource,
                }),
                Err(kube::Error::Discovery(error)) => {
                    return Err(NotReady {
                        reason: "ResourceNotFound",
                        message: format!(
                            "the API server has no kind '{}' in '{}': {error}",
                            watched.kind, watched.api_version
                        ),
                    })
                }
                Err(error) => {
                    return Err(NotReady {
                        reason: UNAVAILABLE,
                        message: format!("cannot discover '{}' '{}': {error}", watched.api_version, watched.kind),
                    })
                }
            }
        }
        Ok(resolved)
    }
}

/// A resource, discovered.
struct Resolved {
    watched: Watched,
    api_resource: ApiResource,
    namespaced: bool,
}

/// An object as the API server sent it: its metadata for the bookkeeping, and the whole JSON
/// for Resource mode's data (kept as sent, rather than through a typed model that could drop or
/// reformat fields).
#[derive(Debug, Clone)]
struct RawObject {
    metadata: ObjectMeta,
    raw: serde_json::Value,
}

impl<'de> Deserialize<'de> for RawObject {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<RawObject, D::Error> {
        let raw = serde_json::Value::deserialize(deserializer)?;
        let metadata = match raw.get("metadata") {
            Some(metadata) => ObjectMeta::deserialize(metadata).map_err(serde::de::Error::custom)?,
            None => ObjectMeta::default(),
        };
        Ok(RawObject { metadata, raw })
    }
}

impl kube::Resource for RawObject {
    type DynamicType = ApiResource;
    type Scope = DynamicResourceScope;

    fn kind(resource: &ApiResource) -> std::borrow::Cow<'_, str> {
        resource.kind.as_str().into()
    }

    fn group(resource: &ApiResource) -> std::borrow::Cow<'_, str> {
        resource.group.as_str().into()
    }

    fn version(resource: &ApiResource) -> std::borrow::Cow<'_, str> {
        resource.version.as_str().into()
    }

    fn api_version(resource: &ApiResource) -> std::borrow::Cow<'_, str> {
        resource.api_version.as_str().into()
    }

    fn plural(resource: &ApiResource) -> std::borrow::Cow<'_, str> {
        resource.plural.as_str().into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// What the state table holds for an object a stream reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Known {
    #[serde(rename = "rv")]
    resource_version: String,
    name: String,
    #[serde(default)]
    namespace: String,
}

/// A stream's record, as loaded: whether its first list was taken, and its objects.
#[derive(Debug, Default)]
struct Loaded {
    baselined: bool,
    known: HashMap<String, Known>,
}

/// Reads the source's record: `streams/<stream>` (the baseline was taken) and
/// `objects/<stream>/<uid>`.
async fn load(context: &RunContext) -> Result<HashMap<String, Loaded>, Stopped> {
    let prefix = context.state_key("");
    let entries = loop {
        match context.state().scan(&prefix).await {
            Ok(entries) => break entries,
            Err(error) => {
                context.report(Some(NotReady { reason: "StateUnavailable", message: error.to_string() }));
                context.sleep(Duration::from_secs(1)).await?;
            }
        }
    };
    let mut loaded: HashMap<String, Loaded> = HashMap::new();
    for (key, value) in entries {
        let Some(rest) = key.strip_prefix(&prefix) else { continue };
        match rest.split('/').collect::<Vec<_>>().as_slice() {
            ["streams", stream] => loaded.entry((*stream).to_owned()).or_default().baselined = true,
            ["objects", stream, uid] => {
                if let Ok(known) = serde_json::from_slice::<Known>(&value) {
                    loaded.entry((*stream).to_owned()).or_default().known.insert((*uid).to_owned(), known);
                }
            }
            _ => {}
        }
    }
    Ok(loaded)
}

/// A state table write, made once the events before it are durable.
#[derive(Debug, Clone)]
enum Write {
    Put(String, Vec<u8>),
    Remove(String),
}

impl Write {
    fn key(&self) -> &str {
        match self {
            Write::Put(key, _) | Write::Remove(key) => key,
        }
    }
}

/// One watched resource in one namespace (or all of them).
struct Stream {
    resource: usize,
    /// What the status calls it: `configmaps in shop`.
    label: String,
    api: Api<RawObject>,
    generation: u64,
    /// Dropping it ends the watch.
    _cancel: tokio::sync::oneshot::Sender<()>,
    baselined: bool,
    /// The list under way: the uids listed, and the objects that differ from the record.
    listing: Option<(HashSet<String>, Vec<RawObject>)>,
    /// Lists finished in this run.
    lists: u64,
    /// The last error, until the stream works again.
    failing: Option<String>,
    known: HashMap<String, Known>,
}

/// The namespaces `namespaceSelector` selects, as the namespace watch says.
#[derive(Default)]
struct NamespaceView {
    api: Option<Api<Namespace>>,
    listing: Option<BTreeSet<String>>,
    current: BTreeSet<String>,
    listed: bool,
    failing: Option<String>,
}

type Item = (String, u64, Result<watcher::Event<RawObject>, watcher::Error>);
type NamespaceItem = Result<watcher::Event<Namespace>, watcher::Error>;

/// A source's watch, from a connected client to being stopped.
struct Session<'a> {
    context: &'a RunContext,
    settings: &'a Settings,
    client: kube::Client,
    url: String,
    resources: Vec<Resolved>,
    streams: HashMap<String, Stream>,
    /// Records loaded that no stream has claimed yet.
    dormant: HashMap<String, Loaded>,
    namespaces: NamespaceView,
    generation: u64,
    /// Events to send, and the writes to make once they are durable.
    events: Vec<Event>,
    writes: Vec<Write>,
}

impl Session<'_> {
    async fn run(&mut self) -> Result<(), Stopped> {
        let mut streams: SelectAll<BoxStream<'static, Item>> = SelectAll::new();
        let mut namespace_watch: Option<BoxStream<'static, NamespaceItem>> = None;
        match &self.settings.namespaces {
            Namespaces::Selected(selector) => {
                let api: Api<Namespace> = Api::all(self.client.clone());
                let config = watcher::Config::default().labels_from(selector);
                namespace_watch = Some(watcher(api.clone(), config).default_backoff().boxed());
                self.namespaces.api = Some(api);
            }
            Namespaces::Own | Namespaces::All => self.reconcile(&mut streams),
        }
        loop {
            self.context.report(self.problem());
            let failing = self.namespaces.failing.is_some() || self.streams.values().any(|s| s.failing.is_some());
            tokio::select! {
                Some(item) = streams.next(), if !streams.is_empty() => self.handle(item),
                Some(item) = next_namespace(&mut namespace_watch) => {
                    if self.handle_namespace(item) {
                        self.reconcile(&mut streams);
                    }
                }
                () = tokio::time::sleep(PROBE_EVERY), if failing => self.probe().await,
                () = self.context.stopped() => return Err(Stopped),
            }
            // What else is ready goes in the same append.
            while self.events.len() < BATCH {
                match streams.next().now_or_never() {
                    Some(Some(item)) => self.handle(item),
                    _ => break,
                }
            }
            self.flush().await?;
        }
    }

    /// The first thing wrong, if anything: a stream that cannot list or watch, then one that
    /// has not listed yet.
    fn problem(&self) -> Option<NotReady> {
        if let Some(error) = &self.namespaces.failing {
            return Some(NotReady { reason: UNAVAILABLE, message: format!("cannot watch namespaces: {error}") });
        }
        let mut streams: Vec<&Stream> = self.streams.values().collect();
        streams.sort_by(|a, b| a.label.cmp(&b.label));
        if let Some(stream) = streams.iter().find(|stream| stream.failing.is_some()) {
            let error = stream.failing.as_deref().unwrap_or_default();
            return Some(NotReady {
                reason: UNAVAILABLE,
                message: format!("cannot list or watch {}: {error}; retrying", stream.label),
            });
        }
        if self.namespaces.api.is_some() && !self.namespaces.listed {
            return Some(NotReady { reason: "Listing", message: "listing the selected namespaces".to_owned() });
        }
        if let Some(stream) = streams.iter().find(|stream| stream.lists == 0) {
            return Some(NotReady {
                reason: "Listing",
                message: format!("listing {} (objects that exist then are not sent)", stream.label),
            });
        }
        None
    }

    /// The streams the settings and the selected namespaces call for; starts the missing ones
    /// and stops (and forgets the record of) the others.
    fn reconcile(&mut self, select: &mut SelectAll<BoxStream<'static, Item>>) {
        let own = self.context.source().id.namespace.clone();
        let mut wanted: Vec<(String, usize, Option<String>)> = Vec::new();
        for (index, resolved) in self.resources.iter().enumerate() {
            let namespaces: Vec<Option<String>> = match &self.settings.namespaces {
                _ if !resolved.namespaced => vec![None],
                Namespaces::All => vec![None],
                Namespaces::Own => vec![Some(own.clone())],
                Namespaces::Selected(_) => self.namespaces.current.iter().cloned().map(Some).collect(),
            };
            for namespace in namespaces {
                let id = stream_id(&self.context.source().uid, &resolved.watched, self.settings, namespace.as_deref());
                wanted.push((id, index, namespace));
            }
        }
        let wanted_ids: HashSet<&str> = wanted.iter().map(|(id, _, _)| id.as_str()).collect();
        let gone: Vec<String> = self.streams.keys().filter(|id| !wanted_ids.contains(id.as_str())).cloned().collect();
        for id in gone {
            if let Some(stream) = self.streams.remove(&id) {
                tracing::info!(source = %self.context.source().id, stream = %stream.label, "no longer watched");
                self.forget(&id, stream.known.keys());
            }
        }
        // Records of streams no longer wanted (the spec changed, a namespace stopped matching
        // while the source was stopped); only once the namespaces are known.
        if self.namespaces.api.is_none() || self.namespaces.listed {
            let stale: Vec<String> =
                self.dormant.keys().filter(|id| !wanted_ids.contains(id.as_str())).cloned().collect();
            for id in stale {
                if let Some(loaded) = self.dormant.remove(&id) {
                    self.forget(&id, loaded.known.keys());
                }
            }
        }
        for (id, index, namespace) in wanted {
            if self.streams.contains_key(&id) {
                continue;
            }
            let resolved = &self.resources[index];
            let api: Api<RawObject> = match &namespace {
                Some(namespace) => Api::namespaced_with(self.client.clone(), namespace, &resolved.api_resource),
                None => Api::all_with(self.client.clone(), &resolved.api_resource),
            };
            let mut config = watcher::Config::default();
            if !resolved.watched.selector.selects_all() {
                config = config.labels_from(&resolved.watched.selector);
            }
            self.generation += 1;
            let generation = self.generation;
            let (cancel, cancelled) = tokio::sync::oneshot::channel::<()>();
            let tag = id.clone();
            select.push(
                watcher(api.clone(), config)
                    .default_backoff()
                    .take_until(cancelled)
                    .map(move |item| (tag.clone(), generation, item))
                    .boxed(),
            );
            let loaded = self.dormant.remove(&id).unwrap_or_default();
            let label = match &namespace {
                Some(namespace) => format!("{} in {namespace}", resolved.api_resource.plural),
                None => format!("{} in all namespaces", resolved.api_resource.plural),
            };
            tracing::info!(source = %self.context.source().id, stream = %label, known = loaded.known.len(), "watching");
            self.streams.insert(
                id,
                Stream {
                    resource: index,
                    label,
                    api,
                    generation,
                    _cancel: cancel,
                    baselined: loaded.baselined,
                    listing: None,
                    lists: 0,
                    failing: None,
                    known: loaded.known,
                },
            );
        }
    }

    /// Removes the record of stream `id` (written with the next flush).
    fn forget<'k>(&mut self, id: &str, uids: impl Iterator<Item = &'k String>) {
        let writes: Vec<Write> = uids.map(|uid| Write::Remove(self.object_key(id, uid))).collect();
        self.writes.extend(writes);
        self.writes.push(Write::Remove(self.context.state_key(&format!("streams/{id}"))));
    }

    fn object_key(&self, stream: &str, uid: &str) -> String {
        self.context.state_key(&format!("objects/{stream}/{uid}"))
    }

    /// Takes a namespace watch event; `true` when the selected namespaces changed.
    fn handle_namespace(&mut self, item: NamespaceItem) -> bool {
        let view = &mut self.namespaces;
        let event = match item {
            Ok(event) => {
                view.failing = None;
                event
            }
            Err(error) => {
                metrics::counter!(WATCH_ERRORS).increment(1);
                if view.failing.is_none() {
                    tracing::warn!(source = %self.context.source().id, %error, "cannot watch namespaces; retrying");
                }
                view.failing = Some(error.to_string());
                return false;
            }
        };
        let name = |namespace: &Namespace| namespace.metadata.name.clone().unwrap_or_default();
        match event {
            watcher::Event::Init => {
                view.listing = Some(BTreeSet::new());
                false
            }
            watcher::Event::InitApply(namespace) => {
                view.listing.get_or_insert_with(BTreeSet::new).insert(name(&namespace));
                false
            }
            watcher::Event::InitDone => {
                view.current = view.listing.take().unwrap_or_default();
                view.listed = true;
                true
            }
            watcher::Event::Apply(namespace) => view.current.insert(name(&namespace)),
            watcher::Event::Delete(namespace) => view.current.remove(&name(&namespace)),
        }
    }

    /// Takes one watch event of a stream.
    fn handle(&mut self, (id, generation, item): Item) {
        let context = self.context;
        let settings = self.settings;
        let source = &context.source().id;
        let Some(stream) = self.streams.get_mut(&id) else { return };
        if stream.generation != generation {
            return;
        }
        let event = match item {
            Ok(event) => {
                stream.failing = None;
                event
            }
            Err(error) => {
                metrics::counter!(WATCH_ERRORS).increment(1);
                if stream.failing.is_none() {
                    tracing::warn!(
                        source = %source, stream = %stream.label, %error, "cannot list or watch; retrying with backoff"
                    );
                }
                stream.failing = Some(error.to_string());
                return;
            }
        };
        let owned =
            |object: &RawObject| settings.owner.as_ref().is_none_or(|owner| controlled_by(&object.metadata, owner));
        match event {
            watcher::Event::Init => stream.listing = Some((HashSet::new(), Vec::new())),
            watcher::Event::InitApply(object) => {
                if !owned(&object) {
                    return;
                }
                let Some(uid) = object.metadata.uid.clone() else { return };
                let unchanged = stream.known.get(&uid).map(|known| &known.resource_version)
                    == object.metadata.resource_version.as_ref();
                let (listed, changed) = stream.listing.get_or_insert_with(Default::default);
                listed.insert(uid);
                if !unchanged {
                    changed.push(object);
                }
            }
            watcher::Event::InitDone => {
                let (listed, changed) = stream.listing.take().unwrap_or_default();
                stream.lists += 1;
                if stream.lists > 1 {
                    metrics::counter!(RELISTS, "kind" => "ApiServerSource").increment(1);
                }
                if !stream.baselined {
                    // The first list: what exists now is the baseline, not news.
                    stream.baselined = true;
                    tracing::info!(source = %source, stream = %stream.label, objects = listed.len(), "baseline listed");
                    for object in changed {
                        self.record(&id, &object);
                    }
                    self.writes.push(Write::Put(context.state_key(&format!("streams/{id}")), b"{}".to_vec()));
                    return;
                }
                let gone: Vec<(String, Known)> = stream
                    .known
                    .iter()
                    .filter(|(uid, _)| !listed.contains(*uid))
                    .map(|(uid, known)| (uid.clone(), known.clone()))
                    .collect();
                tracing::info!(
                    source = %source, stream = %stream.label, listed = listed.len(), changed = changed.len(),
                    gone = gone.len(), "listed again; sending only what changed"
                );
                for object in changed {
                    self.applied(&id, object);
                }
                for (uid, known) in gone {
                    self.deleted_known(&id, &uid, &known);
                }
            }
            // No longer controlled by the owner: it left the selection.
            watcher::Event::Apply(object) if !owned(&object) => self.deleted(&id, object),
            watcher::Event::Apply(object) => self.applied(&id, object),
            watcher::Event::Delete(object) => self.deleted(&id, object),
        }
    }

    /// An object listed or watched: an add if not recorded, an update if its version differs.
    fn applied(&mut self, id: &str, object: RawObject) {
        let Some(stream) = self.streams.get(id) else { return };
        let Some(uid) = object.metadata.uid.as_deref() else { return };
        let change = match stream.known.get(uid) {
            None => Change::Add,
            Some(known) if Some(&known.resource_version) == object.metadata.resource_version.as_ref() => return,
            Some(_) => Change::Update,
        };
        self.send(id, &object, change, None);
        self.record(id, &object);
    }

    /// A watched deletion (or an object leaving the selection).
    fn deleted(&mut self, id: &str, object: RawObject) {
        let Some(stream) = self.streams.get(id) else { return };
        let Some(uid) = object.metadata.uid.clone() else { return };
        // The id is that of the last version sent, so that a deletion found by a list after a
        // crash (which knows only that version) is the same event.
        let last = stream.known.get(&uid).map(|known| known.resource_version.clone());
        if last.is_none() && !self.settings.owner.as_ref().is_none_or(|o| controlled_by(&object.metadata, o)) {
            // Never sent (never controlled by the owner): nothing to take back.
            return;
        }
        self.send(id, &object, Change::Delete, last.as_deref());
        self.unrecord(id, &uid);
    }

    /// A recorded object a list no longer has: deleted while not watched.
    fn deleted_known(&mut self, id: &str, uid: &str, known: &Known) {
        let Some(stream) = self.streams.get(id) else { return };
        let resource = &self.resources[stream.resource].api_resource;
        // All that is left of it (the record keeps identities, not whole objects).
        let raw = serde_json::json!({
            "apiVersion": resource.api_version,
            "kind": resource.kind,
            "metadata": {
                "name": known.name, "namespace": known.namespace, "uid": uid,
                "resourceVersion": known.resource_version,
            },
        });
        let object = RawObject {
            metadata: ObjectMeta {
                name: Some(known.name.clone()),
                namespace: Some(known.namespace.clone()).filter(|ns| !ns.is_empty()),
                uid: Some(uid.to_owned()),
                resource_version: Some(known.resource_version.clone()),
                ..ObjectMeta::default()
            },
            raw,
        };
        self.send(id, &object, Change::Delete, None);
        self.unrecord(id, uid);
    }

    /// Queues the event for `change` of `object`; `version` overrides the resource version its
    /// id is derived from.
    fn send(&mut self, id: &str, object: &RawObject, change: Change, version: Option<&str>) {
        let Some(stream) = self.streams.get(id) else { return };
        let resource = &self.resources[stream.resource].api_resource;
        let meta = &object.metadata;
        let object_id = ObjectId {
            api_version: &resource.api_version,
            kind: &resource.kind,
            name: meta.name.as_deref().unwrap_or_default(),
            namespace: meta.namespace.as_deref().unwrap_or_default(),
            uid: meta.uid.as_deref().unwrap_or_default(),
            resource_version: version.or(meta.resource_version.as_deref()).unwrap_or_default(),
        };
        let whole = self.settings.resource_mode.then(|| {
            // Objects of a list carry no apiVersion and kind; Knative's (Go's unstructured
            // lists) get them from the list, as here.
            let mut raw = object.raw.clone();
            if let Some(map) = raw.as_object_mut() {
                map.entry("apiVersion").or_insert_with(|| resource.api_version.clone().into());
                map.entry("kind").or_insert_with(|| resource.kind.clone().into());
            }
            raw
        });
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        match mapping::event(&self.url, &self.context.source().uid, &object_id, change, whole.as_ref(), &time) {
            Ok(event) => self.events.push(event),
            Err(error) => {
                tracing::warn!(
                    source = %self.context.source().id, object = %object_id.name, %error,
                    "object cannot be an event; skipped"
                );
            }
        }
    }

    fn record(&mut self, id: &str, object: &RawObject) {
        let Some(uid) = object.metadata.uid.clone() else { return };
        let known = Known {
            resource_version: object.metadata.resource_version.clone().unwrap_or_default(),
            name: object.metadata.name.clone().unwrap_or_default(),
            namespace: object.metadata.namespace.clone().unwrap_or_default(),
        };
        let key = self.object_key(id, &uid);
        self.writes.push(Write::Put(key, serde_json::to_vec(&known).unwrap_or_default()));
        if let Some(stream) = self.streams.get_mut(id) {
            stream.known.insert(uid, known);
        }
    }

    fn unrecord(&mut self, id: &str, uid: &str) {
        let key = self.object_key(id, uid);
        self.writes.push(Write::Remove(key));
        if let Some(stream) = self.streams.get_mut(id) {
            stream.known.remove(uid);
        }
    }

    /// Sends the queued events, then (once they are durable) makes the queued writes.
    async fn flush(&mut self) -> Result<(), Stopped> {
        if !self.events.is_empty() {
            let events = std::mem::take(&mut self.events);
            self.context.deliver(events).await?;
        }
        if self.writes.is_empty() {
            return Ok(());
        }
        // The last write of a key is the one that counts; different keys in any order.
        let mut last: HashMap<String, Write> = HashMap::new();
        for write in std::mem::take(&mut self.writes) {
            last.insert(write.key().to_owned(), write);
        }
        let context = self.context;
        let results: Vec<Result<(), Stopped>> = futures_util::stream::iter(last.into_values())
            .map(|write| write_until_done(context, write))
            .buffer_unordered(STATE_WRITES)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// Lists one object of each failing stream: once that answers, the stream is no longer
    /// reported failing (its watcher resumes by itself).
    async fn probe(&mut self) {
        if self.namespaces.failing.is_some() {
            if let Some(api) = &self.namespaces.api {
                if answers(api.list_metadata(&ListParams::default().limit(1))).await {
                    self.namespaces.failing = None;
                }
            }
        }
        for stream in self.streams.values_mut().filter(|stream| stream.failing.is_some()) {
            if answers(stream.api.list_metadata(&ListParams::default().limit(1))).await {
                stream.failing = None;
            }
        }
    }
}

/// Whether a probe succeeded within [`PROBE_EVERY`] (an API server that hangs must not hold up
/// the source, which would not notice it is asked to stop).
async fn answers<T>(probe: impl std::future::Future<Output = Result<T, kube::Error>>) -> bool {
    matches!(tokio::time::timeout(PROBE_EVERY, probe).await, Ok(Ok(_)))
}

async fn next_namespace(watch: &mut Option<BoxStream<'static, NamespaceItem>>) -> Option<NamespaceItem> {
    match watch {
        Some(watch) => watch.next().await,
        None => std::future::pending().await,
    }
}

/// Makes a state write, retrying until it succeeds (the events before it are durable: until it
/// is made, a restart would send them again).
async fn write_until_done(context: &RunContext, write: Write) -> Result<(), Stopped> {
    loop {
        let done = match &write {
            Write::Put(key, value) => context.state().put(key, value).await,
            Write::Remove(key) => context.state().remove(key).await,
        };
        match done {
            Ok(()) => return Ok(()),
            Err(error) => {
                tracing::warn!(source = %context.source().id, %error, "cannot record progress; retrying");
                context.report(Some(NotReady { reason: "StateUnavailable", message: error.to_string() }));
                context.sleep(Duration::from_secs(1)).await?;
            }
        }
    }
}

/// Whether the object's controller (the owner reference with `controller: true`) is of the
/// owner's apiVersion and kind (Knative's `controllerFilter`; an empty field matches any).
fn controlled_by(meta: &ObjectMeta, owner: &ApiServerOwner) -> bool {
    meta.owner_references.iter().flatten().any(|reference| {
        reference.controller == Some(true)
            && (owner.api_version.is_empty() || owner.api_version == reference.api_version)
            && (owner.kind.is_empty() || owner.kind == reference.kind)
    })
}

/// The stream's name in the state table: a digest of what it watches (a changed spec, or
/// another incarnation of the source, starts with a new baseline).
fn stream_id(source_uid: &str, watched: &Watched, settings: &Settings, namespace: Option<&str>) -> String {
    let owner = settings.owner.as_ref().map(|o| format!("{}/{}", o.api_version, o.kind)).unwrap_or_default();
    let key = format!(
        "{source_uid}\n{}\n{}\n{}\n{owner}\n{}",
        watched.api_version,
        watched.kind,
        watched.selector,
        namespace.unwrap_or("*")
    );
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    digest.as_ref()[..12].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(spec: serde_json::Value) -> Result<serde_json::Value, ValidationError> {
        ApiServer.validate(&spec)
    }

    #[test]
    fn knative_specs_are_accepted_and_defaulted() {
        let stored = validate(serde_json::json!({
            "resources": [{"apiVersion": "v1", "kind": "ConfigMap", "selector": {"matchLabels": {"app": "shop"}}}],
            "serviceAccountName": "watcher",
            "sink": {"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "default"}},
        }))
        .unwrap();
        assert_eq!(stored["mode"], "Reference");
        validate(serde_json::json!({
            "resources": [{"apiVersion": "v1", "kind": "Event"}, {"apiVersion": "events.k8s.io/v1", "kind": "Event"}],
            "mode": "Resource", "namespaceSelector": {"matchLabels": {"team": "a"}},
            "owner": {"apiVersion": "apps/v1", "kind": "ReplicaSet"},
            "kubeconfig": "/etc/switchyard/kubeconfig",
            "sink": {"uri": "http://127.0.0.1:9000/"}, "ceOverrides": {"extensions": {"team": "a"}},
        }))
        .unwrap();
    }

    #[test]
    fn bad_specs_are_refused_naming_the_field() {
        let error =
            validate(serde_json::json!({"resources": [{"apiVersion": "v1", "kind": "ConfigMap"}]})).unwrap_err();
        assert!(error.to_string().contains("spec.sink"), "{error}");
        let error = validate(serde_json::json!({"resources": [{"apiVersion": "v1"}], "sink": {"uri": "http://x/"}}))
            .unwrap_err();
        assert!(error.to_string().contains("spec.resources[0].kind"), "{error}");
        let error =
            validate(serde_json::json!({"resources": [], "sink": {"uri": "http://x/"}, "extra": 1})).unwrap_err();
        assert!(error.to_string().contains("extra"), "{error}");
    }

    #[test]
    fn owners_are_matched_on_the_controller_reference() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
        let reference = |kind: &str, controller| OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: "x".into(),
            uid: "u".into(),
            controller: Some(controller),
            ..OwnerReference::default()
        };
        let owner = ApiServerOwner { api_version: "apps/v1".into(), kind: "ReplicaSet".into() };
        let meta = |refs| ObjectMeta { owner_references: Some(refs), ..ObjectMeta::default() };
        assert!(controlled_by(&meta(vec![reference("ReplicaSet", true)]), &owner));
        assert!(!controlled_by(&meta(vec![reference("ReplicaSet", false)]), &owner));
        assert!(!controlled_by(&meta(vec![reference("Deployment", true)]), &owner));
        assert!(!controlled_by(&ObjectMeta::default(), &owner));
    }

    #[test]
    fn raw_objects_keep_the_json_as_sent() {
        let text = concat!(
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","uid":"u1","resourceVersion":"7","#,
            r#""managedFields":[{"manager":"kubectl"}]},"data":{"k":"v"}}"#
        );
        let object: RawObject = serde_json::from_str(text).unwrap();
        assert_eq!(object.metadata.uid.as_deref(), Some("u1"));
        assert_eq!(object.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(serde_json::to_string(&object.raw).unwrap(), text);
    }
}
