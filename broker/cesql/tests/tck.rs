//! The CESQL Technology Compatibility Kit: every case of the YAML files in `tests/tck/`, copied
//! from `cesql/cesql_tck/` of cloudevents/spec (and, where newer, from the copy in
//! cloudevents/sdk-go `sql/v2/test/tck/`; each file names its source).
//!
//! A case gives an expression, optionally an event (or overrides of a default event), and the
//! expected result and/or error type. This evaluator runs in fail-fast mode (CESQL §4.1), so for
//! a case that expects an error only the error type is compared: the TCK's `result` there is the
//! complete-evaluation value.

use std::path::Path;

use serde::Deserialize;
use switchyard_cesql::{parse, Value};
use switchyard_event::{AttrValue, Event};
use yaml_serde::Value as Yaml;

#[derive(Debug, Deserialize)]
struct File {
    name: String,
    tests: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Case {
    name: String,
    expression: String,
    #[serde(default)]
    result: Option<Yaml>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    event: Option<yaml_serde::Mapping>,
    #[serde(default)]
    event_overrides: Option<yaml_serde::Mapping>,
}

/// The event used when a case gives none, like the TCK runners' "full event".
fn default_attributes() -> Vec<(String, AttrValue)> {
    [
        ("specversion", "1.0"),
        ("id", "ABC-123"),
        ("source", "http://localhost/source"),
        ("type", "com.example.test"),
        ("subject", "topic"),
        ("time", "2018-04-26T14:48:09+02:00"),
        ("datacontenttype", "application/json"),
        ("dataschema", "http://localhost/schema"),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_owned(), AttrValue::String(v.to_owned())))
    .collect()
}

fn attr_value(value: &Yaml) -> AttrValue {
    match value {
        Yaml::Bool(b) => AttrValue::Bool(*b),
        Yaml::Number(n) => AttrValue::Integer(n.as_i64().and_then(|n| i32::try_from(n).ok()).expect("32-bit integer")),
        Yaml::String(s) => AttrValue::String(s.clone()),
        other => panic!("unsupported attribute value {other:?}"),
    }
}

fn set(attributes: &mut Vec<(String, AttrValue)>, name: &str, value: AttrValue) {
    match attributes.iter_mut().find(|(n, _)| n == name) {
        Some((_, v)) => *v = value,
        None => attributes.push((name.to_owned(), value)),
    }
}

fn input_event(case: &Case) -> Event {
    let mut attributes = match &case.event {
        Some(mapping) => {
            mapping.iter().map(|(k, v)| (k.as_str().expect("attribute name").to_owned(), attr_value(v))).collect()
        }
        None => default_attributes(),
    };
    for (name, value) in case.event_overrides.iter().flatten() {
        set(&mut attributes, name.as_str().expect("attribute name"), attr_value(value));
    }
    Event::new(attributes, None).expect("valid TCK event")
}

fn expected_value(result: &Yaml) -> Value {
    match result {
        Yaml::Bool(b) => Value::Boolean(*b),
        Yaml::Number(n) => Value::Integer(n.as_i64().and_then(|n| i32::try_from(n).ok()).expect("32-bit integer")),
        // YAML 1.1 spellings the TCK uses for booleans (`result: FALSE`).
        Yaml::String(s) if s == "FALSE" => Value::Boolean(false),
        Yaml::String(s) if s == "TRUE" => Value::Boolean(true),
        Yaml::String(s) => Value::String(s.clone()),
        other => panic!("unsupported result {other:?}"),
    }
}

/// Runs one case; `Err` describes the mismatch.
fn run(case: &Case) -> Result<(), String> {
    let parsed = parse(&case.expression);
    if case.error.as_deref() == Some("parse") {
        return match parsed {
            Err(_) => Ok(()),
            Ok(_) => Err("expected a parse error, but it parsed".to_owned()),
        };
    }
    let expression = parsed.map_err(|e| format!("parse error: {e}"))?;
    let event = input_event(case);
    let outcome = expression.evaluate(&event);
    match (&case.error, outcome) {
        (Some(kind), Err(error)) if error.kind.as_str() == kind => {
            if expression.matches(&event) {
                return Err("matches() is true for an expression that fails".to_owned());
            }
            Ok(())
        }
        (Some(kind), other) => Err(format!("expected a {kind} error, got {other:?}")),
        (None, Ok(value)) => {
            let expected = expected_value(case.result.as_ref().ok_or("case without result or error")?);
            if value == expected {
                Ok(())
            } else {
                Err(format!("expected {expected:?}, got {value:?}"))
            }
        }
        (None, Err(error)) => Err(format!("unexpected error: {error}")),
    }
}

#[test]
fn tck() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tck");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    assert_eq!(paths.len(), 14, "TCK files in {}", dir.display());
    let (mut passed, mut failures) = (0, Vec::new());
    for path in &paths {
        let file: File = yaml_serde::from_str(&std::fs::read_to_string(path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for case in &file.tests {
            match run(case) {
                Ok(()) => passed += 1,
                Err(why) => failures.push(format!("{} / {} (`{}`): {why}", file.name, case.name, case.expression)),
            }
        }
    }
    println!("TCK: {passed} cases passed, {} failed", failures.len());
    assert!(failures.is_empty(), "{} TCK cases failed:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(passed, 240, "every TCK case runs");
}
