//! The scale rows (issue 18): how cost grows with work — with the number of brokers, the size
//! of events, the number of triggers, and a second node on Kafka. Each rate comes with the CPU
//! it cost (µs per event, from /proc), Switchyard's and, where there is one, the baseline's,
//! so that a change in rate can be told apart from a change in cost.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::json;

use crate::load::{closed_loop, nanos_since_epoch, Length, MakeRequest};
use crate::noop::NoopProcess;
use crate::report::{median, thousands, Met, Row};
use crate::scenarios::{
    binary_request, cpu_us, declare_triggers, log_counters, progress, rate_and_cpu, wait_answered, Ctx,
};
use crate::server::{cpu_time, Backend, Switchyard};
use crate::subscriber::LatencySubscriber;

const SCENARIO: &str = "scale";
const BROKER_COUNTS: [usize; 3] = [1, 10, 100];
const SMALL_EVENT: usize = 1024;
const LARGE_EVENT: usize = 64 * 1024;
/// The default `maxInFlight` of a trigger: the load tool's connections in the delivery baseline.
const DEFAULT_MAX_IN_FLIGHT: usize = 100;
/// Goals of issue 18, judged at 10,000 triggers.
const RSS_GOAL_MB: f64 = 100.0;
const IDLE_CPU_GOAL_PERCENT: f64 = 1.0;
const GOAL_TRIGGERS: usize = 10_000;

/// A rate and what it cost: events (or requests) per second and CPU µs per event.
#[derive(Debug, Clone, Copy)]
struct Cost {
    rate: f64,
    cpu_us: f64,
}

impl Cost {
    /// `events` over `wall`, having used `cpu` of CPU time.
    fn of(events: f64, wall: Duration, cpu: Duration) -> Cost {
        Cost { rate: events / wall.as_secs_f64(), cpu_us: cpu.as_secs_f64() * 1e6 / events }
    }

    /// The median rate and the median CPU per event of `runs` (each taken on its own).
    fn median(runs: &[Cost]) -> Cost {
        Cost {
            rate: median(&runs.iter().map(|c| c.rate).collect::<Vec<_>>()),
            cpu_us: median(&runs.iter().map(|c| c.cpu_us).collect::<Vec<_>>()),
        }
    }

    fn show(self) -> String {
        format!("{}/s at {:.1} µs CPU", thousands(self.rate), self.cpu_us)
    }
}

/// The scale rows: brokers (ingest, delivery), event size (ingest, delivery), triggers (RSS,
/// idle CPU) and, with `--kafka`, one vs two nodes.
pub(crate) async fn scale(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let noop = NoopProcess::start(&ctx.bench_exe)?;
    rows.append(&mut ingest_rows(ctx, &noop).await?);
    rows.append(&mut delivery_rows(ctx, &noop).await?);
    drop(noop);
    rows.append(&mut trigger_rows(ctx).await?);
    rows.append(&mut kafka_rows(ctx).await?);
    Ok(rows)
}

/// Warm-up and measured window of the closed-loop ingest runs: shorter than the ingest
/// scenario's, as this scenario runs many of them.
fn window(ctx: &Ctx) -> Length {
    if ctx.quick {
        Length::Timed { warmup: Duration::from_millis(500), measure: Duration::from_millis(1500) }
    } else {
        Length::Timed { warmup: Duration::from_secs(1), measure: Duration::from_secs(2) }
    }
}

fn broker_name(index: usize) -> String {
    format!("b{index}")
}

/// Binary-mode events of `data`, request `seq` to broker `seq % brokers` (brokers `b0`…), so
/// every connection spreads its requests evenly over the brokers.
fn spread_events(addr: SocketAddr, brokers: usize, data: Bytes) -> MakeRequest {
    let host = addr.to_string();
    let paths: Arc<Vec<String>> = Arc::new((0..brokers).map(|i| format!("/default/{}", broker_name(i))).collect());
    Arc::new(move |seq| binary_request(&paths[(seq % paths.len() as u64) as usize], &host, seq, None, &data))
}

/// A server on the embedded log in `dir` with brokers `b0`…`b{brokers-1}`.
async fn server_with_brokers(ctx: &Ctx, dir: &tempfile::TempDir, brokers: usize) -> anyhow::Result<Switchyard> {
    let server = Switchyard::start(&ctx.switchyard, &Backend::Embedded, &dir.path().join("data")).await?;
    for index in 0..brokers {
        server.broker(&broker_name(index)).await?;
    }
    Ok(server)
}

