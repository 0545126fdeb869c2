//! Prometheus `/metrics`: the exporter behind the `metrics` facade that the log, the
//! dispatcher and ingest record into, plus the per-trigger backlog gauges, computed when
//! scraped (so a deleted trigger's series disappear with it).
//!
//! Names follow `switchyard_<thing>_<unit>[_total]`; every label is a closed set except the
//! backlog gauges' `namespace`/`trigger`, which are bounded by the declared triggers.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::Duration;

use axum::http::StatusCode;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use switchyard_dispatcher::{metrics as dispatch, Backlog};
use switchyard_event::http::ContentMode;
use switchyard_log_embedded as embedded;

/// Events accepted at ingest, by content `mode`.
pub const INGEST_EVENTS: &str = "switchyard_ingest_events_total";
/// Request body bytes accepted at ingest.
pub const INGEST_BYTES: &str = "switchyard_ingest_bytes_total";
/// Ingest requests refused, by `reason`.
pub const INGEST_REJECTED: &str = "switchyard_ingest_rejected_requests_total";
/// Time to answer an ingest request (accepted or not), including the durable append.
pub const INGEST_DURATION: &str = "switchyard_ingest_duration_seconds";
/// Time from ingest's append call to the events being durable (fsynced, or acknowledged by
/// Kafka), whichever the backend.
pub const APPEND_DURATION: &str = "switchyard_log_append_duration_seconds";

/// Latencies from 100 µs to 60 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Appends per fsync, 1 to 1024.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];
/// How often histogram samples are folded into the buckets.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The process-wide exporter, installed on first use (the `metrics` facade has one global
/// recorder; a second server in the same process shares it).
pub fn exporter() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(embedded::METRIC_FSYNC_BATCH.to_owned()), BATCH_BUCKETS)
            })
            .expect("bucket lists are non-empty")
            .build_recorder();
        let handle = recorder.handle();
        // Only fails when another recorder is installed: then ours stays empty, which the
        // scrape makes visible, rather than failing the server.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics shows only the backlog");
        }
        describe();
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".to_owned())
            .spawn(move || loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                upkeep.run_upkeep();
            })
            .expect("cannot start the metrics upkeep thread");
        handle
    })
}

fn describe() {
    use metrics::{describe_counter, describe_histogram, Unit};
    describe_counter!(INGEST_EVENTS, "Events accepted at ingest (durable), by content mode.");
    describe_counter!(INGEST_BYTES, Unit::Bytes, "Request body bytes of accepted ingest requests.");
    describe_counter!(INGEST_REJECTED, "Ingest requests refused, by reason.");
    describe_histogram!(INGEST_DURATION, Unit::Seconds, "Time to answer an ingest request.");
    describe_counter!(dispatch::DELIVERY_ATTEMPTS, "Delivery attempts (each retry counts), by outcome.");
    describe_histogram!(
        dispatch::DELIVERY_DURATION,
        Unit::Seconds,
        "Time from sending a delivery attempt to its answer."
    );
    describe_counter!(
        dispatch::DEAD_LETTERED,
        "Events whose delivery failed for good, by destination (sink or store)."
    );
    describe_counter!(dispatch::REPLIES, "Reply events from subscribers, by outcome.");
    describe_histogram!(APPEND_DURATION, Unit::Seconds, "Time from an append to its events being durable.");
    describe_histogram!(embedded::METRIC_FSYNC_BATCH, "Append requests made durable by one fsync (group commit).");
    describe_counter!(embedded::METRIC_APPENDED_EVENTS, "Events made durable in the embedded log.");
    describe_counter!(embedded::METRIC_WRITTEN_BYTES, Unit::Bytes, "Record bytes made durable in the embedded log.");
    describe_counter!(embedded::METRIC_FSYNCS, "Data fsyncs of the embedded log.");
}

/// Records an accepted ingest request.
pub fn ingested(mode: ContentMode, events: usize, bytes: usize) {
    let mode = match mode {
        ContentMode::Binary => "binary",
        ContentMode::Structured => "structured",
        ContentMode::Batched => "batch",
    };
    metrics::counter!(INGEST_EVENTS, "mode" => mode).increment(events as u64);
    metrics::counter!(INGEST_BYTES).increment(bytes as u64);
}

/// Records how long ingest's append took to be durable (successful or not).
pub fn appended(elapsed: Duration) {
    metrics::histogram!(APPEND_DURATION).record(elapsed.as_secs_f64());
}

/// Records an ingest request's answer time and, when refused, why (from its status: every
/// refusal of ingest has its own).
pub fn ingest_answered(status: StatusCode, elapsed: Duration) {
    metrics::histogram!(INGEST_DURATION).record(elapsed.as_secs_f64());
    let reason = match status.as_u16() {
        200..=299 => return,
        400 => "invalid_event",
        404 => "unknown_broker",
        405 => "method_not_allowed",
        413 => "too_large",
        415 => "unsupported_media_type",
        503 => "unavailable",
        _ => "internal_error",
    };
    metrics::counter!(INGEST_REJECTED, "reason" => reason).increment(1);
}

/// The exposition: everything recorded, then the backlog gauges.
pub fn render(backlogs: &[Backlog]) -> String {
    let mut text = exporter().render();
    trigger_gauge(
        &mut text,
        dispatch::TRIGGER_BACKLOG,
        "Events between a trigger's committed position and the end of its broker's log.",
        backlogs,
        |backlog| backlog.events as f64,
    );
    trigger_gauge(
        &mut text,
        dispatch::TRIGGER_BACKLOG_AGE,
        "Age of the oldest event a trigger has read and not yet delivered or dead-lettered.",
        backlogs,
        |backlog| backlog.oldest_age.as_secs_f64(),
    );
    text
}

fn trigger_gauge(text: &mut String, name: &str, help: &str, backlogs: &[Backlog], value: impl Fn(&Backlog) -> f64) {
    let _ = writeln!(text, "# HELP {name} {help}");
    let _ = writeln!(text, "# TYPE {name} gauge");
    for backlog in backlogs {
        let _ = writeln!(text, "{name}{{{}}} {}", labels(backlog), value(backlog));
    }
}

/// Namespaces and trigger names are DNS labels: nothing to escape.
fn labels(backlog: &Backlog) -> String {
    format!("namespace=\"{}\",trigger=\"{}\"", backlog.namespace, backlog.name)
}
