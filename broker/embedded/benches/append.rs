//! Durable append throughput: ~1 KiB events, one `append` call per event, with 1 and with 64
//! concurrent appenders. Every append returns only after fsync, so the 64-appender case
//! measures group commit. Prints the average batch size (appends per fsync) at the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchyard_event::{AttrValue, Data, DataForm, Event};
use switchyard_log::EventLog;
use switchyard_log_embedded::{EmbeddedConfig, EmbeddedLog};

const TOPIC: &str = "bench.append";

fn event(i: usize) -> Event {
    let string = |s: &str| AttrValue::String(s.to_owned());
    let attributes = vec![
        ("specversion".to_owned(), string("1.0")),
        ("id".to_owned(), string(&format!("event-{i}"))),
        ("source".to_owned(), string("/bench/source")),
        ("type".to_owned(), string("dev.switchyard.bench")),
        ("datacontenttype".to_owned(), string("application/json")),
    ];
    let body = format!("{{\"payload\":\"{}\"}}", "x".repeat(1000));
    Event::new(attributes, Some(Data { form: DataForm::Json, bytes: body.into() })).expect("valid event")
}

/// A data directory on the same disk as the build (not a tmpfs), so fsync costs what it costs.
fn bench_dir() -> tempfile::TempDir {
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-data");
    std::fs::create_dir_all(&base).expect("bench dir");
    tempfile::tempdir_in(base).expect("tempdir")
}

/// Runs `iters` appends spread over `appenders` tasks; returns the elapsed time.
async fn run(log: &Arc<EmbeddedLog>, events: &Arc<Vec<Event>>, appenders: usize, iters: u64) -> Duration {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for a in 0..appenders {
        let (log, events) = (Arc::clone(log), Arc::clone(events));
        let n = iters / appenders as u64 + u64::from((a as u64) < iters % appenders as u64);
        tasks.spawn(async move {
            for i in 0..n as usize {
                log.append(TOPIC, std::slice::from_ref(&events[(a + i) % events.len()])).await.expect("append");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("appender task");
    }
    start.elapsed()
}

fn append(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let dir = bench_dir();
    let log = runtime.block_on(async {
        let log = EmbeddedLog::open(EmbeddedConfig::new(dir.path())).await.expect("open");
        log.create_topic(TOPIC).await.expect("topic");
        log
    });
    let events = Arc::new((0..256).map(event).collect::<Vec<_>>());
    let mut group = c.benchmark_group("durable_append_1KiB");
    group.throughput(Throughput::Elements(1));
    for appenders in [1usize, 64] {
        let before = log.stats();
        group.bench_function(format!("{appenders}_appenders"), |b| {
            b.iter_custom(|iters| runtime.block_on(run(&log, &events, appenders, iters)));
        });
        let after = log.stats();
        let appends = after.appends - before.appends;
        let fsyncs = (after.fsyncs - before.fsyncs).max(1);
        println!(
            "{appenders} appenders: {appends} appends, {fsyncs} fsyncs, {:.1} appends per fsync",
            appends as f64 / fsyncs as f64
        );
    }
    group.finish();
    runtime.block_on(log.close());
}

criterion_group!(benches, append);
criterion_main!(benches);
