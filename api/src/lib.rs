//! The `switchyard` binary's library: HTTP ingest and REST API ([`server`]), the glue that
//! applies declarations to the log and the dispatcher ([`controller`]), configuration, and the
//! CLI's client commands. This crate is the only one that knows which log backend runs.

pub mod client;
#[cfg(feature = "kafka")]
pub mod cluster;
pub mod config;
pub mod controller;
mod filters;
pub mod metrics;
pub mod openapi;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod problem;
pub mod serve;
pub mod server;
pub mod sources;
