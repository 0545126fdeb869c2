//! The scenarios: each starts the release binary on fresh data directories, measures, and
//! returns its rows of the table. Every number is the median of `runs` runs.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

use crate::load::{closed_loop, open_loop, Length, MakeRequest, MakeTimedRequest};
use crate::noop::NoopProcess;
use crate::report::{median, quantile, thousands, Met, Row};
use crate::server::{cpu_time, dir_bytes, rss_mb, Backend, Switchyard};
use crate::subscriber::LatencySubscriber;

/// Connections of the batch ingest client.
const BATCH_CONNECTIONS: usize = 16;
/// Concurrency of the delivery comparison: the load tool's connections, and the trigger's
/// `maxInFlight` (Switchyard's default).
const DELIVERY_CONNECTIONS: usize = 100;
/// The offered rate of the latency scenario.
const LATENCY_RATE: f64 = 2000.0;
/// Data of the "small" events (batch ingest, restart).
const SMALL_DATA_BYTES: usize = 100;

/// What every scenario needs.
pub(crate) struct Ctx {
    /// The release `switchyard` binary.
    pub(crate) switchyard: PathBuf,
    /// This binary (for `noop-server`).
    pub(crate) bench_exe: PathBuf,
    /// Where data directories are made (and removed).
    pub(crate) data_root: PathBuf,
    pub(crate) runs: usize,
    pub(crate) quick: bool,
    /// Connections of the ingest comparison.
    pub(crate) connections: usize,
    /// A Kafka target for the Kafka latency row (issue 5).
    pub(crate) kafka: Option<String>,
    /// A peer measured side by side with Switchyard on Kafka (`--peer`; issue 18).
    pub(crate) peer: Option<crate::peer::Peer>,
}

impl Ctx {
    /// A fresh directory, removed when dropped.
    pub(crate) fn scratch(&self) -> anyhow::Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix("switchyard-bench-")
            .tempdir_in(&self.data_root)
            .with_context(|| format!("cannot make a directory in '{}'", self.data_root.display()))
    }

    /// A server on the embedded log in `dir`, with broker `default/b`.
    pub(crate) async fn server(&self, dir: &tempfile::TempDir) -> anyhow::Result<Switchyard> {
        self.server_on(&Backend::Embedded, dir).await
    }

    async fn server_on(&self, backend: &Backend, dir: &tempfile::TempDir) -> anyhow::Result<Switchyard> {
        let server = Switchyard::start(&self.switchyard, backend, &dir.path().join("data")).await?;
        server.broker("b").await?;
        Ok(server)
    }

    /// Warm-up and measured window of a timed closed-loop run.
    fn window(&self) -> Length {
        if self.quick {
            Length::Timed { warmup: Duration::from_millis(500), measure: Duration::from_secs(2) }
        } else {
            Length::Timed { warmup: Duration::from_secs(1), measure: Duration::from_secs(5) }
        }
    }

    pub(crate) fn size(&self, full: u64, quick: u64) -> u64 {
        if self.quick {
            quick
        } else {
            full
        }
    }
}

/// Of runs measured as (ours, baseline), the one with the median ratio (the lower middle one
/// for an even count), so the table's ratio and the rates beside it come from the same run.
fn median_run(runs: &[Compared]) -> Compared {
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| a.ratio().total_cmp(&b.ratio()));
    sorted[(sorted.len() - 1) / 2]
}

/// One run of a comparison: both rates, and the CPU each side spent per event (µs), so that a
/// ratio can be explained and not only shown.
#[derive(Debug, Clone, Copy)]
struct Compared {
    ours: f64,
    theirs: f64,
    our_cpu_us: f64,
    their_cpu_us: f64,
}

impl Compared {
    fn ratio(&self) -> f64 {
        self.ours / self.theirs
    }

    /// `CPU 27 vs 3 µs/request`.
    fn cpu(&self, unit: &str) -> String {
        format!("CPU {:.0} vs {:.0} µs/{unit}", self.our_cpu_us, self.their_cpu_us)
    }
}

/// CPU microseconds per event of a process that used `cores` (CPU seconds per second) at `rate`
/// events per second.
pub(crate) fn cpu_us(cores: f64, rate: f64) -> f64 {
    cores / rate * 1e6
}

/// Runs `work`, which returns a rate in events/s, and measures the CPU time `cpu` reads (a
/// process's: `server.cpu()`, `noop.cpu()`, this one's) meanwhile: the rate and the CPU µs per
/// event.
pub(crate) async fn rate_and_cpu(
    cpu: impl Fn() -> anyhow::Result<Duration>,
    work: impl std::future::Future<Output = anyhow::Result<f64>>,
) -> anyhow::Result<(f64, f64)> {
    let (before, wall) = (cpu()?, Instant::now());
    let rate = work.await?;
    let cores = (cpu()? - before).as_secs_f64() / wall.elapsed().as_secs_f64();
    Ok((rate, cpu_us(cores, rate)))
}

pub(crate) fn progress(scenario: &str, message: impl AsRef<str>) {
    eprintln!("[{scenario}] {}", message.as_ref());
}

/// A binary-mode event of type `t` with `data` as its body, `ce-id` = the sequence number.
fn binary_event(addr: std::net::SocketAddr, path: &'static str, data: Bytes) -> MakeRequest {
    let host = addr.to_string();
    Arc::new(move |seq| binary_request(path, &host, seq, None, &data))
}

