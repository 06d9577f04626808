//! Desired-state builders, checked against golden YAML (regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p facet-operator --test builders`) and by property.

use facet_operator::api::{FrontendExperience, FrontendExperienceSpec};
use facet_operator::reconcile::builders::{
    config_map_name, consumer_groups, definition, desired, set_name, BuildConfig, Desired,
    NetworkPolicyConfig, SPEC_HASH_ANNOTATION,
};
use facet_operator::reconcile::rebuild::{plan, Plan, DEFINITION_LABEL};

fn sample(name: &str) -> FrontendExperience {
    let path = format!(
        "{}/../config/samples/{name}.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let manifest = facet_bff::spec::parse_manifests(&std::fs::read_to_string(path).unwrap())
        .remove(0)
        .unwrap();
    let mut fx = FrontendExperience::new(
        &manifest.name,
        FrontendExperienceSpec {
            experience: manifest.spec,
        },
    );
    fx.metadata.namespace = manifest.namespace;
    fx.metadata.uid = Some("0b7c2f0e-1111-4a4a-9999-000000000001".into());
    fx
}

const CONFIG: BuildConfig = BuildConfig {
    image: String::new(),
    json_logs: false,
    network_policy: None,
    progress_deadline: None,
};

fn config() -> BuildConfig {
    BuildConfig {
        image: "facet-bff:test".into(),
        ..CONFIG
    }
}

/// The plan of an experience whose own definition serves.
fn serving_itself(fx: &FrontendExperience) -> Plan {
    plan(&definition(&fx.spec.experience), None, &[])
}

fn build(fx: &FrontendExperience) -> Desired {
    desired(fx, &config(), &serving_itself(fx)).unwrap()
}

fn render(d: &Desired) -> String {
    let mut docs = vec![
        serde_yaml::to_string(&d.config_map).unwrap(),
        serde_yaml::to_string(&d.stateful_set).unwrap(),
        serde_yaml::to_string(&d.service).unwrap(),
        serde_yaml::to_string(&d.headless_service).unwrap(),
    ];
    if let Some(pdb) = &d.pod_disruption_budget {
        docs.push(serde_yaml::to_string(pdb).unwrap());
    }
    docs.join("---\n")
}

#[test]
fn storefront_children_match_golden_yaml() {
    let rendered = render(&build(&sample("storefront")));
    let path = format!(
        "{}/tests/golden/storefront.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    if std::env::var("UPDATE_GOLDEN").is_ok() {
        std::fs::write(&path, &rendered).unwrap();
    }
    let golden = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        golden == rendered,
        "children differ from {path}; rerun with UPDATE_GOLDEN=1 and review the diff\n{rendered}"
    );
}

#[test]
fn spec_change_rolls_pods_and_scale_does_not_change_the_config() {
    let fx = sample("storefront");
    let before = build(&fx);
    let hash = |d: &Desired| {
        d.stateful_set
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()[SPEC_HASH_ANNOTATION]
            .clone()
    };
    let mut changed = fx.clone();
    changed.spec.experience.projections[0].rules[0].when =
        Some("event.type == \"OrderCreated\"".into());
    assert_ne!(
        hash(&before),
        hash(&build(&changed)),
        "a rule change changes the pod template"
    );
    assert_eq!(
        hash(&before),
        hash(&build(&fx)),
        "building is deterministic"
    );
}

