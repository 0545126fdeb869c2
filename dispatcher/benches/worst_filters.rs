//! The worst filters a trigger can declare, on the largest event a broker accepts (1 MiB): how
//! long one evaluation holds the thread it runs on (the fanout's, a worker's, or the filter-test
//! API's). Each stays near a millisecond, either by the algorithm (linear `LIKE`) or by the
//! evaluation work budgets (`switchyard_cesql::MAX_EVALUATION_WORK`,
//! `filter::MAX_JSONPATH_WORK`). Building the event's JSON form, once per event for all
//! JSONPath triggers, is measured apart: it is the cost of parsing the data.
//!
//! Run: `cargo bench -p switchyard-dispatcher --bench worst_filters -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use switchyard_dispatcher::filter::{EventView, Filter};
use switchyard_event::Event;
use switchyard_meta::resources::SubscriptionsFilter;

/// About the largest event admission takes (1 MiB with its attributes).
const LARGE: usize = 1_000_000;

fn event(extension: Option<String>, data: Option<String>) -> Event {
    let mut text = String::from(r#"{"specversion":"1.0","id":"1","type":"t","source":"/s""#);
    if let Some(value) = extension {
        text.push_str(&format!(r#","big":"{value}""#));
    }
    if let Some(data) = data {
        text.push_str(&format!(r#","datacontenttype":"application/json","data":{data}"#));
    }
    text.push('}');
    switchyard_event::json::decode_event(text.as_bytes()).unwrap_or_else(|e| panic!("invalid event: {e}"))
}

fn filter(filter: SubscriptionsFilter) -> Filter {
    Filter::compile(None, &[filter], "spec.").expect("accepted filter")
}

fn cesql(expression: &str) -> Filter {
    filter(SubscriptionsFilter::Cesql(expression.to_owned()))
}

fn jsonpath(query: &str) -> Filter {
    filter(SubscriptionsFilter::Jsonpath(query.to_owned()))
}

fn bench(c: &mut Criterion, name: &str, filter: &Filter, event: &Event) {
    let view = EventView::new(event);
    // Build the JSON form outside the measurement.
    filter.evaluate(&view, &mut None);
    c.bench_function(name, |b| b.iter(|| black_box(filter.evaluate(black_box(&view), &mut None))));
}

fn cesql_worst(c: &mut Criterion) {
    // The quadratic case of backtracking: `%aaa…_b` on `aaa…`, one word of state.
    let value = "a".repeat(LARGE - 1_000);
    let long = event(Some(value), None);
    bench(c, "cesql/like_1_word_on_1MB", &cesql(&format!("big LIKE '%{}_b%'", "a".repeat(62))), &long);
    // Four words of state (the longest pattern): the budget allows a quarter of the value.
    let quarter = event(Some("a".repeat(LARGE / 4 - 1_000)), None);
    bench(c, "cesql/like_4_words_on_250kB", &cesql(&format!("big LIKE '%{}_b%'", "a".repeat(252))), &quarter);
    // Many scans of the large value: the budget stops the second.
    let many = (0..200).map(|_| format!("big LIKE '%{}_b%'", "a".repeat(62))).collect::<Vec<_>>().join(" OR ");
    bench(c, "cesql/200_likes_on_1MB_budget_stopped", &cesql(&many), &long);
    let concat = format!("LENGTH(CONCAT({})) > 0", vec!["big"; 1000].join(", "));
    bench(c, "cesql/concat_1000_times_1MB_budget_stopped", &cesql(&concat), &long);
    // The deepest nesting, and the longest expression of cheap nodes.
    let deep = format!("{}big = 'x'{}", "(".repeat(62), ")".repeat(62));
    bench(c, "cesql/deepest_nesting", &cesql(&deep), &long);
    let chain = (0..6_000).map(|i| format!("type = 'x{i}'")).collect::<Vec<_>>().join(" OR ");
    bench(c, "cesql/longest_or_chain", &cesql(&chain), &long);
    let lower = (0..2_000).map(|_| "LOWER(type) = 'x'").collect::<Vec<_>>().join(" OR ");
    bench(c, "cesql/2000_function_calls", &cesql(&lower), &long);
}

fn jsonpath_worst(c: &mut Criterion) {
    let deep = event(None, Some(format!("{}1{}", "[".repeat(110), "]".repeat(110))));
    bench(c, "jsonpath/issue_repro_deep_2_descendants", &jsonpath("$..*..*"), &deep);
    bench(c, "jsonpath/deep_nested_filters", &jsonpath("$..*[?@..*[?@ == 2]]"), &deep);
    let wide = event(None, Some(format!("[{}2]", "1,".repeat(LARGE / 2 - 10))));
    bench(c, "jsonpath/wide_2_descendants_budget_stopped", &jsonpath("$..*..*"), &wide);
    bench(c, "jsonpath/wide_filter_budget_stopped", &jsonpath("$.data[?@ == 2]"), &wide);
    let objects = (0..30_000).map(|i| format!(r#"{{"sku":"A{i}","qty":{i}}}"#)).collect::<Vec<_>>().join(",");
    let shop = event(None, Some(format!(r#"{{"items":[{objects}]}}"#)));
    bench(c, "jsonpath/objects_descendant_budget_stopped", &jsonpath("$..[?@.sku == 'none']"), &shop);
    bench(c, "jsonpath/objects_regex_budget_stopped", &jsonpath("$.data.items[?search(@.sku, 'Z.*Z')]"), &shop);
    // The JSON form, built once per event whatever the number of JSONPath triggers.
    c.bench_function("jsonpath/json_form_of_1MB_data", |b| {
        b.iter(|| {
            let view = EventView::new(black_box(&wide));
            black_box(jsonpath("$.type").evaluate(&view, &mut None))
        })
    });
}

criterion_group!(benches, cesql_worst, jsonpath_worst);
criterion_main!(benches);