/// The binary-mode ingest request of event `seq` (type `t`, `data` as its body) to `path`, with
/// its intended send time as extension `benchsent` when it has one.
pub(crate) fn binary_request(
    path: &str,
    host: &str,
    seq: u64,
    sent: Option<u64>,
    data: &Bytes,
) -> Request<Full<Bytes>> {
    let mut request = Request::post(path)
        .header(HOST, host)
        .header("ce-specversion", "1.0")
        .header("ce-id", seq)
        .header("ce-type", "t")
        .header("ce-source", "/bench");
    if let Some(sent) = sent {
        request = request.header("ce-benchsent", sent);
    }
    request.header(CONTENT_TYPE, "application/octet-stream").body(Full::new(data.clone())).expect("a valid request")
}

/// The same batch body on every request.
fn batch_request(addr: std::net::SocketAddr, path: &'static str, body: Bytes) -> MakeRequest {
    let host = addr.to_string();
    Arc::new(move |_| {
        Request::post(path)
            .header(HOST, &host)
            .header(CONTENT_TYPE, "application/cloudevents-batch+json")
            .body(Full::new(body.clone()))
            .expect("a valid request")
    })
}

/// A batch of `count` events: type from `ty(i)`, `data_bytes` of text data (none when 0).
fn batch_body(count: usize, ty: impl Fn(usize) -> String, data_bytes: usize) -> Bytes {
    let data = "x".repeat(data_bytes);
    let events: Vec<Value> = (0..count)
        .map(|i| {
            let mut event = json!({"specversion": "1.0", "id": format!("e{i}"), "type": ty(i), "source": "/bench"});
            if data_bytes > 0 {
                event["datacontenttype"] = json!("text/plain");
                event["data"] = json!(data);
            }
            event
        })
        .collect();
    Bytes::from(serde_json::to_vec(&events).expect("json"))
}

/// Ingests `events` events in batches of 100 (`events` a multiple of 100).
async fn ingest_batches(server: &Switchyard, events: u64, connections: usize, body: Bytes) -> anyhow::Result<Duration> {
    let make = batch_request(server.addr, "/default/b", body);
    let report = closed_loop(server.addr, connections, StatusCode::ACCEPTED, Length::Total(events / 100), make).await?;
    Ok(report.elapsed)
}

