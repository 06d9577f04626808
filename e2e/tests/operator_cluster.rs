//! The operator against a real kube-apiserver (with the StatefulSet and garbage
//! collector controllers) and a real Kafka broker. The operator runs out of cluster
//! as the chart's service account (impersonated), so a missing RBAC rule fails here.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use facet_e2e::cluster::ControlPlane;
use facet_e2e::kafka::Broker;
use facet_e2e::kubelet::Kubelet;
use facet_e2e::operator::{install_chart, start_operator, Operator};
use facet_e2e::service_proxy::ServiceEndpoints;
use facet_e2e::{free_port, log_dir, repo_root, wait_for};

fn sample(name: &str, bootstrap: &str) -> String {
    std::fs::read_to_string(repo_root().join(format!("config/samples/{name}.yaml")))
        .unwrap()
        .replace("kafka.kafka.svc:9092", bootstrap)
}

/// A JSON merge patch of experience `name`.
fn merge_patch_fx(cluster: &ControlPlane, namespace: &str, name: &str, patch: &str) {
    cluster.kubectl_ok(&[
        "patch", "fx", name, "-n", namespace, "--type", "merge", "-p", patch,
    ]);
}

/// `field` (`status`, `message`, …) of the experience's condition `kind`.
fn condition(
    cluster: &ControlPlane,
    namespace: &str,
    name: &str,
    kind: &str,
    field: &str,
) -> String {
    jsonpath(
        cluster,
        &["get", "fx", name, "-n", namespace],
        &format!(r#"{{.status.conditions[?(@.type=="{kind}")].{field}}}"#),
    )
}

/// kstatus (what Flux uses) and Argo CD's health script (by gopher-lua) on the
/// experience as the API server has it now.
fn gitops_health(cluster: &ControlPlane, namespace: &str, name: &str) -> (String, String) {
    let object = cluster.kubectl_ok(&["get", "fx", name, "-n", namespace, "-o", "json"]);
    let health = facet_e2e::gitops::judge(&serde_json::from_str(&object).unwrap());
    (health.kstatus, health.argo)
}

/// The consumer groups the experience's status lists (one per definition and pod).
fn consumer_groups(cluster: &ControlPlane, namespace: &str, name: &str) -> Vec<String> {
    let listed = jsonpath(
        cluster,
        &["get", "fx", name, "-n", namespace],
        "{.status.consumerGroups[*]}",
    );
    listed.split_whitespace().map(str::to_string).collect()
}

fn jsonpath(cluster: &ControlPlane, args: &[&str], path: &str) -> String {
    let mut all = args.to_vec();
    let template = format!("jsonpath={path}");
    all.extend(["-o", &template]);
    String::from_utf8(cluster.kubectl(&all).stdout).unwrap_or_default()
}

#[test]
fn operator_runs_samples_on_a_real_control_plane() {
    let logs = log_dir("operator_cluster");
    let mut broker = broker_with_the_samples_topics(&logs);
    let cluster = ControlPlane::start(&logs);
    install_chart(&cluster);

    let leader = start_operator(&cluster, &logs, "operator-a");
    let kubelet = Kubelet::start(&cluster.admin_kubeconfig, &logs);
    every_sample_becomes_ready(&cluster, &broker);
    the_leader_reports_and_answers_its_probes(&leader);
    scaled_to_one_replica_the_budget_goes(&cluster);
    kubectl_scale_and_an_autoscaler_resize_the_set(&cluster);

    // A second replica stands by and takes over from a paused leader; the blog
    // scenarios below are reconciled by it.
    let _standby = a_paused_leader_is_replaced_without_overlap(&cluster, &logs, leader);

    blog_lifecycle(&cluster, &kubelet, &mut broker);
    sasl_cleanup(&cluster, &broker);
}

/// A broker with the samples' topics. The clinic's topics keep every record; the
/// others have the broker's 7 days.
fn broker_with_the_samples_topics(logs: &std::path::Path) -> Broker {
    let broker = Broker::start(logs);
    for topic in [
        "blog.posts.v1",
        "blog.comments.v1",
        "blog.users.v1",
        "shop.orders.v1",
        "shop.payments.v1",
        "shop.customers.v1",
        "shop.storefront-web.dlq",
    ] {
        broker.create_topic(topic, 3);
    }
    for topic in ["clinic.slots.v1", "clinic.appointments.v1"] {
        broker.create_topic_with(topic, 3, &[("retention.ms", "-1")]);
    }
    broker
}

/// Every sample: children created, pods running, Ready, `kubectl wait` succeeds;
/// Replayable from the brokers' answers; one consumer group per pod; one `Applied`
/// Event per generation; two replicas get a PodDisruptionBudget.
fn every_sample_becomes_ready(cluster: &ControlPlane, broker: &Broker) {
    let samples = [
        ("blog-post", "blog", "blog-post-page"),
        ("scheduler", "clinic", "clinic-scheduler"),
        ("storefront", "shop", "storefront-web"),
    ];
    for (sample_name, namespace, _) in samples {
        cluster.kubectl_ok(&["create", "namespace", namespace]);
        cluster.apply_ok(&sample(sample_name, &broker.bootstrap()));
    }
    for (_, namespace, name) in samples {
        cluster.kubectl_ok(&[
            "wait",
            "--for=condition=Ready",
            &format!("fx/{name}"),
            "-n",
            namespace,
            "--timeout=180s",
        ]);
        // Whether a full replay can rebuild what runs, from the brokers' answers.
        let replayable = |field: &str| condition(cluster, namespace, name, "Replayable", field);
        wait_for("the Replayable condition", Duration::from_secs(60), || {
            !replayable("status").is_empty()
        });
        match namespace {
            "clinic" => assert_eq!(replayable("status"), "True", "{}", replayable("message")),
            _ => {
                assert_eq!(replayable("status"), "False");
                let message = replayable("message");
                assert!(
                    message.contains("deletes records after 7d (retention.ms=604800000)"),
                    "{message}"
                );
            }
        }
        assert_eq!(
            gitops_health(cluster, namespace, name),
            ("Current".into(), "Healthy".into()),
            "{namespace}/{name} is Ready"
        );
        let set = serving_set(cluster, namespace, name);
        for (kind, child) in [
            ("statefulset", set.clone()),
            ("configmap", format!("{set}-spec")),
            ("service", name.to_string()),
            // On by default; needs the chart's RBAC for networkpolicies.
            ("networkpolicy", name.to_string()),
        ] {
            cluster.kubectl_ok(&["get", kind, &child, "-n", namespace]);
        }
        cluster.kubectl_ok(&[
            "get",
            "service",
            &format!("{name}-headless"),
            "-n",
            namespace,
        ]);
        // One group per pod, named after the serving definition.
        let tag = &set[name.len() + 1..];
        let groups = consumer_groups(cluster, namespace, name);
        assert!(!groups.is_empty());
        for (ordinal, group) in groups.iter().enumerate() {
            assert_eq!(*group, format!("facet.{namespace}.{name}.{tag}.{ordinal}"));
        }
        // One `Applied` Event for the generation, however many reconciles it took
        // (a repeat would show as a series on the Event).
        let applied = jsonpath(
            cluster,
            &["get", "events.events.k8s.io", "-n", namespace],
            r#"{range .items[?(@.reason=="Applied")]}{.note}/{.series.count}{"\n"}{end}"#,
        );
        assert_eq!(
            applied.lines().collect::<Vec<_>>(),
            [format!(
                "applied generation 1 ({} replicas): the pods build their stores from the topics/",
                if name == "storefront-web" { 2 } else { 1 }
            )],
            "{name}"
        );
    }
    let budget = cluster.kubectl(&["get", "pdb", "storefront-web", "-n", "shop"]);
    assert!(
        budget.status.success(),
        "two replicas get a PodDisruptionBudget"
    );
    let ready = jsonpath(
        cluster,
        &["get", "fx", "storefront-web", "-n", "shop"],
        "{.status.readyReplicas}",
    );
    assert_eq!(ready, "2");
}

/// The leader reports its reconciles, and its probes answer.
fn the_leader_reports_and_answers_its_probes(leader: &Operator) {
    let operator_http = format!("127.0.0.1:{}", leader.http_port);
    let (reconciles, metrics) = metric(&operator_http, "facet_operator_reconciles_total");
    assert!(reconciles >= 3.0, "{metrics}");
    assert!(
        metrics.contains("facet_operator_reconcile_duration_seconds_bucket"),
        "{metrics}"
    );
    for probe in ["/healthz", "/readyz"] {
        assert_eq!(
            ureq::get(&format!("http://{operator_http}{probe}"))
                .call()
                .unwrap()
                .status(),
            200
        );
    }
}

/// Scaled down to one replica, the budget is no longer asked for: it is deleted.
fn scaled_to_one_replica_the_budget_goes(cluster: &ControlPlane) {
    merge_patch_fx(
        cluster,
        "shop",
        "storefront-web",
        r#"{"spec":{"replicas":1}}"#,
    );
    wait_for(
        "the PodDisruptionBudget to go",
        Duration::from_secs(60),
        || {
            !cluster
                .kubectl(&["get", "pdb", "storefront-web", "-n", "shop"])
                .status
                .success()
        },
    );
    wait_for("one ready replica", Duration::from_secs(60), || {
        jsonpath(
            cluster,
            &["get", "fx", "storefront-web", "-n", "shop"],
            "{.status.readyReplicas}",
        ) == "1"
    });
}

/// The scale subresource: `kubectl scale` and a HorizontalPodAutoscaler change
/// spec.replicas, and the StatefulSet follows.
fn kubectl_scale_and_an_autoscaler_resize_the_set(cluster: &ControlPlane) {
    let storefront_set = serving_set(cluster, "shop", "storefront-web");
    let sts_replicas = || {
        jsonpath(
            cluster,
            &["get", "statefulset", &storefront_set, "-n", "shop"],
            "{.spec.replicas}",
        )
    };
    cluster.kubectl_ok(&[
        "scale",
        "fx",
        "storefront-web",
        "-n",
        "shop",
        "--replicas=2",
    ]);
    wait_for(
        "kubectl scale to reach the StatefulSet",
        Duration::from_secs(60),
        || sts_replicas() == "2",
    );
    assert_eq!(
        jsonpath(
            cluster,
            &["get", "fx", "storefront-web", "-n", "shop"],
            "{.status.selector}"
        ),
        format!(
            "app.kubernetes.io/instance=storefront-web,app.kubernetes.io/name=facet-bff,facet.dev/definition={}",
            definition(cluster, "shop", "storefront-web")
        ),
        "the serving pods"
    );
    let hpa = r#"apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: storefront-web, namespace: shop}
spec:
  scaleTargetRef: {apiVersion: facet.dev/v1alpha1, kind: FrontendExperience, name: storefront-web}
  minReplicas: 3
  maxReplicas: 4
  metrics: [{type: Resource, resource: {name: cpu, target: {type: Utilization, averageUtilization: 80}}}]
"#;
    assert!(cluster.apply(hpa).status.success());
    wait_for(
        "the autoscaler to raise replicas to its minimum",
        Duration::from_secs(90),
        || {
            jsonpath(
                cluster,
                &["get", "fx", "storefront-web", "-n", "shop"],
                "{.spec.replicas}",
            ) == "3"
                && sts_replicas() == "3"
        },
    );
    cluster.kubectl_ok(&["delete", "hpa", "storefront-web", "-n", "shop"]);
    cluster.kubectl_ok(&[
        "scale",
        "fx",
        "storefront-web",
        "-n",
        "shop",
        "--replicas=1",
    ]);
    wait_for("the scale back to one", Duration::from_secs(60), || {
        sts_replicas() == "1"
    });
}

/// One tenant cannot take the operator away from the others with a number: the API
/// server refuses `replicas: 2147483647` (the CRD schema's bound), through apply and
/// through the scale subresource, and the operator, alive, keeps reconciling an
/// experience in another namespace. (It used to abort within a second of every start,
/// allocating 51 GB for consumer group names.) No broker and no kubelet: what counts
/// is what the operator writes, the StatefulSet and the status.
#[test]
fn a_tenant_out_of_bounds_cannot_stop_the_operator_for_others() {
    let logs = log_dir("operator_bounds");
    let cluster = ControlPlane::start(&logs);
    install_chart(&cluster);
    let mut operator = start_operator(&cluster, &logs, "operator-bounds");
    // Nothing listens there: the experiences are reconciled, their pods never run.
    let unreachable = format!("127.0.0.1:{}", free_port());
    for namespace in ["shop", "tenant"] {
        cluster.kubectl_ok(&["create", "namespace", namespace]);
    }
    cluster.apply_ok(&sample("storefront", &unreachable));
    let storefront_set = serving_set(&cluster, "shop", "storefront-web");
    a_runtime_that_cannot_reach_kafka_is_degraded(&cluster, &logs);

    let tenant = sample("blog-post", &unreachable).replace("namespace: blog", "namespace: tenant");
    let greedy = tenant.replace("\n  replicas: 1\n", "\n  replicas: 2147483647\n");
    assert_ne!(greedy, tenant, "the sample sets replicas");
    let refused = cluster.apply(&greedy);
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "replicas: 2147483647 was accepted"
    );
    assert!(
        message.contains("spec.replicas") && message.contains("less than or equal to 100"),
        "{message}"
    );
    assert!(
        !cluster
            .kubectl(&["get", "fx", "blog-post-page", "-n", "tenant"])
            .status
            .success(),
        "nothing was stored"
    );
    // Within the bound it is accepted; scaled past it, refused the same way.
    cluster.apply_ok(&tenant);
    let scaled = cluster.kubectl(&[
        "scale",
        "fx",
        "blog-post-page",
        "-n",
        "tenant",
        "--replicas=2147483647",
    ]);
    let message = String::from_utf8_lossy(&scaled.stderr);
    assert!(
        !scaled.status.success(),
        "kubectl scale past the bound was accepted"
    );
    assert!(message.contains("less than or equal to 100"), "{message}");

    // Regression (issue 23): a tenant could run any image, as any service account, or
    // send its Secret's credentials to a Kafka of its own. Each is refused, named,
    // and no StatefulSet is made.
    for (name, change, field) in [
        (
            "blog-image",
            "  podTemplate: {image: 'evil/miner:1'}\n",
            "spec.podTemplate.image",
        ),
        (
            "blog-account",
            "  podTemplate: {serviceAccountName: admin}\n",
            "spec.podTemplate.serviceAccountName",
        ),
        ("blog-kafka", "", "spec.kafka.bootstrapServers"),
    ] {
        let mut spec = tenant
            .replace("name: blog-post-page", &format!("name: {name}"))
            .replace("\n  replicas: 1\n", &format!("\n  replicas: 1\n{change}"));
        if name == "blog-kafka" {
            spec = spec.replace(&unreachable, "attacker.example:9092");
        }
        assert!(cluster.apply(&spec).status.success(), "{name}");
        let spec_valid = |field: &str| condition(&cluster, "tenant", name, "SpecValid", field);
        wait_for(
            &format!("{name}: SpecValid=False"),
            Duration::from_secs(60),
            || spec_valid("status") == "False",
        );
        let message = spec_valid("message");
        assert!(
            message.starts_with(field) && message.contains("is not an allowed"),
            "{message}"
        );
        assert_eq!(
            gitops_health(&cluster, "tenant", name),
            ("Failed".into(), "Degraded".into()),
            "{name}: a refused spec, as Flux and Argo CD judge it"
        );
        let sets = jsonpath(
            &cluster,
            &[
                "get",
                "statefulsets",
                "-n",
                "tenant",
                "-l",
                &format!("app.kubernetes.io/instance={name}"),
            ],
            "{.items[*].metadata.name}",
        );
        assert_eq!(sets, "", "{name}: no StatefulSet for a refused spec");
    }

    // The operator is alive and reconciles both tenants: a change in `shop` reaches
    // its StatefulSet, and `tenant`'s experience gets its own.
    merge_patch_fx(
        &cluster,
        "shop",
        "storefront-web",
        r#"{"spec":{"replicas":3}}"#,
    );
    wait_for(
        "the other tenant's change to reach its StatefulSet",
        Duration::from_secs(120),
        || {
            jsonpath(
                &cluster,
                &["get", "statefulset", &storefront_set, "-n", "shop"],
                "{.spec.replicas}",
            ) == "3"
        },
    );
    wait_for(
        "the status of the new generation",
        Duration::from_secs(120),
        || {
            jsonpath(
                &cluster,
                &["get", "fx", "storefront-web", "-n", "shop"],
                "{.metadata.generation}/{.status.observedGeneration}",
            ) == "2/2"
        },
    );
    let tenant_set = serving_set(&cluster, "tenant", "blog-post-page");
    cluster.kubectl_ok(&["get", "statefulset", &tenant_set, "-n", "tenant"]);
    a_store_volume_change_is_refused_up_front(&cluster);
    assert!(operator.running(), "the operator exited");
    let healthz = ureq::get(&format!("http://127.0.0.1:{}/healthz", operator.http_port))
        .call()
        .unwrap()
        .status();
    assert_eq!(healthz, 200);
}

