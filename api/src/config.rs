//! Server configuration: defaults, overridden by a TOML file, by `SWITCHYARD_*` environment
//! variables, then by flags. Validated into [`ServeConfig`] before anything starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard_dispatcher::outbound::{self, OutboundPolicy};
use switchyard_engine::Quotas;
use switchyard_event::http::HeaderEncoding;
use switchyard_event::limits::{EventLimits, MAX_STORABLE_ATTRIBUTES};
use url::Url;

use crate::auth::{AuthConfig, AuthFile};

/// The configuration file, as written by an operator. Every field is optional.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Address to listen on, e.g. `127.0.0.1:8080`.
    pub listen: Option<String>,
    /// A second address that alone serves the admin API (`/v1/…`: declarations, dead letters,
    /// the filter tools), e.g. `127.0.0.1:9090`; `listen` then serves everything else. Off
    /// (one listener serves all) when absent.
    pub admin_listen: Option<String>,
    /// Directory for the log and the metadata store.
    pub data_dir: Option<PathBuf>,
    /// Largest accepted event in bytes (binary/structured body, or one event of a batch).
    pub max_event_bytes: Option<usize>,
    /// Largest accepted batch request body in bytes.
    pub max_batch_bytes: Option<usize>,
    /// Most attributes an event may have, counting those the broker adds.
    pub max_event_attributes: Option<usize>,
    /// Most events one batch request may carry.
    pub max_batch_events: Option<usize>,
    /// Longest attribute name in bytes.
    pub max_attribute_name_bytes: Option<usize>,
    /// Longest attribute value (as text) in bytes.
    pub max_attribute_value_bytes: Option<usize>,
    /// Most brokers a namespace may hold.
    pub max_brokers_per_namespace: Option<usize>,
    /// Most triggers a namespace may hold.
    pub max_triggers_per_namespace: Option<usize>,
    /// Most sources (every kind together) a namespace may hold.
    pub max_sources_per_namespace: Option<usize>,
    /// How binary deliveries write string attributes into `ce-` headers where a trigger does
    /// not choose (`delivery.headerEncoding`): `compatible` (the default) or `percent`.
    pub header_encoding: Option<String>,
    /// Embedded-log retention.
    pub retention: Option<RetentionFile>,
    /// Seconds in-flight deliveries get to finish at shutdown.
    pub shutdown_grace_secs: Option<u64>,
    /// Distributed tracing.
    pub tracing: Option<TracingFile>,
    /// The event log: `embedded` (files in the data directory, the default) or
    /// `kafka://host:port[,host:port…]`.
    pub log: Option<String>,
    /// The Kafka backend's settings (with `log = "kafka://…"`).
    pub kafka: Option<KafkaFile>,
    /// The HTTP server's limits.
    pub http: Option<HttpFile>,
    /// Who may do what: bearer tokens and their roles, and the browser guards.
    pub auth: Option<AuthFile>,
    /// A Kubernetes API server to work with: addressable references, ApiServerSource's default
    /// cluster, and Knative Brokers of Switchyard's class. Off when absent.
    pub kubernetes: Option<KubernetesFile>,
    /// The outbound guard: which addresses deliveries, sinks and span export may connect to.
    pub outbound: Option<OutboundFile>,
    /// Identified deliveries: the issuer and signing key of the OIDC tokens sent to
    /// destinations with an `audience`.
    pub identity: Option<IdentityFile>,
    /// TLS on the listener: certificate and key files, and the CA of client certificates.
    pub tls: Option<TlsFile>,
    /// The key that seals inline secrets in the declaration log.
    pub secrets: Option<SecretsFile>,
}

/// `[secrets]`: the key that seals declarations' inline secrets in the declaration log
/// (`switchyard_engine::sealed`). Without one, the Kafka backend seals them with a key the
/// nodes agree on in `{prefix}keys`, and the embedded one keeps them in its data directory.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsFile {
    /// A file holding the key: 32 random bytes in base64 (`head -c 32 /dev/urandom | base64`),
    /// the same on every node.
    pub key_file: Option<PathBuf>,
    /// The key itself, from `SWITCHYARD_SECRETS_KEY` only (never shown).
    #[serde(skip)]
    pub env_key: Option<String>,
}

/// `[secrets]`, as given: the key is read and checked when `serve` starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SecretsConfig {
    /// See [`SecretsFile::key_file`].
    pub key_file: Option<PathBuf>,
    /// See [`SecretsFile::env_key`].
    #[serde(skip)]
    pub env_key: Option<String>,
}

/// `[identity]`: the OIDC tokens of identified deliveries (`switchyard_dispatcher::identity`).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityFile {
    /// The tokens' `iss`, where subscribers find `/.well-known/openid-configuration` (default:
    /// this server's URL, `http://{listen}`).
    pub issuer: Option<String>,
    /// A PKCS#8 ECDSA P-256 private key (DER or PEM) to sign with, instead of the one generated
    /// in the data directory: give every node behind one issuer the same key.
    pub key_file: Option<PathBuf>,
}

/// `[identity]`, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IdentityConfig {
    /// The tokens' `iss`, if not this server's URL.
    #[serde(serialize_with = "serialize_url")]
    pub issuer: Option<Url>,
    /// The operator's signing key, if not the generated one.
    pub key_file: Option<PathBuf>,
}

impl IdentityFile {
    fn resolve(self) -> Result<IdentityConfig, ConfigError> {
        let issuer = self.issuer.filter(|text| !text.trim().is_empty()).map(|text| {
            // OpenID Connect Discovery 1.0 §3: an http(s) URL without query or fragment.
            Url::parse(text.trim())
                .ok()
                .filter(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
                .filter(|url| url.query().is_none() && url.fragment().is_none())
                .ok_or_else(|| ConfigError::Value {
                    key: "identity.issuer",
                    message: format!("'{text}' is not an http(s) URL without query or fragment"),
                })
        });
        Ok(IdentityConfig {
            issuer: issuer.transpose()?,
            key_file: self.key_file.filter(|path| !path.as_os_str().is_empty()),
        })
    }
}

impl IdentityConfig {
    fn to_file(&self) -> Option<IdentityFile> {
        (self != &IdentityConfig::default()).then(|| IdentityFile {
            issuer: self.issuer.as_ref().map(|url| url.as_str().to_owned()),
            key_file: self.key_file.clone(),
        })
    }
}

/// `[kubernetes]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesFile {
    /// A kubeconfig file naming the API server and the credentials to use.
    pub kubeconfig: Option<PathBuf>,
    /// Use the pod's service account instead (`KUBERNETES_SERVICE_HOST` and the mounted token).
    pub in_cluster: Option<bool>,
    /// The `eventing.knative.dev/broker.class` annotation value of the Knative Brokers this
    /// node reconciles (default `Switchyard`).
    pub broker_class: Option<String>,
    /// Where other pods reach this node's ingest (a reconciled Broker's `status.address.url`
    /// starts with it), e.g. `http://switchyard.eventing.svc.cluster.local` (default: the
    /// listen address, loopback for an unspecified IP).
    pub advertised_url: Option<String>,
}

/// `[outbound]`: the outbound guard (`switchyard_dispatcher::outbound`). Link-local, cloud
/// metadata, unspecified, multicast and broadcast addresses are always refused unless allowed.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundFile {
    /// Refuse loopback and private ranges too (default: true once `[auth]` has tokens, so that a
    /// network-exposed server does not deliver into its own network; false on a laptop).
    pub refuse_private: Option<bool>,
    /// CIDR ranges (or addresses) allowed for every namespace, whatever else refuses them.
    pub allow: Option<Vec<String>>,
    /// CIDR ranges (or addresses) refused besides the built-in ones.
    pub refuse: Option<Vec<String>>,
    /// The only Kafka bootstrap servers (`host:port`) KafkaSources may name; any when absent.
    pub kafka_clusters: Option<Vec<String>>,
    /// A prefix every KafkaSource's consumer group is put under.
    pub kafka_group_prefix: Option<String>,
    /// `[outbound.namespaces.<namespace>]`: ranges allowed for one namespace's destinations.
    pub namespaces: Option<std::collections::BTreeMap<String, OutboundNamespaceFile>>,
}

/// `[outbound.namespaces.<namespace>]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundNamespaceFile {
    /// CIDR ranges (or addresses) allowed for this namespace's destinations.
    pub allow: Option<Vec<String>>,
}

impl OutboundFile {
    /// The policy (`authenticated`: whether tokens are configured, the default of
    /// `refuse_private`); an invalid range names its key and quotes the value.
    fn resolve(self, authenticated: bool) -> Result<OutboundPolicy, ConfigError> {
        let ranges = |key: &'static str, texts: Option<Vec<String>>| {
            texts
                .unwrap_or_default()
                .iter()
                .map(|text| outbound::parse_cidr(text).map_err(|e| ConfigError::Value { key, message: e.to_string() }))
                .collect::<Result<Vec<_>, _>>()
        };
        let mut policy = OutboundPolicy::new(self.refuse_private.unwrap_or(authenticated));
        for range in ranges("outbound.allow", self.allow)? {
            policy = policy.allow(range);
        }
        for range in ranges("outbound.refuse", self.refuse)? {
            policy = policy.refuse(range);
        }
        if let Some(servers) = self.kafka_clusters {
            if let Some(bad) = servers.iter().find(|s| {
                s.trim().rsplit_once(':').is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            }) {
                let message = format!("'{bad}' is not host:port");
                return Err(ConfigError::Value { key: "outbound.kafka_clusters", message });
            }
            policy = policy.kafka_clusters(servers);
        }
        if let Some(prefix) = self.kafka_group_prefix.filter(|prefix| !prefix.is_empty()) {
            if !switchyard_event::kafka::valid_topic_name(&prefix) {
                let message = format!("'{prefix}' must be letters, digits, '.', '_' or '-'");
                return Err(ConfigError::Value { key: "outbound.kafka_group_prefix", message });
            }
            policy = policy.kafka_group_prefix(prefix);
        }
        for (namespace, file) in self.namespaces.unwrap_or_default() {
            let key = "outbound.namespaces";
            switchyard_engine::check_namespace(&namespace).map_err(|e| ConfigError::Value {
                key,
                message: format!("'{namespace}' is not a namespace name: {e}"),
            })?;
            let in_namespace = |e: ConfigError| match e {
                ConfigError::Value { message, .. } => {
                    ConfigError::Value { key, message: format!("{namespace}.allow: {message}") }
                }
                other => other,
            };
            for range in ranges(key, file.allow).map_err(in_namespace)? {
                policy = policy.allow_in(&namespace, range);
            }
        }
        Ok(policy)
    }

    fn from_policy(policy: &OutboundPolicy) -> OutboundFile {
        let texts = |ranges: &[outbound::IpNet]| Some(ranges.iter().map(ToString::to_string).collect());
        OutboundFile {
            refuse_private: Some(policy.refuses_private()),
            allow: texts(policy.allowed()),
            refuse: texts(policy.refused()),
            kafka_clusters: policy.allowed_kafka_clusters().map(<[String]>::to_vec),
            kafka_group_prefix: policy.group_prefix().map(str::to_owned),
            namespaces: Some(
                policy
                    .namespaces()
                    .iter()
                    .map(|(namespace, ranges)| (namespace.clone(), OutboundNamespaceFile { allow: texts(ranges) }))
                    .collect(),
            ),
        }
    }
}

