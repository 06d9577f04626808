//! The names the generated APIs give to what a spec declares: GraphQL types and
//! root fields, OpenAPI schemas. The schema builders take their names from here,
//! and the compiler checks here that no two declarations end up with one name, so
//! that a spec the compiler accepts always gives a schema the runtime can build.

use std::collections::BTreeMap;

use super::error::SpecError;
use super::types::{ExperienceSpec, FieldSpec, FieldType};

/// The type of a projection's rows: `order` → `Order`.
pub fn row_type(projection: &str) -> String {
    let mut chars = projection.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

pub fn filter_type(row_type: &str) -> String {
    format!("{row_type}Filter")
}

pub fn page_type(row_type: &str) -> String {
    format!("{row_type}Page")
}

pub fn change_type(row_type: &str) -> String {
    format!("{row_type}Change")
}

/// The type of a field that needs one (an enum or an object): `Order` + `status`
/// → `OrderStatus`.
pub fn field_type(parent: &str, field: &str) -> String {
    format!("{parent}{}", row_type(field))
}

/// What an array's items are called when they need a type: `tags` → `tagsItem`.
pub fn item_field(field: &str) -> String {
    format!("{field}Item")
}

/// The input type of a command's mutation: `cancelOrder` → `CancelOrderInput`.
pub fn command_input_type(command: &str) -> String {
    format!("{}Input", row_type(command))
}

/// What every command's mutation returns, and its status enum.
pub const COMMAND_RESULT_TYPE: &str = "CommandResult";
pub const COMMAND_STATUS_TYPE: &str = "CommandStatus";

/// The query field listing a projection's rows.
pub fn list_field(projection: &str) -> String {
    format!("{projection}List")
}

/// Names the GraphQL schema defines whatever the spec says.
const GRAPHQL_RESERVED: &[&str] = &[
    "Query",
    "Mutation",
    "Subscription",
    "String",
    "Int",
    "Float",
    "Boolean",
    "ID",
];

/// The OpenAPI schema every document has beside the projections'.
const OPENAPI_RESERVED: &[&str] = &["Error"];

/// The types `facet-bff schema --typescript` writes beside the projections' and
/// commands' (the TypeScript client is typed by them).
const TYPESCRIPT_RESERVED: &[&str] = &[
    "Rows",
    "Filters",
    "Commands",
    "FacetSchema",
    "ProjectionName",
    "CommandName",
    COMMAND_RESULT_TYPE,
];

/// Enum values GraphQL forbids.
const GRAPHQL_RESERVED_VALUES: &[&str] = &["true", "false", "null"];

/// Every name that two declarations of `spec` would share in a generated API,
/// each as an error at the second declaration.
pub fn check(spec: &ExperienceSpec) -> Vec<SpecError> {
    let mut names = Names {
        graphql: spec.api.graphql,
        ..Names::default()
    };
    for reserved in OPENAPI_RESERVED {
        names.claim(reserved, "the OpenAPI error schema", "");
    }
    for reserved in TYPESCRIPT_RESERVED {
        names.claim(reserved, "a type of the TypeScript schema", "");
    }
    if names.graphql {
        for reserved in GRAPHQL_RESERVED {
            names.claim(reserved, "a built-in GraphQL type", "");
        }
    }
    for (i, projection) in spec.projections.iter().enumerate() {
        let path = format!("spec.projections[{i}]");
        let name_path = format!("{path}.name");
        let row = row_type(&projection.name);
        names.claim(&row, "the row type of this projection", &name_path);
        names.claim(
            &filter_type(&row),
            "the filter input of this projection",
            &name_path,
        );
        if !names.graphql {
            continue;
        }
        names.claim(
            &page_type(&row),
            "the page type of this projection",
            &name_path,
        );
        names.claim(
            &change_type(&row),
            "the change type of this projection",
            &name_path,
        );
        names.claim_root(&projection.name, &name_path);
        names.claim_root(&list_field(&projection.name), &name_path);
        field_types(
            &row,
            &format!("{path}.fields"),
            &super::links::served_fields(spec, projection),
            &mut names,
        );
    }
    if !spec.commands.is_empty() {
        // `/v1/commands/<name>` would shadow the rows of a projection named so.
        if let Some(i) = spec.projections.iter().position(|p| p.name == "commands") {
            names.errors.push(SpecError::new(
                format!("spec.projections[{i}].name"),
                "`commands` names the REST path of the commands: rename the projection",
            ));
        }
    }
    if names.graphql && !spec.commands.is_empty() {
        // The result type is claimed above: the TypeScript schema writes it too.
        names.claim(COMMAND_STATUS_TYPE, "the status of a command", "");
    }
    for (i, command) in spec.commands.iter().enumerate() {
        let path = format!("spec.commands[{i}]");
        let input = command_input_type(&command.name);
        names.claim(
            &input,
            "the input type of this command",
            &format!("{path}.name"),
        );
        if names.graphql {
            field_types(&input, &format!("{path}.input"), &command.input, &mut names);
        }
    }
    names.errors
}

/// Claims the types the schema builder makes for `fields` of the type `parent`.
fn field_types(parent: &str, path: &str, fields: &BTreeMap<String, FieldSpec>, names: &mut Names) {
    for (field, spec) in fields {
        field_type_of(parent, field, &format!("{path}.{field}"), spec, names);
    }
}

fn field_type_of(parent: &str, field: &str, path: &str, spec: &FieldSpec, names: &mut Names) {
    match (spec.field_type, &spec.enum_values) {
        (FieldType::String, Some(values)) => {
            names.claim(
                &field_type(parent, field),
                "the enum type of this field",
                path,
            );
            for value in values {
                if names.graphql && GRAPHQL_RESERVED_VALUES.contains(&value.as_str()) {
                    names.errors.push(SpecError::new(
                        format!("{path}.enum"),
                        format!("`{value}` cannot be a GraphQL enum value"),
                    ));
                }
            }
        }
        (FieldType::Array, _) => {
            if let Some(items) = &spec.items {
                field_type_of(
                    parent,
                    &item_field(field),
                    &format!("{path}.items"),
                    items,
                    names,
                );
            }
        }
        (FieldType::Object, _) => {
            let name = field_type(parent, field);
            names.claim(&name, "the object type of this field", path);
            match &spec.fields {
                Some(nested) if !nested.is_empty() => {
                    field_types(&name, &format!("{path}.fields"), nested, names)
                }
                _ if names.graphql => names.errors.push(SpecError::new(
                    format!("{path}.fields"),
                    "an object field must declare its fields: its GraphQL type needs at least one",
                )),
                _ => {}
            }
        }
        _ => {}
    }
}

#[derive(Default)]
struct Names {
    /// Each name taken, with what took it and where.
    types: BTreeMap<String, (String, String)>,
    roots: BTreeMap<String, String>,
    /// Whether a GraphQL schema is generated (else only OpenAPI names count).
    graphql: bool,
    errors: Vec<SpecError>,
}

impl Names {
    fn claim(&mut self, name: &str, what: &str, path: &str) {
        if let Some((first_what, first_path)) = self.types.get(name) {
            let first = match first_path.as_str() {
                "" => first_what.clone(),
                _ => format!("{first_what} at {first_path}"),
            };
            self.errors.push(SpecError::new(
                path,
                format!("gives the generated type `{name}` ({what}), already {first}: rename one of them"),
            ));
        } else {
            self.types
                .insert(name.to_string(), (what.to_string(), path.to_string()));
        }
    }

    fn claim_root(&mut self, field: &str, path: &str) {
        match self.roots.get(field) {
            Some(first) => self.errors.push(SpecError::new(
                path,
                format!("gives the GraphQL query field `{field}`, already generated for {first}: rename one of them"),
            )),
            None => {
                self.roots.insert(field.to_string(), path.to_string());
            }
        }
    }
}
