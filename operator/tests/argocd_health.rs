//! The Argo CD health check (`argocd/.../health.lua`) run against its fixtures and
//! against statuses the operator itself computes. Like Argo CD by default, only the
//! base, table and package libraries are open, so a script that uses `string.*`
//! fails here as it would in production.

use std::path::PathBuf;

use facet_operator::api::{Endpoints, FrontendExperience, Rebuild};
use facet_operator::reconcile::progress::NotReady;
use facet_operator::reconcile::status::{next_status, Observed, Rollout};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use mlua::{Lua, LuaOptions, LuaSerdeExt, StdLib};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../argocd/resource_customizations/facet.dev/FrontendExperience")
}

fn health(object: &serde_json::Value) -> (String, String) {
    let lua = Lua::new_with(StdLib::TABLE | StdLib::PACKAGE, LuaOptions::new()).unwrap();
    lua.globals()
        .set("obj", lua.to_value(object).unwrap())
        .unwrap();
    let script = std::fs::read_to_string(dir().join("health.lua")).unwrap();
    let result: mlua::Table = lua.load(&script).eval().expect("health.lua runs");
    (
        result.get("status").unwrap(),
        result.get("message").unwrap(),
    )
}

#[test]
fn fixtures_give_the_expected_health() {
    let tests: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir().join("health_test.yaml")).unwrap())
            .unwrap();
    let cases = tests["tests"].as_sequence().unwrap();
    assert!(cases.len() >= 4);
    for case in cases {
        let input = dir().join(case["inputPath"].as_str().unwrap());
        let object: serde_json::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&input).unwrap()).unwrap();
        let (status, message) = health(&object);
        assert_eq!(
            status,
            case["healthStatus"]["status"].as_str().unwrap(),
            "{}",
            input.display()
        );
        assert_eq!(
            message,
            case["healthStatus"]["message"].as_str().unwrap(),
            "{}",
            input.display()
        );
    }
}

fn with_status(rollout: Rollout, spec_error: Option<&str>) -> serde_json::Value {
    with_rebuild(rollout, spec_error, None, None)
}

fn with_rebuild(
    rollout: Rollout,
    spec_error: Option<&str>,
    rebuild: Option<Rebuild>,
    pods_problem: Option<(&'static str, String)>,
) -> serde_json::Value {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/samples/blog-post.yaml"),
    )
    .unwrap();
    let mut fx: FrontendExperience = serde_yaml::from_str(&text).unwrap();
    fx.metadata.generation = Some(2);
    let observed = Observed {
        generation: Some(2),
        desired_replicas: 1,
        spec_error: spec_error.map(String::from),
        rollout: Some(rollout),
        consumer_groups: vec![],
        endpoints: Endpoints::default(),
        selector: "app.kubernetes.io/instance=blog-post-page".into(),
        // A warning, not a health problem: Argo CD must not count it.
        retention: Some(Err(
            "a full replay may miss events: blog.posts.v1 deletes records after 7d".into(),
        )),
        definition: Some("0123456789abcdef".into()),
        rebuild,
        target: Some("0123456789abcdef".into()),
        apply_error: None,
        progress_deadline: None,
        pods: NotReady {
            problem: pods_problem,
            running: false,
        },
    };
    fx.status = Some(next_status(
        None,
        &observed,
        &Time(k8s_openapi::jiff::Timestamp::now()),
    ));
    serde_json::to_value(&fx).unwrap()
}

#[test]
fn the_operators_own_statuses_map_to_argo_health() {
    let settled = Rollout {
        generation: 1,
        observed_generation: 1,
        replicas: 1,
        ready_replicas: 1,
        updated_replicas: 1,
    };
    assert_eq!(health(&with_status(settled.clone(), None)).0, "Healthy");
    assert_eq!(
        health(&with_status(
            Rollout {
                ready_replicas: 0,
                ..settled.clone()
            },
            None
        ))
        .0,
        "Progressing"
    );
    let rebuild = Rebuild {
        definition: "fedcba9876543210".into(),
        stateful_set: "blog-post-page-fedcba9876".into(),
        replicas: 1,
        ready_replicas: 0,
        partitions: 3,
        partitions_caught_up: 1,
        percent: 40,
    };
    let (status, message) = health(&with_rebuild(settled.clone(), None, Some(rebuild), None));
    assert_eq!(status, "Progressing", "serving, but the change is not done");
    assert!(message.contains("40% done"), "{message}");
    assert_eq!(
        health(&with_status(
            settled.clone(),
            Some("spec.sources: is empty")
        ))
        .0,
        "Degraded"
    );
    // A pod that reports it cannot reach Kafka.
    let unreachable = with_rebuild(
        Rollout {
            ready_replicas: 0,
            ..settled
        },
        None,
        None,
        Some((
            "KafkaUnreachable",
            "blog-post-page-0: SASL authentication failed".into(),
        )),
    );
    assert_eq!(
        health(&unreachable),
        (
            "Degraded".into(),
            "blog-post-page-0: SASL authentication failed".into()
        )
    );
}
