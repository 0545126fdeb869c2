//! `switchyard`: a CloudEvents broker and trigger router.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use switchyard::cli::{dead_letter_table, read_file_or_stdin, resource_plural, table, Client, SendRequest};
use switchyard::config::{Flags, ServeConfig};

/// How long `switchyard health` waits for the whole answer: well under a container
/// HEALTHCHECK's own timeout, and far above what a node that is up needs.
const HEALTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// jemalloc instead of glibc's malloc: glibc's malloc and free took about a fifth of the CPU of
/// every delivered event (BENCHMARKS.md, "Where the CPU goes"). Its options (two arenas, freed
/// pages returned after a second) are built in: `JEMALLOC_SYS_WITH_MALLOC_CONF` in
/// `.cargo/config.toml`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "switchyard", version = switchyard::VERSION, about = "A CloudEvents broker and trigger router")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker (embedded log in the data directory).
    Serve {
        #[command(flatten)]
        settings: Settings,
        /// Log format.
        #[arg(long, value_enum, default_value_t = LogFormat::Pretty, env = "SWITCHYARD_LOG_FORMAT")]
        log_format: LogFormat,
    },
    /// Check that a server is ready (GET /readyz): exit 0 when it answers 200, 1 otherwise. For
    /// container HEALTHCHECKs, where there is no curl.
    Health {
        #[command(flatten)]
        server: ServerArg,
    },
    /// Show the server configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Send one event to a broker.
    Send {
        #[command(flatten)]
        server: ServerArg,
        /// The broker, as namespace/name.
        #[arg(long)]
        broker: String,
        /// The event type.
        #[arg(long = "type")]
        ty: String,
        /// The event source.
        #[arg(long)]
        source: String,
        /// The event id [default: a random UUID].
        #[arg(long)]
        id: Option<String>,
        /// The subject.
        #[arg(long)]
        subject: Option<String>,
        /// The data, or @FILE (@- for standard input).
        #[arg(long)]
        data: Option<String>,
        /// The data's content type [default: application/json when there is data].
        #[arg(long)]
        content_type: Option<String>,
        /// An extension attribute, name=value (repeatable).
        #[arg(long = "extension", short = 'x')]
        extensions: Vec<String>,
        /// Send in structured mode (application/cloudevents+json) instead of binary mode.
        #[arg(long)]
        structured: bool,
    },
    /// Create or replace the Brokers, Triggers and sources in a Knative YAML file (multi-document).
    Apply {
        #[command(flatten)]
        server: ServerArg,
        /// The file (- for standard input).
        #[arg(short = 'f', long = "filename")]
        file: String,
    },
    /// Show brokers, triggers or sources.
    Get {
        #[command(flatten)]
        server: ServerArg,
        #[arg(help = switchyard::cli::kinds_help())]
        kind: String,
        /// One resource by name.
        name: Option<String>,
        /// The namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Try a trigger's filters against an event.
    Filter {
        #[command(flatten)]
        server: ServerArg,
        #[command(subcommand)]
        command: FilterCommand,
    },
    /// Evaluate a CESQL expression against an event.
    Cesql {
        #[command(flatten)]
        server: ServerArg,
        /// The expression, e.g. "type LIKE 'order.%' AND EXISTS region".
        expression: String,
        /// The event, in the JSON event format (- for standard input).
        #[arg(short = 'e', long = "event")]
        event: String,
    },
    /// Inspect, redrive or purge a trigger's dead-letter store.
    Deadletters {
        #[command(flatten)]
        server: ServerArg,
        #[command(subcommand)]
        command: DeadLetterCommand,
    },
    /// Make a bearer token for [auth], or hash one.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Delete a broker, a trigger or a source.
    Delete {
        #[command(flatten)]
        server: ServerArg,
        #[arg(help = switchyard::cli::kinds_help())]
        kind: String,
        /// The name.
        name: String,
        /// The namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
}

/// Where `serve` takes its configuration from, besides `SWITCHYARD_*` variables.
#[derive(clap::Args)]
struct Settings {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long)]
    listen: Option<String>,
    /// Data directory [default: ./switchyard-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// TOML configuration file.
    #[arg(long, env = "SWITCHYARD_CONFIG")]
    config: Option<PathBuf>,
    /// Export spans over OTLP/HTTP to this collector, e.g. http://127.0.0.1:4318 [default: none].
    #[arg(long)]
    otlp_endpoint: Option<String>,
    /// The event log: embedded, or kafka://host:port[,host:port] [default: embedded].
    #[arg(long)]
    log: Option<String>,
    /// Prefix of Kafka topics and groups; nodes with the same one form a cluster [default: switchyard.].
    #[arg(long)]
    kafka_topic_prefix: Option<String>,
    /// A Kubernetes API server's kubeconfig: resolves `ref` destinations, is ApiServerSource's
    /// default cluster, and reconciles Knative Brokers of Switchyard's class [default: none].
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Serve the admin API (`/v1/…`) on this address alone, e.g. 127.0.0.1:9090; --listen then
    /// serves ingest, webhooks and probes [default: one listener serves all].
    #[arg(long)]
    admin_listen: Option<String>,
    /// Serve a non-loopback listener with no [auth] token configured: anyone who reaches the
    /// port controls the server. Without it, such a listener refuses to start.
    #[arg(long)]
    allow_unauthenticated: bool,
}

