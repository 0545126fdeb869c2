//! Switchyard's engine: everything between the log backends and the binary's HTTP and CLI.
//!
//! - **One way in for events**: [`Admission`] puts every event into a broker's log, whoever
//!   brings it (a producer's request, a source, a subscriber's reply, a redriven dead letter's
//!   reply), with every limit, Knative's stamps, trace context, metrics and the stopping rule
//!   in one place.
//! - **One way in for declarations**: the [`Controller`] publishes every write to the
//!   backend's declaration log and applies it from there, on one node or on every node of a
//!   cluster alike.
//! - **Triggers compiled once**: a declaration is checked by compiling it into what runs
//!   (`switchyard_dispatcher::TriggerPlan`), the same way it is compiled when applied.
//!
//! The engine knows the log only through `switchyard_log`'s traits: it is started on a
//! [`Backend`] that the binary opened.
//!
//! ```ignore
//! let backend = switchyard_log_embedded::open(config, &data_dir.join("meta.redb")).await?;
//! let engine = Engine::start(backend, Settings::default(), Clients::default()).await?;
//! engine.controller().put(Kind::Broker, "default", "b", b"{}").await?;
//! ```

mod admission;
mod controller;
mod declaration;
mod kafka_sinks;
mod loops;
pub mod metrics;
#[cfg(feature = "otlp")]
pub mod otlp;
mod references;
pub mod sealed;
mod sinks;

use std::sync::Arc;
use std::time::Duration;

use switchyard_dispatcher::{Backlog, DeliveryClient, Dispatcher};
use switchyard_event::http::HeaderEncoding;
use switchyard_event::limits::EventLimits;
use switchyard_event::tracecontext::SpanSink;
use switchyard_log::supervise::join_panic;
use switchyard_log::{Backend, DeadLetterStore, LogError};
use switchyard_sources::{Clients, Outlets, Sources};

use crate::declaration::Catalog;

pub use crate::admission::Admission;
pub use crate::controller::{ControlError, Controller};
pub use crate::declaration::{check_namespace, Declaration, Kind, SourceDeclaration};
pub use crate::kafka_sinks::{KafkaSinkError, KafkaSinks};

/// How the engine runs.
#[derive(Clone, Default)]
pub struct Settings {
    /// The limits every event entering a broker is held to.
    pub limits: EventLimits,
    /// Where ingest and delivery spans go, when span export is on.
    pub spans: Option<Arc<dyn SpanSink>>,
    /// How binary deliveries write string attributes where a trigger does not choose.
    pub header_encoding: HeaderEncoding,
    /// How many brokers, triggers and sources a namespace may hold.
    pub quotas: Quotas,
    /// Where this node listens, when it is known before the engine starts: the loop guard and
    /// the triggers delivering to KafkaSinks (at this node's address) need it from the first
    /// declaration applied. `Controller::serving_at` sets it later otherwise.
    pub serving_at: Option<std::net::SocketAddr>,
    /// Signs the tokens of deliveries to destinations with an `audience`.
    pub issuer: Option<Arc<switchyard_dispatcher::identity::Issuer>>,
}

/// Per-namespace limits on declarations, so one tenant (or one runaway script) cannot exhaust
/// a node's memory and threads. A create beyond a limit is refused; replacing an existing
/// declaration always succeeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Brokers per namespace.
    pub brokers: usize,
    /// Triggers per namespace.
    pub triggers: usize,
    /// Sources per namespace, every kind together.
    pub sources: usize,
}

impl Default for Quotas {
    /// 100 brokers (each has its own log writer), 10,000 triggers (what the benchmark holds
    /// one node to), 1,000 sources.
    fn default() -> Quotas {
        Quotas { brokers: 100, triggers: 10_000, sources: 1_000 }
    }
}

