//! The experience spec: types, manifest parsing, validation and compilation.

pub mod access_plan;
pub mod api_names;
pub mod bounds;
pub mod command;
pub mod compile;
pub mod definition;
pub mod discriminator;
pub mod error;
pub mod expr;
pub mod expr_bounds;
mod expr_shortcut;
pub mod fields;
pub mod graphql_query;
pub mod links;
pub mod manifest;
pub mod types;
pub mod typescript;

pub use compile::{compile, CompiledExperience, CompiledProjection, CompiledRule, RuleAction};
pub use error::{SpecError, SpecErrors};
pub use manifest::{parse_manifests, spec_from_value, DocumentError, Manifest};
pub use types::*;

/// A sample from `config/samples/`, compiled: the specs unit tests work with.
#[cfg(test)]
pub fn sample(name: &str) -> ExperienceSpec {
    let path = format!(
        "{}/../config/samples/{name}.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    parse_manifests(&std::fs::read_to_string(path).expect("a sample"))
        .remove(0)
        .expect("a valid sample")
        .spec
}
