//! The operator against a real kube-apiserver (with the StatefulSet and garbage
//! collector controllers) and a real Kafka broker. The operator runs out of cluster
//! as the chart's service account (impersonated), so a missing RBAC rule fails here.

use std::process::{Child, Command};
use std::time::Duration;

use facet_e2e::cluster::ControlPlane;
use facet_e2e::kafka::Broker;
use facet_e2e::kubelet::Kubelet;
use facet_e2e::process::workspace_binary;
use facet_e2e::{free_port, log_dir, repo_root, wait_for};

const OPERATOR_SA: &str = "system:serviceaccount:facet-system:facet-operator";

struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sample(name: &str, bootstrap: &str) -> String {
    std::fs::read_to_string(repo_root().join(format!("config/samples/{name}.yaml")))
        .unwrap()
        .replace("kafka.kafka.svc:9092", bootstrap)
}

fn install_chart(cluster: &ControlPlane) {
    let helm = cluster.bin.join("helm");
    let output = Command::new(helm)
        .args([
            "template",
            "facet-operator",
            "charts/facet-operator",
            "--namespace",
            "facet-system",
            "--include-crds",
            "--kube-version",
            "1.35.4",
        ])
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    cluster.kubectl_ok(&["create", "namespace", "facet-system"]);
    let applied = cluster.apply(&String::from_utf8(output.stdout).unwrap());
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    cluster.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "crd/frontendexperiences.facet.dev",
        "--timeout=60s",
    ]);
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
    let broker = Broker::start(&logs);
    for topic in [
        "blog.posts.v1",
        "blog.comments.v1",
        "clinic.slots.v1",
        "clinic.appointments.v1",
        "shop.orders.v1",
        "shop.payments.v1",
        "shop.storefront-web.dlq",
    ] {
        broker.create_topic(topic, 3);
    }
    let cluster = ControlPlane::start(&logs);
    install_chart(&cluster);

    let operator_log = std::fs::File::create(logs.join("facet-operator.log")).unwrap();
    let _operator = Operator(
        Command::new(workspace_binary("facet-operator"))
            .env("KUBECONFIG", cluster.impersonating_kubeconfig(OPERATOR_SA))
            .env(
                "FACET_OPERATOR_HTTP_ADDR",
                format!("127.0.0.1:{}", free_port()),
            )
            .env("FACET_RUNTIME_IMAGE", "facet-bff:e2e")
            .env("RUST_LOG", "info,kube=warn")
            .stdout(operator_log.try_clone().unwrap())
            .stderr(operator_log)
            .spawn()
            .expect("starting facet-operator"),
    );
    let kubelet = Kubelet::start(&cluster.admin_kubeconfig, &logs);

    // Every sample: children created, pods running, Ready, `kubectl wait` succeeds.
    let samples = [
        ("blog-post", "blog", "blog-post-page"),
        ("scheduler", "clinic", "clinic-scheduler"),
        ("storefront", "shop", "storefront-web"),
    ];
    for (sample_name, namespace, _) in samples {
        cluster.kubectl_ok(&["create", "namespace", namespace]);
        let applied = cluster.apply(&sample(sample_name, &broker.bootstrap()));
        assert!(
            applied.status.success(),
            "{}",
            String::from_utf8_lossy(&applied.stderr)
        );
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
        for kind in ["statefulset", "service", "configmap"] {
            let child = if kind == "configmap" {
                format!("{name}-spec")
            } else {
                name.to_string()
            };
            cluster.kubectl_ok(&["get", kind, &child, "-n", namespace]);
        }
        cluster.kubectl_ok(&[
            "get",
            "service",
            &format!("{name}-headless"),
            "-n",
            namespace,
        ]);
        let groups = jsonpath(
            &cluster,
            &["get", "fx", name, "-n", namespace],
            "{.status.consumerGroups[0]}",
        );
        assert_eq!(groups, format!("facet.{namespace}.{name}.0"));
    }
    let budget = cluster.kubectl(&["get", "pdb", "storefront-web", "-n", "shop"]);
    assert!(
        budget.status.success(),
        "two replicas get a PodDisruptionBudget"
    );
    let ready = jsonpath(
        &cluster,
        &["get", "fx", "storefront-web", "-n", "shop"],
        "{.status.readyReplicas}",
    );
    assert_eq!(ready, "2");

    drop(kubelet);
}
