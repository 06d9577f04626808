//! The experience spec: types, manifest parsing, validation and compilation.

pub mod access_plan;
pub mod compile;
pub mod error;
pub mod expr;
pub mod fields;
pub mod manifest;
pub mod types;

pub use compile::{compile, CompiledExperience, CompiledProjection, CompiledRule, RuleAction};
pub use error::{SpecError, SpecErrors};
pub use manifest::{parse_manifests, spec_from_value, DocumentError, Manifest};
pub use types::*;
