//! NatsSource (`sources.switchyard.dev/v1alpha1`; Knative has no NATS source): the messages of
//! a NATS subject as CloudEvents. Messages that are CloudEvents in the NATS protocol binding
//! (structured or binary mode) pass through; others are wrapped ([`mapping`]).
//!
//! Two modes, by whether `spec.jetstream` is given:
//!
//! - **JetStream (at least once)**: a durable pull consumer with explicit acks on a stream the
//!   user created. The server hands out at most `maxAckPending` unacknowledged messages, so a
//!   slow broker slows the source instead of growing memory. A batch of what is available (up to
//!   500) is delivered in one append, and each message is acknowledged only after `deliver`
//!   returned. A crash in between redelivers once `ackWait` has passed since the delivery, with
//!   the same event id `<stream>:<stream sequence>`.
//! - **Core subjects (at most once)**: a plain (or queue-group) subscription. NATS core keeps
//!   nothing: a message published while the source is not subscribed (down, reconnecting,
//!   another node taking over) is never seen, and messages the client's buffer
//!   ([`CORE_BUFFER`]) cannot hold while the sink is slow are dropped by the client (logged as
//!   a slow consumer). This is how core NATS works, not a failure: the source is `Ready`.
//!
//! **Reconnect**: the client reconnects by itself with backoff; while it is away the source is
//! `Ready=False` with reason `NatsUnavailable`, cleared once it is connected again. A stream
//! that does not exist is `StreamNotFound`, retried with backoff.

mod mapping;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use async_trait::async_trait;
use futures_util::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use switchyard_log::backoff::ExponentialBackoff;
use switchyard_meta::{parse_iso8601_duration, ValidationError};
use tokio::sync::mpsc;

use crate::message::{self, BadMessages, RECONNECT_FIRST, RECONNECT_MAX};
use crate::resource::{canonical, check_common, typed_spec, CeOverrides, Declared, SinkSpec};
use crate::runtime::{RunContext, Stopped};
use crate::{Activity, Behaviour, Clients, NotReady, SourceKind};

pub use mapping::{message_event, MessageParts, Origin, ATTRIBUTE_PREFIX, EVENT_TYPE};

/// Messages a subscription buffers while the sink is slow; beyond it the client drops them
/// (core NATS is at most once; JetStream redelivers them after `ackWait`).
pub const CORE_BUFFER: usize = 4096;
/// Messages taken (and delivered in one append) at once: under the broker's default limit of
/// 1000 events per batch, which a larger `maxAckPending` would exceed.
const BATCH: usize = 500;
/// Messages one pull asks JetStream for, at most. The client keeps them in a subscription
/// buffer of [`CORE_BUFFER`] (shared with core subscriptions): a pull larger than it makes the
/// client drop what does not fit, and the server redeliver it only after `ackWait`. The client
/// asks again before a pull is used up, so two may be under way at once.
const PULL_BATCH: usize = 1000;
const _: () = assert!(2 * PULL_BATCH <= CORE_BUFFER, "two pulls must fit in the subscription buffer");
/// `ackWait` when the spec does not say.
const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
/// The longest `ackWait` a spec may ask for.
const MAX_ACK_WAIT: Duration = Duration::from_secs(12 * 3600);
/// Errors in a row from a JetStream message stream before the consumer is bound again.
const MAX_PULL_ERRORS: u32 = 5;
/// The reason while the server cannot be reached.
const UNAVAILABLE: &str = "NatsUnavailable";

/// The NatsSource kind.
pub struct Nats;

/// `spec` of a NatsSource.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NatsSourceSpec {
    /// The servers, e.g. `nats://127.0.0.1:4222` (the scheme may be left out); the client
    /// connects to any of them.
    #[serde(default)]
    pub servers: Vec<String>,
    /// The subject to read; wildcards allowed (`orders.*`, `orders.>`). With `jetstream`, the
    /// consumer's filter within the stream.
    #[serde(default)]
    pub subject: String,
    /// Core mode only: subscribe in this queue group, so that several subscribers share the
    /// messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_group: Option<String>,
    /// Read through a JetStream durable consumer (at least once). Without it the source reads
    /// core NATS subjects, **at most once**: messages published while it is not subscribed, or
    /// more than it buffers while the sink is slow, are never seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jetstream: Option<JetStreamSpec>,
    /// Where events go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<SinkSpec>,
    /// Extensions set on every event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<CeOverrides>,
}

