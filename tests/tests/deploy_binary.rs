//! The binary as deployed: systemd's notification protocol spoken for real (`Type=notify`), the
//! unit in `deploy/systemd/` verified by systemd itself, the shared libraries the binary needs,
//! `--version`, and `switchyard health` (the container image's HEALTHCHECK).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use switchyard_tests::{binary, free_port, Server};
use tokio::net::UnixDatagram;

/// The repository's root (this crate is `tests/`).
fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the repository root").to_path_buf()
}

/// A `switchyard serve` started as systemd starts a `Type=notify` unit: with `NOTIFY_SOCKET`
/// naming a datagram socket this test bound.
struct NotifiedServer {
    child: Child,
    socket: UnixDatagram,
    url: String,
    log: PathBuf,
    _temp: tempfile::TempDir,
}

impl NotifiedServer {
    fn start(env: &[(&str, &str)]) -> NotifiedServer {
        let temp = tempfile::tempdir().expect("tempdir");
        let socket_path = temp.path().join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("bind the notify socket");
        socket.set_nonblocking(true).expect("nonblocking");
        let socket = UnixDatagram::from_std(socket).expect("a tokio socket");
        let port = free_port();
        let log = temp.path().join("server.log");
        let child = Command::new(binary())
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(temp.path().join("data"))
            .env("NOTIFY_SOCKET", &socket_path)
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env("SWITCHYARD_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("the log file"))
            .spawn()
            .expect("spawn switchyard");
        NotifiedServer { child, socket, url: format!("http://127.0.0.1:{port}"), log, _temp: temp }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The next notification whose lines include `wanted` (the ones before it are returned too,
    /// in order), within 30 s; fails when the server exits first.
    async fn until(&mut self, wanted: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        let mut buffer = vec![0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_millis(100), self.socket.recv(&mut buffer)).await {
                Ok(Ok(length)) => {
                    let message = String::from_utf8_lossy(&buffer[..length]).into_owned();
                    let found = message.lines().any(|line| line == wanted);
                    seen.push(message);
                    if found {
                        return seen;
                    }
                }
                Ok(Err(error)) => panic!("receiving on the notify socket: {error}"),
                Err(_) => {
                    if let Some(status) = self.child.try_wait().expect("try_wait") {
                        panic!("switchyard exited ({status}) before {wanted}; got {seen:?}; log: {}", self.log());
                    }
                    assert!(Instant::now() < deadline, "no {wanted} within 30 s; got {seen:?}; log: {}", self.log());
                }
            }
        }
    }

    fn terminate(&self) {
        let status = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().expect("kill");
        assert!(status.success(), "kill -TERM failed");
    }

    async fn exit_status(mut self) -> (ExitStatus, String) {
        let log = self.log.clone();
        let status = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(status) = self.child.try_wait().expect("try_wait") {
                    return status;
                }
                if Instant::now() > deadline {
                    let _ = self.child.kill();
                    panic!("switchyard did not exit within 60 s of SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await
        .expect("wait task");
        (status, std::fs::read_to_string(log).unwrap_or_default())
    }
}

/// A field (`READY`, `STATUS`, …) of a notification.
fn field<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
}

#[tokio::test]
async fn serve_notifies_ready_once_readyz_answers_then_stopping_on_sigterm() {
    let mut server = NotifiedServer::start(&[("SWITCHYARD_SHUTDOWN_GRACE_SECS", "3"), ("WATCHDOG_USEC", "200000")]);

    let before_ready = server.until("READY=1").await;
    let ready = before_ready.last().expect("the READY=1 notification").clone();
    // No probe of ours came before READY=1: this is the first request the server sees, and it
    // must already be answered with 200.
    let response = reqwest::Client::new()
        .get(format!("{}/readyz", server.url))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap_or_else(|e| panic!("/readyz right after READY=1: {e}; log: {}", server.log()));
    assert_eq!(response.status(), StatusCode::OK, "/readyz right after READY=1; log: {}", server.log());
    assert_eq!(before_ready.len(), 1, "nothing before READY=1: {before_ready:?}");
    let address = server.url.trim_start_matches("http://");
    assert_eq!(field(&ready, "STATUS"), Some(format!("serving on {address} (embedded log)").as_str()), "{ready:?}");

    // With WatchdogSec= (WATCHDOG_USEC, 200 ms here) the server pings at half the interval.
    server.until("WATCHDOG=1").await;
    server.until("WATCHDOG=1").await;

    server.terminate();
    let stopping = server.until("STOPPING=1").await;
    let stopping = stopping.last().expect("the STOPPING=1 notification");
    // The stop may take the grace (3 s) plus 20 s: systemd is asked for that much.
    assert_eq!(field(stopping, "EXTEND_TIMEOUT_USEC"), Some("23000000"), "{stopping:?}");
    assert!(field(stopping, "STATUS").is_some_and(|s| s.starts_with("stopping")), "{stopping:?}");
    let (status, log) = server.exit_status().await;
    assert!(status.success(), "exit after SIGTERM: {status}; log: {log}");
    assert!(!log.contains("cannot notify"), "a notification failed: {log}");
}

#[tokio::test]
async fn serve_runs_when_the_notify_socket_is_gone() {
    // NOTIFY_SOCKET names a socket nobody listens on: the failure is logged, the server serves.
    let temp = tempfile::tempdir().expect("tempdir");
    let missing = temp.path().join("nobody.sock");
    let server = Server::start_with_env(&[("NOTIFY_SOCKET", missing.to_str().expect("utf-8 path"))]).await;
    let (status, _) = server.get("/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert!(server.log().contains("cannot notify the service manager"), "log: {}", server.log());
}

/// `deploy/systemd/switchyard.service` with `ExecStart=` pointing at the binary under test
/// (verify checks that the program exists), in `dir`.
fn unit_for_this_binary(dir: &Path, extra: &str) -> PathBuf {
    let unit = std::fs::read_to_string(repository().join("deploy/systemd/switchyard.service")).expect("read the unit");
    let exec_start = "ExecStart=/usr/local/bin/switchyard serve --config /etc/switchyard/switchyard.toml";
    assert!(unit.lines().any(|line| line == exec_start), "the unit has no '{exec_start}'");
    let local =
        unit.replace("ExecStart=/usr/local/bin/switchyard ", &format!("{extra}ExecStart={} ", binary().display()));
    let path = dir.join("switchyard.service");
    std::fs::write(&path, local).expect("write the unit");
    path
}

fn systemd_analyze(args: &[&str]) -> Option<std::process::Output> {
    match Command::new("systemd-analyze").args(args).output() {
        Ok(output) => Some(output),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => panic!("systemd-analyze: {error}"),
    }
}

#[test]
fn the_systemd_unit_verifies() {
    if systemd_analyze(&["--version"]).is_none() {
        eprintln!("skipped: systemd-analyze is missing (Debian: apt-get install -y systemd)");
        return;
    }
    let temp = tempfile::tempdir().expect("tempdir");
    let unit = unit_for_this_binary(temp.path(), "");
    let unit_text = std::fs::read_to_string(&unit).expect("read");
    let output = systemd_analyze(&["verify", unit.to_str().expect("utf-8 path")]).expect("systemd-analyze");
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    // verify exits 0 on an unknown or misspelt key and only says so: its complaints about this
    // unit name the file.
    let about_the_unit: Vec<&str> = said.lines().filter(|line| line.contains("switchyard.service")).collect();
    assert!(output.status.success() && about_the_unit.is_empty(), "systemd-analyze verify: {said}");

    // The check above would catch a misspelt key.
    let broken_dir = tempfile::tempdir().expect("tempdir");
    let broken = unit_for_this_binary(broken_dir.path(), "ProtectSystm=strict\n");
    let output = systemd_analyze(&["verify", broken.to_str().expect("utf-8 path")]).expect("systemd-analyze");
    assert!(String::from_utf8_lossy(&output.stderr).contains("ProtectSystm"), "verify did not catch a misspelt key");

    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "Restart=on-failure",
        "KillSignal=SIGTERM",
        "DynamicUser=yes",
        "StateDirectory=switchyard",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
    ] {
        assert!(unit_text.lines().any(|l| l == line), "the unit has no '{line}'");
    }
    // The drain must fit in the stop timeout: TimeoutStopSec above the default configuration's grace.
    let config = std::fs::read_to_string(repository().join("deploy/switchyard.toml")).expect("read the config");
    let grace: u64 = setting(&config, "shutdown_grace_secs").parse().expect("shutdown_grace_secs");
    let timeout: u64 = setting(&unit_text, "TimeoutStopSec").parse().expect("TimeoutStopSec in seconds");
    assert!(timeout > grace, "TimeoutStopSec={timeout} is not above shutdown_grace_secs = {grace}");
    // The data directory is the one StateDirectory= makes writable.
    assert_eq!(setting(&config, "data_dir"), "\"/var/lib/switchyard\"");

    // The hardening, as systemd scores it (0 best, 10 worst; 1.4 when this was written).
    if let Some(output) = systemd_analyze(&["security", "--offline=true", unit.to_str().expect("utf-8 path")]) {
        let said = String::from_utf8_lossy(&output.stdout);
        let Some(level) = said.lines().find_map(|l| l.split("Overall exposure level for switchyard.service: ").nth(1))
        else {
            // systemd older than 250 has no --offline.
            eprintln!("no offline security score: {}", String::from_utf8_lossy(&output.stderr));
            return;
        };
        let score: f64 = level.split_whitespace().next().and_then(|s| s.parse().ok()).expect("a score");
        assert!(score <= 2.0, "exposure level {score}, above 2.0: {said}");
    }
}

/// The value of `key = value` or `Key=value` in a TOML file or a unit.
fn setting<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.trim_start().strip_prefix('=').map(str::trim))
        .unwrap_or_else(|| panic!("no '{key}'"))
}

#[test]
fn the_binary_needs_no_shared_library_beyond_glibc() {
    let output = match Command::new("ldd").arg(binary()).output() {
        Ok(output) => output,
        Err(error) => panic!("ldd: {error}"),
    };
    let listing = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "ldd: {listing}{}", String::from_utf8_lossy(&output.stderr));
    // glibc's own libraries, the kernel's vDSO, and the GCC runtime that unwinding uses.
    let glibc =
        ["linux-vdso.so", "libc.so", "libm.so", "libgcc_s.so", "ld-linux", "libpthread.so", "libdl.so", "librt.so"];
    let libraries: Vec<&str> = listing
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(|name| name.rsplit('/').next().unwrap_or(name))
        .collect();
    assert!(libraries.iter().any(|name| name.starts_with("libc.so")), "ldd listed no libc: {listing}");
    let beyond: Vec<&&str> =
        libraries.iter().filter(|name| !glibc.iter().any(|allowed| name.starts_with(allowed))).collect();
    assert!(beyond.is_empty(), "shared libraries beyond glibc: {beyond:?}\n{listing}");
}

