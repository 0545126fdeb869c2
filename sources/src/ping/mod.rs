//! PingSource (`sources.knative.dev/v1`): an event on a cron schedule, as Knative's PingSource
//! sends it (`type dev.knative.sources.ping`, `source /apis/v1/namespaces/<ns>/pingsources/<name>`,
//! the spec's data), plus `time`: the tick the event is for.
//!
//! **No tick twice, none lost**: the last tick sent is recorded durably in the state table
//! after its event is durable in the sink. A source that starts again (a restart, another
//! node taking it over) sends the ticks it missed since — at most [`MAX_CATCH_UP`] of them, the
//! latest — and never one it already recorded. Between the event being durable and the record
//! a crash can only repeat that one tick, with the same `id` (ids are derived from the source
//! and the tick), which is how CloudEvents consumers recognise a duplicate.

mod schedule;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use switchyard_event::{AttrValue, Data, DataForm, Event};
use switchyard_meta::ValidationError;

use crate::resource::{canonical, check_common, typed_spec, CeOverrides, Declared, SinkSpec};
use crate::runtime::{RunContext, Stopped};
use crate::{Activity, Behaviour, NotReady, SourceKind};

pub use schedule::{Schedule, ScheduleError};

/// The event type of every ping (Knative's `PingSourceEventType`).
pub const EVENT_TYPE: &str = "dev.knative.sources.ping";
/// The most missed ticks sent when a source starts again; older ones are skipped (and
/// counted in `switchyard_source_ping_skipped_ticks_total`).
pub const MAX_CATCH_UP: usize = 100;
/// Knative's default schedule: every minute.
const DEFAULT_SCHEDULE: &str = "* * * * *";
/// The largest `data` (or decoded `dataBase64`): the default event size limit of ingest.
const MAX_DATA_BYTES: usize = 1 << 20;
/// Ticks skipped because more than [`MAX_CATCH_UP`] were missed.
const SKIPPED_TICKS: &str = "switchyard_source_ping_skipped_ticks_total";

/// The PingSource kind.
pub struct Ping;

/// `spec` of a PingSource.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PingSourceSpec {
    /// A cron expression: 5 fields, or 6 with seconds first; `@hourly`-style aliases; an optional
    /// `CRON_TZ=<zone> ` prefix. Default `* * * * *`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The IANA time zone the schedule is read in (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// The media type of the data (`datacontenttype`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The event data, as text (valid JSON when `contentType` is JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Or the event data, base64-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<String>,
    /// Where events go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<SinkSpec>,
    /// Extensions set on every event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<CeOverrides>,
}

impl PingSourceSpec {
    fn schedule(&self) -> Result<Schedule, ScheduleError> {
        Schedule::parse(self.schedule.as_deref().unwrap_or(DEFAULT_SCHEDULE), self.timezone.as_deref())
    }

    /// The data every event carries, as Knative builds it.
    fn event_data(&self) -> Result<Option<Data>, ValidationError> {
        let data = match (&self.data, &self.data_base64) {
            (Some(_), Some(_)) => {
                return Err(ValidationError::field(
                    "spec.data",
                    "give either 'data' or 'dataBase64', not both".to_owned(),
                ))
            }
            (Some(text), None) => {
                let json = self.content_type.as_deref().is_some_and(switchyard_event::json::is_json_content_type);
                if json {
                    serde_json::from_str::<serde_json::Value>(text).map_err(|e| {
                        ValidationError::field(
                            "spec.data",
                            format!(
                                "is not valid JSON for content type '{}': {e}",
                                self.content_type.as_deref().unwrap_or_default()
                            ),
                        )
                    })?;
                }
                let form = if json { DataForm::Json } else { DataForm::Text };
                Some(Data { form, bytes: Bytes::from(text.clone().into_bytes()) })
            }
            (None, Some(encoded)) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|e| ValidationError::field("spec.dataBase64", format!("is not base64: {e}")))?;
                Some(Data { form: DataForm::of_bytes(self.content_type.as_deref(), &bytes), bytes: Bytes::from(bytes) })
            }
            (None, None) => None,
        };
        if let Some(data) = &data {
            if data.bytes.len() > MAX_DATA_BYTES {
                return Err(ValidationError::field(
                    "spec.data",
                    format!("is {} bytes, above the limit of {MAX_DATA_BYTES} bytes", data.bytes.len()),
                ));
            }
        }
        Ok(data)
    }
}

