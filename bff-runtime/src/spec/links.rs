//! References between projections: rows embedded in other rows (`embeds`) and rows a
//! rule reads (`lookups`). Both name a projection by name, so they are checked once
//! every projection is known.

use std::collections::BTreeMap;

use super::bounds;
use super::compile::is_identifier;
use super::error::SpecError;
use super::expr::{Expr, Scope};
use super::types::{EmbedSpec, ExperienceSpec, FieldSpec, FieldType, ProjectionSpec};

/// An embed, compiled: `name` is the field of the embedding row that holds the
/// current row of `projection` whose key `key` gives.
#[derive(Debug, Clone)]
pub struct CompiledEmbed {
    pub name: String,
    pub projection: String,
    /// Over `row`, the embedding row.
    pub key: Expr,
    /// The field `key` reads when it is just `row.<field>`: read from the row as it
    /// is, without converting the row for CEL (embed keys are computed per write).
    pub key_field: Option<String>,
    /// The fields of the embedded row that are kept; all when empty.
    pub fields: Vec<String>,
    pub max_fan_out: usize,
}

/// The field an embed adds to its rows: an object with the embedded projection's
/// fields (or the chosen ones). `None` when the projection does not exist.
pub fn embedded_field(spec: &ExperienceSpec, embed: &EmbedSpec) -> Option<FieldSpec> {
    let target = spec
        .projections
        .iter()
        .find(|p| p.name == embed.projection)?;
    let fields = target
        .fields
        .iter()
        .filter(|(name, _)| embed.fields.is_empty() || embed.fields.contains(name))
        .map(|(name, field)| (name.clone(), field.clone()))
        .collect();
    Some(FieldSpec {
        field_type: FieldType::Object,
        description: Some(format!(
            "The current `{}` row (embedded; null while there is none).",
            embed.projection
        )),
        enum_values: None,
        deprecated: None,
        items: None,
        fields: Some(fields),
    })
}

/// A projection's fields as served: the declared ones and one per embed.
pub fn served_fields(
    spec: &ExperienceSpec,
    projection: &ProjectionSpec,
) -> BTreeMap<String, FieldSpec> {
    let mut fields = projection.fields.clone();
    for (name, embed) in &projection.embeds {
        if let Some(field) = embedded_field(spec, embed) {
            fields.entry(name.clone()).or_insert(field);
        }
    }
    fields
}

/// Checks and compiles the embeds of one projection.
pub fn check_embeds(
    spec: &ExperienceSpec,
    path: &str,
    projection: &ProjectionSpec,
    errors: &mut Vec<SpecError>,
) -> Vec<CompiledEmbed> {
    let mut compiled = Vec::new();
    for (name, embed) in &projection.embeds {
        let at = format!("{path}.embeds.{name}");
        let before = errors.len();
        let mut refuse = |at: String, message: String| errors.push(SpecError::new(at, message));
        if !is_identifier(name) {
            refuse(at.clone(), format!("`{name}` is not a valid field name: start with a letter, then letters, digits or `_`"));
        }
        if projection.fields.contains_key(name) {
            refuse(
                at.clone(),
                format!("`{name}` is also a declared field: an embed names a field of its own"),
            );
        }
        check_target(spec, &at, projection, embed, &mut refuse);
        bounds::check(
            [(
                format!("{at}.maxFanOut"),
                embed.max_fan_out.into(),
                bounds::MAX_FAN_OUT,
            )],
            errors,
        );
        let key = Expr::compile(
            &format!("{at}.key"),
            &embed.key,
            Scope::Embed,
            &projection.fields,
        )
        .map_err(|e| errors.extend(e))
        .ok();
        if errors.len() == before {
            compiled.extend(key.map(|key| CompiledEmbed {
                name: name.clone(),
                projection: embed.projection.clone(),
                key_field: plain_row_field(&key),
                key,
                fields: embed.fields.clone(),
                max_fan_out: embed.max_fan_out as usize,
            }));
        }
    }
    compiled
}

/// The projection an embed reads: another one, that embeds nothing itself, with
/// the fields the embed takes.
fn check_target(
    spec: &ExperienceSpec,
    at: &str,
    projection: &ProjectionSpec,
    embed: &EmbedSpec,
    refuse: &mut impl FnMut(String, String),
) {
    match spec
        .projections
        .iter()
        .find(|p| p.name == embed.projection)
    {
        None => {
            let known: Vec<&str> = spec.projections.iter().map(|p| p.name.as_str()).collect();
            refuse(
                format!("{at}.projection"),
                format!(
                    "unknown projection `{}` (projections: {})",
                    embed.projection,
                    known.join(", ")
                ),
            );
        }
        Some(target) if target.name == projection.name => refuse(
            format!("{at}.projection"),
            "a projection cannot embed its own rows".into(),
        ),
        Some(target) if !target.embeds.is_empty() => refuse(
            format!("{at}.projection"),
            format!(
                "`{}` embeds rows itself; embeds are one level deep, so embed what it embeds here directly",
                target.name
            ),
        ),
        Some(target) => {
            for field in &embed.fields {
                if !target.fields.contains_key(field) {
                    let declared: Vec<&str> =
                        target.fields.keys().map(String::as_str).collect();
                    refuse(
                        format!("{at}.fields"),
                        format!(
                            "`{field}` is not a field of `{}` (fields: {})",
                            target.name,
                            declared.join(", ")
                        ),
                    );
                }
            }
        }
    }
}

/// The projection a lookup names must exist.
pub fn check_lookup_projection(
    spec: &ExperienceSpec,
    path: &str,
    projection: &str,
    errors: &mut Vec<SpecError>,
) {
    if !spec.projections.iter().any(|p| p.name == projection) {
        let known: Vec<&str> = spec.projections.iter().map(|p| p.name.as_str()).collect();
        errors.push(SpecError::new(
            format!("{path}.projection"),
            format!(
                "unknown projection `{projection}` (projections: {})",
                known.join(", ")
            ),
        ));
    }
}

/// `f` when the expression is exactly `row.f`.
fn plain_row_field(expr: &Expr) -> Option<String> {
    use cel::common::ast::Expr as Ast;
    let Ast::Select(select) = &expr.ast().expr else {
        return None;
    };
    match &select.operand.expr {
        Ast::Ident(name) if name == "row" && !select.test => Some(select.field.clone()),
        _ => None,
    }
}