#[test]
fn each_definition_has_its_own_set_and_the_service_selects_the_serving_one() {
    let fx = sample("storefront");
    let current = definition(&fx.spec.experience);
    let built = build(&fx);
    let set = set_name("storefront-web", &current);
    assert_eq!(
        built.stateful_set.metadata.name.as_deref(),
        Some(set.as_str())
    );
    assert_eq!(built.config_map.metadata.name, Some(config_map_name(&set)));
    let sts = built.stateful_set.spec.as_ref().unwrap();
    let selector = sts.selector.match_labels.as_ref().unwrap();
    assert_eq!(
        selector[DEFINITION_LABEL], current,
        "a set claims only its pods"
    );
    let pod_labels = sts
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap();
    assert_eq!(pod_labels[DEFINITION_LABEL], current);
    let service_selector = |d: &Desired| d.service.spec.clone().unwrap().selector.unwrap();
    assert_eq!(service_selector(&built)[DEFINITION_LABEL], current);
    assert_eq!(built.keep, None);

    // Only the sources and projections make a definition: other changes roll the
    // same set's pods in place.
    let mut limits = fx.clone();
    limits.spec.experience.api.limits.max_connections = 7;
    assert_eq!(build(&limits).stateful_set.metadata.name, Some(set.clone()));
    let mut rules = fx.clone();
    rules.spec.experience.projections[0].rules[0].when =
        Some("event.type == \"OrderCreated\"".into());
    let new = definition(&rules.spec.experience);
    assert_ne!(new, current);

    // While the new definition rebuilds, the Service and the budget stay on the
    // serving pods and their set is kept.
    let rebuilding = Plan {
        serve: Some(current.clone()),
        keep: Some(set.clone()),
        kept_replicas: Some(rules.spec.experience.replicas),
        phase: facet_operator::reconcile::rebuild::Phase::Rebuilding {
            from: Some(current.clone()),
        },
    };
    let beside = desired(&rules, &config(), &rebuilding).unwrap();
    assert_eq!(
        beside.stateful_set.metadata.name,
        Some(set_name("storefront-web", &new))
    );
    assert_eq!(service_selector(&beside)[DEFINITION_LABEL], current);
    let budget = beside
        .pod_disruption_budget
        .unwrap()
        .spec
        .unwrap()
        .selector
        .unwrap();
    assert_eq!(budget.match_labels.unwrap()[DEFINITION_LABEL], current);
    assert_eq!(beside.keep, Some(set.clone()));
    assert_eq!(beside.resize_kept, None, "the same replicas");
    let headless = beside.headless_service.spec.unwrap().selector.unwrap();
    assert!(
        !headless.contains_key(DEFINITION_LABEL),
        "DNS for every pod"
    );

    // Scaled during the rebuild: the serving set follows the new replicas (the
    // new set has them from its own spec).
    let mut scaled = rules.clone();
    scaled.spec.experience.replicas = 5;
    let resized = desired(&scaled, &config(), &rebuilding).unwrap();
    assert_eq!(resized.resize_kept, Some((set.clone(), 5)));
    assert_eq!(resized.stateful_set.spec.unwrap().replicas, Some(5));
    // Once the Service has moved, the old set is not resized: it goes next.
    let switching = Plan {
        phase: facet_operator::reconcile::rebuild::Phase::Switching {
            from: Some(current.clone()),
        },
        ..rebuilding
    };
    assert_eq!(
        desired(&scaled, &config(), &switching).unwrap().resize_kept,
        None
    );
}

#[test]
fn the_network_policy_opens_http_as_configured_and_metrics_to_monitoring_the_operator_and_peers() {
    let fx = sample("storefront");
    assert!(build(&fx).network_policy.is_none(), "switched off");
    let restricted = BuildConfig {
        network_policy: Some(NetworkPolicyConfig {
            http_from_namespaces: vec!["ingress".into()],
            operator_namespace: "facet-system".into(),
            monitoring_namespace: "monitoring".into(),
        }),
        ..config()
    };
    let policy = desired(&fx, &restricted, &serving_itself(&fx))
        .unwrap()
        .network_policy
        .unwrap();
    let value = serde_json::to_value(&policy).unwrap();
    let spec = &value["spec"];
    assert_eq!(
        spec["podSelector"]["matchLabels"]["app.kubernetes.io/instance"],
        "storefront-web"
    );
    assert_eq!(spec["policyTypes"], serde_json::json!(["Ingress"]));
    let namespaces = |rule: &serde_json::Value| -> Vec<String> {
        rule["from"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| {
                p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                    .as_str()
                    .map(String::from)
            })
            .collect()
    };
    let (http, metrics) = (&spec["ingress"][0], &spec["ingress"][1]);
    assert_eq!(http["ports"][0]["port"], "http");
    assert_eq!(namespaces(http), ["ingress"]);
    assert_eq!(metrics["ports"][0]["port"], "metrics");
    assert_eq!(
        namespaces(metrics),
        ["monitoring", "facet-system"],
        "and the operator, which reads the readiness reports there"
    );
    assert_eq!(
        metrics["from"][2]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"],
        "storefront-web",
        "peers copy each other's store over the metrics port"
    );
    // No namespaces named: HTTP from anywhere.
    let open = BuildConfig {
        network_policy: Some(NetworkPolicyConfig {
            http_from_namespaces: vec![],
            operator_namespace: "facet-system".into(),
            monitoring_namespace: "monitoring".into(),
        }),
        ..config()
    };
    let policy = desired(&fx, &open, &serving_itself(&fx))
        .unwrap()
        .network_policy
        .unwrap();
    let value = serde_json::to_value(&policy).unwrap();
    assert!(value["spec"]["ingress"][0].get("from").is_none(), "{value}");
}

