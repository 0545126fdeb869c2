//! `switchyard-bench`: measures the release `switchyard` binary and prints one markdown table
//! (metric | result | goal | met?). Performance goals live here, never in timed tests.
//!
//! `./scripts/bench.sh [--runs N] [--quick] [--only SCENARIO]...` builds the release binaries
//! and runs this; see BENCHMARKS.md for the last table and what each row measures.

mod load;
mod noop;
mod peer;
mod report;
mod scale;
mod scenarios;
mod server;
mod subscriber;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::report::{Met, Row};
use crate::scenarios::Ctx;

#[derive(Parser)]
#[command(
    name = "switchyard-bench",
    about = "Benchmarks the release switchyard binary and prints one table",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The switchyard binary [default: `switchyard` beside this binary].
    #[arg(long)]
    switchyard: Option<PathBuf>,
    /// Runs per number: each is the median of this many [default: 3, or 1 with --quick].
    #[arg(long)]
    runs: Option<usize>,
    /// Small sizes and short windows: a smoke run of about a minute.
    #[arg(long)]
    quick: bool,
    /// Run only these scenarios (repeatable).
    #[arg(long, value_enum)]
    only: Vec<Scenario>,
    /// Connections of the ingest comparison (the same against Switchyard and the no-op server).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Also measure on this Kafka (`serve --log URL`), e.g. kafka://127.0.0.1:19092 after
    /// `deploy/kafka/local.sh up`: the Kafka latency row and the Kafka ingest comparisons.
    #[arg(long)]
    kafka: Option<String>,
    /// Also measure this peer side by side with Switchyard on Kafka (needs --kafka): Dapr's
    /// `daprd` with `pubsub.kafka`, built by bench/dapr/build.sh when not cached.
    #[arg(long, value_enum)]
    peer: Option<peer::Peer>,
    /// Where the data directories go (each is removed after its scenario) [default: the
    /// system temporary directory].
    #[arg(long)]
    data_root: Option<PathBuf>,
    /// Run Switchyard with authentication on (an admin bearer token on every request; loopback
    /// destinations allowed), to compare with a run without.
    #[arg(long)]
    auth: bool,
}

#[derive(Subcommand)]
enum Command {
    /// The no-op server: reads each request's body and answers 202 (used by the benchmark).
    NoopServer {
        /// Where to listen; prints `listening on ADDR` once it does.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
}

/// The scenarios, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// RSS of an idle server.
    Idle,
    /// Ingest requests/s next to a no-op handler.
    Ingest,
    /// Ingest on Kafka next to the embedded log and a raw rdkafka producer (with --kafka).
    KafkaIngest,
    /// Batch ingest events/s.
    Batch,
    /// GitHub webhook deliveries/s next to plain ingest of the same payload.
    Webhook,
    /// End-to-end latency at a fixed offered rate.
    Latency,
    /// Delivery rate next to the load tool's rate.
    Delivery,
    /// Dispatch throughput with 10 vs 10,000 triggers, and RSS with 10,000.
    Triggers,
    /// RSS with a stalled subscriber and a large backlog.
    Backlog,
    /// Restart-to-ready with many events retained.
    Restart,
    /// A peer side by side with Switchyard on Kafka (with --peer and --kafka).
    Peer,
    /// How cost grows with brokers, event size, triggers and Kafka nodes.
    Scale,
}

