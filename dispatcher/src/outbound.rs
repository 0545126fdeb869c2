//! The outbound guard: where Switchyard may send HTTP on a declaring user's behalf
//! (subscribers, dead-letter sinks, source sinks) and on the operator's (the OTLP collector).
//!
//! A destination is judged by the addresses it connects to, *after* DNS resolution: the
//! [`GuardedResolver`] drops refused addresses, so a name that resolves to an internal
//! address at send time (DNS rebinding) is refused no matter what it resolved to when it was
//! declared. IP literals never reach a resolver, so the delivery client checks them itself.
//!
//! Always refused unless allow-listed: link-local (169.254.0.0/16, which holds the cloud
//! metadata address 169.254.169.254, and fe80::/10), AWS's IPv6 metadata address fd00:ec2::254,
//! unspecified (0.0.0.0/8, ::), multicast and broadcast. Loopback and private ranges (10/8,
//! 172.16/12, 192.168/16, 100.64/10, fc00::/7) only when the policy refuses them
//! (`refuse_private`), plus any configured `refuse` range. An address inside an IPv6 range
//! that embeds an IPv4 address (`::ffff:a.b.c.d`, NAT64's 64:ff9b::/96) is judged as that
//! IPv4 address, so an IPv6 spelling cannot reach what its IPv4 form cannot.
//!
//! KafkaSource's clusters are reached by librdkafka, which resolves names itself: they are
//! held to a list of `host:port` bootstrap servers instead (`kafka_clusters`), and their
//! consumer groups put under a prefix (`kafka_group_prefix`) so that a declaration cannot join
//! (and commit the offsets of) another application's group.
//!
//! One policy serves a process: `serve` [`install`]s it before anything connects, and the
//! declaration check ([`check_declared`]), which has no configuration of its own, reads it.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
pub use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use switchyard_log::records::{RecordConnector, RecordConsumer, RecordConsumerConfig};
use switchyard_log::LogError;
use switchyard_meta::ValidationError;
use url::{Host, Url};

/// Connections the guard refused, by `reason` ([`Refusal::reason`]).
pub const OUTBOUND_REFUSED: &str = "switchyard_outbound_refused_total";

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The cloud metadata service (169.254.169.254, fd00:ec2::254).
    CloudMetadata,
    /// Link-local: 169.254.0.0/16, fe80::/10.
    LinkLocal,
    /// 0.0.0.0/8 or `::`, which connect to this host.
    Unspecified,
    /// Multicast: 224.0.0.0/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// 10/8, 172.16/12, 192.168/16, 100.64/10 (carrier-grade NAT), fc00::/7.
    Private,
    /// One of the ranges `[outbound] refuse` lists.
    Configured,
}

impl Refusal {
    /// The `reason` label of [`OUTBOUND_REFUSED`].
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::CloudMetadata => "cloud metadata",
            Refusal::LinkLocal => "link-local",
            Refusal::Unspecified => "unspecified",
            Refusal::Multicast => "multicast",
            Refusal::Broadcast => "broadcast",
            Refusal::Loopback => "loopback",
            Refusal::Private => "private",
            Refusal::Configured => "configured refused range",
        }
    }

    /// Whether the address is refused whatever the policy says (allow-lists aside).
    pub fn is_always(self) -> bool {
        matches!(
            self,
            Refusal::CloudMetadata
                | Refusal::LinkLocal
                | Refusal::Unspecified
                | Refusal::Multicast
                | Refusal::Broadcast
        )
    }

    /// "a link-local address (cloud metadata)", for messages.
    fn described(self) -> &'static str {
        match self {
            Refusal::CloudMetadata => "a link-local address (cloud metadata)",
            Refusal::LinkLocal => "a link-local address",
            Refusal::Unspecified => "an unspecified address",
            Refusal::Multicast => "a multicast address",
            Refusal::Broadcast => "a broadcast address",
            Refusal::Loopback => "a loopback address",
            Refusal::Private => "a private address",
            Refusal::Configured => "in a range [outbound] refuse lists",
        }
    }
}

