//! A GitHub webhook delivery turned into a CloudEvent, following Knative's GitHubSource
//! (`knative-extensions/eventing-github`): signature check, body decoding, and the mapping.
//! Pure code: no I/O.

use std::collections::BTreeSet;

use bytes::Bytes;

use crate::{Receipt, Webhook, WebhookError};

/// What a GitHubSource checks and maps a delivery with.
pub struct GitHubWebhook {
    secret: Vec<u8>,
    event_types: BTreeSet<String>,
    owner_and_repository: String,
}

impl GitHubWebhook {
    /// A receiver that verifies `X-Hub-Signature-256` with `secret`, takes the GitHub events
    /// named in `event_types`, and names events without a repository after
    /// `owner_and_repository`.
    pub fn new(secret: Vec<u8>, event_types: BTreeSet<String>, owner_and_repository: String) -> GitHubWebhook {
        GitHubWebhook { secret, event_types, owner_and_repository }
    }
}

impl Webhook for GitHubWebhook {
    fn receive(&self, _headers: &http::HeaderMap, _body: &Bytes) -> Result<Receipt, WebhookError> {
        let _ = (&self.secret, &self.event_types, &self.owner_and_repository);
        Err(WebhookError::BadRequest("not implemented yet".to_owned()))
    }
}
