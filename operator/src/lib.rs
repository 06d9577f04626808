//! Facet's Kubernetes operator: reconciles `FrontendExperience` resources into
//! running Backend-for-Frontend runtimes.

pub mod api;
pub mod crd;
pub mod leader;
pub mod metrics;
pub mod reconcile;
