//! Untrusted JSONPath queries (the `jsonpath` filter dialect): parsing and evaluating against
//! an event never panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use switchyard_dispatcher::Filter;
use switchyard_meta::resources::SubscriptionsFilter;
use switchyard_event::Event;

fn event() -> &'static Event {
    static EVENT: OnceLock<Event> = OnceLock::new();
    EVENT.get_or_init(|| {
        let json = br#"{"specversion":"1.0","id":"1","type":"order.created","source":"/orders","count":7,
            "datacontenttype":"application/json","data":{"items":[{"sku":"A1","qty":2},{"sku":"B2","tags":["x",null,1.5]}]}}"#;
        switchyard_event::json::decode_event(json).expect("valid sample")
    })
}

fuzz_target!(|input: &[u8]| {
    let Ok(query) = std::str::from_utf8(input) else { return };
    // Compiled as a trigger's `jsonpath` filter is.
    let filters = [SubscriptionsFilter::Jsonpath(query.to_owned())];
    if let Ok(filter) = Filter::compile(None, &filters, "spec.") {
        let _ = filter.explain(event());
    }
});