/// Waits until `noop` has answered at least `count` requests; returns when that was seen.
pub(crate) async fn wait_answered(noop: &NoopProcess, count: u64, timeout: Duration) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        let answered = noop.answered().await?;
        if answered >= count {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("the subscriber answered {answered} of {count} requests in {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Declares `count` triggers on broker `b`, 16 at a time: exact `type` filters (`type.{i}`),
/// one in a hundred a CESQL filter instead, all delivering to `subscriber`.
pub(crate) async fn declare_triggers(server: &Switchyard, count: usize, subscriber: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let mut pending = tokio::task::JoinSet::new();
    for i in 0..count {
        let mut spec = json!({"broker": "b", "subscriber": {"uri": subscriber}});
        if i % 100 == 99 {
            spec["filters"] = json!([{"cesql": format!("type = 'type.{i}' AND EXISTS source")}]);
        } else {
            spec["filter"] = json!({"attributes": {"type": format!("type.{i}")}});
        }
        let request =
            client.put(format!("{}/v1/namespaces/default/triggers/t{i}", server.url)).json(&json!({ "spec": spec }));
        pending.spawn(async move {
            let response = request.send().await?;
            let status = response.status();
            if !status.is_success() {
                bail!("declaring trigger t{i} answered {status}: {}", response.text().await.unwrap_or_default());
            }
            Ok(())
        });
        if pending.len() >= 16 {
            pending.join_next().await.expect("a task")??;
        }
    }
    while let Some(result) = pending.join_next().await {
        result??;
    }
    Ok(())
}

/// The embedded log's group commit, from `/metrics` (empty when the server has no such series).
pub(crate) async fn log_counters(server: &Switchyard, elapsed: Duration) -> String {
    let fsyncs = server.metric("switchyard_log_fsyncs_total").await;
    let batch_sum = server.metric("switchyard_log_fsync_batch_appends_sum").await;
    let batch_count = server.metric("switchyard_log_fsync_batch_appends_count").await;
    let append_sum = server.metric("switchyard_log_append_duration_seconds_sum").await;
    let append_count = server.metric("switchyard_log_append_duration_seconds_count").await;
    match (fsyncs, batch_sum, batch_count, append_sum, append_count) {
        (Some(fsyncs), Some(batch_sum), Some(batch_count), Some(append_sum), Some(append_count))
            if batch_count > 0.0 && append_count > 0.0 =>
        {
            format!(
                "; /metrics: {:.0} fsyncs/s, {:.1} appends per fsync, mean append (until durable) {:.2} ms",
                fsyncs / elapsed.as_secs_f64(),
                batch_sum / batch_count,
                append_sum / append_count * 1e3
            )
        }
        _ => String::new(),
    }
}

/// Samples a process's RSS until stopped; the peak in MB.
pub(crate) struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<Mutex<f64>>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    pub(crate) fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(Mutex::new(0.0_f64));
        let (flag, max) = (stop.clone(), peak.clone());
        let task = tokio::spawn(async move {
            while !flag.load(Ordering::Relaxed) {
                if let Ok(rss) = rss_mb(pid) {
                    let mut max = max.lock().expect("peak");
                    *max = max.max(rss);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        RssSampler { stop, peak, task }
    }

    pub(crate) async fn finish(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        let peak = *self.peak.lock().expect("peak");
        peak
    }
}

/// Ingest requests/s of 1 KiB binary events, durable, against a no-op axum handler answering
/// 202, with the same client and connection count.
pub(crate) async fn ingest(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let noop = NoopProcess::start(&ctx.bench_exe)?;
    let data = Bytes::from(vec![b'x'; 1024]);
    let mut runs = Vec::new();
    for run in 1..=ctx.runs {
        let dir = ctx.scratch()?;
        let server = ctx.server(&dir).await?;
        let against_noop = || {
            rate_and_cpu(|| noop.cpu(), async {
                let make = binary_event(noop.addr, "/default/b", data.clone());
                let report = closed_loop(noop.addr, ctx.connections, StatusCode::ACCEPTED, ctx.window(), make).await;
                Ok(report.context("against the no-op server")?.per_sec())
            })
        };
        // The baseline is measured before and after, so drift on a shared machine hits both sides.
        let (before, noop_cpu_before) = against_noop().await?;
        let (cpu, wall) = (server.cpu()?, Instant::now());
        let rate = closed_loop(
            server.addr,
            ctx.connections,
            StatusCode::ACCEPTED,
            ctx.window(),
            binary_event(server.addr, "/default/b", data.clone()),
        )
        .await
        .context("against switchyard")?
        .per_sec();
        let cores = (server.cpu()? - cpu).as_secs_f64() / wall.elapsed().as_secs_f64();
        let counters = log_counters(&server, wall.elapsed()).await;
        let (after, noop_cpu_after) = against_noop().await?;
        let baseline = (before + after) / 2.0;
        let noop_cpu = (noop_cpu_before + noop_cpu_after) / 2.0;
        progress(
            "ingest",
            format!(
                "run {run}/{}: switchyard {} req/s, no-op {} req/s, ratio {:.2}; switchyard used {cores:.2} cores, {:.0} µs CPU per request (the no-op {noop_cpu:.0} µs){}",
                ctx.runs,
                thousands(rate),
                thousands(baseline),
                rate / baseline,
                cpu_us(cores, rate),
                counters
            ),
        );
        runs.push(Compared { ours: rate, theirs: baseline, our_cpu_us: cpu_us(cores, rate), their_cpu_us: noop_cpu });
    }
    let median = median_run(&runs);
    let (ours, theirs, ratio) = (median.ours, median.theirs, median.ratio());
    Ok(vec![Row::new(
        10,
        format!(
            "ingest, 1 KiB binary events, durable, {} connections: Switchyard ÷ no-op axum handler (202)",
            ctx.connections
        ),
        format!("{ratio:.2} ({} vs {} req/s; {})", thousands(ours), thousands(theirs), median.cpu("request")),
        "≥ 0.6",
        Met::from(ratio >= 0.6),
    )])
}

/// The payload of the webhook scenario: a real GitHub `push` delivery (7.4 KB).
const PUSH_PAYLOAD: &[u8] = include_bytes!("../../sources/src/github/testdata/push.with-installation.json");
const WEBHOOK_SECRET: &str = "bench-secret";

/// GitHub `push` deliveries, signed with the source's secret, each with its own delivery id.
fn github_delivery(addr: std::net::SocketAddr, path: &'static str) -> MakeRequest {
    let host = addr.to_string();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, WEBHOOK_SECRET.as_bytes());
    let hex: String = ring::hmac::sign(&key, PUSH_PAYLOAD).as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let signature = format!("sha256={hex}");
    let body = Bytes::from_static(PUSH_PAYLOAD);
    Arc::new(move |seq| {
        Request::post(path)
            .header(HOST, &host)
            .header("x-github-event", "push")
            .header("x-github-delivery", format!("bench-{seq}"))
            .header("x-hub-signature-256", &signature)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()))
            .expect("a valid request")
    })
}

/// GitHub webhook deliveries/s (signature checked, mapped, deduplicated, durable on the broker)
/// next to binary-mode ingest of the same payload on the same server.
pub(crate) async fn webhook(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let mut runs = Vec::new();
    for run in 1..=ctx.runs {
        let dir = ctx.scratch()?;
        let server = ctx.server(&dir).await?;
        let sink = json!({"ref": {"kind": "Broker", "name": "b"}});
        let spec = json!({"ownerAndRepository": "o/r", "eventTypes": ["push"], "secretToken": {"value": WEBHOOK_SECRET}, "sink": sink});
        server.source("githubsources", "repo", spec).await?;
        let path = "/webhooks/github/default/repo";
        let (webhooks, webhook_cpu) = rate_and_cpu(|| server.cpu(), async {
            let make = github_delivery(server.addr, path);
            let report = closed_loop(server.addr, ctx.connections, StatusCode::ACCEPTED, ctx.window(), make).await;
            Ok(report.context("webhook deliveries")?.per_sec())
        })
        .await?;
        let (ingest, ingest_cpu) = rate_and_cpu(|| server.cpu(), async {
            let make = binary_event(server.addr, "/default/b", Bytes::from_static(PUSH_PAYLOAD));
            let report = closed_loop(server.addr, ctx.connections, StatusCode::ACCEPTED, ctx.window(), make).await;
            Ok(report.context("binary ingest")?.per_sec())
        })
        .await?;
        progress(
            "webhook",
            format!(
                "run {run}/{}: {} deliveries/s ({webhook_cpu:.0} µs CPU each), binary ingest {} req/s ({ingest_cpu:.0} µs), ratio {:.2}",
                ctx.runs,
                thousands(webhooks),
                thousands(ingest),
                webhooks / ingest
            ),
        );
        runs.push(Compared { ours: webhooks, theirs: ingest, our_cpu_us: webhook_cpu, their_cpu_us: ingest_cpu });
    }
    let median = median_run(&runs);
    let (ours, theirs, ratio) = (median.ours, median.theirs, median.ratio());
    Ok(vec![Row::new(
        25,
        format!(
            "GitHub webhook deliveries (7.4 KB push, signed, deduplicated, durable), {} connections: ÷ binary ingest of the same payload",
            ctx.connections
        ),
        format!("{ratio:.2} ({} vs {} req/s; {})", thousands(ours), thousands(theirs), median.cpu("request")),
        "≥ 0.7",
        Met::from(ratio >= 0.7),
    )])
}

/// Batch ingest events/s, 100 events per request.
pub(crate) async fn batch(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let small = batch_body(100, |_| "t".to_owned(), SMALL_DATA_BYTES);
    let large = batch_body(100, |_| "t".to_owned(), 1024);
    let (mut small_rates, mut large_rates) = (Vec::new(), Vec::new());
    for run in 1..=ctx.runs {
        let dir = ctx.scratch()?;
        let server = ctx.server(&dir).await?;
        let rate = |body: &Bytes| {
            let make = batch_request(server.addr, "/default/b", body.clone());
            rate_and_cpu(|| server.cpu(), async move {
                let report =
                    closed_loop(server.addr, BATCH_CONNECTIONS, StatusCode::ACCEPTED, ctx.window(), make).await;
                Ok(report?.per_sec() * 100.0)
            })
        };
        let small_rate = rate(&small).await?;
        let large_rate = rate(&large).await?;
        progress(
            "batch",
            format!(
                "run {run}/{}: {} events/s ({SMALL_DATA_BYTES} B data, {:.1} µs CPU per event), {} events/s (1 KiB data, {:.1} µs)",
                ctx.runs,
                thousands(small_rate.0),
                small_rate.1,
                thousands(large_rate.0),
                large_rate.1
            ),
        );
        small_rates.push(small_rate);
        large_rates.push(large_rate);
    }
    // The rate and CPU of the run with the median rate.
    let median_by_rate = |runs: &mut Vec<(f64, f64)>| {
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        runs[(runs.len() - 1) / 2]
    };
    let (small_rate, small_cpu) = median_by_rate(&mut small_rates);
    let (large_rate, large_cpu) = median_by_rate(&mut large_rates);
    Ok(vec![
        Row::new(
            20,
            format!(
                "batch ingest, 100 events/request, {SMALL_DATA_BYTES} B data, {BATCH_CONNECTIONS} connections, embedded log"
            ),
            format!("{} events/s; CPU {small_cpu:.1} µs/event", thousands(small_rate)),
            "≥ 500,000/s",
            Met::from(small_rate >= 500_000.0),
        ),
        Row::new(
            21,
            format!("batch ingest, 100 events/request, 1 KiB data, {BATCH_CONNECTIONS} connections (for reference)"),
            format!("{} events/s; CPU {large_cpu:.1} µs/event", thousands(large_rate)),
            "—",
            Met::NotApplicable,
        ),
    ])
}

/// End-to-end latency at a fixed offered rate, on each backend.
pub(crate) async fn latency(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let metric = |backend: &str| {
        format!(
            "end-to-end latency ingest → local subscriber, {} events/s of 1 KiB, {backend}: p50 / p99 / p99.9",
            thousands(LATENCY_RATE)
        )
    };
    let mut rows = Vec::new();
    let embedded = latency_on(ctx, &Backend::Embedded).await?;
    rows.push(Row::new(
        30,
        metric("embedded"),
        embedded.to_string(),
        "p50 ≤ 1 ms, p99 ≤ 2 ms, p99.9 ≤ 5 ms",
        Met::from(embedded.within(1.0, 2.0, 5.0)),
    ));
    const KAFKA_GOAL: &str = "p50 ≤ 3 ms, p99 ≤ 5 ms, p99.9 ≤ 10 ms";
    let kafka = match &ctx.kafka {
        None => Row::new(
            31,
            metric("Kafka"),
            "not measured: needs --kafka kafka://HOST:PORT",
            KAFKA_GOAL,
            Met::NotApplicable,
        ),
        Some(url) => match latency_on(ctx, &Backend::Kafka(url.clone())).await {
            Ok(kafka) => {
                Row::new(31, metric("Kafka"), kafka.to_string(), KAFKA_GOAL, Met::from(kafka.within(3.0, 5.0, 10.0)))
            }
            Err(error) => Row::new(31, metric("Kafka"), format!("error: {error:#}"), KAFKA_GOAL, Met::No),
        },
    };
    rows.push(kafka);
    Ok(rows)
}

/// Latency percentiles in ms (each the median over the runs), and the server's CPU per event.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Latency {
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
    pub(crate) cpu_us: f64,
}