/// Closed-loop ingest of `size`-byte events over `ctx.connections` connections, spread over
/// `brokers` brokers; the rate and Switchyard's CPU per request.
async fn ingest_once(ctx: &Ctx, brokers: usize, size: usize) -> anyhow::Result<(Cost, String)> {
    let dir = ctx.scratch()?;
    let server = server_with_brokers(ctx, &dir, brokers).await?;
    let make = spread_events(server.addr, brokers, Bytes::from(vec![b'x'; size]));
    let (cpu, wall) = (server.cpu()?, Instant::now());
    let report = closed_loop(server.addr, ctx.connections, StatusCode::ACCEPTED, window(ctx), make)
        .await
        .with_context(|| format!("ingest of {size}-byte events over {brokers} broker(s)"))?;
    let (used, elapsed) = (server.cpu()? - cpu, wall.elapsed());
    let counters = log_counters(&server, elapsed).await;
    // The CPU is over warm-up and window, the rate over the window: per event, cores ÷ rate.
    let rate = report.per_sec();
    Ok((Cost { rate, cpu_us: cpu_us(used.as_secs_f64() / elapsed.as_secs_f64(), rate) }, counters))
}

/// The same closed loop against the no-op server: its rate and its CPU per request.
async fn noop_ingest(ctx: &Ctx, noop: &NoopProcess, size: usize) -> anyhow::Result<Cost> {
    let make = spread_events(noop.addr, 1, Bytes::from(vec![b'x'; size]));
    let (rate, cpu_us) = rate_and_cpu(|| noop.cpu(), async {
        let report = closed_loop(noop.addr, ctx.connections, StatusCode::ACCEPTED, window(ctx), make).await;
        Ok(report.context("ingest against the no-op server")?.per_sec())
    })
    .await?;
    Ok(Cost { rate, cpu_us })
}

/// Rows 80 (ingest with 1, 10, 100 brokers) and 82 (ingest of 1 KiB vs 64 KiB events).
async fn ingest_rows(ctx: &Ctx, noop: &NoopProcess) -> anyhow::Result<Vec<Row>> {
    let mut by_brokers: Vec<Vec<Cost>> = vec![Vec::new(); BROKER_COUNTS.len()];
    let (mut large, mut noop_small, mut noop_large) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=ctx.runs {
        noop_small.push(noop_ingest(ctx, noop, SMALL_EVENT).await?);
        for (slot, &brokers) in BROKER_COUNTS.iter().enumerate().filter(|(_, &b)| measured_in_run(b, run)) {
            let (cost, counters) = ingest_once(ctx, brokers, SMALL_EVENT).await?;
            progress(
                SCENARIO,
                format!("ingest run {run}/{}, {brokers} broker(s), 1 KiB: {}{counters}", ctx.runs, cost.show()),
            );
            by_brokers[slot].push(cost);
        }
        let (cost, counters) = ingest_once(ctx, 1, LARGE_EVENT).await?;
        progress(SCENARIO, format!("ingest run {run}/{}, 1 broker, 64 KiB: {}{counters}", ctx.runs, cost.show()));
        large.push(cost);
        noop_large.push(noop_ingest(ctx, noop, LARGE_EVENT).await?);
    }
    let by_brokers: Vec<Cost> = by_brokers.iter().map(|runs| Cost::median(runs)).collect();
    let (noop_small, noop_large) = (Cost::median(&noop_small), Cost::median(&noop_large));
    let (small, large) = (by_brokers[0], Cost::median(&large));
    let brokers_result = BROKER_COUNTS
        .iter()
        .zip(&by_brokers)
        .map(|(&brokers, cost)| {
            format!("{brokers}: {} req/s, {:.1} µs{}", thousands(cost.rate), cost.cpu_us, one_run_note(ctx, brokers))
        })
        .collect::<Vec<_>>()
        .join("; ");
    let mb_per_sec = |cost: Cost, size: usize| cost.rate * size as f64 / 1e6;
    Ok(vec![
        Row::new(
            80,
            format!(
                "scale: ingest, 1 KiB binary events, durable, {} connections spread evenly over 1 / 10 / 100 brokers (embedded log: one writer thread per broker): req/s and Switchyard CPU µs per event",
                ctx.connections
            ),
            format!(
                "{brokers_result} (no-op handler: {} req/s, {:.1} µs)",
                thousands(noop_small.rate),
                noop_small.cpu_us
            ),
            "—",
            Met::NotApplicable,
        ),
        Row::new(
            82,
            format!(
                "scale: ingest, 1 KiB vs 64 KiB binary events, durable, one broker, {} connections: req/s, MB/s, CPU µs per event",
                ctx.connections
            ),
            format!(
                "1 KiB: {} req/s, {:.1} MB/s, {:.1} µs (no-op {:.1} µs); 64 KiB: {} req/s, {:.1} MB/s, {:.1} µs (no-op: {} req/s, {:.1} µs)",
                thousands(small.rate),
                mb_per_sec(small, SMALL_EVENT),
                small.cpu_us,
                noop_small.cpu_us,
                thousands(large.rate),
                mb_per_sec(large, LARGE_EVENT),
                large.cpu_us,
                thousands(noop_large.rate),
                noop_large.cpu_us
            ),
            "—",
            Met::NotApplicable,
        ),
    ])
}

