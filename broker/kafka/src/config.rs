//! Settings of the Kafka backend, the names it gives topics and groups, and the librdkafka
//! configuration of each kind of client it creates.

use std::time::Duration;

use rdkafka::ClientConfig;
use switchyard_log::records::{InitialOffset, PropertyNames};

/// Settings of the Kafka backend.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `host:port[,host:port…]`, librdkafka's `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// Prefix of every topic and group this backend names (default `switchyard.`): broker
    /// topic `ns.broker` is Kafka topic `{prefix}ns.broker`, trigger group `ns.trigger` is
    /// consumer group `{prefix}ns.trigger`, and the backend's own topics are
    /// `{prefix}deadletters`, `{prefix}state`, `{prefix}config` and `{prefix}leases`. Several
    /// Switchyard installations can share a cluster under different prefixes.
    pub topic_prefix: String,
    /// Partitions of a new broker topic (default 8). Existing topics keep theirs.
    pub partitions: u32,
    /// Replication factor of every topic this backend creates (default 1; 3 in production).
    pub replication_factor: u16,
    /// How long `connect` waits for the cluster to answer (default 5 s).
    pub connect_timeout: Duration,
    /// The bound on one `append`: a record not acknowledged by then fails the append with
    /// `LogError::Unavailable` (default 8 s, so that ingest answers 503 within ~10 s during an
    /// outage). It is librdkafka's `message.timeout.ms`.
    pub append_timeout: Duration,
    /// The bound on an administrative call (topic and group creation and deletion, metadata,
    /// offsets; default 10 s).
    pub request_timeout: Duration,
    /// librdkafka's `client.id` (default `switchyard`), visible in broker logs and quotas.
    pub client_id: String,
    /// Extra librdkafka properties for every client, applied last (for example
    /// `session.timeout.ms`, or TLS and SASL: `security.protocol`, `sasl.mechanism`,
    /// `sasl.username`, `sasl.password`, `ssl.ca.location`…). librdkafka is built with
    /// OpenSSL (linked statically) and SASL PLAIN and SCRAM.
    pub properties: Vec<(String, String)>,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("topic_prefix", &self.topic_prefix)
            .field("partitions", &self.partitions)
            .field("replication_factor", &self.replication_factor)
            .field("connect_timeout", &self.connect_timeout)
            .field("append_timeout", &self.append_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("client_id", &self.client_id)
            .field("properties", &PropertyNames(&self.properties))
            .finish()
    }
}

/// A `kafka://` URL that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid kafka url '{url}': {reason}")]
pub struct KafkaConfigError {
    /// The URL as given.
    pub url: String,
    /// What is wrong with it.
    pub reason: String,
}

impl KafkaConfig {
    /// The defaults, for a cluster reachable at `bootstrap_servers` (`host:port[,host:port…]`).
    pub fn new(bootstrap_servers: impl Into<String>) -> KafkaConfig {
        KafkaConfig {
            bootstrap_servers: bootstrap_servers.into(),
            topic_prefix: "switchyard.".to_owned(),
            partitions: 8,
            replication_factor: 1,
            connect_timeout: Duration::from_secs(5),
            append_timeout: Duration::from_secs(8),
            request_timeout: Duration::from_secs(10),
            client_id: "switchyard".to_owned(),
            properties: Vec::new(),
        }
    }

