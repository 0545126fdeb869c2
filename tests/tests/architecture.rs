//! The dependency rules of ARCHITECTURE.md, read from `cargo metadata`: a change that breaks
//! one fails here, with the rule it breaks. Only the product's crates are held to them; the
//! test and benchmark harnesses run servers and subscribers of their own.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

/// The crates that make up the product, bottom to top.
const PRODUCT: [&str; 11] = [
    "switchyard-event",
    "switchyard-cesql",
    "switchyard-log",
    "switchyard-log-embedded",
    "switchyard-log-kafka",
    "switchyard-meta",
    "switchyard-dispatcher",
    "switchyard-sources",
    "switchyard-engine",
    "switchyard-kube",
    "switchyard",
];

/// The log backends, which only the binary may name.
const BACKENDS: [&str; 2] = ["switchyard-log-embedded", "switchyard-log-kafka"];

/// Crates whose presence means I/O or async: a pure crate reaches none of them.
const IMPURE: [&str; 8] = ["tokio", "mio", "async-trait", "futures-util", "reqwest", "hyper", "redb", "rdkafka"];

/// Every package's normal (non-dev, non-build) dependencies, by name, from the resolved graph.
fn normal_dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("run cargo metadata");
    assert!(output.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr));
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let names: BTreeMap<&str, &str> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|package| (package["id"].as_str().expect("id"), package["name"].as_str().expect("name")))
        .collect();
    let mut graph = BTreeMap::new();
    for node in metadata["resolve"]["nodes"].as_array().expect("resolve.nodes") {
        let name = names[node["id"].as_str().expect("node id")].to_owned();
        let normal = node["deps"]
            .as_array()
            .expect("deps")
            .iter()
            .filter(|dep| dep["dep_kinds"].as_array().into_iter().flatten().any(|kind| kind["kind"].is_null()))
            .map(|dep| names[dep["pkg"].as_str().expect("pkg")].to_owned());
        graph.entry(name).or_insert_with(BTreeSet::new).extend(normal);
    }
    graph
}

/// Everything `package` depends on, directly or not, through normal dependencies.
fn closure(graph: &BTreeMap<String, BTreeSet<String>>, package: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![package.to_owned()];
    while let Some(next) = stack.pop() {
        for dependency in graph.get(&next).into_iter().flatten() {
            if seen.insert(dependency.clone()) {
                stack.push(dependency.clone());
            }
        }
    }
    seen
}

#[test]
fn the_dependency_rules_hold() {
    let graph = normal_dependencies();
    let mut broken = Vec::new();
    for package in PRODUCT {
        assert!(graph.contains_key(package), "{package} is not in the workspace");
        let reaches = closure(&graph, package);
        let direct = &graph[package];
        // Wire formats are pure: no I/O, no async, in the event crate and the CESQL engine.
        if ["switchyard-event", "switchyard-cesql", "switchyard-meta"].contains(&package) {
            for impure in IMPURE.iter().filter(|impure| reaches.contains(**impure)) {
                broken.push(format!("{package} is pure code, but reaches '{impure}'"));
            }
        }
        // Only the Kafka crate links librdkafka.
        if direct.contains("rdkafka") && package != "switchyard-log-kafka" {
            broken.push(format!("only switchyard-log-kafka may depend on rdkafka, but {package} does"));
        }
        // Nothing above the log trait names a backend: only the binary picks one.
        if package != "switchyard" && !BACKENDS.contains(&package) {
            for backend in BACKENDS.iter().filter(|backend| reaches.contains(**backend)) {
                broken.push(format!("{package} is above the log trait, but depends on the backend {backend}"));
            }
        }
        // The binary is the only crate with an HTTP server.
        if direct.contains("axum") && package != "switchyard" {
            broken.push(format!("only the binary serves HTTP (axum), but {package} depends on axum"));
        }
    }
    // And no crate links librdkafka without going through the Kafka crate.
    for (package, direct) in &graph {
        if direct.contains("rdkafka") && package != "switchyard-log-kafka" {
            broken.push(format!("{package} depends on rdkafka directly; only switchyard-log-kafka may"));
        }
    }
    assert!(broken.is_empty(), "dependency rules broken (see ARCHITECTURE.md):\n{}", broken.join("\n"));
}

#[test]
fn the_rules_notice_a_break() {
    // The check above must be able to fail: a graph with each rule broken is caught.
    let mut graph = normal_dependencies();
    graph.get_mut("switchyard-dispatcher").expect("dispatcher").insert("switchyard-log-embedded".to_owned());
    let reaches = closure(&graph, "switchyard-engine");
    assert!(reaches.contains("switchyard-log-embedded"), "a backend reached through the dispatcher is seen");
    assert!(!closure(&normal_dependencies(), "switchyard-engine").contains("switchyard-log-embedded"));
}
