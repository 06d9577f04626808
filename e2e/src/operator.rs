//! The operator as the chart installs it, run out of cluster against a
//! [`ControlPlane`] as the chart's service account (impersonated), so a missing RBAC
//! rule fails in the tests and benchmarks that use it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cluster::ControlPlane;
use crate::process::workspace_binary;
use crate::{free_port, repo_root, KillOnDrop};

pub const OPERATOR_SA: &str = "system:serviceaccount:facet-system:facet-operator";

/// A running operator (killed when dropped) and the port of its /metrics,
/// /healthz and /readyz.
pub struct Operator {
    pub process: KillOnDrop,
    pub http_port: u16,
}

impl Operator {
    /// Whether the process is still running (not exited, not aborted).
    pub fn running(&mut self) -> bool {
        self.process.0.try_wait().unwrap().is_none()
    }
}

/// The chart's CRD, RBAC and namespace (`helm template`, consumer-group cleanup on),
/// applied; returns once the CRD is established.
pub fn install_chart(cluster: &ControlPlane) {
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
            "--set",
            "deleteConsumerGroups=true",
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
    cluster.apply_ok(&String::from_utf8(output.stdout).unwrap());
    cluster.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "crd/frontendexperiences.facet.dev",
        "--timeout=60s",
    ]);
}

/// The operator of this workspace's build, out of cluster, as the chart's service
/// account, with a 4-second lease so that takeovers are quick; its log goes to
/// `logs/facet-<identity>.log`.
pub fn start_operator(cluster: &ControlPlane, logs: &Path, identity: &str) -> Operator {
    let binary = workspace_binary("facet-operator");
    start_operator_binary(cluster, logs, identity, &binary, &[])
}

/// As [`start_operator`], with another build (a benchmark runs the release one)
/// and environment variables that override the test's.
pub fn start_operator_binary(
    cluster: &ControlPlane,
    logs: &Path,
    identity: &str,
    binary: &PathBuf,
    env: &[(&str, &str)],
) -> Operator {
    let log = std::fs::File::create(logs.join(format!("facet-{identity}.log"))).unwrap();
    let port = free_port();
    Operator {
        process: KillOnDrop(
            Command::new(binary)
                .env("KUBECONFIG", cluster.impersonating_kubeconfig(OPERATOR_SA))
                .env("FACET_OPERATOR_HTTP_ADDR", format!("127.0.0.1:{port}"))
                .env("FACET_RUNTIME_IMAGE", "facet-bff:e2e")
                .env("POD_NAME", identity)
                .env("POD_NAMESPACE", "facet-system")
                .env("FACET_LEASE_DURATION_SECONDS", "4")
                .env("FACET_DELETE_CONSUMER_GROUPS", "true")
                // The e2e brokers listen on loopback; some specs are never run.
                .env("FACET_ALLOWED_BOOTSTRAP_SERVERS", "127.0.0.1:*,*.svc:9092")
                // FACET_E2E_OPERATOR_LOG (a RUST_LOG filter) to see more when a test fails.
                .env(
                    "RUST_LOG",
                    std::env::var("FACET_E2E_OPERATOR_LOG")
                        .unwrap_or_else(|_| "info,kube=warn".into()),
                )
                .envs(env.iter().copied())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("starting facet-operator"),
        ),
        http_port: port,
    }
}
