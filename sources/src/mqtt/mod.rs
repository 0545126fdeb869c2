//! MqttSource (`sources.switchyard.dev/v1alpha1`; Knative has no MQTT source): the messages of
//! MQTT topic filters on any MQTT 5.0 or 3.1.1 server as CloudEvents. Messages that are
//! CloudEvents in the MQTT binding pass through, others are wrapped ([`publish`]).
//!
//! **At least once from the edge** (with `qos: 1`, the default): the source subscribes at QoS 1
//! in a persistent session (`clean_start` false, the session kept `sessionExpiry` after a
//! disconnect, keyed by the client id), and acknowledges each message (PUBACK, manual acks) only
//! after its event is durable in the sink. A crash in between, or the node being down, leaves
//! the messages queued in the server's session, which delivers them again on the next connect.
//! `qos: 0` is at most once: the server sends without acknowledgement, and a message in flight
//! when the node stops is lost.
//!
//! **Flow control**: at most `receiveMaximum` unacknowledged messages (MQTT 5's Receive Maximum
//! in CONNECT: the server sends no more until some are acknowledged), read into a channel of
//! that size; a batch is what is waiting, up to the bound, delivered at once, then acknowledged.
//!
//! **Status**: `Ready=False` with `Subscribing` until the server confirmed the subscription
//! (before that, nothing published is kept for the source). **Reconnects** with backoff when
//! the server goes away, `Ready=False` with `MqttUnavailable` meanwhile; it subscribes again
//! when the server kept no session (and once per run, so a changed spec takes effect), and
//! `SubscriptionRefused` when the server refuses a filter.
//!
//! **A bad message never stops the source**: one that claims to be a CloudEvent but is not a
//! valid one is wrapped like any plain message; one no event can carry is skipped (and
//! acknowledged). Both are counted in `switchyard_source_bad_messages_total{kind,reason}`.

mod publish;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use switchyard_event::mqtt::MqttVersion;
use switchyard_meta::{parse_iso8601_duration, ValidationError};
use tokio::sync::mpsc;

use crate::message::{self, max_in_flight, BadMessages};
use crate::resource::{canonical, check_common, typed_spec, CeOverrides, Declared, SinkSpec};
use crate::runtime::{RunContext, Stopped};
use crate::{Activity, Behaviour, Clients, NotReady, SourceKind};

pub use publish::{message_event, PublishParts, EVENT_TYPE, PROPERTY_EXTENSION_PREFIX};

/// The reason the status gives while the server cannot be reached.
const UNAVAILABLE: &str = "MqttUnavailable";
/// The reason the status gives when the server refuses a subscription.
const SUBSCRIPTION_REFUSED: &str = "SubscriptionRefused";
/// The reason the status gives until the first subscription is confirmed.
const SUBSCRIBING: &str = "Subscribing";
/// The port of an address that names none (MQTT's registered port).
const DEFAULT_PORT: u16 = 1883;
/// How long the server keeps the session after a disconnect when the spec does not say.
const DEFAULT_SESSION_EXPIRY: &str = "P1D";
/// The largest packet the source takes (told to an MQTT 5 server, which then does not send
/// larger ones): above the default event limit of 1 MiB, so such a message reaches admission
/// and is refused there, counted and shown in the status; bounded, so `receiveMaximum` bounds
/// memory.
const MAX_PACKET_BYTES: usize = 4 << 20;
/// The longest topic filter and client id MQTT can carry (a UTF-8 string of 16-bit length).
const MAX_STRING_BYTES: usize = 65_535;
/// Capacity of a client's request channel (acknowledgements): see `Subscriber::open`.
const ACK_REQUESTS: usize = 1 << 20;
/// Keep-alive: how soon a silently dead connection is noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The MqttSource kind.
pub struct Mqtt;

