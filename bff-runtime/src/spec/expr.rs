//! Compiled CEL expressions: what each may refer to, how they run, and how JSON
//! values cross into and out of CEL.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use cel::common::ast::{EntryExpr, Expr as Ast};
use cel::common::types::CelDouble;
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::parser::Expression;
use cel::{Context, Env, ExecutionError, Program, Value};

use super::error::SpecError;
use super::expr_bounds;
use super::expr_shortcut::{self, Shortcut};
use super::types::FieldSpec;

/// Which variables an expression may use, by where it stands in the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A row key: only the event and its Kafka record, since the row is found by the key.
    Key,
    /// A rule's `when` and the values it writes: the event, its record, the current
    /// row and the rows the rule looks up.
    Rule,
    /// The key of an embedded row: the embedding row alone, so it can be recomputed
    /// whenever that row changes.
    Embed,
    /// An `access` rule: the row and the client's verified claims.
    Access,
    /// A command's checks, key, value and headers: its input, the caller, the rows it looked up.
    Command,
    /// A command's lookup key: its input and the caller.
    Lookup,
}

impl Scope {
    fn variables(self) -> &'static [&'static str] {
        match self {
            Scope::Key => &["event", "record"],
            Scope::Rule => &["event", "row", "record", "lookup"],
            Scope::Embed => &["row"],
            Scope::Access => &["row", "auth"],
            Scope::Command => &["input", "auth", "lookup"],
            Scope::Lookup => &["input", "auth"],
        }
    }
}

/// Identifiers CEL itself defines (type names used in `type(x) == string`).
const CEL_IDENTIFIERS: &[&str] = &[
    "int",
    "uint",
    "double",
    "bool",
    "string",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
];

/// A CEL expression compiled once when the spec is loaded.
#[derive(Clone)]
pub struct Expr {
    /// Where it stands in the spec, for error messages at run time.
    pub path: String,
    /// The text as written.
    pub source: String,
    program: Arc<Program>,
    /// The variables it refers to, e.g. so a filter that ignores `row` runs before the row is read.
    variables: Vec<&'static str>,
    /// How it is answered without the interpreter, if it can be (see [`Expr::json_shortcut`]).
    shortcut: Option<Shortcut>,
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Expr({}: {})", self.path, self.source)
    }
}

fn shared_env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(Env::stdlib())).clone()
}

/// Parses on a thread of its own whose stack fits the longest expression allowed:
/// the parser recurses, and the caller's stack (a tokio worker's, say) may be small.
/// The shape is checked there too, so that a tree refused for its depth is also
/// dropped (recursively) on that stack.
fn parse(path: &str, source: &str) -> Result<Program, Vec<SpecError>> {
    let parse_and_check = || {
        let program = shared_env().compile(source).map_err(|errors| {
            errors
                .errors
                .iter()
                .map(|e| {
                    SpecError::in_expression(
                        path,
                        source,
                        format!("CEL syntax error at column {}: {}", e.pos.1 + 1, e.msg),
                    )
                })
                .collect::<Vec<_>>()
        })?;
        expr_bounds::check_shape(program.expression())
            .map_err(|message| vec![SpecError::in_expression(path, source, message)])?;
        Ok(program)
    };
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("cel-parse".into())
            .stack_size(expr_bounds::parse_stack_bytes())
            .spawn_scoped(scope, parse_and_check)
            .expect("a thread for the CEL parser")
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

impl Expr {
    /// Parses `source` and checks what it refers to. `row_fields` are the declared
    /// fields of the projection, so that `row.totl` is caught when the spec loads.
    pub fn compile(
        path: &str,
        source: &str,
        scope: Scope,
        row_fields: &BTreeMap<String, FieldSpec>,
    ) -> Result<Expr, Vec<SpecError>> {
        if source.trim().is_empty() {
            return Err(vec![SpecError::new(path, "expression is empty")]);
        }
        expr_bounds::check_length(source)
            .map_err(|message| vec![SpecError::in_expression(path, source, message)])?;
        let program = parse(path, source)?;

        let mut check = ReferenceCheck {
            path,
            source,
            scope,
            row_fields,
            bound: Vec::new(),
            used: Vec::new(),
            errors: Vec::new(),
        };
        check.walk(program.expression());
        if !check.errors.is_empty() {
            return Err(check.errors);
        }
        let mut expr = Expr {
            path: path.to_string(),
            source: source.to_string(),
            variables: check.used,
            shortcut: expr_shortcut::field_path(program.expression()),
            program: Arc::new(program),
        };
        if expr_shortcut::is_literal(expr.ast()) {
            expr.shortcut = expr
                .constant_value()
                .and_then(|value| cel_to_json(&value).ok())
                .map(Shortcut::Constant);
        }
        Ok(expr)
    }

    /// Evaluates with the given variables (`event`, `row`, `auth`).
    pub fn eval(&self, variables: &[(&str, &dyn Variable)]) -> Result<Value, ExecutionError> {
        let resolver = Variables(variables);
        let mut context = Context::with_env(shared_env());
        context.set_variable_resolver(&resolver);
        self.program.execute(&context)
    }

    /// The value as JSON, when it is found without the interpreter (a field that
    /// is there, or a constant): then exactly what `cel_to_json` of
    /// [`Expr::eval`] gives. `None`: evaluate it.
    pub fn json_shortcut(&self, variables: &[(&str, &dyn Variable)]) -> Option<serde_json::Value> {
        match self.shortcut.as_ref()? {
            Shortcut::Constant(value) => Some(value.clone()),
            Shortcut::Field { variable, path } => {
                let (_, bound) = variables.iter().find(|(name, _)| name == variable)?;
                bound.json_at(path)
            }
        }
    }

    /// The syntax tree, for analyses such as [`super::access_plan`].
    pub fn ast(&self) -> &Expression {
        self.program.expression()
    }

    pub fn uses(&self, variable: &str) -> bool {
        self.variables.contains(&variable)
    }

    /// The value of an expression that refers to no variable, known at compile time.
    pub fn constant_value(&self) -> Option<Value> {
        if self.variables.is_empty() {
            self.eval(&[]).ok()
        } else {
            None
        }
    }
}

/// A variable's value as expressions see it: converted once into the interpreter's
/// own representation, or borrowed from JSON and converted a field at a time.
///
/// Borrowing is what rules use: a rule reads a few fields of an event and of a
/// row, and converting whole events and rows per rule was a sixth of a replay.
/// `event.orderId` reaches the interpreter as one qualified name, which is
/// answered from the JSON directly (strings borrowed, not copied); anything else
/// (`event` alone, `has(event.x)`, a missing field) converts the whole value, so
/// every expression gives the same result and the same errors either way.
pub struct Bound<'a> {
    binding: Binding<'a>,
    /// The whole value, converted the first time an expression needs it.
    whole: OnceLock<Box<dyn Val + 'a>>,
}

