//! The spec's commands as GraphQL mutations: `cancelOrder(input: CancelOrderInput!,
//! idempotencyKey: String, wait: Boolean = true): CommandResult!`, with typed
//! input objects from the declared input fields.

use std::collections::BTreeMap;
use std::time::Duration;

use async_graphql::dynamic::{
    Enum, Field, FieldFuture, FieldValue, InputObject, InputValue, Object, Type, TypeRef,
};
use async_graphql::{ErrorExtensions, Value};

use super::connection::LiveViewer;
use crate::command::{CommandError, Outcome, Status};
use crate::serve::commands::{dispatch, Command};
use crate::serve::SharedState;
use crate::spec::api_names::{self, COMMAND_RESULT_TYPE, COMMAND_STATUS_TYPE};
use crate::spec::command::CompiledCommand;
use crate::spec::{FieldSpec, FieldType};

/// The `Mutation` type and the types it needs, or `None` without commands.
pub fn mutation(commands: &[CompiledCommand], types: &mut Vec<Type>) -> Option<Object> {
    if commands.is_empty() {
        return None;
    }
    types.push(
        Enum::new(COMMAND_STATUS_TYPE)
            .item("ACCEPTED")
            .item("VISIBLE")
            .into(),
    );
    types.push(result_type().into());
    let mut mutation = Object::new("Mutation");
    for command in commands {
        let input = api_names::command_input_type(&command.name);
        let mut object = InputObject::new(&input);
        for (name, spec) in &command.input {
            let mut type_ref = input_type(&input, name, spec, types);
            if command.is_required(name) {
                type_ref = TypeRef::NonNull(Box::new(type_ref));
            }
            let mut value = InputValue::new(name, type_ref);
            if let Some(description) = &spec.description {
                value = value.description(description);
            }
            object = object.field(value);
        }
        types.push(object.into());
        let name = command.name.clone();
        let mut field = Field::new(
            &command.name,
            TypeRef::named_nn(COMMAND_RESULT_TYPE),
            move |ctx| {
                let name = name.clone();
                FieldFuture::new(async move {
                    let state = ctx.data::<SharedState>()?;
                    let viewer = ctx
                        .data::<LiveViewer>()?
                        .current()
                        .ok_or_else(|| async_graphql::Error::new("not authenticated"))?;
                    let input = ctx.args.try_get("input")?.as_value().clone().into_json()?;
                    let idempotency_key = match ctx.args.get("idempotencyKey") {
                        Some(key) => Some(key.string()?.to_string()),
                        None => None,
                    };
                    let wait = match ctx.args.get("wait") {
                        Some(wait) if !wait.boolean()? => Duration::ZERO,
                        _ => Duration::MAX,
                    };
                    let command = Command {
                        name,
                        input,
                        idempotency_key,
                        wait,
                        traceparent: None,
                    };
                    let outcome = dispatch(state, &viewer, command).await.map_err(refusal)?;
                    Ok(Some(FieldValue::owned_any(outcome)))
                })
            },
        )
        .argument(InputValue::new("input", TypeRef::named_nn(&input)))
        .argument(InputValue::new(
            "idempotencyKey",
            TypeRef::named(TypeRef::STRING),
        ))
        .argument(
            InputValue::new("wait", TypeRef::named(TypeRef::BOOLEAN))
                .default_value(Value::Boolean(true))
                .description("Wait (up to the command's maxWaitMs) until its effect is visible."),
        );
        if let Some(description) = &command.description {
            field = field.description(description);
        }
        mutation = mutation.field(field);
    }
    Some(mutation)
}

fn result_type() -> Object {
    let part = |name: &'static str, type_ref: TypeRef, get: fn(&Outcome) -> Option<Value>| {
        Field::new(name, type_ref, move |ctx| {
            FieldFuture::new(async move {
                let outcome = ctx.parent_value.try_downcast_ref::<Outcome>()?;
                Ok(get(outcome).map(FieldValue::value))
            })
        })
    };
    Object::new(COMMAND_RESULT_TYPE)
        .description("A command sent: VISIBLE with the position to read from once an event carrying its id has been applied, else ACCEPTED.")
        .field(part("commandId", TypeRef::named_nn(TypeRef::STRING), |o| {
            Some(Value::from(o.command_id.clone()))
        }))
        .field(part("status", TypeRef::named_nn(COMMAND_STATUS_TYPE), |o| {
            Some(Value::Enum(async_graphql::Name::new(match o.status {
                Status::Accepted => "ACCEPTED",
                Status::Visible => "VISIBLE",
            })))
        }))
        .field(part("position", TypeRef::named(TypeRef::STRING), |o| {
            o.position.clone().map(Value::from)
        }))
}

/// The GraphQL input type of one input field (nested objects become input objects).
fn input_type(parent: &str, field: &str, spec: &FieldSpec, types: &mut Vec<Type>) -> TypeRef {
    match (spec.field_type, &spec.enum_values) {
        (FieldType::String, Some(values)) => {
            let name = api_names::field_type(parent, field);
            types.push(
                Enum::new(&name)
                    .items(values.iter().map(String::as_str))
                    .into(),
            );
            TypeRef::named(name)
        }
        (FieldType::String, None) => TypeRef::named(TypeRef::STRING),
        (FieldType::Integer, _) => TypeRef::named(TypeRef::INT),
        (FieldType::Number, _) => TypeRef::named(TypeRef::FLOAT),
        (FieldType::Boolean, _) => TypeRef::named(TypeRef::BOOLEAN),
        (FieldType::Array, _) => match &spec.items {
            Some(items) => TypeRef::List(Box::new(input_type(
                parent,
                &api_names::item_field(field),
                items,
                types,
            ))),
            None => TypeRef::List(Box::new(TypeRef::named(TypeRef::STRING))),
        },
        (FieldType::Object, _) => {
            let name = api_names::field_type(parent, field);
            let mut object = InputObject::new(&name);
            for (nested, nested_spec) in spec.fields.as_ref().unwrap_or(&BTreeMap::new()) {
                object = object.field(InputValue::new(
                    nested,
                    input_type(&name, nested, nested_spec, types),
                ));
            }
            types.push(object.into());
            TypeRef::named(name)
        }
    }
}

/// A refused command as a GraphQL error: `extensions.code` says why, `field` which input.
fn refusal(e: CommandError) -> async_graphql::Error {
    let code = e.code().to_ascii_uppercase();
    let field = match &e {
        CommandError::Invalid { field, .. } => field.clone(),
        _ => None,
    };
    async_graphql::Error::new(e.to_string()).extend_with(move |_, extensions| {
        extensions.set("code", code.as_str());
        if let Some(field) = &field {
            extensions.set("field", field.as_str());
        }
    })
}