/// `spec` of an MqttSource.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MqttSourceSpec {
    /// The server: `mqtt://host:port`, `tcp://host:port` or `host:port` (port default 1883).
    #[serde(default)]
    pub address: String,
    /// The topic filters to subscribe to (`+` and `#` wildcards as whole levels, `#` last).
    #[serde(default)]
    pub topics: Vec<String>,
    /// `1` (default): at least once, acknowledged once durable. `0`: at most once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<i64>,
    /// The MQTT client id, which keys the persistent session on the server (default
    /// `switchyard/<namespace>/<name>`). Two sources must not share one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// `5` (default, MQTT 5.0) or `3` (MQTT 3.1.1: structured-mode CloudEvents only, no
    /// receive maximum; the server's own in-flight limit applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<i64>,
    /// Unacknowledged messages in flight (MQTT 5 Receive Maximum), 1 to 10000 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_maximum: Option<i64>,
    /// How long the server keeps the session, and the messages queued for it, after the source
    /// disconnects: an ISO-8601 duration (default `P1D`). MQTT 5 only: a 3.1.1 server keeps a
    /// persistent session as long as its own configuration says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_expiry: Option<String>,
    /// Where events go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<SinkSpec>,
    /// Extensions set on every event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<CeOverrides>,
}

/// A spec, checked and resolved.
#[derive(Debug, Clone, PartialEq)]
struct Settings {
    host: String,
    port: u16,
    filters: Vec<String>,
    at_least_once: bool,
    version: MqttVersion,
    receive_maximum: u32,
    /// Seconds (MQTT 5 only).
    session_expiry: u32,
    client_id: Option<String>,
}

impl MqttSourceSpec {
    fn settings(&self) -> Result<Settings, ValidationError> {
        let (host, port) = parse_address(&self.address)?;
        if self.topics.is_empty() {
            return Err(ValidationError::field("spec.topics", "needs at least one topic filter".to_owned()));
        }
        for (i, filter) in self.topics.iter().enumerate() {
            check_topic_filter(filter).map_err(|why| {
                ValidationError::field(&format!("spec.topics[{i}]"), format!("'{filter}' is not a topic filter: {why}"))
            })?;
        }
        let at_least_once = match self.qos {
            None | Some(1) => true,
            Some(0) => false,
            Some(other) => {
                return Err(ValidationError::field(
                    "spec.qos",
                    format!("'{other}' is not 0 (at most once) or 1 (at least once)"),
                ))
            }
        };
        let version = match self.protocol_version {
            None | Some(5) => MqttVersion::V5,
            Some(3) => MqttVersion::V3_1_1,
            Some(other) => {
                return Err(ValidationError::field(
                    "spec.protocolVersion",
                    format!("'{other}' is not 5 (MQTT 5.0) or 3 (MQTT 3.1.1)"),
                ))
            }
        };
        if let Some(client_id) = &self.client_id {
            if client_id.is_empty() || client_id.len() > MAX_STRING_BYTES || client_id.chars().any(char::is_control) {
                return Err(ValidationError::field(
                    "spec.clientId",
                    format!("'{client_id}' is not a client id: 1 to 65535 bytes without control characters"),
                ));
            }
        }
        let receive_maximum = max_in_flight("spec.receiveMaximum", self.receive_maximum)?;
        if version == MqttVersion::V3_1_1 && self.session_expiry.is_some() {
            return Err(ValidationError::field(
                "spec.sessionExpiry",
                "is MQTT 5 only: a 3.1.1 server keeps a persistent session as its configuration says".to_owned(),
            ));
        }
        let expiry = self.session_expiry.as_deref().unwrap_or(DEFAULT_SESSION_EXPIRY);
        let session_expiry = parse_iso8601_duration(expiry)
            .map_err(|error| ValidationError::field("spec.sessionExpiry", format!("'{expiry}': {error}")))?;
        // u32::MAX means "never expires" in MQTT 5: the largest finite expiry is one less.
        let session_expiry = match u32::try_from(session_expiry.as_secs()) {
            Ok(seconds) if (1..u32::MAX).contains(&seconds) => seconds,
            _ => {
                return Err(ValidationError::field(
                    "spec.sessionExpiry",
                    format!("'{expiry}' is not between 1 second and 136 years"),
                ))
            }
        };
        Ok(Settings {
            host,
            port,
            filters: self.topics.clone(),
            at_least_once,
            version,
            receive_maximum,
            session_expiry,
            client_id: self.client_id.clone(),
        })
    }
}

