//! The series every source shares; a source's own ones live in its folder.

/// Events by source kind and what became of them: `sent` (durable in the sink), `duplicate`
/// (a webhook redelivery of an event already taken), `ignored` (a webhook request carrying
/// nothing to send), `refused` (a webhook request refused), `failed` (not taken by the sink in
/// time; a webhook sender retries, an activity keeps trying).
pub const EVENTS: &str = "switchyard_source_events_total";

pub(crate) fn events(kind: &'static str, outcome: &'static str, count: usize) {
    if count > 0 {
        metrics::counter!(EVENTS, "kind" => kind, "outcome" => outcome).increment(count as u64);
    }
}

/// KafkaSource records that are not what they claim or cannot be events, by `reason`:
/// `invalid_cloudevent` (claims to be a CloudEvent but is not a valid one: wrapped and sent),
/// `unmappable` (no event can carry it: skipped). Either way the offset moves on.
pub const KAFKA_BAD_RECORDS: &str = "switchyard_source_kafka_bad_records_total";

pub(crate) fn kafka_bad_record(reason: &'static str) {
    metrics::counter!(KAFKA_BAD_RECORDS, "reason" => reason).increment(1);
}

/// Messages of the message-queue sources that are not what they claim or cannot be events, by
/// source `kind` and `reason`: `invalid_cloudevent` (claims to be a CloudEvent but is not a
/// valid one: wrapped and sent), `unmappable` (no event can carry it: skipped and acknowledged).
pub const BAD_MESSAGES: &str = "switchyard_source_bad_messages_total";

pub(crate) fn bad_message(kind: &'static str, reason: &'static str) {
    metrics::counter!(BAD_MESSAGES, "kind" => kind, "reason" => reason).increment(1);
}

/// Times a message-queue source lost (or could not reach) its server and connects again, by
/// source `kind`.
pub const RECONNECTS: &str = "switchyard_source_reconnects_total";

pub(crate) fn reconnect(kind: &'static str) {
    metrics::counter!(RECONNECTS, "kind" => kind).increment(1);
}

/// Tasks that panicked, by `task` (the dispatcher's series; the sources' tasks are `source`).
pub(crate) const TASK_PANICS: &str = "switchyard_task_panics_total";

pub(crate) fn task_panicked() {
    metrics::counter!(TASK_PANICS, "task" => "source").increment(1);
}
