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
    let cpu_at_start = cpu_seconds()?;
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
    let records = sent.load(Ordering::Relaxed) as f64;
    let rate = records / started.elapsed().as_secs_f64();
    let cpu_us_per_record = (cpu_seconds()? - cpu_at_start) * 1e6 / records;
    log.delete_topic("raw").await?;
    println!("records_per_sec={rate:.0} cpu_us_per_record={cpu_us_per_record:.1}");
    Ok(())
}

/// The CPU this process has used (user and system), from `/proc/self/stat`, so that the bench
/// can set the producer's CPU per record beside Switchyard's.
fn cpu_seconds() -> std::io::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default().split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the state field; in
    // clock ticks of 1/100 s on Linux.
    Ok((ticks(11) + ticks(12)) / 100.0)
}