/// Delivery of a backlog of `events` `size`-byte events spread over `brokers` brokers, one
/// trigger each to the no-op subscriber (`maxInFlight` default), held until the whole backlog
/// is in and then released at once: delivered events/s and Switchyard's CPU per event.
///
/// While held, each trigger already has its `maxInFlight` attempts sent and waiting in the
/// subscriber; those were paid for before the release and complete at once after it, so the
/// rate and the CPU per event count only the rest of the backlog (see [`held_at_release`]).
async fn delivery_once(
    ctx: &Ctx,
    noop: &NoopProcess,
    brokers: usize,
    size: usize,
    events: u64,
) -> anyhow::Result<Cost> {
    let dir = ctx.scratch()?;
    let server = server_with_brokers(ctx, &dir, brokers).await?;
    noop.hold().await?;
    let declared = async {
        for index in 0..brokers {
            let spec = json!({
                "broker": broker_name(index),
                "filter": {"attributes": {"type": "t"}},
                "subscriber": {"uri": noop.url},
                // Held attempts wait for the whole backlog to be ingested: no timeout meanwhile.
                "delivery": {"timeout": "PT300S"},
            });
            server.trigger(&format!("t{index}"), spec).await?;
        }
        let before = noop.answered().await?;
        let make = spread_events(server.addr, brokers, Bytes::from(vec![b'x'; size]));
        closed_loop(server.addr, ctx.connections, StatusCode::ACCEPTED, Length::Total(events), make)
            .await
            .context("ingesting the backlog")?;
        anyhow::Ok(before)
    }
    .await;
    if declared.is_ok() {
        // Lets every trigger fill its window of attempts from the last events ingested.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let released_at = Instant::now();
    let cpu = server.cpu()?;
    // Released even when the backlog failed, so the no-op server does not stay held.
    noop.release().await?;
    let before = declared?;
    let done = wait_answered(noop, before + events, Duration::from_secs(600))
        .await
        .with_context(|| format!("delivering {events} events over {brokers} broker(s)"))?;
    let sent_after_release = events - held_at_release(brokers, events);
    Ok(Cost::of(sent_after_release as f64, done - released_at, server.cpu()? - cpu))
}

/// Attempts waiting in the held subscriber at the release: each trigger's `maxInFlight`, or
/// its whole share of the backlog when that is smaller.
fn held_at_release(brokers: usize, events: u64) -> u64 {
    (0..brokers as u64)
        .map(|index| {
            let share = events / brokers as u64 + u64::from(index < events % brokers as u64);
            share.min(DEFAULT_MAX_IN_FLIGHT as u64)
        })
        .sum()
}

/// Whether run `run` measures `brokers` brokers: the 100-broker case once, as it is the
/// slowest to set up.
fn measured_in_run(brokers: usize, run: usize) -> bool {
    brokers < 100 || run == 1
}

/// `(1 run)` beside a number measured once when the others are medians.
fn one_run_note(ctx: &Ctx, brokers: usize) -> &'static str {
    if measured_in_run(brokers, 2) || ctx.runs == 1 {
        ""
    } else {
        " (1 run)"
    }
}

