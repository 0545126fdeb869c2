//! The container image (`deploy/image`), built and run for real with buildah (no container
//! engine runs here; buildah's `chroot` isolation shares the host's network, so the server in
//! the container answers on loopback): an event goes through it to a subscriber on the host,
//! SIGTERM stops it cleanly, and what it wrote to its data volume outlives the container.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard_tests::{binary, free_port, Subscriber};

const IMAGE: &str = "localhost/switchyard:e2e";
/// The user the image runs as (distroless's `nonroot`).
const NONROOT: u32 = 65532;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn buildah(args: &[&str]) -> Output {
    Command::new("buildah")
        .args(["--storage-driver", "vfs"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run buildah {args:?}: {e}"))
}

fn buildah_ok(args: &[&str]) -> String {
    let output = buildah(args);
    assert!(output.status.success(), "buildah {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A working container of the image, removed when dropped.
struct Container {
    name: String,
}

impl Container {
    fn from(image: &str) -> Container {
        let name = buildah_ok(&["from", "--quiet", image]);
        // buildah 1.28 mounts an anonymous volume for the image's `VOLUME /data` over a `-v`
        // bind at the same place; without the declaration on this working container, `-v`
        // is what the server sees, as with `docker run -v`.
        buildah_ok(&["config", "--volume", "/data-", &name]);
        Container { name }
    }

    /// Runs `command` in the container with `data` bound at /data and the server on
    /// 127.0.0.1:`port`.
    fn spawn(&self, command: &[String], data: &Path, port: u16, log: &Path) -> Child {
        let log = std::fs::File::create(log).expect("container log");
        Command::new("buildah")
            .args(["--storage-driver", "vfs", "run", "--isolation", "chroot"])
            .arg("-v")
            .arg(format!("{}:/data", data.display()))
            .args(["-e", &format!("SWITCHYARD_LISTEN=127.0.0.1:{port}")])
            .args(["-e", &format!("SWITCHYARD_SERVER=http://127.0.0.1:{port}")])
            .arg(&self.name)
            .arg("--")
            .args(command)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("buildah run")
    }

    fn run(&self, command: &[String], port: u16) -> Output {
        Command::new("buildah")
            .args(["--storage-driver", "vfs", "run", "--isolation", "chroot"])
            .args(["-e", &format!("SWITCHYARD_SERVER=http://127.0.0.1:{port}")])
            .arg(&self.name)
            .arg("--")
            .args(command)
            .output()
            .expect("buildah run")
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = buildah(&["rm", &self.name]);
    }
}

/// The first process under `ancestor` whose name is `name`: the server that `buildah run`
/// started (a container runtime signals it, not buildah, on `stop`).
fn descendant_named(ancestor: u32, name: &str) -> Option<u32> {
    let mut frontier = vec![ancestor];
    while let Some(parent) = frontier.pop() {
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
            let Some((head, tail)) = stat.rsplit_once(") ") else { continue };
            let ppid = tail.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
            if ppid != Some(parent) {
                continue;
            }
            if head.split_once(" (").is_some_and(|(_, comm)| comm == name) {
                return Some(pid);
            }
            frontier.push(pid);
        }
    }
    None
}

/// A server in a container, until SIGTERM.
struct Running {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Running {
    async fn start(container: &Container, command: &[String], data: &Path, log: PathBuf) -> Running {
        let port = free_port();
        let child = container.spawn(command, data, port, &log);
        let mut running = Running { child, url: format!("http://127.0.0.1:{port}"), log };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = reqwest::get(format!("{}/readyz", running.url)).await {
                if response.status().is_success() {
                    return running;
                }
            }
            if let Some(status) = running.child.try_wait().expect("try_wait") {
                panic!("the container exited at start with {status}: {}", running.log());
            }
            assert!(Instant::now() < deadline, "the container never became ready: {}", running.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn put(&self, path: &str, body: Value) -> u16 {
        let response = reqwest::Client::new().put(format!("{}{path}", self.url)).json(&body).send().await;
        response.unwrap_or_else(|e| panic!("put {path}: {e}; log: {}", self.log())).status().as_u16()
    }

    /// A binary-mode event to the broker `default/default`; the answer's status.
    async fn send(&self, id: &str, body: &'static str) -> u16 {
        let response = reqwest::Client::new()
            .post(format!("{}/default/default", self.url))
            .header("ce-specversion", "1.0")
            .header("ce-id", id)
            .header("ce-source", "/deploy/image")
            .header("ce-type", "dev.switchyard.test")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        response.unwrap_or_else(|e| panic!("send {id}: {e}; log: {}", self.log())).status().as_u16()
    }

    /// What `docker stop` does: the image's stop signal (SIGTERM) to the server, which must
    /// drain and exit 0 within 30 s.
    async fn stop_cleanly(self) {
        let buildah = self.child.id();
        let server = descendant_named(buildah, "switchyard")
            .unwrap_or_else(|| panic!("no switchyard process under buildah {buildah}; log: {}", self.log()));
        let sent = Command::new("kill").arg("-TERM").arg(server.to_string()).status().expect("kill");
        assert!(sent.success(), "kill -TERM {server}");
        let mut child = self.child;
        let waited = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = child.try_wait().expect("try_wait") {
                    return Some(status);
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    return None;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        match waited.await.expect("wait task") {
            Some(status) => assert!(status.success(), "exit after SIGTERM: {status}; log: {log}"),
            None => panic!("still running 30 s after SIGTERM; log: {log}"),
        }
    }
}

fn image_config() -> Value {
    let inspect: Value =
        serde_json::from_str(&buildah_ok(&["inspect", "--type", "image", IMAGE])).expect("buildah inspect is JSON");
    inspect["Docker"]["config"].clone()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_image_runs_an_event_through_stops_on_sigterm_and_keeps_its_data() {
    // Build: this build's binary on a runtime base made from the machine's glibc (no
    // registry here); the same Containerfile builds from source where one can be reached.
    let build = Command::new(repository().join("deploy/image/build.sh"))
        .args(["--prebuilt", &binary().to_string_lossy(), "--runtime", "local", "--tag", IMAGE])
        .env("CONTAINER_TOOL", "buildah")
        .stderr(Stdio::piped())
        .output()
        .expect("run deploy/image/build.sh");
    assert!(build.status.success(), "deploy/image/build.sh: {}", String::from_utf8_lossy(&build.stderr));
    assert_eq!(String::from_utf8_lossy(&build.stdout).trim(), IMAGE);

    // What the image says about itself.
    let config = image_config();
    assert_eq!(config["User"], format!("{NONROOT}:{NONROOT}"), "{config}");
    assert!(config["Volumes"].get("/data").is_some(), "VOLUME /data: {config}");
    assert_eq!(config["StopSignal"], "SIGTERM");
    assert_eq!(strings(&config["Healthcheck"]["Test"]), ["CMD", "/usr/local/bin/switchyard", "health"], "{config}");
    assert!(config["ExposedPorts"].get("8080/tcp").is_some(), "EXPOSE 8080: {config}");
    let labels = &config["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    assert!(labels["org.opencontainers.image.revision"].as_str().is_some_and(|r| !r.is_empty()), "{labels}");
    let command: Vec<String> = strings(&config["Entrypoint"]).into_iter().chain(strings(&config["Cmd"])).collect();
    assert_eq!(command, ["/usr/local/bin/switchyard", "serve"]);

    // Nothing but the binary and what it links: no shell, no package manager, no compiler.
    let container = Container::from(IMAGE);
    let root = PathBuf::from(buildah_ok(&["mount", &container.name]));
    let files: Vec<String> =
        walk(&root).iter().map(|p| p.strip_prefix(&root).expect("under root").display().to_string()).collect();
    buildah_ok(&["umount", &container.name]);
    assert!(files.contains(&"usr/local/bin/switchyard".to_owned()), "{files:?}");
    for absent in ["bin/sh", "usr/bin/apt-get", "usr/bin/cargo", "usr/bin/gcc", "usr/local/cargo/bin/cargo"] {
        assert!(!files.contains(&absent.to_owned()), "{absent} in the image: {files:?}");
    }
    assert!(files.len() < 30, "a small image: {files:?}");

    // Run it, with a data volume owned by nobody but the image's user.
    let temp = tempfile::tempdir().expect("tempdir");
    let data = temp.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    std::os::unix::fs::chown(&data, Some(NONROOT), Some(NONROOT)).expect("chown the volume (the test runs as root)");
    let server = Running::start(&container, &command, &data, temp.path().join("first.log")).await;

    let healthcheck: Vec<String> = strings(&config["Healthcheck"]["Test"]).into_iter().skip(1).collect();
    let port: u16 = server.url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
    let health = container.run(&healthcheck, port);
    assert!(health.status.success(), "the HEALTHCHECK command: {}", String::from_utf8_lossy(&health.stderr));

    let subscriber = Subscriber::start().await;
    assert_eq!(server.put("/v1/namespaces/default/brokers/default", json!({"spec": {}})).await, 201);
    let trigger = json!({"spec": {"broker": "default", "subscriber": {"uri": subscriber.url}}});
    assert_eq!(server.put("/v1/namespaces/default/triggers/to-host", trigger).await, 201);
    assert_eq!(server.send("through-the-image", r#"{"from":"a container"}"#).await, 202);
    let received = subscriber.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(received[0].header("ce-id"), Some("through-the-image"));
    assert_eq!(&received[0].body[..], br#"{"from":"a container"}"#);

    server.stop_cleanly().await;

    // The volume holds the node's state, written as the image's user, and a new container on
    // it carries on: the broker and its trigger are there, and deliver.
    let mut owners: Vec<(String, u32)> = walk(&data)
        .iter()
        .map(|p| {
            (p.display().to_string(), std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(p).expect("metadata")))
        })
        .collect();
    assert!(!owners.is_empty(), "nothing written to the data volume");
    owners.retain(|(_, uid)| *uid != NONROOT);
    assert!(owners.is_empty(), "files not written by the image's user: {owners:?}");

    let again = Container::from(IMAGE);
    let server = Running::start(&again, &command, &data, temp.path().join("second.log")).await;
    assert_eq!(server.send("after-restart", r#""again""#).await, 202, "the broker outlived its container");
    let received = subscriber.wait_for(2, Duration::from_secs(30)).await;
    assert!(received.iter().any(|r| r.header("ce-id") == Some("after-restart")), "{received:?}");
    server.stop_cleanly().await;
}

/// Every file (not directory) under `root`, without following links out of it.
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => pending.push(path),
                Ok(_) => files.push(path),
                Err(_) => {}
            }
        }
    }
    files
}
