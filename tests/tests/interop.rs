//! Interop matrix: CloudEvents SDKs nobody here wrote, as senders and as subscribers, through a
//! real broker. JavaScript `cloudevents` 10, Python `cloudevents` 2.2 (its new and old APIs) and
//! Go sdk-go v2.16 each send every case of `tests/interop/cases.json` in binary and structured
//! mode, and each receives every event in binary mode (both header encodings) and in structured
//! (`json`) mode. What the receiving SDK reports must equal what the sending SDK was given,
//! except for the differences listed in [`EXCEPTIONS`] — the same list as the README's "Interop"
//! table — and every listed difference must still occur, so the list stays true.
//!
//! The drivers and their contract are in `tests/interop/` (`PROTOCOL.md`); `setup.sh` installs
//! the SDKs (the README's test command runs it).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use switchyard_tests::Server;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const SENDERS: [&str; 4] = ["js", "python-new", "python-old", "go"];
const RECEIVERS: [&str; 4] = SENDERS;
const IN_MODES: [&str; 2] = ["binary", "structured"];
/// Delivery modes: the trigger's `delivery` for each.
const OUT_MODES: [(&str, &str); 3] =
    [("binary", r#"{}"#), ("percent", r#"{"headerEncoding": "percent"}"#), ("json", r#"{"format": "json"}"#)];

/// One known difference between what an SDK was given and what another SDK reports, and why.
/// An empty list matches anything; `what` holds prefixes of a difference's description.
struct Exception {
    senders: &'static [&'static str],
    in_modes: &'static [&'static str],
    receivers: &'static [&'static str],
    out_modes: &'static [&'static str],
    cases: &'static [&'static str],
    what: &'static [&'static str],
    why: &'static str,
}

const ANY: &[&str] = &[];
const BINARY_OUT: &[&str] = &["binary", "percent"];
/// Receivers that hand the subscriber header values as they are, never percent-decoding.
const NON_DECODING: &[&str] = &["go", "js", "python-old"];
/// Receivers whose HTTP server turns header bytes into text as Latin-1 (Node's `http`,
/// Python's `http.server`).
const LATIN1_HEADERS: &[&str] = &["js", "python-new", "python-old"];
const NON_ASCII_ATTRIBUTES: &[&str] = &["attribute accent is", "attribute emoji is", "attribute subject is \"ping "];
const ENCODED_ATTRIBUTES: &[&str] = &[
    "attribute subject is",
    "attribute quote is",
    "attribute percent is",
    "attribute accent is",
    "attribute emoji is",
];

