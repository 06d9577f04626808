//! The OpenAPI 3.1 document of the REST API, generated from the declared fields.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::spec::{api_names, CompiledExperience, CompiledProjection, FieldSpec, FieldType};

/// `customerSummary` → `CustomerSummary`.
fn field_schema(field: &FieldSpec) -> Value {
    let mut schema = Map::new();
    schema.insert("type".into(), field.field_type.as_str().into());
    if let Some(description) = &field.description {
        schema.insert("description".into(), description.clone().into());
    }
    if let Some(values) = &field.enum_values {
        schema.insert("enum".into(), json!(values));
    }
    if let Some(reason) = &field.deprecated {
        schema.insert("deprecated".into(), true.into());
        let text = match &field.description {
            Some(d) => format!("{d} Deprecated: {reason}"),
            None => format!("Deprecated: {reason}"),
        };
        schema.insert("description".into(), text.into());
    }
    match field.field_type {
        FieldType::Array => {
            if let Some(items) = &field.items {
                schema.insert("items".into(), field_schema(items));
            }
        }
        FieldType::Object => {
            if let Some(fields) = &field.fields {
                schema.insert("properties".into(), properties(fields));
            }
        }
        _ => {}
    }
    Value::Object(schema)
}

fn properties(fields: &BTreeMap<String, FieldSpec>) -> Value {
    Value::Object(
        fields
            .iter()
            .map(|(name, f)| (name.clone(), field_schema(f)))
            .collect(),
    )
}

fn parameter(name: &str, location: &str, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": location, "required": location == "path", "schema": schema, "description": description})
}

pub fn document(experience: &CompiledExperience, title: &str) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    schemas.insert(
        "Error".into(),
        json!({"type": "object", "properties": {"error": {"type": "object", "properties": {
            "code": {"type": "string"}, "message": {"type": "string"}}}}}),
    );
    for projection in &experience.projections {
        let name = api_names::row_type(&projection.name);
        let mut schema = json!({"type": "object", "properties": properties(&projection.fields)});
        if let Some(description) = &projection.description {
            schema["description"] = description.clone().into();
        }
        schemas.insert(name.clone(), schema);
        let row_ref = json!({"$ref": format!("#/components/schemas/{name}")});
        paths.insert(
            format!("/v1/{}", projection.name),
            list_path(projection, &name, &row_ref),
        );
        paths.insert(
            format!("/v1/{}/{{key}}", projection.name),
            get_path(projection, &name, &row_ref),
        );
    }
    for command in &experience.commands {
        paths.insert(
            format!("/v1/commands/{}", command.name),
            command_path(command),
        );
    }
    let mut document = json!({
        "openapi": "3.1.0",
        "info": {"title": title, "version": experience.definition_hash},
        "paths": paths,
        "components": {"schemas": schemas},
    });
    if experience.spec.auth.jwt.is_some() {
        document["components"]["securitySchemes"] =
            json!({"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}});
        document["security"] = json!([{"bearer": []}]);
    }
    document
}

/// An error answer: `{"error": {"code", "message"}}`.
fn error_response() -> Value {
    json!({"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

/// The query parameters of a list: paging, a field subset, and equality filters.
fn list_parameters(projection: &CompiledProjection) -> Vec<Value> {
    let field_names: Vec<&String> = projection.fields.keys().collect();
    let mut list_parameters = vec![
        parameter(
            "limit",
            "query",
            json!({"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}),
            "Most rows to return.",
        ),
        parameter(
            "after",
            "query",
            json!({"type": "string"}),
            "Cursor: the `next` of the previous page.",
        ),
        parameter(
            "fields",
            "query",
            json!({"type": "string"}),
            &format!(
                "Comma-separated subset of: {}.",
                field_names
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    ];
    for (field, spec) in &projection.fields {
        if matches!(
            spec.field_type,
            FieldType::String | FieldType::Integer | FieldType::Number | FieldType::Boolean
        ) {
            list_parameters.push(parameter(
                field,
                "query",
                json!({"type": spec.field_type.as_str()}),
                &format!("Only rows whose `{field}` equals this value."),
            ));
        }
    }
    list_parameters
}

/// `GET /v1/<projection>`: a page of the rows the caller may see.
fn list_path(projection: &CompiledProjection, name: &str, row_ref: &Value) -> Value {
    let error = error_response();
    json!({"get": {
        "operationId": format!("list{name}"),
        "summary": format!("List {} rows visible to the caller", projection.name),
        "parameters": list_parameters(projection),
        "responses": {
            "200": {"description": "A page of rows", "content": {"application/json": {"schema": {
                "type": "object",
                "properties": {
                    "position": {"type": "string", "description": "Where the store was when read (the Kafka offsets it reflects): subscribe with `since` set to it to get every change after the page."},
                    "next": {"type": ["string", "null"], "description": "Cursor of the next page, null at the end."},
                    "items": {"type": "array", "items": {"type": "object", "properties": {
                        "key": {"type": "string"}, "row": row_ref}}}
                }}}}},
            "400": error.clone(),
            "401": error.clone(),
        }
    }})
}

/// `GET /v1/<projection>/{key}`: one row.
fn get_path(projection: &CompiledProjection, name: &str, row_ref: &Value) -> Value {
    let error = error_response();
    json!({"get": {
        "operationId": format!("get{name}"),
        "summary": format!("One {} row by key", projection.name),
        "parameters": [
            parameter("key", "path", json!({"type": "string"}), "The row key."),
            parameter("fields", "query", json!({"type": "string"}), "Comma-separated subset of the fields."),
            parameter("If-None-Match", "header", json!({"type": "string"}), "An ETag from a previous read."),
        ],
        "responses": {
            "200": {"description": "The row", "headers": {"ETag": {"schema": {"type": "string"}}},
                    "content": {"application/json": {"schema": row_ref}}},
            "304": {"description": "Not modified since the given ETag"},
            "401": error.clone(),
            "404": error,
        }
    }})
}

/// `POST /v1/commands/<name>`: the input as the body, the outcome as the answer.
fn command_path(command: &crate::spec::command::CompiledCommand) -> Value {
    let required: Vec<&String> = command
        .input
        .keys()
        .filter(|name| command.is_required(name))
        .collect();
    let outcome = json!({"type": "object", "properties": {
        "commandId": {"type": "string"},
        "status": {"type": "string", "enum": ["accepted", "visible"]},
        "position": {"type": "string", "description": "Read from here (`since`) to see the command's effect."}}});
    let error = json!({"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    json!({"post": {
        "operationId": command.name,
        "summary": command.description.clone().unwrap_or_else(|| format!("Send {}", command.name)),
        "parameters": [
            parameter("Idempotency-Key", "header", json!({"type": "string"}), "A retry with the same key returns the first result without sending again."),
            parameter("Prefer", "header", json!({"type": "string"}), "`wait=<seconds>` bounds the wait for the effect; `respond-async` does not wait."),
        ],
        "requestBody": {"required": true, "content": {"application/json": {"schema": {
            "type": "object", "properties": properties(&command.input), "required": required,
            "additionalProperties": false}}}},
        "responses": {
            "200": {"description": "Sent, and its effect is visible at `position`", "content": {"application/json": {"schema": outcome.clone()}}},
            "202": {"description": "Sent; its effect was not seen within the wait", "content": {"application/json": {"schema": outcome}}},
            "400": error.clone(),
            "401": error.clone(),
            "403": error.clone(),
            "404": error.clone(),
            "503": error,
        }
    }})
}
