//! Which events a rule is written for, known without running CEL.
//!
//! Most rules filter on the event's kind: `event.type == "OrderPlaced"`, perhaps
//! with more conditions after `&&`. Such an equality is a necessary condition, so an
//! event whose `type` is another string cannot match, and the rule is passed over by
//! one string comparison instead of binding and evaluating its filter (or reading the
//! row, when the rest of the filter looks at it). Anything else (the field missing,
//! not a string) still goes through CEL, so errors are reported exactly as before.

use cel::common::ast::operators::{EQUALS, LOGICAL_AND};
use cel::common::ast::{Expr as Ast, LiteralValue};
use cel::parser::Expression;
use serde_json::Value;

use super::expr::Expr;

/// `event.<field> == "<value>"`, a conjunct of a rule's filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discriminator {
    pub field: String,
    pub value: String,
    /// The filter is this equality and nothing else: a match decides it.
    pub exact: bool,
}

/// What the discriminator says of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The field is a different string: the filter is false.
    Skip,
    /// The field equals the value and the filter is nothing more: it is true.
    Matches,
    /// The filter must be evaluated.
    Evaluate,
}

impl Discriminator {
    /// The first `event.<field> == "<string>"` conjunct of a filter, if any.
    pub fn of(when: &Expr) -> Option<Discriminator> {
        let mut conjuncts = Vec::new();
        flatten_and(when.ast(), &mut conjuncts);
        let exact = conjuncts.len() == 1;
        conjuncts.into_iter().find_map(|node| {
            let (field, value) = event_equality(node)?;
            Some(Discriminator {
                field,
                value,
                exact,
            })
        })
    }

    pub fn judge(&self, event: &Value) -> Verdict {
        match event.get(&self.field) {
            Some(Value::String(s)) if *s == self.value => match self.exact {
                true => Verdict::Matches,
                false => Verdict::Evaluate,
            },
            Some(Value::String(_)) => Verdict::Skip,
            _ => Verdict::Evaluate,
        }
    }
}

fn flatten_and<'a>(node: &'a Expression, out: &mut Vec<&'a Expression>) {
    if let Ast::Call(call) = &node.expr {
        if call.target.is_none() && call.args.len() == 2 && call.func_name == LOGICAL_AND {
            flatten_and(&call.args[0], out);
            flatten_and(&call.args[1], out);
            return;
        }
    }
    out.push(node);
}

fn event_equality(node: &Expression) -> Option<(String, String)> {
    let Ast::Call(call) = &node.expr else {
        return None;
    };
    if call.target.is_some() || call.args.len() != 2 || call.func_name != EQUALS {
        return None;
    }
    let (a, b) = (&call.args[0], &call.args[1]);
    field_and_literal(a, b).or_else(|| field_and_literal(b, a))
}

fn field_and_literal(field: &Expression, literal: &Expression) -> Option<(String, String)> {
    let Ast::Select(select) = &field.expr else {
        return None;
    };
    if select.test || !matches!(&select.operand.expr, Ast::Ident(name) if name == "event") {
        return None;
    }
    let Ast::Literal(LiteralValue::String(value)) = &literal.expr else {
        return None;
    };
    Some((select.field.clone(), value.inner().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::expr::Scope;
    use serde_json::json;

    fn of(source: &str) -> Option<Discriminator> {
        let fields = [(
            "status".to_string(),
            serde_json::from_value(json!({"type": "string"})).unwrap(),
        )]
        .into_iter()
        .collect();
        Discriminator::of(&Expr::compile("when", source, Scope::Rule, &fields).unwrap())
    }

    #[test]
    fn a_kind_equality_is_found_alone_or_in_a_conjunction() {
        let d = of(r#"event.type == "OrderPlaced""#).unwrap();
        assert_eq!(
            (d.field.as_str(), d.value.as_str(), d.exact),
            ("type", "OrderPlaced", true)
        );
        let d = of(r#"row.status == "placed" && "OrderShipped" == event.kind"#).unwrap();
        assert_eq!(
            (d.field.as_str(), d.value.as_str(), d.exact),
            ("kind", "OrderShipped", false)
        );
    }

    #[test]
    fn other_filters_have_none() {
        assert_eq!(of(r#"event.type == "A" || event.type == "B""#), None);
        assert_eq!(of(r#"event.type != "A""#), None);
        assert_eq!(of("event.total == 5"), None);
        assert_eq!(of(r#"row.status == "placed""#), None);
        assert_eq!(of(r#"has(event.type) == "x""#), None);
    }

    #[test]
    fn only_a_different_string_skips() {
        let d = of(r#"event.type == "OrderPlaced" && event.total > 0"#).unwrap();
        assert_eq!(d.judge(&json!({"type": "OrderShipped"})), Verdict::Skip);
        assert_eq!(d.judge(&json!({"type": "OrderPlaced"})), Verdict::Evaluate);
        // Missing, mistyped or a tombstone: CEL decides, and reports its errors.
        assert_eq!(d.judge(&json!({})), Verdict::Evaluate);
        assert_eq!(d.judge(&json!({"type": 3})), Verdict::Evaluate);
        assert_eq!(d.judge(&Value::Null), Verdict::Evaluate);
        let exact = of(r#"event.type == "OrderPlaced""#).unwrap();
        assert_eq!(
            exact.judge(&json!({"type": "OrderPlaced"})),
            Verdict::Matches
        );
    }
}
