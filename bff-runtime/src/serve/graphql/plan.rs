//! GraphQL subscriptions that the live core answers itself, so that a change is
//! encoded once for every client that asked the same question.
//!
//! async-graphql resolves a subscription's selection set again for every event and
//! every subscriber. Most subscriptions are a plain selection of a projection's
//! change: `order(where: …) { op key position row { id status } }`. Such a document
//! is turned into a [`Plan`] once; each change's `payload` is then written once per
//! distinct plan and shared, and only the message id is per client. Anything the
//! plan does not cover (fragments, directives, `__typename`, a type mismatch, an
//! unknown field) goes to async-graphql as before, which also gives the errors.

use std::collections::BTreeMap;

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationDefinition, OperationType, Selection as Item,
    SelectionSet,
};
use async_graphql::parser::Positioned;
use async_graphql::Value as ConstValue;
use async_graphql_value::{Name, Value as GqlValue};
use serde_json::Value;

use crate::live::change::json_string;
use crate::live::{Op, Selection, Update};
use crate::projection::Row;
use crate::spec::{CompiledExperience, CompiledProjection, FieldSpec, FieldType};

/// What a planned subscription selects of each change.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    Op(String),
    Key(String),
    Position(String),
    Row(String, Vec<RowPart>),
}

/// A selected row field: response key, field name, its declaration and, for
/// objects, what is selected of them.
#[derive(Debug, Clone, PartialEq)]
struct RowPart {
    response_key: String,
    field: String,
    spec: FieldSpec,
    nested: Vec<RowPart>,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub selection: Selection,
    pub since: Option<String>,
    /// The `operationName` the payload gives, for field usage.
    pub operation: Option<String>,
    response_key: String,
    parts: Vec<Part>,
    /// The same for every client that asked the same thing: the cache key of the
    /// payloads written for it.
    pub shape: String,
}

/// The plan for a graphql-transport-ws `subscribe` payload, if the live core can
/// answer it alone.
pub fn plan(experience: &CompiledExperience, payload: &Value) -> Option<Plan> {
    let query = payload.get("query")?.as_str()?;
    let variables = payload.get("variables").cloned().unwrap_or(Value::Null);
    let document = async_graphql::parser::parse_query(query).ok()?;
    if !document.fragments.is_empty() {
        return None;
    }
    let operation = &chosen_operation(&document, payload)?.node;
    if operation.ty != OperationType::Subscription || !operation.directives.is_empty() {
        return None;
    }
    let [root] = operation.selection_set.node.items.as_slice() else {
        return None;
    };
    let Item::Field(root) = &root.node else {
        return None;
    };
    let root = &root.node;
    if !root.directives.is_empty() {
        return None;
    }
    let projection = experience.projection(root.name.node.as_str())?;
    let (mut selection, since) = arguments(projection, &root.arguments, &variables)?;
    let mut parts = Vec::new();
    for item in &root.selection_set.node.items {
        let (response_key, name, nested) = plain_field(item)?;
        parts.push(match (name, nested) {
            ("op", None) => Part::Op(response_key),
            ("key", None) => Part::Key(response_key),
            ("position", None) => Part::Position(response_key),
            ("row", Some(nested)) => {
                Part::Row(response_key, row_parts(&projection.fields, nested)?)
            }
            _ => return None,
        });
    }
    let response_key = root
        .alias
        .as_ref()
        .map(|a| a.node.to_string())
        .unwrap_or_else(|| root.name.node.to_string());
    let shape = format!("graphql {response_key} {parts:?}");
    let mut fields: Vec<String> = parts
        .iter()
        .filter_map(|part| match part {
            Part::Row(_, row) => Some(row.iter().map(|p| p.field.clone())),
            _ => None,
        })
        .flatten()
        .collect();
    fields.sort();
    fields.dedup();
    selection.fields = Some(fields);
    Some(Plan {
        selection,
        since,
        operation: payload
            .get("operationName")
            .and_then(Value::as_str)
            .map(str::to_string),
        response_key,
        parts,
        shape,
    })
}

/// The operation a payload runs: the only one, or the one `operationName` names.
fn chosen_operation<'d>(
    document: &'d ExecutableDocument,
    payload: &Value,
) -> Option<&'d Positioned<OperationDefinition>> {
    match &document.operations {
        DocumentOperations::Single(operation) => Some(operation),
        DocumentOperations::Multiple(operations) => {
            match payload.get("operationName").and_then(Value::as_str) {
                Some(name) => Some(operations.iter().find(|(n, _)| n.as_str() == name)?.1),
                None if operations.len() == 1 => operations.values().next(),
                None => None,
            }
        }
    }
}

