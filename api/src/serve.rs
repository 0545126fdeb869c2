//! `switchyard serve`: open the data directory, bring up the declared brokers and triggers,
//! and serve HTTP until SIGINT/SIGTERM.

use std::future::IntoFuture;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use switchyard_dispatcher::{Dispatcher, Sender};
use switchyard_log::EventLog;
use switchyard_log_embedded::{EmbeddedConfig, EmbeddedLog};
use switchyard_meta::Store;
use switchyard_sources::Sources;

use crate::config::{LogBackend, ServeConfig};
use crate::controller::{Brokers, Controller, Parts};
use crate::server::{router, AppState, Limits};
use crate::sources::BinarySinks;

/// Runs the server until a shutdown signal.
pub async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    // Installed before anything records, so no early sample is lost.
    crate::metrics::exporter();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory '{}'", config.data_dir.display()))?;
    let exporter = start_otlp(&config)?;
    let spans = exporter.as_ref().map(|e| e.sink());
    let mut sender = Sender::new().context("cannot build the HTTP client")?;
    if let Some(spans) = &spans {
        sender = sender.with_spans(spans.clone());
    }
    let (log, controller) = match &config.log {
        LogBackend::Embedded => {
            let mut log_config = EmbeddedConfig::new(config.data_dir.join("log"));
            log_config.retention_age = config.retention_age;
            log_config.retention_bytes = config.retention_bytes;
            let log: Arc<dyn EventLog> = EmbeddedLog::open(log_config).await.context("cannot open the event log")?;
            let store = Store::open(&config.data_dir.join("meta.redb")).context("cannot open the metadata store")?;
            let brokers = Arc::new(Brokers::default());
            let sinks = Arc::new(BinarySinks::new(brokers.clone(), log.clone(), sender.clone()));
            let sources = Sources::local(sinks, log.state());
            let dispatcher = Dispatcher::new(log.clone(), sender);
            let parts = Parts { store, log: log.clone(), dispatcher, sources, brokers };
            let controller = Controller::start(parts).await.context("cannot start brokers, triggers and sources")?;
            (log, Arc::new(controller))
        }
        LogBackend::Kafka { .. } => start_kafka(&config, sender).await?,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on '{}'", config.listen))?;
    let address = listener.local_addr()?;
    let state = Arc::new(AppState {
        controller,
        log: log.clone(),
        limits: Limits { max_event_bytes: config.max_event_bytes, max_batch_bytes: config.max_batch_bytes },
        base_url: format!("http://{address}"),
        stopping: AtomicBool::new(false),
        spans,
    });
    tracing::info!(%address, data_dir = %config.data_dir.display(), "switchyard listening");
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http = tokio::spawn(
        axum::serve(listener, router(state.clone()))
            .with_graceful_shutdown(async move {
                let _ = http_stopped.await;
            })
            .into_future(),
    );
    shutdown_signal().await;
    // Ingest answers 503 from now on, while the API stays up: in-flight deliveries get their
    // grace period, progress is persisted, and only then does the listener close.
    state.stopping.store(true, Ordering::Release);
    tracing::info!(grace_secs = config.shutdown_grace.as_secs(), "shutting down");
    state.controller.shutdown(config.shutdown_grace).await;
    if let Some(exporter) = exporter {
        // After the deliveries' grace period, so their last spans are sent too.
        exporter.shutdown().await;
    }
    let _ = stop_http.send(());
    http.await.context("http server task")??;
    tracing::info!("stopped");
    Ok(())
}

/// Kafka mode: the log, and a controller that follows the shared declarations. Returns once
/// every declaration already made in the cluster is applied here, so a node is ready only when
/// it runs every trigger.
#[cfg(feature = "kafka")]
async fn start_kafka(config: &ServeConfig, sender: Sender) -> anyhow::Result<(Arc<dyn EventLog>, Arc<Controller>)> {
    use switchyard_log_kafka::{KafkaConfig, KafkaLog};
    let LogBackend::Kafka { bootstrap_servers, topic_prefix, partitions, replication_factor } = &config.log else {
        unreachable!("start_kafka is called in Kafka mode only")
    };
    let mut kafka = KafkaConfig::new(bootstrap_servers.join(","));
    kafka.topic_prefix.clone_from(topic_prefix);
    kafka.partitions = *partitions;
    kafka.replication_factor =
        u16::try_from(*replication_factor).context("invalid config key 'kafka.replication_factor'")?;
    let log: Arc<dyn EventLog> = Arc::new(KafkaLog::connect(kafka.clone()).await.context("cannot connect to kafka")?);
    let (declarations, changes) =
        crate::cluster::KafkaDeclarations::open(&kafka).await.context("cannot follow the shared declarations")?;
    let known = declarations.received();
    let store = Store::in_memory().context("cannot open the metadata store")?;
    let brokers = Arc::new(Brokers::default());
    let sinks = Arc::new(BinarySinks::new(brokers.clone(), log.clone(), sender.clone()));
    let sources = crate::cluster::KafkaPlacement::start_sources(&kafka, sinks, log.state())
        .await
        .context("cannot join the cluster's source placement")?;
    let dispatcher = Dispatcher::new(log.clone(), sender);
    let parts = Parts { store, log: log.clone(), dispatcher, sources, brokers };
    let controller = Arc::new(Controller::shared(parts, Arc::new(declarations)));
    let applier = Arc::downgrade(&controller);
    tokio::spawn(async move {
        let mut changes = changes;
        while let Some(change) = changes.recv().await {
            let Some(controller) = applier.upgrade() else { break };
            controller.apply(change).await;
        }
    });
    controller.applied(known).await;
    tracing::info!(declarations = known, prefix = %kafka.topic_prefix, "following the shared declarations");
    Ok((log, controller))
}

#[cfg(not(feature = "kafka"))]
async fn start_kafka(_: &ServeConfig, _: Sender) -> anyhow::Result<(Arc<dyn EventLog>, Arc<Controller>)> {
    anyhow::bail!("invalid config key 'log': this switchyard was built without the 'kafka' feature")
}

#[cfg(feature = "otlp")]
fn start_otlp(config: &ServeConfig) -> anyhow::Result<Option<crate::otlp::OtlpExporter>> {
    let Some(endpoint) = &config.otlp_endpoint else { return Ok(None) };
    Ok(Some(crate::otlp::OtlpExporter::start(endpoint).context("cannot build the OTLP HTTP client")?))
}

/// Without the `otlp` feature there is no exporter; asking for one is a configuration error
/// rather than silently tracing nothing.
#[cfg(not(feature = "otlp"))]
fn start_otlp(config: &ServeConfig) -> anyhow::Result<Option<NoExporter>> {
    match &config.otlp_endpoint {
        None => Ok(None),
        Some(endpoint) => anyhow::bail!(
            "invalid config key 'tracing.otlp_endpoint': '{endpoint}' is set, but this switchyard was built without the 'otlp' feature"
        ),
    }
}

#[cfg(not(feature = "otlp"))]
enum NoExporter {}

#[cfg(not(feature = "otlp"))]
impl NoExporter {
    fn sink(&self) -> Arc<dyn switchyard_event::tracecontext::SpanSink> {
        match *self {}
    }

    async fn shutdown(self) {}
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => return interrupt.await.unwrap_or_default(),
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    interrupt.await.unwrap_or_default();
}
