//! Server configuration: defaults, overridden by a TOML file, by `SWITCHYARD_*` environment
//! variables, then by flags. Validated into [`ServeConfig`] before anything starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard_event::http::HeaderEncoding;
use switchyard_event::limits::EventLimits;
use url::Url;

/// The configuration file, as written by an operator. Every field is optional.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Address to listen on, e.g. `127.0.0.1:8080`.
    pub listen: Option<String>,
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
}

/// The validated configuration `serve` runs with.
#[derive(Debug, Clone, Serialize)]
pub struct ServeConfig {
    /// Where to listen.
    pub listen: SocketAddr,
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
    /// See [`ConfigFile::header_encoding`].
    #[serde(serialize_with = "serialize_header_encoding")]
    pub header_encoding: HeaderEncoding,
    /// Retention by age.
    pub retention_age: Duration,
    /// Retention by size.
    pub retention_bytes: u64,
    /// Shutdown grace.
    pub shutdown_grace: Duration,
    /// Where spans are exported over OTLP/HTTP, if anywhere.
    #[serde(serialize_with = "serialize_url")]
    pub otlp_endpoint: Option<Url>,
    /// Which event log.
    pub log: LogBackend,
}

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
pub const ENV_OVERRIDES: [(&str, &str); 15] = [
    ("SWITCHYARD_LISTEN", "listen"),
    ("SWITCHYARD_DATA_DIR", "data_dir"),
    ("SWITCHYARD_MAX_EVENT_BYTES", "max_event_bytes"),
    ("SWITCHYARD_MAX_BATCH_BYTES", "max_batch_bytes"),
    ("SWITCHYARD_MAX_EVENT_ATTRIBUTES", "max_event_attributes"),
    ("SWITCHYARD_MAX_BATCH_EVENTS", "max_batch_events"),
    ("SWITCHYARD_HEADER_ENCODING", "header_encoding"),
    ("SWITCHYARD_SHUTDOWN_GRACE_SECS", "shutdown_grace_secs"),
    ("SWITCHYARD_RETENTION_MAX_AGE_HOURS", "retention.max_age_hours"),
    ("SWITCHYARD_RETENTION_MAX_BYTES", "retention.max_bytes"),
    ("SWITCHYARD_OTLP_ENDPOINT", "tracing.otlp_endpoint"),
    ("SWITCHYARD_LOG_BACKEND", "log"),
    ("SWITCHYARD_KAFKA_TOPIC_PREFIX", "kafka.topic_prefix"),
    ("SWITCHYARD_KAFKA_PARTITIONS", "kafka.partitions"),
    ("SWITCHYARD_KAFKA_REPLICATION_FACTOR", "kafka.replication_factor"),
];

impl ConfigFile {
    /// Applies `SWITCHYARD_*` overrides read through `env`.
    fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        for (var, key) in ENV_OVERRIDES {
            let Some(value) = env(var) else { continue };
            let number = || {
                value.trim().parse::<u64>().map_err(|_| ConfigError::Env {
                    var,
                    message: format!("'{value}' is not a whole number (it sets '{key}')"),
                })
            };
            match key {
                "listen" => self.listen = Some(value.clone()),
                "data_dir" => self.data_dir = Some(PathBuf::from(&value)),
                "max_event_bytes" => self.max_event_bytes = Some(number()? as usize),
                "max_batch_bytes" => self.max_batch_bytes = Some(number()? as usize),
                "max_event_attributes" => self.max_event_attributes = Some(number()? as usize),
                "max_batch_events" => self.max_batch_events = Some(number()? as usize),
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
                "tracing.otlp_endpoint" => {
                    self.tracing.get_or_insert_with(TracingFile::default).otlp_endpoint = Some(value.clone())
                }
                "retention.max_age_hours" => {
                    self.retention.get_or_insert_with(RetentionFile::default).max_age_hours = Some(number()?)
                }
                _ => self.retention.get_or_insert_with(RetentionFile::default).max_bytes = Some(number()?),
            }
        }
        Ok(())
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
        let Flags { listen, data_dir, otlp_endpoint, log, kafka_topic_prefix } = flags;
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
        let log = parse_log_backend(
            log.or(parsed.log).as_deref().unwrap_or("embedded"),
            kafka_topic_prefix.or(kafka.topic_prefix).unwrap_or_else(|| DEFAULT_TOPIC_PREFIX.to_owned()),
            kafka.partitions.unwrap_or(8),
            kafka.replication_factor.unwrap_or(1),
        )?;
        Ok(ServeConfig {
            log,
            listen,
            data_dir: data_dir.or(parsed.data_dir).unwrap_or_else(|| PathBuf::from("./switchyard-data")),
            max_event_bytes,
            max_batch_bytes,
            max_event_attributes,
            max_batch_events,
            header_encoding,
            retention_age: Duration::from_secs(max_age_hours * 3600),
            retention_bytes: retention.max_bytes.unwrap_or(10 << 30),
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
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--otlp-endpoint` (empty disables export).
    pub otlp_endpoint: Option<String>,
    /// `--log`.
    pub log: Option<String>,
    /// `--kafka-topic-prefix`.
    pub kafka_topic_prefix: Option<String>,
}

fn small_number(var: &'static str, key: &str, value: u64) -> Result<u32, ConfigError> {
    u32::try_from(value)
        .map_err(|_| ConfigError::Env { var, message: format!("{value} is too large (it sets '{key}')") })
}

fn parse_log_backend(
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
    Ok(LogBackend::Kafka { bootstrap_servers, topic_prefix, partitions, replication_factor })
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
            data_dir: Some(self.data_dir.clone()),
            max_event_bytes: Some(self.max_event_bytes),
            max_batch_bytes: Some(self.max_batch_bytes),
            max_event_attributes: Some(self.max_event_attributes),
            max_batch_events: Some(self.max_batch_events),
            header_encoding: Some(self.header_encoding.name().to_owned()),
            shutdown_grace_secs: Some(self.shutdown_grace.as_secs()),
            retention: Some(RetentionFile {
                max_age_hours: Some(self.retention_age.as_secs() / 3600),
                max_bytes: Some(self.retention_bytes),
            }),
            log: Some(match &self.log {
                LogBackend::Embedded => "embedded".to_owned(),
                LogBackend::Kafka { bootstrap_servers, .. } => format!("kafka://{}", bootstrap_servers.join(",")),
            }),
            kafka: match &self.log {
                LogBackend::Embedded => None,
                LogBackend::Kafka { topic_prefix, partitions, replication_factor, .. } => Some(KafkaFile {
                    topic_prefix: Some(topic_prefix.clone()),
                    partitions: Some(*partitions),
                    replication_factor: Some(*replication_factor),
                }),
            },
            tracing: self
                .otlp_endpoint
                .as_ref()
                .map(|url| TracingFile { otlp_endpoint: Some(url.as_str().to_owned()) }),
        }
    }
}

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
}
