//! A peer side by side (`--peer dapr`, issue 18): Dapr's sidecar `daprd` in self-hosted mode,
//! with `pubsub.kafka` on the same Kafka as Switchyard's Kafka backend, publishing over HTTP and
//! delivering to the same latency subscriber, measured in the same run as Switchyard on Kafka.
//!
//! Each run measures both sides in turn, each on a topic of its own: an open loop at 2,000
//! events/s of 1 KiB (publish → delivered to the app, timed from the intended send), then a
//! closed loop of publishes over `--connections` connections until every event is delivered;
//! CPU and RSS are read from `/proc` for the Switchyard process and the `daprd` process.
//!
//! The intended-send stamp travels with the event on both sides as `ce-benchsent`: a CloudEvent
//! extension on Switchyard (binary mode in, binary mode out); on Dapr, publish metadata
//! (`?metadata.ce-benchsent=…`), which `pubsub.kafka` writes as a Kafka record header and
//! `daprd` hands to the app as an HTTP header of the delivery, so the subscriber reads both alike.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::json;

use crate::load::{closed_loop, nanos_since_epoch, open_loop_expecting, Length, MakeRequest, MakeTimedRequest};
use crate::report::{median, quantile, thousands, Met, Row};
use crate::scenarios::{binary_request, Ctx, RssSampler};
use crate::server::{cpu_time, free_port, rss_mb, Backend, Switchyard};
use crate::subscriber::LatencySubscriber;

/// The peers `--peer` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Peer {
    /// Dapr's `daprd` (self-hosted, `pubsub.kafka`), built by `bench/dapr/build.sh`.
    Dapr,
}

/// The version `bench/dapr/build.sh` builds (for the table; the script pins it).
const DAPR_VERSION: &str = "1.16.5";
/// The offered rate of the open loop, as in the latency scenario.
const RATE: f64 = 2000.0;
/// Partitions of Dapr's topic: those of a Switchyard broker's topic (the backend's default).
const PARTITIONS: u32 = 8;
/// Dapr's name for its pubsub component.
const PUBSUB: &str = "bench-kafka";
/// Where `daprd` delivers on the subscriber (which answers any path).
const APP_ROUTE: &str = "/events";
/// The primer's sequence number: outside every measured range.
const PRIMER_SEQ: u64 = 1 << 40;
/// Sequence numbers of the closed loop start here, after the open loop's.
const CLOSED_LOOP_BASE: u64 = 1 << 32;
/// How Dapr's publishes are sent: see BENCHMARKS.md ("A peer side by side") for the choice.
/// Without `rawPayload`, `daprd` wraps the data in a CloudEvent (as Switchyard's records carry
/// one); as text, the data stays a JSON string in that envelope rather than base64.
const DAPR_CONTENT_TYPE: &str = "text/plain";

/// The open loop of one run: latency percentiles, and the side's CPU per event offered.
#[derive(Debug, Clone)]
struct OpenLoop {
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    cpu_us: f64,
    cores: f64,
}

/// The closed loop of one run: publishes answered per second, events delivered per second from
/// the first publish to the last delivery, and CPU per event (the side's, the Kafka broker's
/// when its process is known) over that time.
#[derive(Debug, Clone)]
struct ClosedLoop {
    publish_rate: f64,
    delivered_rate: f64,
    cpu_us: f64,
    kafka_cpu_us: Option<f64>,
}

/// One run of one side: each loop may fail on its own (the other is still measured).
struct SideRun {
    open: anyhow::Result<OpenLoop>,
    closed: anyhow::Result<ClosedLoop>,
    /// Peak RSS over both loops, in MB.
    peak_rss_mb: f64,
}

/// One measurement of a side over the runs: the values, and the failures.
struct Part<T> {
    values: Vec<T>,
    errors: Vec<String>,
}

impl<T> Default for Part<T> {
    fn default() -> Part<T> {
        Part { values: Vec::new(), errors: Vec::new() }
    }
}

impl<T> Part<T> {
    fn record(&mut self, result: Result<T, String>) {
        match result {
            Ok(value) => self.values.push(value),
            Err(error) => self.errors.push(error),
        }
    }