impl Latency {
    fn within(&self, p50: f64, p99: f64, p999: f64) -> bool {
        self.p50 <= p50 && self.p99 <= p99 && self.p999 <= p999
    }
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2} / {:.2} / {:.2} ms; CPU {:.0} µs/event", self.p50, self.p99, self.p999, self.cpu_us)
    }
}

/// Latency at [`LATENCY_RATE`] on `backend`, over the runs.
async fn latency_on(ctx: &Ctx, backend: &Backend) -> anyhow::Result<Latency> {
    let (warmup_secs, measure_secs) = if ctx.quick { (1.0, 3.0) } else { (2.0, 10.0) };
    let warmup = (LATENCY_RATE * warmup_secs) as u64;
    let total = warmup + (LATENCY_RATE * measure_secs) as u64;
    let data = Bytes::from(vec![b'x'; 1024]);
    let (mut p50s, mut p99s, mut p999s, mut cpus) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 1..=ctx.runs {
        let dir = ctx.scratch()?;
        let server = ctx.server_on(backend, &dir).await?;
        let subscriber = LatencySubscriber::start().await?;
        server
            .trigger(
                "latency",
                json!({"broker": "b", "filter": {"attributes": {"type": "t"}}, "subscriber": {"uri": subscriber.url}}),
            )
            .await?;
        prime(&server, &subscriber).await?;
        let host = server.addr.to_string();
        let data = data.clone();
        let make: MakeTimedRequest =
            Arc::new(move |seq, sent| binary_request("/default/b", &host, seq, Some(sent), &data));
        let (cpu, wall) = (server.cpu()?, Instant::now());
        let acks = open_loop(server.addr, LATENCY_RATE, total, make).await?;
        let mut acks = acks[warmup as usize..].to_vec();
        acks.sort_unstable();
        let deadline = Instant::now() + Duration::from_secs(30);
        while (subscriber.count() as u64) < total && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (latencies, missing) = subscriber.latencies(warmup, total);
        if missing > 0 {
            bail!("{missing} events were not delivered within 30 s");
        }
        let ms = |q: f64| quantile(&latencies, q) as f64 / 1e6;
        let ack_ms = |q: f64| quantile(&acks, q) as f64 / 1e6;
        let (p50, p99, p999) = (ms(0.5), ms(0.99), ms(0.999));
        let cores = (server.cpu()? - cpu).as_secs_f64() / wall.elapsed().as_secs_f64();
        let counters = log_counters(&server, wall.elapsed()).await;
        progress(
            "latency",
            format!(
                "run {run}/{} ({}): p50 {p50:.2} ms, p99 {p99:.2} ms, p99.9 {p999:.2} ms, max {:.2} ms over {} events; \
                 the 202 itself: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms; switchyard used {cores:.2} cores{counters}",
                ctx.runs,
                backend.label(),
                ms(1.0),
                latencies.len(),
                ack_ms(0.5),
                ack_ms(0.99),
                ack_ms(0.999),
            ),
        );
        p50s.push(p50);
        p99s.push(p99);
        p999s.push(p999);
        cpus.push(cpu_us(cores, LATENCY_RATE));
    }
    Ok(Latency { p50: median(&p50s), p99: median(&p99s), p999: median(&p999s), cpu_us: median(&cpus) })
}