/// `spec.jetstream`: the durable pull consumer the source reads through.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JetStreamSpec {
    /// The stream (created by the user; the source says `StreamNotFound` until it exists).
    #[serde(default)]
    pub stream: String,
    /// The durable consumer's name (default `switchyard-<source uid>`). Created if missing;
    /// an existing one with other settings is updated where the server allows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durable: Option<String>,
    /// Where a new consumer starts: `all` (default; the whole stream) or `new` (messages stored
    /// from now on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver_policy: Option<String>,
    /// How long the server waits for an acknowledgement before redelivering, ISO-8601
    /// (default `PT30S`, at most `PT12H`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_wait: Option<String>,
    /// Messages delivered to the source and not yet acknowledged, at most (default 100,
    /// 1 to 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ack_pending: Option<i64>,
}

/// Errors that make a name unusable as a NATS subject token, stream or consumer name.
fn bad_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.len() > 255 {
        Some("is longer than 255 bytes")
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("has whitespace or control characters")
    } else if name.chars().any(|c| matches!(c, '.' | '*' | '>' | '/' | '\\')) {
        Some("has one of '.', '*', '>', '/', '\\'")
    } else {
        None
    }
}

/// Whether `subject` is a subject a subscription may name: dot-separated non-empty tokens
/// without whitespace, `*` only as a whole token, `>` only as the whole last token.
fn check_subject(subject: &str) -> Result<(), String> {
    if subject.is_empty() {
        return Err("is required, e.g. 'orders.>'".to_owned());
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        let fine = !token.is_empty()
            && !token.chars().any(|c| c.is_whitespace() || c.is_control())
            && (*token == "*" || !token.contains('*'))
            && (*token == ">" && i + 1 == tokens.len() || !token.contains('>'));
        if !fine {
            return Err(format!(
                "'{subject}' is not a NATS subject: dot-separated tokens without whitespace, \
                 '*' as a whole token, '>' as the whole last one"
            ));
        }
    }
    Ok(())
}