/// The built-in class of `ip`, if it is anything but a public address.
pub fn classify(ip: IpAddr) -> Option<Refusal> {
    match canonical(ip) {
        IpAddr::V4(ip) => classify_v4(ip),
        IpAddr::V6(ip) => classify_v6(ip),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Refusal> {
    let [a, b, ..] = ip.octets();
    match () {
        _ if a == 0 => Some(Refusal::Unspecified),
        _ if ip == Ipv4Addr::new(169, 254, 169, 254) => Some(Refusal::CloudMetadata),
        _ if ip.is_link_local() => Some(Refusal::LinkLocal),
        _ if ip.is_broadcast() => Some(Refusal::Broadcast),
        _ if ip.is_multicast() => Some(Refusal::Multicast),
        _ if ip.is_loopback() => Some(Refusal::Loopback),
        _ if ip.is_private() || (a == 100 && (64..128).contains(&b)) => Some(Refusal::Private),
        _ => None,
    }
}

/// fd00:ec2::254, the AWS metadata service over IPv6 (inside fc00::/7, so checked first).
const AWS_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

fn classify_v6(ip: Ipv6Addr) -> Option<Refusal> {
    let first = ip.segments()[0];
    match () {
        _ if ip.is_unspecified() => Some(Refusal::Unspecified),
        _ if ip == AWS_METADATA_V6 => Some(Refusal::CloudMetadata),
        _ if first & 0xffc0 == 0xfe80 => Some(Refusal::LinkLocal),
        _ if ip.is_multicast() => Some(Refusal::Multicast),
        _ if ip.is_loopback() => Some(Refusal::Loopback),
        _ if first & 0xfe00 == 0xfc00 => Some(Refusal::Private),
        _ => None,
    }
}

/// `ip`, or the IPv4 address it embeds: IPv4-mapped (`::ffff:a.b.c.d`, RFC 4291 §2.5.5.2) and
/// NAT64's well-known prefix (64:ff9b::/96, RFC 6052 §2.1), both of which reach that IPv4
/// address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let segments = v6.segments();
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., a, b, c, d] = v6.octets();
        return IpAddr::V4(Ipv4Addr::new(a, b, c, d));
    }
    ip
}

/// A CIDR range (or a single address) that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a CIDR range like 10.0.0.0/8 or fd00::/8, nor an IP address")]
pub struct InvalidCidr(pub String);

/// `10.0.0.0/8`, `fd00::/8`, or one address (`127.0.0.1` is `127.0.0.1/32`).
pub fn parse_cidr(text: &str) -> Result<IpNet, InvalidCidr> {
    let text = text.trim();
    text.parse::<IpNet>().or_else(|_| text.parse::<IpAddr>().map(IpNet::from)).map_err(|_| InvalidCidr(text.to_owned()))
}

/// What may be connected to: the built-in classes, `refuse_private`, and the configured
/// ranges. An allow-listed address is allowed whatever else says; the default policy refuses
/// only the always-refused classes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundPolicy {
    refuse_private: bool,
    allow: Vec<IpNet>,
    refuse: Vec<IpNet>,
    namespaces: BTreeMap<String, Vec<IpNet>>,
    kafka_clusters: Option<Vec<String>>,
    kafka_group_prefix: Option<String>,
    reserved_kafka_prefix: Option<String>,
}

impl OutboundPolicy {
    /// A policy that refuses loopback and private ranges too when `refuse_private` is set.
    pub fn new(refuse_private: bool) -> OutboundPolicy {
        OutboundPolicy { refuse_private, ..OutboundPolicy::default() }
    }

    /// Allows `range` for every namespace (and the OTLP exporter).
    pub fn allow(mut self, range: IpNet) -> OutboundPolicy {
        self.allow.push(range);
        self
    }

    /// Refuses `range` too.
    pub fn refuse(mut self, range: IpNet) -> OutboundPolicy {
        self.refuse.push(range);
        self
    }

    /// Allows `range` for the destinations of `namespace`'s declarations.
    pub fn allow_in(mut self, namespace: &str, range: IpNet) -> OutboundPolicy {
        self.namespaces.entry(namespace.to_owned()).or_default().push(range);
        self
    }

    /// Lets KafkaSources and KafkaSinks reach only these bootstrap servers (`host:port`,
    /// compared without case); without it, any.
    pub fn kafka_clusters(mut self, servers: Vec<String>) -> OutboundPolicy {
        self.kafka_clusters = Some(servers.iter().map(|server| server.trim().to_ascii_lowercase()).collect());
        self
    }