/// The subscription's `key`, `where` and `since` arguments, if the live core
/// filters the same way GraphQL would.
fn arguments(
    projection: &CompiledProjection,
    arguments: &[(Positioned<Name>, Positioned<GqlValue>)],
    variables: &Value,
) -> Option<(Selection, Option<String>)> {
    let mut selection = Selection {
        projection: projection.name.clone(),
        ..Selection::default()
    };
    let mut since = None;
    for (name, value) in arguments {
        if !literals_fit(&projection.fields, &value.node) {
            return None;
        }
        let value = argument(&value.node, variables)?;
        match (name.node.as_str(), value) {
            (_, Value::Null) => {}
            ("key", Value::String(key)) => selection.key = Some(key),
            ("since", Value::String(position)) => since = Some(position),
            ("where", Value::Object(filter)) => {
                for (field, value) in filter {
                    let spec = projection.fields.get(&field)?;
                    if !filter_fits(spec, &value) {
                        return None;
                    }
                    if !value.is_null() {
                        selection.filter.insert(field, value);
                    }
                }
            }
            _ => return None,
        }
    }
    Some((selection, since))
}

/// A field with no arguments or directives: (response key, name, its selection).
fn plain_field(item: &Positioned<Item>) -> Option<(String, &str, Option<&SelectionSet>)> {
    let Item::Field(field) = &item.node else {
        return None;
    };
    let field = &field.node;
    if !field.arguments.is_empty() || !field.directives.is_empty() {
        return None;
    }
    let name = field.name.node.as_str();
    let response_key = field
        .alias
        .as_ref()
        .map(|a| a.node.as_str())
        .unwrap_or(name);
    let nested = &field.selection_set.node;
    let nested = (!nested.items.is_empty()).then_some(nested);
    Some((response_key.to_string(), name, nested))
}

fn row_parts(
    fields: &BTreeMap<String, FieldSpec>,
    selection: &SelectionSet,
) -> Option<Vec<RowPart>> {
    selection
        .items
        .iter()
        .map(|item| {
            let (response_key, name, nested) = plain_field(item)?;
            let spec = fields.get(name)?;
            let mut item_spec = spec;
            while item_spec.field_type == FieldType::Array {
                item_spec = item_spec.items.as_deref()?;
            }
            let nested = match (item_spec.field_type, nested) {
                (FieldType::Object, Some(nested)) => row_parts(item_spec.fields.as_ref()?, nested)?,
                (FieldType::Object, None) | (_, Some(_)) => return None,
                (_, None) => Vec::new(),
            };
            Some(RowPart {
                response_key,
                field: name.to_string(),
                spec: spec.clone(),
                nested,
            })
        })
        .collect()
}

/// An argument's value as JSON, with variables taken from the request.
fn argument(value: &GqlValue, variables: &Value) -> Option<Value> {
    let value = value
        .clone()
        .into_const_with(|name| {
            let found = variables.get(name.as_str()).cloned().unwrap_or(Value::Null);
            ConstValue::from_json(found).map_err(|_| ())
        })
        .ok()?;
    match value {
        ConstValue::Enum(name) => Some(Value::String(name.to_string())),
        ConstValue::Object(map) => Some(Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        ConstValue::Enum(name) => Value::String(name.to_string()),
                        other => other.into_json().ok()?,
                    };
                    Some((k.to_string(), v))
                })
                .collect::<Option<_>>()?,
        )),
        other => other.into_json().ok(),
    }
}

/// GraphQL tells enum literals (`placed`) from strings (`"placed"`); JSON does not,
/// so a `where` literal of the wrong kind is caught here, before conversion.
fn literals_fit(fields: &BTreeMap<String, FieldSpec>, value: &GqlValue) -> bool {
    let GqlValue::Object(filter) = value else {
        return true;
    };
    filter.iter().all(|(field, value)| {
        let is_enum = fields
            .get(field.as_str())
            .is_some_and(|f| f.enum_values.is_some());
        match value {
            GqlValue::Enum(_) => is_enum,
            GqlValue::String(_) => !is_enum,
            _ => true,
        }
    })
}

/// Whether a `where` value has the type the filter declares for the field.
fn filter_fits(spec: &FieldSpec, value: &Value) -> bool {
    match (spec.field_type, value) {
        (_, Value::Null) => true,
        (FieldType::String, Value::String(s)) => spec
            .enum_values
            .as_ref()
            .is_none_or(|values| values.iter().any(|v| v == s)),
        (FieldType::Integer, Value::Number(n)) => n.is_i64() || n.is_u64(),
        (FieldType::Number, Value::Number(_)) => true,
        (FieldType::Boolean, Value::Bool(_)) => true,
        _ => false,
    }
}

impl Plan {
    /// The `payload` of the `next` messages for one update, as JSON text.
    pub fn payloads(&self, update: &Update) -> Vec<String> {
        match update {
            Update::Snapshot {
                position,
                rows,
                more,
            } => {
                // Before the last page, nothing to resume from yet.
                let position = if *more { "" } else { position };
                rows.iter()
                    .map(|(key, row)| self.payload("snapshot", key, position, Some(row)))
                    .collect()
            }
            Update::Change { op, change } => {
                let row = match op {
                    Op::Upsert | Op::Patch => change.row.as_ref(),
                    Op::Delete | Op::Remove => None,
                };
                vec![self.payload(op_name(*op), &change.key, &change.position, row)]
            }
            Update::Reset { .. } => vec![self.payload("reset", "", "", None)],
        }
    }

