//! The dispatcher's metrics, recorded through the `metrics` facade: the binary installs the
//! Prometheus exporter; without a recorder they cost next to nothing. Labels are closed sets.

use std::time::Duration;

use crate::retry::Failure;

/// Delivery attempts, by `outcome`.
pub const DELIVERY_ATTEMPTS: &str = "switchyard_delivery_attempts_total";
/// Time from sending an attempt to its answer (or its failure).
pub const DELIVERY_DURATION: &str = "switchyard_delivery_duration_seconds";
/// Events whose delivery failed for good, by `destination` (`sink` or `store`).
pub const DEAD_LETTERED: &str = "switchyard_dead_lettered_events_total";
/// Records that could not be decoded and were moved to a trigger's dead-letter store instead
/// of being filtered or delivered: counted once per trigger that moved the record aside.
pub const UNDECODABLE_RECORDS: &str = "switchyard_undecodable_records_total";
/// Panics caught in the dispatcher's tasks, by `task` (`delivery`, `redrive`, `worker`,
/// `fanout`): each was logged at error and survived (see `supervise.rs`).
pub const TASK_PANICS: &str = "switchyard_task_panics_total";
/// Events behind a trigger: the log's end minus the trigger's committed position.
pub const TRIGGER_BACKLOG: &str = "switchyard_trigger_backlog";
/// Age of the oldest event a trigger has read and not yet brought to a final outcome.
pub const TRIGGER_BACKLOG_AGE: &str = "switchyard_trigger_backlog_age_seconds";

/// Records one attempt's outcome and duration.
pub(crate) fn attempt<T>(result: &Result<T, Failure>, elapsed: Duration) {
    metrics::counter!(DELIVERY_ATTEMPTS, "outcome" => attempt_outcome(result)).increment(1);
    metrics::histogram!(DELIVERY_DURATION).record(elapsed.as_secs_f64());
}

fn attempt_outcome<T>(result: &Result<T, Failure>) -> &'static str {
    match result {
        Ok(_) => "success",
        Err(Failure { status: Some(status), .. }) if status.is_client_error() => "client_error",
        Err(Failure { status: Some(status), .. }) if status.is_server_error() => "server_error",
        Err(Failure { status: Some(_), .. }) => "unexpected_status",
        Err(failure) if failure.is_timeout() => "timeout",
        Err(_) => "network_error",
    }
}

/// An event went to the dead-letter sink (`sink`) or the dead-letter store (`store`).
pub(crate) fn dead_lettered(destination: &'static str) {
    metrics::counter!(DEAD_LETTERED, "destination" => destination).increment(1);
}

/// A record that could not be decoded was moved to a trigger's dead-letter store.
pub(crate) fn undecodable() {
    metrics::counter!(UNDECODABLE_RECORDS).increment(1);
}

/// A task (`delivery`, `redrive`, `worker` or `fanout`) panicked.
pub(crate) fn task_panicked(task: &'static str) {
    metrics::counter!(TASK_PANICS, "task" => task).increment(1);
}