/// The storefront's pods run (an emulated kubelet) against a bootstrap address where
/// nothing listens: the runtime says so on `/readyz`, and the operator, asking the
/// pods again while they are not ready, turns it into `Degraded=True,
/// reason=KafkaUnreachable`, which Flux and Argo CD see as failed. Regression (issue
/// 23): a serving set that never became ready was asked only every 5 minutes.
fn a_runtime_that_cannot_reach_kafka_is_degraded(cluster: &ControlPlane, logs: &std::path::Path) {
    let kubelet = Kubelet::start(&cluster.admin_kubeconfig, logs);
    let degraded = |field: &str| condition(cluster, "shop", "storefront-web", "Degraded", field);
    wait_for(
        "storefront-web: Degraded=True, KafkaUnreachable",
        Duration::from_secs(120),
        || degraded("status") == "True" && degraded("reason") == "KafkaUnreachable",
    );
    let message = degraded("message");
    assert!(
        message.starts_with("storefront-web-"),
        "names the pod: {message}"
    );
    assert_eq!(
        gitops_health(cluster, "shop", "storefront-web"),
        ("Failed".into(), "Degraded".into()),
        "a runtime without Kafka, as Flux and Argo CD judge it"
    );
    drop(kubelet);
}

/// A new store size for a running experience: a StatefulSet's volume claims cannot
/// change, so it is refused with `SpecValid=False` naming both volumes, the set is
/// left as it is, and setting the size back makes the spec valid again. Regression
/// (issue 23): the API server refused the apply on every reconcile.
fn a_store_volume_change_is_refused_up_front(cluster: &ControlPlane) {
    let resize = |size: &str| {
        merge_patch_fx(
            cluster,
            "shop",
            "storefront-web",
            &format!(r#"{{"spec":{{"store":{{"persistence":{{"size":"{size}"}}}}}}}}"#),
        );
    };
    let spec_valid = |field: &str| condition(cluster, "shop", "storefront-web", "SpecValid", field);
    resize("2Gi");
    wait_for("the resize to be refused", Duration::from_secs(60), || {
        spec_valid("status") == "False"
    });
    let message = spec_valid("message");
    assert!(
        message.starts_with("spec.store.persistence: ")
            && message.contains("1.0 GiB")
            && message.contains("2.0 GiB"),
        "{message}"
    );
    let set = serving_set(cluster, "shop", "storefront-web");
    let claimed = jsonpath(
        cluster,
        &["get", "statefulset", &set, "-n", "shop"],
        "{.spec.volumeClaimTemplates[0].spec.resources.requests.storage}",
    );
    assert_eq!(claimed, "1Gi", "the set was left as it is");
    resize("1024Mi");
    wait_for(
        "the same size, written another way, to be valid",
        Duration::from_secs(60),
        || spec_valid("status") == "True",
    );
}

/// An experience on the broker's SASL/TLS listener: its pod reads through the
/// Secret's client properties, and deleting it with consumer-group cleanup uses
/// the same properties, so the deletion completes and the group is gone.
fn sasl_cleanup(cluster: &ControlPlane, broker: &Broker) {
    let ns = "secure";
    broker.create_topic("e2e.secure.ticks", 1);
    let producer = broker.producer();
    producer.send("e2e.secure.ticks", "k", br#"{"k": "a"}"#);
    producer.flush();
    let (bootstrap, properties) = broker.secure_bootstrap(facet_e2e::kafka::SCRAM_PASSWORD);
    cluster.kubectl_ok(&["create", "namespace", ns]);
    let data: serde_json::Map<String, serde_json::Value> =
        properties.into_iter().map(|(k, v)| (k, v.into())).collect();
    let secret = serde_json::json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "kafka-client", "namespace": ns}, "stringData": data});
    assert!(cluster.apply(&secret.to_string()).status.success());
    let fx = format!(
        r#"apiVersion: facet.dev/v1alpha1
kind: FrontendExperience
metadata: {{name: ticks, namespace: {ns}}}
spec:
  kafka: {{bootstrapServers: "{bootstrap}", secretRef: {{name: kafka-client}}}}
  sources: [{{name: ticks, topic: e2e.secure.ticks}}]
  projections:
    - name: tick
      key: event.k
      rules: [{{source: ticks, upsert: {{k: event.k}}}}]
      fields: {{k: {{type: string}}}}
  auth: {{anonymous: true}}
"#
    );
    cluster.apply_ok(&fx);
    cluster.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "fx/ticks",
        "-n",
        ns,
        "--timeout=120s",
    ]);
    // `Replayable` from what the pod's own client was told (regression, issue 23:
    // the operator asked with clients of its own, which needed the Secret, readable
    // only with deleteConsumerGroups).
    let replayable = |field: &str| condition(cluster, ns, "ticks", "Replayable", field);
    wait_for(
        "Replayable from the pod's report",
        Duration::from_secs(90),
        || replayable("status") == "False",
    );
    let message = replayable("message");
    assert!(
        message.contains("e2e.secure.ticks deletes records after 7d"),
        "{message}"
    );
    let group = &consumer_groups(cluster, ns, "ticks")[0];
    wait_for("the pod to commit offsets", Duration::from_secs(60), || {
        broker.group_exists(group)
    });
    cluster.kubectl_ok(&["delete", "fx", "ticks", "-n", ns, "--timeout=120s"]);
    assert!(
        !broker.group_exists(group),
        "the consumer group was deleted over SASL"
    );
}

