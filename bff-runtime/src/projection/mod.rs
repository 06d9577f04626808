//! The projection engine: one decoded event in, the row changes it causes out.
//!
//! Pure: rows are read through [`Rows`], and nothing is written. An event either
//! yields all of its changes or an error, so it is never half-applied.

mod embed;
mod memory;

pub use memory::MemoryRows;

use std::collections::HashMap;
use std::sync::Arc;

use cel::Value as CelValue;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::spec::discriminator::{Discriminator, Verdict};
use crate::spec::expr::{cel_to_json, cel_type_name, Bound, Doubles, Expr, Variable};
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

impl RowOp {
    /// The row after the change; none after a delete.
    pub fn row(&self) -> Option<&Row> {
        match self {
            RowOp::Upsert(row) => Some(row),
            RowOp::Delete => None,
        }
    }
}

/// One change of a served row caused by an event.
#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    pub projection: String,
    pub key: String,
    pub op: RowOp,
}

/// A row as the store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    /// Served to clients: an `upsert` has created it.
    Served(Row),
    /// Written by rules that ran before any `upsert` created the row (a payment read
    /// before its order): kept, not served, until one does.
    Held(Row),
}

impl Stored {
    pub fn row(&self) -> &Row {
        match self {
            Stored::Served(row) | Stored::Held(row) => row,
        }
    }

    pub fn row_mut(&mut self) -> &mut Row {
        match self {
            Stored::Served(row) | Stored::Held(row) => row,
        }
    }

    pub fn served(&self) -> Option<&Row> {
        match self {
            Stored::Served(row) => Some(row),
            Stored::Held(_) => None,
        }
    }
}

/// A held row written (`Some`) or dropped (`None`: deleted, or served from now on).
#[derive(Debug, Clone, PartialEq)]
pub struct HeldChange {
    pub projection: String,
    pub key: String,
    pub row: Option<Row>,
}

/// An entry of the reverse index of embeds: row `key` of `embedder` embeds, as
/// field `embed`, row `target_key` of `target`. `linked` adds it, else it is removed.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub target: String,
    pub target_key: String,
    pub embedder: String,
    pub embed: String,
    pub key: String,
    pub linked: bool,
}

/// A reverse-index entry as kept: (target, target key, embedder, embed, key).
pub type LinkKey = (String, String, String, String, String);

impl Link {
    /// The entry, and whether it is added.
    pub fn into_entry(self) -> (LinkKey, bool) {
        (
            (
                self.target,
                self.target_key,
                self.embedder,
                self.embed,
                self.key,
            ),
            self.linked,
        )
    }
}

/// The keys of the `embedder` rows whose `embed` holds row `key` of `projection`,
/// among `links` (entry → added), in key order, each with whether it is added.
pub fn links_of<'a>(
    links: &'a std::collections::BTreeMap<LinkKey, bool>,
    projection: &'a str,
    key: &'a str,
    embedder: &'a str,
    embed: &'a str,
) -> impl Iterator<Item = (&'a str, bool)> + 'a {
    let from = (
        projection.to_string(),
        key.to_string(),
        embedder.to_string(),
        embed.to_string(),
        String::new(),
    );
    links
        .range(from..)
        .take_while(move |((t, k, e, name, _), _)| {
            (t.as_str(), k.as_str(), e.as_str(), name.as_str())
                == (projection, key, embedder, embed)
        })
        .map(|((.., embedder_key), linked)| (embedder_key.as_str(), *linked))
}

/// Everything one event changes, to be written in one transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    /// Served rows, in the order they changed: the live feed's changes.
    pub changes: Vec<RowChange>,
    pub held: Vec<HeldChange>,
    pub links: Vec<Link>,
    /// Rows rewritten because a row they embed changed.
    pub fanned_out: usize,
}

