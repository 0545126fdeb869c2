//! Records of any Kafka cluster, for KafkaSource (Knative's `bootstrapServers`, `topics`,
//! `consumerGroup`, `initialOffset`): consumer-group members on the consumer core
//! (`consumer.rs`). What is theirs: records handed over as they are, and problems (a topic
//! missing, the cluster unreachable) that are reports for the caller, not the end: the consumer
//! keeps going, and records flow again once the cause is gone.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use switchyard_event::kafka::valid_topic_name;
use switchyard_log::records::{Record, RecordConnector, RecordConsumer, RecordConsumerConfig};
use switchyard_log::LogError;
use tokio::sync::oneshot;

use crate::client::{self, blocking, Context};
use crate::config::KafkaConfig;
use crate::consumer::{self, Handle, Kind, Member, Shared};

/// A problem that lasts is reported again after this long: a caller that calls `next_batch`
/// again at once after an error waits this long for the next answer instead of spinning.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// How often the thread looks the subscribed topics up while a problem lasts (to see it end)…
const CHECK_WHILE_FAILING: Duration = Duration::from_secs(1);
/// …and while none does: librdkafka reports a missing topic only once, and an unreachable
/// cluster only through logs, so the thread looks for itself.
const CHECK_WHILE_HEALTHY: Duration = Duration::from_secs(10);
/// The bound on one look-up. The thread does not poll meanwhile, which matters only while the
/// cluster does not answer (and then there are no rebalances to serve).
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// What a buffered record costs beyond its key, value and headers.
const RECORD_OVERHEAD: usize = 256;
/// The longest `close` waits for the final commit and the group's leave.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// [`RecordConnector`] on librdkafka: each consumer is a member of its consumer group with a
/// thread of its own, which serves rebalances whenever they happen, even while the caller is
/// slow. Buffered records of a revoked partition are dropped (the next owner reads them), and
/// later commits for it are ignored.
///
/// `close` while Kafka is unreachable takes about 12 s (the commit and the leave each wait
/// about 6 s for the group coordinator) and then fails; a caller that cannot wait can put a
/// timeout on it: dropping the future lets the thread finish in the background.
///
/// TLS and SASL are the config's `properties` (`security.protocol`, `sasl.*`, `ssl.*`); a
/// connection that fails because of them says so (`authentication failed: …`).
#[derive(Debug, Clone, Copy, Default)]
pub struct KafkaRecords;

fn invalid(reason: String) -> LogError {
    LogError::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, reason))
}

#[async_trait]
impl RecordConnector for KafkaRecords {
    async fn connect(&self, config: RecordConsumerConfig) -> Result<Box<dyn RecordConsumer>, LogError> {
        if config.group.is_empty() {
            return Err(invalid("a kafka source consumer needs a consumer group".to_owned()));
        }
        if config.topics.is_empty() {
            return Err(invalid(format!("consumer group '{}' is given no topic to read", config.group)));
        }
        if let Some(topic) = config.topics.iter().find(|topic| !valid_topic_name(topic)) {
            return Err(invalid(format!("'{topic}' is not a valid kafka topic name")));
        }
        let kafka = KafkaConfig {
            bootstrap_servers: config.bootstrap_servers.clone(),
            client_id: config.client_id.clone(),
            connect_timeout: config.connect_timeout,
            properties: config.properties.clone(),
            ..KafkaConfig::new(config.bootstrap_servers.as_str())
        };
        let shared = Shared::new(config.topics.clone(), true, format!("group '{}'", config.group));
        let context = Context::new(&kafka);
        let consumer: BaseConsumer<Member<Records>> = client::create(
            &kafka.record_consumer(&config.group, config.initial_offset),
            Member::new(context.clone(), &shared),
        )?;
        let (topics, bootstrap, timeout, group) =
            (shared.topics.clone(), config.bootstrap_servers.clone(), config.connect_timeout, config.group.clone());
        let (consumer, problem) = blocking(move || {
            consumer
                .fetch_metadata(None, timeout)
                .inspect_err(|_| client::serve_reports(&consumer))
                .map_err(|e| client::unreachable(&kafka, &context, &e))?;
            // What `next_batch` reports from the start, until the thread's first look-up.
            let problem = first_problem(&consumer, &topics, &bootstrap, timeout);
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            consumer
                .subscribe(&names)
                .map_err(|e| invalid(format!("cannot subscribe group '{group}' to topics {topics:?}: {e}")))?;
            Ok::<_, LogError>((consumer, problem))
        })
        .await??;
        let records = Records {
            group: config.group.clone(),
            bootstrap: config.bootstrap_servers,
            fatal: None,
            last_check: Instant::now(),
        };
        records.set_problem(&shared, problem);
        let (finish, finished) = oneshot::channel();
        let handle = consumer::spawn(consumer, records, "kafka-records", move |committed| {
            let _ = finish.send(committed);
        })?;
        Ok(Box::new(KafkaRecordConsumer { handle, group: config.group, reported: None, finished }))
    }
}

