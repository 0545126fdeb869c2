//! The one way an event enters a broker, as the crates below the engine see it: producers'
//! requests, sources, subscribers' replies and the replies of redriven dead letters all call
//! [`Admit::admit`], which the engine implements once — limits, Knative's stamps, trace
//! context, metrics and the stopping rule in one place.

use std::time::SystemTime;

use async_trait::async_trait;
use switchyard_event::http::ContentMode;
use switchyard_event::limits::LimitExceeded;
use switchyard_event::tracecontext::TraceContext;
use switchyard_event::Event;

/// Who brings the events.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A producer's HTTP request.
    Ingest {
        /// The request's content mode.
        mode: ContentMode,
        /// The request body's length.
        body_bytes: usize,
        /// The request's W3C trace context, adopted by events that carry none.
        trace: Option<TraceContext>,
        /// When the request arrived (the start of its ingest span).
        received: SystemTime,
    },
    /// A source, `Kind/namespace/name`.
    Source(String),
    /// A subscriber's reply to an event delivered by a trigger (`namespace/name`); `ttl` is the
    /// hop budget the delivered event had.
    Reply {
        /// The trigger, `namespace/name`.
        trigger: String,
        /// The delivered event's hop budget (`knativebrokerttl`).
        ttl: i32,
    },
    /// A subscriber's reply to a redriven dead letter of a trigger.
    Redrive {
        /// The trigger, `namespace/name`.
        trigger: String,
        /// The redriven event's hop budget.
        ttl: i32,
    },
}

impl Origin {
    /// A closed name for metrics and logs: `ingest`, `source`, `reply` or `redrive`.
    pub fn label(&self) -> &'static str {
        match self {
            Origin::Ingest { .. } => "ingest",
            Origin::Source(_) => "source",
            Origin::Reply { .. } => "reply",
            Origin::Redrive { .. } => "redrive",
        }
    }
}

/// Events taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// Durable in the broker's log.
    Stored,
    /// A reply whose hop budget is spent: dropped on purpose (Knative's loop guard), not an
    /// error for the subscriber that sent it.
    HopsSpent,
}

/// Why events were not taken. Every variant but `Unavailable` is final for these events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The node is stopping and takes no new events (retry against another node).
    #[error("the broker is shutting down; retry against another instance or later")]
    Stopping,
    /// No such broker.
    #[error("broker '{0}' does not exist")]
    UnknownBroker(String),
    /// An event or batch over a limit.
    #[error(transparent)]
    Limit(#[from] LimitExceeded),
    /// The log cannot take them now; retry later.
    #[error("storage cannot accept events right now; retry later")]
    Unavailable(String),
}

/// Puts events into a broker's log.
#[async_trait]
pub trait Admit: Send + Sync + 'static {
    /// Checks, stamps and appends `events` to broker `namespace/broker`, all or nothing;
    /// returns once they are durable (or why not).
    async fn admit(
        &self,
        namespace: &str,
        broker: &str,
        events: Vec<Event>,
        origin: Origin,
    ) -> Result<Admitted, Refusal>;

    /// Whether broker `namespace/broker` exists (takes events) now.
    fn broker_exists(&self, namespace: &str, broker: &str) -> bool;

    /// Records a refusal found before the events could even be decoded (a body read only up
    /// to the event limit), so that it counts as admission's like any other; returns it.
    fn refuse(&self, origin: &Origin, refusal: Refusal) -> Refusal;
}
