//! Admission: the one way an event enters a broker's log, whoever brings it — a producer's
//! request, a source, a subscriber's reply, the reply to a redriven dead letter. Every limit,
//! Knative's stamps (arrival time, hop counter), the adoption of the request's trace context,
//! the metrics, the ingest spans and the stopping rule live here, once.
//!
//! Invariants: nothing else calls `EventLog::append` on a broker's topic; an event is
//! acknowledged only once durable (`admit` returns after the append, which returns only once
//! its events are fsynced or acknowledged by Kafka); every way in refuses the same event with
//! the same words (`switchyard_event::limits`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use switchyard_event::limits::{EventLimits, LimitExceeded};
use switchyard_event::tracecontext::{self, SpanSink};
use switchyard_event::{knative, AttrValue, Event};
use switchyard_log::{Admit, Admitted, EventLog, LogError, Origin, Refusal};

use crate::metrics;

/// The broker's log topic.
pub(crate) fn topic_name(namespace: &str, broker: &str) -> String {
    format!("{namespace}.{broker}")
}

/// Puts events into brokers' logs.
pub struct Admission {
    log: Arc<dyn EventLog>,
    limits: EventLimits,
    /// The brokers that take events: `(namespace, name)` → topic. A broker is opened once its
    /// topic exists and its triggers have their groups, so no event can miss a trigger
    /// declared before it.
    open: RwLock<HashMap<(String, String), String>>,
    /// Set when the node starts to stop: producers and webhooks are sent elsewhere, while the
    /// replies of deliveries still draining are taken.
    stopping: AtomicBool,
    /// Where ingest spans go, when span export is on.
    spans: Option<Arc<dyn SpanSink>>,
}

impl Admission {
    /// Admission into `log`'s topics under `limits`, reporting ingest spans to `spans`.
    pub fn new(log: Arc<dyn EventLog>, limits: EventLimits, spans: Option<Arc<dyn SpanSink>>) -> Admission {
        Admission { log, limits, open: RwLock::default(), stopping: AtomicBool::new(false), spans }
    }

    /// The limits every event is held to.
    pub fn limits(&self) -> EventLimits {
        self.limits
    }