/// `mqtt://host:port`, `tcp://host:port` or `host:port` → host and port.
fn parse_address(address: &str) -> Result<(String, u16), ValidationError> {
    let invalid = |why: &str| ValidationError::field("spec.address", format!("'{address}' {why}"));
    if address.is_empty() {
        return Err(ValidationError::field("spec.address", "is required, e.g. 'mqtt://127.0.0.1:1883'".to_owned()));
    }
    let with_scheme = if address.contains("://") { address.to_owned() } else { format!("mqtt://{address}") };
    let url = url::Url::parse(&with_scheme).map_err(|error| invalid(&format!("is not an address: {error}")))?;
    if !matches!(url.scheme(), "mqtt" | "tcp") {
        return Err(invalid("is not supported: use 'mqtt://' or 'tcp://' (this build has no TLS or websockets)"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("carries credentials, which are not supported"));
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("is not 'mqtt://host:port': it has a path, query or fragment"));
    }
    let host = match url.host() {
        Some(url::Host::Domain(domain)) if !domain.is_empty() => domain.to_owned(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        _ => return Err(invalid("names no host")),
    };
    Ok((host, url.port().unwrap_or(DEFAULT_PORT)))
}

/// Whether `filter` is an MQTT topic filter (MQTT 5.0 §4.7): 1 to 65535 bytes without NUL,
/// `+` and `#` only as whole levels, `#` only as the last.
fn check_topic_filter(filter: &str) -> Result<(), &'static str> {
    if filter.is_empty() {
        return Err("it is empty");
    }
    if filter.len() > MAX_STRING_BYTES {
        return Err("it is longer than 65535 bytes");
    }
    if filter.contains('\0') {
        return Err("it contains a NUL character");
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err("'#' must be a whole level, and the last");
        }
        if level.contains('+') && *level != "+" {
            return Err("'+' must be a whole level");
        }
    }
    Ok(())
}

impl SourceKind for Mqtt {
    fn kind(&self) -> &'static str {
        "MqttSource"
    }

    fn plural(&self) -> &'static str {
        "mqttsources"
    }

    fn api_versions(&self) -> &'static [&'static str] {
        &["sources.switchyard.dev/v1alpha1"]
    }

    fn validate(&self, spec: &serde_json::Value) -> Result<serde_json::Value, ValidationError> {
        let spec: MqttSourceSpec = typed_spec(spec)?;
        spec.settings()?;
        check_common(spec.sink.as_ref(), spec.ce_overrides.as_ref())?;
        Ok(canonical(&spec))
    }

    fn compile(&self, source: &Declared, _clients: &Clients) -> Result<Behaviour, NotReady> {
        let invalid = |message: String| NotReady { reason: "InvalidSpec", message };
        let spec: MqttSourceSpec = serde_json::from_value(source.spec.clone()).map_err(|e| invalid(e.to_string()))?;
        let mut settings = spec.settings().map_err(|e| invalid(e.to_string()))?;
        // Namespaces and names are DNS labels: '/' cannot occur in them, so no two sources get
        // the same default id.
        let client_id = settings
            .client_id
            .take()
            .unwrap_or_else(|| format!("switchyard/{}/{}", source.id.namespace, source.id.name));
        Ok(Behaviour::Active(Arc::new(Subscriber { settings, client_id })))
    }

    #[cfg(feature = "openapi")]
    fn spec_schema(&self) -> crate::SpecSchema {
        crate::SpecSchema::of::<MqttSourceSpec>()
    }
}

/// A running MqttSource.
struct Subscriber {
    settings: Settings,
    client_id: String,
}

/// A message as received, whichever the protocol version; kept whole to acknowledge it.
enum Received {
    V3(rumqttc::Publish),
    V5(rumqttc::v5::mqttbytes::v5::Publish),
}

impl Received {
    fn needs_ack(&self) -> bool {
        match self {
            Received::V3(publish) => publish.qos != rumqttc::QoS::AtMostOnce,
            Received::V5(publish) => publish.qos != rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        }
    }

    fn topic(&self) -> String {
        match self {
            Received::V3(publish) => publish.topic.clone(),
            // A topic is UTF-8 by the protocol; an invalid one is shown lossily (and the wrapped
            // event then keeps the replacement characters) rather than failing.
            Received::V5(publish) => String::from_utf8_lossy(&publish.topic).into_owned(),
        }
    }