/// The load tool (this process) against the no-op server with as many connections as a
/// trigger's default `maxInFlight`: its rate and its own CPU per request.
async fn load_tool(ctx: &Ctx, noop: &NoopProcess, size: usize) -> anyhow::Result<Cost> {
    let make = spread_events(noop.addr, 1, Bytes::from(vec![b'x'; size]));
    let (rate, cpu_us) = rate_and_cpu(|| cpu_time(std::process::id()), async {
        let report = closed_loop(noop.addr, DEFAULT_MAX_IN_FLIGHT, StatusCode::ACCEPTED, window(ctx), make).await;
        Ok(report.context("load tool against the no-op server")?.per_sec())
    })
    .await?;
    Ok(Cost { rate, cpu_us })
}

/// Rows 81 (delivery with 1, 10, 100 brokers) and 83 (delivery of 1 KiB vs 64 KiB events).
async fn delivery_rows(ctx: &Ctx, noop: &NoopProcess) -> anyhow::Result<Vec<Row>> {
    // Large next to 100 brokers × maxInFlight, the attempts already in flight at the release.
    let small_backlog = ctx.size(40_000, 20_000);
    let large_backlog = ctx.size(5_000, 2_000);
    let mut by_brokers: Vec<Vec<Cost>> = vec![Vec::new(); BROKER_COUNTS.len()];
    let (mut large, mut tool_small, mut tool_large) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=ctx.runs {
        tool_small.push(load_tool(ctx, noop, SMALL_EVENT).await?);
        for (slot, &brokers) in BROKER_COUNTS.iter().enumerate().filter(|(_, &b)| measured_in_run(b, run)) {
            let cost = delivery_once(ctx, noop, brokers, SMALL_EVENT, small_backlog).await?;
            progress(
                SCENARIO,
                format!(
                    "delivery run {run}/{}, {brokers} broker(s), {}-event backlog of 1 KiB ({} held in flight at the release): {}",
                    ctx.runs,
                    thousands(small_backlog as f64),
                    thousands(held_at_release(brokers, small_backlog) as f64),
                    cost.show()
                ),
            );
            by_brokers[slot].push(cost);
        }
        let cost = delivery_once(ctx, noop, 1, LARGE_EVENT, large_backlog).await?;
        progress(
            SCENARIO,
            format!(
                "delivery run {run}/{}, 1 broker, {}-event backlog of 64 KiB: {}",
                ctx.runs,
                thousands(large_backlog as f64),
                cost.show()
            ),
        );
        large.push(cost);
        tool_large.push(load_tool(ctx, noop, LARGE_EVENT).await?);
    }
    let by_brokers: Vec<Cost> = by_brokers.iter().map(|runs| Cost::median(runs)).collect();
    let (tool_small, tool_large) = (Cost::median(&tool_small), Cost::median(&tool_large));
    let (small, large) = (by_brokers[0], Cost::median(&large));
    let brokers_result = BROKER_COUNTS
        .iter()
        .zip(&by_brokers)
        .map(|(&brokers, cost)| {
            format!("{brokers}: {} events/s, {:.1} µs{}", thousands(cost.rate), cost.cpu_us, one_run_note(ctx, brokers))
        })
        .collect::<Vec<_>>()
        .join("; ");
    Ok(vec![
        Row::new(
            81,
            format!(
                "scale: delivery of a {}-event backlog of 1 KiB events spread over 1 / 10 / 100 brokers, one trigger each to the no-op subscriber (maxInFlight default {DEFAULT_MAX_IN_FLIGHT}), released at once: events/s and Switchyard CPU µs per event (counting from the release, less the attempts already waiting in the subscriber: 100 per trigger)",
                thousands(small_backlog as f64)
            ),
            format!(
                "{brokers_result} (load tool, {DEFAULT_MAX_IN_FLIGHT} connections: {} req/s, {:.1} µs)",
                thousands(tool_small.rate),
                tool_small.cpu_us
            ),
            "—",
            Met::NotApplicable,
        ),
        Row::new(
            83,
            format!(
                "scale: delivery of 1 KiB vs 64 KiB events from a backlog ({} / {} events), one broker, one trigger (maxInFlight default): events/s and CPU µs per event",
                thousands(small_backlog as f64),
                thousands(large_backlog as f64)
            ),
            format!(
                "1 KiB: {} events/s, {:.1} µs (load tool {:.1} µs); 64 KiB: {} events/s, {:.1} MB/s, {:.1} µs (load tool: {} req/s, {:.1} µs)",
                thousands(small.rate),
                small.cpu_us,
                tool_small.cpu_us,
                thousands(large.rate),
                large.rate * LARGE_EVENT as f64 / 1e6,
                large.cpu_us,
                thousands(tool_large.rate),
                tool_large.cpu_us
            ),
            "—",
            Met::NotApplicable,
        ),
    ])
}