/// A server address as the client takes it: `nats://host:port`.
fn server_url(server: &str) -> Result<String, String> {
    let with_scheme = if server.contains("://") { server.to_owned() } else { format!("nats://{server}") };
    let url = url::Url::parse(&with_scheme).map_err(|e| format!("'{server}' is not a server address: {e}"))?;
    if url.scheme() != "nats" {
        return Err(format!("'{server}' is not a nats:// address (this source connects without TLS)"));
    }
    if url.host_str().is_none_or(str::is_empty) || url.port().is_none() {
        return Err(format!("'{server}' is not 'nats://host:port'"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("'{server}' has credentials: this source connects without authentication"));
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(format!("'{server}' is not 'nats://host:port'"));
    }
    Ok(with_scheme)
}

/// The validated settings of a JetStream consumer.
#[derive(Debug, Clone, PartialEq)]
struct ConsumerSettings {
    stream: String,
    durable: String,
    deliver_policy: consumer::DeliverPolicy,
    ack_wait: Duration,
    max_ack_pending: u32,
}

impl JetStreamSpec {
    fn settings(&self, uid: &str) -> Result<ConsumerSettings, ValidationError> {
        if let Some(why) = bad_name(&self.stream) {
            return Err(ValidationError::field("spec.jetstream.stream", format!("'{}' {why}", self.stream)));
        }
        let durable = self.durable.clone().unwrap_or_else(|| format!("switchyard-{uid}"));
        if let Some(why) = bad_name(&durable) {
            return Err(ValidationError::field("spec.jetstream.durable", format!("'{durable}' {why}")));
        }
        let deliver_policy = match self.deliver_policy.as_deref() {
            None | Some("all") => consumer::DeliverPolicy::All,
            Some("new") => consumer::DeliverPolicy::New,
            Some(other) => {
                return Err(ValidationError::field(
                    "spec.jetstream.deliverPolicy",
                    format!("'{other}' is not one of 'all' and 'new'"),
                ))
            }
        };
        let ack_wait = match self.ack_wait.as_deref() {
            None => DEFAULT_ACK_WAIT,
            Some(text) => {
                let field = "spec.jetstream.ackWait";
                let wait = parse_iso8601_duration(text).map_err(|e| {
                    ValidationError::field(field, format!("'{text}' is not a valid ISO-8601 duration: {e}"))
                })?;
                if wait < Duration::from_secs(1) || wait > MAX_ACK_WAIT {
                    return Err(ValidationError::field(field, format!("'{text}' is not between PT1S and PT12H")));
                }
                wait
            }
        };
        let max_ack_pending = message::max_in_flight("spec.jetstream.maxAckPending", self.max_ack_pending)?;
        Ok(ConsumerSettings { stream: self.stream.clone(), durable, deliver_policy, ack_wait, max_ack_pending })
    }
}

/// The validated settings of a source.
#[derive(Debug, Clone, PartialEq)]
struct Settings {
    servers: Vec<String>,
    subject: String,
    queue_group: Option<String>,
    jetstream: Option<ConsumerSettings>,
}

impl NatsSourceSpec {
    fn settings(&self, uid: &str) -> Result<Settings, ValidationError> {
        if self.servers.is_empty() {
            return Err(ValidationError::field("spec.servers", "needs at least one 'nats://host:port'".to_owned()));
        }
        let servers = self
            .servers
            .iter()
            .enumerate()
            .map(|(i, server)| server_url(server).map_err(|e| ValidationError::field(&format!("spec.servers[{i}]"), e)))
            .collect::<Result<Vec<_>, _>>()?;
        check_subject(&self.subject).map_err(|e| ValidationError::field("spec.subject", e))?;
        if let Some(group) = &self.queue_group {
            if let Some(why) = bad_name(group) {
                return Err(ValidationError::field("spec.queueGroup", format!("'{group}' {why}")));
            }
            if self.jetstream.is_some() {
                return Err(ValidationError::field(
                    "spec.queueGroup",
                    "is for core subjects: with 'jetstream', sources sharing a durable consumer share its messages"
                        .to_owned(),
                ));
            }
        }
        let jetstream = self.jetstream.as_ref().map(|spec| spec.settings(uid)).transpose()?;
        Ok(Settings { servers, subject: self.subject.clone(), queue_group: self.queue_group.clone(), jetstream })
    }
}

impl SourceKind for Nats {
    fn kind(&self) -> &'static str {
        "NatsSource"
    }

    fn plural(&self) -> &'static str {
        "natssources"
    }

    fn api_versions(&self) -> &'static [&'static str] {
        &["sources.switchyard.dev/v1alpha1"]
    }

    fn validate(&self, spec: &serde_json::Value) -> Result<serde_json::Value, ValidationError> {
        let spec: NatsSourceSpec = typed_spec(spec)?;
        spec.settings("uid")?;
        check_common(spec.sink.as_ref(), spec.ce_overrides.as_ref())?;
        Ok(canonical(&spec))
    }

    fn compile(&self, source: &Declared, _clients: &Clients) -> Result<Behaviour, NotReady> {
        let invalid = |message: String| NotReady { reason: "InvalidSpec", message };
        let spec: NatsSourceSpec = serde_json::from_value(source.spec.clone()).map_err(|e| invalid(e.to_string()))?;
        let settings = spec.settings(&source.uid).map_err(|e| invalid(e.to_string()))?;
        Ok(Behaviour::Active(Arc::new(Subscriber { settings })))
    }

    #[cfg(feature = "openapi")]
    fn spec_schema(&self) -> crate::SpecSchema {
        crate::SpecSchema::of::<NatsSourceSpec>()
    }

    fn ready_note(&self, source: &Declared) -> Option<(&'static str, String)> {
        source.spec.get("jetstream").is_none_or(serde_json::Value::is_null).then(|| {
            let message = "core NATS subjects: at most once; messages published while the source is not subscribed \
                           are not seen; use spec.jetstream for at least once";
            ("AtMostOnce", message.to_owned())
        })
    }
}