impl SourceKind for Ping {
    #[cfg(feature = "openapi")]
    fn spec_schema(&self) -> crate::SpecSchema {
        crate::SpecSchema::of::<PingSourceSpec>()
    }

    fn kind(&self) -> &'static str {
        "PingSource"
    }

    fn plural(&self) -> &'static str {
        "pingsources"
    }

    fn api_versions(&self) -> &'static [&'static str] {
        &["sources.knative.dev/v1", "sources.knative.dev/v1beta2"]
    }

    fn validate(&self, spec: &serde_json::Value) -> Result<serde_json::Value, ValidationError> {
        let spec: PingSourceSpec = typed_spec(spec)?;
        spec.schedule().map_err(|e| ValidationError::field(e.field, e.message))?;
        if let Some(content_type) = &spec.content_type {
            if content_type.is_empty() || content_type.chars().any(char::is_control) {
                return Err(ValidationError::field(
                    "spec.contentType",
                    format!("'{content_type}' is not a media type"),
                ));
            }
        }
        spec.event_data()?;
        check_common(spec.sink.as_ref(), spec.ce_overrides.as_ref())?;
        Ok(canonical(&spec))
    }

    fn compile(&self, source: &Declared, _: &crate::Clients) -> Result<Behaviour, NotReady> {
        let invalid = |message: String| NotReady { reason: "InvalidSpec", message };
        let spec: PingSourceSpec = serde_json::from_value(source.spec.clone()).map_err(|e| invalid(e.to_string()))?;
        let schedule = spec.schedule().map_err(|e| invalid(e.message))?;
        let data = spec.event_data().map_err(|e| invalid(e.to_string()))?;
        Ok(Behaviour::Active(Arc::new(Pinger {
            schedule,
            // What the recorded tick belongs to: a changed schedule starts afresh.
            schedule_key: format!(
                "{} {}",
                spec.schedule.as_deref().unwrap_or(DEFAULT_SCHEDULE),
                spec.timezone.as_deref().unwrap_or("UTC")
            ),
            source: format!("/apis/v1/namespaces/{}/pingsources/{}", source.id.namespace, source.id.name),
            uid: source.uid.clone(),
            content_type: spec.content_type.filter(|_| data.is_some()),
            data,
        })))
    }
}

/// A running PingSource.
struct Pinger {
    schedule: Schedule,
    schedule_key: String,
    source: String,
    uid: String,
    content_type: Option<String>,
    data: Option<Data>,
}

/// What is recorded after each tick sent: which incarnation and schedule it is for, and the
/// tick.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Cursor {
    uid: String,
    schedule: String,
    /// The last tick sent (or, before the first, when the source started), in milliseconds
    /// since the Unix epoch.
    tick_ms: i64,
}

const CURSOR: &str = "cursor";

