//! The spec compiler against the samples and against many broken specs, each with
//! the exact error a user would read.

use facet_bff::spec::{compile, parse_manifests, spec_from_value, SpecErrors};
use facet_bff::validate::validate_text;

const BASE: &str = r#"
replicas: 1
kafka: {bootstrapServers: "localhost:9092"}
sources:
  - {name: orders, topic: shop.orders.v1}
projections:
  - name: order
    key: event.orderId
    rules:
      - source: orders
        when: event.type == "OrderPlaced"
        upsert: {id: event.orderId, status: '"placed"', total: event.total, count: row.count + 1}
      - source: orders
        when: event.type == "OrderCancelled"
        delete: true
    fields:
      id: {type: string}
      status: {type: string, enum: [placed, shipped]}
      total: {type: number}
      count: {type: integer}
    access: row.id != "" && auth.sub == "admin"
auth: {anonymous: true}
"#;

/// The base spec with the value at `path` (dotted, numeric segments index lists)
/// replaced by `yaml`, or removed when `yaml` is `~remove`.
fn spec_with(path: &str, yaml: &str) -> serde_yaml::Value {
    let mut root: serde_yaml::Value = serde_yaml::from_str(BASE).unwrap();
    let mut node = &mut root;
    let segments: Vec<&str> = path.split('.').collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i == segments.len() - 1;
        if last && yaml == "~remove" {
            node.as_mapping_mut().unwrap().remove(*segment);
            break;
        }
        let next = match segment.parse::<usize>() {
            Ok(index) => &mut node.as_sequence_mut().unwrap()[index],
            Err(_) => {
                if node.is_null() {
                    *node = serde_yaml::Value::Mapping(Default::default());
                }
                let map = node.as_mapping_mut().unwrap();
                map.entry(serde_yaml::Value::from(*segment))
                    .or_insert(serde_yaml::Value::Null)
            }
        };
        if last {
            *next = serde_yaml::from_str(yaml).unwrap();
            break;
        }
        node = next;
    }
    root
}

fn errors_of(spec: serde_yaml::Value) -> Vec<String> {
    let result = spec_from_value(spec).and_then(|spec| compile(&spec).map(|_| ()));
    match result {
        Ok(()) => vec![],
        Err(SpecErrors(errors)) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

#[track_caller]
fn assert_error(path: &str, yaml: &str, expected: &str) {
    let errors = errors_of(spec_with(path, yaml));
    assert!(
        errors.iter().any(|e| e == expected),
        "setting {path} to {yaml}:\nexpected error:\n{expected}\ngot:\n{}",
        errors.join("\n")
    );
}

#[test]
fn base_spec_is_valid() {
    assert_eq!(errors_of(spec_with("replicas", "1")), Vec::<String>::new());
}

#[test]
fn every_sample_validates() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/samples");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let mut out = Vec::new();
            let errors = validate_text(&path.display().to_string(), &text, &mut out).unwrap();
            assert_eq!(errors, 0, "{}", String::from_utf8_lossy(&out));
            seen += 1;
        }
    }
    assert!(seen >= 3, "expected at least three samples, found {seen}");
}

#[test]
fn a_broken_sample_shows_the_exact_error() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/samples/blog-post.yaml"
    );
    let text = std::fs::read_to_string(dir)
        .unwrap()
        .replace("row.commentCount + 1", "row.comentCount + 1");
    let mut out = Vec::new();
    let errors = validate_text("blog-post.yaml", &text, &mut out).unwrap();
    assert_eq!(errors, 1);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "blog-post.yaml: blog/blog-post-page: error: spec.projections[1].rules[2].patch.commentCount: \
         `row.comentCount` is not a declared field (declared: author, authorId, body, commentCount, \
         editedAt, id, publishedAt, title)\n    in expression: row.comentCount + 1\n"
    );
}

#[test]
fn syntax_error_in_when_names_rule_and_expression() {
    assert_error(
        "projections.0.rules.0.when",
        r#"'event.type == "OrderPlaced" &&'"#,
        "spec.projections[0].rules[0].when: CEL syntax error at column 32: Syntax error: mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}\n    in expression: event.type == \"OrderPlaced\" &&",
    );
}

#[test]
fn unknown_variable_in_when() {
    assert_error(
        "projections.0.rules.0.when",
        r#"'evnt.type == "OrderPlaced"'"#,
        "spec.projections[0].rules[0].when: unknown variable `evnt`: this expression may use event, row, record, lookup\n    in expression: evnt.type == \"OrderPlaced\"",
    );
}

#[test]
fn key_may_not_use_row() {
    assert_error(
        "projections.0.key",
        "row.id",
        "spec.projections[0].key: unknown variable `row`: this expression may use event, record\n    in expression: row.id",
    );
}

#[test]
fn access_may_not_use_event() {
    assert_error(
        "projections.0.access",
        "event.customerId == auth.sub",
        "spec.projections[0].access: unknown variable `event`: this expression may use row, auth\n    in expression: event.customerId == auth.sub",
    );
}

