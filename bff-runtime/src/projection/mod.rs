//! The projection engine: one decoded event in, the row changes it causes out.
//!
//! Pure: rows are read through a callback, and nothing is written. An event either
//! yields all of its changes or an error, so it is never half-applied.

use std::collections::HashMap;
use std::sync::Arc;

use cel::Value as CelValue;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::spec::expr::{cel_to_json, cel_type_name, json_to_cel, Bound, Expr};
use crate::spec::fields::{conform, zero_row};
use crate::spec::{CompiledExperience, CompiledProjection, CompiledRule, RuleAction};

/// A projection row: field name to value.
pub type Row = serde_json::Map<String, Value>;

/// What happens to one row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", content = "row", rename_all = "lowercase")]
pub enum RowOp {
    Upsert(Row),
    Delete,
}

/// One row change caused by an event.
#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    pub projection: String,
    pub key: String,
    pub op: RowOp,
}

/// The largest event value decoded, in bytes (Kafka's default largest message).
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;
/// The deepest nesting of objects and arrays decoded (serde_json's own bound).
pub const MAX_EVENT_DEPTH: usize = 128;

/// The Kafka record an event came in, as rules see it (`record.key`, ...).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    /// The record key as text; `None` without a key (or when it is not UTF-8).
    pub key: Option<String>,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the epoch, when the record has a timestamp.
    pub timestamp: Option<i64>,
    /// Headers whose values are UTF-8 (the last one wins for a repeated name).
    pub headers: Vec<(String, String)>,
}

impl Record {
    fn bound(&self) -> Bound {
        let headers: serde_json::Map<String, Value> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        Bound::json(&serde_json::json!({
            "key": self.key,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp,
            "headers": headers,
        }))
    }
}

/// Why an event could not be applied. The event is skipped as a whole.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApplyError {
    #[error("event is not valid JSON: {0}")]
    Undecodable(String),
    #[error("event is {0} bytes; at most {MAX_EVENT_BYTES} are decoded")]
    TooLarge(usize),
    #[error("event nests deeper than {MAX_EVENT_DEPTH} levels")]
    TooDeep,
    #[error("{path}: no row key: {message}")]
    NoKey { path: String, message: String },
    #[error("{path}: {message}")]
    Rule { path: String, message: String },
}

impl ApplyError {
    /// A short label for metrics and dead-letter headers.
    pub fn reason(&self) -> &'static str {
        match self {
            ApplyError::Undecodable(_) => "undecodable",
            ApplyError::TooLarge(_) => "too_large",
            ApplyError::TooDeep => "too_deep",
            ApplyError::NoKey { .. } => "no_key",
            ApplyError::Rule { .. } => "rule_error",
        }
    }
}

/// Applies events to the projections of one compiled experience.
pub struct Engine {
    experience: Arc<CompiledExperience>,
    /// For each source, the (projection, rule) pairs that read it, in spec order.
    rules_by_source: HashMap<String, Vec<(usize, usize)>>,
    /// Whether any expression reads `record`; if none does, it is not built per event.
    uses_record: bool,
}

/// A row as the rules of one event have left it so far (`None`: deleted).
struct Pending {
    projection: usize,
    key: String,
    row: Option<Row>,
}

impl Engine {
    pub fn new(experience: Arc<CompiledExperience>) -> Self {
        let mut rules_by_source: HashMap<String, Vec<(usize, usize)>> = HashMap::new();
        for (p, projection) in experience.projections.iter().enumerate() {
            for (r, rule) in projection.rules.iter().enumerate() {
                rules_by_source
                    .entry(rule.source.clone())
                    .or_default()
                    .push((p, r));
            }
        }
        let uses_record = experience.projections.iter().any(|p| {
            p.rules.iter().any(|rule| {
                rule.key.uses("record")
                    || rule.when.as_ref().is_some_and(|w| w.uses("record"))
                    || match &rule.action {
                        RuleAction::Upsert(a) | RuleAction::Patch(a) => {
                            a.iter().any(|(_, e)| e.uses("record"))
                        }
                        RuleAction::Delete => false,
                    }
            })
        });
        Engine {
            experience,
            rules_by_source,
            uses_record,
        }
    }

    pub fn experience(&self) -> &Arc<CompiledExperience> {
        &self.experience
    }

    /// Whether any rule reads `record`: if none does, ingest need not build it.
    pub fn uses_record(&self) -> bool {
        self.uses_record
    }