impl Settings {
    /// Defaults ← file ← environment ← flags.
    fn resolve(self) -> anyhow::Result<ServeConfig> {
        let env = |var: &str| std::env::var(var).ok();
        let flags = Flags {
            listen: self.listen,
            admin_listen: self.admin_listen,
            data_dir: self.data_dir,
            otlp_endpoint: self.otlp_endpoint,
            log: self.log,
            kafka_topic_prefix: self.kafka_topic_prefix,
            kubeconfig: self.kubeconfig,
            allow_unauthenticated: self.allow_unauthenticated,
        };
        Ok(ServeConfig::resolve_with(self.config.as_deref(), &env, flags)?)
    }
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a new random token (first line: give it to its holder) and the line that
    /// configures it (second line: for [auth] tokens_file or SWITCHYARD_AUTH_TOKENS).
    New {
        /// Who holds it (audit lines name it).
        #[arg(long)]
        name: String,
        /// admin, namespace-admin, namespace-reader or ingest.
        #[arg(long)]
        role: String,
        /// The namespace of a namespace role or an ingest token.
        #[arg(long)]
        namespace: Option<String>,
        /// The one broker an ingest token may send to.
        #[arg(long)]
        broker: Option<String>,
    },
    /// Print the SHA-256 (hex) of a token read from standard input, as [auth] configures it.
    Hash,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration (defaults, file, environment and flags) as TOML.
    Print {
        #[command(flatten)]
        settings: Settings,
    },
}

#[derive(Subcommand)]
enum FilterCommand {
    /// Does the event pass the trigger's filter/filters?
    Test {
        /// A Knative Trigger YAML file (its spec.filter and spec.filters are used).
        #[arg(short = 'f', long = "filename")]
        file: String,
        /// The event, in the JSON event format (- for standard input).
        #[arg(short = 'e', long = "event")]
        event: String,
    },
}

