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