    /// "NAME value" with `field` over the runs' values, or the failure (its first 300
    /// characters: the progress lines have all of it).
    fn show(&self, name: &str, field: impl Fn(&[T]) -> String) -> String {
        let mut text = match (self.values.is_empty(), self.errors.first()) {
            (true, Some(error)) => format!("{name}: {}", shorten(error)),
            (true, None) => format!("{name}: not measured"),
            (false, _) => format!("{name} {}", field(&self.values)),
        };
        if !self.values.is_empty() && !self.errors.is_empty() {
            let _ = write!(
                text,
                " ({} of {} runs failed: {})",
                self.errors.len(),
                self.values.len() + self.errors.len(),
                shorten(&self.errors[0])
            );
        }
        table_safe(&text)
    }
}

/// A side's runs.
struct Side {
    name: &'static str,
    open: Part<OpenLoop>,
    closed: Part<ClosedLoop>,
    rss: Part<f64>,
}

impl Side {
    fn new(name: &'static str) -> Side {
        Side { name, open: Part::default(), closed: Part::default(), rss: Part::default() }
    }

    fn record(&mut self, run: usize, total: usize, result: anyhow::Result<SideRun>) {
        let failed = |error: anyhow::Error, what: &str| {
            let text = format!("{error:#}");
            progress(format!("run {run}/{total}: {}{what} failed: {text}", self.name));
            text
        };
        match result {
            Ok(measured) => {
                let open = measured.open.map_err(|error| failed(error, "'s open loop"));
                let closed = measured.closed.map_err(|error| failed(error, "'s closed loop"));
                self.open.record(open);
                self.closed.record(closed);
                self.rss.record(Ok(measured.peak_rss_mb));
            }
            Err(error) => {
                let text = failed(error, "");
                self.open.record(Err(text.clone()));
                self.closed.record(Err(text.clone()));
                self.rss.record(Err(text));
            }
        }
    }
}

fn median_of<T>(runs: &[T], field: impl Fn(&T) -> f64) -> f64 {
    median(&runs.iter().map(field).collect::<Vec<_>>())
}

