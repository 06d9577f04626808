//! The embedded development mode: an in-process Kafka, a sample's events, the
//! runtime and its console, from one command.

pub mod events;