enum Binding<'a> {
    Converted(Box<dyn Val>),
    Json(&'a serde_json::Value),
    /// A row whose number fields (`doubles`) are CEL doubles.
    Row(&'a serde_json::Map<String, serde_json::Value>, &'a Doubles),
}

/// Which fields of a row are numbers: their whole values are CEL doubles, so
/// `row.total + 1.5` always type-checks.
pub type Doubles = dyn Fn(&str) -> bool + Send + Sync;

impl Bound<'static> {
    /// A row, without copying it into a JSON value first.
    pub fn row(row: &serde_json::Map<String, serde_json::Value>) -> Bound<'static> {
        Bound::new(Binding::Converted(Box::new(map_to_val::<CopyText>(
            row,
            &|_| false,
        ))))
    }

    /// A row whose `doubles` fields are CEL doubles even when the JSON holds a
    /// whole number, so `row.total + 1.5` always type-checks.
    pub fn row_with_doubles(
        row: &serde_json::Map<String, serde_json::Value>,
        doubles: impl Fn(&str) -> bool,
    ) -> Bound<'static> {
        Bound::new(Binding::Converted(Box::new(map_to_val::<CopyText>(
            row, &doubles,
        ))))
    }

    pub fn json(value: &serde_json::Value) -> Bound<'static> {
        Bound::new(Binding::Converted(json_to_val::<CopyText>(value)))
    }
}

impl<'a> Bound<'a> {
    fn new(binding: Binding<'a>) -> Bound<'a> {
        Bound {
            binding,
            whole: OnceLock::new(),
        }
    }

    /// JSON, borrowed: converted as expressions read it.
    pub fn borrow_json(value: &'a serde_json::Value) -> Bound<'a> {
        Bound::new(Binding::Json(value))
    }

    /// A row, borrowed: see [`Bound::row_with_doubles`].
    pub fn borrow_row(
        row: &'a serde_json::Map<String, serde_json::Value>,
        doubles: &'a Doubles,
    ) -> Bound<'a> {
        Bound::new(Binding::Row(row, doubles))
    }
}

/// What the interpreter asks of a bound variable. A trait object so that one
/// call can pass variables borrowed for different lifetimes (an event's fields
/// live longer than the row a rule is building).
pub trait Variable: Sync {
    /// The whole value.
    fn whole(&self) -> CowVal<'_, '_>;
    /// The value at a dotted path below the variable, when it can be answered
    /// without converting the whole value.
    fn field(&self, path: &str) -> Option<CowVal<'_, '_>>;
    /// The value at `path` as JSON, as [`Variable::field`] would give it back
    /// through CEL, when it is there and the variable is bound as JSON.
    fn json_at(&self, _path: &[String]) -> Option<serde_json::Value> {
        None
    }
}

impl Variable for Bound<'_> {
    fn whole(&self) -> CowVal<'_, '_> {
        let value = match &self.binding {
            Binding::Converted(value) => value,
            Binding::Json(value) => self.whole.get_or_init(|| json_to_val::<BorrowText>(value)),
            Binding::Row(row, doubles) => self
                .whole
                .get_or_init(|| Box::new(map_to_val::<BorrowText>(row, *doubles))),
        };
        CowVal::Borrowed(value.as_ref())
    }

