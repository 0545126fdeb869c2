//! Interop with an independent CloudEvents SDK: the Python `cloudevents` 2.x package sends in
//! binary and structured mode and decodes what its subscriber receives (`tests/interop/`).

use std::process::Command;

use switchyard_tests::Server;

#[tokio::test]
async fn python_sdk_events_arrive_identical() {
    let server = Server::start().await;
    server.broker("default", "interop").await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/sdk_roundtrip.py");
    let url = server.url.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3").arg(script).args([url.as_str(), "default", "interop"]).output()
    })
    .await
    .unwrap()
    .expect("python3 runs (the test command installs the cloudevents package)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "interop failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("8 events sent, 8 delivered, 0 mismatches"), "{stdout}");
}
