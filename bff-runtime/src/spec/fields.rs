//! Declared row fields: their starting values and the values they accept.

use std::collections::BTreeMap;

use serde_json::{Map, Number, Value};

use super::types::{FieldSpec, FieldType};

/// The value a field has in a row that no rule has written yet, so that
/// `row.count + 1` and `row.comments + [c]` work on the first event.
pub fn zero_value(field: &FieldSpec) -> Value {
    match field.field_type {
        FieldType::String => Value::String(String::new()),
        FieldType::Integer => Value::from(0),
        FieldType::Number => Value::from(0.0),
        FieldType::Boolean => Value::Bool(false),
        FieldType::Array => Value::Array(Vec::new()),
        FieldType::Object => {
            Value::Object(zero_row(field.fields.as_ref().unwrap_or(&BTreeMap::new())))
        }
    }
}

/// A new row: every declared field at its zero value.
pub fn zero_row(fields: &BTreeMap<String, FieldSpec>) -> Map<String, Value> {
    fields
        .iter()
        .map(|(name, field)| (name.clone(), zero_value(field)))
        .collect()
}

/// Checks a value against its declared field and brings numbers to the declared
/// type (an integral `2.0` into an integer field, `2` into a number field).
/// `null` is accepted everywhere: a missing value is not a wrong one.
pub fn conform(field: &FieldSpec, value: Value) -> Result<Value, String> {
    let wrong = |value: &Value| {
        Err(format!(
            "expected {}, got {}",
            field.field_type.as_str(),
            json_type_name(value)
        ))
    };
    match (field.field_type, value) {
        (_, Value::Null) => Ok(Value::Null),
        (FieldType::String, Value::String(s)) => match &field.enum_values {
            Some(allowed) if !allowed.contains(&s) => Err(format!(
                "\"{s}\" is not one of the declared values ({})",
                allowed.join(", ")
            )),
            _ => Ok(Value::String(s)),
        },
        (FieldType::Integer, Value::Number(n)) => {
            if n.is_i64() || n.is_u64() {
                Ok(Value::Number(n))
            } else {
                match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Value::from(f as i64)),
                    _ => Err(format!("expected integer, got {n}")),
                }
            }
        }
        (FieldType::Number, Value::Number(n)) => Ok(n
            .as_f64()
            .and_then(Number::from_f64)
            .map(Value::Number)
            .unwrap_or(Value::Number(n))),
        (FieldType::Boolean, Value::Bool(b)) => Ok(Value::Bool(b)),
        (FieldType::Array, Value::Array(items)) => match &field.items {
            Some(item_spec) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| conform(item_spec, item).map_err(|e| format!("[{i}]: {e}")))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            None => Ok(Value::Array(items)),
        },
        (FieldType::Object, Value::Object(map)) => match &field.fields {
            Some(declared) => conform_object(declared, map).map(Value::Object),
            None => Ok(Value::Object(map)),
        },
        (_, other) => wrong(&other),
    }
}

/// Conforms the declared members of an object; undeclared members are kept as they are,
/// so an event may carry more than the UI needs today.
fn conform_object(
    declared: &BTreeMap<String, FieldSpec>,
    map: Map<String, Value>,
) -> Result<Map<String, Value>, String> {
    map.into_iter()
        .map(|(name, value)| match declared.get(&name) {
            Some(spec) => conform(spec, value)
                .map(|v| (name.clone(), v))
                .map_err(|e| format!(".{name}: {e}")),
            None => Ok((name, value)),
        })
        .collect()
}

pub fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