    /// The value at `path` (`orderId`, `customer.name`), when every step of it
    /// is a field that is there; `None` sends the interpreter to [`Bound::whole`].
    fn field(&self, path: &str) -> Option<CowVal<'_, '_>> {
        let mut steps = path.split('.');
        let first = steps.next()?;
        let (mut value, double) = match &self.binding {
            Binding::Converted(_) => return None,
            Binding::Json(value) => (value.as_object()?.get(first)?, false),
            Binding::Row(row, doubles) => (row.get(first)?, doubles(first)),
        };
        let mut nested = false;
        for step in steps {
            value = value.as_object()?.get(step)?;
            nested = true;
        }
        Some(CowVal::Owned(match value.as_i64() {
            Some(i) if double && !nested => Box::new(CelDouble::from(i as f64)),
            _ => json_to_val::<BorrowText>(value),
        }))
    }

    fn json_at(&self, path: &[String]) -> Option<serde_json::Value> {
        match &self.binding {
            Binding::Converted(_) => None,
            Binding::Json(value) => expr_shortcut::json_at(value, path, |_| false),
            Binding::Row(row, doubles) => {
                let (first, rest) = path.split_first()?;
                expr_shortcut::json_in_map(row, first, rest, |field| doubles(field))
            }
        }
    }
}

/// JSON into the interpreter's values, in one pass (going through [`Value`]
/// would copy every level twice more), strings borrowed or copied as `S` says.
/// Whole numbers become CEL `int` (not `uint`, as a plain serde conversion would
/// make them), so that `row.count + 1` works. JSON holds only types the
/// interpreter has: the conversion cannot fail.
fn json_to_val<'v, 'o, S: Strings<'v, 'o>>(value: &'v serde_json::Value) -> Box<dyn Val + 'o> {
    use cel::common::types::{CelBool, CelInt, CelList, CelNull, CelUInt};
    match value {
        serde_json::Value::Null => Box::new(CelNull),
        serde_json::Value::Bool(b) => Box::new(CelBool::from(*b)),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Box::new(CelInt::from(i)),
            (None, Some(u)) => Box::new(CelUInt::from(u)),
            _ => Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN))),
        },
        serde_json::Value::String(s) => Box::new(S::text(s)),
        serde_json::Value::Array(items) => Box::new(CelList::from(
            items.iter().map(json_to_val::<S>).collect::<Vec<_>>(),
        )),
        serde_json::Value::Object(map) => Box::new(map_to_val::<S>(map, &|_| false)),
    }
}

/// An object as a CEL map; whole numbers of the `doubles` entries become doubles.
fn map_to_val<'v, 'o, S: Strings<'v, 'o>>(
    map: &'v serde_json::Map<String, serde_json::Value>,
    doubles: &dyn Fn(&str) -> bool,
) -> cel::common::types::CelMap<'o> {
    let entries: std::collections::HashMap<_, Box<dyn Val + 'o>> = map
        .iter()
        .map(|(k, v)| {
            let value: Box<dyn Val + 'o> = match v.as_i64() {
                Some(i) if doubles(k) => Box::new(CelDouble::from(i as f64)),
                _ => json_to_val::<S>(v),
            };
            (S::key(k), value)
        })
        .collect();
    entries.into()
}

/// Whether converted strings borrow the JSON's text ([`BorrowText`]: a variable that
/// lives no longer than its JSON) or copy it ([`CopyText`]: one that outlives it).
trait Strings<'v, 'o> {
    fn text(s: &'v str) -> cel::common::types::CelString<'o>;
    fn key(s: &'v str) -> cel::common::types::CelMapKey<'o>;
}

struct BorrowText;
struct CopyText;

impl<'v> Strings<'v, 'v> for BorrowText {
    fn text(s: &'v str) -> cel::common::types::CelString<'v> {
        s.into()
    }
    fn key(s: &'v str) -> cel::common::types::CelMapKey<'v> {
        s.into()
    }
}

impl<'v> Strings<'v, 'static> for CopyText {
    fn text(s: &'v str) -> cel::common::types::CelString<'static> {
        s.to_string().into()
    }
    fn key(s: &'v str) -> cel::common::types::CelMapKey<'static> {
        s.to_string().into()
    }
}

struct Variables<'a>(&'a [(&'a str, &'a dyn Variable)]);

impl VariableResolver for Variables<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let (name, path) = match variable.split_once('.') {
            Some((name, path)) => (name, Some(path)),
            None => (variable, None),
        };
        let (_, bound) = self.0.iter().find(|(n, _)| *n == name)?;
        match path {
            None => Some(bound.whole()),
            Some(path) => bound.field(path),
        }
    }
}

/// Walks the syntax tree for names the expression may not use.
struct ReferenceCheck<'a> {
    path: &'a str,
    source: &'a str,
    scope: Scope,
    row_fields: &'a BTreeMap<String, FieldSpec>,
    /// Variables bound by enclosing macros (`c` in `row.comments.filter(c, ...)`).
    bound: Vec<String>,
    used: Vec<&'static str>,
    errors: Vec<SpecError>,
}