/// Sends one untimed event and waits for its delivery, so the measurement starts once the
/// trigger is consuming (on Kafka, once its consumer group has its partitions).
async fn prime(server: &Switchyard, subscriber: &LatencySubscriber) -> anyhow::Result<()> {
    let make = binary_event(server.addr, "/default/b", Bytes::from_static(b"primer"));
    closed_loop(server.addr, 1, StatusCode::ACCEPTED, Length::Total(1), make).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while subscriber.requests() == 0 {
        if Instant::now() > deadline {
            bail!("the first event was not delivered within 120 s; server log tail:\n{}", server.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Delivery rate to a fast subscriber from a pre-ingested backlog, next to the load tool's own
/// rate against that subscriber.
pub(crate) async fn delivery(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let backlog = ctx.size(200_000, 20_000);
    let noop = NoopProcess::start(&ctx.bench_exe)?;
    let data = Bytes::from(vec![b'x'; 1024]);
    let body = batch_body(100, |_| "t".to_owned(), 1024);
    let mut runs = Vec::new();
    for run in 1..=ctx.runs {
        // The load tool's rate and CPU; measured before and after, so drift on a shared machine
        // hits both sides.
        let load_tool = || async {
            let (cpu, wall) = (cpu_time(std::process::id())?, Instant::now());
            let make = binary_event(noop.addr, "/", data.clone());
            let report = closed_loop(noop.addr, DELIVERY_CONNECTIONS, StatusCode::ACCEPTED, ctx.window(), make)
                .await
                .context("load tool against the subscriber")?;
            let cores = (cpu_time(std::process::id())? - cpu).as_secs_f64() / wall.elapsed().as_secs_f64();
            anyhow::Ok((report.per_sec(), cores))
        };
        let (tool_before, cores_before) = load_tool().await?;
        let dir = ctx.scratch()?;
        let server = ctx.server(&dir).await?;
        // Held while the backlog is ingested: the first deliveries wait in the subscriber.
        noop.hold().await?;
        server
            .trigger(
                "fast",
                json!({
                    "broker": "b",
                    "filter": {"attributes": {"type": "t"}},
                    "subscriber": {"uri": noop.url},
                    "delivery": {"timeout": "PT300S", "maxInFlight": DELIVERY_CONNECTIONS},
                }),
            )
            .await?;
        let before = noop.answered().await?;
        ingest_batches(&server, backlog, 8, body.clone()).await?;
        let (server_cpu, noop_cpu) = (server.cpu()?, noop.cpu()?);
        let released = Instant::now();
        noop.release().await?;
        let done = wait_answered(&noop, before + backlog, Duration::from_secs(600)).await?;
        let wall = (done - released).as_secs_f64();
        let rate = backlog as f64 / wall;
        let server_cores = (server.cpu()? - server_cpu).as_secs_f64() / wall;
        let noop_cores = (noop.cpu()? - noop_cpu).as_secs_f64() / wall;
        drop(server);
        let (tool_after, cores_after) = load_tool().await?;
        let (tool, tool_cores) = ((tool_before + tool_after) / 2.0, (cores_before + cores_after) / 2.0);
        progress(
            "delivery",
            format!(
                "run {run}/{}: delivered {} events/s, load tool {} req/s, ratio {:.2}; switchyard used {server_cores:.2} cores ({:.0} µs CPU per event) and the subscriber {noop_cores:.2}; the load tool {tool_cores:.2} cores ({:.0} µs per request)",
                ctx.runs,
                thousands(rate),
                thousands(tool),
                rate / tool,
                cpu_us(server_cores, rate),
                cpu_us(tool_cores, tool)
            ),
        );
        runs.push(Compared {
            ours: rate,
            theirs: tool,
            our_cpu_us: cpu_us(server_cores, rate),
            their_cpu_us: cpu_us(tool_cores, tool),
        });
    }
    let median = median_run(&runs);
    let (ours, theirs, ratio) = (median.ours, median.theirs, median.ratio());
    Ok(vec![Row::new(
        40,
        format!(
            "delivery to a fast subscriber (no-op, 202) from a {}-event backlog, maxInFlight {DELIVERY_CONNECTIONS} ÷ load tool, {DELIVERY_CONNECTIONS} connections, against it",
            thousands(backlog as f64)
        ),
        format!("{ratio:.2} ({} events/s vs {} req/s; {})", thousands(ours), thousands(theirs), median.cpu("event")),
        "≥ 0.5",
        Met::from(ratio >= 0.5),
    )])
}

/// Dispatch throughput with 10 and with 10,000 triggers on one broker (and RSS with 10,000).
pub(crate) async fn triggers(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let many = ctx.size(10_000, 1_000) as usize;
    let events = ctx.size(50_000, 10_000);
    let body = batch_body(100, |i| format!("type.{}", i % 10), 0);
    let mut results = Vec::new();
    for count in [10, many] {
        let dir = ctx.scratch()?;
        let server = ctx.server(&dir).await?;
        let noop = NoopProcess::start(&ctx.bench_exe)?;
        let declared = Instant::now();
        declare_triggers(&server, count, &noop.url).await?;
        let declare_secs = declared.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let cpu = server.cpu()?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle_cores = (server.cpu()? - cpu).as_secs_f64() / 2.0;
        let idle_rss = server.rss_mb()?;
        progress(
            "triggers",
            format!(
                "{count} triggers declared in {declare_secs:.1} s; RSS {idle_rss:.1} MB before any event, {} open fds; idle CPU {:.0}% of a core",
                server.open_fds(),
                idle_cores * 100.0
            ),
        );
        let (mut rates, mut rss, mut cpus) = (Vec::new(), Vec::new(), Vec::new());
        for run in 1..=ctx.runs {
            let before = noop.answered().await?;
            let cpu = server.cpu()?;
            let started = Instant::now();
            ingest_batches(&server, events, 4, body.clone()).await?;
            let done = wait_answered(&noop, before + events, Duration::from_secs(600)).await?;
            let wall = (done - started).as_secs_f64();
            let rate = events as f64 / wall;
            let cores = (server.cpu()? - cpu).as_secs_f64() / wall;
            let after = server.rss_mb()?;
            progress(
                "triggers",
                format!(
                    "{count} triggers, run {run}/{}: {} events/s from first ingest to last delivery; switchyard used {cores:.2} cores; RSS {after:.1} MB, {} open fds",
                    ctx.runs,
                    thousands(rate),
                    server.open_fds()
                ),
            );
            rates.push(rate);
            rss.push(after);
            cpus.push(cpu_us(cores, rate));
        }
        results.push((count, median(&rates), idle_rss, median(&rss), median(&cpus)));
    }
    let (_, few_rate, _, _, few_cpu) = results[0];
    let (many, many_rate, many_idle, many_rss, many_cpu) = results[1];
    let ratio = many_rate / few_rate;
    let rss = many_rss.max(many_idle);
    Ok(vec![
        Row::new(
            50,
            format!(
                "dispatch throughput, {} triggers ÷ 10 triggers ({} events over 10 matching triggers, ingest → last delivery)",
                thousands(many as f64),
                thousands(events as f64)
            ),
            format!(
                "{ratio:.2} ({} vs {} events/s; CPU {many_cpu:.0} vs {few_cpu:.0} µs/event)",
                thousands(many_rate),
                thousands(few_rate)
            ),
            "≥ 0.5",
            Met::from(ratio >= 0.5),
        ),
        Row::new(
            61,
            format!("RSS with {} triggers (after declaring; after the dispatch runs)", thousands(many as f64)),
            format!("{rss:.1} MB ({many_idle:.1}; {many_rss:.1})"),
            "≤ 100 MB",
            Met::from(rss <= 100.0),
        ),
    ])
}

/// RSS of an idle server: one broker, 10 triggers, no traffic.
pub(crate) async fn idle(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let settle = Duration::from_secs(ctx.size(3, 1));
    let mut rss = Vec::new();
    for run in 1..=ctx.runs {
        let dir = ctx.scratch()?;
        let server = ctx.server(&dir).await?;
        declare_triggers(&server, 10, "http://127.0.0.1:9/").await?;
        tokio::time::sleep(settle).await;
        let now = server.rss_mb()?;
        progress("idle", format!("run {run}/{}: RSS {now:.1} MB", ctx.runs));
        rss.push(now);
    }
    let rss = median(&rss);
    Ok(vec![Row::new(
        60,
        "RSS idle (one broker, 10 triggers, no traffic)",
        format!("{rss:.1} MB"),
        "≤ 30 MB",
        Met::from(rss <= 30.0),
    )])
}

/// RSS with a stalled subscriber while a backlog of 1 KiB events builds up and stays.
pub(crate) async fn backlog(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let events = ctx.size(1_000_000, 50_000);
    let settle = Duration::from_secs(ctx.size(5, 2));
    let noop = NoopProcess::start(&ctx.bench_exe)?;
    noop.hold().await?;
    let body = batch_body(100, |_| "t".to_owned(), 1024);
    let (mut settled, mut peaks, mut ingest_secs) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=ctx.runs {
        let dir = ctx.scratch()?;
        let server = ctx.server(&dir).await?;
        server
            .trigger(
                "stalled",
                json!({"broker": "b", "filter": {"attributes": {"type": "t"}}, "subscriber": {"uri": noop.url}}),
            )
            .await?;
        let sampler = RssSampler::start(server_pid(&server)?);
        let took = ingest_batches(&server, events, 8, body.clone()).await?;
        tokio::time::sleep(settle).await;
        let now = server.rss_mb()?;
        let peak = sampler.finish().await.max(now);
        progress(
            "backlog",
            format!(
                "run {run}/{}: {} events ingested in {:.1} s; RSS {now:.1} MB {} s later, peak {peak:.1} MB",
                ctx.runs,
                thousands(events as f64),
                took.as_secs_f64(),
                settle.as_secs()
            ),
        );
        settled.push(now);
        peaks.push(peak);
        ingest_secs.push(took.as_secs_f64());
    }
    let rss = median(&settled);
    Ok(vec![Row::new(
        62,
        format!(
            "RSS with a stalled subscriber holding a {}-event backlog (1 KiB events; {} s after ingest; peak while ingesting)",
            thousands(events as f64),
            settle.as_secs()
        ),
        format!("{rss:.1} MB (peak {:.1})", median(&peaks)),
        "≤ 150 MB",
        Met::from(rss <= 150.0),
    )])
}

fn server_pid(server: &Switchyard) -> anyhow::Result<u32> {
    server.pid().context("the server is not running")
}

/// Restart-to-ready time with many events retained.
pub(crate) async fn restart(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let events = ctx.size(10_000_000, 200_000);
    let dir = ctx.scratch()?;
    let mut server = ctx.server(&dir).await?;
    let body = batch_body(100, |_| "t".to_owned(), SMALL_DATA_BYTES);
    let took = ingest_batches(&server, events, BATCH_CONNECTIONS, body).await?;
    let disk_gb = dir_bytes(&dir.path().join("data")) as f64 / 1e9;
    progress(
        "restart",
        format!(
            "{} events ingested in {:.1} s ({} events/s); {disk_gb:.2} GB on disk",
            thousands(events as f64),
            took.as_secs_f64(),
            thousands(events as f64 / took.as_secs_f64())
        ),
    );
    let (mut ready, mut stops) = (Vec::new(), Vec::new());
    let restarts = ctx.runs.max(3);
    for run in 1..=restarts {
        let stop = server.stop().await?;
        let up = server.spawn().await?;
        progress(
            "restart",
            format!(
                "restart {run}/{restarts}: stopped in {:.3} s, ready in {:.3} s",
                stop.as_secs_f64(),
                up.as_secs_f64()
            ),
        );
        ready.push(up.as_secs_f64());
        stops.push(stop.as_secs_f64());
    }
    let ready = median(&ready);
    Ok(vec![Row::new(
        70,
        format!(
            "restart-to-ready (spawn → first 200 from /readyz), {} events retained ({SMALL_DATA_BYTES} B data, {disk_gb:.1} GB on disk), median of {restarts}",
            thousands(events as f64)
        ),
        format!("{ready:.3} s (SIGTERM stop {:.3} s)", median(&stops)),
        "≤ 2 s",
        Met::from(ready <= 2.0),
    )])
}

/// A rate (events/s) and the CPU µs per event it took.
type RateAndCpu = (f64, f64);
/// One run of `kafka_ingest`: Switchyard on Kafka, on the embedded log, the raw producer.
type KafkaIngestRun = (RateAndCpu, RateAndCpu, RateAndCpu);

/// Kafka ingest next to the embedded log and next to a raw rdkafka producer (the backend's own
/// producer settings, as many senders as connections, each awaiting its record) against the
/// same Kafka, all in one run, so the ratios compare like with like.
pub(crate) async fn kafka_ingest(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let Some(url) = &ctx.kafka else {
        return Ok(vec![Row::new(
            15,
            "ingest on Kafka, 1 KiB binary events: ÷ the embedded log, ÷ a raw rdkafka producer",
            "not measured: needs --kafka kafka://HOST:PORT",
            "—",
            Met::NotApplicable,
        )]);
    };
    let bootstrap = url.strip_prefix("kafka://").context("--kafka must be kafka://host:port")?;
    let raw_producer = ctx.bench_exe.parent().context("this binary has no folder")?.join("examples/raw_producer");
    anyhow::ensure!(
        raw_producer.is_file(),
        "'{}' is missing: build it with `cargo build --release -p switchyard-log-kafka --example raw_producer`",
        raw_producer.display()
    );
    let data = Bytes::from(vec![b'x'; 1024]);
    let measure = |backend: Backend| {
        let data = data.clone();
        async move {
            let dir = ctx.scratch()?;
            let server = ctx.server_on(&backend, &dir).await?;
            rate_and_cpu(|| server.cpu(), async {
                let make = binary_event(server.addr, "/default/b", data);
                let report = closed_loop(server.addr, ctx.connections, StatusCode::ACCEPTED, ctx.window(), make).await;
                anyhow::Ok(report.with_context(|| format!("ingest on {}", backend.label()))?.per_sec())
            })
            .await
        }
    };
    let Length::Timed { measure: window, .. } = ctx.window() else { bail!("ingest windows are timed") };
    let mut runs = Vec::new();
    for run in 1..=ctx.runs {
        let embedded = measure(Backend::Embedded).await?;
        let kafka = measure(Backend::Kafka(url.clone())).await?;
        let output = tokio::process::Command::new(&raw_producer)
            .args([bootstrap, &window.as_secs().to_string(), "1024", &ctx.connections.to_string()])
            .output()
            .await
            .context("cannot run the raw producer")?;
        let text = String::from_utf8_lossy(&output.stdout);
        // `records_per_sec=N cpu_us_per_record=M`
        let said = |key: &str| -> anyhow::Result<f64> {
            text.split_whitespace()
                .find_map(|field| field.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
                .with_context(|| format!("raw producer said '{text}' ({})", String::from_utf8_lossy(&output.stderr)))
        };
        let raw = (said("records_per_sec")?, said("cpu_us_per_record")?);
        progress(
            "kafka-ingest",
            format!(
                "run {run}/{}: kafka {} req/s ({:.0} µs CPU each), embedded {} req/s ({:.0} µs), raw producer {} records/s ({:.0} µs)",
                ctx.runs,
                thousands(kafka.0),
                kafka.1,
                thousands(embedded.0),
                embedded.1,
                thousands(raw.0),
                raw.1
            ),
        );
        runs.push((kafka, embedded, raw));
    }
    let against = |theirs: fn(&KafkaIngestRun) -> RateAndCpu| {
        let runs: Vec<Compared> = runs
            .iter()
            .map(|run| {
                let (kafka, theirs) = (run.0, theirs(run));
                Compared { ours: kafka.0, theirs: theirs.0, our_cpu_us: kafka.1, their_cpu_us: theirs.1 }
            })
            .collect();
        median_run(&runs)
    };
    let (vs_embedded, vs_raw) = (against(|run| run.1), against(|run| run.2));
    Ok(vec![
        Row::new(
            15,
            format!("ingest on Kafka, 1 KiB binary events, {} connections: ÷ the embedded log", ctx.connections),
            format!(
                "{:.2} ({} vs {} req/s; {})",
                vs_embedded.ratio(),
                thousands(vs_embedded.ours),
                thousands(vs_embedded.theirs),
                vs_embedded.cpu("request")
            ),
            "—",
            Met::NotApplicable,
        ),
        Row::new(
            16,
            format!(
                "ingest on Kafka, 1 KiB binary events, {} connections: ÷ a raw rdkafka producer with the same settings and {} senders",
                ctx.connections, ctx.connections
            ),
            format!(
                "{:.2} ({} req/s vs {} records/s; CPU {:.0} µs/request vs {:.0} µs/record)",
                vs_raw.ratio(),
                thousands(vs_raw.ours),
                thousands(vs_raw.theirs),
                vs_raw.our_cpu_us,
                vs_raw.their_cpu_us
            ),
            "≥ 0.8",
            Met::from(vs_raw.ratio() >= 0.8),
        ),
    ])
}