/// The reasons of every Event in `namespace`, space-separated.
fn event_reasons(cluster: &ControlPlane, namespace: &str) -> String {
    cluster.kubectl_ok(&[
        "get",
        "events.events.k8s.io",
        "-n",
        namespace,
        "-o",
        "jsonpath={.items[*].reason}",
    ])
}

/// The projection definition the experience's serving pods hold.
fn definition(cluster: &ControlPlane, namespace: &str, name: &str) -> String {
    let mut found = String::new();
    wait_for("status.definition", Duration::from_secs(60), || {
        found = jsonpath(
            cluster,
            &["get", "fx", name, "-n", namespace],
            "{.status.definition}",
        );
        !found.is_empty()
    });
    found
}

/// The StatefulSet of the serving definition: `<name>-<first 10 hex digits>`.
fn serving_set(cluster: &ControlPlane, namespace: &str, name: &str) -> String {
    format!("{name}-{}", &definition(cluster, namespace, name)[..10])
}

/// Two operators and a paused leader (SIGSTOP, as a long GC pause or a frozen VM
/// would): the standby takes the Lease once it has seen it unchanged for a lease
/// duration by its own clock; the old leader, woken, acts on nothing it missed (its
/// renew deadline has passed) and exits. Regression (issue 23): the old leader
/// compared wall clocks and went on until a whole lease had passed since its last
/// renewal, the moment a standby may take over, so both could reconcile.
fn a_paused_leader_is_replaced_without_overlap(
    cluster: &ControlPlane,
    logs: &std::path::Path,
    mut leader: Operator,
) -> Operator {
    let standby = start_operator(cluster, logs, "operator-b");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(lease_holder(cluster), "operator-a");
    let pid = leader.process.0.id() as libc::pid_t;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    wait_for(
        "the standby to take the lease",
        Duration::from_secs(30),
        || lease_holder(cluster) == "operator-b",
    );
    // While the old leader sleeps, an experience arrives that only the new one may
    // act on (a refused image: a status, an Event, no pods).
    let probe = sample("blog-post", "127.0.0.1:9")
        .replace("namespace: blog", "namespace: shop")
        .replace("name: blog-post-page", "name: while-paused")
        .replace(
            "\n  replicas: 1\n",
            "\n  replicas: 1\n  podTemplate: {image: 'evil/miner:1'}\n",
        );
    assert!(cluster.apply(&probe).status.success());
    wait_for(
        "the new leader to judge the experience",
        Duration::from_secs(60),
        || condition(cluster, "shop", "while-paused", "SpecValid", "status") == "False",
    );
    let log = logs.join("facet-operator-a.log");
    let paused_at = std::fs::read_to_string(&log).unwrap().len();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    wait_for("the old leader to give up", Duration::from_secs(30), || {
        !leader.running()
    });
    let woken = std::fs::read_to_string(&log).unwrap()[paused_at..].to_string();
    assert!(
        !woken.contains("invalid spec") && !woken.contains(": applied"),
        "the old leader acted after the standby took over:\n{woken}"
    );
    assert!(woken.contains("lost leadership"), "{woken}");
    standby
}