#[test]
fn rule_reads_unknown_source() {
    assert_error(
        "projections.0.rules.1.source",
        "payments",
        "spec.projections[0].rules[1].source: unknown source `payments` (sources: orders)",
    );
}

#[test]
fn rule_writes_undeclared_field() {
    assert_error(
        "projections.0.rules.0.upsert.totl",
        "event.total",
        "spec.projections[0].rules[0].upsert.totl: `totl` is not a declared field (declared: count, id, status, total)",
    );
}

#[test]
fn rule_reads_undeclared_row_field() {
    assert_error(
        "projections.0.rules.0.upsert.count",
        "row.cnt + 1",
        "spec.projections[0].rules[0].upsert.count: `row.cnt` is not a declared field (declared: count, id, status, total)\n    in expression: row.cnt + 1",
    );
}

#[test]
fn constant_outside_enum() {
    assert_error(
        "projections.0.rules.0.upsert.status",
        r#"'"shiped"'"#,
        "spec.projections[0].rules[0].upsert.status: \"shiped\" is not one of the declared values (placed, shipped)\n    in expression: \"shiped\"",
    );
}

#[test]
fn constant_of_wrong_type() {
    assert_error(
        "projections.0.rules.0.upsert.count",
        r#"'"many"'"#,
        "spec.projections[0].rules[0].upsert.count: expected integer, got string\n    in expression: \"many\"",
    );
}

#[test]
fn constant_filter_that_is_not_boolean() {
    assert_error(
        "projections.0.rules.0.when",
        r#"'"yes"'"#,
        "spec.projections[0].rules[0].when: must be a boolean, but is always a string\n    in expression: \"yes\"",
    );
}

#[test]
fn rule_with_two_actions() {
    assert_error(
        "projections.0.rules.1.patch",
        "{status: '\"shipped\"'}",
        "spec.projections[0].rules[1]: set only one of upsert, patch and delete: true",
    );
}

#[test]
fn rule_with_no_action() {
    assert_error(
        "projections.0.rules.1.delete",
        "false",
        "spec.projections[0].rules[1]: the rule does nothing: set one of upsert, patch or delete: true",
    );
}

#[test]
fn duplicate_source_names() {
    assert_error(
        "sources",
        "[{name: orders, topic: a}, {name: orders, topic: b}]",
        "spec.sources[1].name: duplicate source name `orders`",
    );
}

#[test]
fn invalid_topic_name() {
    assert_error(
        "sources.0.topic",
        "'shop/orders'",
        "spec.sources[0].topic: `shop/orders` is not a valid Kafka topic name: `/` is not allowed (use letters, digits, `.`, `_`, `-`)",
    );
}

#[test]
fn duplicate_projection_names() {
    let mut spec = spec_with("replicas", "1");
    let first = spec["projections"][0].clone();
    spec["projections"].as_sequence_mut().unwrap().push(first);
    let errors = errors_of(spec);
    assert!(
        errors.contains(&"spec.projections[1].name: duplicate projection name `order`".to_string()),
        "{errors:?}"
    );
}

#[test]
fn projection_name_must_be_a_graphql_name() {
    assert_error(
        "projections.0.name",
        "order-view",
        "spec.projections[0].name: `order-view` is not a valid name: start with a letter, then letters, digits or `_` (it names a GraphQL field)",
    );
}

#[test]
fn enum_on_non_string_field() {
    assert_error(
        "projections.0.fields.total",
        "{type: number, enum: [a, b]}",
        "spec.projections[0].fields.total.enum: only string fields take enum values, this one is number",
    );
}

#[test]
fn array_without_items() {
    assert_error(
        "projections.0.fields.tags",
        "{type: array}",
        "spec.projections[0].fields.tags.items: an array field must declare the type of its items",
    );
}

#[test]
fn unknown_field_type() {
    assert_error(
        "projections.0.fields.total",
        "{type: money}",
        "spec.projections[0].fields.total.type: unknown variant `money`, expected one of `string`, `integer`, `number`, `boolean`, `object`, `array`",
    );
}

#[test]
fn misspelled_spec_field() {
    assert_error(
        "projections.0.rules.1.delet",
        "true",
        "spec.projections[0].rules[1].delet: unknown field",
    );
}

#[test]
fn no_auth_configured() {
    assert_error(
        "auth",
        "{}",
        "spec.auth: no authentication configured: set jwt, or anonymous: true to serve everyone",
    );
}

#[test]
fn jwt_and_anonymous_together() {
    assert_error(
        "auth",
        "{anonymous: true, jwt: {issuer: 'https://id', audiences: [a], jwksUri: 'https://id/jwks'}}",
        "spec.auth: set either jwt or anonymous: true, not both",
    );
}