/// A running NatsSource.
struct Subscriber {
    settings: Settings,
}

/// What the client says about its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Up,
    Down,
}

impl Subscriber {
    /// Connects (retrying with backoff until the server answers); the receiver hears of every
    /// later loss and return of the connection (the client reconnects by itself).
    async fn connect(&self, context: &RunContext) -> Result<(async_nats::Client, mpsc::Receiver<Link>), Stopped> {
        let id = &context.source().id;
        let name = format!("switchyard-natssource-{}-{}", id.namespace, id.name);
        let client = message::connect(context, UNAVAILABLE, || {
            let (links, heard) = mpsc::channel(16);
            let options = async_nats::ConnectOptions::new()
                .name(&name)
                .connection_timeout(Duration::from_secs(2))
                .subscription_capacity(CORE_BUFFER)
                .reconnect_delay_callback(|attempts| {
                    let attempts = u32::try_from(attempts).unwrap_or(u32::MAX).min(6);
                    (RECONNECT_FIRST * 2u32.pow(attempts)).min(RECONNECT_MAX / 6)
                })
                .event_callback(move |event| {
                    let links = links.clone();
                    async move {
                        let link = match event {
                            async_nats::Event::Connected => Link::Up,
                            async_nats::Event::Disconnected => Link::Down,
                            async_nats::Event::SlowConsumer(_) => {
                                tracing::warn!(
                                    "nats core subscription is behind: the client drops messages (at most once)"
                                );
                                return;
                            }
                            other => {
                                tracing::debug!(event = %other, "nats client event");
                                return;
                            }
                        };
                        // Full: the source is behind on status changes; the latest ones are in.
                        let _ = links.try_send(link);
                    }
                });
            let servers = self.settings.servers.clone();
            async move { options.connect(servers).await.map(|client| (client, heard)) }
        })
        .await?;
        Ok(client)
    }