#[test]
fn version_shows_the_version_and_the_commit() {
    let output = Command::new(binary()).arg("--version").output().expect("switchyard --version");
    assert!(output.status.success());
    let line = String::from_utf8_lossy(&output.stdout).into_owned();
    let commit = line
        .strip_prefix(&format!("switchyard {} (", env!("CARGO_PKG_VERSION")))
        .and_then(|rest| rest.strip_suffix(")\n"))
        .unwrap_or_else(|| panic!("not 'switchyard {} (<commit>)': {line:?}", env!("CARGO_PKG_VERSION")));
    assert!(!commit.is_empty() && commit.chars().all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c)), "{line:?}");
    if std::env::var_os("SWITCHYARD_BIN").is_some() {
        return; // A binary built elsewhere: its commit is its own.
    }
    // Built from this checkout: its HEAD, not a stale one (api/build.rs watches .git).
    let expected = match std::env::var("SWITCHYARD_COMMIT") {
        Ok(commit) if !commit.trim().is_empty() => Some(commit.trim().to_owned()),
        _ => Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .current_dir(repository())
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned()),
    };
    match expected {
        Some(expected) => assert_eq!(
            commit, expected,
            "the binary's commit is not this checkout's HEAD: rebuild it (cargo build --bin switchyard)"
        ),
        None => assert_eq!(commit, "unknown", "no git and no SWITCHYARD_COMMIT: {line:?}"),
    }
}

