//! What an `access` rule compares, so rows can be found and changes routed by an
//! index instead of evaluating the rule against every row or every client.
//!
//! A rule such as `row.customerId == auth.sub && row.region == auth.region` is a
//! conjunction of equalities between a row field and a claim. Each such conjunct is
//! a necessary condition: the row's field must equal that claim of the client. When
//! the rule is nothing but such conjuncts, comparing the values decides it; any other
//! rule still runs in CEL, and its equality conjuncts only narrow which rows or
//! clients it runs for.

use cel::common::ast::operators::{EQUALS, LOGICAL_AND};
use cel::common::ast::Expr as Ast;
use cel::parser::Expression;

use super::expr::Expr;

/// `row.<field> == auth.<claim path>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Equality {
    pub field: String,
    pub claim: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessPlan {
    /// Conjuncts of the rule, each necessary for a row to be visible.
    pub equalities: Vec<Equality>,
    /// The rule is exactly these equalities: comparing values decides it.
    pub exact: bool,
}

impl AccessPlan {
    pub fn of(access: &Expr) -> AccessPlan {
        let mut plan = AccessPlan {
            equalities: Vec::new(),
            exact: true,
        };
        plan.conjuncts(access.ast());
        if plan.equalities.is_empty() {
            plan.exact = false;
        }
        plan
    }

    fn conjuncts(&mut self, node: &Expression) {
        if let Ast::Call(call) = &node.expr {
            if call.target.is_none() && call.args.len() == 2 {
                if call.func_name == LOGICAL_AND {
                    self.conjuncts(&call.args[0]);
                    self.conjuncts(&call.args[1]);
                    return;
                }
                if call.func_name == EQUALS {
                    let (a, b) = (&call.args[0], &call.args[1]);
                    if let Some(equality) = equality(a, b).or_else(|| equality(b, a)) {
                        self.equalities.push(equality);
                        return;
                    }
                }
            }
        }
        self.exact = false;
    }

    /// The row fields the index must cover.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.equalities.iter().map(|e| e.field.as_str())
    }
}

fn equality(row_side: &Expression, auth_side: &Expression) -> Option<Equality> {
    let Ast::Select(select) = &row_side.expr else {
        return None;
    };
    if select.test || !matches!(&select.operand.expr, Ast::Ident(name) if name == "row") {
        return None;
    }
    Some(Equality {
        field: select.field.clone(),
        claim: claim_path(auth_side)?,
    })
}

/// `auth.a.b` → `["a", "b"]`.
fn claim_path(node: &Expression) -> Option<Vec<String>> {
    match &node.expr {
        Ast::Select(select) if !select.test => {
            if matches!(&select.operand.expr, Ast::Ident(name) if name == "auth") {
                return Some(vec![select.field.clone()]);
            }
            let mut path = claim_path(&select.operand)?;
            path.push(select.field.clone());
            Some(path)
        }
        _ => None,
    }
}

/// The claim at `path`, if the claims have it.
pub fn claim<'a>(claims: &'a serde_json::Value, path: &[String]) -> Option<&'a serde_json::Value> {
    path.iter().try_fold(claims, |value, name| value.get(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::expr::Scope;
    use crate::spec::FieldSpec;
    use std::collections::BTreeMap;

    fn plan(source: &str) -> AccessPlan {
        let fields: BTreeMap<String, FieldSpec> = ["customerId", "region", "public"]
            .iter()
            .map(|f| {
                (
                    f.to_string(),
                    serde_json::from_value(serde_json::json!({"type": "string"})).unwrap(),
                )
            })
            .collect();
        AccessPlan::of(&Expr::compile("access", source, Scope::Access, &fields).unwrap())
    }

    fn eq(field: &str, claim: &[&str]) -> Equality {
        Equality {
            field: field.into(),
            claim: claim.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn equalities_between_row_fields_and_claims_are_found() {
        let p = plan("row.customerId == auth.sub");
        assert_eq!(p.equalities, [eq("customerId", &["sub"])]);
        assert!(p.exact);
        let p = plan("auth.org.region == row.region && row.customerId == auth.sub");
        assert_eq!(
            p.equalities,
            [eq("region", &["org", "region"]), eq("customerId", &["sub"])]
        );
        assert!(p.exact);
    }

    #[test]
    fn other_rules_keep_their_equalities_but_are_not_exact() {
        let p = plan("row.customerId == auth.sub && auth.sub != \"\"");
        assert_eq!(p.equalities, [eq("customerId", &["sub"])]);
        assert!(!p.exact);
        for source in [
            "row.customerId == auth.sub || row.public == \"yes\"",
            "row.customerId == \"alice\"",
            "auth.sub in [row.customerId]",
        ] {
            let p = plan(source);
            assert!(p.equalities.is_empty() && !p.exact, "{source}: {p:?}");
        }
    }
}
