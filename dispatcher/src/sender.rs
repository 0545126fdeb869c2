//! One delivery attempt: an HTTP POST of the event to the subscriber.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use switchyard_event::Event;
use url::Url;

use crate::policy::Failure;

/// How much of a failed answer's body is kept (Knative's `knativeerrordata` keeps 1024).
const ERROR_BODY_PREFIX: usize = 1024;
/// The largest reply event read from a subscriber's answer.
pub const MAX_REPLY_BYTES: usize = 1 << 20;
/// Bytes of an answer read so the connection can be reused; more is dropped.
const MAX_DRAINED_BODY: usize = 4 << 20;

/// The HTTP content mode of deliveries (HTTP binding §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Attributes in `ce-` headers, data as the body (the default, as in Knative).
    #[default]
    Binary,
    /// The whole event as `application/cloudevents+json`.
    Json,
}

/// Where and how one trigger delivers.
#[derive(Debug, Clone)]
pub struct Target {
    /// The subscriber.
    pub url: Url,
    /// Binary or structured.
    pub format: Format,
    /// Sent as `Kn-Namespace` (Knative data-plane contract).
    pub namespace: String,
    /// Per-attempt timeout.
    pub timeout: Duration,
}

/// Sends events over a pooled HTTP client.
#[derive(Debug, Clone)]
pub struct Sender {
    client: reqwest::Client,
}

impl Sender {
    /// A client with keep-alive pooling, HTTP/2 where the subscriber offers it (ALPN), TLS
    /// verified, and no redirects followed (a redirect is an answer, not a delivery).
    pub fn new() -> Result<Sender, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Sender { client })
    }

    /// One attempt. `Ok` with the answer on a 2xx; a failure otherwise.
    pub async fn send(&self, target: &Target, event: &Event) -> Result<Answer, Failure> {
        let (mut headers, body) = encode(target.format, event);
        headers.insert("prefer", HeaderValue::from_static("reply"));
        if let Ok(namespace) = HeaderValue::from_str(&target.namespace) {
            headers.insert("kn-namespace", namespace);
        }
        let request = self.client.post(target.url.clone()).headers(headers).body(body).timeout(target.timeout);
        let mut response = request.send().await.map_err(transport_failure)?;
        let status = response.status();
        // A 2xx body may be a reply event (kept whole, up to the limit); a failure's body only
        // matters for its first bytes (`knativeerrordata`).
        let keep = if status.is_success() { MAX_REPLY_BYTES } else { ERROR_BODY_PREFIX };
        let mut kept = Vec::new();
        let mut truncated = false;
        let mut read = 0;
        while read < MAX_DRAINED_BODY {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    read += chunk.len();
                    let room = keep.saturating_sub(kept.len());
                    truncated |= chunk.len() > room;
                    kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) => break,
                Err(e) if status.is_success() => return Err(transport_failure(e)),
                Err(_) => break,
            }
        }
        if status.is_success() {
            Ok(Answer { status, headers: response.headers().clone(), body: Bytes::from(kept), truncated })
        } else {
            Err(Failure {
                status: Some(status),
                error: None,
                retry_after: response.headers().get(http::header::RETRY_AFTER).cloned(),
                body_prefix: Bytes::from(kept),
            })
        }
    }
}

/// A successful (2xx) answer.
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: http::StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, up to the reply size limit.
    pub body: Bytes,
    /// Whether the body was longer than the limit.
    pub truncated: bool,
}

fn encode(format: Format, event: &Event) -> (HeaderMap, Bytes) {
    match format {
        Format::Binary => switchyard_event::http::encode_binary(event),
        Format::Json => {
            let (content_type, body) = switchyard_event::http::encode_structured(event);
            let mut headers = HeaderMap::new();
            headers.insert(http::header::CONTENT_TYPE, content_type);
            (headers, body)
        }
    }
}

fn transport_failure(error: reqwest::Error) -> Failure {
    let error = if error.is_timeout() { "timed out".to_owned() } else { error_chain(&error) };
    Failure { status: None, error: Some(error), retry_after: None, body_prefix: Bytes::new() }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
