//! The series every source shares; a source's own ones live in its folder.

/// Events by source kind and what became of them: `sent` (durable in the sink), `duplicate`
/// (a webhook redelivery of an event already taken), `ignored` (a webhook request carrying
/// nothing to send), `refused` (a webhook request refused), `failed` (not taken by the sink in
/// time; a webhook sender retries, an activity keeps trying).
pub(crate) const EVENTS: &str = "switchyard_source_events_total";

pub(crate) fn events(kind: &'static str, outcome: &'static str, count: usize) {
    if count > 0 {
        metrics::counter!(EVENTS, "kind" => kind, "outcome" => outcome).increment(count as u64);
    }
}
