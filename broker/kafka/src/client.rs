//! What every part of the backend shares: the librdkafka client context (logs into `tracing`),
//! blocking calls moved off the async runtime, topic metadata, and error mapping.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::{FromClientConfigAndContext, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientConfig;
use switchyard_log::LogError;

use crate::config::KafkaConfig;

/// The context of every client: librdkafka's logs and errors go to `tracing`, with the cluster
/// they concern.
#[derive(Clone)]
pub(crate) struct Context {
    bootstrap: Arc<str>,
}

impl Context {
    pub(crate) fn new(config: &KafkaConfig) -> Context {
        Context { bootstrap: config.bootstrap_servers.as_str().into() }
    }
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let kafka = &*self.bootstrap;
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", kafka, facility, "{message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", kafka, facility, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", kafka, facility, "{message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", kafka, facility, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Connection failures are reported here, again and again while a broker is down; the
        // calls that fail because of them say so to their callers.
        tracing::warn!(target: "librdkafka", kafka = &*self.bootstrap, %error, "{reason}");
    }
}

impl ConsumerContext for Context {}

/// A consumer that joins no group: metadata, watermarks, committed offsets of one group.
pub(crate) type Control = BaseConsumer<Context>;
/// The producer.
pub(crate) type Producer = FutureProducer<Context>;

pub(crate) fn create<T: FromClientConfigAndContext<C>, C: ClientContext>(
    config: &ClientConfig,
    context: C,
) -> Result<T, LogError> {
    T::from_config_and_context(config, context)
        .map_err(|e| LogError::Unavailable(format!("cannot create a kafka client: {e}")))
}

/// Runs a blocking librdkafka call on the blocking pool, so that waiting for the cluster never
/// stalls the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, LogError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| LogError::Unavailable(format!("kafka call failed: {e}")))
}

/// The partition count of `kafka_topic`, or `None` when the cluster says it does not exist.
pub(crate) fn partition_count<C: ConsumerContext>(
    control: &BaseConsumer<C>,
    kafka_topic: &str,
    timeout: Duration,
) -> Result<Option<u32>, KafkaError> {
    let metadata = control.fetch_metadata(Some(kafka_topic), timeout)?;
    let Some(topic) = metadata.topics().iter().find(|t| t.name() == kafka_topic) else {
        return Ok(None);
    };
    match topic.error() {
        None if topic.partitions().is_empty() => Ok(None),
        None => Ok(Some(topic.partitions().len() as u32)),
        Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => Ok(None),
        Some(error) => Err(KafkaError::MetadataFetch(error.into())),
    }
}

/// Whether every partition of `kafka_topic` has a leader: a topic just created can take a
/// moment to be served everywhere.
pub(crate) fn topic_ready<C: ConsumerContext>(
    control: &BaseConsumer<C>,
    kafka_topic: &str,
    timeout: Duration,
) -> Result<bool, KafkaError> {
    let metadata = control.fetch_metadata(Some(kafka_topic), timeout)?;
    Ok(metadata.topics().iter().find(|t| t.name() == kafka_topic).is_some_and(|topic| {
        topic.error().is_none()
            && !topic.partitions().is_empty()
            && topic.partitions().iter().all(|p| p.error().is_none() && p.leader() >= 0)
    }))
}

/// Whether a Kafka error passes by itself: a leader being elected or moving, a broker
/// reconnecting.
pub(crate) fn is_transient(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::FencedLeaderEpoch
                | RDKafkaErrorCode::UnknownLeaderEpoch
                | RDKafkaErrorCode::OffsetNotAvailable
                | RDKafkaErrorCode::BrokerNotAvailable
                | RDKafkaErrorCode::NetworkException
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
        )
    )
}

/// The high watermark (the offset the next record gets) of each of `partitions`, retrying
/// transient errors until `timeout`.
pub(crate) fn high_watermarks<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    kafka_topic: &str,
    partitions: impl IntoIterator<Item = i32>,
    timeout: Duration,
) -> Result<Vec<u64>, KafkaError> {
    let deadline = Instant::now() + timeout;
    let mut ends = Vec::new();
    for partition in partitions {
        loop {
            let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
            match consumer.fetch_watermarks(kafka_topic, partition, left) {
                Ok((_, high)) => break ends.push(high.max(0) as u64),
                Err(error) if is_transient(&error) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(error) => return Err(error),
            }
        }
    }
    Ok(ends)
}

/// Polls `check` until it says yes or `timeout` passes (then the last answer is returned).
pub(crate) fn wait_until(
    timeout: Duration,
    mut check: impl FnMut(Duration) -> Result<bool, KafkaError>,
) -> Result<bool, KafkaError> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
        if check(left)? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A Kafka failure as the log reports it: the cluster could not do it now (the caller may
/// retry), with what was being done.
pub(crate) fn unavailable(what: impl std::fmt::Display, error: &KafkaError) -> LogError {
    LogError::Unavailable(format!("{what}: {error}"))
}

/// Whether an error means the topic or partition does not exist.
pub(crate) fn is_unknown_topic(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownPartition
                | RDKafkaErrorCode::UnknownTopicId
        )
    )
}

/// A `u64` offset as Kafka's `i64`, refusing the ones Kafka cannot hold.
pub(crate) fn kafka_offset(offset: u64) -> Result<i64, LogError> {
    i64::try_from(offset).map_err(|_| {
        LogError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("offset {offset} is beyond what kafka can hold"),
        ))
    })
}

/// A `u32` partition as Kafka's `i32`.
pub(crate) fn kafka_partition(partition: u32) -> Result<i32, LogError> {
    i32::try_from(partition).map_err(|_| {
        LogError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("partition {partition} is beyond what kafka can hold"),
        ))
    })
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