    /// Reads core messages until stopped or the subscription ends.
    async fn core(
        &self,
        context: &RunContext,
        client: &async_nats::Client,
        links: &mut mpsc::Receiver<Link>,
        bad: &mut BadMessages,
    ) -> Result<(), Stopped> {
        let subject = self.settings.subject.clone();
        let subscribed = match &self.settings.queue_group {
            Some(group) => client.queue_subscribe(subject, group.clone()).await,
            None => client.subscribe(subject).await,
        };
        let mut subscription = match subscribed {
            Ok(subscription) => subscription,
            Err(error) => {
                message::lost(context, UNAVAILABLE, &error);
                return context.sleep(RECONNECT_FIRST).await;
            }
        };
        tracing::info!(
            source = %context.source().id,
            subject = %self.settings.subject,
            "subscribed to a core nats subject (at most once: messages published while not subscribed are not seen)"
        );
        context.report(None);
        let id = &context.source().id;
        loop {
            let first = tokio::select! {
                first = subscription.next() => first,
                Some(link) = links.recv() => { self.heard(context, link); continue; }
                () = context.stopped() => return Err(Stopped),
            };
            let Some(first) = first else { return Ok(()) };
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match subscription.next().now_or_never() {
                    Some(Some(message)) => batch.push(message),
                    _ => break,
                }
            }
            let events: Vec<_> = batch
                .iter()
                .filter_map(|message| {
                    let headers = headers_of(message.headers.as_ref());
                    let parts = MessageParts {
                        subject: message.subject.as_str(),
                        headers: &headers,
                        payload: &message.payload,
                        origin: Origin::Core,
                    };
                    bad.event(context, message_event(&id.namespace, &id.name, parts), &message.subject)
                })
                .collect();
            if !events.is_empty() {
                context.deliver(events).await?;
            }
        }
    }

    /// Binds the durable consumer, retrying while the stream is missing or the server away.
    async fn consumer(
        &self,
        context: &RunContext,
        client: &async_nats::Client,
        settings: &ConsumerSettings,
    ) -> Result<consumer::PullConsumer, Stopped> {
        let js = jetstream::new(client.clone());
        let config = consumer::pull::Config {
            durable_name: Some(settings.durable.clone()),
            filter_subject: self.settings.subject.clone(),
            deliver_policy: settings.deliver_policy,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: settings.ack_wait,
            max_ack_pending: i64::from(settings.max_ack_pending),
            ..Default::default()
        };
        let mut wait = ExponentialBackoff::new(RECONNECT_FIRST, RECONNECT_MAX);
        loop {
            let attempt = async {
                let stream = js.get_stream(&settings.stream).await.map_err(|error| {
                    let missing = matches!(error.kind(), jetstream::context::GetStreamErrorKind::JetStream(e)
                        if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND);
                    if missing {
                        ("StreamNotFound", format!("stream '{}' does not exist: create it", settings.stream))
                    } else {
                        (UNAVAILABLE, format!("cannot look up stream '{}': {error}", settings.stream))
                    }
                })?;
                match stream.create_consumer(config.clone()).await {
                    Ok(consumer) => Ok(consumer),
                    // Settings the server does not let change (the deliver policy): read
                    // through the consumer as it is.
                    Err(error) => match stream.get_consumer(&settings.durable).await {
                        Ok(consumer) => {
                            let source = &context.source().id;
                            let durable = &settings.durable;
                            tracing::warn!(%source, %durable, %error, "the consumer keeps its earlier settings");
                            Ok(consumer)
                        }
                        Err(_) => Err((
                            "ConsumerFailed",
                            format!(
                                "cannot create consumer '{}' on stream '{}': {error}",
                                settings.durable, settings.stream
                            ),
                        )),
                    },
                }
            };
            let attempt = tokio::select! {
                attempt = attempt => attempt,
                () = context.stopped() => return Err(Stopped),
            };
            match attempt {
                Ok(consumer) => return Ok(consumer),
                Err((reason, message)) => {
                    message::lost(context, reason, &message);
                    context.sleep(wait.next_delay()).await?;
                }
            }
        }
    }

    /// Reads the durable consumer until stopped or its message stream ends.
    async fn jetstream(
        &self,
        context: &RunContext,
        client: &async_nats::Client,
        settings: &ConsumerSettings,
        links: &mut mpsc::Receiver<Link>,
        bad: &mut BadMessages,
    ) -> Result<(), Stopped> {
        let consumer = self.consumer(context, client, settings).await?;
        let bound = settings.max_ack_pending as usize;
        let batch_size = bound.min(BATCH);
        let mut messages = match consumer.stream().max_messages_per_batch(bound.min(PULL_BATCH)).messages().await {
            Ok(messages) => messages,
            Err(error) => {
                message::lost(
                    context,
                    UNAVAILABLE,
                    &format!("cannot pull from consumer '{}': {error}", settings.durable),
                );
                return context.sleep(RECONNECT_FIRST).await;
            }
        };
        context.report(None);
        let id = &context.source().id;
        // Errors in a row from the message stream: a few (missed heartbeats while the server is
        // away) it recovers from by itself; more, and the consumer is bound again from scratch.
        let mut errors = 0;
        loop {
            let first = tokio::select! {
                first = messages.next() => first,
                Some(link) = links.recv() => { self.heard(context, link); continue; }
                () = context.stopped() => return Err(Stopped),
            };
            let mut batch = Vec::new();
            let mut next = first;
            loop {
                match next {
                    Some(Ok(message)) => {
                        errors = 0;
                        batch.push(message);
                    }
                    Some(Err(error)) => {
                        errors += 1;
                        tracing::debug!(source = %id, %error, errors, "jetstream pull");
                        if errors >= MAX_PULL_ERRORS && batch.is_empty() {
                            message::lost(
                                context,
                                UNAVAILABLE,
                                &format!("pulling from '{}': {error}", settings.durable),
                            );
                            return context.sleep(RECONNECT_FIRST).await;
                        }
                    }
                    None if batch.is_empty() => return Ok(()),
                    None => break,
                }
                if batch.len() >= batch_size {
                    break;
                }
                match messages.next().now_or_never() {
                    Some(more) => next = more,
                    None => break,
                }
            }
            if batch.is_empty() {
                continue;
            }
            let events: Vec<_> = batch
                .iter()
                .filter_map(|message| {
                    let headers = headers_of(message.headers.as_ref());
                    let info = message.info().ok();
                    let origin = Origin::JetStream {
                        stream: info.as_ref().map_or(settings.stream.as_str(), |info| info.stream),
                        sequence: info.as_ref().map_or(0, |info| info.stream_sequence),
                        published_ms: info
                            .as_ref()
                            .map(|info| (info.published.unix_timestamp_nanos() / 1_000_000) as i64),
                    };
                    let parts = MessageParts {
                        subject: message.subject.as_str(),
                        headers: &headers,
                        payload: &message.payload,
                        origin,
                    };
                    let at = format!("{}:{}", settings.stream, info.as_ref().map_or(0, |info| info.stream_sequence));
                    bad.event(context, message_event(&id.namespace, &id.name, parts), &at)
                })
                .collect();
            if !events.is_empty() {
                context.deliver(events).await?;
            }
            // Durable in the sink: now, and only now, the messages are done. An ack that does
            // not reach the server (it went away) means a redelivery after ackWait, not a loss.
            for message in &batch {
                if let Err(error) = message.ack().await {
                    tracing::debug!(source = %id, %error, "cannot acknowledge; the server redelivers after ackWait");
                }
            }
        }
    }

    /// Shows what the client said about its connection.
    fn heard(&self, context: &RunContext, link: Link) {
        match link {
            Link::Down => message::lost(
                context,
                UNAVAILABLE,
                &format!("lost the connection to {}; reconnecting", self.settings.servers.join(", ")),
            ),
            Link::Up => {
                if context.problem_reason() == Some(UNAVAILABLE) {
                    context.report(None);
                }
            }
        }
    }
}

