//! CloudEvents 1.0.2 for Switchyard: the event model, its validation, and every wire format the
//! broker speaks — HTTP binary, structured and batch modes, the JSON event format, and the
//! compact storage codec used in log records.
//!
//! Everything here is pure code: no I/O, no async. That keeps the formats testable and
//! fuzzable alone, and lets every backend (embedded log, Kafka) share them.
//!
//! Invariant: wire formats are pure (no I/O, no async, no panics on input; enforced for the
//! dependencies by `tests/tests/architecture.rs`). Fidelity is the contract: a decoded event keeps each attribute's original text (`time`
//! keeps its offset), extension types (string, boolean, integer), attribute order, and the
//! data bytes unchanged.

pub mod error;
pub mod headers;
pub mod http;
pub mod json;
pub mod kafka;
pub mod knative;
pub mod limits;
pub mod model;
pub mod mqtt;
pub mod storage;
#[cfg(test)]
mod testing;
pub mod tracecontext;

pub use error::EventError;
pub use model::{AttrValue, Data, DataForm, Event};

/// The whole path an event takes, as one property: ingest in any HTTP mode → storage record →
/// binary-mode delivery → what the subscriber decodes.
#[cfg(test)]
mod pipeline_tests {
    use bytes::Bytes;
    use http::header::CONTENT_TYPE;
    use http::HeaderMap;
    use proptest::prelude::*;

    use crate::testing::arb_event;
    use crate::{http as binding, storage, Event};

    fn canonical(event: &Event) -> Vec<(String, String)> {
        event.attributes().iter().map(|(n, v)| (n.clone(), v.to_canonical_string().into_owned())).collect()
    }

    fn data_bytes(event: &Event) -> Bytes {
        event.data().map(|d| d.bytes.clone()).unwrap_or_default()
    }

    proptest! {
        #[test]
        fn any_ingest_mode_then_store_then_binary_delivery_preserves_every_attribute_and_byte(
            event in arb_event(),
            mode in 0u8..3,
        ) {
            let (headers, body) = match mode {
                0 => binding::encode_binary(&event, binding::HeaderEncoding::Percent),
                1 => {
                    let (content_type, body) = binding::encode_structured(&event);
                    let mut headers = HeaderMap::new();
                    headers.insert(CONTENT_TYPE, content_type);
                    (headers, body)
                }
                _ => {
                    let (content_type, body) = binding::encode_batch(std::slice::from_ref(&event));
                    let mut headers = HeaderMap::new();
                    headers.insert(CONTENT_TYPE, content_type);
                    (headers, body)
                }
            };
            let ingested = binding::decode_request(&headers, body).unwrap();
            prop_assert_eq!(ingested.len(), 1);
            if mode != 0 {
                // Structured and batch modes carry JSON types: the event is exactly the same.
                prop_assert_eq!(&ingested[0], &event);
            }
            let stored = storage::decode(&Bytes::from(storage::encode(&ingested[0]).unwrap())).unwrap();
            prop_assert_eq!(&stored, &ingested[0]);
            let (headers, body) = binding::encode_binary(&stored, binding::HeaderEncoding::Compatible);
            let delivered = binding::decode_request(&headers, body).unwrap();
            prop_assert_eq!(canonical(&delivered[0]), canonical(&event));
            prop_assert_eq!(data_bytes(&delivered[0]), data_bytes(&event));
        }
    }
}