#[test]
fn jwt_settings_checked() {
    let spec = spec_with(
        "auth",
        "{jwt: {issuer: '', audiences: [], jwksUri: 'id.example.com/jwks'}}",
    );
    assert_eq!(
        errors_of(spec),
        vec![
            "spec.auth.jwt.issuer: is empty",
            "spec.auth.jwt.audiences: is empty: list the audiences a token must carry",
            "spec.auth.jwt.jwksUri: `id.example.com/jwks` is not an http(s) URL",
        ]
    );
    // Regression (issue 24): an http:// JWKS was accepted silently.
    let jwt = |extra: &str| {
        spec_with(
            "auth",
            &format!(
                "{{jwt: {{issuer: i, audiences: [a], jwksUri: 'http://id.example/jwks'{extra}}}}}"
            ),
        )
    };
    let errors = errors_of(jwt(""));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("spec.auth.jwt.jwksUri: `http://id.example/jwks` is not https")
            && errors[0].contains("allowInsecureJwksUri: true"),
        "{errors:?}"
    );
    assert!(errors_of(jwt(", allowInsecureJwksUri: true")).is_empty());
}

#[test]
fn bootstrap_servers_need_ports() {
    assert_error(
        "kafka.bootstrapServers",
        "'kafka-0,kafka-1:9092'",
        "spec.kafka.bootstrapServers: `kafka-0` is not host:port",
    );
}

#[test]
fn every_api_turned_off() {
    assert_error(
        "api",
        "{rest: false, graphql: false, websocket: false, sse: false}",
        "spec.api: every API is turned off: enable at least one of rest, graphql, websocket, sse",
    );
}

#[test]
fn bad_volume_size() {
    assert_error(
        "store",
        "{persistence: {enabled: true, size: 1GB}}",
        "spec.store.persistence.size: `1GB` is not a Kubernetes quantity such as 1Gi",
    );
}

#[test]
fn negative_replicas() {
    assert_error("replicas", "-1", "spec.replicas: must not be negative");
}

/// Every number a tenant writes outside lists, with its smallest and largest
/// allowed values (the same bounds as the CRD schema's, for `facet-bff validate` and for objects
/// stored before the schema had them).
const NUMBER_BOUNDS: &[(&str, i64, i64)] = &[
    ("replicas", 0, 100),
    ("api.limits.maxConnections", 1, 1_000_000),
    ("api.limits.maxSubscriptionsPerConnection", 1, 10_000),
    ("api.limits.maxMessageBytes", 1, 16 * 1024 * 1024),
    ("api.limits.maxPendingRows", 1, 1_000_000),
    ("api.limits.maxUnauthenticatedConnections", 1, 100_000),
    ("api.limits.headerTimeoutSeconds", 1, 3_600),
    ("api.graphqlLimits.maxDepth", 1, 128),
    ("api.graphqlLimits.maxComplexity", 1, 100_000),
    ("api.graphqlLimits.maxAliases", 1, 10_000),
    ("api.graphqlLimits.maxDocumentBytes", 1, 1024 * 1024),
    ("api.graphqlLimits.maxBatch", 1, 100),
    ("store.changeLogLength", 1, 1_000_000),
    ("store.batch.maxEvents", 1, 100_000),
    ("store.batch.maxDelayMs", 0, 60_000),
];

#[test]
fn every_number_is_bounded_and_refused_where_it_is_written() {
    for (path, min, max) in NUMBER_BOUNDS {
        for allowed in [min, max] {
            assert_eq!(
                errors_of(spec_with(path, &allowed.to_string())),
                Vec::<String>::new(),
                "{path}: {allowed} is allowed"
            );
        }
        assert_eq!(
            errors_of(spec_with(path, &(max + 1).to_string())),
            [format!("spec.{path}: must be at most {max}")]
        );
        if *min > 0 {
            assert_eq!(
                errors_of(spec_with(path, &(min - 1).to_string())),
                [format!("spec.{path}: must be at least {min}")]
            );
        }
    }
    // The operator used to abort allocating a consumer group name per replica.
    assert_error(
        "replicas",
        "2147483647",
        "spec.replicas: must be at most 100",
    );
    // Only in some specs: CORS, JWT, commands, embeds.
    assert_error(
        "api.cors",
        "{allowedOrigins: ['https://shop.example'], maxAgeSeconds: 86401}",
        "spec.api.cors.maxAgeSeconds: must be at most 86400",
    );
    let jwt = |refresh: &str| {
        format!(
            "{{jwt: {{issuer: 'https://id.example', audiences: [shop], \
             jwksUri: 'https://id.example/jwks.json', jwksRefreshSeconds: {refresh}}}}}"
        )
    };
    assert_error(
        "auth",
        &jwt("86401"),
        "spec.auth.jwt.jwksRefreshSeconds: must be at most 86400",
    );
    assert_error(
        "auth",
        &jwt("0"),
        "spec.auth.jwt.jwksRefreshSeconds: must be at least 1",
    );
    let mut command = spec_with("commands", COMMAND);
    command["commands"][0]["maxWaitMs"] = 60_001.into();
    assert_eq!(
        errors_of(command),
        ["spec.commands[0].maxWaitMs: must be at most 60000"]
    );
    assert_eq!(
        blog_with("projections.1.embeds.author.maxFanOut", "1000001"),
        ["spec.projections[1].embeds.author.maxFanOut: must be at most 1000000"]
    );
    assert_eq!(
        blog_with("projections.1.embeds.author.maxFanOut", "0"),
        ["spec.projections[1].embeds.author.maxFanOut: must be at least 1"]
    );
}