    /// `{"data":{…}}`, its fields in the order the query selected them (as a
    /// GraphQL response must be).
    pub fn payload(&self, op: &str, key: &str, position: &str, row: Option<&Row>) -> String {
        let mut text = format!("{{\"data\":{{{}:{{", json_string(&self.response_key));
        for (n, part) in self.parts.iter().enumerate() {
            if n > 0 {
                text.push(',');
            }
            let (name, value) = match part {
                Part::Op(name) => (name, json_string(op)),
                Part::Key(name) => (name, json_string(key)),
                Part::Position(name) => (name, json_string(position)),
                Part::Row(name, fields) => {
                    let mut value = String::new();
                    match row {
                        Some(row) => select(row, fields, &mut value),
                        None => value.push_str("null"),
                    }
                    (name, value)
                }
            };
            text.push_str(&json_string(name));
            text.push(':');
            text.push_str(&value);
        }
        text.push_str("}}}");
        text
    }
}

/// Patches are sent whole on GraphQL, as they are by async-graphql.
fn op_name(op: Op) -> &'static str {
    match op {
        Op::Patch => "upsert",
        other => other.as_str(),
    }
}

fn select(object: &serde_json::Map<String, Value>, parts: &[RowPart], text: &mut String) {
    text.push('{');
    for (n, part) in parts.iter().enumerate() {
        if n > 0 {
            text.push(',');
        }
        text.push_str(&json_string(&part.response_key));
        text.push(':');
        shaped(
            object.get(&part.field).unwrap_or(&Value::Null),
            &part.nested,
            text,
        );
    }
    text.push('}');
}

/// A value as its selection asks: objects keep only their selected fields.
fn shaped(value: &Value, nested: &[RowPart], text: &mut String) {
    match value {
        Value::Object(object) if !nested.is_empty() => select(object, nested, text),
        Value::Array(items) => {
            text.push('[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    text.push(',');
                }
                shaped(item, nested, text);
            }
            text.push(']');
        }
        other => text.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::LiveChange;
    use crate::spec::compile;
    use serde_json::json;
    use std::sync::Arc;

    fn storefront() -> CompiledExperience {
        compile(&crate::spec::sample("storefront")).unwrap()
    }

    fn planned(query: &str, variables: Value) -> Option<Plan> {
        plan(
            &storefront(),
            &json!({"query": query, "variables": variables}),
        )
    }

    #[test]
    fn a_plain_selection_is_planned_with_its_arguments() {
        let plan = planned(
            r#"subscription Orders($who: String) { mine: order(where: {customerId: $who, status: placed}, since: "p") {
                 op key at: position row { total id items { sku qty: quantity } } } }"#,
            json!({"who": "alice"}),
        )
        .unwrap();
        assert_eq!(plan.selection.projection, "order");
        assert_eq!(
            plan.selection.filter,
            BTreeMap::from([
                ("customerId".to_string(), json!("alice")),
                ("status".to_string(), json!("placed")),
            ])
        );
        assert_eq!(plan.since.as_deref(), Some("p"));
        let row = json!({"id": "o-1", "customerId": "alice", "total": 5, "items": [{"sku": "a", "quantity": 2, "price": 1.5}]});
        let change =
            LiveChange::catch_up("order", "o-1".into(), row.as_object().cloned(), "p2".into());
        let payloads = plan.payloads(&Update::Change {
            op: Op::Upsert,
            change: Arc::new(change),
        });
        assert_eq!(
            payloads,
            [
                r#"{"data":{"mine":{"op":"upsert","key":"o-1","at":"p2","row":{"total":5,"id":"o-1","items":[{"sku":"a","qty":2}]}}}}"#
            ],
            "fields in the order they were selected"
        );
    }

    #[test]
    fn anything_else_is_left_to_async_graphql() {
        for query in [
            "subscription { order { __typename op } }",
            "subscription { order { ...F } } fragment F on OrderChange { op }",
            "subscription { order { op @skip(if: true) } }",
            "subscription { order { op nope } }",
            "subscription { order { row { items } } }",
            "subscription { order { row { id { x } } } }",
            "subscription { order(where: {total: \"five\"}) { op } }",
            "subscription { order(where: {status: lost}) { op } }",
            "subscription { order(where: {status: \"placed\"}) { op } }",
            "subscription { order(where: {customerId: alice}) { op } }",
            "subscription { order(first: 3) { op } }",
            "subscription { nope { op } }",
            "query { order(key: \"o-1\") { id } }",
            "subscription A { order { op } } subscription B { order { key } }",
            "subscription { order { op } customerSummary { op } }",
            "not graphql",
        ] {
            assert!(planned(query, Value::Null).is_none(), "{query}");
        }
    }
}