fn shorten(text: &str) -> String {
    match text.char_indices().nth(300) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// A cell of the markdown table: one line, no column separators.
fn table_safe(text: &str) -> String {
    text.replace('\n', " ").replace('|', "/")
}

fn progress(message: impl AsRef<str>) {
    eprintln!("[peer] {}", message.as_ref());
}

/// The row titles, in order 35–39.
fn metrics(ctx: &Ctx, events: u64) -> [String; 5] {
    let who =
        format!("Switchyard on Kafka vs Dapr {DAPR_VERSION} `daprd` (`pubsub.kafka`, same Kafka, same subscriber)");
    [
        format!(
            "peer: end-to-end latency publish → app, {} events/s of 1 KiB, p50 / p99 / p99.9: {who}",
            thousands(RATE)
        ),
        format!("peer: CPU per event of the broker process at {} events/s (cores used): {who}", thousands(RATE)),
        format!(
            "peer: closed loop, {} events of 1 KiB over {} connections, publishes answered/s: {who}",
            thousands(events as f64),
            ctx.connections
        ),
        format!("peer: closed loop, delivered events/s (first publish → last delivery) and CPU per event: {who}"),
        format!("peer: peak RSS of the broker process over both loops: {who}"),
    ]
}

/// The peer rows (35–39).
pub(crate) async fn peer(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let events = if ctx.quick { 10_000 } else { 50_000 };
    let titles = metrics(ctx, events);
    let (Some(Peer::Dapr), Some(url)) = (ctx.peer, &ctx.kafka) else {
        return Ok(titles
            .into_iter()
            .zip(35..)
            .map(|(title, order)| {
                Row::new(
                    order,
                    title,
                    "not measured: needs --peer dapr and --kafka kafka://HOST:PORT",
                    "—",
                    Met::NotApplicable,
                )
            })
            .collect());
    };
    let bootstrap = url.strip_prefix("kafka://").context("--kafka must be kafka://host:port")?.to_owned();
    let kafka_tool = ctx.bench_exe.parent().context("this binary has no folder")?.join("examples/kafka_tool");
    let daprd = match build_daprd().await {
        Ok(path) => Ok(path),
        Err(error) => {
            progress(format!("daprd could not be built: {error:#}"));
            Err(format!("daprd could not be built: {error:#}"))
        }
    };
    let mut switchyard = Side::new("Switchyard");
    let mut dapr = Side::new("daprd");
    for run in 1..=ctx.runs {
        // The sides take turns going first, so drift on a shared machine hits both alike.
        for dapr_turn in [run % 2 == 0, run % 2 == 1] {
            if dapr_turn {
                let result = match &daprd {
                    Ok(binary) => measure_dapr(ctx, binary, &kafka_tool, &bootstrap, events).await,
                    Err(reason) => Err(anyhow::anyhow!("{reason}")),
                };
                dapr.record(run, ctx.runs, result);
            } else {
                let result = measure_switchyard(ctx, url, events).await;
                switchyard.record(run, ctx.runs, result);
            }
        }
    }
    let sides = [&switchyard, &dapr];
    let join = |cells: Vec<String>| cells.join("; ");
    let latency = join(
        sides
            .iter()
            .map(|side| {
                side.open.show(side.name, |runs| {
                    format!(
                        "{:.2} / {:.2} / {:.2} ms",
                        median_of(runs, |r| r.p50_ms),
                        median_of(runs, |r| r.p99_ms),
                        median_of(runs, |r| r.p999_ms)
                    )
                })
            })
            .collect(),
    );
    let open_cpu = join(
        sides
            .iter()
            .map(|side| {
                side.open.show(side.name, |runs| {
                    format!("{:.0} µs ({:.2} cores)", median_of(runs, |r| r.cpu_us), median_of(runs, |r| r.cores))
                })
            })
            .collect(),
    );
    let publish = join(
        sides
            .iter()
            .map(|side| {
                side.closed.show(side.name, |runs| format!("{}/s", thousands(median_of(runs, |r| r.publish_rate))))
            })
            .collect(),
    );
    let delivered = join(
        sides
            .iter()
            .map(|side| {
                side.closed.show(side.name, |runs| {
                    let kafka = median_of(runs, |r| r.kafka_cpu_us.unwrap_or(f64::NAN));
                    let kafka = if kafka.is_nan() { String::new() } else { format!(", Kafka broker {kafka:.0} µs") };
                    format!(
                        "{}/s, {:.0} µs per event{kafka}",
                        thousands(median_of(runs, |r| r.delivered_rate)),
                        median_of(runs, |r| r.cpu_us)
                    )
                })
            })
            .collect(),
    );
    let rss = join(
        sides
            .iter()
            .map(|side| side.rss.show(side.name, |runs| format!("{:.1} MB", median_of(runs, |r| *r))))
            .collect(),
    );
    Ok([latency, open_cpu, publish, delivered, rss]
        .into_iter()
        .zip(titles)
        .zip(35..)
        .map(|((result, title), order)| Row::new(order, title, result, "—", Met::NotApplicable))
        .collect())
}

/// Runs `bench/dapr/build.sh` (which reuses the binary it cached) and returns the binary's path.
async fn build_daprd() -> anyhow::Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("dapr/build.sh");
    anyhow::ensure!(script.is_file(), "'{}' is missing", script.display());
    progress(format!("{} (a cold build takes about 3 minutes)", script.display()));
    let output = tokio::process::Command::new(&script)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run '{}'", script.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        bail!(
            "'{}' exited with {}: {}",
            script.display(),
            output.status,
            lines[lines.len().saturating_sub(5)..].join(" / ")
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let binary = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    anyhow::ensure!(binary.is_file(), "'{}' printed '{}', which is not a file", script.display(), stdout.trim());
    Ok(binary)
}

/// A fresh directory under `--data-root`, removed when dropped.
fn scratch(ctx: &Ctx) -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("switchyard-bench-peer-")
        .tempdir_in(&ctx.data_root)
        .with_context(|| format!("cannot make a directory in '{}'", ctx.data_root.display()))
}

/// Where one side publishes, and how.
struct Target {
    /// The HTTP address publishes go to.
    addr: SocketAddr,
    /// The process whose CPU and RSS count.
    pid: u32,
    /// The status of an accepted publish.
    accepted: StatusCode,
    /// Publish request `seq`, stamped with its intended send time.
    publish: MakeTimedRequest,
    /// The last lines of the process's log, for errors.
    log_tail: Box<dyn Fn() -> String + Send + Sync>,
}

