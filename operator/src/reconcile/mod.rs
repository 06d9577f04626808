//! Reconciling experiences: pure builders of desired state and status, and the
//! controller that applies them.

pub mod apply;
pub mod builders;
pub mod children;
pub mod cleanup;
pub mod controller;
pub mod error;
pub mod kafka;
pub mod policy;
pub mod progress;
pub mod rebuild;
pub mod retention;
pub mod status;
pub mod storage;
pub mod survey;