/// `[tls]`: HTTPS on the listener (`crate::serve::tls`). Off when neither file is set.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// The certificate chain, PEM, the server's own certificate first.
    pub cert_file: Option<PathBuf>,
    /// Its private key, PEM (PKCS#8, SEC1 or PKCS#1; RSA, ECDSA or Ed25519).
    pub key_file: Option<PathBuf>,
    /// CA certificates, PEM: when set, clients must present a certificate signed by one of them.
    pub client_ca_file: Option<PathBuf>,
}

/// TLS on the listener, validated: both files named (their contents are checked when `serve`
/// loads them, and again at every reload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsConfig {
    /// See [`TlsFile::cert_file`].
    pub cert_file: PathBuf,
    /// See [`TlsFile::key_file`].
    pub key_file: PathBuf,
    /// See [`TlsFile::client_ca_file`].
    pub client_ca_file: Option<PathBuf>,
}

impl TlsFile {
    fn resolve(self) -> Result<Option<TlsConfig>, ConfigError> {
        let set = |path: Option<PathBuf>| path.filter(|path| !path.as_os_str().is_empty());
        let client_ca_file = set(self.client_ca_file);
        match (set(self.cert_file), set(self.key_file)) {
            (Some(cert_file), Some(key_file)) => Ok(Some(TlsConfig { cert_file, key_file, client_ca_file })),
            (None, None) if client_ca_file.is_none() => Ok(None),
            (None, None) => Err(ConfigError::Value {
                key: "tls.client_ca_file",
                message: "is set, but tls.cert_file and tls.key_file are not: client certificates need TLS".into(),
            }),
            (Some(_), None) => {
                Err(ConfigError::Value { key: "tls.key_file", message: "is required with tls.cert_file".into() })
            }
            (None, Some(_)) => {
                Err(ConfigError::Value { key: "tls.cert_file", message: "is required with tls.key_file".into() })
            }
        }
    }
}

/// `[kafka]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaFile {
    /// Prefix of every topic and consumer group (default `switchyard.`): nodes with the same
    /// bootstrap servers and prefix form one cluster.
    pub topic_prefix: Option<String>,
    /// Partitions of a new broker's topic (default 8).
    pub partitions: Option<u32>,
    /// Replication factor of new topics (default 1).
    pub replication_factor: Option<u32>,
    /// How the backend's clients reach the cluster: `plaintext` (the default), `ssl`,
    /// `sasl_plaintext` or `sasl_ssl`.
    pub security_protocol: Option<String>,
    /// With `sasl_*`: `PLAIN` (the default), `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub sasl_mechanism: Option<String>,
    /// With `sasl_*`: the user name.
    pub sasl_username: Option<String>,
    /// With `sasl_*`: a file holding the password (or `SWITCHYARD_KAFKA_SASL_PASSWORD`).
    pub sasl_password_file: Option<PathBuf>,
    /// The password itself, from `SWITCHYARD_KAFKA_SASL_PASSWORD` only (never shown).
    #[serde(skip)]
    pub env_sasl_password: Option<String>,
    /// With `ssl`/`sasl_ssl`: the PEM file of the CAs the brokers' certificates are checked
    /// against (the system's when absent).
    pub ssl_ca_file: Option<PathBuf>,
    /// With `ssl`/`sasl_ssl`: the client's PEM certificate, for brokers that want one.
    pub ssl_cert_file: Option<PathBuf>,
    /// With `ssl_cert_file`: its PEM private key.
    pub ssl_key_file: Option<PathBuf>,
}

/// How the Kafka backend's clients reach the cluster (`[kafka]` `security_protocol`, `sasl_*`,
/// `ssl_*`), checked; the password is read when `serve` starts ([`KafkaSecurity::properties`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KafkaSecurity {
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub protocol: String,
    /// The SASL mechanism, with `sasl_*`.
    pub sasl_mechanism: Option<String>,
    /// The SASL user, with `sasl_*`.
    pub sasl_username: Option<String>,
    /// See [`KafkaFile::sasl_password_file`].
    pub sasl_password_file: Option<PathBuf>,
    /// See [`KafkaFile::env_sasl_password`].
    #[serde(skip)]
    pub env_sasl_password: Option<String>,
    /// See [`KafkaFile::ssl_ca_file`].
    pub ssl_ca_file: Option<PathBuf>,
    /// See [`KafkaFile::ssl_cert_file`].
    pub ssl_cert_file: Option<PathBuf>,
    /// See [`KafkaFile::ssl_key_file`].
    pub ssl_key_file: Option<PathBuf>,
}

/// `[tracing]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TracingFile {
    /// The OTLP/HTTP collector spans are exported to (base URL, e.g. `http://127.0.0.1:4318`);
    /// no export when absent or empty.
    pub otlp_endpoint: Option<String>,
}

/// `[retention]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionFile {
    /// Delete events older than this many hours (default 168, 7 days).
    pub max_age_hours: Option<u64>,
    /// Keep at most this many bytes per broker (default 10 GiB).
    pub max_bytes: Option<u64>,
    /// Keep at most this many bytes for all brokers together, oldest deleted first (default
    /// 50 GiB).
    pub max_total_bytes: Option<u64>,
}

/// The validated configuration `serve` runs with.
#[derive(Debug, Clone, Serialize)]
pub struct ServeConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Where the admin API alone is served, if apart.
    pub admin_listen: Option<SocketAddr>,
    /// The data directory.
    pub data_dir: PathBuf,
    /// See [`ConfigFile::max_event_bytes`].
    pub max_event_bytes: usize,
    /// See [`ConfigFile::max_batch_bytes`].
    pub max_batch_bytes: usize,
    /// See [`ConfigFile::max_event_attributes`].
    pub max_event_attributes: usize,
    /// See [`ConfigFile::max_batch_events`].
    pub max_batch_events: usize,
    /// See [`ConfigFile::max_attribute_name_bytes`].
    pub max_attribute_name_bytes: usize,
    /// See [`ConfigFile::max_attribute_value_bytes`].
    pub max_attribute_value_bytes: usize,
    /// See [`ConfigFile::max_brokers_per_namespace`].
    pub max_brokers_per_namespace: usize,
    /// See [`ConfigFile::max_triggers_per_namespace`].
    pub max_triggers_per_namespace: usize,
    /// See [`ConfigFile::max_sources_per_namespace`].
    pub max_sources_per_namespace: usize,
    /// See [`ConfigFile::header_encoding`].
    #[serde(serialize_with = "serialize_header_encoding")]
    pub header_encoding: HeaderEncoding,
    /// Retention by age.
    pub retention_age: Duration,
    /// Retention by size, per broker.
    pub retention_bytes: u64,
    /// Retention by size, all brokers together.
    pub retention_total_bytes: u64,
    /// Shutdown grace.
    pub shutdown_grace: Duration,
    /// Where spans are exported over OTLP/HTTP, if anywhere.
    #[serde(serialize_with = "serialize_url")]
    pub otlp_endpoint: Option<Url>,
    /// Which event log.
    pub log: LogBackend,
    /// The HTTP server's limits.
    pub http: HttpLimits,
    /// The Kubernetes API server this node works with, if any.
    pub kubernetes: Option<Kubernetes>,
    /// The outbound guard's policy, installed by `serve`.
    #[serde(skip)]
    pub outbound: OutboundPolicy,
    /// TLS on the listener, if on.
    pub tls: Option<TlsConfig>,
    /// Authentication and authorization.
    pub auth: AuthConfig,
    /// The issuer and key of identified deliveries' tokens.
    pub identity: IdentityConfig,
    /// The key that seals inline secrets in the declaration log, if given.
    pub secrets: SecretsConfig,
}

/// The Kubernetes API server a node works with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kubernetes {
    /// The kubeconfig file; `None` means in-cluster credentials.
    pub kubeconfig: Option<PathBuf>,
    /// The Knative broker class this node reconciles.
    pub broker_class: String,
    /// Where other pods reach this node's ingest, if not at its listen address.
    #[serde(serialize_with = "serialize_url")]
    pub advertised_url: Option<Url>,
}

/// The broker class Switchyard reconciles unless configured otherwise.
pub const DEFAULT_BROKER_CLASS: &str = "Switchyard";

/// The event log backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum LogBackend {
    /// Files in the data directory.
    Embedded,
    /// An Apache Kafka cluster shared by every node with the same bootstrap servers and prefix.
    Kafka {
        /// `host:port` of one or more brokers.
        bootstrap_servers: Vec<String>,
        /// Prefix of topics and groups.
        topic_prefix: String,
        /// Partitions of a new broker's topic.
        partitions: u32,
        /// Replication factor of new topics.
        replication_factor: u32,
        /// TLS and SASL (boxed: most clusters need neither).
        security: Box<KafkaSecurity>,
    },
}

const DEFAULT_TOPIC_PREFIX: &str = "switchyard.";

fn serialize_header_encoding<S: serde::Serializer>(
    encoding: &HeaderEncoding,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(encoding.name())
}

fn serialize_url<S: serde::Serializer>(url: &Option<Url>, serializer: S) -> Result<S::Ok, S::Error> {
    url.as_ref().map(Url::as_str).serialize(serializer)
}

