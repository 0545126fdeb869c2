//! The `switchyard` binary's library: HTTP and CLI glue around the engine. The HTTP surface
//! ([`routes`], one module per resource, documented by [`openapi`]), the `serve` wiring that
//! opens a backend and starts the engine on it ([`serve`]: the only code that names a concrete
//! backend), configuration ([`config`]), the Prometheus exporter ([`metrics`]), errors as
//! problem+json ([`problem`]), and the CLI's client commands ([`cli`]).

pub mod auth;
pub mod cli;
pub mod config;
pub mod metrics;
pub mod oidc;
pub mod openapi;
pub mod problem;
pub mod routes;
pub mod serve;

/// The version and the commit it was built from (`api/build.rs`), as `switchyard --version`
/// shows them: `0.1.0 (16244039af07)`.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("SWITCHYARD_COMMIT"), ")");