/// The engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The HTTP delivery client could not be built.
    #[error("cannot build the HTTP delivery client: {0}")]
    Client(#[from] reqwest::Error),
    /// The declarations could not be read.
    #[error("cannot read the declarations: {0}")]
    Declarations(#[from] LogError),
}

/// A running engine.
pub struct Engine {
    backend: Backend,
    admission: Arc<Admission>,
    controller: Arc<Controller>,
    sources: Arc<Sources>,
    kafka_sinks: Arc<KafkaSinks>,
}

impl Engine {
    /// Starts on `backend`: applies every declaration already made (so the node runs every
    /// trigger before it returns), then follows new ones.
    pub async fn start(backend: Backend, settings: Settings, clients: Clients) -> Result<Engine, StartError> {
        let log = backend.log.clone();
        let admission = Arc::new(Admission::new(log.clone(), settings.limits, settings.spans.clone()));
        let mut client =
            DeliveryClient::new(settings.limits.max_event_bytes)?.with_header_encoding(settings.header_encoding);
        if let Some(spans) = settings.spans {
            client = client.with_spans(spans);
        }
        if let Some(issuer) = settings.issuer {
            client = client.with_issuer(issuer);
        }
        let catalog = Arc::new(Catalog::default());
        let kafka_sinks = Arc::new(KafkaSinks::new(catalog.clone(), clients.kafka_producer.clone()));
        let outlets = Outlets {
            admission: admission.clone(),
            http: Arc::new(sinks::HttpPoster::new(client.clone())),
            kafka_sinks: kafka_sinks.clone(),
        };
        let addresses = clients.addresses.clone();
        let sources = Sources::start(outlets, clients, log.state(), backend.placement.clone());
        let dispatcher = Dispatcher::new(log.clone(), client, admission.clone());
        let changes = backend.declarations.changes()?;
        let controller = Arc::new(Controller::new(
            controller::Parts {
                log,
                declarations: backend.declarations.clone(),
                admission: admission.clone(),
                dispatcher,
                sources: sources.clone(),
                kafka_sinks: kafka_sinks.clone(),
                quotas: settings.quotas,
                addresses: addresses.clone(),
            },
            catalog,
        ));
        if let Some(address) = settings.serving_at {
            controller.serving_at(address);
        }
        tokio::spawn(follow(Arc::downgrade(&controller), changes.receiver));
        tokio::spawn(retry_failed(Arc::downgrade(&controller)));
        if let Some(addresses) = &addresses {
            tokio::spawn(follow_addresses(Arc::downgrade(&controller), addresses.changes()));
        }
        controller.applied(changes.replayed).await;
        tracing::info!(declarations = changes.replayed, "declarations applied");
        Ok(Engine { backend, admission, controller, sources, kafka_sinks })
    }

    /// The KafkaSinks: where their HTTP address writes.
    pub fn kafka_sinks(&self) -> &KafkaSinks {
        &self.kafka_sinks
    }

    /// The one way events enter a broker.
    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }

    /// The one way declarations take effect.
    pub fn controller(&self) -> &Controller {
        &self.controller
    }

    /// The sources' runtime (webhooks are answered there).
    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    /// The backend's dead-letter store.
    pub fn dead_letters(&self) -> Arc<dyn DeadLetterStore> {
        self.backend.log.dead_letters()
    }

    /// How far behind each running trigger is.
    pub async fn backlogs(&self) -> Vec<Backlog> {
        self.controller.backlogs().await
    }

    /// Stops: producers and webhooks are refused from now on, sources stop (and the node gives
    /// its slots up), in-flight deliveries get `grace` to finish, and progress is made durable.
    pub async fn shutdown(&self, grace: Duration) {
        self.admission.stop_taking();
        self.sources.shutdown().await;
        self.controller.stop_triggers(grace).await;
    }
}

/// Applies the declaration log's changes, in order, for as long as the engine lives. Each is
/// applied in its own task, so that a panic while applying one is recorded against its
/// declaration (which is then retried) instead of ending the loop: a node that cannot apply
/// one declaration still applies every other, and still starts.
async fn follow(
    controller: std::sync::Weak<Controller>,
    mut changes: tokio::sync::mpsc::UnboundedReceiver<switchyard_log::Change>,
) {
    while let Some(change) = changes.recv().await {
        let Some(controller) = controller.upgrade() else { return };
        let (key, sequence) = (change.key.clone(), change.sequence);
        let applying = controller.clone();
        if let Some(message) = join_panic(tokio::spawn(async move { applying.apply(change).await }).await) {
            controller.apply_panicked(&key, Some(sequence), &message);
        }
    }
}

/// Resolves the object references of triggers and brokers again whenever the resolver says an
/// address may have changed, and now and then (for those that could not be resolved: an object
/// created later, a kind installed later), each round in its own task for the same reason as
/// in [`follow`]. Only the triggers whose addresses changed restart.
async fn follow_addresses(controller: std::sync::Weak<Controller>, mut changes: tokio::sync::watch::Receiver<u64>) {
    let mut interval = tokio::time::interval(controller::RETRY_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut followed = true;
    loop {
        tokio::select! {
            changed = changes.changed(), if followed => followed = changed.is_ok(),
            _ = interval.tick() => {}
        }
        let Some(controller) = controller.upgrade() else { return };
        let resolving = controller.clone();
        if let Some(message) = join_panic(tokio::spawn(async move { resolving.resolve_again().await }).await) {
            tracing::error!(panic = %message, "resolving references again panicked; it is tried again");
            metrics::task_panicked("references");
        }
    }
}

/// Tries declarations that failed to take effect again, now and then, each in its own task
/// for the same reason as in [`follow`].
async fn retry_failed(controller: std::sync::Weak<Controller>) {
    let mut interval = tokio::time::interval(controller::RETRY_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(controller) = controller.upgrade() else { return };
        for key in controller.to_retry() {
            let retrying = controller.clone();
            let retried = key.clone();
            if let Some(message) = join_panic(tokio::spawn(async move { retrying.retry(&retried).await }).await) {
                controller.apply_panicked(&key, None, &message);
            }
        }
    }
}
