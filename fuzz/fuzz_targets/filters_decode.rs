//! Untrusted trigger filters: the `filters` JSON a client PUTs. Decoding and validation never
//! panic, and whatever validates compiles.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_meta::resources::{validate_filters, SubscriptionsFilter};

fuzz_target!(|input: &[u8]| {
    if let Ok(filters) = serde_json::from_slice::<Vec<SubscriptionsFilter>>(input) {
        let _ = validate_filters(None, &filters, "spec.");
    }
});
