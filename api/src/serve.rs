//! `switchyard serve`: open the backend, start the engine on it (every declaration already
//! made is applied first), and serve HTTP until SIGINT/SIGTERM. The only place that names a
//! concrete backend.

mod http;
pub(crate) mod tls;

use std::sync::Arc;

use anyhow::Context;
use switchyard_engine::sealed::{SealedDeclarations, SecretsKey};
use switchyard_engine::{Engine, Quotas, Settings};
use switchyard_event::limits::EventLimits;
use switchyard_log::Backend;
use switchyard_log_embedded::EmbeddedConfig;
use switchyard_sources::{Clients, KubeCluster};

use crate::config::{LogBackend, SecretsConfig, ServeConfig};
use crate::routes::{router, AppState};

/// Runs the server until a shutdown signal.
pub async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    // Installed before anything records, so no early sample is lost.
    crate::metrics::exporter();
    // Before any HTTP client is built: every client and the declaration check read it.
    switchyard_dispatcher::outbound::install(config.outbound.clone());
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory '{}'", config.data_dir.display()))?;
    let exporter = start_otlp(&config)?;
    // Before anything is opened: a certificate that cannot be served stops the start here.
    let tls = config.tls.clone().map(tls::Tls::load).transpose()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let backend = match &config.log {
        LogBackend::Embedded => {
            let mut log_config = EmbeddedConfig::new(config.data_dir.join("log"));
            log_config.retention_age = config.retention_age;
            log_config.retention_bytes = config.retention_bytes;
            log_config.retention_total_bytes = config.retention_total_bytes;
            let backend = switchyard_log_embedded::open(log_config, &config.data_dir.join("meta.redb"))
                .await
                .context("cannot open the event log")?;
            match configured_secrets_key(&config.secrets)? {
                Some(key) => sealed(backend, key),
                None => backend,
            }
        }
        LogBackend::Kafka { .. } => open_kafka(&config).await?,
    };
    switchyard_engine::metrics::describe(backend.log.as_ref());
    // Bound before the engine starts, so that the declarations it applies know this node's
    // address (triggers delivering to a KafkaSink deliver to it); connections wait in the
    // backlog until the server below takes them.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on '{}'", config.listen))?;
    let address = listener.local_addr()?;
    let admin_listener = match config.admin_listen {
        Some(admin) => Some(
            tokio::net::TcpListener::bind(admin)
                .await
                .with_context(|| format!("cannot listen on '{admin}' (admin_listen)"))?,
        ),
        None => None,
    };
    let admin_address = admin_listener.as_ref().map(tokio::net::TcpListener::local_addr).transpose()?;
    switchyard_dispatcher::outbound::serving_at(address);
    let issuer = config.identity.issuer.as_ref().map_or_else(|| format!("{scheme}://{address}"), |url| url.to_string());
    let issuer = Arc::new(
        switchyard_dispatcher::identity::Issuer::open(&issuer, config.identity.key_file.as_deref(), &config.data_dir)
            .context("cannot set up identified deliveries")?,
    );
    let settings = Settings {
        limits: EventLimits {
            max_event_bytes: config.max_event_bytes,
            max_attributes: config.max_event_attributes,
            max_batch_events: config.max_batch_events,
            max_attribute_name_bytes: config.max_attribute_name_bytes,
            max_attribute_value_bytes: config.max_attribute_value_bytes,
        },
        spans: exporter.as_ref().map(|exporter| exporter.sink()),
        header_encoding: config.header_encoding,
        quotas: Quotas {
            brokers: config.max_brokers_per_namespace,
            triggers: config.max_triggers_per_namespace,
            sources: config.max_sources_per_namespace,
        },
        serving_at: Some(address),
        issuer: Some(issuer.clone()),
    };
    let mut clients = clients();
    let policy = switchyard_dispatcher::outbound::installed();
    clients.kafka = clients.kafka.map(|kafka| switchyard_dispatcher::outbound::guard_kafka(kafka, policy));
    let kubernetes = match &config.kubernetes {
        Some(kubernetes) => {
            let (client, url) = switchyard_kube::client(kubernetes.kubeconfig.as_deref()).await?;
            tracing::info!(api_server = %url, class = %kubernetes.broker_class, "using kubernetes");
            clients.addresses = Some(Arc::new(switchyard_kube::KubeAddresses::new(client.clone())));
            clients.kubernetes = Some(KubeCluster { client: client.clone(), url });
            Some((client, kubernetes.broker_class.clone(), kubernetes.advertised_url.clone()))
        }
        None => None,
    };
    // Before the engine delivers: its triggers' deliveries to this node go in-process.
    let node_addresses = Arc::new(crate::routes::NodeAddresses::default());
    switchyard_dispatcher::this_node::install(node_addresses.clone());
    let engine = Arc::new(
        Engine::start(backend, settings, clients).await.context("cannot start brokers, triggers and sources")?,
    );
    let broker_class = kubernetes.map(|(client, class, advertised_url)| {
        let base_url = advertised_url.map_or_else(
            || format!("{scheme}://{}", loopback_if_unspecified(address)),
            |url| url.as_str().trim_end_matches('/').to_owned(),
        );
        let settings = switchyard_kube::broker_class::BrokerClass { class, base_url };
        switchyard_kube::broker_class::start(client, engine.clone(), settings)
    });
    let state = Arc::new(AppState {
        engine,
        base_url: format!("{scheme}://{address}"),
        max_batch_bytes: config.max_batch_bytes,
        max_api_body_bytes: config.http.max_api_body_bytes,
        guard: Arc::new(crate::auth::Guard::new(config.auth.clone(), address)),
        issuer,
    });
    node_addresses.serve(state.clone());
    tracing::info!(
        version = crate::VERSION,
        %address,
        data_dir = %config.data_dir.display(),
        max_connections = config.http.max_connections,
        admin_address = admin_address.map(tracing::field::display),
        tls = tls.is_some(),
        client_certificates = config.tls.as_ref().is_some_and(|tls| tls.client_ca_file.is_some()),
        "switchyard listening"
    );
    let (stop_http, http_stopped) = tokio::sync::watch::channel(false);
    let limits = http::ServerLimits { http: config.http.clone(), max_batch_bytes: config.max_batch_bytes };
    // Listening for SIGTERM before telling anyone we are ready, so that a stop right after is a
    // graceful one rather than the default disposition's instant death.
    let stop_requested = shutdown_signal();
    let tls_watch = tls.as_ref().map(tls::Tls::watch);
    let main_router = match admin_address {
        Some(admin) => crate::routes::without_admin_api(router(state.clone()), admin),
        None => router(state.clone()),
    };
    let admin_http = admin_listener.map(|admin| {
        let serving = http::serve(admin, router(state.clone()), limits.clone(), tls.clone(), http_stopped.clone());
        tokio::spawn(serving)
    });
    let http = tokio::spawn(http::serve(listener, main_router, limits, tls, http_stopped));
    // `/readyz` answers 200 from here: the engine has started, the listener has been accepting
    // into its backlog since it was bound, and the task just spawned answers what waits there.
    let log = match &config.log {
        LogBackend::Embedded => "embedded",
        LogBackend::Kafka { .. } => "kafka",
    };
    systemd::ready(&format!("serving on {address} ({log} log)"));
    let watchdog = systemd::watchdog();
    stop_requested.await;
    // Ingest and `/readyz` answer 503 from now on, while the API (and `/healthz`) stays up: in-flight deliveries get their
    // grace period, progress is persisted, and only then does the listener close.
    tracing::info!(grace_secs = config.shutdown_grace.as_secs(), "shutting down");
    systemd::stopping(config.shutdown_grace);
    if let Some(broker_class) = broker_class {
        broker_class.abort();
    }
    state.engine.shutdown(config.shutdown_grace).await;
    if let Some(exporter) = exporter {
        // After the deliveries' grace period, so their last spans are sent too.
        exporter.shutdown().await;
    }
    let _ = stop_http.send(true);
    http.await.context("http server task")?;
    if let Some(admin_http) = admin_http {
        admin_http.await.context("admin http server task")?;
    }
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    if let Some(tls_watch) = tls_watch {
        tls_watch.abort();
    }
    tracing::info!("stopped");
    Ok(())
}

