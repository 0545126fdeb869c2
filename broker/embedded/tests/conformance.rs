//! The backend-independent conformance suite, on the embedded log.

use std::sync::Arc;

use switchyard_log::EventLog;
use switchyard_log_embedded::{EmbeddedConfig, EmbeddedLog};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_log_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(EmbeddedConfig::new(dir.path())).await.unwrap();
    let dyn_log: Arc<dyn EventLog> = log.clone();
    switchyard_log::testkit::run_all(dyn_log, "conformance").await.unwrap();
    log.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_with_tiny_segments() {
    // Every check again with segments of a few records, so that reads cross segment files.
    let dir = tempfile::tempdir().unwrap();
    let mut config = EmbeddedConfig::new(dir.path());
    config.segment_bytes = 2048;
    let log = EmbeddedLog::open(config).await.unwrap();
    let dyn_log: Arc<dyn EventLog> = log.clone();
    switchyard_log::testkit::run_all(dyn_log, "tiny").await.unwrap();
    log.close().await;
}