/// An invalid configuration: the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file '{path}': {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("invalid config file '{path}': {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong (names the key).
        message: String,
    },
    /// An environment override is not a valid value.
    #[error("invalid environment variable '{var}': {message}")]
    Env {
        /// The variable.
        var: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid config key '{key}': {message}")]
    Value {
        /// The key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// The environment variables that override configuration keys, and the key each sets.
pub const ENV_OVERRIDES: &[(&str, &str)] = &[
    ("SWITCHYARD_LISTEN", "listen"),
    ("SWITCHYARD_DATA_DIR", "data_dir"),
    ("SWITCHYARD_MAX_EVENT_BYTES", "max_event_bytes"),
    ("SWITCHYARD_MAX_BATCH_BYTES", "max_batch_bytes"),
    ("SWITCHYARD_MAX_EVENT_ATTRIBUTES", "max_event_attributes"),
    ("SWITCHYARD_MAX_BATCH_EVENTS", "max_batch_events"),
    ("SWITCHYARD_MAX_ATTRIBUTE_NAME_BYTES", "max_attribute_name_bytes"),
    ("SWITCHYARD_MAX_ATTRIBUTE_VALUE_BYTES", "max_attribute_value_bytes"),
    ("SWITCHYARD_MAX_BROKERS_PER_NAMESPACE", "max_brokers_per_namespace"),
    ("SWITCHYARD_MAX_TRIGGERS_PER_NAMESPACE", "max_triggers_per_namespace"),
    ("SWITCHYARD_MAX_SOURCES_PER_NAMESPACE", "max_sources_per_namespace"),
    ("SWITCHYARD_HEADER_ENCODING", "header_encoding"),
    ("SWITCHYARD_SHUTDOWN_GRACE_SECS", "shutdown_grace_secs"),
    ("SWITCHYARD_RETENTION_MAX_AGE_HOURS", "retention.max_age_hours"),
    ("SWITCHYARD_RETENTION_MAX_BYTES", "retention.max_bytes"),
    ("SWITCHYARD_RETENTION_MAX_TOTAL_BYTES", "retention.max_total_bytes"),
    ("SWITCHYARD_OTLP_ENDPOINT", "tracing.otlp_endpoint"),
    ("SWITCHYARD_LOG_BACKEND", "log"),
    ("SWITCHYARD_KAFKA_TOPIC_PREFIX", "kafka.topic_prefix"),
    ("SWITCHYARD_KAFKA_PARTITIONS", "kafka.partitions"),
    ("SWITCHYARD_KAFKA_REPLICATION_FACTOR", "kafka.replication_factor"),
    ("SWITCHYARD_KAFKA_SECURITY_PROTOCOL", "kafka.security_protocol"),
    ("SWITCHYARD_KAFKA_SASL_MECHANISM", "kafka.sasl_mechanism"),
    ("SWITCHYARD_KAFKA_SASL_USERNAME", "kafka.sasl_username"),
    ("SWITCHYARD_KAFKA_SASL_PASSWORD", "kafka.sasl_password"),
    ("SWITCHYARD_KAFKA_SASL_PASSWORD_FILE", "kafka.sasl_password_file"),
    ("SWITCHYARD_KAFKA_SSL_CA_FILE", "kafka.ssl_ca_file"),
    ("SWITCHYARD_KAFKA_SSL_CERT_FILE", "kafka.ssl_cert_file"),
    ("SWITCHYARD_KAFKA_SSL_KEY_FILE", "kafka.ssl_key_file"),
    ("SWITCHYARD_KUBECONFIG", "kubernetes.kubeconfig"),
    ("SWITCHYARD_KUBERNETES_IN_CLUSTER", "kubernetes.in_cluster"),
    ("SWITCHYARD_BROKER_CLASS", "kubernetes.broker_class"),
    ("SWITCHYARD_ADVERTISED_URL", "kubernetes.advertised_url"),
    ("SWITCHYARD_OUTBOUND_REFUSE_PRIVATE", "outbound.refuse_private"),
    ("SWITCHYARD_TLS_CERT_FILE", "tls.cert_file"),
    ("SWITCHYARD_TLS_KEY_FILE", "tls.key_file"),
    ("SWITCHYARD_TLS_CLIENT_CA_FILE", "tls.client_ca_file"),
    ("SWITCHYARD_AUTH_TOKENS", "auth.tokens"),
    ("SWITCHYARD_AUTH_TOKENS_FILE", "auth.tokens_file"),
    ("SWITCHYARD_ALLOW_UNAUTHENTICATED", "auth.allow_unauthenticated"),
    ("SWITCHYARD_ALLOWED_HOSTS", "auth.allowed_hosts"),
    ("SWITCHYARD_ADMIN_LISTEN", "admin_listen"),
    ("SWITCHYARD_SECRETS_KEY", "secrets.key"),
    ("SWITCHYARD_SECRETS_KEY_FILE", "secrets.key_file"),
];

impl ConfigFile {
    /// Applies `SWITCHYARD_*` overrides read through `env`.
    fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        for &(var, key) in ENV_OVERRIDES {
            let Some(value) = env(var) else { continue };
            let number = || {
                value.trim().parse::<u64>().map_err(|_| ConfigError::Env {
                    var,
                    message: format!("'{value}' is not a whole number (it sets '{key}')"),
                })
            };
            let boolean = || match value.trim() {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => {
                    Err(ConfigError::Env { var, message: format!("'{value}' is not true or false (it sets '{key}')") })
                }
            };
            match key {
                "listen" => self.listen = Some(value.clone()),
                "admin_listen" => self.admin_listen = Some(value.clone()),
                "data_dir" => self.data_dir = Some(PathBuf::from(&value)),
                "max_event_bytes" => self.max_event_bytes = Some(number()? as usize),
                "max_batch_bytes" => self.max_batch_bytes = Some(number()? as usize),
                "max_event_attributes" => self.max_event_attributes = Some(number()? as usize),
                "max_batch_events" => self.max_batch_events = Some(number()? as usize),
                "max_attribute_name_bytes" => self.max_attribute_name_bytes = Some(number()? as usize),
                "max_attribute_value_bytes" => self.max_attribute_value_bytes = Some(number()? as usize),
                "max_brokers_per_namespace" => self.max_brokers_per_namespace = Some(number()? as usize),
                "max_triggers_per_namespace" => self.max_triggers_per_namespace = Some(number()? as usize),
                "max_sources_per_namespace" => self.max_sources_per_namespace = Some(number()? as usize),
                "header_encoding" => self.header_encoding = Some(value.clone()),
                "shutdown_grace_secs" => self.shutdown_grace_secs = Some(number()?),
                "log" => self.log = Some(value.clone()),
                "kafka.topic_prefix" => {
                    self.kafka.get_or_insert_with(KafkaFile::default).topic_prefix = Some(value.clone())
                }
                "kafka.partitions" => {
                    self.kafka.get_or_insert_with(KafkaFile::default).partitions =
                        Some(small_number(var, key, number()?)?)
                }
                "kafka.replication_factor" => {
                    self.kafka.get_or_insert_with(KafkaFile::default).replication_factor =
                        Some(small_number(var, key, number()?)?)
                }
                key if key.starts_with("kafka.") => self.kafka.get_or_insert_with(KafkaFile::default).set(key, value),
                "kubernetes.kubeconfig" => {
                    self.kubernetes.get_or_insert_with(KubernetesFile::default).kubeconfig = Some(PathBuf::from(&value))
                }
                "kubernetes.in_cluster" => {
                    self.kubernetes.get_or_insert_with(KubernetesFile::default).in_cluster = Some(boolean()?)
                }
                "auth.tokens" => self.auth.get_or_insert_with(AuthFile::default).env_tokens = Some(value.clone()),
                "auth.tokens_file" => {
                    self.auth.get_or_insert_with(AuthFile::default).tokens_file = Some(PathBuf::from(&value))
                }
                "auth.allow_unauthenticated" => {
                    self.auth.get_or_insert_with(AuthFile::default).allow_unauthenticated = Some(boolean()?)
                }
                "auth.allowed_hosts" => {
                    self.auth.get_or_insert_with(AuthFile::default).allowed_hosts =
                        Some(value.split(',').map(|h| h.trim().to_owned()).filter(|h| !h.is_empty()).collect())
                }
                "outbound.refuse_private" => {
                    self.outbound.get_or_insert_with(OutboundFile::default).refuse_private = Some(boolean()?)
                }
                "tls.cert_file" => {
                    self.tls.get_or_insert_with(TlsFile::default).cert_file = Some(PathBuf::from(&value))
                }
                "tls.key_file" => self.tls.get_or_insert_with(TlsFile::default).key_file = Some(PathBuf::from(&value)),
                "secrets.key" => self.secrets.get_or_insert_with(SecretsFile::default).env_key = Some(value.clone()),
                "secrets.key_file" => {
                    self.secrets.get_or_insert_with(SecretsFile::default).key_file = Some(PathBuf::from(&value))
                }
                "tls.client_ca_file" => {
                    self.tls.get_or_insert_with(TlsFile::default).client_ca_file = Some(PathBuf::from(&value))
                }
                "kubernetes.broker_class" => {
                    self.kubernetes.get_or_insert_with(KubernetesFile::default).broker_class = Some(value.clone())
                }
                "kubernetes.advertised_url" => {
                    self.kubernetes.get_or_insert_with(KubernetesFile::default).advertised_url = Some(value.clone())
                }
                "tracing.otlp_endpoint" => {
                    self.tracing.get_or_insert_with(TracingFile::default).otlp_endpoint = Some(value.clone())
                }
                "retention.max_age_hours" => {
                    self.retention.get_or_insert_with(RetentionFile::default).max_age_hours = Some(number()?)
                }
                "retention.max_total_bytes" => {
                    self.retention.get_or_insert_with(RetentionFile::default).max_total_bytes = Some(number()?)
                }
                _ => self.retention.get_or_insert_with(RetentionFile::default).max_bytes = Some(number()?),
            }
        }
        self.http.get_or_insert_with(HttpFile::default).apply_env(env)
    }
}

impl ServeConfig {
    /// Defaults ← file ← `SWITCHYARD_*` environment (read through `env`) ← flags.
    pub fn resolve(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
        listen: Option<String>,
        data_dir: Option<PathBuf>,
    ) -> Result<ServeConfig, ConfigError> {
        ServeConfig::resolve_with(file, env, Flags { listen, data_dir, ..Flags::default() })
    }

    /// [`ServeConfig::resolve`] with every flag.
    pub fn resolve_with(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
        flags: Flags,
    ) -> Result<ServeConfig, ConfigError> {
        let Flags {
            listen,
            admin_listen,
            data_dir,
            otlp_endpoint,
            log,
            kafka_topic_prefix,
            kubeconfig,
            allow_unauthenticated,
        } = flags;
        let mut parsed = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
                toml::from_str::<ConfigFile>(&text)
                    .map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })?
            }
            None => ConfigFile::default(),
        };
        parsed.apply_env(env)?;
        let listen_text = listen.or(parsed.listen).unwrap_or_else(|| "127.0.0.1:8080".to_owned());
        let listen = listen_text.parse().map_err(|_| ConfigError::Value {
            key: "listen",
            message: format!("'{listen_text}' is not an address like 127.0.0.1:8080"),
        })?;
        let admin_listen = admin_listen
            .or(parsed.admin_listen.take())
            .filter(|text| !text.trim().is_empty())
            .map(|text| {
                text.trim().parse::<SocketAddr>().map_err(|_| ConfigError::Value {
                    key: "admin_listen",
                    message: format!("'{text}' is not an address like 127.0.0.1:9090"),
                })
            })
            .transpose()?;
        if admin_listen.is_some_and(|admin| admin == listen && admin.port() != 0) {
            return Err(ConfigError::Value {
                key: "admin_listen",
                message: format!("'{listen}' is also 'listen': give the admin API an address of its own"),
            });
        }
        let defaults = EventLimits::default();
        let max_event_bytes = parsed.max_event_bytes.unwrap_or(defaults.max_event_bytes);
        if max_event_bytes == 0 {
            return Err(ConfigError::Value { key: "max_event_bytes", message: "must be positive".into() });
        }
        // The four required attributes and the broker's two (arrival time, hop counter).
        let max_event_attributes = parsed.max_event_attributes.unwrap_or(defaults.max_attributes);
        if max_event_attributes < 6 {
            return Err(ConfigError::Value {
                key: "max_event_attributes",
                message: format!(
                    "{max_event_attributes} is below 6: the four required attributes and the broker's own two"
                ),
            });
        }
        if max_event_attributes > MAX_STORABLE_ATTRIBUTES {
            return Err(ConfigError::Value {
                key: "max_event_attributes",
                message: format!(
                    "{max_event_attributes} is above {MAX_STORABLE_ATTRIBUTES}, the most the log can store"
                ),
            });
        }
        // `knativearrivaltime`, the longest name the broker itself adds, has 18 bytes.
        let max_attribute_name_bytes = at_least(
            parsed.max_attribute_name_bytes,
            defaults.max_attribute_name_bytes,
            20,
            "max_attribute_name_bytes",
        )?;
        // A `traceparent` has 55 bytes.
        let max_attribute_value_bytes = at_least(
            parsed.max_attribute_value_bytes,
            defaults.max_attribute_value_bytes,
            64,
            "max_attribute_value_bytes",
        )?;
        let quotas = Quotas::default();
        let max_brokers_per_namespace =
            at_least(parsed.max_brokers_per_namespace, quotas.brokers, 1, "max_brokers_per_namespace")?;
        let max_triggers_per_namespace =
            at_least(parsed.max_triggers_per_namespace, quotas.triggers, 1, "max_triggers_per_namespace")?;
        let max_sources_per_namespace =
            at_least(parsed.max_sources_per_namespace, quotas.sources, 1, "max_sources_per_namespace")?;
        let max_batch_events = parsed.max_batch_events.unwrap_or(defaults.max_batch_events);
        if max_batch_events == 0 {
            return Err(ConfigError::Value { key: "max_batch_events", message: "must be positive".into() });
        }
        let max_batch_bytes = parsed.max_batch_bytes.unwrap_or(10 << 20);
        if max_batch_bytes < max_event_bytes {
            return Err(ConfigError::Value {
                key: "max_batch_bytes",
                message: format!("{max_batch_bytes} is below max_event_bytes ({max_event_bytes})"),
            });
        }
        let header_encoding = match parsed.header_encoding.as_deref() {
            None => HeaderEncoding::default(),
            Some(name) => HeaderEncoding::from_name(name).ok_or_else(|| ConfigError::Value {
                key: "header_encoding",
                message: format!("'{name}' is not a header encoding: use 'compatible' or 'percent'"),
            })?,
        };
        let retention = parsed.retention.unwrap_or_default();
        let max_age_hours = retention.max_age_hours.unwrap_or(7 * 24);
        if max_age_hours == 0 {
            return Err(ConfigError::Value { key: "retention.max_age_hours", message: "must be positive".into() });
        }
        let otlp_endpoint = otlp_endpoint
            .or(parsed.tracing.and_then(|t| t.otlp_endpoint))
            .filter(|text| !text.trim().is_empty())
            .map(|text| parse_otlp_endpoint(&text))
            .transpose()?;
        let kafka = parsed.kafka.unwrap_or_default();
        let security = kafka.security()?;
        let log = parse_log_backend(
            security,
            log.or(parsed.log).as_deref().unwrap_or("embedded"),
            kafka_topic_prefix.or(kafka.topic_prefix).unwrap_or_else(|| DEFAULT_TOPIC_PREFIX.to_owned()),
            kafka.partitions.unwrap_or(8),
            kafka.replication_factor.unwrap_or(1),
        )?;
        let http = HttpLimits::resolve(parsed.http.unwrap_or_default())?;
        let kubernetes = resolve_kubernetes(parsed.kubernetes.unwrap_or_default(), kubeconfig)?;
        let mut auth_file = parsed.auth.unwrap_or_default();
        if allow_unauthenticated {
            auth_file.allow_unauthenticated = Some(true);
        }
        let env_tokens = auth_file.env_tokens.take();
        let auth = AuthConfig::from_file(auth_file, env_tokens.as_deref())
            .map_err(|(key, message)| ConfigError::Value { key, message })?;
        auth.check_listener(listen).map_err(|(key, message)| ConfigError::Value { key, message })?;
        if let Some(admin) = admin_listen {
            auth.check_listener(admin).map_err(|(_, message)| ConfigError::Value { key: "admin_listen", message })?;
        }
        let mut outbound = parsed.outbound.unwrap_or_default().resolve(auth.enabled())?;
        if let LogBackend::Kafka { topic_prefix, .. } = &log {
            outbound = outbound.reserve_kafka_prefix(topic_prefix.clone());
        }
        let tls = parsed.tls.unwrap_or_default().resolve()?;
        let secrets = parsed.secrets.unwrap_or_default();
        Ok(ServeConfig {
            secrets: SecretsConfig {
                key_file: secrets.key_file.filter(|path| !path.as_os_str().is_empty()),
                env_key: secrets.env_key.filter(|key| !key.trim().is_empty()),
            },
            identity: parsed.identity.unwrap_or_default().resolve()?,
            tls,
            auth,
            http,
            kubernetes,
            outbound,
            log,
            listen,
            admin_listen,
            data_dir: data_dir.or(parsed.data_dir).unwrap_or_else(|| PathBuf::from("./switchyard-data")),
            max_event_bytes,
            max_batch_bytes,
            max_event_attributes,
            max_batch_events,
            header_encoding,
            retention_age: Duration::from_secs(max_age_hours * 3600),
            retention_bytes: retention.max_bytes.unwrap_or(10 << 30),
            retention_total_bytes: retention.max_total_bytes.unwrap_or(50 << 30),
            max_attribute_name_bytes,
            max_attribute_value_bytes,
            max_brokers_per_namespace,
            max_triggers_per_namespace,
            max_sources_per_namespace,
            shutdown_grace: Duration::from_secs(parsed.shutdown_grace_secs.unwrap_or(10)),
            otlp_endpoint,
        })
    }
}

