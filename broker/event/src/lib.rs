//! CloudEvents 1.0.2 for Switchyard: the event model, its validation, and every wire format the
//! broker speaks — HTTP binary, structured and batch modes, the JSON event format, and the
//! compact storage codec used in log records.
//!
//! Everything here is pure code: no I/O, no async. That keeps the formats testable and
//! fuzzable alone, and lets every backend (embedded log, Kafka) share them.
//!
//! Fidelity is the contract: a decoded event keeps each attribute's original text (`time`
//! keeps its offset), extension types (string, boolean, integer), attribute order, and the
//! data bytes unchanged.

pub mod error;
pub mod http;
pub mod json;
pub mod model;
pub mod storage;
#[cfg(test)]
mod testing;

pub use error::EventError;
pub use model::{AttrValue, Data, DataForm, Event};