/// A member of a consumer group reading records.
struct KafkaRecordConsumer {
    handle: Handle<Records>,
    group: String,
    /// The last problem `next_batch` reported (its sequence number) and when.
    reported: Option<(u64, Instant)>,
    /// The thread's outcome: whether its final commit succeeded.
    finished: oneshot::Receiver<Result<(), String>>,
}

#[async_trait]
impl RecordConsumer for KafkaRecordConsumer {
    /// Records already read are returned before any error. A problem that lasts is reported
    /// again after a second, not sooner, so a caller that retries at once in a loop is paced (a
    /// change of problem is reported at once).
    async fn next_batch(&mut self, max: usize) -> Result<Vec<Record>, LogError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let reported = &mut self.reported;
        self.handle
            .next(|state| {
                let mut batch = Vec::new();
                while batch.len() < max {
                    let Some(buffered) = state.pop() else { break };
                    batch.push(buffered.item);
                }
                if !batch.is_empty() {
                    return ControlFlow::Break(Ok(batch));
                }
                let problems = &state.own;
                match &problems.problem {
                    Some(problem) => match *reported {
                        Some((seq, at)) if seq == problems.seq && at.elapsed() < REPORT_INTERVAL => {
                            ControlFlow::Continue(Some(at + REPORT_INTERVAL))
                        }
                        _ => {
                            *reported = Some((problems.seq, Instant::now()));
                            ControlFlow::Break(Err(problem.error()))
                        }
                    },
                    None if state.closed => ControlFlow::Break(Err(LogError::Closed)),
                    None => ControlFlow::Continue(None),
                }
            })
            .await
    }

    fn commit(&mut self, topic: &str, partition: i32, next_offset: i64) -> Result<(), LogError> {
        if next_offset < 0 {
            return Err(invalid(format!(
                "offset {next_offset} of partition {partition} of topic '{topic}' is negative"
            )));
        }
        let owned =
            self.handle.shared().partition(topic, partition).is_some_and(|key| self.handle.commit(key, next_offset));
        if !owned {
            tracing::debug!(group = %self.group, topic, partition, next_offset, "commit for a partition not owned; ignored");
        }
        Ok(())
    }

    fn assignment(&self) -> Vec<(String, i32)> {
        let shared = self.handle.shared();
        // Topics are sorted, so the order of their indexes is the order of their names.
        shared.lock().assigned.iter().map(|(topic, partition)| (shared.topics[*topic].clone(), *partition)).collect()
    }

    async fn close(self: Box<Self>) -> Result<(), LogError> {
        let KafkaRecordConsumer { handle, group, finished, .. } = *self;
        // The thread stores the last commits, commits them, leaves the group and ends. With
        // Kafka gone, librdkafka's commit or leave can block for long: the caller (a source
        // being stopped) does not wait past CLOSE_WAIT, and the thread finishes on its own.
        drop(handle);
        match tokio::time::timeout(CLOSE_WAIT, finished).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(reason))) => Err(LogError::Unavailable(reason)),
            Ok(Err(_)) => {
                Err(LogError::Unavailable(format!("the consumer of group '{group}' ended without its final commit")))
            }
            Err(_) => Err(LogError::Unavailable(format!(
                "the consumer of group '{group}' did not close within {CLOSE_WAIT:?}; it finishes in the background"
            ))),
        }
    }
}

/// The sources' kind of consumer: plain records, and the problems that keep them from
/// flowing.
struct Records {
    group: String,
    bootstrap: String,
    /// Why the consumer cannot go on, once librdkafka said so.
    fatal: Option<String>,
    last_check: Instant,
}

/// What a record consumer and its thread share beyond the core.
#[derive(Default)]
struct Problems {
    /// What keeps records from flowing now, if anything.
    problem: Option<Problem>,
    /// Counts the changes of `problem`.
    seq: u64,
    /// librdkafka reported something that may be a problem: look the topics up soon.
    check_soon: bool,
}

/// What keeps records from flowing.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Problem {
    /// A subscribed topic does not exist.
    UnknownTopic(String),
    /// The cluster does not answer, or the consumer failed.
    Unavailable(String),
}

impl Problem {
    fn error(&self) -> LogError {
        match self {
            Problem::UnknownTopic(topic) => LogError::UnknownTopic(topic.clone()),
            Problem::Unavailable(reason) => LogError::Unavailable(reason.clone()),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error().fmt(f)
    }
}

impl Records {
    /// Replaces the current problem; a change is reported to the caller at once.
    fn set_problem(&self, shared: &Shared<Records>, problem: Option<Problem>) {
        {
            let mut state = shared.lock();
            let problems = &mut state.own;
            if problems.problem == problem {
                return;
            }
            match &problem {
                Some(problem) => tracing::warn!(group = %self.group, %problem, "kafka source consumer cannot read"),
                None => tracing::info!(group = %self.group, "kafka source consumer reads again"),
            }
            problems.problem = problem;
            problems.seq += 1;
        }
        shared.wake();
    }

