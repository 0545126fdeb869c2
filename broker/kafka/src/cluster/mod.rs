//! What the nodes of a Switchyard cluster share through Kafka besides events: compacted topics
//! every node follows ([`CompactedTopic`]), which hold the declarations ([`KafkaDeclarations`])
//! as well as the log's dead letters and state table, and slots shared out among the nodes by
//! the group protocol ([`Leases`]), on which the placement of one-node work rests
//! ([`KafkaPlacement`]), and keys the nodes agree on without being given one ([`shared_key`]).

mod compacted;
mod declarations;
mod keys;
mod leases;
mod placement;

pub use compacted::CompactedTopic;
pub use declarations::KafkaDeclarations;
pub use keys::shared_key;
pub use leases::Leases;
pub use placement::KafkaPlacement;