    /// From now on, producers' requests and webhooks are refused (503): the node is stopping.
    pub fn stop_taking(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Whether the node is stopping.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// What [`Admit::admit`] would refuse before looking at the events: a stopping node, an
    /// unknown broker. Cheap, so that a request can be refused before its body is read.
    pub fn precheck(&self, namespace: &str, broker: &str, origin: &Origin) -> Result<(), Refusal> {
        self.topic(namespace, broker, origin).map(drop)
    }

    pub(crate) fn open_broker(&self, namespace: &str, name: &str) {
        let mut open = self.open.write().unwrap_or_else(|e| e.into_inner());
        open.insert((namespace.to_owned(), name.to_owned()), topic_name(namespace, name));
    }

    pub(crate) fn close_broker(&self, namespace: &str, name: &str) {
        self.open.write().unwrap_or_else(|e| e.into_inner()).remove(&(namespace.to_owned(), name.to_owned()));
    }

    fn topic(&self, namespace: &str, broker: &str, origin: &Origin) -> Result<String, Refusal> {
        if self.is_stopping() && refused_while_stopping(origin) {
            return Err(Refusal::Stopping);
        }
        let open = self.open.read().unwrap_or_else(|e| e.into_inner());
        let topic = open.get(&(namespace.to_owned(), broker.to_owned())).cloned();
        topic.ok_or_else(|| Refusal::UnknownBroker(format!("{namespace}/{broker}")))
    }

    async fn admit_checked(
        &self,
        namespace: &str,
        broker: &str,
        events: &mut [Event],
        origin: &Origin,
    ) -> Result<Admitted, Refusal> {
        let topic = self.topic(namespace, broker, origin)?;
        self.limits.check_received(events)?;
        if stamp(events, origin) == Admitted::HopsSpent {
            return Ok(Admitted::HopsSpent);
        }
        self.limits.check_stamped(events)?;
        let started = Instant::now();
        let appended = self.log.append(&topic, events).await;
        metrics::appended(origin, started.elapsed());
        if let Origin::Ingest { trace, received, .. } = origin {
            self.record_ingest_spans(namespace, broker, events, trace.as_ref(), *received, appended.as_ref().err());
        }
        match appended {
            Ok(()) => Ok(Admitted::Stored),
            Err(LogError::UnknownTopic(_)) => Err(Refusal::UnknownBroker(format!("{namespace}/{broker}"))),
            Err(error) => {
                tracing::warn!(broker = %format!("{namespace}/{broker}"), origin = origin.label(), %error, "events refused: storage cannot accept");
                Err(Refusal::Unavailable(error.to_string()))
            }
        }
    }

    fn record_ingest_spans(
        &self,
        namespace: &str,
        broker: &str,
        events: &[Event],
        request: Option<&tracecontext::TraceContext>,
        received: SystemTime,
        error: Option<&LogError>,
    ) {
        let Some(spans) = &self.spans else { return };
        let error = error.map(ToString::to_string);
        let key = format!("{namespace}/{broker}");
        let ended = SystemTime::now();
        for span in tracecontext::ingest_spans(&key, events, request, received, ended, error.as_deref()) {
            spans.record(span);
        }
    }
}

/// A stopping node sends producers and webhook senders elsewhere; what its own sources and
/// draining deliveries bring is still taken.
fn refused_while_stopping(origin: &Origin) -> bool {
    matches!(origin, Origin::Ingest { .. } | Origin::Source(_))
}

/// Knative's stamps: every event gets its arrival time (the ingress is authoritative) and a hop
/// budget — the default for a new event, one less than the event it answers for a reply, whose
/// budget spent means it is dropped (Knative's loop guard). An event of a traced request with
/// no trace context of its own adopts the request's.
fn stamp(events: &mut [Event], origin: &Origin) -> Admitted {
    let arrival = knative::now_rfc3339();
    let remaining = match origin {
        Origin::Reply { ttl, .. } | Origin::Redrive { ttl, .. } => Some(ttl - 1),
        Origin::Ingest { .. } | Origin::Source(_) => None,
    };
    if remaining.is_some_and(|remaining| remaining <= 0) {
        return Admitted::HopsSpent;
    }
    for event in events.iter_mut() {
        knative::stamp_ingress(event, &arrival);
        if let Some(remaining) = remaining {
            // A valid extension name and value: setting it cannot fail.
            let _ = event.set_extension(knative::BROKER_TTL, AttrValue::Integer(remaining));
        }
        if let Origin::Ingest { trace: Some(context), .. } = origin {
            tracecontext::adopt_request_context(event, context);
        }
    }
    Admitted::Stored
}

#[async_trait]
impl Admit for Admission {
    async fn admit(
        &self,
        namespace: &str,
        broker: &str,
        mut events: Vec<Event>,
        origin: Origin,
    ) -> Result<Admitted, Refusal> {
        let admitted = self.admit_checked(namespace, broker, &mut events, &origin).await;
        metrics::admitted(&origin, events.len(), &admitted);
        admitted
    }

    fn broker_exists(&self, namespace: &str, broker: &str) -> bool {
        let open = self.open.read().unwrap_or_else(|e| e.into_inner());
        open.contains_key(&(namespace.to_owned(), broker.to_owned()))
    }

    fn refuse(&self, origin: &Origin, refusal: Refusal) -> Refusal {
        // A batch refused by its count before it was decoded still refuses all its events.
        let events = match &refusal {
            Refusal::Limit(LimitExceeded::TooManyEvents { count, .. }) => *count,
            _ => 1,
        };
        metrics::refused(origin, events, &refusal);
        refusal
    }
}

#[cfg(test)]
mod tests {
    use switchyard_event::http::ContentMode;
    use switchyard_log::testkit::memory::MemoryLog;
    use switchyard_log::testkit::sample_event;

    use super::*;

    async fn admission(limits: EventLimits) -> (Arc<MemoryLog>, Admission) {
        let log = MemoryLog::new();
        log.create_topic("ns.b").await.unwrap();
        let admission = Admission::new(log.clone(), limits, None);
        admission.open_broker("ns", "b");
        (log, admission)
    }