impl ReferenceCheck<'_> {
    fn error(&mut self, message: String) {
        self.errors
            .push(SpecError::in_expression(self.path, self.source, message));
    }

    fn is_bound(&self, name: &str) -> bool {
        self.bound.iter().any(|b| b == name)
    }

    fn walk(&mut self, node: &Expression) {
        match &node.expr {
            Ast::Ident(name) => {
                if self.is_bound(name) || CEL_IDENTIFIERS.contains(&name.as_str()) {
                    return;
                }
                if let Some(variable) = self.scope.variables().iter().find(|v| **v == name) {
                    if !self.used.contains(variable) {
                        self.used.push(variable);
                    }
                } else {
                    let allowed = self.scope.variables().join(", ");
                    self.error(format!(
                        "unknown variable `{name}`: this expression may use {allowed}"
                    ));
                }
            }
            Ast::Select(select) => {
                if let Ast::Ident(operand) = &select.operand.expr {
                    if operand == "row"
                        && !self.is_bound("row")
                        && self.scope.variables().contains(&"row")
                        && !self.row_fields.contains_key(&select.field)
                    {
                        let declared = self.row_fields.keys().cloned().collect::<Vec<_>>();
                        self.error(format!(
                            "`row.{}` is not a declared field (declared: {})",
                            select.field,
                            declared.join(", ")
                        ));
                    }
                }
                self.walk(&select.operand);
            }
            Ast::Call(call) => {
                if let Some(target) = &call.target {
                    self.walk(target);
                }
                for arg in &call.args {
                    self.walk(arg);
                }
            }
            Ast::Comprehension(comprehension) => {
                self.walk(&comprehension.iter_range);
                self.walk(&comprehension.accu_init);
                let depth = self.bound.len();
                self.bound.push(comprehension.iter_var.clone());
                if let Some(second) = &comprehension.iter_var2 {
                    self.bound.push(second.clone());
                }
                self.bound.push(comprehension.accu_var.clone());
                self.walk(&comprehension.loop_cond);
                self.walk(&comprehension.loop_step);
                self.walk(&comprehension.result);
                self.bound.truncate(depth);
            }
            Ast::List(list) => list.elements.iter().for_each(|e| self.walk(e)),
            Ast::Map(map) => map.entries.iter().for_each(|e| self.walk_entry(&e.expr)),
            Ast::Struct(structure) => structure
                .entries
                .iter()
                .for_each(|e| self.walk_entry(&e.expr)),
            Ast::Literal(_) | Ast::Unspecified => {}
        }
    }

    fn walk_entry(&mut self, entry: &EntryExpr) {
        match entry {
            EntryExpr::StructField(field) => self.walk(&field.value),
            EntryExpr::MapEntry(entry) => {
                self.walk(&entry.key);
                self.walk(&entry.value);
            }
        }
    }
}

/// Converts a CEL result into JSON, or says which type cannot be stored. JSON has
/// no infinity or NaN (a division by zero gives one): such a number is refused,
/// never stored as `null`.
pub fn cel_to_json(value: &Value) -> Result<serde_json::Value, String> {
    if let Some(number) = non_finite(value) {
        return Err(format!(
            "{number} cannot be stored in a row (JSON numbers are finite; a division by zero?)"
        ));
    }
    value
        .json()
        .map_err(|_| format!("a CEL {} cannot be stored in a row", value.type_of()))
}

/// The first infinite or NaN number in a value, in lists and maps too.
fn non_finite(value: &Value) -> Option<f64> {
    match value {
        Value::Float(f) if !f.is_finite() => Some(*f),
        Value::List(items) => items.iter().find_map(non_finite),
        Value::Map(map) => map.map.values().find_map(non_finite),
        _ => None,
    }
}

/// The CEL type name of a value, for error messages.
pub fn cel_type_name(value: &Value) -> String {
    value.type_of().to_string()
}
