//! Test fixtures shared by the format tests: proptest strategies for valid events, and the table
//! of invalid events every decoding path must reject.

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::Value;

use crate::json::is_json_content_type;
use crate::model::{AttrValue, Data, DataForm, Event, OPTIONAL_ATTRIBUTES, REQUIRED_ATTRIBUTES};

pub(crate) fn s(v: &str) -> AttrValue {
    AttrValue::String(v.to_owned())
}

/// The four required attributes, in the usual order.
pub(crate) fn required() -> Vec<(String, AttrValue)> {
    vec![
        ("specversion".into(), s("1.0")),
        ("id".into(), s("id-1")),
        ("source".into(), s("/src")),
        ("type".into(), s("com.example.t")),
    ]
}

/// An invalid event expressed with string attributes only, so every mode can carry it; and a
/// fragment the error message must contain.
pub(crate) struct InvalidCase {
    pub(crate) attributes: Vec<(&'static str, &'static str)>,
    pub(crate) expected: &'static str,
}

/// Every validation rule that can be broken with string attributes.
pub(crate) fn invalid_cases() -> Vec<InvalidCase> {
    const SV: (&str, &str) = ("specversion", "1.0");
    const ID: (&str, &str) = ("id", "1");
    const SOURCE: (&str, &str) = ("source", "/s");
    const TYPE: (&str, &str) = ("type", "t");
    let case = |attributes: Vec<(&'static str, &'static str)>, expected| InvalidCase { attributes, expected };
    vec![
        case(vec![SV, SOURCE, TYPE], "missing required attribute 'id'"),
        case(vec![SV, ID, TYPE], "missing required attribute 'source'"),
        case(vec![SV, ID, SOURCE], "missing required attribute 'type'"),
        case(vec![ID, SOURCE, TYPE], "missing required attribute 'specversion'"),
        case(vec![("specversion", "0.3"), ID, SOURCE, TYPE], "'specversion' value '0.3'"),
        case(vec![SV, ("id", ""), SOURCE, TYPE], "invalid attribute 'id'"),
        case(vec![SV, ID, ("source", ""), TYPE], "invalid attribute 'source'"),
        case(vec![SV, ID, SOURCE, ("type", "")], "invalid attribute 'type'"),
        case(vec![SV, ID, SOURCE, TYPE, ("subject", "")], "invalid attribute 'subject'"),
        case(vec![SV, ID, SOURCE, TYPE, ("subject", "a\u{7}b")], "invalid attribute 'subject'"),
        case(vec![SV, ID, SOURCE, TYPE, ("time", "yesterday")], "invalid attribute 'time'"),
        case(vec![SV, ID, SOURCE, TYPE, ("dataschema", "/rel")], "invalid attribute 'dataschema'"),
        case(vec![SV, ID, SOURCE, TYPE, ("my_ext", "x")], "invalid attribute name 'my_ext'"),
        case(vec![SV, ID, SOURCE, TYPE, ("my-ext", "x")], "invalid attribute name 'my-ext'"),
        case(vec![SV, ID, SOURCE, TYPE, ("ext", "bad\u{1b}esc")], "invalid attribute 'ext'"),
    ]
}

/// Strings the model accepts: no control characters (core spec §3.3).
fn text(min: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[^\\p{{Cc}}]{{{min},24}}")).expect("valid regex")
}

fn content_type() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(prop_oneof![
        Just("application/json".to_owned()),
        Just("application/vnd.foo+json; charset=utf-8".to_owned()),
        Just("text/plain; charset=utf-8".to_owned()),
        Just("application/xml".to_owned()),
        Just("application/octet-stream".to_owned()),
    ])
}

/// Valid JSON text without surrounding whitespace, compact or pretty-printed.
fn json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    let value = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((any::<String>(), inner), 0..4)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    });
    (value, any::<bool>()).prop_map(|(value, pretty)| {
        let text = if pretty { serde_json::to_string_pretty(&value) } else { serde_json::to_string(&value) };
        text.expect("a Value always serializes")
    })
}

/// Data that the JSON format can carry back exactly under this content type: text only under a
/// non-JSON type (the only case a decoder yields text), and JSON strings only under a JSON type.
fn data(content_type: Option<String>) -> impl Strategy<Value = Option<Data>> {
    let json_content = content_type.as_deref().is_none_or(is_json_content_type);
    let binary_type = content_type.clone();
    let binary = proptest::collection::vec(any::<u8>(), 0..200)
        .prop_map(move |b| Some(Data { form: DataForm::of_bytes(binary_type.as_deref(), &b), bytes: Bytes::from(b) }));
    let json = json_text()
        .prop_filter("a json string under a non-json type reads back as text", move |t| {
            json_content || !t.starts_with('"')
        })
        .prop_map(|t| Some(Data { form: DataForm::Json, bytes: Bytes::from(t) }));
    let text = any::<String>().prop_map(move |t| {
        let form = if json_content { DataForm::Binary } else { DataForm::Text };
        Some(Data { form, bytes: Bytes::from(t) })
    });
    prop_oneof![Just(None), binary, json, text]
}

fn extension_value() -> impl Strategy<Value = AttrValue> {
    prop_oneof![
        text(0).prop_map(AttrValue::String),
        any::<bool>().prop_map(AttrValue::Bool),
        any::<i32>().prop_map(AttrValue::Integer),
    ]
}

/// Arbitrary valid events: required and optional attributes, extensions of every type, all data
/// forms, in arbitrary attribute order.
pub(crate) fn arb_event() -> impl Strategy<Value = Event> {
    let extensions = proptest::collection::vec(("[a-z][a-z0-9]{0,8}", extension_value()), 0..6);
    let optional = (
        proptest::option::of(text(1)),
        proptest::option::of(prop_oneof![Just("2024-05-01T10:00:00.5+02:00"), Just("2018-04-05T17:31:00Z"),]),
        proptest::option::of(Just("https://example.com/schema.json")),
    );
    (text(1), text(1), text(1), optional, extensions, content_type())
        .prop_flat_map(|(id, source, ty, optional, extensions, content_type)| {
            let mut attributes = vec![
                ("specversion".to_owned(), s("1.0")),
                ("id".to_owned(), AttrValue::String(id)),
                ("source".to_owned(), AttrValue::String(source)),
                ("type".to_owned(), AttrValue::String(ty)),
            ];
            let (subject, time, dataschema) = optional;
            attributes.extend(subject.map(|v| ("subject".to_owned(), AttrValue::String(v))));
            attributes.extend(time.map(|v| ("time".to_owned(), s(v))));
            attributes.extend(dataschema.map(|v| ("dataschema".to_owned(), s(v))));
            attributes.extend(content_type.clone().map(|v| ("datacontenttype".to_owned(), AttrValue::String(v))));
            for (name, value) in extensions {
                let reserved = name == "data"
                    || REQUIRED_ATTRIBUTES.contains(&name.as_str())
                    || OPTIONAL_ATTRIBUTES.contains(&name.as_str());
                if !reserved && !attributes.iter().any(|(n, _)| *n == name) {
                    attributes.push((name, value));
                }
            }
            (Just(attributes).prop_shuffle(), data(content_type))
        })
        .prop_map(|(attributes, data)| Event::new(attributes, data).expect("generated events are valid"))
}