#[derive(Subcommand)]
enum DeadLetterCommand {
    /// List a trigger's dead letters (one page).
    List {
        /// The trigger.
        trigger: String,
        /// The namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// Entries per page (1-1000).
        #[arg(long)]
        limit: Option<usize>,
        /// Start after this id.
        #[arg(long)]
        after: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Redeliver dead letters through the trigger's current subscriber and policy.
    Redrive {
        /// The trigger.
        trigger: String,
        /// The namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// Only these entries (repeatable); all when absent.
        #[arg(long = "id")]
        ids: Vec<String>,
    },
    /// Delete dead letters for good.
    Purge {
        /// The trigger.
        trigger: String,
        /// The namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// Only this entry; all when absent.
        #[arg(long)]
        id: Option<String>,
    },
}

#[derive(clap::Args)]
struct ServerArg {
    /// The switchyard server.
    #[arg(long, env = "SWITCHYARD_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// A bearer token for a server with [auth] tokens.
    #[arg(long, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// CA certificates (PEM) to trust for an https server, besides the built-in roots.
    #[arg(long, env = "SWITCHYARD_CACERT")]
    cacert: Option<PathBuf>,
}

impl ServerArg {
    fn client(&self) -> anyhow::Result<Client> {
        Client::trusting(&self.server, self.token.as_deref(), self.cacert.as_deref())
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
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
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", format!("{error:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { settings, log_format } => {
            init_tracing(log_format);
            switchyard::serve::serve(settings.resolve()?).await
        }
        Command::Health { server } => health(&server.server, server.cacert.as_deref()).await,
        Command::Config { command: ConfigCommand::Print { settings } } => {
            print!("{}", toml::to_string(&settings.resolve()?.to_file())?);
            Ok(())
        }
        Command::Send { server, broker, ty, source, id, subject, data, content_type, extensions, structured } => {
            let client = server.client()?;
            let request = SendRequest { broker, ty, source, id, subject, data, content_type, extensions, structured };
            let id = client.send(request).await?;
            println!("accepted event {id}");
            Ok(())
        }
        Command::Apply { server, file } => {
            let text = String::from_utf8(read_file_or_stdin(&file)?)?;
            for line in server.client()?.apply(&text).await? {
                println!("{line}");
            }
            Ok(())
        }
        Command::Get { server, kind, name, namespace, all_namespaces, output } => {
            let plural = resource_plural(&kind)?;
            let namespace = (!all_namespaces).then_some(namespace.as_str());
            let value = server.client()?.get(plural, namespace, name.as_deref()).await?;
            match output {
                Output::Table => println!("{}", table(&value, plural)),
                Output::Json => println!("{}", serde_json::to_string_pretty(&value)?),
                Output::Yaml => print!("{}", yaml_serde::to_string(&value)?),
            }
            Ok(())
        }
        Command::Filter { server, command: FilterCommand::Test { file, event } } => {
            let trigger = String::from_utf8(read_file_or_stdin(&file)?)?;
            let event = read_event(&event)?;
            let answer = server.client()?.test_filter(&trigger, event).await?;
            let matched = answer.get("matched").and_then(serde_json::Value::as_bool).unwrap_or(false);
            println!("{}", if matched { "matched" } else { "not matched" });
            for error in answer.get("errors").and_then(serde_json::Value::as_array).into_iter().flatten() {
                println!("error: {}", error.as_str().unwrap_or_default());
            }
            Ok(())
        }
        Command::Cesql { server, expression, event } => {
            let event = read_event(&event)?;
            let answer = server.client()?.evaluate_cesql(&expression, event).await?;
            match answer.get("error").filter(|e| !e.is_null()) {
                None => {
                    println!("{}", answer.get("result").cloned().unwrap_or_default());
                    Ok(())
                }
                Some(error) => {
                    let kind = error.get("kind").and_then(serde_json::Value::as_str).unwrap_or("generic");
                    let message = error.get("message").and_then(serde_json::Value::as_str).unwrap_or_default();
                    anyhow::bail!("cesql {kind} error: {message}")
                }
            }
        }
        Command::Deadletters { server, command } => {
            let client = server.client()?;
            match command {
                DeadLetterCommand::List { trigger, namespace, limit, after, output } => {
                    let value = client.list_dead_letters(&namespace, &trigger, limit, after.as_deref()).await?;
                    match output {
                        Output::Table => println!("{}", dead_letter_table(&value)),
                        Output::Json => println!("{}", serde_json::to_string_pretty(&value)?),
                        Output::Yaml => print!("{}", yaml_serde::to_string(&value)?),
                    }
                }
                DeadLetterCommand::Redrive { trigger, namespace, ids } => {
                    client.redrive_dead_letters(&namespace, &trigger, &ids).await?;
                    let what = if ids.is_empty() {
                        "all dead letters".to_owned()
                    } else {
                        format!("{} dead letters", ids.len())
                    };
                    println!("redriving {what} of trigger/{namespace}/{trigger}");
                }
                DeadLetterCommand::Purge { trigger, namespace, id } => {
                    let purged = client.purge_dead_letters(&namespace, &trigger, id.as_deref()).await?;
                    println!("purged {purged} dead letters of trigger/{namespace}/{trigger}");
                }
            }
            Ok(())
        }
        Command::Token { command: TokenCommand::New { name, role, namespace, broker } } => {
            let token = switchyard::auth::new_token()?;
            let mut line = format!("name={name} sha256={} role={role}", switchyard::auth::sha256_hex(&token));
            line.extend(namespace.map(|namespace| format!(" namespace={namespace}")));
            line.extend(broker.map(|broker| format!(" broker={broker}")));
            // Checked as the server will check it, so a typo fails here rather than at start.
            switchyard::auth::AuthConfig::from_file(switchyard::auth::AuthFile::default(), Some(&line))
                .map_err(|(_, message)| anyhow::anyhow!("{message}"))?;
            println!("{token}\n{line}");
            Ok(())
        }
        Command::Token { command: TokenCommand::Hash } => {
            let mut token = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut token)?;
            let token = token.trim();
            anyhow::ensure!(!token.is_empty(), "no token on standard input");
            println!("{}", switchyard::auth::sha256_hex(token));
            Ok(())
        }
        Command::Delete { server, kind, name, namespace } => {
            let plural = resource_plural(&kind)?;
            server.client()?.delete(plural, &namespace, &name).await?;
            println!("{}/{namespace}/{name} deleted", plural.trim_end_matches('s'));
            Ok(())
        }
    }
}

/// `switchyard health`: `ready`, or an error saying why not (`not ready: 503 …`, `cannot reach
/// …`), which `main` prints as the one line of standard error and exits 1 on.
async fn health(server: &str, cacert: Option<&std::path::Path>) -> anyhow::Result<()> {
    let url = format!("{}/readyz", server.trim_end_matches('/'));
    // No proxy: the check is about a server on this host (or in this pod), which a proxy taken
    // from the environment could not reach, or would answer for.
    let builder =
        reqwest::Client::builder().timeout(HEALTH_TIMEOUT).no_proxy().redirect(reqwest::redirect::Policy::none());
    let client = switchyard::cli::trust_ca_file(builder, cacert)?.build()?;
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|error| anyhow::anyhow!("cannot reach {url}: {}", error_chain(&error)))?;
    let status = response.status();
    if status == reqwest::StatusCode::OK {
        println!("ready");
        return Ok(());
    }
    // A problem+json answer says why (the node is stopping); anything else is shown as it came.
    let body = response.text().await.unwrap_or_default();
    let detail = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|problem| problem.get("detail").and_then(serde_json::Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| body.chars().take(200).collect());
    match detail.trim() {
        "" => anyhow::bail!("not ready: {status}"),
        detail => anyhow::bail!("not ready: {status}: {detail}"),
    }
}

/// An error's causes on one line: reqwest's own message only repeats the URL ("error sending
/// request for url (…)"), its causes say what went wrong (refused, timed out, reset).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut causes = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    if causes.is_empty() {
        error.to_string()
    } else {
        causes.join(": ")
    }
}

fn read_event(path: &str) -> anyhow::Result<serde_json::Value> {
    let bytes = read_file_or_stdin(path)?;
    serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("'{path}' is not a JSON event: {e}"))
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWITCHYARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
