//! A command's input, checked against its declared fields before anything else
//! runs: an object, no field it does not declare, every required one present,
//! each of its declared type.

use serde_json::{Map, Value};

use super::CommandError;
use crate::spec::command::CompiledCommand;
use crate::spec::fields::conform;

pub fn check(command: &CompiledCommand, input: Value) -> Result<Map<String, Value>, CommandError> {
    let invalid = |field: Option<&str>, message: String| CommandError::Invalid {
        field: field.map(str::to_string),
        message,
    };
    let Value::Object(given) = input else {
        return Err(invalid(None, "the input must be an object".into()));
    };
    if let Some(unknown) = given.keys().find(|k| !command.input.contains_key(*k)) {
        return Err(invalid(
            Some(unknown),
            format!("`{unknown}` is not an input of {}", command.name),
        ));
    }
    let mut checked = Map::new();
    for (name, spec) in &command.input {
        match given.get(name) {
            None | Some(Value::Null) if command.is_required(name) => {
                return Err(invalid(Some(name), format!("`{name}` is required")));
            }
            None | Some(Value::Null) => {
                checked.insert(name.clone(), Value::Null);
            }
            Some(value) => {
                let value = conform(spec, value.clone())
                    .map_err(|message| invalid(Some(name), format!("`{name}`: {message}")))?;
                checked.insert(name.clone(), value);
            }
        }
    }
    Ok(checked)
}
