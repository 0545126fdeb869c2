//! The backend-independent conformance suite, on the in-memory log: under paused time (as the
//! dispatcher's tests drive it) and under real time on several threads.

use std::sync::Arc;

use switchyard_log::testkit::memory::MemoryLog;
use switchyard_log::EventLog;

#[tokio::test(start_paused = true)]
async fn memory_log_passes_the_conformance_suite_under_paused_time() {
    let log: Arc<dyn EventLog> = MemoryLog::new();
    switchyard_log::testkit::run_all(log, "conformance").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_log_passes_the_conformance_suite_on_threads() {
    let log: Arc<dyn EventLog> = MemoryLog::new();
    switchyard_log::testkit::run_all(log, "conformance").await.unwrap();
}
