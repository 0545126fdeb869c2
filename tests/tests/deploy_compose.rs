//! The Compose files (`deploy/compose`), loaded as `docker compose config` loads them
//! (`deploy/compose/check.sh`: compose-go, the Compose Specification's schema): what they
//! would run, that the server accepts their settings, and that their Kafka is laid out as the
//! one the Kafka suites run against (`deploy/kafka/local.sh`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use switchyard_tests::binary;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// `deploy/compose/check.sh FILES…`: (success, stdout, stderr).
fn check(files: &[PathBuf]) -> (bool, String, String) {
    let output = Command::new(deploy().join("compose/check.sh")).args(files).output().expect("run check.sh");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn projects() -> BTreeMap<String, Value> {
    let files = [deploy().join("compose/compose.yaml"), deploy().join("compose/kafka.yaml")];
    let (ok, stdout, stderr) = check(&files);
    assert!(ok, "a compose tool refuses them: {stderr}");
    let by_path: BTreeMap<String, Value> = serde_json::from_str(&stdout).expect("check.sh prints JSON");
    by_path
        .into_iter()
        .map(|(path, project)| (Path::new(&path).file_name().expect("name").to_string_lossy().into_owned(), project))
        .collect()
}

/// The runtime image's own environment (deploy/image/Containerfile: its last `ENV`) under a
/// service's.
fn environment(service: &Value) -> BTreeMap<String, String> {
    let containerfile = std::fs::read_to_string(deploy().join("image/Containerfile")).expect("Containerfile");
    let mut environment = BTreeMap::new();
    let last_env = containerfile.rfind("\nENV ").expect("an ENV instruction") + 1;
    for line in containerfile[last_env..].lines() {
        let assignment = line.trim_start_matches("ENV ").trim().trim_end_matches('\\').trim();
        if let Some((name, value)) = assignment.split_once('=') {
            environment.insert(name.to_owned(), value.to_owned());
        }
        if !line.trim_end().ends_with('\\') {
            break;
        }
    }
    if let Some(own) = service["environment"].as_object() {
        for (name, value) in own {
            environment.insert(name.clone(), value.as_str().unwrap_or_default().to_owned());
        }
    }
    environment
}

/// `switchyard config print` with a service's environment: the server would start with it.
fn effective_config(service: &Value) -> toml::Table {
    let output = Command::new(binary())
        .args(["config", "print"])
        .env_clear()
        .envs(environment(service))
        .output()
        .expect("run switchyard config print");
    assert!(
        output.status.success(),
        "the server refuses the service's settings: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).parse().expect("config print is TOML")
}

/// Seconds in a Compose duration such as `30s` or `1m30s`.
fn seconds(duration: &str) -> u64 {
    let mut total = 0;
    let mut number = String::new();
    for c in duration.chars() {
        if c.is_ascii_digit() {
            number.push(c);
        } else {
            let value: u64 = number.parse().unwrap_or_else(|_| panic!("duration {duration:?}"));
            number.clear();
            total += match c {
                's' => value,
                'm' => value * 60,
                'h' => value * 3600,
                _ => panic!("duration {duration:?}"),
            };
        }
    }
    total
}

/// What every Switchyard service shares: the image built from the Containerfile, its data on
/// a named volume, a drain longer than the server's grace, the image's health check, and a
/// port published on loopback only (the API has no authentication yet).
fn assert_switchyard_service(name: &str, service: &Value) -> toml::Table {
    assert!(
        service["build"]["dockerfile"].as_str().is_some_and(|f| f.ends_with("deploy/image/Containerfile")),
        "{name}"
    );
    let volumes = service["volumes"].as_array().expect("volumes");
    assert!(volumes.iter().any(|v| v["type"] == "volume" && v["target"] == "/data"), "{name}: a named volume at /data");
    assert_eq!(service["stop_signal"], "SIGTERM", "{name}");
    let config = effective_config(service);
    let grace = config["shutdown_grace_secs"].as_integer().expect("shutdown_grace_secs") as u64;
    let stop_grace = seconds(service["stop_grace_period"].as_str().expect("stop_grace_period"));
    assert!(stop_grace > grace, "{name}: stop_grace_period {stop_grace}s must exceed the drain grace {grace}s");
    assert_eq!(
        service["healthcheck"]["test"],
        serde_json::json!(["CMD", "/usr/local/bin/switchyard", "health"]),
        "{name}"
    );
    let ports = service["ports"].as_array().expect("ports");
    assert!(!ports.is_empty(), "{name}: a published port");
    for port in ports {
        assert_eq!(port["host_ip"], "127.0.0.1", "{name}: published on loopback only: {port}");
        assert_eq!(port["target"], 8080, "{name}");
    }
    assert_eq!(config["data_dir"].as_str(), Some("/data"), "{name}");
    assert_eq!(config["listen"].as_str(), Some("0.0.0.0:8080"), "{name}: every interface of the container");
    config
}

#[test]
fn the_embedded_compose_file_runs_one_node_with_its_data_on_a_volume() {
    let projects = projects();
    let services = projects["compose.yaml"]["services"].as_object().expect("services");
    assert_eq!(services.keys().collect::<Vec<_>>(), ["switchyard"]);
    let config = assert_switchyard_service("switchyard", &services["switchyard"]);
    assert_eq!(config["log"].as_str(), Some("embedded"));
}

#[test]
fn the_kafka_compose_file_runs_two_nodes_of_one_cluster_on_the_tested_kafka_layout() {
    let projects = projects();
    let services = projects["kafka.yaml"]["services"].as_object().expect("services");
    let nodes: Vec<&String> = services.keys().filter(|name| name.starts_with("switchyard")).collect();
    assert_eq!(nodes.len(), 2, "{:?}", services.keys());
    let mut clusters = Vec::new();
    let mut published = Vec::new();
    let mut volumes = Vec::new();
    for name in &nodes {
        let service = &services[*name];
        let config = assert_switchyard_service(name, service);
        assert_eq!(config["log"].as_str(), Some("kafka://kafka:9092"), "{name}");
        clusters.push(config["kafka"]["topic_prefix"].as_str().expect("topic_prefix").to_owned());
        assert_eq!(service["depends_on"]["kafka"]["condition"], "service_healthy", "{name}");
        published.push(service["ports"][0]["published"].clone());
        volumes.push(service["volumes"][0]["source"].clone());
    }
    assert_eq!(clusters[0], clusters[1], "one cluster: the same topic prefix");
    assert_ne!(published[0], published[1], "a port each");
    assert_ne!(volumes[0], volumes[1], "a volume each");

    // The Kafka: the version the tests fetch, and local.sh's server.properties, key for key
    // (KAFKA_FOO_BAR is foo.bar); only the addresses and the log directory differ.
    let kafka = &services["kafka"];
    let pom = std::fs::read_to_string(deploy().join("kafka/pom.xml")).expect("pom.xml");
    let version = pom.split("<kafka.version>").nth(1).and_then(|rest| rest.split('<').next()).expect("kafka.version");
    assert_eq!(kafka["image"], format!("docker.io/apache/kafka:{version}"));
    let local_sh = std::fs::read_to_string(deploy().join("kafka/local.sh")).expect("local.sh");
    let properties: BTreeMap<String, String> = local_sh
        .split("<<PROPERTIES\n")
        .nth(1)
        .and_then(|rest| rest.split("\nPROPERTIES").next())
        .expect("local.sh writes server.properties")
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (format!("KAFKA_{}", key.replace('.', "_").to_uppercase()), value.to_owned()))
        .collect();
    let compose: BTreeMap<String, String> = kafka["environment"]
        .as_object()
        .expect("kafka environment")
        .iter()
        .filter(|(name, _)| name.starts_with("KAFKA_"))
        .map(|(name, value)| (name.clone(), value.as_str().unwrap_or_default().to_owned()))
        .collect();
    assert_eq!(compose.keys().collect::<Vec<_>>(), properties.keys().collect::<Vec<_>>(), "the same settings");
    let addresses =
        ["KAFKA_LISTENERS", "KAFKA_ADVERTISED_LISTENERS", "KAFKA_CONTROLLER_QUORUM_VOTERS", "KAFKA_LOG_DIRS"];
    for (name, value) in &properties {
        if !addresses.contains(&name.as_str()) {
            assert_eq!(&compose[name], value, "{name} as in deploy/kafka/local.sh");
        }
    }
    assert!(kafka["volumes"].as_array().is_some_and(|v| v.iter().any(|v| v["target"] == compose["KAFKA_LOG_DIRS"])));
}

#[test]
fn the_check_refuses_a_file_a_compose_tool_would_refuse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("compose.yaml");
    let text = std::fs::read_to_string(deploy().join("compose/compose.yaml")).expect("compose.yaml");
    std::fs::write(
        &file,
        text.replace("    stop_signal: SIGTERM", "    stop_signal: SIGTERM\n    stop_signall: SIGTERM"),
    )
    .expect("write");
    let (ok, _, stderr) = check(&[file]);
    assert!(!ok, "a misspelt key passed");
    assert!(stderr.contains("stop_signall"), "the message names the key: {stderr}");
}