/// The stored rows an event is applied to.
pub trait Rows {
    type Error;
    /// The row as stored now (with the writes of the events before this one).
    fn stored(&self, projection: &str, key: &str) -> Result<Option<Stored>, Self::Error>;
    /// Keys of the `embedder` rows whose field `embed` holds row `key` of
    /// `projection`, in key order, at most `limit` of them.
    fn embedders(
        &self,
        projection: &str,
        key: &str,
        embedder: &str,
        embed: &str,
        limit: usize,
    ) -> Result<Vec<String>, Self::Error>;
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
    fn bound(&self) -> Bound<'static> {
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
    #[error("{path}: {message}")]
    FanOut { path: String, message: String },
    /// A bug, not bad input: applying the event panicked.
    #[error("applying the event panicked: {0}")]
    Panicked(String),
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
            ApplyError::FanOut { .. } => "fan_out",
            ApplyError::Panicked(_) => "panic",
        }
    }
}

/// Applies events to the projections of one compiled experience.
pub struct Engine {
    experience: Arc<CompiledExperience>,
    /// For each source, the (projection, rule) pairs that read it, in spec order,
    /// each with the event kind its filter requires, if it names one.
    rules_by_source: HashMap<String, Vec<(usize, usize, Option<Discriminator>)>>,
    /// For each projection, the (projection, embed) pairs that embed its rows.
    embedded_by: Vec<Vec<(usize, usize)>>,
    /// For each projection, the projection each of its embeds shows.
    embed_targets: Vec<Vec<usize>>,
    /// Whether any expression reads `record`; if none does, it is not built per event.
    uses_record: bool,
    /// For each projection, which of its fields are numbers (CEL doubles).
    number_fields: Vec<Box<Doubles>>,
}

/// A row as the rules of one event have left it so far (`None`: deleted).
struct Pending {
    projection: usize,
    key: String,
    /// As stored before the event.
    before: Option<Stored>,
    row: Option<Stored>,
}

/// What one rule made of an event: go on with the next rule, or refuse the event.
enum Step {
    Next,
    Refused(ApplyError),
}

/// The rows one event has touched, in the order it touched them.
struct Touched<'r, R> {
    rows: &'r R,
    pending: Vec<Pending>,
}

impl<R: Rows> Touched<'_, R> {
    fn find(&self, projection: usize, key: &str) -> Option<usize> {
        self.pending
            .iter()
            .position(|c| c.projection == projection && c.key == key)
    }

    /// The row as this event has left it, or as stored.
    fn current(
        &self,
        experience: &CompiledExperience,
        projection: usize,
        key: &str,
    ) -> Result<Option<Stored>, R::Error> {
        match self.find(projection, key) {
            Some(i) => Ok(self.pending[i].row.clone()),
            None => self
                .rows
                .stored(&experience.projections[projection].name, key),
        }
    }

    fn write(
        &mut self,
        experience: &CompiledExperience,
        projection: usize,
        key: &str,
        row: Option<Stored>,
    ) -> Result<(), R::Error> {
        match self.find(projection, key) {
            Some(i) => self.pending[i].row = row,
            None => {
                let before = self
                    .rows
                    .stored(&experience.projections[projection].name, key)?;
                self.pending.push(Pending {
                    projection,
                    key: key.to_string(),
                    before,
                    row,
                });
            }
        }
        Ok(())
    }
}

