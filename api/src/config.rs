//! Server configuration: defaults, overridden by a TOML file, overridden by flags. Validated
//! into [`ServeConfig`] before anything starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

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
    /// Embedded-log retention.
    pub retention: Option<RetentionFile>,
    /// Seconds in-flight deliveries get to finish at shutdown.
    pub shutdown_grace_secs: Option<u64>,
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
    /// Retention by age.
    pub retention_age: Duration,
    /// Retention by size.
    pub retention_bytes: u64,
    /// Shutdown grace.
    pub shutdown_grace: Duration,
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
    /// A value is out of range.
    #[error("invalid config key '{key}': {message}")]
    Value {
        /// The key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl ServeConfig {
    /// Defaults ← file ← flags.
    pub fn resolve(
        file: Option<&Path>,
        listen: Option<String>,
        data_dir: Option<PathBuf>,
    ) -> Result<ServeConfig, ConfigError> {
        let parsed = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
                toml::from_str::<ConfigFile>(&text)
                    .map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })?
            }
            None => ConfigFile::default(),
        };
        let listen_text = listen.or(parsed.listen).unwrap_or_else(|| "127.0.0.1:8080".to_owned());
        let listen = listen_text.parse().map_err(|_| ConfigError::Value {
            key: "listen",
            message: format!("'{listen_text}' is not an address like 127.0.0.1:8080"),
        })?;
        let max_event_bytes = parsed.max_event_bytes.unwrap_or(1 << 20);
        if max_event_bytes == 0 {
            return Err(ConfigError::Value { key: "max_event_bytes", message: "must be positive".into() });
        }
        let max_batch_bytes = parsed.max_batch_bytes.unwrap_or(10 << 20);
        if max_batch_bytes < max_event_bytes {
            return Err(ConfigError::Value {
                key: "max_batch_bytes",
                message: format!("{max_batch_bytes} is below max_event_bytes ({max_event_bytes})"),
            });
        }
        let retention = parsed.retention.unwrap_or_default();
        let max_age_hours = retention.max_age_hours.unwrap_or(7 * 24);
        if max_age_hours == 0 {
            return Err(ConfigError::Value { key: "retention.max_age_hours", message: "must be positive".into() });
        }
        Ok(ServeConfig {
            listen,
            data_dir: data_dir.or(parsed.data_dir).unwrap_or_else(|| PathBuf::from("./switchyard-data")),
            max_event_bytes,
            max_batch_bytes,
            retention_age: Duration::from_secs(max_age_hours * 3600),
            retention_bytes: retention.max_bytes.unwrap_or(10 << 30),
            shutdown_grace: Duration::from_secs(parsed.shutdown_grace_secs.unwrap_or(10)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_file_and_flags_layer() {
        let config = ServeConfig::resolve(None, None, None).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.max_event_bytes, 1 << 20);
        assert_eq!(config.retention_age, Duration::from_secs(7 * 24 * 3600));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\nmax_event_bytes = 2048\n[retention]\nmax_bytes = 5\n")
            .unwrap();
        let config = ServeConfig::resolve(Some(&path), Some("127.0.0.1:9001".into()), None).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:9001");
        assert_eq!(config.max_event_bytes, 2048);
        assert_eq!(config.retention_bytes, 5);
    }

    #[test]
    fn errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "colour = 1\n").unwrap();
        assert!(ServeConfig::resolve(Some(&path), None, None).unwrap_err().to_string().contains("colour"));
        std::fs::write(&path, "max_event_bytes = 0\n").unwrap();
        assert!(ServeConfig::resolve(Some(&path), None, None).unwrap_err().to_string().contains("max_event_bytes"));
        let err = ServeConfig::resolve(None, Some("nowhere".into()), None).unwrap_err().to_string();
        assert!(err.contains("listen") && err.contains("nowhere"), "{err}");
    }
}
