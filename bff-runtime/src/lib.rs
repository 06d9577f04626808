//! Facet's Backend-for-Frontend runtime.
//!
//! One runtime serves one `FrontendExperience`: it reads Kafka topics, keeps
//! UI-ready projections built by CEL rules, and serves them to the clients allowed
//! to see them. The operator uses this library's [`spec`] module to validate the
//! very specs the runtime will run, and [`contract`] for what it gives each pod.

#[cfg(feature = "runtime")]
pub mod cli;
#[cfg(feature = "runtime")]
pub mod command;
pub mod contract;
#[cfg(feature = "runtime")]
pub mod dev;
#[cfg(feature = "runtime")]
pub mod ingest;
#[cfg(feature = "runtime")]
pub mod live;
pub mod logging;
#[cfg(feature = "runtime")]
pub mod metrics;
#[cfg(feature = "runtime")]
pub mod peer;
#[cfg(feature = "runtime")]
pub mod projection;
#[cfg(feature = "runtime")]
pub mod runtime;
#[cfg(feature = "runtime")]
pub mod serve;
pub mod spec;
#[cfg(feature = "runtime")]
pub mod store;
#[cfg(feature = "runtime")]
pub mod usage;
pub mod validate;
#[cfg(feature = "runtime")]
pub mod viewer;