    /// Decodes a message value and applies it. See [`Engine::apply`]. A record
    /// without a value (a tombstone) is the event `null`.
    pub fn apply_bytes<E>(
        &self,
        source: &str,
        payload: Option<&[u8]>,
        record: &Record,
        read_row: impl FnMut(&str, &str) -> Result<Option<Row>, E>,
    ) -> Result<Result<Vec<RowChange>, ApplyError>, E> {
        let Some(payload) = payload else {
            return self.apply(source, &Value::Null, record, read_row);
        };
        if payload.len() > MAX_EVENT_BYTES {
            return Ok(Err(ApplyError::TooLarge(payload.len())));
        }
        match serde_json::from_slice::<Value>(payload) {
            Ok(event) => self.apply(source, &event, record, read_row),
            Err(e) if e.to_string().starts_with("recursion limit exceeded") => {
                Ok(Err(ApplyError::TooDeep))
            }
            Err(e) => Ok(Err(ApplyError::Undecodable(e.to_string()))),
        }
    }

    /// Applies one event from `source`. Rules run in spec order and each sees the
    /// row as the rules before it left it. `read_row` reads the stored row; its own
    /// errors (the store's) are passed through as the outer `Err`.
    ///
    /// A tombstone (`event` is `null`) goes only to the rules written for one:
    /// a rule whose filter or key cannot be evaluated on `null` is passed over
    /// instead of failing, so specs that never mention tombstones skip them.
    pub fn apply<E>(
        &self,
        source: &str,
        event: &Value,
        record: &Record,
        mut read_row: impl FnMut(&str, &str) -> Result<Option<Row>, E>,
    ) -> Result<Result<Vec<RowChange>, ApplyError>, E> {
        let Some(rules) = self.rules_by_source.get(source) else {
            return Ok(Ok(Vec::new()));
        };
        let tombstone = event.is_null();
        let record = match self.uses_record {
            true => record.bound(),
            false => Bound::json(&Value::Null),
        };
        let event = Event {
            value: Bound::json(event),
            record,
        };
        let mut pending: Vec<Pending> = Vec::new();
        for &(p, r) in rules {
            let projection = &self.experience.projections[p];
            let rule = &projection.rules[r];
            // Most events match few rules: a filter that does not look at the row is
            // decided before the row is read.
            let filter_decided = match &rule.when {
                Some(when) if !when.uses("row") => {
                    match eval_filter(when, &event, &Bound::json(&Value::Null)) {
                        Ok(true) => true,
                        Ok(false) => continue,
                        Err(_) if tombstone => continue,
                        Err(error) => return Ok(Err(error)),
                    }
                }
                _ => false,
            };
            let key = match key_of(&rule.key, &event) {
                Ok(key) => key,
                Err(_) if tombstone && !filter_decided => continue,
                Err(error) => {
                    // An event of another kind may lack this rule's key: only an
                    // event the rule is meant for must have one.
                    if !filter_decided {
                        let zero = row_value(projection, &zero_row(&projection.fields));
                        if matches!(rule_matches(rule, &event, &zero), Ok(false)) {
                            continue;
                        }
                    }
                    return Ok(Err(error));
                }
            };
            let current = match pending.iter().find(|c| c.projection == p && c.key == key) {
                Some(change) => change.row.clone(),
                None => read_row(&projection.name, &key)?,
            };
            let result = apply_rule(projection, rule, &event, current.as_ref(), filter_decided);
            let next = match result {
                Ok(Some(next)) => next,
                Ok(None) => continue,
                Err(_) if tombstone && !filter_decided => continue,
                Err(error) => return Ok(Err(error)),
            };
            match pending
                .iter_mut()
                .find(|c| c.projection == p && c.key == key)
            {
                Some(change) => change.row = next,
                None => pending.push(Pending {
                    projection: p,
                    key,
                    row: next,
                }),
            }
        }
        Ok(Ok(pending
            .into_iter()
            .map(|c| RowChange {
                projection: self.experience.projections[c.projection].name.clone(),
                key: c.key,
                op: match c.row {
                    Some(row) => RowOp::Upsert(row),
                    None => RowOp::Delete,
                },
            })
            .collect()))
    }
}

