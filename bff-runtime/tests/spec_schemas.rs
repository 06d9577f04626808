//! Property: every spec the compiler accepts gives the GraphQL schema and the
//! OpenAPI document the runtime builds at start, and the schema answers queries.
//! Specs are drawn from names chosen to collide (`filter`, `Order`, `orderList`,
//! `status` beside `orderStatus`...), so the generated names meet often.

use facet_bff::serve::{graphql, openapi};
use facet_bff::spec::{compile, spec_from_value};
use proptest::prelude::*;
use serde_json::{json, Value};

const NAMES: &[&str] = &[
    "order",
    "Order",
    "orderList",
    "orderStatus",
    "filter",
    "page",
    "change",
    "status",
    "statusItem",
    "tags",
    "item",
    "error",
    "query",
    "String",
    "x",
    "xItem",
    "list",
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
            inner
                .clone()
                .prop_map(|items| json!({"type": "array", "items": items})),
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

/// A command whose name and input fields are drawn like the projections'.
fn command() -> impl Strategy<Value = Value> {
    (name(), prop::collection::btree_map(name(), field(), 1..3)).prop_map(|(name, input)| {
        json!({"name": name, "input": input, "topic": "commands", "key": "\"k\"", "value": "{}"})
    })
}

fn spec() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(projection(), 1..4),
        prop::collection::vec(command(), 0..2),
        any::<bool>(),
    )
        .prop_map(|(projections, commands, graphql)| {
            json!({
                "kafka": {"bootstrapServers": "localhost:9092"},
                "sources": [{"name": "s", "topic": "t"}],
                "projections": projections,
                "commands": commands,
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
    assert!(
        accepted >= 40,
        "only {accepted} of 400 drawn specs were accepted with GraphQL"
    );
}

/// A CEL-ish text: tokens of the language in any order, so that the parser sees
/// half-valid expressions, unbalanced brackets and long chains.
fn cel_text() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "event",
        "row",
        "auth",
        ".",
        "a",
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        ":",
        ",",
        "+",
        "-",
        "!",
        "&&",
        "||",
        "==",
        "?",
        "1",
        "\"s\"",
        "true",
        "null",
        "all(",
        "x",
        "exists(",
        "size(",
        "map(",
        " in ",
        "has(",
        "0.5",
        "'",
        "\\",
        "\u{1F600}",
    ]);
    prop::collection::vec(token, 0..200).prop_map(|tokens| tokens.concat())
}

/// Any YAML-ish value, to put where the spec expects something else.
fn any_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        cel_text().prop_map(Value::from),
        "[a-zA-Z_]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every node of `value` by its path, so a mutation can pick one.
fn paths(value: &Value, path: &mut Vec<Value>, out: &mut Vec<Vec<Value>>) {
    out.push(path.clone());
    match value {
        Value::Object(map) => map.iter().for_each(|(k, v)| {
            path.push(k.clone().into());
            paths(v, path, out);
            path.pop();
        }),
        Value::Array(items) => items.iter().enumerate().for_each(|(i, v)| {
            path.push(i.into());
            paths(v, path, out);
            path.pop();
        }),
        _ => {}
    }
}

fn node_at<'a>(root: &'a mut Value, path: &[Value]) -> &'a mut Value {
    path.iter().fold(root, |node, segment| match segment {
        Value::String(key) => &mut node[key.as_str()],
        other => &mut node[other.as_u64().unwrap() as usize],
    })
}

fn samples() -> Vec<Value> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/samples");
    let mut specs = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            for document in serde_yaml::Deserializer::from_str(&text) {
                let value: Value = serde::Deserialize::deserialize(document).unwrap();
                if value["kind"] == "FrontendExperience" {
                    specs.push(value["spec"].clone());
                }
            }
        }
    }
    specs
}

proptest! {
    // The spec compiler's fuzz target: the samples with up to three nodes replaced
    // by anything. The compiler answers (accepts or names errors) and never panics;
    // what it accepts gives its schemas.
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]
    #[test]
    fn mutated_samples_never_crash_the_compiler(
        sample in prop::sample::select(samples()),
        mutations in prop::collection::vec((any::<prop::sample::Index>(), any_value()), 1..4),
    ) {
        let mut spec = sample;
        for (index, value) in mutations {
            let mut all = Vec::new();
            paths(&spec, &mut Vec::new(), &mut all);
            let path = index.get(&all).clone();
            *node_at(&mut spec, &path) = value;
        }
        let Ok(yaml) = serde_yaml::to_value(&spec) else { return Ok(()) };
        match spec_from_value(yaml).and_then(|s| compile(&s)) {
            Ok(compiled) => {
                openapi::document(&compiled, "t");
                if compiled.spec.api.graphql {
                    if let Err(e) = graphql::schema(&compiled) {
                        prop_assert!(false, "accepted spec gives no schema: {e}\n{spec:#}");
                    }
                }
            }
            Err(errors) => prop_assert!(!errors.0.is_empty()),
        }
    }
}

/// The property end to end: drawn specs that the compiler accepts start a real
/// runtime (on librdkafka's mock cluster), which serves their GraphQL schema and
/// OpenAPI document over HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_specs_start_a_runtime_that_serves_their_schema() {
    use proptest::strategy::ValueTree;
    use rdkafka::mocking::MockCluster;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("t", 1, 1).unwrap();
    let mut started = 0;
    while started < 12 {
        let drawn = spec().new_tree(&mut runner).unwrap().current();
        let yaml: serde_yaml::Value = serde_yaml::to_value(&drawn).unwrap();
        let Ok(spec) = spec_from_value(yaml) else {
            continue;
        };
        if compile(&spec).is_err() || !spec.api.graphql {
            continue;
        }
        let data = tempfile::tempdir().unwrap();
        let runtime = facet_bff::runtime::Runtime::start(facet_bff::runtime::RuntimeConfig {
            name: "drawn".into(),
            namespace: "fuzz".into(),
            ordinal: "0".into(),
            spec,
            data_dir: data.path().to_path_buf(),
            http: "127.0.0.1:0".parse().unwrap(),
            metrics: "127.0.0.1:0".parse().unwrap(),
            bootstrap_servers: Some(cluster.bootstrap_servers()),
            extra_kafka_properties: vec![],
            auth: None,
            dev_producer: None,
            sample_events: vec![],
            console: false,
            restore_from: None,
            peers: Default::default(),
        })
        .await
        .unwrap_or_else(|e| panic!("an accepted spec did not start: {e:#}\n{drawn:#}"));
        let base = format!("http://{}", runtime.http_addr);
        let (schema, openapi) = tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let schema: Value = agent
                .post(format!("{base}/graphql"))
                .header("Content-Type", "application/json")
                .send(
                    json!({"query": "{ __schema { queryType { fields { name } } } }"}).to_string(),
                )
                .unwrap()
                .body_mut()
                .read_json()
                .unwrap();
            let openapi: Value = agent
                .get(format!("{base}/openapi.json"))
                .call()
                .unwrap()
                .body_mut()
                .read_json()
                .unwrap();
            (schema, openapi)
        })
        .await
        .unwrap();
        let fields = schema["data"]["__schema"]["queryType"]["fields"]
            .as_array()
            .unwrap_or_else(|| panic!("no schema served: {schema}\n{drawn:#}"));
        for projection in drawn["projections"].as_array().unwrap() {
            let name = projection["name"].as_str().unwrap();
            assert!(
                fields.iter().any(|f| f["name"] == name),
                "{name} missing: {schema}"
            );
        }
        assert!(openapi["paths"].is_object(), "{openapi}");
        runtime.stop().unwrap();
        started += 1;
    }
}