#[test]
fn budget_only_with_two_replicas_and_claims_unless_persistence_is_off() {
    let storefront = build(&sample("storefront"));
    assert!(storefront.pod_disruption_budget.is_some(), "2 replicas");
    let sts = storefront.stateful_set.spec.unwrap();
    assert_eq!(
        sts.volume_claim_templates.unwrap()[0]
            .metadata
            .name
            .as_deref(),
        Some("data")
    );

    let blog = build(&sample("blog-post"));
    assert!(blog.pod_disruption_budget.is_none(), "1 replica");
    let claims = blog.stateful_set.spec.unwrap().volume_claim_templates;
    assert_eq!(claims.map(|c| c.len()), Some(1), "persistent by default");

    let mut ephemeral = sample("blog-post");
    ephemeral.spec.experience.store.persistence.enabled = false;
    let sts = build(&ephemeral).stateful_set.spec.unwrap();
    assert!(sts.volume_claim_templates.is_none());
    let volumes = sts.template.spec.unwrap().volumes.unwrap();
    assert!(volumes
        .iter()
        .any(|v| v.name == "data" && v.empty_dir.is_some()));
}

#[test]
fn consumer_groups_are_per_definition_and_stop_at_the_replica_bound() {
    let definition = "0123456789abcdef";
    assert_eq!(
        consumer_groups("shop", "web", definition, 2),
        ["facet.shop.web.0123456789.0", "facet.shop.web.0123456789.1"]
    );
    assert!(consumer_groups("shop", "web", definition, -1).is_empty());
    // Whatever a stored object says (the compiler refuses it): no 51 GB of names.
    let groups = consumer_groups("shop", "web", definition, i32::MAX);
    assert_eq!(groups.len(), 100);
    assert_eq!(groups.last().unwrap(), "facet.shop.web.0123456789.99");
}

#[test]
fn every_child_is_owned_by_the_experience() {
    let d = build(&sample("scheduler"));
    let owners = [
        &d.config_map.metadata,
        &d.stateful_set.metadata,
        &d.service.metadata,
        &d.headless_service.metadata,
    ];
    for meta in owners {
        let owner = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.kind, "FrontendExperience");
        assert_eq!(owner.name, "clinic-scheduler");
        assert_eq!(owner.controller, Some(true));
    }
}

#[test]
fn pods_are_locked_down() {
    let d = build(&sample("blog-post"));
    let pod = d.stateful_set.spec.unwrap().template.spec.unwrap();
    let container = &pod.containers[0];
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(
        security
            .capabilities
            .as_ref()
            .unwrap()
            .drop
            .as_ref()
            .unwrap(),
        &vec!["ALL".to_string()]
    );
    let env = container.env.as_ref().unwrap();
    let pod_name = env.iter().find(|e| e.name == "POD_NAME").unwrap();
    assert_eq!(
        pod_name
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "metadata.name"
    );
    assert_eq!(probe_path(&container.readiness_probe), Some("/readyz"));
    assert_eq!(probe_path(&container.liveness_probe), Some("/healthz"));
}

#[test]
fn the_config_map_holds_a_manifest_the_runtime_accepts() {
    let d = build(&sample("storefront"));
    let text = &d.config_map.data.unwrap()["experience.yaml"];
    let manifest = facet_bff::spec::parse_manifests(text).remove(0).unwrap();
    assert_eq!(manifest.name, "storefront-web");
    facet_bff::spec::compile(&manifest.spec).unwrap();
}

fn probe_path(probe: &Option<k8s_openapi::api::core::v1::Probe>) -> Option<&str> {
    probe.as_ref()?.http_get.as_ref()?.path.as_deref()
}

#[test]
fn runtime_pods_log_json_when_the_operator_does() {
    let runtime_env = |json_logs: bool| -> Vec<(String, Option<String>)> {
        let config = BuildConfig {
            image: "facet-bff:test".into(),
            json_logs,
            ..CONFIG
        };
        let fx = sample("blog-post");
        let desired = desired(&fx, &config, &serving_itself(&fx)).unwrap();
        let pod = desired.stateful_set.spec.unwrap().template.spec.unwrap();
        pod.containers[0]
            .env
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|e| (e.name, e.value))
            .collect()
    };
    let format = |env: &[(String, Option<String>)]| {
        env.iter()
            .find(|(name, _)| name == "FACET_LOG_FORMAT")
            .map(|(_, value)| value.clone().unwrap_or_default())
    };
    assert_eq!(format(&runtime_env(true)).as_deref(), Some("json"));
    assert_eq!(format(&runtime_env(false)), None, "text is the default");
}
