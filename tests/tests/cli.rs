//! The `switchyard` CLI against a real server.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use switchyard_tests::{binary, Server, Subscriber};

fn cli(server: &Server, args: &[&str]) -> Output {
    Command::new(binary()).args(args).env("SWITCHYARD_SERVER", &server.url).output().expect("run cli")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn apply_get_send_delete() {
    let server = Server::start().await;
    let subscriber = Subscriber::start().await;
    let yaml = format!(
        r#"apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: default
  namespace: shop
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: orders
  namespace: shop
spec:
  broker: default
  filter:
    attributes:
      type: order.created
  subscriber:
    uri: {}
"#,
        subscriber.url
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shop.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let output = cli(&server, &["apply", "-f", file.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "broker/shop/default created\ntrigger/shop/orders created\n");
    // Applying again configures, from standard input.
    let mut child = Command::new(binary())
        .args(["apply", "-f", "-"])
        .env("SWITCHYARD_SERVER", &server.url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    assert!(stdout(&output).contains("trigger/shop/orders configured"));

    let output = cli(&server, &["get", "brokers", "-n", "shop"]);
    assert!(output.status.success());
    let table = stdout(&output);
    assert!(table.starts_with("NAMESPACE"), "{table}");
    assert!(table.contains(&format!("{}/shop/default", server.url)), "{table}");
    let output = cli(&server, &["get", "triggers", "orders", "-n", "shop", "-o", "json"]);
    let trigger: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(trigger["spec"]["filter"]["attributes"]["type"], "order.created");
    let output = cli(&server, &["get", "triggers", "-A", "-o", "yaml"]);
    assert!(stdout(&output).contains("name: orders"));

    let output = cli(
        &server,
        &[
            "send",
            "--broker",
            "shop/default",
            "--type",
            "order.created",
            "--source",
            "/cli",
            "--id",
            "c1",
            "--data",
            r#"{"n":1}"#,
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let data_file = dir.path().join("data.json");
    std::fs::write(&data_file, r#"{"n":2}"#).unwrap();
    let at_file = format!("@{}", data_file.display());
    let output = cli(
        &server,
        &[
            "send",
            "--broker",
            "shop/default",
            "--type",
            "order.created",
            "--source",
            "/cli",
            "--id",
            "c2",
            "--data",
            &at_file,
            "--structured",
            "-x",
            "region=eu",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let received = subscriber.wait_for(2, Duration::from_secs(15)).await;
    let c2 = received.iter().find(|r| r.header("ce-id") == Some("c2")).unwrap();
    assert_eq!(&c2.body[..], br#"{"n":2}"#);
    assert_eq!(c2.header("ce-region"), Some("eu"));

    let output = cli(&server, &["delete", "trigger", "orders", "-n", "shop"]);
    assert!(output.status.success());
    assert_eq!(stdout(&output), "trigger/shop/orders deleted\n");
}

#[tokio::test]
async fn errors_are_one_line_with_exit_codes() {
    let server = Server::start().await;
    // Usage error: 2.
    let output = cli(&server, &["get"]);
    assert_eq!(output.status.code(), Some(2));
    let output = cli(&server, &["frobnicate"]);
    assert_eq!(output.status.code(), Some(2));
    // A failure: 1, one line naming the problem.
    let output = cli(&server, &["send", "--broker", "default/missing", "--type", "t", "--source", "/s"]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(message.contains("404") && message.contains("default/missing"), "{message}");
    let output = cli(&server, &["get", "widgets"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("widgets"));
    let output = Command::new(binary()).args(["get", "brokers", "--server", "http://127.0.0.1:9"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("cannot reach"));
}

#[tokio::test]
async fn deadletters_list_redrive_purge() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    let subscriber = Subscriber::start().await;
    subscriber.always(reqwest::StatusCode::UNPROCESSABLE_ENTITY);
    server.trigger("default", "t", serde_json::json!({"broker": "b", "subscriber": {"uri": subscriber.url}})).await;
    for id in ["d1", "d2", "d3"] {
        server.send_binary("default", "b", id, "t", b"{}").await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let table = loop {
        let output = cli(&server, &["deadletters", "list", "t"]);
        assert!(output.status.success(), "{}", stderr(&output));
        let table = stdout(&output);
        if table.lines().count() == 4 {
            break table;
        }
        assert!(std::time::Instant::now() < deadline, "{table}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains("d1") && table.contains("422"), "{table}");
    let output = cli(&server, &["deadletters", "list", "t", "-o", "json", "--limit", "1"]);
    let page: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let first_id = page["items"][0]["id"].as_str().unwrap().to_owned();

    subscriber.always(reqwest::StatusCode::OK);
    let first_event = page["items"][0]["event"]["id"].as_str().unwrap().to_owned();
    let attempts_of =
        |s: &Subscriber| s.received().iter().filter(|r| r.header("ce-id") == Some(first_event.as_str())).count();
    let before = attempts_of(&subscriber);
    let output = cli(&server, &["deadletters", "redrive", "t", "--id", &first_id]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "redriving 1 dead letters of trigger/default/t\n");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while attempts_of(&subscriber) == before {
        assert!(std::time::Instant::now() < deadline, "{first_event} was not redriven");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let output = cli(&server, &["deadletters", "purge", "t"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let purged = stdout(&output);
    assert!(
        purged == "purged 2 dead letters of trigger/default/t\n"
            || purged == "purged 3 dead letters of trigger/default/t\n",
        "{purged}"
    );
    let output = cli(&server, &["deadletters", "list", "nope"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("default/nope"));
}

#[test]
fn config_print_shows_defaults_file_environment_and_flags_layered() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("switchyard.toml");
    std::fs::write(&file, "max_event_bytes = 2048\nshutdown_grace_secs = 3\n[retention]\nmax_age_hours = 24\n")
        .unwrap();
    let output = Command::new(binary())
        .args(["config", "print", "--config", file.to_str().unwrap(), "--listen", "127.0.0.1:9999"])
        .env("SWITCHYARD_MAX_EVENT_BYTES", "4096")
        .env("SWITCHYARD_LISTEN", "127.0.0.1:7777")
        .env("SWITCHYARD_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = stdout(&output);
    for line in [
        "listen = \"127.0.0.1:9999\"",
        "max_event_bytes = 4096",
        "shutdown_grace_secs = 3",
        "max_age_hours = 24",
        "max_batch_bytes = 10485760",
        "[tracing]",
        "otlp_endpoint = \"http://127.0.0.1:4318/\"",
    ] {
        assert!(printed.lines().any(|l| l == line), "missing {line:?} in:\n{printed}");
    }
    let output =
        Command::new(binary()).args(["config", "print"]).env("SWITCHYARD_RETENTION_MAX_BYTES", "big").output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.contains("SWITCHYARD_RETENTION_MAX_BYTES") && message.contains("big"), "{message}");
}

#[test]
fn serve_refuses_a_kubeconfig_it_cannot_use_and_names_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbled = dir.path().join("garbled");
    std::fs::write(&garbled, "clusters: [not a kubeconfig").expect("write");
    for kubeconfig in [garbled, dir.path().join("missing")] {
        let output = Command::new(binary())
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--kubeconfig"])
            .arg(&kubeconfig)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .output()
            .expect("run serve");
        assert!(!output.status.success(), "serve started with {}", kubeconfig.display());
        let error = stderr(&output);
        assert!(error.contains(&format!("cannot use kubeconfig '{}'", kubeconfig.display())), "{error}");
    }
}