    /// Looks the subscribed topics up and sets the problem accordingly.
    fn check(&self, consumer: &BaseConsumer<Member<Records>>, shared: &Shared<Records>) {
        // librdkafka itself looks for subscribed topics that are missing (about every second)
        // and joins them once they exist: this only tells the caller.
        let mut problem = first_problem(consumer, &shared.topics, &self.bootstrap, CHECK_TIMEOUT);
        if let Some(reason) = &self.fatal {
            problem = Some(Problem::Unavailable(reason.clone()));
        }
        self.set_problem(shared, problem);
    }
}

impl Kind for Records {
    type Item = Record;
    type State = Problems;

    fn read(&mut self, _shared: &Shared<Records>, message: &BorrowedMessage<'_>) -> (Record, usize) {
        let (headers, skipped) = client::headers(message);
        if skipped {
            tracing::debug!(
                group = %self.group,
                topic = message.topic(),
                partition = message.partition(),
                offset = message.offset(),
                "left out a header whose name is not utf-8"
            );
        }
        let headers: Vec<(String, Option<Vec<u8>>)> =
            headers.into_iter().map(|(name, value)| (name.to_owned(), value.map(<[u8]>::to_vec))).collect();
        let bytes = RECORD_OVERHEAD
            + message.payload_len()
            + message.key().map_or(0, <[u8]>::len)
            + headers.iter().map(|(name, value)| name.len() + value.as_ref().map_or(0, Vec::len)).sum::<usize>();
        let record = Record {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis().filter(|ms| *ms >= 0),
            key: message.key().map(<[u8]>::to_vec),
            headers,
            value: message.payload().map(Bytes::copy_from_slice),
        };
        (record, bytes)
    }

    /// Looks the topics up: every second while a problem lasts, every ten seconds otherwise, and
    /// soon after librdkafka reported something.
    fn service(&mut self, consumer: &BaseConsumer<Member<Records>>, shared: &Shared<Records>) {
        let (failing, soon) = {
            let state = shared.lock();
            (state.own.problem.is_some(), state.own.check_soon)
        };
        let every = if failing { CHECK_WHILE_FAILING } else { CHECK_WHILE_HEALTHY };
        let since = self.last_check.elapsed();
        if since >= every || (soon && since >= CHECK_WHILE_FAILING) {
            shared.lock().own.check_soon = false;
            self.check(consumer, shared);
            self.last_check = Instant::now();
        }
    }

    fn failed(
        &mut self,
        consumer: &BaseConsumer<Member<Records>>,
        shared: &Shared<Records>,
        error: &KafkaError,
    ) -> bool {
        if let KafkaError::MessageConsumptionFatal(_) = error {
            tracing::error!(group = %self.group, %error, "kafka source consumer failed for good");
            self.fatal = Some(format!("the kafka consumer of group '{}' failed: {error}", self.group));
            self.check(consumer, shared);
            return false;
        }
        // A missing topic is reported here (once); the look-up tells whether it still is.
        shared.lock().own.check_soon = true;
        !matches!(error.rdkafka_error_code(), Some(RDKafkaErrorCode::UnknownTopicOrPartition))
    }

    fn reported(shared: &Shared<Records>, error: &KafkaError) {
        if client::is_transient(error) || client::is_unknown_topic(error) {
            shared.lock().own.check_soon = true;
        }
    }
}

/// What keeps records of `topics` from flowing, as far as the cluster's metadata tells: the
/// cluster not answering comes first, then the first topic missing.
fn first_problem(
    consumer: &BaseConsumer<Member<Records>>,
    topics: &[String],
    bootstrap: &str,
    timeout: Duration,
) -> Option<Problem> {
    let mut problem = None;
    for topic in topics {
        match client::partition_count(consumer, topic, timeout) {
            Ok(Some(_)) => {}
            Ok(None) => {
                problem.get_or_insert_with(|| Problem::UnknownTopic(topic.clone()));
            }
            Err(error) => {
                return Some(Problem::Unavailable(format!(
                    "cannot look up topic '{topic}' at kafka '{bootstrap}': {error}"
                )))
            }
        }
    }
    problem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bad_settings_are_refused_before_connecting() {
        let cases = [
            (RecordConsumerConfig::new("127.0.0.1:1", "", vec!["t".to_owned()]), "needs a consumer group"),
            (RecordConsumerConfig::new("127.0.0.1:1", "g", Vec::new()), "group 'g' is given no topic"),
            (RecordConsumerConfig::new("127.0.0.1:1", "g", vec!["^t.*".to_owned()]), "'^t.*' is not a valid"),
        ];
        for (config, expected) in cases {
            let Err(error) = KafkaRecords.connect(config).await else { panic!("connected with bad settings") };
            assert!(matches!(&error, LogError::Io(e) if e.kind() == std::io::ErrorKind::InvalidInput), "{error:?}");
            assert!(error.to_string().contains(expected), "{error}");
        }
    }
}
