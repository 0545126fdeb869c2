//! PingSource (`sources.knative.dev/v1`): an event on a cron schedule.

use switchyard_meta::ValidationError;

use crate::resource::Declared;
use crate::{Behaviour, NotReady, SourceKind};

/// The PingSource kind.
pub struct Ping;

impl SourceKind for Ping {
    fn kind(&self) -> &'static str {
        "PingSource"
    }

    fn plural(&self) -> &'static str {
        "pingsources"
    }

    fn api_versions(&self) -> &'static [&'static str] {
        &["sources.knative.dev/v1", "sources.knative.dev/v1beta2"]
    }

    fn validate(&self, _spec: &serde_json::Value) -> Result<serde_json::Value, ValidationError> {
        Err(ValidationError::field("spec", "not implemented yet".to_owned()))
    }

    fn compile(&self, _source: &Declared) -> Result<Behaviour, NotReady> {
        Err(NotReady { reason: "NotImplemented", message: String::new() })
    }
}
