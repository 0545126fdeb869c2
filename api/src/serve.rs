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

use crate::config::ServeConfig;
use crate::controller::Controller;
use crate::server::{router, AppState, Limits};

/// Runs the server until a shutdown signal.
pub async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory '{}'", config.data_dir.display()))?;
    let mut log_config = EmbeddedConfig::new(config.data_dir.join("log"));
    log_config.retention_age = config.retention_age;
    log_config.retention_bytes = config.retention_bytes;
    let log: Arc<dyn EventLog> = EmbeddedLog::open(log_config).await.context("cannot open the event log")?;
    let store = Store::open(&config.data_dir.join("meta.redb")).context("cannot open the metadata store")?;
    let dispatcher = Dispatcher::new(log.clone(), Sender::new().context("cannot build the HTTP client")?);
    let controller =
        Controller::start(store, log.clone(), dispatcher).await.context("cannot start brokers and triggers")?;
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
    let _ = stop_http.send(());
    http.await.context("http server task")??;
    tracing::info!("stopped");
    Ok(())
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