impl Pinger {
    /// The event for `tick`. Its id is derived from the source's uid and the tick, so that a
    /// tick sent again after a crash is recognisably the same event.
    fn event(&self, tick: DateTime<Utc>) -> Event {
        let digest =
            ring::digest::digest(&ring::digest::SHA256, format!("{}/{}", self.uid, tick.timestamp_millis()).as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest.as_ref()[..16]);
        let id = uuid::Uuid::new_v8(bytes).to_string();
        let mut attributes = vec![
            ("specversion".to_owned(), AttrValue::String("1.0".to_owned())),
            ("id".to_owned(), AttrValue::String(id)),
            ("source".to_owned(), AttrValue::String(self.source.clone())),
            ("type".to_owned(), AttrValue::String(EVENT_TYPE.to_owned())),
            ("time".to_owned(), AttrValue::String(tick.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))),
        ];
        if let Some(content_type) = &self.content_type {
            attributes.push(("datacontenttype".to_owned(), AttrValue::String(content_type.clone())));
        }
        // Every part was validated when the source was declared.
        Event::new(attributes, self.data.clone()).expect("a ping event is valid")
    }

    async fn cursor(&self, context: &RunContext) -> Result<DateTime<Utc>, Stopped> {
        let key = context.state_key(CURSOR);
        loop {
            match context.state().get(&key).await {
                Ok(Some(bytes)) => match serde_json::from_slice::<Cursor>(&bytes) {
                    Ok(cursor) if cursor.uid == self.uid && cursor.schedule == self.schedule_key => {
                        if let Some(tick) = DateTime::from_timestamp_millis(cursor.tick_ms) {
                            return Ok(tick);
                        }
                    }
                    _ => {}
                },
                Ok(None) => {}
                Err(error) => {
                    context.report(Some(NotReady { reason: "StateUnavailable", message: error.to_string() }));
                    context.sleep(Duration::from_secs(1)).await?;
                    continue;
                }
            }
            // A new source (or a new schedule): it starts now, and that is recorded, so that a
            // restart before the first tick still sends it.
            let now = Utc::now();
            self.record(context, now).await?;
            return Ok(now);
        }
    }

    async fn record(&self, context: &RunContext, tick: DateTime<Utc>) -> Result<(), Stopped> {
        let cursor =
            Cursor { uid: self.uid.clone(), schedule: self.schedule_key.clone(), tick_ms: tick.timestamp_millis() };
        let bytes = serde_json::to_vec(&cursor).unwrap_or_default();
        let key = context.state_key(CURSOR);
        loop {
            match context.state().put(&key, &bytes).await {
                Ok(()) => return Ok(()),
                Err(error) => {
                    // The tick's event is durable; until this succeeds a restart would send
                    // it again, so keep trying.
                    tracing::warn!(source = %context.source().id, %error, "cannot record the last tick; retrying");
                    context.report(Some(NotReady { reason: "StateUnavailable", message: error.to_string() }));
                    context.sleep(Duration::from_secs(1)).await?;
                }
            }
        }
    }

    /// The ticks after `cursor` up to `now`, the latest [`MAX_CATCH_UP`] of them, and how
    /// many older ones were skipped.
    fn due(&self, cursor: DateTime<Utc>, now: DateTime<Utc>) -> (Vec<DateTime<Utc>>, u64) {
        let mut due = std::collections::VecDeque::new();
        let mut skipped = 0;
        let mut at = cursor;
        while let Some(tick) = self.schedule.next_after(at).filter(|tick| *tick <= now) {
            if due.len() == MAX_CATCH_UP {
                due.pop_front();
                skipped += 1;
            }
            due.push_back(tick);
            at = tick;
        }
        (due.into(), skipped)
    }

    async fn run_until_stopped(&self, context: &RunContext) -> Result<(), Stopped> {
        let mut cursor = self.cursor(context).await?;
        loop {
            let (due, skipped) = self.due(cursor, Utc::now());
            if skipped > 0 {
                tracing::warn!(source = %context.source().id, skipped, "missed more than {MAX_CATCH_UP} ticks; only the latest are sent");
                metrics::counter!(SKIPPED_TICKS).increment(skipped);
            }
            for tick in due {
                context.deliver(vec![self.event(tick)]).await?;
                self.record(context, tick).await?;
                cursor = tick;
            }
            // Every tick up to now is sent, so the next one is in the future.
            let Some(next) = self.schedule.next_after(cursor) else {
                // A schedule without a future tick: nothing more to do.
                return context.sleep(Duration::MAX).await;
            };
            context.sleep((next - Utc::now()).to_std().unwrap_or_default()).await?;
        }
    }
}

