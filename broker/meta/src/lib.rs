//! Switchyard's declarations: Brokers and Triggers in Knative's `eventing.knative.dev/v1`
//! shapes, validated on the way in ([`resources`]), and kept in a transactional embedded store
//! in the data directory ([`store`]).
//!
//! Validation happens once, here, when a resource is submitted: the rest of the system only
//! ever sees resources that passed it.

pub mod duration;
pub mod error;
pub mod resources;
pub mod store;

pub use duration::{parse_iso8601_duration, DurationError};
pub use error::{StoreError, ValidationError};
pub use resources::{resolve_delivery, Broker, ResolvedDelivery, Trigger};
pub use store::Store;