    /// Puts every KafkaSource's consumer group under `prefix`.
    pub fn kafka_group_prefix(mut self, prefix: String) -> OutboundPolicy {
        self.kafka_group_prefix = Some(prefix);
        self
    }

    /// Keeps KafkaSources and KafkaSinks off the topics and consumer groups named under
    /// `prefix`: the Kafka backend's own (its brokers' topics, its triggers' groups), which a
    /// source reading or a sink writing would open to any namespace, past authentication and
    /// EventPolicies, and a source's group joining would commit a trigger's offsets.
    pub fn reserve_kafka_prefix(mut self, prefix: String) -> OutboundPolicy {
        self.reserved_kafka_prefix = Some(prefix).filter(|prefix| !prefix.is_empty());
        self
    }

    /// Why a KafkaSource or KafkaSink may not use `name` (a topic or a consumer group), if it
    /// may not.
    fn reserved_kafka_name(&self, name: &str) -> Option<String> {
        let prefix = self.reserved_kafka_prefix.as_deref().filter(|prefix| name.starts_with(prefix))?;
        Some(format!("'{name}' is one of this server's own Kafka names (prefix '{prefix}', its brokers' topics and its triggers' groups): name another"))
    }

    /// Why a KafkaSink may not write to `topic` of the cluster at `servers`, if it may not.
    pub fn refused_kafka_sink(&self, servers: &str, topic: &str) -> Option<String> {
        if let Some(server) = self.refused_kafka_server([servers]) {
            return Some(format!("kafka cluster '{server}' is not in [outbound] kafka_clusters"));
        }
        self.reserved_kafka_name(topic)
    }

    /// The bootstrap servers KafkaSources may reach, if limited.
    pub fn allowed_kafka_clusters(&self) -> Option<&[String]> {
        self.kafka_clusters.as_deref()
    }

    /// The prefix of KafkaSources' consumer groups, if any.
    pub fn group_prefix(&self) -> Option<&str> {
        self.kafka_group_prefix.as_deref()
    }

    /// The first of `servers` (`host:port[,host:port…]` entries) that KafkaSources may not
    /// reach.
    fn refused_kafka_server<'a>(&self, servers: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
        let allowed = self.kafka_clusters.as_ref()?;
        servers
            .into_iter()
            .flat_map(|entry| entry.split(','))
            .map(str::trim)
            .find(|server| !allowed.contains(&server.to_ascii_lowercase()))
    }

    /// `group` under the configured prefix (unchanged when it already is).
    fn prefixed_group(&self, group: String) -> String {
        match &self.kafka_group_prefix {
            Some(prefix) if !group.starts_with(prefix.as_str()) => format!("{prefix}{group}"),
            _ => group,
        }
    }

    /// Whether loopback and private ranges are refused (strict mode).
    pub fn refuses_private(&self) -> bool {
        self.refuse_private
    }

    /// The ranges allowed for every namespace.
    pub fn allowed(&self) -> &[IpNet] {
        &self.allow
    }

    /// The configured refused ranges.
    pub fn refused(&self) -> &[IpNet] {
        &self.refuse
    }

    /// The namespaces with allow-lists of their own, and their ranges.
    pub fn namespaces(&self) -> &BTreeMap<String, Vec<IpNet>> {
        &self.namespaces
    }

    /// Whether a connection to `ip` for `namespace` (none: the operator's own, e.g. OTLP) is
    /// allowed.
    pub fn check(&self, ip: IpAddr, namespace: Option<&str>) -> Result<(), Refusal> {
        let ip = canonical(ip);
        let in_any = |ranges: &[IpNet]| ranges.iter().any(|range| range.contains(&ip));
        let namespace_allows = namespace.and_then(|ns| self.namespaces.get(ns)).is_some_and(|r| in_any(r));
        if in_any(&self.allow) || namespace_allows {
            return Ok(());
        }
        match classify(ip) {
            Some(refusal) if refusal.is_always() || self.refuse_private => Err(refusal),
            _ if in_any(&self.refuse) => Err(Refusal::Configured),
            _ => Ok(()),
        }
    }

    /// Whether some allow-list (the global one or any namespace's) holds `ip`.
    fn allowed_anywhere(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.allow.iter().chain(self.namespaces.values().flatten()).any(|range| range.contains(&ip))
    }
}