    fn ingest() -> Origin {
        Origin::Ingest { mode: ContentMode::Binary, body_bytes: 0, trace: None, received: SystemTime::now() }
    }

    fn origins() -> [Origin; 4] {
        [
            ingest(),
            Origin::Source("pingsource/ns/p".into()),
            Origin::Reply { trigger: "ns/t".into(), ttl: 255 },
            Origin::Redrive { trigger: "ns/t".into(), ttl: 255 },
        ]
    }

    #[tokio::test]
    async fn every_origin_gets_the_same_refusal_for_the_same_event() {
        let limits =
            EventLimits { max_event_bytes: 2048, max_attributes: 12, max_batch_events: 10, ..EventLimits::default() };
        let (log, admission) = admission(limits).await;
        let large = sample_event("large", 4096);
        let mut crowded = sample_event("crowded", 1);
        for i in 0..12 {
            crowded.set_extension(&format!("x{i}"), AttrValue::Integer(i)).unwrap();
        }
        for event in [large, crowded] {
            let mut refusals = Vec::new();
            for origin in origins() {
                let refusal = admission.admit("ns", "b", vec![event.clone()], origin).await.unwrap_err();
                refusals.push(refusal.to_string());
            }
            assert!(refusals.iter().all(|r| *r == refusals[0]), "{refusals:?}");
            assert!(refusals[0].contains("(max_event"), "{}", refusals[0]);
        }
        assert_eq!(log.end_offsets("ns.b").await.unwrap(), [0], "nothing refused was stored");
        let batch = vec![sample_event("e", 1); 11];
        let refusal = admission.admit("ns", "b", batch, ingest()).await.unwrap_err();
        assert!(matches!(refusal, Refusal::Limit(LimitExceeded::TooManyEvents { count: 11, limit: 10 })));
    }

    #[tokio::test]
    async fn stamps_and_the_hop_budget() {
        let (log, admission) = admission(EventLimits::default()).await;
        let mut untouched = sample_event("reply", 1);
        untouched.remove_extension(knative::BROKER_TTL);
        let reply = Origin::Reply { trigger: "ns/t".into(), ttl: 7 };
        assert_eq!(admission.admit("ns", "b", vec![untouched.clone()], reply).await, Ok(Admitted::Stored));
        let spent = Origin::Reply { trigger: "ns/t".into(), ttl: 1 };
        assert_eq!(admission.admit("ns", "b", vec![untouched.clone()], spent).await, Ok(Admitted::HopsSpent));
        assert_eq!(admission.admit("ns", "b", vec![untouched], ingest()).await, Ok(Admitted::Stored));
        let mut reader = log.reader("ns.b", 0, 0).await.unwrap();
        let stored = reader.next_batch(10).await.unwrap();
        assert_eq!(stored.len(), 2, "the reply with its budget spent was dropped");
        assert_eq!(knative::ttl(&stored[0].event), 6);
        assert_eq!(knative::ttl(&stored[1].event), knative::DEFAULT_TTL);
        assert!(stored.iter().all(|e| e.event.get(knative::ARRIVAL_TIME).is_some()));
    }

    #[tokio::test]
    async fn unknown_brokers_and_a_stopping_node() {
        let (_log, admission) = admission(EventLimits::default()).await;
        let event = || vec![sample_event("e", 1)];
        let unknown = admission.admit("ns", "nope", event(), ingest()).await;
        assert_eq!(unknown, Err(Refusal::UnknownBroker("ns/nope".into())));
        admission.stop_taking();
        assert_eq!(admission.admit("ns", "b", event(), ingest()).await, Err(Refusal::Stopping));
        let source = Origin::Source("pingsource/ns/p".into());
        assert_eq!(admission.admit("ns", "b", event(), source).await, Err(Refusal::Stopping));
        // Deliveries draining at shutdown still get their replies in.
        let reply = Origin::Reply { trigger: "ns/t".into(), ttl: 9 };
        assert_eq!(admission.admit("ns", "b", event(), reply).await, Ok(Admitted::Stored));
    }
}
