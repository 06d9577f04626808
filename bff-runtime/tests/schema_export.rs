//! `facet-bff schema` against a live runtime of the same spec: the exported
//! GraphQL schema declares exactly what introspection of `/graphql` finds, and the
//! exported OpenAPI document is the one `/openapi.json` serves.

mod support;

use std::collections::BTreeSet;
use std::process::Command;

use async_graphql_parser::types::{TypeKind, TypeSystemDefinition};
use serde_json::{json, Value};

/// `facet-bff schema` of a bare spec file, named as the test runtime is.
fn export(spec: &std::path::Path, format: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_facet-bff"))
        .arg("schema")
        .arg(spec)
        .arg(format!("--{format}"))
        .args(["--name", "storefront-web", "--namespace", "shop"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Every `Type.field: Type`, input field and enum value an SDL document declares.
fn declared(sdl: &str) -> BTreeSet<String> {
    let document = async_graphql_parser::parse_schema(sdl).expect("the export parses");
    let mut found = BTreeSet::new();
    for definition in document.definitions {
        let TypeSystemDefinition::Type(definition) = definition else {
            continue;
        };
        let definition = definition.node;
        let name = definition.name.node.to_string();
        match definition.kind {
            TypeKind::Object(object) => {
                for field in object.fields {
                    let field = field.node;
                    found.insert(format!("{name}.{}: {}", field.name.node, field.ty.node));
                }
            }
            TypeKind::InputObject(input) => {
                for field in input.fields {
                    let field = field.node;
                    found.insert(format!("{name}.{}: {}", field.name.node, field.ty.node));
                }
            }
            TypeKind::Enum(values) => {
                for value in values.values {
                    found.insert(format!("{name}.{}", value.node.value.node));
                }
            }
            _ => {}
        }
    }
    found
}

/// The same, as introspection of the live server reports it.
fn introspected(schema: &Value) -> BTreeSet<String> {
    fn type_ref(t: &Value) -> String {
        match t["kind"].as_str() {
            Some("NON_NULL") => format!("{}!", type_ref(&t["ofType"])),
            Some("LIST") => format!("[{}]", type_ref(&t["ofType"])),
            _ => t["name"].as_str().unwrap().to_string(),
        }
    }
    let mut found = BTreeSet::new();
    for t in schema["types"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        if name.starts_with("__") {
            continue;
        }
        for key in ["fields", "inputFields"] {
            for field in t[key].as_array().into_iter().flatten() {
                found.insert(format!(
                    "{name}.{}: {}",
                    field["name"].as_str().unwrap(),
                    type_ref(&field["type"])
                ));
            }
        }
        for value in t["enumValues"].as_array().into_iter().flatten() {
            found.insert(format!("{name}.{}", value["name"].as_str().unwrap()));
        }
    }
    found
}

const INTROSPECTION: &str = "{ __schema { types { name kind
    fields(includeDeprecated: true) { name type { ...T } }
    inputFields { name type { ...T } }
    enumValues(includeDeprecated: true) { name } } } }
    fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name } } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exported_schemas_are_what_the_live_server_serves() {
    // Without tokens, so introspection needs none.
    let running = support::start("storefront", |spec| {
        spec.auth.jwt = None;
        spec.auth.anonymous = Some(true);
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("storefront.yaml");
    std::fs::write(&spec, serde_yaml::to_string(&running.spec).unwrap()).unwrap();
    let base = running.base();
    let (graphql, openapi) = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let graphql: Value = agent
            .post(&format!("{base}/graphql"))
            .send_json(json!({"query": INTROSPECTION}))
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap();
        (
            graphql,
            support::get(&format!("{base}/openapi.json"), &[]).1,
        )
    })
    .await
    .unwrap();
    assert!(graphql["data"]["__schema"].is_object(), "{graphql}");
    let live = introspected(&graphql["data"]["__schema"]);
    let exported = declared(&export(&spec, "graphql"));
    assert!(live.contains("Order.status: OrderStatus"), "{live:?}");
    assert!(
        live.contains("Mutation.cancelOrder: CommandResult!"),
        "{live:?}"
    );
    assert_eq!(
        exported.symmetric_difference(&live).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "declared by one side only"
    );

    let exported: Value = serde_json::from_str(&export(&spec, "openapi")).unwrap();
    assert_eq!(exported, openapi);
}
