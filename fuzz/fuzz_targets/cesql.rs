//! Untrusted CESQL filter expressions (trigger declarations): parsing arbitrary UTF-8 must never
//! panic, and whatever parses must evaluate against a sample event without panicking.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use switchyard_cesql::Value;
use switchyard_event::{AttrValue, Event};

fn sample_event() -> &'static Event {
    static EVENT: OnceLock<Event> = OnceLock::new();
    EVENT.get_or_init(|| {
        let s = |v: &str| AttrValue::String(v.to_owned());
        Event::new(
            vec![
                ("specversion".into(), s("1.0")),
                ("id".into(), s("a1b2c3")),
                ("source".into(), s("/orders/eu/42")),
                ("type".into(), s("com.example.order.created")),
                ("subject".into(), s("  Straße  ")),
                ("time".into(), s("2024-06-13T10:00:00Z")),
                ("sequence".into(), s("-2147483648")),
                ("flag".into(), AttrValue::Bool(true)),
                ("count".into(), AttrValue::Integer(i32::MIN)),
            ],
            None,
        )
        .expect("valid sample event")
    })
}

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else { return };
    match switchyard_cesql::parse(text) {
        Ok(expression) => {
            let event = sample_event();
            // `matches` takes shortcuts; it must agree with `evaluate`: only a Boolean true
            // passes (CESQL v1.0 §1.2).
            let truthy = matches!(expression.evaluate(event), Ok(Value::Boolean(true)));
            assert_eq!(expression.matches(event), truthy);
        }
        Err(error) => assert!(error.position <= text.chars().count()),
    }
});