static INSTALLED: OnceLock<Arc<OutboundPolicy>> = OnceLock::new();
static NODE: OnceLock<SocketAddr> = OnceLock::new();

/// Makes `policy` the process's: called once by `serve`, before any client is built or any
/// declaration checked. A later call changes nothing.
pub fn install(policy: OutboundPolicy) {
    let _ = INSTALLED.set(Arc::new(policy));
}

/// The process's policy: the installed one, or the default (only the always-refused classes).
pub fn installed() -> Arc<OutboundPolicy> {
    INSTALLED.get_or_init(Arc::default).clone()
}

/// Tells the guard where this node listens: deliveries to the node itself (a trigger's
/// KafkaSink, at `http://127.0.0.1:<port>/kafkasinks/…`; a chained broker's ingest) are
/// Switchyard talking to itself, not to an internal service, and are not refused.
pub fn serving_at(address: SocketAddr) {
    let _ = NODE.set(address);
}

/// Whether `ip:port` is this node's listener (an unspecified listen address is reached on
/// loopback, as the controller addresses it).
pub(crate) fn is_this_node(ip: IpAddr, port: u16) -> bool {
    NODE.get().is_some_and(|node| {
        node.port() == port && (node.ip() == ip || (node.ip().is_unspecified() && ip.is_loopback()))
    })
}

/// The IP of a URL whose host is a literal address.
pub fn literal_ip(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        Host::Domain(_) => None,
    }
}

/// The declaration-time check of a destination URL (`field`, e.g. `spec.subscriber.uri`): a
/// literal address of an always-refused class is refused now, unless an allow-list of the
/// installed policy holds it. A declaration does not say where a name resolves at send time,
/// and a namespace's allow-list is not known here, so the connect-time guard stays the
/// authority: this only answers early what could never be delivered.
pub fn check_declared(field: &str, url: &Url) -> Result<(), ValidationError> {
    let Some(ip) = literal_ip(url) else { return Ok(()) };
    match classify(ip) {
        Some(refusal) if refusal.is_always() && !installed().allowed_anywhere(ip) => Err(ValidationError::field(
            field,
            format!(
                "'{ip}' is {}; Switchyard never delivers there unless [outbound] allow lists it",
                refusal.described()
            ),
        )),
        _ => Ok(()),
    }
}

/// The declaration-time check of a KafkaSource's (canonical) spec: every bootstrap server in
/// `spec.bootstrapServers` must be one `[outbound] kafka_clusters` lists, when it lists any,
/// and no topic nor the consumer group may be the Kafka backend's own.
pub fn check_kafka_source(spec: &serde_json::Value) -> Result<(), ValidationError> {
    let policy = installed();
    let servers = spec.get("bootstrapServers").and_then(serde_json::Value::as_array);
    let servers = servers.into_iter().flatten().filter_map(serde_json::Value::as_str);
    if let Some(server) = policy.refused_kafka_server(servers) {
        return Err(refused_cluster("spec.bootstrapServers", server));
    }
    let topics = spec.get("topics").and_then(serde_json::Value::as_array).into_iter().flatten();
    for (i, topic) in topics.filter_map(serde_json::Value::as_str).enumerate() {
        if let Some(why) = policy.reserved_kafka_name(topic) {
            return Err(ValidationError::field(&format!("spec.topics[{i}]"), why));
        }
    }
    let group = spec.get("consumerGroup").and_then(serde_json::Value::as_str);
    match group.and_then(|group| policy.reserved_kafka_name(group)) {
        Some(why) => Err(ValidationError::field("spec.consumerGroup", why)),
        None => Ok(()),
    }
}

/// The declaration-time check of a KafkaSink (its `spec.bootstrapServers`, joined, and
/// `spec.topic`) against the installed policy.
pub fn check_kafka_sink(servers: &str, topic: &str) -> Result<(), ValidationError> {
    let policy = installed();
    if let Some(server) = policy.refused_kafka_server([servers]) {
        return Err(refused_cluster("spec.bootstrapServers", server));
    }
    match policy.reserved_kafka_name(topic) {
        Some(why) => Err(ValidationError::field("spec.topic", why)),
        None => Ok(()),
    }
}

fn refused_cluster(field: &str, server: &str) -> ValidationError {
    ValidationError::field(
        field,
        format!(
            "'{server}' is not a Kafka cluster this server may connect to: [outbound] kafka_clusters does not list it"
        ),
    )
}