    /// What the mapping reads; `topic` from [`Received::topic`].
    fn parts<'a>(&'a self, topic: &'a str) -> PublishParts<'a> {
        match self {
            Received::V3(publish) => PublishParts {
                version: MqttVersion::V3_1_1,
                topic,
                content_type: None,
                user_properties: &[],
                payload: &publish.payload,
            },
            Received::V5(publish) => {
                let properties = publish.properties.as_ref();
                PublishParts {
                    version: MqttVersion::V5,
                    topic,
                    content_type: properties.and_then(|p| p.content_type.as_deref()),
                    user_properties: properties.map_or(&[][..], |p| &p.user_properties),
                    payload: &publish.payload,
                }
            }
        }
    }
}

/// What the task driving a connection's event loop reports.
enum Report {
    /// The server accepted the connection.
    Connected { session_present: bool },
    /// A message.
    Message(Received),
    /// The server answered the subscription: `Err` with why when it refused a filter.
    Subscribed(Result<(), String>),
    /// The connection ended, with why.
    Lost(String),
}

/// The client of one connection, whichever the protocol version.
enum Client {
    V3(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// One connection: its client, what its event loop reports, and the task driving that loop
/// (ended when the connection is dropped).
struct Connection {
    client: Client,
    reports: mpsc::Receiver<Report>,
    driver: tokio::task::JoinHandle<()>,
    session_present: bool,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Connection {
    async fn subscribe(&self, filters: &[String], at_least_once: bool) -> Result<(), String> {
        match &self.client {
            Client::V3(client) => {
                let qos = if at_least_once { rumqttc::QoS::AtLeastOnce } else { rumqttc::QoS::AtMostOnce };
                let filters = filters.iter().map(|path| rumqttc::SubscribeFilter::new(path.clone(), qos));
                client.subscribe_many(filters).await.map_err(|e| e.to_string())
            }
            Client::V5(client) => {
                use rumqttc::v5::mqttbytes::QoS;
                let qos = if at_least_once { QoS::AtLeastOnce } else { QoS::AtMostOnce };
                let filters = filters.iter().map(|path| rumqttc::v5::mqttbytes::v5::Filter::new(path.clone(), qos));
                client.subscribe_many(filters).await.map_err(|e| e.to_string())
            }
        }
    }

    async fn ack(&self, message: &Received) -> Result<(), String> {
        match (&self.client, message) {
            (Client::V3(client), Received::V3(publish)) => client.ack(publish).await.map_err(|e| e.to_string()),
            (Client::V5(client), Received::V5(publish)) => client.ack(publish).await.map_err(|e| e.to_string()),
            _ => Ok(()),
        }
    }

    /// Says goodbye (the server keeps the session), waiting a moment for it to go out.
    async fn close(mut self) {
        let sent = match &self.client {
            Client::V3(client) => client.disconnect().await.is_ok(),
            Client::V5(client) => client.disconnect().await.is_ok(),
        };
        if sent {
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while let Some(report) = self.reports.recv().await {
                    if matches!(report, Report::Lost(_)) {
                        break;
                    }
                }
            })
            .await;
        }
    }
}

impl Subscriber {
    /// Connects once: `Ok` once the server accepted the connection.
    async fn open(&self) -> Result<Connection, String> {
        let settings = &self.settings;
        let bound = settings.receive_maximum as usize;
        // Acknowledging must never wait for the event loop: the loop may itself be waiting to
        // hand over a message (and it serves its buffered incoming packets before requests), so
        // a small request channel can deadlock the two. A request is a few bytes and they are
        // bounded by the messages received; the channel does not allocate its capacity.
        let requests = ACK_REQUESTS;
        let (tx, mut reports) = mpsc::channel(bound + 4);
        let (client, driver) = match settings.version {
            MqttVersion::V3_1_1 => {
                let mut options = rumqttc::MqttOptions::new(&self.client_id, &settings.host, settings.port);
                options
                    .set_clean_session(false)
                    .set_manual_acks(true)
                    .set_keep_alive(KEEP_ALIVE)
                    .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
                let (client, event_loop) = rumqttc::AsyncClient::new(options, requests);
                (Client::V3(client), tokio::spawn(drive_v3(event_loop, tx)))
            }
            MqttVersion::V5 => {
                let mut options = rumqttc::v5::MqttOptions::new(&self.client_id, &settings.host, settings.port);
                options
                    .set_clean_start(false)
                    .set_session_expiry_interval(Some(settings.session_expiry))
                    .set_receive_maximum(Some(u16::try_from(bound).unwrap_or(u16::MAX)))
                    .set_max_packet_size(Some(MAX_PACKET_BYTES as u32))
                    .set_manual_acks(true)
                    .set_keep_alive(KEEP_ALIVE);
                let (client, event_loop) = rumqttc::v5::AsyncClient::new(options, requests);
                (Client::V5(client), tokio::spawn(drive_v5(event_loop, tx)))
            }
        };
        let first = reports.recv().await;
        let mut connection = Connection { client, reports, driver, session_present: false };
        match first {
            Some(Report::Connected { session_present }) => {
                connection.session_present = session_present;
                Ok(connection)
            }
            Some(Report::Lost(error)) => Err(error),
            _ => Err("the connection ended before the server answered".to_owned()),
        }
    }

