//! Facet's Backend-for-Frontend runtime.
//!
//! One runtime serves one `FrontendExperience`: it reads Kafka topics, keeps
//! UI-ready projections built by CEL rules, and serves them to the clients allowed
//! to see them. The operator uses this library's [`spec`] module to validate the
//! very specs the runtime will run, and [`contract`] for what it gives each pod.

pub mod cli;
pub mod command;
pub mod contract;
pub mod dev;
pub mod ingest;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod projection;
pub mod runtime;
pub mod serve;
pub mod spec;
pub mod store;
pub mod validate;
