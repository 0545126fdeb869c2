//! Records written to topics of any Kafka cluster, for KafkaSink (Knative's `bootstrapServers`,
//! `topic`, and `net`'s TLS and SASL): one producer per cluster and security settings, made on
//! first use and kept, with the backend's own
//! producer settings (`acks=all`, idempotence), so a record counts as written only once every
//! in-sync replica has it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use switchyard_event::kafka::valid_topic_name;
use switchyard_log::records::{KafkaCluster, OutgoingRecord, RecordProducer};
use switchyard_log::LogError;

use crate::client::{self, blocking, Context, Producer};
use crate::config::KafkaConfig;

/// [`RecordProducer`] on librdkafka.
#[derive(Default)]
pub struct KafkaProducers {
    /// By cluster: servers and security settings (other credentials, another producer).
    producers: Mutex<HashMap<KafkaCluster, (Arc<Producer>, Context)>>,
}

impl KafkaProducers {
    fn config(cluster: &KafkaCluster, timeout: Duration) -> KafkaConfig {
        // A topic that does not exist fails its records after this long, not librdkafka's
        // 30 s: every delivery to a KafkaSink whose topic is missing would wait that long.
        let mut properties = vec![("topic.metadata.propagation.max.ms".to_owned(), "2000".to_owned())];
        properties.extend(cluster.properties.iter().cloned());
        KafkaConfig {
            client_id: "switchyard-kafkasink".to_owned(),
            append_timeout: timeout,
            properties,
            ..KafkaConfig::new(cluster.bootstrap_servers.as_str())
        }
    }

    /// The cluster's producer, and its context (which knows why it last failed to connect).
    fn producer(&self, cluster: &KafkaCluster) -> Result<(Arc<Producer>, Context), LogError> {
        let mut producers = self.producers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((producer, context)) = producers.get(cluster) {
            return Ok((Arc::clone(producer), context.clone()));
        }
        // The timeout of each call bounds its wait; the producer's own bound is the longest a
        // delivery may take (the trigger's timeouts are at most an hour).
        let config = Self::config(cluster, Duration::from_secs(300));
        let context = Context::new(&config);
        let producer: Arc<Producer> = Arc::new(client::create(&config.producer(), context.clone())?);
        producers.insert(cluster.clone(), (Arc::clone(&producer), context.clone()));
        Ok((producer, context))
    }
}

fn invalid(reason: String) -> LogError {
    LogError::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, reason))
}

/// `error` as the caller sees it; `explained` is its message, with a TLS or SASL failure that
/// caused it.
fn produce_error(topic: &str, bootstrap_servers: &str, explained: &str, error: &KafkaError) -> LogError {
    if client::is_unknown_topic(error) {
        return LogError::UnknownTopic(topic.to_owned());
    }
    match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize) => {
            invalid(format!("kafka at '{bootstrap_servers}' refused a record for topic '{topic}': {explained}"))
        }
        _ => LogError::Unavailable(format!(
            "kafka at '{bootstrap_servers}' did not take the record for topic '{topic}': {explained}"
        )),
    }
}

#[async_trait]
impl RecordProducer for KafkaProducers {
    async fn produce(
        &self,
        cluster: &KafkaCluster,
        topic: &str,
        records: Vec<OutgoingRecord>,
        timeout: Duration,
    ) -> Result<(), LogError> {
        if !valid_topic_name(topic) {
            return Err(invalid(format!("'{topic}' is not a valid kafka topic name")));
        }
        let bootstrap_servers = cluster.bootstrap_servers.as_str();
        let (producer, context) = self.producer(cluster)?;
        let deadline = tokio::time::Instant::now() + timeout;
        // Every record is enqueued before any is awaited: they go out together, in order.
        let mut deliveries = Vec::with_capacity(records.len());
        for record in &records {
            let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
            for (key, value) in &record.headers {
                headers = headers.insert(Header { key: key.as_str(), value: Some(value.as_slice()) });
            }
            loop {
                let mut future_record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers.clone());
                if let Some(value) = &record.value {
                    future_record = future_record.payload(&value[..]);
                }
                if let Some(key) = &record.key {
                    future_record = future_record.key(key.as_slice());
                }
                match producer.send_result(future_record) {
                    Ok(delivery) => break deliveries.push(delivery),
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                        if tokio::time::Instant::now() < deadline =>
                    {
                        tokio::time::sleep(Duration::from_millis(5)).await
                    }
                    Err((error, _)) => return Err(produce_error(topic, bootstrap_servers, &error.to_string(), &error)),
                }
            }
        }
        for delivery in deliveries {
            let outcome = tokio::time::timeout_at(deadline, delivery).await.map_err(|_| {
                let cause = context.explain(&KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut));
                LogError::Unavailable(format!(
                    "kafka at '{bootstrap_servers}' did not acknowledge the records for topic '{topic}' within {timeout:?}: {cause}"
                ))
            })?;
            match outcome {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => {
                    return Err(produce_error(topic, bootstrap_servers, &context.explain(&error), &error))
                }
                Err(_cancelled) => {
                    return Err(LogError::Unavailable(format!(
                        "the producer for kafka at '{bootstrap_servers}' stopped"
                    )))
                }
            }
        }
        Ok(())
    }

    async fn ensure_topic(
        &self,
        cluster: &KafkaCluster,
        topic: &str,
        partitions: Option<i32>,
        replication_factor: Option<i16>,
    ) -> Result<(), LogError> {
        if !valid_topic_name(topic) {
            return Err(invalid(format!("'{topic}' is not a valid kafka topic name")));
        }
        let mut config = Self::config(cluster, Duration::from_secs(10));
        let context = Context::new(&config);
        let control = client::reach(&config, &context).await?;
        match (partitions, replication_factor) {
            (Some(partitions), Some(replication_factor)) => {
                let partitions =
                    u32::try_from(partitions).map_err(|_| invalid(format!("'{partitions}' partitions")))?;
                config.replication_factor = u16::try_from(replication_factor)
                    .map_err(|_| invalid(format!("replication factor '{replication_factor}'")))?;
                client::ensure_topic(&config, &control, topic, partitions, &[]).await.map(|_| ())
            }
            // Without both, the topic is the user's to create, as in Knative: only its
            // presence is checked.
            _ => {
                let (probe, name, timeout) = (Arc::clone(&control), topic.to_owned(), config.request_timeout);
                let count = blocking(move || client::partition_count(&probe, &name, timeout))
                    .await?
                    .map_err(|e| client::unavailable(format!("cannot look up topic '{topic}'"), &e))?;
                count.map(|_| ()).ok_or_else(|| LogError::UnknownTopic(topic.to_owned()))
            }
        }
    }
}