    /// Takes what the connection reports, delivers and acknowledges messages in batches, until
    /// stopped (`Err`) or the connection ends (`Ok` with the status reason and why).
    async fn pump(
        &self,
        context: &RunContext,
        connection: &mut Connection,
        bad_messages: &mut BadMessages,
        subscribed: &mut bool,
    ) -> Result<(&'static str, String), Stopped> {
        let id = &context.source().id;
        let bound = self.settings.receive_maximum as usize;
        loop {
            let first = tokio::select! {
                report = connection.reports.recv() => report,
                () = context.stopped() => return Err(Stopped),
            };
            let mut batch = Vec::new();
            let mut ended = None;
            let mut next = first;
            loop {
                match next {
                    Some(Report::Message(message)) => batch.push(message),
                    Some(Report::Subscribed(Ok(()))) => {
                        *subscribed = true;
                        context.report(None);
                    }
                    Some(Report::Subscribed(Err(why))) => ended = Some((SUBSCRIPTION_REFUSED, why)),
                    Some(Report::Connected { .. }) => {}
                    Some(Report::Lost(why)) => ended = Some((UNAVAILABLE, why)),
                    None => ended = Some((UNAVAILABLE, "the connection ended".to_owned())),
                }
                if ended.is_some() || batch.len() >= bound {
                    break;
                }
                match connection.reports.try_recv() {
                    Ok(report) => next = Some(report),
                    Err(_) => break,
                }
            }
            // Messages taken before the connection ended are delivered all the same: at QoS 0
            // nothing would send them again. At QoS 1 the server sends them again too (their
            // acknowledgements cannot go out): the same events again, with the same ids.
            let events: Vec<_> = batch
                .iter()
                .filter_map(|message| {
                    let topic = message.topic();
                    let event = message_event(&id.namespace, &id.name, message.parts(&topic));
                    bad_messages.event(context, event, &topic)
                })
                .collect();
            if !events.is_empty() {
                context.deliver(events).await?;
            }
            // Durable in the sink: now, and only now, the messages are done.
            for message in batch.iter().filter(|message| message.needs_ack()) {
                if let Err(error) = connection.ack(message).await {
                    tracing::debug!(source = %id, %error, "cannot acknowledge; the server sends the message again");
                }
            }
            if let Some(ended) = ended {
                return Ok(ended);
            }
        }
    }
}

/// Drives an MQTT 5 connection's event loop until it ends, reporting what matters.
async fn drive_v5(mut event_loop: rumqttc::v5::EventLoop, reports: mpsc::Sender<Report>) {
    use rumqttc::v5::mqttbytes::v5::{Packet, SubscribeReasonCode};
    use rumqttc::v5::Event;
    loop {
        let report = match event_loop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => Report::Connected { session_present: ack.session_present },
            Ok(Event::Incoming(Packet::Publish(publish))) => Report::Message(Received::V5(publish)),
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let refused: Vec<String> = ack
                    .return_codes
                    .iter()
                    .filter(|code| !matches!(code, SubscribeReasonCode::Success(_)))
                    .map(|code| format!("{code:?}"))
                    .collect();
                let reason = ack.properties.and_then(|p| p.reason_string).map(|r| format!(": {r}")).unwrap_or_default();
                Report::Subscribed(if refused.is_empty() {
                    Ok(())
                } else {
                    Err(format!("the server refused the subscription ({}){reason}", refused.join(", ")))
                })
            }
            Ok(Event::Incoming(Packet::Disconnect(disconnect))) => {
                let _ =
                    reports.send(Report::Lost(format!("the server disconnected: {:?}", disconnect.reason_code))).await;
                return;
            }
            Ok(_) => continue,
            Err(error) => {
                let _ = reports.send(Report::Lost(error.to_string())).await;
                return;
            }
        };
        if reports.send(report).await.is_err() {
            return;
        }
    }
}

