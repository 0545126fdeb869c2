//! CESQL costs on the dispatch path: a typical three-clause trigger filter, a function-heavy
//! expression, and parsing.
//!
//! Run: `cargo bench -p switchyard-cesql --bench cesql -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use switchyard_cesql::parse;
use switchyard_event::{AttrValue, Event};

const FILTER: &str = "type = 'com.example.order.created' AND source LIKE '/orders/%' AND EXISTS region";
const FUNCTIONS: &str = "LOWER(CONCAT_WS('-', region, SUBSTRING(id, 1, 8))) = 'eu-west-1-a1b2c3d4' \
                         AND LENGTH(TRIM(subject)) > 3 AND INT(priority) + 1 >= 5";

fn event() -> Event {
    let s = |v: &str| AttrValue::String(v.to_owned());
    Event::new(
        vec![
            ("specversion".into(), s("1.0")),
            ("id".into(), s("a1b2c3d4-0000-4000-8000-000000000000")),
            ("source".into(), s("/orders/eu/42")),
            ("type".into(), s("com.example.order.created")),
            ("subject".into(), s("  order-42  ")),
            ("time".into(), s("2024-06-13T10:00:00Z")),
            ("datacontenttype".into(), s("application/json")),
            ("region".into(), s("EU-WEST-1")),
            ("priority".into(), s("4")),
            ("knativearrivaltime".into(), s("2024-06-13T10:00:00.123Z")),
        ],
        None,
    )
    .expect("valid event")
}

fn benches(c: &mut Criterion) {
    let event = event();
    let filter = parse(FILTER).expect("filter parses");
    assert!(filter.matches(&event));
    let functions = parse(FUNCTIONS).expect("function expression parses");
    assert!(functions.matches(&event));

    c.bench_function("matches/three_clause_filter", |b| b.iter(|| black_box(&filter).matches(black_box(&event))));
    c.bench_function("matches/function_heavy", |b| b.iter(|| black_box(&functions).matches(black_box(&event))));
    c.bench_function("evaluate/three_clause_filter", |b| b.iter(|| black_box(&filter).evaluate(black_box(&event))));
    c.bench_function("parse/three_clause_filter", |b| b.iter(|| parse(black_box(FILTER))));
    c.bench_function("parse/function_heavy", |b| b.iter(|| parse(black_box(FUNCTIONS))));
}

criterion_group!(cesql, benches);
criterion_main!(cesql);