/// `switchyard health` with `args`; (exit status, stdout, stderr, how long it took).
async fn health(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String, Duration) {
    let started = Instant::now();
    let output = tokio::process::Command::new(binary())
        .arg("health")
        .args(args)
        .env_remove("SWITCHYARD_SERVER")
        .envs(env.iter().copied())
        .output()
        .await
        .expect("switchyard health");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status, stdout, stderr, started.elapsed())
}

#[tokio::test]
async fn health_exits_0_when_the_server_is_ready() {
    let server = Server::start().await;
    let (status, stdout, stderr, _) = health(&["--server", &server.url], &[]).await;
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(stdout, "ready\n");
    // The server from the environment, as a container sets it; a trailing slash is fine.
    let (status, stdout, stderr, _) = health(&[], &[("SWITCHYARD_SERVER", &format!("{}/", server.url))]).await;
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(stdout, "ready\n");
}

#[tokio::test]
async fn health_exits_1_when_nothing_listens() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let (status, stdout, stderr, _) = health(&["--server", &url], &[]).await;
    assert_eq!(status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(stdout, "");
    assert!(stderr.starts_with(&format!("error: cannot reach {url}/readyz: ")), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}

#[tokio::test]
async fn health_exits_1_when_the_server_is_not_ready() {
    // What a stopping node answers (problem+json, 503).
    let app = axum::Router::new().route(
        "/readyz",
        axum::routing::get(|| async {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [("content-type", "application/problem+json")],
                r#"{"type":"about:blank","title":"Service Unavailable","status":503,"detail":"the node is stopping"}"#,
            )
                .into_response()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (status, stdout, stderr, _) = health(&["--server", &url], &[]).await;
    assert_eq!(status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(stderr, "error: not ready: 503 Service Unavailable: the node is stopping\n");
}

#[tokio::test]
async fn health_gives_up_after_its_timeout() {
    // Accepted by the kernel (the backlog) and never answered: a hung server.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (status, stdout, stderr, took) = health(&["--server", &url], &[]).await;
    assert_eq!(status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.starts_with(&format!("error: cannot reach {url}/readyz: ")), "{stderr}");
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(10), "took {took:?}: {stderr}");
    drop(listener);
}