/// The command-line flags that override configuration keys; `None` leaves a key alone.
#[derive(Debug, Default)]
pub struct Flags {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--admin-listen`.
    pub admin_listen: Option<String>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--otlp-endpoint` (empty disables export).
    pub otlp_endpoint: Option<String>,
    /// `--log`.
    pub log: Option<String>,
    /// `--kafka-topic-prefix`.
    pub kafka_topic_prefix: Option<String>,
    /// `--kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// `--allow-unauthenticated`.
    pub allow_unauthenticated: bool,
}

/// `[kubernetes]` checked: on with a kubeconfig (file, environment or flag) or `in_cluster`.
fn resolve_kubernetes(file: KubernetesFile, flag: Option<PathBuf>) -> Result<Option<Kubernetes>, ConfigError> {
    let kubeconfig = flag.or(file.kubeconfig).filter(|path| !path.as_os_str().is_empty());
    let broker_class = file.broker_class.unwrap_or_else(|| DEFAULT_BROKER_CLASS.to_owned());
    if broker_class.trim().is_empty() {
        return Err(ConfigError::Value { key: "kubernetes.broker_class", message: "must not be empty".into() });
    }
    let advertised_url = file
        .advertised_url
        .filter(|text| !text.trim().is_empty())
        .map(|text| {
            let invalid = || ConfigError::Value {
                key: "kubernetes.advertised_url",
                message: format!("'{text}' is not an http(s) URL like http://switchyard.eventing.svc.cluster.local"),
            };
            let url = Url::parse(text.trim()).map_err(|_| invalid())?;
            match url.scheme() {
                "http" | "https" if url.host().is_some() && url.query().is_none() => Ok(url),
                _ => Err(invalid()),
            }
        })
        .transpose()?;
    let kubeconfig = match (kubeconfig, file.in_cluster.unwrap_or(false)) {
        (Some(path), true) => {
            return Err(ConfigError::Value {
                key: "kubernetes.in_cluster",
                message: format!("is true, but kubeconfig '{}' is set too: choose one", path.display()),
            })
        }
        (Some(path), false) => Some(path),
        (None, true) => None,
        (None, false) => return Ok(None),
    };
    Ok(Some(Kubernetes { kubeconfig, broker_class, advertised_url }))
}

fn small_number(var: &'static str, key: &str, value: u64) -> Result<u32, ConfigError> {
    u32::try_from(value)
        .map_err(|_| ConfigError::Env { var, message: format!("{value} is too large (it sets '{key}')") })
}