/// Drives an MQTT 3.1.1 connection's event loop until it ends, reporting what matters.
async fn drive_v3(mut event_loop: rumqttc::EventLoop, reports: mpsc::Sender<Report>) {
    use rumqttc::{Event, Packet, SubscribeReasonCode};
    loop {
        let report = match event_loop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => Report::Connected { session_present: ack.session_present },
            Ok(Event::Incoming(Packet::Publish(publish))) => Report::Message(Received::V3(publish)),
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let refused =
                    ack.return_codes.iter().filter(|code| matches!(code, SubscribeReasonCode::Failure)).count();
                Report::Subscribed(if refused == 0 {
                    Ok(())
                } else {
                    Err(format!("the server refused {refused} of the topic filters"))
                })
            }
            Ok(_) => continue,
            Err(error) => {
                let _ = reports.send(Report::Lost(error.to_string())).await;
                return;
            }
        };
        if reports.send(report).await.is_err() {
            return;
        }
    }
}

#[async_trait]
impl Activity for Subscriber {
    async fn run(&self, context: RunContext) {
        let mut bad_messages = BadMessages::default();
        // Subscribed in this run: a spec's filters are subscribed once per run even when the
        // server kept the session (the spec may have changed), and again whenever it did not.
        let mut subscribed = false;
        let settings = &self.settings;
        // Until the server confirmed the subscription, messages published are not kept for the
        // source: say so rather than look ready.
        context.report(Some(NotReady {
            reason: SUBSCRIBING,
            message: format!("connecting to '{}:{}' and subscribing", settings.host, settings.port),
        }));
        loop {
            let Ok(mut connection) = message::connect(&context, UNAVAILABLE, || self.open()).await else { return };
            if !subscribed || !connection.session_present {
                subscribed = false;
                if let Err(error) = connection.subscribe(&self.settings.filters, self.settings.at_least_once).await {
                    message::lost(&context, UNAVAILABLE, &error);
                    if context.sleep(message::RECONNECT_FIRST).await.is_err() {
                        return;
                    }
                    continue;
                }
            } else {
                context.report(None);
            }
            match self.pump(&context, &mut connection, &mut bad_messages, &mut subscribed).await {
                Ok((reason, why)) => {
                    message::lost(&context, reason, &why);
                    drop(connection);
                    // A server that takes the connection and then drops it (or refuses the
                    // subscription) is not asked again at once.
                    if context.sleep(message::RECONNECT_FIRST).await.is_err() {
                        return;
                    }
                }
                Err(Stopped) => {
                    connection.close().await;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(spec: serde_json::Value) -> Result<serde_json::Value, ValidationError> {
        Mqtt.validate(&spec)
    }

    fn valid() -> serde_json::Value {
        serde_json::json!({
            "address": "mqtt://127.0.0.1:1883",
            "topics": ["sensors/+/temperature", "devices/#"],
            "sink": {"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "default"}},
        })
    }

    #[test]
    fn specs_are_accepted_with_defaults() {
        validate(valid()).unwrap();
        let settings: MqttSourceSpec = serde_json::from_value(valid()).unwrap();
        let settings = settings.settings().unwrap();
        assert_eq!((settings.host.as_str(), settings.port), ("127.0.0.1", 1883));
        assert!(settings.at_least_once);
        assert_eq!(settings.version, MqttVersion::V5);
        assert_eq!(settings.receive_maximum, message::DEFAULT_MAX_IN_FLIGHT);
        assert_eq!(settings.session_expiry, 86_400);
        let mut spec = valid();
        spec["address"] = serde_json::json!("broker.local");
        spec["topics"] = serde_json::json!(["#", "+", "a/+/b/#", "$share/g/a", "/"]);
        spec["qos"] = serde_json::json!(0);
        spec["clientId"] = serde_json::json!("plant-7");
        spec["protocolVersion"] = serde_json::json!(3);
        spec["receiveMaximum"] = serde_json::json!(10_000);
        validate(spec.clone()).unwrap();
        let parsed: MqttSourceSpec = serde_json::from_value(spec).unwrap();
        let settings = parsed.settings().unwrap();
        assert_eq!((settings.host.as_str(), settings.port), ("broker.local", DEFAULT_PORT));
        for address in ["tcp://[::1]:1884", "127.0.0.1:11883", "mqtt://h:1/"] {
            let mut spec = valid();
            spec["address"] = serde_json::json!(address);
            validate(spec).expect(address);
        }
        let mut spec = valid();
        spec["sessionExpiry"] = serde_json::json!("PT1H");
        validate(spec).unwrap();
    }

    #[test]
    fn invalid_specs_name_the_field() {
        let cases: Vec<(&str, serde_json::Value, &str)> = vec![
            ("address", serde_json::json!(""), "spec.address"),
            ("address", serde_json::json!("mqtts://h:8883"), "spec.address"),
            ("address", serde_json::json!("mqtt://h:99999"), "spec.address"),
            ("address", serde_json::json!("mqtt://u:p@h:1883"), "spec.address"),
            ("address", serde_json::json!("mqtt://h:1883/path"), "spec.address"),
            ("address", serde_json::json!("mqtt://:1883"), "spec.address"),
            ("topics", serde_json::json!([]), "spec.topics"),
            ("topics", serde_json::json!(["ok", "a/#/b"]), "spec.topics[1]"),
            ("topics", serde_json::json!(["a#"]), "spec.topics[0]"),
            ("topics", serde_json::json!(["a/b+"]), "spec.topics[0]"),
            ("topics", serde_json::json!([""]), "spec.topics[0]"),
            ("topics", serde_json::json!(["a\u{0}b"]), "spec.topics[0]"),
            ("qos", serde_json::json!(2), "spec.qos"),
            ("protocolVersion", serde_json::json!(4), "spec.protocolVersion"),
            ("clientId", serde_json::json!(""), "spec.clientId"),
            ("clientId", serde_json::json!("a\nb"), "spec.clientId"),
            ("receiveMaximum", serde_json::json!(0), "spec.receiveMaximum"),
            ("receiveMaximum", serde_json::json!(10_001), "spec.receiveMaximum"),
            ("sessionExpiry", serde_json::json!("forever"), "spec.sessionExpiry"),
            ("sessionExpiry", serde_json::json!("PT0S"), "spec.sessionExpiry"),
            ("sessionExpiry", serde_json::json!("P99999D"), "spec.sessionExpiry"),
        ];
        for (field, value, expected) in cases {
            let mut spec = valid();
            spec[field] = value.clone();
            let error = validate(spec).expect_err(&value.to_string());
            let ValidationError::Field { field: actual, message } = &error else { panic!("{value}: {error}") };
            assert_eq!(actual, expected, "{value}: {error}");
            if let Some(text) = value.as_str().filter(|text| !text.is_empty() && !text.contains('\n')) {
                assert!(message.contains(text), "quotes the bad value: {message}");
            }
        }
        let mut spec = valid();
        spec["protocolVersion"] = serde_json::json!(3);
        spec["sessionExpiry"] = serde_json::json!("PT1H");
        let error = validate(spec).unwrap_err();
        assert!(matches!(&error, ValidationError::Field { field, .. } if field == "spec.sessionExpiry"), "{error}");
        let mut spec = valid();
        spec["prefetch"] = serde_json::json!(5);
        assert!(validate(spec).unwrap_err().to_string().contains("prefetch"), "unknown fields are refused");
        let mut spec = valid();
        spec.as_object_mut().unwrap().remove("sink");
        assert!(validate(spec).is_err());
    }
}
