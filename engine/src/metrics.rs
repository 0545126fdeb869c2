//! The engine's series, and the help text of every series the node records (the engine's, the
//! dispatcher's, the sources' and the log backend's, the last through `EventLog::metrics`), so
//! the binary's exporter knows none of them by name.
//!
//! Names follow `switchyard_<thing>_<unit>[_total]`; labels are closed sets.

use std::time::Duration;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use switchyard_dispatcher::metrics as dispatch;
use switchyard_event::http::ContentMode;
use switchyard_log::{Admitted, EventLog, MetricKind, Origin, Refusal};
use switchyard_sources::metrics as sources;

/// Events that entered a broker, by `origin` (`ingest`, `source`, `reply`, `redrive`).
pub const ADMITTED: &str = "switchyard_admitted_events_total";
/// Events refused entry, by `origin` and `reason` (`stopping`, `unknown_broker`, `too_large`,
/// `too_many_attributes`, `too_many_events`, `unavailable`).
pub const REFUSED: &str = "switchyard_admission_refused_events_total";
/// Events accepted at ingest, by content `mode`.
pub const INGEST_EVENTS: &str = "switchyard_ingest_events_total";
/// Request body bytes accepted at ingest.
pub const INGEST_BYTES: &str = "switchyard_ingest_bytes_total";
/// Reply events from subscribers, by `outcome` (`written`, `dropped` for a spent hop budget,
/// `failed` when the broker did not take them).
pub const REPLIES: &str = "switchyard_reply_events_total";
/// Time from the append of producers' or sources' events to their being durable (fsynced, or
/// acknowledged by Kafka), whichever the backend: one sample per accepted request. Replies are
/// counted in [`REPLIES`].
pub const APPEND_DURATION: &str = "switchyard_log_append_duration_seconds";
/// Declarations that could not be applied on this node, by `kind` (retried; the resource's
/// status says why).
pub const DECLARATIONS_FAILED: &str = "switchyard_declaration_failures_total";
/// Events given to KafkaSinks, by `outcome`: `written` (Kafka acknowledged them) or `failed`
/// (the writer was answered with an error: a trigger retries, a source keeps trying).
pub const KAFKA_SINK_EVENTS: &str = "switchyard_kafkasink_events_total";

/// Object references (a trigger's subscriber or dead-letter sink, a broker's dead-letter sink)
/// that cannot be resolved through the API server now: their triggers wait.
pub const UNRESOLVED_REFERENCES: &str = "switchyard_unresolved_references";

pub(crate) fn unresolved_references(count: usize) {
    metrics::gauge!(UNRESOLVED_REFERENCES).set(count as f64);
}

pub(crate) fn kafka_sink_records(outcome: &'static str, events: usize) {
    metrics::counter!(KAFKA_SINK_EVENTS, "outcome" => outcome).increment(events as u64);
}

pub(crate) fn appended(origin: &Origin, elapsed: Duration) {
    if matches!(origin, Origin::Ingest { .. } | Origin::Source(_)) {
        metrics::histogram!(APPEND_DURATION).record(elapsed.as_secs_f64());
    }
}

pub(crate) fn admitted(origin: &Origin, events: usize, outcome: &Result<Admitted, Refusal>) {
    match outcome {
        Ok(Admitted::Stored) => {
            metrics::counter!(ADMITTED, "origin" => origin.label()).increment(events as u64);
            if let Origin::Ingest { mode, body_bytes, .. } = origin {
                metrics::counter!(INGEST_EVENTS, "mode" => mode_label(*mode)).increment(events as u64);
                metrics::counter!(INGEST_BYTES).increment(*body_bytes as u64);
            }
            reply(origin, "written");
        }
        Ok(Admitted::HopsSpent) => reply(origin, "dropped"),
        Err(refusal) => refused(origin, events, refusal),
    }
}

/// Events refused entry.
pub(crate) fn refused(origin: &Origin, events: usize, refusal: &Refusal) {
    let reason = match refusal {
        Refusal::Stopping => "stopping",
        Refusal::UnknownBroker(_) => "unknown_broker",
        Refusal::Limit(limit) => limit.reason(),
        Refusal::Unavailable(_) => "unavailable",
    };
    metrics::counter!(REFUSED, "origin" => origin.label(), "reason" => reason).increment(events as u64);
    reply(origin, "failed");
}

/// What became of a subscriber's reply, when `origin` is one.
fn reply(origin: &Origin, outcome: &'static str) {
    if matches!(origin, Origin::Reply { .. } | Origin::Redrive { .. }) {
        metrics::counter!(REPLIES, "outcome" => outcome).increment(1);
    }
}