/// Every known difference, with its cause. Kept in step with README.md's "Interop" section.
const EXCEPTIONS: &[Exception] = &[
    Exception {
        senders: &["js", "python-old"],
        in_modes: &["binary"],
        receivers: ANY,
        out_modes: ANY,
        cases: &["json", "nodata"],
        what: &["unsendable"],
        why: "the SDK writes attribute values into headers raw, and the HTTP client (fetch, http.client) \
              refuses characters beyond U+00FF (the emoji, the check mark)",
    },
    Exception {
        senders: &["go"],
        in_modes: &["binary"],
        receivers: ANY,
        out_modes: ANY,
        cases: &["json"],
        what: &["attribute percent is \"100% off, not A\""],
        why: "sdk-go writes '%41' raw; the HTTP binding (§3.1.3.2) makes it an escape for 'A'",
    },
    Exception {
        senders: &["python-new"],
        in_modes: &["binary"],
        receivers: ANY,
        out_modes: ANY,
        cases: &["json"],
        what: &["attribute flag is \"True\"", "attribute off is \"False\""],
        why: "the Python SDK writes a boolean as Python's str(): 'True', not the canonical 'true'",
    },
    Exception {
        senders: &["python-old"],
        in_modes: &["binary"],
        receivers: ANY,
        out_modes: ANY,
        cases: &["text", "xml"],
        what: &["data is"],
        why: "the old Python API sends string data JSON-encoded (quoted, \\u-escaped) whatever its content type",
    },
    Exception {
        senders: &["go", "js"],
        in_modes: ANY,
        receivers: ANY,
        out_modes: ANY,
        cases: &["json"],
        what: &["attribute time is"],
        why: "sdk-go and the JavaScript SDK write time in UTC: the same instant, without its +05:30 offset",
    },
    Exception {
        senders: &["js", "python-new", "python-old"],
        in_modes: ANY,
        receivers: ANY,
        out_modes: ANY,
        cases: ANY,
        what: &["attribute time added"],
        why: "the JavaScript and Python SDKs stamp the current time on an event built without one",
    },
    Exception {
        senders: ANY,
        in_modes: ANY,
        receivers: &["js", "python-new", "python-old"],
        out_modes: ANY,
        cases: ANY,
        what: &["attribute time added"],
        why: "the JavaScript and Python SDKs also stamp the current time on a received event without one",
    },
    Exception {
        senders: ANY,
        in_modes: ANY,
        receivers: &["js"],
        out_modes: ANY,
        cases: &["json"],
        what: &["attribute time is"],
        why: "the JavaScript SDK parses time into a Date and hands back its UTC form: the offset is lost",
    },
    Exception {
        senders: ANY,
        in_modes: ANY,
        receivers: LATIN1_HEADERS,
        out_modes: &["binary"],
        cases: ANY,
        what: NON_ASCII_ATTRIBUTES,
        why: "compatible header encoding writes UTF-8 raw, and Node's and Python's HTTP servers decode header \
              bytes as Latin-1 (café arrives as cafÃ©; the bytes are intact)",
    },
    Exception {
        senders: ANY,
        in_modes: ANY,
        receivers: NON_DECODING,
        out_modes: &["binary"],
        cases: &["json"],
        what: &["attribute percent is"],
        why: "compatible header encoding escapes a '%' followed by two hex digits, so that receivers that decode \
              read '%41' back: those that do not decode see '%2541'",
    },
    Exception {
        senders: ANY,
        in_modes: ANY,
        receivers: NON_DECODING,
        out_modes: &["percent"],
        cases: ANY,
        what: ENCODED_ATTRIBUTES,
        why: "percent header encoding (the HTTP binding's §3.1.3.2) is read back only by receivers that \
              percent-decode, as the binding requires; sdk-go, the JavaScript SDK and the old Python API do not",
    },
    Exception {
        senders: ANY,
        in_modes: ANY,
        receivers: &["python-old"],
        out_modes: BINARY_OUT,
        cases: &["text", "xml"],
        what: &["data is {\"bytes\""],
        why: "the old Python API hands over a binary-mode body that is not JSON as bytes",
    },
    Exception {
        senders: ANY,
        in_modes: ANY,
        receivers: &["js"],
        out_modes: BINARY_OUT,
        cases: &["bytes"],
        what: &["data is {\"text\""],
        why: "the JavaScript SDK's receiving example reads the body as a UTF-8 string, which replaces bytes \
              that are not UTF-8; a subscriber that needs bytes must read a Buffer",
    },
    Exception {
        senders: ANY,
        in_modes: ANY,
        receivers: &["js"],
        out_modes: &["json"],
        cases: &["bytes"],
        what: &["data is {\"json\""],
        why: "the JavaScript SDK decodes data_base64 into a Uint32Array (one element per byte)",
    },
    Exception {
        senders: ANY,
        in_modes: ANY,
        receivers: &["js"],
        out_modes: BINARY_OUT,
        cases: &["nodata"],
        what: &["data is {\"text\":\"\"}"],
        why: "the JavaScript SDK reports an empty body as empty-string data",
    },
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_owned()
}

/// The command that runs an SDK's driver.
fn driver(sdk: &str) -> Command {
    let interop = repo_root().join("tests/interop");
    let mut command = match sdk {
        "js" => {
            let mut c = Command::new("node");
            c.arg(interop.join("js/driver.mjs"));
            c
        }
        "python-new" | "python-old" => {
            let mut c = Command::new("python3");
            c.arg(interop.join("python/driver.py")).args(["--api", sdk.trim_start_matches("python-")]);
            c
        }
        "go" => Command::new(repo_root().join("target/interop/go-driver")),
        other => panic!("no driver for {other}"),
    };
    command.stdin(Stdio::null());
    command
}

/// A receiving driver, killed on drop.
struct Receiver {
    sdk: &'static str,
    port: u16,
    out: PathBuf,
    child: Child,
}