impl Scenario {
    const ALL: [Scenario; 12] = [
        Scenario::Idle,
        Scenario::Ingest,
        Scenario::KafkaIngest,
        Scenario::Batch,
        Scenario::Webhook,
        Scenario::Latency,
        Scenario::Delivery,
        Scenario::Triggers,
        Scenario::Backlog,
        Scenario::Restart,
        Scenario::Scale,
        Scenario::Peer,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::Idle => "idle",
            Scenario::Ingest => "ingest",
            Scenario::KafkaIngest => "kafka-ingest",
            Scenario::Batch => "batch",
            Scenario::Webhook => "webhook",
            Scenario::Latency => "latency",
            Scenario::Delivery => "delivery",
            Scenario::Triggers => "triggers",
            Scenario::Backlog => "backlog",
            Scenario::Restart => "restart",
            Scenario::Scale => "scale",
            Scenario::Peer => "peer",
        }
    }

    /// Where its rows go when it fails.
    fn order(self) -> u8 {
        match self {
            Scenario::Idle => 60,
            Scenario::Ingest => 10,
            Scenario::KafkaIngest => 15,
            Scenario::Batch => 20,
            Scenario::Webhook => 25,
            Scenario::Latency => 30,
            Scenario::Delivery => 40,
            Scenario::Triggers => 50,
            Scenario::Backlog => 62,
            Scenario::Restart => 70,
            Scenario::Scale => 80,
            Scenario::Peer => 35,
        }
    }

    async fn run(self, ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
        match self {
            Scenario::Idle => scenarios::idle(ctx).await,
            Scenario::Ingest => scenarios::ingest(ctx).await,
            Scenario::KafkaIngest => scenarios::kafka_ingest(ctx).await,
            Scenario::Batch => scenarios::batch(ctx).await,
            Scenario::Webhook => scenarios::webhook(ctx).await,
            Scenario::Latency => scenarios::latency(ctx).await,
            Scenario::Delivery => scenarios::delivery(ctx).await,
            Scenario::Triggers => scenarios::triggers(ctx).await,
            Scenario::Backlog => scenarios::backlog(ctx).await,
            Scenario::Restart => scenarios::restart(ctx).await,
            Scenario::Scale => scale::scale(ctx).await,
            Scenario::Peer => peer::peer(ctx).await,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Some(Command::NoopServer { listen }) => runtime.block_on(noop::run(listen, http::StatusCode::ACCEPTED)),
        None => runtime.block_on(bench(cli)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn bench(cli: Cli) -> anyhow::Result<()> {
    let bench_exe = std::env::current_exe().context("cannot find this binary")?;
    let switchyard = match cli.switchyard {
        Some(path) => path,
        None => bench_exe.parent().context("this binary has no folder")?.join("switchyard"),
    };
    anyhow::ensure!(
        switchyard.is_file(),
        "'{}' is missing: build it with `cargo build --release -p switchyard`, or pass --switchyard",
        switchyard.display()
    );
    server::set_auth(cli.auth);
    let ctx = Ctx {
        switchyard,
        bench_exe,
        data_root: cli.data_root.unwrap_or_else(std::env::temp_dir),
        runs: cli.runs.unwrap_or(if cli.quick { 1 } else { 3 }).max(1),
        quick: cli.quick,
        connections: cli.connections.max(1),
        kafka: cli.kafka,
        peer: cli.peer,
    };
    let scenarios: Vec<Scenario> =
        Scenario::ALL.into_iter().filter(|s| cli.only.is_empty() || cli.only.contains(s)).collect();
    let (fsync_before, load_before) = (report::fsync_probe(&ctx.data_root), report::load_average());
    let started = Instant::now();
    eprintln!(
        "switchyard-bench: {} with {} run(s) each{} on {}",
        scenarios.iter().map(|s| s.name()).collect::<Vec<_>>().join(", "),
        ctx.runs,
        if ctx.quick { " (quick sizes)" } else { "" },
        ctx.switchyard.display()
    );
    let mut rows = Vec::new();
    let mut failed = false;
    for scenario in scenarios {
        let scenario_started = Instant::now();
        match scenario.run(&ctx).await {
            Ok(mut scenario_rows) => rows.append(&mut scenario_rows),
            Err(error) => {
                failed = true;
                eprintln!("[{}] failed: {error:#}", scenario.name());
                rows.push(Row::new(
                    scenario.order(),
                    format!("scenario `{}`", scenario.name()),
                    format!("error: {}", format!("{error:#}").replace('\n', " ").replace('|', "/")),
                    "—",
                    Met::No,
                ));
            }
        }
        eprintln!("[{}] took {:.0} s", scenario.name(), scenario_started.elapsed().as_secs_f64());
    }
    if cli.auth {
        rows.iter_mut().for_each(|row| row.metric.push_str(" [authentication on]"));
    }
    println!("{}", report::table(&rows));
    println!("Each result is the median of {} run(s){}.", ctx.runs, if ctx.quick { " at --quick sizes" } else { "" });
    let elapsed = started.elapsed();
    println!("Machine:\n{}", report::machine());
    println!(
        "- disk ({}): fdatasync after a 1 KiB append (200 samples), before: {fsync_before}; after: {}",
        ctx.data_root.display(),
        report::fsync_probe(&ctx.data_root)
    );
    println!("- load average (1 min), before: {load_before}; after: {}", report::load_average());
    println!("\nTotal time: {:.1} min.", elapsed.as_secs_f64() / 60.0);
    anyhow::ensure!(!failed, "some scenarios failed (see above)");
    Ok(())
}
