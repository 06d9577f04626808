//! Reading `FrontendExperience` manifests: multi-document YAML as `kubectl apply` takes it.

use serde::Deserialize;

use super::error::{SpecError, SpecErrors};
use super::types::ExperienceSpec;

pub const API_VERSION: &str = "facet.dev/v1alpha1";
pub const KIND: &str = "FrontendExperience";

/// One `FrontendExperience` read from a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub name: String,
    pub namespace: Option<String>,
    pub spec: ExperienceSpec,
}

/// What went wrong with one document of a manifest file.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentError {
    /// 1-based position of the document in its file.
    pub document: usize,
    /// `namespace/name` when the document got that far.
    pub name: Option<String>,
    pub errors: SpecErrors,
}

/// Reads every `FrontendExperience` in a multi-document YAML text. Documents of other
/// kinds are skipped, so a file can hold a whole application's manifests.
pub fn parse_manifests(text: &str) -> Vec<Result<Manifest, DocumentError>> {
    let mut results = Vec::new();
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let number = i + 1;
        let value = match serde_yaml::Value::deserialize(document) {
            Ok(value) => value,
            Err(e) => {
                results.push(Err(DocumentError {
                    document: number,
                    name: None,
                    errors: SpecErrors(vec![SpecError::new("(yaml)", e.to_string())]),
                }));
                // The YAML stream cannot be read past a syntax error.
                break;
            }
        };
        if let Some(result) = read_document(number, value) {
            results.push(result);
        }
    }
    results
}

fn read_document(
    number: usize,
    value: serde_yaml::Value,
) -> Option<Result<Manifest, DocumentError>> {
    if value.is_null() {
        return None;
    }
    if value.get("kind").and_then(|k| k.as_str()) != Some(KIND) {
        return None;
    }
    let text = |key: &str| {
        value
            .get("metadata")
            .and_then(|m| m.get(key))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let name = text("name");
    let namespace = text("namespace");
    let display_name = name.as_ref().map(|n| match &namespace {
        Some(ns) => format!("{ns}/{n}"),
        None => n.clone(),
    });
    let fail = |errors: Vec<SpecError>| DocumentError {
        document: number,
        name: display_name.clone(),
        errors: SpecErrors(errors),
    };

    let mut errors = Vec::new();
    let api_version = value.get("apiVersion").and_then(|v| v.as_str());
    if api_version != Some(API_VERSION) {
        errors.push(SpecError::new(
            "apiVersion",
            format!(
                "must be {API_VERSION}, found {}",
                api_version.unwrap_or("nothing")
            ),
        ));
    }
    if name.is_none() {
        errors.push(SpecError::new("metadata.name", "is missing"));
    }
    let spec = match value.get("spec") {
        Some(spec) => match spec_from_value(spec.clone()) {
            Ok(spec) => Some(spec),
            Err(e) => {
                errors.extend(e.0);
                None
            }
        },
        None => {
            errors.push(SpecError::new("spec", "is missing"));
            None
        }
    };
    Some(match (errors.is_empty(), spec, name) {
        (true, Some(spec), Some(name)) => Ok(Manifest {
            name,
            namespace,
            spec,
        }),
        _ => Err(fail(errors)),
    })
}

/// Reads a spec from YAML, naming the exact path of a wrong type or of a field the
/// spec does not have (a typo such as `upsrt` would otherwise be silently ignored).
pub fn spec_from_value(value: serde_yaml::Value) -> Result<ExperienceSpec, SpecErrors> {
    let mut unknown = Vec::new();
    let mut record_unknown = |path: serde_ignored::Path| {
        unknown.push(SpecError::new(
            format!("spec{}", ignored_path(&path)),
            "unknown field",
        ))
    };
    let deserializer = serde_ignored::Deserializer::new(value, &mut record_unknown);
    let result = serde_path_to_error::deserialize::<_, ExperienceSpec>(deserializer);
    match result {
        Ok(spec) if unknown.is_empty() => Ok(spec),
        Ok(_) => Err(SpecErrors(unknown)),
        Err(e) => {
            let path = e.path().to_string();
            let path = if path == "." {
                "spec".to_string()
            } else {
                format!("spec.{path}")
            };
            let mut errors = vec![SpecError::new(path, e.into_inner().to_string())];
            errors.extend(unknown);
            Err(SpecErrors(errors))
        }
    }
}

/// Renders a serde_ignored path in the `spec.a[0].b` style the rest of the errors use.
fn ignored_path(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        Path::Map { parent, key } => format!("{}.{key}", ignored_path(parent)),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => ignored_path(parent),
    }
}
