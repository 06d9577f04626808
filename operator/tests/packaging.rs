//! The Helm chart with the real Helm engine, and the kustomize bases with kubectl.

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Helm built from its Go module into the cache (`e2e/tools/install-kube.sh helm`).
fn helm() -> PathBuf {
    if let Ok(path) = std::env::var("FACET_HELM") {
        return path.into();
    }
    let output = Command::new("bash")
        .arg(root().join("e2e/tools/install-kube.sh"))
        .arg("helm")
        .output()
        .expect("running install-kube.sh");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim()).join("helm")
}

fn run(command: &mut Command) -> String {
    let output = command.output().expect("running a packaging tool");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn documents(yaml: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &serde_yaml::Value| !v.is_null())
        .collect()
}

fn find<'a>(docs: &'a [serde_yaml::Value], kind: &str) -> &'a serde_yaml::Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn chart_render(extra: &[&str]) -> Vec<serde_yaml::Value> {
    let mut command = Command::new(helm());
    command
        .args([
            "template",
            "facet",
            "charts/facet-operator",
            "--namespace",
            "facet-system",
            "--kube-version",
            "1.35.4",
            "--include-crds",
        ])
        .args(extra)
        .current_dir(root());
    documents(&run(&mut command))
}

#[test]
fn chart_lints() {
    run(Command::new(helm())
        .args(["lint", "charts/facet-operator", "--strict"])
        .current_dir(root()));
}

#[test]
fn chart_renders_crd_rbac_and_a_locked_down_deployment() {
    let docs = chart_render(&["--set", "watchNamespaces={shop,blog}"]);
    for kind in [
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
    ] {
        find(&docs, kind);
    }
    let deployment = find(&docs, "Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["image"], "facet-operator:0.1.0");
    let env = container["env"].as_sequence().unwrap();
    let mut names: Vec<&str> = env.iter().map(|e| e["name"].as_str().unwrap()).collect();
    names.sort();
    let count = names.len();
    names.dedup();
    assert_eq!(
        names.len(),
        count,
        "no duplicate env entries (server-side apply rejects them)"
    );
    let namespaces = env
        .iter()
        .find(|e| e["name"] == "FACET_WATCH_NAMESPACES")
        .unwrap();
    assert_eq!(namespaces["value"], "shop,blog");
}

/// `helm template` of the chart with these extra arguments, success or not.
fn helm_template(extra: &[&str]) -> std::process::Output {
    Command::new(helm())
        .args(["template", "facet", "charts/facet-operator"])
        .args(extra)
        .current_dir(root())
        .output()
        .unwrap()
}

#[test]
fn chart_values_are_checked_by_the_schema() {
    let output = helm_template(&["--kube-version", "1.35.4", "--set", "replicaCount=three"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("replicaCount"), "{stderr}");
    let output = helm_template(&["--kube-version", "1.35.4", "--set", "logFormat=yaml"]);
    assert!(!output.status.success(), "logFormat is text or json");
    let output = helm_template(&["--kube-version", "1.35.4", "--set", "logFormat=json"]);
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("FACET_LOG_FORMAT"),
        "the format reaches the operator"
    );
}

#[test]
fn chart_refuses_too_old_kubernetes() {
    let output = helm_template(&["--kube-version", "1.25.0"]);
    assert!(!output.status.success(), "kubeVersion >=1.30 is enforced");
}

#[test]
fn kustomize_renders_and_grants_what_the_chart_grants() {
    let rendered = documents(&run(Command::new("kubectl")
        .args(["kustomize", "config/default"])
        .current_dir(root())));
    for kind in [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
    ] {
        find(&rendered, kind);
    }
    let chart = chart_render(&[]);
    assert_eq!(
        find(&rendered, "ClusterRole")["rules"],
        find(&chart, "ClusterRole")["rules"]
    );
}

#[test]
fn chart_exposes_runtime_connections_for_autoscaling_when_asked() {
    let off = chart_render(&[]);
    assert!(
        !off.iter().any(|d| d["kind"] == "PodMonitor"),
        "off by default: the Prometheus Operator's CRDs may be missing"
    );
    let docs = chart_render(&[
        "--set",
        "runtimeMetrics.podMonitor.enabled=true",
        "--set",
        "runtimeMetrics.adapterRules.enabled=true",
    ]);
    let monitor = find(&docs, "PodMonitor");
    assert_eq!(monitor["spec"]["namespaceSelector"]["any"], true);
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"], "facet-bff",
        "the label every runtime pod carries"
    );
    assert_eq!(monitor["spec"]["podMetricsEndpoints"][0]["port"], "metrics");
    let rules = docs
        .iter()
        .find(|d| {
            d["kind"] == "ConfigMap"
                && d["metadata"]["name"] == "facet-facet-operator-adapter-rules"
        })
        .expect("the adapter rules");
    let rules: serde_yaml::Value =
        serde_yaml::from_str(rules["data"]["facet-rules.yaml"].as_str().unwrap()).unwrap();
    assert_eq!(rules["rules"][0]["name"]["as"], "facet_connections");
    let output = helm_template(&["--set", "runtimeMetrics.podMonitor.interval=soon"]);
    assert!(
        !output.status.success(),
        "the interval is checked by the schema"
    );
}
