//! Switchyard's declarations in Knative's shapes: Brokers and Triggers
//! (`eventing.knative.dev/v1`), the metadata and parsing every declared kind shares
//! ([`resources`]), what the server answers in `status` ([`status`]), and ISO-8601 durations.
//!
//! Plain data and pure functions: what a declaration means is compiled where it runs (the
//! dispatcher's trigger plan, a source kind), and where declarations are kept is the log
//! backend's `DeclarationLog`.

pub mod duration;
pub mod error;
pub mod event_policy;
pub mod kafka_net;
pub mod kafka_sink;
pub mod resources;
pub mod secret;
pub mod status;

pub use duration::{parse_iso8601_duration, DurationError};
pub use error::ValidationError;
pub use resources::{Broker, Resource, Source, Trigger, Upsert};
pub use secret::{Secret, SecretError, SecretSource, REDACTED};