fn lease_holder(cluster: &ControlPlane) -> String {
    jsonpath(
        cluster,
        &["get", "lease", "facet-operator", "-n", "facet-system"],
        "{.spec.holderIdentity}",
    )
}

fn pod_uid(cluster: &ControlPlane, namespace: &str, pod: &str) -> String {
    jsonpath(
        cluster,
        &["get", "pod", pod, "-n", namespace],
        "{.metadata.uid}",
    )
}

/// The names of the blog experience's children of `kind`, one per line.
fn blog_children(cluster: &ControlPlane, kind: &str) -> String {
    cluster.kubectl_ok(&[
        "get",
        kind,
        "-n",
        "blog",
        "-l",
        "app.kubernetes.io/instance=blog-post-page",
        "-o",
        "name",
    ])
}

/// A metric without labels from `address`'s `/metrics` (-1 when absent), and the
/// whole text.
fn metric(address: &str, name: &str) -> (f64, String) {
    let text = ureq::get(&format!("http://{address}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let value = text
        .lines()
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' '))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(-1.0);
    (value, text)
}

fn get_json(address: &str, path: &str) -> Option<serde_json::Value> {
    let mut response = ureq::get(&format!("http://{address}{path}")).call().ok()?;
    response.body_mut().read_json().ok()
}

fn rows(address: &str, projection: &str) -> Option<Vec<serde_json::Value>> {
    let body = get_json(address, &format!("/v1/{projection}?limit=1000"))?;
    Some(
        body["items"]
            .as_array()?
            .iter()
            .map(|i| serde_json::json!({"key": i["key"], "row": i["row"]}))
            .collect(),
    )
}

fn produce_sample_events(broker: &Broker, sample: &str) {
    let producer = broker.producer();
    let events =
        std::fs::read_to_string(repo_root().join(format!("config/samples/{sample}.events.jsonl")))
            .unwrap();
    let spec = sample_spec(sample);
    for line in events.lines().filter(|l| !l.trim().is_empty()) {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        let topic = spec["spec"]["sources"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|s| s["name"].as_str() == event["source"].as_str())
            .unwrap()["topic"]
            .as_str()
            .unwrap()
            .to_string();
        producer.send(
            &topic,
            event["key"].as_str().unwrap_or(""),
            event["value"].to_string().as_bytes(),
        );
    }
    producer.flush();
}

fn sample_spec(sample: &str) -> serde_yaml::Value {
    serde_yaml::from_str(
        &std::fs::read_to_string(repo_root().join(format!("config/samples/{sample}.yaml")))
            .unwrap(),
    )
    .unwrap()
}

/// The blog sample through its life: live updates over WebSocket, a spec change
/// that rolls the pods, an invalid spec, a crash and a broker restart mid-stream,
/// and deletion.
fn blog_lifecycle(cluster: &ControlPlane, kubelet: &Kubelet, broker: &mut Broker) {
    let (ns, name) = ("blog", "blog-post-page");
    let pod = format!("{}-0", serving_set(cluster, ns, name));
    let address = kubelet.address(ns, &pod).expect("the blog pod runs");
    both_transports_receive_the_sample(&address, broker);

    // A rules change on this one-replica experience: the new definition replays
    // beside the serving pod, and clients are served through the Service all along.
    let v2 = blog_with_comments_open(broker);
    let pod = rebuild_without_downtime(cluster, kubelet, broker, &v2);
    let address = kubelet.address(ns, &pod).expect("the new pod runs");
    let pod = pod.as_str();
    an_invalid_spec_is_reported_and_the_pod_stays(cluster, &address, pod, &v2);
    a_killed_pod_and_a_broker_restart_equal_a_replay(kubelet, broker, pod, &v2);
    scale_out_from_a_peers_image(cluster, kubelet, pod);
    serving_only_edits(cluster, kubelet, &v2);
    deleting_stops_the_pods_then_deletes_the_groups(cluster, kubelet, broker, pod);
}

/// A blog row as a client keeps it, by key.
type Rows = std::collections::BTreeMap<String, serde_json::Value>;