#[test]
fn validate_names_a_number_out_of_bounds() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/samples/blog-post.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.contains("\n  replicas: 1\n"),
        "the sample sets replicas"
    );
    let text = text.replace("\n  replicas: 1\n", "\n  replicas: 2147483647\n");
    let mut out = Vec::new();
    let errors = validate_text("blog-post.yaml", &text, &mut out).unwrap();
    assert_eq!(errors, 1);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "blog-post.yaml: blog/blog-post-page: error: spec.replicas: must be at most 100\n"
    );
}

#[test]
fn pod_template_quantities_are_checked() {
    assert_eq!(
        errors_of(spec_with(
            "podTemplate",
            "{requests: {cpu: 100m, memory: 128Mi}, limits: {cpu: '1.5', memory: '1e9'}}"
        )),
        Vec::<String>::new()
    );
    assert_eq!(
        errors_of(spec_with(
            "podTemplate",
            "{requests: {cpu: lots}, limits: {memory: 1GB}}"
        )),
        [
            "spec.podTemplate.requests.cpu: `lots` is not a Kubernetes quantity such as 100m or 128Mi",
            "spec.podTemplate.limits.memory: `1GB` is not a Kubernetes quantity such as 100m or 128Mi",
        ]
    );
}

#[test]
fn pod_template_env_may_not_set_what_the_operator_sets() {
    assert_eq!(
        errors_of(spec_with(
            "podTemplate",
            "{env: {RUST_LOG: debug, POD_NAME: x, FACET_DATA_DIR: /tmp}}"
        )),
        [
            "spec.podTemplate.env.FACET_DATA_DIR: is set by the operator (POD_NAME and every FACET_ variable): choose another name",
            "spec.podTemplate.env.POD_NAME: is set by the operator (POD_NAME and every FACET_ variable): choose another name",
        ]
    );
}

#[test]
fn wrong_value_type_names_its_path() {
    assert_error(
        "replicas",
        "two",
        "spec.replicas: invalid type: string \"two\", expected i32",
    );
}

#[test]
fn all_errors_are_collected_not_just_the_first() {
    let mut spec = spec_with("projections.0.rules.0.when", "'evnt.type'");
    spec["projections"][0]["rules"][1]["source"] = "nope".into();
    spec["auth"] = serde_yaml::from_str("{}").unwrap();
    let errors = errors_of(spec);
    assert_eq!(errors.len(), 3, "{errors:#?}");
}

#[test]
fn comprehension_variables_are_not_unknown() {
    let spec = spec_with(
        "projections.0.fields.tags",
        "{type: array, items: {type: string}}",
    );
    let mut spec = spec;
    spec["projections"][0]["rules"][0]["upsert"]["tags"] =
        "row.tags.filter(t, t != event.removed) + [event.tag]".into();
    assert_eq!(errors_of(spec), Vec::<String>::new());
}

#[test]
fn manifests_with_wrong_api_version_and_other_kinds() {
    let text = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: unrelated}
---
apiVersion: facet.dev/v1
kind: FrontendExperience
metadata: {name: x}
spec: {}
"#;
    let results = parse_manifests(text);
    assert_eq!(results.len(), 1, "the ConfigMap is skipped");
    let error = results.into_iter().next().unwrap().unwrap_err();
    assert_eq!(error.name.as_deref(), Some("x"));
    assert_eq!(
        error.errors.0[0].to_string(),
        "apiVersion: must be facet.dev/v1alpha1, found facet.dev/v1"
    );
}

#[test]
fn definition_hash_changes_with_rules_only() {
    let base: facet_bff::spec::ExperienceSpec =
        serde_yaml::from_value(spec_with("replicas", "1")).unwrap();
    let scaled: facet_bff::spec::ExperienceSpec =
        serde_yaml::from_value(spec_with("replicas", "3")).unwrap();
    let changed: facet_bff::spec::ExperienceSpec =
        serde_yaml::from_value(spec_with("projections.0.key", "event.id")).unwrap();
    let hash = |s| compile(s).unwrap().definition_hash;
    assert_eq!(hash(&base), hash(&scaled));
    assert_ne!(hash(&base), hash(&changed));
}

/// The first line of the one error setting `path` to the expression gives.
fn expression_error(path: &str, expression: &str) -> String {
    let yaml = serde_yaml::to_string(expression).unwrap();
    let errors = errors_of(spec_with(path, &yaml));
    assert_eq!(errors.len(), 1, "{errors:?}");
    errors[0].lines().next().unwrap().to_string()
}