    /// Parses `kafka://host:port[,host:port…][?topic_prefix=…&partitions=…&replication_factor=…]`,
    /// the form `switchyard serve --log` takes. Everything not given keeps its default.
    pub fn from_url(url: &str) -> Result<KafkaConfig, KafkaConfigError> {
        let fail = |reason: String| KafkaConfigError { url: url.to_owned(), reason };
        let rest = url.strip_prefix("kafka://").ok_or_else(|| fail("it does not start with 'kafka://'".to_owned()))?;
        let (servers, query) = rest.split_once('?').unwrap_or((rest, ""));
        let servers = servers.trim_end_matches('/');
        if servers.is_empty() {
            return Err(fail("it names no broker".to_owned()));
        }
        for server in servers.split(',') {
            let port = server.rsplit_once(':').map(|(host, port)| (host, port.parse::<u16>()));
            match port {
                Some((host, Ok(_))) if !host.is_empty() => {}
                _ => return Err(fail(format!("'{server}' is not host:port"))),
            }
        }
        let mut config = KafkaConfig::new(servers);
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "topic_prefix" => {
                    if !value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
                        return Err(fail(format!(
                            "topic_prefix '{value}' has characters kafka topic names cannot hold"
                        )));
                    }
                    config.topic_prefix = value.to_owned();
                }
                "partitions" => {
                    config.partitions = value
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| fail(format!("partitions '{value}' is not a positive integer")))?;
                }
                "replication_factor" => {
                    config.replication_factor = value
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| fail(format!("replication_factor '{value}' is not a positive integer")))?;
                }
                _ => {
                    return Err(fail(format!(
                        "unknown parameter '{name}' (known: topic_prefix, partitions, replication_factor)"
                    )))
                }
            }
        }
        Ok(config)
    }

    /// The Kafka topic of log topic `topic` (`ns.broker`).
    pub fn kafka_topic(&self, topic: &str) -> String {
        format!("{}{topic}", self.topic_prefix)
    }

    /// The consumer group id of log group `group` (`ns.trigger`).
    pub fn group_id(&self, group: &str) -> String {
        format!("{}{group}", self.topic_prefix)
    }

    /// The compacted topic holding the dead letters.
    pub fn dead_letter_topic(&self) -> String {
        format!("{}deadletters", self.topic_prefix)
    }

    /// The compacted topic of the state table (sources' progress).
    pub fn state_topic(&self) -> String {
        format!("{}state", self.topic_prefix)
    }

    /// The compacted topic of the declarations every node applies ([`crate::KafkaDeclarations`]),
    /// named as in Kafka Connect's config-topic pattern.
    pub fn declarations_topic(&self) -> String {
        format!("{}config", self.topic_prefix)
    }

    /// The topic whose partitions are the slots of [`crate::Leases`]; its consumer group has
    /// the same name. No record is ever written to it.
    pub fn leases_topic(&self) -> String {
        format!("{}leases", self.topic_prefix)
    }

    /// The compacted topic of the keys the nodes share ([`crate::shared_key`]).
    pub fn keys_topic(&self) -> String {
        format!("{}keys", self.topic_prefix)
    }

    /// Settings every client shares.
    fn base(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", &self.client_id)
            // A cluster with `auto.create.topics.enable` would otherwise recreate a deleted
            // broker topic, with the cluster's default partitions, on the next append.
            .set("allow.auto.create.topics", "false")
            .set("socket.connection.setup.timeout.ms", millis(self.connect_timeout.max(Duration::from_secs(1))))
            // Reconnect quickly after an outage: ingest answers 503 until then.
            .set("reconnect.backoff.max.ms", "2000");
        config
    }

    /// Applies the user's properties last, so that they override ours.
    fn finish(&self, mut config: ClientConfig) -> ClientConfig {
        for (name, value) in &self.properties {
            config.set(name, value);
        }
        config
    }

    /// The librdkafka settings of the producer of event records and compacted-topic entries
    /// (public so that a benchmark can measure a raw producer with the very same settings).
    pub fn producer(&self) -> ClientConfig {
        let mut config = self.base();
        config
            // Durable means acknowledged by every in-sync replica; idempotence keeps the
            // producer's retries from duplicating or reordering records within a partition.
            .set("acks", "all")
            .set("enable.idempotence", "true")
            // The append waits for its records, so none lingers: records that arrive while a
            // request is in flight still go out together in the next one.
            .set("linger.ms", "0")
            .set("message.timeout.ms", millis(self.append_timeout))
            .set("request.timeout.ms", millis(self.append_timeout))
            // Java-compatible key hashing: a Java producer writing the same `partitionkey`
            // to the topic lands on the same partition.
            .set("partitioner", "murmur2_random");
        self.finish(config)
    }

    /// Metadata, watermarks and offset queries of `group` (or of no group).
    pub(crate) fn control(&self, group: Option<&str>) -> ClientConfig {
        let mut config = self.base();
        config.set("enable.auto.commit", "false");
        if let Some(group) = group {
            config.set("group.id", group);
        }
        self.finish(config)
    }

    /// A member of consumer group `group_id`.
    pub(crate) fn group_member(&self, group_id: &str) -> ClientConfig {
        let config = self.member(group_id);
        self.finish(config)
    }

    /// A member of any cluster's consumer group `group_id` reading records for a source:
    /// committed like a trigger's group, but a group without committed offsets starts where
    /// `initial_offset` says.
    pub(crate) fn record_consumer(&self, group_id: &str, initial_offset: InitialOffset) -> ClientConfig {
        let mut config = self.member(group_id);
        let reset = match initial_offset {
            InitialOffset::Earliest => "earliest",
            InitialOffset::Latest => "latest",
        };
        config.set("auto.offset.reset", reset);
        self.finish(config)
    }

    /// A member of the lease group `group_id`: it holds partitions and never reads them.
    pub(crate) fn lease_member(&self, group_id: &str) -> ClientConfig {
        let mut config = self.base();
        config
            .set("group.id", group_id)
            // A node joining or leaving moves only the slots that change owner, and a slot is
            // assigned to its new owner only after the old one revoked it.
            .set("partition.assignment.strategy", "cooperative-sticky")
            // A node that dies (kill -9) loses its slots after 6 s.
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            // Nothing is read, so nothing is committed.
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "latest")
            // The partitions are paused as soon as they are assigned; should a fetch go out
            // before, it prefetches next to nothing (and the topic holds no records anyway).
            .set("queued.max.messages.kbytes", "1")
            .set("queued.min.messages", "1");
        self.finish(config)
    }

    /// What every member of a consumer group that commits shares (without the user's
    /// properties).
    fn member(&self, group_id: &str) -> ClientConfig {
        let mut config = self.base();
        config
            .set("group.id", group_id)
            // Incremental rebalances: a node joining or leaving moves only the partitions that
            // change owner instead of stopping every member of the group.
            .set("partition.assignment.strategy", "cooperative-sticky")
            // Only what the dispatcher commits is stored, then committed every second and
            // synchronously on flush, on revocation and on close.
            .set("enable.auto.offset.store", "false")
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            // Every group is created with committed offsets at the end of the topic, so this
            // applies only when they fell out of retention (or for partitions added later):
            // then the oldest remaining event is the right place to resume.
            .set("auto.offset.reset", "earliest")
            // A node that dies (kill -9) leaves its partitions unread until its session
            // expires: 6 s (the brokers' default minimum) rather than librdkafka's 45 s.
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1500");
        self.consumer_buffers(&mut config);
        config
    }

    /// An assign-only reader. librdkafka wants a group id to assign partitions; this one
    /// never joins a group and never commits.
    pub(crate) fn reader(&self, group_id: &str) -> ClientConfig {
        let mut config = self.base();
        config.set("group.id", group_id).set("enable.auto.commit", "false").set("auto.offset.reset", "earliest");
        self.consumer_buffers(&mut config);
        self.finish(config)
    }

    /// librdkafka prefetches up to 64 MiB per consumer by default; a node runs one consumer per
    /// trigger, so the prefetch is kept to 2 MiB (the subscription buffers up to 4 MiB more).
    fn consumer_buffers(&self, config: &mut ClientConfig) {
        config.set("queued.max.messages.kbytes", "2048").set("queued.min.messages", "1000");
    }
}