impl Receiver {
    fn start(sdk: &'static str, dir: &Path) -> Receiver {
        let out = dir.join(format!("{sdk}.jsonl"));
        let mut child = driver(sdk)
            .args(["receive".as_ref(), out.as_os_str()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{sdk} driver runs (tests/interop/setup.sh installs it): {e}"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{sdk} receiver printed {line:?}, not 'listening <port>'"));
        Receiver { sdk, port, out, child }
    }

    /// Every line reported so far.
    fn reports(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{}: {e}: {line}", self.sdk)))
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends every case with `sdk` in `mode`; returns the ids of the cases it could not send.
fn send(sdk: &str, mode: &str, url: &str, cases: &Path) -> BTreeSet<String> {
    let output = driver(sdk)
        .args(["send", url, mode])
        .arg(cases)
        .arg(format!("{sdk}~{mode}~"))
        .output()
        .unwrap_or_else(|e| panic!("{sdk} driver runs (tests/interop/setup.sh installs it): {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{sdk} {mode} send failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .filter_map(|line| line.strip_prefix("unsendable "))
        .map(|rest| rest.split(':').next().unwrap_or_default().to_owned())
        .collect()
}

/// What one delivery is: who sent it how, who received it how, which case.
struct Route<'a> {
    sender: &'a str,
    in_mode: &'a str,
    receiver: &'a str,
    out_mode: &'a str,
    case: &'a str,
}

impl Route<'_> {
    fn covered_by(&self, exception: &Exception, difference: &str) -> bool {
        let matches = |want: &[&str], have: &str| want.is_empty() || want.contains(&have);
        matches(exception.senders, self.sender)
            && matches(exception.in_modes, self.in_mode)
            && matches(exception.receivers, self.receiver)
            && matches(exception.out_modes, self.out_mode)
            && matches(exception.cases, self.case)
            && exception.what.iter().any(|what| difference.starts_with(what))
    }
}

/// How the event differs from the case, one description per difference.
fn differences(case: &Value, route: &Route<'_>, report: &Value) -> Vec<String> {
    if let Some(error) = report.get("error") {
        return vec![format!("not decoded: {error}")];
    }
    let attributes = report["attributes"].as_object().expect("attributes");
    let mut expected = case["attributes"].as_object().expect("case attributes").clone();
    expected.insert("specversion".into(), json!("1.0"));
    expected.insert("id".into(), json!(format!("{}~{}~{}", route.sender, route.in_mode, route.case)));
    // Binary mode carries every attribute as its string form (HTTP binding §3.1.3).
    let typed = route.in_mode == "structured" && route.out_mode == "json";
    let mut found = Vec::new();
    for (name, want) in &expected {
        let want = match want {
            Value::Bool(_) | Value::Number(_) if !typed => Value::String(want.to_string()),
            other => other.clone(),
        };
        match attributes.get(name) {
            None => found.push(format!("attribute {name} missing")),
            Some(have) if name == "time" && same_time(&want, have) => {}
            Some(have) if *have != want => found.push(format!("attribute {name} is {have}, not {want}")),
            Some(_) => {}
        }
    }
    for name in attributes.keys().filter(|name| !expected.contains_key(*name) && *name != "knativearrivaltime") {
        found.push(format!("attribute {name} added: {}", attributes[name]));
    }
    let data = &report["data"];
    let want = &case["data"];
    let matches = match (want.as_object().and_then(|w| w.iter().next()), data) {
        (None, Value::Null) => true,
        (Some((kind, value)), Value::Object(have)) => {
            let want_bytes = match kind.as_str() {
                "json" => None,
                "text" => Some(value.as_str().unwrap().as_bytes().to_vec()),
                _ => Some(base64::engine::general_purpose::STANDARD.decode(value.as_str().unwrap()).unwrap()),
            };
            match (have.get(kind), have.get("bytes")) {
                (Some(have), _) => have == value,
                // sdk-go's `Event.Data()` is always the bytes: compare those.
                (None, Some(have)) if route.receiver == "go" => {
                    let have = base64::engine::general_purpose::STANDARD.decode(have.as_str().unwrap()).unwrap();
                    match want_bytes {
                        Some(want) => have == want,
                        None => serde_json::from_slice::<Value>(&have).is_ok_and(|have| have == *value),
                    }
                }
                _ => false,
            }
        }
        _ => false,
    };
    if !matches {
        found.push(format!("data is {data}, not {want}"));
    }
    found
}

/// Timestamps are equal when they are the same instant written with the same offset.
fn same_time(want: &Value, have: &Value) -> bool {
    let parse = |v: &Value| v.as_str().and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok());
    match (parse(want), parse(have)) {
        (Some(want), Some(have)) => want == have && want.offset() == have.offset(),
        _ => false,
    }
}

#[tokio::test]
async fn sdks_read_what_sdks_sent_in_every_mode_pair() {
    let server = Server::start().await;
    server.broker("default", "interop").await;
    let dir = tempfile::tempdir().unwrap();
    let cases_path = repo_root().join("tests/interop/cases.json");
    let cases: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&cases_path).unwrap()).unwrap();
    let cases: BTreeMap<String, Value> =
        cases.into_iter().map(|case| (case["id"].as_str().unwrap().to_owned(), case)).collect();

    let receivers: Vec<Receiver> = RECEIVERS.iter().map(|sdk| Receiver::start(sdk, dir.path())).collect();
    for receiver in &receivers {
        for (out_mode, delivery) in OUT_MODES {
            let delivery: Value = serde_json::from_str(delivery).unwrap();
            let subscriber = format!("http://127.0.0.1:{}/{out_mode}", receiver.port);
            let spec = json!({"broker": "interop", "subscriber": {"uri": subscriber}, "delivery": delivery});
            server.trigger("default", &format!("{}-{out_mode}", receiver.sdk), spec).await;
        }
    }

    let ingest = format!("{}/default/interop", server.url);
    let mut unsendable = BTreeSet::new();
    let mut sent = 0;
    for sender in SENDERS {
        for in_mode in IN_MODES {
            let (ingest, cases_path) = (ingest.clone(), cases_path.clone());
            let skipped =
                tokio::task::spawn_blocking(move || send(sender, in_mode, &ingest, &cases_path)).await.unwrap();
            sent += cases.len() - skipped.len();
            unsendable.extend(skipped.into_iter().map(|case| format!("{sender} {in_mode} {case}")));
        }
    }

    let expected = sent * OUT_MODES.len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while receivers.iter().any(|r| r.reports().len() < expected) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut unexplained = Vec::new();
    let mut explained = BTreeSet::new();
    for receiver in &receivers {
        let reports = receiver.reports();
        assert_eq!(reports.len(), expected, "{} received {} of {expected}", receiver.sdk, reports.len());
        for report in &reports {
            let out_mode = report["path"].as_str().unwrap().trim_start_matches('/');
            let id = report["attributes"]["id"].as_str().unwrap_or_default();
            let mut parts = id.splitn(3, '~');
            let (Some(sender), Some(in_mode), Some(case)) = (parts.next(), parts.next(), parts.next()) else {
                unexplained.push(format!("{} {out_mode}: unknown event {report}", receiver.sdk));
                continue;
            };
            let route = Route { sender, in_mode, receiver: receiver.sdk, out_mode, case };
            for difference in differences(&cases[case], &route, report) {
                match EXCEPTIONS.iter().position(|e| route.covered_by(e, &difference)) {
                    Some(index) => {
                        explained.insert(index);
                    }
                    None => unexplained.push(format!(
                        "{sender} sent {case} {in_mode}, {} received {out_mode}: {difference}",
                        receiver.sdk
                    )),
                }
            }
        }
    }
    for unsent in &unsendable {
        let mut parts = unsent.split(' ');
        let (sender, in_mode, case) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        let route = Route { sender, in_mode, receiver: "-", out_mode: "-", case };
        match EXCEPTIONS.iter().position(|e| route.covered_by(e, "unsendable")) {
            Some(index) => {
                explained.insert(index);
            }
            None => unexplained.push(format!("{unsent}: the SDK could not send it")),
        }
    }
    unexplained.sort();
    let stale: Vec<_> = EXCEPTIONS
        .iter()
        .enumerate()
        .filter(|(index, _)| !explained.contains(index))
        .map(|(_, e)| format!("{:?}: {}", e.what, e.why))
        .collect();
    assert!(
        unexplained.is_empty() && stale.is_empty(),
        "{} unexplained differences:\n{}\n\nexceptions that no longer occur:\n{}",
        unexplained.len(),
        unexplained.join("\n"),
        stale.join("\n")
    );
}