impl Engine {
    pub fn new(experience: Arc<CompiledExperience>) -> Self {
        let mut rules_by_source: HashMap<String, Vec<_>> = HashMap::new();
        let mut embedded_by = vec![Vec::new(); experience.projections.len()];
        let mut embed_targets = Vec::with_capacity(experience.projections.len());
        for (p, projection) in experience.projections.iter().enumerate() {
            for (r, rule) in projection.rules.iter().enumerate() {
                rules_by_source
                    .entry(rule.source.clone())
                    .or_default()
                    .push((p, r, rule.when.as_ref().and_then(Discriminator::of)));
            }
            let mut targets = Vec::with_capacity(projection.embeds.len());
            for (e, embed) in projection.embeds.iter().enumerate() {
                let target = experience
                    .position_of(&embed.projection)
                    .expect("the compiler checked the embedded projection");
                embedded_by[target].push((p, e));
                targets.push(target);
            }
            embed_targets.push(targets);
        }
        let uses_record = experience.projections.iter().any(|p| {
            p.rules.iter().any(|rule| {
                rule.key.uses("record")
                    || rule.when.as_ref().is_some_and(|w| w.uses("record"))
                    || rule.lookups.iter().any(|l| l.key.uses("record"))
                    || match &rule.action {
                        RuleAction::Upsert(a) | RuleAction::Patch(a) => {
                            a.iter().any(|(_, e)| e.uses("record"))
                        }
                        RuleAction::Delete => false,
                    }
            })
        });
        let number_fields = experience
            .projections
            .iter()
            .map(|projection| {
                let numbers: std::collections::HashSet<String> = projection
                    .fields
                    .iter()
                    .filter(|(_, field)| field.field_type == crate::spec::FieldType::Number)
                    .map(|(name, _)| name.clone())
                    .collect();
                Box::new(move |name: &str| numbers.contains(name)) as Box<Doubles>
            })
            .collect();
        Engine {
            experience,
            number_fields,
            rules_by_source,
            embedded_by,
            embed_targets,
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
    pub fn apply_bytes<R: Rows>(
        &self,
        source: &str,
        payload: Option<&[u8]>,
        record: &Record,
        rows: &R,
    ) -> Result<Result<Applied, ApplyError>, R::Error> {
        let Some(payload) = payload else {
            return self.apply(source, &Value::Null, record, rows);
        };
        if payload.len() > MAX_EVENT_BYTES {
            return Ok(Err(ApplyError::TooLarge(payload.len())));
        }
        match serde_json::from_slice::<Value>(payload) {
            Ok(event) => self.apply(source, &event, record, rows),
            Err(e) if e.to_string().starts_with("recursion limit exceeded") => {
                Ok(Err(ApplyError::TooDeep))
            }
            Err(e) => Ok(Err(ApplyError::Undecodable(e.to_string()))),
        }
    }

    /// Applies one event from `source`. Rules run in spec order and each sees the
    /// row as the rules before it left it; then embeds follow the rows that changed.
    /// Errors of `rows` (the store's) are passed through as the outer `Err`.
    ///
    /// A tombstone (`event` is `null`) goes only to the rules written for one:
    /// a rule whose filter or key cannot be evaluated on `null` is passed over
    /// instead of failing, so specs that never mention tombstones skip them.
    pub fn apply<R: Rows>(
        &self,
        source: &str,
        event: &Value,
        record: &Record,
        rows: &R,
    ) -> Result<Result<Applied, ApplyError>, R::Error> {
        let Some(rules) = self.rules_by_source.get(source) else {
            return Ok(Ok(Applied::default()));
        };
        let tombstone = event.is_null();
        let record = match self.uses_record {
            true => record.bound(),
            false => Bound::borrow_json(&Value::Null),
        };
        let event_json = event;
        let event = Event {
            value: Bound::borrow_json(event),
            record,
        };
        let mut touched = Touched {
            rows,
            pending: Vec::new(),
        };
        for (p, r, discriminator) in rules {
            // An event of another kind is passed over before anything is bound or read.
            let verdict = discriminator
                .as_ref()
                .map_or(Verdict::Evaluate, |d| d.judge(event_json));
            if verdict == Verdict::Skip {
                continue;
            }
            let step = self.run_rule(*p, *r, verdict, &event, tombstone, &mut touched)?;
            if let Step::Refused(error) = step {
                return Ok(Err(error));
            }
        }
        let mut links = Vec::new();
        if let Err(error) = self.follow_embeds(&mut touched, &mut links)? {
            return Ok(Err(error));
        }
        let fanned_out = match self.fan_out(&mut touched)? {
            Ok(n) => n,
            Err(error) => return Ok(Err(error)),
        };
        Ok(Ok(self.applied(touched.pending, links, fanned_out)))
    }

    /// Runs rule `r` of projection `p` on an event its discriminator did not skip,
    /// on the row as the rules before it left it.
    fn run_rule<R: Rows>(
        &self,
        p: usize,
        r: usize,
        verdict: Verdict,
        event: &Event,
        tombstone: bool,
        touched: &mut Touched<'_, R>,
    ) -> Result<Step, R::Error> {
        let projection = &self.experience.projections[p];
        let rule = &projection.rules[r];
        let lookup = match rule.lookups.is_empty() {
            true => Bound::borrow_json(&Value::Null),
            false => match self.lookups(rule, event, touched)? {
                Ok(lookup) => lookup,
                Err(_) if tombstone => return Ok(Step::Next),
                Err(error) => return Ok(Step::Refused(error)),
            },
        };
        // Most events match few rules: a filter that does not look at the row is
        // decided before the row is read.
        let filter_decided = match &rule.when {
            Some(_) if verdict == Verdict::Matches => true,
            Some(when) if !when.uses("row") => {
                match eval_filter(when, event, &Bound::borrow_json(&Value::Null), &lookup) {
                    Ok(true) => true,
                    Ok(false) => return Ok(Step::Next),
                    Err(_) if tombstone => return Ok(Step::Next),
                    Err(error) => return Ok(Step::Refused(error)),
                }
            }
            _ => false,
        };
        let key = match key_of(&rule.key, event) {
            Ok(key) => key,
            Err(_) if tombstone && !filter_decided => return Ok(Step::Next),
            Err(error) => {
                // An event of another kind may lack this rule's key: only an
                // event the rule is meant for must have one.
                if !filter_decided {
                    let zero = zero_row(&projection.fields);
                    let zero = row_value(&self.number_fields[p], &zero);
                    if matches!(rule_matches(rule, event, &zero, &lookup), Ok(false)) {
                        return Ok(Step::Next);
                    }
                }
                return Ok(Step::Refused(error));
            }
        };
        let found = touched.find(p, &key);
        let current = match found {
            Some(i) => touched.pending[i].row.clone(),
            None => touched.rows.stored(&projection.name, &key)?,
        };
        let result = apply_rule(
            projection,
            &self.number_fields[p],
            rule,
            event,
            &lookup,
            current.as_ref(),
            filter_decided,
        );
        match result {
            Ok(Some(next)) => match found {
                Some(i) => touched.pending[i].row = next,
                None => touched.pending.push(Pending {
                    projection: p,
                    key,
                    before: current,
                    row: next,
                }),
            },
            Ok(None) => {}
            Err(_) if tombstone && !filter_decided => return Ok(Step::Next),
            Err(error) => return Ok(Step::Refused(error)),
        }
        Ok(Step::Next)
    }

    /// An event's changes: served rows upserted or deleted, held rows written or
    /// dropped.
    fn applied(&self, pending: Vec<Pending>, links: Vec<Link>, fanned_out: usize) -> Applied {
        let mut applied = Applied {
            links,
            fanned_out,
            ..Applied::default()
        };
        for c in pending {
            let name = &self.experience.projections[c.projection].name;
            let served_before = c.before.as_ref().and_then(Stored::served).is_some();
            let held_before = matches!(c.before, Some(Stored::Held(_)));
            let (served, held) = match c.row {
                Some(Stored::Served(row)) => (Some(row), None),
                Some(Stored::Held(row)) => (None, Some(row)),
                None => (None, None),
            };
            match served {
                Some(row) => applied.changes.push(RowChange {
                    projection: name.clone(),
                    key: c.key.clone(),
                    op: RowOp::Upsert(row),
                }),
                None if served_before => applied.changes.push(RowChange {
                    projection: name.clone(),
                    key: c.key.clone(),
                    op: RowOp::Delete,
                }),
                None => {}
            }
            if held.is_some() || held_before {
                applied.held.push(HeldChange {
                    projection: name.clone(),
                    key: c.key,
                    row: held,
                });
            }
        }
        applied
    }

    /// `lookup` for a rule: each named row as it is now (null when there is none or
    /// it is not served yet).
    fn lookups<R: Rows>(
        &self,
        rule: &CompiledRule,
        event: &Event,
        touched: &Touched<'_, R>,
    ) -> Result<Result<Bound<'static>, ApplyError>, R::Error> {
        let mut found = serde_json::Map::new();
        for lookup in &rule.lookups {
            let key = match key_of(&lookup.key, event) {
                Ok(key) => key,
                Err(error) => return Ok(Err(error)),
            };
            let Some(p) = self.experience.position_of(&lookup.projection) else {
                continue;
            };
            let row = touched.current(&self.experience, p, &key)?;
            let value = row
                .as_ref()
                .and_then(Stored::served)
                .map(|row| Value::Object(row.clone()))
                .unwrap_or(Value::Null);
            found.insert(lookup.name.clone(), value);
        }
        Ok(Ok(Bound::json(&Value::Object(found))))
    }
}

/// The row after one rule: `Ok(None)` when the rule does not change it,
/// `Ok(Some(None))` when it deletes it. An `upsert` serves the row; a `patch` keeps
/// a row no `upsert` has created yet held, so that its fields are not lost.
fn apply_rule(
    projection: &CompiledProjection,
    numbers: &Doubles,
    rule: &CompiledRule,
    event: &Event,
    lookup: &Bound,
    current: Option<&Stored>,
    filter_decided: bool,
) -> Result<Option<Option<Stored>>, ApplyError> {
    let zero;
    let before = match current {
        Some(stored) => stored.row(),
        None => {
            zero = zero_row(&projection.fields);
            &zero
        }
    };
    let row = row_value(numbers, before);
    if !filter_decided && !rule_matches(rule, event, &row, lookup)? {
        return Ok(None);
    }
    let (assignments, served) = match &rule.action {
        RuleAction::Delete => return Ok(current.map(|_| None)),
        RuleAction::Patch(assignments) => (assignments, matches!(current, Some(Stored::Served(_)))),
        RuleAction::Upsert(assignments) => (assignments, true),
    };
    let mut next = before.clone();
    for (field, expr) in assignments {
        let json = eval_json(expr, &event.with(&row, lookup))?;
        let spec = &projection.fields[field];
        let json = conform(spec, json).map_err(|message| rule_error(expr, message))?;
        next.insert(field.clone(), json);
    }
    Ok(Some(Some(match served {
        true => Stored::Served(next),
        false => Stored::Held(next),
    })))
}

fn rule_matches(
    rule: &CompiledRule,
    event: &Event,
    row: &Bound,
    lookup: &Bound,
) -> Result<bool, ApplyError> {
    match &rule.when {
        Some(when) => eval_filter(when, event, row, lookup),
        None => Ok(true),
    }
}

fn eval_filter(
    when: &Expr,
    event: &Event,
    row: &Bound,
    lookup: &Bound,
) -> Result<bool, ApplyError> {
    match eval(when, &event.with(row, lookup))? {
        CelValue::Bool(b) => Ok(b),
        other => Err(rule_error(
            when,
            format!("must give a boolean, gave a {}", cel_type_name(&other)),
        )),
    }
}

/// An event and its record, bound once for every expression that reads them.
struct Event<'a> {
    value: Bound<'a>,
    record: Bound<'static>,
}

