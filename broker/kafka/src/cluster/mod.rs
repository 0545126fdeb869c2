//! What the nodes of a Switchyard cluster share through Kafka besides events: compacted topics
//! every node follows ([`CompactedTopic`]), which hold the declarations ([`KafkaDeclarations`])
//! as well as the log's dead letters and state table, and slots shared out among the nodes by
//! the group protocol ([`Leases`]), on which the placement of one-node work rests
//! ([`KafkaPlacement`]).

mod compacted;
mod declarations;
mod leases;
mod placement;

pub use compacted::CompactedTopic;
pub use declarations::KafkaDeclarations;
pub use leases::Leases;
pub use placement::KafkaPlacement;