#[test]
fn expressions_are_bounded_in_length_depth_and_macro_nesting() {
    use facet_bff::spec::expr_bounds::{MAX_DEPTH, MAX_EXPRESSION_BYTES, MAX_NESTED_MACROS};
    // 10,000 chained selects used to overflow the parser's stack and abort the process.
    let chained = format!("event{}", ".a".repeat(10_000));
    assert_eq!(
        expression_error("projections.0.key", &chained),
        format!("spec.projections[0].key: expression is 20005 bytes; at most {MAX_EXPRESSION_BYTES} are allowed")
    );
    let deep = format!("event{}", ".a".repeat(MAX_DEPTH));
    assert_eq!(
        expression_error("projections.0.key", &deep),
        format!("spec.projections[0].key: expression nests deeper than {MAX_DEPTH} levels; split it or simplify it")
    );
    let mut nested = "x0 == auth.sub".to_string();
    for i in 0..=MAX_NESTED_MACROS {
        nested = format!("auth.groups.all(x{i}, {nested})");
    }
    assert_eq!(
        expression_error("projections.0.access", &nested),
        format!("spec.projections[0].access: expression nests more than {MAX_NESTED_MACROS} list macros (all, exists, map, filter)")
    );
    // The bounds themselves are accepted.
    let just_deep_enough = format!("event{}", ".a".repeat(MAX_DEPTH - 2));
    assert_eq!(
        errors_of(spec_with(
            "projections.0.key",
            &serde_yaml::to_string(&just_deep_enough).unwrap()
        )),
        Vec::<String>::new()
    );
}

/// Every shape the parser recurses on, at the longest length allowed, is parsed
/// (and refused for its depth) on the parser's own thread whatever the caller's
/// stack: this test runs on a 256 KiB thread.
#[test]
fn the_longest_expressions_of_every_shape_compile_on_a_small_stack() {
    use facet_bff::spec::expr::{Expr, Scope};
    use facet_bff::spec::expr_bounds::MAX_EXPRESSION_BYTES;
    let n = MAX_EXPRESSION_BYTES;
    let shapes = [
        format!("event{}", ".a".repeat((n - 5) / 2)),
        format!("event{}", "[0]".repeat((n - 5) / 3)),
        vec!["1"; n / 2].join("+"),
        vec!["1"; n / 3].join("||"),
        vec!["1"; n / 5].join(" in "),
        vec!["1"; n / 8].join(" ? 1 : "),
        format!("{}1{}", "(".repeat(n / 2 - 1), ")".repeat(n / 2 - 1)),
        format!("{}1{}", "[".repeat(n / 2 - 1), "]".repeat(n / 2 - 1)),
        format!("{}1", "-".repeat(n - 1)),
        format!("{}true", "!".repeat(n - 4)),
        format!("{}1{}", "size(".repeat(n / 6 - 1), ")".repeat(n / 6 - 1)),
    ];
    std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || {
            for shape in shapes {
                assert!(shape.len() <= n);
                // `||` and `&&` chains are balanced by the parser and compile;
                // every other shape is too deep.
                if let Err(errors) = Expr::compile("p", &shape, Scope::Key, &Default::default()) {
                    let message = &errors[0].message;
                    assert!(
                        message.contains("nests deeper") || message.contains("Recursion limit"),
                        "{:.20}: {message}",
                        shape
                    );
                }
            }
        })
        .unwrap()
        .join()
        .unwrap();
}

/// The interpreter recurses over the tree too: an expression at the depth bound
/// runs on a thread with tokio's default stack (2 MiB), unoptimised.
#[test]
fn an_expression_at_the_depth_bound_evaluates_on_a_small_stack() {
    use facet_bff::spec::expr::{Bound, Expr, Scope};
    use facet_bff::spec::expr_bounds::MAX_DEPTH;
    let source = vec!["event.a"; MAX_DEPTH / 2].join(" + ");
    let expr = Expr::compile("p", &source, Scope::Key, &Default::default()).unwrap();
    let event = Bound::json(&serde_json::json!({"a": 1}));
    let result = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || expr.eval(&[("event", &event)]).unwrap())
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(result, cel::Value::Int((MAX_DEPTH / 2) as i64));
}

/// The base spec with a second projection named `name` gives `expected`.
#[track_caller]
fn assert_second_projection_error(name: &str, expected: &str) {
    let mut spec: serde_yaml::Value = serde_yaml::from_str(BASE).unwrap();
    let second = format!(
        "{{name: {name}, key: event.id, rules: [{{source: orders, upsert: {{id: event.id}}}}], \
         fields: {{id: {{type: string}}}}, access: 'true'}}"
    );
    spec["projections"]
        .as_sequence_mut()
        .unwrap()
        .push(serde_yaml::from_str(&second).unwrap());
    let errors = errors_of(spec);
    assert!(errors.iter().any(|e| e == expected), "{errors:#?}");
}