#[async_trait]
impl Activity for Pinger {
    async fn run(&self, context: RunContext) {
        let _ = self.run_until_stopped(&context).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(spec: serde_json::Value) -> Result<serde_json::Value, ValidationError> {
        Ping.validate(&spec)
    }

    fn sink() -> serde_json::Value {
        serde_json::json!({"ref": {"kind": "Broker", "name": "default"}})
    }

    #[test]
    fn knative_specs_are_accepted() {
        validate(serde_json::json!({"sink": sink()})).unwrap();
        validate(serde_json::json!({
            "schedule": "*/2 * * * *", "timezone": "Europe/Paris", "contentType": "application/json",
            "data": "{\"message\": \"Hello world!\"}", "sink": sink(),
        }))
        .unwrap();
        validate(serde_json::json!({"schedule": "@hourly", "dataBase64": "ZGF0YQ==", "sink": {"uri": "http://x/"}}))
            .unwrap();
    }

    #[test]
    fn invalid_specs_name_the_field() {
        let cases = [
            (serde_json::json!({"schedule": "every minute", "sink": sink()}), "spec.schedule"),
            (serde_json::json!({"timezone": "Atlantis", "sink": sink()}), "spec.timezone"),
            (serde_json::json!({"data": "a", "dataBase64": "YQ==", "sink": sink()}), "spec.data"),
            (serde_json::json!({"contentType": "application/json", "data": "{nope", "sink": sink()}), "spec.data"),
            (serde_json::json!({"dataBase64": "***", "sink": sink()}), "spec.dataBase64"),
            (serde_json::json!({"schedule": "* * * * *"}), "spec.sink"),
        ];
        for (spec, field) in cases {
            let error = validate(spec.clone()).expect_err(&spec.to_string());
            let ValidationError::Field { field: actual, .. } = &error else { panic!("{spec}: {error}") };
            assert_eq!(actual, field, "{spec}: {error}");
        }
        assert!(validate(serde_json::json!({"sink": sink(), "jsonData": "{}"}))
            .unwrap_err()
            .to_string()
            .contains("jsonData"));
    }

    fn pinger(schedule: &str, data: Option<Data>, content_type: Option<&str>) -> Pinger {
        Pinger {
            schedule: Schedule::parse(schedule, None).unwrap(),
            schedule_key: schedule.to_owned(),
            source: "/apis/v1/namespaces/ns/pingsources/p".to_owned(),
            uid: "uid-1".to_owned(),
            content_type: content_type.map(str::to_owned),
            data,
        }
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn events_are_knatives_with_the_tick_as_time_and_a_stable_id() {
        let data = Data { form: DataForm::Json, bytes: Bytes::from_static(b"{\"a\":1}") };
        let pinger = pinger("* * * * *", Some(data.clone()), Some("application/json"));
        let tick = at("2026-12-01T10:01:00Z");
        let event = pinger.event(tick);
        assert_eq!(event.ty(), EVENT_TYPE);
        assert_eq!(event.source(), "/apis/v1/namespaces/ns/pingsources/p");
        assert_eq!(event.get_str("time"), Some("2026-12-01T10:01:00Z"));
        assert_eq!(event.datacontenttype(), Some("application/json"));
        assert_eq!(event.data(), Some(&data));
        assert_eq!(pinger.event(tick).id(), event.id(), "the same tick is the same event");
        assert_ne!(pinger.event(at("2026-12-01T10:02:00Z")).id(), event.id(), "each tick has its own id");
        assert!(uuid::Uuid::parse_str(event.id()).is_ok());
    }

    #[test]
    fn missed_ticks_are_due_once_and_at_most_the_latest_hundred() {
        let pinger = pinger("* * * * * *", None, None);
        let (due, skipped) = pinger.due(at("2026-12-01T10:00:00Z"), at("2026-12-01T10:00:03.5Z"));
        assert_eq!(due, vec![at("2026-12-01T10:00:01Z"), at("2026-12-01T10:00:02Z"), at("2026-12-01T10:00:03Z")]);
        assert_eq!(skipped, 0);
        let (due, _) = pinger.due(at("2026-12-01T10:00:03Z"), at("2026-12-01T10:00:03.9Z"));
        assert!(due.is_empty(), "the recorded tick is not due again");
        let (due, skipped) = pinger.due(at("2026-12-01T10:00:00Z"), at("2026-12-01T10:10:00Z"));
        assert_eq!((due.len(), skipped), (MAX_CATCH_UP, 500));
        assert_eq!(due.last(), Some(&at("2026-12-01T10:10:00Z")));
    }
}