fn parse_log_backend(
    security: KafkaSecurity,
    text: &str,
    topic_prefix: String,
    partitions: u32,
    replication_factor: u32,
) -> Result<LogBackend, ConfigError> {
    let text = text.trim();
    if text == "embedded" {
        return Ok(LogBackend::Embedded);
    }
    let invalid = |message: String| ConfigError::Value { key: "log", message };
    let Some(servers) = text.strip_prefix("kafka://") else {
        return Err(invalid(format!("'{text}' is neither 'embedded' nor 'kafka://host:port[,host:port]'")));
    };
    let bootstrap_servers: Vec<String> = servers.split(',').map(|s| s.trim().to_owned()).collect();
    if let Some(bad) = bootstrap_servers
        .iter()
        .find(|s| s.rsplit_once(':').is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err()))
    {
        return Err(invalid(format!("'{bad}' in '{text}' is not host:port")));
    }
    if !switchyard_event::kafka::valid_topic_name(&topic_prefix) {
        return Err(ConfigError::Value {
            key: "kafka.topic_prefix",
            message: format!("'{topic_prefix}' must be letters, digits, '.', '_' or '-' (Kafka topic names)"),
        });
    }
    if partitions == 0 {
        return Err(ConfigError::Value { key: "kafka.partitions", message: "must be positive".into() });
    }
    if replication_factor == 0 {
        return Err(ConfigError::Value { key: "kafka.replication_factor", message: "must be positive".into() });
    }
    let security = Box::new(security);
    Ok(LogBackend::Kafka { bootstrap_servers, topic_prefix, partitions, replication_factor, security })
}

/// A setting (default `default`) that must be at least `min`.
fn at_least(value: Option<usize>, default: usize, min: usize, key: &'static str) -> Result<usize, ConfigError> {
    let value = value.unwrap_or(default);
    match value >= min {
        true => Ok(value),
        false => Err(ConfigError::Value { key, message: format!("{value} is below {min}") }),
    }
}

fn parse_otlp_endpoint(text: &str) -> Result<Url, ConfigError> {
    let invalid = || ConfigError::Value {
        key: "tracing.otlp_endpoint",
        message: format!("'{text}' is not an http(s) URL like http://127.0.0.1:4318"),
    };
    let url = Url::parse(text.trim()).map_err(|_| invalid())?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        _ => Err(invalid()),
    }
}

impl ServeConfig {
    /// The effective configuration, every key set, in the configuration file's shape.
    pub fn to_file(&self) -> ConfigFile {
        ConfigFile {
            listen: Some(self.listen.to_string()),
            admin_listen: self.admin_listen.map(|address| address.to_string()),
            data_dir: Some(self.data_dir.clone()),
            max_event_bytes: Some(self.max_event_bytes),
            max_batch_bytes: Some(self.max_batch_bytes),
            max_event_attributes: Some(self.max_event_attributes),
            max_batch_events: Some(self.max_batch_events),
            max_attribute_name_bytes: Some(self.max_attribute_name_bytes),
            max_attribute_value_bytes: Some(self.max_attribute_value_bytes),
            max_brokers_per_namespace: Some(self.max_brokers_per_namespace),
            max_triggers_per_namespace: Some(self.max_triggers_per_namespace),
            max_sources_per_namespace: Some(self.max_sources_per_namespace),
            header_encoding: Some(self.header_encoding.name().to_owned()),
            shutdown_grace_secs: Some(self.shutdown_grace.as_secs()),
            retention: Some(RetentionFile {
                max_age_hours: Some(self.retention_age.as_secs() / 3600),
                max_bytes: Some(self.retention_bytes),
                max_total_bytes: Some(self.retention_total_bytes),
            }),
            log: Some(match &self.log {
                LogBackend::Embedded => "embedded".to_owned(),
                LogBackend::Kafka { bootstrap_servers, .. } => format!("kafka://{}", bootstrap_servers.join(",")),
            }),
            kafka: match &self.log {
                LogBackend::Embedded => None,
                LogBackend::Kafka { topic_prefix, partitions, replication_factor, security, .. } => Some(KafkaFile {
                    topic_prefix: Some(topic_prefix.clone()),
                    partitions: Some(*partitions),
                    replication_factor: Some(*replication_factor),
                    ..security.to_file()
                }),
            },
            tracing: self
                .otlp_endpoint
                .as_ref()
                .map(|url| TracingFile { otlp_endpoint: Some(url.as_str().to_owned()) }),
            http: Some(self.http.to_file()),
            kubernetes: self.kubernetes.as_ref().map(|kubernetes| KubernetesFile {
                in_cluster: Some(kubernetes.kubeconfig.is_none()),
                kubeconfig: kubernetes.kubeconfig.clone(),
                broker_class: Some(kubernetes.broker_class.clone()),
                advertised_url: kubernetes.advertised_url.as_ref().map(|url| url.as_str().to_owned()),
            }),
            outbound: Some(OutboundFile::from_policy(&self.outbound)),
            identity: self.identity.to_file(),
            tls: self.tls.as_ref().map(|tls| TlsFile {
                cert_file: Some(tls.cert_file.clone()),
                key_file: Some(tls.key_file.clone()),
                client_ca_file: tls.client_ca_file.clone(),
            }),
            auth: Some(self.auth.to_file()),
            secrets: self
                .secrets
                .key_file
                .as_ref()
                .map(|key_file| SecretsFile { key_file: Some(key_file.clone()), env_key: None }),
        }
    }
}

// ---- `[kafka]` TLS and SASL: the Kafka backend's clients' security settings, checked, and
// turned into librdkafka's properties. Kept together in this block. ----

/// The values of `[kafka] security_protocol`.
const SECURITY_PROTOCOLS: [&str; 4] = ["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"];

impl KafkaFile {
    /// Sets `[kafka]` TLS or SASL key `key` from an environment variable's `value`.
    fn set(&mut self, key: &str, value: String) {
        match key {
            "kafka.security_protocol" => self.security_protocol = Some(value),
            "kafka.sasl_mechanism" => self.sasl_mechanism = Some(value),
            "kafka.sasl_username" => self.sasl_username = Some(value),
            "kafka.sasl_password" => self.env_sasl_password = Some(value),
            "kafka.sasl_password_file" => self.sasl_password_file = Some(PathBuf::from(value)),
            "kafka.ssl_ca_file" => self.ssl_ca_file = Some(PathBuf::from(value)),
            "kafka.ssl_cert_file" => self.ssl_cert_file = Some(PathBuf::from(value)),
            _ => self.ssl_key_file = Some(PathBuf::from(value)),
        }
    }

    /// The TLS and SASL settings, checked: each error names the key and quotes the value.
    fn security(&self) -> Result<KafkaSecurity, ConfigError> {
        fn given(text: &Option<String>) -> Option<&str> {
            text.as_deref().map(str::trim).filter(|text| !text.is_empty())
        }
        let protocol = given(&self.security_protocol).unwrap_or("plaintext").to_ascii_lowercase();
        if !SECURITY_PROTOCOLS.contains(&protocol.as_str()) {
            return Err(ConfigError::Value {
                key: "kafka.security_protocol",
                message: format!("'{protocol}' is not one of plaintext, ssl, sasl_plaintext or sasl_ssl"),
            });
        }
        let (sasl, ssl) = (protocol.starts_with("sasl_"), protocol.ends_with("ssl"));
        let mechanism = given(&self.sasl_mechanism).map(str::to_ascii_uppercase);
        if let Some(mechanism) = mechanism.as_deref().filter(|m| !SASL_MECHANISMS.contains(m)) {
            return Err(ConfigError::Value {
                key: "kafka.sasl_mechanism",
                message: format!("'{mechanism}' is not one of PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
            });
        }
        let password = self.env_sasl_password.is_some() || self.sasl_password_file.is_some();
        let sasl_keys = [
            ("kafka.sasl_mechanism", mechanism.is_some()),
            ("kafka.sasl_username", given(&self.sasl_username).is_some()),
            ("kafka.sasl_password_file", password),
        ];
        let ssl_keys = [
            ("kafka.ssl_ca_file", self.ssl_ca_file.is_some()),
            ("kafka.ssl_cert_file", self.ssl_cert_file.is_some()),
            ("kafka.ssl_key_file", self.ssl_key_file.is_some()),
        ];
        for (keys, applies, protocols) in
            [(sasl_keys, sasl, "sasl_plaintext or sasl_ssl"), (ssl_keys, ssl, "ssl or sasl_ssl")]
        {
            if let Some((key, _)) = keys.iter().find(|(_, set)| *set).filter(|_| !applies) {
                return Err(ConfigError::Value {
                    key,
                    message: format!("is set, but security_protocol is '{protocol}': use {protocols}"),
                });
            }
        }
        if sasl {
            if let Some((key, _)) = sasl_keys[1..].iter().find(|(_, set)| !*set) {
                let message = format!(
                    "is required with security_protocol '{protocol}' (the password may instead be in SWITCHYARD_KAFKA_SASL_PASSWORD)"
                );
                return Err(ConfigError::Value { key, message });
            }
        }
        match (&self.ssl_cert_file, &self.ssl_key_file) {
            (Some(_), None) => {
                return Err(ConfigError::Value {
                    key: "kafka.ssl_key_file",
                    message: "is required with kafka.ssl_cert_file".into(),
                })
            }
            (None, Some(_)) => {
                return Err(ConfigError::Value {
                    key: "kafka.ssl_cert_file",
                    message: "is required with kafka.ssl_key_file".into(),
                })
            }
            _ => {}
        }
        for (key, file) in [
            ("kafka.ssl_ca_file", &self.ssl_ca_file),
            ("kafka.ssl_cert_file", &self.ssl_cert_file),
            ("kafka.ssl_key_file", &self.ssl_key_file),
            ("kafka.sasl_password_file", &self.sasl_password_file),
        ] {
            if let Some(path) = file.as_ref().filter(|path| !path.is_file()) {
                return Err(ConfigError::Value { key, message: format!("'{}' is not a file", path.display()) });
            }
        }
        Ok(KafkaSecurity {
            protocol: protocol.clone(),
            sasl_mechanism: sasl.then(|| mechanism.unwrap_or_else(|| "PLAIN".to_owned())),
            sasl_username: given(&self.sasl_username).map(str::to_owned),
            sasl_password_file: self.sasl_password_file.clone(),
            env_sasl_password: self.env_sasl_password.clone(),
            ssl_ca_file: self.ssl_ca_file.clone(),
            ssl_cert_file: self.ssl_cert_file.clone(),
            ssl_key_file: self.ssl_key_file.clone(),
        })
    }
}

/// The SASL mechanisms `[kafka] sasl_mechanism` takes.
const SASL_MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

impl KafkaSecurity {
    /// No TLS, no SASL: librdkafka's default.
    pub fn plaintext() -> KafkaSecurity {
        KafkaSecurity {
            protocol: "plaintext".to_owned(),
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password_file: None,
            env_sasl_password: None,
            ssl_ca_file: None,
            ssl_cert_file: None,
            ssl_key_file: None,
        }
    }