/// Names that two declarations would share in the generated GraphQL, OpenAPI or
/// TypeScript used to pass here and stop the runtime at start; each is now refused where
/// the second declaration is.
#[test]
fn generated_api_names_never_collide() {
    assert_error(
        "projections.0.fields.filter",
        "{type: object, fields: {a: {type: string}}}",
        "spec.projections[0].fields.filter: gives the generated type `OrderFilter` (the object type of this field), \
         already the filter input of this projection at spec.projections[0].name: rename one of them",
    );
    assert_second_projection_error(
        "orderStatus",
        "spec.projections[1].name: gives the generated type `OrderStatus` (the row type of this projection), \
         already the enum type of this field at spec.projections[0].fields.status: rename one of them",
    );
    assert_second_projection_error(
        "orderList",
        "spec.projections[1].name: gives the GraphQL query field `orderList`, already generated for spec.projections[0].name: rename one of them",
    );
    assert_error(
        "projections.0.name",
        "error",
        "spec.projections[0].name: gives the generated type `Error` (the row type of this projection), \
         already the OpenAPI error schema: rename one of them",
    );
    assert_error(
        "projections.0.name",
        "query",
        "spec.projections[0].name: gives the generated type `Query` (the row type of this projection), \
         already a built-in GraphQL type: rename one of them",
    );
    assert_error(
        "projections.0.name",
        "rows",
        "spec.projections[0].name: gives the generated type `Rows` (the row type of this projection), \
         already a type of the TypeScript schema: rename one of them",
    );
    assert_error(
        "projections.0.fields.status.enum",
        "[placed, 'true']",
        "spec.projections[0].fields.status.enum: `true` cannot be a GraphQL enum value",
    );
    assert_error(
        "projections.0.fields.extra",
        "{type: object}",
        "spec.projections[0].fields.extra.fields: an object field must declare its fields: its GraphQL type needs at least one",
    );
    // Without GraphQL only the OpenAPI names count.
    let mut spec = spec_with("projections.0.fields.filter", "{type: object}");
    spec["api"] = serde_yaml::from_str("{graphql: false}").unwrap();
    assert_eq!(errors_of(spec), Vec::<String>::new());
}

#[test]
fn cors_origins_are_checked() {
    assert_error(
        "api.cors",
        "{allowedOrigins: ['*'], allowCredentials: true}",
        "spec.api.cors.allowedOrigins: `*` cannot be used with allowCredentials: list the origins",
    );
    assert_error(
        "api.cors",
        "{allowedOrigins: ['https://shop.example/app']}",
        "spec.api.cors.allowedOrigins: `https://shop.example/app` is not an origin (scheme://host[:port], no path)",
    );
    assert_eq!(
        errors_of(spec_with(
            "api.cors",
            "{allowedOrigins: ['https://shop.example:8443', '*']}"
        )),
        Vec::<String>::new()
    );
}

#[test]
fn graphql_limits_are_checked() {
    assert_error(
        "api.graphqlLimits",
        "{maxDepth: 0}",
        "spec.api.graphqlLimits.maxDepth: must be at least 1",
    );
    assert_error(
        "api.graphqlLimits",
        "{maxAliases: 1, safelist: ['{ a: orderList { next } b: orderList { next } }']}",
        "spec.api.graphqlLimits.safelist[0]: the query has 2 aliases; at most 1 are allowed",
    );
}

const COMMAND: &str = r#"[{name: cancelOrder, input: {orderId: {type: string}}, topic: shop.commands.v1,
  lookups: {order: {projection: order, key: input.orderId}},
  allow: 'lookup.order.id == auth.sub', key: input.orderId, value: '{"orderId": input.orderId}'}]"#;

#[test]
fn a_command_is_valid() {
    assert_eq!(
        errors_of(spec_with("commands", COMMAND)),
        Vec::<String>::new()
    );
}

#[test]
fn commands_are_checked_where_they_are_written() {
    let with = |path: &str, yaml: &str| {
        let mut spec = spec_with("commands", COMMAND);
        let mut node = &mut spec["commands"][0];
        for segment in path.split('.') {
            node = &mut node[segment];
        }
        *node = serde_yaml::from_str(yaml).unwrap();
        errors_of(spec)
    };
    assert_eq!(
        with("lookups.order.projection", "nope"),
        ["spec.commands[0].lookups.order.projection: unknown projection `nope` (projections: order)"]
    );
    assert_eq!(
        with("key", "row.id"),
        ["spec.commands[0].key: unknown variable `row`: this expression may use input, auth, lookup\n    in expression: row.id"]
    );
    assert_eq!(
        with("lookups.order.key", "lookup.order.id"),
        ["spec.commands[0].lookups.order.key: unknown variable `lookup`: this expression may use input, auth\n    in expression: lookup.order.id"]
    );
    assert_eq!(
        with("optional", "[reason]"),
        ["spec.commands[0].optional: `reason` is not an input field"]
    );
    assert_eq!(
        with("headers", "{traceparent: '\"x\"'}"),
        ["spec.commands[0].headers.traceparent: is set by Facet on every command record"]
    );
    assert_eq!(
        with("topic", "bad topic"),
        ["spec.commands[0].topic: `bad topic` is not a valid Kafka topic name: ` ` is not allowed (use letters, digits, `.`, `_`, `-`)"]
    );
    assert_eq!(
        with("name", "order"),
        Vec::<String>::new(),
        "a command may share a projection's name: they live in different root types"
    );
    // The input type of a command meets a projection's row type.
    let mut spec = spec_with("commands", COMMAND);
    spec["projections"].as_sequence_mut().unwrap().push(
        serde_yaml::from_str(
            "{name: cancelOrderInput, key: event.id, rules: [{source: orders, upsert: {id: event.id}}], \
             fields: {id: {type: string}}, access: 'true'}",
        )
        .unwrap(),
    );
    assert_eq!(
        errors_of(spec),
        ["spec.commands[0].name: gives the generated type `CancelOrderInput` (the input type of this command), \
          already the row type of this projection at spec.projections[1].name: rename one of them"]
    );
}

