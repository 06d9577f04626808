//! `facet-bff validate`: the spec compiler as a command, for CI and pre-commit hooks.

use std::io::Read;
use std::path::Path;

use crate::spec::{compile, parse_manifests};

/// Validates every FrontendExperience in `text`, writing one report line per
/// experience (and one per error) to `out`. Returns the number of errors found.
pub fn validate_text(
    label: &str,
    text: &str,
    out: &mut impl std::io::Write,
) -> std::io::Result<usize> {
    let mut errors = 0;
    let mut experiences = 0;
    for result in parse_manifests(text) {
        experiences += 1;
        let (name, found) = match result {
            Ok(manifest) => {
                let name = match &manifest.namespace {
                    Some(ns) => format!("{ns}/{}", manifest.name),
                    None => manifest.name.clone(),
                };
                match compile(&manifest.spec) {
                    Ok(_) => {
                        writeln!(out, "{label}: {name}: ok")?;
                        continue;
                    }
                    Err(e) => (name, e),
                }
            }
            Err(e) => (
                e.name.unwrap_or_else(|| format!("document {}", e.document)),
                e.errors,
            ),
        };
        for error in &found.0 {
            writeln!(out, "{label}: {name}: error: {error}")?;
        }
        errors += found.0.len();
    }
    if experiences == 0 {
        writeln!(out, "{label}: error: no FrontendExperience found")?;
        errors += 1;
    }
    Ok(errors)
}

/// Reads a file (or standard input for `-`) and validates it.
pub fn validate_path(path: &Path, out: &mut impl std::io::Write) -> std::io::Result<usize> {
    let label = path.display().to_string();
    let text = if label == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        text
    } else {
        match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                writeln!(out, "{label}: error: cannot read: {e}")?;
                return Ok(1);
            }
        }
    };
    validate_text(&label, &text, out)
}