/// The outside clients this build has, for the sources and sinks that need them.
fn clients() -> Clients {
    Clients {
        #[cfg(feature = "kafka")]
        kafka: Some(Arc::new(switchyard_log_kafka::KafkaRecords)),
        #[cfg(not(feature = "kafka"))]
        kafka: None,
        #[cfg(feature = "kafka")]
        kafka_producer: Some(Arc::new(switchyard_log_kafka::KafkaProducers::default())),
        #[cfg(not(feature = "kafka"))]
        kafka_producer: None,
        kubernetes: None,
        addresses: None,
    }
}

/// `address` with an unspecified IP (0.0.0.0, ::) replaced by loopback.
fn loopback_if_unspecified(mut address: std::net::SocketAddr) -> std::net::SocketAddr {
    if address.ip().is_unspecified() {
        address.set_ip(match address {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    address
}

/// Kafka mode: the log, the shared declarations and the sources' placement on the cluster.
#[cfg(feature = "kafka")]
async fn open_kafka(config: &ServeConfig) -> anyhow::Result<Backend> {
    use switchyard_log_kafka::KafkaConfig;
    let LogBackend::Kafka { bootstrap_servers, topic_prefix, partitions, replication_factor, security } = &config.log
    else {
        unreachable!("open_kafka is called in Kafka mode only")
    };
    let mut kafka = KafkaConfig::new(bootstrap_servers.join(","));
    kafka.topic_prefix.clone_from(topic_prefix);
    kafka.partitions = *partitions;
    kafka.replication_factor =
        u16::try_from(*replication_factor).context("invalid config key 'kafka.replication_factor'")?;
    kafka.properties = security.properties()?;
    tracing::info!(prefix = %kafka.topic_prefix, "joining the kafka cluster");
    let backend = switchyard_log_kafka::open(kafka.clone()).await.context("cannot connect to kafka")?;
    let key = match configured_secrets_key(&config.secrets)? {
        Some(key) => key,
        None => {
            let candidate = SecretsKey::generate()?;
            let agreed = switchyard_log_kafka::shared_key(&kafka, "secrets", &candidate)
                .await
                .context("cannot agree on the cluster's secrets key")?;
            tracing::info!(
                topic = %kafka.keys_topic(),
                "inline secrets are sealed in the declarations topic with the cluster's key, kept in its own topic: set [secrets] key_file to keep the key out of kafka"
            );
            SecretsKey::from_bytes(&agreed)?
        }
    };
    Ok(sealed(backend, key))
}

/// The backend with its declarations' inline secrets sealed under `key`.
fn sealed(backend: Backend, key: SecretsKey) -> Backend {
    Backend { declarations: Arc::new(SealedDeclarations::new(backend.declarations, key)), ..backend }
}

/// The `[secrets]` key, if one is given: read and checked.
fn configured_secrets_key(secrets: &SecretsConfig) -> anyhow::Result<Option<SecretsKey>> {
    if let Some(text) = &secrets.env_key {
        let key = SecretsKey::from_base64(text).context("invalid environment variable 'SWITCHYARD_SECRETS_KEY'")?;
        return Ok(Some(key));
    }
    let Some(path) = &secrets.key_file else { return Ok(None) };
    let invalid = || format!("invalid config key 'secrets.key_file': '{}'", path.display());
    let text = std::fs::read_to_string(path).with_context(invalid)?;
    Ok(Some(SecretsKey::from_base64(&text).with_context(invalid)?))
}

#[cfg(not(feature = "kafka"))]
async fn open_kafka(_: &ServeConfig) -> anyhow::Result<Backend> {
    anyhow::bail!("invalid config key 'log': this switchyard was built without the 'kafka' feature")
}

#[cfg(feature = "otlp")]
fn start_otlp(config: &ServeConfig) -> anyhow::Result<Option<switchyard_engine::otlp::OtlpExporter>> {
    let Some(endpoint) = &config.otlp_endpoint else { return Ok(None) };
    Ok(Some(switchyard_engine::otlp::OtlpExporter::start(endpoint).context("cannot build the OTLP HTTP client")?))
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

/// Listens for SIGINT and SIGTERM from the moment it is called (a signal that comes before the
/// returned future is awaited is not lost), and resolves at the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let listen = |kind: SignalKind| match signal(kind) {
            Ok(signal) => Some(signal),
            Err(error) => {
                tracing::warn!(%error, signal = kind.as_raw_value(), "cannot listen for a stop signal");
                None
            }
        };
        let (interrupt, terminate) = (listen(SignalKind::interrupt()), listen(SignalKind::terminate()));
        async move {
            let received = |signal: Option<tokio::signal::unix::Signal>| async move {
                match signal {
                    Some(mut signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = received(interrupt) => {}
                () = received(terminate) => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        tokio::signal::ctrl_c().await.unwrap_or_default();
    }
}

/// sd_notify(3): what a service manager that speaks systemd's notification protocol is told,
/// when it set `NOTIFY_SOCKET` (a `Type=notify` unit); nothing happens otherwise. A failure to
/// tell it is logged and never fatal: the server serves either way, and a READY=1 that never
/// arrived is what systemd's start timeout is for.
mod systemd {
    use std::time::Duration;

    use sd_notify::NotifyState;

    /// Time the stop may take beyond the deliveries' grace: sources stop, the last spans are
    /// exported and open connections get up to 5 s to close (`http::CLOSE_WAIT`).
    const STOP_MARGIN: Duration = Duration::from_secs(20);

    /// `READY=1`: the node answers `/readyz` with 200.
    pub(super) fn ready(status: &str) {
        send("READY=1", &[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// `STOPPING=1`, and `EXTEND_TIMEOUT_USEC` for the drain: systemd then waits at least the
    /// grace plus [`STOP_MARGIN`] before it kills, even when the unit's `TimeoutStopSec` is lower
    /// (a `shutdown_grace_secs` raised without raising it too).
    pub(super) fn stopping(grace: Duration) {
        let status = format!("stopping: in-flight deliveries get {} s to finish", grace.as_secs());
        let extend = u32::try_from((grace + STOP_MARGIN).as_micros()).unwrap_or(u32::MAX);
        send(
            "STOPPING=1",
            &[NotifyState::Stopping, NotifyState::Status(&status), NotifyState::ExtendTimeoutUsec(extend)],
        );
    }

    /// With `WatchdogSec=` in the unit (systemd sets `WATCHDOG_USEC`): `WATCHDOG=1` at half the
    /// interval, from a task of the server's runtime. It proves that runtime still runs its tasks
    /// and timers (a runtime whose every worker is blocked misses it, and systemd restarts the
    /// node); it does not prove that each broker or trigger makes progress.
    pub(super) fn watchdog() -> Option<tokio::task::JoinHandle<()>> {
        let interval = sd_notify::watchdog_enabled()? / 2;
        tracing::info!(interval_ms = interval.as_millis(), "pinging the systemd watchdog");
        Some(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                send("WATCHDOG=1", &[NotifyState::Watchdog]);
            }
        }))
    }

    fn send(what: &str, states: &[NotifyState<'_>]) {
        let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else { return };
        match sd_notify::notify(states) {
            Ok(()) => tracing::debug!(socket = %socket.to_string_lossy(), "notified the service manager: {what}"),
            Err(error) => tracing::warn!(
                %error,
                socket = %socket.to_string_lossy(),
                "cannot notify the service manager: {what}"
            ),
        }
    }
}
