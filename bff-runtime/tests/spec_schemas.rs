//! Property: every spec the compiler accepts gives the GraphQL schema and the
//! OpenAPI document the runtime builds at start, and the schema answers queries.
//! Specs are drawn from names chosen to collide (`filter`, `Order`, `orderList`,
//! `status` beside `orderStatus`...), so the generated names meet often.

use facet_bff::serve::{graphql, openapi};
use facet_bff::spec::{compile, spec_from_value};
use proptest::prelude::*;
use serde_json::{json, Value};

const NAMES: &[&str] = &[
    "order", "Order", "orderList", "orderStatus", "filter", "page", "change", "status",
    "statusItem", "tags", "item", "error", "query", "String", "x", "xItem", "list",
];

fn name() -> impl Strategy<Value = String> {
    prop::sample::select(NAMES).prop_map(str::to_string)
}

/// A declared field: scalars, enums, arrays of either, and nested objects.
fn field() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(json!({"type": "string"})),
        Just(json!({"type": "integer"})),
        Just(json!({"type": "boolean"})),
        prop::sample::subsequence(vec!["a", "b", "true", "c"], 1..3)
            .prop_map(|values| json!({"type": "string", "enum": values})),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|items| json!({"type": "array", "items": items})),
            prop::collection::btree_map(name(), inner, 1..3)
                .prop_map(|fields| json!({"type": "object", "fields": fields})),
        ]
    })
}

fn projection() -> impl Strategy<Value = Value> {
    (name(), prop::collection::btree_map(name(), field(), 1..4)).prop_map(|(name, mut fields)| {
        fields.insert("id".into(), json!({"type": "string"}));
        json!({
            "name": name,
            "key": "event.id",
            "rules": [{"source": "s", "upsert": {"id": "event.id"}}],
            "fields": fields,
            "access": "true",
        })
    })
}

fn spec() -> impl Strategy<Value = Value> {
    (prop::collection::vec(projection(), 1..4), any::<bool>()).prop_map(|(projections, graphql)| {
        json!({
            "kafka": {"bootstrapServers": "localhost:9092"},
            "sources": [{"name": "s", "topic": "t"}],
            "projections": projections,
            "api": {"graphql": graphql},
            "auth": {"anonymous": true},
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]
    #[test]
    fn every_accepted_spec_builds_its_schemas(spec in spec()) {
        let yaml: serde_yaml::Value = serde_yaml::to_value(&spec).unwrap();
        let Ok(compiled) = spec_from_value(yaml).and_then(|s| compile(&s)) else {
            return Ok(());
        };
        openapi::document(&compiled, "t");
        if compiled.spec.api.graphql {
            let schema = graphql::schema(&compiled)
                .unwrap_or_else(|e| panic!("accepted spec gives no schema: {e}\n{spec:#}"));
            let response = futures::executor::block_on(
                schema.execute("{ __schema { types { name } } }"),
            );
            prop_assert!(response.errors.is_empty(), "{:?}", response.errors);
        }
    }
}

/// The property is not vacuous: the drawn specs are accepted often enough, and
/// with GraphQL on.
#[test]
fn the_drawn_specs_are_often_accepted() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut accepted = 0;
    for _ in 0..400 {
        let spec = spec().new_tree(&mut runner).unwrap().current();
        let yaml: serde_yaml::Value = serde_yaml::to_value(&spec).unwrap();
        let ok = spec_from_value(yaml).and_then(|s| compile(&s));
        if ok.is_ok_and(|c| c.spec.api.graphql) {
            accepted += 1;
        }
    }
    assert!(accepted >= 40, "only {accepted} of 400 drawn specs were accepted with GraphQL");
}