/// The row after one rule: `Ok(None)` when the rule does not change it,
/// `Ok(Some(None))` when it deletes it.
fn apply_rule(
    projection: &CompiledProjection,
    rule: &CompiledRule,
    event: &Event,
    current: Option<&Row>,
    filter_decided: bool,
) -> Result<Option<Option<Row>>, ApplyError> {
    let base = current
        .cloned()
        .unwrap_or_else(|| zero_row(&projection.fields));
    let row = row_value(projection, &base);
    if !filter_decided && !rule_matches(rule, event, &row)? {
        return Ok(None);
    }
    let assignments = match &rule.action {
        RuleAction::Delete => return Ok(current.map(|_| None)),
        RuleAction::Patch(_) if current.is_none() => return Ok(None),
        RuleAction::Patch(assignments) | RuleAction::Upsert(assignments) => assignments,
    };
    let mut next = base;
    for (field, expr) in assignments {
        let value = eval(expr, &event.with_row(&row))?;
        let json = cel_to_json(&value).map_err(|message| rule_error(expr, message))?;
        let spec = &projection.fields[field];
        let json = conform(spec, json).map_err(|message| rule_error(expr, message))?;
        next.insert(field.clone(), json);
    }
    Ok(Some(Some(next)))
}

fn rule_matches(rule: &CompiledRule, event: &Event, row: &Bound) -> Result<bool, ApplyError> {
    match &rule.when {
        Some(when) => eval_filter(when, event, row),
        None => Ok(true),
    }
}

fn eval_filter(when: &Expr, event: &Event, row: &Bound) -> Result<bool, ApplyError> {
    match eval(when, &event.with_row(row))? {
        CelValue::Bool(b) => Ok(b),
        other => Err(rule_error(
            when,
            format!("must give a boolean, gave a {}", cel_type_name(&other)),
        )),
    }
}

/// An event and its record, bound once for every expression that reads them.
struct Event {
    value: Bound,
    record: Bound,
}

impl Event {
    fn with_row<'a>(&'a self, row: &'a Bound) -> [(&'static str, &'a Bound); 3] {
        [
            ("event", &self.value),
            ("record", &self.record),
            ("row", row),
        ]
    }
}

/// The row key: a non-empty string. A number is refused rather than turned
/// into text, so that `123` and `"123"` never meet in one row by accident; a
/// spec that means it writes `string(event.id)`.
fn key_of(key: &Expr, event: &Event) -> Result<String, ApplyError> {
    let no_key = |message: String| ApplyError::NoKey {
        path: key.path.clone(),
        message,
    };
    match key.eval(&[("event", &event.value), ("record", &event.record)]) {
        Ok(CelValue::String(s)) if !s.is_empty() => Ok(s.to_string()),
        Ok(CelValue::String(_)) => Err(no_key("the key is an empty string".into())),
        Ok(CelValue::Int(n)) => Err(no_key(number_key(n))),
        Ok(CelValue::UInt(n)) => Err(no_key(number_key(n))),
        Ok(other) => Err(no_key(format!(
            "the key must be a string, got a {}",
            cel_type_name(&other)
        ))),
        Err(e) => Err(no_key(e.to_string())),
    }
}

fn number_key(n: impl std::fmt::Display) -> String {
    format!("the key is the number {n}, not a string: write string(...) around it to key rows by number")
}

fn eval(expr: &Expr, variables: &[(&str, &Bound)]) -> Result<CelValue, ApplyError> {
    expr.eval(variables)
        .map_err(|e| rule_error(expr, e.to_string()))
}

fn rule_error(expr: &Expr, message: String) -> ApplyError {
    ApplyError::Rule {
        path: expr.path.clone(),
        message,
    }
}

/// The row as CEL sees it. Number fields are doubles even when the stored JSON
/// holds a whole number, so `row.total + 1.5` always type-checks.
fn row_value(projection: &CompiledProjection, row: &Row) -> Bound {
    let mut value = json_to_cel(&Value::Object(row.clone()));
    if let CelValue::Map(map) = &mut value {
        let entries = Arc::make_mut(&mut map.map);
        for (name, field) in &projection.fields {
            if field.field_type == crate::spec::FieldType::Number {
                let key = cel::objects::Key::String(Arc::new(name.clone()));
                if let Some(CelValue::Int(i)) = entries.get(&key) {
                    let f = *i as f64;
                    entries.insert(key, CelValue::Float(f));
                }
            }
        }
    }
    // Values built from JSON always convert.
    Bound::new(value).unwrap_or_else(|_| Bound::json(&Value::Null))
}
