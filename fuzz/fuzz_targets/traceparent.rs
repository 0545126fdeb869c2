//! Untrusted W3C trace context (ingest `traceparent`/`tracestate` headers, and the
//! Distributed Tracing extension of any event): parsing never panics, whatever parses formats
//! to a value that parses back the same, and a version-00 value formats back unchanged.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use switchyard_event::tracecontext::{TraceContext, TraceParent};

fuzz_target!(|input: &[u8]| {
    if let Ok(text) = std::str::from_utf8(input) {
        if let Ok(parsed) = TraceParent::parse(text) {
            let formatted = parsed.to_string();
            assert_eq!(TraceParent::parse(&formatted), Ok(parsed));
            if text.starts_with("00-") {
                assert_eq!(formatted, text.trim_matches([' ', '\t']));
            }
            assert_eq!(parsed.child().trace_id(), parsed.trace_id());
        }
    }
    // The same bytes as request headers: the first half a traceparent, the rest a tracestate.
    let (traceparent, tracestate) = input.split_at(input.len() / 2);
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(traceparent) {
        headers.insert("traceparent", value);
    }
    if let Ok(value) = HeaderValue::from_bytes(tracestate) {
        headers.insert("tracestate", value);
    }
    if let Some(context) = TraceContext::from_headers(&headers) {
        let _ = context.child_headers(context.traceparent.child().parent_id());
    }
});
