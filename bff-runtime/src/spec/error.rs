//! Errors found in a spec, each naming where it is and what is wrong.

use std::fmt;

/// One problem in a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// Where the problem is, e.g. `spec.projections[1].rules[0].when`.
    pub path: String,
    /// The CEL expression at that path, when the problem is in one.
    pub expression: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl SpecError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError {
            path: path.into(),
            expression: None,
            message: message.into(),
        }
    }

    pub fn in_expression(
        path: impl Into<String>,
        expression: &str,
        message: impl Into<String>,
    ) -> Self {
        SpecError {
            path: path.into(),
            expression: Some(excerpt(expression)),
            message: message.into(),
        }
    }
}

/// How much of an expression an error quotes: enough to find it, and a status
/// condition stays small even when the expression is refused for its length.
const QUOTED_CHARS: usize = 160;

fn excerpt(expression: &str) -> String {
    match expression.char_indices().nth(QUOTED_CHARS) {
        Some((end, _)) => format!("{}…", &expression[..end]),
        None => expression.to_string(),
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)?;
        if let Some(expression) = &self.expression {
            write!(f, "\n    in expression: {expression}")?;
        }
        Ok(())
    }
}

/// Every problem found in a spec: the compiler collects them all, not just the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl SpecErrors {
    /// The error messages one per line, as the operator puts them in a status condition.
    pub fn summary(&self) -> String {
        self.0
            .iter()
            .map(|e| match &e.expression {
                Some(expression) => format!("{}: {} (in `{}`)", e.path, e.message, expression),
                None => format!("{}: {}", e.path, e.message),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}