/// Rows 84 (RSS) and 85 (idle CPU) with 10, 1,000 and 10,000 triggers declared on one broker
/// and no traffic.
async fn trigger_rows(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let counts = [10, ctx.size(1_000, 100) as usize, ctx.size(GOAL_TRIGGERS as u64, 1_000) as usize];
    let settle = Duration::from_secs(ctx.size(2, 1));
    let idle_window = Duration::from_secs(3);
    let mut results = Vec::new();
    for count in counts {
        // Declaring 10,000 triggers takes a while: one run of it.
        let runs = if count >= GOAL_TRIGGERS { 1 } else { ctx.runs };
        let (mut rss, mut idle) = (Vec::new(), Vec::new());
        for run in 1..=runs {
            let dir = ctx.scratch()?;
            let server = ctx.server(&dir).await?;
            let declared = Instant::now();
            // Nothing is ever delivered: the subscriber is never called.
            declare_triggers(&server, count, "http://127.0.0.1:9/").await?;
            let declare_secs = declared.elapsed().as_secs_f64();
            tokio::time::sleep(settle).await;
            let (cpu, wall) = (server.cpu()?, Instant::now());
            tokio::time::sleep(idle_window).await;
            let percent = (server.cpu()? - cpu).as_secs_f64() / wall.elapsed().as_secs_f64() * 100.0;
            let now = server.rss_mb()?;
            progress(
                SCENARIO,
                format!(
                    "{} triggers, run {run}/{runs}: declared in {declare_secs:.1} s; RSS {now:.1} MB; idle CPU {percent:.2}% of a core over {} s, {} threads",
                    thousands(count as f64),
                    idle_window.as_secs(),
                    threads(&server)
                ),
            );
            rss.push(now);
            idle.push(percent);
        }
        results.push((count, runs, median(&rss), median(&idle)));
    }
    let describe = |value: &dyn Fn(f64, f64) -> String| {
        results
            .iter()
            .map(|&(count, runs, rss, idle)| {
                let one_run = if runs == 1 && ctx.runs > 1 { " (1 run)" } else { "" };
                format!("{}: {}{one_run}", thousands(count as f64), value(rss, idle))
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let &(top, _, top_rss, top_idle) = results.last().expect("three counts");
    let judged = top >= GOAL_TRIGGERS;
    let judge = |met: bool| if judged { Met::from(met) } else { Met::NotApplicable };
    let goal_note =
        if judged { String::new() } else { format!(" (not judged: this run stops at {})", thousands(top as f64)) };
    let per_trigger_kb = |(count, rss): (usize, f64)| {
        let (first, _, first_rss, _) = results[0];
        (rss - first_rss) * 1e3 / (count - first) as f64
    };
    Ok(vec![
        Row::new(
            84,
            format!(
                "scale: RSS after declaring 10 / {} / {} triggers on one broker (settled {} s, no traffic)",
                thousands(counts[1] as f64),
                thousands(top as f64),
                settle.as_secs()
            ),
            format!(
                "{} (≈ {:.1} KB per trigger past 10)",
                describe(&|rss, _| format!("{rss:.1} MB")),
                per_trigger_kb((top, top_rss))
            ),
            &format!("≤ {RSS_GOAL_MB:.0} MB with {} triggers{goal_note}", thousands(GOAL_TRIGGERS as f64)),
            judge(top_rss <= RSS_GOAL_MB),
        ),
        Row::new(
            85,
            format!(
                "scale: idle CPU with 10 / {} / {} triggers declared, no traffic ({} s window after a {} s settle; /proc counts 10 ms ticks, so 0.33% is one tick)",
                thousands(counts[1] as f64),
                thousands(top as f64),
                idle_window.as_secs(),
                settle.as_secs()
            ),
            describe(&|_, idle| format!("{idle:.2}% of a core")),
            &format!("≤ {IDLE_CPU_GOAL_PERCENT:.0}% with {} triggers{goal_note}", thousands(GOAL_TRIGGERS as f64)),
            judge(top_idle <= IDLE_CPU_GOAL_PERCENT),
        ),
    ])
}

/// The server's thread count (`Threads:` of /proc/PID/status), or `?`.
fn threads(server: &Switchyard) -> String {
    server
        .pid()
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .and_then(|status| status.lines().find_map(|line| line.strip_prefix("Threads:")).map(|n| n.trim().to_owned()))
        .unwrap_or_else(|| "?".to_owned())
}

/// What one Kafka run measured.
#[derive(Debug, Clone, Copy)]
struct KafkaRun {
    /// Events/s from the first ingest request to the last 202.
    ingest_rate: f64,
    /// Events/s from the first ingest request to the last event's first delivery.
    end_to_end_rate: f64,
    /// CPU of every node over that span, per event.
    cpu_us: f64,
    /// Events never delivered.
    missing: u64,
    /// Deliveries past the first of each event.
    duplicates: u64,
}

/// Rows 86 and 87: Kafka with one node vs two (with `--kafka`).
async fn kafka_rows(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let events = ctx.size(10_000, 4_000);
    let metric = format!(
        "scale: Kafka, 1 vs 2 nodes on this one machine (same topic prefix), {} 1 KiB events split over the nodes' ingest URLs, {} connections in all, one trigger to a local subscriber: ingest events/s, end-to-end events/s, CPU µs per event over all nodes",
        thousands(events as f64),
        ctx.connections
    );
    let check = format!(
        "scale: Kafka, 2 nodes: every one of {} event ids delivered at least once (and extra deliveries)",
        thousands(events as f64)
    );
    let Some(url) = &ctx.kafka else {
        return Ok(vec![
            Row::new(86, metric, "not measured: needs --kafka kafka://HOST:PORT", "—", Met::NotApplicable),
            Row::new(87, check, "not measured: needs --kafka kafka://HOST:PORT", "nothing lost", Met::NotApplicable),
        ]);
    };
    let mut by_nodes: [Vec<KafkaRun>; 2] = [Vec::new(), Vec::new()];
    for run in 1..=ctx.runs {
        for nodes in [1, 2] {
            let result =
                kafka_once(ctx, url, nodes, events).await.with_context(|| format!("kafka with {nodes} node(s)"))?;
            progress(
                SCENARIO,
                format!(
                    "kafka run {run}/{}, {nodes} node(s): ingest {} events/s, end to end {} events/s, {:.1} µs CPU per event over all nodes; {} missing, {} extra deliveries",
                    ctx.runs,
                    thousands(result.ingest_rate),
                    thousands(result.end_to_end_rate),
                    result.cpu_us,
                    result.missing,
                    result.duplicates
                ),
            );
            by_nodes[nodes - 1].push(result);
        }
    }
    let summary = |runs: &[KafkaRun]| {
        let of = |f: fn(&KafkaRun) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        format!(
            "{} ingest, {} end to end events/s, {:.1} µs",
            thousands(of(|r| r.ingest_rate)),
            thousands(of(|r| r.end_to_end_rate)),
            of(|r| r.cpu_us)
        )
    };
    let counts = |runs: &[KafkaRun]| {
        let missing: u64 = runs.iter().map(|r| r.missing).sum();
        let duplicates: u64 = runs.iter().map(|r| r.duplicates).sum();
        (missing, duplicates)
    };
    let (one_missing, one_duplicates) = counts(&by_nodes[0]);
    let (two_missing, two_duplicates) = counts(&by_nodes[1]);
    let lost = one_missing + two_missing;
    Ok(vec![
        Row::new(86, metric, format!("1 node: {}; 2 nodes: {}", summary(&by_nodes[0]), summary(&by_nodes[1])), "—", Met::NotApplicable),
        Row::new(
            87,
            check,
            format!(
                "2 nodes: {two_missing} missing, {two_duplicates} extra deliveries; 1 node: {one_missing} missing, {one_duplicates} extra (over {} run(s) each)",
                ctx.runs
            ),
            "nothing lost",
            Met::from(lost == 0),
        ),
    ])
}

/// One Kafka run on `nodes` nodes of one cluster (a fresh topic prefix).
async fn kafka_once(ctx: &Ctx, url: &str, nodes: usize, events: u64) -> anyhow::Result<KafkaRun> {
    let backend = Backend::kafka_cluster(url);
    let mut dirs = Vec::new();
    let mut servers = Vec::new();
    for _ in 0..nodes {
        let dir = ctx.scratch()?;
        servers.push(Switchyard::start(&ctx.switchyard, &backend, &dir.path().join("data")).await?);
        dirs.push(dir);
    }
    servers[0].broker("b").await?;
    let subscriber = LatencySubscriber::start().await?;
    servers[0].trigger("scale", json!({"broker": "b", "subscriber": {"uri": subscriber.url}})).await?;
    prime_nodes(&servers, &subscriber).await?;
    let primed_requests = subscriber.requests();

    let share = events / nodes as u64;
    let connections = (ctx.connections / nodes).max(1);
    let cpu_before = nodes_cpu(&servers)?;
    let started = Instant::now();
    let mut loads = tokio::task::JoinSet::new();
    for (index, server) in servers.iter().enumerate() {
        let first_id = index as u64 * share;
        let count = if index + 1 == nodes { events - first_id } else { share };
        let make = tracked_events(server.addr, first_id);
        loads.spawn(closed_loop(server.addr, connections, StatusCode::ACCEPTED, Length::Total(count), make));
    }
    while let Some(result) = loads.join_next().await {
        result?.context("ingest")?;
    }
    let ingested = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    while (subscriber.count() as u64) < events && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let delivered = started.elapsed();
    let cpu = nodes_cpu(&servers)? - cpu_before;
    // Late duplicates (a rebalance's redeliveries) are counted too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, missing) = subscriber.latencies(0, events);
    let distinct = subscriber.count() as u64;
    let duplicates = (subscriber.requests() - primed_requests).saturating_sub(distinct);
    Ok(KafkaRun {
        ingest_rate: events as f64 / ingested.as_secs_f64(),
        end_to_end_rate: events as f64 / delivered.as_secs_f64(),
        cpu_us: cpu.as_secs_f64() * 1e6 / events as f64,
        missing,
        duplicates,
    })
}

fn nodes_cpu(servers: &[Switchyard]) -> anyhow::Result<Duration> {
    servers.iter().map(Switchyard::cpu).sum()
}

/// 1 KiB binary events to broker `b` with numeric ids from `first_id` (so the subscriber can
/// tell them apart) and sources spread over 64 values (so their keyless partitions spread over
/// the topic's partitions, and every node's group member gets its share).
fn tracked_events(addr: SocketAddr, first_id: u64) -> MakeRequest {
    let host = addr.to_string();
    let data = Bytes::from(vec![b'x'; SMALL_EVENT]);
    Arc::new(move |seq| {
        let id = first_id + seq;
        Request::post("/default/b")
            .header(HOST, &host)
            .header("ce-specversion", "1.0")
            .header("ce-id", id)
            .header("ce-type", "t")
            .header("ce-source", format!("/bench/{}", id % 64))
            .header("ce-benchsent", nanos_since_epoch(Instant::now()))
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(Full::new(data.clone()))
            .expect("a valid request")
    })
}

/// Waits until every node takes events for broker `b` (the second learns of it from the
/// cluster's declarations) and every node's member of the trigger's consumer group has
/// delivered (so the group's rebalance is over and each holds partitions), sending rounds of
/// untimed primers (non-numeric ids, sources over every partition) to every node.
async fn prime_nodes(servers: &[Switchyard], subscriber: &LatencySubscriber) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut sent = 0_u64;
    loop {
        for server in servers {
            for source in 0..16 {
                let mut request = client
                    .post(format!("{}/default/b", server.url))
                    .header("ce-specversion", "1.0")
                    .header("ce-id", format!("primer-{sent}"))
                    .header("ce-type", "t")
                    .header("ce-source", format!("/primer/{source}"))
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .body("primer");
                if let Some(authorization) = crate::server::authorization() {
                    request = request.header(http::header::AUTHORIZATION, authorization);
                }
                if request.send().await.is_ok_and(|response| response.status() == StatusCode::ACCEPTED) {
                    sent += 1;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut delivering = 0;
        for server in servers {
            if server.metric("switchyard_delivery_attempts_total").await.is_some_and(|attempts| attempts > 0.0) {
                delivering += 1;
            }
        }
        if delivering == servers.len() && subscriber.requests() >= sent {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{delivering} of {} nodes delivered and {} of {sent} primers arrived within 180 s; first node's log tail:\n{}",
                servers.len(),
                subscriber.requests(),
                servers[0].log_tail()
            );
        }
    }
}
