//! Commands as the compiler checks them: every name declared, every expression
//! compiled in the scope it runs in, lookups of projections that exist.

use std::collections::{BTreeMap, BTreeSet};

use super::bounds;
use super::compile::{check_fields, check_topic_name, is_identifier};
use super::error::SpecError;
use super::expr::{Expr, Scope};
use super::types::{CommandSpec, ExperienceSpec, FieldSpec};

#[derive(Debug, Clone)]
pub struct CompiledCommand {
    pub name: String,
    pub description: Option<String>,
    pub input: BTreeMap<String, FieldSpec>,
    pub optional: BTreeSet<String>,
    pub lookups: Vec<CompiledLookup>,
    pub allow: Option<Expr>,
    pub validate: Vec<CompiledValidation>,
    pub topic: String,
    pub key: Expr,
    pub value: Expr,
    pub headers: Vec<(String, Expr)>,
    pub max_wait: std::time::Duration,
}

#[derive(Debug, Clone)]
pub struct CompiledLookup {
    pub name: String,
    pub projection: String,
    pub key: Expr,
}

#[derive(Debug, Clone)]
pub struct CompiledValidation {
    pub rule: Expr,
    pub message: String,
    pub field: Option<String>,
}

impl CompiledCommand {
    pub fn is_required(&self, field: &str) -> bool {
        !self.optional.contains(field)
    }
}

/// Headers Facet sets on every command record; a spec may not set them itself.
pub const RESERVED_HEADERS: &[&str] = &[
    "facet-command-id",
    "facet-command",
    "facet-user",
    "traceparent",
];

pub fn check_commands(spec: &ExperienceSpec, errors: &mut Vec<SpecError>) -> Vec<CompiledCommand> {
    let mut names = BTreeSet::new();
    let mut compiled = Vec::new();
    for (i, command) in spec.commands.iter().enumerate() {
        let path = format!("spec.commands[{i}]");
        if !is_identifier(&command.name) {
            errors.push(SpecError::new(
                format!("{path}.name"),
                format!("`{}` is not a valid name: start with a letter, then letters, digits or `_` (it names a GraphQL mutation)", command.name),
            ));
        }
        if !names.insert(command.name.clone()) {
            errors.push(SpecError::new(
                format!("{path}.name"),
                format!("duplicate command name `{}`", command.name),
            ));
        }
        if command.input.is_empty() {
            errors.push(SpecError::new(
                format!("{path}.input"),
                "is empty: declare the input fields",
            ));
        }
        check_fields(&format!("{path}.input"), &command.input, errors);
        if let Err(message) = check_topic_name(&command.topic) {
            errors.push(SpecError::new(format!("{path}.topic"), message));
        }
        bounds::check(
            [(
                format!("{path}.maxWaitMs"),
                command.max_wait_ms.into(),
                bounds::COMMAND_MAX_WAIT_MS,
            )],
            errors,
        );
        if let Some(c) = check_command(&path, spec, command, errors) {
            compiled.push(c);
        }
    }
    compiled
}

/// The checks of a command that need no expression: every name it gives (optional
/// inputs, lookups' projections, validations' fields, headers) names something.
fn check_names(
    path: &str,
    spec: &ExperienceSpec,
    command: &CommandSpec,
    errors: &mut Vec<SpecError>,
) {
    for optional in &command.optional {
        if !command.input.contains_key(optional) {
            errors.push(SpecError::new(
                format!("{path}.optional"),
                format!("`{optional}` is not an input field"),
            ));
        }
    }
    for (name, lookup) in &command.lookups {
        let at = format!("{path}.lookups.{name}");
        super::links::check_lookup_projection(spec, &at, &lookup.projection, errors);
    }
    for (i, v) in command.validate.iter().enumerate() {
        if let Some(field) = &v.field {
            if !command.input.contains_key(field) {
                errors.push(SpecError::new(
                    format!("{path}.validate[{i}].field"),
                    format!("`{field}` is not an input field"),
                ));
            }
        }
    }
    for name in command.headers.keys() {
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            errors.push(SpecError::new(
                format!("{path}.headers.{name}"),
                "is set by Facet on every command record",
            ));
        }
    }
}

fn check_command(
    path: &str,
    spec: &ExperienceSpec,
    command: &CommandSpec,
    errors: &mut Vec<SpecError>,
) -> Option<CompiledCommand> {
    let no_fields = BTreeMap::new();
    let mut expr = |at: String, source: &str, scope: Scope| {
        Expr::compile(&at, source, scope, &no_fields)
            .map_err(|e| errors.extend(e))
            .ok()
    };
    let lookups: Vec<Option<CompiledLookup>> = command
        .lookups
        .iter()
        .map(|(name, lookup)| {
            let key = expr(
                format!("{path}.lookups.{name}.key"),
                &lookup.key,
                Scope::Lookup,
            )?;
            Some(CompiledLookup {
                name: name.clone(),
                projection: lookup.projection.clone(),
                key,
            })
        })
        .collect();
    let allow = command
        .allow
        .as_ref()
        .map(|allow| expr(format!("{path}.allow"), allow, Scope::Command));
    let validate: Vec<Option<CompiledValidation>> = command
        .validate
        .iter()
        .enumerate()
        .map(|(i, v)| {
            Some(CompiledValidation {
                rule: expr(
                    format!("{path}.validate[{i}].rule"),
                    &v.rule,
                    Scope::Command,
                )?,
                message: v.message.clone(),
                field: v.field.clone(),
            })
        })
        .collect();
    let key = expr(format!("{path}.key"), &command.key, Scope::Command);
    let value = expr(format!("{path}.value"), &command.value, Scope::Command);
    let headers: Vec<Option<(String, Expr)>> = command
        .headers
        .iter()
        .map(|(name, source)| {
            Some((
                name.clone(),
                expr(format!("{path}.headers.{name}"), source, Scope::Command)?,
            ))
        })
        .collect();

    check_names(path, spec, command, errors);
    Some(CompiledCommand {
        name: command.name.clone(),
        description: command.description.clone(),
        input: command.input.clone(),
        optional: command.optional.iter().cloned().collect(),
        lookups: lookups.into_iter().collect::<Option<_>>()?,
        allow: allow.flatten(),
        validate: validate.into_iter().collect::<Option<_>>()?,
        topic: command.topic.clone(),
        key: key?,
        value: value?,
        headers: headers.into_iter().collect::<Option<_>>()?,
        max_wait: std::time::Duration::from_millis(u64::from(command.max_wait_ms)),
    })
}
