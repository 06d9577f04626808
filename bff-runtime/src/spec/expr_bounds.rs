//! Limits on the size and shape of a CEL expression, checked before it is parsed
//! and right after, so that a spec cannot crash or stall the compiler that the
//! operator runs for every tenant, nor the interpreter that runs per event.
//!
//! The parser and the interpreter both recurse over the expression. The length
//! bound caps how deep the parser can go (it runs on a thread with a known stack,
//! see [`parse_stack_bytes`]); the depth bound caps the interpreter, which runs on
//! ordinary threads; the macro bound caps the work per event, which grows with
//! the list sizes to the power of the nesting.

use cel::common::ast::{EntryExpr, Expr as Ast};
use cel::parser::Expression;

/// The longest expression accepted, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 4096;
/// The deepest syntax tree accepted (`a.b.c` is 3 deep, `f(g(x))` is 3 deep).
pub const MAX_DEPTH: usize = 64;
/// How many list macros (`all`, `exists`, `map`, `filter`, ...) may nest.
pub const MAX_NESTED_MACROS: usize = 3;

/// The stack the parser gets: enough for any expression of
/// [`MAX_EXPRESSION_BYTES`] (a test parses the worst shapes on it).
pub const fn parse_stack_bytes() -> usize {
    16 << 20
}

/// Refuses a source text that is too long to parse safely.
pub fn check_length(source: &str) -> Result<(), String> {
    if source.len() > MAX_EXPRESSION_BYTES {
        return Err(format!(
            "expression is {} bytes; at most {MAX_EXPRESSION_BYTES} are allowed",
            source.len()
        ));
    }
    Ok(())
}

/// Refuses a parsed expression that is too deep or nests too many macros.
pub fn check_shape(root: &Expression) -> Result<(), String> {
    // An explicit stack, so the check cannot itself run out of stack.
    let mut pending = vec![(root, 1usize, 0usize)];
    while let Some((node, depth, macros)) = pending.pop() {
        if depth > MAX_DEPTH {
            return Err(format!(
                "expression nests deeper than {MAX_DEPTH} levels; split it or simplify it"
            ));
        }
        let macros = macros + usize::from(matches!(node.expr, Ast::Comprehension(_)));
        if macros > MAX_NESTED_MACROS {
            return Err(format!(
                "expression nests more than {MAX_NESTED_MACROS} list macros (all, exists, map, filter)"
            ));
        }
        for child in children(node) {
            pending.push((child, depth + 1, macros));
        }
    }
    Ok(())
}

fn children(node: &Expression) -> Vec<&Expression> {
    match &node.expr {
        Ast::Select(select) => vec![&select.operand],
        Ast::Call(call) => call.target.iter().map(|t| &**t).chain(&call.args).collect(),
        Ast::Comprehension(c) => vec![
            &c.iter_range,
            &c.accu_init,
            &c.loop_cond,
            &c.loop_step,
            &c.result,
        ],
        Ast::List(list) => list.elements.iter().collect(),
        Ast::Map(map) => map.entries.iter().flat_map(|e| entry(&e.expr)).collect(),
        Ast::Struct(s) => s.entries.iter().flat_map(|e| entry(&e.expr)).collect(),
        Ast::Ident(_) | Ast::Literal(_) | Ast::Unspecified => vec![],
    }
}

fn entry(entry: &EntryExpr) -> Vec<&Expression> {
    match entry {
        EntryExpr::StructField(field) => vec![&field.value],
        EntryExpr::MapEntry(entry) => vec![&entry.key, &entry.value],
    }
}