    /// The settings in the configuration file's shape; the password only as its file.
    fn to_file(&self) -> KafkaFile {
        KafkaFile {
            security_protocol: Some(self.protocol.clone()),
            sasl_mechanism: self.sasl_mechanism.clone(),
            sasl_username: self.sasl_username.clone(),
            sasl_password_file: self.sasl_password_file.clone(),
            ssl_ca_file: self.ssl_ca_file.clone(),
            ssl_cert_file: self.ssl_cert_file.clone(),
            ssl_key_file: self.ssl_key_file.clone(),
            ..KafkaFile::default()
        }
    }

    /// librdkafka's properties for every client of the backend, the password read now (from
    /// `SWITCHYARD_KAFKA_SASL_PASSWORD`, else its file). None for `plaintext`.
    pub fn properties(&self) -> Result<Vec<(String, String)>, ConfigError> {
        if self.protocol == "plaintext" {
            return Ok(Vec::new());
        }
        let mut properties = vec![("security.protocol".to_owned(), self.protocol.clone())];
        let mut set = |name: &str, value: String| properties.push((name.to_owned(), value));
        if let (Some(mechanism), Some(username)) = (&self.sasl_mechanism, &self.sasl_username) {
            set("sasl.mechanism", mechanism.clone());
            set("sasl.username", username.clone());
            set("sasl.password", self.sasl_password()?);
        }
        if self.protocol.ends_with("ssl") {
            // Without a CA file, the system's CAs: the statically linked OpenSSL looks for them
            // in the usual places only when told to.
            let ca = self.ssl_ca_file.as_ref().map_or_else(|| "probe".to_owned(), |path| path.display().to_string());
            set("ssl.ca.location", ca);
            if let (Some(cert), Some(key)) = (&self.ssl_cert_file, &self.ssl_key_file) {
                set("ssl.certificate.location", cert.display().to_string());
                set("ssl.key.location", key.display().to_string());
            }
        }
        Ok(properties)
    }

    fn sasl_password(&self) -> Result<String, ConfigError> {
        if let Some(password) = self.env_sasl_password.as_ref().filter(|password| !password.is_empty()) {
            return Ok(password.clone());
        }
        let key = "kafka.sasl_password_file";
        let Some(path) = &self.sasl_password_file else {
            return Err(ConfigError::Value { key, message: "is required (or SWITCHYARD_KAFKA_SASL_PASSWORD)".into() });
        };
        match std::fs::read_to_string(path) {
            Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
            Ok(_) => Err(ConfigError::Value { key, message: format!("'{}' is empty", path.display()) }),
            Err(error) => {
                Err(ConfigError::Value { key, message: format!("cannot read '{}': {}", path.display(), error.kind()) })
            }
        }
    }
}

// ---- `[http]`: the HTTP server's limits (header, body and idle timeouts, lingering close,
// connection and concurrency limits, the REST body limit). Kept together in this block. ----

/// `[http]`: the HTTP server's limits. Every key is optional; see [`HttpLimits`] for what each
/// limit does and its default.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFile {
    /// Seconds a client has to send a request's headers (default 10).
    pub header_read_timeout_secs: Option<u64>,
    /// Seconds a request body may take before it must be moving (default 30).
    pub body_read_timeout_secs: Option<u64>,
    /// The slowest upload kept going, in bytes per second (default 16384).
    pub body_min_bytes_per_sec: Option<u64>,
    /// Seconds a connection with no request in flight is kept (default 60).
    pub idle_timeout_secs: Option<u64>,
    /// Seconds to keep reading (and discarding) what a client still sends once its answer is
    /// written and the connection closes (default 5).
    pub lingering_close_secs: Option<u64>,
    /// Most open connections (default 10000, or half the open-file limit when that is lower).
    pub max_connections: Option<u64>,
    /// Most requests handled at once, health, readiness and metrics aside (default 1024).
    pub max_concurrent_requests: Option<u64>,
    /// Largest request body of the REST API (declarations, filters, dead letters; default
    /// 1 MiB). Ingest and webhooks are held to `max_event_bytes` / `max_batch_bytes`.
    pub max_api_body_bytes: Option<u64>,
}

/// The HTTP server's limits, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpLimits {
    /// A client that has not sent a request's whole header block this long after the
    /// connection opened (or, on a kept-alive HTTP/1 connection, after the previous answer) is
    /// disconnected: slowloris. On HTTP/1 this is also how long a kept-alive connection waits
    /// for its next request.
    pub header_read_timeout: Duration,
    /// A request body must have arrived within this time, extended by one second for every
    /// `body_min_bytes_per_sec` bytes received; otherwise the request is answered 408.
    pub body_read_timeout: Duration,
    /// See [`HttpLimits::body_read_timeout`].
    pub body_min_bytes_per_sec: u64,
    /// A connection with no request in flight for this long is closed (HTTP/2 gets a GOAWAY).
    pub idle_timeout: Duration,
    /// How long a connection closing with unread request bytes is drained, so that the client
    /// still sending reads the answer (e.g. a 413) instead of a reset.
    pub lingering_close: Duration,
    /// Connections over this are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Requests over this are answered 503 with `Retry-After` instead of waiting.
    pub max_concurrent_requests: usize,
    /// See [`HttpFile::max_api_body_bytes`].
    pub max_api_body_bytes: usize,
}

/// Default of [`HttpLimits::max_connections`] where the open-file limit allows it.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            body_min_bytes_per_sec: 16 << 10,
            idle_timeout: Duration::from_secs(60),
            lingering_close: Duration::from_secs(5),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_concurrent_requests: 1024,
            max_api_body_bytes: 1 << 20,
        }
    }
}

/// The environment variables that override `[http]` keys, and the key each sets.
pub const HTTP_ENV_OVERRIDES: [(&str, &str); 8] = [
    ("SWITCHYARD_HTTP_HEADER_READ_TIMEOUT_SECS", "http.header_read_timeout_secs"),
    ("SWITCHYARD_HTTP_BODY_READ_TIMEOUT_SECS", "http.body_read_timeout_secs"),
    ("SWITCHYARD_HTTP_BODY_MIN_BYTES_PER_SEC", "http.body_min_bytes_per_sec"),
    ("SWITCHYARD_HTTP_IDLE_TIMEOUT_SECS", "http.idle_timeout_secs"),
    ("SWITCHYARD_HTTP_LINGERING_CLOSE_SECS", "http.lingering_close_secs"),
    ("SWITCHYARD_HTTP_MAX_CONNECTIONS", "http.max_connections"),
    ("SWITCHYARD_HTTP_MAX_CONCURRENT_REQUESTS", "http.max_concurrent_requests"),
    ("SWITCHYARD_HTTP_MAX_API_BODY_BYTES", "http.max_api_body_bytes"),
];

impl HttpFile {
    fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        for (var, key) in HTTP_ENV_OVERRIDES {
            let Some(value) = env(var) else { continue };
            let number = value.trim().parse::<u64>().map_err(|_| ConfigError::Env {
                var,
                message: format!("'{value}' is not a whole number (it sets '{key}')"),
            })?;
            let field = match key {
                "http.header_read_timeout_secs" => &mut self.header_read_timeout_secs,
                "http.body_read_timeout_secs" => &mut self.body_read_timeout_secs,
                "http.body_min_bytes_per_sec" => &mut self.body_min_bytes_per_sec,
                "http.idle_timeout_secs" => &mut self.idle_timeout_secs,
                "http.lingering_close_secs" => &mut self.lingering_close_secs,
                "http.max_connections" => &mut self.max_connections,
                "http.max_concurrent_requests" => &mut self.max_concurrent_requests,
                _ => &mut self.max_api_body_bytes,
            };
            *field = Some(number);
        }
        Ok(())
    }
}

impl HttpLimits {
    /// The file's keys over the defaults, each checked against its range. An unset
    /// `max_connections` is the default lowered to half the process's open-file limit (Linux),
    /// so that accepting never runs the process out of descriptors.
    fn resolve(file: HttpFile) -> Result<HttpLimits, ConfigError> {
        let defaults = HttpLimits::default();
        let secs = |key: &'static str, value: Option<u64>, default: Duration, max: u64| match value {
            None => Ok(default),
            Some(value) => in_range(key, value, 1, max).map(Duration::from_secs),
        };
        let count = |key: &'static str, value: Option<u64>, default: usize, min: u64, max: u64| match value {
            None => Ok(default),
            Some(value) => in_range(key, value, min, max)
                .and_then(|value| usize::try_from(value).map_err(|_| out_of_range(key, value, min, max))),
        };
        let max_connections = match file.max_connections {
            None => {
                open_file_limit().map_or(DEFAULT_MAX_CONNECTIONS, |limit| (limit / 2).clamp(1, DEFAULT_MAX_CONNECTIONS))
            }
            value => count("http.max_connections", value, DEFAULT_MAX_CONNECTIONS, 1, 1_000_000)?,
        };
        Ok(HttpLimits {
            header_read_timeout: secs(
                "http.header_read_timeout_secs",
                file.header_read_timeout_secs,
                defaults.header_read_timeout,
                3600,
            )?,
            body_read_timeout: secs(
                "http.body_read_timeout_secs",
                file.body_read_timeout_secs,
                defaults.body_read_timeout,
                86_400,
            )?,
            body_min_bytes_per_sec: match file.body_min_bytes_per_sec {
                None => defaults.body_min_bytes_per_sec,
                Some(value) => in_range("http.body_min_bytes_per_sec", value, 1, 1 << 30)?,
            },
            idle_timeout: secs("http.idle_timeout_secs", file.idle_timeout_secs, defaults.idle_timeout, 86_400)?,
            lingering_close: secs(
                "http.lingering_close_secs",
                file.lingering_close_secs,
                defaults.lingering_close,
                300,
            )?,
            max_connections,
            max_concurrent_requests: count(
                "http.max_concurrent_requests",
                file.max_concurrent_requests,
                defaults.max_concurrent_requests,
                1,
                1_000_000,
            )?,
            max_api_body_bytes: count(
                "http.max_api_body_bytes",
                file.max_api_body_bytes,
                defaults.max_api_body_bytes,
                1024,
                1 << 30,
            )?,
        })
    }

    fn to_file(&self) -> HttpFile {
        HttpFile {
            header_read_timeout_secs: Some(self.header_read_timeout.as_secs()),
            body_read_timeout_secs: Some(self.body_read_timeout.as_secs()),
            body_min_bytes_per_sec: Some(self.body_min_bytes_per_sec),
            idle_timeout_secs: Some(self.idle_timeout.as_secs()),
            lingering_close_secs: Some(self.lingering_close.as_secs()),
            max_connections: u64::try_from(self.max_connections).ok(),
            max_concurrent_requests: u64::try_from(self.max_concurrent_requests).ok(),
            max_api_body_bytes: u64::try_from(self.max_api_body_bytes).ok(),
        }
    }
}