impl<'e> Event<'e> {
    fn with<'a>(
        &'a self,
        row: &'a Bound,
        lookup: &'a Bound,
    ) -> [(&'static str, &'a dyn Variable); 4] {
        [
            ("event", &self.value),
            ("record", &self.record),
            ("row", row),
            ("lookup", lookup),
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
    let variables: [(&str, &dyn Variable); 2] =
        [("event", &event.value), ("record", &event.record)];
    if let Some(Value::String(key)) = key.json_shortcut(&variables) {
        if !key.is_empty() {
            return Ok(key);
        }
    }
    match key.eval(&variables) {
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

fn eval(expr: &Expr, variables: &[(&str, &dyn Variable)]) -> Result<CelValue, ApplyError> {
    expr.eval(variables)
        .map_err(|e| rule_error(expr, e.to_string()))
}

/// A value a rule writes, as JSON: most are a field or a constant, found without
/// the interpreter (see [`Expr::json_shortcut`]).
fn eval_json(expr: &Expr, variables: &[(&str, &dyn Variable)]) -> Result<Value, ApplyError> {
    if let Some(json) = expr.json_shortcut(variables) {
        return Ok(json);
    }
    let value = eval(expr, variables)?;
    cel_to_json(&value).map_err(|message| rule_error(expr, message))
}

fn rule_error(expr: &Expr, message: String) -> ApplyError {
    ApplyError::Rule {
        path: expr.path.clone(),
        message,
    }
}

/// The row as CEL sees it, borrowed. Number fields are doubles even when the
/// stored JSON holds a whole number, so `row.total + 1.5` always type-checks.
fn row_value<'a>(numbers: &'a Doubles, row: &'a Row) -> Bound<'a> {
    Bound::borrow_row(row, numbers)
}