/// A message's headers, one entry per value, sorted by name (the client keeps them in a hash
/// map) so that a redelivery maps to the same event.
fn headers_of(headers: Option<&async_nats::HeaderMap>) -> Vec<(String, Vec<u8>)> {
    let Some(headers) = headers else { return Vec::new() };
    let mut all: Vec<(String, Vec<u8>)> = headers
        .iter()
        .flat_map(|(name, values)| {
            let name: &str = name.as_ref();
            values.iter().map(move |value| (name.to_owned(), value.as_str().as_bytes().to_vec()))
        })
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

#[async_trait]
impl Activity for Subscriber {
    async fn run(&self, context: RunContext) {
        let mut bad = BadMessages::default();
        while !context.is_stopped() {
            let Ok((client, mut links)) = self.connect(&context).await else { return };
            let ran = match &self.settings.jetstream {
                Some(settings) => self.jetstream(&context, &client, settings, &mut links, &mut bad).await,
                None => self.core(&context, &client, &mut links, &mut bad).await,
            };
            // Flush the acknowledgements before the connection goes.
            let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
            if ran.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(spec: serde_json::Value) -> Result<serde_json::Value, ValidationError> {
        Nats.validate(&spec)
    }

    fn valid() -> serde_json::Value {
        serde_json::json!({
            "servers": ["nats://127.0.0.1:4222"],
            "subject": "orders.>",
            "sink": {"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "default"}},
        })
    }

    #[test]
    fn specs_are_accepted() {
        validate(valid()).unwrap();
        let mut spec = valid();
        spec["servers"] = serde_json::json!(["127.0.0.1:4222", "nats://nats.example:4223"]);
        spec["subject"] = serde_json::json!("orders.*.created");
        spec["queueGroup"] = serde_json::json!("workers");
        validate(spec).unwrap();
        let mut spec = valid();
        spec["jetstream"] = serde_json::json!({
            "stream": "ORDERS", "durable": "orders-reader", "deliverPolicy": "new", "ackWait": "PT1M",
            "maxAckPending": 500,
        });
        validate(spec.clone()).unwrap();
        let typed: NatsSourceSpec = serde_json::from_value(spec).unwrap();
        let settings = typed.settings("u-1").unwrap().jetstream.unwrap();
        assert_eq!(settings.ack_wait, Duration::from_secs(60));
        assert_eq!(settings.max_ack_pending, 500);
        assert_eq!(settings.deliver_policy, consumer::DeliverPolicy::New);
        let mut spec = valid();
        spec["jetstream"] = serde_json::json!({"stream": "ORDERS"});
        let typed: NatsSourceSpec = serde_json::from_value(spec).unwrap();
        let settings = typed.settings("u-1").unwrap().jetstream.unwrap();
        assert_eq!(settings.durable, "switchyard-u-1");
        assert_eq!((settings.ack_wait, settings.max_ack_pending), (DEFAULT_ACK_WAIT, 100));
        assert_eq!(settings.deliver_policy, consumer::DeliverPolicy::All);
    }

    #[test]
    fn invalid_specs_name_the_field() {
        let cases: [(&str, serde_json::Value, &str); 20] = [
            ("servers", serde_json::json!([]), "spec.servers"),
            ("servers", serde_json::json!(["nats://a:1", "nohost"]), "spec.servers[1]"),
            ("servers", serde_json::json!(["tls://a:4222"]), "spec.servers[0]"),
            ("servers", serde_json::json!(["nats://u:p@a:4222"]), "spec.servers[0]"),
            ("servers", serde_json::json!(["nats://a:4222/x"]), "spec.servers[0]"),
            ("servers", serde_json::json!(["nats://a:99999"]), "spec.servers[0]"),
            ("subject", serde_json::json!(""), "spec.subject"),
            ("subject", serde_json::json!("orders..x"), "spec.subject"),
            ("subject", serde_json::json!("orders.>.x"), "spec.subject"),
            ("subject", serde_json::json!("ord*"), "spec.subject"),
            ("subject", serde_json::json!("a b"), "spec.subject"),
            ("queueGroup", serde_json::json!("a b"), "spec.queueGroup"),
            ("jetstream", serde_json::json!({}), "spec.jetstream.stream"),
            ("jetstream", serde_json::json!({"stream": "a.b"}), "spec.jetstream.stream"),
            ("jetstream", serde_json::json!({"stream": "S", "durable": "d*"}), "spec.jetstream.durable"),
            ("jetstream", serde_json::json!({"stream": "S", "deliverPolicy": "last"}), "spec.jetstream.deliverPolicy"),
            ("jetstream", serde_json::json!({"stream": "S", "ackWait": "30s"}), "spec.jetstream.ackWait"),
            ("jetstream", serde_json::json!({"stream": "S", "ackWait": "PT0.1S"}), "spec.jetstream.ackWait"),
            ("jetstream", serde_json::json!({"stream": "S", "maxAckPending": 0}), "spec.jetstream.maxAckPending"),
            ("jetstream", serde_json::json!({"stream": "S", "extra": 1}), "spec.jetstream.extra"),
        ];
        for (field, value, expected) in cases {
            let mut spec = valid();
            spec[field] = value.clone();
            let error = validate(spec).expect_err(&value.to_string());
            assert!(error.to_string().contains(&format!("'{expected}")), "{value}: {error}");
        }
        let mut spec = valid();
        spec["queueGroup"] = serde_json::json!("workers");
        spec["jetstream"] = serde_json::json!({"stream": "S"});
        let error = validate(spec).unwrap_err();
        assert!(error.to_string().contains("spec.queueGroup"), "{error}");
        let mut spec = valid();
        spec["unknown"] = serde_json::json!(1);
        assert!(validate(spec).is_err());
        let mut spec = valid();
        spec.as_object_mut().unwrap().remove("sink");
        assert!(validate(spec).unwrap_err().to_string().contains("spec.sink"));
    }
}