fn in_range(key: &'static str, value: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(out_of_range(key, value, min, max))
    }
}

fn out_of_range(key: &'static str, value: u64, min: u64, max: u64) -> ConfigError {
    ConfigError::Value { key, message: format!("{value} is outside {min}..={max}") }
}

/// The soft limit on open files, from `/proc/self/limits` (Linux); `None` elsewhere or when
/// unlimited.
fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files").split_whitespace().next()?.parse().ok()
}

// ---- end of `[http]` ----

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn environment_overrides_the_file_and_flags_override_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\nmax_event_bytes = 2048\n").unwrap();
        let env = |var: &str| match var {
            "SWITCHYARD_LISTEN" => Some("127.0.0.1:9100".to_owned()),
            "SWITCHYARD_MAX_EVENT_BYTES" => Some("4096".to_owned()),
            "SWITCHYARD_RETENTION_MAX_AGE_HOURS" => Some("2".to_owned()),
            _ => None,
        };
        let config = ServeConfig::resolve(Some(&path), &env, None, None).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:9100");
        assert_eq!(config.max_event_bytes, 4096);
        assert_eq!(config.retention_age, Duration::from_secs(7200));
        let config = ServeConfig::resolve(Some(&path), &env, Some("127.0.0.1:9200".into()), None).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:9200");
        let bad = |var: &str| (var == "SWITCHYARD_MAX_BATCH_BYTES").then(|| "lots".to_owned());
        let err = ServeConfig::resolve(None, &bad, None, None).unwrap_err().to_string();
        assert!(err.contains("SWITCHYARD_MAX_BATCH_BYTES") && err.contains("lots"), "{err}");
    }

    #[test]
    fn the_effective_configuration_round_trips_through_the_file_format() {
        let config = ServeConfig::resolve(None, &no_env, None, None).unwrap();
        let text = toml::to_string(&config.to_file()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("printed.toml");
        std::fs::write(&path, &text).unwrap();
        let again = ServeConfig::resolve(Some(&path), &no_env, None, None).unwrap();
        assert_eq!(toml::to_string(&again.to_file()).unwrap(), text);
    }

    #[test]
    fn the_shipped_example_configuration_is_valid() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/switchyard.toml"));
        ServeConfig::resolve(Some(path), &no_env, None, None).unwrap();
    }

    #[test]
    fn defaults_file_and_flags_layer() {
        let config = ServeConfig::resolve(None, &no_env, None, None).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.max_event_bytes, 1 << 20);
        assert_eq!(config.retention_age, Duration::from_secs(7 * 24 * 3600));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\nmax_event_bytes = 2048\n[retention]\nmax_bytes = 5\n")
            .unwrap();
        let config = ServeConfig::resolve(Some(&path), &no_env, Some("127.0.0.1:9001".into()), None).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:9001");
        assert_eq!(config.max_event_bytes, 2048);
        assert_eq!(config.retention_bytes, 5);
    }

    #[test]
    fn the_otlp_endpoint_layers_file_environment_and_flag_and_is_validated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[tracing]\notlp_endpoint = \"http://file:4318\"\n").unwrap();
        let config = ServeConfig::resolve(Some(&path), &no_env, None, None).unwrap();
        assert_eq!(config.otlp_endpoint.as_ref().map(Url::as_str), Some("http://file:4318/"));
        let env = |var: &str| (var == "SWITCHYARD_OTLP_ENDPOINT").then(|| "http://env:4318".to_owned());
        let config = ServeConfig::resolve(Some(&path), &env, None, None).unwrap();
        assert_eq!(config.otlp_endpoint.as_ref().map(Url::as_str), Some("http://env:4318/"));
        let flags = Flags { otlp_endpoint: Some("https://flag".into()), ..Flags::default() };
        let config = ServeConfig::resolve_with(Some(&path), &env, flags).unwrap();
        assert_eq!(config.otlp_endpoint.as_ref().map(Url::as_str), Some("https://flag/"));
        let off = Flags { otlp_endpoint: Some(String::new()), ..Flags::default() };
        assert_eq!(ServeConfig::resolve_with(Some(&path), &env, off).unwrap().otlp_endpoint, None);
        assert_eq!(ServeConfig::resolve(None, &no_env, None, None).unwrap().otlp_endpoint, None);
        let printed = toml::to_string(&ServeConfig::resolve(Some(&path), &no_env, None, None).unwrap().to_file());
        assert!(printed.unwrap().contains("[tracing]\notlp_endpoint = \"http://file:4318/\""));
        for bad in ["127.0.0.1:4318", "ftp://collector", "http//x"] {
            let bad = Flags { otlp_endpoint: Some(bad.into()), ..Flags::default() };
            let error = ServeConfig::resolve_with(None, &no_env, bad).unwrap_err().to_string();
            assert!(error.contains("tracing.otlp_endpoint"), "{error}");
        }
    }

    #[test]
    fn kubernetes_is_off_unless_a_kubeconfig_or_in_cluster_is_given_and_is_checked() {
        assert_eq!(ServeConfig::resolve(None, &no_env, None, None).unwrap().kubernetes, None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[kubernetes]\nin_cluster = true\nadvertised_url = \"http://sy.ns.svc\"\n").unwrap();
        let config = ServeConfig::resolve(Some(&path), &no_env, None, None).unwrap().kubernetes.unwrap();
        assert_eq!(config.kubeconfig, None);
        assert_eq!(config.broker_class, DEFAULT_BROKER_CLASS);
        assert_eq!(config.advertised_url.as_ref().map(Url::as_str), Some("http://sy.ns.svc/"));
        let env = |var: &str| match var {
            "SWITCHYARD_KUBECONFIG" => Some("/etc/kube.yaml".to_owned()),
            "SWITCHYARD_BROKER_CLASS" => Some("Mine".to_owned()),
            _ => None,
        };
        let config = ServeConfig::resolve(None, &env, None, None).unwrap().kubernetes.unwrap();
        assert_eq!(
            (config.kubeconfig.as_deref(), config.broker_class.as_str()),
            (Some(Path::new("/etc/kube.yaml")), "Mine")
        );
        let flags = Flags { kubeconfig: Some(PathBuf::from("/flag.yaml")), ..Flags::default() };
        let config = ServeConfig::resolve_with(None, &env, flags).unwrap().kubernetes.unwrap();
        assert_eq!(config.kubeconfig.as_deref(), Some(Path::new("/flag.yaml")));
        let printed = toml::to_string(&ServeConfig::resolve(None, &env, None, None).unwrap().to_file()).unwrap();
        assert!(printed.contains("[kubernetes]\nkubeconfig = \"/etc/kube.yaml\"\nin_cluster = false"), "{printed}");
        let both = Flags { kubeconfig: Some(PathBuf::from("/k")), ..Flags::default() };
        let error = ServeConfig::resolve_with(Some(&path), &no_env, both).unwrap_err().to_string();
        assert!(error.contains("kubernetes.in_cluster") && error.contains("'/k'"), "{error}");
        std::fs::write(&path, "[kubernetes]\nin_cluster = true\nadvertised_url = \"sy:80\"\n").unwrap();
        let error = ServeConfig::resolve(Some(&path), &no_env, None, None).unwrap_err().to_string();
        assert!(error.contains("kubernetes.advertised_url") && error.contains("'sy:80'"), "{error}");
        let env = |var: &str| (var == "SWITCHYARD_KUBERNETES_IN_CLUSTER").then(|| "yes".to_owned());
        let error = ServeConfig::resolve(None, &env, None, None).unwrap_err().to_string();
        assert!(error.contains("SWITCHYARD_KUBERNETES_IN_CLUSTER") && error.contains("'yes'"), "{error}");
    }

    #[test]
    fn the_header_encoding_is_compatible_unless_set_and_names_its_key_when_wrong() {
        let config = ServeConfig::resolve(None, &no_env, None, None).unwrap();
        assert_eq!(config.header_encoding, HeaderEncoding::Compatible);
        let env = |var: &str| (var == "SWITCHYARD_HEADER_ENCODING").then(|| "percent".to_owned());
        let config = ServeConfig::resolve(None, &env, None, None).unwrap();
        assert_eq!(config.header_encoding, HeaderEncoding::Percent);
        assert!(toml::to_string(&config.to_file()).unwrap().contains("header_encoding = \"percent\""));
        let env = |var: &str| (var == "SWITCHYARD_HEADER_ENCODING").then(|| "raw".to_owned());
        let error = ServeConfig::resolve(None, &env, None, None).unwrap_err().to_string();
        assert_eq!(
            error,
            "invalid config key 'header_encoding': 'raw' is not a header encoding: use 'compatible' or 'percent'"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "colour = 1\n").unwrap();
        assert!(ServeConfig::resolve(Some(&path), &no_env, None, None).unwrap_err().to_string().contains("colour"));
        std::fs::write(&path, "max_event_bytes = 0\n").unwrap();
        assert!(ServeConfig::resolve(Some(&path), &no_env, None, None)
            .unwrap_err()
            .to_string()
            .contains("max_event_bytes"));
        let err = ServeConfig::resolve(None, &no_env, Some("nowhere".into()), None).unwrap_err().to_string();
        assert!(err.contains("listen") && err.contains("nowhere"), "{err}");
    }

    #[test]
    fn the_log_backend_is_embedded_or_kafka_and_names_its_key_when_wrong() {
        assert_eq!(ServeConfig::resolve(None, &no_env, None, None).unwrap().log, LogBackend::Embedded);
        let env = |var: &str| match var {
            "SWITCHYARD_LOG_BACKEND" => Some("kafka://a:9092,b:9093".to_owned()),
            "SWITCHYARD_KAFKA_PARTITIONS" => Some("3".to_owned()),
            _ => None,
        };
        let flags = Flags { kafka_topic_prefix: Some("team-a.".into()), ..Flags::default() };
        let config = ServeConfig::resolve_with(None, &env, flags).unwrap();
        assert_eq!(
            config.log,
            LogBackend::Kafka {
                bootstrap_servers: vec!["a:9092".into(), "b:9093".into()],
                topic_prefix: "team-a.".into(),
                partitions: 3,
                replication_factor: 1,
                security: Box::new(KafkaSecurity::plaintext()),
            }
        );
        let text = toml::to_string(&config.to_file()).unwrap();
        assert!(
            text.contains("log = \"kafka://a:9092,b:9093\"") && text.contains("topic_prefix = \"team-a.\""),
            "{text}"
        );
        for (value, expected) in [("kafka://nohost", "'nohost'"), ("zookeeper://x:1", "'zookeeper://x:1'")] {
            let flags = Flags { log: Some(value.into()), ..Flags::default() };
            let error = ServeConfig::resolve_with(None, &no_env, flags).unwrap_err().to_string();
            assert!(error.contains("'log'") && error.contains(expected), "{error}");
        }
        let flags =
            Flags { log: Some("kafka://a:1".into()), kafka_topic_prefix: Some("a b".into()), ..Flags::default() };
        let error = ServeConfig::resolve_with(None, &no_env, flags).unwrap_err().to_string();
        assert!(error.contains("kafka.topic_prefix"), "{error}");
    }

    #[test]
    fn kafka_tls_and_sasl_become_librdkafka_properties_and_the_password_is_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "CA").unwrap();
        let file = dir.path().join("switchyard.toml");
        let config_text = format!(
            "log = \"kafka://127.0.0.1:19094\"\n[kafka]\nsecurity_protocol = \"sasl_ssl\"\nsasl_mechanism = \"scram-sha-256\"\nssl_ca_file = \"{}\"\n",
            ca.display()
        );
        std::fs::write(&file, config_text).unwrap();
        let env = |var: &str| match var {
            "SWITCHYARD_KAFKA_SASL_USERNAME" => Some("switchyard".to_owned()),
            "SWITCHYARD_KAFKA_SASL_PASSWORD" => Some("hunter2-secret".to_owned()),
            _ => None,
        };
        let config = ServeConfig::resolve(Some(&file), &env, None, None).unwrap();
        let LogBackend::Kafka { security, .. } = &config.log else { panic!("{:?}", config.log) };
        let expected = [
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanism", "SCRAM-SHA-256"),
            ("sasl.username", "switchyard"),
            ("sasl.password", "hunter2-secret"),
            ("ssl.ca.location", ca.to_str().unwrap()),
        ];
        let expected: Vec<(String, String)> =
            expected.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect();
        assert_eq!(security.properties().unwrap(), expected);
        let printed = toml::to_string(&config.to_file()).unwrap();
        assert!(printed.contains("security_protocol = \"sasl_ssl\"") && !printed.contains("hunter2"), "{printed}");

        let password_file = dir.path().join("password");
        std::fs::write(&password_file, "from-file\n").unwrap();
        let env = |var: &str| match var {
            "SWITCHYARD_LOG_BACKEND" => Some("kafka://127.0.0.1:19094".to_owned()),
            "SWITCHYARD_KAFKA_SECURITY_PROTOCOL" => Some("sasl_plaintext".to_owned()),
            "SWITCHYARD_KAFKA_SASL_USERNAME" => Some("u".to_owned()),
            "SWITCHYARD_KAFKA_SASL_PASSWORD_FILE" => Some(password_file.display().to_string()),
            _ => None,
        };
        let config = ServeConfig::resolve(None, &env, None, None).unwrap();
        let LogBackend::Kafka { security, .. } = &config.log else { panic!("{:?}", config.log) };
        let properties = security.properties().unwrap();
        assert!(properties.contains(&("sasl.password".to_owned(), "from-file".to_owned())), "{properties:?}");
        assert!(properties.contains(&("sasl.mechanism".to_owned(), "PLAIN".to_owned())), "{properties:?}");
        assert!(!properties.iter().any(|(name, _)| name.starts_with("ssl.")), "{properties:?}");
    }

    #[test]
    fn bad_kafka_security_settings_name_the_key_and_quote_the_value() {
        type Vars<'a> = &'a [(&'a str, &'a str)];
        let cases: [(Vars<'_>, &str, &str); 7] = [
            (&[("SWITCHYARD_KAFKA_SECURITY_PROTOCOL", "tls")], "kafka.security_protocol", "'tls'"),
            (
                &[
                    ("SWITCHYARD_KAFKA_SECURITY_PROTOCOL", "sasl_plaintext"),
                    ("SWITCHYARD_KAFKA_SASL_MECHANISM", "GSSAPI"),
                ],
                "kafka.sasl_mechanism",
                "'GSSAPI'",
            ),
            (&[("SWITCHYARD_KAFKA_SECURITY_PROTOCOL", "sasl_plaintext")], "kafka.sasl_username", "is required"),
            (
                &[("SWITCHYARD_KAFKA_SECURITY_PROTOCOL", "sasl_ssl"), ("SWITCHYARD_KAFKA_SASL_USERNAME", "u")],
                "kafka.sasl_password_file",
                "SWITCHYARD_KAFKA_SASL_PASSWORD",
            ),
            (&[("SWITCHYARD_KAFKA_SASL_USERNAME", "u")], "kafka.sasl_username", "'plaintext'"),
            (&[("SWITCHYARD_KAFKA_SSL_CA_FILE", "/nonexistent/ca.pem")], "kafka.ssl_ca_file", "'plaintext'"),
            (
                &[
                    ("SWITCHYARD_KAFKA_SECURITY_PROTOCOL", "ssl"),
                    ("SWITCHYARD_KAFKA_SSL_CA_FILE", "/nonexistent/ca.pem"),
                ],
                "kafka.ssl_ca_file",
                "'/nonexistent/ca.pem'",
            ),
        ];
        for (vars, key, expected) in cases {
            let env = |var: &str| {
                let found = vars.iter().find(|(name, _)| *name == var).map(|(_, value)| (*value).to_owned());
                found.or_else(|| (var == "SWITCHYARD_LOG_BACKEND").then(|| "kafka://127.0.0.1:1".to_owned()))
            };
            let error = ServeConfig::resolve(None, &env, None, None).unwrap_err().to_string();
            assert!(error.contains(&format!("'{key}'")) && error.contains(expected), "{vars:?}: {error}");
        }
    }

    #[test]
    fn http_limits_have_defaults_layer_file_and_environment_and_refuse_zero_or_absurd_values() {
        let config = ServeConfig::resolve(None, &no_env, None, None).unwrap();
        let defaults = HttpLimits::default();
        assert_eq!(config.http.header_read_timeout, defaults.header_read_timeout);
        assert_eq!(config.http.max_concurrent_requests, 1024);
        assert!(config.http.max_connections >= 1 && config.http.max_connections <= DEFAULT_MAX_CONNECTIONS);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[http]\nheader_read_timeout_secs = 3\nmax_connections = 50\n").unwrap();
        let env = |var: &str| (var == "SWITCHYARD_HTTP_MAX_CONNECTIONS").then(|| "7".to_owned());
        let config = ServeConfig::resolve(Some(&path), &env, None, None).unwrap();
        assert_eq!(config.http.header_read_timeout, Duration::from_secs(3));
        assert_eq!(config.http.max_connections, 7);
        let text = toml::to_string(&config.to_file()).unwrap();
        assert!(text.contains("[http]") && text.contains("max_connections = 7"), "{text}");
        for (var, value) in [
            ("SWITCHYARD_HTTP_HEADER_READ_TIMEOUT_SECS", "0"),
            ("SWITCHYARD_HTTP_BODY_READ_TIMEOUT_SECS", "0"),
            ("SWITCHYARD_HTTP_BODY_MIN_BYTES_PER_SEC", "0"),
            ("SWITCHYARD_HTTP_IDLE_TIMEOUT_SECS", "99999999"),
            ("SWITCHYARD_HTTP_LINGERING_CLOSE_SECS", "0"),
            ("SWITCHYARD_HTTP_MAX_CONNECTIONS", "0"),
            ("SWITCHYARD_HTTP_MAX_CONCURRENT_REQUESTS", "0"),
            ("SWITCHYARD_HTTP_MAX_API_BODY_BYTES", "10"),
        ] {
            let env = |wanted: &str| (wanted == var).then(|| value.to_owned());
            let error = ServeConfig::resolve(None, &env, None, None).unwrap_err().to_string();
            let key = HTTP_ENV_OVERRIDES.iter().find(|(v, _)| *v == var).unwrap().1;
            assert!(error.contains(&format!("'{key}'")) && error.contains(value), "{var}: {error}");
        }
        let env = |var: &str| (var == "SWITCHYARD_HTTP_IDLE_TIMEOUT_SECS").then(|| "soon".to_owned());
        let error = ServeConfig::resolve(None, &env, None, None).unwrap_err().to_string();
        assert!(error.contains("SWITCHYARD_HTTP_IDLE_TIMEOUT_SECS") && error.contains("soon"), "{error}");
        std::fs::write(&path, "[http]\nheader_timeout = 3\n").unwrap();
        let error = ServeConfig::resolve(Some(&path), &no_env, None, None).unwrap_err().to_string();
        assert!(error.contains("header_timeout"), "{error}");
    }
}