/// A native WebSocket client and a graphql-transport-ws subscription both receive
/// the projected changes as the events arrive, and what they hold is what is served.
fn both_transports_receive_the_sample(address: &str, broker: &Broker) {
    let (mut socket, _) = tungstenite::connect(format!("ws://{address}/ws")).expect("websocket");
    socket
        .send(tungstenite::Message::text(
            r#"{"type":"subscribe","id":"posts","projection":"postPage"}"#,
        ))
        .unwrap();
    let mut graphql = facet_e2e::graphql_subscription(
        address,
        "subscription { postPage { op key position row { id title commentCount } } }",
    );
    produce_sample_events(broker, "blog-post");
    // Posts and comments are separate topics with no order between them: wait for
    // the state after every sample event, not just for some of it.
    let done = |seen: &Rows| {
        seen.len() == 2
            && seen.get("p-1").is_some_and(|r| {
                r["commentCount"] == 3 && r["title"] == "Event-driven BFFs, declared"
            })
            && seen
                .get("p-2")
                .is_some_and(|r| r["title"] == "Projections with CEL")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    // The WebSocket rows embed their authors, whose events come on a third topic.
    let seen = websocket_rows_until(&mut socket, deadline, |seen| {
        done(seen)
            && seen["p-1"]["author"]["name"] == "Ada, Countess of Lovelace"
            && seen["p-2"]["author"]["avatarUrl"] == "https://avatars.example.com/grace-2.png"
    });
    let from_graphql = graphql_rows_until(&mut graphql, deadline, done);
    assert_eq!(
        from_graphql["p-1"]["title"], seen["p-1"]["title"],
        "both transports agree"
    );
    let served = rows(address, "postPage").unwrap();
    let pushed: Vec<_> = seen
        .iter()
        .map(|(k, r)| serde_json::json!({"key": k, "row": r}))
        .collect();
    assert_eq!(pushed, served, "what was pushed is what is served");
}

/// The rows a native WebSocket subscription holds once `done` says so.
fn websocket_rows_until<S: std::io::Read + std::io::Write>(
    socket: &mut tungstenite::WebSocket<S>,
    deadline: std::time::Instant,
    done: impl Fn(&Rows) -> bool,
) -> Rows {
    let mut seen = Rows::default();
    while !done(&seen) {
        assert!(
            std::time::Instant::now() < deadline,
            "websocket saw {seen:?}"
        );
        let message: serde_json::Value =
            serde_json::from_str(socket.read().unwrap().to_text().unwrap()).unwrap();
        match (message["type"].as_str(), message["op"].as_str()) {
            (Some("snapshot"), _) => {
                for row in message["rows"].as_array().unwrap() {
                    seen.insert(row["key"].as_str().unwrap().into(), row["row"].clone());
                }
            }
            (Some("change"), Some("upsert")) => {
                seen.insert(
                    message["key"].as_str().unwrap().into(),
                    message["row"].clone(),
                );
            }
            (Some("change"), _) => {
                seen.remove(message["key"].as_str().unwrap());
            }
            _ => panic!("unexpected message {message}"),
        }
    }
    seen
}

/// The rows a graphql-transport-ws subscription holds once `done` says so.
fn graphql_rows_until<S: std::io::Read + std::io::Write>(
    graphql: &mut tungstenite::WebSocket<S>,
    deadline: std::time::Instant,
    done: impl Fn(&Rows) -> bool,
) -> Rows {
    let mut from_graphql = Rows::default();
    while !done(&from_graphql) {
        assert!(
            std::time::Instant::now() < deadline,
            "graphql subscription saw {from_graphql:?}"
        );
        let message: serde_json::Value =
            serde_json::from_str(graphql.read().unwrap().to_text().unwrap()).unwrap();
        assert_eq!(message["type"], "next", "{message}");
        let change = &message["payload"]["data"]["postPage"];
        let key = change["key"].as_str().unwrap().to_string();
        match change["op"].as_str().unwrap() {
            "snapshot" | "upsert" => from_graphql.insert(key, change["row"].clone()),
            _ => from_graphql.remove(&key),
        };
    }
    from_graphql
}

/// The blog sample with a new field set by a rule: a change of what rows hold.
fn blog_with_comments_open(broker: &Broker) -> String {
    let v2 = sample("blog-post", &broker.bootstrap())
        .replace(
            "            publishedAt: event.at\n",
            "            publishedAt: event.at\n            commentsOpen: \"true\"\n",
        )
        .replace(
            "        editedAt: {type: string}\n",
            "        editedAt: {type: string}\n        commentsOpen: {type: boolean}\n",
        );
    assert!(
        v2.contains("commentsOpen: {type"),
        "the sample changed shape"
    );
    v2
}

/// An invalid spec is reported with the compiler's exact words; the pod stays and
/// keeps serving.
fn an_invalid_spec_is_reported_and_the_pod_stays(
    cluster: &ControlPlane,
    address: &str,
    pod: &str,
    v2: &str,
) {
    let (ns, name) = ("blog", "blog-post-page");
    let serving = pod_uid(cluster, ns, pod);
    let v3 = v2.replace(
        r#"when: event.type == "PostEdited""#,
        r#"when: evnt.type == "PostEdited""#,
    );
    assert!(
        cluster.apply(&v3).status.success(),
        "the CRD schema cannot see this error; the operator must"
    );
    wait_for("SpecValid=False", Duration::from_secs(60), || {
        condition(cluster, ns, name, "SpecValid", "status") == "False"
    });
    let message = condition(cluster, ns, name, "SpecValid", "message");
    assert_eq!(
        message,
        "spec.projections[1].rules[1].when: unknown variable `evnt`: this expression may use event, row, record, lookup (in `evnt.type == \"PostEdited\"`)"
    );
    let events = event_reasons(cluster, ns);
    assert!(
        events.contains("InvalidSpec"),
        "an Event says why: {events}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        pod_uid(cluster, ns, pod),
        serving,
        "the running pod is left alone"
    );
    assert!(
        get_json(address, "/v1/postPage/p-1").is_some(),
        "and keeps serving"
    );
    assert!(cluster.apply(v2).status.success());
    wait_for("SpecValid=True again", Duration::from_secs(60), || {
        condition(cluster, ns, name, "SpecValid", "status") == "True"
    });
}

/// Mid-stream, the runtime process is killed and the broker restarts; afterwards
/// the pod's projection equals a replay of the same topics from scratch.
fn a_killed_pod_and_a_broker_restart_equal_a_replay(
    kubelet: &Kubelet,
    broker: &mut Broker,
    pod: &str,
    v2: &str,
) {
    let ns = "blog";
    let writer = {
        let producer = broker.producer();
        std::thread::spawn(move || {
            for i in 0..600 {
                let post = format!("p-{}", 10 + i % 20);
                // Each post is published after its first comment: the comment is
                // counted, held, and served with the post.
                if (20..40).contains(&i) {
                    let published = serde_json::json!({"type": "PostPublished", "postId": post,
                        "authorId": "u-ada", "title": "Load", "body": "b", "at": "2026-11-23T00:00:00Z"});
                    producer.send("blog.posts.v1", &post, published.to_string().as_bytes());
                }
                let event = serde_json::json!({"type": "CommentAdded", "postId": post, "commentId": format!("c-x{i}"),
                    "authorId": "u-grace", "text": "load", "at": "2026-11-23T00:00:00Z"});
                producer.send("blog.comments.v1", &post, event.to_string().as_bytes());
                if i % 50 == 0 {
                    producer.flush();
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            producer.flush();
        })
    };
    std::thread::sleep(Duration::from_millis(400));
    kubelet.kill_process(ns, pod);
    writer.join().unwrap();
    broker.restart();
    let spec_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(spec_file.path(), v2).unwrap();
    let replay_dir = tempfile::tempdir().unwrap();
    let mut replay = facet_e2e::process::Runtime::start(
        spec_file.path(),
        replay_dir.path(),
        &broker.bootstrap(),
        "replay-9",
        &log_dir("operator_cluster_replay").join("replay.log"),
    );
    replay.wait_ready(Duration::from_secs(120));
    let expected = rows(&format!("127.0.0.1:{}", replay.http), "postPage").unwrap();
    assert!(
        expected.len() >= 22,
        "the load created rows: {}",
        expected.len()
    );
    wait_for(
        "the pod to equal the replay",
        Duration::from_secs(120),
        || {
            kubelet
                .address(ns, pod)
                .and_then(|a| rows(&a, "postPage"))
                .is_some_and(|r| r == expected)
        },
    );
}

/// Deleting the experience stops its pods, deletes its consumer groups (the
/// finalizer), and garbage-collects everything it owned.
fn deleting_stops_the_pods_then_deletes_the_groups(
    cluster: &ControlPlane,
    kubelet: &Kubelet,
    broker: &Broker,
    pod: &str,
) {
    let (ns, name) = ("blog", "blog-post-page");
    let groups = consumer_groups(cluster, ns, name);
    let group = &groups[0];
    assert!(
        broker.group_exists(group),
        "the pod committed offsets for lag tools"
    );
    // Events keep coming while it is deleted: a pod still running would commit
    // offsets after the group was deleted, and so make it again.
    let stop_writing = Arc::new(AtomicBool::new(false));
    let writer = {
        let (producer, stop) = (broker.producer(), stop_writing.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let event = serde_json::json!({"type": "CommentAdded", "postId": "p-1",
                    "commentId": format!("c-late-{i}"), "authorId": "u-grace", "text": "late",
                    "at": "2026-11-25T00:00:00Z"});
                producer.send("blog.comments.v1", "p-1", event.to_string().as_bytes());
                producer.flush();
                i += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    cluster.kubectl_ok(&["delete", "fx", name, "-n", ns, "--timeout=120s"]);
    assert!(
        !broker.group_exists(group),
        "the consumer group was deleted"
    );
    std::thread::sleep(Duration::from_secs(5));
    stop_writing.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    for group in &groups {
        assert!(
            !broker.group_exists(group),
            "{group} came back: a pod ran on after the cleanup"
        );
    }
    wait_for(
        "children to be garbage-collected",
        Duration::from_secs(120),
        || {
            ["statefulset", "service", "configmap"]
                .iter()
                .all(|kind| blog_children(cluster, kind).trim().is_empty())
        },
    );
    wait_for("the pod to stop", Duration::from_secs(60), || {
        kubelet.address(ns, pod).is_none()
    });
}

/// Scaled from one replica to two, the new pod copies the first one's store (the
/// first built it by replaying REBUILD_LOAD and more): it is ready far sooner than
/// the replay took, and both give the same answers row for row.
fn scale_out_from_a_peers_image(cluster: &ControlPlane, kubelet: &Kubelet, first: &str) {
    let (ns, name) = ("blog", "blog-post-page");
    let second = format!("{}-1", first.trim_end_matches("-0"));
    cluster.kubectl_ok(&["scale", "fx", name, "-n", ns, "--replicas=2"]);
    wait_for("two ready replicas", Duration::from_secs(180), || {
        jsonpath(
            cluster,
            &["get", "fx", name, "-n", ns],
            "{.status.readyReplicas}",
        ) == "2"
    });
    let logs = facet_e2e::repo_root().join("target/e2e-logs/operator_cluster");
    let log =
        |pod: &str| std::fs::read_to_string(logs.join(format!("pod-{ns}-{pod}.log"))).unwrap();
    let second_log = log(&second);
    assert!(
        second_log.contains("store copied from a peer: consuming from its offsets")
            && !second_log.contains("replaying the topics"),
        "{second_log}"
    );
    let replayed = time_to_ready(&log(first));
    let copied = time_to_ready(&second_log);
    println!(
        "scale-out: the first pod replayed to ready in {replayed:.1?}; the second was \
         ready from its image in {copied:.1?} ({:.1}x)",
        replayed.as_secs_f64() / copied.as_secs_f64()
    );
    assert!(copied < replayed, "{copied:?} vs {replayed:?}");
    let (a, b) = (
        kubelet.address(ns, first).unwrap(),
        kubelet.address(ns, &second).unwrap(),
    );
    for projection in ["postPage", "comment"] {
        wait_for("both replicas to agree", Duration::from_secs(60), || {
            let rows_a = rows(&a, projection);
            rows_a.is_some() && rows_a == rows(&b, projection)
        });
    }
}

/// Edits that do not change the rows (a description, `deprecated`, the access
/// rule) roll the pods on their stores: no new StatefulSet, no replay, and a
/// WebSocket, an SSE and a graphql-ws client following the Service keep their
/// positions (no reset); after the access edit each holds exactly the rows the new
/// rule allows.
fn serving_only_edits(cluster: &ControlPlane, kubelet: &Kubelet, v2: &str) {
    use facet_e2e::follower::{Follower, Transport};
    let (ns, name) = ("blog", "blog-post-page");
    let set = serving_set(cluster, ns, name);
    let endpoints = Arc::new(ServiceEndpoints::follow(
        &cluster.admin_kubeconfig,
        ns,
        name,
    ));
    let followers: Vec<Follower> = [Transport::WebSocket, Transport::Sse, Transport::GraphqlWs]
        .into_iter()
        .map(|t| Follower::start(t, endpoints.clone(), "postPage", "id authorId title"))
        .collect();
    wait_for("every follower's snapshot", Duration::from_secs(30), || {
        followers.iter().all(|f| f.followed().synced)
    });
    let before_edits = followers[0].followed().rows.len();
    assert!(before_edits > 2, "{before_edits} pages");

    // Two replicas now, as scaled.
    let v2 = v2.replace("\n  replicas: 1\n", "\n  replicas: 2\n");
    let described = v2.replace(
        "description: A post with its author, ready to render.",
        "description: A post with its author, ready to render (now with a longer text).",
    );
    let deprecated = described.replace(
        "editedAt: {type: string}",
        "editedAt: {type: string, deprecated: \"Read the last change from the post history.\"}",
    );
    let restricted = deprecated.replace(
        "(now with a longer text).\n",
        "(now with a longer text).\n      access: row.authorId == \"u-ada\"\n",
    );
    assert!(described != v2 && deprecated != described && restricted != deprecated);
    for (what, manifest) in [
        ("a description", &described),
        ("deprecated", &deprecated),
        ("the access rule", &restricted),
    ] {
        let pods_before: Vec<String> = (0..2)
            .map(|i| pod_uid(cluster, ns, &format!("{set}-{i}")))
            .collect();
        let applied = cluster.apply(manifest);
        assert!(
            applied.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&applied.stderr)
        );
        let status = || -> serde_json::Value {
            serde_json::from_str(&cluster.kubectl_ok(&["get", "fx", name, "-n", ns, "-o", "json"]))
                .unwrap()
        };
        wait_for(
            &format!("{what}: both pods rolled and ready"),
            Duration::from_secs(180),
            || {
                let now = status();
                let generation = &now["metadata"]["generation"];
                now["status"]["observedGeneration"] == *generation
                    && now["status"]["lastChange"]["generation"] == *generation
                    && now["status"]["readyReplicas"] == 2
                    && (0..2).all(|i| {
                        let pod = format!("{set}-{i}");
                        let uid = pod_uid(cluster, ns, &pod);
                        !uid.is_empty()
                            && uid != pods_before[i]
                            && kubelet.address(ns, &pod).is_some()
                    })
            },
        );
        let last_change = &status()["status"]["lastChange"];
        assert_eq!(last_change["kind"], "ServingOnly", "{what}: {last_change}");
        assert_eq!(
            serving_set(cluster, ns, name),
            set,
            "{what}: no new StatefulSet"
        );
        let sets = blog_children(cluster, "statefulsets");
        assert_eq!(sets.lines().count(), 1, "{what}: {sets}");
        // Nothing replayed: each pod applied no more than the few events since.
        for i in 0..2 {
            let pod = format!("{set}-{i}");
            let address = kubelet.address(ns, &pod).unwrap();
            let ip = address.split(':').next().unwrap();
            let (applied, _) = metric(&format!("{ip}:9090"), "facet_events_applied_total");
            assert!(
                (0.0..1000.0).contains(&applied),
                "{what}: {pod} applied {applied} events since it started"
            );
        }
    }
    // What the new rule allows, as REST (which applies it too) answers it.
    let address = kubelet.address(ns, &format!("{set}-0")).unwrap();
    let allowed: Vec<String> = rows(&address, "postPage")
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap().to_string())
        .collect();
    assert!(
        !allowed.is_empty() && allowed.len() < before_edits,
        "{allowed:?}"
    );
    for follower in &followers {
        wait_for(
            &format!("{:?} to hold the allowed rows", follower.transport),
            Duration::from_secs(30),
            || follower.followed().rows.keys().cloned().collect::<Vec<_>>() == allowed,
        );
        let followed = follower.followed();
        assert!(
            followed.resets.is_empty(),
            "{:?} was reset: {:?}",
            follower.transport,
            followed.resets
        );
        assert!(
            followed.connections >= 2,
            "{:?} moved between pods",
            follower.transport
        );
    }
}

/// From a pod's first log line to its first "ready" line (its first run).
fn time_to_ready(log: &str) -> Duration {
    let seconds = |line: &str| -> f64 {
        // `2026-12-03T13:13:20.770178Z ...`: the time of day is enough here.
        let time = &line[11..line.find('Z').unwrap()];
        let parts: Vec<f64> = time.split(':').map(|p| p.parse().unwrap()).collect();
        parts[0] * 3600.0 + parts[1] * 60.0 + parts[2]
    };
    let start = seconds(log.lines().next().unwrap());
    let ready = log
        .lines()
        .find(|l| l.contains("caught up with the topics: ready"))
        .map(seconds)
        .unwrap_or_else(|| panic!("never ready:\n{log}"));
    Duration::from_secs_f64((ready - start).rem_euclid(86_400.0))
}

/// Comments loaded before the rules change, so that the new definition's replay
/// takes long enough (several of the operator's 5 s polls) for the status to report
/// it under way.
const REBUILD_LOAD: usize = 250_000;

/// What a client of the Service saw while the blog's projections were rebuilt.
#[derive(Default)]
struct ClientLog {
    /// Each connection: the endpoint, then the close code the server sent (0 when
    /// the connection broke without one; absent while it is open).
    connections: Vec<(String, Option<u16>)>,
    /// Connection attempts that found no endpoint or were refused.
    failed_attempts: usize,
    /// Every message, with the endpoint it came from.
    messages: Vec<(String, serde_json::Value)>,
}

/// A WebSocket client of the Service, as a browser would be: subscribed to
/// `postPage`; when the server closes, it reconnects at once (through the Service)
/// and resumes with `since` set to the last position it received.
fn live_client(endpoints: &ServiceEndpoints, stop: &AtomicBool) -> ClientLog {
    let mut log = ClientLog::default();
    let mut since: Option<String> = None;
    while !stop.load(Ordering::SeqCst) {
        let connected = endpoints
            .pick()
            .and_then(|e| Some((tungstenite::connect(format!("ws://{e}/ws")).ok()?.0, e)));
        let Some((mut socket, endpoint)) = connected else {
            log.failed_attempts += 1;
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        if let tungstenite::stream::MaybeTlsStream::Plain(stream) = socket.get_mut() {
            stream
                .set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
        }
        let mut subscribe =
            serde_json::json!({"type": "subscribe", "id": "pages", "projection": "postPage"});
        if let Some(position) = &since {
            subscribe["since"] = position.clone().into();
        }
        socket
            .send(tungstenite::Message::text(subscribe.to_string()))
            .unwrap();
        log.connections.push((endpoint.clone(), None));
        let code = loop {
            match socket.read() {
                Ok(tungstenite::Message::Text(text)) => {
                    let message: serde_json::Value = serde_json::from_str(&text).unwrap();
                    if let Some(position) = message["position"].as_str() {
                        since = Some(position.to_string());
                    }
                    log.messages.push((endpoint.clone(), message));
                }
                Ok(tungstenite::Message::Close(frame)) => {
                    break frame.map_or(0, |f| u16::from(f.code))
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if stop.load(Ordering::SeqCst) {
                        return log;
                    }
                }
                Err(_) => break 0,
            }
        };
        log.connections.last_mut().unwrap().1 = Some(code);
    }
    log
}

/// The blog's rules change while a WebSocket client and a REST poller use the
/// Service: the new definition's StatefulSet replays the topics beside the serving
/// pod (the status reporting its progress, Ready all along), the Service moves
/// once it has caught up, and the old pod drains and closes its connections with
/// 1001, so the client reconnects at once to the new pod. Returns the new pod.
fn rebuild_without_downtime(
    cluster: &ControlPlane,
    kubelet: &Kubelet,
    broker: &Broker,
    v2: &str,
) -> String {
    let (ns, name) = ("blog", "blog-post-page");
    let old = definition(cluster, ns, name);
    let old_set = format!("{name}-{}", &old[..10]);
    let old_groups = consumer_groups(cluster, ns, name);
    assert!(
        !old_groups.is_empty() && old_groups.iter().all(|g| g.contains(&old[..10])),
        "groups are per definition: {old_groups:?}"
    );
    let endpoints = Arc::new(ServiceEndpoints::follow(
        &cluster.admin_kubeconfig,
        ns,
        name,
    ));
    let old_endpoint = load_the_serving_pod(broker, &endpoints);

    let stop = Arc::new(AtomicBool::new(false));
    let client = std::thread::spawn({
        let (endpoints, stop) = (endpoints.clone(), stop.clone());
        move || live_client(&endpoints, &stop)
    });
    let poller = std::thread::spawn({
        let (endpoints, stop) = (endpoints.clone(), stop.clone());
        move || poll_through_the_service(&endpoints, &stop)
    });
    std::thread::sleep(Duration::from_secs(1));

    assert!(cluster.apply(v2).status.success());
    let new = watch_the_rebuild(cluster, broker, &old);
    let new_set = format!("{name}-{}", &new[..10]);
    the_replaced_set_and_its_groups_go(cluster, kubelet, broker, &old_set, &old_groups, &new);
    // The client is back on the new pod, and the poller has asked it a few times.
    let new_endpoint = endpoints.pick().unwrap();
    assert_ne!(new_endpoint, old_endpoint);
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    let log = client.join().unwrap();
    let answers = poller.join().unwrap();
    every_request_was_answered(&answers, &old_endpoint, &new_endpoint);
    the_client_moved_once(&log, &old_endpoint, &new_endpoint);
    format!("{new_set}-0")
}

/// REBUILD_LOAD comments for the serving pod, which applies them all; its endpoint.
fn load_the_serving_pod(broker: &Broker, endpoints: &ServiceEndpoints) -> String {
    let producer = broker.producer();
    for i in 0..REBUILD_LOAD {
        let post = format!("p-load-{}", i % 200);
        let comment = serde_json::json!({"type": "CommentAdded", "postId": post, "commentId": format!("c-load-{i}"),
            "authorId": "u-grace", "text": "load", "at": "2026-11-23T00:00:00Z"});
        producer.send("blog.comments.v1", &post, comment.to_string().as_bytes());
    }
    producer.flush();
    wait_for("the Service's endpoint", Duration::from_secs(30), || {
        endpoints.pick().is_some()
    });
    let old_endpoint = endpoints.pick().unwrap();
    wait_for(
        "the serving pod to apply the load",
        Duration::from_secs(300),
        || {
            get_json(
                &old_endpoint,
                &format!("/v1/comment/c-load-{}", REBUILD_LOAD - 1),
            )
            .is_some_and(|c| c["id"] == format!("c-load-{}", REBUILD_LOAD - 1))
        },
    );
    old_endpoint
}

/// REST through the Service every 100 ms until `stop`: (endpoint, status, body) of
/// every answer.
fn poll_through_the_service(
    endpoints: &ServiceEndpoints,
    stop: &AtomicBool,
) -> Vec<(String, u16, serde_json::Value)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut answers: Vec<(String, u16, serde_json::Value)> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let endpoint = endpoints.pick().unwrap_or_default();
        let answer = agent
            .get(&format!("http://{endpoint}/v1/postPage/p-1"))
            .call();
        answers.push(match answer {
            Ok(mut response) => {
                let status = response.status().as_u16();
                (
                    endpoint,
                    status,
                    response.body_mut().read_json().unwrap_or_default(),
                )
            }
            Err(e) => (endpoint, 0, serde_json::json!(e.to_string())),
        });
        std::thread::sleep(Duration::from_millis(100));
    }
    answers
}

/// Status while the new pod replays: Ready stays True, Progressing says Rebuilding,
/// and status.rebuild counts the slowest new pod's progress, never going back. A live
/// edit is produced while it replays. Returns the new definition once it serves.
fn watch_the_rebuild(cluster: &ControlPlane, broker: &Broker, old: &str) -> String {
    let (ns, name) = ("blog", "blog-post-page");
    let producer = broker.producer();
    let status = || -> serde_json::Value {
        serde_json::from_str(&cluster.kubectl_ok(&["get", "fx", name, "-n", ns, "-o", "json"]))
            .unwrap()
    };
    let condition = |status: &serde_json::Value, type_: &str| -> (String, String) {
        let found = status["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == type_)
            .cloned()
            .unwrap_or_default();
        (
            found["status"].as_str().unwrap_or("").into(),
            found["reason"].as_str().unwrap_or("").into(),
        )
    };
    let mut progress: Vec<i64> = Vec::new();
    let mut new = String::new();
    let mut edited = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the rebuild did not finish: {progress:?}"
        );
        let now = status();
        let serving = now["status"]["definition"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert_eq!(
            condition(&now, "Ready").0,
            "True",
            "served all along: {now}"
        );
        let rebuild = &now["status"]["rebuild"];
        if let Some(percent) = rebuild["percent"].as_i64() {
            new = rebuild["definition"].as_str().unwrap().to_string();
            // The old definition serves until the Service moves (the last report).
            assert!(serving == old || serving == new, "{now}");
            if serving == old {
                let health = facet_e2e::gitops::judge(&now);
                assert_eq!(
                    (health.kstatus.as_str(), health.argo.as_str()),
                    ("InProgress", "Progressing"),
                    "rebuilding, as Flux and Argo CD judge it: {health:?}"
                );
                let groups = now["status"]["consumerGroups"].to_string();
                assert!(
                    groups.contains(&old[..10]) && groups.contains(&new[..10]),
                    "the serving and the rebuilding pods' groups: {groups}"
                );
            }
            assert_eq!(
                condition(&now, "Progressing"),
                ("True".into(), "Rebuilding".into())
            );
            let partitions = rebuild["partitions"].as_i64().unwrap();
            assert!(
                partitions == 0 || partitions == 9,
                "three topics of three partitions: {rebuild}"
            );
            progress.push(percent);
            if !edited {
                // A live event while the new pod replays: the old pod serves it.
                let edit = serde_json::json!({"type": "PostEdited", "postId": "p-2",
                    "title": "Edited during the rebuild", "body": "b", "at": "2026-11-24T00:00:00Z"});
                producer.send("blog.posts.v1", "p-2", edit.to_string().as_bytes());
                producer.flush();
                edited = true;
            }
        } else if serving != old && !new.is_empty() && serving == new {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        progress.iter().any(|p| (1..100).contains(p)) && progress.windows(2).all(|w| w[0] <= w[1]),
        "the status reported the replay under way, never going back: {progress:?}"
    );
    new
}

/// The old StatefulSet is removed with an Event; its pod drains (serving, not
/// ready), then stops. Serving and rebuilding pods had groups of their own; the
/// replaced one's go once its pods have stopped (the operator runs with
/// deleteConsumerGroups).
fn the_replaced_set_and_its_groups_go(
    cluster: &ControlPlane,
    kubelet: &Kubelet,
    broker: &Broker,
    old_set: &str,
    old_groups: &[String],
    new: &str,
) {
    let (ns, name) = ("blog", "blog-post-page");
    wait_for(
        "the old StatefulSet to be removed",
        Duration::from_secs(60),
        || {
            !cluster
                .kubectl(&["get", "statefulset", old_set, "-n", ns])
                .status
                .success()
        },
    );
    let reasons = event_reasons(cluster, ns);
    assert!(
        reasons.contains("Switched"),
        "an Event tells of the move: {reasons}"
    );
    wait_for(
        "the old pod to drain and stop",
        Duration::from_secs(60),
        || kubelet.address(ns, &format!("{old_set}-0")).is_none(),
    );
    let new_groups = consumer_groups(cluster, ns, name);
    assert!(
        new_groups
            .iter()
            .all(|g| g.contains(&new[..10]) && !old_groups.contains(g)),
        "{new_groups:?} after {old_groups:?}"
    );
    wait_for(
        "the replaced definition's consumer groups to be deleted",
        Duration::from_secs(60),
        || old_groups.iter().all(|g| !broker.group_exists(g)),
    );
    assert!(
        new_groups.iter().any(|g| broker.group_exists(g)),
        "the new pods commit to their own groups: {new_groups:?}"
    );
}

/// Every request through the Service was answered, by the old pod and then by the
/// new one with the new field.
fn every_request_was_answered(
    answers: &[(String, u16, serde_json::Value)],
    old_endpoint: &str,
    new_endpoint: &str,
) {
    let failed: Vec<_> = answers
        .iter()
        .filter(|(_, status, _)| *status != 200)
        .collect();
    assert!(
        failed.is_empty(),
        "every request through the Service was answered: {failed:?}"
    );
    let last = &answers.last().unwrap();
    assert_eq!(
        (last.0.as_str(), last.2["commentsOpen"].clone()),
        (new_endpoint, true.into())
    );
    assert!(answers
        .iter()
        .any(|(e, _, row)| *e == old_endpoint && row.get("commentsOpen").is_none()));
}

/// The client: on the old pod, it received the edit made during the rebuild; the
/// old pod closed with 1001 (going away) and the client reconnected to the new pod
/// at its first attempt, where its old position gave a reset and a fresh snapshot
/// of the new shape.
fn the_client_moved_once(log: &ClientLog, old_endpoint: &str, new_endpoint: &str) {
    assert_eq!(log.failed_attempts, 0, "{:?}", log.connections);
    assert_eq!(
        log.connections,
        [
            (old_endpoint.to_string(), Some(1001)),
            (new_endpoint.to_string(), None)
        ],
        "one move, announced"
    );
    let edit_seen = log.messages.iter().any(|(e, m)| {
        *e == old_endpoint
            && m["type"] == "change"
            && m["row"]["title"] == "Edited during the rebuild"
    });
    assert!(edit_seen, "the old pod served the live edit");
    let on_new: Vec<&serde_json::Value> = log
        .messages
        .iter()
        .filter(|(e, _)| *e == new_endpoint)
        .map(|(_, m)| m)
        .collect();
    assert_eq!(on_new[0]["type"], "reset", "{on_new:?}");
    assert_eq!(on_new[1]["type"], "snapshot");
    let p2 = on_new[1]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "p-2")
        .unwrap();
    assert_eq!(p2["row"]["title"], "Edited during the rebuild");
    assert_eq!(p2["row"]["commentsOpen"], true);
}