/// Switchyard on Kafka: broker `b`, a trigger delivering to the subscriber.
async fn measure_switchyard(ctx: &Ctx, url: &str, events: u64) -> anyhow::Result<SideRun> {
    let dir = scratch(ctx)?;
    let subscriber = LatencySubscriber::start().await?;
    let server = Switchyard::start(&ctx.switchyard, &Backend::Kafka(url.to_owned()), &dir.path().join("data")).await?;
    server.broker("b").await?;
    server
        .trigger(
            "peer",
            json!({"broker": "b", "filter": {"attributes": {"type": "t"}}, "subscriber": {"uri": subscriber.url}}),
        )
        .await?;
    let host = server.addr.to_string();
    let data = Bytes::from(vec![b'x'; 1024]);
    let publish: MakeTimedRequest =
        Arc::new(move |seq, sent| binary_request("/default/b", &host, seq, Some(sent), &data));
    let log_dir = dir.path().join("data");
    let target = Target {
        addr: server.addr,
        pid: server.pid().context("the server is not running")?,
        accepted: StatusCode::ACCEPTED,
        publish,
        log_tail: Box::new(move || tail(&log_dir.with_extension("log"))),
    };
    let measured = measure(ctx, "Switchyard", &target, &subscriber, events).await;
    drop(server);
    measured
}

/// Dapr: a topic of its own (created first: the local Kafka does not create topics), `daprd`
/// with a `pubsub.kafka` component and a declarative subscription to the subscriber.
async fn measure_dapr(
    ctx: &Ctx,
    daprd: &Path,
    kafka_tool: &Path,
    bootstrap: &str,
    events: u64,
) -> anyhow::Result<SideRun> {
    anyhow::ensure!(
        kafka_tool.is_file(),
        "'{}' is missing: build it with `cargo build --release -p switchyard-log-kafka --example kafka_tool`",
        kafka_tool.display()
    );
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let name = format!("switchyard-bench.dapr.{}-{nanos}", std::process::id());
    kafka_tool_run(kafka_tool, &[bootstrap, "create-topic", &name, &PARTITIONS.to_string()]).await?;
    let measured = async {
        let dir = scratch(ctx)?;
        let subscriber = LatencySubscriber::start().await?;
        let sidecar = Daprd::start(daprd, dir.path(), &subscriber, bootstrap, &name).await?;
        let host = sidecar.http.to_string();
        let path = format!("/v1.0/publish/{PUBSUB}/{name}");
        let data = Bytes::from(vec![b'x'; 1024]);
        let publish: MakeTimedRequest = Arc::new(move |seq, sent| {
            Request::post(format!("{path}?metadata.ce-id={seq}&metadata.ce-benchsent={sent}"))
                .header(HOST, &host)
                .header(CONTENT_TYPE, DAPR_CONTENT_TYPE)
                .body(Full::new(data.clone()))
                .expect("a valid request")
        });
        let log = sidecar.log.clone();
        let target = Target {
            addr: sidecar.http,
            pid: sidecar.pid(),
            accepted: StatusCode::NO_CONTENT,
            publish,
            log_tail: Box::new(move || tail(&log)),
        };
        let measured = measure(ctx, "daprd", &target, &subscriber, events).await;
        // mDNS would multicast off loopback: its log would name it, and it would hold UDP sockets.
        let mdns = std::fs::read_to_string(&sidecar.log).unwrap_or_default().to_lowercase().matches("mdns").count();
        let udp = udp_sockets(sidecar.pid());
        progress(format!("daprd's log mentions mdns {mdns} time(s); daprd holds {udp} UDP socket(s)"));
        sidecar.stop().await;
        measured
    }
    .await;
    if let Err(error) = kafka_tool_run(kafka_tool, &[bootstrap, "delete-topic", &name]).await {
        progress(format!("could not delete topic '{name}': {error:#}"));
    }
    measured
}

/// Both loops against one side; on a failure, the side's log tail goes to the progress lines.
async fn measure(
    ctx: &Ctx,
    label: &str,
    target: &Target,
    subscriber: &LatencySubscriber,
    events: u64,
) -> anyhow::Result<SideRun> {
    let log_failure = |error: &anyhow::Error| {
        progress(format!("{label} failed: {error:#}; its log ends: {}", (target.log_tail)()));
    };
    prime(target, subscriber).await.inspect_err(log_failure)?;
    let sampler = RssSampler::start(target.pid);
    let open = open_loop_run(ctx, label, target, subscriber).await.inspect_err(log_failure);
    // Whatever the open loop left in flight is delivered before the closed loop starts.
    settle(subscriber).await;
    let closed = closed_loop_run(ctx, label, target, subscriber, events).await.inspect_err(log_failure);
    let peak_rss_mb = sampler.finish().await.max(rss_mb(target.pid)?);
    progress(format!("{label}: peak RSS {peak_rss_mb:.1} MB; load average {}", crate::report::load_average()));
    Ok(SideRun { open, closed, peak_rss_mb })
}

