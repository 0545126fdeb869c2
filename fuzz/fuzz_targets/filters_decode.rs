//! Untrusted trigger filters: the `filters` JSON a client PUTs. Decoding and compiling never
//! panic, and whatever compiles evaluates.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use switchyard_dispatcher::Filter;
use switchyard_event::Event;
use switchyard_meta::resources::SubscriptionsFilter;

fn event() -> &'static Event {
    static EVENT: OnceLock<Event> = OnceLock::new();
    EVENT.get_or_init(|| {
        let json = br#"{"specversion":"1.0","id":"1","type":"order.created","source":"/orders","count":7,
            "datacontenttype":"application/json","data":{"items":[{"sku":"A1"}]}}"#;
        switchyard_event::json::decode_event(json).expect("valid sample")
    })
}

fuzz_target!(|input: &[u8]| {
    if let Ok(filters) = serde_json::from_slice::<Vec<SubscriptionsFilter>>(input) {
        if let Ok(filter) = Filter::compile(None, &filters, "spec.") {
            let _ = filter.explain(event());
        }
    }
});
