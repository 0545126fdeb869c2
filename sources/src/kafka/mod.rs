//! KafkaSource (`sources.knative.dev/v1beta1`): records of Kafka topics as CloudEvents.

use switchyard_meta::ValidationError;

use crate::resource::Declared;
use crate::{Behaviour, NotReady, SourceKind};

/// The KafkaSource kind.
pub struct Kafka;

impl SourceKind for Kafka {
    fn kind(&self) -> &'static str {
        "KafkaSource"
    }

    fn plural(&self) -> &'static str {
        "kafkasources"
    }

    fn api_versions(&self) -> &'static [&'static str] {
        &["sources.knative.dev/v1beta1"]
    }

    fn validate(&self, _spec: &serde_json::Value) -> Result<serde_json::Value, ValidationError> {
        Err(ValidationError::field("spec", "not implemented yet".to_owned()))
    }

    fn compile(&self, _source: &Declared) -> Result<Behaviour, NotReady> {
        Err(NotReady { reason: "NotImplemented", message: String::new() })
    }
}