/// KafkaSource's connector under `policy`: a cluster not in `kafka_clusters` is never
/// connected to (a declaration stored before the list was set included), and every consumer
/// group is put under `kafka_group_prefix`.
pub fn guard_kafka(inner: Arc<dyn RecordConnector>, policy: Arc<OutboundPolicy>) -> Arc<dyn RecordConnector> {
    Arc::new(GuardedRecords { inner, policy })
}

struct GuardedRecords {
    inner: Arc<dyn RecordConnector>,
    policy: Arc<OutboundPolicy>,
}

#[async_trait]
impl RecordConnector for GuardedRecords {
    async fn connect(&self, mut config: RecordConsumerConfig) -> Result<Box<dyn RecordConsumer>, LogError> {
        if let Some(server) = self.policy.refused_kafka_server([config.bootstrap_servers.as_str()]) {
            metrics::counter!(OUTBOUND_REFUSED, "reason" => Refusal::Configured.reason()).increment(1);
            return Err(LogError::Unavailable(format!(
                "refused by the outbound guard: kafka cluster '{server}' is not in [outbound] kafka_clusters"
            )));
        }
        config.group = self.policy.prefixed_group(config.group);
        // Declarations stored before the rule are held to it too.
        let reserved =
            config.topics.iter().chain([&config.group]).find_map(|name| self.policy.reserved_kafka_name(name));
        if let Some(why) = reserved {
            metrics::counter!(OUTBOUND_REFUSED, "reason" => Refusal::Configured.reason()).increment(1);
            return Err(LogError::Unavailable(format!("refused by the outbound guard: {why}")));
        }
        self.inner.connect(config).await
    }
}

/// A connection the guard refused: a failed attempt, retried and dead-lettered like a
/// connection refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The host of the URL.
    pub host: String,
    /// Whether `host` is a name that resolved to `addresses` (rather than a literal address).
    pub resolved: bool,
    /// Each address refused, with why.
    pub addresses: Vec<(IpAddr, Refusal)>,
}

impl Refused {
    /// The first address's reason: the metric's label.
    pub fn reason(&self) -> &'static str {
        self.addresses.first().map_or(Refusal::Configured.reason(), |(_, refusal)| refusal.reason())
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = &self.host;
        match (self.resolved, self.addresses.as_slice()) {
            (false, [(_, refusal)]) => {
                write!(f, "refused by the outbound guard: '{host}' is {}", refusal.described())
            }
            _ => {
                let listed: Vec<String> =
                    self.addresses.iter().map(|(ip, refusal)| format!("{ip} ({})", refusal.reason())).collect();
                write!(f, "refused by the outbound guard: '{host}' resolves only to {}", listed.join(", "))
            }
        }
    }
}

impl std::error::Error for Refused {}

/// A reqwest resolver that resolves with the system resolver and keeps only the addresses
/// the policy allows: reqwest connects to what it returns, so the address judged is the
/// address connected to.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<OutboundPolicy>,
    namespace: Option<String>,
}