/// The latency of each event from its intended send to its delivery, at [`RATE`].
async fn open_loop_run(
    ctx: &Ctx,
    label: &str,
    target: &Target,
    subscriber: &LatencySubscriber,
) -> anyhow::Result<OpenLoop> {
    let (warmup_secs, measure_secs) = if ctx.quick { (1.0, 3.0) } else { (2.0, 10.0) };
    let warmup = (RATE * warmup_secs) as u64;
    let total = warmup + (RATE * measure_secs) as u64;
    let (cpu, wall) = (cpu_time(target.pid)?, Instant::now());
    open_loop_expecting(target.addr, RATE, total, target.accepted, target.publish.clone())
        .await
        .with_context(|| format!("open loop against {label}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while subscriber.latencies(warmup, total).1 > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu = (cpu_time(target.pid)? - cpu).as_secs_f64();
    let cores = cpu / wall.elapsed().as_secs_f64();
    let (latencies, missing) = subscriber.latencies(warmup, total);
    if missing > 0 {
        bail!("{missing} events of the open loop were not delivered within 30 s");
    }
    let ms = |q: f64| quantile(&latencies, q) as f64 / 1e6;
    let measured =
        OpenLoop { p50_ms: ms(0.5), p99_ms: ms(0.99), p999_ms: ms(0.999), cpu_us: cpu / total as f64 * 1e6, cores };
    progress(format!(
        "{label}: open loop p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms over {} events, {:.0} µs CPU per event ({cores:.2} cores)",
        measured.p50_ms,
        measured.p99_ms,
        measured.p999_ms,
        ms(1.0),
        latencies.len(),
        measured.cpu_us,
    ));
    Ok(measured)
}

/// Waits until no delivery arrived for a second (at most 30 s).
async fn settle(subscriber: &LatencySubscriber) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = subscriber.requests();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = subscriber.requests();
        if now == seen {
            return;
        }
        seen = now;
    }
}

