//! What every part of the backend shares: the librdkafka client context (logs into `tracing`),
//! blocking calls moved off the async runtime, topic metadata and creation, record headers,
//! and error mapping.

use std::fmt::Display;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{FromClientConfigAndContext, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientConfig;
use switchyard_log::LogError;

use crate::config::KafkaConfig;

/// How long a TLS or SASL failure librdkafka reported explains a call that failed after it.
const REFUSAL_MEMORY: Duration = Duration::from_secs(60);

/// The context of every client: librdkafka's logs and errors go to `tracing`, with the cluster
/// they concern.
#[derive(Clone)]
pub(crate) struct Context {
    bootstrap: Arc<str>,
    /// The last TLS or SASL failure librdkafka reported, and when: a call that then merely
    /// times out failed because of it, and says so.
    refused: Arc<Mutex<Option<(Instant, String)>>>,
}

impl Context {
    pub(crate) fn new(config: &KafkaConfig) -> Context {
        Context { bootstrap: config.bootstrap_servers.as_str().into(), refused: Arc::default() }
    }

    /// `error`, with the TLS or SASL failure that caused it if there was one lately.
    pub(crate) fn explain(&self, error: &KafkaError) -> String {
        let refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
        match refused.as_ref().filter(|(at, _)| at.elapsed() < REFUSAL_MEMORY) {
            Some((_, cause)) => format!("{cause} ({error})"),
            None => error.to_string(),
        }
    }

    fn remember_refusal(&self, error: &KafkaError, reason: &str) {
        let cause = match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed) => {
                format!("authentication failed: {reason}")
            }
            Some(RDKafkaErrorCode::SSL) => format!("tls failed: {reason}"),
            _ => return,
        };
        *self.refused.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), cause));
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
        self.remember_refusal(&error, reason);
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

/// A control client of the cluster, once it answered a metadata request: fails with
/// `LogError::Unavailable`, naming the address, when it does not within
/// [`KafkaConfig::connect_timeout`].
pub(crate) async fn reach(config: &KafkaConfig, context: &Context) -> Result<Arc<Control>, LogError> {
    let control: Arc<Control> = Arc::new(create(&config.control(None), context.clone())?);
    let (probe, timeout) = (Arc::clone(&control), config.connect_timeout);
    blocking(move || probe.fetch_metadata(None, timeout).inspect_err(|_| serve_reports(&probe)))
        .await?
        .map_err(|e| unreachable(config, context, &e))?;
    Ok(control)
}

/// Serves what librdkafka queued for a consumer not polled yet, its error reports among them:
/// afterwards its context knows why a call failed.
pub(crate) fn serve_reports<C: ConsumerContext>(consumer: &BaseConsumer<C>) {
    // Nothing is subscribed or assigned: this serves events and returns no record.
    let _ = consumer.poll(Duration::from_millis(100));
}

/// The cluster did not answer within the connect timeout (saying why, when a TLS or SASL
/// failure is the cause).
pub(crate) fn unreachable(config: &KafkaConfig, context: &Context, error: &KafkaError) -> LogError {
    LogError::Unavailable(format!(
        "kafka at '{}' did not answer within {:?}: {}",
        config.bootstrap_servers,
        config.connect_timeout,
        context.explain(error)
    ))
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

/// Creates `topic` with `partitions` partitions, the configured replication factor and
/// `settings` (topic configs such as `cleanup.policy`) unless it exists, and waits until every
/// partition is served. Returns its partition count: an existing topic keeps its own.
pub(crate) async fn ensure_topic(
    config: &KafkaConfig,
    control: &Arc<Control>,
    topic: &str,
    partitions: u32,
    settings: &[(&str, &str)],
) -> Result<u32, LogError> {
    let timeout = config.request_timeout;
    let lookup = {
        let (control, topic) = (Arc::clone(control), topic.to_owned());
        move || partition_count(&control, &topic, timeout)
    };
    if let Some(partitions) =
        blocking(lookup.clone()).await?.map_err(|e| unavailable(format!("cannot look up topic '{topic}'"), &e))?
    {
        return Ok(partitions);
    }
    let invalid = |reason: String| LogError::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, reason));
    let count = i32::try_from(partitions)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| invalid(format!("cannot create topic '{topic}' with {partitions} partitions")))?;
    let admin: AdminClient<Context> = create(&config.control(None), Context::new(config))?;
    let mut new_topic = NewTopic::new(topic, count, TopicReplication::Fixed(i32::from(config.replication_factor)));
    for (name, value) in settings {
        new_topic = new_topic.set(name, value);
    }
    let options = AdminOptions::new().operation_timeout(Some(timeout)).request_timeout(Some(timeout));
    let results = admin
        .create_topics([&new_topic], &options)
        .await
        .map_err(|e| unavailable(format!("cannot create topic '{topic}'"), &e))?;
    for result in results {
        match result {
            // Another node may have created it meanwhile.
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                return Err(LogError::Unavailable(format!("kafka refused to create topic '{topic}': {code}")))
            }
        }
    }
    let (control_ready, topic_ready) = (Arc::clone(control), topic.to_owned());
    let ready = blocking(move || {
        let ready = wait_until(timeout, |left| self::topic_ready(&control_ready, &topic_ready, left.min(timeout)))?;
        // Leaders are named a moment before they answer: served means every partition tells
        // its end.
        let partitions = partition_count(&control_ready, &topic_ready, timeout)?.unwrap_or(0);
        Ok::<bool, KafkaError>(
            ready && high_watermarks(&control_ready, &topic_ready, 0..partitions as i32, timeout).is_ok(),
        )
    })
    .await?
    .map_err(|e| unavailable(format!("cannot look up topic '{topic}'"), &e))?;
    if !ready {
        return Err(LogError::Unavailable(format!("topic '{topic}' was created but is not served within {timeout:?}")));
    }
    blocking(lookup)
        .await?
        .map_err(|e| unavailable(format!("cannot look up topic '{topic}'"), &e))?
        .ok_or_else(|| LogError::Unavailable(format!("topic '{topic}' vanished right after its creation")))
}

/// A record header as read: its name and value (`None`: a header without one).
pub(crate) type Header<'a> = (&'a str, Option<&'a [u8]>);

/// The headers of a record, in order, and whether some were left out because their name is
/// not UTF-8: rdkafka panics on those (it hands names over as `&str`), and any producer can
/// write them, so each header is read on its own behind `catch_unwind`.
pub(crate) fn headers<'a>(message: &'a BorrowedMessage<'_>) -> (Vec<Header<'a>>, bool) {
    let Some(headers) = message.headers() else { return (Vec::new(), false) };
    let mut read = Vec::with_capacity(headers.count());
    let mut skipped = false;
    for index in 0..headers.count() {
        match std::panic::catch_unwind(AssertUnwindSafe(|| headers.try_get(index))) {
            Ok(Some(header)) => read.push((header.key, header.value)),
            Ok(None) => {}
            Err(_) => skipped = true,
        }
    }
    (read, skipped)
}

/// Whether `error` should be logged: librdkafka retries by itself and reports the same error
/// on every poll, so a repeated one is said once a minute. `last` remembers what was said.
pub(crate) fn say_again(last: &mut Option<(String, Instant)>, error: &dyn Display) -> bool {
    let text = error.to_string();
    if last.as_ref().is_some_and(|(said, at)| *said == text && at.elapsed() < Duration::from_secs(60)) {
        return false;
    }
    *last = Some((text, Instant::now()));
    true
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
