//! The ceiling for Kafka ingest: records/s of a raw rdkafka producer with the backend's own
//! producer settings (`acks=all`, idempotence, linger), `--concurrency` senders each awaiting
//! its record before sending the next, as ingest's HTTP connections each await their 202.
//!
//! `cargo run --release -p switchyard-log-kafka --example raw_producer -- BOOTSTRAP [SECONDS] [BYTES] [CONCURRENCY]`
//!
//! Prints `records_per_sec=N`. The benchmark harness (`scripts/bench.sh --kafka …`) runs it
//! next to Switchyard's Kafka ingest to report the ratio.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};
use switchyard_log::EventLog;
use switchyard_log_kafka::{KafkaConfig, KafkaLog};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bootstrap = args.first().ok_or("usage: raw_producer BOOTSTRAP [SECONDS] [BYTES] [CONCURRENCY]")?;
    let seconds: u64 = args.get(1).map_or(Ok(10), |a| a.parse())?;
    let bytes: usize = args.get(2).map_or(Ok(1024), |a| a.parse())?;
    let concurrency: usize = args.get(3).map_or(Ok(64), |a| a.parse())?;

    let mut config = KafkaConfig::new(bootstrap.as_str());
    config.topic_prefix = format!("rawbench{:08x}.", fastrand::u32(..));
    let log = KafkaLog::connect(config.clone()).await?;
    log.create_topic("raw").await?;
    let topic = config.kafka_topic("raw");
    let producer: FutureProducer = config.producer().create()?;
    let payload = vec![b'x'; bytes];
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut senders = Vec::new();
    for _ in 0..concurrency {
        let (producer, payload, topic, sent) = (producer.clone(), payload.clone(), topic.clone(), sent.clone());
        senders.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic).payload(&payload);
                if producer.send(record, Duration::from_secs(10)).await.is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for sender in senders {
        sender.await?;
    }
    let rate = sent.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    log.delete_topic("raw").await?;
    println!("records_per_sec={rate:.0}");
    Ok(())
}