impl GuardedResolver {
    /// Judges for `namespace`'s destinations (`None`: only the global allow-list applies).
    pub fn new(policy: Arc<OutboundPolicy>, namespace: Option<String>) -> GuardedResolver {
        GuardedResolver { policy, namespace }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: reqwest puts the URL's port on each address.
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let mut allowed = Vec::new();
            let mut refused: Vec<(IpAddr, Refusal)> = Vec::new();
            for address in found {
                match guard.policy.check(address.ip(), guard.namespace.as_deref()) {
                    Ok(()) => allowed.push(address),
                    Err(refusal) if !refused.iter().any(|(ip, _)| *ip == address.ip()) => {
                        refused.push((address.ip(), refusal))
                    }
                    Err(_) => {}
                }
            }
            if allowed.is_empty() && !refused.is_empty() {
                return Err(Box::new(Refused { host, resolved: true, addresses: refused }) as _);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// `builder` guarded by `policy` for `namespace`: names resolved through the
/// [`GuardedResolver`], and no proxy. A proxy from the environment (`HTTP_PROXY`…) would be
/// the address connected to, so the guard would judge the proxy and never the destination.
pub fn guard(
    builder: reqwest::ClientBuilder,
    policy: Arc<OutboundPolicy>,
    namespace: Option<String>,
) -> reqwest::ClientBuilder {
    builder.no_proxy().dns_resolver(Arc::new(GuardedResolver::new(policy, namespace)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect(text)
    }

    fn cidr(text: &str) -> IpNet {
        parse_cidr(text).expect(text)
    }

    #[test]
    fn the_kafka_backends_own_topics_and_groups_are_reserved_and_sinks_held_to_the_cluster_list() {
        let policy = OutboundPolicy::default().reserve_kafka_prefix("switchyard.".to_owned());
        let why = policy.refused_kafka_sink("kafka:9092", "switchyard.team.orders").expect("refused");
        assert!(why.contains("'switchyard.team.orders'") && why.contains("'switchyard.'"), "{why}");
        assert_eq!(policy.refused_kafka_sink("kafka:9092", "orders"), None);
        assert!(policy.reserved_kafka_name("switchyard.team.trigger").is_some());
        assert_eq!(OutboundPolicy::default().reserve_kafka_prefix(String::new()).reserved_kafka_name("x"), None);
        let listed = OutboundPolicy::default().kafka_clusters(vec!["Kafka-1:9092".to_owned()]);
        assert_eq!(listed.refused_kafka_sink("kafka-1:9092", "orders"), None);
        assert!(listed
            .refused_kafka_sink("kafka-1:9092,other:9092", "orders")
            .is_some_and(|why| why.contains("'other:9092'")));
    }

    #[test]
    fn every_built_in_range_is_classified() {
        let cases = [
            ("169.254.169.254", Some(Refusal::CloudMetadata)),
            ("169.254.0.1", Some(Refusal::LinkLocal)),
            ("169.254.255.255", Some(Refusal::LinkLocal)),
            ("fe80::1", Some(Refusal::LinkLocal)),
            ("febf::1", Some(Refusal::LinkLocal)),
            ("fd00:ec2::254", Some(Refusal::CloudMetadata)),
            ("0.0.0.0", Some(Refusal::Unspecified)),
            ("0.1.2.3", Some(Refusal::Unspecified)),
            ("::", Some(Refusal::Unspecified)),
            ("224.0.0.1", Some(Refusal::Multicast)),
            ("239.255.255.250", Some(Refusal::Multicast)),
            ("ff02::1", Some(Refusal::Multicast)),
            ("255.255.255.255", Some(Refusal::Broadcast)),
            ("127.0.0.1", Some(Refusal::Loopback)),
            ("127.255.0.9", Some(Refusal::Loopback)),
            ("::1", Some(Refusal::Loopback)),
            ("10.1.2.3", Some(Refusal::Private)),
            ("172.16.0.1", Some(Refusal::Private)),
            ("172.31.255.255", Some(Refusal::Private)),
            ("192.168.1.1", Some(Refusal::Private)),
            ("100.64.0.1", Some(Refusal::Private)),
            ("100.127.255.255", Some(Refusal::Private)),
            ("fc00::1", Some(Refusal::Private)),
            ("fd12:3456::1", Some(Refusal::Private)),
            // Just outside.
            ("172.32.0.1", None),
            ("100.128.0.1", None),
            ("169.253.255.255", None),
            ("fec0::1", None),
            ("8.8.8.8", None),
            ("2001:db8::1", None),
        ];
        for (address, expected) in cases {
            assert_eq!(classify(ip(address)), expected, "{address}");
        }
    }

    #[test]
    fn embedded_ipv4_is_judged_as_ipv4() {
        assert_eq!(classify(ip("::ffff:169.254.169.254")), Some(Refusal::CloudMetadata));
        assert_eq!(classify(ip("::ffff:127.0.0.1")), Some(Refusal::Loopback));
        assert_eq!(classify(ip("::ffff:10.0.0.1")), Some(Refusal::Private));
        assert_eq!(classify(ip("64:ff9b::a9fe:a9fe")), Some(Refusal::CloudMetadata));
        assert_eq!(classify(ip("::ffff:8.8.8.8")), None);
        let strict = OutboundPolicy::new(true).allow(cidr("127.0.0.1/32"));
        assert_eq!(strict.check(ip("::ffff:127.0.0.1"), None), Ok(()), "the IPv4 allow-list applies");
        assert_eq!(strict.check(ip("::ffff:127.0.0.2"), None), Err(Refusal::Loopback));
    }

    #[test]
    fn the_default_policy_refuses_only_the_always_refused_classes() {
        let lenient = OutboundPolicy::default();
        for address in ["127.0.0.1", "::1", "10.0.0.1", "192.168.0.1", "fd00::1", "8.8.8.8"] {
            assert_eq!(lenient.check(ip(address), Some("ns")), Ok(()), "{address}");
        }
        for address in ["169.254.169.254", "fe80::1", "0.0.0.0", "::", "224.0.0.1", "255.255.255.255", "fd00:ec2::254"]
        {
            assert!(lenient.check(ip(address), Some("ns")).is_err(), "{address}");
        }
    }

    #[test]
    fn strict_mode_refuses_loopback_and_private_ranges() {
        let strict = OutboundPolicy::new(true);
        assert_eq!(strict.check(ip("127.0.0.1"), None), Err(Refusal::Loopback));
        assert_eq!(strict.check(ip("10.0.0.1"), None), Err(Refusal::Private));
        assert_eq!(strict.check(ip("fd00::1"), None), Err(Refusal::Private));
        assert_eq!(strict.check(ip("169.254.169.254"), None), Err(Refusal::CloudMetadata));
        assert_eq!(strict.check(ip("8.8.8.8"), None), Ok(()));
    }

    #[test]
    fn configured_ranges_are_refused_and_allow_lists_override_everything() {
        let policy = OutboundPolicy::default().refuse(cidr("127.0.0.0/8")).refuse(cidr("203.0.113.0/24"));
        assert_eq!(policy.check(ip("127.0.0.1"), None), Err(Refusal::Configured));
        assert_eq!(policy.check(ip("203.0.113.9"), None), Err(Refusal::Configured));
        assert_eq!(policy.check(ip("::1"), None), Ok(()), "only what is listed");
        let allowed = policy.clone().allow(cidr("127.0.0.1")).allow(cidr("169.254.169.254/32"));
        assert_eq!(allowed.check(ip("127.0.0.1"), None), Ok(()));
        assert_eq!(allowed.check(ip("127.0.0.2"), None), Err(Refusal::Configured));
        assert_eq!(allowed.check(ip("169.254.169.254"), None), Ok(()));
        assert_eq!(allowed.check(ip("169.254.169.253"), None), Err(Refusal::LinkLocal));
    }

    #[test]
    fn a_namespace_allow_list_applies_to_that_namespace_only() {
        let policy = OutboundPolicy::new(true).allow_in("team-a", cidr("127.0.0.1/32"));
        assert_eq!(policy.check(ip("127.0.0.1"), Some("team-a")), Ok(()));
        assert_eq!(policy.check(ip("127.0.0.1"), Some("team-b")), Err(Refusal::Loopback));
        assert_eq!(policy.check(ip("127.0.0.1"), None), Err(Refusal::Loopback));
        assert_eq!(policy.check(ip("127.0.0.2"), Some("team-a")), Err(Refusal::Loopback));
    }

    #[test]
    fn cidrs_parse_or_are_quoted() {
        assert_eq!(cidr("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(cidr(" 127.0.0.1 ").to_string(), "127.0.0.1/32");
        assert_eq!(cidr("fd00::/8").to_string(), "fd00::/8");
        assert_eq!(cidr("::1").to_string(), "::1/128");
        for bad in ["10.0.0.0/33", "10.0.0/8", "localhost", "", "fd00::/129"] {
            let error = parse_cidr(bad).unwrap_err().to_string();
            assert!(error.contains(&format!("'{}'", bad.trim())), "{error}");
        }
    }

    #[test]
    fn literal_addresses_of_always_refused_classes_are_refused_at_declaration() {
        let refused = [
            ("http://169.254.169.254/latest/meta-data", "'169.254.169.254' is a link-local address (cloud metadata)"),
            ("http://[fe80::1]/", "'fe80::1' is a link-local address"),
            ("http://0.0.0.0:1/", "'0.0.0.0' is an unspecified address"),
            ("http://[::ffff:169.254.169.254]/", "cloud metadata"),
            ("http://[fd00:ec2::254]/", "cloud metadata"),
            ("http://224.0.0.1/", "multicast"),
            ("http://2852039166/", "cloud metadata"),
        ];
        for (uri, expected) in refused {
            let error = check_declared("spec.subscriber.uri", &Url::parse(uri).unwrap()).unwrap_err();
            let ValidationError::Field { field, message } = &error else { panic!("{uri}: {error}") };
            assert_eq!(field, "spec.subscriber.uri");
            assert!(message.contains(expected) && message.contains("[outbound] allow"), "{uri}: {message}");
        }
        for uri in ["http://127.0.0.1:8080/", "http://10.0.0.1/", "http://metadata.internal/", "https://example.com/"] {
            assert_eq!(check_declared("f", &Url::parse(uri).unwrap()), Ok(()), "{uri}");
        }
    }

    #[test]
    fn refusals_say_what_the_host_is_or_resolves_to() {
        let literal = Refused {
            host: "127.0.0.1".into(),
            resolved: false,
            addresses: vec![(ip("127.0.0.1"), Refusal::Loopback)],
        };
        assert_eq!(literal.to_string(), "refused by the outbound guard: '127.0.0.1' is a loopback address");
        let name = Refused {
            host: "localhost".into(),
            resolved: true,
            addresses: vec![(ip("127.0.0.1"), Refusal::Loopback), (ip("::1"), Refusal::Configured)],
        };
        assert_eq!(
            name.to_string(),
            "refused by the outbound guard: 'localhost' resolves only to 127.0.0.1 (loopback), ::1 (configured refused range)"
        );
        assert_eq!(name.reason(), "loopback");
    }

    /// Records the configuration it was asked to connect with, and connects nothing.
    #[derive(Default)]
    struct Recording(std::sync::Mutex<Vec<RecordConsumerConfig>>);

    #[async_trait]
    impl RecordConnector for Recording {
        async fn connect(&self, config: RecordConsumerConfig) -> Result<Box<dyn RecordConsumer>, LogError> {
            self.0.lock().unwrap().push(config);
            Err(LogError::Closed)
        }
    }

    #[tokio::test]
    async fn kafka_clusters_are_allow_listed_and_groups_prefixed() {
        let recording = Arc::new(Recording::default());
        let policy = OutboundPolicy::default()
            .kafka_clusters(vec!["Kafka-1:9092".to_owned(), "kafka-2:9092".to_owned()])
            .kafka_group_prefix("tenants.".to_owned());
        let guarded = guard_kafka(recording.clone(), Arc::new(policy));
        let config = |servers: &str, group: &str| RecordConsumerConfig::new(servers, group, vec!["t".to_owned()]);
        let refused = guarded.connect(config("kafka-1:9092, evil:9092", "g")).await.err().unwrap().to_string();
        assert!(refused.contains("'evil:9092' is not in [outbound] kafka_clusters"), "{refused}");
        assert!(recording.0.lock().unwrap().is_empty(), "a refused cluster was connected to");
        for group in ["orders", "tenants.orders"] {
            let _ = guarded.connect(config("kafka-1:9092,KAFKA-2:9092", group)).await;
        }
        let groups: Vec<String> = recording.0.lock().unwrap().iter().map(|c| c.group.clone()).collect();
        assert_eq!(groups, ["tenants.orders", "tenants.orders"]);
        let open = OutboundPolicy::default();
        assert_eq!(open.refused_kafka_server(["anywhere:9092"]), None, "no list: any cluster");
    }

    #[tokio::test]
    async fn the_resolver_drops_refused_addresses_of_a_name() {
        let strict = Arc::new(OutboundPolicy::new(true));
        let resolver = GuardedResolver::new(strict, None);
        let error = resolver.resolve("localhost".parse().unwrap()).await.err().expect("refused");
        let refused = error.downcast_ref::<Refused>().expect("a Refused");
        assert!(refused.resolved && refused.addresses.iter().all(|(ip, _)| ip.is_loopback()), "{refused:?}");
        let allowed = Arc::new(OutboundPolicy::new(true).allow(cidr("127.0.0.0/8")).allow(cidr("::1")));
        let found: Vec<SocketAddr> =
            GuardedResolver::new(allowed, None).resolve("localhost".parse().unwrap()).await.unwrap().collect();
        assert!(!found.is_empty() && found.iter().all(|a| a.ip().is_loopback()), "{found:?}");
    }
}
