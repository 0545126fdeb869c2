//! Filter cost per dialect (ns per event), and matching cost per event with 10, 1,000 and
//! 10,000 triggers on one broker (mostly exact `type` filters, some prefix, some CESQL): the
//! work the fanout does for each event it reads.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switchyard_dispatcher::filter::{EventView, Filter};
use switchyard_dispatcher::index::MatchIndex;
use switchyard_event::{AttrValue, Data, DataForm, Event};

fn event(ty: &str) -> Event {
    let s = |v: &str| AttrValue::String(v.to_owned());
    let attributes = vec![
        ("specversion".into(), s("1.0")),
        ("id".into(), s("0b4b8a4e-1c1f-4a57-9f3e-0d0d6a4e2b11")),
        ("source".into(), s("/orders/eu/shop-17")),
        ("type".into(), s(ty)),
        ("subject".into(), s("order-4711")),
        ("time".into(), s("2024-05-01T10:00:00.123+02:00")),
        ("datacontenttype".into(), s("application/json")),
        ("region".into(), s("eu")),
        ("count".into(), AttrValue::Integer(42)),
    ];
    let data = Data {
        form: DataForm::Json,
        bytes: br#"{"items":[{"sku":"A1","qty":2},{"sku":"B2","qty":1}],"total":31.5}"#.to_vec().into(),
    };
    Event::new(attributes, Some(data)).expect("valid event")
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

fn cesql(expression: &str) -> Filter {
    Filter::Cesql(Arc::new(switchyard_cesql::parse(expression).expect("valid CESQL")))
}

fn dialects(c: &mut Criterion) {
    let event = event("com.example.order.created");
    let filters = [
        ("attributes", Filter::Attributes(pairs(&[("type", "com.example.order.created"), ("region", "eu")]))),
        ("exact", Filter::Exact(pairs(&[("type", "com.example.order.created")]))),
        ("prefix", Filter::Prefix(pairs(&[("source", "/orders/")]))),
        ("suffix", Filter::Suffix(pairs(&[("type", ".created")]))),
        (
            "all_any_not",
            Filter::AllOf(vec![
                Filter::Exact(pairs(&[("type", "com.example.order.created")])),
                Filter::AnyOf(vec![
                    Filter::Prefix(pairs(&[("source", "/us/")])),
                    Filter::Exact(pairs(&[("region", "eu")])),
                ]),
                Filter::Not(Box::new(Filter::Suffix(pairs(&[("subject", "-test")])))),
            ]),
        ),
        ("cesql_3_clauses", cesql("type = 'com.example.order.created' AND source LIKE '/orders/%' AND EXISTS region")),
        (
            "jsonpath",
            Filter::JsonPath(Arc::new(
                switchyard_dispatcher::filter::JsonPath::compile("$.data.items[?@.sku == 'A1']")
                    .expect("valid JSONPath"),
            )),
        ),
    ];
    let mut group = c.benchmark_group("dialect");
    for (name, filter) in &filters {
        assert!(filter.matches(&event), "{name} should match the sample");
        group.bench_function(*name, |b| {
            b.iter(|| black_box(filter.evaluate(&EventView::new(black_box(&event)), &mut None)))
        });
    }
    group.finish();
}

/// Trigger i: 97% `type = type.i` exact, 2% source prefix + type, 1% CESQL on type.
fn trigger_filter(i: usize) -> Filter {
    match i % 100 {
        0 => cesql(&format!("type = 'type.{i}' AND region = 'eu'")),
        1 | 2 => Filter::AllOf(vec![
            Filter::Prefix(pairs(&[("source", &format!("/orders/{i}/"))])),
            Filter::Exact(pairs(&[("type", &format!("type.{i}"))])),
        ]),
        _ => Filter::Attributes(pairs(&[("type", &format!("type.{i}"))])),
    }
}

fn matching(c: &mut Criterion) {
    let mut group = c.benchmark_group("match_event");
    group.throughput(Throughput::Elements(1));
    for triggers in [10usize, 1_000, 10_000] {
        let filters: Vec<Filter> = (0..triggers).map(trigger_filter).collect();
        let mut index = MatchIndex::new();
        for (i, filter) in filters.iter().enumerate() {
            index.insert(i, filter);
        }
        // An event a few triggers want, as most events are.
        let event = event(&format!("type.{}", triggers / 2 + 3));
        let mut candidates = Vec::new();
        group.bench_with_input(BenchmarkId::from_parameter(triggers), &triggers, |b, _| {
            b.iter(|| {
                candidates.clear();
                index.candidates(black_box(&event), &mut candidates);
                let view = EventView::new(&event);
                candidates.iter().filter(|&&i| filters[i].evaluate(&view, &mut None)).count()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, dialects, matching);
criterion_main!(benches);