fn millis(duration: Duration) -> String {
    duration.as_millis().max(1).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_defaults_and_parameters() {
        let config = KafkaConfig::from_url("kafka://127.0.0.1:19092").unwrap();
        assert_eq!(config, KafkaConfig::new("127.0.0.1:19092"));
        let config =
            KafkaConfig::from_url("kafka://a:9092,b:9093/?topic_prefix=sy-&partitions=3&replication_factor=2").unwrap();
        assert_eq!(config.bootstrap_servers, "a:9092,b:9093");
        assert_eq!((config.topic_prefix.as_str(), config.partitions, config.replication_factor), ("sy-", 3, 2));
        assert_eq!(config.kafka_topic("shop.default"), "sy-shop.default");
        assert_eq!(config.group_id("shop.orders"), "sy-shop.orders");
        assert_eq!(config.dead_letter_topic(), "sy-deadletters");
        assert_eq!(config.declarations_topic(), "sy-config");
        assert_eq!(config.leases_topic(), "sy-leases");
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let cases = [
            ("http://a:1", "does not start with 'kafka://'"),
            ("kafka://", "names no broker"),
            ("kafka://a", "'a' is not host:port"),
            ("kafka://a:1,:2", "':2' is not host:port"),
            ("kafka://a:99999", "'a:99999' is not host:port"),
            ("kafka://a:1?partitions=0", "partitions '0' is not a positive integer"),
            ("kafka://a:1?replication_factor=x", "replication_factor 'x'"),
            ("kafka://a:1?topic_prefix=a/b", "topic_prefix 'a/b'"),
            ("kafka://a:1?acks=1", "unknown parameter 'acks'"),
        ];
        for (url, expected) in cases {
            let err = KafkaConfig::from_url(url).unwrap_err().to_string();
            assert!(err.starts_with(&format!("invalid kafka url '{url}': ")) && err.contains(expected), "{url}: {err}");
        }
    }
}