fn mode_label(mode: ContentMode) -> &'static str {
    match mode {
        ContentMode::Binary => "binary",
        ContentMode::Structured => "structured",
        ContentMode::Batched => "batch",
    }
}

pub(crate) fn declaration_failed(kind: &'static str) {
    metrics::counter!(DECLARATIONS_FAILED, "kind" => kind).increment(1);
}

pub(crate) fn task_panicked(task: &'static str) {
    metrics::counter!(dispatch::TASK_PANICS, "task" => task).increment(1);
}

/// Gives every series the node records its help text (and unit), through the `metrics`
/// facade's global recorder: call once the recorder is installed.
pub fn describe(log: &dyn EventLog) {
    describe_counter!(ADMITTED, "Events that entered a broker, by origin.");
    describe_counter!(REFUSED, "Events refused entry into a broker, by origin and reason.");
    describe_counter!(INGEST_EVENTS, "Events accepted at ingest (durable), by content mode.");
    describe_counter!(INGEST_BYTES, Unit::Bytes, "Request body bytes of accepted ingest requests.");
    describe_counter!(REPLIES, "Reply events from subscribers, by outcome.");
    describe_histogram!(
        APPEND_DURATION,
        Unit::Seconds,
        "Time from the append of producers' or sources' events to their being durable."
    );
    describe_counter!(DECLARATIONS_FAILED, "Declarations that could not be applied on this node, by kind.");
    describe_counter!(KAFKA_SINK_EVENTS, "Events given to KafkaSinks, by outcome (written, failed).");
    describe_gauge!(
        UNRESOLVED_REFERENCES,
        "Object references of triggers and brokers that cannot be resolved through the API server now."
    );
    describe_counter!(
        dispatch::TASK_PANICS,
        "Panics caught in tasks (delivery, redrive, worker, fanout, source, declarations), by task; the work is retried or the task restarted."
    );
    describe_counter!(
        switchyard_dispatcher::filter::FILTER_BUDGET_EXHAUSTED,
        "Filter evaluations stopped by their work budget (the event did not match), by dialect."
    );
    describe_counter!(sources::EVENTS, "Events of sources, by kind and outcome.");
    describe_counter!(
        sources::KAFKA_BAD_RECORDS,
        "KafkaSource records that are not what they claim (wrapped) or cannot be events (skipped), by reason."
    );
    describe_counter!(
        sources::BAD_MESSAGES,
        "Message-queue source messages that are not what they claim (wrapped) or cannot be events (skipped), by kind and reason."
    );
    describe_counter!(
        sources::RECONNECTS,
        "Times a message-queue source lost or could not reach its server and connects again, by kind."
    );
    describe_counter!(
        switchyard_sources::apiserver::RELISTS,
        "ApiServerSource lists after a stream's first (a watch that expired with 410 Gone, or a reconnection), by kind; only what changed is sent."
    );
    describe_counter!(
        switchyard_sources::apiserver::WATCH_ERRORS,
        "ApiServerSource errors listing or watching the API server (retried with backoff)."
    );
    describe_counter!(
        dispatch::UNDECODABLE_RECORDS,
        "Records that could not be decoded, moved to a trigger's dead-letter store (once per trigger)."
    );
    describe_counter!(dispatch::DELIVERY_ATTEMPTS, "Delivery attempts (each retry counts), by outcome.");
    describe_counter!(
        switchyard_dispatcher::outbound::OUTBOUND_REFUSED,
        "Connections the outbound guard refused (subscribers, dead-letter sinks, source sinks, KafkaSource clusters), by reason; each is a failed attempt."
    );
    describe_histogram!(
        dispatch::DELIVERY_DURATION,
        Unit::Seconds,
        "Time from sending a delivery attempt to its answer."
    );
    describe_counter!(
        dispatch::DEAD_LETTERED,
        "Events whose delivery failed for good, by destination (sink or store)."
    );
    for series in log.metrics() {
        let unit = match series.unit {
            "seconds" => Some(Unit::Seconds),
            "bytes" => Some(Unit::Bytes),
            _ => None,
        };
        match (series.kind, unit) {
            (MetricKind::Counter, Some(unit)) => describe_counter!(series.name, unit, series.help),
            (MetricKind::Counter, None) => describe_counter!(series.name, series.help),
            (MetricKind::Gauge, Some(unit)) => describe_gauge!(series.name, unit, series.help),
            (MetricKind::Gauge, None) => describe_gauge!(series.name, series.help),
            (MetricKind::Histogram, Some(unit)) => describe_histogram!(series.name, unit, series.help),
            (MetricKind::Histogram, None) => describe_histogram!(series.name, series.help),
        }
    }
}