/// `events` publishes as fast as `--connections` connections go, then until the last delivery.
async fn closed_loop_run(
    ctx: &Ctx,
    label: &str,
    target: &Target,
    subscriber: &LatencySubscriber,
    events: u64,
) -> anyhow::Result<ClosedLoop> {
    let counted_before = subscriber.count() as u64;
    let publish = target.publish.clone();
    let stamped: MakeRequest = Arc::new(move |seq| publish(CLOSED_LOOP_BASE + seq, nanos_since_epoch(Instant::now())));
    let kafka_pid = kafka_broker_pid(ctx);
    let kafka_cpu = kafka_pid.and_then(|pid| cpu_time(pid).ok());
    let (cpu, started) = (cpu_time(target.pid)?, Instant::now());
    let report = closed_loop(target.addr, ctx.connections, target.accepted, Length::Total(events), stamped)
        .await
        .with_context(|| format!("closed loop against {label}"))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let range = CLOSED_LOOP_BASE..CLOSED_LOOP_BASE + events;
    let delivered = loop {
        // The count is cheap and necessary; the range check is exact (a late event of the open
        // loop also counts).
        if subscriber.count() as u64 - counted_before >= events && subscriber.latencies(range.start, range.end).1 == 0 {
            break started.elapsed();
        }
        if Instant::now() > deadline {
            let missing = subscriber.latencies(range.start, range.end).1;
            bail!("{missing} of the closed loop's {events} events were not delivered within 120 s of its end");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let cpu = (cpu_time(target.pid)? - cpu).as_secs_f64();
    let kafka_cpu_us = kafka_pid
        .zip(kafka_cpu)
        .and_then(|(pid, before)| cpu_time(pid).ok().map(|after| (after - before).as_secs_f64() / events as f64 * 1e6));
    let measured = ClosedLoop {
        publish_rate: report.per_sec(),
        delivered_rate: events as f64 / delivered.as_secs_f64(),
        cpu_us: cpu / events as f64 * 1e6,
        kafka_cpu_us,
    };
    progress(format!(
        "{label}: closed loop {} publishes/s, {} delivered/s, {:.0} µs CPU per event ({:.2} cores){}",
        thousands(measured.publish_rate),
        thousands(measured.delivered_rate),
        measured.cpu_us,
        cpu / delivered.as_secs_f64(),
        kafka_cpu_us.map_or_else(String::new, |us| format!("; the Kafka broker {us:.0} µs per event")),
    ));
    Ok(measured)
}

/// Publishes one untimed event until it is delivered, so the loops start once the side's
/// consumer has its partitions.
async fn prime(target: &Target, subscriber: &LatencySubscriber) -> anyhow::Result<()> {
    let publish = target.publish.clone();
    let primer: MakeRequest = Arc::new(move |_| publish(PRIMER_SEQ, 0));
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut next_publish = Instant::now();
    while subscriber.latencies(PRIMER_SEQ, PRIMER_SEQ + 1).1 > 0 {
        if Instant::now() > deadline {
            bail!("the first event was not delivered within 120 s");
        }
        // Published again every 5 s: a consumer that joined after the first one may start at
        // the end of the topic.
        if Instant::now() >= next_publish {
            closed_loop(target.addr, 1, target.accepted, Length::Total(1), primer.clone())
                .await
                .context("the first publish")?;
            next_publish = Instant::now() + Duration::from_secs(5);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// The local Kafka's process (`deploy/kafka/local.sh` keeps its pid in its directory), if the
/// bench runs against it.
fn kafka_broker_pid(ctx: &Ctx) -> Option<u32> {
    let url = ctx.kafka.as_deref()?;
    let port = url.strip_prefix("kafka://")?.split(',').next()?.rsplit(':').next()?;
    let dir = std::env::var("KAFKA_DIR").unwrap_or_else(|_| format!("/tmp/switchyard-kafka-{port}"));
    let pid: u32 = std::fs::read_to_string(Path::new(&dir).join("kafka.pid")).ok()?.trim().parse().ok()?;
    cpu_time(pid).is_ok().then_some(pid)
}

async fn kafka_tool_run(kafka_tool: &Path, args: &[&str]) -> anyhow::Result<()> {
    let output = tokio::process::Command::new(kafka_tool)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run '{}'", kafka_tool.display()))?;
    if !output.status.success() {
        bail!("kafka_tool {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

/// How many UDP sockets (IPv4 or IPv6) process `pid` holds.
fn udp_sockets(pid: u32) -> usize {
    let mut inodes = std::collections::HashSet::new();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        // The inode is the tenth column; the first line is the header.
        inodes.extend(text.lines().skip(1).filter_map(|line| line.split_whitespace().nth(9).map(str::to_owned)));
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return 0 };
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_owned))
        .filter(|inode| inodes.contains(inode))
        .count()
}

/// The messages of the last errors in `daprd`'s log (logfmt lines: `level=error msg="…"`).
fn daprd_errors(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let errors: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("level=error") || line.contains("level=fatal"))
        .map(|line| {
            line.split_once("msg=\"").map_or(line, |(_, rest)| rest.split_once("\" ").map_or(rest, |(msg, _)| msg))
        })
        .collect();
    if errors.is_empty() {
        return format!("no error in its log; it ends: {}", tail(path));
    }
    errors[errors.len().saturating_sub(2)..].join(" / ")
}

/// The last lines of a log file, on one line.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" / ")
}

/// A running `daprd`; killed when dropped.
struct Daprd {
    child: Option<Child>,
    /// Its HTTP API (publish).
    http: SocketAddr,
    log: PathBuf,
}

impl Daprd {
    /// Writes the component, subscription and configuration into `dir`, starts `daprd` on
    /// loopback ports and waits until its health endpoint answers 204.
    async fn start(
        binary: &Path,
        dir: &Path,
        subscriber: &LatencySubscriber,
        bootstrap: &str,
        topic: &str,
    ) -> anyhow::Result<Daprd> {
        let app = subscriber.url.trim_start_matches("http://").trim_end_matches('/');
        let app_port = app.rsplit(':').next().context("the subscriber's url has no port")?.to_owned();
        let resources = dir.join("resources");
        std::fs::create_dir_all(&resources)?;
        std::fs::write(resources.join("pubsub.yaml"), component_yaml(bootstrap, topic))?;
        std::fs::write(resources.join("subscription.yaml"), subscription_yaml(topic))?;
        let config = dir.join("config.yaml");
        std::fs::write(&config, CONFIG_YAML)?;
        let log = dir.join("daprd.log");
        let log_file = std::fs::File::create(&log).with_context(|| format!("cannot create '{}'", log.display()))?;
        let (http_port, grpc_port, internal_port, metrics_port) =
            (free_port()?, free_port()?, free_port()?, free_port()?);
        let child = Command::new(binary)
            .args(["--app-id", "switchyard-bench"])
            .args(["--app-port", &app_port])
            .args(["--app-protocol", "http"])
            .args(["--app-channel-address", "127.0.0.1"])
            .args(["--dapr-listen-addresses", "127.0.0.1"])
            .args(["--dapr-http-port", &http_port.to_string()])
            .args(["--dapr-grpc-port", &grpc_port.to_string()])
            // Both default to every interface.
            .args(["--dapr-internal-grpc-listen-address", "127.0.0.1"])
            .args(["--dapr-internal-grpc-port", &internal_port.to_string()])
            .args(["--metrics-listen-address", "127.0.0.1"])
            .args(["--metrics-port", &metrics_port.to_string()])
            .args(["--placement-host-address", ""])
            .args(["--scheduler-host-address", ""])
            .arg("--enable-mtls=false")
            .arg("--resources-path")
            .arg(&resources)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot run '{}'", binary.display()))?;
        let mut daprd = Daprd { child: Some(child), http: SocketAddr::from(([127, 0, 0, 1], http_port)), log };
        let probe = reqwest::Client::builder().timeout(Duration::from_secs(1)).build()?;
        let health = format!("http://{}/v1.0/healthz", daprd.http);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = probe.get(&health).send().await {
                if response.status() == StatusCode::NO_CONTENT {
                    return Ok(daprd);
                }
            }
            if let Some(status) = daprd.child.as_mut().and_then(|child| child.try_wait().ok().flatten()) {
                daprd.child = None;
                bail!("daprd exited at start with {status}: {}", daprd_errors(&daprd.log));
            }
            if Instant::now() > deadline {
                bail!("daprd was not healthy after 60 s: {}", daprd_errors(&daprd.log));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGTERM (so it leaves its consumer group), then SIGKILL after 10 s.
    async fn stop(mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Daprd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The `pubsub.kafka` component, set as close to Switchyard's producer as it allows: `acks=all`
/// is the component's own (`RequiredAcks = WaitForAll`, not configurable), no compression, and
/// no lingering (sarama's default flush sends at once). Consumer group timing as Switchyard's
/// trigger groups (session 6 s, heartbeat 1.5 s); a fresh group starts at the oldest offset, so
/// the primer is not lost while the group forms.
fn component_yaml(bootstrap: &str, topic: &str) -> String {
    format!(
        r#"apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: {PUBSUB}
spec:
  type: pubsub.kafka
  version: v1
  metadata:
  - name: brokers
    value: "{bootstrap}"
  - name: authType
    value: "none"
  - name: consumerGroup
    value: "{topic}"
  - name: clientId
    value: "switchyard-bench-dapr"
  - name: initialOffset
    value: "oldest"
  - name: version
    value: "4.0.0"
  - name: compression
    value: "none"
  - name: sessionTimeout
    value: "6s"
  - name: heartbeatInterval
    value: "1500ms"
"#
    )
}

/// Every event of the topic to the subscriber's route.
fn subscription_yaml(topic: &str) -> String {
    format!(
        r#"apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata:
  name: bench
spec:
  pubsubname: {PUBSUB}
  topic: "{topic}"
  routes:
    default: {APP_ROUTE}
"#
    )
}

/// Name resolution names a component that no `daprd` registers: the default in self-hosted mode
/// is mDNS, which multicasts off loopback, and pub/sub does not need name resolution. Tracing
/// is not sampled (Switchyard exports no traces by default); metrics stay on, as Switchyard's do.
const CONFIG_YAML: &str = r#"apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: bench
spec:
  nameResolution:
    component: "none"
  tracing:
    samplingRate: "0"
  metric:
    enabled: true
"#;
