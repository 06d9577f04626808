//! Expressions answered without the interpreter: most of what rules write is a
//! field of the event or the row (`event.orderId`, `row.total`) or a constant
//! (`"placed"`, `true`), and going through CEL for them (binding, resolving,
//! converting to CEL values and back to JSON) was a third of applying an event.
//!
//! A shortcut gives exactly what the interpreter would, or nothing: a field that
//! is missing, or a variable bound in CEL form only, leaves the expression to the
//! interpreter, which gives its value or its error as before (the tests hold the
//! two to the same results).

use cel::common::ast::Expr as Ast;
use cel::parser::Expression;

/// How an expression is answered without the interpreter.
#[derive(Debug, Clone)]
pub(super) enum Shortcut {
    /// `variable.a.b`: a field path below a variable.
    Field { variable: String, path: Vec<String> },
    /// A literal, as JSON.
    Constant(serde_json::Value),
}

/// The field path an expression is, if it is one (`event.customer.id`; not
/// `has(event.x)`, which tests rather than reads).
pub(super) fn field_path(expression: &Expression) -> Option<Shortcut> {
    let mut path = Vec::new();
    let mut node = expression;
    loop {
        match &node.expr {
            Ast::Select(select) if !select.test => {
                path.push(select.field.clone());
                node = &select.operand;
            }
            Ast::Ident(variable) if !path.is_empty() => {
                path.reverse();
                return Some(Shortcut::Field {
                    variable: variable.clone(),
                    path,
                });
            }
            _ => return None,
        }
    }
}

/// Whether an expression is a literal (`"placed"`, `true`, `3`), whose value
/// the interpreter gives once at compile time. Only literals: a deep constant
/// expression would be evaluated on the caller's stack.
pub(super) fn is_literal(expression: &Expression) -> bool {
    matches!(expression.expr, Ast::Literal(_))
}

/// The value at `path` below a JSON value, as CEL would give it back as JSON:
/// the same value, except that a top-level whole number of a field CEL reads as
/// a double (`double_first`) comes back as that double.
pub(super) fn json_at(
    value: &serde_json::Value,
    path: &[String],
    double_first: impl Fn(&str) -> bool,
) -> Option<serde_json::Value> {
    let (first, rest) = path.split_first()?;
    json_in_map(value.as_object()?, first, rest, double_first)
}

/// [`json_at`] for a path below a map.
pub(super) fn json_in_map(
    map: &serde_json::Map<String, serde_json::Value>,
    first: &str,
    rest: &[String],
    double_first: impl Fn(&str) -> bool,
) -> Option<serde_json::Value> {
    let mut value = map.get(first)?;
    for step in rest {
        value = value.as_object()?.get(step)?;
    }
    Some(match value.as_i64() {
        Some(i) if rest.is_empty() && double_first(first) => serde_json::Value::from(i as f64),
        _ => value.clone(),
    })
}