/// The blog sample's spec with one node replaced.
fn blog_with(path: &str, yaml: &str) -> Vec<String> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/samples/blog-post.yaml"
    ))
    .unwrap();
    let manifest: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let mut spec = manifest["spec"].clone();
    let mut node = &mut spec;
    for segment in path.split('.') {
        node = match segment.parse::<usize>() {
            Ok(i) => &mut node[i],
            Err(_) => &mut node[segment],
        };
    }
    *node = serde_yaml::from_str(yaml).unwrap();
    errors_of(spec)
}

#[test]
fn embeds_and_rule_lookups_are_checked_where_they_are_written() {
    assert_eq!(
        blog_with("projections.1.embeds.author.projection", "people"),
        ["spec.projections[1].embeds.author.projection: unknown projection `people` (projections: user, postPage, comment)"]
    );
    assert_eq!(
        blog_with("projections.1.embeds.author.projection", "postPage"),
        ["spec.projections[1].embeds.author.projection: a projection cannot embed its own rows"]
    );
    assert_eq!(
        blog_with("projections.1.embeds.author.projection", "comment"),
        [
            "spec.projections[1].embeds.author.projection: `comment` embeds rows itself; embeds are one level deep, so embed what it embeds here directly",
        ]
    );
    assert_eq!(
        blog_with("projections.1.embeds.author.key", "event.authorId"),
        ["spec.projections[1].embeds.author.key: unknown variable `event`: this expression may use row\n    in expression: event.authorId"]
    );
    assert_eq!(
        blog_with("projections.1.embeds.author.key", "row.writer"),
        ["spec.projections[1].embeds.author.key: `row.writer` is not a declared field (declared: authorId, body, commentCount, editedAt, id, publishedAt, title)\n    in expression: row.writer"]
    );
    assert_eq!(
        blog_with("projections.2.embeds.author.fields", "[name, email]"),
        ["spec.projections[2].embeds.author.fields: `email` is not a field of `user` (fields: avatarUrl, id, name)"]
    );
    assert_eq!(
        blog_with("projections.1.embeds.title", "{projection: user, key: row.authorId}"),
        ["spec.projections[1].embeds.title: `title` is also a declared field: an embed names a field of its own"]
    );
    assert_eq!(
        blog_with("projections.1.rules.0.upsert.author", "event.author"),
        ["spec.projections[1].rules[0].upsert.author: `author` is an embedded row: it follows the row it embeds, and no rule sets it"]
    );
    // Rules read embedded rows and look rows up.
    assert_eq!(
        blog_with(
            "projections.1.rules.1.when",
            r#"event.type == "PostEdited" && row.author.name != """#
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        blog_with(
            "projections.2.rules.0.lookups",
            "{writer: {projection: user, key: event.authorId}}"
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        blog_with(
            "projections.2.rules.0.lookups",
            "{writer: {projection: users, key: row.id}}"
        ),
        [
            "spec.projections[2].rules[0].lookups.writer.projection: unknown projection `users` (projections: user, postPage, comment)",
            "spec.projections[2].rules[0].lookups.writer.key: unknown variable `row`: this expression may use event, record\n    in expression: row.id",
        ]
    );
}

/// Rules read events and rows borrowed, a field at a time; everything else binds
/// them converted whole. Both must give every expression the same value or the
/// same error, whatever the expression reaches for.
#[test]
fn borrowed_and_converted_variables_agree() {
    use facet_bff::spec::expr::{Bound, Expr, Scope};
    let event = serde_json::json!({
        "id": "o-1", "n": 2, "total": 3, "big": 18446744073709551615u64, "f": 1.5,
        "customer": {"name": "Ada", "tags": ["a", "b"]}, "nothing": null,
    });
    let row = serde_json::json!({"total": 4, "count": 1, "name": "x"});
    let row = row.as_object().unwrap();
    let doubles = |name: &str| name == "total";
    let fields = [
        ("total", facet_bff::spec::FieldType::Number),
        ("count", facet_bff::spec::FieldType::Integer),
        ("name", facet_bff::spec::FieldType::String),
    ]
    .into_iter()
    .map(|(name, field_type)| {
        let spec = serde_json::json!({"type": field_type});
        (name.to_string(), serde_json::from_value(spec).unwrap())
    })
    .collect();
    let sources = [
        "event.id + '!'",
        "event.n + 1",
        "event.big",
        "event.f * 2.0",
        "event.customer.name",
        "event.customer.tags[1]",
        "event.customer.tags.size()",
        "event.missing",
        "event.customer.missing",
        "event.nothing",
        "event.id.size",
        "has(event.customer.name) && !has(event.missing)",
        "event",
        "row.total + 1.5",
        "row.count + 1",
        "row.name",
        "row",
        "event.customer.tags.map(t, t + row.name)",
    ];
    for source in sources {
        let expr = Expr::compile("p", source, Scope::Rule, &fields).unwrap();
        let borrowed_event = Bound::borrow_json(&event);
        let borrowed_row = Bound::borrow_row(row, &doubles);
        let converted_event = Bound::json(&event);
        let converted_row = Bound::row_with_doubles(row, doubles);
        let borrowed = expr.eval(&[("event", &borrowed_event), ("row", &borrowed_row)]);
        let converted = expr.eval(&[("event", &converted_event), ("row", &converted_row)]);
        match (borrowed, converted) {
            (Ok(borrowed), Ok(converted)) => assert_eq!(borrowed, converted, "`{source}`"),
            (Err(borrowed), Err(converted)) => {
                assert_eq!(borrowed.to_string(), converted.to_string(), "`{source}`")
            }
            (borrowed, converted) => panic!("`{source}`: {borrowed:?} but {converted:?}"),
        }
    }
}

/// What rules write is mostly a field or a constant, answered without the
/// interpreter: the answer must be exactly the interpreter's, as JSON, and a
/// field that is not there must be left to the interpreter (for its error).
#[test]
fn shortcuts_give_what_the_interpreter_gives() {
    use facet_bff::spec::expr::{cel_to_json, Bound, Expr, Scope};
    let event = serde_json::json!({
        "id": "o-1", "n": 2, "neg": -7, "big": 18446744073709551615u64, "f": 1.5, "whole": 2.0,
        "customer": {"name": "Ada", "tags": ["a", "b"], "n": 3, "deep": {"x": [1, 2.5, {"y": null}]}},
        "nothing": null, "yes": true, "text": "é\"\\",
    });
    let row = serde_json::json!({"total": 4, "count": 1, "name": "x", "price": 2.5, "meta": {"total": 5}});
    let row = row.as_object().unwrap();
    let doubles = |name: &str| name == "total" || name == "price";
    let fields = [
        ("total", "number"),
        ("count", "integer"),
        ("name", "string"),
        ("price", "number"),
        ("meta", "object"),
    ]
    .into_iter()
    .map(|(name, field_type)| {
        let spec = serde_json::json!({"type": field_type});
        (name.to_string(), serde_json::from_value(spec).unwrap())
    })
    .collect();
    let answered = [
        "event.id",
        "event.n",
        "event.neg",
        "event.big",
        "event.f",
        "event.whole",
        "event.customer",
        "event.customer.name",
        "event.customer.tags",
        "event.customer.n",
        "event.customer.deep",
        "event.nothing",
        "event.yes",
        "event.text",
        "row.total",
        "row.count",
        "row.name",
        "row.price",
        "row.meta",
        "row.meta.total",
        "'placed'",
        "true",
        "1.5",
        "3",
        "null",
    ];
    let left = [
        "event.missing",
        "event.customer.missing",
        "event.id.size",
        "has(event.id)",
        "event",
        "row",
        "event.n + 1",
        "1 / 0",
        "[1, 'a']",
    ];
    let event_bound = Bound::borrow_json(&event);
    let row_bound = Bound::borrow_row(row, &doubles);
    let variables: [(&str, &dyn facet_bff::spec::expr::Variable); 2] =
        [("event", &event_bound), ("row", &row_bound)];
    for source in answered {
        let expr = Expr::compile("p", source, Scope::Rule, &fields).unwrap();
        let interpreted = cel_to_json(&expr.eval(&variables).unwrap()).unwrap();
        let shortcut = expr.json_shortcut(&variables);
        assert_eq!(shortcut.as_ref(), Some(&interpreted), "`{source}`");
        assert_eq!(
            serde_json::to_string(&shortcut).unwrap(),
            serde_json::to_string(&Some(interpreted)).unwrap(),
            "`{source}` encodes the same"
        );
    }
    for source in left {
        let expr = Expr::compile("p", source, Scope::Rule, &fields).unwrap();
        assert_eq!(expr.json_shortcut(&variables), None, "`{source}`");
    }
}
